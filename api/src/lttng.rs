//! `/v1/lttng/events`, `/v1/lttng/record` and `/v1/lttng/live`.

use serde::{Deserialize, Serialize};

/// A payload field of a tracepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracepointField {
    /// Field name.
    pub name: String,
    /// LTTng's type class: INTEGER, STRING, FLOAT, ENUM, OTHER….
    #[serde(rename = "type")]
    pub kind: String,
}

/// A tracepoint an application offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracepoint {
    /// `provider:event`.
    pub event: String,
    /// Its log level, e.g. `TRACE_INFO`.
    pub loglevel: String,
    /// Payload fields, in declaration order.
    pub fields: Vec<TracepointField>,
    /// The process offering it.
    pub pid: u32,
    /// That process's name as LTTng reports it.
    pub procname: String,
}

/// The `/v1/lttng/events` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracepoints {
    /// The processes registered with the session daemon.
    pub registered_pids: Vec<u32>,
    /// What they offer.
    pub events: Vec<Tracepoint>,
    /// What usually keeps applications from registering, when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Processes whose LTTng-UST cannot talk to the sidecar's daemon, and
    /// why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incompatible: Vec<UstMismatch>,
}

/// A process that cannot register with the sidecar's session daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UstMismatch {
    /// The process.
    pub pid: u32,
    /// Its name.
    pub comm: String,
    /// The LTTng-UST library it loaded, if any.
    pub library: Option<String>,
    /// What is wrong and what to do.
    pub reason: String,
}

/// LTTng's loss counters for a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discarded {
    /// Events dropped because a sub-buffer was full (discard mode).
    pub discarded_events: u64,
    /// Packets lost (overwrite mode, or a consumer that fell behind).
    pub lost_packets: u64,
}

/// What a finished recording reports next to its events (the last line of
/// `format=json`, the `# tracecar:` line of `text`, and the
/// `x-tracecar-*` headers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The LTTng session name.
    pub session: String,
    /// Events in the output (json format; null otherwise).
    pub events: Option<u64>,
    /// Loss counters from LTTng.
    #[serde(flatten)]
    pub discarded: Discarded,
    /// The on-disk cap of the session's streams.
    pub disk_limit_bytes: u64,
    /// Whether a stream used all its trace files, so the oldest may have
    /// been overwritten.
    pub disk_limit_reached: bool,
    /// Lines babeltrace2 printed that are not events.
    pub unparsed_lines: u64,
    /// Why the events stop short of the recording, if they do: babeltrace2
    /// printed nothing for 30 s and was killed (json and text formats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_error: Option<String>,
    /// Session set-up (create … start).
    pub setup_ms: f64,
    /// Session tear-down (stop, read counters, destroy).
    pub teardown_ms: f64,
}

/// The last line of a `/v1/lttng/live` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSummary {
    /// The LTTng session name.
    pub session: String,
    /// Events streamed.
    pub events: u64,
    /// Loss counters from LTTng.
    #[serde(flatten)]
    pub discarded: Discarded,
    /// Lines babeltrace2 printed that are not events.
    pub unparsed_lines: u64,
    /// Session set-up (create … start).
    pub setup_ms: f64,
    /// Session tear-down.
    pub teardown_ms: f64,
    /// Why the session ended before its time, if it did (a rotation or
    /// babeltrace2 failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
