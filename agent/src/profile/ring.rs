//! Reading the per-CPU perf rings: the one reader of CPU samples and of
//! context-switch records, and the pieces of a sample both executors use.

use perf_event_open::sample::record::Record;
use perf_event_open::sample::record::sample::{CallChain, Sample};

use crate::stacks::collect::{Collector, Site, UserStack};
use crate::sys::CpuSampler;

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
