//! CPU profiling: spec (request) → plan (what to open) → capture (kernel)
//! → render (formats, in [`crate::stacks::render`]). Unwinding, naming
//! and rendering are the shared [`crate::stacks`] machinery.

pub mod blocks;
pub mod capture;
pub mod continuous;
pub mod heap;
pub mod now;
pub mod plan;
pub mod reported;
mod ring;
pub mod spec;
mod switches;
pub mod trigger;

pub use spec::{BlockFilter, Format, Mode, ProfileSpec, Unwind};

pub use plan::{CaptureError, CapturePlan, Targets, plan, plan_here};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::memory::Memory;
use crate::procfs::Procfs;
use crate::stacks::render::{RenderError, RenderMeta};

/// Why a profile was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The capture failed, or its answer would not fit the memory bound.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The answer could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The process's runtime reports no such events (`mode=alloc` and
    /// `mode=contention` are .NET's).
    #[error("mode={mode} profiles what a .NET runtime reports, and pid {pid} runs {runtime:?}")]
    NotReported {
        /// The process.
        pid: u32,
        /// The mode asked for.
        mode: &'static str,
        /// Its runtime.
        runtime: crate::runtime::Runtime,
    },
    /// The runtime's session failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// A profile, rendered.
#[derive(Debug)]
pub struct Profiled {
    /// The answer in the format asked for.
    pub body: Vec<u8>,
    /// Samples (or blocks) in it.
    pub samples: u64,
    /// How long it sampled.
    pub capture: Duration,
    /// When sampling started and stopped.
    pub sampling: (Instant, Instant),
}

/// Captures `plan` and renders it as `format`: the profile executor end
/// to end. What the capture and the rendering held goes back to the
/// kernel before this returns (the memory bound counts resident memory),
/// and an answer that would not fit the bound is refused before it is
/// rendered.
pub fn profile(
    plan: &CapturePlan,
    format: Format,
    meta: &RenderMeta,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
    memory: &Memory,
) -> Result<Profiled, ProfileError> {
    let captured = capture::run(plan, procfs, cancel, memory)?;
    tracing::info!(
        samples = captured.samples,
        lost = captured.lost,
        processes = captured.processes.len(),
        "profile captured"
    );
    let checked = capture::check_answer(&captured, format, memory);
    let (samples, capture, sampling) = (captured.samples, captured.duration, captured.sampling);
    let body = checked
        .map_err(ProfileError::from)
        .and_then(|()| Ok(crate::stacks::render::render(&captured, format, meta)?));
    drop(captured);
    crate::sys::release_free_memory();
    Ok(Profiled {
        body: body?,
        samples,
        capture,
        sampling,
    })
}
