//! Pure injection logic: `(&Pod, namespace, &InjectConfig) -> Decision`,
//! in two steps: [`PodFacts::observe`] reads what matters off the pod and
//! [`Injector::plan`] decides from those facts alone.
//!
//! No I/O happens here. The patch is a list of RFC 6902 `add` operations at
//! explicit paths, computed in one pass over the pod (linear in its size).
//! It is never a diff of two documents, so fields that `k8s-openapi` does
//! not know survive untouched and no `remove` is ever emitted.
//!
//! [`facts`] reads the pod, [`choices`] reconciles annotations and
//! config, [`runtime`] holds the runtime presets, [`sidecar`] builds the
//! container and volumes, and [`patch`] writes the operations.

mod choices;
mod env;
mod error;
mod facts;
mod model;
mod patch;
mod runtime;
mod sidecar;

pub use facts::{ContainerFacts, PodFacts};
pub use runtime::Runtime;
pub use sidecar::sidecar_container;

use choices::Choices;
use env::plan_env;
use patch::{PatchBuilder, json, to_values};
use sidecar::{mount, pod_volumes, volumes_names};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::annotations::{self as ann, SIDECAR_NAME};
use crate::config::{InjectConfig, NamespaceDecision, SecurityProfile, SidecarMode};

pub use error::InjectError;
pub use model::{
    Decision, InjectStatus, LTTNG_PATH, PUSH_SECRET_PATH, Plan, PodContext, PodSecurityLevel,
    RULES_PATH, SkipReason, TMP_PATH, WORK_PATH,
};
use model::{VOL_LTTNG, VOL_PUSH, VOL_RULES, VOL_TMP};
pub use tracecar_api::security::MINIMAL_CAPABILITIES;

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
                sidecars.push(json(
                    "sidecar",
                    &sidecar_container(&config, profile, mode, config.default_features()),
                )?);
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
        if let Some(skipped) = skipped(facts, &self.config)? {
            return Ok(skipped);
        }
        let mut warnings = Vec::new();
        let choices = Choices::read(facts, &self.config, &mut warnings);
        let mut b = PatchBuilder::default();
        share_process_namespace(&mut b, facts, &mut warnings);
        // Pods that push their windows mount the push Secret.
        let push_secret = self
            .config
            .push
            .secret_name
            .as_deref()
            .filter(|_| !choices.continuous.is_empty() && self.config.push.is_on());
        let mut volumes = self.volumes.clone();
        if let Some(secret) = push_secret {
            volumes.push(serde_json::json!({
                "name": VOL_PUSH,
                "secret": {"secretName": secret, "optional": true, "defaultMode": 0o400},
            }));
        }
        if let Some(config_map) = &choices.rules {
            volumes.push(serde_json::json!({
                "name": VOL_RULES,
                "configMap": {"name": config_map, "optional": true},
            }));
        }
        b.append_all(&["spec", "volumes"], facts.has_volumes, volumes);
        let mounted = self.app_containers(&mut b, facts, &choices, &mut warnings)?;
        let mut sidecar = self.sidecar(&choices)?;
        if !choices.continuous.is_empty() {
            continuous_env(&mut sidecar, &self.config, facts, &choices, &mounted);
        }
        if push_secret.is_some()
            && let Some(mounts) = sidecar
                .get_mut("volumeMounts")
                .and_then(Value::as_array_mut)
        {
            mounts.push(serde_json::json!({
                "name": VOL_PUSH, "mountPath": PUSH_SECRET_PATH, "readOnly": true,
            }));
        }
        if choices.rules.is_some() {
            if let Some(mounts) = sidecar
                .get_mut("volumeMounts")
                .and_then(Value::as_array_mut)
            {
                mounts.push(serde_json::json!({
                    "name": VOL_RULES, "mountPath": RULES_PATH, "readOnly": true,
                }));
            }
            if let Some(env) = sidecar.get_mut("env").and_then(Value::as_array_mut) {
                env.push(serde_json::json!({"name": "TRACECAR_RULES_DIR", "value": RULES_PATH}));
            }
        }
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
            features: choices.features.names(),
            containers: mounted,
            volumes: volumes_names()
                .into_iter()
                .chain(push_secret.map(|_| VOL_PUSH))
                .chain(choices.rules.as_ref().map(|_| VOL_RULES))
                .collect(),
            runtime: choices.runtime,
            continuous: choices.continuous.clone(),
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
        // The sidecar serves profiles on TCP: Grafana's scraper finds them.
        if self.config.profiles_port.is_some()
            && choices
                .features
                .contains(tracecar_api::security::Feature::Profile)
            && !facts.scrape_annotated
        {
            b.add(
                &["metadata", "annotations", ann::SCRAPE_CPU],
                Value::String("true".to_owned()),
            );
            b.add(
                &["metadata", "annotations", ann::SCRAPE_CPU_PORT_NAME],
                Value::String(ann::PPROF_PORT_NAME.to_owned()),
            );
        }
        Ok(Decision::Inject(Plan {
            patch: b.finish(),
            warnings,
            status,
        }))
    }

    /// The selected app containers get the shared mounts (unless they
    /// mount those paths already), their name in their environment and
    /// the runtime preset's; answers their names.
    fn app_containers(
        &self,
        b: &mut PatchBuilder,
        facts: &PodFacts,
        choices: &Choices,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<String>, InjectError> {
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
            plan_env(b, &base, container, choices.runtime, warnings)?;
            mounted.push(container.name.clone());
        }
        Ok(mounted)
    }

    /// The sidecar's JSON: pre-rendered for the config's features,
    /// rendered here for others.
    fn sidecar(&self, choices: &Choices) -> Result<Value, InjectError> {
        if choices.features == self.config.default_features() {
            Ok(self.sidecars[Self::sidecar_index(choices.profile, choices.mode)].clone())
        } else {
            json(
                "sidecar",
                &sidecar_container(
                    &self.config,
                    choices.profile,
                    choices.mode,
                    choices.features,
                ),
            )
        }
    }
}

/// Continuous profiling's settings and the pod's identity (its service,
/// workload and app containers; its name, namespace and node come from
/// the Downward API every sidecar has), added to the rendered sidecar's
/// environment.
fn continuous_env(
    sidecar: &mut Value,
    config: &InjectConfig,
    facts: &PodFacts,
    choices: &Choices,
    mounted: &[String],
) {
    let mut vars = vec![
        ("TRACECAR_CONTINUOUS", choices.continuous.join(",")),
        ("TRACECAR_CONTINUOUS_HZ", config.continuous_hz.to_string()),
        (
            "TRACECAR_CONTINUOUS_WINDOW",
            config.continuous_window_seconds.to_string(),
        ),
        ("TRACECAR_APP_CONTAINERS", mounted.join(",")),
    ];
    if let Some(service) = &facts.service {
        vars.push(("TRACECAR_SERVICE_NAME", service.clone()));
    }
    if let Some(workload) = &facts.workload {
        vars.push(("TRACECAR_WORKLOAD", workload.clone()));
    }
    let push = &config.push;
    if push.is_on() {
        for (name, url) in [
            ("TRACECAR_PUSH_OTLP", &push.otlp),
            ("TRACECAR_PUSH_PYROSCOPE", &push.pyroscope),
        ] {
            if let Some(url) = url {
                vars.push((name, url.clone()));
            }
        }
        vars.push(("TRACECAR_PUSH_QUEUE", push.queue.to_string()));
        if push.secret_name.is_some() {
            vars.push(("TRACECAR_PUSH_SECRET_DIR", PUSH_SECRET_PATH.to_owned()));
        }
    }
    if let Some(env) = sidecar.get_mut("env").and_then(Value::as_array_mut) {
        env.extend(
            vars.into_iter()
                .map(|(name, value)| serde_json::json!({"name": name, "value": value})),
        );
    }
}

/// Why the pod is left alone, if it is: not opted in, a mirror or Windows
/// pod, a namespace the config excludes, or injected already. A pod
/// without a spec is an error.
fn skipped(facts: &PodFacts, config: &InjectConfig) -> Result<Option<Decision>, InjectError> {
    if !facts.opted_in {
        return Ok(Some(skip(SkipReason::NotAnnotated, None)));
    }
    if !facts.has_spec {
        return Err(InjectError::MissingSpec);
    }
    if facts.mirror {
        return Ok(Some(skip(
            SkipReason::MirrorPod,
            Some("tracecar: mirror (static) pods cannot be mutated; add the sidecar to the static manifest instead".to_owned()),
        )));
    }
    if facts.windows {
        return Ok(Some(skip(
            SkipReason::Windows,
            Some("tracecar: not injected: Windows pods are not supported".to_owned()),
        )));
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
            return Ok(Some(skip(
                SkipReason::Namespace(decision),
                Some(format!(
                    "tracecar: not injected: namespace {:?} {why}",
                    facts.namespace
                )),
            )));
        }
    }
    if let Some(level) = facts.pod_security {
        return Ok(Some(declined_by_pod_security(level)?));
    }
    if let Some(what) = &facts.existing_injection {
        // Our own earlier output (reinvocation) is silent; anything else
        // is a clash the user should hear about.
        let warning = (!facts.has_status).then(|| {
            format!("tracecar: not injected: {what} already exists; treating the pod as injected")
        });
        return Ok(Some(skip(SkipReason::AlreadyInjected, warning)));
    }
    Ok(None)
}

/// A pod in a namespace that enforces `level`: the sidecar would have the
/// API server reject the pod after our mutation (a Deployment would stop
/// creating pods), so it is left without it, and says why in its status
/// annotation and in a warning.
fn declined_by_pod_security(level: PodSecurityLevel) -> Result<Decision, InjectError> {
    let why = format!(
        "not injected: the namespace enforces PodSecurity {level} (pod-security.kubernetes.io/enforce), which rejects the sidecar's hostPath volumes and capabilities; the pod runs without it",
        level = level.as_str()
    );
    let fix = "to trace it, label the namespace pod-security.kubernetes.io/enforce=privileged, or attach the agent to the running pod (kubectl tracecar attach; ephemeral containers are checked against the same level)";
    let status = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "injected": false,
        "reason": why,
        "fix": fix,
    });
    let mut b = PatchBuilder::default();
    b.add(
        &["metadata", "annotations", ann::STATUS],
        Value::String(status.to_string()),
    );
    Ok(Decision::Decline {
        reason: SkipReason::PodSecurity(level),
        warning: format!("tracecar: {why}; {fix}"),
        patch: b.finish(),
    })
}

/// `shareProcessNamespace: true`, the whole point of the sidecar, unless
/// `hostPID` (they are exclusive) or it is set already.
fn share_process_namespace(b: &mut PatchBuilder, facts: &PodFacts, warnings: &mut Vec<String>) {
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
}

fn skip(reason: SkipReason, warning: Option<String>) -> Decision {
    Decision::Skip { reason, warning }
}
