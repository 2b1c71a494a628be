//! The profile executor: per-CPU `cpu-clock` sampling, filtered to the
//! target processes, with symbolization while the targets are alive.
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

use super::kallsyms::Kallsyms;
use super::perfmap::PerfMapFile;
use crate::process;
use crate::procfs::{MapEntry, Procfs};
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
    maps: Vec<MapEntry>,
    perf_map: Option<PerfMapFile>,
    unwinder: Option<super::unwind::ProcessUnwinder>,
    pending: HashSet<u64>,
    named: HashMap<u64, Frame>,
    threads: HashMap<u32, String>,
}

/// Entry points where a complete user stack ends.
const STACK_ROOTS: [&str; 11] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "__libc_start_main_impl",
    "main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "thread_start",
];

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
                                    state.unwind(procfs, pid, regs, bytes)
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
                            if !state.named.contains_key(ip) {
                                state.pending.insert(*ip);
                            }
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
            state.symbolize_pending(procfs, *pid, &symbolizer);
        }
        if done || cancelled {
            break;
        }
    }
    let duration = start.elapsed();
    let ended = Instant::now();
    drop(samplers);

    let mut stacks: HashMap<(u32, Vec<Frame>), (bool, u64)> = HashMap::new();
    for (stack, count) in raw {
        let Some(state) = procs.get(&stack.pid) else {
            continue;
        };
        let mut frames = vec![Frame {
            name: state.comm.clone(),
            kind: FrameKind::Root,
            module: None,
        }];
        if plan.per_thread {
            frames.push(Frame {
                name: state.threads.get(&stack.tid).cloned().unwrap_or_default(),
                kind: FrameKind::Root,
                module: None,
            });
        }
        let user: Vec<Frame> = stack.user.iter().rev().map(|ip| state.frame(*ip)).collect();
        let reaches_root = user
            .first()
            .is_some_and(|f| STACK_ROOTS.contains(&f.name.as_str()))
            || user
                .iter()
                .take(3)
                .any(|f| STACK_ROOTS.contains(&f.name.as_str()));
        let truncated = !stack.user.is_empty()
            && (!reaches_root || stack.user.len() >= usize::from(MAX_STACK_FRAMES));
        frames.extend(user);
        frames.extend(stack.kernel.iter().rev().map(|ip| {
            Frame {
                name: kallsyms
                    .lookup(*ip)
                    .map_or_else(|| format!("[unknown] [kernel]+0x{ip:x}"), str::to_owned),
                kind: FrameKind::Kernel,
                module: None,
            }
        }));
        let entry = stacks.entry((stack.pid, frames)).or_insert((truncated, 0));
        entry.1 += count;
    }
    let mut stacks: Vec<Stack> = stacks
        .into_iter()
        .map(|((pid, frames), (truncated, count))| Stack {
            pid,
            frames,
            truncated,
            count,
        })
        .collect();
    stacks.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.frames.len().cmp(&b.frames.len()))
    });
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
    })
}

/// Addresses to symbolize, innermost first: the sampled IP as is, return
/// addresses minus one so they fall inside the call instruction.
fn lookup_addresses(chain: &[u64]) -> impl Iterator<Item = u64> + '_ {
    chain
        .iter()
        .enumerate()
        .map(|(i, a)| if i == 0 { *a } else { a.saturating_sub(1) })
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

impl ProcessState {
    /// Unwinds a sample's stack copy with this process's modules.
    fn unwind(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        regs: &[u64],
        stack: &[u8],
    ) -> Option<super::unwind::Unwound> {
        if regs.get(2).is_some_and(|ip| self.map_of(*ip).is_none())
            && let Ok(maps) = procfs.maps(pid)
        {
            self.maps = maps;
        }
        let unwinder = self.unwinder.get_or_insert_with(Default::default);
        unwinder.unwind(procfs, pid, &self.maps, regs, stack)
    }

    fn new(procfs: &Procfs, pid: u32) -> Self {
        Self {
            comm: procfs
                .stat(pid)
                .map_or_else(|_| format!("pid-{pid}"), |s| s.comm),
            maps: procfs.maps(pid).unwrap_or_default(),
            // The runtime may create its map later: track the path anyway.
            perf_map: process::perf_map_location(procfs, pid).map(PerfMapFile::new),
            unwinder: None,
            pending: HashSet::new(),
            named: HashMap::new(),
            threads: HashMap::new(),
        }
    }

    fn map_of(&self, addr: u64) -> Option<&MapEntry> {
        crate::procfs::mapping_at(&self.maps, addr)
    }

    fn symbolize_pending(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        symbolizer: &blazesym::symbolize::Symbolizer,
    ) {
        if self.pending.is_empty() {
            return;
        }
        // New code may have been mapped (dlopen, JIT) since we last looked.
        if self.pending.iter().any(|a| self.map_of(*a).is_none())
            && let Ok(maps) = procfs.maps(pid)
        {
            self.maps = maps;
        }
        let mut file_backed = Vec::new();
        let pending: Vec<u64> = self.pending.drain().collect();
        if let Some(map) = &mut self.perf_map {
            map.refresh();
        }
        for addr in pending {
            let in_file = self.map_of(addr).is_some_and(MapEntry::is_file_backed)
                || self
                    .map_of(addr)
                    .is_some_and(|m| m.path.as_deref() == Some("[vdso]"));
            let jit = if in_file {
                None
            } else {
                self.perf_map
                    .as_ref()
                    .and_then(|m| m.index().lookup(addr))
                    .map(|e| Frame {
                        name: e.name.clone(),
                        kind: FrameKind::Jit,
                        module: None,
                    })
            };
            match jit {
                Some(frame) => {
                    self.named.insert(addr, frame);
                }
                None if in_file => file_backed.push(addr),
                // Anonymous memory without a perf-map entry (yet): leave it
                // unnamed, it is rendered from the maps at the end.
                None => {}
            }
        }
        if file_backed.is_empty() {
            return;
        }
        use blazesym::symbolize::source::{Process, Source};
        use blazesym::symbolize::{Input, Symbolized};
        let mut source = Process::new(blazesym::Pid::from(pid));
        source.perf_map = false;
        source.map_files = true;
        let src = Source::Process(source);
        let Ok(results) = symbolizer.symbolize(&src, Input::AbsAddr(&file_backed)) else {
            return;
        };
        for (addr, result) in file_backed.into_iter().zip(results) {
            if let Symbolized::Sym(sym) = result {
                let module = sym
                    .module
                    .as_ref()
                    .map(|m| m.to_string_lossy().into_owned());
                self.named.insert(
                    addr,
                    Frame {
                        name: sym.name.into_owned(),
                        kind: FrameKind::User,
                        module,
                    },
                );
            }
        }
    }

    /// The frame for `addr`: its name, or `[unknown] module+0xoffset`.
    fn frame(&self, addr: u64) -> Frame {
        if let Some(frame) = self.named.get(&addr) {
            return frame.clone();
        }
        let (module, offset) = match self.map_of(addr) {
            Some(m) if m.path.is_some() => (
                m.path.clone().unwrap_or_default(),
                addr - m.start + if m.is_file_backed() { m.offset } else { 0 },
            ),
            Some(m) => ("[anon]".to_owned(), addr - m.start),
            None => ("[unmapped]".to_owned(), addr),
        };
        let short = module.rsplit('/').next().unwrap_or(&module).to_owned();
        Frame {
            name: format!("[unknown] {short}+0x{offset:x}"),
            kind: FrameKind::Unknown,
            module: Some(module).filter(|m| m.starts_with('/')),
        }
    }
}
