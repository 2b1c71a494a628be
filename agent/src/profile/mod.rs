//! CPU profiling: spec (request) → plan (what to open) → capture (kernel)
//! → render (formats, in [`crate::stacks::render`]). Unwinding, naming
//! and rendering are the shared [`crate::stacks`] machinery.

pub mod blocks;
pub mod capture;
pub mod spec;
mod switches;
pub mod trigger;

use std::collections::HashSet;
use std::time::Duration;

pub use spec::{BlockFilter, Format, Mode, ProfileSpec, Unwind};

use crate::procfs::{PidNotVisible, Procfs};
use crate::stacks::render::RenderMeta;
use crate::stacks::unwind;
use crate::sys::SamplingAttrs;
use capture::{CapturePlan, Targets};

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
        crate::capabilities::kallsyms_readable(),
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
    };
    Ok((plan, meta))
}
