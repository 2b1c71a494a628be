//! Continuous profiling (`--continuous cpu,offcpu`, which the webhook sets
//! from a pod's `tracecar.dev/continuous`): the pod's processes profiled
//! all the time, at a low rate, in windows, by the profiler `/v1/profile`
//! runs (same unwinding, same JIT and .NET names, the agent's own
//! container left out). The last completed window of each mode is kept as
//! gzipped pprof and served at `/debug/pprof/window`, on the socket and on
//! the profiles listener.
//!
//! [`parse`] (pure: the modes, rate and window, turned into the specs
//! `/v1/profile` itself would parse) → [`start`] (a thread per mode, one
//! window after another) → [`Windows`] (the last window of each mode and
//! what happened to the others).
//!
//! Decisions, written here because nobody else will:
//! - Windows take none of the four capture slots: a pod that profiles
//!   itself all the time still answers `kubectl tracecar profile`. The
//!   memory bound holds them back as it does any capture: while the agent
//!   is above its admission mark a window is not started, and is counted
//!   as skipped.
//! - The few milliseconds in which a finished window is named and
//!   rendered are not sampled: windows follow each other, they do not
//!   overlap.
//! - The kernel's symbol table is kept between windows (about 2.5 MiB), not
//!   read again for each (about 80 ms of CPU a read).
//! - A window that fails (its perf events cannot be opened, say) is tried
//!   again one window later, never in a tight loop; the last error is kept
//!   and `/debug/pprof/window` says it until a window completes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracecar_api::request::{ProfileRequest, WindowRequest};

use super::{Format, Mode, ProfileSpec};
use crate::memory::Memory;
use crate::params::{self, SpecError};
use crate::procfs::Procfs;
use crate::sync::lock;

/// Samples per second when the config does not say: low enough to run all
/// the time, and prime, so that it does not beat with a periodic workload.
pub const DEFAULT_HZ: u32 = 19;
/// Window length when the config does not say.
pub const DEFAULT_WINDOW_SECONDS: u32 = 15;

/// What continuous profiling runs: one profile spec per mode, each a
/// window long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinuousSpec {
    /// The window of each mode, as `/v1/profile` would take it.
    pub profiles: Vec<ProfileSpec>,
}

impl ContinuousSpec {
    /// The modes, in the order given.
    pub fn modes(&self) -> Vec<Mode> {
        self.profiles.iter().map(|p| p.mode).collect()
    }
}

/// The modes continuous profiling runs, with what each shows.
const MODES: &[(&str, &str, Mode)] = &[
    ("cpu", "where the CPU time goes", Mode::Cpu),
    ("offcpu", "where threads block", Mode::OffCpu),
];

/// Parses `--continuous` (`cpu`, `offcpu` or both, comma-separated) with
/// the rate and the window length into the profiles to run, through
/// `/v1/profile`'s own validation (so a window is exactly what
/// `/v1/profile?mode=…&seconds=…&hz=…&format=pprof` takes).
pub fn parse(modes: &str, hz: u32, window_seconds: u32) -> Result<ContinuousSpec, SpecError> {
    let supported = || {
        MODES
            .iter()
            .map(|(name, _, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut profiles: Vec<ProfileSpec> = Vec::new();
    for word in modes.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let Some(&(name, _, mode)) = MODES.iter().find(|(name, _, _)| *name == word) else {
            return Err(SpecError::new(
                format!(
                    "continuous mode {} is not supported",
                    tracecar_api::quoted(word)
                ),
                format!("use one or more of {}", supported()),
            ));
        };
        if profiles.iter().any(|p| p.mode == mode) {
            continue;
        }
        let request = ProfileRequest {
            seconds: Some(window_seconds.to_string()),
            hz: mode.samples_cpu().then(|| hz.to_string()),
            mode: Some(name.to_owned()),
            format: Some("pprof".to_owned()),
            ..ProfileRequest::default()
        };
        profiles.push(super::spec::parse(&request).map_err(|e| {
            SpecError::new(
                format!("continuous profiling: {}", e.message),
                "the window is 1 to 600 seconds, the rate 1 to 1000 Hz",
            )
        })?);
    }
    if profiles.is_empty() {
        return Err(SpecError::new(
            "continuous profiling names no mode",
            format!("use one or more of {}", supported()),
        ));
    }
    Ok(ContinuousSpec { profiles })
}

/// Parses a `/debug/pprof/window` request: the mode (`cpu` when absent).
pub fn parse_window(request: &WindowRequest) -> Result<Mode, SpecError> {
    params::one_of(request.mode(), MODES)
}

/// A completed window.
#[derive(Debug, Clone)]
pub struct Window {
    /// What it measured.
    pub mode: Mode,
    /// Its sampling rate; 0 for an off-CPU window (every block is
    /// recorded, none sampled).
    pub hz: u32,
    /// When it began.
    pub started: SystemTime,
    /// How long it sampled.
    pub duration: Duration,
    /// Samples (or blocks) in it.
    pub samples: u64,
    /// The profile, gzipped pprof.
    pub pprof: Arc<Vec<u8>>,
}

/// What happened to the windows of one mode.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Windows completed.
    pub completed: u64,
    /// Windows not started because the agent's memory was near its limit.
    pub skipped: u64,
    /// Windows that failed.
    pub failed: u64,
    /// The last failure or skip, until a window completes.
    pub last_error: Option<String>,
}

/// Why `/debug/pprof/window` has no window to give.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// Continuous profiling is off, or off for this mode.
    #[error("continuous {mode} profiling is not on in this pod (on: {on})")]
    Off {
        /// The mode asked for.
        mode: &'static str,
        /// The modes that are on (`none`).
        on: String,
    },
    /// No window of the mode has completed yet.
    #[error("no {mode} window has completed yet{}", why.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    NotYet {
        /// The mode asked for.
        mode: &'static str,
        /// The last failure, if the windows so far failed.
        why: Option<String>,
        /// The window's length, in seconds.
        window_seconds: u32,
    },
}

/// The last completed window of each mode, and the tallies.
#[derive(Debug, Default)]
pub struct Windows {
    /// What runs: each mode's window as `/v1/profile` takes it.
    profiles: Vec<ProfileSpec>,
    last: Mutex<BTreeMap<&'static str, Window>>,
    tallies: Mutex<BTreeMap<&'static str, Tally>>,
}

impl Windows {
    /// The store of a continuous profiling that runs `spec` (or none).
    pub fn new(spec: Option<&ContinuousSpec>) -> Self {
        Self {
            profiles: spec.map(|s| s.profiles.clone()).unwrap_or_default(),
            ..Self::default()
        }
    }

    /// The last completed window of `mode`.
    pub fn last(&self, mode: Mode) -> Result<Window, WindowError> {
        let Some(profile) = self.profiles.iter().find(|p| p.mode == mode) else {
            let on: Vec<&str> = self.profiles.iter().map(|p| p.mode.name()).collect();
            return Err(WindowError::Off {
                mode: mode.name(),
                on: if on.is_empty() {
                    "none".to_owned()
                } else {
                    on.join(", ")
                },
            });
        };
        if let Some(window) = lock(&self.last).get(mode.name()) {
            return Ok(window.clone());
        }
        Err(WindowError::NotYet {
            mode: mode.name(),
            why: self.tally(mode).last_error,
            window_seconds: profile.seconds,
        })
    }

    /// Every mode's windows so far, for `/v1/capabilities` (`None` when
    /// continuous profiling is off).
    pub fn report(&self) -> Option<Vec<tracecar_api::capabilities::ContinuousMode>> {
        (!self.profiles.is_empty()).then(|| {
            self.profiles
                .iter()
                .map(|profile| {
                    let tally = self.tally(profile.mode);
                    tracecar_api::capabilities::ContinuousMode {
                        mode: profile.mode.name().to_owned(),
                        window_seconds: profile.seconds,
                        hz: sampled_hz(profile),
                        completed: tally.completed,
                        skipped: tally.skipped,
                        failed: tally.failed,
                        last_error: tally.last_error,
                    }
                })
                .collect()
        })
    }

    /// What happened to the windows of `mode` so far.
    pub fn tally(&self, mode: Mode) -> Tally {
        lock(&self.tallies)
            .get(mode.name())
            .cloned()
            .unwrap_or_default()
    }

    fn completed(&self, mode: Mode, window: Window) {
        lock(&self.last).insert(mode.name(), window);
        let mut tallies = lock(&self.tallies);
        let tally = tallies.entry(mode.name()).or_default();
        tally.completed += 1;
        tally.last_error = None;
    }

    fn missed(&self, mode: Mode, skipped: bool, why: String) {
        let mut tallies = lock(&self.tallies);
        let tally = tallies.entry(mode.name()).or_default();
        if skipped {
            tally.skipped += 1;
        } else {
            tally.failed += 1;
        }
        tally.last_error = Some(why);
    }
}

/// A window's sampling rate: 0 for an off-CPU window, which records every
/// block and samples nothing.
fn sampled_hz(profile: &ProfileSpec) -> u32 {
    if profile.mode.samples_cpu() {
        profile.hz
    } else {
        0
    }
}

/// Continuous profiling, running: stops (and waits for its threads) when
/// dropped.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Where completed windows go besides `/debug/pprof/window` (the push
/// queues). `offer` runs on the window's thread and must not block.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Takes a completed window.
    fn offer(&self, window: &Window);
}

/// What every window of a pod shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// The pod's `/proc`.
    pub procfs: Procfs,
    /// The agent's memory bound.
    pub memory: Arc<Memory>,
    /// Written into every window (pprof comments): the pod's identity,
    /// `key=value`.
    pub comments: Vec<String>,
    /// Where each completed window is offered.
    pub sinks: Vec<Arc<dyn Sink>>,
}

/// Starts a thread per mode of `spec`, each filling `windows`.
pub fn start(
    spec: &ContinuousSpec,
    context: &Context,
    windows: &Arc<Windows>,
) -> std::io::Result<Running> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Running {
        stop: stop.clone(),
        threads: Vec::new(),
    };
    for profile in &spec.profiles {
        let (profile, context, windows, stop) = (
            profile.clone(),
            context.clone(),
            windows.clone(),
            stop.clone(),
        );
        running.threads.push(
            std::thread::Builder::new()
                .name(format!("continuous-{}", profile.mode.name()))
                .spawn(move || run(&profile, &context, &windows, &stop))?,
        );
    }
    Ok(running)
}

/// One window after another until `stop`.
fn run(profile: &ProfileSpec, context: &Context, windows: &Windows, stop: &Arc<AtomicBool>) {
    let length = Duration::from_secs(u64::from(profile.seconds));
    // The kernel's symbol table, held from one window to the next: reading
    // /proc/kallsyms again each window would be most of what continuous
    // profiling costs (about 80 ms of CPU a read, 0.5 % of a CPU at 15 s
    // windows), and holding it takes about 2.5 MiB (121,000 symbols on
    // 6.18). Taken again each window, so that a module loaded meanwhile
    // is seen.
    let mut _kernel_symbols;
    while !stop.load(Ordering::Relaxed) {
        _kernel_symbols = crate::stacks::kallsyms::Kallsyms::shared();
        let began = Instant::now();
        match window(profile, context, stop) {
            Ok(_) if stop.load(Ordering::Relaxed) => break,
            Ok(window) => {
                for sink in &context.sinks {
                    sink.offer(&window);
                }
                windows.completed(profile.mode, window);
            }
            Err(Missed { skipped, why }) => {
                tracing::warn!(mode = profile.mode.name(), %why, skipped, "continuous window missed");
                windows.missed(profile.mode, skipped, why);
                // Not again before a window's length has passed.
                while !stop.load(Ordering::Relaxed) && began.elapsed() < length {
                    std::thread::sleep(Duration::from_millis(100).min(length));
                }
            }
        }
    }
}

/// A window not taken, and why.
struct Missed {
    skipped: bool,
    why: String,
}

/// Captures one window.
fn window(
    profile: &ProfileSpec,
    context: &Context,
    stop: &Arc<AtomicBool>,
) -> Result<Window, Missed> {
    let failed = |why: String| Missed {
        skipped: false,
        why,
    };
    context.memory.admit().map_err(|pressure| Missed {
        skipped: true,
        why: pressure.to_string(),
    })?;
    // A fresh pin for each window: the processes of this window, not of
    // the first one.
    let procfs = context.procfs.pinned();
    let (plan, mut meta) = super::plan_here(profile, &procfs).map_err(|e| failed(e.to_string()))?;
    meta.comments.clone_from(&context.comments);
    let started = SystemTime::now();
    let profiled = super::profile(&plan, Format::Pprof, &meta, &procfs, stop, &context.memory)
        .map_err(|e| failed(e.to_string()))?;
    Ok(Window {
        mode: profile.mode,
        hz: sampled_hz(profile),
        started,
        duration: profiled.capture,
        samples: profiled.samples,
        pprof: Arc::new(profiled.body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_become_the_profiles_v1_profile_would_take() {
        let spec = parse("cpu, offcpu,cpu", 19, 15).unwrap();
        assert_eq!(spec.modes(), [Mode::Cpu, Mode::OffCpu]);
        let cpu = &spec.profiles[0];
        assert_eq!((cpu.hz, cpu.seconds, cpu.pids.clone()), (19, 15, None));
        assert_eq!(cpu.format, Format::Pprof);
        assert_eq!(spec.profiles[1].seconds, 15);
    }

    #[test]
    fn what_cannot_run_is_refused_naming_it() {
        let e = parse("cpu,wall", 19, 15).unwrap_err();
        assert!(e.message.contains("\"wall\""), "{e:?}");
        assert!(e.hint.contains("cpu, offcpu"), "{e:?}");
        assert!(
            parse(" , ", 19, 15)
                .unwrap_err()
                .message
                .contains("no mode")
        );
        let e = parse("cpu", 19, 0).unwrap_err();
        assert!(
            e.message.starts_with("continuous profiling: seconds"),
            "{e:?}"
        );
        assert!(parse("cpu", 5000, 15).is_err());
        // The rate is the CPU's: an off-CPU window records every switch.
        assert!(parse("offcpu", 5000, 15).is_ok());
    }

    #[test]
    fn the_window_answers_what_it_has() {
        let windows = Windows::new(Some(&parse("cpu", 19, 15).unwrap()));
        let off = windows.last(Mode::OffCpu).unwrap_err();
        assert_eq!(
            off.to_string(),
            "continuous offcpu profiling is not on in this pod (on: cpu)"
        );
        assert!(matches!(
            windows.last(Mode::Cpu),
            Err(WindowError::NotYet { why: None, .. })
        ));
        windows.missed(Mode::Cpu, false, "cannot open perf events".to_owned());
        let e = windows.last(Mode::Cpu).unwrap_err();
        assert!(e.to_string().ends_with(": cannot open perf events"), "{e}");
        let window = Window {
            mode: Mode::Cpu,
            hz: 19,
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(15),
            samples: 7,
            pprof: Arc::new(vec![1, 2]),
        };
        windows.completed(Mode::Cpu, window);
        assert_eq!(windows.last(Mode::Cpu).unwrap().samples, 7);
        let tally = windows.tally(Mode::Cpu);
        assert_eq!((tally.completed, tally.failed, tally.skipped), (1, 1, 0));
        assert_eq!(tally.last_error, None);
        let none = Windows::new(None).last(Mode::Cpu).unwrap_err();
        assert!(none.to_string().ends_with("(on: none)"), "{none}");
    }

    #[test]
    fn a_window_request_names_cpu_or_offcpu() {
        let mode = |raw: Option<&str>| {
            parse_window(&WindowRequest {
                mode: raw.map(str::to_owned),
            })
        };
        assert_eq!(mode(None).unwrap(), Mode::Cpu);
        assert_eq!(mode(Some("offcpu")).unwrap(), Mode::OffCpu);
        assert!(mode(Some("wall")).is_err());
    }
}
