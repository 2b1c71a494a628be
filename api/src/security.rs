//! The sidecar's security profiles: one definition, used by the webhook
//! when it injects the sidecar (and by an attach, which must ask for the
//! same).

/// Capabilities of the `minimal` profile with every feature
/// ([`Features::all`]): the union of [`Feature::capabilities`]. Each one's
/// reason is on the feature that needs it; `agent/tests/capabilities.rs`
/// drops them one at a time and sees the feature fail.
///
/// SYS_RESOURCE, which earlier versions granted "for RLIMIT_MEMLOCK on
/// older kernels", is gone: the agent never raises a limit, and BPF maps
/// are charged to the memory cgroup since Linux 5.11 (the same test runs
/// probes without it). BPF is gone too: uprobes need SYS_ADMIN, which
/// also allows `bpf()`, and the test showed probes working without BPF.
pub const MINIMAL_CAPABILITIES: [&str; 9] = [
    "PERFMON",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "CHECKPOINT_RESTORE",
    "DAC_READ_SEARCH",
    "SYSLOG",
    "CHOWN",
    "SETUID",
    "SETGID",
];

/// What the agent of a pod may do, chosen per pod with the
/// `tracecar.dev/features` annotation; the `minimal` profile grants only
/// the capabilities the chosen features need, and the agent answers 403
/// outside them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Feature {
    /// CPU profiles (`/v1/profile`, `/debug/pprof/profile`).
    Profile,
    /// Uprobes and breakpoint probes (`/v1/uprobe`, `/v1/symbols`).
    Uprobe,
    /// LTTng sessions (`/v1/lttng/*`).
    Lttng,
    /// The .NET diagnostic port (`/v1/dotnet/*`).
    Dotnet,
    /// Core dumps (`/v1/dump`).
    Dump,
}

impl Feature {
    /// Every feature, in their canonical order.
    pub const ALL: [Self; 5] = [
        Self::Profile,
        Self::Uprobe,
        Self::Lttng,
        Self::Dotnet,
        Self::Dump,
    ];

    /// Parses a feature name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name.trim())
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::Uprobe => "uprobe",
            Self::Lttng => "lttng",
            Self::Dotnet => "dotnet",
            Self::Dump => "dump",
        }
    }

    /// The capabilities the feature needs, as root with every other one
    /// dropped (the `minimal` profile).
    ///
    /// - PERFMON: `perf_event_open` on other processes at
    ///   `perf_event_paranoid` 2, and the per-CPU breakpoints of JIT
    ///   probes.
    /// - SYS_PTRACE: sampling, reading the stacks, maps and root of a
    ///   process of another user (the kernel's ptrace access check).
    /// - CHECKPOINT_RESTORE: opening `/proc/PID/map_files/…`, the only
    ///   way to a binary that was deleted or replaced since it was mapped.
    /// - DAC_READ_SEARCH: looking up that directory, which belongs to the
    ///   app's user with mode 0500.
    /// - SYSLOG: kernel symbol addresses in `/proc/kallsyms` (zeros
    ///   without it at `kptr_restrict` 1, or at 0 with `perf_event_paranoid`
    ///   above 1): kernel frames, and the kernel function each off-CPU
    ///   block waited in (`do_nanosleep`, `futex_wait_queue`, …).
    /// - SYS_ADMIN: uprobe perf events (Linux requires it for them since
    ///   the 2025 fix "perf: require CAP_SYS_ADMIN for uprobes"), and
    ///   loading the probe programs (SYS_ADMIN allows `bpf()`; BPF alone
    ///   would be redundant, as the drop test measured).
    /// - CHOWN: `lttng-sessiond` takes ownership of its sockets and of the
    ///   wait shared memory an app that started first created.
    /// - SETUID and SETGID: connecting to a .NET runtime's diagnostic
    ///   socket (`srw-------` for the app's user) as that user, on one
    ///   thread only; the alternative, DAC_OVERRIDE, would lift every
    ///   permission check of the agent.
    pub fn capabilities(self) -> &'static [&'static str] {
        const PROFILE: &[&str] = &[
            "PERFMON",
            "SYS_PTRACE",
            "CHECKPOINT_RESTORE",
            "DAC_READ_SEARCH",
            "SYSLOG",
        ];
        match self {
            Self::Profile => PROFILE,
            // SYS_ADMIN also passes the kernel's checks for PERFMON, BPF
            // and CHECKPOINT_RESTORE: the drop test showed probes working
            // without each of them.
            Self::Uprobe => &["SYS_ADMIN", "SYS_PTRACE"],
            Self::Lttng => &["CHOWN"],
            Self::Dotnet => &["SYS_PTRACE", "SETUID", "SETGID"],
            // A .NET process is dumped by its runtime through the
            // diagnostic port when `dotnet` is chosen too (SETUID, SETGID),
            // by ptrace otherwise: the drop test showed dumps working
            // without those two, and without CHECKPOINT_RESTORE.
            Self::Dump => &["SYS_PTRACE", "DAC_READ_SEARCH"],
        }
    }
}

/// A set of [`Feature`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Features(u8);

/// A feature list with a name that is not a feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not a feature (profile, uprobe, lttng, dotnet, dump)", crate::quoted(.0))]
pub struct UnknownFeature(pub String);

impl Features {
    /// Every feature.
    pub fn all() -> Self {
        Self((1 << Feature::ALL.len()) - 1)
    }

    /// No feature.
    pub fn none() -> Self {
        Self(0)
    }

    /// Parses a comma-separated list (`profile,uprobe`); spaces and empty
    /// items are ignored, any unknown name is an error.
    pub fn parse(list: &str) -> Result<Self, UnknownFeature> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .try_fold(Self::none(), |set, name| {
                Feature::parse(name)
                    .map(|f| set.with(f))
                    .ok_or_else(|| UnknownFeature(name.to_owned()))
            })
    }

    /// The set with `feature` too.
    pub fn with(self, feature: Feature) -> Self {
        Self(self.0 | 1 << feature as u8)
    }

    /// The set without `feature`.
    pub fn without(self, feature: Feature) -> Self {
        Self(self.0 & !(1 << feature as u8))
    }

    /// The features in both sets.
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether every feature of `self` is in `other`.
    pub fn is_subset(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether `feature` is in the set.
    pub fn contains(self, feature: Feature) -> bool {
        self.0 & 1 << feature as u8 != 0
    }

    /// The features, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// Their names.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Feature::as_str).collect()
    }

    /// The list form the annotation and `TRACECAR_FEATURES` use.
    pub fn list(self) -> String {
        self.names().join(",")
    }

    /// The capabilities the set needs: the union of each feature's, in
    /// the order of [`MINIMAL_CAPABILITIES`].
    pub fn capabilities(self) -> Vec<&'static str> {
        MINIMAL_CAPABILITIES
            .into_iter()
            .filter(|cap| self.iter().any(|f| f.capabilities().contains(cap)))
            .collect()
    }
}

/// The agent's environment variable with its features, as a list.
pub const FEATURES_ENV: &str = "TRACECAR_FEATURES";

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

/// The agent container's `securityContext` for `profile` and the
/// `features` it serves: the one definition the injected sidecar and the
/// attached (ephemeral) agent share. Root is explicit so that a pod-level
/// `runAsNonRoot` does not stop the agent.
#[cfg(feature = "k8s")]
pub fn security_context(
    profile: Profile,
    features: Features,
) -> k8s_openapi::api::core::v1::SecurityContext {
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
                add: Some(
                    features
                        .capabilities()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                ),
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

#[cfg(test)]
mod feature_tests {
    use super::*;

    #[test]
    fn lists_parse_and_print_in_canonical_order() {
        let f = Features::parse(" uprobe, profile,,").unwrap();
        assert_eq!(f.list(), "profile,uprobe");
        assert!(f.contains(Feature::Uprobe) && !f.contains(Feature::Dump));
        assert_eq!(
            Features::parse("profile,gpu"),
            Err(UnknownFeature("gpu".into()))
        );
        assert_eq!(Features::parse("").unwrap(), Features::none());
        assert_eq!(Features::all().list(), "profile,uprobe,lttng,dotnet,dump");
    }

    #[test]
    fn capabilities_are_the_union_of_the_features() {
        assert_eq!(
            Features::parse("profile").unwrap().capabilities(),
            [
                "PERFMON",
                "SYS_PTRACE",
                "CHECKPOINT_RESTORE",
                "DAC_READ_SEARCH",
                "SYSLOG"
            ]
        );
        let probes = Features::parse("profile,uprobe").unwrap().capabilities();
        assert!(probes.contains(&"SYS_ADMIN") && !probes.contains(&"BPF"));
        assert!(!probes.contains(&"CHOWN") && !probes.contains(&"SETUID"));
        assert_eq!(Features::parse("lttng").unwrap().capabilities(), ["CHOWN"]);
        assert_eq!(Features::all().capabilities(), MINIMAL_CAPABILITIES);
    }
}
