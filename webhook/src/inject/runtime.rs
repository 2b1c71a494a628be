//! Runtime presets (`tracecar.dev/runtime`) and how their environment merges with the user's.

/// The runtime, as `/v1/processes` reports it: one type for the agent's
/// detection and the webhook's presets. The presets are the runtimes
/// with environment to set ([`PRESETS`]); Go and native binaries need none.
pub use tracecar_api::process::Runtime;

/// How a preset variable combines with a value the user already set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvMerge {
    /// A flag: the user's value wins, ours is only added when absent.
    KeepUser,
    /// A space-separated option list: our options are appended.
    AppendOptions,
}

/// The runtimes `tracecar.dev/runtime` selects a preset for.
pub const PRESETS: [Runtime; 4] = [
    Runtime::Dotnet,
    Runtime::Node,
    Runtime::Java,
    Runtime::Python,
];

/// The preset the annotation value names, if it names one.
pub fn preset(value: &str) -> Option<Runtime> {
    let value = value.trim();
    PRESETS.into_iter().find(|r| r.name() == value)
}

/// The environment a runtime's preset sets, and how each variable merges
/// with the user's.
pub(super) fn preset_env(runtime: Runtime) -> &'static [(&'static str, &'static str, EnvMerge)] {
    use EnvMerge::{AppendOptions, KeepUser};
    match runtime {
        Runtime::Go | Runtime::Native => &[],
        // The COMPlus_ forms are read by .NET Core 3.1 and .NET 5.
        Runtime::Dotnet => &[
            ("DOTNET_PerfMapEnabled", "1", KeepUser),
            ("DOTNET_LTTng", "1", KeepUser),
            ("COMPlus_PerfMapEnabled", "1", KeepUser),
            ("COMPlus_LTTng", "1", KeepUser),
        ],
        Runtime::Node => &[(
            "NODE_OPTIONS",
            tracecar_api::presets::NODE_OPTIONS,
            AppendOptions,
        )],
        // DumpPerfMapAtExit is diagnostic in JDK 17. A live map needs
        // `jcmd PID Compiler.perfmap` in the app container (the agent
        // does not run the app's binaries). Interpreted frames show as
        // `Interpreter`: HotSpot has no flag that names them
        // (agent/tests/profile.rs checks it).
        Runtime::Java => &[(
            "JAVA_TOOL_OPTIONS",
            "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit",
            AppendOptions,
        )],
        Runtime::Python => &[("PYTHONPERFSUPPORT", "1", KeepUser)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_the_runtimes_with_environment() {
        assert_eq!(preset(" dotnet "), Some(Runtime::Dotnet));
        assert_eq!(preset("python"), Some(Runtime::Python));
        // Detected runtimes with nothing to set are not presets.
        for name in ["go", "native", "Dotnet", ""] {
            assert_eq!(preset(name), None, "{name:?}");
        }
        for runtime in PRESETS {
            assert!(!preset_env(runtime).is_empty(), "{runtime:?}");
        }
        assert!(preset_env(Runtime::Go).is_empty());
        assert!(preset_env(Runtime::Native).is_empty());
    }
}
