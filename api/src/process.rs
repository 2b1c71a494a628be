//! `/v1/processes`.

use serde::{Deserialize, Serialize};

/// The runtime a process was detected to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// .NET (CoreCLR).
    Dotnet,
    /// Node.js / V8.
    Node,
    /// A JVM.
    Java,
    /// CPython.
    Python,
    /// A Go binary.
    Go,
    /// Anything else.
    Native,
}

impl Runtime {
    /// The name the JSON uses (`dotnet`, `native`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dotnet => "dotnet",
            Self::Node => "node",
            Self::Java => "java",
            Self::Python => "python",
            Self::Go => "go",
            Self::Native => "native",
        }
    }
}

/// One entry of `/v1/processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// PID in the pod's namespace.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// Short name.
    pub comm: String,
    /// Full command line.
    pub cmdline: Vec<String>,
    /// Executable path inside the process's own root.
    pub exe: Option<String>,
    /// Real UID.
    pub uid: Option<u32>,
    /// Number of threads.
    pub threads: u32,
    /// CPU use over the sampling interval, in percent of one CPU.
    pub cpu_percent: f64,
    /// Detected runtime.
    pub runtime: Runtime,
    /// Path of the JIT perf map as the process sees it, if one is there
    /// that the agent reads (a regular file, not a symlink, owned by the
    /// process's user or root, within the size limit).
    pub perf_map: Option<String>,
    /// The LTTng-UST library the process loaded, if any:
    /// `liblttng-ust.so.0` (LTTng 2.12 and older) or `liblttng-ust.so.1`
    /// (2.13, the sidecar's). A 2.13 session daemon refuses `.so.0`
    /// applications.
    #[serde(default)]
    pub lttng_ust: Option<String>,
    /// For a .NET process: its runtime and diagnostic port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dotnet: Option<crate::dotnet::DotnetInfo>,
}

impl ProcessInfo {
    /// The command line, or the short name when it has none (kernel
    /// threads, zombies).
    pub fn command(&self) -> String {
        if self.cmdline.is_empty() {
            self.comm.clone()
        } else {
            self.cmdline.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_are_the_json_names() {
        for r in [
            Runtime::Dotnet,
            Runtime::Node,
            Runtime::Java,
            Runtime::Python,
            Runtime::Go,
            Runtime::Native,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
    }
}
