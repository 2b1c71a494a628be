//! Dynamic tracing (`/v1/uprobe`, `/v1/symbols`): request specs, finding
//! the functions a user can probe, the event layout shared with `bpf/`,
//! attaching the BPF programs, and decoding and aggregating their events.

pub mod args;
pub mod attach;
pub mod decode;
pub mod disasm;
pub mod follow;
pub mod hist;
pub mod host;
pub mod jit;
pub mod plan;
pub mod resolve;
pub mod spec;
pub mod stream;
pub mod symbols;
