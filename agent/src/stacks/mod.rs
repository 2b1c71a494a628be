//! The one stack machinery: unwinding ([`unwind`]: frame pointers, and
//! DWARF with framehop from copied stack bytes), naming ([`symbolize`]:
//! mappings, JIT perf maps, the .NET runtime's method table, blazesym;
//! [`kallsyms`] for the kernel), collecting stacks per process while the
//! targets live ([`collect`]), merging them ([`aggregate`], pure) and
//! rendering them ([`render`], pure: SVG, folded, pprof, speedscope, JSON).
//!
//! CPU profiles (`/v1/profile`) and probes that record stacks
//! (`/v1/uprobe?stack=user`, `aggregate=flame`) both go through it; what
//! differs is only where the stacks come from and what each one weighs
//! ([`Measure`]).

pub mod aggregate;
pub mod collect;
pub mod kallsyms;
pub use tracecar_api::pprof;
pub mod render;
mod speedscope;
pub mod symbolize;
pub mod unwind;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// Output format of a stack profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Interactive flamegraph (inferno).
    Svg,
    /// `comm;outer;…;leaf weight` lines.
    Folded,
    /// gzipped `perftools.profiles.Profile`.
    Pprof,
    /// speedscope's JSON file format.
    Speedscope,
    /// Aggregated stacks and metadata.
    Json,
}

impl Format {
    /// Parses a `format=` value.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "svg" => Self::Svg,
            "folded" => Self::Folded,
            "pprof" => Self::Pprof,
            "speedscope" => Self::Speedscope,
            "json" => Self::Json,
            _ => return None,
        })
    }

    /// Its name in requests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Svg => "svg",
            Self::Folded => "folded",
            Self::Pprof => "pprof",
            Self::Speedscope => "speedscope",
            Self::Json => "json",
        }
    }

    /// The values [`Self::parse`] takes, for hints.
    pub const NAMES: &'static str = "svg, folded, pprof, speedscope or json";

    /// About how many bytes answering takes per frame of the distinct
    /// stacks, beyond what the capture holds, reserved against the memory
    /// bound ([`crate::memory`]) while a profile runs, before names are
    /// known: the merged stacks (8 bytes a frame, frames being shared),
    /// the renderer's structures (pprof 16, speedscope 12, inferno's
    /// merge 48) and the answer's text for a name of 32 bytes and a module
    /// path of 48 (folded: the name; pretty JSON: 92 bytes of layout with
    /// the name and the module). Once names are known,
    /// [`render::estimate_bytes`] checks again, exactly.
    pub fn result_bytes_per_frame(self) -> u64 {
        match self {
            Self::Folded => 40,
            Self::Speedscope | Self::Pprof => 24,
            Self::Svg => 96,
            Self::Json => 192,
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Folded => "text/plain; charset=utf-8",
            Self::Pprof => "application/octet-stream",
            Self::Speedscope | Self::Json => "application/json",
        }
    }
}

/// How user stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwind {
    /// DWARF where it completes, else whichever walk got further (frame
    /// pointers get through JIT code that has no unwind info).
    Auto,
    /// The kernel's frame-pointer callchain.
    Fp,
    /// User stack copies unwound from `.eh_frame`.
    Dwarf,
}

impl Unwind {
    /// Parses an `unwind=` value (absent: `auto`).
    pub fn parse(value: Option<&str>) -> Option<Self> {
        Some(match value {
            None | Some("auto") => Self::Auto,
            Some("fp") => Self::Fp,
            Some("dwarf") => Self::Dwarf,
            Some(_) => return None,
        })
    }

    /// Its name in requests and outputs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fp => "fp",
            Self::Dwarf => "dwarf",
        }
    }
}

/// Parses `format=` of a stack answer (`/v1/profile`, and probes'
/// flamegraphs); `None` when absent.
pub fn format_param(
    format: crate::params::Param<'_>,
) -> Result<Option<Format>, crate::params::SpecError> {
    format
        .value
        .map(|f| {
            Format::parse(f).ok_or_else(|| {
                crate::params::SpecError::new(
                    format!("format={} is not supported", tracecar_api::quoted(f)),
                    format!("use {}", Format::NAMES),
                )
            })
        })
        .transpose()
}

/// Parses `unwind=` (`/v1/profile` and probes with stacks).
pub fn unwind_param(unwind: crate::params::Param<'_>) -> Result<Unwind, crate::params::SpecError> {
    Unwind::parse(unwind.value).ok_or_else(|| {
        crate::params::SpecError::new(
            format!(
                "unwind={} is not supported",
                tracecar_api::quoted(unwind.value.unwrap_or_default())
            ),
            "use auto, fp or dwarf",
        )
    })
}

/// What kind of code a frame is in; renderers use it for colours and
/// suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// A process or thread name at the root.
    Root,
    /// File-backed user code.
    User,
    /// JIT code named by a perf map or the runtime.
    Jit,
    /// Kernel code.
    Kernel,
    /// Could not be named.
    Unknown,
    /// Not code: what a wall or off-CPU profile's leaf says of the thread
    /// (`[on-cpu]`, `[sleeping]`, …).
    Marker,
}

/// A named frame. Shared: a profile's stacks hold one pointer per frame,
/// and the names and modules once per distinct frame (a profile of deep,
/// varied stacks holds millions of frames, a few thousand distinct).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame(std::sync::Arc<FrameData>);

/// What a [`Frame`] says.
#[derive(Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FrameData {
    /// Function name, or `[unknown] module+0xoff`.
    pub name: String,
    /// What kind of code.
    pub kind: FrameKind,
    /// Module (file path) the code is in, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl Frame {
    /// A frame named `name`, of `kind`, in `module`.
    pub fn new(name: impl Into<String>, kind: FrameKind, module: Option<String>) -> Self {
        Self(std::sync::Arc::new(FrameData {
            name: name.into(),
            kind,
            module,
        }))
    }
}

impl std::ops::Deref for Frame {
    type Target = FrameData;

    fn deref(&self) -> &FrameData {
        &self.0
    }
}

impl serde::Serialize for Frame {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// One aggregated stack, root first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stack {
    /// PID it was recorded in.
    pub pid: u32,
    /// Frames from the root (process name) to the leaf.
    pub frames: Vec<Frame>,
    /// Whether the user stack did not reach a thread entry point.
    pub truncated: bool,
    /// How many samples or probe hits had this stack.
    pub count: u64,
    /// What they weigh together, in the profile's [`Measure`]: samples for
    /// a CPU profile, the summed value (bytes, nanoseconds, …) for a probe.
    pub weight: u64,
}

/// What a stack profile counts, and what its weights mean: the units
/// pprof and speedscope show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// CPU samples of one perf event at `hz` per CPU; weight = samples.
    Samples {
        /// The perf event (`cycles` or `cpu-clock`).
        event: &'static str,
        /// Samples per second per CPU.
        hz: u32,
    },
    /// Probe hits; each weighs the value `of` (`count`, `argN`, `ret`,
    /// `latency`) in `unit`.
    Probe {
        /// What was probed, for titles (`calc in /app/server`).
        probe: String,
        /// `count`, `arg0`, … `ret`, `latency`.
        of: String,
        /// `count`, `nanoseconds` or `value`.
        unit: &'static str,
    },
    /// Time: blocked time (`offcpu`, from context switches) or blocked
    /// and CPU time (`wall`, each CPU sample weighing its period at
    /// `hz`); weight = nanoseconds.
    Time {
        /// `offcpu` or `wall`.
        mode: &'static str,
        /// The CPU sampling rate of a wall profile.
        hz: Option<u32>,
        /// Blocks that ended and were kept.
        blocks: u64,
        /// Switch-outs dropped by the agent's rate cap.
        throttled: u64,
    },
    /// Events a language runtime reported with their stacks: .NET's
    /// allocation ticks (`alloc`, weight = bytes) or lock contentions
    /// (`contention`, weight = nanoseconds waited); or what its heap
    /// holds by type (`heap`, weight = bytes, count = objects).
    Runtime {
        /// `alloc`, `contention` or `heap`.
        what: &'static str,
    },
}

impl Measure {
    /// pprof's sample types: what each value of a sample is.
    pub fn sample_types(&self) -> Vec<(String, &'static str)> {
        match self {
            Self::Samples { .. } => vec![
                ("samples".to_owned(), "count"),
                ("cpu".to_owned(), "nanoseconds"),
            ],
            Self::Probe { of, .. } if of == "count" => vec![("calls".to_owned(), "count")],
            Self::Probe { of, unit, .. } => {
                vec![("calls".to_owned(), "count"), (of.clone(), *unit)]
            }
            Self::Time { .. } => vec![
                (self.time_kind().0.to_owned(), "count"),
                (self.time_kind().1.to_owned(), "nanoseconds"),
            ],
            Self::Runtime { .. } => {
                let (count, weight, unit) = self.runtime_kind();
                vec![(count.to_owned(), "count"), (weight.to_owned(), unit)]
            }
        }
    }

    /// A runtime profile's (count, weight, unit) sample type names:
    /// pprof's `alloc_samples`/`alloc_space` in bytes,
    /// `inuse_objects`/`inuse_space` in bytes, or `contentions`/`delay` in
    /// nanoseconds, as Go names them.
    fn runtime_kind(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Runtime { what: "alloc" } => ("alloc_samples", "alloc_space", "bytes"),
            Self::Runtime { what: "heap" } => ("inuse_objects", "inuse_space", "bytes"),
            _ => ("contentions", "delay", "nanoseconds"),
        }
    }

    /// A time profile's (count, time) sample type names: `blocks` and
    /// `off_cpu`, or `events` and `wall`.
    fn time_kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::Time { mode: "wall", .. } => ("events", "wall"),
            _ => ("blocks", "off_cpu"),
        }
    }

    /// The values of one stack, in [`Self::sample_types`] order.
    pub fn sample_values(&self, stack: &Stack) -> Vec<i64> {
        let count = i64::try_from(stack.count).unwrap_or(i64::MAX);
        let weight = i64::try_from(stack.weight).unwrap_or(i64::MAX);
        match self {
            Self::Samples { hz, .. } => {
                vec![count, count.saturating_mul(period_ns(*hz))]
            }
            Self::Probe { of, .. } if of == "count" => vec![count],
            Self::Probe { .. } | Self::Time { .. } | Self::Runtime { .. } => vec![count, weight],
        }
    }

    /// What the flamegraph's widths count (inferno's `count_name`).
    pub fn weight_name(&self) -> String {
        match self {
            Self::Samples { .. } => "samples".to_owned(),
            Self::Probe { unit: "count", .. } => "calls".to_owned(),
            Self::Probe {
                of, unit: "value", ..
            } => of.clone(),
            Self::Probe { unit, .. } => (*unit).to_owned(),
            Self::Time { .. } => "nanoseconds".to_owned(),
            Self::Runtime { .. } => self.runtime_kind().2.to_owned(),
        }
    }

    /// pprof's period type and period: one CPU sample's length, or one
    /// call.
    pub fn period(&self) -> ((String, &'static str), i64) {
        match self {
            Self::Samples { hz, .. } => (("cpu".to_owned(), "nanoseconds"), period_ns(*hz)),
            Self::Probe { .. } => (("calls".to_owned(), "count"), 1),
            Self::Time { hz, .. } => (
                (self.time_kind().1.to_owned(), "nanoseconds"),
                hz.map_or(1, period_ns),
            ),
            Self::Runtime { .. } => {
                let (_, weight, unit) = self.runtime_kind();
                ((weight.to_owned(), unit), 1)
            }
        }
    }
}

/// One sample's length at `hz`.
pub fn period_ns(hz: u32) -> i64 {
    1_000_000_000 / i64::from(hz.max(1))
}

/// A finished stack profile: what every renderer takes.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Aggregated stacks.
    pub stacks: Vec<Stack>,
    /// Samples (or probe hits) kept.
    pub samples: u64,
    /// Records the kernel reported lost (ring buffer full).
    pub lost: u64,
    /// PID → process name, for every process that was recorded.
    pub processes: BTreeMap<u32, String>,
    /// Wall-clock start.
    pub started: SystemTime,
    /// Actual capture length.
    pub duration: Duration,
    /// Whether the client went away before the end.
    pub cancelled: bool,
    /// What was counted and what the weights mean.
    pub measure: Measure,
    /// When recording started and stopped, to time what comes before and
    /// after.
    pub sampling: (Instant, Instant),
    /// GNU build IDs (lowercase hex) of the modules in the stacks, by PID
    /// and module path, read at capture time.
    pub build_ids: BTreeMap<(u32, String), String>,
    /// Symbolization errors by PID and module path (the first of each).
    pub symbol_errors: BTreeMap<(u32, String), String>,
}

impl Captured {
    /// The processes a profile is of, for titles.
    pub fn title(&self) -> String {
        let who: Vec<String> = self
            .processes
            .iter()
            .take(4)
            .map(|(pid, comm)| format!("{comm} ({pid})"))
            .collect();
        let more = self.processes.len().saturating_sub(4);
        let mut t = if who.is_empty() {
            "no samples".to_owned()
        } else {
            who.join(", ")
        };
        if more > 0 {
            t.push_str(&format!(" and {more} more"));
        }
        t
    }

    /// Share of samples whose stacks are truncated.
    pub fn truncated_ratio(&self) -> f64 {
        let truncated: u64 = self
            .stacks
            .iter()
            .filter(|s| s.truncated)
            .map(|s| s.count)
            .sum();
        if self.samples == 0 {
            0.0
        } else {
            truncated as f64 / self.samples as f64
        }
    }

    /// Every stack's weight summed.
    pub fn total_weight(&self) -> u64 {
        self.stacks.iter().map(|s| s.weight).sum()
    }

    /// A flamegraph's title, subtitle (what was measured, how much, how
    /// stacks were walked: `unwind`) and what it says when it is empty.
    pub fn flamegraph_titles(&self, unwind: &str) -> (String, String, &'static str) {
        let lost = if self.lost > 0 {
            format!(", {} lost", self.lost)
        } else {
            String::new()
        };
        let truncated = self.truncated_ratio() * 100.0;
        let seconds = self.duration.as_secs_f64();
        match &self.measure {
            Measure::Samples { event, hz } => (
                format!("tracecar: {}", self.title()),
                format!(
                    "{seconds:.1}s at {hz} Hz ({event}), {} samples, {truncated:.1}% truncated stacks, unwind={}{lost}",
                    self.samples, unwind,
                ),
                "no samples: the target was idle or not running",
            ),
            Measure::Probe { probe, of, .. } => (
                format!("tracecar: callers of {probe} in {}", self.title()),
                format!(
                    "{} calls in {seconds:.1}s, weighted by {of}, {truncated:.1}% truncated stacks, unwind={}{lost}",
                    self.samples, unwind,
                ),
                "no calls: the probed function did not run",
            ),
            Measure::Time {
                mode,
                hz,
                blocks,
                throttled,
            } => (
                format!(
                    "tracecar: {} time of {}",
                    if *mode == "wall" {
                        "wall-clock"
                    } else {
                        "off-CPU"
                    },
                    self.title()
                ),
                format!(
                    "{seconds:.1}s, {blocks} blocks{}, in nanoseconds, {truncated:.1}% truncated stacks, unwind={}{lost}{}",
                    hz.map(|hz| format!(" and CPU samples at {hz} Hz"))
                        .unwrap_or_default(),
                    unwind,
                    if *throttled > 0 {
                        format!(", {throttled} blocks over the rate cap not recorded")
                    } else {
                        String::new()
                    },
                ),
                "nothing recorded: no thread of the target blocked or ran",
            ),
            Measure::Runtime { what } => (
                format!(
                    "tracecar: .NET {} of {}",
                    if *what == "alloc" {
                        "allocations"
                    } else {
                        "lock contention"
                    },
                    self.title()
                ),
                format!(
                    "{seconds:.1}s, {} {}, in {}, stacks from the runtime",
                    self.samples,
                    if *what == "alloc" {
                        "allocation ticks (one about every 100 KB)"
                    } else {
                        "contentions"
                    },
                    self.measure.weight_name(),
                ),
                "nothing recorded: the runtime reported no such event",
            ),
        }
    }
}
