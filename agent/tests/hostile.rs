//! Privileged tests of what an app can plant for the root agent in the
//! directories it writes: its own /tmp (a tmpfs in its own mount
//! namespace here, as in a container) and the shared /tmp.
//!
//! Each test first shows that the legitimate file is used, so that a
//! refusal is the agent's doing and not a wrong path.

#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// `sleep` with a /tmp of its own; its perf map path as the agent would
/// reach it through `/proc/PID/root`.
fn app_with_private_tmp() -> (Running, PathBuf) {
    let child = with_private_tmp("sleep", &["600"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let app = Running { child };
    let pid = app.pid();
    // unshare, then sh, then sleep, all by exec.
    wait_until_it_maps(pid, "/sleep");
    let map = PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{pid}.map"));
    (app, map)
}

fn symbols(agent: &Agent, pid: u32, pattern: &str) -> serde_json::Value {
    serde_json::from_slice(&agent.get_ok(&format!("/v1/symbols?pid={pid}&match={pattern}")))
        .unwrap()
}

fn names(listing: &serde_json::Value) -> Vec<String> {
    listing["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn refused(listing: &serde_json::Value) -> String {
    listing["refused"].to_string()
}

fn replace(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_symlinked_perf_map_is_not_followed_into_the_agents_root() {
    common::privileged_test!();
    let agent = Agent::start();
    let (app, map) = app_with_private_tmp();
    let pid = app.pid();
    // The legitimate case: the app's own map is read.
    std::fs::write(&map, "7e0000001000 10 app_own_method\n").unwrap();
    let listing = symbols(&agent, pid, "_method$");
    assert_eq!(names(&listing), ["app_own_method"], "{listing}");

    // A file that exists in the agent's /tmp only (the app's /tmp is its
    // own tmpfs), then /etc/shadow.
    let secret = tempfile::tempdir_in("/tmp").unwrap();
    let secret_map = secret.path().join("secret.map");
    std::fs::write(&secret_map, "7e0000002000 10 agent_secret_method\n").unwrap();
    for target in [secret_map.as_path(), Path::new("/etc/shadow")] {
        replace(&map);
        std::os::unix::fs::symlink(target, &map).unwrap();
        let listing = symbols(&agent, pid, "_method$");
        let body = listing.to_string();
        assert!(
            !body.contains("agent_secret_method") && !body.contains("root:"),
            "nothing of {} is returned: {body}",
            target.display()
        );
        assert!(names(&listing).is_empty(), "{:?}", names(&listing));
        assert!(
            refused(&listing).contains("symbolic link"),
            "the refusal is reported: {}",
            refused(&listing)
        );
        let entry = agent.process(pid);
        assert!(entry["perf_map"].is_null(), "{entry}");
    }

    // A map another user planted for this (root) process.
    replace(&map);
    std::fs::write(&map, "7e0000001000 10 planted_method\n").unwrap();
    std::os::unix::fs::chown(&map, Some(4242), Some(4242)).unwrap();
    let listing = symbols(&agent, pid, "_method$");
    assert!(names(&listing).is_empty(), "{:?}", names(&listing));
    assert!(
        refused(&listing).contains("uid 4242"),
        "{}",
        refused(&listing)
    );
}

#[test]
fn a_huge_sparse_perf_map_and_a_fifo_are_refused_without_reading() {
    common::privileged_test!();
    let agent = Agent::start();
    let (app, map) = app_with_private_tmp();
    let pid = app.pid();
    let hwm_before = common::status_kib(agent.process.pid(), "VmHWM");

    // 10 GiB, all holes but the first line.
    {
        let file = std::fs::File::create(&map).unwrap();
        use std::io::Write as _;
        (&file).write_all(b"7e0000001000 10 huge_method\n").unwrap();
        file.set_len(10 << 30).unwrap();
    }
    let started = Instant::now();
    let listing = symbols(&agent, pid, "_method$");
    assert!(names(&listing).is_empty(), "{:?}", names(&listing));
    assert!(
        refused(&listing).contains("over the agent's limit"),
        "{}",
        refused(&listing)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused before reading: {:?}",
        started.elapsed()
    );
    let hwm = common::status_kib(agent.process.pid(), "VmHWM");
    assert!(
        hwm < hwm_before + 64 * 1024,
        "the agent's peak RSS went from {hwm_before} KiB to {hwm} KiB"
    );

    // A FIFO that nobody writes: opening it for reading would block.
    replace(&map);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &map,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let started = Instant::now();
    let listing = symbols(&agent, pid, "_method$");
    assert!(refused(&listing).contains("FIFO"), "{}", refused(&listing));
    assert!(started.elapsed() < Duration::from_secs(5));
    // A profile of the process with the FIFO in place completes too.
    let (code, body) = agent.get(&format!("/v1/profile?pid={pid}&seconds=1&format=folded"));
    assert!(
        code == 200 || code == 422,
        "{code}: {}",
        String::from_utf8_lossy(&body)
    );
    agent.assert_released();
}

#[test]
fn a_symlinked_dotnet_socket_is_refused() {
    common::privileged_test!();
    let agent = Agent::start();
    let app = spawn_dotnet(&["serve"], &[]);
    let pid = app.pid();
    let socket = wait_for_dotnet_socket(pid);
    let counters = format!("/v1/dotnet/counters?pid={pid}&seconds=1");
    // The legitimate socket works.
    let (code, body) = agent.get(&counters);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));

    // The socket's name now a symlink to the same socket.
    let real = socket.with_extension("real");
    std::fs::rename(&socket, &real).unwrap();
    std::os::unix::fs::symlink(&real, &socket).unwrap();
    let (code, body) = agent.get(&counters);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("symbolic link"), "{body}");

    // Restored, it works again.
    std::fs::remove_file(&socket).unwrap();
    std::fs::rename(&real, &socket).unwrap();
    let (code, body) = agent.get(&counters);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    agent.assert_released();
}

fn wait_for_dotnet_socket(pid: u32) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_dir("/tmp").unwrap().flatten().find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("dotnet-diagnostic-{pid}-")))
        });
        if let Some(entry) = found {
            return entry.path();
        }
        assert!(Instant::now() < deadline, "no diagnostic socket for {pid}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_privileged_test_knows_its_own_name() {
    assert_eq!(common::test_name!(), "a_privileged_test_knows_its_own_name");
}
