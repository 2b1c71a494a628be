//! Example answers, built from the types (feature `fixtures`, for tests).

use crate::capabilities::{Check, DaemonStatus, DirCheck, Owner, Report, SessiondCheck};
use crate::process::{ProcessInfo, Runtime};

/// A native process.
pub fn process(pid: u32, comm: &str, cmdline: &[&str], cpu_percent: f64) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 0,
        comm: comm.to_owned(),
        cmdline: cmdline.iter().map(|s| (*s).to_owned()).collect(),
        exe: cmdline.first().map(|s| (*s).to_owned()),
        uid: Some(1000),
        threads: 1,
        cpu_percent,
        runtime: Runtime::Native,
        perf_map: None,
        lttng_ust: None,
        dotnet: None,
    }
}

fn dir(path: &str) -> DirCheck {
    DirCheck {
        check: Check::ok(format!(
            "{path}: owner uid 0, gid 0, mode 0777; writable by the agent"
        )),
        path: path.to_owned(),
        uid: Some(0),
        gid: Some(0),
        mode: Some("0777".to_owned()),
        fix: None,
        missing_capability: None,
    }
}

/// A sidecar where everything works.
pub fn healthy_report() -> Report {
    Report {
        kernel: "6.18.0".to_owned(),
        mode: crate::capabilities::Mode::Sidecar,
        features: crate::security::Feature::ALL.to_vec(),
        btf: Check::ok("/sys/kernel/btf/vmlinux present"),
        perf_events: vec![("cpu-clock".to_owned(), Check::ok("can be opened"))],
        kallsyms: Check::ok("/proc/kallsyms has addresses"),
        bpf: Check::ok("CAP_BPF (or CAP_SYS_ADMIN) is effective"),
        uprobes: Check::ok("CAP_SYS_ADMIN is effective"),
        tracefs: Check::ok("/sys/kernel/tracing/uprobe_events"),
        lttng_tools: Check::ok("/usr/bin/lttng, /usr/bin/lttng-sessiond, /usr/bin/babeltrace2"),
        lttng_sessiond: SessiondCheck {
            check: Check::ok("lttng-sessiond pid 9, started by tracecar, serving /var/run/lttng"),
            status: Some(DaemonStatus {
                running: true,
                owner: Owner::Tracecar,
                pid: Some(9),
                starts: 1,
                last_error: None,
            }),
        },
        lttng_rundir: dir("/var/run/lttng"),
        lttng_shm: dir("/dev/shm"),
        lttng_ust_apps: Check::ok(
            "no process of the pod loads an LTTng-UST other than liblttng-ust.so.1",
        ),
        capabilities: ["BPF", "PERFMON", "SYS_ADMIN"].map(str::to_owned).to_vec(),
        memory: Some(crate::capabilities::MemoryCheck {
            check: Check::ok("holds 30 MiB of a 256 MiB limit (from --memory-limit)"),
            limit_bytes: Some(256 << 20),
            limit_from: Some("--memory-limit".to_owned()),
            used_bytes: 30 << 20,
            admit_percent: 70,
            stop_percent: 85,
        }),
        continuous: None,
        rules: None,
    }
}

/// A heap walk of 1,000 `App.Held` (32 bytes each) and the array holding
/// them.
pub fn heap_report(pid: u32) -> crate::dotnet::HeapReport {
    use crate::dotnet::{HeapReport, HeapType};
    HeapReport {
        pid,
        gc: 3,
        objects: 1001,
        bytes: 40_024,
        types: vec![
            HeapType {
                name: "App.Held".into(),
                count: 1000,
                bytes: 32_000,
            },
            HeapType {
                name: "App.Held[]".into(),
                count: 1,
                bytes: 8024,
            },
        ],
        complete: true,
        missing_events: 0,
        dropped: 0,
        seconds: 0.2,
    }
}

/// An artifact of `rule`, `bytes` long, kept at `started_unix_ms`.
pub fn artifact(id: &str, rule: &str, file_name: &str, bytes: u64) -> crate::rules::Artifact {
    crate::rules::Artifact {
        id: id.to_owned(),
        rule: rule.to_owned(),
        action: "profile mode=cpu seconds=5 format=pprof".to_owned(),
        trigger: "cpu 97.5 % ≥ 80 % for 3 s".to_owned(),
        value: 97.5,
        fired_unix_ms: 1_765_080_000_000,
        started_unix_ms: 1_765_080_000_001,
        ended_unix_ms: 1_765_080_005_000,
        pod: Some("web-1".to_owned()),
        pid: Some(7),
        comm: Some("app".to_owned()),
        cgroup: None,
        file_name: file_name.to_owned(),
        content_type: "application/octet-stream".to_owned(),
        bytes,
    }
}

/// A rule in force with a tally.
pub fn rule_status(name: &str) -> crate::rules::RuleStatus {
    let mut held_back = std::collections::BTreeMap::new();
    held_back.insert("cooldown".to_owned(), 3);
    held_back.insert("busy".to_owned(), 9);
    crate::rules::RuleStatus {
        name: name.to_owned(),
        source: "api".to_owned(),
        trigger: "cpu > 80 % for 3 s".to_owned(),
        actions: vec![
            "profile mode=cpu seconds=5 format=pprof".to_owned(),
            "dump type=mini limit_mb=4096".to_owned(),
        ],
        rule: serde_json::json!({"name": name}),
        tally: crate::rules::RuleTally {
            fired: 14,
            ran: 2,
            held_back,
            failed: 1,
            artifacts: 3,
            last_error: Some("dump type=mini limit_mb=4096: pid 7 is gone".to_owned()),
            last_fired_unix_ms: Some(1_765_080_000_000),
        },
    }
}
