//! `/v1/dotnet/counters`: EventCounters (`System.Runtime` and any
//! provider named), like dotnet-counters, as NDJSON snapshots or one
//! Prometheus scrape.
//!
//! The runtime sends one `EventCounters` event per counter per interval.
//! [`Snapshots`] (pure) groups them: a counter seen again starts the next
//! snapshot. The 3.1 runtime also polls its counters a few milliseconds
//! after each interval (a second timer; `IntervalSec` ≈ 0.005): such a
//! short poll is folded into the interval before it — increments of `sum`
//! counters are added, `mean` counters keep the interval's value — so that
//! each snapshot covers one requested interval and no increment is lost.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Map, Value};
use tracecar_api::dotnet::{CounterSnapshot, CounterValue};

use super::ipc::{Command, ProviderConfig};
use super::nettrace::Decoder;
use super::port::{Port, PortError};
use super::session::{self, Flow, event_json};
use super::spec::{CountersFormat, CountersSpec};
use crate::procfs::Procfs;

/// Groups counter events into snapshots.
#[derive(Debug, Default)]
pub struct Snapshots {
    pid: u32,
    interval: f64,
    current: Option<CounterSnapshot>,
}

impl Snapshots {
    /// An empty grouping for `pid`, whose counters were asked for every
    /// `interval` seconds.
    pub fn new(pid: u32, interval: f64) -> Self {
        Self {
            pid,
            interval,
            current: None,
        }
    }

    /// Takes one `EventCounters` payload; returns the previous snapshot
    /// when this counter starts a new one.
    pub fn add(
        &mut self,
        ts_ns: u64,
        provider: &str,
        fields: &Map<String, Value>,
    ) -> Option<CounterSnapshot> {
        // The payload is {"Payload": {...}}, under a field named "" on
        // .NET Core 3.1.
        let payload = fields
            .get("Payload")
            .or_else(|| fields.values().find_map(|v| v.get("Payload")))?
            .as_object()?;
        let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or_default();
        let f = |k: &str| payload.get(k).and_then(Value::as_f64);
        let name = s("Name").to_string();
        if name.is_empty() {
            return None;
        }
        let (kind, value) = match s("CounterType") {
            "Sum" => ("sum", f("Increment")?),
            _ => ("mean", f("Mean")?),
        };
        let interval = f("IntervalSec").unwrap_or(0.0);
        let repeats = self.current.as_ref().is_some_and(|c| {
            c.counters
                .get(provider)
                .is_some_and(|p| p.contains_key(&name))
        });
        if repeats && interval < self.interval / 2.0 {
            // A short extra poll: part of the interval before.
            if kind == "sum"
                && let Some(v) = self
                    .current
                    .as_mut()
                    .and_then(|c| c.counters.get_mut(provider))
                    .and_then(|p| p.get_mut(&name))
            {
                v.value += value;
            }
            return None;
        }
        let done = if repeats { self.current.take() } else { None };
        let current = self.current.get_or_insert_with(|| CounterSnapshot {
            ts_ns,
            pid: self.pid,
            interval_s: (interval * 1000.0).round() / 1000.0,
            counters: BTreeMap::new(),
        });
        current
            .counters
            .entry(provider.to_string())
            .or_default()
            .insert(
                name,
                CounterValue {
                    value,
                    kind: kind.to_string(),
                    unit: s("DisplayUnits").to_string(),
                    display: s("DisplayName").to_string(),
                },
            );
        done
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

/// A Prometheus metric name: `provider_counter` in lowercase, with every
/// other character an underscore.
pub fn metric_name(provider: &str, counter: &str) -> String {
    let raw = format!("{provider}_{counter}").to_ascii_lowercase();
    let mut out: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
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

/// A snapshot in the Prometheus text exposition format (every counter a
/// gauge: a mean, or the increment over the interval).
pub fn prometheus(snapshot: &CounterSnapshot) -> String {
    let mut out = String::new();
    for (provider, counters) in &snapshot.counters {
        for (name, v) in counters {
            let metric = metric_name(provider, name);
            let what = if v.kind == "sum" {
                format!("increment over {}s", snapshot.interval_s)
            } else {
                format!("mean over {}s", snapshot.interval_s)
            };
            let unit = if v.unit.is_empty() {
                String::new()
            } else {
                format!(", {}", v.unit)
            };
            let help = format!("{} ({what}{unit})", v.display)
                .replace('\\', "\\\\")
                .replace('\n', " ");
            out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
            out.push_str(&format!(
                "{metric}{{pid=\"{}\",provider=\"{}\"}} {}\n",
                snapshot.pid,
                provider.replace('\\', "\\\\").replace('"', "\\\""),
                v.value
            ));
        }
    }
    out
}

fn command(spec: &CountersSpec) -> Command {
    Command::CollectTracing {
        buffer_mb: 16,
        rundown: false,
        providers: spec
            .providers
            .iter()
            .map(|name| ProviderConfig {
                name: name.clone(),
                keywords: u64::MAX,
                level: 5,
                filter: Some(format!("EventCounterIntervalSec={}", spec.interval)),
            })
            .collect(),
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
    mut send: impl FnMut(CounterSnapshot) -> bool,
) {
    let mut decoder = Decoder::new();
    let mut snapshots = Snapshots::new(spec.pid, f64::from(spec.interval));
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
        &command(spec),
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
                if event.metadata.name != "EventCounters" {
                    continue;
                }
                let json = event_json(&event, decoder.trace(), spec.pid);
                let done = snapshots.add(json.ts_ns, &json.provider, &json.fields);
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
        s.add(10, "System.Runtime", &sum("alloc-rate", 1000.0));
        assert!(
            s.add(15, "System.Runtime", &sum_over("alloc-rate", 40.0, 0.005))
                .is_none()
        );
        let done = s
            .add(1010, "System.Runtime", &sum("alloc-rate", 900.0))
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
            s.add(10, "System.Runtime", &mean("working-set", 26.0))
                .is_none()
        );
        assert!(
            s.add(11, "System.Runtime", &sum("gen-0-gc-count", 2.0))
                .is_none()
        );
        assert!(
            s.add(12, "My.Source", &mean("working-set", 1.0)).is_none(),
            "another provider"
        );
        let first = s
            .add(1000, "System.Runtime", &mean("working-set", 27.0))
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
        assert!(s.add(1, "P", &Map::new()).is_none());
        assert!(s.finish().is_none());
    }

    #[test]
    fn prometheus_text() {
        let mut s = Snapshots::new(9, 1.0);
        s.add(10, "System.Runtime", &mean("cpu-usage", 12.5));
        s.add(11, "System.Runtime", &sum("gen-0-gc-count", 3.0));
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
}
