//! `kubectl tracecar`: talks to the tracecar agent in a pod by running
//! `curl --unix-socket` in the sidecar through `kubectl exec` (or
//! `podman exec` with `--runtime podman`), in the injected sidecar or in
//! an agent `attach` added to a running pod as an ephemeral container.

pub mod across;
pub mod answer;
pub mod attach;
pub mod attaching;
pub mod cli;
pub mod error;
pub mod exec;
pub mod fleet;
pub mod output;
pub mod request;
pub mod run;
pub mod target;
