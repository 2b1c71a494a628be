//! The sidecar's security profiles: one definition, used by the webhook
//! when it injects the sidecar (and by an attach, which must ask for the
//! same).

/// Capabilities of the `minimal` profile: sampling (PERFMON), loading BPF
/// (BPF), creating uprobes (SYS_ADMIN: Linux requires it for uprobe perf
/// events since the 2025 fix "perf: require CAP_SYS_ADMIN for uprobes",
/// also in stable kernels), reading other processes' memory and maps
/// (SYS_PTRACE), raising RLIMIT_MEMLOCK for older kernels' BPF maps
/// (SYS_RESOURCE), opening `/proc/PID/map_files` entries
/// (CHECKPOINT_RESTORE) and listing that directory, which belongs to the
/// app's user (DAC_READ_SEARCH: without it symbols of a non-root app go
/// missing), and for lttng-sessiond taking ownership of its sockets and of
/// the wait shared memory an app that started first created (CHOWN: without
/// it the daemon aborts, or early apps never register), and for connecting
/// to a .NET runtime's diagnostic socket, which is `srw-------` for the
/// app's user, as that user on one thread only (SETUID, SETGID: without
/// them every .NET endpoint and the rundown of profiles get EACCES; the
/// alternative, DAC_OVERRIDE, would lift permission checks from every file
/// operation of the agent). The last five were found by the podman
/// end-to-end test with an app running as uid 1000.
pub const MINIMAL_CAPABILITIES: [&str; 10] = [
    "BPF",
    "PERFMON",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_RESOURCE",
    "CHECKPOINT_RESTORE",
    "DAC_READ_SEARCH",
    "CHOWN",
    "SETUID",
    "SETGID",
];

/// The agent image the webhook injects and `attach` adds by default.
pub const AGENT_IMAGE: &str = "tracecar/agent:0.1.0";

/// Where the agent listens, in its container.
pub const AGENT_SOCKET: &str = "/run/tracecar/agent.sock";

/// The sidecar's security profiles, by the names annotations, the
/// webhook's config and `kubectl tracecar attach --profile` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Root with every capability dropped but [`MINIMAL_CAPABILITIES`];
    /// seccomp unconfined (RuntimeDefault blocks `bpf()` and
    /// `perf_event_open()`); not privileged.
    Minimal,
    /// `privileged: true`: the old "tools sidecar" way, for kernels or
    /// runtimes where the minimal set is not enough.
    Privileged,
}

impl Profile {
    /// Parses a profile name; `None` for anything unknown.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "minimal" => Some(Self::Minimal),
            "privileged" => Some(Self::Privileged),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Privileged => "privileged",
        }
    }
}

/// The agent's environment from the downward API (`POD_NAME`,
/// `POD_NAMESPACE`, `NODE_NAME`), in the sidecar and in an attached agent.
#[cfg(feature = "k8s")]
pub fn downward_env() -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
    [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("NODE_NAME", "spec.nodeName"),
    ]
    .into_iter()
    .map(|(name, field)| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
    .collect()
}

/// The agent container's `securityContext` for `profile`: the one
/// definition the injected sidecar and the attached (ephemeral) agent
/// share. Root is explicit so that a pod-level `runAsNonRoot` does not
/// stop the agent.
#[cfg(feature = "k8s")]
pub fn security_context(profile: Profile) -> k8s_openapi::api::core::v1::SecurityContext {
    use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};
    let root = SecurityContext {
        run_as_user: Some(0),
        run_as_group: Some(0),
        run_as_non_root: Some(false),
        ..SecurityContext::default()
    };
    match profile {
        Profile::Minimal => SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(MINIMAL_CAPABILITIES.map(str::to_owned).to_vec()),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".to_owned(),
                localhost_profile: None,
            }),
            ..root
        },
        Profile::Privileged => SecurityContext {
            privileged: Some(true),
            ..root
        },
    }
}
