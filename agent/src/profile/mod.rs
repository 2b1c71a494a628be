//! CPU profiling: spec (request) → plan (what to open) → capture (kernel)
//! → render (formats).

pub mod capture;
pub mod kallsyms;
pub mod perfmap;
pub mod pprof;
pub mod render;
pub mod spec;

use std::collections::HashSet;
use std::time::Duration;

pub use spec::{Format, ProfileSpec, Unwind};

use crate::procfs::Procfs;
use crate::sys::SamplingAttrs;
use capture::{CapturePlan, Targets};
use render::RenderMeta;

/// A request that cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A requested PID is not in this PID namespace.
    #[error("pid {0} is not visible")]
    PidNotVisible(u32),
    /// DWARF unwinding was asked for explicitly.
    #[error("unwind=dwarf is not available in this version of the agent")]
    DwarfUnavailable,
}

/// Turns a validated spec into a capture plan and the facts renderers need.
/// `kallsyms_readable` decides the default for kernel frames.
pub fn plan(
    spec: &ProfileSpec,
    procfs: &Procfs,
    cpus: Vec<u32>,
    kallsyms_readable: bool,
) -> Result<(CapturePlan, RenderMeta), PlanError> {
    if spec.unwind == Unwind::Dwarf {
        return Err(PlanError::DwarfUnavailable);
    }
    let targets = match &spec.pids {
        None => Targets::Pod,
        Some(pids) => {
            if let Some(missing) = pids.iter().find(|p| !procfs.path(**p, "stat").exists()) {
                return Err(PlanError::PidNotVisible(*missing));
            }
            Targets::Pids(pids.iter().copied().collect::<HashSet<u32>>())
        }
    };
    let kernel = spec.kernel.unwrap_or(kallsyms_readable);
    // Room for ~0.3 s of samples per CPU at the highest rate with deep
    // stacks: 2^6 pages = 256 KiB per CPU.
    let ring_pages_exp = if spec.hz > 250 { 7 } else { 6 };
    let plan = CapturePlan {
        targets,
        duration: Duration::from_secs(u64::from(spec.seconds)),
        attrs: SamplingAttrs {
            hz: u64::from(spec.hz),
            kernel,
            ring_pages_exp,
        },
        cpus,
        per_thread: spec.threads,
    };
    let meta = RenderMeta {
        hz: spec.hz,
        seconds: spec.seconds,
        // auto uses the kernel's frame-pointer walk until DWARF lands.
        unwind: "fp",
        kernel,
        event: "cpu-clock",
    };
    Ok((plan, meta))
}
