//! `kubectl tracecar`: talks to the tracecar agent in a pod by running
//! `curl --unix-socket` in the sidecar through `kubectl exec` (or
//! `podman exec` with `--runtime podman`).

pub mod cli;
pub mod exec;
pub mod output;
pub mod request;
pub mod run;
pub mod target;
