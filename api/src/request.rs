//! What each endpoint takes: one struct per query string, which the plugin
//! fills and serializes ([`Request::path`]) and the agent deserializes
//! ([`decode`]) with unknown and repeated parameters refused, before it
//! validates the values into the endpoint's spec.
//!
//! Values travel as text (`Option<String>`): the agent's validation is
//! where `seconds=0` or `hz=abc` gets a message naming the parameter, its
//! range and an example, which serde's own errors for a number cannot
//! give. The struct fixes which names an endpoint has, in one place for
//! both sides.

use serde::{Deserialize, Serialize};

use crate::quoted;

/// One endpoint's query parameters.
pub trait Request: Serialize + for<'de> Deserialize<'de> + Default {
    /// The endpoint's path.
    const PATH: &'static str;
    /// Every parameter name, in the order [`Request::path`] writes them.
    const FIELDS: &'static [&'static str];

    /// The parameters that are set, as `(name, value)`.
    fn pairs(&self) -> Vec<(&'static str, &str)>;

    /// `PATH?k=v&…` with the set values percent-encoded.
    fn path(&self) -> String {
        let query: Vec<String> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if query.is_empty() {
            Self::PATH.to_owned()
        } else {
            format!("{}?{}", Self::PATH, query.join("&"))
        }
    }
}

/// One parameter of a request: its name (for messages) and its value as
/// sent, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// The name on the wire.
    pub name: &'static str,
    /// The value, percent-decoded; `None` when absent.
    pub value: Option<&'a str>,
}

impl<'a> Param<'a> {
    /// A parameter named `name` with `value`.
    pub fn new(name: &'static str, value: Option<&'a str>) -> Self {
        Self { name, value }
    }

    /// Whether it was sent.
    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }
}

/// A query string that does not fit the endpoint's request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A name the endpoint does not take.
    #[error("unknown parameter {}", quoted(.name))]
    Unknown {
        /// The name sent.
        name: String,
        /// The names the endpoint takes.
        known: &'static [&'static str],
    },
    /// A name sent more than once: which value was meant is a guess.
    #[error("{name}= is given more than once")]
    Repeated {
        /// The name.
        name: &'static str,
    },
    /// What serde could not read (not expected once the names are known).
    #[error("the query string does not fit: {0}")]
    Malformed(String),
}

/// Reads `raw` (the query string, without `?`) into `R`: unknown names and
/// names given twice are refused before serde reads the values.
pub fn decode<R: Request>(raw: &str) -> Result<R, DecodeError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let mut seen: Vec<&'static str> = Vec::with_capacity(pairs.len());
    for (name, _) in &pairs {
        let Some(known) = R::FIELDS.iter().find(|f| **f == name) else {
            return Err(DecodeError::Unknown {
                name: name.clone(),
                known: R::FIELDS,
            });
        };
        if seen.contains(known) {
            return Err(DecodeError::Repeated { name: known });
        }
        seen.push(known);
    }
    serde_urlencoded::from_str(raw).map_err(|e| DecodeError::Malformed(e.to_string()))
}

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

/// A field's wire name: its identifier without `r#` (`r#type` is `type`),
/// as serde names it.
const fn unraw(name: &'static str) -> &'static str {
    match name.as_bytes() {
        [b'r', b'#', rest @ ..] => match core::str::from_utf8(rest) {
            Ok(rest) => rest,
            Err(_) => name,
        },
        _ => name,
    }
}

/// Declares request structs: every field an `Option<String>` named as on
/// the wire, with an accessor of the same name that returns its
/// [`Param`].
macro_rules! requests {
    ($(
        $(#[$meta:meta])*
        $name:ident at $path:literal {
            $( $(#[$field_meta:meta])* $field:ident ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<String>,
            )*
        }

        impl $name {
            $(
                #[doc = concat!("`", stringify!($field), "=` as a [`Param`].")]
                pub fn $field(&self) -> Param<'_> {
                    Param::new(unraw(stringify!($field)), self.$field.as_deref())
                }
            )*
        }

        impl Request for $name {
            const PATH: &'static str = $path;
            const FIELDS: &'static [&'static str] = &[$(unraw(stringify!($field))),*];

            fn pairs(&self) -> Vec<(&'static str, &str)> {
                [$((unraw(stringify!($field)), self.$field.as_deref())),*]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect()
            }
        }
    )*};
}

requests! {
    /// `/v1/profile` (and `/debug/pprof/profile`): a CPU, off-CPU or wall
    /// profile.
    ProfileRequest at "/v1/profile" {
        /// The processes (`7` or `7,9`); every process of the pod when
        /// absent.
        pid,
        /// Capture length.
        seconds,
        /// Samples per second.
        hz,
        /// How user stacks are walked: `auto`, `fp`, `dwarf`.
        unwind,
        /// Kernel frames.
        kernel,
        /// Thread names as root frames.
        threads,
        /// `svg`, `pprof`, `folded`, `speedscope` or `json`.
        format,
        /// `cpu`, `offcpu` or `wall`.
        mode,
        /// Shortest block kept, in microseconds.
        min_block_us,
        /// Thread states counted as blocked (`S`, `D`, `R`).
        state,
        /// Switch-outs recorded per second at most.
        rate,
    }

    /// `/debug/pprof/profile` on the agent's profiles listener
    /// (`--profiles-listen`): what a scraper sends, and nothing else.
    ScrapeRequest at "/debug/pprof/profile" {
        /// Capture length (30 s when absent, as Go's).
        seconds,
    }

    /// `/debug/pprof/window`: the last completed window of continuous
    /// profiling (`tracecar.dev/continuous`), on the socket and on the
    /// profiles listener.
    WindowRequest at "/debug/pprof/window" {
        /// `cpu` (the default) or `offcpu`.
        mode,
    }

    /// `/v1/stacks`: every thread's stack right now.
    StacksRequest at "/v1/stacks" {
        /// The process.
        pid,
        /// `text` or `json`.
        format,
    }

    /// `/v1/profile/trigger`: profiles taken when a process's CPU use
    /// crosses a threshold.
    TriggerRequest at "/v1/profile/trigger" {
        /// The process to watch.
        pid,
        /// The threshold, in percent of one CPU.
        cpu_above,
        /// Length of each capture.
        seconds,
        /// Captures at most.
        max,
        /// How long to watch.
        timeout,
        /// Accepted and ignored: the report holds folded stacks.
        format,
        /// Samples per second.
        hz,
        /// How user stacks are walked.
        unwind,
        /// Kernel frames.
        kernel,
        /// Thread names as root frames.
        threads,
    }

    /// `/v1/symbols`: the functions a process can be probed at.
    SymbolsRequest at "/v1/symbols" {
        /// The process.
        pid,
        /// A regular expression names must match.
        r#match,
        /// Only this module.
        module,
        /// At most this many.
        limit,
    }

    /// `/v1/uprobe`: a probe on a function, with its arguments, return
    /// value, latency and stacks.
    UprobeRequest at "/v1/uprobe" {
        /// The function (native or JIT).
        symbol,
        /// Or an offset in `binary`.
        offset,
        /// Or an address in `pid`.
        address,
        /// The file the function is in.
        binary,
        /// The module it is in, as mapped.
        module,
        /// The process.
        pid,
        /// Argument types, comma separated.
        args,
        /// The return type.
        ret,
        /// How long.
        seconds,
        /// At most this many events.
        limit,
        /// Probe even where the agent advises against it.
        force,
        /// Events per second at most.
        rate,
        /// `hist` or `flame` instead of events.
        aggregate,
        /// What an aggregate weighs (`latency`, `calls`, an argument).
        of,
        /// Stacks with each event (`user`, `kernel`, `both`).
        stack,
        /// How user stacks are walked.
        unwind,
        /// The calling convention.
        abi,
        /// The answer's format.
        format,
    }

    /// `/v1/lttng/events`: the tracepoints the pod's processes register.
    LttngEventsRequest at "/v1/lttng/events" {
        /// Only these processes.
        pid,
    }

    /// `/v1/lttng/record`: an LTTng session, answered when it ends.
    LttngRecordRequest at "/v1/lttng/record" {
        /// Event patterns, comma separated.
        events,
        /// Only these processes.
        pid,
        /// An LTTng filter expression.
        filter,
        /// A log level.
        loglevel,
        /// Only that log level.
        loglevel_only,
        /// How long.
        seconds,
        /// `json`, `text` or `ctf`.
        format,
    }

    /// `/v1/lttng/live`: an LTTng session, streamed as it records.
    LttngLiveRequest at "/v1/lttng/live" {
        /// Event patterns, comma separated.
        events,
        /// Only these processes.
        pid,
        /// An LTTng filter expression.
        filter,
        /// A log level.
        loglevel,
        /// Only that log level.
        loglevel_only,
        /// How long.
        seconds,
    }

    /// `/v1/dotnet/trace`: EventPipe events of a .NET process.
    DotnetTraceRequest at "/v1/dotnet/trace" {
        /// The process.
        pid,
        /// Providers and presets, comma separated.
        providers,
        /// How long.
        seconds,
        /// `json` or `nettrace`.
        format,
        /// Name every method at the end.
        rundown,
        /// The runtime's buffer, in MiB.
        buffer_mb,
        /// At most this many events (JSON).
        limit,
    }

    /// `/v1/dotnet/exceptions`: first-chance exceptions of a .NET process,
    /// with their managed stacks.
    ExceptionsRequest at "/v1/dotnet/exceptions" {
        /// The process.
        pid,
        /// How long.
        seconds,
        /// Stop after this many exceptions.
        limit,
        /// `json` (one line per exception, then a summary) or `summary`.
        format,
    }

    /// `/v1/dotnet/counters`: EventCounters of a .NET process.
    CountersRequest at "/v1/dotnet/counters" {
        /// The process.
        pid,
        /// EventSource names besides `System.Runtime`.
        providers,
        /// How long to stream.
        seconds,
        /// The runtime's measuring interval.
        interval,
        /// `json` or `prometheus`.
        format,
    }

    /// `/v1/dotnet/gcdump`: what a .NET process's GC heap holds, by type.
    GcdumpRequest at "/v1/dotnet/gcdump" {
        /// The process.
        pid,
        /// How long to wait for the heap walk.
        seconds,
        /// `table`, `json` or `pprof`.
        format,
    }

    /// `/v1/dump`: a core file of a process.
    DumpRequest at "/v1/dump" {
        /// The process.
        pid,
        /// `mini`, `heap`, `triage` or `full`.
        r#type,
        /// The largest dump, in MiB.
        limit_mb,
    }
}

impl From<LttngLiveRequest> for LttngRecordRequest {
    /// The same selection and length, recorded instead of streamed (in
    /// the default format until one is set).
    fn from(live: LttngLiveRequest) -> Self {
        let LttngLiveRequest {
            events,
            pid,
            filter,
            loglevel,
            loglevel_only,
            seconds,
        } = live;
        Self {
            events,
            pid,
            filter,
            loglevel,
            loglevel_only,
            seconds,
            format: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_values_and_skip_absent_ones() {
        let record = LttngRecordRequest {
            events: Some("app:*,x:y".into()),
            filter: Some("size > 4 && a == \"b\"".into()),
            seconds: Some("10".into()),
            ..LttngRecordRequest::default()
        };
        assert_eq!(
            record.path(),
            "/v1/lttng/record?events=app:*,x:y&filter=size%20%3E%204%20%26%26%20a%20%3D%3D%20%22b%22&seconds=10"
        );
        assert_eq!(LttngEventsRequest::default().path(), "/v1/lttng/events");
    }

    #[test]
    fn what_the_plugin_writes_the_agent_reads_back() {
        let dump = DumpRequest {
            pid: Some("7".into()),
            r#type: Some("full".into()),
            limit_mb: None,
        };
        assert_eq!(dump.path(), "/v1/dump?pid=7&type=full");
        let query = dump.path().split_once('?').map(|(_, q)| q.to_owned());
        assert_eq!(decode::<DumpRequest>(&query.unwrap_or_default()), Ok(dump));
        let odd = UprobeRequest {
            symbol: Some("Ns.Type::Method(int, string)".into()),
            args: Some("int,str".into()),
            of: Some("arg0 + ü & =".into()),
            ..UprobeRequest::default()
        };
        let path = odd.path();
        let (_, query) = path.split_once('?').unwrap_or_default();
        assert_eq!(decode::<UprobeRequest>(query), Ok(odd));
        assert_eq!(decode::<DumpRequest>(""), Ok(DumpRequest::default()));
    }

    #[test]
    fn unknown_and_repeated_names_are_refused() {
        let e = decode::<DumpRequest>("pid=1&kind=full").unwrap_err();
        assert_eq!(e.to_string(), "unknown parameter \"kind\"");
        assert_eq!(
            e,
            DecodeError::Unknown {
                name: "kind".into(),
                known: &["pid", "type", "limit_mb"],
            }
        );
        let e = decode::<DumpRequest>("pid=1&pid=2").unwrap_err();
        assert_eq!(e, DecodeError::Repeated { name: "pid" });
        assert_eq!(e.to_string(), "pid= is given more than once");
        let long = format!("{}=1", "x".repeat(10_000));
        let shown = decode::<DumpRequest>(&long).unwrap_err().to_string();
        assert!(shown.len() < 200, "{shown}");
    }

    #[test]
    fn serde_and_the_field_list_agree_on_names() {
        // `r#type` and `r#match` are `type` and `match` for serde too.
        let dump: DumpRequest = serde_urlencoded::from_str("type=mini").unwrap_or_default();
        assert_eq!(dump.r#type.as_deref(), Some("mini"));
        assert_eq!(dump.r#type().name, "type");
        assert_eq!(SymbolsRequest::FIELDS, ["pid", "match", "module", "limit"]);
        let encoded = serde_urlencoded::to_string(SymbolsRequest {
            r#match: Some("^calc$".into()),
            ..SymbolsRequest::default()
        });
        assert_eq!(encoded.as_deref(), Ok("match=%5Ecalc%24"));
    }
}
