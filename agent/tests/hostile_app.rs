//! Privileged tests of what a hostile app can do to the agent with what it
//! controls besides planted paths (`hostile.rs`): files beside its
//! binaries that a library would open, sockets that never accept, and a
//! fake runtime that streams garbage. Each request must answer promptly
//! with a result or a clear error, and the agent must stay small.

#![cfg(test)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `mkfifo PATH`.
fn fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The agent's peak resident memory (`VmHWM`), in KiB.
fn peak_kib(agent: &Agent) -> u64 {
    status_kib(agent.process.pid(), "VmHWM")
}

/// Sets the `ch_size` of section `name`'s compression header (an
/// `Elf64_Chdr` at the start of a `SHF_COMPRESSED` section) to `size`.
fn claim_uncompressed_size(binary: &Path, name: &str, size: u64) {
    let readelf = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(binary)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&readelf.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("{name} in {text}"));
    // [Nr] Name Type Address Off Size …: the offset follows the address.
    let fields: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    let offset = u64::from_str_radix(fields[3], 16).unwrap();
    let mut bytes = std::fs::read(binary).unwrap();
    let at = offset as usize + 8;
    bytes[at..at + 8].copy_from_slice(&size.to_le_bytes());
    std::fs::write(binary, bytes).unwrap();
}

#[test]
fn debug_files_planted_beside_a_binary_neither_hang_nor_feed_a_profile() {
    common::privileged_test!();
    // The binary lives in the shared /tmp, where the app writes anything.
    let planted = tempfile::tempdir_in("/tmp").unwrap();
    let built = compile_c(planted.path(), "planted_spin.c", &[]);
    let spin = planted.path().join("spin");
    // Compressed DWARF, a debug link to a file beside it, and a
    // compressed section claiming 4 EiB once inflated (a library that
    // trusted it would abort the agent allocating it).
    let debug = planted.path().join("spin.debug");
    std::fs::write(&debug, b"not debug info").unwrap();
    for args in [
        vec!["--compress-debug-sections=zlib".to_owned()],
        vec![format!("--add-gnu-debuglink={}", debug.display())],
    ] {
        let status = Command::new("objcopy")
            .args(&args)
            .arg(&built)
            .arg(&spin)
            .status()
            .unwrap();
        assert!(status.success(), "objcopy {args:?}");
        std::fs::copy(&spin, &built).unwrap();
    }
    claim_uncompressed_size(&spin, ".debug_info", 1 << 62);
    // Where debug readers look: FIFOs, which block whoever opens them.
    fifo(&debug);
    fifo(&planted.path().join("spin.dwp"));

    let app = spawn_ready(&spin, &[]);
    let agent = Agent::start();
    let started = Instant::now();
    let (code, body) = agent.get_within(
        &format!("/v1/profile?pid={}&seconds=3&format=folded", app.pid()),
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(took < Duration::from_secs(15), "the profile took {took:?}");
    let folded = parse_folded(&String::from_utf8_lossy(&body));
    assert!(
        samples_with(&folded, "spin_in_planted_binary") > 50,
        "the binary's own symbols name its frames: {folded:?}"
    );
    // The agent is up and answers the next request.
    assert_eq!(agent.get("/healthz").0, 200);
}

#[test]
fn a_diagnostic_socket_that_never_accepts_does_not_wedge_the_listing() {
    common::privileged_test!();
    let Workload { dir, bin: built } = Workload::c("never_accepts.c", &[]);
    // Named `dotnet`: the agent asks it about itself.
    let dotnet = dir.path().join("dotnet");
    std::fs::rename(&built, &dotnet).unwrap();
    let app = spawn_ready(&dotnet, &[]);
    let agent = Agent::start();
    // Three listings at once, as the issue saw: each answers, none hangs.
    let started = Instant::now();
    let listings: Vec<_> = (0..3)
        .map(|_| {
            let socket = agent.socket.clone();
            std::thread::spawn(move || {
                Command::new("curl")
                    .args(["-s", "--max-time", "30", "--unix-socket"])
                    .arg(socket)
                    .arg("http://localhost/v1/processes")
                    .output()
                    .unwrap()
                    .stdout
            })
        })
        .collect();
    for listing in listings {
        let body = listing.join().unwrap();
        let processes: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        let entry = processes
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == app.pid())
            .expect("the fake runtime is listed");
        let error = entry["dotnet"]["diagnostic_error"]
            .as_str()
            .unwrap_or_default();
        assert!(
            error.contains("took no connection") || error.contains("not asked"),
            "{entry}"
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "three listings took {took:?}"
    );
    // Nothing stays pinned: the next listing is as quick.
    let started = Instant::now();
    let (code, _) = agent.get_within("/v1/processes", Duration::from_secs(30));
    assert_eq!(code, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_fake_runtime_streaming_garbage_gets_an_error_and_does_not_grow_the_agent() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_runtime.py");
    let runtime = spawn_ready(
        "python3",
        &[script.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    let agent = Agent::start();
    let before = peak_kib(&agent);

    // Counters: no value ever comes, so the answer is an error that says
    // why, not an empty 200; it comes once the stream fails to decode.
    let started = Instant::now();
    let (code, body) = agent.get_within(
        &format!("/v1/dotnet/counters?pid={}&seconds=2", runtime.pid()),
        Duration::from_secs(60),
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 504, "{body}");
    assert!(body.contains("could not be decoded"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A JSON trace: the session stops at the corrupt object and says so.
    let started = Instant::now();
    let (code, body) = agent.get_within(
        &format!(
            "/v1/dotnet/trace?pid={}&seconds=5&providers=Microsoft-Windows-DotNETRuntime",
            runtime.pid()
        ),
        Duration::from_secs(60),
    );
    assert_eq!(code, 200);
    let lines = ndjson(&body);
    let summary = &lines.last().expect("a summary line")["summary"];
    assert!(
        summary["error"]
            .as_str()
            .unwrap_or_default()
            .contains("corrupt"),
        "{summary}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // The runtime sent at socket speed all along; the agent kept none of it.
    let grown = peak_kib(&agent).saturating_sub(before);
    assert!(grown < 64 << 10, "the agent's peak grew by {grown} KiB");
    assert_eq!(agent.get("/healthz").0, 200);
}
