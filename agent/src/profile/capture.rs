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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use perf_event_open::sample::record::Record;

use super::plan::{CaptureError, CapturePlan, Targets};
use super::ring::{chains, read_rings, sample_user_stack, wanted_task};
use super::spec::Mode;
use super::switches::{Drained, Pairing, SwitchRings};
use crate::memory::{self, Memory};
use crate::process;
use crate::procfs::Procfs;
pub use crate::stacks::Captured;
use crate::stacks::collect::{Collector, Reason};
use crate::stacks::kallsyms::Kallsyms;
use crate::stacks::{Measure, period_ns};
use crate::sys::{self, CpuSampler};

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

/// Runs a capture until its duration passes or `cancel` is set; stops it
/// with [`CaptureError::Memory`] when `memory` says the agent is near its
/// limit.
pub fn run(
    plan: &CapturePlan,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
    memory: &Memory,
) -> Result<Captured, CaptureError> {
    let (samplers, rings, event) = open(plan)?;
    // A wall profile's CPU sample weighs its period in nanoseconds.
    let sample_weight = if plan.mode == Mode::Wall {
        u64::try_from(period_ns(u32::try_from(plan.attrs.hz).unwrap_or(u32::MAX))).unwrap_or(1)
    } else {
        1
    };
    let mut state = State {
        collector: Collector::new(procfs, plan.unwind, plan.per_thread, true),
        pairing: rings
            .as_ref()
            .map(|_| Pairing::new(plan.blocks, sample_weight)),
        lost: 0,
        cancelled: false,
        pressure: None,
    };
    let started = SystemTime::now();
    let start = Instant::now();
    if let Some(rings) = &rings {
        rings.enable()?;
    }
    for s in &samplers {
        s.counter.enable().map_err(CaptureError::Perf)?;
    }
    let recording = Recording {
        plan,
        procfs,
        cancel,
        memory,
        start,
        start_ns: sys::monotonic_ns(),
        sample_weight,
    };
    recording.record(&samplers, rings, &mut state);
    let duration = start.elapsed();
    let ended = Instant::now();
    drop(samplers);
    state.finish(plan, event, started, duration, (start, ended))
}

/// Opens the CPU samplers and, for blocked time, the context-switch
/// rings (which then drain the CPU samplers too); the event name.
fn open(
    plan: &CapturePlan,
) -> Result<(Vec<CpuSampler>, Option<SwitchRings>, &'static str), CaptureError> {
    let (cpu_samplers, event) = if plan.mode.samples_cpu() {
        sys::open_cpu_samplers(&plan.cpus, plan.attrs).map_err(CaptureError::Perf)?
    } else {
        (Vec::new(), "sched_switch")
    };
    // With context switches traced, one thread drains every ring, a wall
    // profile's CPU samplers included.
    Ok(if plan.mode.records_blocks() {
        (
            Vec::new(),
            Some(SwitchRings::open(plan, cpu_samplers)?),
            event,
        )
    } else {
        (cpu_samplers, None, event)
    })
}

/// What a capture holds while it runs.
struct State {
    collector: Collector,
    pairing: Option<Pairing>,
    lost: u64,
    cancelled: bool,
    pressure: Option<crate::memory::Pressure>,
}

/// Which processes' samples a capture keeps, asked once per PID.
struct Wanted<'a> {
    plan: &'a CapturePlan,
    procfs: &'a Procfs,
    /// The agent's own processes, left out of pod-wide captures.
    own: process::Own,
    keep: HashMap<u32, bool>,
}

impl<'a> Wanted<'a> {
    fn new(plan: &'a CapturePlan, procfs: &'a Procfs) -> Self {
        Self {
            plan,
            procfs,
            own: process::Own::of(procfs),
            keep: HashMap::new(),
        }
    }

    /// Whether `pid`'s samples are kept.
    fn keeps(&mut self, pid: u32) -> bool {
        let (plan, procfs, own) = (self.plan, self.procfs, self.own);
        *self.keep.entry(pid).or_insert_with(|| match &plan.targets {
            Targets::Pids(set) => set.contains(&pid),
            Targets::Pod => !own.has(procfs, pid),
        })
    }
}

/// What a running capture reads from.
struct Recording<'a> {
    plan: &'a CapturePlan,
    procfs: &'a Procfs,
    cancel: &'a Arc<AtomicBool>,
    memory: &'a Memory,
    start: Instant,
    start_ns: u64,
    sample_weight: u64,
}

impl<'a> Recording<'a> {
    /// Reads the rings until the duration passes, the client goes or the
    /// memory bound is reached; the switch rings drain on a thread of
    /// their own.
    fn record(&self, samplers: &[CpuSampler], rings: Option<SwitchRings>, state: &mut State) {
        let plan = self.plan;
        let mut kept = Wanted::new(plan, self.procfs);
        let mut wanted = |pid| kept.keeps(pid);
        let on_cpu = (plan.mode == Mode::Wall).then_some(Reason::OnCpu);
        // Context switches fill rings fast: their own thread drains them
        // every 5 ms from now on, and this one pairs what it read every
        // 20 ms. A CPU profile alone reads its rings every 100 ms, and one
        // at 50 Hz or less (continuous profiling's) every 500 ms: its
        // smallest ring (64 stack copies) holds three seconds of it.
        let tick = Duration::from_millis(match (rings.is_some(), plan.attrs.hz) {
            (true, _) => 20,
            (false, hz) if hz <= 50 => 500,
            (false, _) => 100,
        });
        let stop = AtomicBool::new(false);
        let queued = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<Drained>();
        let mut checked = Instant::now();
        let mut checked_frames = 0;
        std::thread::scope(|scope| {
            if let Some(rings) = rings {
                let mut kept = Wanted::new(plan, self.procfs);
                let (stop, queued) = (&stop, &queued);
                scope.spawn(move || {
                    let wanted = |pid| kept.keeps(pid);
                    rings.run(Duration::from_millis(5), stop, queued, wanted, &tx);
                });
            } else {
                drop(tx);
            }
            if let Some(pairing) = state.pairing.as_mut() {
                let pids: Vec<u32> = match &plan.targets {
                    Targets::Pids(set) => set.iter().copied().collect(),
                    Targets::Pod => self.procfs.pids().unwrap_or_default(),
                };
                let pids: Vec<u32> = pids.into_iter().filter(|p| wanted(*p)).collect();
                pairing.snapshot_blocked(self.procfs, pids.into_iter(), self.start_ns);
            }
            // Read while the capture runs, not before it. Blocked stacks are
            // named by their kernel function even without kernel frames shown.
            if plan.attrs.kernel || state.pairing.is_some() {
                state.collector.set_kallsyms(Kallsyms::shared());
            }
            loop {
                let elapsed = self.start.elapsed();
                let done = elapsed >= plan.duration;
                if !done {
                    std::thread::sleep(tick.min(plan.duration - elapsed));
                }
                if self.cancel.load(Ordering::Relaxed) {
                    state.cancelled = true;
                }
                // A capture that has not grown since its last look has
                // nothing new to weigh: it looks again once it has (or
                // every few seconds), which keeps a low-rate capture from
                // walking /proc five times a second.
                let frames = state.collector.frames();
                if checked.elapsed() >= memory::CHECK_EVERY
                    && (frames >= checked_frames + memory::CHECK_FRAMES
                        || checked.elapsed() >= memory::CHECK_IDLE)
                {
                    checked = Instant::now();
                    checked_frames = frames;
                    let reserved = frames.saturating_mul(plan.result_bytes_per_frame);
                    state.pressure = self.memory.check(reserved).err();
                }
                let last = done || state.cancelled || state.pressure.is_some();
                if last {
                    stop.store(true, Ordering::Relaxed);
                    for s in samplers {
                        let _ = s.counter.disable();
                    }
                }
                read_cpu_samples(
                    samplers,
                    &mut wanted,
                    &mut state.collector,
                    &mut state.lost,
                    self.sample_weight,
                    on_cpu.as_ref(),
                );
                if let Some(pairing) = state.pairing.as_mut() {
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
                        pairing.take(drained, &mut state.collector, plan.attrs.kernel);
                    }
                }
                // Name new addresses while the processes still exist.
                state.collector.symbolize_pending();
                if last {
                    break;
                }
            }
        });
    }
}

impl State {
    /// The captured profile, or the memory error that stopped it (its
    /// stacks freed first).
    fn finish(
        mut self,
        plan: &CapturePlan,
        event: &'static str,
        started: SystemTime,
        duration: Duration,
        sampling: (Instant, Instant),
    ) -> Result<Captured, CaptureError> {
        let samples = self.collector.samples();
        if let Some(pressure) = self.pressure {
            let (stacks, frames) = (self.collector.distinct_stacks(), self.collector.frames());
            drop(self.collector);
            drop(self.pairing);
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
        let measure = match self.pairing {
            Some(pairing) => {
                let counts = pairing.counts();
                self.lost += counts.lost;
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
        let collected = self.collector.finish();
        Ok(Captured {
            stacks: collected.stacks,
            samples,
            lost: self.lost,
            processes: collected.processes,
            started,
            duration,
            cancelled: self.cancelled,
            measure,
            sampling,
            build_ids: collected.build_ids,
            symbol_errors: collected.symbol_errors,
        })
    }
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
