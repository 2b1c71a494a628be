//! `/v1/dotnet/*` and the .NET facts of `/v1/processes`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One event of `/v1/dotnet/trace?format=json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DotnetEvent {
    /// CLOCK_MONOTONIC when the runtime logged it, in nanoseconds (the
    /// clock of `/v1/uprobe`'s `ts_ns`).
    pub ts_ns: u64,
    /// The process (in the pod's PID namespace).
    pub pid: u32,
    /// The thread the event describes.
    pub tid: u64,
    /// The provider (EventSource name).
    pub provider: String,
    /// The event's name.
    pub event: String,
    /// The event's id within its provider.
    pub id: u32,
    /// The event's version.
    pub version: u32,
    /// The payload, decoded by the event's metadata.
    pub fields: Map<String, Value>,
    /// The raw payload in hex, when nothing describes its layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// The last line of `/v1/dotnet/trace?format=json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// Events sent.
    pub events: u64,
    /// Events the runtime dropped (sequence-number gaps).
    pub dropped: u64,
    /// Why the session ended: `seconds`, `limit`, `disconnected`,
    /// `shutdown` or `process exited`.
    pub stopped: String,
    /// Whether the stream ended properly (the runtime's end tag).
    pub complete: bool,
    /// How long the session ran.
    pub seconds: f64,
    /// The runtime's session id.
    pub session: u64,
    /// An error that ended the stream early, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `/v1/dotnet/exceptions?format=json`: an exception as it was
/// thrown (first chance: before any handler ran).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionEvent {
    /// CLOCK_MONOTONIC when it was thrown, in nanoseconds.
    pub ts_ns: u64,
    /// The process.
    pub pid: u32,
    /// The throwing thread.
    pub tid: u64,
    /// The exception's type (`System.InvalidOperationException`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its message.
    pub message: String,
    /// Its HRESULT, in hex.
    pub hresult: String,
    /// The managed stack where it was thrown, innermost frame first, named
    /// by the runtime (`[unknown] 0x…` for code it did not name).
    pub stack: Vec<String>,
}

/// Where exceptions of one type were thrown, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrowSite {
    /// The exception's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The innermost managed frame (empty when the stack had none).
    pub site: String,
    /// Exceptions of that type thrown there.
    pub count: u64,
}

/// The last line of `/v1/dotnet/exceptions` (json), or its whole answer
/// (summary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionsSummary {
    /// Exceptions seen.
    pub exceptions: u64,
    /// By type and throw site, the most frequent first.
    pub by_site: Vec<ThrowSite>,
    /// Events the runtime dropped (sequence-number gaps).
    pub dropped: u64,
    /// Why the session ended (as `/v1/dotnet/trace`'s summary).
    pub stopped: String,
    /// Whether the stream ended properly.
    pub complete: bool,
    /// How long the session ran.
    pub seconds: f64,
    /// An error that ended the stream early, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `/v1/processes` says about a .NET process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DotnetInfo {
    /// The runtime's version (`Microsoft.NETCore.App` directory, or
    /// `ProcessInfo2`).
    pub runtime_version: Option<String>,
    /// The diagnostic socket, as the process sees it.
    pub diagnostic_socket: String,
    /// Whether the socket answered.
    pub diagnostic_port: bool,
    /// Why it did not, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostic_error: Option<String>,
    /// Whether the process has perf maps turned on
    /// (`DOTNET_PerfMapEnabled` / `COMPlus_PerfMapEnabled`).
    pub perf_map_enabled: bool,
    /// The entry assembly (`ProcessInfo2`, .NET 6 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assembly: Option<String>,
}

/// One counter's value in a snapshot: an EventCounter, or one time
/// series of a `System.Diagnostics.Metrics` instrument.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CounterValue {
    /// `mean`: the mean over the interval (EventCounters); `sum`: the
    /// increment during it (incrementing EventCounters, metrics'
    /// counters); `gauge`: the last value (observable gauges, up-down
    /// counters); `histogram`: the mean of the interval's measurements
    /// (0 when none), with `quantiles`, `count` and `sum`.
    pub value: f64,
    /// `mean`, `sum`, `gauge` or `histogram`.
    pub kind: String,
    /// The unit the counter declares (`MB`, `%`, `ms`, …), if any.
    pub unit: String,
    /// The counter's display name (an instrument's name for metrics).
    pub display: String,
    /// A metric's tags (`route=/a`); its key in the snapshot is then
    /// `name{route=/a}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// A metrics counter's total since the runtime's metrics session
    /// began (.NET 8 and later): a meter records nothing while no session
    /// listens, and a shared session may have begun before this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// A histogram's quantiles over the interval (`"0.5"`, `"0.95"`,
    /// `"0.99"` → value).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub quantiles: std::collections::BTreeMap<String, f64>,
    /// A histogram's number of measurements in the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// A histogram's sum of measurements in the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

/// One line of `/v1/dotnet/counters`: every counter of one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// When the interval's first counter arrived (CLOCK_MONOTONIC, ns).
    pub ts_ns: u64,
    /// The process.
    pub pid: u32,
    /// The interval the runtime measured, in seconds.
    pub interval_s: f64,
    /// Provider (an EventSource or a Meter) → counter name → value.
    pub counters:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, CounterValue>>,
    /// Values left out because the snapshot already held
    /// `MAX_SERIES` of them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// What the runtime's metrics source said went wrong during the
    /// interval (another tool's session with another interval, a series
    /// limit reached, an instrument's callback that threw).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One type in a heap walk: its live objects and their bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapType {
    /// The type's name as the runtime gives it (`System.String`,
    /// `App.Order[]`).
    pub name: String,
    /// Live objects.
    pub count: u64,
    /// Their bytes (each object's size as the GC sees it: header and
    /// method table pointer included).
    pub bytes: u64,
}

/// `/v1/dotnet/gcdump` as JSON: what the GC heap held after the full GC
/// the walk ran, by type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeapReport {
    /// The process.
    pub pid: u32,
    /// The number of the GC that walked the heap.
    pub gc: u32,
    /// Live objects.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// By type, most bytes first.
    pub types: Vec<HeapType>,
    /// Whether every event of the walk arrived (no gap in the runtime's
    /// numbered bulk events, nothing dropped or unreadable).
    pub complete: bool,
    /// Bulk events missing from the runtime's numbered sequence.
    pub missing_events: u64,
    /// Events the runtime dropped during the session.
    pub dropped: u64,
    /// How long the session ran, in seconds.
    pub seconds: f64,
}
