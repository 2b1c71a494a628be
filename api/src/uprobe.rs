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
    /// The calling stack with `stack=user`, innermost frame first (the
    /// probed function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
    /// For a breakpoint probe: which compiled version of the method ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeVersion>,
}

/// One compiled version of a JIT method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeVersion {
    /// Its first instruction, `"0x…"`.
    pub address: String,
    /// Its tier, where the runtime says (`QuickJitted`, `OptimizedTier1`,
    /// `optimized`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// What a breakpoint probe did with one version of its method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version.
    #[serde(flatten)]
    pub code: CodeVersion,
    /// Bytes of code.
    pub size: u64,
    /// The name as the runtime wrote it.
    pub name: String,
    /// Where it was named: `perf-map` or `dotnet-runtime`.
    pub source: String,
    /// Breakpoints on it (its entry, and its returns with `ret=`); 0 when
    /// it was not probed.
    pub breakpoints: u32,
    /// Calls it reported.
    pub events: u64,
    /// Seconds into the session it was probed (0: from the start).
    pub since_seconds: f64,
    /// Why it was not (or no longer) probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
    /// The file probed (`[jit]` for breakpoints).
    pub module: String,
    /// The file offset probed (the entry address for breakpoints), in hex.
    pub offset: String,
    /// `uprobe` (file-backed code) or `breakpoint` (JIT code).
    #[serde(default)]
    pub mechanism: String,
    /// The method a breakpoint probe follows (its name across versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The calling convention `argN` followed: `sysv`, `java` or `v8`.
    #[serde(default)]
    pub abi: String,
    /// With `ret=`: returns seen without their entry (the call began
    /// before the probe, or its entry was throttled).
    #[serde(default)]
    pub unpaired: u64,
    /// With `ret=`: calls that entered and had not returned through a
    /// probed return when the probe ended (still running, or left through
    /// a tail call or an exception).
    #[serde(default)]
    pub pending: u64,
    /// Breakpoint probes: every version of the method seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionSummary>,
}
