//! `kubectl tracecar attach`: the agent as an ephemeral container of a
//! running pod. Pure: what to send (the ephemeral container, the patch,
//! the podman stand-in's argv) and what a pod's state means (is an agent
//! there already, which container to join, is the new one running).

use k8s_openapi::api::core::v1::{EphemeralContainer, Pod};
use tracecar_api::security::{Features, Profile, security_context};

use crate::target::KubeFlags;

/// Names of attached agents: `tracecar-attach`, then `tracecar-attach-2`,
/// … (an ephemeral container cannot be removed or restarted, so a new
/// attach after one ended needs a new name).
pub const NAME: &str = "tracecar-attach";

/// The injected sidecar's container name.
pub const SIDECAR: &str = "tracecar";

/// What an attach needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    /// The ephemeral container's name.
    pub name: String,
    /// The agent image.
    pub image: String,
    /// The app container whose processes the agent joins.
    pub target: String,
    /// Its security profile.
    pub profile: Profile,
    /// What it may do: its capabilities (with [`Profile::Minimal`]) and
    /// the endpoints it serves.
    pub features: Features,
    /// The agent's socket in its container.
    pub socket: String,
}

/// Why a pod cannot get an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// `--target-container` names no container of the pod.
    #[error("pod {pod} has no container {wanted:?} (its containers: {})", containers.join(", "))]
    NoSuchContainer {
        /// The pod.
        pod: String,
        /// What was asked for.
        wanted: String,
        /// What it has.
        containers: Vec<String>,
    },
    /// The pod has no app container at all.
    #[error("pod {0} has no containers")]
    Empty(String),
}

/// Where an agent already is in a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Present {
    /// The webhook's sidecar.
    Sidecar,
    /// An attached agent that runs, in this ephemeral container.
    Attached(String),
}

/// The agent a pod already has: its sidecar, or the newest attached agent
/// that is running.
pub fn present(pod: &Pod) -> Option<Present> {
    let spec = pod.spec.as_ref()?;
    let sidecar = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR);
    if sidecar {
        return Some(Present::Sidecar);
    }
    running_attached(pod).map(Present::Attached)
}

/// The newest running ephemeral container that is an attached agent.
pub fn running_attached(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.ephemeral_container_statuses.as_ref()?;
    statuses
        .iter()
        .filter(|s| s.name == NAME || s.name.starts_with(&format!("{NAME}-")))
        .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
        .map(|s| s.name.clone())
        .max_by_key(|n| attach_number(n))
}

fn attach_number(name: &str) -> u32 {
    name.strip_prefix(NAME)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// A name no ephemeral container of the pod has.
pub fn free_name(pod: &Pod) -> String {
    let taken: Vec<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .map(|e| e.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let next = taken
        .iter()
        .filter(|n| **n == NAME || n.starts_with(&format!("{NAME}-")))
        .map(|n| attach_number(n))
        .max();
    match next {
        None => NAME.to_owned(),
        Some(n) => format!("{NAME}-{}", n + 1),
    }
}

/// The app container to join: `wanted`, or the only (else the first)
/// container of the pod.
pub fn target_container(
    pod_name: &str,
    pod: &Pod,
    wanted: Option<&str>,
) -> Result<String, AttachError> {
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    match wanted {
        Some(w) if containers.iter().any(|c| c == w) => Ok(w.to_owned()),
        Some(w) => Err(AttachError::NoSuchContainer {
            pod: pod_name.to_owned(),
            wanted: w.to_owned(),
            containers,
        }),
        None => containers
            .into_iter()
            .next()
            .ok_or_else(|| AttachError::Empty(pod_name.to_owned())),
    }
}

/// The ephemeral container `kubectl tracecar attach` adds: the agent,
/// joined to the target container's processes (`targetContainerName`),
/// with the profile's securityContext (the one the webhook gives the
/// sidecar). Ephemeral containers take no resources, ports, probes or new
/// volumes.
pub fn ephemeral_container(attach: &Attach) -> EphemeralContainer {
    EphemeralContainer {
        name: attach.name.clone(),
        image: Some(attach.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(
            [
                "tracecar-agent",
                "serve",
                "--socket",
                &attach.socket,
                "--attached",
                &attach.target,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env: Some(env(attach.features)),
        security_context: Some(security_context(attach.profile, attach.features)),
        target_container_name: Some(attach.target.clone()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..EphemeralContainer::default()
    }
}

/// The downward API's variables and the features, as the webhook gives
/// the sidecar.
fn env(features: Features) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let mut env = tracecar_api::security::downward_env();
    env.push(k8s_openapi::api::core::v1::EnvVar {
        name: tracecar_api::security::FEATURES_ENV.to_owned(),
        value: Some(features.list()),
        ..Default::default()
    });
    env
}

/// The strategic-merge patch of the `ephemeralcontainers` subresource that
/// adds `container` (ephemeral containers merge by name).
pub fn patch_body(container: &EphemeralContainer) -> String {
    serde_json::json!({ "spec": { "ephemeralContainers": [container] } }).to_string()
}

fn kubectl(flags: &KubeFlags, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["kubectl".to_owned()];
    argv.extend(flags.args());
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

/// `kubectl get pod POD -o json`.
pub fn get_pod(flags: &KubeFlags, pod: &str) -> Vec<String> {
    kubectl(flags, &["get", "pod", pod, "-o", "json"])
}

/// `kubectl patch pod POD --subresource ephemeralcontainers …`.
pub fn patch(flags: &KubeFlags, pod: &str, body: &str) -> Vec<String> {
    kubectl(
        flags,
        &[
            "patch",
            "pod",
            pod,
            "--subresource",
            "ephemeralcontainers",
            "--type",
            "strategic",
            "--patch",
            body,
        ],
    )
}

/// How a new ephemeral container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not running yet (with the kubelet's reason, if it gave one).
    Waiting(Option<String>),
    /// Running.
    Running,
    /// It will not run: the image cannot be pulled, or it ended.
    Failed(String),
}

/// The state of ephemeral container `name` in `pod`.
pub fn progress(pod: &Pod, name: &str) -> Progress {
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.ephemeral_container_statuses.as_ref())
        .and_then(|all| all.iter().find(|s| s.name == name));
    let Some(state) = status.and_then(|s| s.state.as_ref()) else {
        return Progress::Waiting(None);
    };
    if state.running.is_some() {
        return Progress::Running;
    }
    if let Some(t) = &state.terminated {
        return Progress::Failed(format!(
            "it exited ({}{}){}",
            t.reason.as_deref().unwrap_or("exit code"),
            format_args!(" {}", t.exit_code),
            t.message
                .as_deref()
                .map(|m| format!(": {}", m.trim()))
                .unwrap_or_default()
        ));
    }
    let reason = state.waiting.as_ref().and_then(|w| w.reason.clone());
    match reason.as_deref() {
        Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName") => {
            Progress::Failed(format!(
                "its image cannot be pulled ({}){}",
                reason.as_deref().unwrap_or_default(),
                state
                    .waiting
                    .as_ref()
                    .and_then(|w| w.message.as_deref())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ))
        }
        _ => Progress::Waiting(reason),
    }
}

/// What an API server's refusal of the patch usually means.
pub fn refusal_hint(stderr: &str) -> Option<String> {
    if stderr.contains("PodSecurity") {
        Some(
            "the namespace enforces PodSecurity baseline or restricted, which refuses the agent's capabilities (BPF, PERFMON, SYS_ADMIN, …) and unconfined seccomp in an ephemeral container too: label the namespace pod-security.kubernetes.io/enforce=privileged (for the incident, then back), or use the webhook in a namespace that allows it".to_owned(),
        )
    } else if stderr.contains("forbidden") || stderr.contains("Forbidden") {
        Some(
            "you need `patch` on pods/ephemeralcontainers and `create` on pods/exec: see manifests/rbac/attach-clusterrole.yaml".to_owned(),
        )
    } else if stderr.contains("unknown flag: --subresource")
        || stderr.contains("could not find the requested resource")
    {
        Some("ephemeral containers need Kubernetes 1.25+ and kubectl 1.24+".to_owned())
    } else {
        None
    }
}

/// The podman stand-in for an ephemeral container, for pods run with
/// `podman kube play` (local runs and the end-to-end test): the agent
/// image run in the pod (so it goes with the pod, as an ephemeral
/// container does), joined to the app container's PID namespace (`--pid
/// container:…`), with the profile's capabilities and none of the pod's
/// volumes.
pub fn podman_run(pod: &str, attach: &Attach) -> Vec<String> {
    let mut argv: Vec<String> = [
        "podman",
        "run",
        "--detach",
        "--replace",
        "--name",
        &format!("{pod}-{}", attach.name),
        "--label",
        &format!("tracecar.dev/attached-to={pod}"),
        "--pod",
        pod,
        "--pid",
        &format!("container:{pod}-{}", attach.target),
        "--user",
        "0:0",
    ]
    .map(str::to_owned)
    .to_vec();
    match attach.profile {
        Profile::Minimal => {
            argv.extend(["--cap-drop".to_owned(), "ALL".to_owned()]);
            for cap in attach.features.capabilities() {
                argv.extend(["--cap-add".to_owned(), format!("CAP_{cap}")]);
            }
            argv.extend([
                "--security-opt".to_owned(),
                "seccomp=unconfined".to_owned(),
                "--security-opt".to_owned(),
                "no-new-privileges".to_owned(),
            ]);
        }
        Profile::Privileged => argv.push("--privileged".to_owned()),
    }
    // The image's entrypoint is the agent; its arguments follow the image.
    argv.extend([
        "--entrypoint".to_owned(),
        "tracecar-agent".to_owned(),
        attach.image.clone(),
    ]);
    argv.extend(
        [
            "serve",
            "--socket",
            &attach.socket,
            "--attached",
            &attach.target,
            "--features",
            &attach.features.list(),
        ]
        .map(str::to_owned),
    );
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracecar_api::security::MINIMAL_CAPABILITIES;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn attach(profile: Profile) -> Attach {
        Attach {
            name: NAME.to_owned(),
            image: "tracecar/agent:0.1.0".to_owned(),
            target: "app".to_owned(),
            profile,
            features: Features::all(),
            socket: "/run/tracecar/agent.sock".to_owned(),
        }
    }

    #[test]
    fn an_attach_for_some_features_gets_their_capabilities_only() {
        let features = Features::parse("profile").unwrap();
        let spec = Attach {
            features,
            ..attach(Profile::Minimal)
        };
        let container = ephemeral_container(&spec);
        let caps = container
            .security_context
            .and_then(|c| c.capabilities)
            .and_then(|c| c.add)
            .unwrap_or_default();
        assert_eq!(
            caps,
            features
                .capabilities()
                .iter()
                .map(|c| (*c).to_owned())
                .collect::<Vec<_>>()
        );
        assert!(!caps.iter().any(|c| c == "SYS_ADMIN"), "{caps:?}");
        let env = container.env.unwrap_or_default();
        assert!(
            env.iter()
                .any(|e| e.name == "TRACECAR_FEATURES" && e.value.as_deref() == Some("profile")),
            "{env:?}"
        );
        let argv = podman_run("web", &spec).join(" ");
        assert!(argv.contains("--features profile"), "{argv}");
        assert!(!argv.contains("CAP_SYS_ADMIN"), "{argv}");
        assert!(argv.contains("--cap-add CAP_PERFMON"), "{argv}");
    }

    #[test]
    fn the_ephemeral_container_has_the_profiles_security_context() {
        let minimal = ephemeral_container(&attach(Profile::Minimal));
        assert_eq!(minimal.target_container_name.as_deref(), Some("app"));
        let context = minimal.security_context.unwrap_or_default();
        assert_eq!(context, security_context(Profile::Minimal, Features::all()));
        let caps = context.capabilities.unwrap_or_default();
        assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            caps.add.unwrap_or_default(),
            MINIMAL_CAPABILITIES.map(str::to_owned).to_vec()
        );
        assert!(minimal.resources.is_none() && minimal.volume_mounts.is_none());
        assert!(
            minimal
                .command
                .unwrap_or_default()
                .windows(2)
                .any(|w| w == ["--attached", "app"])
        );
        let privileged = ephemeral_container(&attach(Profile::Privileged));
        assert_eq!(
            privileged.security_context.and_then(|c| c.privileged),
            Some(true)
        );
        let body: serde_json::Value =
            serde_json::from_str(&patch_body(&ephemeral_container(&attach(Profile::Minimal))))
                .unwrap();
        assert_eq!(body["spec"]["ephemeralContainers"][0]["name"], NAME);
        assert_eq!(
            body["spec"]["ephemeralContainers"][0]["targetContainerName"],
            "app"
        );
    }

    #[test]
    fn pods_say_where_an_agent_is_and_which_name_is_free() {
        let plain = pod(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app"}, {"name": "proxy"}]},
        }));
        assert_eq!(present(&plain), None);
        assert_eq!(free_name(&plain), "tracecar-attach");
        assert_eq!(target_container("web", &plain, None), Ok("app".to_owned()));
        assert_eq!(
            target_container("web", &plain, Some("proxy")),
            Ok("proxy".to_owned())
        );
        assert!(target_container("web", &plain, Some("db")).is_err());
        let injected = pod(serde_json::json!({
            "spec": {"containers": [{"name": "app"}, {"name": "tracecar"}]},
        }));
        assert_eq!(present(&injected), Some(Present::Sidecar));
        // One attach ended, a second runs: that one is used, and a third
        // would need a new name.
        let attached = pod(serde_json::json!({
            "spec": {
                "containers": [{"name": "app"}],
                "ephemeralContainers": [{"name": "tracecar-attach"}, {"name": "tracecar-attach-2"}, {"name": "debugger"}],
            },
            "status": {"ephemeralContainerStatuses": [
                {"name": "tracecar-attach", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 137, "reason": "Error"}}},
                {"name": "tracecar-attach-2", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"running": {}}},
            ]},
        }));
        assert_eq!(
            present(&attached),
            Some(Present::Attached("tracecar-attach-2".to_owned()))
        );
        assert_eq!(free_name(&attached), "tracecar-attach-3");
        assert_eq!(progress(&attached, "tracecar-attach-2"), Progress::Running);
        assert!(matches!(
            progress(&attached, "tracecar-attach"),
            Progress::Failed(m) if m.contains("137")
        ));
        assert_eq!(progress(&attached, "nope"), Progress::Waiting(None));
    }

    #[test]
    fn refusals_get_hints() {
        assert!(
            refusal_hint(r#"Error from server (Forbidden): pods "web" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities"#)
                .is_some_and(|h| h.contains("pod-security.kubernetes.io/enforce"))
        );
        assert!(
            refusal_hint(r#"Error from server (Forbidden): pods "web" is forbidden: User "dev" cannot patch resource "pods/ephemeralcontainers""#)
                .is_some_and(|h| h.contains("attach-clusterrole"))
        );
        assert_eq!(refusal_hint("connection refused"), None);
    }

    #[test]
    fn the_podman_stand_in_joins_the_app_containers_processes() {
        let argv = podman_run("web-pod", &attach(Profile::Minimal));
        let text = argv.join(" ");
        assert!(
            text.starts_with("podman run --detach --replace --name web-pod-tracecar-attach"),
            "{text}"
        );
        assert!(
            text.contains("--entrypoint tracecar-agent tracecar/agent:0.1.0 serve --socket"),
            "{text}"
        );
        assert!(text.contains("--pid container:web-pod-app"), "{text}");
        assert!(
            text.contains("--cap-drop ALL --cap-add CAP_PERFMON"),
            "{text}"
        );
        // In the pod (it goes with it), but with none of its volumes.
        assert!(text.contains("--pod web-pod "), "{text}");
        assert!(
            !text.contains("--volume") && !text.contains("--mount"),
            "{text}"
        );
        assert!(
            text.ends_with("--attached app --features profile,uprobe,lttng,dotnet,dump"),
            "{text}"
        );
        assert!(podman_run("p", &attach(Profile::Privileged)).contains(&"--privileged".to_owned()));
    }
}
