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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use perf_event_open::sample::record::Record;
use perf_event_open::sample::record::sample::CallChain;

use crate::process;
use crate::procfs::Procfs;
pub use crate::stacks::Captured;
use crate::stacks::collect::{Collector, Site, UserStack};
use crate::stacks::kallsyms::Kallsyms;
use crate::stacks::{Measure, Unwind};
use crate::sys::{self, SamplingAttrs};

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
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `perf_event_open` or its ring buffer failed.
    #[error("cannot open perf events: {0}")]
    Perf(#[source] std::io::Error),
}

/// Runs a capture until its duration passes or `cancel` is set.
pub fn run(
    plan: &CapturePlan,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
) -> Result<Captured, CaptureError> {
    let (samplers, event) =
        sys::open_cpu_samplers(&plan.cpus, plan.attrs).map_err(CaptureError::Perf)?;
    let agent = std::process::id();
    let mut keep: HashMap<u32, bool> = HashMap::new();
    let mut collector = Collector::new(procfs, plan.unwind, plan.per_thread, true);
    let mut lost = 0u64;

    let started = SystemTime::now();
    let start = Instant::now();
    for s in &samplers {
        s.counter.enable().map_err(CaptureError::Perf)?;
    }
    // Read while the capture runs, not before it.
    if plan.attrs.kernel {
        collector.set_kallsyms(Kallsyms::load());
    }
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
                        let (mut user, mut kernel): (&[u64], &[u64]) = (&[], &[]);
                        for chain in sample.call_chain.iter().flatten() {
                            match chain {
                                CallChain::User(ips) => user = ips,
                                CallChain::Kernel(ips) => kernel = ips,
                                _ => {}
                            }
                        }
                        let regs = sample
                            .user_regs
                            .as_ref()
                            .and_then(|(regs, _)| <[u64; 3]>::try_from(regs.as_slice()).ok());
                        let user = collector.user_stack(
                            pid,
                            &UserStack {
                                site: Site::Body,
                                chain: user,
                                regs,
                                stack: sample.user_stack.as_deref().unwrap_or_default(),
                                top: None,
                                leaf: None,
                            },
                        );
                        collector.add(pid, task.tid, user, kernel, 1);
                    }
                    Record::LostRecords(l) => lost += l.lost_records,
                    Record::LostSamples(l) => lost += l.lost_samples,
                    _ => {}
                }
            }
        }
        // Name new addresses while the processes still exist.
        collector.symbolize_pending();
        if done || cancelled {
            break;
        }
    }
    let duration = start.elapsed();
    let ended = Instant::now();
    drop(samplers);
    let samples = collector.samples();
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
        measure: Measure::Samples {
            event,
            hz: u32::try_from(plan.attrs.hz).unwrap_or(u32::MAX),
        },
        sampling: (start, ended),
        build_ids: collected.build_ids,
        symbol_errors: collected.symbol_errors,
    })
}
