//! `/v1/dump` of native processes, for real: ELF core files taken with
//! ptrace, opened with readelf and gdb. Needs root (ptrace of another
//! process) and gdb (`scripts/deps.sh test`).
#![cfg(test)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Agent, Running, compile_c, dir_is_empty, readelf_notes, spawn_ready};

/// Starts the dump workload and waits until its threads exist.
fn start_app(dir: &Path) -> (Running, std::path::PathBuf) {
    let binary = compile_c(dir, "dump_app.c", &["-O0"]);
    (spawn_ready(&binary, &[]), binary)
}

/// `State:` and `TracerPid:` of `pid`.
fn state_and_tracer(pid: u32) -> (String, String) {
    (
        common::status_field(pid, "State"),
        common::status_field(pid, "TracerPid"),
    )
}

/// The app runs on, untraced, after a dump (whatever its outcome).
fn assert_running_untraced(pid: u32) {
    let (state, tracer) = state_and_tracer(pid);
    assert_eq!(tracer, "0", "pid {pid} is still traced");
    assert!(
        !state.starts_with('t') && !state.starts_with('T'),
        "pid {pid} is stopped: {state}"
    );
}

#[test]
fn native_core_files_open_in_gdb_with_the_right_backtrace() {
    common::privileged_test!();
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (app, binary) = start_app(dir.path());
    let pid = app.pid();
    for kind in ["heap", "full"] {
        let core = agent.dump_to(dir.path(), pid, kind);
        assert_running_untraced(pid);
        let notes = readelf_notes(&core);
        assert_eq!(notes.matches("NT_PRSTATUS").count(), 4, "{kind}: {notes}");
        assert!(
            notes.contains("NT_FILE") && notes.contains("NT_AUXV"),
            "{notes}"
        );
        let gdb = Command::new("gdb")
            .args(["-batch", "-nx", "-ex", "bt"])
            .arg(&binary)
            .arg(&core)
            .output()
            .expect("gdb runs");
        let bt = String::from_utf8_lossy(&gdb.stdout);
        // gdb prints frame #0 when it loads the core, then the backtrace.
        let frame = |n: usize, name: &str| {
            bt.lines()
                .any(|l| l.starts_with(&format!("#{n} ")) && l.contains(&format!(" {name} (")))
        };
        assert!(
            frame(0, "tracecar_dump_innermost")
                && frame(1, "tracecar_dump_middle")
                && frame(2, "main"),
            "{kind}: gdb bt:\n{bt}\n{}",
            String::from_utf8_lossy(&gdb.stderr)
        );
        assert!(
            dir_is_empty(&agent.dumps),
            "{kind}: left in {:?}",
            agent.dumps
        );
    }
    // `full` has the code too; the default leaves it to the binary.
    let full = std::fs::metadata(dir.path().join("core.full"))
        .unwrap()
        .len();
    let heap = std::fs::metadata(dir.path().join("core.heap"))
        .unwrap()
        .len();
    assert!(full > heap, "full {full} <= heap {heap}");
}

#[test]
fn a_refused_or_abandoned_native_dump_leaves_nothing_and_the_app_running() {
    common::privileged_test!();
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = start_app(dir.path());
    let pid = app.pid();
    // Over the limit: refused before the process is stopped.
    let (code, body) = agent.get(&format!("/v1/dump?pid={pid}&type=full&limit_mb=1"));
    assert_eq!(code, 413, "{}", String::from_utf8_lossy(&body));
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["hint"].as_str().unwrap().contains("limit_mb"),
        "{error}"
    );
    assert_running_untraced(pid);
    assert!(dir_is_empty(&agent.dumps));
    // A client that goes away mid-transfer.
    let mut client = agent.get_in_background(&format!("/v1/dump?pid={pid}&type=full"));
    std::thread::sleep(Duration::from_millis(100));
    let _ = client.child.kill();
    let _ = client.child.wait();
    assert!(
        agent.wait_for(Duration::from_secs(10), |a| dir_is_empty(&a.dumps)
            && state_and_tracer(pid).1 == "0"),
        "left: {:?}",
        std::fs::read_dir(&agent.dumps).map(|d| d.count())
    );
    assert_running_untraced(pid);
    // The agent does not dump itself.
    let (code, body) = agent.get(&format!("/v1/dump?pid={}", agent.process.pid()));
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    // A dump afterwards works.
    let (code, _) = agent.get(&format!("/v1/dump?pid={pid}&type=mini"));
    assert_eq!(code, 200);
    assert_running_untraced(pid);
}
