//! CPU profiling: spec (request) → plan (what to open) → capture (kernel)
//! → render (formats, in [`crate::stacks::render`]). Unwinding, naming
//! and rendering are the shared [`crate::stacks`] machinery.

pub mod blocks;
pub mod capture;
pub mod plan;
mod ring;
pub mod spec;
mod switches;
pub mod trigger;

pub use spec::{BlockFilter, Format, Mode, ProfileSpec, Unwind};

pub use plan::{CaptureError, CapturePlan, Targets, plan, plan_here};
