//! What the injection decision reads off a pod, and nothing else.

use super::model::{LTTNG_PATH, PodContext, TMP_PATH};
use super::runtime::{PRESETS, preset_env};
use crate::annotations::{self as ann, SIDECAR_NAME, VOLUME_PREFIX};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// Everything about a pod that the injection decision depends on, and
/// nothing else. [`Injector::plan`] reads only this, so two pods with equal
/// facts (such as the replicas of one Deployment) get the same patch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodFacts {
    pub(super) opted_in: bool,
    pub(super) has_spec: bool,
    pub(super) mirror: bool,
    pub(super) windows: bool,
    pub(super) namespace: String,
    pub(super) existing_injection: Option<String>,
    pub(super) has_status: bool,
    pub(super) profile: Option<String>,
    pub(super) features: Option<String>,
    pub(super) sidecar_mode: Option<String>,
    pub(super) runtime: Option<String>,
    pub(super) containers_filter: Option<String>,
    pub(super) owned_by_job: bool,
    pub(super) host_pid: bool,
    pub(super) share_process_namespace: Option<bool>,
    pub(super) has_volumes: bool,
    pub(super) has_init_containers: bool,
    pub(super) containers: Vec<ContainerFacts>,
    /// The pod has Grafana's CPU scrape annotations of its own.
    pub(super) scrape_annotated: bool,
    /// The PodSecurity level its namespace enforces, when it rejects the
    /// sidecar.
    pub(super) pod_security: Option<super::model::PodSecurityLevel>,
    /// `tracecar.dev/continuous`.
    pub(super) continuous: Option<String>,
    /// `tracecar.dev/rules`.
    pub(super) rules: Option<String>,
    /// The service the pod belongs to, from its labels (or workload).
    pub(super) service: Option<String>,
    /// Its owning workload, `KIND/NAME`.
    pub(super) workload: Option<String>,
}

/// What the injector needs to know about one app container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContainerFacts {
    pub(super) name: String,
    pub(super) has_mounts: bool,
    pub(super) mounts_tmp: bool,
    pub(super) mounts_lttng: bool,
    pub(super) has_env: bool,
    /// The last definition of each variable some runtime preset sets.
    pub(super) preset_env: Vec<PresetEnvFact>,
}

/// An existing definition of a preset variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PresetEnvFact {
    pub(super) name: &'static str,
    pub(super) index: usize,
    pub(super) value: Option<String>,
    pub(super) from_reference: bool,
}

impl PodFacts {
    /// Reads the facts off a pod. Pods that did not opt in stop early.
    pub fn observe(pod: &Pod, ctx: PodContext<'_>) -> Self {
        let annotations = pod.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        let opted_in = annotation(ann::INJECT).is_some_and(|v| v.trim() == "true");
        let Some(spec) = pod.spec.as_ref().filter(|_| opted_in) else {
            return Self {
                opted_in,
                ..Self::default()
            };
        };
        let workload = workload(pod);
        Self {
            opted_in,
            has_spec: true,
            mirror: annotation(ann::MIRROR).is_some(),
            scrape_annotated: annotations
                .is_some_and(|a| a.keys().any(|k| k.starts_with(ann::SCRAPE_CPU_PREFIX))),
            windows: is_windows(spec),
            namespace: ctx.namespace.to_owned(),
            pod_security: ctx.pod_security,
            existing_injection: existing_injection(spec),
            has_status: annotation(ann::STATUS).is_some(),
            profile: annotation(ann::PROFILE),
            features: annotation(ann::FEATURES),
            sidecar_mode: annotation(ann::SIDECAR_MODE),
            runtime: annotation(ann::RUNTIME),
            containers_filter: annotation(ann::CONTAINERS),
            continuous: annotation(ann::CONTINUOUS),
            rules: annotation(ann::RULES),
            service: service(pod, workload.as_deref()),
            workload,
            owned_by_job: matches!(ctx.owner_kind, Some("Job" | "CronJob"))
                || pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Job"),
            host_pid: spec.host_pid == Some(true),
            share_process_namespace: spec.share_process_namespace,
            has_volumes: spec.volumes.is_some(),
            has_init_containers: spec.init_containers.is_some(),
            containers: spec
                .containers
                .iter()
                .map(ContainerFacts::observe)
                .collect(),
        }
    }
}

/// The pod's owning workload as `KIND/NAME`, from its controller's owner
/// reference: a ReplicaSet named after its pod template's hash is its
/// Deployment's, as OpenTelemetry's `k8sattributes` takes it. A pod
/// template (offline injection) has no owner to read.
fn workload(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    let deployment = (owner.kind == "ReplicaSet")
        .then(|| {
            hash.and_then(|h| owner.name.strip_suffix(h.as_str()))
                .and_then(|n| n.strip_suffix('-'))
        })
        .flatten()
        .filter(|n| !n.is_empty());
    Some(match deployment {
        Some(name) => format!("Deployment/{name}"),
        None => format!("{}/{}", owner.kind, owner.name),
    })
}

/// The service name: `app.kubernetes.io/name`, else `app`, else the name
/// of the owning `workload` (`KIND/NAME`).
fn service(pod: &Pod, workload: Option<&str>) -> Option<String> {
    let labels = pod.metadata.labels.as_ref();
    ["app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|key| labels.and_then(|l| l.get(*key)))
        .cloned()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            workload
                .and_then(|w| w.split_once('/'))
                .map(|(_, n)| n.to_owned())
        })
}

impl ContainerFacts {
    pub(super) fn observe(container: &Container) -> Self {
        let env = container.env.as_deref().unwrap_or_default();
        let preset_env = PRESETS
            .iter()
            .flat_map(|r| preset_env(*r).iter().map(|(name, _, _)| *name))
            .filter_map(|name| {
                // The API server keeps the last of duplicate names.
                let (index, var) = env.iter().enumerate().rfind(|(_, v)| v.name == name)?;
                Some(PresetEnvFact {
                    name,
                    index,
                    value: var.value.clone(),
                    from_reference: var.value_from.is_some(),
                })
            })
            .collect();
        Self {
            name: container.name.clone(),
            has_mounts: container.volume_mounts.is_some(),
            mounts_tmp: mounts_path(container, TMP_PATH),
            mounts_lttng: mounts_path(container, LTTNG_PATH),
            has_env: container.env.is_some(),
            preset_env,
        }
    }
}

pub(super) fn is_windows(spec: &PodSpec) -> bool {
    let os = spec.os.as_ref().map(|os| os.name.as_str());
    let selector = spec
        .node_selector
        .as_ref()
        .and_then(|s| s.get("kubernetes.io/os"))
        .map(String::as_str);
    os == Some("windows") || selector == Some("windows")
}

/// Names what shows that the pod was injected before, or claims what
/// injection adds, if anything does: a container named like the sidecar, a
/// volume named like ours, or a container that mounts one by name. The
/// last matters on its own: an app container that mounts `tracecar-work`
/// (the agent's socket, `LTTNG_HOME`) or one of the host paths, naming a
/// volume the pod does not have, would become valid once the webhook adds
/// that volume.
pub(super) fn existing_injection(spec: &PodSpec) -> Option<String> {
    let containers = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    if containers().any(|c| c.name == SIDECAR_NAME) {
        return Some(format!("a container named {SIDECAR_NAME:?}"));
    }
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with(VOLUME_PREFIX))
    {
        return Some(format!("a volume named {}", shown(&v.name)));
    }
    containers().find_map(|c| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name.starts_with(VOLUME_PREFIX))
            .map(|m| {
                format!(
                    "container {} mounting a volume named {}",
                    shown(&c.name),
                    shown(&m.name)
                )
            })
    })
}

/// A value from the pod as a warning quotes it: the pod is not validated
/// yet when it is reviewed, so its strings can be megabytes.
pub use tracecar_api::quoted as shown;

impl PodFacts {
    /// Bytes of the pod's own strings these facts hold (what caching them
    /// would keep).
    pub fn retained_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.namespace.len()
            + text(&self.existing_injection)
            + text(&self.profile)
            + text(&self.features)
            + text(&self.sidecar_mode)
            + text(&self.runtime)
            + text(&self.containers_filter)
            + self
                .containers
                .iter()
                .map(|c| {
                    c.name.len()
                        + c.preset_env
                            .iter()
                            .map(|e| text(&e.value) + 32)
                            .sum::<usize>()
                        + 64
                })
                .sum::<usize>()
            + 256
    }
}

pub(super) fn normalize(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

pub(super) fn mounts_path(container: &Container, path: &str) -> bool {
    container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| normalize(&m.mount_path) == path)
}
