//! tracecar agent: the sidecar process. It serves an HTTP API on a Unix
//! socket for profiling the processes of its pod.
//!
//! Layers, bottom to top. A module imports only from layers below its own,
//! and no two files import each other: `scripts/layers.py` checks both in
//! `make lint` (it reads the numbered lines below).
//!
//! 1. `sys`, `params`, `caps`, `identity`, `sync`: the one place with
//!    `unsafe` and raw kernel interfaces (with the `repr(C)` mirror of
//!    `bpf/events.h`); the request-parameter parsers every spec shares;
//!    capability names; the pod's Kubernetes identity; locks a panic
//!    cannot break.
//! 2. `procfs`, `child`: `/proc` parsers and readers; children run with a
//!    deadline.
//! 3. `rootfs`, `memory`: the one resolver of paths the app controls; the
//!    agent's own memory bound.
//! 4. `elf`: the bounded ELF reader.
//! 5. `dotnet`: the .NET runtime's diagnostic protocol (IPC, nettrace,
//!    rundown, sessions).
//! 6. `runtime`: the one seam for language runtimes: detection, and names
//!    for JIT code (a runtime's own method table, or its perf map).
//! 7. `stacks`: unwinding, naming and rendering of stacks.
//! 8. `process`: what runs in the pod, and which runtime each process is.
//! 9. `profile`, `uprobe`, `lttng`, `dump`: the capture kinds, each
//!    spec → plan → execute, none importing another.
//! 10. `push`: continuous windows sent to the backends users run (OTLP,
//!     Pyroscope).
//! 11. `rules`: collection rules: triggers, limits, and the artifact
//!     store their actions write to.
//! 12. `capabilities`: what works in this sidecar.
//! 13. `api`: the HTTP layer: routes, handlers, errors.
//! 14. `cli`: the agent's command line and start-up.
//!
//! Seams, checked the same way:
//!
//! - `dotnet` is imported only by `runtime`, `dump`, `rules`, `api`.

pub mod api;
pub mod capabilities;
pub mod caps;
pub mod child;
pub mod cli;
pub mod dotnet;
pub mod dump;
pub mod elf;
pub mod identity;
pub mod lttng;
pub mod memory;
pub mod params;
pub mod process;
pub mod procfs;
pub mod profile;
pub mod push;
pub mod rootfs;
pub mod rules;
pub mod runtime;
pub mod stacks;
pub mod sync;
pub mod sys;
pub mod uprobe;
