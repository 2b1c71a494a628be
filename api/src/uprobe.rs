//! `/v1/uprobe`: one NDJSON line per call, then a summary.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One probed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEvent {
    /// CLOCK_MONOTONIC at entry, in nanoseconds.
    pub ts_ns: u64,
    /// The process.
    pub pid: u32,
    /// The thread.
    pub tid: u32,
    /// The thread's name.
    pub comm: String,
    /// The arguments asked for, decoded by their types.
    pub args: Vec<Value>,
    /// The return value, with `ret=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Value>,
    /// Entry to return, with `ret=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u64>,
}

/// The last line of a `/v1/uprobe` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// Events sent (or aggregated).
    pub events: u64,
    /// Calls the probe saw.
    pub calls: u64,
    /// Events the ring buffer had no room for.
    pub lost: u64,
    /// Events dropped by the per-CPU rate limit.
    pub throttled: u64,
    /// Why it stopped: `seconds`, `limit` or `disconnected`.
    pub stopped: String,
    /// How long it was attached.
    pub seconds: f64,
    /// The file probed.
    pub module: String,
    /// The file offset probed, in hex.
    pub offset: String,
}
