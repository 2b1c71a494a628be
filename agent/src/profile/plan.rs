//! A profile's plan: the spec turned into what to open (CPUs, sampling
//! attributes, rings, targets), pure but for the visibility check of the
//! PIDs, and how a capture fails.

use std::collections::HashSet;
use std::time::Duration;

use super::spec::{BlockFilter, Mode, ProfileSpec, Unwind};
use crate::procfs::{PidNotVisible, Procfs};
use crate::stacks::render::RenderMeta;
use crate::stacks::unwind;
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

/// [`plan`] with this machine's online CPUs and whether its kallsyms has
/// addresses.
pub fn plan_here(
    spec: &ProfileSpec,
    procfs: &Procfs,
) -> Result<(CapturePlan, RenderMeta), PidNotVisible> {
    plan(
        spec,
        procfs,
        crate::sys::online_cpus(),
        crate::stacks::kallsyms::readable(),
    )
}

/// Turns a validated spec into a capture plan and the facts renderers need.
/// `kallsyms_readable` decides the default for kernel frames.
pub fn plan(
    spec: &ProfileSpec,
    procfs: &Procfs,
    cpus: Vec<u32>,
    kallsyms_readable: bool,
) -> Result<(CapturePlan, RenderMeta), PidNotVisible> {
    let targets = match &spec.pids {
        None => Targets::Pod,
        Some(pids) => {
            procfs.check_visible(pids)?;
            Targets::Pids(pids.iter().copied().collect::<HashSet<u32>>())
        }
    };
    let kernel = spec.kernel.unwrap_or(kallsyms_readable);
    let copies_stack = spec.unwind != Unwind::Fp;
    // Room for a few drain intervals of samples per CPU: callchains are
    // small (2^6 pages = 256 KiB), stack copies are 16 KiB each (up to
    // 2^10 pages = 4 MiB at the highest rates).
    let ring_pages_exp = match (copies_stack, spec.hz) {
        (false, hz) if hz > 250 => 7,
        (false, _) => 6,
        (true, hz) if hz > 250 => 10,
        (true, _) => 8,
    };
    // Context switches come far faster than samples (tens of thousands
    // a second), each with its stacks: rings of 2 MiB per CPU (what the
    // locked-memory limit lets a sidecar without CAP_IPC_LOCK map next to
    // a wall profile's CPU rings on a small node), drained every 5 ms by a
    // thread of their own. What overflows is counted as lost.
    let switch_ring_pages_exp = 9;
    let stack_copy = copies_stack.then_some((unwind::X86_REGS_MASK, unwind::USER_STACK_BYTES));
    let plan = CapturePlan {
        targets,
        duration: Duration::from_secs(u64::from(spec.seconds)),
        attrs: SamplingAttrs {
            hz: u64::from(spec.hz),
            kernel,
            ring_pages_exp,
            stack_copy,
            timer_only: spec.mode == Mode::Wall,
        },
        unwind: spec.unwind,
        cpus,
        per_thread: spec.threads,
        mode: spec.mode,
        blocks: spec.blocks,
        switch_attrs: SamplingAttrs {
            hz: 0,
            kernel: true,
            ring_pages_exp: switch_ring_pages_exp,
            stack_copy,
            timer_only: false,
        },
        result_bytes_per_frame: spec.format.result_bytes_per_frame(),
    };
    let meta = RenderMeta {
        seconds: spec.seconds,
        unwind: spec.unwind.name(),
        kernel,
        comments: Vec::new(),
    };
    Ok((plan, meta))
}
