//! Collection rules, for real: triggers that fire at a known moment
//! (a CPU burst, a memory ramp toward a cgroup limit, an OOM kill), their
//! artifacts listed and downloaded, and the limits under a trigger that
//! stays true.
#![cfg(test)]

mod common;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, Workload, privileged_test, signal, wait_until};
use serde_json::Value;

/// `rules_app MODE ARGS`, after it printed "ready", with its stdout
/// lines to read.
struct App {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl App {
    fn start(bin: &std::path::Path, args: &[&str]) -> Self {
        Self::start_in(bin, args, None)
    }

    /// Started as the webhook's container `container` would be (its name
    /// in the environment), or with an empty environment.
    fn start_in(bin: &std::path::Path, args: &[&str], container: Option<&str>) -> Self {
        let mut command = Command::new(bin);
        match container {
            Some(name) => command.env(tracecar_api::rules::CONTAINER_ENV, name),
            None => command.env_clear(),
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the workload starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut app = Self {
            child,
            lines: std::io::BufReader::new(stdout).lines(),
        };
        assert_eq!(app.line(), "ready");
        app
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        self.lines
            .next()
            .expect("a line from the workload")
            .expect("readable")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rules(agent: &Agent) -> Vec<Value> {
    serde_json::from_slice::<Value>(&agent.get_ok("/v1/rules"))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn rule(agent: &Agent, name: &str) -> Value {
    rules(agent)
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("rule {name} is not in force"))
}

fn artifacts(agent: &Agent, rule: &str) -> Vec<Value> {
    serde_json::from_slice::<Value>(&agent.get_ok("/v1/artifacts"))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == rule)
        .cloned()
        .collect()
}

fn add(agent: &Agent, rule: &str) {
    let (code, body) = agent.send("POST", "/v1/rules", rule.as_bytes());
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
}

/// `fired` is `ran` plus every firing held back.
fn assert_counted(tally: &Value) {
    let held: u64 = tally["held_back"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        tally["fired"].as_u64().unwrap(),
        tally["ran"].as_u64().unwrap() + held,
        "{tally}"
    );
}

#[test]
fn rules_are_checked_listed_and_removed() {
    privileged_test!();
    let agent = Agent::start();
    // Refused with the field named; nothing added.
    for (body, code, wanted) in [
        (
            "{name: r, trigger: {cpu: {above_percent: 0}}, actions: [{profile: {}}]}",
            400,
            "trigger.cpu.above_percent=0",
        ),
        (
            "{name: r, trigger: {cpu: {above_percent: 50}}, actions: [{profile: {hz: 0}}]}",
            400,
            "actions[0].profile: hz=0",
        ),
        (
            "{name: r, trigger: {cpu: {above_percent: 50}}, actions: [{profile: {}}], limits: {window: 3}}",
            400,
            "limits",
        ),
        (
            "[{name: a, trigger: {oom_kill: {}}, actions: []}, {name: b, trigger: {memory: {}}, actions: []}]",
            400,
            "[1].trigger.memory",
        ),
    ] {
        let (status, answer) = agent.send("POST", "/v1/rules", body.as_bytes());
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, code, "{body}: {answer}");
        assert!(answer.contains(wanted), "{body}: {answer}");
    }
    assert!(rules(&agent).is_empty());
    add(
        &agent,
        "- {name: a, trigger: {oom_kill: {}}, actions: [], filter: {pid: 1}}\n- {name: b, trigger: {cpu: {above_percent: 99}}, filter: {pid: 1}, actions: [{dump: {type: mini}}]}\n",
    );
    let (status, answer) = agent.send(
        "POST",
        "/v1/rules",
        b"{name: a, trigger: {oom_kill: {}}, actions: []}",
    );
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&answer));
    let listed = rule(&agent, "b");
    assert_eq!(listed["source"], "api");
    assert_eq!(listed["trigger"], "cpu > 99 % for 0 s");
    assert_eq!(
        listed["actions"][0],
        "dump type=mini limit_mb=4096 → core.PID"
    );
    assert_eq!(listed["rule"]["filter"]["pid"], 1);
    let capabilities: Value = serde_json::from_slice(&agent.get_ok("/v1/capabilities")).unwrap();
    assert_eq!(capabilities["rules"]["rules"].as_array().unwrap().len(), 2);
    assert_eq!(capabilities["rules"]["store"]["budget_bytes"], 512u64 << 20);
    assert_eq!(agent.send("DELETE", "/v1/rules/a", b"").0, 204);
    assert_eq!(agent.send("DELETE", "/v1/rules/a", b"").0, 404);
    assert_eq!(rules(&agent).len(), 1);
    assert_eq!(agent.get("/v1/artifacts/nope").0, 404);
}

#[test]
fn a_cpu_burst_fires_within_a_second_and_its_limits_hold() {
    privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("rules_app.c", &[]);
    let agent = Agent::start();
    let mut app = App::start(&bin, &["spin"]);
    add(
        &agent,
        &format!(
            "name: burst\ntrigger: {{cpu: {{above_percent: 50}}}}\nfilter: {{pid: {}}}\nactions: [{{profile: {{seconds: 1, format: folded}}}}]\nlimits: {{max_actions: 2, window_seconds: 600, cooldown_seconds: 1}}\n",
            app.pid()
        ),
    );
    // Two readings of the idle process first.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(rule(&agent, "burst")["tally"]["fired"], 0);
    signal(app.pid(), "USR1");
    let began: u64 = app.line().parse().expect("the burst's start in ms");
    wait_until(Duration::from_secs(20), "two profiles of the burst", || {
        artifacts(&agent, "burst").len() == 2
            && rule(&agent, "burst")["tally"]["ran"] == 2
            && rule(&agent, "burst")["tally"]["held_back"]["rate"]
                .as_u64()
                .unwrap_or(0)
                >= 4
    });
    let kept = artifacts(&agent, "burst");
    let first = &kept[0];
    let delay = first["started_unix_ms"]
        .as_u64()
        .unwrap()
        .saturating_sub(began);
    eprintln!("cpu: the condition became true at {began}, the action started {delay} ms later");
    assert!(delay < 1000, "{first}");
    assert!(first["value"].as_f64().unwrap() >= 50.0, "{first}");
    assert_eq!(first["pid"], app.pid());
    assert_eq!(first["file_name"], "profile.folded");
    let folded = agent.get_ok(&format!("/v1/artifacts/{}", first["id"].as_str().unwrap()));
    assert_eq!(folded.len() as u64, first["bytes"].as_u64().unwrap());
    let folded = String::from_utf8(folded).unwrap();
    assert!(folded.contains("spin_work"), "{folded}");
    // The second waited for the first's end and its cooldown; the rest
    // were counted, not queued: no third ran.
    let second_start = kept[1]["started_unix_ms"].as_u64().unwrap();
    assert!(
        second_start >= first["ended_unix_ms"].as_u64().unwrap() + 1000,
        "{kept:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let tally = rule(&agent, "burst")["tally"].clone();
    assert_eq!(tally["ran"], 2, "{tally}");
    assert_eq!(artifacts(&agent, "burst").len(), 2);
    for held in ["busy", "cooldown", "rate"] {
        assert!(
            tally["held_back"][held].as_u64().unwrap_or(0) > 0,
            "{held}: {tally}"
        );
    }
    assert_counted(&tally);
    assert_eq!(tally["failed"], 0, "{tally}");
}

/// A memory cgroup with a limit of `mb` MiB, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    v1: bool,
}

impl Cgroup {
    fn new(tag: &str, mb: u64) -> Self {
        let name = format!("tracecar-rules-{tag}-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
        let dir = if v1 {
            PathBuf::from("/sys/fs/cgroup/memory").join(name)
        } else {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
            PathBuf::from("/sys/fs/cgroup").join(name)
        };
        std::fs::create_dir_all(&dir).expect("a memory cgroup");
        let limit = if v1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        std::fs::write(dir.join(limit), (mb << 20).to_string()).expect("its limit");
        if !v1 {
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        }
        Self { dir, v1 }
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .expect("the process moves in");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn memory_near_its_limit_is_captured_before_the_oom_kill_which_is_recorded() {
    privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("rules_app.c", &[]);
    let agent = Agent::start();
    let limit_mb = 64;
    let cgroup = Cgroup::new("ramp", limit_mb);
    let mut app = App::start(&bin, &["ramp", &limit_mb.to_string()]);
    cgroup.enter(app.pid());
    add(
        &agent,
        &format!(
            "- name: near-oom\n  trigger: {{memory: {{above_percent: 50}}}}\n  filter: {{pid: {pid}}}\n  actions: [{{dump: {{type: mini}}}}]\n  limits: {{max_actions: 1}}\n- name: oom\n  trigger: {{oom_kill: {{}}}}\n  filter: {{name: rules_app}}\n  actions: []\n",
            pid = app.pid()
        ),
    );
    // The rules have read the cgroup before the ramp.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        rule(&agent, "near-oom")["tally"]["fired"],
        0,
        "{}",
        rule(&agent, "near-oom")
    );
    signal(app.pid(), "USR1");
    let half = app.line();
    let half: u64 = half
        .strip_prefix("half ")
        .expect("half MS")
        .parse()
        .unwrap();
    assert_eq!(app.line(), "holding");
    let deadline = Instant::now() + Duration::from_secs(30);
    while artifacts(&agent, "near-oom").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no dump near the limit: {}",
            rule(&agent, "near-oom")
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let dump = artifacts(&agent, "near-oom").remove(0);
    // The workload allocated half of the limit at `half`; with its code
    // and libc mapped, its working set crossed 50 % a little before.
    let delay = dump["started_unix_ms"]
        .as_u64()
        .unwrap()
        .saturating_sub(half);
    eprintln!("memory: half the limit allocated at {half}, the dump started {delay} ms later");
    assert!(delay < 1000, "{dump}");
    assert!(dump["value"].as_f64().unwrap() >= 50.0, "{dump}");
    assert!(
        dump["trigger"]
            .as_str()
            .unwrap()
            .contains(&format!("of {limit_mb} MiB")),
        "{dump}"
    );
    assert_eq!(dump["cgroup"], cgroup.dir.display().to_string());
    let core = agent.get_ok(&format!("/v1/artifacts/{}", dump["id"].as_str().unwrap()));
    assert_eq!(core.len() as u64, dump["bytes"].as_u64().unwrap());
    assert!(core.starts_with(b"\x7fELF"), "a core file");
    // Now past the limit: the kernel kills it.
    signal(app.pid(), "USR1");
    let status = app.child.wait().expect("the workload ends");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "OOM-killed: {status:?}"
    );
    wait_until(Duration::from_secs(10), "the OOM kill's record", || {
        artifacts(&agent, "oom").len() == 1
    });
    let record = artifacts(&agent, "oom").remove(0);
    assert_eq!(record["file_name"], "oom-kill.json");
    let body: Value = serde_json::from_slice(
        &agent.get_ok(&format!("/v1/artifacts/{}", record["id"].as_str().unwrap())),
    )
    .unwrap();
    assert_eq!(body["oom_kills"], 1, "{body}");
    assert_eq!(
        body["captured_before"],
        serde_json::json!([dump["id"]]),
        "{body}"
    );
    let tally = rule(&agent, "oom")["tally"].clone();
    assert_eq!(
        (tally["ran"].as_u64(), tally["artifacts"].as_u64()),
        (Some(1), Some(1)),
        "{tally}"
    );
    eprintln!("cgroup v1: {}", cgroup.v1);
}

#[test]
fn cpu_pressure_fires_a_pressure_rule() {
    privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("rules_app.c", &[]);
    let agent = Agent::start();
    let idle = App::start(&bin, &["spin"]);
    add(
        &agent,
        &format!(
            "{{name: stalls, trigger: {{pressure: {{resource: cpu, above_percent: 10}}}}, filter: {{pid: {}}}, actions: [{{profile: {{seconds: 1, format: folded}}}}], limits: {{max_actions: 1}}}}",
            idle.pid()
        ),
    );
    std::thread::sleep(Duration::from_millis(600));
    let before = rule(&agent, "stalls");
    assert!(before["tally"]["last_error"].is_null(), "{before}");
    // Twice as many busy threads as CPUs: they wait for one.
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let mut busy: Vec<App> = (0..cpus * 2).map(|_| App::start(&bin, &["spin"])).collect();
    for app in &mut busy {
        signal(app.pid(), "USR1");
        app.line();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while artifacts(&agent, "stalls").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no firing under CPU pressure: {}",
            rule(&agent, "stalls")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(busy);
    let fired = artifacts(&agent, "stalls").remove(0);
    assert!(fired["value"].as_f64().unwrap() >= 10.0, "{fired}");
    let text = fired["trigger"].as_str().unwrap();
    assert!(text.starts_with("cpu pressure "), "{text}");
    // On a host without pressure per cgroup, it says it read the node's.
    let v2_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", idle.pid())).unwrap();
    let at_root = v2_cgroup.lines().any(|l| l == "0::/");
    assert_eq!(text.contains("the node's"), at_root, "{text} ({v2_cgroup})");
    assert_eq!(fired["pid"], idle.pid());
}

#[test]
fn a_fatal_signal_is_dumped_before_the_process_dies_of_it() {
    privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("rules_app.c", &[]);
    let agent = Agent::start();
    let mut app = App::start(&bin, &["crash"]);
    let pid = app.pid();
    add(
        &agent,
        &format!(
            "{{name: crash, trigger: {{signal: {{signals: [SIGSEGV, SIGABRT]}}}}, filter: {{pid: {pid}}}, actions: [{{dump: {{type: heap}}}}]}}"
        ),
    );
    // Seized: the agent's watch is its tracer.
    let tracer = || common::status_field(pid, "TracerPid");
    wait_until(Duration::from_secs(5), "the signal watch", || {
        tracer() != "0"
    });
    // A signal it handles goes through to it.
    signal(pid, "USR2");
    assert_eq!(app.line(), "usr2");
    signal(pid, "USR1");
    let crashed: u64 = app.line().parse().expect("the crash's time in ms");
    let status = app.child.wait().expect("the workload ends");
    // It died of its own signal, as it would have.
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(11), // SIGSEGV
        "{status:?}"
    );
    wait_until(Duration::from_secs(10), "the crash's dump", || {
        artifacts(&agent, "crash").len() == 1
    });
    let dump = artifacts(&agent, "crash").remove(0);
    assert_eq!(dump["pid"], pid);
    assert!(
        dump["trigger"]
            .as_str()
            .unwrap()
            .starts_with("SIGSEGV in thread"),
        "{dump}"
    );
    let delay = dump["started_unix_ms"]
        .as_u64()
        .unwrap()
        .saturating_sub(crashed);
    eprintln!("signal: the crash at {crashed}, the dump started {delay} ms later");
    let core = agent.get_ok(&format!("/v1/artifacts/{}", dump["id"].as_str().unwrap()));
    let path = _dir.path().join("core.crash");
    std::fs::write(&path, &core).unwrap();
    let gdb = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "bt"])
        .arg(&bin)
        .arg(&path)
        .output()
        .expect("gdb runs");
    let bt = String::from_utf8_lossy(&gdb.stdout);
    assert!(
        bt.lines()
            .any(|l| l.starts_with("#0 ") && l.contains("crash_here")),
        "gdb bt:\n{bt}\n{}",
        String::from_utf8_lossy(&gdb.stderr)
    );
    assert!(
        bt.lines()
            .any(|l| l.starts_with("#1 ") && l.contains("main")),
        "{bt}"
    );
    let tally = rule(&agent, "crash")["tally"].clone();
    assert_eq!(
        (tally["ran"].as_u64(), tally["failed"].as_u64()),
        (Some(1), Some(0)),
        "{tally}"
    );
}

#[test]
fn a_slow_call_fires_a_latency_rule() {
    privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("rules_app.c", &[]);
    let agent = Agent::start();
    let mut app = App::start(&bin, &["slow"]);
    let pid = app.pid();
    add(
        &agent,
        &format!(
            "- {{name: slow, trigger: {{latency: {{symbol: slow_call, above_ms: 20}}}}, filter: {{pid: {pid}}}, actions: [{{profile: {{seconds: 1, format: folded}}}}, {{uprobe: {{symbol: slow_call, args: i32, ret: u64, seconds: 1}}}}], limits: {{max_actions: 1}}}}\n- {{name: nowhere, trigger: {{latency: {{symbol: no_such_function, above_ms: 1}}}}, filter: {{pid: {pid}}}, actions: [{{profile: {{}}}}]}}\n"
        ),
    );
    // The probe is on, and the 1 ms calls do not fire it.
    std::thread::sleep(Duration::from_secs(2));
    let before = rule(&agent, "slow");
    assert_eq!(before["tally"]["fired"], 0, "{before}");
    assert!(before["tally"]["last_error"].is_null(), "{before}");
    // A function that is not there: said in the rule's tally.
    let nowhere = rule(&agent, "nowhere");
    assert!(
        nowhere["tally"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no_such_function"),
        "{nowhere}"
    );
    signal(pid, "USR1");
    let slowed: u64 = app.line().parse().expect("when the calls slowed, in ms");
    wait_until(Duration::from_secs(10), "the slow call's profile", || {
        !artifacts(&agent, "slow").is_empty()
    });
    let fired = artifacts(&agent, "slow").remove(0);
    let delay = fired["started_unix_ms"]
        .as_u64()
        .unwrap()
        .saturating_sub(slowed);
    eprintln!("latency: the calls slowed at {slowed}, the action started {delay} ms later");
    assert!(delay < 1000, "{fired}");
    let value = fired["value"].as_f64().unwrap();
    assert!((20.0..200.0).contains(&value), "{fired}");
    assert!(
        fired["trigger"]
            .as_str()
            .unwrap()
            .starts_with("slow_call took "),
        "{fired}"
    );
    // The second action: a second of the calls, probed.
    wait_until(Duration::from_secs(10), "the probe's artifact", || {
        artifacts(&agent, "slow").len() == 2
    });
    let probed = artifacts(&agent, "slow")
        .into_iter()
        .find(|a| a["file_name"] == "uprobe.ndjson")
        .expect("the probe's artifact");
    assert_eq!(probed["pid"], pid, "{probed}");
    let body = agent.get_ok(&format!("/v1/artifacts/{}", probed["id"].as_str().unwrap()));
    let (calls, summary) = common::probe_lines(&body);
    assert!(!calls.is_empty(), "{summary}");
    for call in &calls {
        assert_eq!(call["args"][0], 30, "{call}");
        assert!(call["latency_ns"].as_u64().unwrap() >= 30_000_000, "{call}");
    }
    // Removing the rules detaches their probes.
    for name in ["slow", "nowhere"] {
        assert_eq!(
            agent.send("DELETE", &format!("/v1/rules/{name}"), b"").0,
            204
        );
    }
    agent.assert_released();
}

#[test]
fn a_container_filter_picks_processes_by_their_containers_name() {
    privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("rules_app.c", &[]);
    let agent = Agent::start();
    // "web" in a cgroup of its own, with a process of that cgroup whose
    // environment is empty; "worker" elsewhere.
    let cgroup = Cgroup::new("web", 1024);
    let mut web = App::start_in(&bin, &["spin"], Some("web"));
    let mut stray = App::start_in(&bin, &["spin"], None);
    let mut worker = App::start_in(&bin, &["spin"], Some("worker"));
    cgroup.enter(web.pid());
    cgroup.enter(stray.pid());
    let doc = |name: &str, filter: &str| {
        format!(
            "- {{name: {name}, trigger: {{cpu: {{above_percent: 30}}}}, filter: {{{filter}}}, actions: [{{profile: {{seconds: 1, format: folded}}}}], limits: {{max_actions: 1}}}}\n"
        )
    };
    add(
        &agent,
        &[
            doc("web", "container: web"),
            doc("stray", &format!("container: web, pid: {}", stray.pid())),
            doc("worker", "container: worker"),
            doc("nobody", "container: nobody"),
        ]
        .concat(),
    );
    for app in [&mut web, &mut stray, &mut worker] {
        signal(app.pid(), "USR1");
        app.line();
    }
    wait_until(Duration::from_secs(20), "the three rules' profiles", || {
        ["web", "stray", "worker"]
            .iter()
            .all(|r| !artifacts(&agent, r).is_empty())
    });
    let pid = |rule: &str| artifacts(&agent, rule)[0]["pid"].as_u64().unwrap() as u32;
    assert!(
        [web.pid(), stray.pid()].contains(&pid("web")),
        "{:?}",
        artifacts(&agent, "web")
    );
    assert_eq!(pid("stray"), stray.pid());
    assert_eq!(pid("worker"), worker.pid());
    let nobody = rule(&agent, "nobody");
    assert_eq!(nobody["tally"]["fired"], 0, "{nobody}");
    drop((web, stray, worker));
}
