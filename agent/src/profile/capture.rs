//! The profile executor: per-CPU `cpu-clock` sampling, filtered to the
//! target processes, with symbolization ([`super::symbolize`]) while the
//! targets are alive; the stacks are then merged by the pure
//! [`super::aggregate`].
//!
//! Sampling is per CPU (`pid = -1`) rather than per thread, so threads and
//! processes created during the capture are included without racing their
//! creation, and a target that exits mid-capture simply stops producing
//! samples. Samples of other tasks are dropped as they are read. PIDs in
//! samples are those of the agent's PID namespace; tasks outside it report
//! 0 and are dropped too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use perf_event_open::sample::record::Record;
use perf_event_open::sample::record::sample::CallChain;

use super::aggregate::{NamedStack, aggregate};
use super::kallsyms::Kallsyms;
use super::symbolize::{ProcessSymbols, lookup_addresses};
use crate::process;
use crate::procfs::Procfs;
use crate::sys::{self, MAX_STACK_FRAMES, SamplingAttrs};

/// Which processes to keep samples of.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Exactly these PIDs.
    Pids(HashSet<u32>),
    /// Every process but the agent, its tools and the pause process.
    Pod,
}

/// A capture to run.
#[derive(Debug, Clone)]
pub struct CapturePlan {
    /// Whose samples to keep.
    pub targets: Targets,
    /// How long.
    pub duration: Duration,
    /// Sampling attributes.
    pub attrs: SamplingAttrs,
    /// CPUs to sample.
    pub cpus: Vec<u32>,
    /// Keep thread IDs apart (for thread-name root frames).
    pub per_thread: bool,
    /// How user stacks are walked.
    pub unwind: super::Unwind,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `perf_event_open` or its ring buffer failed.
    #[error("cannot open perf events: {0}")]
    Perf(#[source] std::io::Error),
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
    /// JIT code named by a perf map.
    Jit,
    /// Kernel code.
    Kernel,
    /// Could not be named.
    Unknown,
}

/// A named frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Frame {
    /// Function name, or `[unknown] module+0xoff`.
    pub name: String,
    /// What kind of code.
    pub kind: FrameKind,
    /// Module (file path) the code is in, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// One aggregated stack, root first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stack {
    /// PID it was sampled in.
    pub pid: u32,
    /// Frames from the root (process name) to the leaf.
    pub frames: Vec<Frame>,
    /// Whether the user stack did not reach a thread entry point.
    pub truncated: bool,
    /// Samples.
    pub count: u64,
}

/// A finished capture.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Aggregated stacks.
    pub stacks: Vec<Stack>,
    /// Samples kept.
    pub samples: u64,
    /// Records the kernel reported lost (ring buffer full).
    pub lost: u64,
    /// PID → process name, for every process that was sampled.
    pub processes: BTreeMap<u32, String>,
    /// Wall-clock start.
    pub started: SystemTime,
    /// Actual capture length.
    pub duration: Duration,
    /// Whether the client went away before the end.
    pub cancelled: bool,
    /// The perf event that drove sampling (`cycles` or `cpu-clock`).
    pub event: &'static str,
    /// When sampling started and stopped, to time what comes before and
    /// after.
    pub sampling: (Instant, Instant),
    /// GNU build IDs (lowercase hex) of the modules in the stacks, by PID
    /// and module path, read at capture time.
    pub build_ids: BTreeMap<(u32, String), String>,
    /// Symbolization errors by PID and module path (the first of each).
    pub symbol_errors: BTreeMap<(u32, String), String>,
}

impl Captured {
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
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RawStack {
    pid: u32,
    tid: u32,
    /// Innermost first, as the kernel reports.
    user: Vec<u64>,
    kernel: Vec<u64>,
}

/// Everything known about one sampled process.
struct ProcessState {
    comm: String,
    symbols: ProcessSymbols,
    threads: HashMap<u32, String>,
    /// For a .NET process: the session naming its managed methods.
    rundown: Option<crate::dotnet::rundown::Rundown>,
}

impl ProcessState {
    fn new(procfs: &Procfs, pid: u32) -> Self {
        let symbols = ProcessSymbols::new(procfs, pid);
        let rundown = symbols
            .is_dotnet()
            .then(|| crate::dotnet::rundown::Rundown::start(procfs, pid));
        Self {
            comm: procfs
                .stat(pid)
                .map_or_else(|_| format!("pid-{pid}"), |s| s.comm),
            symbols,
            threads: HashMap::new(),
            rundown,
        }
    }
}

/// The GNU build ID of a module the process maps, read as the process
/// sees it.
fn build_id(procfs: &Procfs, pid: u32, module: &str) -> Option<String> {
    use object::Object as _;
    let data = std::fs::read(procfs.in_root(pid, std::path::Path::new(module))).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let id = file.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs a capture until its duration passes or `cancel` is set.
pub fn run(
    plan: &CapturePlan,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
) -> Result<Captured, CaptureError> {
    let (samplers, event) =
        sys::open_cpu_samplers(&plan.cpus, plan.attrs).map_err(CaptureError::Perf)?;
    let symbolizer = blazesym::symbolize::Symbolizer::new();
    let agent = std::process::id();
    let mut keep: HashMap<u32, bool> = HashMap::new();
    let mut raw: HashMap<RawStack, u64> = HashMap::new();
    let mut procs: HashMap<u32, ProcessState> = HashMap::new();
    let mut samples = 0u64;
    let mut lost = 0u64;

    let started = SystemTime::now();
    let start = Instant::now();
    for s in &samplers {
        s.counter.enable().map_err(CaptureError::Perf)?;
    }
    // Read while the capture runs, not before it.
    let kallsyms = if plan.attrs.kernel {
        Kallsyms::load()
    } else {
        Kallsyms::default()
    };
    let tick = Duration::from_millis(100);
    let mut cancelled = false;
    loop {
        let elapsed = start.elapsed();
        let done = elapsed >= plan.duration;
        if !done {
            std::thread::sleep(tick.min(plan.duration - elapsed));
        }
        if cancel.load(Ordering::Relaxed) {
            cancelled = true;
        }
        if done || cancelled {
            for s in &samplers {
                let _ = s.counter.disable();
            }
        }
        for s in &samplers {
            let Some(iter) = s.sampler.iter() else {
                continue;
            };
            for (_, record) in iter {
                match record {
                    Record::Sample(sample) => {
                        let Some(task) = sample.record_id.task.as_ref() else {
                            continue;
                        };
                        let pid = task.pid;
                        if pid == 0 {
                            continue;
                        }
                        let wanted = *keep.entry(pid).or_insert_with(|| match &plan.targets {
                            Targets::Pids(set) => set.contains(&pid),
                            Targets::Pod => !process::is_infrastructure(procfs, pid, agent),
                        });
                        if !wanted {
                            continue;
                        }
                        let mut stack = RawStack {
                            pid,
                            tid: if plan.per_thread { task.tid } else { 0 },
                            user: Vec::new(),
                            kernel: Vec::new(),
                        };
                        for chain in sample.call_chain.iter().flatten() {
                            match chain {
                                CallChain::User(ips) => stack.user.extend(lookup_addresses(ips)),
                                CallChain::Kernel(ips) => {
                                    stack.kernel.extend(lookup_addresses(ips))
                                }
                                _ => {}
                            }
                        }
                        let state = procs
                            .entry(pid)
                            .or_insert_with(|| ProcessState::new(procfs, pid));
                        if plan.unwind != super::Unwind::Fp {
                            let dwarf = match (&sample.user_regs, &sample.user_stack) {
                                (Some((regs, _)), Some(bytes)) => {
                                    state.symbols.unwind(procfs, pid, regs, bytes)
                                }
                                _ => None,
                            };
                            stack.user = choose_user_stack(plan.unwind, dwarf, stack.user);
                        }
                        if plan.per_thread {
                            state.threads.entry(task.tid).or_insert_with(|| {
                                procfs
                                    .thread_comm(pid, task.tid)
                                    .unwrap_or_else(|_| format!("tid-{}", task.tid))
                            });
                        }
                        for ip in &stack.user {
                            state.symbols.note(*ip);
                        }
                        samples += 1;
                        *raw.entry(stack).or_insert(0) += 1;
                    }
                    Record::LostRecords(l) => lost += l.lost_records,
                    Record::LostSamples(l) => lost += l.lost_samples,
                    _ => {}
                }
            }
        }
        // Name new addresses while the processes still exist.
        for (pid, state) in &mut procs {
            state.symbols.symbolize_pending(procfs, *pid, &symbolizer);
        }
        if done || cancelled {
            break;
        }
    }
    let duration = start.elapsed();
    let ended = Instant::now();
    drop(samplers);
    // .NET: the runtime's rundown names the managed frames.
    for (pid, state) in &mut procs {
        if let Some(rundown) = state.rundown.take() {
            match rundown.finish() {
                Ok(table) => {
                    tracing::debug!(
                        pid,
                        methods = table.len(),
                        "managed methods named by rundown"
                    );
                    state.symbols.set_managed(table);
                }
                Err(e) => state.symbols.note_error("[dotnet rundown]", e),
            }
        }
    }

    let named = raw.into_iter().filter_map(|(stack, count)| {
        let state = procs.get(&stack.pid)?;
        let mut roots = vec![state.comm.clone()];
        if plan.per_thread {
            roots.push(state.threads.get(&stack.tid).cloned().unwrap_or_default());
        }
        Some(NamedStack {
            pid: stack.pid,
            roots,
            user: stack
                .user
                .iter()
                .rev()
                .map(|ip| state.symbols.frame(*ip))
                .collect(),
            kernel: stack
                .kernel
                .iter()
                .rev()
                .map(|ip| Frame {
                    name: kallsyms
                        .lookup(*ip)
                        .map_or_else(|| format!("[unknown] [kernel]+0x{ip:x}"), str::to_owned),
                    kind: FrameKind::Kernel,
                    module: None,
                })
                .collect(),
            user_depth: stack.user.len(),
            count,
        })
    });
    let stacks = aggregate(named, usize::from(MAX_STACK_FRAMES));
    // Build IDs for pprof, read now, while the processes exist.
    let mut build_ids = BTreeMap::new();
    for stack in &stacks {
        for module in stack.frames.iter().filter_map(|f| f.module.as_deref()) {
            build_ids
                .entry((stack.pid, module.to_owned()))
                .or_insert_with(|| build_id(procfs, stack.pid, module));
        }
    }
    Ok(Captured {
        stacks,
        samples,
        lost,
        processes: procs
            .iter()
            .map(|(pid, s)| (*pid, s.comm.clone()))
            .collect(),
        started,
        duration,
        cancelled,
        event,
        sampling: (start, ended),
        build_ids: build_ids
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        symbol_errors: procs
            .iter()
            .flat_map(|(pid, s)| {
                s.symbols
                    .errors()
                    .iter()
                    .map(|(module, e)| ((*pid, module.clone()), e.clone()))
            })
            .collect(),
    })
}

/// Picks the user stack for a sample: DWARF for `dwarf`; for `auto`, the
/// DWARF walk when it completed, otherwise whichever walk got further
/// (frame pointers get through JIT code that has no unwind info).
fn choose_user_stack(
    mode: super::Unwind,
    dwarf: Option<super::unwind::Unwound>,
    frame_pointer: Vec<u64>,
) -> Vec<u64> {
    match (mode, dwarf) {
        (super::Unwind::Fp, _) => frame_pointer,
        (super::Unwind::Dwarf, Some(d)) => d.frames,
        (super::Unwind::Dwarf, None) => frame_pointer.into_iter().take(1).collect(),
        (super::Unwind::Auto, Some(d))
            if !d.incomplete || d.frames.len() >= frame_pointer.len() =>
        {
            d.frames
        }
        (super::Unwind::Auto, _) => frame_pointer,
    }
}
