//! Privileged tests of the BPF layer: the real programs built by build.rs,
//! loaded with aya and attached to a compiled target.

#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;
use tracecar_agent::sys::events::{
    Capture, Config, EVENT_HAS_RETURN, Event, FLAG_PAIRED, Record, capture_kind,
};
use tracecar_agent::uprobe::attach::{Location, Probe, attach};

/// What the target's recursive fib() returns.
fn fib(n: i64) -> i64 {
    (0..n).fold((0i64, 1i64), |(a, b), _| (b, a + b)).0
}

fn int_arg_config() -> Config {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata("/proc/self/ns/pid").unwrap();
    let mut config = Config {
        pidns_dev: ns.dev(),
        pidns_ino: ns.ino(),
        nargs: 1,
        flags: FLAG_PAIRED,
        ..Config::default()
    };
    config.captures[0] = Capture {
        kind: capture_kind::REG,
        reg: 0,
        ..Capture::default()
    };
    config
}

/// A record's head and its captured memory.
type Collected = (Event, Vec<u8>);

fn collect(attached: &mut Probe, n: usize) -> Vec<Collected> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.len() < n && Instant::now() < deadline {
        attached.drain(|bytes| {
            let record = Record::from_bytes(bytes).expect("a whole record");
            events.push((record.head, record.data.to_vec()));
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    events
}

#[test]
fn entries_and_returns_pair_with_arguments() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let mut attached = attach(
        &bin,
        &Location::Symbol("calc".into()),
        Some(target.pid()),
        int_arg_config(),
    )
    .unwrap();
    let events = collect(&mut attached, 50);
    assert!(events.len() >= 50, "{} events", events.len());
    for (e, _) in &events {
        let arg = e.values[0] as i32;
        assert_eq!(e.flags & EVENT_HAS_RETURN, EVENT_HAS_RETURN);
        assert_eq!(e.ret as i32, arg * 3 + 1, "calc({arg})");
        assert_eq!(e.pid, target.pid(), "PID in the agent's namespace");
        assert_eq!(e.comm(), "calls");
        assert!(e.latency_ns > 0 && e.latency_ns < 1_000_000_000);
    }
    // Calls arrive in order: consecutive arguments.
    let args: Vec<i32> = events.iter().map(|(e, _)| e.values[0] as i32).collect();
    assert!(
        args.windows(2).all(|w| w[1] == (w[0] + 1) % 1000),
        "{args:?}"
    );
    let counts = attached.counts();
    assert!(counts.calls as usize >= events.len());
    assert_eq!(counts.lost, 0);
}

#[test]
fn recursion_pairs_each_return_with_its_own_entry() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let mut attached = attach(
        &bin,
        &Location::Symbol("fib".into()),
        Some(target.pid()),
        int_arg_config(),
    )
    .unwrap();
    let events = collect(&mut attached, 300);
    assert!(events.len() >= 300, "{} events", events.len());
    for (e, _) in &events {
        let n = i64::from(e.values[0] as i32);
        assert_eq!(
            i64::from(e.ret as i32),
            fib(n),
            "fib({n}) paired with the wrong return"
        );
    }
}

#[test]
fn a_second_process_is_excluded_by_pid() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let traced = spawn(&bin, &[]);
    let other = spawn(&bin, &[]);
    let mut attached = attach(
        &bin,
        &Location::Symbol("calc".into()),
        Some(traced.pid()),
        int_arg_config(),
    )
    .unwrap();
    let events = collect(&mut attached, 100);
    assert!(events.len() >= 100);
    assert!(
        events.iter().all(|(e, _)| e.pid == traced.pid()),
        "pid {} leaked in",
        other.pid()
    );
    drop(attached);
    // Without a pid, both are traced.
    let mut all = attach(
        &bin,
        &Location::Symbol("calc".into()),
        None,
        int_arg_config(),
    )
    .unwrap();
    let events = collect(&mut all, 200);
    let pids: std::collections::BTreeSet<u32> = events.iter().map(|(e, _)| e.pid).collect();
    assert!(
        pids.contains(&traced.pid()) && pids.contains(&other.pid()),
        "{pids:?}"
    );
}

fn bpf_fds() -> usize {
    kernel_fds(std::process::id())
}

#[test]
fn strings_are_read_through_pointers_and_nothing_stays_attached() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let mut config = int_arg_config();
    config.captures[0] = Capture {
        kind: capture_kind::STR,
        reg: 0,
        len: 64,
        ..Capture::default()
    };
    config.data_bytes = 64;
    let before = bpf_fds();
    let mut attached = attach(
        &bin,
        &Location::Symbol("echo".into()),
        Some(target.pid()),
        config,
    )
    .unwrap();
    assert!(bpf_fds() > before);
    let events = collect(&mut attached, 20);
    assert!(events.len() >= 20);
    for (e, text) in &events {
        let end = text.iter().position(|b| *b == 0).unwrap();
        let s = std::str::from_utf8(&text[..end]).unwrap();
        assert!(s.starts_with("hello-"), "{s:?}");
        // echo returns its argument.
        assert_eq!(e.ret, e.values[0]);
    }
    drop(attached);
    assert_eq!(
        bpf_fds(),
        before,
        "BPF or perf fds left open after detaching"
    );
}

// ---- Through the HTTP API: the real agent binary, driven with curl. ----

fn hex_field(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn api_streams_calls_with_arguments_returns_and_a_summary() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let pid = target.pid();
    let agent = Agent::start();

    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=calc&args=int&ret=int&limit=50"
    )));
    assert_eq!(events.len(), 50);
    assert_eq!(summary["events"], 50);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["stopped"], "limit");
    common::assert_consecutive_args(&events);
    for e in &events {
        assert_eq!(
            e["ret"].as_i64().unwrap(),
            e["args"][0].as_i64().unwrap() * 3 + 1
        );
        assert_eq!(e["pid"], pid);
        assert!(e["latency_ns"].as_u64().unwrap() > 0);
        assert_eq!(e["comm"], "calls");
    }

    // Recursion: every return pairs with its own entry.
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=fib&args=int&ret=int&limit=200"
    )));
    for e in &events {
        let n = e["args"][0].as_i64().unwrap();
        assert_eq!(e["ret"].as_i64().unwrap(), fib(n), "fib({n})");
    }

    // A struct field through a pointer argument, and a UTF-16 buffer.
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=point_sum&args=arg0%2B0:i32,arg0%2B4:i32,arg0%2B8:i64&ret=long&limit=20"
    )));
    for e in &events {
        let (x, y, z) = (
            e["args"][0].as_i64().unwrap(),
            e["args"][1].as_i64().unwrap(),
            e["args"][2].as_i64().unwrap(),
        );
        assert_eq!((y, z), (2 * x, 3 * x), "{e}");
        assert_eq!(e["ret"].as_i64().unwrap(), 6 * x);
    }
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=wide_len&args=utf16:16&limit=10"
    )));
    for e in &events {
        let text = e["args"][0].as_str().unwrap();
        assert!(text.starts_with("\u{e9}ello-"), "{text:?}");
    }

    // malloc's size, in libc, chosen by module name.
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=malloc&module=libc.so.6&args=u64&limit=30"
    )));
    assert_eq!(events.len(), 30);
    assert!(
        events
            .iter()
            .all(|e| (1..=100).contains(&e["args"][0].as_u64().unwrap())),
        "{events:?}"
    );
}

#[test]
fn api_offset_and_address_targets_match_the_symbol() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let pid = target.pid();
    let agent = Agent::start();
    let symbols: serde_json::Value =
        serde_json::from_slice(&agent.get_ok(&format!("/v1/symbols?pid={pid}&match=^calc$")))
            .unwrap();
    let calc = &symbols["symbols"][0];
    let offset = hex_field(&calc["file_offset"]);
    let address = hex_field(&calc["address"]);
    for query in [
        format!("offset={offset:#x}&binary={}", bin.display()),
        format!("address={address:#x}"),
    ] {
        let (events, summary) = probe_lines(&agent.get_ok(&format!(
            "/v1/uprobe?pid={pid}&{query}&args=int&ret=int&limit=20"
        )));
        assert_eq!(events.len(), 20, "{query}");
        assert_eq!(hex_field(&summary["offset"]), offset, "{query}");
        for e in &events {
            assert_eq!(
                e["ret"].as_i64().unwrap(),
                e["args"][0].as_i64().unwrap() * 3 + 1,
                "{query}"
            );
        }
    }
}

#[test]
fn api_refuses_bad_specs_and_go_return_probes() {
    common::privileged_test!();
    let Workload { dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let pid = target.pid();
    let agent = Agent::start();
    let heap = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .find(|l| l.ends_with("[heap]") || l.ends_with("[stack]"))
        .map(|l| l.split('-').next().unwrap().to_owned())
        .unwrap();
    for (query, status, needle) in [
        (format!("pid={pid}&symbol=calx"), 404, "calc"),
        (format!("pid={pid}&symbol=calc&args=float"), 400, "types:"),
        (
            format!("pid={pid}&symbol=calc&ret=ret%2Bx:int"),
            400,
            "types:",
        ),
        (
            format!("pid={pid}&offset=0x10&binary={}", bin.display()),
            400,
            "/v1/symbols",
        ),
        (format!("pid={pid}&address=0x{heap}"), 400, "JIT"),
        (
            format!("pid={pid}&symbol=calc&binary=/no/such/file"),
            404,
            "container",
        ),
        (
            format!("pid={pid}&symbol=calc&module=nope.so"),
            404,
            "libc.so.6",
        ),
        ("symbol=calc".to_owned(), 400, "pid=P"),
        (
            "pid=999999999&symbol=calc".to_owned(),
            404,
            "shareProcessNamespace",
        ),
    ] {
        let (code, body) = agent.get(&format!("/v1/uprobe?{query}"));
        assert_eq!(code, status, "{query}: {}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["hint"].as_str().unwrap().contains(needle),
            "{query}: {json}"
        );
    }

    // A binary with Go's pclntab section: uretprobes refused unless forced.
    let go_src = dir.path().join("golike.c");
    std::fs::write(
        &go_src,
        "__attribute__((section(\".gopclntab\"), used)) const char pclntab[16] = \"go\";\n\
         __attribute__((noinline)) int work(int x) { return x + 1; }\n\
         int main(void) { volatile int s = 0; for (;;) { s += work(s); } }\n",
    )
    .unwrap();
    let go_bin = dir.path().join("golike");
    assert!(
        Command::new("gcc")
            .arg("-O1")
            .arg("-o")
            .arg(&go_bin)
            .arg(&go_src)
            .status()
            .unwrap()
            .success()
    );
    let go = spawn(&go_bin, &[]);
    let (code, body) = agent.get(&format!(
        "/v1/uprobe?pid={}&symbol=work&args=int&ret=int&limit=5",
        go.pid()
    ));
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Go binary"));
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={}&symbol=work&args=int&limit=5",
        go.pid()
    )));
    assert_eq!(events.len(), 5, "entry-only probes are allowed");
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={}&symbol=work&args=int&ret=int&limit=5&force=true",
        go.pid()
    )));
    assert_eq!(events.len(), 5);
}

#[test]
fn api_disconnect_detaches_everything() {
    common::privileged_test!();
    let Workload { dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let agent = Agent::start();
    // Eight probes at once is the limit; a ninth gets 429.
    let url = format!(
        "/v1/uprobe?pid={}&symbol=calc&args=int&ret=int&seconds=60",
        target.pid()
    );
    // The agent answers with headers once the probe is attached, so each
    // client holds its slot before the next one asks.
    let mut clients: Vec<Running> = (1..=8)
        .map(|n| {
            agent
                .stream_attached(&url, dir.path(), &format!("probe-{n}"))
                .0
        })
        .collect();
    // Each probe holds at least its two programs and a ring buffer.
    assert!(agent.kernel_fds() >= 3 * 8);
    let (code, body) = agent.get(&url);
    assert_eq!(code, 429, "{}", String::from_utf8_lossy(&body));
    // The clients go away: every probe is detached.
    clients.clear();
    agent.assert_released();
}

#[test]
fn api_histograms_and_rate_limit() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let pid = target.pid();
    let agent = Agent::start();
    // 1000 consecutive calls cover every calc() argument 0..999 once.
    let get =
        |q: &str| probe_lines(&agent.get_ok(&format!("/v1/uprobe?pid={pid}&symbol=calc&{q}")));
    let (docs, summary) = get("args=int&aggregate=linear:100&of=arg0&limit=1000");
    assert_eq!(summary["events"], 1000);
    let linear = &docs[0];
    assert_eq!(linear["aggregate"], "linear:100");
    let counts: Vec<u64> = linear["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![100; 10], "{linear}");
    let (docs, _) = get("args=int&ret=int&aggregate=log2&of=arg0&limit=1000");
    let counts: Vec<u64> = docs[0]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        vec![1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 488],
        "{}",
        docs[0]
    );
    let (docs, _) = get("args=int&ret=int&aggregate=log2&of=latency&limit=100");
    assert_eq!(docs[0]["count"], 100);

    // calc() runs ~500 times a second; a budget of 40/s keeps most out.
    let (events, summary) = get("args=int&rate=40&seconds=2");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let budget = 40u64.div_ceil(cpus) * cpus * 3; // up to three 1 s windows
    assert!(
        events.len() as u64 <= budget,
        "{} events over a budget of {budget}",
        events.len()
    );
    assert!(summary["throttled"].as_u64().unwrap() > 100, "{summary}");
}

#[test]
fn nothing_stays_attached_after_the_agent_is_killed() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let mut agent = Agent::start();
    let before = tracecar_programs();
    let _client = agent.get_in_background(&format!(
        "/v1/uprobe?pid={}&symbol=calc&args=int&ret=int&seconds=60",
        target.pid()
    ));
    assert!(
        agent.wait_for(Duration::from_secs(10), |_| tracecar_programs()
            >= before + 2),
        "probes did not attach"
    );
    agent.process.child.kill().unwrap(); // SIGKILL: no cleanup code runs
    agent.process.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tracecar_programs() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        tracecar_programs(),
        before,
        "BPF programs outlived the killed agent"
    );
    // No tracefs uprobe events were created either (aya uses the perf PMU).
    for events in [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ] {
        if let Ok(text) = std::fs::read_to_string(events) {
            assert!(!text.contains("calls"), "{events}: {text}");
        }
    }
}

#[test]
fn api_pairs_returns_across_threads() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("threaded_fib.c", &[]);
    let target = spawn(&bin, &[]);
    let agent = Agent::start();
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={}&symbol=fib&args=int&ret=int&limit=2000",
        target.pid()
    )));
    assert_eq!(summary["lost"], 0);
    let mut tids = std::collections::BTreeSet::new();
    for e in &events {
        let n = e["args"][0].as_i64().unwrap();
        assert_eq!(
            e["ret"].as_i64().unwrap(),
            fib(n),
            "fib({n}) on tid {}",
            e["tid"]
        );
        assert_eq!(e["pid"], target.pid());
        tids.insert(e["tid"].as_u64().unwrap());
    }
    assert_eq!(tids.len(), 2, "both threads traced: {tids:?}");
}

#[test]
fn ret_str_reads_the_returned_string() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("calls.c", &[]);
    let target = spawn(&bin, &[]);
    let agent = Agent::start();
    // echo(s) returns s: "hello-N", the string it was given.
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={}&symbol=echo&args=str&ret=str:16&limit=20",
        target.pid()
    )));
    assert_eq!(summary["mechanism"], "uprobe");
    assert_eq!(events.len(), 20);
    for e in &events {
        let given = e["args"][0].as_str().unwrap();
        assert!(given.starts_with("hello-"), "{e}");
        assert_eq!(e["ret"].as_str().unwrap(), given, "{e}");
    }
}

/// The folded lines of a callers' flamegraph: stack (root first) → weight.
fn flame(agent: &Agent, query: &str) -> BTreeMap<String, u64> {
    let body = agent.get_ok(&format!("/v1/uprobe?{query}&aggregate=flame&format=folded"));
    parse_folded(&String::from_utf8_lossy(&body))
        .into_iter()
        .map(|(frames, weight)| (frames.join(";"), weight))
        .collect()
}

/// The weight of stacks that end with `suffix` (frames joined by `;`).
fn weight_ending(stacks: &BTreeMap<String, u64>, suffix: &str) -> u64 {
    stacks
        .iter()
        .filter(|(s, _)| s.ends_with(suffix))
        .map(|(_, w)| w)
        .sum()
}

#[test]
fn callers_flamegraphs_split_by_path() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    // Frame pointers, and none (DWARF from copied stack bytes).
    for (flags, unwind) in [
        (&[][..], "fp"),
        (
            &["-fomit-frame-pointer", "-mno-omit-leaf-frame-pointer"][..],
            "dwarf",
        ),
    ] {
        let sub = dir.path().join(unwind);
        std::fs::create_dir_all(&sub).unwrap();
        let mut extra = flags.to_vec();
        if unwind == "dwarf" {
            // compile_c asks for frame pointers; the later flag wins.
            extra = vec!["-fomit-frame-pointer", "-momit-leaf-frame-pointer"];
        }
        let bin = compile_c(&sub, "callers.c", &extra);
        let target = spawn(&bin, &[]);
        let pid = target.pid();
        let agent = Agent::start();
        let stacks = flame(
            &agent,
            &format!("pid={pid}&symbol=leaf&of=count&unwind={unwind}&limit=3000"),
        );
        let via_b = weight_ending(&stacks, "main;a;b;leaf");
        let via_c = weight_ending(&stacks, "main;c;leaf");
        let total: u64 = stacks.values().sum();
        assert_eq!(
            via_b + via_c,
            total,
            "{unwind}: every call on a full chain: {stacks:?}"
        );
        let share = via_b as f64 / total as f64;
        assert!(
            (share - 2.0 / 3.0).abs() < 0.05,
            "{unwind}: a->b->leaf has {share:.3} of the calls, not 2/3: {stacks:?}"
        );
        // The root is the process, as in CPU profiles.
        assert!(
            stacks.keys().all(|s| s.starts_with("callers;")),
            "{stacks:?}"
        );

        // malloc's bytes by calling path: 100 from path_small, 300 from
        // path_large, once each per round.
        let bytes = flame(
            &agent,
            &format!(
                "pid={pid}&symbol=malloc&module=libc.so.6&args=u64&of=arg0&unwind={unwind}&limit=2000"
            ),
        );
        let small = weight_ending(&bytes, "main;path_small;make;malloc");
        let large = weight_ending(&bytes, "main;path_large;make;malloc");
        assert!(small > 0 && large > 0, "{unwind}: {bytes:?}");
        let share = large as f64 / (small + large) as f64;
        assert!(
            (share - 0.75).abs() < 0.02,
            "{unwind}: path_large has {share:.3} of the bytes: {bytes:?}"
        );
    }
}

#[test]
fn stacks_come_with_each_event_and_callers_weigh_latency() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("callers.c", &[]);
    let target = spawn(&bin, &[]);
    let pid = target.pid();
    let agent = Agent::start();
    // Entry probes: the stack is taken at the first instruction, where the
    // caller is only at [sp]; it must still be there.
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=leaf&args=int&stack=user&limit=30"
    )));
    for e in &events {
        let stack: Vec<&str> = e["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(
            stack.starts_with(&["leaf", "b", "a", "main"])
                || stack.starts_with(&["leaf", "c", "main"]),
            "{stack:?}"
        );
    }
    // Return probes: the stack is taken after the return; the probed
    // function is still its leaf.
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=b&args=int&ret=int&stack=user&limit=10"
    )));
    for e in &events {
        assert_eq!(e["stack"][0], "b", "{e}");
        assert_eq!(e["stack"][1], "a", "{e}");
        assert_eq!(
            e["ret"].as_i64().unwrap(),
            (e["args"][0].as_i64().unwrap() + 1) * 2
        );
    }
    // Weighted by latency: every nanosecond lands on a full path.
    let stacks = flame(
        &agent,
        &format!("pid={pid}&symbol=leaf&args=int&ret=int&of=latency&limit=600"),
    );
    let total: u64 = stacks.values().sum();
    assert!(total > 0);
    assert_eq!(
        weight_ending(&stacks, "main;a;b;leaf") + weight_ending(&stacks, "main;c;leaf"),
        total,
        "{stacks:?}"
    );
    // Every format of /v1/profile, with the right units.
    for format in ["svg", "pprof", "speedscope", "json"] {
        let (code, body) = agent.get(&format!(
            "/v1/uprobe?pid={pid}&symbol=leaf&args=int&ret=int&aggregate=flame&of=latency&limit=100&format={format}"
        ));
        assert_eq!(code, 200, "{format}");
        assert!(!body.is_empty(), "{format}");
        if format == "json" {
            let doc: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(doc["meta"]["of"], "latency");
            assert_eq!(doc["meta"]["unit"], "nanoseconds");
            assert_eq!(doc["meta"]["samples"], 100);
        }
    }
}
