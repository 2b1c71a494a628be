//! Privileged tests of probes on JIT code: hardware execute breakpoints on
//! code in anonymous memory (C, .NET, Node, Java), by name and address,
//! with arguments, returns, tier-ups and the debug-register budget, through
//! the real agent binary.

#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn c_code_in_anonymous_memory_is_traced_by_breakpoints() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("jit_calls.c", &[]);
    let target = spawn(&bin, &[]);
    // A second process runs the same virtual address: it must not leak in.
    let other = spawn(&bin, &[]);
    let pid = target.pid();
    let agent = Agent::start();
    std::thread::sleep(Duration::from_millis(300));
    // /v1/symbols says how the JIT entry is probed.
    let symbols: Value =
        serde_json::from_slice(&agent.get_ok(&format!("/v1/symbols?pid={pid}&match=^jitted_calc")))
            .unwrap();
    let entry = &symbols["symbols"][0];
    assert_eq!(entry["source"], "perf-map", "{symbols}");
    assert_eq!(entry["probeable"], true);
    assert_eq!(entry["mechanism"], "breakpoint");

    // By name (the parameter list is optional), with the return value.
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=jitted_calc&args=int&ret=int&limit=200"
    )));
    assert_eq!(summary["mechanism"], "breakpoint", "{summary}");
    assert_eq!(summary["method"], "jitted_calc(int)");
    assert_eq!(events.len(), 200);
    common::assert_consecutive_args(&events);
    for e in &events {
        assert_eq!(e["pid"], pid, "only the probed process: {e}");
        assert_eq!(
            e["ret"].as_i64().unwrap(),
            e["args"][0].as_i64().unwrap() * 3 + 1
        );
        assert_eq!(e["code"]["address"], "0x7e0000000000");
    }
    // By address, with a stack (named from the perf map down to main).
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&address=0x7e0000000000&args=int&limit=5&stack=user"
    )));
    assert_eq!(summary["mechanism"], "breakpoint");
    for e in &events {
        let stack: Vec<&str> = e["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(&stack[..2], ["jitted_calc(int)", "main"], "{e}");
    }
    drop(other);

    // A client that goes away: every perf event and BPF object is closed.
    assert_eq!(agent.kernel_fds(), 0);
    let client = agent.get_in_background(&format!(
        "/v1/uprobe?pid={pid}&symbol=jitted_calc&args=int&ret=int&seconds=60"
    ));
    // Opened a CPU at a time: wait for all of them (waiting for the first
    // two, the count could be taken between two CPUs on a slow machine).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        agent.wait_for(Duration::from_secs(10), |a| a.perf_fds() >= 2 * cpus),
        "the breakpoints were not opened on every CPU: {} perf fds",
        agent.perf_fds()
    );
    assert_eq!(agent.perf_fds(), 2 * cpus, "entry and ret, on every CPU");
    drop(client);
    agent.assert_released();
}

#[test]
fn breakpoints_count_every_call_from_every_thread() {
    common::privileged_test!();
    let Workload { dir, bin } = Workload::c("jit_calls.c", &[]);
    // 100,000 calls on two threads, started after the probe is attached,
    // as fast as they go: on a fast machine that is over the default cap
    // of 100,000 calls a second (`rate`, tested in uprobe.rs), which this
    // test lifts, since it counts every call.
    let child = Command::new(&bin)
        .args(["count", "100000", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut target = Running { child };
    let pid = target.pid();
    let agent = Agent::start();
    std::thread::sleep(Duration::from_millis(300));
    let (mut client, out) = agent.stream_attached(
        &format!("/v1/uprobe?pid={pid}&symbol=jitted_calc&args=int&ret=int&seconds=8&rate=1000000"),
        dir.path(),
        "out",
    );
    common::signal(pid, "USR1");
    let mut made = String::new();
    use std::io::Read as _;
    let mut stdout = target.child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        made.push(byte[0] as char);
    }
    assert_eq!(made, "100000");
    client.child.wait().unwrap();
    let (events, summary) = probe_lines(&std::fs::read(&out).unwrap());
    assert_eq!(summary["calls"], 100_000, "{summary}");
    assert_eq!(summary["events"], 100_000);
    assert_eq!(
        (summary["lost"].as_u64(), summary["pending"].as_u64()),
        (Some(0), Some(0))
    );
    let mut tids = std::collections::BTreeSet::new();
    for e in &events {
        assert_eq!(
            e["ret"].as_i64().unwrap(),
            e["args"][0].as_i64().unwrap() * 3 + 1
        );
        tids.insert(e["tid"].as_u64().unwrap());
    }
    assert_eq!(tids.len(), 2, "both threads: {tids:?}");
}

#[test]
fn debug_registers_that_run_out_get_409_naming_their_users() {
    common::privileged_test!();
    let Workload { dir, bin } = Workload::c("jit_calls.c", &[]);
    let target = spawn(&bin, &[]);
    let pid = target.pid();
    let agent = Agent::start();
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("/v1/uprobe?pid={pid}&symbol=jitted_calc&args=int&ret=int&seconds=60");
    // Two probes with returns hold all four registers of every CPU.
    let clients: Vec<Running> = (0..2)
        .map(|n| {
            agent
                .stream_attached(&url, dir.path(), &format!("probe-{n}"))
                .0
        })
        .collect();
    let (code, body) = agent.get(&url);
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(message.contains("4 per CPU"), "{error}");
    assert_eq!(
        message
            .matches("jitted_calc(int) at 0x7e0000000000")
            .count(),
        4,
        "the four users are named: {error}"
    );
    // The refused request left nothing open, and the others still run.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(agent.perf_fds(), 4 * cpus);
    drop(clients);
    agent.assert_released();
    // Freed: a new probe attaches.
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=jitted_calc&args=int&ret=int&limit=3"
    )));
    assert_eq!(events.len(), 3);
}

#[test]
fn versions_beyond_the_debug_registers_are_skipped_not_refused() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("jit_calls.c", &[]);
    // Three versions of one method; with ret= each takes two registers.
    let target = spawn(&bin, &["tiers"]);
    let pid = target.pid();
    let agent = Agent::start();
    std::thread::sleep(Duration::from_millis(300));
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=jitted_calc&args=int&ret=int&limit=20"
    )));
    assert_eq!(events.len(), 20, "{summary}");
    for e in &events {
        assert_eq!(e["code"]["tier"], "OptimizedTier1", "{e}");
        assert_eq!(
            e["ret"].as_i64().unwrap(),
            e["args"][0].as_i64().unwrap() * 3 + 1
        );
    }
    let versions = summary["versions"].as_array().unwrap();
    let by_tier = |tier: &str| {
        versions
            .iter()
            .find(|v| v["tier"] == tier)
            .unwrap_or_else(|| panic!("{tier}: {summary}"))
    };
    // The most optimized first, as many as the registers hold.
    assert_eq!(by_tier("OptimizedTier1")["breakpoints"], 2);
    assert_eq!(by_tier("MinOptJitted")["breakpoints"], 2);
    let skipped = by_tier("QuickJitted");
    assert_eq!(skipped["breakpoints"], 0);
    assert!(
        skipped["note"]
            .as_str()
            .is_some_and(|n| n.contains("not probed")),
        "{skipped}"
    );
}

/// fib(n) with fib(0) = 0, fib(1) = 1.
fn fib(n: i64) -> i64 {
    (0..n).fold((0i64, 1i64), |(a, b), _| (b, a + b)).0
}

#[test]
fn dotnet_inlined_method_says_it_has_no_code_and_where_it_is_called() {
    common::privileged_test!();
    // Tiered compilation off: Run is compiled optimized at its first call,
    // with Add inlined, and Add never gets code of its own.
    let app = spawn_dotnet(
        &["inline"],
        &[
            ("COMPlus_TieredCompilation", "0"),
            ("DOTNET_TieredCompilation", "0"),
        ],
    );
    let pid = app.pid();
    let agent = Agent::start();
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = agent.get(&format!(
        "/v1/uprobe?pid={pid}&symbol=Tracecar.Sample.Inlined.Add&args=arg0:int&limit=1"
    ));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 404, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.starts_with("Tracecar.Sample.Inlined.Add (in ")
            && message.contains("App.dll) has no code of its own"),
        "{error}"
    );
    let hint = error["hint"].as_str().unwrap();
    assert!(
        hint.starts_with(
            "probe a caller that has code (where it is inlined): Tracecar.Sample.Inlined.Run;"
        ),
        "{error}"
    );
    // The caller it names can be probed (Run loops forever: no call comes
    // in a second, but the breakpoint is on its code).
    let (_, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=Tracecar.Sample.Inlined.Run&limit=1&seconds=1"
    )));
    assert_eq!(summary["mechanism"], "breakpoint", "{summary}");
    // A name no assembly declares keeps the closest names.
    let (code, body) = agent.get(&format!(
        "/v1/uprobe?pid={pid}&symbol=Tracecar.Sample.Inlined.Subtract&limit=1"
    ));
    assert_eq!(code, 404);
    assert!(
        String::from_utf8_lossy(&body).contains("closest names"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn dotnet_methods_are_traced_by_name_without_a_restart() {
    common::privileged_test!();
    let mut app = spawn_dotnet(&["seed"], &[]);
    let pid = app.pid();
    let agent = Agent::start();
    // The seed's first example: an instance method's int argument (arg1:
    // `this` is arg0) and int return.
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=FibonacciProvider::calculateFibonacciValue&args=arg1:int&ret=int&limit=4"
    )));
    assert_eq!(summary["mechanism"], "breakpoint", "{summary}");
    assert_eq!(
        summary["method"],
        "Tracecar.Sample.Seed.FibonacciProvider.calculateFibonacciValue(int32)"
    );
    assert_eq!(summary["versions"][0]["source"], "dotnet-runtime");
    assert_eq!(events.len(), 4);
    let mut last = None;
    for e in &events {
        let n = e["args"][0].as_i64().unwrap();
        assert_eq!(e["ret"].as_i64().unwrap(), fib(n), "{e}");
        if let Some(last) = last {
            assert_eq!(n, (last + 1) % 30, "consecutive calls");
        }
        last = Some(n);
    }

    // The second: a string argument, its length and UTF-16 characters,
    // and the returned string's. The app calls it twice a second; it goes
    // fast on a line, and the runtime tiers the method up meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let (mut client, out) = agent.stream_attached(
        &format!(
            "/v1/uprobe?pid={pid}&symbol=EchoProvider.calculateEchoValue&args=arg1%2B8:u32,arg1%2B12:utf16:32&ret=ret%2B12:utf16:32&seconds=6"
        ),
        dir.path(),
        "echo",
    );
    std::thread::sleep(Duration::from_millis(1500));
    app.send_line();
    client.child.wait().unwrap();
    let (events, summary) = probe_lines(&std::fs::read(&out).unwrap());
    let mut by_tier: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        let text = e["args"][1].as_str().unwrap();
        assert!(text.starts_with("req-"), "{e}");
        assert_eq!(e["args"][0].as_u64().unwrap() as usize, text.len(), "{e}");
        assert_eq!(e["ret"].as_str().unwrap(), format!("{text}!"), "{e}");
        *by_tier
            .entry(e["code"]["tier"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    // Traced before and after the tier-up, as one method.
    assert!(
        by_tier.get("QuickJitted").is_some_and(|n| *n >= 2),
        "{by_tier:?} {summary}"
    );
    assert!(
        by_tier.get("OptimizedTier1").is_some_and(|n| *n >= 100),
        "{by_tier:?} {summary}"
    );
    let versions = summary["versions"].as_array().unwrap();
    let tier1 = versions
        .iter()
        .find(|v| v["tier"] == "OptimizedTier1")
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(
        tier1["since_seconds"].as_f64().unwrap() > 0.0,
        "found during the session"
    );
    assert_eq!(tier1["breakpoints"], 2, "entry and ret");
}

#[test]
fn node_functions_are_traced_by_name_with_small_integers() {
    common::privileged_test!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads/js_args.js");
    let child = Command::new("node")
        .arg(script)
        .env("NODE_OPTIONS", tracecar_api::presets::NODE_OPTIONS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let workload = Running { child };
    let pid = workload.pid();
    let agent = Agent::start();
    // Until V8 has compiled it (and named it in the perf map).
    let mut found = false;
    for _ in 0..40 {
        let doc: Value = serde_json::from_slice(
            &agent.get_ok(&format!("/v1/symbols?pid={pid}&match=tracecarJsWork")),
        )
        .unwrap();
        if doc["symbols"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["mechanism"] == "breakpoint"))
        {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(found, "tracecarJsWork never compiled");
    // Arguments on V8's stack, as small integers: (k, 2k).
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=tracecarJsWork&args=smi,smi&limit=50"
    )));
    assert_eq!(summary["abi"], "v8", "{summary}");
    assert_eq!(events.len(), 50);
    for e in &events {
        let k = e["args"][0].as_i64().unwrap();
        assert!((0..1000).contains(&k), "{e}");
        assert_eq!(e["args"][1].as_i64().unwrap(), 2 * k, "{e}");
    }
}

#[test]
fn java_methods_are_traced_by_name_in_hotspot_registers() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    compile_java(dir.path(), "JavaArgs");
    let child = Command::new("java")
        .args([
            "-XX:CompileCommand=quiet",
            "-XX:CompileCommand=dontinline,JavaArgs::*",
            "-cp",
        ])
        .arg(dir.path())
        .arg("JavaArgs")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("java starts");
    let workload = Running { child };
    let pid = workload.pid();
    let agent = Agent::start();
    // Once both methods are compiled, the JVM writes its perf map on
    // request.
    let mut named = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("jcmd")
            .args([&pid.to_string(), "Compiler.perfmap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let map = std::fs::read_to_string(format!("/tmp/perf-{pid}.map")).unwrap_or_default();
        if map.contains("JavaArgs.scaled(int)") && map.contains("JavaArgs.twice(int)") {
            named = true;
            break;
        }
    }
    assert!(named, "the JIT did not compile the methods");
    // A static method: argument 0 in rsi (HotSpot's first register).
    let (events, summary) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=JavaArgs.twice&args=int&ret=int&limit=20"
    )));
    assert_eq!(summary["abi"], "java", "{summary}");
    for e in &events {
        let n = e["args"][0].as_i64().unwrap();
        assert!((0..1000).contains(&n), "{e}");
        assert_eq!(e["ret"].as_i64().unwrap(), 2 * n, "{e}");
    }
    // An instance method: `this` is argument 0, entered at its verified
    // entry (past the inline-cache check).
    let (events, _) = probe_lines(&agent.get_ok(&format!(
        "/v1/uprobe?pid={pid}&symbol=JavaArgs.scaled&args=arg1:int&ret=int&limit=20"
    )));
    assert_eq!(events.len(), 20);
    for e in &events {
        let n = e["args"][0].as_i64().unwrap();
        assert_eq!(e["ret"].as_i64().unwrap(), 5 * n + 3, "{e}");
    }
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
}
