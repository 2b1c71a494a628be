//! tracecar agent: the sidecar process. It serves an HTTP API on a Unix
//! socket for profiling the processes of its pod.

pub mod api;
pub mod capabilities;
pub mod child;
pub mod cli;
pub mod dotnet;
pub mod dump;
pub mod elf;
pub mod lttng;
pub mod memory;
pub mod process;
pub mod procfs;
pub mod profile;
pub mod rootfs;
pub mod stacks;
pub mod sys;
pub mod uprobe;
