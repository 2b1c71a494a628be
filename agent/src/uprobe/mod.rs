//! Dynamic tracing support. So far: finding the functions a user can probe
//! (`/v1/symbols`). Attaching uprobes is issue #4's remaining work.

pub mod symbols;
