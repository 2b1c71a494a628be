//! `/v1/lttng/*` requests: query parameters → a validated [`RecordSpec`].

use tracecar_api::quoted;
use tracecar_api::request::{LttngEventsRequest, LttngLiveRequest, LttngRecordRequest};

use crate::params::{self, SpecError};

/// LTTng-UST log levels, most severe first (the numbers LTTng uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// 0.
    Emerg,
    /// 1.
    Alert,
    /// 2.
    Crit,
    /// 3.
    Err,
    /// 4.
    Warning,
    /// 5.
    Notice,
    /// 6.
    Info,
    /// 7.
    DebugSystem,
    /// 8.
    DebugProgram,
    /// 9.
    DebugProcess,
    /// 10.
    DebugModule,
    /// 11.
    DebugUnit,
    /// 12.
    DebugFunction,
    /// 13.
    DebugLine,
    /// 14.
    Debug,
}

const LEVELS: [(Level, &str); 15] = [
    (Level::Emerg, "TRACE_EMERG"),
    (Level::Alert, "TRACE_ALERT"),
    (Level::Crit, "TRACE_CRIT"),
    (Level::Err, "TRACE_ERR"),
    (Level::Warning, "TRACE_WARNING"),
    (Level::Notice, "TRACE_NOTICE"),
    (Level::Info, "TRACE_INFO"),
    (Level::DebugSystem, "TRACE_DEBUG_SYSTEM"),
    (Level::DebugProgram, "TRACE_DEBUG_PROGRAM"),
    (Level::DebugProcess, "TRACE_DEBUG_PROCESS"),
    (Level::DebugModule, "TRACE_DEBUG_MODULE"),
    (Level::DebugUnit, "TRACE_DEBUG_UNIT"),
    (Level::DebugFunction, "TRACE_DEBUG_FUNCTION"),
    (Level::DebugLine, "TRACE_DEBUG_LINE"),
    (Level::Debug, "TRACE_DEBUG"),
];

impl Level {
    /// LTTng's name, e.g. `TRACE_INFO`.
    pub fn name(self) -> &'static str {
        LEVELS
            .iter()
            .find(|(level, _)| *level == self)
            .map_or("TRACE_DEBUG", |(_, name)| name)
    }

    /// `INFO`, `trace_info`, `TRACE_INFO` or `6`.
    fn parse(raw: &str) -> Option<Self> {
        if let Ok(n) = raw.parse::<usize>() {
            return LEVELS.get(n).map(|(level, _)| *level);
        }
        let upper = raw.to_ascii_uppercase();
        let full = if upper.starts_with("TRACE_") {
            upper
        } else {
            format!("TRACE_{upper}")
        };
        LEVELS
            .iter()
            .find(|(_, name)| *name == full)
            .map(|(level, _)| *level)
    }
}

/// Which log levels are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// This level and every more severe one.
    AtLeast(Level),
    /// Exactly this level.
    Only(Level),
}

/// Output of `/v1/lttng/record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// NDJSON: one event per line, then a summary line.
    #[default]
    Json,
    /// babeltrace2's pretty text, then a `#` summary line.
    Text,
    /// A `.tar.gz` of the CTF trace with `tracecar-summary.json`.
    Ctf,
}

impl RecordFormat {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/x-ndjson",
            Self::Text => "text/plain; charset=utf-8",
            Self::Ctf => "application/gzip",
        }
    }
}

/// A validated recording request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    /// Event name patterns (`*` wildcards).
    pub events: Vec<String>,
    /// Only these processes (vpid), or every registered one.
    pub pids: Option<Vec<u32>>,
    /// An LTTng filter expression.
    pub filter: Option<String>,
    /// Log-level selection.
    pub loglevel: Option<LogLevel>,
    /// Recording length.
    pub seconds: u32,
    /// Output format.
    pub format: RecordFormat,
}

impl Default for RecordSpec {
    fn default() -> Self {
        Self {
            events: vec!["*".to_owned()],
            pids: None,
            filter: None,
            loglevel: None,
            seconds: 10,
            format: RecordFormat::Json,
        }
    }
}

/// LTTng's symbol length limit (`LTTNG_SYMBOL_NAME_LEN` minus the NUL).
const MAX_PATTERN_LEN: usize = 255;
const MAX_FILTER_LEN: usize = 4096;

/// Checks one event pattern: tracepoint names are `provider:event`, both C
/// identifiers; `*` matches anything. LTTng itself accepts almost any
/// string and then silently records nothing, so typos are caught here.
fn event_pattern(raw: &str) -> Result<String, SpecError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_:*.-".contains(c);
    if raw.is_empty() || raw.len() > MAX_PATTERN_LEN || !raw.chars().all(ok_char) {
        return Err(SpecError::new(
            format!("{raw:?} is not an event name pattern"),
            "patterns are provider:event names with * wildcards, comma separated, e.g. events=myapp:*,lttng_ust_libc:malloc; list them with /v1/lttng/events",
        ));
    }
    Ok(raw.to_owned())
}

/// Parses the `events`, `pid`, `filter` and `loglevel` parameters, which
/// `live` shares (its request converts into `record`'s).
fn selection(query: &LttngRecordRequest) -> Result<RecordSpec, SpecError> {
    let events = match query.events.as_deref() {
        Some(raw) => raw
            .split(',')
            .map(|p| event_pattern(p.trim()))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec!["*".to_owned()],
    };
    let pids = params::pids(query.pid())?;
    let filter = match query.filter.as_deref() {
        Some(f) if f.trim().is_empty() || f.len() > MAX_FILTER_LEN || f.contains('\0') => {
            return Err(SpecError::new(
                "filter must be a non-empty LTTng filter expression",
                "e.g. filter=size > 4096 && $ctx.procname == \"app\" (URL-encoded)",
            ));
        }
        f => f.map(str::to_owned),
    };
    let only = params::boolean(query.loglevel_only())?.unwrap_or(false);
    let loglevel = match query.loglevel.as_deref() {
        None if only => {
            return Err(SpecError::new(
                "loglevel_only needs loglevel",
                "e.g. loglevel=WARNING&loglevel_only=true",
            ));
        }
        None => None,
        Some(raw) => {
            let level = Level::parse(raw).ok_or_else(|| {
                SpecError::new(
                    format!("loglevel={} is not an LTTng log level", quoted(raw)),
                    "EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG_SYSTEM … DEBUG_LINE, DEBUG, or 0–14",
                )
            })?;
            Some(if only {
                LogLevel::Only(level)
            } else {
                LogLevel::AtLeast(level)
            })
        }
    };
    Ok(RecordSpec {
        events,
        pids,
        filter,
        loglevel,
        ..RecordSpec::default()
    })
}

/// Parses `/v1/lttng/record`.
pub fn parse_record(request: &LttngRecordRequest) -> Result<RecordSpec, SpecError> {
    let format = params::one_of(
        request.format(),
        &[
            ("json", "NDJSON", RecordFormat::Json),
            ("text", "babeltrace2", RecordFormat::Text),
            ("ctf", ".tar.gz for Trace Compass", RecordFormat::Ctf),
        ],
    )?;
    let seconds = params::number(request.seconds(), 10, 1..=3600)?;
    Ok(RecordSpec {
        seconds,
        format,
        ..selection(request)?
    })
}

/// Parses `/v1/lttng/live`: the selection of `record`, `seconds` (default
/// 60) and no `format` (always NDJSON).
pub fn parse_live(request: &LttngLiveRequest) -> Result<RecordSpec, SpecError> {
    let seconds = params::number(request.seconds(), 60, 1..=3600)?;
    Ok(RecordSpec {
        seconds,
        ..selection(&LttngRecordRequest::from(request.clone()))?
    })
}

/// Parses `/v1/lttng/events`: an optional `pid`.
pub fn parse_events(request: &LttngEventsRequest) -> Result<Option<Vec<u32>>, SpecError> {
    params::pids(request.pid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> Result<RecordSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse_record(&r))
    }

    fn live(pairs: &[(&str, &str)]) -> Result<RecordSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse_live(&r))
    }

    fn events(pairs: &[(&str, &str)]) -> Result<Option<Vec<u32>>, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse_events(&r))
    }

    #[test]
    fn defaults_record_everything_for_ten_seconds_as_json() {
        let spec = record(&[]).expect("valid");
        assert_eq!(spec, RecordSpec::default());
        assert_eq!(spec.events, ["*"]);
    }

    #[test]
    fn a_full_request_parses() {
        let spec = record(&[
            ("events", "app:tick, lttng_ust_libc:*"),
            ("pid", "42"),
            ("filter", "seq >= 3"),
            ("loglevel", "info"),
            ("seconds", "3600"),
            ("format", "ctf"),
        ])
        .expect("valid");
        assert_eq!(spec.events, ["app:tick", "lttng_ust_libc:*"]);
        assert_eq!(spec.pids, Some(vec![42]));
        assert_eq!(spec.filter.as_deref(), Some("seq >= 3"));
        assert_eq!(spec.loglevel, Some(LogLevel::AtLeast(Level::Info)));
        assert_eq!(spec.seconds, 3600);
        assert_eq!(spec.format, RecordFormat::Ctf);
    }

    #[test]
    fn live_takes_the_selection_but_no_format() {
        let spec = live(&[("events", "app:*"), ("pid", "3")]).expect("valid");
        assert_eq!(spec.seconds, 60);
        assert_eq!(spec.events, ["app:*"]);
        assert_eq!(spec.pids, Some(vec![3]));
        assert!(live(&[("format", "json")]).is_err());
        assert!(live(&[("seconds", "0")]).is_err());
    }

    #[test]
    fn log_levels_parse_by_name_and_number() {
        assert_eq!(Level::parse("TRACE_WARNING"), Some(Level::Warning));
        assert_eq!(Level::parse("debug_line"), Some(Level::DebugLine));
        assert_eq!(Level::parse("14"), Some(Level::Debug));
        assert_eq!(Level::parse("15"), None);
        assert_eq!(Level::parse("LOUD"), None);
        for (level, name) in LEVELS {
            assert_eq!(Level::parse(name), Some(level));
            assert_eq!(level.name(), name);
        }
        let only = record(&[("loglevel", "ERR"), ("loglevel_only", "true")]).expect("valid");
        assert_eq!(only.loglevel, Some(LogLevel::Only(Level::Err)));
    }

    #[test]
    fn bad_requests_say_what_to_send() {
        for query in [
            vec![("events", "bad event")],
            vec![("events", "app:tick,")],
            vec![("events", "app:'x'")],
            vec![("pid", "self")],
            vec![("filter", " ")],
            vec![("loglevel", "LOUD")],
            vec![("loglevel_only", "true")],
            vec![("seconds", "0")],
            vec![("seconds", "3601")],
            vec![("format", "xml")],
            vec![("bogus", "1")],
        ] {
            let err = record(&query).expect_err("invalid");
            assert!(!err.hint.is_empty(), "{query:?}");
        }
        assert!(events(&[("pid", "x")]).is_err());
        assert_eq!(events(&[("pid", "7")]).expect("valid"), Some(vec![7]));
    }
}
