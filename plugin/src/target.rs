//! Which pod a command talks to and how: pure functions that build the
//! argv of `kubectl` or `podman` commands.

/// How the sidecar is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// `kubectl exec` in a cluster.
    Kubectl,
    /// `podman exec` against a pod run with `podman kube play`: the same
    /// requests, for local runs and the end-to-end test.
    Podman,
}

/// What the user named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A pod by name (`web-6d…` or `pod/web-6d…`).
    Pod(String),
    /// A workload (`deploy/web`, `sts/db`, `ds/agent`): one of its running
    /// pods, or with `--all` every ready one.
    Workload(Workload, String),
}

/// The workloads whose pods a target can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `deploy/NAME`.
    Deployment,
    /// `sts/NAME`.
    StatefulSet,
    /// `ds/NAME`.
    DaemonSet,
}

impl Workload {
    /// The resource kubectl gets.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::DaemonSet => "daemonset",
        }
    }
}

/// A target that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a pod: use POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME")]
pub struct TargetError(pub String);

/// Parses `POD`, `pod/POD`, `deploy/NAME`, `sts/NAME`, `ds/NAME` (and the
/// long and plural names kubectl takes for them).
pub fn parse(raw: &str) -> Result<Target, TargetError> {
    let (kind, name) = raw.split_once('/').unwrap_or(("pod", raw));
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    match kind {
        _ if !valid => Err(TargetError(raw.to_owned())),
        "pod" | "pods" | "po" => Ok(Target::Pod(name.to_owned())),
        "deploy" | "deployment" | "deployments" => {
            Ok(Target::Workload(Workload::Deployment, name.to_owned()))
        }
        "sts" | "statefulset" | "statefulsets" => {
            Ok(Target::Workload(Workload::StatefulSet, name.to_owned()))
        }
        "ds" | "daemonset" | "daemonsets" => {
            Ok(Target::Workload(Workload::DaemonSet, name.to_owned()))
        }
        _ => Err(TargetError(raw.to_owned())),
    }
}

/// Flags shared by every `kubectl` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeFlags {
    /// `--namespace`.
    pub namespace: Option<String>,
    /// `--context`.
    pub context: Option<String>,
}

impl KubeFlags {
    /// `--namespace`/`--context` for a kubectl argv.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(ns) = &self.namespace {
            args.extend(["--namespace".to_owned(), ns.clone()]);
        }
        if let Some(ctx) = &self.context {
            args.extend(["--context".to_owned(), ctx.clone()]);
        }
        args
    }
}

/// `kubectl get KIND NAME -o go-template=…`: the workload's pod selector
/// as `k=v,…` (its `matchLabels`; a workload that selects by
/// `matchExpressions` is named with `-l` instead).
pub fn workload_selector(flags: &KubeFlags, kind: Workload, name: &str) -> Vec<String> {
    let mut argv = vec!["kubectl".to_owned()];
    argv.extend(flags.args());
    argv.extend(
        [
            "get",
            kind.resource(),
            name,
            "-o",
            r#"go-template={{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}"#,
        ]
        .map(str::to_owned),
    );
    argv
}

/// `kubectl get pods --selector SELECTOR` then `rest`.
fn get_pods(flags: &KubeFlags, selector: &str, rest: &[&str]) -> Vec<String> {
    let mut argv = vec!["kubectl".to_owned()];
    argv.extend(flags.args());
    argv.extend(
        ["get", "pods", "--selector", selector.trim_end_matches(',')]
            .into_iter()
            .chain(rest.iter().copied())
            .map(str::to_owned),
    );
    argv
}

/// `kubectl get pods -l SELECTOR`: running pods' names, one per line.
pub fn running_pods(flags: &KubeFlags, selector: &str) -> Vec<String> {
    get_pods(
        flags,
        selector,
        &[
            "--field-selector=status.phase=Running",
            "-o",
            r#"go-template={{range .items}}{{.metadata.name}}{{"\n"}}{{end}}"#,
        ],
    )
}

/// `kubectl get pods --selector SELECTOR -o json`: every pod the
/// selector matches, for [`crate::fleet::ready_pods`] to keep the ready
/// ones.
pub fn pods_json(flags: &KubeFlags, selector: &str) -> Vec<String> {
    get_pods(flags, selector, &["-o", "json"])
}

/// `podman pod ps --filter label=K=V … --format json`: the pods whose
/// labels match every `K=V` of an equality selector (podman's label
/// filters all have to match). A set-based term (`in`, `!=`, `!k`) is
/// handed back as the error: podman cannot filter by it.
pub fn podman_pods_json(selector: &str) -> Result<Vec<String>, String> {
    let mut argv: Vec<String> = ["podman", "pod", "ps"].map(str::to_owned).to_vec();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let term = term.replacen("==", "=", 1);
        match term.split_once('=') {
            Some((key, value))
                if !key.is_empty() && !key.ends_with('!') && !value.contains('=') =>
            {
                argv.extend(["--filter".to_owned(), format!("label={key}={value}")]);
            }
            _ => return Err(term),
        }
    }
    argv.extend(["--format", "json"].map(str::to_owned));
    Ok(argv)
}

/// The pod `podman kube play` made for a workload: `NAME-pod`.
pub fn podman_workload_pod(name: &str) -> String {
    format!("{name}-pod")
}

/// Runs `command` in the sidecar container of `pod`.
pub fn exec(
    runtime: Runtime,
    flags: &KubeFlags,
    pod: &str,
    container: &str,
    command: &[String],
) -> Vec<String> {
    let mut argv = match runtime {
        Runtime::Kubectl => {
            let mut argv = vec!["kubectl".to_owned()];
            argv.extend(flags.args());
            argv.extend(["exec", pod, "-c", container, "--"].map(str::to_owned));
            argv
        }
        // podman kube play names containers POD-CONTAINER.
        Runtime::Podman => vec![
            "podman".to_owned(),
            "exec".to_owned(),
            format!("{pod}-{container}"),
        ],
    };
    argv.extend(command.iter().cloned());
    argv
}

/// `podman container exists POD-CONTAINER`: exit 0 when it does.
pub fn podman_container_exists(pod: &str, container: &str) -> Vec<String> {
    vec![
        "podman".to_owned(),
        "container".to_owned(),
        "exists".to_owned(),
        format!("{pod}-{container}"),
    ]
}

/// `curl` in the sidecar: streams the body unbuffered, fails (exit 22)
/// on an HTTP error but still prints the agent's JSON error.
pub fn curl(socket: &str, path_and_query: &str) -> Vec<String> {
    [
        "curl",
        "--silent",
        "--show-error",
        "--no-buffer",
        "--fail-with-body",
        "--unix-socket",
        socket,
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("http://localhost{path_and_query}")])
    .collect()
}

/// `curl` in the sidecar with another method (`POST`, `DELETE`) and, for
/// a POST, `body` as the request's (`--data-raw`: an `@` at its start is
/// text, not a file; a rule document is at most 64 KiB, within one
/// argument's limit of 128 KiB).
pub fn curl_send(socket: &str, method: &str, path: &str, body: Option<&str>) -> Vec<String> {
    let mut argv = curl(socket, path);
    let url = argv.pop().unwrap_or_default();
    argv.extend(["-X".to_owned(), method.to_owned()]);
    if let Some(body) = body {
        argv.extend([
            "-H".to_owned(),
            "content-type: application/yaml".to_owned(),
            "--data-raw".to_owned(),
            body.to_owned(),
        ]);
    }
    argv.push(url);
    argv
}

/// curl's exit code for an HTTP error (`--fail-with-body`).
pub const CURL_HTTP_ERROR: i32 = 22;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_carry_their_method_and_body() {
        let post = curl_send("/s", "POST", "/v1/rules", Some("@name: x"));
        let n = post.len();
        assert_eq!(post[n - 1], "http://localhost/v1/rules");
        assert_eq!(
            post[n - 3..n - 1],
            ["--data-raw".to_owned(), "@name: x".to_owned()]
        );
        assert!(post.windows(2).any(|w| w == ["-X", "POST"]), "{post:?}");
        let delete = curl_send("/s", "DELETE", "/v1/rules/x", None);
        assert!(!delete.iter().any(|a| a == "--data-raw"));
        assert!(delete.windows(2).any(|w| w == ["-X", "DELETE"]));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse("web-1"), Ok(Target::Pod("web-1".into())));
        assert_eq!(parse("pod/web-1"), Ok(Target::Pod("web-1".into())));
        let deploy = Ok(Target::Workload(Workload::Deployment, "web".into()));
        assert_eq!(parse("deploy/web"), deploy);
        assert_eq!(parse("deployment/web"), deploy);
        assert_eq!(
            parse("sts/db"),
            Ok(Target::Workload(Workload::StatefulSet, "db".into()))
        );
        assert_eq!(
            parse("daemonsets/node-agent"),
            Ok(Target::Workload(Workload::DaemonSet, "node-agent".into()))
        );
        for bad in ["", "svc/web", "deploy/", "Web", "pod/a b", "a;rm"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubectl_exec_runs_curl_in_the_sidecar() {
        let flags = KubeFlags {
            namespace: Some("shop".into()),
            context: None,
        };
        let argv = exec(
            Runtime::Kubectl,
            &flags,
            "web-1",
            "tracecar",
            &curl("/run/tracecar/agent.sock", "/v1/processes"),
        );
        assert_eq!(
            argv[..8],
            [
                "kubectl",
                "--namespace",
                "shop",
                "exec",
                "web-1",
                "-c",
                "tracecar",
                "--"
            ]
        );
        assert_eq!(argv[8], "curl");
        assert!(argv.contains(&"--fail-with-body".to_owned()));
        assert_eq!(
            argv.last().map(String::as_str),
            Some("http://localhost/v1/processes")
        );
    }

    #[test]
    fn podman_exec_names_the_container_like_kube_play() {
        let argv = exec(
            Runtime::Podman,
            &KubeFlags::default(),
            "web-pod",
            "tracecar",
            &["true".to_owned()],
        );
        assert_eq!(argv, ["podman", "exec", "web-pod-tracecar", "true"]);
        assert_eq!(podman_workload_pod("web"), "web-pod");
    }

    #[test]
    fn deployments_resolve_through_their_selector() {
        let flags = KubeFlags::default();
        let argv = workload_selector(&flags, Workload::Deployment, "web");
        assert_eq!(argv[..4], ["kubectl", "get", "deployment", "web"]);
        let argv = workload_selector(&flags, Workload::DaemonSet, "agent");
        assert_eq!(argv[..4], ["kubectl", "get", "daemonset", "agent"]);
        let argv = running_pods(&flags, "app=web,tier=front,");
        assert!(argv.contains(&"app=web,tier=front".to_owned()));
        assert!(argv.contains(&"--field-selector=status.phase=Running".to_owned()));
        assert_eq!(
            pods_json(&flags, "app=web,"),
            [
                "kubectl",
                "get",
                "pods",
                "--selector",
                "app=web",
                "-o",
                "json"
            ]
        );
    }

    #[test]
    fn podman_lists_pods_by_their_labels() {
        assert_eq!(
            podman_pods_json("app=web, tier==front").unwrap(),
            [
                "podman",
                "pod",
                "ps",
                "--filter",
                "label=app=web",
                "--filter",
                "label=tier=front",
                "--format",
                "json"
            ]
        );
        for bad in ["app!=web", "tier in (a,b)", "!canary", "=x"] {
            assert!(podman_pods_json(bad).is_err(), "{bad}");
        }
    }
}
