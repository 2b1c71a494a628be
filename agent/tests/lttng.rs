//! LTTng recording through the real agent, with Debian's lttng-tools,
//! liblttng-ust and babeltrace2, as root.

#![cfg(test)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Agent, Running, Workload, begin, compile_tp_app, dir_is_empty, signal, spawn,
    tracecar_sessions, wait_until,
};
use serde_json::Value;

/// `lttng list` (every session) as the daemon reports it.
fn sessions_xml() -> String {
    let out = Command::new("lttng")
        .args(["--no-sessiond", "--mi", "xml", "list"])
        .stderr(Stdio::null())
        .output()
        .expect("lttng runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `pid` offers `event` through the agent.
fn wait_registered(agent: &Agent, pid: u32, event: &str) -> Value {
    let path = format!("/v1/lttng/events?pid={pid}");
    let mut last = Value::Null;
    wait_until(Duration::from_secs(15), "the app to register", || {
        last = serde_json::from_slice(&agent.get_ok(&path)).unwrap();
        last["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event"] == event))
    });
    last
}

/// Waits until a tracecar session is recording.
fn wait_recording() {
    wait_until(Duration::from_secs(10), "a recording session", || {
        let xml = sessions_xml();
        xml.contains("<name>tracecar-") && xml.contains("<enabled>true</enabled>")
    });
}

/// Starts `path` in the background, waits until its session records, then
/// sends SIGUSR1 to `emitters`; returns the response.
fn record_while_emitting(agent: &Agent, path: &str, emitters: &[u32]) -> (u16, Vec<u8>) {
    std::thread::scope(|scope| {
        let request = scope.spawn(|| agent.get(path));
        wait_recording();
        for pid in emitters {
            signal(*pid, "USR1");
        }
        request.join().unwrap()
    })
}

fn ndjson(body: &[u8]) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> = String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line")["summary"].clone();
    assert!(summary.is_object(), "the last line is the summary");
    (lines, summary)
}

const COUNT: usize = 2000;

/// A privileged LTTng test: the agent with its session daemon answering,
/// and the tracepoint app compiled. Fields drop in order: the serializing
/// guard last.
struct Lab {
    agent: Agent,
    app: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    fn start(test: &str) -> Option<Self> {
        let guard = begin(test)?;
        let dir = tempfile::tempdir().unwrap();
        let app = compile_tp_app(dir.path());
        let agent = Agent::start();
        agent.wait_sessiond();
        Some(Self {
            agent,
            app,
            _dir: dir,
            _guard: guard,
        })
    }

    /// The app, registered, waiting for SIGUSR1 (`args`: COUNT [RATE]).
    fn emitter(&self, args: &[&str]) -> Running {
        let emitter = spawn(&self.app, args);
        wait_registered(&self.agent, emitter.pid(), "tracecar_test:tick");
        emitter
    }
}

#[test]
fn json_has_exactly_the_emitted_events_in_order_with_their_fields() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;
    assert_eq!(agent.sessiond()["owner"], "tracecar");

    // Nothing registered yet: the answer says why that usually happens.
    let empty: Value = serde_json::from_slice(&agent.get_ok("/v1/lttng/events")).unwrap();
    if empty["registered_pids"].as_array().unwrap().is_empty() {
        let hint = empty["hint"].as_str().unwrap();
        assert!(
            hint.contains("/var/run/lttng") && hint.contains("DOTNET_LTTng=1"),
            "{hint}"
        );
    }

    let emitter = spawn(&lab.app, &[&COUNT.to_string()]);
    let listed = wait_registered(agent, emitter.pid(), "tracecar_test:tick");
    let tick = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "tracecar_test:tick")
        .unwrap();
    assert_eq!(tick["pid"], emitter.pid());
    let mut fields: Vec<&str> = tick["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["msg", "seq", "value"]);

    let (code, body) = record_while_emitting(
        agent,
        &format!(
            "/v1/lttng/record?events=tracecar_test:*&pid={}&seconds=3&format=json",
            emitter.pid()
        ),
        &[emitter.pid()],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (events, summary) = ndjson(&body);
    assert_eq!(events.len(), COUNT, "summary: {summary}");
    assert_eq!(summary["events"], COUNT);
    assert_eq!(summary["discarded_events"], 0);
    let mut last_ts = 0;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["event"], "tracecar_test:tick");
        assert_eq!(event["pid"], emitter.pid());
        assert_eq!(event["tid"], emitter.pid());
        assert_eq!(event["procname"], "tp_app");
        assert!(event["cpu"].is_u64());
        let fields = &event["fields"];
        assert_eq!(fields["seq"], i, "in order");
        assert_eq!(fields["value"], 3 * i as i64 - 7);
        assert_eq!(fields["msg"], format!("event-{i}"));
        let ts = event["ts_ns"].as_u64().unwrap();
        assert!(ts >= last_ts, "timestamps grow");
        last_ts = ts;
    }
    // The trace was removed once sent, and the session is gone.
    assert!(dir_is_empty(&agent.traces));
    assert_eq!(tracecar_sessions(), 0);
}

#[test]
fn text_and_ctf_open_with_babeltrace2() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;

    let text_app = lab.emitter(&["100"]);
    let (code, text) = record_while_emitting(
        agent,
        &format!(
            "/v1/lttng/record?pid={}&seconds=2&format=text",
            text_app.pid()
        ),
        &[text_app.pid()],
    );
    assert_eq!(code, 200);
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.matches("tracecar_test:tick:").count(), 100, "{text}");
    assert!(text.contains("msg = \"event-99\""));
    let last = text.lines().last().unwrap();
    let summary: Value = serde_json::from_str(last.strip_prefix("# tracecar: ").unwrap()).unwrap();
    assert_eq!(summary["discarded_events"], 0);

    let ctf_app = lab.emitter(&["50"]);
    let (code, archive) = record_while_emitting(
        agent,
        &format!(
            "/v1/lttng/record?events=tracecar_test:tick&pid={}&seconds=2&format=ctf",
            ctf_app.pid()
        ),
        &[ctf_app.pid()],
    );
    assert_eq!(code, 200);
    let out = tempfile::tempdir().unwrap();
    let tarball = out.path().join("trace.tar.gz");
    std::fs::write(&tarball, &archive).unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "the archive extracts");
    let session = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("tracecar-"))
        .expect("a session directory")
        .path();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(session.join("tracecar-summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["lost_packets"], 0);
    let printed = Command::new("babeltrace2").arg(&session).output().unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert_eq!(printed.matches("tracecar_test:tick:").count(), 50);
    assert!(printed.contains("vpid = ") && printed.contains("procname = \"tp_app\""));
    assert!(dir_is_empty(&agent.traces));
}

#[test]
fn the_libc_wrapper_gives_malloc_events_with_sizes() {
    common::privileged_test!();
    let Workload {
        dir: _dir,
        bin: program,
    } = Workload::c("mallocs.c", &[]);
    let agent = Agent::start();
    agent.wait_sessiond();
    let child = Command::new(&program)
        .env("LD_PRELOAD", "liblttng-ust-libc-wrapper.so.1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let wrapped = Running { child };
    wait_registered(&agent, wrapped.pid(), "lttng_ust_libc:malloc");
    let (code, body) = record_while_emitting(
        &agent,
        &format!(
            "/v1/lttng/record?events=lttng_ust_libc:malloc,lttng_ust_libc:free&pid={}&seconds=2",
            wrapped.pid()
        ),
        &[wrapped.pid()],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (events, _) = ndjson(&body);
    let sizes: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "lttng_ust_libc:malloc")
        .filter_map(|e| e["fields"]["size"].as_u64())
        .collect();
    for size in [12345, 777, 31337] {
        assert!(sizes.contains(&size), "malloc({size}) in {sizes:?}");
    }
    let freed = events
        .iter()
        .filter(|e| e["event"] == "lttng_ust_libc:free")
        .count();
    assert!(freed >= 3);
    // Pointers are kept as the tracer's hexadecimal strings.
    let malloc = events
        .iter()
        .find(|e| e["fields"]["size"] == 12345)
        .unwrap();
    assert!(malloc["fields"]["ptr"].as_str().unwrap().starts_with("0x"));
}

#[test]
fn pid_excludes_a_second_application() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;
    let traced = lab.emitter(&["300"]);
    let other = lab.emitter(&["300"]);

    let (code, body) = record_while_emitting(
        agent,
        &format!(
            "/v1/lttng/record?events=tracecar_test:*&pid={}&seconds=2",
            traced.pid()
        ),
        &[traced.pid(), other.pid()],
    );
    assert_eq!(code, 200);
    let (events, _) = ndjson(&body);
    assert_eq!(events.len(), 300);
    assert!(events.iter().all(|e| e["pid"] == traced.pid()));

    // Without pid=, both are recorded: the filter above did the excluding.
    let again_traced = lab.emitter(&["300"]);
    let again_other = lab.emitter(&["300"]);
    let (code, body) = record_while_emitting(
        agent,
        "/v1/lttng/record?events=tracecar_test:*&seconds=2",
        &[again_traced.pid(), again_other.pid()],
    );
    assert_eq!(code, 200);
    let (events, _) = ndjson(&body);
    for pid in [again_traced.pid(), again_other.pid()] {
        assert_eq!(events.iter().filter(|e| e["pid"] == pid).count(), 300);
    }
}

#[test]
fn filters_and_log_levels_select_events() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;
    let emitter = lab.emitter(&["100"]);
    // `seq >= 90 && msg == "event-9*"`, URL-encoded.
    let (code, body) = record_while_emitting(
        agent,
        &format!(
            "/v1/lttng/record?events=tracecar_test:tick&pid={}&seconds=2&filter=seq%20%3E%3D%2090%20%26%26%20msg%20%3D%3D%20%22event-9*%22",
            emitter.pid()
        ),
        &[emitter.pid()],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (events, _) = ndjson(&body);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["fields"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (90..100).collect::<Vec<_>>());

    // tick's level is TRACE_DEBUG_LINE (the default): loglevel=INFO drops it.
    let quiet = lab.emitter(&["100"]);
    let (code, body) = record_while_emitting(
        agent,
        &format!(
            "/v1/lttng/record?events=tracecar_test:tick&pid={}&seconds=2&loglevel=INFO",
            quiet.pid()
        ),
        &[quiet.pid()],
    );
    assert_eq!(code, 200);
    let (events, summary) = ndjson(&body);
    assert!(events.is_empty());
    assert_eq!(summary["events"], 0);
}

#[test]
fn a_disconnect_leaves_no_session_and_no_trace_files() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;
    let emitter = lab.emitter(&["100000", "20000"]);
    let client = agent.get_in_background(&format!(
        "/v1/lttng/record?pid={}&seconds=60",
        emitter.pid()
    ));
    wait_recording();
    signal(emitter.pid(), "USR1");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!dir_is_empty(&agent.traces), "the session writes a trace");
    drop(client);
    wait_until(
        Duration::from_secs(10),
        "the session to be destroyed",
        || tracecar_sessions() == 0,
    );
    wait_until(Duration::from_secs(5), "the trace to be removed", || {
        dir_is_empty(&agent.traces)
    });
    // The capture slot is free again: a new recording works.
    let (code, _) = agent.get("/v1/lttng/record?seconds=1");
    assert_eq!(code, 200);
}

#[test]
fn bad_input_gets_4xx_with_lttngs_message() {
    common::privileged_test!();
    let agent = Agent::start();
    agent.wait_sessiond();
    let error = |path: &str, expected: u16| -> Value {
        let (code, body) = agent.get(path);
        assert_eq!(code, expected, "{path}: {}", String::from_utf8_lossy(&body));
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            error["hint"].as_str().is_some_and(|h| !h.is_empty()),
            "{error}"
        );
        error
    };
    error("/v1/lttng/record?events=bad%20event", 400);
    error("/v1/lttng/record?events=a:b,,c:d", 400);
    error("/v1/lttng/record?format=xml", 400);
    error("/v1/lttng/record?seconds=3601", 400);
    error("/v1/lttng/record?loglevel=LOUD", 400);
    error("/v1/lttng/record?pid=999999999", 404);
    error("/v1/lttng/events?pid=abc", 400);
    // LTTng parses the filter: its own message comes back.
    let refused = error("/v1/lttng/record?seconds=1&filter=seq%20%3E%3C%203", 400);
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("syntax error") || message.contains("filter"),
        "{message}"
    );
    assert_eq!(tracecar_sessions(), 0, "a refused session is destroyed");
    assert!(dir_is_empty(&agent.traces));
}

#[test]
fn a_killed_session_daemon_is_restarted_and_recording_works_again() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;
    let first = agent.sessiond();
    let pid = first["pid"].as_u64().expect("the agent's own daemon");
    signal(u32::try_from(pid).unwrap(), "KILL");
    wait_until(Duration::from_secs(20), "a new daemon", || {
        let now = agent.sessiond();
        now["running"] == true && now["pid"].as_u64().is_some_and(|p| p != pid)
    });
    let status = agent.sessiond();
    assert_eq!(status["starts"], 2);
    assert!(status["last_error"].as_str().unwrap().contains("exited"));

    let emitter = lab.emitter(&["10"]);
    let (code, body) = record_while_emitting(
        agent,
        &format!(
            "/v1/lttng/record?events=tracecar_test:*&pid={}&seconds=2",
            emitter.pid()
        ),
        &[emitter.pid()],
    );
    assert_eq!(code, 200);
    let (events, _) = ndjson(&body);
    assert_eq!(events.len(), 10);
    // The killed daemon's helpers were killed with it: one daemon is left.
    let daemons = Command::new("pgrep")
        .args(["-c", "-x", "lttng-sessiond"])
        .output()
        .unwrap();
    let daemons: u32 = String::from_utf8_lossy(&daemons.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        daemons <= 2,
        "one daemon and its run-as helper, found {daemons}"
    );
}

#[test]
fn leftovers_of_a_killed_agent_are_removed_at_start_up_with_an_external_daemon() {
    common::privileged_test!();
    // A daemon that is not the agent's: it serves /var/run/lttng already.
    let daemon = ExternalDaemon::start();
    wait_until(Duration::from_secs(10), "the external daemon", || {
        Command::new("lttng")
            .args(["--no-sessiond", "list"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let traces = tempfile::tempdir().unwrap();
    {
        // An agent killed mid-recording leaves a session and its trace.
        let agent = Agent::start_with_traces(traces.path());
        agent.wait_sessiond();
        assert_eq!(agent.sessiond()["owner"], "external");
        let _client = agent.get_in_background("/v1/lttng/record?seconds=60");
        wait_recording();
        let mut agent = agent;
        agent.process.child.kill().unwrap();
        agent.process.child.wait().unwrap();
        assert_eq!(tracecar_sessions(), 1, "the killed agent's session is left");
        assert!(!dir_is_empty(traces.path()));
    }
    let agent = Agent::start_with_traces(traces.path());
    agent.wait_sessiond();
    wait_until(Duration::from_secs(10), "start-up cleanup", || {
        tracecar_sessions() == 0 && dir_is_empty(traces.path())
    });
    drop(agent);
    drop(daemon);
}

/// `lttng-sessiond` started by hand, stopped with SIGTERM (so that it
/// stops its helpers) when dropped.
struct ExternalDaemon(std::process::Child);

impl ExternalDaemon {
    fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        // A daemon the previous test's agent ran may still be exiting.
        wait_until(Duration::from_secs(10), "no daemon", || {
            !Command::new("pgrep")
                .args(["-x", "lttng-sessiond"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        Self(
            Command::new("lttng-sessiond")
                .arg("--no-kernel")
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for ExternalDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn live_streams_events_while_they_happen_and_cleans_up_on_disconnect() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let emitter = lab.emitter(&["50"]);
    let mut client = Command::new("curl")
        .args(["-sN", "--unix-socket"])
        .arg(&lab.agent.socket)
        .arg(format!(
            "http://localhost/v1/lttng/live?events=tracecar_test:*&pid={}&seconds=60",
            emitter.pid()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    let client = Running { child: client };
    wait_recording();
    let signalled = Instant::now();
    signal(emitter.pid(), "USR1");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut seqs = Vec::new();
    while seqs.len() < 50 {
        let line = lines.next().expect("a line").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["event"], "tracecar_test:tick", "{line}");
        seqs.push(event["fields"]["seq"].as_u64().unwrap());
    }
    // All 50, in order, long before the 60 s session ends.
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "events took {:?}",
        signalled.elapsed()
    );
    // Nothing listens on the network for it (the pod's network namespace
    // is the app's): no relay daemon. (lttng-sessiond's own loopback port
    // is where the app's Java and Python LTTng agents register: app-facing
    // by design, like the UST socket in /var/run/lttng.)
    let listening = Command::new("ss").args(["-Hltnp"]).output().unwrap();
    let listening = String::from_utf8_lossy(&listening.stdout);
    assert!(!listening.contains("lttng-relayd"), "{listening}");
    // The client leaves mid-session: the session and its trace go.
    assert_eq!(tracecar_sessions(), 1);
    assert!(
        !dir_is_empty(&lab.agent.traces),
        "the session records locally"
    );
    drop(client);
    wait_until(
        Duration::from_secs(10),
        "the live session to be destroyed",
        || tracecar_sessions() == 0,
    );
    wait_until(
        Duration::from_secs(5),
        "the live trace to be removed",
        || dir_is_empty(&lab.agent.traces),
    );
}

/// The agent in a mount namespace of its own where /var/run/lttng belongs
/// to uid 1000 with mode 0755 (what podman gives a volume that the app
/// container mounted first) and /dev/shm holds a wait shared memory that
/// uid 1000 created, without CAP_DAC_OVERRIDE and CAP_CHOWN:
/// /v1/capabilities names the owner, the mode and the fix of each, and
/// last_error carries lttng-sessiond's own message, which is also logged.
#[test]
fn an_unusable_run_directory_is_reported_with_owner_mode_fix_and_the_daemons_words() {
    common::privileged_test!();
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let rundir = dir.path().join("rundir");
    std::fs::create_dir(&rundir).unwrap();
    std::os::unix::fs::chown(&rundir, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&rundir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // /var/run is /run here; the bind mount needs a mount point.
    std::fs::create_dir_all("/run/lttng").unwrap();
    let script = "mount --bind \"$0\" /run/lttng && mount -t tmpfs -o mode=1777 tmpfs /dev/shm \
        && touch /dev/shm/lttng-ust-wait-8 && chown 1000 /dev/shm/lttng-ust-wait-8 \
        && exec setpriv --bounding-set=-dac_override,-chown \"$@\"";
    let rundir_arg = rundir.display().to_string();
    let log = dir.path().join("agent.log");
    let agent = Agent::start_under(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            &rundir_arg,
        ],
        &log,
    );
    let caps = || -> Value { serde_json::from_slice(&agent.get_ok("/v1/capabilities")).unwrap() };
    wait_until(
        Duration::from_secs(15),
        "the daemon's first failure",
        || {
            caps()["lttng_sessiond"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("exited at start"))
        },
    );
    let caps = caps();
    let run = &caps["lttng_rundir"];
    assert_eq!(run["ok"], false, "{run}");
    assert_eq!(run["path"], "/var/run/lttng");
    assert_eq!(
        (run["uid"].as_u64(), run["gid"].as_u64()),
        (Some(1000), Some(1000))
    );
    assert_eq!(run["mode"], "0755");
    assert_eq!(run["fix"], "empty_dir");
    assert_eq!(run["missing_capability"], "DAC_OVERRIDE");
    let shm = &caps["lttng_shm"];
    assert_eq!(shm["ok"], false, "{shm}");
    assert_eq!(shm["fix"], "capability");
    assert_eq!(shm["missing_capability"], "CHOWN");
    assert!(
        shm["detail"]
            .as_str()
            .unwrap()
            .contains("/dev/shm/lttng-ust-wait-8 belongs to uid 1000"),
        "{shm}"
    );
    let sessiond = &caps["lttng_sessiond"];
    let error = sessiond["last_error"].as_str().unwrap();
    assert!(
        error.contains("lttng-sessiond.lck: Permission denied"),
        "not the daemon's own words: {error}"
    );
    assert!(
        error.contains("/var/run/lttng: owner uid 1000, gid 1000, mode 0755")
            && !error.contains("may hold"),
        "{error}"
    );
    assert!(
        sessiond["hint"]
            .as_str()
            .unwrap()
            .starts_with("/var/run/lttng: "),
        "{sessiond}"
    );
    drop(agent);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("lttng-sessiond.lck: Permission denied"),
        "the daemon's stderr is not in the agent's log:\n{logged}"
    );
}

/// An app that planted a listening socket with the daemon's name in the
/// shared /var/run/lttng before the daemon started: the daemon replaces
/// it, the apps register with the real daemon, and nothing connects to
/// the fake one.
#[test]
fn a_fake_lttng_ust_sock_planted_before_the_daemon_is_replaced() {
    common::privileged_test!();
    let planted = std::path::Path::new("/var/run/lttng/lttng-ust-sock-8");
    std::fs::create_dir_all("/var/run/lttng").unwrap();
    let _ = std::fs::remove_file(planted);
    let fake = std::os::unix::net::UnixListener::bind(planted).unwrap();
    fake.set_nonblocking(true).unwrap();
    let fake_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(planted).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let app = compile_tp_app(dir.path());
    let agent = Agent::start();
    agent.wait_sessiond();
    let real_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(planted).unwrap());
    assert_ne!(
        real_inode, fake_inode,
        "the daemon's own socket replaced it"
    );

    let emitter = spawn(&app, &["100"]);
    wait_registered(&agent, emitter.pid(), "tracecar_test:tick");
    let (code, body) = record_while_emitting(
        &agent,
        &format!(
            "/v1/lttng/record?events=tracecar_test:*&pid={}&seconds=2&format=json",
            emitter.pid()
        ),
        &[emitter.pid()],
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (events, summary) = ndjson(&body);
    assert_eq!(events.len(), 100, "{summary}");
    assert!(
        matches!(fake.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected to the planted socket"
    );
}

/// A root app replaces the session daemon's client socket in the run
/// directory it shares with a socket that never accepts: every `lttng`
/// call would block in connect(2). Each request answers within the CLI's
/// deadline with an error naming the socket, and nothing stays running.
#[test]
fn a_client_socket_that_never_answers_does_not_hang_lttng_requests() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let socket = "/var/run/lttng/client-lttng-sessiond";
    let script = "import os, socket, sys, time\n\
p = sys.argv[1]\n\
os.path.exists(p) and os.unlink(p)\n\
s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(0)\n\
c = socket.socket(socket.AF_UNIX); c.setblocking(False); c.connect_ex(p)\n\
print('ready', flush=True)\n\
time.sleep(600)\n";
    let fake = common::spawn_ready("python3", &["-c", script, socket]);
    struct Remove(&'static str);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(socket);
    for path in [
        "/v1/lttng/events",
        "/v1/lttng/record?events=tracecar_test:*&seconds=1",
    ] {
        let started = Instant::now();
        let (code, body) = lab.agent.get_within(path, Duration::from_secs(90));
        let took = started.elapsed();
        let body = String::from_utf8_lossy(&body);
        assert!(
            took < Duration::from_secs(45),
            "{path} took {took:?}: {code} {body}"
        );
        // The deadline's error, or the supervisor's verdict that no daemon
        // answers: either way an error that says so, not a hang.
        assert!(
            (code >= 500 && (body.contains(socket) || body.contains("no LTTng session daemon"))),
            "{path}: {code} {body}"
        );
    }
    // No lttng client is left blocked.
    let stuck = Command::new("pgrep")
        .args(["-x", "lttng"])
        .output()
        .unwrap();
    assert!(
        stuck.stdout.is_empty(),
        "lttng still running: {:?}",
        String::from_utf8_lossy(&stuck.stdout)
    );
    drop(fake);
}

#[test]
fn a_rules_lttng_action_records_the_process_it_fired_for() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;
    // 4000 events at 1000 a second each, paced by usleep(200), which the
    // rule's trigger watches in one of them.
    let watched = lab.emitter(&["4000", "1000"]);
    let other = lab.emitter(&["4000", "1000"]);
    let pid = watched.pid();
    let rule = format!(
        "{{name: paced, trigger: {{latency: {{symbol: usleep, module: libc.so.6, above_ms: 0.1}}}}, filter: {{pid: {pid}}}, actions: [{{lttng_record: {{events: 'tracecar_test:*', seconds: 2}}}}], limits: {{max_actions: 1}}}}"
    );
    let (code, body) = agent.send("POST", "/v1/rules", rule.as_bytes());
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let tally = || -> Value {
        let rules: Vec<Value> = serde_json::from_slice(&agent.get_ok("/v1/rules")).unwrap();
        rules[0]["tally"].clone()
    };
    // Waiting in sigwait: no call to usleep yet, nothing fired.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(tally()["fired"], 0, "{}", tally());
    signal(pid, "USR1");
    signal(other.pid(), "USR1");
    let mut artifact = Value::Null;
    wait_until(Duration::from_secs(30), "the rule's recording", || {
        let listed: Vec<Value> = serde_json::from_slice(&agent.get_ok("/v1/artifacts")).unwrap();
        artifact = listed.into_iter().next().unwrap_or(Value::Null);
        !artifact.is_null()
    });
    assert_eq!(artifact["file_name"], "lttng.ndjson", "{artifact}");
    assert_eq!(artifact["pid"], pid, "{artifact}");
    let body = agent.get_ok(&format!(
        "/v1/artifacts/{}",
        artifact["id"].as_str().unwrap()
    ));
    let (events, summary) = ndjson(&body);
    assert!(!events.is_empty(), "{summary}");
    // The watched process's events only, consecutive.
    let first = events[0]["fields"]["seq"].as_u64().unwrap();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["pid"], pid, "{event}");
        assert_eq!(event["fields"]["seq"], first + i as u64, "{event}");
    }
    assert_eq!(
        agent.send("DELETE", "/v1/rules/paced", b"").0,
        204,
        "{}",
        tally()
    );
    assert!(dir_is_empty(&agent.traces));
    assert_eq!(tracecar_sessions(), 0);
}

#[test]
fn a_rules_lttng_snapshot_holds_the_events_from_before_it_fired() {
    let Some(lab) = Lab::start(common::test_name!()) else {
        return;
    };
    let agent = &lab.agent;
    // Events 0 to 63 go out at once, then the app paces the rest with
    // usleep(200), whose first call fires the rule.
    let emitter = lab.emitter(&["4000", "1000"]);
    let pid = emitter.pid();
    let rule = format!(
        "{{name: before, trigger: {{latency: {{symbol: usleep, module: libc.so.6, above_ms: 0.1}}}}, filter: {{pid: {pid}}}, actions: [{{lttng_snapshot: {{events: 'tracecar_test:*'}}}}], limits: {{max_actions: 1}}}}"
    );
    let (code, body) = agent.send("POST", "/v1/rules", rule.as_bytes());
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    // The flight recorder records before anything fires.
    wait_recording();
    signal(pid, "USR1");
    let mut artifact = Value::Null;
    wait_until(Duration::from_secs(30), "the rule's snapshot", || {
        let listed: Vec<Value> = serde_json::from_slice(&agent.get_ok("/v1/artifacts")).unwrap();
        artifact = listed.into_iter().next().unwrap_or(Value::Null);
        !artifact.is_null()
    });
    assert_eq!(artifact["file_name"], "lttng-snapshot.ndjson", "{artifact}");
    let body = agent.get_ok(&format!(
        "/v1/artifacts/{}",
        artifact["id"].as_str().unwrap()
    ));
    let (events, summary) = ndjson(&body);
    // From the first event on: what the app emitted before the firing.
    assert!(!events.is_empty(), "{summary}");
    assert!(events.len() < 4000, "{summary}");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["pid"], pid, "{event}");
        assert_eq!(event["fields"]["seq"], i, "{event}");
    }
    // The rule's session and its directory go with it.
    assert_eq!(agent.send("DELETE", "/v1/rules/before", b"").0, 204);
    assert_eq!(tracecar_sessions(), 0);
    assert!(dir_is_empty(&agent.traces));
}
