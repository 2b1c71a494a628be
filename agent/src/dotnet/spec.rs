//! The `/v1/dotnet/*` specs: a typed request (`tracecar_api::request`) →
//! a validated [`TraceSpec`], [`CountersSpec`] or [`ExceptionsSpec`]. The provider syntax is
//! in `providers`; the sessions that execute a spec are `session` and
//! `counters`.

use tracecar_api::quoted;
use tracecar_api::request::{
    CountersRequest, DotnetTraceRequest, ExceptionsRequest, GcdumpRequest,
};

use super::ipc::ProviderConfig;
use super::providers::{MAX_PROVIDERS, parse_providers};
use crate::params::{self, SpecError};

/// What `/v1/dotnet/trace` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// The nettrace stream as the runtime writes it.
    Nettrace,
    /// NDJSON: one decoded event per line, then a summary.
    Json,
}

impl TraceFormat {
    /// The answer's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Nettrace => "application/octet-stream",
            Self::Json => "application/x-ndjson",
        }
    }
}

/// A validated `/v1/dotnet/trace` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSpec {
    /// The .NET process.
    pub pid: u32,
    /// What to enable.
    pub providers: Vec<ProviderConfig>,
    /// How long to trace.
    pub seconds: u32,
    /// What to answer with.
    pub format: TraceFormat,
    /// Whether to ask for rundown (method and module names) at the end.
    pub rundown: bool,
    /// The runtime's session buffer, in MiB.
    pub buffer_mb: u32,
    /// At most this many events (JSON only).
    pub limit: Option<u32>,
}

/// Validates a `/v1/dotnet/trace` request.
pub fn parse_trace(request: &DotnetTraceRequest) -> Result<TraceSpec, SpecError> {
    let pid = params::required_pid(request.pid())?;
    let providers = parse_providers(request.providers.as_deref().unwrap_or_default())?;
    let seconds = params::number(request.seconds(), 10, 1..=3600)?;
    let format = params::one_of(
        request.format(),
        &[
            ("json", "NDJSON", TraceFormat::Json),
            (
                "nettrace",
                "for PerfView, TraceEvent",
                TraceFormat::Nettrace,
            ),
        ],
    )?;
    // Rundown names the methods of stacks (PerfView needs it); it costs a
    // walk of every method at the end, so JSON without stacks skips it
    // unless asked.
    let rundown = params::boolean(request.rundown())?.unwrap_or(format == TraceFormat::Nettrace);
    let buffer_mb = params::number(request.buffer_mb(), 64, 1..=1024)?;
    let limit = params::optional_number(request.limit(), 1..=10_000_000)?;
    if limit.is_some() && format == TraceFormat::Nettrace {
        return Err(SpecError::new(
            "limit= applies to format=json",
            "a nettrace stream is cut only by seconds=",
        ));
    }
    Ok(TraceSpec {
        pid,
        providers,
        seconds,
        format,
        rundown,
        buffer_mb,
        limit,
    })
}

/// The runtime's counters, always enabled.
pub const RUNTIME_COUNTERS: &str = "System.Runtime";

/// What to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountersFormat {
    /// NDJSON snapshots for `seconds`.
    Json,
    /// The first complete snapshot in the Prometheus text format.
    Prometheus,
}

impl CountersFormat {
    /// The answer's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/x-ndjson",
            Self::Prometheus => "text/plain; version=0.0.4",
        }
    }
}

/// A validated `/v1/dotnet/counters` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersSpec {
    /// The process.
    pub pid: u32,
    /// EventCounter providers (`System.Runtime` first).
    pub providers: Vec<String>,
    /// How long to stream (JSON).
    pub seconds: u32,
    /// The runtime's measuring interval.
    pub interval: u32,
    /// What to answer with.
    pub format: CountersFormat,
}

/// Validates a `/v1/dotnet/counters` request.
pub fn parse_counters(request: &CountersRequest) -> Result<CountersSpec, SpecError> {
    let pid = params::required_pid(request.pid())?;
    let mut providers = vec![RUNTIME_COUNTERS.to_string()];
    for name in request
        .providers
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        // `;` and `=` would end the metrics filter's `Metrics=` list.
        if name.len() > 256
            || name
                .chars()
                .any(|c| c.is_control() || c == ':' || c == '=' || c == ';')
        {
            return Err(SpecError::new(
                format!("{} is not an EventSource or Meter name", quoted(name)),
                "providers=Name,… (EventSource or Meter names; System.Runtime is always on)",
            ));
        }
        if !providers.iter().any(|p| p == name) {
            providers.push(name.to_string());
        }
    }
    if providers.len() > MAX_PROVIDERS {
        return Err(SpecError::new(
            format!("{} providers", providers.len()),
            format!("at most {}", MAX_PROVIDERS),
        ));
    }
    let interval = params::number(request.interval(), 1, 1..=3600)?;
    let seconds = params::number(request.seconds(), 10, 1..=86_400)?;
    let format = params::one_of(
        request.format(),
        &[
            ("json", "NDJSON snapshots", CountersFormat::Json),
            ("prometheus", "one scrape", CountersFormat::Prometheus),
        ],
    )?;
    Ok(CountersSpec {
        pid,
        providers,
        seconds,
        interval,
        format,
    })
}

/// What `/v1/dotnet/exceptions` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionsFormat {
    /// NDJSON: one line per exception as it is thrown, then a summary.
    Json,
    /// One JSON document at the end: counts by type and throw site.
    Summary,
}

impl ExceptionsFormat {
    /// The answer's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/x-ndjson",
            Self::Summary => "application/json",
        }
    }
}

/// A validated `/v1/dotnet/exceptions` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionsSpec {
    /// The process.
    pub pid: u32,
    /// How long to watch.
    pub seconds: u32,
    /// Stop after this many exceptions.
    pub limit: Option<u32>,
    /// What to answer with.
    pub format: ExceptionsFormat,
}

/// Validates a `/v1/dotnet/exceptions` request.
pub fn parse_exceptions(request: &ExceptionsRequest) -> Result<ExceptionsSpec, SpecError> {
    Ok(ExceptionsSpec {
        pid: params::required_pid(request.pid())?,
        seconds: params::number(request.seconds(), 10, 1..=3600)?,
        limit: params::optional_number(request.limit(), 1..=10_000_000)?,
        format: params::one_of(
            request.format(),
            &[
                (
                    "json",
                    "NDJSON, one line per exception",
                    ExceptionsFormat::Json,
                ),
                (
                    "summary",
                    "counts by type and throw site",
                    ExceptionsFormat::Summary,
                ),
            ],
        )?,
    })
}

/// What `/v1/dotnet/gcdump` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcdumpFormat {
    /// Text: bytes, count and type, most bytes first.
    Table,
    /// The report as JSON.
    Json,
    /// A gzipped pprof profile (`inuse_objects`, `inuse_space`).
    Pprof,
}

/// A validated `/v1/dotnet/gcdump` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcdumpSpec {
    /// The process.
    pub pid: u32,
    /// How long to wait for the heap walk.
    pub seconds: u32,
    /// What to answer with.
    pub format: GcdumpFormat,
}

/// Validates a `/v1/dotnet/gcdump` request.
pub fn parse_gcdump(request: &GcdumpRequest) -> Result<GcdumpSpec, SpecError> {
    Ok(GcdumpSpec {
        pid: params::required_pid(request.pid())?,
        seconds: params::number(request.seconds(), 30, 1..=600)?,
        format: params::one_of(
            request.format(),
            &[
                ("table", "bytes, count and type", GcdumpFormat::Table),
                ("json", "the report as JSON", GcdumpFormat::Json),
                (
                    "pprof",
                    "inuse_objects and inuse_space by type",
                    GcdumpFormat::Pprof,
                ),
            ],
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcdump_queries() {
        let gcdump =
            |pairs: &[(&str, &str)]| params::from_pairs(pairs).and_then(|r| parse_gcdump(&r));
        let s = gcdump(&[("pid", "4")]).unwrap();
        assert_eq!((s.pid, s.seconds, s.format), (4, 30, GcdumpFormat::Table));
        let s = gcdump(&[("pid", "4"), ("format", "pprof"), ("seconds", "600")]).unwrap();
        assert_eq!((s.format, s.seconds), (GcdumpFormat::Pprof, 600));
        for bad in [
            &[][..],
            &[("pid", "4"), ("format", "gcdump")],
            &[("pid", "4"), ("seconds", "601")],
            &[("pid", "4"), ("limit", "1")],
        ] {
            assert!(gcdump(bad).is_err(), "{bad:?}");
        }
    }

    fn trace(pairs: &[(&str, &str)]) -> Result<TraceSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse_trace(&r))
    }

    fn counters(pairs: &[(&str, &str)]) -> Result<CountersSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse_counters(&r))
    }

    fn exceptions(pairs: &[(&str, &str)]) -> Result<ExceptionsSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse_exceptions(&r))
    }

    #[test]
    fn exceptions_queries() {
        let s = exceptions(&[("pid", "4")]).unwrap();
        assert_eq!(
            (s.pid, s.seconds, s.limit, s.format),
            (4, 10, None, ExceptionsFormat::Json)
        );
        let s = exceptions(&[("pid", "4"), ("format", "summary"), ("limit", "3")]).unwrap();
        assert_eq!((s.format, s.limit), (ExceptionsFormat::Summary, Some(3)));
        for bad in [
            &[][..],
            &[("pid", "4"), ("format", "xml")],
            &[("pid", "4"), ("seconds", "0")],
            &[("pid", "4"), ("limit", "0")],
            &[("pid", "4"), ("type", "x")],
        ] {
            assert!(exceptions(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trace_queries() {
        let s = trace(&[("pid", "7"), ("providers", "gc")]).unwrap();
        assert_eq!(
            (s.pid, s.seconds, s.format, s.rundown),
            (7, 10, TraceFormat::Json, false)
        );
        let n = trace(&[
            ("pid", "7"),
            ("providers", "gc"),
            ("format", "nettrace"),
            ("seconds", "3"),
        ])
        .unwrap();
        assert_eq!(
            (n.format, n.rundown, n.seconds),
            (TraceFormat::Nettrace, true, 3)
        );
        assert!(trace(&[("providers", "gc")]).is_err(), "pid is required");
        assert!(trace(&[("pid", "7")]).is_err(), "providers is required");
        assert!(trace(&[("pid", "7"), ("providers", "gc"), ("format", "csv")]).is_err());
        assert!(trace(&[("pid", "7"), ("providers", "gc"), ("x", "1")]).is_err());
        assert!(
            trace(&[
                ("pid", "7"),
                ("providers", "gc"),
                ("format", "nettrace"),
                ("limit", "5")
            ])
            .is_err()
        );
    }

    #[test]
    fn counters_queries() {
        let s = counters(&[("pid", "4"), ("providers", "My.Source, System.Runtime")]).unwrap();
        assert_eq!(s.providers, ["System.Runtime", "My.Source"]);
        assert_eq!(
            (s.interval, s.seconds, s.format),
            (1, 10, CountersFormat::Json)
        );
        let p = counters(&[("pid", "4"), ("format", "prometheus"), ("interval", "5")]).unwrap();
        assert_eq!((p.format, p.interval), (CountersFormat::Prometheus, 5));
        assert!(counters(&[("pid", "4"), ("providers", "A:1")]).is_err());
        assert!(counters(&[("pid", "4"), ("interval", "0")]).is_err());
        assert!(counters(&[("pid", "4"), ("format", "xml")]).is_err());
        assert!(counters(&[]).is_err());
    }
}
