//! The agent's router in-process, without root: served on a Unix socket in
//! a temporary directory, each endpoint called with bad input, and the
//! status code and hint of each answer checked. This tests the error
//! mapping (spec errors, invisible PIDs, resolver errors, a missing LTTng
//! side) where no capture can start.

#![cfg(test)]

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracecar_agent::api::{self, AgentState};

/// A PID no test machine has (above the kernel's pid_max limit of 2^22).
const NO_SUCH_PID: u32 = 4_194_305;

struct Server {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The router with no LTTng side (as `--no-lttng`).
    fn start() -> Self {
        Self::start_with(AgentState::default())
    }

    /// The router over `state`.
    fn start_with(state: AgentState) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = api::bind_socket(&path).unwrap();
                up_tx.send(()).unwrap();
                api::serve(listener, api::router(state), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        up_rx.recv().unwrap();
        Self {
            socket,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// GET `path`: the status and the body.
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let (status, _, body) = get(&self.socket, path);
        (status, body)
    }

    /// GET `path`, which must fail with `status`: the JSON error.
    fn error(&self, path: &str, status: u16) -> Value {
        let (got, body) = self.get(path);
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
        let error: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
        });
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {error}"
        );
        assert!(
            error["hint"].as_str().is_some_and(|h| !h.is_empty()),
            "{path}: no hint: {error}"
        );
        error
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP/1.1 request on a fresh connection: the status, the header
/// block (lower case) and the body.
fn get(socket: &Path, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut body = raw[split + 4..].to_vec();
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

fn hint(error: &Value) -> &str {
    error["hint"].as_str().unwrap_or_default()
}

/// What the plugin reads parses as the wire types it reads them with.
#[test]
fn answers_are_the_wire_types() {
    let server = Server::start();
    let (status, body) = server.get("/v1/capabilities");
    assert_eq!(status, 200);
    let report: tracecar_api::capabilities::Report = serde_json::from_slice(&body).unwrap();
    assert_eq!(report.lttng_rundir.path, "/var/run/lttng");
    assert!(!report.lttng_sessiond.check.ok, "no LTTng side: {report:?}");
    let (status, body) = server.get("/v1/processes");
    assert_eq!(status, 200);
    let list: Vec<tracecar_api::process::ProcessInfo> = serde_json::from_slice(&body).unwrap();
    // The agent hides itself; this test process serves it, so the list
    // cannot hold it, and every entry is a live PID.
    assert!(
        list.iter()
            .all(|p| p.pid != std::process::id() && p.pid > 0),
        "{list:?}"
    );
}

/// An agent attached to a running pod says so, and answers LTTng requests
/// with why it cannot serve them.
#[test]
fn an_attached_agent_says_its_mode_and_why_lttng_is_off() {
    let server = Server::start_with(AgentState::default().attached("app".to_owned()));
    let (status, body) = server.get("/v1/capabilities");
    assert_eq!(status, 200);
    let report: tracecar_api::capabilities::Report = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        report.mode,
        tracecar_api::capabilities::Mode::Attached {
            target: "app".to_owned()
        }
    );
    for check in [
        &report.lttng_sessiond.check,
        &report.lttng_rundir.check,
        &report.lttng_shm.check,
        &report.lttng_ust_apps,
    ] {
        assert!(
            !check.ok && check.detail.contains("or a pod restart"),
            "{check:?}"
        );
    }
    let (status, head, _) = get(&server.socket, "/v1/processes");
    assert_eq!(status, 200);
    assert!(head.contains("x-tracecar-mode: attached"), "{head}");
    for path in ["/v1/lttng/events", "/v1/lttng/record?seconds=1"] {
        let e = server.error(path, 409);
        assert!(hint(&e).contains("tracecar.dev/inject"), "{path}: {e}");
    }
    // The sidecar says it is one.
    let sidecar = Server::start();
    let (_, head, _) = get(&sidecar.socket, "/v1/processes");
    assert!(head.contains("x-tracecar-mode: sidecar"), "{head}");
}

#[test]
fn health_and_unknown_paths() {
    let server = Server::start();
    assert_eq!(server.get("/healthz"), (200, b"ok".to_vec()));
    let e = server.error("/v1/nope", 404);
    assert!(
        hint(&e).contains("/v1/profile") && hint(&e).contains("/v1/lttng/live"),
        "{e}"
    );
}

#[test]
fn profile_parameters_are_checked_before_anything_runs() {
    let server = Server::start();
    let e = server.error("/v1/profile?seconds=0", 400);
    assert_eq!(hint(&e), "seconds must be between 1 and 600");
    let e = server.error("/v1/profile?sconds=5", 400);
    assert!(hint(&e).starts_with("parameters are pid, seconds"), "{e}");
    let e = server.error("/v1/profile?seconds=5&seconds=9", 400);
    assert_eq!(hint(&e), "send seconds= once");
    let e = server.error("/v1/profile?format=png", 400);
    assert!(hint(&e).contains("speedscope"), "{e}");
    let e = server.error("/v1/profile?kernel=maybe", 400);
    assert_eq!(hint(&e), "use kernel=true or kernel=false");
    let e = server.error("/v1/profile?pid=x", 400);
    assert!(hint(&e).contains("/v1/processes"), "{e}");
    let e = server.error(&format!("/v1/profile?pid={NO_SUCH_PID}&seconds=1"), 404);
    assert!(hint(&e).contains("shareProcessNamespace"), "{e}");
    let e = server.error("/debug/pprof/profile?hz=0", 400);
    assert_eq!(hint(&e), "hz must be between 1 and 1000");
}

#[test]
fn trigger_takes_exactly_one_visible_pid() {
    let server = Server::start();
    let e = server.error("/v1/profile/trigger", 400);
    assert!(hint(&e).contains("pid=P"), "{e}");
    let e = server.error("/v1/profile/trigger?pid=1,2", 400);
    assert!(hint(&e).contains("single pid"), "{e}");
    let e = server.error("/v1/profile/trigger?pid=1&cpu_above=0", 400);
    assert!(hint(&e).contains("percentage"), "{e}");
    let e = server.error(&format!("/v1/profile/trigger?pid={NO_SUCH_PID}"), 404);
    assert!(hint(&e).contains("shareProcessNamespace"), "{e}");
}

#[test]
fn symbols_errors_name_what_to_send() {
    let server = Server::start();
    let me = std::process::id();
    let e = server.error("/v1/symbols", 400);
    assert!(
        e["error"].as_str().unwrap().contains("pid=P is required"),
        "{e}"
    );
    let e = server.error(&format!("/v1/symbols?pid={me}&match=("), 400);
    assert!(hint(&e).contains("match=^calc$"), "{e}");
    let e = server.error(&format!("/v1/symbols?pid={me}&limit=0"), 400);
    assert_eq!(hint(&e), "limit must be between 1 and 100000");
    let e = server.error(&format!("/v1/symbols?pid={NO_SUCH_PID}"), 404);
    assert!(hint(&e).contains("shareProcessNamespace"), "{e}");
    let e = server.error(&format!("/v1/symbols?pid={me}&module=no-such.so"), 404);
    assert!(hint(&e).starts_with("modules it maps: "), "{e}");
}

#[test]
fn uprobe_specs_and_targets_are_resolved_before_attaching() {
    let server = Server::start();
    let me = std::process::id();
    let e = server.error(&format!("/v1/uprobe?pid={me}"), 400);
    assert!(!hint(&e).is_empty(), "{e}");
    let e = server.error("/v1/uprobe?pid=1,2&symbol=calc", 400);
    assert!(hint(&e).contains("single pid"), "{e}");
    let e = server.error(&format!("/v1/uprobe?pid={me}&symbol=calc&force=maybe"), 400);
    assert_eq!(hint(&e), "use force=true or force=false");
    let e = server.error(&format!("/v1/uprobe?pid={me}&symbol=calc&args=float"), 400);
    assert!(!hint(&e).is_empty(), "{e}");
    let e = server.error(&format!("/v1/uprobe?pid={NO_SUCH_PID}&symbol=calc"), 404);
    assert!(hint(&e).contains("shareProcessNamespace"), "{e}");
    // This test binary is the target: its functions are resolved from its
    // own ELF file, unprivileged.
    let e = server.error(
        &format!("/v1/uprobe?pid={me}&symbol=no_such_function_anywhere"),
        404,
    );
    assert!(
        hint(&e).starts_with("closest names: ") && hint(&e).contains("/v1/symbols"),
        "{e}"
    );
    let e = server.error(
        &format!("/v1/uprobe?pid={me}&symbol=main&module=no-such.so"),
        404,
    );
    assert!(hint(&e).starts_with("modules it maps: "), "{e}");
    let e = server.error("/v1/uprobe?symbol=main", 400);
    assert!(e["error"].as_str().unwrap().contains("binary=PATH"), "{e}");
    let e = server.error("/v1/uprobe?offset=0x10&binary=/no/such/file", 404);
    assert!(hint(&e).contains("as the process sees them"), "{e}");
}

#[test]
fn lttng_checks_input_then_says_it_is_off() {
    let server = Server::start();
    let e = server.error("/v1/lttng/record?format=png", 400);
    assert!(hint(&e).contains("ctf"), "{e}");
    let e = server.error("/v1/lttng/record?loglevel_only=yes", 400);
    assert_eq!(hint(&e), "use loglevel_only=true or loglevel_only=false");
    let e = server.error("/v1/lttng/live?events=a%20b", 400);
    assert!(hint(&e).contains("provider:event"), "{e}");
    let e = server.error(&format!("/v1/lttng/events?pid={NO_SUCH_PID}"), 404);
    assert!(hint(&e).contains("shareProcessNamespace"), "{e}");
    // Well-formed requests reach the LTTng side, which this agent lacks.
    for path in [
        "/v1/lttng/events",
        "/v1/lttng/record?seconds=1",
        "/v1/lttng/live?seconds=1",
    ] {
        let e = server.error(path, 503);
        assert_eq!(hint(&e), "start the agent without --no-lttng", "{path}");
    }
}

#[test]
fn dotnet_and_dump_requests_are_checked_before_the_runtime_is_asked() {
    let server = Server::start();
    let e = server.error("/v1/dotnet/trace?providers=gc", 400);
    assert!(hint(&e).contains("pid=P"), "{e}");
    let e = server.error("/v1/dotnet/trace?pid=1", 400);
    assert!(hint(&e).contains("cpu-sampling"), "{e}");
    let e = server.error("/v1/dotnet/trace?pid=1&providers=P:xyz", 400);
    assert!(hint(&e).contains("Name[:Keywords"), "{e}");
    let e = server.error("/v1/dotnet/trace?pid=1&providers=gc&format=etl", 400);
    assert!(hint(&e).contains("nettrace"), "{e}");
    let e = server.error("/v1/dotnet/counters?pid=1&interval=0", 400);
    assert!(hint(&e).contains("interval"), "{e}");
    let e = server.error("/v1/dotnet/counters?pid=1&format=xml", 400);
    assert!(hint(&e).contains("prometheus"), "{e}");
    let e = server.error("/v1/dump?pid=1&type=huge", 400);
    assert!(hint(&e).contains("heap"), "{e}");
    let e = server.error(&format!("/v1/dump?pid={NO_SUCH_PID}"), 404);
    assert!(hint(&e).contains("shareProcessNamespace"), "{e}");
    let e = server.error(
        &format!("/v1/dotnet/trace?pid={NO_SUCH_PID}&providers=gc"),
        404,
    );
    assert!(hint(&e).contains("shareProcessNamespace"), "{e}");
    // This test process is not .NET.
    let me = std::process::id();
    let e = server.error(&format!("/v1/dotnet/counters?pid={me}"), 400);
    assert!(hint(&e).contains("/v1/processes"), "{e}");
    // The agent (this process) does not dump itself.
    let e = server.error(&format!("/v1/dump?pid={me}"), 400);
    assert!(hint(&e).contains("/v1/processes"), "{e}");
}

#[test]
fn endpoints_outside_the_agents_features_are_forbidden_with_the_annotation_to_add() {
    let features = tracecar_api::security::Features::parse("profile").unwrap();
    let server = Server::start_with(AgentState::default().with_features(features));
    for path in [
        "/v1/uprobe?pid=1&symbol=main",
        "/v1/symbols?pid=1",
        "/v1/lttng/events",
        "/v1/dotnet/counters?pid=1",
        "/v1/dump?pid=1",
    ] {
        let error = server.error(path, 403);
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("started for profile only"),
            "{path}: {error}"
        );
        assert!(
            error["hint"]
                .as_str()
                .unwrap()
                .contains("tracecar.dev/features: \"profile,"),
            "{path}: {error}"
        );
    }
    // Its own features, and what every agent serves, pass the check.
    let error = server.error(&format!("/v1/profile?pid={NO_SUCH_PID}"), 404);
    assert!(!error["error"].as_str().unwrap().contains("feature"));
    let (status, body) = server.get("/v1/capabilities");
    assert_eq!(status, 200);
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["features"], serde_json::json!(["profile"]));
    assert_eq!(server.get("/healthz").0, 200);
    // Path prefixes are matched on whole segments.
    assert_eq!(api::feature_for("/v1/uprobes"), None);
    assert_eq!(
        api::feature_for("/v1/lttng/record"),
        Some(tracecar_api::security::Feature::Lttng)
    );
}

#[test]
fn the_health_subcommand_is_the_probe() {
    let server = Server::start();
    let health = |socket: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tracecar-agent"))
            .args(["health", "--socket"])
            .arg(socket)
            .output()
            .unwrap()
    };
    let ok = health(&server.socket);
    assert!(ok.status.success(), "{ok:?}");
    let missing = health(&server.socket.with_file_name("none.sock"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no healthy agent on"),
        "{missing:?}"
    );
    // Something that is not the agent on the socket.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.sock");
    let listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
    let answer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
    });
    let refused = health(&other);
    answer.join().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("503"));
}
