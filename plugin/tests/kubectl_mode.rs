//! `--runtime kubectl` against a stand-in `kubectl` on PATH that logs its
//! arguments and answers like a cluster with one `web` Deployment: the
//! plugin resolves deploy/NAME through the selector, execs curl in the
//! sidecar, and turns agent errors and missing sidecars into hints.

#![cfg(test)]

use std::path::Path;
use std::process::Command;

const FAKE_KUBECTL: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$KUBECTL_LOG"
case "$*" in
  *"get pod web-7d9f-abcde -o json"*) cat "$ANSWERS/injected-pod.json" ;;
  *"get pod lonely -o json"*) cat "$ANSWERS/plain-pod.json" ;;
  *"get pod plain -o json"*)
    if [ -f "$ANSWERS/patched" ]; then cat "$ANSWERS/attached-pod.json"; else cat "$ANSWERS/plain-pod.json"; fi ;;
  *"patch pod plain --subresource ephemeralcontainers --type strategic --patch"*)
    touch "$ANSWERS/patched"; echo "pod/plain patched" ;;
  *"patch pod"*) echo 'Error from server (Forbidden): pods "x" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities' >&2; exit 1 ;;
  *"exec plain -c tracecar-attach -- curl"*"/healthz"*) printf ok ;;
  *"exec plain -c tracecar-attach -- curl"*"/v1/processes"*) cat "$ANSWERS/processes.json" ;;
  *"get deployment web"*) printf 'app=web,tier=front,' ;;
  *"get statefulset db"*) printf 'app=db,' ;;
  *"get pods --selector app=db -o json"*) cat "$ANSWERS/db-pods.json" ;;
  *"exec db-"*"/v1/processes"*) cat "$ANSWERS/processes.json" ;;
  *"exec db-1 -c tracecar -- curl"*) cat "$ANSWERS/not-visible.json"; exit 22 ;;
  *"exec db-"*"/v1/profile"*"format=pprof"*) cat "$ANSWERS/$(echo "$*" | sed 's/.*exec \(db-[0-9]\).*/\1/').pb.gz" ;;
  *"exec db-"*"/v1/profile"*"format=folded"*) printf 'app (7);main;work 3\napp (7);main 1\n' ;;
  *"exec db-"*"/v1/dotnet/counters"*) printf '{"name":"cpu-usage","value":1.5}\n' ;;
  *"get deployment"*) echo 'Error from server (NotFound): deployments.apps "x" not found' >&2; exit 1 ;;
  *"get pods"*) printf 'web-7d9f-abcde\nweb-7d9f-fghij\n' ;;
  *"exec web-7d9f-abcde -c tracecar -- curl"*"/v1/processes"*)
    cat "$ANSWERS/processes.json" ;;
  *"exec web-7d9f-abcde -c tracecar -- curl"*"/v1/profile"*)
    cat "$ANSWERS/not-visible.json"; exit 22 ;;
  *"exec web-7d9f-abcde -c tracecar -- curl"*"/v1/capabilities"*)
    cat "$ANSWERS/not-visible.json"; exit 22 ;;
  *"exec lonely -c tracecar"*)
    echo 'error: unable to upgrade connection: container not found ("tracecar")' >&2; exit 1 ;;
esac
"#;

fn plugin(dir: &Path, args: &[&str]) -> std::process::Output {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(env!("CARGO_BIN_EXE_kubectl-tracecar"))
        .args(args)
        .env("PATH", path)
        .env("KUBECTL_LOG", dir.join("log"))
        .env("ANSWERS", dir)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn setup() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let kubectl = dir.path().join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The agent's answers, built from the wire types the agent sends.
    let processes = [tracecar_api::fixtures::process(7, "app", &["/app"], 12.5)];
    std::fs::write(
        dir.path().join("processes.json"),
        serde_json::to_vec(&processes).unwrap(),
    )
    .unwrap();
    // Pods: one with the sidecar, one without (before and after attach).
    let pod = |containers: &[&str], ephemeral: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": containers.iter().map(|c| serde_json::json!({"name": c})).collect::<Vec<_>>(),
                "ephemeralContainers": ephemeral.get("spec").cloned().unwrap_or(serde_json::json!([])),
            },
            "status": {"ephemeralContainerStatuses": ephemeral.get("status").cloned().unwrap_or(serde_json::json!([]))},
        })
        .to_string()
    };
    std::fs::write(
        dir.path().join("injected-pod.json"),
        pod(&["app", "tracecar"], serde_json::json!({})),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("plain-pod.json"),
        pod(&["app"], serde_json::json!({})),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("attached-pod.json"),
        pod(
            &["app"],
            serde_json::json!({
                "spec": [{"name": "tracecar-attach", "image": "tracecar/agent:0.1.0"}],
                "status": [{"name": "tracecar-attach", "image": "tracecar/agent:0.1.0", "imageID": "",
                            "ready": false, "restartCount": 0, "state": {"running": {}}}],
            }),
        ),
    )
    .unwrap();
    let not_visible = tracecar_api::error::ErrorBody {
        error: "pid 99 is not visible".to_owned(),
        hint: "is shareProcessNamespace enabled?".to_owned(),
    };
    std::fs::write(
        dir.path().join("not-visible.json"),
        serde_json::to_vec(&not_visible).unwrap(),
    )
    .unwrap();
    dir
}

/// The pods of `sts/db`: db-0 on n1 and db-3 on n2 answer, db-1 fails
/// (its agent errs), db-2 is not ready; each answering pod's pprof has
/// one sample of `main;work` with its own weight.
fn fleet(dir: &Path) {
    use prost::Message as _;
    use std::io::Write as _;
    use tracecar_api::pprof;
    let ready = |name: &str, node: &str, ready: &str| {
        serde_json::json!({"metadata": {"name": name}, "spec": {"nodeName": node},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}})
    };
    let pods = serde_json::json!({"items": [ready("db-3", "n2", "True"), ready("db-0", "n1", "True"),
        ready("db-1", "n1", "True"), ready("db-2", "n2", "False")]});
    std::fs::write(dir.join("db-pods.json"), pods.to_string()).unwrap();
    for (pod, weight) in [("db-0", 5), ("db-3", 2)] {
        let profile = pprof::Profile {
            sample_type: vec![pprof::ValueType { r#type: 1, unit: 2 }],
            sample: vec![pprof::Sample {
                location_id: vec![2, 1],
                value: vec![weight],
                label: Vec::new(),
            }],
            location: (1..=2)
                .map(|id| pprof::Location {
                    id,
                    line: vec![pprof::Line {
                        function_id: id,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            function: (1..=2)
                .map(|id| pprof::Function {
                    id,
                    name: id as i64 + 2,
                    ..Default::default()
                })
                .collect(),
            string_table: ["", "samples", "count", "main", "work"]
                .map(str::to_owned)
                .to_vec(),
            ..Default::default()
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&profile.encode_to_vec()).unwrap();
        std::fs::write(dir.join(format!("{pod}.pb.gz")), gz.finish().unwrap()).unwrap();
    }
}

/// `--all`: every ready pod of a StatefulSet, concurrently; the answers
/// merged (pprof with pod and node labels, folded with a pod level,
/// NDJSON with a pod field); the pod that fails is listed with why, the
/// others are kept, and the command exits 1.
#[test]
fn all_merges_every_ready_pod_and_lists_the_failures() {
    use prost::Message as _;
    use std::io::Read as _;
    let dir = setup();
    fleet(dir.path());
    let out = plugin(
        dir.path(),
        &[
            "profile",
            "sts/db",
            "--all",
            "--seconds",
            "1",
            "-o",
            "all.pb.gz",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pod db-1: failed: pid 99 is not visible")
            && stderr.contains("pod db-0: done")
            && stderr.contains("pod db-3: done")
            && stderr.contains("1 of 3 pods failed"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("get pods --selector app=db -o json"), "{log}");
    assert!(!log.contains("exec db-2"), "a pod that is not ready: {log}");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&std::fs::read(dir.path().join("all.pb.gz")).unwrap()[..])
        .read_to_end(&mut raw)
        .unwrap();
    let merged = tracecar_api::pprof::Profile::decode(&raw[..]).unwrap();
    let s = |i: i64| merged.string_table[i as usize].as_str();
    let samples: Vec<String> = merged
        .sample
        .iter()
        .map(|x| {
            let labels: Vec<String> = x
                .label
                .iter()
                .map(|l| format!("{}={}", s(l.key), s(l.str)))
                .collect();
            format!("{} {}", x.value[0], labels.join(","))
        })
        .collect();
    assert_eq!(samples, ["5 pod=db-0,node=n1", "2 pod=db-3,node=n2"]);

    let out = plugin(
        dir.path(),
        &[
            "profile",
            "-l",
            "app=db",
            "--all",
            "--pod-level",
            "-o",
            "all.folded",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("all.folded")).unwrap(),
        "pod:db-0;app (7);main;work 3\npod:db-3;app (7);main;work 3\n\
         pod:db-0;app (7);main 1\npod:db-3;app (7);main 1\n"
    );
    let out = plugin(dir.path(), &["profile", "sts/db", "--all", "-o", "all.svg"]);
    assert_eq!(out.status.code(), Some(1));
    let svg = std::fs::read_to_string(dir.path().join("all.svg")).unwrap();
    assert!(
        svg.contains("cpu profile of 2 pods") && svg.contains("work"),
        "{svg}"
    );
    let out = plugin(
        dir.path(),
        &["profile", "sts/db", "--all", "-o", "a.speedscope.json"],
    );
    assert_eq!(out.status.code(), Some(64));

    let out = plugin(
        dir.path(),
        &["counters", "sts/db", "--all", "--seconds", "1"],
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"{"pod":"db-0","name":"cpu-usage","value":1.5}"#,
            r#"{"pod":"db-3","name":"cpu-usage","value":1.5}"#
        ]
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn deployments_resolve_to_a_running_pod_and_exec_in_the_sidecar() {
    let dir = setup();
    let out = plugin(dir.path(), &["-n", "shop", "ps", "deploy/web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("/app") && table.contains("12.5"), "{table}");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let calls: Vec<&str> = log.lines().collect();
    assert!(
        calls[0].starts_with("--namespace shop get deployment web"),
        "{log}"
    );
    assert!(
        calls[1].contains("get pods --selector app=web,tier=front "),
        "{log}"
    );
    assert!(
        calls[1].contains("--field-selector=status.phase=Running"),
        "{log}"
    );
    // The pod says where the agent is: its sidecar.
    assert_eq!(
        calls[2], "--namespace shop get pod web-7d9f-abcde -o json",
        "{log}"
    );
    assert!(
        calls[3].starts_with("--namespace shop exec web-7d9f-abcde -c tracecar -- curl"),
        "{log}"
    );
    assert!(
        calls[3].contains("--unix-socket /run/tracecar/agent.sock"),
        "{log}"
    );
}

/// `attach` patches the pod's ephemeralcontainers subresource, waits for
/// the container and for the agent to answer; every other command then
/// finds it; a second attach reuses it.
#[test]
fn attach_adds_an_ephemeral_agent_that_other_commands_find() {
    let dir = setup();
    let out = plugin(dir.path(), &["attach", "plain", "--timeout", "10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let calls: Vec<&str> = log.lines().collect();
    assert_eq!(calls[0], "get pod plain -o json", "{log}");
    let patch = calls[1]
        .strip_prefix("patch pod plain --subresource ephemeralcontainers --type strategic --patch ")
        .unwrap_or_else(|| panic!("{log}"));
    let body: serde_json::Value = serde_json::from_str(patch).unwrap();
    let container = &body["spec"]["ephemeralContainers"][0];
    assert_eq!(container["name"], "tracecar-attach");
    assert_eq!(container["targetContainerName"], "app");
    assert_eq!(container["image"], "tracecar/agent:0.1.0");
    assert_eq!(
        container["command"],
        serde_json::json!([
            "tracecar-agent",
            "serve",
            "--socket",
            "/run/tracecar/agent.sock",
            "--attached",
            "app"
        ])
    );
    assert_eq!(
        container["securityContext"],
        serde_json::to_value(tracecar_api::security::security_context(
            tracecar_api::security::Profile::Minimal,
            tracecar_api::security::Features::all(),
        ))
        .unwrap()
    );
    assert_eq!(calls[2], "get pod plain -o json", "waits for it: {log}");
    assert!(
        calls[3].starts_with("exec plain -c tracecar-attach -- curl")
            && calls[3].ends_with("/healthz"),
        "{log}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent attached"));

    // ps finds the attached agent.
    std::fs::write(dir.path().join("log"), "").unwrap();
    let out = plugin(dir.path(), &["ps", "plain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("exec plain -c tracecar-attach -- curl"),
        "{log}"
    );

    // A second attach reuses it: no patch.
    std::fs::write(dir.path().join("log"), "").unwrap();
    let out = plugin(dir.path(), &["attach", "plain"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("attached already"));
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(!log.contains("patch"), "{log}");

    // A refusal by PodSecurity admission says what to do.
    let out = plugin(dir.path(), &["attach", "lonely", "--profile", "privileged"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("violates PodSecurity")
            && stderr.contains("pod-security.kubernetes.io/enforce"),
        "{stderr}"
    );
}

#[test]
fn agent_errors_and_missing_sidecars_read_as_hints() {
    let dir = setup();
    let out = plugin(
        dir.path(),
        &[
            "profile",
            "deploy/web",
            "--pid",
            "99",
            "--seconds",
            "1",
            "-o",
            "cpu.pprof",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: pid 99 is not visible")
            && stderr.contains("hint: is shareProcessNamespace enabled?"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("cpu.pprof").exists(),
        "no output file on error"
    );
    assert!(!dir.path().join("cpu.pprof.partial").exists());
    // The same for an answer read into memory (status, ps, …).
    let out = plugin(dir.path(), &["status", "deploy/web"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("error: pid 99 is not visible")
            && stderr.contains("hint: is shareProcessNamespace enabled?"),
        "{stderr}"
    );

    let out = plugin(dir.path(), &["status", "lonely"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no tracecar sidecar")
            && stderr.contains("tracecar.dev/inject")
            && stderr.contains("kubectl tracecar attach lonely"),
        "{stderr}"
    );

    let out = plugin(dir.path(), &["ps", "deploy/x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    let out = plugin(dir.path(), &["profile", "web-1", "-o", "flame.png"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown output format") && stderr.contains(".svg"),
        "{stderr}"
    );
    // Bad usage exits 64, like the other tracecar binaries; an agent's
    // error exits 1.
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(plugin(dir.path(), &["profile"]).status.code(), Some(64));
    assert_eq!(
        plugin(dir.path(), &["frobnicate", "web-1"]).status.code(),
        Some(64)
    );
    assert_eq!(plugin(dir.path(), &["--help"]).status.code(), Some(0));
}

/// `--container` and `--socket` read TRACECAR_CONTAINER and TRACECAR_SOCKET.
#[test]
fn container_and_socket_come_from_the_environment() {
    let dir = setup();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-tracecar"))
        .args(["ps", "web-1"])
        .env("PATH", path)
        .env("KUBECTL_LOG", dir.path().join("log"))
        .env("ANSWERS", dir.path())
        .env("TRACECAR_CONTAINER", "agent")
        .env("TRACECAR_SOCKET", "/tmp/agent.sock")
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("exec web-1 -c agent -- curl")
            && log.contains("--unix-socket /tmp/agent.sock"),
        "{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
