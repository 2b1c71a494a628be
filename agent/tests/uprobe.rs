//! Privileged tests of the BPF layer: the real programs built by build.rs,
//! loaded with aya and attached to a compiled target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tracecar_agent::uprobe::attach::{Location, attach};
use tracecar_agent::uprobe::events::{
    Capture, Config, EVENT_HAS_RETURN, Event, FLAG_PAIRED, capture_kind,
};

/// The tests count the process's BPF fds, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    config.args[0] = Capture {
        kind: capture_kind::REG,
        reg: 0,
        len: 0,
        offset: 0,
    };
    config
}

fn collect(attached: &mut tracecar_agent::uprobe::attach::Attached, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.len() < n && Instant::now() < deadline {
        attached.drain(&mut events);
        std::thread::sleep(Duration::from_millis(10));
    }
    events
}

#[test]
fn entries_and_returns_pair_with_arguments() {
    if !privileged("entries_and_returns_pair_with_arguments") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c(dir.path(), "calls.c", &[]);
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
    for e in &events {
        let arg = e.regs[0] as i32;
        assert_eq!(e.flags & EVENT_HAS_RETURN, EVENT_HAS_RETURN);
        assert_eq!(e.ret as i32, arg * 3 + 1, "calc({arg})");
        assert_eq!(e.pid, target.pid(), "PID in the agent's namespace");
        assert_eq!(e.comm(), "calls");
        assert!(e.latency_ns > 0 && e.latency_ns < 1_000_000_000);
    }
    // Calls arrive in order: consecutive arguments.
    let args: Vec<i32> = events.iter().map(|e| e.regs[0] as i32).collect();
    assert!(
        args.windows(2).all(|w| w[1] == (w[0] + 1) % 1000),
        "{args:?}"
    );
    let (seen, lost) = attached.counters();
    assert!(seen as usize >= events.len());
    assert_eq!(lost, 0);
}

#[test]
fn recursion_pairs_each_return_with_its_own_entry() {
    if !privileged("recursion_pairs_each_return_with_its_own_entry") {
        return;
    }
    let _serial = serial();
    fn fib(n: i32) -> i32 {
        if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c(dir.path(), "calls.c", &[]);
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
    for e in &events {
        let n = e.regs[0] as i32;
        assert_eq!(
            e.ret as i32,
            fib(n),
            "fib({n}) paired with the wrong return"
        );
    }
}

#[test]
fn a_second_process_is_excluded_by_pid() {
    if !privileged("a_second_process_is_excluded_by_pid") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c(dir.path(), "calls.c", &[]);
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
        events.iter().all(|e| e.pid == traced.pid()),
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
    let pids: std::collections::BTreeSet<u32> = events.iter().map(|e| e.pid).collect();
    assert!(
        pids.contains(&traced.pid()) && pids.contains(&other.pid()),
        "{pids:?}"
    );
}

fn bpf_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t.contains("bpf") || t.contains("perf_event")
        })
        .count()
}

#[test]
fn strings_are_read_through_pointers_and_nothing_stays_attached() {
    if !privileged("strings_are_read_through_pointers_and_nothing_stays_attached") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c(dir.path(), "calls.c", &[]);
    let target = spawn(&bin, &[]);
    let mut config = int_arg_config();
    config.args[0] = Capture {
        kind: capture_kind::STR,
        reg: 0,
        len: 64,
        offset: 0,
    };
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
    for e in &events {
        let text = &e.data[0];
        let end = text.iter().position(|b| *b == 0).unwrap();
        let s = std::str::from_utf8(&text[..end]).unwrap();
        assert!(s.starts_with("hello-"), "{s:?}");
        // echo returns its argument.
        assert_eq!(e.ret, e.regs[0]);
    }
    drop(attached);
    assert_eq!(
        bpf_fds(),
        before,
        "BPF or perf fds left open after detaching"
    );
}
