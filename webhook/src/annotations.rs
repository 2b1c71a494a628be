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
/// `cpu`, `offcpu` or `cpu,offcpu`: the agent profiles the pod all the
/// time, in windows (the config's `continuousHz` and
/// `continuousWindowSeconds`), and serves the last one at
/// `/debug/pprof/window`. Needs the `profile` feature.
pub const CONTINUOUS: &str = "tracecar.dev/continuous";
/// The name of a ConfigMap in the pod's namespace whose keys are files of
/// collection rules (docs/api/rules.md): mounted (optional) in the
/// sidecar at `/etc/tracecar/rules`, which the agent reads at start and
/// again when it changes.
pub const RULES: &str = "tracecar.dev/rules";
/// Written by the injector: JSON record of what was injected.
pub const STATUS: &str = "tracecar.dev/status";

/// Grafana's scrape annotations for CPU profiles (Alloy's
/// `pyroscope.scrape` with the k8s-monitoring chart's discovery): set on
/// pods whose sidecar serves profiles (`profilesPort`), unless the pod
/// has its own.
pub const SCRAPE_CPU: &str = "profiles.grafana.com/cpu.scrape";

/// The port Grafana's scraper reads CPU profiles from, by name.
pub const SCRAPE_CPU_PORT_NAME: &str = "profiles.grafana.com/cpu.port_name";

/// The prefix of Grafana's CPU scrape annotations: a pod with one of its
/// own keeps them as they are.
pub const SCRAPE_CPU_PREFIX: &str = "profiles.grafana.com/cpu.";

/// The sidecar's container port for profiles (`profilesPort`).
pub const PPROF_PORT_NAME: &str = "tracecar-pprof";
/// Set by the kubelet on mirror (static) pods.
pub const MIRROR: &str = "kubernetes.io/config.mirror";

/// Name of the injected container.
pub const SIDECAR_NAME: &str = "tracecar";
/// Prefix of every volume the injector adds.
pub const VOLUME_PREFIX: &str = "tracecar-";
