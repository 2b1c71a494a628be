//! What the agent answers, as terminal lines: pure functions from a
//! response body (or one NDJSON line of it) to text. The requests are built
//! in [`crate::request`].

use serde_json::Value;
use tracecar_api::SummaryLine;
use tracecar_api::capabilities::Report;
use tracecar_api::lttng::Tracepoints;
use tracecar_api::process::ProcessInfo;
use tracecar_api::uprobe::ProbeEvent;

/// One `/v1/dotnet/exceptions` line for a terminal, as .NET prints an
/// exception (`Type: message` and `   at Frame` lines); the summary as
/// `# N exceptions` and one `count  Type at site` line per site.
pub fn exception_lines(line: &str) -> String {
    use tracecar_api::dotnet::{ExceptionEvent, ExceptionsSummary};
    let summary = serde_json::from_str::<SummaryLine<ExceptionsSummary>>(line)
        .map(|l| l.summary)
        .or_else(|_| serde_json::from_str::<ExceptionsSummary>(line));
    if let Ok(summary) = summary {
        let mut out = format!(
            "# {} exceptions in {} s ({})",
            summary.exceptions, summary.seconds, summary.stopped
        );
        for site in &summary.by_site {
            out.push_str(&format!(
                "\n{:>8}  {} at {}",
                site.count, site.kind, site.site
            ));
        }
        return out;
    }
    match serde_json::from_str::<ExceptionEvent>(line) {
        Ok(e) => {
            let mut out = format!("{}: {} (tid {})", e.kind, e.message, e.tid);
            for frame in &e.stack {
                out.push_str(&format!("\n   at {frame}"));
            }
            out
        }
        Err(_) => line.to_owned(),
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// One `/v1/uprobe` NDJSON line for a terminal:
/// `pid 7 tid 7 calc(5) = 16  1.2 µs`, with the stack under it (innermost
/// frame first) and the code version of a JIT method; or the summary.
pub fn trace_line(symbol: &str, line: &str) -> String {
    if let Ok(SummaryLine { summary }) = serde_json::from_str::<SummaryLine<Value>>(line) {
        return format!("# {summary}");
    }
    let Ok(event) = serde_json::from_str::<ProbeEvent>(line) else {
        return line.to_owned();
    };
    let args: Vec<String> = event.args.iter().map(value).collect();
    let mut out = format!(
        "pid {} tid {} {symbol}({})",
        event.pid,
        event.tid,
        args.join(", ")
    );
    if let Some(ret) = &event.ret {
        out.push_str(&format!(" = {}", value(ret)));
    }
    if let Some(ns) = event.latency_ns {
        out.push_str(&format!("  {:.1} µs", ns as f64 / 1000.0));
    }
    if let Some(code) = &event.code {
        out.push_str(&format!(
            "  [{}{}]",
            code.address,
            code.tier
                .as_deref()
                .map_or_else(String::new, |t| format!(" {t}"))
        ));
    }
    for frame in event.stack.iter().flatten() {
        out.push_str("\n    ");
        out.push_str(frame);
    }
    out
}

/// `/v1/processes` as a table.
pub fn process_table(body: &[u8]) -> Option<String> {
    let list: Vec<ProcessInfo> = serde_json::from_slice(body).ok()?;
    let mut out = format!(
        "{:>7} {:>7} {:>6} {:<14} {}\n",
        "PID", "PPID", "CPU%", "RUNTIME", "COMMAND"
    );
    for p in &list {
        // `dotnet 3.1.23`: the runtime's version where the agent knows it.
        let runtime = match p.dotnet.as_ref().and_then(|d| d.runtime_version.as_deref()) {
            Some(version) => format!("{} {version}", p.runtime.name()),
            None => p.runtime.name().to_string(),
        };
        out.push_str(&format!(
            "{:>7} {:>7} {:>6.1} {:<14} {}\n",
            p.pid,
            p.ppid,
            p.cpu_percent,
            runtime,
            p.command(),
        ));
    }
    Some(out)
}

/// `/v1/rules` as a table: each rule, its trigger and actions, and what
/// it has done (held back: by limit).
pub fn rules_table(body: &[u8]) -> Option<String> {
    let rules: Vec<tracecar_api::rules::RuleStatus> = serde_json::from_slice(body).ok()?;
    if rules.is_empty() {
        return Some(
            "no rules in force\n  hint: kubectl tracecar rules add TARGET -f rules.yaml\n"
                .to_owned(),
        );
    }
    let mut out = String::new();
    for rule in &rules {
        let t = &rule.tally;
        let held: Vec<String> = t
            .held_back
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!(
            "{} ({})\n  when    {}\n  do      {}\n  fired {}, ran {}, held back {}, failed {}, artifacts {}\n",
            rule.name,
            rule.source,
            rule.trigger,
            if rule.actions.is_empty() { "(record only)".to_owned() } else { rule.actions.join(", then ") },
            t.fired,
            t.ran,
            if held.is_empty() { "0".to_owned() } else { held.join(", ") },
            t.failed,
            t.artifacts,
        ));
        if let Some(error) = &t.last_error {
            out.push_str(&format!("  last error: {error}\n"));
        }
    }
    Some(out)
}

/// `/v1/artifacts` as a table, oldest first.
pub fn artifacts_table(artifacts: &[tracecar_api::rules::Artifact]) -> String {
    if artifacts.is_empty() {
        return "no artifacts\n".to_owned();
    }
    let mut out = format!(
        "{:<40} {:<24} {:>10} {:<8} {}\n",
        "ID", "FILE", "BYTES", "PID", "TRIGGER"
    );
    for a in artifacts {
        out.push_str(&format!(
            "{:<40} {:<24} {:>10} {:<8} {}\n",
            a.id,
            a.file_name,
            a.bytes,
            a.pid.map_or("-".to_owned(), |p| p.to_string()),
            a.trigger
        ));
    }
    out
}

/// `/v1/lttng/events` as `PID PROCNAME EVENT (LOGLEVEL) fields`, or the
/// agent's hint when no app is registered.
pub fn tracepoint_lines(body: &[u8]) -> Option<String> {
    let listed: Tracepoints = serde_json::from_slice(body).ok()?;
    let mut out = String::new();
    if listed.events.is_empty() {
        out.push_str(&format!(
            "no tracepoints\n  hint: {}\n",
            listed.hint.unwrap_or_default()
        ));
    }
    for e in &listed.events {
        let fields: Vec<String> = e
            .fields
            .iter()
            .map(|f| format!("{}:{}", f.name, f.kind.to_ascii_lowercase()))
            .collect();
        out.push_str(&format!(
            "{:>7} {:<16} {} ({}) {}\n",
            e.pid,
            e.procname,
            e.event,
            e.loglevel,
            fields.join(" ")
        ));
    }
    // Processes that cannot register, and why.
    for m in &listed.incompatible {
        out.push_str(&format!(
            "pid {} {} ({}): {}\n",
            m.pid,
            m.comm,
            m.library.as_deref().unwrap_or("no liblttng-ust"),
            m.reason
        ));
    }
    Some(out)
}

/// The one app process of the pod, for commands given no `--pid`. Our own
/// `curl` (run by exec in the sidecar, so it is listed) does not count.
pub fn only_app_pid(body: &[u8]) -> Result<u32, String> {
    let list: Vec<ProcessInfo> =
        serde_json::from_slice(body).map_err(|e| format!("cannot read /v1/processes: {e}"))?;
    let apps: Vec<&ProcessInfo> = list.iter().filter(|p| p.comm != "curl").collect();
    match apps.as_slice() {
        [one] => Ok(one.pid),
        [] => Err(
            "the pod has no process to trace\n  hint: is shareProcessNamespace enabled?".to_owned(),
        ),
        many => Err(format!(
            "the pod has {} processes: pass --pid\n  hint: {}",
            many.len(),
            many.iter()
                .map(|p| format!("{} {}", p.pid, p.comm))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `/v1/capabilities` as `ok`/`FAIL` lines with hints.
pub fn status_lines(body: &[u8]) -> Option<String> {
    let report: Report = serde_json::from_slice(body).ok()?;
    let features: Vec<&str> = report.features.iter().map(|f| f.as_str()).collect();
    let mut out = format!(
        "mode {}\nfeatures {}\nkernel {}\n",
        report.mode.describe(),
        if features.is_empty() {
            "none".to_owned()
        } else {
            features.join(",")
        },
        report.kernel
    );
    for (name, check) in report.checks() {
        out.push_str(&format!(
            "{:<5} {name:<15} {}\n",
            if check.ok { "ok" } else { "FAIL" },
            check.detail
        ));
        if let Some(hint) = check.hint.as_deref().filter(|_| !check.ok) {
            out.push_str(&format!("      hint: {hint}\n"));
        }
    }
    if let Some(continuous) = &report.continuous {
        for m in &continuous.modes {
            out.push_str(&format!(
                "continuous {} every {} s{}: {} windows, {} skipped, {} failed{}\n",
                m.mode,
                m.window_seconds,
                if m.mode == "cpu" {
                    format!(" at {} Hz", m.hz)
                } else {
                    String::new()
                },
                m.completed,
                m.skipped,
                m.failed,
                m.last_error
                    .as_deref()
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            ));
        }
        for p in &continuous.push {
            out.push_str(&format!(
                "push {} {}: {} sent, {} queued, {} dropped, {} rejected, {} retries{}\n",
                p.destination,
                p.url,
                p.sent,
                p.queued,
                p.dropped,
                p.rejected,
                p.retries,
                p.last_error
                    .as_deref()
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            ));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_artifacts_read_as_tables() {
        let rules = serde_json::to_vec(&[tracecar_api::fixtures::rule_status("hot")]).unwrap();
        let table = rules_table(&rules).unwrap();
        assert!(
            table.starts_with("hot (api)\n  when    cpu > 80 % for 3 s\n"),
            "{table}"
        );
        assert!(
            table.contains("profile mode=cpu seconds=5 format=pprof, then dump"),
            "{table}"
        );
        assert!(
            table.contains("fired 14, ran 2, held back busy 9, cooldown 3, failed 1, artifacts 3"),
            "{table}"
        );
        assert!(table.contains("last error: dump"), "{table}");
        assert!(rules_table(b"[]").unwrap().contains("rules add"));
        assert_eq!(rules_table(b"{}"), None);
        let listed = [tracecar_api::fixtures::artifact(
            "1765080000001-1-hot",
            "hot",
            "profile.pb.gz",
            4096,
        )];
        let table = artifacts_table(&listed);
        let row = table.lines().nth(1).unwrap();
        assert!(
            row.starts_with("1765080000001-1-hot")
                && row.contains("profile.pb.gz")
                && row.contains("4096")
                && row.ends_with("cpu 97.5 % ≥ 80 % for 3 s"),
            "{table}"
        );
        assert_eq!(artifacts_table(&[]), "no artifacts\n");
    }

    #[test]
    fn trace_lines_show_calls() {
        let event = ProbeEvent {
            ts_ns: 1,
            pid: 7,
            tid: 8,
            comm: "app".to_owned(),
            args: vec![5.into(), "hi".into()],
            ret: Some(16.into()),
            latency_ns: Some(1500),
            stack: None,
            code: None,
        };
        assert_eq!(
            trace_line("calc", &serde_json::to_string(&event).unwrap()),
            "pid 7 tid 8 calc(5, \"hi\") = 16  1.5 µs"
        );
        let jit = ProbeEvent {
            stack: Some(vec!["F".to_owned(), "Main".to_owned()]),
            code: Some(tracecar_api::uprobe::CodeVersion {
                address: "0x7f00".to_owned(),
                tier: Some("OptimizedTier1".to_owned()),
            }),
            ..event
        };
        assert_eq!(
            trace_line("F", &serde_json::to_string(&jit).unwrap()),
            "pid 7 tid 8 F(5, \"hi\") = 16  1.5 µs  [0x7f00 OptimizedTier1]\n    F\n    Main"
        );
        assert_eq!(
            trace_line("calc", r#"{"summary":{"events":1}}"#),
            r#"# {"events":1}"#
        );
    }

    #[test]
    fn tracepoints_are_listed_or_explained() {
        use tracecar_api::lttng::{Tracepoint, TracepointField};
        let listed = Tracepoints {
            registered_pids: vec![7],
            events: vec![Tracepoint {
                event: "app:tick".to_owned(),
                loglevel: "TRACE_INFO".to_owned(),
                fields: vec![TracepointField {
                    name: "seq".to_owned(),
                    kind: "INTEGER".to_owned(),
                }],
                pid: 7,
                procname: "app".to_owned(),
            }],
            hint: None,
            incompatible: vec![],
        };
        let lines = tracepoint_lines(&serde_json::to_vec(&listed).unwrap()).unwrap_or_default();
        assert!(
            lines.contains("app:tick (TRACE_INFO) seq:integer"),
            "{lines}"
        );
        let none = Tracepoints {
            registered_pids: vec![],
            events: vec![],
            hint: Some("share /var/run/lttng".to_owned()),
            incompatible: vec![tracecar_api::lttng::UstMismatch {
                pid: 9,
                comm: "dotnet".to_owned(),
                library: Some("liblttng-ust.so.0".to_owned()),
                reason: "the daemon refuses it".to_owned(),
            }],
        };
        let none = tracepoint_lines(&serde_json::to_vec(&none).unwrap()).unwrap_or_default();
        assert!(none.contains("hint: share /var/run/lttng"), "{none}");
        assert!(
            none.contains("pid 9 dotnet (liblttng-ust.so.0): the daemon refuses it"),
            "{none}"
        );
    }

    #[test]
    fn one_app_process_is_picked() {
        use tracecar_api::fixtures::process;
        let list = |l: &[ProcessInfo]| serde_json::to_vec(l).unwrap();
        let one = list(&[
            process(7, "app", &["/app"], 1.0),
            process(40, "curl", &[], 0.0),
        ]);
        assert_eq!(only_app_pid(&one), Ok(7));
        let two = list(&[
            process(7, "app", &["/app"], 1.0),
            process(9, "worker", &[], 0.0),
        ]);
        let err = only_app_pid(&two).err().unwrap_or_default();
        assert!(
            err.contains("pass --pid") && err.contains("9 worker"),
            "{err}"
        );
        assert!(only_app_pid(b"[]").is_err());
    }

    #[test]
    fn tables() {
        use tracecar_api::capabilities::Check;
        use tracecar_api::fixtures::{healthy_report, process};
        let body = serde_json::to_vec(&[process(7, "app", &["/app", "-x"], 97.5)]).unwrap();
        let table = process_table(&body).unwrap_or_default();
        assert!(
            table.contains("/app -x") && table.contains("97.5") && table.contains("native"),
            "{table}"
        );
        let mut report = healthy_report();
        report.bpf = Check::fail("no CAP_BPF", "add BPF");
        let status = status_lines(&serde_json::to_vec(&report).unwrap()).unwrap_or_default();
        assert!(
            status.contains("FAIL  bpf") && status.contains("hint: add BPF"),
            "{status}"
        );
        assert!(status.contains("ok    perf cpu-clock"), "{status}");
        assert!(status.contains("ok    lttng_rundir"), "{status}");
        // Only the failing check has its hint shown.
        assert_eq!(status.matches("hint: ").count(), 1, "{status}");
        assert!(
            status.contains("features profile,uprobe,lttng,dotnet,dump"),
            "{status}"
        );
        report.features = vec![tracecar_api::security::Feature::Profile];
        let status = status_lines(&serde_json::to_vec(&report).unwrap()).unwrap_or_default();
        assert!(status.contains("features profile\n"), "{status}");
        assert!(!status.contains("continuous"), "{status}");
        use tracecar_api::capabilities::{ContinuousMode, ContinuousReport, PushReport};
        report.continuous = Some(ContinuousReport {
            modes: vec![ContinuousMode {
                mode: "cpu".into(),
                window_seconds: 15,
                hz: 19,
                completed: 40,
                skipped: 1,
                failed: 0,
                last_error: None,
            }],
            push: vec![PushReport {
                destination: "otlp".into(),
                url: "http://c:4318/v1development/profiles".into(),
                queued: 4,
                sent: 30,
                dropped: 6,
                rejected: 0,
                retries: 12,
                last_error: Some("connection refused".into()),
            }],
        });
        let status = status_lines(&serde_json::to_vec(&report).unwrap()).unwrap_or_default();
        assert!(
            status
                .contains("continuous cpu every 15 s at 19 Hz: 40 windows, 1 skipped, 0 failed\n"),
            "{status}"
        );
        assert!(
            status.contains("push otlp http://c:4318/v1development/profiles: 30 sent, 4 queued, 6 dropped, 0 rejected, 12 retries (last: connection refused)\n"),
            "{status}"
        );
    }

    #[test]
    fn exceptions_read_like_dotnet_prints_them() {
        let line = r#"{"ts_ns":1,"pid":7,"tid":8,"type":"System.InvalidOperationException","message":"boom","hresult":"0x80131509","stack":["App.Fail(int32)","App.Run()"]}"#;
        assert_eq!(
            exception_lines(line),
            "System.InvalidOperationException: boom (tid 8)\n   at App.Fail(int32)\n   at App.Run()"
        );
        let summary = r#"{"exceptions":3,"by_site":[{"type":"E","site":"App.Fail(int32)","count":3}],"dropped":0,"stopped":"seconds","complete":true,"seconds":2.0}"#;
        let expected = "# 3 exceptions in 2 s (seconds)\n       3  E at App.Fail(int32)";
        assert_eq!(exception_lines(summary), expected);
        assert_eq!(
            exception_lines(&format!(r#"{{"summary":{summary}}}"#)),
            expected
        );
    }
}
