//! tracecar's wire types: the JSON the agent's API answers with, which the
//! agent serializes and `kubectl tracecar` reads, so that the two cannot
//! drift apart; and the capability profiles the sidecar runs with, which
//! the webhook injects (and an attach will request); and the requests,
//! which the plugin writes and the agent reads.
//!
//! Plain data only: no I/O, no logic beyond formatting helpers and the
//! requests' encoding and decoding (names checked, values left as text).

pub mod capabilities;
pub mod dotnet;
pub mod error;
#[cfg(feature = "profiles")]
pub mod flame;
pub mod lttng;
#[cfg(feature = "profiles")]
pub mod pprof;
pub mod presets;
pub mod process;
pub mod request;
pub mod rules;
pub mod security;
pub mod stacks;
pub mod uprobe;

/// At most this much of a value someone else chose is quoted in a
/// message: a pod under review (not validated yet) or a request can carry
/// megabytes in one string.
pub const QUOTED_CHARS: usize = 64;

/// `value` quoted for a message: at most [`QUOTED_CHARS`] characters, with
/// its length in bytes when it was cut.
pub fn quoted(value: &str) -> String {
    if value.chars().count() <= QUOTED_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(QUOTED_CHARS).collect();
        format!("{head:?}… ({} bytes)", value.len())
    }
}

/// A line of an NDJSON stream that closes it: `{"summary": {…}}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SummaryLine<T> {
    /// What the stream ends with.
    pub summary: T,
}

#[cfg(feature = "fixtures")]
pub mod fixtures;
