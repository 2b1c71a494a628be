//! What a .NET runtime publishes in a counters session, read into
//! [`Reading`]s: `EventCounters` payloads, the values of
//! `System.Diagnostics.Metrics` instruments (sent as text), and what the
//! metrics source says went wrong ([`Published::Warning`]). Pure: the
//! session is in [`super::counters`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tracecar_api::dotnet::CounterValue;
use tracecar_api::quoted;

/// The runtime's `System.Diagnostics.Metrics` EventSource (.NET 6 and
/// later), which publishes the instruments of the meters it is asked for.
pub const METRICS_SOURCE: &str = "System.Diagnostics.Metrics";

/// One value the runtime published.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The EventSource or the Meter.
    pub provider: String,
    /// The counter's name, or an instrument's with its tags:
    /// `name{k=v,…}`.
    pub key: String,
    /// The value.
    pub value: CounterValue,
    /// The interval an EventCounter says it measured (none for metrics).
    pub interval: Option<f64>,
}

/// What one event of a counters session carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    /// A value.
    Reading(Box<Reading>),
    /// Something the metrics source says went wrong.
    Warning(String),
    /// Nothing the answer shows.
    Nothing,
}

/// Reads one event of a counters session: an `EventCounters` payload, a
/// value of one of `meters`, or a metrics error meant for `client` (this
/// session's `ClientId`) or for every session.
pub fn parse(
    event: &str,
    provider: &str,
    fields: &Map<String, Value>,
    meters: &[String],
    client: &str,
) -> Published {
    if event == "EventCounters" {
        return eventcounter(provider, fields)
            .map_or(Published::Nothing, |r| Published::Reading(Box::new(r)));
    }
    if provider != METRICS_SOURCE {
        return Published::Nothing;
    }
    let s = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default();
    let warning = |text: String| Published::Warning(bounded(&text));
    match event {
        "CounterRateValuePublished"
        | "UpDownCounterRateValuePublished"
        | "GaugeValuePublished"
        | "HistogramValuePublished" => {
            if !meters.iter().any(|m| m == s("meterName")) {
                // Another client's meter, in a shared session.
                return Published::Nothing;
            }
            metric(event, fields).map_or(Published::Nothing, |r| Published::Reading(Box::new(r)))
        }
        "MultipleSessionsConfiguredIncorrectlyError" if s("clientId") == client => {
            warning(format!(
                "another tool reads this app's metrics every {} s (MaxHistograms {}, MaxTimeSeries {}): \
             the runtime shares one metrics session, so ask interval={} to read them too",
                s("expectedRefreshInterval"),
                s("expectedMaxHistograms"),
                s("expectedMaxTimeSeries"),
                s("expectedRefreshInterval"),
            ))
        }
        "MultipleSessionsNotSupportedError" => warning(format!(
            "another tool holds this app's metrics session ({}) and does not share it: \
             no metrics until it stops",
            quoted(s("runningSessionId"))
        )),
        "TimeSeriesLimitReached" => warning(
            "the runtime's limit on metric series is reached: new series are not published"
                .to_string(),
        ),
        "HistogramLimitReached" => warning(
            "the runtime's limit on histograms is reached: new histograms are not published"
                .to_string(),
        ),
        "ObservableInstrumentCallbackError" | "Error" => warning(format!(
            "the app's metrics source reported: {}",
            quoted(s("errorMessage"))
        )),
        _ => Published::Nothing,
    }
}

/// A warning's text, at most 400 bytes.
fn bounded(text: &str) -> String {
    if text.len() <= 400 {
        return text.to_string();
    }
    let mut end = 400;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An `EventCounters` payload: `{"Payload": {...}}`, under a field named
/// `""` on .NET Core 3.1.
pub(super) fn eventcounter(provider: &str, fields: &Map<String, Value>) -> Option<Reading> {
    let payload = fields
        .get("Payload")
        .or_else(|| fields.values().find_map(|v| v.get("Payload")))?
        .as_object()?;
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or_default();
    let f = |k: &str| payload.get(k).and_then(Value::as_f64);
    let name = s("Name");
    if name.is_empty() {
        return None;
    }
    let (kind, value) = match s("CounterType") {
        "Sum" => ("sum", f("Increment")?),
        _ => ("mean", f("Mean")?),
    };
    Some(Reading {
        provider: provider.to_string(),
        key: name.to_string(),
        value: CounterValue {
            value,
            kind: kind.to_string(),
            unit: s("DisplayUnits").to_string(),
            display: s("DisplayName").to_string(),
            ..CounterValue::default()
        },
        interval: Some(f("IntervalSec").unwrap_or(0.0)),
    })
}

/// A finite number the metrics source sent as text (it sends `""` when it
/// has none).
fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// One time series of an instrument, from its `…Published` event.
fn metric(event: &str, fields: &Map<String, Value>) -> Option<Reading> {
    let s = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default();
    let name = s("instrumentName");
    if name.is_empty() {
        return None;
    }
    let mut value = CounterValue {
        unit: s("unit").to_string(),
        display: name.to_string(),
        tags: tags(s("tags")),
        ..CounterValue::default()
    };
    match event {
        "CounterRateValuePublished" => {
            value.kind = "sum".into();
            value.value = number(s("rate"))?;
            value.total = number(s("value"));
        }
        "UpDownCounterRateValuePublished" => {
            value.kind = "gauge".into();
            // `value` (.NET 8 and later) is the counter's current value;
            // before, only the change over the interval was sent.
            value.value = number(s("value")).or_else(|| number(s("rate")))?;
        }
        "GaugeValuePublished" => {
            value.kind = "gauge".into();
            value.value = number(s("lastValue"))?;
        }
        _ => {
            value.kind = "histogram".into();
            value.quantiles = s("quantiles")
                .split(';')
                .filter_map(|q| {
                    let (quantile, v) = q.split_once('=')?;
                    Some((quantile.trim().to_string(), number(v)?))
                })
                .collect();
            value.count = fields.get("count").and_then(Value::as_u64);
            value.sum = fields
                .get("sum")
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite());
            value.value = match (value.count, value.sum) {
                (Some(count), Some(sum)) if count > 0 => sum / count as f64,
                _ => 0.0,
            };
        }
    }
    let key = if value.tags.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", s("tags"))
    };
    Some(Reading {
        provider: s("meterName").to_string(),
        key,
        value,
        interval: None,
    })
}

/// `k=v,k2=v2` as the metrics source formats tags.
fn tags(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (t.to_string(), String::new()),
        })
        .collect()
}
