//! Pure injection logic: `(&Pod, namespace, &InjectConfig) -> Decision`,
//! in two steps: [`PodFacts::observe`] reads what matters off the pod and
//! [`Injector::plan`] decides from those facts alone.
//!
//! No I/O happens here. The patch is a list of RFC 6902 `add` operations at
//! explicit paths, computed in one pass over the pod (linear in its size).
//! It is never a diff of two documents, so fields that `k8s-openapi` does
//! not know survive untouched and no `remove` is ever emitted.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HostPathVolumeSource,
    ObjectFieldSelector, Pod, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use serde_json::Value;

use crate::annotations::{self as ann, SIDECAR_NAME, VOLUME_PREFIX};
use crate::config::{InjectConfig, NamespaceDecision, SecurityProfile, SidecarMode};

/// Mount path of the shared temp volume (JIT perf maps live here).
pub const TMP_PATH: &str = "/tmp";
/// Mount path of the shared LTTng run directory (session daemon sockets).
pub const LTTNG_PATH: &str = "/var/run/lttng";

const VOL_TMP: &str = "tracecar-tmp";
const VOL_LTTNG: &str = "tracecar-lttng";
const VOL_SYS: &str = "tracecar-sys";
const VOL_USR_SRC: &str = "tracecar-usr-src";
const VOL_LIB_MODULES: &str = "tracecar-lib-modules";

pub use tracecar_api::security::MINIMAL_CAPABILITIES;

/// Runtime presets selected by `tracecar.dev/runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// .NET (CoreCLR): perf maps and LTTng tracepoints.
    Dotnet,
    /// Node.js: `--perf-basic-prof`.
    Node,
    /// HotSpot JVM: frame pointers and a perf-map dump.
    Java,
    /// CPython 3.12+: the perf trampoline.
    Python,
}

/// How a preset variable combines with a value the user already set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvMerge {
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

    fn env(self) -> &'static [(&'static str, &'static str, EnvMerge)] {
        use EnvMerge::{AppendOptions, KeepUser};
        match self {
            // The COMPlus_ forms are read by .NET Core 3.1 and .NET 5.
            Self::Dotnet => &[
                ("DOTNET_PerfMapEnabled", "1", KeepUser),
                ("DOTNET_LTTng", "1", KeepUser),
                ("COMPlus_PerfMapEnabled", "1", KeepUser),
                ("COMPlus_LTTng", "1", KeepUser),
            ],
            Self::Node => &[("NODE_OPTIONS", "--perf-basic-prof", AppendOptions)],
            // DumpPerfMapAtExit is diagnostic in JDK 17; while running, the
            // agent asks for a live map with `jcmd PID Compiler.perfmap`.
            Self::Java => &[(
                "JAVA_TOOL_OPTIONS",
                "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit",
                AppendOptions,
            )],
            Self::Python => &[("PYTHONPERFSUPPORT", "1", KeepUser)],
        }
    }
}

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
    /// App containers that got the shared mounts.
    pub containers: Vec<String>,
    /// Volumes added to the pod.
    pub volumes: Vec<&'static str>,
    /// Runtime preset, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
}

/// Why a decision could not be made. The webhook fails open on these.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The pod has no `spec`.
    #[error("pod has no spec")]
    MissingSpec,
    /// A generated object could not be turned into JSON.
    #[error("cannot serialize generated {what}: {source}")]
    Serialize {
        /// Which object.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
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
}

/// Decides what to do with `pod` and builds the patch. Convenience for
/// one-off use; servers build an [`Injector`] once and reuse it.
pub fn decide(
    pod: &Pod,
    ctx: PodContext<'_>,
    config: &InjectConfig,
) -> Result<Decision, InjectError> {
    Injector::new(config.clone())?.decide(pod, ctx)
}

/// The injector for one configuration. The JSON of everything that does not
/// depend on the pod (sidecar variants, volumes, mounts) is built once here,
/// so a review only clones it.
#[derive(Debug, Clone)]
pub struct Injector {
    config: InjectConfig,
    /// Indexed by [`Injector::sidecar_index`].
    sidecars: [Value; 4],
    volumes: Vec<Value>,
    tmp_mount: Value,
    lttng_mount: Value,
}

impl Injector {
    /// Pre-renders the pod-independent JSON for `config`.
    pub fn new(config: InjectConfig) -> Result<Self, InjectError> {
        let mut sidecars = Vec::with_capacity(4);
        for profile in [SecurityProfile::Minimal, SecurityProfile::Privileged] {
            for mode in [SidecarMode::Container, SidecarMode::Native] {
                debug_assert_eq!(sidecars.len(), Self::sidecar_index(profile, mode));
                sidecars.push(json("sidecar", &sidecar_container(&config, profile, mode))?);
            }
        }
        let sidecars: [Value; 4] = sidecars
            .try_into()
            .unwrap_or_else(|_| unreachable!("four profile × mode combinations"));
        Ok(Self {
            volumes: to_values("volume", &pod_volumes(&config))?,
            tmp_mount: json("volume mount", &mount(VOL_TMP, TMP_PATH, false))?,
            lttng_mount: json("volume mount", &mount(VOL_LTTNG, LTTNG_PATH, false))?,
            sidecars,
            config,
        })
    }

    fn sidecar_index(profile: SecurityProfile, mode: SidecarMode) -> usize {
        let p = usize::from(profile == SecurityProfile::Privileged);
        let m = usize::from(mode == SidecarMode::Native);
        p * 2 + m
    }

    /// The configuration this injector was built for.
    pub fn config(&self) -> &InjectConfig {
        &self.config
    }

    /// Decides what to do with `pod` and builds the patch.
    pub fn decide(&self, pod: &Pod, ctx: PodContext<'_>) -> Result<Decision, InjectError> {
        self.plan(&PodFacts::observe(pod, ctx))
    }

    /// Decides from the observed facts alone. Equal facts give equal
    /// decisions, which is what lets the server cache them.
    pub fn plan(&self, facts: &PodFacts) -> Result<Decision, InjectError> {
        let config = &self.config;
        if !facts.opted_in {
            return Ok(skip(SkipReason::NotAnnotated, None));
        }
        if !facts.has_spec {
            return Err(InjectError::MissingSpec);
        }
        if facts.mirror {
            return Ok(skip(
                SkipReason::MirrorPod,
                Some("tracecar: mirror (static) pods cannot be mutated; add the sidecar to the static manifest instead".to_owned()),
            ));
        }
        if facts.windows {
            return Ok(skip(
                SkipReason::Windows,
                Some("tracecar: not injected: Windows pods are not supported".to_owned()),
            ));
        }
        match config.namespace_decision(&facts.namespace) {
            NamespaceDecision::Allowed => {}
            decision => {
                let why = match decision {
                    NamespaceDecision::System => "is a Kubernetes system namespace",
                    NamespaceDecision::Webhook => "is the webhook's own namespace",
                    NamespaceDecision::Excluded => "is in the injector's excludeNamespaces",
                    _ => "is not in the injector's namespaces allow-list",
                };
                return Ok(skip(
                    SkipReason::Namespace(decision),
                    Some(format!(
                        "tracecar: not injected: namespace {:?} {why}",
                        facts.namespace
                    )),
                ));
            }
        }
        if let Some(what) = &facts.existing_injection {
            // Our own earlier output (reinvocation) is silent; anything else
            // is a clash the user should hear about.
            let warning = (!facts.has_status).then(|| {
                format!(
                    "tracecar: not injected: {what} already exists; treating the pod as injected"
                )
            });
            return Ok(skip(SkipReason::AlreadyInjected, warning));
        }

        let mut warnings = Vec::new();
        let choices = Choices::read(facts, config, &mut warnings);
        let mut b = PatchBuilder::default();

        // shareProcessNamespace: the whole point of the sidecar.
        match (facts.host_pid, facts.share_process_namespace) {
            (true, _) => warnings.push(
                "tracecar: hostPID is set, so shareProcessNamespace is left unset (they are exclusive); the sidecar sees host PIDs".to_owned(),
            ),
            (_, Some(true)) => {}
            (_, shared) => {
                if shared == Some(false) {
                    warnings.push(
                        "tracecar: shareProcessNamespace was false; set to true because the pod opted in to tracecar".to_owned(),
                    );
                }
                b.add(&["spec", "shareProcessNamespace"], Value::Bool(true));
            }
        }

        b.append_all(
            &["spec", "volumes"],
            facts.has_volumes,
            self.volumes.clone(),
        );

        // App containers: shared mounts and runtime environment.
        let mut mounted = Vec::new();
        for (index, container) in facts.containers.iter().enumerate() {
            if !choices.selects(&container.name) {
                continue;
            }
            let index = index.to_string();
            let base = ["spec", "containers", index.as_str()];
            let mut mounts = Vec::new();
            for (value, path, present) in [
                (&self.tmp_mount, TMP_PATH, container.mounts_tmp),
                (&self.lttng_mount, LTTNG_PATH, container.mounts_lttng),
            ] {
                if present {
                    warnings.push(format!(
                        "tracecar: container {:?} already mounts {path}; it keeps its own mount",
                        container.name
                    ));
                } else {
                    mounts.push(value.clone());
                }
            }
            b.append_all(
                &[base.as_slice(), &["volumeMounts"]].concat(),
                container.has_mounts,
                mounts,
            );
            if let Some(runtime) = choices.runtime {
                plan_env(&mut b, &base, container, runtime, &mut warnings)?;
            }
            mounted.push(container.name.clone());
        }

        // The sidecar.
        let sidecar = self.sidecars[Self::sidecar_index(choices.profile, choices.mode)].clone();
        match choices.mode {
            SidecarMode::Container => b.append_all(&["spec", "containers"], true, vec![sidecar]),
            SidecarMode::Native => b.append_all(
                &["spec", "initContainers"],
                facts.has_init_containers,
                vec![sidecar],
            ),
        }

        let status = InjectStatus {
            version: env!("CARGO_PKG_VERSION"),
            sidecar: SIDECAR_NAME,
            mode: choices.mode.as_str(),
            profile: choices.profile.as_str(),
            containers: mounted,
            volumes: volumes_names(),
            runtime: choices.runtime,
        };
        let status_json =
            serde_json::to_string(&status).map_err(|source| InjectError::Serialize {
                what: "status annotation",
                source,
            })?;
        b.add(
            &["metadata", "annotations", ann::STATUS],
            Value::String(status_json),
        );

        Ok(Decision::Inject(Plan {
            patch: b.finish(),
            warnings,
            status,
        }))
    }
}

fn skip(reason: SkipReason, warning: Option<String>) -> Decision {
    Decision::Skip { reason, warning }
}

/// Everything about a pod that the injection decision depends on, and
/// nothing else. [`Injector::plan`] reads only this, so two pods with equal
/// facts (such as the replicas of one Deployment) get the same patch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodFacts {
    opted_in: bool,
    has_spec: bool,
    mirror: bool,
    windows: bool,
    namespace: String,
    existing_injection: Option<String>,
    has_status: bool,
    profile: Option<String>,
    sidecar_mode: Option<String>,
    runtime: Option<String>,
    containers_filter: Option<String>,
    owned_by_job: bool,
    host_pid: bool,
    share_process_namespace: Option<bool>,
    has_volumes: bool,
    has_init_containers: bool,
    containers: Vec<ContainerFacts>,
}

/// What the injector needs to know about one app container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContainerFacts {
    name: String,
    has_mounts: bool,
    mounts_tmp: bool,
    mounts_lttng: bool,
    has_env: bool,
    /// The last definition of each variable some runtime preset sets.
    preset_env: Vec<PresetEnvFact>,
}

/// An existing definition of a preset variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PresetEnvFact {
    name: &'static str,
    index: usize,
    value: Option<String>,
    from_reference: bool,
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
        Self {
            opted_in,
            has_spec: true,
            mirror: annotation(ann::MIRROR).is_some(),
            windows: is_windows(spec),
            namespace: ctx.namespace.to_owned(),
            existing_injection: existing_injection(spec),
            has_status: annotation(ann::STATUS).is_some(),
            profile: annotation(ann::PROFILE),
            sidecar_mode: annotation(ann::SIDECAR_MODE),
            runtime: annotation(ann::RUNTIME),
            containers_filter: annotation(ann::CONTAINERS),
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

impl ContainerFacts {
    fn observe(container: &Container) -> Self {
        let env = container.env.as_deref().unwrap_or_default();
        let preset_env = Runtime::ALL
            .iter()
            .flat_map(|r| r.env().iter().map(|(name, _, _)| *name))
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

fn is_windows(spec: &PodSpec) -> bool {
    let os = spec.os.as_ref().map(|os| os.name.as_str());
    let selector = spec
        .node_selector
        .as_ref()
        .and_then(|s| s.get("kubernetes.io/os"))
        .map(String::as_str);
    os == Some("windows") || selector == Some("windows")
}

/// Names what shows that the pod was injected before, if anything does.
fn existing_injection(spec: &PodSpec) -> Option<String> {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    if containers.into_iter().any(|c| c.name == SIDECAR_NAME) {
        return Some(format!("a container named {SIDECAR_NAME:?}"));
    }
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with(VOLUME_PREFIX))
        .map(|v| format!("a volume named {:?}", v.name))
}

/// The per-pod choices, after annotations and config are reconciled.
struct Choices {
    profile: SecurityProfile,
    mode: SidecarMode,
    runtime: Option<Runtime>,
    /// `None` means every app container.
    containers: Option<BTreeSet<String>>,
}

impl Choices {
    fn read(facts: &PodFacts, config: &InjectConfig, warnings: &mut Vec<String>) -> Self {
        let profile = match facts.profile.as_deref() {
            None => config.profile,
            Some(value) => match SecurityProfile::parse(value) {
                Some(p) if p == config.profile => p,
                Some(p) if config.allow_profile_override => p,
                Some(_) => {
                    warnings.push(format!(
                        "tracecar: {} ignored: the injector config does not allow per-pod profiles; using {}",
                        ann::PROFILE,
                        config.profile.as_str()
                    ));
                    config.profile
                }
                None => {
                    warnings.push(format!(
                        "tracecar: {}={value:?} is not minimal|privileged; using {}",
                        ann::PROFILE,
                        config.profile.as_str()
                    ));
                    config.profile
                }
            },
        };

        let mode = match facts.sidecar_mode.as_deref() {
            Some(value) => SidecarMode::parse(value).unwrap_or_else(|| {
                warnings.push(format!(
                    "tracecar: {}={value:?} is not container|native; using {}",
                    ann::SIDECAR_MODE,
                    config.sidecar_mode.as_str()
                ));
                config.sidecar_mode
            }),
            None if facts.owned_by_job && config.sidecar_mode == SidecarMode::Container => {
                warnings.push(
                    "tracecar: pod belongs to a Job: using a native sidecar so the Job can complete (needs Kubernetes 1.29+)".to_owned(),
                );
                SidecarMode::Native
            }
            None => config.sidecar_mode,
        };

        let runtime = facts.runtime.as_deref().and_then(|value| {
            let runtime = Runtime::parse(value);
            if runtime.is_none() {
                warnings.push(format!(
                    "tracecar: {}={value:?} is not dotnet|node|java|python; no runtime preset applied",
                    ann::RUNTIME
                ));
            }
            runtime
        });

        let containers = facts.containers_filter.as_deref().map(|list| {
            let wanted: BTreeSet<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            for name in &wanted {
                if !facts.containers.iter().any(|c| &c.name == name) {
                    warnings.push(format!(
                        "tracecar: {} names {name:?}, which is not a container of this pod",
                        ann::CONTAINERS
                    ));
                }
            }
            wanted
        });

        Self {
            profile,
            mode,
            runtime,
            containers,
        }
    }

    fn selects(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|set| set.contains(container))
    }
}

fn normalize(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

fn mounts_path(container: &Container, path: &str) -> bool {
    container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| normalize(&m.mount_path) == path)
}

fn plan_env(
    b: &mut PatchBuilder,
    container_path: &[&str],
    container: &ContainerFacts,
    runtime: Runtime,
    warnings: &mut Vec<String>,
) -> Result<(), InjectError> {
    let mut new_vars = Vec::new();
    for &(name, value, merge) in runtime.env() {
        let Some(existing) = container.preset_env.iter().find(|e| e.name == name) else {
            new_vars.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                ..EnvVar::default()
            });
            continue;
        };
        match merge {
            EnvMerge::KeepUser => {}
            EnvMerge::AppendOptions if existing.from_reference => warnings.push(format!(
                "tracecar: container {:?} sets {name} from a reference; add {value:?} to it yourself",
                container.name
            )),
            EnvMerge::AppendOptions => {
                let current = existing.value.as_deref().unwrap_or_default();
                let present: BTreeSet<&str> = current.split_whitespace().collect();
                let missing: Vec<&str> = value
                    .split_whitespace()
                    .filter(|opt| !present.contains(opt))
                    .collect();
                if !missing.is_empty() {
                    let merged = if current.trim().is_empty() {
                        missing.join(" ")
                    } else {
                        format!("{} {}", current.trim_end(), missing.join(" "))
                    };
                    let index = existing.index.to_string();
                    b.add(
                        &[container_path, &["env", &index, "value"]].concat(),
                        Value::String(merged),
                    );
                }
            }
        }
    }
    b.append_all(
        &[container_path, &["env"]].concat(),
        container.has_env,
        to_values("env var", &new_vars)?,
    );
    Ok(())
}

fn json<T: Serialize>(what: &'static str, value: &T) -> Result<Value, InjectError> {
    serde_json::to_value(value).map_err(|source| InjectError::Serialize { what, source })
}

fn to_values<T: Serialize>(what: &'static str, items: &[T]) -> Result<Vec<Value>, InjectError> {
    items.iter().map(|item| json(what, item)).collect()
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn volumes_names() -> Vec<&'static str> {
    vec![VOL_TMP, VOL_LTTNG, VOL_SYS, VOL_USR_SRC, VOL_LIB_MODULES]
}

fn pod_volumes(config: &InjectConfig) -> Vec<Volume> {
    let empty_dir = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let host_path = |name: &str, path: &str, type_: &str| Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: (!type_.is_empty()).then(|| type_.to_owned()),
        }),
        ..Volume::default()
    };
    let kernel_type = config.kernel_source_host_path_type.as_str();
    vec![
        empty_dir(VOL_TMP),
        empty_dir(VOL_LTTNG),
        host_path(VOL_SYS, "/sys", "Directory"),
        host_path(VOL_USR_SRC, "/usr/src", kernel_type),
        host_path(VOL_LIB_MODULES, "/lib/modules", kernel_type),
    ]
}

fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

/// The sidecar container for a profile and mode.
pub fn sidecar_container(
    config: &InjectConfig,
    profile: SecurityProfile,
    mode: SidecarMode,
) -> Container {
    let field_env = |name: &str, field: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // Root is explicit so a pod-level runAsNonRoot does not stop the agent.
    let root = SecurityContext {
        run_as_user: Some(0),
        run_as_group: Some(0),
        run_as_non_root: Some(false),
        ..SecurityContext::default()
    };
    let security_context = match profile {
        SecurityProfile::Minimal => SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(MINIMAL_CAPABILITIES.map(str::to_owned).to_vec()),
            }),
            // RuntimeDefault seccomp blocks bpf() and perf_event_open().
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".to_owned(),
                localhost_profile: None,
            }),
            ..root
        },
        SecurityProfile::Privileged => SecurityContext {
            privileged: Some(true),
            ..root
        },
    };
    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(
            ["tracecar-agent", "serve", "--socket", &config.socket_path]
                .map(str::to_owned)
                .to_vec(),
        ),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("NODE_NAME", "spec.nodeName"),
        ]),
        resources: Some(ResourceRequirements {
            requests: quantities(&config.resources.requests),
            limits: quantities(&config.resources.limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(security_context),
        volume_mounts: Some(vec![
            mount(VOL_TMP, TMP_PATH, false),
            mount(VOL_LTTNG, LTTNG_PATH, false),
            mount(VOL_SYS, "/sys", true),
            mount(VOL_USR_SRC, "/usr/src", true),
            mount(VOL_LIB_MODULES, "/lib/modules", true),
        ]),
        restart_policy: (mode == SidecarMode::Native).then(|| "Always".to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// Accumulates `add` operations with properly escaped pointers.
#[derive(Default)]
struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    fn add(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    }

    /// Appends `items` to the array at `tokens`, creating the array when
    /// it does not `exist` yet.
    fn append_all(&mut self, tokens: &[&str], exists: bool, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        if exists {
            for item in items {
                self.add(&[tokens, &["-"]].concat(), item);
            }
        } else {
            self.add(tokens, Value::Array(items));
        }
    }

    fn finish(self) -> Patch {
        Patch(self.ops)
    }
}
