//! What injection works with and answers: the paths and volume names
//! it mounts, the decision, the plan and status it reports, and its errors.

use json_patch::Patch;
use serde::Serialize;

use super::runtime::Runtime;
use crate::config::NamespaceDecision;

/// Mount path of the shared temp volume (JIT perf maps live here).
pub const TMP_PATH: &str = "/tmp";
/// Mount path of the shared LTTng run directory (session daemon sockets).
pub const LTTNG_PATH: &str = "/var/run/lttng";

pub(super) const VOL_TMP: &str = "tracecar-tmp";
pub(super) const VOL_LTTNG: &str = "tracecar-lttng";
pub(super) const VOL_SYS: &str = "tracecar-sys";
pub(super) const VOL_USR_SRC: &str = "tracecar-usr-src";
pub(super) const VOL_LIB_MODULES: &str = "tracecar-lib-modules";
/// The sidecar's own writable space (its root filesystem is read-only):
/// LTTng traces and core files while they are sent, and the socket's
/// directory (a `subPath`).
pub(super) const VOL_WORK: &str = "tracecar-work";
/// Where [`VOL_WORK`] is mounted: the agent's default trace and dump
/// directories are under it.
pub const WORK_PATH: &str = "/var/lib/tracecar";
/// The rules ConfigMap (`tracecar.dev/rules`), in pods that name one.
pub(super) const VOL_RULES: &str = "tracecar-rules";
/// Where [`VOL_RULES`] is mounted in the sidecar.
pub const RULES_PATH: &str = "/etc/tracecar/rules";
/// The push Secret (`push.secretName`), in pods that push windows.
pub(super) const VOL_PUSH: &str = "tracecar-push";
/// Where [`VOL_PUSH`] is mounted in the sidecar.
pub const PUSH_SECRET_PATH: &str = "/etc/tracecar/push";

/// Why a pod was left alone. The label is used in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No `tracecar.dev/inject: "true"`.
    NotAnnotated,
    /// Our sidecar or a `tracecar-` volume is already there.
    AlreadyInjected,
    /// The namespace is a system, webhook, excluded or not-allowed one.
    Namespace(NamespaceDecision),
    /// A kubelet mirror pod: the API server ignores changes to its spec.
    MirrorPod,
    /// A Windows pod: the agent is Linux-only.
    Windows,
    /// The namespace enforces a PodSecurity level the injected pod would
    /// break (the API server validates it after our mutation).
    PodSecurity(PodSecurityLevel),
}

/// A PodSecurity level that rejects the sidecar (hostPath volumes,
/// capabilities beyond the default set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodSecurityLevel {
    /// `baseline`.
    Baseline,
    /// `restricted`.
    Restricted,
}

impl PodSecurityLevel {
    /// From `pod-security.kubernetes.io/enforce`'s value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    /// As the label says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

impl SkipReason {
    /// Stable metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotAnnotated => "not_annotated",
            Self::AlreadyInjected => "already_injected",
            Self::Namespace(NamespaceDecision::System) => "system_namespace",
            Self::Namespace(NamespaceDecision::Webhook) => "webhook_namespace",
            Self::Namespace(NamespaceDecision::Excluded) => "excluded_namespace",
            Self::Namespace(NamespaceDecision::NotAllowed | NamespaceDecision::Allowed) => {
                "namespace_not_allowed"
            }
            Self::MirrorPod => "mirror_pod",
            Self::Windows => "windows",
            Self::PodSecurity(PodSecurityLevel::Baseline) => "podsecurity_baseline",
            Self::PodSecurity(PodSecurityLevel::Restricted) => "podsecurity_restricted",
        }
    }
}

/// What the injector decided for one pod.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Leave the pod alone. `warning` is set when the pod asked for
    /// injection, so the user learns why it did not happen.
    Skip {
        /// Why.
        reason: SkipReason,
        /// A message for the AdmissionResponse warnings.
        warning: Option<String>,
    },
    /// Apply `plan.patch`.
    Inject(Plan),
    /// Leave the pod without the sidecar, with `warning`, and `patch`: the
    /// `tracecar.dev/status` annotation that says why and what to do.
    Decline {
        /// Why.
        reason: SkipReason,
        /// A message for the AdmissionResponse warnings.
        warning: String,
        /// The status annotation.
        patch: Patch,
    },
}

/// The result of a successful injection decision.
#[derive(Debug, Clone)]
pub struct Plan {
    /// JSON Patch against the pod (or pod template) document.
    pub patch: Patch,
    /// Non-fatal notes for the user (conflicts, overrides).
    pub warnings: Vec<String>,
    /// What was injected; also written to `tracecar.dev/status`.
    pub status: InjectStatus,
}

/// Content of the `tracecar.dev/status` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectStatus {
    /// Injector version.
    pub version: &'static str,
    /// The sidecar container name.
    pub sidecar: &'static str,
    /// `container` or `native`.
    pub mode: &'static str,
    /// `minimal` or `privileged`.
    pub profile: &'static str,
    /// What the agent may do (`tracecar.dev/features`, or the config's).
    pub features: Vec<&'static str>,
    /// App containers that got the shared mounts.
    pub containers: Vec<String>,
    /// Volumes added to the pod.
    pub volumes: Vec<&'static str>,
    /// Runtime preset, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Continuous profiling's modes (`tracecar.dev/continuous`), if on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub continuous: Vec<&'static str>,
}

/// Extra facts about a pod that are not in its spec.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodContext<'a> {
    /// Namespace the pod is created in.
    pub namespace: &'a str,
    /// Kind of the workload that owns the pod, when known from outside the
    /// pod (offline injection of a Job template). Owner references on the
    /// pod are consulted too.
    pub owner_kind: Option<&'a str>,
    /// The PodSecurity level the namespace enforces, when it would reject
    /// the sidecar (learnt from which webhook entry the review came
    /// through: `/mutate/podsecurity/LEVEL`).
    pub pod_security: Option<PodSecurityLevel>,
}
