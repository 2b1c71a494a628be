//! Privileged integration tests of off-CPU and wall-clock profiles
//! (`mode=offcpu|wall`): the real agent, real context switches, and a
//! workload whose threads spend known shares of their time running,
//! sleeping, waiting on a mutex and reading a slow pipe
//! (`workloads/offcpu.c`).

#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// One stack of a JSON profile.
#[derive(Debug, Clone)]
struct Stack {
    frames: Vec<String>,
    kinds: Vec<String>,
    count: u64,
    weight: u64,
}

impl Stack {
    /// The thread's name (root frames: process, thread).
    fn thread(&self) -> &str {
        self.frames.get(1).map_or("", String::as_str)
    }

    fn leaf(&self) -> &str {
        self.frames.last().map_or("", String::as_str)
    }

    fn has(&self, name: &str) -> bool {
        self.frames.iter().any(|f| f == name)
    }
}

fn profile(agent: &Agent, query: &str) -> (serde_json::Value, Vec<Stack>) {
    let body = agent.get_ok(&format!("/v1/profile?{query}&threads=true&format=json"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let stacks = json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Stack {
            frames: s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_owned())
                .collect(),
            kinds: s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["kind"].as_str().unwrap().to_owned())
                .collect(),
            count: s["count"].as_u64().unwrap(),
            weight: s["weight"].as_u64().unwrap(),
        })
        .collect();
    (json["meta"].clone(), stacks)
}

/// Nanoseconds of `thread`'s stacks that pass `pick`.
fn thread_ns(stacks: &[Stack], thread: &str, pick: impl Fn(&Stack) -> bool) -> u64 {
    stacks
        .iter()
        .filter(|s| s.thread() == thread && pick(s))
        .map(|s| s.weight)
        .sum()
}

/// The workload, frame-pointer build (blocking syscalls made from its own
/// functions) or DWARF build (libc's, no frame pointers anywhere).
fn build(dir: &Path, frame_pointers: bool) -> PathBuf {
    let flags: &[&str] = if frame_pointers {
        // -O0: GCC gives even leaf functions a frame.
        &["-O0", "-DINLINE_SYSCALLS"]
    } else {
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-momit-leaf-frame-pointer",
            "-fno-optimize-sibling-calls",
        ]
    };
    compile_c(dir, "offcpu.c", flags)
}

/// Starts the workload and waits for its "ready" (every thread running).
fn start(bin: &Path, args: &[&str]) -> Running {
    spawn_ready(bin, args)
}

const SECONDS: u64 = 4;

fn assert_near(what: &str, got: f64, expected: f64, tolerance: f64) {
    assert!(
        (got - expected).abs() <= tolerance,
        "{what}: {got:.1} %, expected {expected:.1} % ± {tolerance}"
    );
}

#[test]
fn offcpu_attributes_blocked_time_to_the_right_functions() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), true);
    let workload = start(&bin, &[]);
    // The stuck thread blocks before the capture starts and never wakes.
    std::thread::sleep(Duration::from_millis(300));
    let agent = Agent::start();
    let (meta, stacks) = profile(
        &agent,
        &format!(
            "pid={}&seconds={SECONDS}&mode=offcpu&unwind=fp&kernel=false",
            workload.pid()
        ),
    );
    assert_eq!(meta["mode"], "offcpu");
    assert_eq!(meta["unit"], "nanoseconds");
    let capture_ns = meta["duration_seconds"].as_f64().unwrap() * 1e9;
    // Each thread's blocked time as a share of the capture, against what
    // the workload does.
    let off = |thread: &str, function: &str| {
        thread_ns(&stacks, thread, |s| s.has(function)) as f64 / capture_ns * 100.0
    };
    for (thread, function, expected) in [
        ("sleeper", "sleep_loop", 100.0),
        ("holder", "hold_loop", 100.0),
        ("feeder", "feed_loop", 100.0),
        ("reader", "read_loop", 100.0),
        ("waiter", "wait_loop", 90.0),
        ("stuck", "stuck_forever", 100.0),
    ] {
        assert_near(
            &format!("{thread} in {function}"),
            off(thread, function),
            expected,
            10.0,
        );
    }
    // The busy thread never blocks.
    assert_eq!(thread_ns(&stacks, "busy", |_| true), 0, "{stacks:#?}");
    // Shares of all blocked time, per function.
    let total: u64 = stacks.iter().map(|s| s.weight).sum();
    let known = [
        ("sleep_loop", 1.0),
        ("hold_loop", 1.0),
        ("feed_loop", 1.0),
        ("read_loop", 1.0),
        ("wait_loop", 0.9),
        ("stuck_forever", 1.0),
        ("main", 1.0),
    ];
    let sum: f64 = known.iter().map(|(_, k)| k).sum();
    for (function, k) in known {
        let got = stacks
            .iter()
            .filter(|s| s.has(function))
            .map(|s| s.weight)
            .sum::<u64>() as f64
            / total as f64
            * 100.0;
        assert_near(&format!("share of {function}"), got, k / sum * 100.0, 10.0);
    }
    // The frame-pointer chain is whole, down from the thread's start.
    let sleeper = stacks
        .iter()
        .filter(|s| s.thread() == "sleeper")
        .max_by_key(|s| s.weight)
        .unwrap();
    let user: Vec<&str> = sleeper.frames[2..sleeper.frames.len() - 1]
        .iter()
        .map(String::as_str)
        .collect();
    assert!(
        user.windows(4)
            .any(|w| w == ["start_thread", "run", "sleep_loop", "nap"]),
        "{sleeper:?}"
    );
    // Blocked all along: counted once, with the whole capture.
    let stuck: Vec<&Stack> = stacks.iter().filter(|s| s.thread() == "stuck").collect();
    assert_eq!(stuck.len(), 1, "{stuck:#?}");
    assert_eq!(stuck[0].count, 1);
    assert_near(
        "stuck's one block",
        stuck[0].weight as f64 / capture_ns * 100.0,
        100.0,
        2.0,
    );
    // Leaves name the kernel function each thread waits in, even without
    // kernel frames.
    let leaf_of = |thread: &str| {
        stacks
            .iter()
            .filter(|s| s.thread() == thread)
            .max_by_key(|s| s.weight)
            .map(|s| (s.leaf().to_owned(), s.kinds.last().cloned().unwrap()))
            .unwrap()
    };
    for (thread, needle) in [
        ("sleeper", "nanosleep"),
        ("reader", "pipe_read"),
        ("waiter", "futex"),
        ("stuck", "pipe_read"),
    ] {
        let (leaf, kind) = leaf_of(thread);
        assert!(leaf.contains(needle), "{thread}: leaf {leaf}");
        assert_eq!(kind, "kernel", "{thread}");
    }
    assert_eq!(agent.perf_fds(), 0, "nothing left open");
}

#[test]
fn wall_puts_on_and_off_cpu_time_side_by_side() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), true);
    let workload = start(&bin, &[]);
    let agent = Agent::start();
    let (meta, stacks) = profile(
        &agent,
        &format!(
            "pid={}&seconds={SECONDS}&mode=wall&hz=199&kernel=false",
            workload.pid()
        ),
    );
    assert_eq!(meta["mode"], "wall");
    assert_eq!(meta["hz"], 199);
    // The agent keeps up with this workload's ~1,200 blocks a second,
    // stack copies and all.
    let (blocks, lost) = (
        meta["blocks"].as_u64().unwrap(),
        meta["lost"].as_u64().unwrap(),
    );
    assert!(blocks > 1000 && lost * 20 <= blocks, "{meta}");
    assert_eq!(meta["throttled"], 0, "{meta}");
    let capture_ns = meta["duration_seconds"].as_f64().unwrap() * 1e9;
    // Every leaf says on-CPU or what the thread waited in.
    for s in &stacks {
        let leaf = s.leaf();
        let kind = s.kinds.last().unwrap();
        assert!(
            (["[on-cpu]", "[preempted]"].contains(&leaf) && kind == "marker") || kind == "kernel",
            "{s:?}"
        );
    }
    let on = |thread: &str| thread_ns(&stacks, thread, |s| s.leaf() == "[on-cpu]") as f64;
    // Waiting for a CPU is neither running nor blocking.
    let all = |thread: &str| thread_ns(&stacks, thread, |s| s.leaf() != "[preempted]") as f64;
    let whole = |thread: &str| thread_ns(&stacks, thread, |_| true) as f64;
    for (thread, on_share) in [
        ("busy", 100.0),
        ("sleeper", 0.0),
        ("reader", 0.0),
        ("waiter", 10.0),
    ] {
        assert_near(
            &format!("{thread} on-CPU"),
            on(thread) / all(thread) * 100.0,
            on_share,
            10.0,
        );
    }
    // Every thread accounts for the whole capture: running, blocked, or
    // waiting for a CPU ([preempted]).
    for thread in ["busy", "sleeper", "reader", "waiter", "stuck"] {
        assert_near(
            &format!("{thread} wall time ({meta}, {stacks:#?})"),
            whole(thread) / capture_ns * 100.0,
            100.0,
            10.0,
        );
    }
    // The process as a whole: 8 threads, of which 1.1 run.
    let total: f64 = stacks
        .iter()
        .filter(|s| s.leaf() != "[preempted]")
        .map(|s| s.weight as f64)
        .sum();
    let on_cpu: f64 = stacks
        .iter()
        .filter(|s| s.leaf() == "[on-cpu]")
        .map(|s| s.weight as f64)
        .sum();
    assert_near(
        "on-CPU share",
        on_cpu / total * 100.0,
        1.1 / 8.0 * 100.0,
        10.0,
    );
    let waits: Vec<&str> = stacks
        .iter()
        .filter(|s| s.kinds.last().is_some_and(|k| k == "kernel"))
        .map(Stack::leaf)
        .collect();
    for needle in ["nanosleep", "futex", "pipe_read"] {
        assert!(
            waits.iter().any(|w| w.contains(needle)),
            "{needle}: {waits:?}"
        );
    }
}

#[test]
fn dwarf_gives_the_full_chain_without_frame_pointers() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), false);
    let workload = start(&bin, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let agent = Agent::start();
    let (_, stacks) = profile(
        &agent,
        &format!(
            "pid={}&seconds=2&mode=offcpu&unwind=dwarf&kernel=false",
            workload.pid()
        ),
    );
    for (thread, function) in [
        ("sleeper", "sleep_loop"),
        ("waiter", "wait_loop"),
        ("reader", "read_loop"),
        ("stuck", "stuck_forever"),
    ] {
        let heaviest = stacks
            .iter()
            .filter(|s| s.thread() == thread)
            .max_by_key(|s| s.weight)
            .unwrap_or_else(|| panic!("no {thread}: {stacks:#?}"));
        let chain = &heaviest.frames;
        let at = chain.iter().position(|f| f == function);
        assert!(
            at.is_some_and(|i| i >= 3 && chain[i - 2] == "start_thread" && chain[i - 1] == "run"),
            "{thread}: {chain:?}"
        );
    }
    // The main thread, blocked since before the capture, is walked from
    // its system call up to _start.
    let main = stacks
        .iter()
        .filter(|s| s.thread() == "offcpu")
        .max_by_key(|s| s.weight)
        .unwrap();
    assert!(main.has("main") && main.has("_start"), "{main:?}");
    // Without frame pointers, frame-pointer unwinding loses the callers
    // (but for a block that began before the capture, which is read from
    // /proc and always walked with DWARF).
    let (_, fp) = profile(
        &agent,
        &format!(
            "pid={}&seconds=1&mode=offcpu&unwind=fp&kernel=false",
            workload.pid()
        ),
    );
    let whole = |stacks: &[Stack]| {
        let sleeper = || stacks.iter().filter(|s| s.thread() == "sleeper");
        let whole: u64 = sleeper()
            .filter(|s| s.has("sleep_loop") && s.has("start_thread"))
            .map(|s| s.weight)
            .sum();
        whole as f64 / sleeper().map(|s| s.weight).sum::<u64>() as f64
    };
    assert!(whole(&stacks) > 0.9 && whole(&fp) < 0.1, "{fp:#?}");
}

#[test]
fn node_blocked_in_a_javascript_function_is_named() {
    common::privileged_test!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads/blocked.js");
    let workload = spawn_node(&[
        "--perf-basic-prof",
        "--interpreted-frames-native-stack",
        script,
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let agent = Agent::start();
    let (_, stacks) = profile(
        &agent,
        &format!("pid={}&seconds=2&mode=offcpu&kernel=false", workload.pid()),
    );
    let total: u64 = stacks.iter().map(|s| s.weight).sum();
    let waiting: u64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.contains("tracecarJsWait")))
        .map(|s| s.weight)
        .sum();
    // The main thread is one of node's threads; it waits nearly all the
    // time, in tracecarJsWait, on a futex.
    assert!(
        waiting as f64 >= 1.8e9,
        "{waiting} ns of {total}: {stacks:#?}"
    );
    let heaviest = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.contains("tracecarJsWait")))
        .max_by_key(|s| s.weight)
        .unwrap();
    assert!(heaviest.leaf().contains("futex"), "{heaviest:?}");
    let at = heaviest
        .frames
        .iter()
        .position(|f| f.contains("tracecarJsWait"))
        .unwrap();
    assert_eq!(heaviest.kinds[at], "jit", "{heaviest:?}");
    assert!(
        heaviest.frames[..at]
            .iter()
            .any(|f| f.contains("tracecarJsLoop"))
    );
}

#[test]
fn target_exiting_mid_capture_gives_a_partial_profile() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), true);
    let agent = Agent::start();
    let mut workload = start(&bin, &["1"]);
    let (meta, stacks) = profile(
        &agent,
        &format!("pid={}&seconds=3&mode=wall&kernel=false", workload.pid()),
    );
    assert!(
        workload.child.try_wait().unwrap().is_some(),
        "the workload should have exited during the capture"
    );
    assert!(meta["duration_seconds"].as_f64().unwrap() >= 2.9);
    // What it did before it exited is there, and no thread is counted
    // past its end.
    let sleeper = thread_ns(&stacks, "sleeper", |s| s.has("sleep_loop"));
    assert!(sleeper as f64 > 0.5e9, "{stacks:#?}");
    for thread in ["sleeper", "stuck", "busy", "reader"] {
        let ns = thread_ns(&stacks, thread, |_| true);
        assert!(ns as f64 <= 1.3e9, "{thread}: {ns} ns after a 1 s life");
    }
    assert_eq!(agent.perf_fds(), 0, "nothing left open");
}

#[test]
fn the_rate_cap_bounds_the_agent_and_says_what_it_dropped() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("switches.c", &[]);
    // Both threads on one CPU: tens of thousands of switches a second
    // even while profiled, past the 2,000 a second this request keeps.
    let mut taskset = Command::new("taskset");
    taskset
        .args(["-c", "0"])
        .arg(&bin)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let workload = Running {
        child: taskset.spawn().expect("taskset starts"),
    };
    std::thread::sleep(Duration::from_millis(300));
    let agent = Agent::start();
    let (meta, stacks) = profile(
        &agent,
        &format!(
            "pid={}&seconds=2&mode=offcpu&unwind=fp&kernel=false&rate=2000",
            workload.pid()
        ),
    );
    let (blocks, throttled) = (
        meta["blocks"].as_u64().unwrap(),
        meta["throttled"].as_u64().unwrap(),
    );
    // At most the cap's worth a second was kept (a capture of 2 s spans
    // at most 3 clock seconds; plus the blocks open at the start), and
    // what was not is counted.
    assert!((2000..=3 * 2000 + 10).contains(&blocks), "{meta}");
    assert!(throttled > 10_000, "{meta}");
    assert!(stacks.iter().any(|s| s.has("partner")), "{stacks:#?}");
}

#[test]
fn filters_formats_bad_input_and_disconnects() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), true);
    let workload = start(&bin, &[]);
    let pid = workload.pid();
    let agent = Agent::start();
    // min_block_us: the 5 ms naps stay, the waiter's short waits go.
    let (_, stacks) = profile(
        &agent,
        &format!("pid={pid}&seconds=2&mode=offcpu&kernel=false&min_block_us=3000"),
    );
    assert!(thread_ns(&stacks, "sleeper", |_| true) as f64 > 1.5e9);
    for s in &stacks {
        assert!(s.weight >= 3_000_000 * s.count, "{s:?}");
    }
    // state=D: nothing here sleeps uninterruptibly.
    let (meta, stacks) = profile(&agent, &format!("pid={pid}&seconds=1&mode=offcpu&state=D"));
    assert_eq!(meta["blocks"], 0, "{stacks:#?}");
    // pprof: off_cpu and wall in nanoseconds, decoded independently.
    for (mode, kind) in [("offcpu", "off_cpu"), ("wall", "wall")] {
        let gz = agent.get_ok(&format!(
            "/v1/profile?pid={pid}&seconds=1&mode={mode}&format=pprof"
        ));
        let text = common::decode_pprof(dir.path(), &gz);
        assert!(
            text.contains(&format!("\"{kind}\"")),
            "{mode}: no {kind} in {text}"
        );
        assert!(text.contains("\"nanoseconds\""), "{mode}");
        let folded = agent.get_ok(&format!(
            "/v1/profile?pid={pid}&seconds=1&mode={mode}&format=folded"
        ));
        assert!(!folded.is_empty());
        let svg = agent.get_ok(&format!("/v1/profile?pid={pid}&seconds=1&mode={mode}"));
        assert!(String::from_utf8_lossy(&svg).contains("nanoseconds"));
    }
    for (query, needle) in [
        (
            "mode=offcpu-ish",
            "cpu, offcpu, wall, alloc (.NET) or contention (.NET)",
        ),
        ("mode=offcpu&state=X", "S (sleeping)"),
        ("mode=offcpu&min_block_us=-5", "min_block_us"),
        ("mode=offcpu&hz=99", "mode=wall"),
        ("min_block_us=100", "mode=offcpu"),
        ("state=S", "mode=offcpu"),
        ("rate=100", "mode=offcpu"),
        ("mode=wall&rate=0", "between 1 and 1000000"),
    ] {
        let (code, body) = agent.get(&format!("/v1/profile?pid={pid}&{query}"));
        assert_eq!(code, 400, "{query}: {}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["hint"].as_str().unwrap().contains(needle),
            "{query}: {json}"
        );
    }
    // A client that leaves mid-capture: every event is closed.
    let client = agent.get_in_background(&format!(
        "/v1/profile?pid={pid}&seconds=60&mode=wall&format=folded"
    ));
    assert!(
        agent.wait_for(Duration::from_secs(10), |a| a.perf_fds() > 0),
        "the capture did not start"
    );
    drop(client);
    assert!(
        agent.wait_for(Duration::from_secs(5), |a| a.perf_fds() == 0),
        "{} perf fds still open after the client left",
        agent.perf_fds()
    );
}

#[test]
fn stacks_now_put_each_thread_in_its_function_and_let_it_run() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    // No frame pointers: the stacks come from DWARF through libc.
    let bin = build(dir.path(), false);
    let workload = start(&bin, &[]);
    let agent = Agent::start();
    let pid = workload.pid();
    let stacks: serde_json::Value =
        serde_json::from_slice(&agent.get_ok(&format!("/v1/stacks?pid={pid}&format=json")))
            .unwrap();
    let thread = |name: &str| -> (String, Vec<String>) {
        let t = stacks["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no thread {name}: {stacks}"));
        let frames = t["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect();
        (t["state"].as_str().unwrap().to_owned(), frames)
    };
    // Each thread in its own function, under the thread's start routine.
    for (name, function, state) in [
        ("busy", "busy_loop", Some("running")),
        ("stuck", "stuck_forever", Some("sleeping")),
        ("sleeper", "sleep_loop", None),
        ("reader", "read_loop", None),
    ] {
        let (got, frames) = thread(name);
        let at = frames
            .iter()
            .position(|f| f == function)
            .unwrap_or_else(|| panic!("{name}: {function} not in {frames:?}"));
        assert!(
            frames[at..].iter().any(|f| f == "start_thread"),
            "{name}: {frames:?}"
        );
        if let Some(state) = state {
            assert_eq!(got, state, "{name}");
        }
    }
    // A blocked thread's innermost frame is libc's read, over the kernel
    // wait it is in.
    let stuck = stacks["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "stuck")
        .unwrap();
    assert!(stuck["blocked_in"].is_string(), "{stuck}");
    assert!(
        stuck["frames"][0]["module"]
            .as_str()
            .is_some_and(|m| m.contains("libc.so")),
        "{stuck}"
    );
    // Every thread runs again, and none is left traced.
    let traced = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("status"))
                    .unwrap()
                    .lines()
                    .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
            })
            .count()
    };
    assert_eq!(traced(pid), 0);
    let state = common::status_field(pid, "State");
    assert!(
        !state.starts_with('t') && !state.starts_with('T'),
        "{state}"
    );

    // A thread another debugger traces is shown with why; the others
    // still have their stacks.
    let busy_tid = stacks["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "busy")
        .unwrap()["tid"]
        .as_u64()
        .unwrap();
    // strace -p TID traces that one thread.
    let tracer = Command::new("strace")
        .args(["-q", "-o", "/dev/null", "-p", &busy_tid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (apt install strace)");
    let tracer = Running { child: tracer };
    assert!(
        agent.wait_for(Duration::from_secs(10), |_| traced(pid) == 1),
        "strace did not attach"
    );
    let again: serde_json::Value =
        serde_json::from_slice(&agent.get_ok(&format!("/v1/stacks?pid={pid}&format=json")))
            .unwrap();
    let threads = again["threads"].as_array().unwrap();
    let refused: Vec<&serde_json::Value> =
        threads.iter().filter(|t| t["error"].is_string()).collect();
    assert_eq!(refused.len(), 1, "{again}");
    assert_eq!(refused[0]["tid"], busy_tid);
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("not stopped: Operation not permitted"),
        "{again}"
    );
    assert!(
        threads
            .iter()
            .filter(|t| t["tid"] != busy_tid)
            .all(|t| !t["frames"].as_array().unwrap().is_empty()),
        "{again}"
    );
    drop(tracer);
    // The whole process traced by another debugger: 403, saying so.
    let gdb = Command::new("gdb")
        .args([
            "-q",
            "-batch",
            "-p",
            &pid.to_string(),
            "-ex",
            "shell sleep 10",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gdb = Running { child: gdb };
    let all = threads.len();
    assert!(
        agent.wait_for(Duration::from_secs(20), |_| traced(pid) == all),
        "gdb did not attach"
    );
    let (code, body) = agent.get(&format!("/v1/stacks?pid={pid}"));
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("another debugger"));
    drop(gdb);
}
