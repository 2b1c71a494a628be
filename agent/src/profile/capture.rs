//! The profile executor: per-CPU `cpu-clock` sampling and, for `offcpu`
//! and `wall`, per-CPU `sched:sched_switch` tracing, filtered to the
//! target processes, with symbolization while the targets are alive; the
//! stacks are then merged by the pure [`crate::stacks::aggregate`].
//!
//! Sampling is per CPU (`pid = -1`) rather than per thread, so threads and
//! processes created during the capture are included without racing their
//! creation, and a target that exits mid-capture simply stops producing
//! samples. Samples of other tasks are dropped as they are read. PIDs in
//! samples are those of the agent's PID namespace; tasks outside it report
//! 0 and are dropped too.
//!
//! Blocked time: the `sched_switch` sample is taken in the thread leaving
//! the CPU (its user and kernel stacks where it blocked, and its state),
//! and the context-switch record of its next switch-in, on whichever CPU,
//! ends the block. The two come from different rings, so they are put
//! back in time order ([`Reorder`]) before [`Tracker`] pairs them; the
//! stack is unwound only for blocks that are kept, while the thread runs
//! again. Threads already blocked when the capture starts are read from
//! `/proc` (their syscall's stack pointer and the kernel's `wchan`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use perf_event_open::sample::record::Record;
use perf_event_open::sample::record::ctx::Switch;
use perf_event_open::sample::record::sample::{CallChain, Sample};

use super::blocks::{self, Block, LeftAs, Reorder, Tracker};
use super::spec::{BlockFilter, Mode};
use crate::process;
use crate::procfs::Procfs;
pub use crate::stacks::Captured;
use crate::stacks::collect::{Collector, Reason, Site, UserStack};
use crate::stacks::kallsyms::Kallsyms;
use crate::stacks::symbolize::lookup_addresses;
use crate::stacks::unwind::frame_pointer_scan;
use crate::stacks::{Measure, Unwind, period_ns};
use crate::sys::{self, CpuSampler, SamplingAttrs};

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
    pub unwind: Unwind,
    /// CPU samples, blocked time, or both.
    pub mode: Mode,
    /// Which blocks count.
    pub blocks: BlockFilter,
    /// How context switches are recorded (`offcpu` and `wall`).
    pub switch_attrs: SamplingAttrs,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `perf_event_open` or its ring buffer failed.
    #[error("cannot open perf events: {0}")]
    Perf(#[source] std::io::Error),
    /// The context-switch tracepoint cannot be found or read.
    #[error(transparent)]
    Tracepoint(#[from] sys::TracepointError),
    /// The tracepoint's format lacks a field the agent reads.
    #[error("sched:sched_switch has no {0} field in its format on this kernel")]
    Format(&'static str),
}

/// Records after the watermark by this much stay held for the next drain:
/// a record's timestamp is taken a little before it is written.
const REORDER_MARGIN_NS: u64 = 5_000_000;

/// Bytes of user stack read from `/proc/PID/mem` for a thread blocked
/// when the capture starts (as much as a sample's stack copy).
const SNAPSHOT_STACK_BYTES: u64 = crate::stacks::unwind::USER_STACK_BYTES as u64;

/// A stack kept from a switch-out until its block ends.
enum Kept {
    /// The `sched_switch` sample.
    Sample(Box<Sample>),
    /// A thread blocked at the start, read from `/proc`.
    Snapshot {
        /// BP (found by [`frame_pointer_scan`], else 0), SP, PC.
        regs: [u64; 3],
        /// The frame-pointer chain found in the stack, if any.
        chain: Vec<u64>,
        stack: Vec<u8>,
        wchan: Option<String>,
    },
}

/// A context-switch record, in time order.
enum Switched {
    Out {
        pid: u32,
        tid: u32,
        state: Option<LeftAs>,
        sample: Box<Sample>,
    },
    In {
        tid: u32,
    },
}

/// Context-switch records held between the drain thread and the pairing
/// at most: past it, switch-outs are dropped (counted as lost) and
/// switch-ins still pass, so that nothing is paired wrongly.
const QUEUE_BYTES: usize = 64 << 20;

/// Switch-outs of the targets kept per second at most, with frame-pointer
/// stacks and with stack copies (each of which costs a DWARF walk): past
/// it, the rest of the second's switch-outs are dropped before they are
/// queued and counted as throttled, so that the agent's CPU and memory
/// stay bounded whatever the targets do. Switch-ins still pass.
const MAX_SWITCHES_PER_SECOND: (u64, u64) = (100_000, 20_000);

/// One drain of the `sched_switch` rings.
struct Drained {
    /// Records in ring order (per CPU), with their times.
    events: Vec<(u64, Switched)>,
    /// Every record older than this has been read.
    watermark: u64,
    /// Records the kernel or the queue bound dropped.
    lost: u64,
    /// Switch-outs over the rate cap.
    throttled: u64,
    /// The stack bytes the events hold.
    bytes: usize,
    /// Set on the last drain: when the events were disabled.
    end: Option<u64>,
}

/// The `sched_switch` rings, read by their own thread so that unwinding
/// and symbolizing on the capture's thread never let them overflow.
struct SwitchRings {
    samplers: Vec<CpuSampler>,
    prev_state: (usize, usize),
    /// Switch-outs kept per second at most.
    cap: u64,
    /// The current second (by CLOCK_MONOTONIC) and what it kept.
    window: (u64, u64),
}

impl SwitchRings {
    fn open(plan: &CapturePlan) -> Result<Self, CaptureError> {
        let tracepoint = sys::tracepoint("sched", "sched_switch")?;
        let prev_state = blocks::field_offset(&tracepoint.format, "prev_state")
            .ok_or(CaptureError::Format("prev_state"))?;
        let samplers = sys::open_tracepoint_samplers(tracepoint.id, &plan.cpus, plan.switch_attrs)
            .map_err(CaptureError::Perf)?;
        let (fp, copies) = MAX_SWITCHES_PER_SECOND;
        Ok(Self {
            samplers,
            prev_state,
            cap: if plan.switch_attrs.stack_copy.is_some() {
                copies
            } else {
                fp
            },
            window: (0, 0),
        })
    }

    /// Drains every `tick` until `stop`, then disables the events, drains
    /// the rest and sends it with the end time. Stops early if the
    /// receiver is gone.
    fn run(
        mut self,
        tick: Duration,
        stop: &AtomicBool,
        queued: &AtomicUsize,
        mut wanted: impl FnMut(u32) -> bool,
        tx: &mpsc::Sender<Drained>,
    ) {
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let end = stopping.then(|| {
                for s in &self.samplers {
                    let _ = s.counter.disable();
                }
                sys::monotonic_ns()
            });
            let watermark = sys::monotonic_ns().saturating_sub(REORDER_MARGIN_NS);
            let mut drained = self.drain(&mut wanted, watermark);
            drained.end = end;
            if queued.load(Ordering::Relaxed) + drained.bytes > QUEUE_BYTES {
                let before = drained.events.len();
                drained
                    .events
                    .retain(|(_, e)| matches!(e, Switched::In { .. }));
                drained.lost += (before - drained.events.len()) as u64;
                drained.bytes = 0;
            }
            queued.fetch_add(drained.bytes, Ordering::Relaxed);
            if tx.send(drained).is_err() || stopping {
                return;
            }
            std::thread::sleep(tick);
        }
    }

    /// Reads every ring: switch-outs of wanted processes, and every
    /// switch-in.
    fn drain(&mut self, wanted: &mut impl FnMut(u32) -> bool, watermark: u64) -> Drained {
        let mut out = Drained {
            events: Vec::new(),
            watermark,
            lost: 0,
            throttled: 0,
            bytes: 0,
            end: None,
        };
        for s in &self.samplers {
            let Some(iter) = s.sampler.iter() else {
                continue;
            };
            for (_, record) in iter {
                match record {
                    Record::Sample(sample) => {
                        let (Some(task), Some(time)) =
                            (sample.record_id.task.as_ref(), sample.record_id.time)
                        else {
                            continue;
                        };
                        let (pid, tid) = (task.pid, task.tid);
                        if pid == 0 || !wanted(pid) {
                            continue;
                        }
                        let second = time / 1_000_000_000;
                        if self.window.0 != second {
                            self.window = (second, 0);
                        }
                        if self.window.1 >= self.cap {
                            out.throttled += 1;
                            continue;
                        }
                        self.window.1 += 1;
                        let state = sample
                            .raw
                            .as_deref()
                            .and_then(|raw| blocks::read_field(raw, self.prev_state))
                            .and_then(blocks::left_as);
                        out.bytes += sample.user_stack.as_ref().map_or(0, Vec::len) + 1024;
                        out.events.push((
                            time,
                            Switched::Out {
                                pid,
                                tid,
                                state,
                                sample,
                            },
                        ));
                    }
                    Record::CtxSwitch(switch) => {
                        let Switch::InFrom(_) = switch.info else {
                            continue;
                        };
                        let Some(id) = switch.record_id.as_ref() else {
                            continue;
                        };
                        if let (Some(task), Some(time)) = (id.task.as_ref(), id.time)
                            && task.tid != 0
                        {
                            out.events.push((time, Switched::In { tid: task.tid }));
                        }
                    }
                    Record::LostRecords(l) => out.lost += l.lost_records,
                    Record::LostSamples(l) => out.lost += l.lost_samples,
                    _ => {}
                }
            }
        }
        out
    }
}

/// The pairing half of an `offcpu`/`wall` capture, on the capture's
/// thread: records back in time order, switch-outs paired with
/// switch-ins, and each block that ends unwound and counted.
struct Pairing {
    reorder: Reorder<Switched>,
    tracker: Tracker<Kept>,
    blocks: u64,
    lost: u64,
    throttled: u64,
    end: Option<u64>,
}

impl Pairing {
    fn new(filter: BlockFilter) -> Self {
        Self {
            reorder: Reorder::default(),
            tracker: Tracker::new(filter),
            blocks: 0,
            lost: 0,
            throttled: 0,
            end: None,
        }
    }

    /// Threads of the targets blocked right now: open blocks since
    /// `start`, with the stack their syscall left.
    fn snapshot_blocked(&mut self, procfs: &Procfs, pids: impl Iterator<Item = u32>, start: u64) {
        for pid in pids {
            let maps = procfs.maps(pid).unwrap_or_default();
            for tid in procfs.tids(pid).unwrap_or_default() {
                let Some(state) = procfs
                    .thread_stat(pid, tid)
                    .ok()
                    .and_then(|s| LeftAs::from_letter(s.state))
                else {
                    continue;
                };
                let (sp, pc) = procfs
                    .thread_syscall(pid, tid)
                    .ok()
                    .flatten()
                    .map_or((0, 0), |s| (s.sp, s.pc));
                // The stack from SP up to the end of its mapping.
                let stack = crate::procfs::mapping_at(&maps, sp)
                    .map(|m| (m.end - sp).min(SNAPSHOT_STACK_BYTES))
                    .and_then(|len| procfs.read_memory(pid, sp, len as usize).ok())
                    .unwrap_or_default();
                let wchan = procfs.thread_wchan(pid, tid);
                // No BP register without stopping the thread: look for the
                // frame-pointer chain in the stack itself.
                let (bp, chain) =
                    frame_pointer_scan(&stack, sp, pc, |a| crate::procfs::is_code_at(&maps, a))
                        .unwrap_or((0, vec![pc]));
                self.tracker.blocked_since(
                    pid,
                    tid,
                    start,
                    state,
                    Kept::Snapshot {
                        regs: [bp, sp, pc],
                        chain,
                        stack,
                        wchan,
                    },
                );
            }
        }
    }

    /// Takes in one drain and pairs what it makes final; each block that
    /// ends goes to the collector. On the last drain, closes every block
    /// still open.
    fn take(&mut self, drained: Drained, collector: &mut Collector, kernel: bool) {
        self.lost += drained.lost;
        self.throttled += drained.throttled;
        for (time, event) in drained.events {
            self.reorder.push(time, event);
        }
        let watermark = match drained.end {
            Some(_) => u64::MAX - 1,
            None => drained.watermark,
        };
        for (time, event) in self.reorder.ready(watermark) {
            match event {
                Switched::Out {
                    pid,
                    tid,
                    state,
                    sample,
                } => self
                    .tracker
                    .switched_out(pid, tid, time, state, Kept::Sample(sample)),
                Switched::In { tid } => {
                    if let Some(block) = self.tracker.switched_in(tid, time) {
                        self.blocks += 1;
                        add_block(collector, block, kernel);
                    }
                }
            }
        }
        if let Some(end) = drained.end {
            self.end = Some(end);
            for block in self.tracker.finish(end) {
                self.blocks += 1;
                add_block(collector, block, kernel);
            }
        }
    }
}

/// The user and kernel chains of a sample, innermost first.
fn chains(sample: &Sample) -> (&[u64], &[u64]) {
    let (mut user, mut kernel): (&[u64], &[u64]) = (&[], &[]);
    for chain in sample.call_chain.iter().flatten() {
        match chain {
            CallChain::User(ips) => user = ips,
            CallChain::Kernel(ips) => kernel = ips,
            _ => {}
        }
    }
    (user, kernel)
}

/// Unwinds the user stack of `sample` (frame pointers, or DWARF from its
/// registers and stack copy).
fn sample_user_stack(collector: &mut Collector, pid: u32, sample: &Sample) -> Vec<u64> {
    let (user, _) = chains(sample);
    let regs = sample
        .user_regs
        .as_ref()
        .and_then(|(regs, _)| <[u64; 3]>::try_from(regs.as_slice()).ok());
    collector.user_stack(
        pid,
        &UserStack {
            site: Site::Body,
            chain: user,
            regs,
            stack: sample.user_stack.as_deref().unwrap_or_default(),
            top: None,
            leaf: None,
        },
    )
}

/// Counts one block: its stack, weighted by its nanoseconds, with the
/// kernel function it waited in as the leaf.
fn add_block(collector: &mut Collector, block: Block<Kept>, kernel: bool) {
    let state = block.state.letter();
    match block.payload {
        Kept::Sample(sample) => {
            let user = sample_user_stack(collector, block.pid, &sample);
            let (_, chain) = chains(&sample);
            let reason = Reason::Blocked {
                kernel: lookup_addresses(chain).collect(),
                state,
            };
            let shown: &[u64] = if kernel { chain } else { &[] };
            collector.add_with_reason(block.pid, block.tid, user, shown, block.ns, Some(reason));
        }
        Kept::Snapshot {
            regs,
            chain,
            stack,
            wchan,
        } => {
            // Whichever of DWARF and the scanned frame-pointer chain gets
            // further: the request's unwind= cannot apply to a stack read
            // from /proc.
            let user = if regs[2] == 0 {
                Vec::new()
            } else {
                collector.user_stack_as(
                    Unwind::Auto,
                    block.pid,
                    &UserStack {
                        site: Site::Body,
                        chain: &chain,
                        regs: Some(regs),
                        stack: &stack,
                        top: None,
                        leaf: None,
                    },
                )
            };
            let reason = Reason::In {
                function: wchan,
                state,
            };
            collector.add_with_reason(block.pid, block.tid, user, &[], block.ns, Some(reason));
        }
    }
}

/// Runs a capture until its duration passes or `cancel` is set.
pub fn run(
    plan: &CapturePlan,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
) -> Result<Captured, CaptureError> {
    let (samplers, event) = if plan.mode.samples_cpu() {
        sys::open_cpu_samplers(&plan.cpus, plan.attrs).map_err(CaptureError::Perf)?
    } else {
        (Vec::new(), "sched_switch")
    };
    let rings = if plan.mode.records_blocks() {
        Some(SwitchRings::open(plan)?)
    } else {
        None
    };
    let agent = std::process::id();
    let wanted_by = || {
        let mut keep: HashMap<u32, bool> = HashMap::new();
        move |pid: u32| -> bool {
            *keep.entry(pid).or_insert_with(|| match &plan.targets {
                Targets::Pids(set) => set.contains(&pid),
                Targets::Pod => !process::is_infrastructure(procfs, pid, agent),
            })
        }
    };
    let mut wanted = wanted_by();
    let mut collector = Collector::new(procfs, plan.unwind, plan.per_thread, true);
    let mut lost = 0u64;
    // A wall profile's CPU sample weighs its period in nanoseconds.
    let sample_weight = if plan.mode == Mode::Wall {
        u64::try_from(period_ns(u32::try_from(plan.attrs.hz).unwrap_or(u32::MAX))).unwrap_or(1)
    } else {
        1
    };
    let on_cpu = (plan.mode == Mode::Wall).then_some(Reason::OnCpu);

    let started = SystemTime::now();
    let start = Instant::now();
    for s in rings.iter().flat_map(|r| &r.samplers).chain(&samplers) {
        s.counter.enable().map_err(CaptureError::Perf)?;
    }
    let start_ns = sys::monotonic_ns();
    let mut pairing = rings.as_ref().map(|_| Pairing::new(plan.blocks));
    // Context switches fill rings fast: their own thread drains them
    // every 5 ms from now on, and this one pairs what it read every
    // 20 ms. A CPU profile alone reads its rings every 100 ms.
    let tick = Duration::from_millis(if rings.is_some() { 20 } else { 100 });
    let stop = AtomicBool::new(false);
    let queued = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Drained>();
    let mut cancelled = false;
    std::thread::scope(|scope| {
        if let Some(rings) = rings {
            let wanted = wanted_by();
            let (stop, queued) = (&stop, &queued);
            scope.spawn(move || {
                rings.run(Duration::from_millis(5), stop, queued, wanted, &tx);
            });
        } else {
            drop(tx);
        }
        if let Some(pairing) = pairing.as_mut() {
            let pids: Vec<u32> = match &plan.targets {
                Targets::Pids(set) => set.iter().copied().collect(),
                Targets::Pod => procfs.pids().unwrap_or_default(),
            };
            let pids: Vec<u32> = pids.into_iter().filter(|p| wanted(*p)).collect();
            pairing.snapshot_blocked(procfs, pids.into_iter(), start_ns);
        }
        // Read while the capture runs, not before it. Blocked stacks are
        // named by their kernel function even without kernel frames shown.
        if plan.attrs.kernel || pairing.is_some() {
            collector.set_kallsyms(Kallsyms::load());
        }
        loop {
            let elapsed = start.elapsed();
            let done = elapsed >= plan.duration;
            if !done {
                std::thread::sleep(tick.min(plan.duration - elapsed));
            }
            if cancel.load(Ordering::Relaxed) {
                cancelled = true;
            }
            let last = done || cancelled;
            if last {
                stop.store(true, Ordering::Relaxed);
                for s in &samplers {
                    let _ = s.counter.disable();
                }
            }
            read_cpu_samples(
                &samplers,
                &mut wanted,
                &mut collector,
                &mut lost,
                sample_weight,
                on_cpu.as_ref(),
            );
            if let Some(pairing) = pairing.as_mut() {
                // On the last round, wait for the drain that ends it.
                let next = |wait: bool| {
                    if wait {
                        rx.recv().ok()
                    } else {
                        rx.try_recv().ok()
                    }
                };
                while let Some(drained) = next(last && pairing.end.is_none()) {
                    queued.fetch_sub(drained.bytes, Ordering::Relaxed);
                    pairing.take(drained, &mut collector, plan.attrs.kernel);
                }
            }
            // Name new addresses while the processes still exist.
            collector.symbolize_pending();
            if last {
                break;
            }
        }
    });
    let duration = start.elapsed();
    let ended = Instant::now();
    drop(samplers);
    let samples = collector.samples();
    let measure = match pairing {
        Some(pairing) => {
            tracing::info!(
                blocks = pairing.blocks,
                lost = pairing.lost,
                throttled = pairing.throttled,
                unmatched = pairing.tracker.unmatched,
                short = pairing.tracker.short,
                "context switches paired"
            );
            lost += pairing.lost + pairing.tracker.unmatched;
            Measure::Time {
                mode: plan.mode.name(),
                hz: (plan.mode == Mode::Wall)
                    .then(|| u32::try_from(plan.attrs.hz).unwrap_or(u32::MAX)),
                blocks: pairing.blocks,
                throttled: pairing.throttled,
            }
        }
        None => Measure::Samples {
            event,
            hz: u32::try_from(plan.attrs.hz).unwrap_or(u32::MAX),
        },
    };
    // .NET: the runtime's rundown names the managed frames.
    let collected = collector.finish();
    Ok(Captured {
        stacks: collected.stacks,
        samples,
        lost,
        processes: collected.processes,
        started,
        duration,
        cancelled,
        measure,
        sampling: (start, ended),
        build_ids: collected.build_ids,
        symbol_errors: collected.symbol_errors,
    })
}

/// Reads the CPU samplers' rings: each sample of a wanted process,
/// unwound and counted (weighing `weight`, marked `on_cpu` in a wall
/// profile).
fn read_cpu_samples(
    samplers: &[CpuSampler],
    wanted: &mut impl FnMut(u32) -> bool,
    collector: &mut Collector,
    lost: &mut u64,
    weight: u64,
    on_cpu: Option<&Reason>,
) {
    for s in samplers {
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
                    if pid == 0 || !wanted(pid) {
                        continue;
                    }
                    let user = sample_user_stack(collector, pid, &sample);
                    let (_, kernel) = chains(&sample);
                    collector.add_with_reason(pid, task.tid, user, kernel, weight, on_cpu.cloned());
                }
                Record::LostRecords(l) => *lost += l.lost_records,
                Record::LostSamples(l) => *lost += l.lost_samples,
                _ => {}
            }
        }
    }
}
