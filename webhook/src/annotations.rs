//! The `tracecar.dev/*` annotation keys: the user-facing contract.

/// `"true"` opts a pod in.
pub const INJECT: &str = "tracecar.dev/inject";
/// Comma list restricting which app containers get the shared mounts and
/// runtime environment.
pub const CONTAINERS: &str = "tracecar.dev/containers";
/// `dotnet|node|java|python`: runtime preset for perf maps and tracepoints.
pub const RUNTIME: &str = "tracecar.dev/runtime";
/// `minimal|privileged`: security profile, if the config allows overrides.
pub const PROFILE: &str = "tracecar.dev/profile";
/// Comma list of what the agent may do (`profile,uprobe,lttng,dotnet,dump`;
/// default: the config's `features`). The `minimal` profile grants only
/// the capabilities these need, and the agent answers 403 outside them.
pub const FEATURES: &str = "tracecar.dev/features";
/// `container|native`: where the sidecar goes.
pub const SIDECAR_MODE: &str = "tracecar.dev/sidecar-mode";
/// Written by the injector: JSON record of what was injected.
pub const STATUS: &str = "tracecar.dev/status";
/// Set by the kubelet on mirror (static) pods.
pub const MIRROR: &str = "kubernetes.io/config.mirror";

/// Name of the injected container.
pub const SIDECAR_NAME: &str = "tracecar";
/// Prefix of every volume the injector adds.
pub const VOLUME_PREFIX: &str = "tracecar-";
