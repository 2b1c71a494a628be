//! Privileged integration tests of the push of continuous windows: the
//! real agent, a real workload, and a stand-in backend
//! (`push_receiver.py`) that decodes OTLP with OpenTelemetry's own
//! protobuf definitions and checks Pyroscope's ingest request shape. No
//! Pyroscope server or OpenTelemetry Collector installs from the
//! registries this is built with.

#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The stand-in backend on `port`, writing what it receives into `out`;
/// the first `fail_first` requests get 503.
fn receiver(port: u16, out: &Path, fail_first: u32) -> Running {
    assert!(
        Path::new("/var/cache/tracecar/otel-proto/.complete").exists(),
        "opentelemetry-proto (PyPI) is missing: run scripts/deps.sh test"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/push_receiver.py");
    let running = spawn(
        "python3",
        &[
            script.to_str().unwrap(),
            &port.to_string(),
            out.to_str().unwrap(),
            &fail_first.to_string(),
        ],
    );
    wait_listening(port);
    running
}

/// The requests received so far, in order.
fn received(out: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("req-"))
        })
        .collect();
    files.sort_by_key(|p| {
        p.file_stem().unwrap().to_string_lossy()[4..]
            .parse::<u32>()
            .unwrap()
    });
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

const IDENTITY: &[&str] = &[
    "POD_NAME=web-7d9f8b6c5-x2x4z",
    "POD_NAMESPACE=shop",
    "NODE_NAME=node-1",
    "TRACECAR_SERVICE_NAME=web",
    "TRACECAR_WORKLOAD=Deployment/web",
    "TRACECAR_APP_CONTAINERS=app",
];

#[test]
fn windows_reach_otlp_and_pyroscope_with_the_pods_identity() {
    common::privileged_test!();
    let Workload { dir, bin } = Workload::c("ratios.c", &[]);
    let _workload = spawn(&bin, &[]);
    let out = dir.path().join("received");
    std::fs::create_dir(&out).unwrap();
    let port = free_port();
    // The first attempt fails: the window is sent again.
    let _receiver = receiver(port, &out, 1);
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(
        secret.join("headers"),
        "# from the Secret\nAuthorization: Bearer t0k3n\nX-Scope-OrgID: tenant-1\n",
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut env = vec![
        "env".to_owned(),
        "TRACECAR_CONTINUOUS=cpu".to_owned(),
        "TRACECAR_CONTINUOUS_HZ=49".to_owned(),
        "TRACECAR_CONTINUOUS_WINDOW=2".to_owned(),
        format!("TRACECAR_PUSH_OTLP={base}/"),
        format!("TRACECAR_PUSH_PYROSCOPE={base}"),
        format!("TRACECAR_PUSH_SECRET_DIR={}", secret.display()),
    ];
    env.extend(IDENTITY.iter().map(|s| (*s).to_owned()));
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let agent = Agent::start_under(&env, &dir.path().join("agent.log"));
    let done = |path: &str| {
        received(&out)
            .into_iter()
            .filter(|r| r["path"] == path && r["answered"] == 200)
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(30), "a window at each backend", || {
        !done("/v1development/profiles").is_empty() && !done("/ingest").is_empty()
    });
    let all = received(&out);
    for request in &all {
        assert!(request.get("error").is_none(), "{request}");
        assert_eq!(request["headers"]["authorization"], "Bearer t0k3n");
        assert_eq!(request["headers"]["x-scope-orgid"], "tenant-1");
    }
    // The 503 was retried: the same window, sent again.
    assert_eq!(all[0]["answered"], 503);

    let otlp = &done("/v1development/profiles")[0];
    assert_eq!(otlp["headers"]["content-type"], "application/x-protobuf");
    let resource_profiles = &otlp["otlp"]["resource_profiles"][0];
    let resource = &resource_profiles["resource"];
    for (key, value) in [
        ("service.name", "web"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-7d9f8b6c5-x2x4z"),
        ("k8s.container.name", "app"),
        ("k8s.node.name", "node-1"),
        ("k8s.deployment.name", "web"),
    ] {
        assert_eq!(resource[key], value, "{resource}");
    }
    let profiles = resource_profiles["profiles"].as_array().unwrap();
    let kinds: Vec<&Value> = profiles.iter().map(|p| &p["sample_type"]).collect();
    assert_eq!(
        kinds,
        [
            &serde_json::json!(["samples", "count"]),
            &serde_json::json!(["cpu", "nanoseconds"])
        ]
    );
    let (count, cpu) = (&profiles[0], &profiles[1]);
    assert_eq!(count["scope"], "tracecar");
    assert_eq!(cpu["period"], 1_000_000_000 / 49);
    assert_eq!(
        cpu["total"].as_i64().unwrap(),
        count["total"].as_i64().unwrap() * (1_000_000_000 / 49)
    );
    assert!(count["total"].as_i64().unwrap() > 0, "{count}");
    let functions: Vec<&str> = cpu["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(functions.contains(&"leaf_three"), "{functions:?}");
    assert_eq!(
        cpu["sample_attributes"],
        serde_json::json!(["process.executable.name", "process.pid"])
    );
    let seconds = cpu["duration_nano"].as_f64().unwrap() / 1e9;
    assert!((seconds - 2.0).abs() < 0.5, "{seconds}");
    assert_ne!(count["profile_id"], cpu["profile_id"]);

    let ingest = &done("/ingest")[0];
    assert_eq!(
        ingest["headers"]["content-type"],
        "application/octet-stream"
    );
    assert_eq!(ingest["gzip"], true);
    assert!(ingest["pprof_bytes"].as_u64().unwrap() > 0);
    let query = &ingest["query"];
    assert_eq!(query["format"], "pprof");
    assert_eq!(query["sampleRate"], "49");
    assert_eq!(query["spyName"], "tracecar");
    assert_eq!(
        query["name"],
        "web{k8s_namespace_name=shop,k8s_pod_name=web-7d9f8b6c5-x2x4z,k8s_container_name=app,k8s_node_name=node-1,k8s_deployment_name=web}"
    );
    let (from, until) = (
        query["from"].as_str().unwrap().parse::<u64>().unwrap(),
        query["until"].as_str().unwrap().parse::<u64>().unwrap(),
    );
    assert!((1..=3).contains(&(until - from)), "{query}");

    // /v1/capabilities counts them.
    let report: Value = serde_json::from_slice(&agent.get_ok("/v1/capabilities")).unwrap();
    let continuous = &report["continuous"];
    assert_eq!(continuous["modes"][0]["mode"], "cpu");
    assert_eq!(continuous["modes"][0]["hz"], 49);
    let push = continuous["push"].as_array().unwrap();
    assert_eq!(push.len(), 2);
    assert_eq!(push[0]["destination"], "otlp");
    assert_eq!(push[0]["url"], format!("{base}/v1development/profiles"));
    let sent: u64 = push.iter().map(|p| p["sent"].as_u64().unwrap()).sum();
    let retries: u64 = push.iter().map(|p| p["retries"].as_u64().unwrap()).sum();
    assert!(sent >= 2 && retries == 1, "{continuous}");
}

#[test]
fn a_backend_that_is_down_costs_a_bounded_queue_and_is_caught_up_with() {
    common::privileged_test!();
    let Workload { dir, bin } = Workload::c("ratios.c", &[]);
    let _workload = spawn(&bin, &[]);
    let port = free_port();
    let push = format!("TRACECAR_PUSH_OTLP=http://127.0.0.1:{port}");
    let mut env = vec![
        "env",
        "TRACECAR_CONTINUOUS=cpu",
        "TRACECAR_CONTINUOUS_WINDOW=1",
        "TRACECAR_PUSH_QUEUE=2",
        &push,
    ];
    env.extend(IDENTITY);
    let agent = Agent::start_under(&env, &dir.path().join("agent.log"));
    let report = || -> Value {
        let report: Value = serde_json::from_slice(&agent.get_ok("/v1/capabilities")).unwrap();
        report["continuous"]["push"][0].clone()
    };
    // Nobody listens: windows queue up to 2, then the oldest are dropped.
    wait_until(Duration::from_secs(20), "dropped windows", || {
        report()["dropped"].as_u64().unwrap() >= 3
    });
    let down = report();
    assert!(down["queued"].as_u64().unwrap() <= 2, "{down}");
    assert_eq!(down["sent"], 0);
    assert!(down["retries"].as_u64().unwrap() >= 1, "{down}");
    assert!(
        down["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("onnect")),
        "{down}"
    );
    let rss_down = agent_rss_kib(&agent);
    // The backend comes up: the queued windows and the next ones go.
    let out = dir.path().join("received");
    std::fs::create_dir(&out).unwrap();
    let _receiver = receiver(port, &out, 0);
    wait_until(
        Duration::from_secs(40),
        "windows sent after the outage",
        || report()["sent"].as_u64().unwrap() >= 3,
    );
    assert_eq!(report()["last_error"], Value::Null);
    // Memory did not grow with the outage: within 8 MiB of what it was.
    let rss_up = agent_rss_kib(&agent);
    assert!(
        rss_up < rss_down + 8 * 1024,
        "{rss_down} KiB → {rss_up} KiB"
    );
}

fn agent_rss_kib(agent: &Agent) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.process.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn push_settings_that_cannot_work_stop_the_agent_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    for (env, says) in [
        (
            vec![("TRACECAR_PUSH_OTLP", "http://c:4318")],
            "send continuous windows: add --continuous",
        ),
        (
            vec![
                ("TRACECAR_CONTINUOUS", "cpu"),
                ("TRACECAR_PUSH_OTLP", "c:4318"),
            ],
            "--push-otlp",
        ),
        (
            vec![
                ("TRACECAR_CONTINUOUS", "cpu"),
                ("TRACECAR_PUSH_PYROSCOPE", "http://p"),
                ("TRACECAR_PUSH_QUEUE", "0"),
            ],
            "a queue holds 1 to 64 windows",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tracecar-agent"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--no-lttng")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{env:?}: {stderr}");
        assert!(stderr.contains(says), "{env:?}: {stderr}");
        assert!(!dir.path().join("run").exists());
    }
}
