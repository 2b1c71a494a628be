//! A rule's actions: the captures it runs, each written with its
//! endpoint's parameters and read by that endpoint's own parser (pure).
//!
//! | action              | parameters of          | artifact                        |
//! |---------------------|------------------------|---------------------------------|
//! | `profile`           | `/v1/profile`          | `profile.pb.gz` (or its format) |
//! | `dump`              | `/v1/dump`             | `core.PID`                      |
//! | `uprobe`            | `/v1/uprobe`           | `uprobe.ndjson` (or the flame)  |
//! | `dotnet_trace`      | `/v1/dotnet/trace`     | `trace.nettrace` or `.ndjson`   |
//! | `dotnet_counters`   | `/v1/dotnet/counters`  | `counters.ndjson` or `.prom`    |
//! | `dotnet_exceptions` | `/v1/dotnet/exceptions`| `exceptions.ndjson` or `.json`  |
//! | `dotnet_gcdump`     | `/v1/dotnet/gcdump`    | `gcdump.pb.gz`, `.json`, `.txt` |
//! | `lttng_record`      | `/v1/lttng/record`     | `lttng.ndjson`, `.txt`, `.tar.gz`|
//! | `lttng_snapshot`    | `/v1/lttng/record`'s, without `seconds` | `lttng-snapshot.*` |
//!
//! `pid` is never written: an action captures the process its trigger
//! fired for (`lttng_record` records that process's events). An
//! `lttng_snapshot` is what the rule's flight recorder (an LTTng session
//! in snapshot mode, kept while the rule is in force, of the events of the
//! rule's `filter.pid` or of every process) held at the firing: the events
//! from before it.

use std::collections::BTreeMap;

use serde::Deserialize;
use tracecar_api::request::{
    CountersRequest, DotnetTraceRequest, DumpRequest, ExceptionsRequest, GcdumpRequest,
    LttngRecordRequest, ProfileRequest, UprobeRequest,
};
use tracecar_api::security::Feature;

use crate::dotnet::spec::{CountersSpec, ExceptionsSpec, GcdumpSpec, TraceSpec};
use crate::dump::spec::DumpSpec;
use crate::lttng::RecordSpec;
use crate::params::{self, SpecError};
use crate::profile::ProfileSpec;
use crate::uprobe::spec::UprobeSpec;

/// The actions' names, for hints.
pub const KINDS: &str = "profile, dump, uprobe, dotnet_trace, dotnet_counters, dotnet_exceptions, dotnet_gcdump, lttng_record or lttng_snapshot";

/// An action parameter: a query value, written as text, a number or a
/// boolean.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Scalar {
    Text(String),
    Number(serde_json::Number),
    Flag(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Number(n) => n.to_string(),
            Self::Flag(b) => b.to_string(),
        }
    }
}

/// One action: a capture the agent can do, with its endpoint's
/// parameters. The process (`pid`, `pids`) is set when it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A profile (`/v1/profile`'s parameters).
    Profile(Box<ProfileSpec>),
    /// A core dump (`/v1/dump`'s parameters).
    Dump(DumpSpec),
    /// A probe session (`/v1/uprobe`'s parameters).
    Uprobe(Box<UprobeSpec>),
    /// An EventPipe trace (`/v1/dotnet/trace`'s parameters).
    DotnetTrace(TraceSpec),
    /// .NET counters (`/v1/dotnet/counters`'s parameters).
    DotnetCounters(CountersSpec),
    /// .NET first-chance exceptions (`/v1/dotnet/exceptions`'s).
    DotnetExceptions(ExceptionsSpec),
    /// The .NET heap's composition (`/v1/dotnet/gcdump`'s).
    DotnetGcdump(GcdumpSpec),
    /// An LTTng recording of the process's events
    /// (`/v1/lttng/record`'s parameters).
    LttngRecord(RecordSpec),
    /// What the rule's flight recorder holds at the firing
    /// (`/v1/lttng/record`'s parameters but `seconds`).
    LttngSnapshot(RecordSpec),
}

impl Action {
    /// The action in words, with the file it makes.
    pub fn describe(&self) -> String {
        let what = match self {
            Self::Profile(spec) => {
                format!("profile mode={} seconds={}", spec.mode.name(), spec.seconds)
            }
            Self::Dump(spec) => format!(
                "dump type={} limit_mb={}",
                crate::dump::spec::kind_name(spec.kind),
                spec.limit_mb
            ),
            Self::Uprobe(spec) => {
                use crate::uprobe::spec::TargetSpec;
                let target = match &spec.target {
                    TargetSpec::Symbol { name, .. } => name.clone(),
                    TargetSpec::Offset { offset, binary } => format!("{binary}+{offset:#x}"),
                    TargetSpec::Address(address) => format!("{address:#x}"),
                };
                format!("uprobe {target} seconds={}", spec.seconds)
            }
            Self::DotnetTrace(spec) => format!(
                "dotnet_trace providers={} seconds={}",
                spec.providers
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                spec.seconds
            ),
            Self::DotnetCounters(spec) => format!(
                "dotnet_counters providers={} seconds={} interval={}",
                spec.providers.join(","),
                spec.seconds,
                spec.interval
            ),
            Self::DotnetExceptions(spec) => format!("dotnet_exceptions seconds={}", spec.seconds),
            Self::DotnetGcdump(spec) => format!("dotnet_gcdump seconds={}", spec.seconds),
            Self::LttngRecord(spec) => format!(
                "lttng_record events={} seconds={}",
                spec.events.join(","),
                spec.seconds
            ),
            Self::LttngSnapshot(spec) => {
                format!("lttng_snapshot events={}", spec.events.join(","))
            }
        };
        format!("{what} → {}", self.artifact().0)
    }

    /// The artifact's file name (`PID` for the process's) and content
    /// type.
    pub fn artifact(&self) -> (&'static str, &'static str) {
        use crate::dotnet::spec::{CountersFormat, ExceptionsFormat, GcdumpFormat, TraceFormat};
        use crate::lttng::RecordFormat;
        use crate::stacks::Format;
        let flame = |format: Format| match format {
            Format::Pprof => "profile.pb.gz",
            Format::Svg => "profile.svg",
            Format::Folded => "profile.folded",
            Format::Speedscope => "profile.speedscope.json",
            Format::Json => "profile.json",
        };
        match self {
            Self::Profile(spec) => (flame(spec.format), spec.format.content_type()),
            Self::Dump(_) => ("core.PID", "application/octet-stream"),
            Self::Uprobe(spec) => match spec.aggregate {
                Some((crate::uprobe::spec::Aggregation::Flame, _)) => {
                    (flame(spec.format), spec.format.content_type())
                }
                _ => ("uprobe.ndjson", "application/x-ndjson"),
            },
            Self::DotnetTrace(spec) => match spec.format {
                TraceFormat::Nettrace => ("trace.nettrace", spec.format.content_type()),
                TraceFormat::Json => ("trace.ndjson", spec.format.content_type()),
            },
            Self::DotnetCounters(spec) => match spec.format {
                CountersFormat::Json => ("counters.ndjson", spec.format.content_type()),
                CountersFormat::Prometheus => ("counters.prom", spec.format.content_type()),
            },
            Self::DotnetExceptions(spec) => match spec.format {
                ExceptionsFormat::Json => ("exceptions.ndjson", spec.format.content_type()),
                ExceptionsFormat::Summary => ("exceptions.json", spec.format.content_type()),
            },
            Self::DotnetGcdump(spec) => match spec.format {
                GcdumpFormat::Pprof => ("gcdump.pb.gz", Format::Pprof.content_type()),
                GcdumpFormat::Json => ("gcdump.json", "application/json"),
                GcdumpFormat::Table => ("gcdump.txt", "text/plain; charset=utf-8"),
            },
            Self::LttngRecord(spec) => match spec.format {
                RecordFormat::Json => ("lttng.ndjson", spec.format.content_type()),
                RecordFormat::Text => ("lttng.txt", spec.format.content_type()),
                RecordFormat::Ctf => ("lttng.tar.gz", spec.format.content_type()),
            },
            Self::LttngSnapshot(spec) => match spec.format {
                RecordFormat::Json => ("lttng-snapshot.ndjson", spec.format.content_type()),
                RecordFormat::Text => ("lttng-snapshot.txt", spec.format.content_type()),
                RecordFormat::Ctf => ("lttng-snapshot.tar.gz", spec.format.content_type()),
            },
        }
    }

    /// The feature the agent must serve for it.
    pub fn feature(&self) -> Feature {
        match self {
            Self::Profile(_) => Feature::Profile,
            Self::Dump(_) => Feature::Dump,
            Self::Uprobe(_) => Feature::Uprobe,
            Self::DotnetTrace(_)
            | Self::DotnetCounters(_)
            | Self::DotnetExceptions(_)
            | Self::DotnetGcdump(_) => Feature::Dotnet,
            Self::LttngRecord(_) | Self::LttngSnapshot(_) => Feature::Lttng,
        }
    }
}

/// One action: `{kind: {param: value, …}}`, read by its endpoint's own
/// parser; its errors are prefixed with the action's path.
pub(super) fn parse(
    index: usize,
    doc: &BTreeMap<String, BTreeMap<String, Scalar>>,
) -> Result<Action, SpecError> {
    let at = format!("actions[{index}]");
    let mut entries = doc.iter();
    let (Some((kind, params)), None) = (entries.next(), entries.next()) else {
        return Err(SpecError::new(
            format!("{at} must name exactly one action"),
            format!("write each action as {{KIND: {{…}}}}, KIND one of {KINDS}"),
        ));
    };
    if params.contains_key("pid") {
        return Err(SpecError::new(
            format!("{at}.{kind}.pid is set"),
            "leave pid out: an action captures the process the trigger fired for (use filter.pid to pick one)",
        ));
    }
    let texts: Vec<(String, String)> = params.iter().map(|(k, v)| (k.clone(), v.text())).collect();
    let mut pairs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The endpoints' parsers need a process; the engine sets the real one.
    pairs.push(("pid", "1"));
    let prefixed = |e: SpecError| SpecError::new(format!("{at}.{kind}: {}", e.message), e.hint);
    let pairs = pairs.as_slice();
    let action = match kind.as_str() {
        "profile" => {
            let request: ProfileRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::Profile(Box::new(
                crate::profile::spec::parse(&request).map_err(prefixed)?,
            ))
        }
        "dump" => {
            let request: DumpRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::Dump(crate::dump::spec::parse(&request).map_err(prefixed)?)
        }
        "uprobe" => {
            let request: UprobeRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::Uprobe(Box::new(
                crate::uprobe::spec::parse(&request).map_err(prefixed)?,
            ))
        }
        "dotnet_trace" => {
            let request: DotnetTraceRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::DotnetTrace(crate::dotnet::spec::parse_trace(&request).map_err(prefixed)?)
        }
        "dotnet_counters" => {
            let request: CountersRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::DotnetCounters(crate::dotnet::spec::parse_counters(&request).map_err(prefixed)?)
        }
        "dotnet_exceptions" => {
            let request: ExceptionsRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::DotnetExceptions(
                crate::dotnet::spec::parse_exceptions(&request).map_err(prefixed)?,
            )
        }
        "dotnet_gcdump" => {
            let request: GcdumpRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::DotnetGcdump(crate::dotnet::spec::parse_gcdump(&request).map_err(prefixed)?)
        }
        "lttng_record" => {
            let request: LttngRecordRequest = params::from_pairs(pairs).map_err(prefixed)?;
            Action::LttngRecord(crate::lttng::spec::parse_record(&request).map_err(prefixed)?)
        }
        "lttng_snapshot" => {
            if params.contains_key("seconds") {
                return Err(SpecError::new(
                    format!("{at}.{kind}.seconds is set"),
                    "leave seconds out: a snapshot holds what the ring buffers held at the firing (use lttng_record for the seconds after it)",
                ));
            }
            let request: LttngRecordRequest = params::from_pairs(pairs).map_err(prefixed)?;
            let mut spec = crate::lttng::spec::parse_record(&request).map_err(prefixed)?;
            // The flight recorder's processes come from the rule's filter.
            spec.pids = None;
            Action::LttngSnapshot(spec)
        }
        other => {
            return Err(SpecError::new(
                format!("{at}: {} is not an action", tracecar_api::quoted(other)),
                KINDS,
            ));
        }
    };
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> Result<Action, SpecError> {
        let doc: BTreeMap<String, BTreeMap<String, Scalar>> = serde_norway::from_str(yaml).unwrap();
        parse(0, &doc)
    }

    #[test]
    fn each_kind_is_read_by_its_endpoints_parser() {
        let cases = [
            (
                "{uprobe: {symbol: slow_call, ret: u64, seconds: 5, stack: user}}",
                "uprobe slow_call seconds=5 → uprobe.ndjson",
                Feature::Uprobe,
            ),
            (
                "{uprobe: {symbol: f, aggregate: flame, of: count, format: svg}}",
                "uprobe f seconds=10 → profile.svg",
                Feature::Uprobe,
            ),
            (
                "{dotnet_trace: {providers: gc, seconds: 3, format: nettrace}}",
                "dotnet_trace providers=Microsoft-Windows-DotNETRuntime seconds=3 → trace.nettrace",
                Feature::Dotnet,
            ),
            (
                "{dotnet_counters: {seconds: 4, interval: 2}}",
                "dotnet_counters providers=System.Runtime seconds=4 interval=2 → counters.ndjson",
                Feature::Dotnet,
            ),
            (
                "{dotnet_exceptions: {seconds: 2, format: summary}}",
                "dotnet_exceptions seconds=2 → exceptions.json",
                Feature::Dotnet,
            ),
            (
                "{dotnet_gcdump: {format: pprof}}",
                "dotnet_gcdump seconds=30 → gcdump.pb.gz",
                Feature::Dotnet,
            ),
            (
                "{lttng_record: {events: 'app:*', seconds: 2, format: ctf}}",
                "lttng_record events=app:* seconds=2 → lttng.tar.gz",
                Feature::Lttng,
            ),
            (
                "{lttng_snapshot: {events: 'app:*'}}",
                "lttng_snapshot events=app:* → lttng-snapshot.ndjson",
                Feature::Lttng,
            ),
        ];
        for (yaml, described, feature) in cases {
            let parsed = action(yaml).unwrap_or_else(|e| panic!("{yaml}: {}", e.message));
            assert_eq!(parsed.describe(), described, "{yaml}");
            assert_eq!(parsed.feature(), feature, "{yaml}");
        }
        let Action::DotnetTrace(trace) = action("{dotnet_trace: {providers: gc}}").unwrap() else {
            panic!()
        };
        assert_eq!((trace.seconds, trace.rundown), (10, false));
    }

    #[test]
    fn errors_name_the_action_and_parameter() {
        for (yaml, wanted) in [
            ("{uprobe: {}}", "actions[0].uprobe: "),
            (
                "{uprobe: {symbol: f, seconds: 0}}",
                "actions[0].uprobe: seconds=0",
            ),
            (
                "{dotnet_trace: {providers: gc, format: etl}}",
                "actions[0].dotnet_trace: format=\"etl\"",
            ),
            (
                "{dotnet_counters: {interval: 0}}",
                "actions[0].dotnet_counters: interval=0",
            ),
            (
                "{dotnet_gcdump: {seconds: 9999}}",
                "actions[0].dotnet_gcdump: seconds=9999",
            ),
            (
                "{lttng_record: {events: 'a b'}}",
                "actions[0].lttng_record: \"a b\"",
            ),
            (
                "{lttng_record: {pid: 3}}",
                "actions[0].lttng_record.pid is set",
            ),
            (
                "{lttng_snapshot: {seconds: 3}}",
                "actions[0].lttng_snapshot.seconds is set",
            ),
            ("{perf: {}}", "actions[0]: \"perf\" is not an action"),
        ] {
            let e = action(yaml).expect_err(yaml);
            assert!(e.message.starts_with(wanted), "{yaml}: {}", e.message);
        }
        assert!(
            action("{perf: {}}")
                .unwrap_err()
                .hint
                .contains("lttng_record"),
            "the hint lists the kinds"
        );
    }
}
