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
//! Blocked time ([`super::switches`]): the `sched_switch` sample is taken in the thread leaving
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
use perf_event_open::sample::record::sample::{CallChain, Sample};

use super::spec::{BlockFilter, Mode};
use super::switches::{Drained, Pairing, SwitchRings};
use crate::memory::{self, Memory};
use crate::process;
use crate::procfs::Procfs;
pub use crate::stacks::Captured;
use crate::stacks::collect::{Collector, Reason, Site, UserStack};
use crate::stacks::kallsyms::Kallsyms;
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
    /// What rendering will take per frame of the distinct stacks
    /// ([`crate::stacks::Format::result_bytes_per_frame`]): reserved
    /// against the memory bound while the capture runs.
    pub result_bytes_per_frame: u64,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The capture completed, but answering it in the format asked would
    /// take the agent past [`crate::memory::STOP_PERCENT`] of its limit.
    #[error(
        "the profile was captured ({samples} samples in {stacks} distinct stacks, {frames} frames), but not answered as {format}: {pressure}, the mark above which the agent does not go"
    )]
    AnswerMemory {
        /// Samples (or blocks) it held.
        samples: u64,
        /// Distinct stacks.
        stacks: usize,
        /// Their frames.
        frames: u64,
        /// The format asked for.
        format: &'static str,
        /// The reading (the answer's bytes are its `reserved`).
        pressure: crate::memory::Pressure,
    },
    /// `perf_event_open` or its ring buffer failed.
    #[error("cannot open perf events: {0}")]
    Perf(#[source] std::io::Error),
    /// The context-switch tracepoint cannot be found or read.
    #[error(transparent)]
    Tracepoint(#[from] sys::TracepointError),
    /// The tracepoint's format lacks a field the agent reads.
    #[error("sched:sched_switch has no {0} field in its format on this kernel")]
    Format(&'static str),
    /// The agent's memory reached [`crate::memory::STOP_PERCENT`] of its
    /// limit: the capture stopped and its stacks were freed.
    #[error(
        "the profile stopped after {:.1} s of {} s, with {samples} samples in {stacks} distinct stacks ({frames} frames): {pressure}, the mark at which a profile stops before the container is OOM-killed",
        after.as_secs_f64(),
        planned.as_secs()
    )]
    Memory {
        /// How long it had run.
        after: Duration,
        /// How long it was to run.
        planned: Duration,
        /// Samples (or blocks) it held.
        samples: u64,
        /// Distinct stacks it held.
        stacks: usize,
        /// Their frames.
        frames: u64,
        /// The reading.
        pressure: crate::memory::Pressure,
    },
}

/// The user and kernel chains of a sample, innermost first.
pub(super) fn chains(sample: &Sample) -> (&[u64], &[u64]) {
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

/// Checks that answering `captured` as `format` fits the memory bound
/// ([`crate::stacks::render::estimate_bytes`], now that names are known).
pub fn check_answer(
    captured: &Captured,
    format: crate::stacks::Format,
    memory: &Memory,
) -> Result<(), CaptureError> {
    memory
        .check(crate::stacks::render::estimate_bytes(captured, format))
        .map_err(|pressure| CaptureError::AnswerMemory {
            samples: captured.samples,
            stacks: captured.stacks.len(),
            frames: captured.stacks.iter().map(|s| s.frames.len() as u64).sum(),
            format: format.name(),
            pressure,
        })
}

/// Unwinds the user stack of `sample` (frame pointers, or DWARF from its
/// registers and stack copy).
pub(super) fn sample_user_stack(collector: &mut Collector, pid: u32, sample: &Sample) -> Vec<u64> {
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

/// Runs a capture until its duration passes or `cancel` is set; stops it
/// with [`CaptureError::Memory`] when `memory` says the agent is near its
/// limit.
pub fn run(
    plan: &CapturePlan,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
    memory: &Memory,
) -> Result<Captured, CaptureError> {
    let (cpu_samplers, event) = if plan.mode.samples_cpu() {
        sys::open_cpu_samplers(&plan.cpus, plan.attrs).map_err(CaptureError::Perf)?
    } else {
        (Vec::new(), "sched_switch")
    };
    // With context switches traced, one thread drains every ring, a wall
    // profile's CPU samplers included.
    let (samplers, rings) = if plan.mode.records_blocks() {
        (Vec::new(), Some(SwitchRings::open(plan, cpu_samplers)?))
    } else {
        (cpu_samplers, None)
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
    if let Some(rings) = &rings {
        rings.enable()?;
    }
    for s in &samplers {
        s.counter.enable().map_err(CaptureError::Perf)?;
    }
    let start_ns = sys::monotonic_ns();
    let mut pairing = rings
        .as_ref()
        .map(|_| Pairing::new(plan.blocks, sample_weight));
    // Context switches fill rings fast: their own thread drains them
    // every 5 ms from now on, and this one pairs what it read every
    // 20 ms. A CPU profile alone reads its rings every 100 ms.
    let tick = Duration::from_millis(if rings.is_some() { 20 } else { 100 });
    let stop = AtomicBool::new(false);
    let queued = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Drained>();
    let mut cancelled = false;
    let mut pressure = None;
    let mut checked = Instant::now();
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
            if checked.elapsed() >= memory::CHECK_EVERY {
                checked = Instant::now();
                let reserved = collector
                    .frames()
                    .saturating_mul(plan.result_bytes_per_frame);
                pressure = memory.check(reserved).err();
            }
            let last = done || cancelled || pressure.is_some();
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
                while let Some(drained) = next(last && !pairing.ended()) {
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
    if let Some(pressure) = pressure {
        let (stacks, frames) = (collector.distinct_stacks(), collector.frames());
        drop(collector);
        drop(pairing);
        sys::release_free_memory();
        return Err(CaptureError::Memory {
            after: duration,
            planned: plan.duration,
            samples,
            stacks,
            frames,
            pressure,
        });
    }
    let measure = match pairing {
        Some(pairing) => {
            let counts = pairing.counts();
            lost += counts.lost;
            Measure::Time {
                mode: plan.mode.name(),
                hz: (plan.mode == Mode::Wall)
                    .then(|| u32::try_from(plan.attrs.hz).unwrap_or(u32::MAX)),
                blocks: counts.blocks,
                throttled: counts.throttled,
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

/// Every record in `samplers`' rings, oldest first per ring, to `each`;
/// the kernel's loss records are counted in `lost` instead. The one ring
/// reader of CPU profiles and of context-switch tracing.
pub(super) fn read_rings(samplers: &[CpuSampler], lost: &mut u64, mut each: impl FnMut(Record)) {
    for s in samplers {
        let Some(iter) = s.sampler.iter() else {
            continue;
        };
        for (_, record) in iter {
            match record {
                Record::LostRecords(l) => *lost += l.lost_records,
                Record::LostSamples(l) => *lost += l.lost_samples,
                other => each(other),
            }
        }
    }
}

/// The PID and TID of a sample, if `wanted` keeps its process (tasks
/// outside the agent's PID namespace report 0 and are never kept).
pub(super) fn wanted_task(
    sample: &Sample,
    wanted: &mut impl FnMut(u32) -> bool,
) -> Option<(u32, u32)> {
    let task = sample.record_id.task.as_ref()?;
    (task.pid != 0 && wanted(task.pid)).then_some((task.pid, task.tid))
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
    read_rings(samplers, lost, |record| {
        if let Record::Sample(sample) = record
            && let Some((pid, tid)) = wanted_task(&sample, wanted)
        {
            let user = sample_user_stack(collector, pid, &sample);
            let (_, kernel) = chains(&sample);
            collector.add_with_reason(pid, tid, user, kernel, weight, on_cpu.cloned());
        }
    });
}
