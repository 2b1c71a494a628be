//! Agent requests and what comes back: pure functions from command options
//! to a request path, from a file name to a format, and from the agent's
//! answers to terminal lines.

use serde_json::Value;

/// What a query value may keep as it is: RFC 3986's unreserved characters
/// and `:`, `,` and `*`, which the agent's parameters use (`events=app:*`,
/// `args=int,str`); everything else is percent-encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':')
    .remove(b',')
    .remove(b'*');

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// `PATH?k=v&…` with the values encoded; `None` values are left out.
pub fn path(endpoint: &str, params: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if query.is_empty() {
        endpoint.to_owned()
    } else {
        format!("{endpoint}?{}", query.join("&"))
    }
}

/// A format the output file's name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFormat {
    /// The agent's `format=` value.
    pub agent: &'static str,
}

/// `/v1/profile` format from `-o NAME`: `.svg`, `.pprof`/`.pb.gz`,
/// `.folded`/`.txt`, `.speedscope.json`, `.json`.
pub fn profile_format(file: &str) -> Option<OutputFormat> {
    let agent = if file.ends_with(".svg") {
        "svg"
    } else if file.ends_with(".pprof") || file.ends_with(".pb.gz") || file.ends_with(".pb") {
        "pprof"
    } else if file.ends_with(".folded") || file.ends_with(".txt") {
        "folded"
    } else if file.ends_with(".speedscope.json") {
        "speedscope"
    } else if file.ends_with(".json") {
        "json"
    } else {
        return None;
    };
    Some(OutputFormat { agent })
}

/// `/v1/lttng/record` format from `-o NAME`: `.tar.gz`/`.tgz` (CTF),
/// `.json`/`.ndjson`, `.txt`/`.log` (babeltrace2 text).
pub fn lttng_format(file: &str) -> Option<OutputFormat> {
    let agent = if file.ends_with(".tar.gz") || file.ends_with(".tgz") {
        "ctf"
    } else if file.ends_with(".json") || file.ends_with(".ndjson") {
        "json"
    } else if file.ends_with(".txt") || file.ends_with(".log") {
        "text"
    } else {
        return None;
    };
    Some(OutputFormat { agent })
}

/// The agent's `{"error", "hint"}` as two lines, or the raw body.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["error"].is_string() => match v["hint"].as_str() {
            Some(hint) => format!(
                "{}\n  hint: {hint}",
                v["error"].as_str().unwrap_or_default()
            ),
            None => v["error"].as_str().unwrap_or_default().to_owned(),
        },
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// One `/v1/uprobe` NDJSON line for a terminal:
/// `pid 7 tid 7 calc(5) = 16  1.2 µs`, or the summary.
pub fn trace_line(symbol: &str, line: &str) -> String {
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    if let Some(summary) = event.get("summary") {
        return format!("# {summary}");
    }
    let args = event["args"]
        .as_array()
        .map(|a| a.iter().map(value).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let mut out = format!("pid {} tid {} {symbol}({args})", event["pid"], event["tid"]);
    if let Some(ret) = event.get("ret") {
        out.push_str(&format!(" = {}", value(ret)));
    }
    if let Some(ns) = event["latency_ns"].as_u64() {
        out.push_str(&format!("  {:.1} µs", ns as f64 / 1000.0));
    }
    out
}

/// `/v1/processes` as a table.
pub fn process_table(body: &[u8]) -> Option<String> {
    let list: Vec<Value> = serde_json::from_slice(body).ok()?;
    let mut out = format!(
        "{:>7} {:>7} {:>6} {:<8} {}\n",
        "PID", "PPID", "CPU%", "RUNTIME", "COMMAND"
    );
    for p in &list {
        let command = p["cmdline"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| p["comm"].as_str().unwrap_or_default().to_owned());
        out.push_str(&format!(
            "{:>7} {:>7} {:>6.1} {:<8} {command}\n",
            p["pid"].as_u64().unwrap_or(0),
            p["ppid"].as_u64().unwrap_or(0),
            p["cpu_percent"].as_f64().unwrap_or(0.0),
            p["runtime"].as_str().unwrap_or("-"),
        ));
    }
    Some(out)
}

/// `/v1/lttng/events` as `PID PROCNAME EVENT (LOGLEVEL) fields`, or the
/// agent's hint when no app is registered.
pub fn tracepoint_lines(body: &[u8]) -> Option<String> {
    let listed: Value = serde_json::from_slice(body).ok()?;
    let events = listed["events"].as_array()?;
    if events.is_empty() {
        return Some(format!(
            "no tracepoints\n  hint: {}\n",
            listed["hint"].as_str().unwrap_or_default()
        ));
    }
    let mut out = String::new();
    for e in events {
        let fields: Vec<String> = e["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{}:{}",
                    f["name"].as_str().unwrap_or("?"),
                    f["type"].as_str().unwrap_or("?").to_ascii_lowercase()
                )
            })
            .collect();
        out.push_str(&format!(
            "{:>7} {:<16} {} ({}) {}\n",
            e["pid"].as_u64().unwrap_or(0),
            e["procname"].as_str().unwrap_or_default(),
            e["event"].as_str().unwrap_or_default(),
            e["loglevel"].as_str().unwrap_or_default(),
            fields.join(" ")
        ));
    }
    Some(out)
}

/// The one app process of the pod, for commands given no `--pid`. Our own
/// `curl` (run by exec in the sidecar, so it is listed) does not count.
pub fn only_app_pid(body: &[u8]) -> Result<u32, String> {
    let list: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| format!("cannot read /v1/processes: {e}"))?;
    let apps: Vec<&Value> = list.iter().filter(|p| p["comm"] != "curl").collect();
    match apps.as_slice() {
        [one] => one["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| "the process list has no pid".to_owned()),
        [] => Err(
            "the pod has no process to trace\n  hint: is shareProcessNamespace enabled?".to_owned(),
        ),
        many => Err(format!(
            "the pod has {} processes: pass --pid\n  hint: {}",
            many.len(),
            many.iter()
                .map(|p| format!("{} {}", p["pid"], p["comm"].as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `/v1/capabilities` as `ok`/`FAIL` lines with hints.
pub fn status_lines(body: &[u8]) -> Option<String> {
    let report: Value = serde_json::from_slice(body).ok()?;
    let mut out = format!("kernel {}\n", report["kernel"].as_str().unwrap_or("?"));
    let mut line = |name: &str, check: &Value| {
        let ok = check["ok"].as_bool().unwrap_or(false);
        out.push_str(&format!(
            "{:<5} {name:<15} {}\n",
            if ok { "ok" } else { "FAIL" },
            check["detail"].as_str().unwrap_or_default()
        ));
        if let Some(hint) = check["hint"].as_str().filter(|_| !ok) {
            out.push_str(&format!("      hint: {hint}\n"));
        }
    };
    for name in [
        "btf",
        "kallsyms",
        "bpf",
        "uprobes",
        "tracefs",
        "lttng_tools",
        "lttng_sessiond",
        "lttng_rundir",
        "lttng_shm",
    ] {
        // An older agent may not report every check.
        if let Some(check) = report.get(name) {
            line(name, check);
        }
    }
    for pair in report["perf_events"].as_array().into_iter().flatten() {
        line(
            &format!("perf {}", pair[0].as_str().unwrap_or("?")),
            &pair[1],
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_values_and_skip_absent_ones() {
        assert_eq!(
            path(
                "/v1/lttng/record",
                &[
                    ("events", Some("app:*,x:y".into())),
                    ("filter", Some("size > 4 && a == \"b\"".into())),
                    ("pid", None),
                    ("seconds", Some("10".into())),
                ]
            ),
            "/v1/lttng/record?events=app:*,x:y&filter=size%20%3E%204%20%26%26%20a%20%3D%3D%20%22b%22&seconds=10"
        );
        assert_eq!(path("/v1/processes", &[("pid", None)]), "/v1/processes");
    }

    #[test]
    fn output_names_pick_formats() {
        let agent = |f: Option<OutputFormat>| f.map(|f| f.agent);
        assert_eq!(agent(profile_format("flame.svg")), Some("svg"));
        assert_eq!(agent(profile_format("cpu.pprof")), Some("pprof"));
        assert_eq!(agent(profile_format("cpu.pb.gz")), Some("pprof"));
        assert_eq!(agent(profile_format("cpu.folded")), Some("folded"));
        assert_eq!(
            agent(profile_format("a.speedscope.json")),
            Some("speedscope")
        );
        assert_eq!(agent(profile_format("a.json")), Some("json"));
        assert_eq!(agent(profile_format("a.png")), None);
        assert_eq!(agent(lttng_format("trace.tar.gz")), Some("ctf"));
        assert_eq!(agent(lttng_format("events.ndjson")), Some("json"));
        assert_eq!(agent(lttng_format("trace.txt")), Some("text"));
        assert_eq!(agent(lttng_format("trace.zip")), None);
    }

    #[test]
    fn errors_read_like_the_agents_hints() {
        assert_eq!(
            error_message(
                br#"{"error":"pid 9 is not visible","hint":"is shareProcessNamespace enabled?"}"#
            ),
            "pid 9 is not visible\n  hint: is shareProcessNamespace enabled?"
        );
        assert_eq!(
            error_message(b"curl: (7) Couldn't connect\n"),
            "curl: (7) Couldn't connect"
        );
    }

    #[test]
    fn trace_lines_show_calls() {
        assert_eq!(
            trace_line(
                "calc",
                r#"{"ts_ns":1,"pid":7,"tid":8,"comm":"app","args":[5,"hi"],"ret":16,"latency_ns":1500}"#
            ),
            "pid 7 tid 8 calc(5, \"hi\") = 16  1.5 µs"
        );
        assert_eq!(
            trace_line("calc", r#"{"summary":{"events":1}}"#),
            r#"# {"events":1}"#
        );
    }

    #[test]
    fn tracepoints_are_listed_or_explained() {
        let listed = tracepoint_lines(
            br#"{"events":[{"event":"app:tick","loglevel":"TRACE_INFO","pid":7,"procname":"app","fields":[{"name":"seq","type":"INTEGER"}]}]}"#,
        )
        .unwrap_or_default();
        assert!(
            listed.contains("app:tick (TRACE_INFO) seq:integer"),
            "{listed}"
        );
        let none =
            tracepoint_lines(br#"{"events":[],"hint":"share /var/run/lttng"}"#).unwrap_or_default();
        assert!(none.contains("hint: share /var/run/lttng"), "{none}");
    }

    #[test]
    fn one_app_process_is_picked() {
        let one = br#"[{"pid":7,"comm":"app"},{"pid":40,"comm":"curl"}]"#;
        assert_eq!(only_app_pid(one), Ok(7));
        let two = br#"[{"pid":7,"comm":"app"},{"pid":9,"comm":"worker"}]"#;
        let err = only_app_pid(two).err().unwrap_or_default();
        assert!(
            err.contains("pass --pid") && err.contains("9 worker"),
            "{err}"
        );
        assert!(only_app_pid(b"[]").is_err());
    }

    #[test]
    fn tables() {
        let table = process_table(
            br#"[{"pid":7,"ppid":0,"comm":"app","cmdline":["/app","-x"],"cpu_percent":97.5,"runtime":"native"}]"#,
        )
        .unwrap_or_default();
        assert!(
            table.contains("/app -x") && table.contains("97.5"),
            "{table}"
        );
        let status = status_lines(
            br#"{"kernel":"6.18","btf":{"ok":true,"detail":"present"},"bpf":{"ok":false,"detail":"no CAP_BPF","hint":"add BPF"},"perf_events":[["cpu-clock",{"ok":true,"detail":"can be opened"}]]}"#,
        )
        .unwrap_or_default();
        assert!(
            status.contains("FAIL  bpf") && status.contains("hint: add BPF"),
            "{status}"
        );
        assert!(status.contains("ok    perf cpu-clock"), "{status}");
    }
}
