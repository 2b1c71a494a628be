//! `/v1/dotnet/counters`: EventCounters and `System.Diagnostics.Metrics`
//! instruments (`System.Runtime` and any provider or meter named), like
//! dotnet-counters, as NDJSON snapshots or one Prometheus scrape.
//!
//! Each name asked for is enabled both as an EventCounters source and as
//! a Meter, as dotnet-counters does, and answers as whichever it is (the
//! `System.Runtime` meter of .NET 9 and later besides the runtime's
//! EventCounters). The meters are read through the runtime's metrics
//! EventSource in its shared session (`SessionId=SHARED` with a
//! `ClientId` of our own), so that dotnet-monitor or a second request can
//! read them at the same time; a session with another interval is
//! refused by the runtime, and the answer says so ([`parse`]).
//!
//! The runtime sends one event per counter or time series per interval.
//! [`Snapshots`] (pure) groups them: a series seen again starts the next
//! snapshot. The 3.1 runtime also polls its counters a few milliseconds
//! after each interval (a second timer; `IntervalSec` ≈ 0.005): such a
//! short poll is folded into the interval before it — increments of `sum`
//! counters are added, `mean` counters keep the interval's value — so that
//! each snapshot covers one requested interval and no increment is lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracecar_api::dotnet::CounterSnapshot;

use super::ipc::{Command, ProviderConfig};
use super::nettrace::Decoder;
use super::port::{Port, PortError};
pub use super::prometheus::{metric_name, prometheus};
pub use super::readings::{METRICS_SOURCE, Published, Reading, parse};
use super::session::{self, Flow, event_json};
use super::spec::{CountersFormat, CountersSpec};
use crate::procfs::Procfs;

/// Its `TimeSeriesValues` keyword: the values, and the errors about them.
const METRICS_VALUES: u64 = 0x2;

/// Values one snapshot holds at most; more are counted in `dropped`. The
/// runtime's own limit is 1,000 metric series by default, and the app
/// controls what its runtime sends.
pub const MAX_SERIES: usize = 4096;

/// Warnings one snapshot holds at most.
const MAX_WARNINGS: usize = 16;

/// Groups counter values into snapshots.
#[derive(Debug, Default)]
pub struct Snapshots {
    pid: u32,
    interval: f64,
    current: Option<CounterSnapshot>,
    warnings: Vec<String>,
}

impl Snapshots {
    /// An empty grouping for `pid`, whose counters were asked for every
    /// `interval` seconds.
    pub fn new(pid: u32, interval: f64) -> Self {
        Self {
            pid,
            interval,
            ..Self::default()
        }
    }

    /// Takes one value; returns the previous snapshot when this value
    /// starts a new one (its series was in it already).
    pub fn add(&mut self, ts_ns: u64, reading: Reading) -> Option<CounterSnapshot> {
        let Reading {
            provider,
            key,
            value,
            interval,
        } = reading;
        let repeats = self.current.as_ref().is_some_and(|c| {
            c.counters
                .get(&provider)
                .is_some_and(|p| p.contains_key(&key))
        });
        if repeats && interval.is_some_and(|i| i < self.interval / 2.0) {
            // A short extra poll: part of the interval before.
            if value.kind == "sum"
                && let Some(v) = self
                    .current
                    .as_mut()
                    .and_then(|c| c.counters.get_mut(&provider))
                    .and_then(|p| p.get_mut(&key))
            {
                v.value += value.value;
            }
            return None;
        }
        let done = if repeats { self.current.take() } else { None };
        let measured = interval.unwrap_or(self.interval);
        let current = self.current.get_or_insert_with(|| CounterSnapshot {
            ts_ns,
            pid: self.pid,
            interval_s: (measured * 1000.0).round() / 1000.0,
            counters: BTreeMap::new(),
            dropped: 0,
            warnings: std::mem::take(&mut self.warnings),
        });
        let held: usize = current.counters.values().map(BTreeMap::len).sum();
        if held >= MAX_SERIES {
            current.dropped += 1;
        } else {
            current
                .counters
                .entry(provider)
                .or_default()
                .insert(key, value);
        }
        done
    }

    /// Takes a warning: it goes into the snapshot being filled, or the
    /// next one.
    pub fn warn(&mut self, warning: String) {
        let list = match &mut self.current {
            Some(current) => &mut current.warnings,
            None => &mut self.warnings,
        };
        if list.len() < MAX_WARNINGS && !list.contains(&warning) {
            list.push(warning);
        }
    }

    /// Whether a snapshot is being filled (some value has come).
    pub fn has_values(&self) -> bool {
        self.current.is_some()
    }

    /// The snapshot being filled, at the end.
    pub fn finish(&mut self) -> Option<CounterSnapshot> {
        self.current.take()
    }
}

/// One snapshot as `format` sends it: a JSON line, or the Prometheus
/// text exposition.
pub fn encode(
    snapshot: &CounterSnapshot,
    format: CountersFormat,
) -> Result<Vec<u8>, serde_json::Error> {
    Ok(match format {
        CountersFormat::Json => {
            let mut line = serde_json::to_vec(snapshot)?;
            line.push(b'\n');
            line
        }
        CountersFormat::Prometheus => prometheus(snapshot).into_bytes(),
    })
}

/// A `ClientId` for the runtime's shared metrics session: unique to this
/// agent and request.
fn client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "tracecar-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The session: each name as an EventCounters source, and all of them as
/// meters of the shared metrics session.
fn command(spec: &CountersSpec, client: &str) -> Command {
    let mut providers: Vec<ProviderConfig> = spec
        .providers
        .iter()
        .map(|name| ProviderConfig {
            name: name.clone(),
            keywords: u64::MAX,
            level: 5,
            filter: Some(format!("EventCounterIntervalSec={}", spec.interval)),
        })
        .collect();
    providers.push(ProviderConfig {
        name: METRICS_SOURCE.to_string(),
        keywords: METRICS_VALUES,
        level: 5,
        filter: Some(format!(
            "SessionId=SHARED;ClientId={client};Metrics={};RefreshInterval={}",
            spec.providers.join(","),
            spec.interval
        )),
    });
    Command::CollectTracing {
        buffer_mb: 16,
        rundown: false,
        providers,
    }
}

/// Why a counters request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// The session could not start.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The runtime sent no counter values: a session that ends without
    /// one is an error, not an empty answer.
    #[error("pid {pid}'s runtime sent no counter values in {waited_s} s ({why})")]
    NoValues {
        /// The process.
        pid: u32,
        /// How long the agent waited for the first interval.
        waited_s: f64,
        /// How the session ended.
        why: String,
    },
}

/// How long a request waits for the runtime's first values, at least: the
/// runtime measures its first interval from the session's start, and a
/// busy or starting runtime can be late.
pub fn first_values_within(interval: u32) -> Duration {
    Duration::from_secs(u64::from(interval) * 2 + 5)
}

/// Streams snapshots to `send` (one per interval, the last at the end), or
/// for Prometheus the first complete one. `ready` is answered once the
/// runtime's first counter values have come (or with why none came): the
/// session runs `seconds`, but at least until then, for at most
/// [`first_values_within`] the interval, so that a short request still
/// gets one snapshot.
pub fn stream(
    procfs: &Procfs,
    port: &Port,
    spec: &CountersSpec,
    cancel: &AtomicBool,
    ready: impl FnOnce(Result<(), CountersError>),
    send: impl FnMut(CounterSnapshot) -> bool,
) {
    run(procfs, port, spec, cancel, ready, |_| true, send);
}

/// Hands each value to `each` as it comes (a short extra poll left out),
/// until `each` answers false or the session ends: for a watch that must
/// not wait for the snapshot to close, which happens only when the next
/// interval's first value comes. `ready` as for [`stream`].
pub fn watch(
    procfs: &Procfs,
    port: &Port,
    spec: &CountersSpec,
    cancel: &AtomicBool,
    ready: impl FnOnce(Result<(), CountersError>),
    mut each: impl FnMut(&Reading) -> bool,
) {
    let short = f64::from(spec.interval) / 2.0;
    run(
        procfs,
        port,
        spec,
        cancel,
        ready,
        |reading| reading.interval.is_some_and(|i| i < short) || each(reading),
        |_| true,
    );
}

/// [`stream`] and [`watch`]: each value to `each` first, then into its
/// snapshot.
fn run(
    procfs: &Procfs,
    port: &Port,
    spec: &CountersSpec,
    cancel: &AtomicBool,
    ready: impl FnOnce(Result<(), CountersError>),
    mut each: impl FnMut(&Reading) -> bool,
    mut send: impl FnMut(CounterSnapshot) -> bool,
) {
    let mut decoder = Decoder::new();
    let mut snapshots = Snapshots::new(spec.pid, f64::from(spec.interval));
    let client = client_id();
    let mut sent = 0u32;
    // Answered by the first of the two closures below that can.
    let ready = std::cell::RefCell::new(Some(ready));
    let mut answered = false;
    let one = spec.format == CountersFormat::Prometheus;
    // One scrape waits for two intervals: the first complete snapshot
    // closes when the second starts.
    let seconds = if one {
        u64::from(spec.interval) * 2 + 2
    } else {
        u64::from(spec.seconds)
    };
    let window = session::Window {
        seconds: Duration::from_secs(seconds),
        first_within: Some(first_values_within(spec.interval)),
    };
    let ended = session::run(
        procfs,
        port,
        &command(spec, &client),
        window,
        cancel,
        |started| {
            if let Err(e) = started
                && let Some(ready) = ready.borrow_mut().take()
            {
                ready(Err(e.into()));
            }
        },
        |bytes| {
            decoder.feed(bytes);
            let mut flow = Flow::Continue;
            loop {
                let event = match decoder.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    // Nothing more can be read from this stream.
                    Err(_) => return Flow::Failed,
                };
                if event.metadata.name != "EventCounters"
                    && event.metadata.provider != METRICS_SOURCE
                {
                    continue;
                }
                let json = event_json(&event, decoder.trace(), spec.pid);
                let reading = match parse(
                    &json.event,
                    &json.provider,
                    &json.fields,
                    &spec.providers,
                    &client,
                ) {
                    Published::Reading(reading) => *reading,
                    Published::Warning(warning) => {
                        snapshots.warn(warning);
                        continue;
                    }
                    Published::Nothing => continue,
                };
                if !each(&reading) {
                    return Flow::Gone;
                }
                let done = snapshots.add(json.ts_ns, reading);
                if !answered && snapshots.has_values() {
                    answered = true;
                    flow = Flow::Produced;
                    if let Some(ready) = ready.borrow_mut().take() {
                        ready(Ok(()));
                    }
                }
                if let Some(done) = done {
                    if !send(done) {
                        return Flow::Gone;
                    }
                    sent += 1;
                    if one {
                        return Flow::Limit;
                    }
                }
            }
            flow
        },
    );
    if let Some(ready) = ready.into_inner() {
        // Started, but no value came: say why instead of an empty 200.
        if let Some(ended) = ended {
            let why = match decoder.failed() {
                Some(e) => format!("the stream could not be decoded: {e}"),
                None => ended
                    .error
                    .map_or(ended.why.clone(), |e| format!("{}: {e}", ended.why)),
            };
            ready(Err(CountersError::NoValues {
                pid: spec.pid,
                waited_s: ended.seconds,
                why,
            }));
        }
        return;
    }
    // The interval being filled when the session ended.
    if (!one || sent == 0)
        && let Some(last) = snapshots.finish()
    {
        send(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dotnet::readings::eventcounter;
    use serde_json::{Map, Value};

    fn ec(provider: &str, fields: Map<String, Value>) -> Reading {
        eventcounter(provider, &fields).unwrap()
    }

    fn mean(name: &str, value: f64) -> Map<String, Value> {
        let payload = serde_json::json!({"": {"Payload": {
            "Name": name, "DisplayName": name.to_uppercase(), "Mean": value,
            "IntervalSec": 1.0001, "CounterType": "Mean", "DisplayUnits": "MB"}}});
        payload.as_object().unwrap().clone()
    }

    fn sum(name: &str, increment: f64) -> Map<String, Value> {
        sum_over(name, increment, 1.0)
    }

    fn sum_over(name: &str, increment: f64, interval: f64) -> Map<String, Value> {
        let payload = serde_json::json!({"Payload": {
            "Name": name, "DisplayName": name, "Increment": increment,
            "IntervalSec": interval, "CounterType": "Sum", "DisplayUnits": ""}});
        payload.as_object().unwrap().clone()
    }

    #[test]
    fn a_short_extra_poll_is_folded_into_its_interval() {
        let mut s = Snapshots::new(9, 1.0);
        s.add(10, ec("System.Runtime", sum("alloc-rate", 1000.0)));
        assert!(
            s.add(
                15,
                ec("System.Runtime", sum_over("alloc-rate", 40.0, 0.005))
            )
            .is_none()
        );
        let done = s
            .add(1010, ec("System.Runtime", sum("alloc-rate", 900.0)))
            .unwrap();
        assert_eq!(done.counters["System.Runtime"]["alloc-rate"].value, 1040.0);
        assert_eq!(
            s.finish().unwrap().counters["System.Runtime"]["alloc-rate"].value,
            900.0
        );
    }

    #[test]
    fn counters_group_into_one_snapshot_per_interval() {
        let mut s = Snapshots::new(9, 1.0);
        assert!(
            s.add(10, ec("System.Runtime", mean("working-set", 26.0)))
                .is_none()
        );
        assert!(
            s.add(11, ec("System.Runtime", sum("gen-0-gc-count", 2.0)))
                .is_none()
        );
        assert!(
            s.add(12, ec("My.Source", mean("working-set", 1.0)))
                .is_none(),
            "another provider"
        );
        let first = s
            .add(1000, ec("System.Runtime", mean("working-set", 27.0)))
            .unwrap();
        assert_eq!(first.ts_ns, 10);
        assert_eq!(first.interval_s, 1.0);
        let rt = &first.counters["System.Runtime"];
        assert_eq!(rt["working-set"].value, 26.0);
        assert_eq!(rt["working-set"].unit, "MB");
        assert_eq!(rt["gen-0-gc-count"].kind, "sum");
        assert_eq!(rt["gen-0-gc-count"].value, 2.0);
        assert_eq!(first.counters["My.Source"]["working-set"].value, 1.0);
        let second = s.finish().unwrap();
        assert_eq!(second.counters["System.Runtime"]["working-set"].value, 27.0);
        assert!(s.finish().is_none());
        // Not a counter payload.
        assert!(eventcounter("P", &Map::new()).is_none());
        assert!(s.finish().is_none());
    }

    #[test]
    fn prometheus_text() {
        let mut s = Snapshots::new(9, 1.0);
        s.add(10, ec("System.Runtime", mean("cpu-usage", 12.5)));
        s.add(11, ec("System.Runtime", sum("gen-0-gc-count", 3.0)));
        let text = prometheus(&s.finish().unwrap());
        assert!(
            text.contains("# TYPE system_runtime_cpu_usage gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("system_runtime_cpu_usage{pid=\"9\",provider=\"System.Runtime\"} 12.5\n")
        );
        assert!(
            text.contains(
                "# HELP system_runtime_gen_0_gc_count gen-0-gc-count (increment over 1s)\n"
            ),
            "{text}"
        );
        assert_eq!(metric_name("3rd.Party", "x-y"), "_3rd_party_x_y");
    }

    fn published(event: &str, fields: serde_json::Value) -> Published {
        let meters = ["Tracecar.Sample".to_string()];
        parse(
            event,
            METRICS_SOURCE,
            fields.as_object().unwrap(),
            &meters,
            "tracecar-1-0",
        )
    }

    fn reading(event: &str, fields: serde_json::Value) -> Reading {
        match published(event, fields) {
            Published::Reading(reading) => *reading,
            other => panic!("{other:?}"),
        }
    }

    fn series(extra: serde_json::Value) -> serde_json::Value {
        let mut fields = serde_json::json!({"sessionId": "SHARED", "meterName": "Tracecar.Sample",
            "meterVersion": "", "instrumentName": "sample.requests", "unit": "{request}", "tags": ""});
        fields
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        fields
    }

    #[test]
    fn metrics_values_are_read_from_their_text() {
        let counter = reading(
            "CounterRateValuePublished",
            series(serde_json::json!({"tags": "route=/a,code=200", "rate": "30", "value": "130"})),
        );
        assert_eq!(counter.provider, "Tracecar.Sample");
        assert_eq!(counter.key, "sample.requests{route=/a,code=200}");
        assert_eq!(counter.value.kind, "sum");
        assert_eq!(counter.value.value, 30.0);
        assert_eq!(counter.value.total, Some(130.0));
        assert_eq!(counter.value.tags["route"], "/a");
        assert_eq!(counter.value.tags["code"], "200");
        assert_eq!(counter.interval, None);
        let histogram = reading(
            "HistogramValuePublished",
            series(
                serde_json::json!({"instrumentName": "sample.latency", "unit": "ms",
                "quantiles": "0.5=42;0.95=42;0.99=50.5", "count": 4, "sum": 176.0}),
            ),
        );
        assert_eq!(histogram.key, "sample.latency");
        assert_eq!(histogram.value.kind, "histogram");
        assert_eq!(histogram.value.quantiles["0.99"], 50.5);
        assert_eq!(histogram.value.count, Some(4));
        assert_eq!(histogram.value.value, 44.0, "the mean");
        let gauge = reading(
            "GaugeValuePublished",
            series(serde_json::json!({"lastValue": "1234"})),
        );
        assert_eq!(
            (gauge.value.kind.as_str(), gauge.value.value),
            ("gauge", 1234.0)
        );
        let updown = reading(
            "UpDownCounterRateValuePublished",
            series(serde_json::json!({"rate": "1", "value": "3"})),
        );
        assert_eq!(
            (updown.value.kind.as_str(), updown.value.value),
            ("gauge", 3.0)
        );
        // No value yet, not a number, another client's meter: nothing.
        for (event, extra) in [
            (
                "CounterRateValuePublished",
                serde_json::json!({"rate": "", "value": ""}),
            ),
            (
                "GaugeValuePublished",
                serde_json::json!({"lastValue": "NaN"}),
            ),
            (
                "GaugeValuePublished",
                serde_json::json!({"meterName": "Other", "lastValue": "1"}),
            ),
        ] {
            assert_eq!(published(event, series(extra)), Published::Nothing);
        }
    }

    #[test]
    fn metrics_errors_become_warnings_for_this_client_only() {
        let mismatch = |client: &str| {
            published(
                "MultipleSessionsConfiguredIncorrectlyError",
                serde_json::json!({"clientId": client, "expectedMaxHistograms": "20",
                    "actualMaxHistograms": "20", "expectedMaxTimeSeries": "1000",
                    "actualMaxTimeSeries": "1000", "expectedRefreshInterval": "5",
                    "actualRefreshInterval": "1"}),
            )
        };
        match mismatch("tracecar-1-0") {
            Published::Warning(w) => assert!(w.contains("ask interval=5"), "{w}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(mismatch("dotnet-monitor"), Published::Nothing);
        let long = "x".repeat(10_000);
        match published(
            "Error",
            serde_json::json!({"sessionId": "SHARED", "errorMessage": long}),
        ) {
            Published::Warning(w) => assert!(w.len() < 600, "{}", w.len()),
            other => panic!("{other:?}"),
        }
        // Warnings go into the snapshot being filled, each once.
        let mut s = Snapshots::new(9, 1.0);
        s.warn("early".into());
        s.add(10, ec("System.Runtime", mean("working-set", 26.0)));
        s.warn("late".into());
        s.warn("late".into());
        assert_eq!(s.finish().unwrap().warnings, ["early", "late"]);
    }

    #[test]
    fn metrics_series_group_into_snapshots_without_folding() {
        let mut s = Snapshots::new(9, 1.0);
        let gauge = |v: &str| {
            reading(
                "GaugeValuePublished",
                series(serde_json::json!({"lastValue": v})),
            )
        };
        assert!(s.add(10, gauge("1")).is_none());
        // No IntervalSec: a metric seen again a moment later is the next
        // interval, not a short poll.
        let first = s.add(20, gauge("2")).unwrap();
        assert_eq!(first.interval_s, 1.0);
        assert_eq!(
            first.counters["Tracecar.Sample"]["sample.requests"].value,
            1.0
        );
        assert_eq!(
            s.finish().unwrap().counters["Tracecar.Sample"]["sample.requests"].value,
            2.0
        );
    }

    #[test]
    fn a_snapshot_holds_at_most_max_series() {
        let mut s = Snapshots::new(9, 1.0);
        for i in 0..MAX_SERIES + 5 {
            let name = format!("c{i}");
            assert!(s.add(1, ec("P", mean(&name, 1.0))).is_none());
        }
        let done = s.finish().unwrap();
        assert_eq!(done.counters["P"].len(), MAX_SERIES);
        assert_eq!(done.dropped, 5);
    }

    #[test]
    fn prometheus_histograms_and_tags() {
        let mut s = Snapshots::new(9, 1.0);
        for tags in ["route=/b", "route=/a", "pid=x"] {
            s.add(
                1,
                reading(
                    "CounterRateValuePublished",
                    series(serde_json::json!({"tags": tags, "rate": "10", "value": "10"})),
                ),
            );
        }
        // A name whose metric name sorts between the series above.
        s.add(
            1,
            reading(
                "GaugeValuePublished",
                series(
                    serde_json::json!({"instrumentName": "sample.requests_x", "lastValue": "1"}),
                ),
            ),
        );
        s.add(
            1,
            reading(
                "HistogramValuePublished",
                series(
                    serde_json::json!({"instrumentName": "sample.latency", "unit": "ms",
                    "quantiles": "0.5=42;0.95=42", "count": 3, "sum": 126.0}),
                ),
            ),
        );
        let text = prometheus(&s.finish().unwrap());
        // One TYPE per metric, its series together under it.
        assert_eq!(
            text.matches("# TYPE tracecar_sample_sample_requests gauge\n")
                .count(),
            1,
            "{text}"
        );
        let family: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "# TYPE tracecar_sample_sample_requests gauge")
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(family.len(), 3, "{text}");
        assert!(family.contains(&"tracecar_sample_sample_requests{pid=\"9\",provider=\"Tracecar.Sample\",route=\"/a\"} 10"), "{text}");
        // A tag named like a label the exposition sets.
        assert!(text.contains(",tag_pid=\"x\"} 10"), "{text}");
        assert!(text.contains("tracecar_sample_sample_latency{pid=\"9\",provider=\"Tracecar.Sample\",quantile=\"0.95\"} 42\n"), "{text}");
        assert!(
            text.contains(
                "tracecar_sample_sample_latency_count{pid=\"9\",provider=\"Tracecar.Sample\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tracecar_sample_sample_latency_sum{pid=\"9\",provider=\"Tracecar.Sample\"} 126\n"
            ),
            "{text}"
        );
    }
}
