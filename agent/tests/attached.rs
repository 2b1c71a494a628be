//! Privileged tests of an agent that shares no directory with the app, as
//! an attached (ephemeral) agent: the app runs with a /tmp of its own (a
//! tmpfs in its own mount namespace), so its perf map and its .NET
//! diagnostic socket exist only inside its root, and the agent must reach
//! them through /proc/PID/root.

#![cfg(test)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// The agent as `kubectl tracecar attach` starts it.
fn attached_agent() -> Agent {
    let log = tempfile::NamedTempFile::new().unwrap();
    Agent::start_under(&["env", "TRACECAR_ATTACHED=app"], log.path())
}

#[test]
fn perf_maps_in_the_apps_own_tmp_are_read_through_its_root() {
    common::privileged_test!();
    // Outside /tmp, which the app's own /tmp hides.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let bin = compile_c(dir.path(), "jit_calls.c", &[]);
    let child = with_private_tmp(bin.to_str().unwrap(), &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let workload = Running { child };
    let agent = attached_agent();
    // unshare and sh exec: the child becomes the workload.
    let pid = workload.pid();
    wait_until_it_maps(pid, "7e0000000000");
    assert!(
        !std::path::Path::new(&format!("/tmp/perf-{pid}.map")).exists(),
        "the premise: the agent's /tmp does not have the app's perf map"
    );
    // Named from the perf map in the app's own /tmp, and probed.
    let body = agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=jitted_calc&args=int&ret=int&limit=10"
    ));
    let lines = ndjson(&body);
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["mechanism"], "breakpoint", "{summary}");
    for e in &lines[..lines.len() - 1] {
        assert_eq!(
            e["ret"].as_i64().unwrap(),
            e["args"][0].as_i64().unwrap() * 3 + 1
        );
    }
    let caps: serde_json::Value =
        serde_json::from_slice(&agent.get_ok("/v1/capabilities")).unwrap();
    assert_eq!(caps["mode"]["kind"], "attached", "{}", caps["mode"]);
}

#[test]
fn a_dotnet_socket_in_the_apps_own_tmp_is_reached_through_its_root() {
    common::privileged_test!();
    let root = dotnet_root();
    let dotnet = root.join("dotnet");
    // The app's files outside /tmp, which its own /tmp hides.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let built = dotnet_app();
    for file in ["App.dll", "App.runtimeconfig.json"] {
        std::fs::copy(built.with_file_name(file), dir.path().join(file)).unwrap();
    }
    let app = dir.path().join("App.dll");
    let child = with_private_tmp(dotnet.to_str().unwrap(), &[app.to_str().unwrap(), "serve"])
        .env("DOTNET_ROOT", &root)
        .env("DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let workload = Running { child };
    let pid = workload.pid();
    wait_until_it_maps(pid, "App.dll");
    let agent = attached_agent();
    // Its socket is in its own /tmp only.
    let here = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("dotnet-diagnostic-{pid}-"))
        });
    assert!(
        !here,
        "the premise: the agent's /tmp does not have the socket"
    );
    // The port answers: processes say so, and counters come back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&agent.get_ok("/v1/processes")).unwrap();
        let port = list
            .iter()
            .find(|p| p["pid"] == pid)
            .map(|p| p["dotnet"]["diagnostic_port"].clone());
        if port == Some(serde_json::Value::Bool(true)) {
            break;
        }
        assert!(Instant::now() < deadline, "no diagnostic port: {list:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The seed's method on JIT code, named by the runtime through that
    // socket.
    let lines = ndjson(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=FibonacciProvider::calculateFibonacciValue&args=arg1:int&ret=int&limit=5"
    )));
    assert_eq!(lines.len(), 6, "{lines:?}");
    for e in &lines[..5] {
        let n = e["args"][0].as_i64().unwrap();
        let fib = (0..n).fold((0i64, 1i64), |(a, b), _| (b, a + b)).0;
        assert_eq!(e["ret"].as_i64().unwrap(), fib, "{e}");
    }
    let snapshots = ndjson(&agent.get_ok(&format!(
        "/v1/dotnet/counters?pid={pid}&seconds=2&interval=1"
    )));
    assert!(
        snapshots
            .iter()
            .any(|s| s["counters"]["System.Runtime"]["cpu-usage"]["value"].is_number()),
        "{snapshots:?}"
    );
}
