//! Runtime presets (`tracecar.dev/runtime`) and how their environment merges with the user's.

use serde::Serialize;

/// Runtime presets selected by `tracecar.dev/runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// .NET (CoreCLR): perf maps and LTTng tracepoints.
    Dotnet,
    /// Node.js: perf maps of functions, interpreted frames named.
    Node,
    /// HotSpot JVM: frame pointers and a perf-map dump.
    Java,
    /// CPython 3.12+: the perf trampoline.
    Python,
}

/// How a preset variable combines with a value the user already set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvMerge {
    /// A flag: the user's value wins, ours is only added when absent.
    KeepUser,
    /// A space-separated option list: our options are appended.
    AppendOptions,
}

impl Runtime {
    /// Every preset.
    pub const ALL: [Self; 4] = [Self::Dotnet, Self::Node, Self::Java, Self::Python];

    /// Parses the annotation value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "dotnet" => Some(Self::Dotnet),
            "node" => Some(Self::Node),
            "java" => Some(Self::Java),
            "python" => Some(Self::Python),
            _ => None,
        }
    }

    pub(super) fn env(self) -> &'static [(&'static str, &'static str, EnvMerge)] {
        use EnvMerge::{AppendOptions, KeepUser};
        match self {
            // The COMPlus_ forms are read by .NET Core 3.1 and .NET 5.
            Self::Dotnet => &[
                ("DOTNET_PerfMapEnabled", "1", KeepUser),
                ("DOTNET_LTTng", "1", KeepUser),
                ("COMPlus_PerfMapEnabled", "1", KeepUser),
                ("COMPlus_LTTng", "1", KeepUser),
            ],
            Self::Node => &[(
                "NODE_OPTIONS",
                tracecar_api::presets::NODE_OPTIONS,
                AppendOptions,
            )],
            // DumpPerfMapAtExit is diagnostic in JDK 17. A live map needs
            // `jcmd PID Compiler.perfmap` in the app container (the agent
            // does not run the app's binaries). Interpreted frames show as
            // `Interpreter`: HotSpot has no flag that names them
            // (agent/tests/profile.rs checks it).
            Self::Java => &[(
                "JAVA_TOOL_OPTIONS",
                "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit",
                AppendOptions,
            )],
            Self::Python => &[("PYTHONPERFSUPPORT", "1", KeepUser)],
        }
    }
}
