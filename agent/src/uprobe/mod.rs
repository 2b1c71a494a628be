//! Dynamic tracing: finding the functions a user can probe (`/v1/symbols`),
//! the event layout shared with `bpf/`, and attaching the BPF programs.
//! The `/v1/uprobe` endpoint is issue #4's remaining work.

pub mod attach;
pub mod events;
pub mod hist;
pub mod run;
pub mod spec;
pub mod symbols;
