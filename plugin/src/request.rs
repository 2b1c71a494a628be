//! Agent requests and what comes back: pure functions from command options
//! to a typed request (`tracecar_api::request`, which writes the path), from
//! a file name to a format, and from the agent's answers to terminal lines.

use serde_json::Value;
use tracecar_api::SummaryLine;
use tracecar_api::capabilities::Report;
use tracecar_api::lttng::Tracepoints;
use tracecar_api::process::ProcessInfo;
use tracecar_api::request::{
    CountersRequest, DotnetTraceRequest, DumpRequest, ExceptionsRequest, GcdumpRequest,
    LttngEventsRequest, LttngLiveRequest, LttngRecordRequest, ProfileRequest, Request as _,
    StacksRequest, UprobeRequest,
};
use tracecar_api::uprobe::ProbeEvent;

/// An option's value as request text.
fn text(value: Option<impl ToString>) -> Option<String> {
    value.map(|v| v.to_string())
}

/// What `kubectl tracecar profile` asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Profile<'a> {
    /// Capture length.
    pub seconds: u32,
    /// Samples per second.
    pub hz: Option<u32>,
    /// The processes.
    pub pid: Option<&'a str>,
    /// How stacks are walked.
    pub unwind: Option<&'a str>,
    /// `cpu`, `offcpu` or `wall`.
    pub mode: Option<&'a str>,
    /// Shortest block kept, in microseconds.
    pub min_block_us: Option<u32>,
    /// Thread states counted (`S`, `D`, `R`).
    pub state: Option<&'a str>,
    /// Switch-outs recorded per second at most.
    pub rate: Option<u32>,
    /// Per-thread roots.
    pub threads: bool,
}

/// `/v1/profile` for `kubectl tracecar profile`.
pub fn profile_path(profile: &Profile<'_>, format: OutputFormat) -> String {
    ProfileRequest {
        pid: text(profile.pid),
        seconds: text(Some(profile.seconds)),
        hz: text(profile.hz),
        unwind: text(profile.unwind),
        kernel: None,
        threads: profile.threads.then(|| "true".to_owned()),
        format: text(Some(format.agent)),
        mode: text(profile.mode),
        min_block_us: text(profile.min_block_us),
        state: text(profile.state),
        rate: text(profile.rate),
    }
    .path()
}

/// What `kubectl tracecar trace` asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trace<'a> {
    /// The function.
    pub symbol: Option<&'a str>,
    /// Or an address.
    pub address: Option<&'a str>,
    /// The module it is in.
    pub module: Option<&'a str>,
    /// Argument types.
    pub args: Option<&'a str>,
    /// The return type.
    pub ret: Option<&'a str>,
    /// The process.
    pub pid: &'a str,
    /// How long.
    pub seconds: u32,
    /// At most this many events.
    pub limit: Option<u64>,
    /// Stacks with each event.
    pub stack: bool,
    /// How stacks are walked.
    pub unwind: Option<&'a str>,
    /// The calling convention.
    pub abi: Option<&'a str>,
    /// A flamegraph of the callers, weighted by `of`, in this format.
    pub flame: Option<(OutputFormat, &'a str)>,
}

/// `/v1/uprobe` for `kubectl tracecar trace`.
pub fn trace_path(trace: &Trace<'_>) -> String {
    UprobeRequest {
        symbol: text(trace.symbol),
        address: text(trace.address),
        module: text(trace.module),
        pid: text(Some(trace.pid)),
        args: text(trace.args),
        ret: text(trace.ret),
        seconds: text(Some(trace.seconds)),
        limit: text(trace.limit),
        stack: (trace.stack && trace.flame.is_none()).then(|| "user".to_owned()),
        unwind: text(trace.unwind),
        abi: text(trace.abi),
        aggregate: trace.flame.map(|_| "flame".to_owned()),
        of: text(trace.flame.map(|(_, of)| of)),
        format: text(trace.flame.map(|(f, _)| f.agent)),
        ..UprobeRequest::default()
    }
    .path()
}

/// What `kubectl tracecar lttng` records.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// Event patterns.
    pub events: Option<&'a str>,
    /// Only these processes.
    pub pid: Option<&'a str>,
    /// An LTTng filter expression.
    pub filter: Option<&'a str>,
    /// A log level.
    pub loglevel: Option<&'a str>,
    /// How long.
    pub seconds: u32,
}

/// `/v1/lttng/events` for `kubectl tracecar lttng --list`.
pub fn lttng_events_path(pid: Option<&str>) -> String {
    LttngEventsRequest { pid: text(pid) }.path()
}

/// `/v1/lttng/live` for `kubectl tracecar lttng --live`.
pub fn lttng_live_path(session: &Session<'_>) -> String {
    live_request(session).path()
}

fn live_request(session: &Session<'_>) -> LttngLiveRequest {
    LttngLiveRequest {
        events: text(session.events),
        pid: text(session.pid),
        filter: text(session.filter),
        loglevel: text(session.loglevel),
        loglevel_only: None,
        seconds: text(Some(session.seconds)),
    }
}

/// `/v1/lttng/record` for `kubectl tracecar lttng -o FILE`.
pub fn lttng_record_path(session: &Session<'_>, format: OutputFormat) -> String {
    LttngRecordRequest {
        format: text(Some(format.agent)),
        ..live_request(session).into()
    }
    .path()
}

/// `/v1/dotnet/trace` for `kubectl tracecar dotnet-trace`.
pub fn dotnet_trace_path(
    pid: &str,
    providers: &str,
    seconds: u32,
    format: Option<OutputFormat>,
) -> String {
    DotnetTraceRequest {
        pid: text(Some(pid)),
        providers: text(Some(providers)),
        seconds: text(Some(seconds)),
        format: text(format.map(|f| f.agent)),
        ..DotnetTraceRequest::default()
    }
    .path()
}

/// `/v1/dotnet/trace` format from `-o NAME`: `.nettrace`, `.json`/`.ndjson`.
pub fn dotnet_trace_format(file: &str) -> Option<OutputFormat> {
    let agent = if file.ends_with(".nettrace") {
        "nettrace"
    } else if file.ends_with(".json") || file.ends_with(".ndjson") {
        "json"
    } else {
        return None;
    };
    Some(OutputFormat { agent })
}

/// `/v1/dotnet/counters` for `kubectl tracecar counters`.
pub fn counters_path(
    pid: &str,
    providers: Option<&str>,
    seconds: u32,
    interval: u32,
    prometheus: bool,
) -> String {
    CountersRequest {
        pid: text(Some(pid)),
        providers: text(providers),
        seconds: text(Some(seconds)),
        interval: text(Some(interval)),
        format: prometheus.then(|| "prometheus".to_owned()),
    }
    .path()
}

/// `/v1/dotnet/exceptions` for `kubectl tracecar exceptions`.
pub fn exceptions_path(pid: &str, seconds: u32, limit: Option<u32>, summary: bool) -> String {
    ExceptionsRequest {
        pid: text(Some(pid)),
        seconds: text(Some(seconds)),
        limit: text(limit),
        format: summary.then(|| "summary".to_owned()),
    }
    .path()
}

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

/// `/v1/dump` for `kubectl tracecar dump`.
pub fn dump_path(pid: &str, kind: Option<&str>) -> String {
    DumpRequest {
        pid: text(Some(pid)),
        r#type: text(kind),
        limit_mb: None,
    }
    .path()
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

/// `/v1/stacks` for `kubectl tracecar stacks`.
pub fn stacks_path(pid: &str, json: bool) -> String {
    StacksRequest {
        pid: text(Some(pid)),
        format: json.then(|| "json".to_owned()),
    }
    .path()
}

/// `/v1/dotnet/gcdump` format from `-o NAME`: `.pprof`/`.pb.gz`,
/// `.json`, `.txt` (the table).
pub fn gcdump_format(file: &str) -> Option<OutputFormat> {
    let agent = if file.ends_with(".pprof") || file.ends_with(".pb.gz") || file.ends_with(".pb") {
        "pprof"
    } else if file.ends_with(".json") {
        "json"
    } else if file.ends_with(".txt") {
        "table"
    } else {
        return None;
    };
    Some(OutputFormat { agent })
}

/// `/v1/dotnet/gcdump` for `kubectl tracecar gcdump`.
pub fn gcdump_path(pid: &str, seconds: u32, format: Option<OutputFormat>) -> String {
    GcdumpRequest {
        pid: text(Some(pid)),
        seconds: text(Some(seconds)),
        format: format.map(|f| f.agent.to_owned()),
    }
    .path()
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
    fn stacks_paths() {
        assert_eq!(stacks_path("7", false), "/v1/stacks?pid=7");
        assert_eq!(stacks_path("7", true), "/v1/stacks?pid=7&format=json");
    }

    #[test]
    fn gcdump_files_pick_the_format() {
        assert_eq!(
            gcdump_path("7", 30, None),
            "/v1/dotnet/gcdump?pid=7&seconds=30"
        );
        assert_eq!(
            gcdump_path("7", 60, gcdump_format("heap.pb.gz")),
            "/v1/dotnet/gcdump?pid=7&seconds=60&format=pprof"
        );
        assert_eq!(gcdump_format("heap.json").unwrap().agent, "json");
        assert_eq!(gcdump_format("heap.txt").unwrap().agent, "table");
        assert!(gcdump_format("heap.gcdump").is_none());
    }

    #[test]
    fn exceptions_read_like_dotnet_prints_them() {
        assert_eq!(
            exceptions_path("7", 30, Some(5), true),
            "/v1/dotnet/exceptions?pid=7&seconds=30&limit=5&format=summary"
        );
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
        assert_eq!(agent(dotnet_trace_format("gc.nettrace")), Some("nettrace"));
        assert_eq!(agent(dotnet_trace_format("gc.ndjson")), Some("json"));
        assert_eq!(agent(dotnet_trace_format("gc.etl")), None);
    }

    #[test]
    fn dotnet_requests() {
        assert_eq!(
            dotnet_trace_path(
                "7",
                "gc,My-Source:0x1:4",
                5,
                dotnet_trace_format("a.nettrace")
            ),
            "/v1/dotnet/trace?pid=7&providers=gc,My-Source:0x1:4&seconds=5&format=nettrace"
        );
        assert_eq!(
            counters_path("7", None, 10, 1, true),
            "/v1/dotnet/counters?pid=7&seconds=10&interval=1&format=prometheus"
        );
        assert_eq!(dump_path("7", Some("full")), "/v1/dump?pid=7&type=full");
        assert_eq!(dump_path("7", None), "/v1/dump?pid=7");
    }

    #[test]
    fn commands_build_their_requests_here() {
        let trace = Trace {
            symbol: Some("calc"),
            args: Some("long"),
            ret: Some("long"),
            pid: "7",
            seconds: 10,
            limit: Some(20),
            ..Trace::default()
        };
        assert_eq!(
            trace_path(&trace),
            "/v1/uprobe?symbol=calc&pid=7&args=long&ret=long&seconds=10&limit=20"
        );
        let stacks = Trace {
            stack: true,
            unwind: Some("dwarf"),
            ..trace
        };
        assert_eq!(
            trace_path(&stacks),
            "/v1/uprobe?symbol=calc&pid=7&args=long&ret=long&seconds=10&limit=20&stack=user&unwind=dwarf"
        );
        let flame = Trace {
            symbol: Some("FibonacciProvider.calculateFibonacciValue"),
            address: None,
            args: None,
            ret: Some("int"),
            limit: None,
            abi: Some("sysv"),
            flame: Some((profile_format("callers.svg").unwrap(), "latency")),
            ..trace
        };
        assert_eq!(
            trace_path(&flame),
            "/v1/uprobe?symbol=FibonacciProvider.calculateFibonacciValue&pid=7&ret=int&seconds=10&aggregate=flame&of=latency&abi=sysv&format=svg"
        );
        let session = Session {
            events: Some("app:*"),
            pid: None,
            filter: Some("n > 1"),
            loglevel: None,
            seconds: 3,
        };
        assert_eq!(
            lttng_live_path(&session),
            "/v1/lttng/live?events=app:*&filter=n%20%3E%201&seconds=3"
        );
        let ctf = lttng_format("t.tar.gz").unwrap();
        assert_eq!(
            lttng_record_path(&session, ctf),
            "/v1/lttng/record?events=app:*&filter=n%20%3E%201&seconds=3&format=ctf"
        );
        assert_eq!(lttng_events_path(Some("7")), "/v1/lttng/events?pid=7");
        let svg = profile_format("f.svg").unwrap();
        let profile = Profile {
            seconds: 5,
            hz: Some(49),
            unwind: Some("dwarf"),
            ..Profile::default()
        };
        assert_eq!(
            profile_path(&profile, svg),
            "/v1/profile?seconds=5&hz=49&unwind=dwarf&format=svg"
        );
        let wall = Profile {
            seconds: 5,
            mode: Some("wall"),
            min_block_us: Some(100),
            state: Some("S,D"),
            threads: true,
            ..Profile::default()
        };
        assert_eq!(
            profile_path(&wall, svg),
            "/v1/profile?seconds=5&threads=true&format=svg&mode=wall&min_block_us=100&state=S,D"
        );
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
}
