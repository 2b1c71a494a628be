//! LTTng userspace tracing: the session daemon's supervisor, argv builders
//! for the `lttng` CLI (pure), its machine-interface XML, recording
//! sessions, and babeltrace2 output turned into NDJSON.

pub mod cli;
pub mod command;
pub mod flight;
pub mod live;
pub mod mi;
pub mod output;
pub mod pretty;
pub mod record;
pub mod rundir;
pub mod session;
pub mod sessiond;
pub mod spec;
pub mod stderr;

pub use flight::Flight;
pub use record::Lttng;
pub use session::{RecordError, Recording, TraceDir};
pub use spec::{RecordFormat, RecordSpec};
