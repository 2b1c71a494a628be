//! Agent requests: pure functions from command options to a typed request
//! (`tracecar_api::request`, which writes the path), and from a file name
//! to a format. What comes back is read in [`crate::answer`].

use tracecar_api::request::{
    CountersRequest, DotnetTraceRequest, DumpRequest, ExceptionsRequest, GcdumpRequest,
    LttngEventsRequest, LttngLiveRequest, LttngRecordRequest, ProfileRequest, Request as _,
    StacksRequest, UprobeRequest,
};

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

/// `/v1/dump` for `kubectl tracecar dump`.
pub fn dump_path(pid: &str, kind: Option<&str>) -> String {
    DumpRequest {
        pid: text(Some(pid)),
        r#type: text(kind),
        limit_mb: None,
    }
    .path()
}

/// What a flamegraph's widths count, as the agent names it for one pod
/// (its `Measure::weight_name`): by a profile's `mode`, or by what each
/// call of a trace weighs (`of`).
pub fn weight_name(mode: Option<&str>, of: Option<&str>) -> String {
    match (mode, of) {
        (_, Some("count")) => "calls".to_owned(),
        (_, Some("latency")) => "nanoseconds".to_owned(),
        (_, Some(value)) => value.to_owned(),
        (Some("offcpu" | "wall" | "contention"), None) => "nanoseconds".to_owned(),
        (Some("alloc"), None) => "bytes".to_owned(),
        (_, None) => "samples".to_owned(),
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

/// A path segment (a rule's name, an artifact's ID), percent-encoded.
pub fn path_segment(text: &str) -> String {
    tracecar_api::request::encode(text)
}

/// Where `--pull DIR` writes an artifact and its record: `DIR/ID-FILE`
/// and `DIR/ID.json`. The agent's names are kept to what a file name may
/// hold (no `/`, no leading `.`), whatever they say.
pub fn artifact_files(dir: &str, artifact: &tracecar_api::rules::Artifact) -> (String, String) {
    let safe = |name: &str| -> String {
        let cleaned: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        cleaned.trim_start_matches('.').to_owned()
    };
    let id = safe(&artifact.id);
    (
        format!("{dir}/{id}-{}", safe(&artifact.file_name)),
        format!("{dir}/{id}.json"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulled_artifacts_get_safe_names() {
        let artifact = tracecar_api::fixtures::artifact("1-2-hot", "hot", "profile.pb.gz", 1);
        assert_eq!(
            artifact_files("out", &artifact),
            (
                "out/1-2-hot-profile.pb.gz".to_owned(),
                "out/1-2-hot.json".to_owned()
            )
        );
        let hostile = tracecar_api::fixtures::artifact("../../etc/x", "hot", "../passwd", 1);
        let (file, record) = artifact_files("out", &hostile);
        assert_eq!(
            (file.as_str(), record.as_str()),
            ("out/_.._etc_x-_passwd", "out/_.._etc_x.json")
        );
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }

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
    fn exceptions_paths() {
        assert_eq!(
            exceptions_path("7", 30, Some(5), true),
            "/v1/dotnet/exceptions?pid=7&seconds=30&limit=5&format=summary"
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
}
