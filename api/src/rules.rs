//! Collection rules and the artifacts they leave: what `GET /v1/rules`
//! and `GET /v1/artifacts` answer, and what `kubectl tracecar rules` and
//! `kubectl tracecar artifacts` read. The rules themselves are sent as
//! YAML or JSON and parsed by the agent (see `docs/api/rules.md`).

use serde::{Deserialize, Serialize};

/// The header an artifact's download names its rule in.
pub const RULE_HEADER: &str = "x-tracecar-rule";

/// The variable the webhook sets in each app container it selects, to its
/// name: a rule's `filter.container` reads it from a process's
/// environment (or from another process of the same cgroup that has it).
pub const CONTAINER_ENV: &str = "TRACECAR_CONTAINER";

/// A rule in force and what it has done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// The rule's name.
    pub name: String,
    /// Where it came from: `api`, or `configmap:FILE`.
    pub source: String,
    /// Its trigger, in words (`cpu > 80 % for 3 s`).
    pub trigger: String,
    /// Its actions, in words, in order.
    pub actions: Vec<String>,
    /// The rule as it was given (YAML or JSON text, re-serialized as
    /// JSON).
    pub rule: serde_json::Value,
    /// What it has done.
    pub tally: RuleTally,
}

/// What one rule has done since it was added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTally {
    /// Times its condition became true.
    pub fired: u64,
    /// Firings whose actions ran.
    pub ran: u64,
    /// Firings its limits held back, by limit: `cooldown`, `rate` (at
    /// most K per window), `busy` (its previous firing still runs),
    /// `slots` (every capture slot taken), `memory` (the agent near its
    /// memory limit). Counted, never queued.
    pub held_back: std::collections::BTreeMap<String, u64>,
    /// Actions that failed.
    pub failed: u64,
    /// Artifacts written.
    pub artifacts: u64,
    /// The last failure, until an action succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it last fired (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_unix_ms: Option<u64>,
}

/// The rules part of `/v1/capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesReport {
    /// The rules in force.
    pub rules: Vec<RuleStatus>,
    /// Rule files of the pod's ConfigMap that could not be read, with
    /// why; the other files' rules are in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The artifact store.
    pub store: StoreReport,
}

/// The artifact store's use of its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReport {
    /// The directory (the sidecar's work volume).
    pub dir: String,
    /// Bytes it may hold.
    pub budget_bytes: u64,
    /// Bytes it holds.
    pub used_bytes: u64,
    /// Artifacts it holds.
    pub artifacts: u64,
    /// Artifacts deleted, oldest first, to stay within the budget.
    pub evicted: u64,
}

/// One artifact: a result a rule's action wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its ID, for `/v1/artifacts/ID`.
    pub id: String,
    /// The rule that wrote it.
    pub rule: String,
    /// The action, in words (`profile mode=cpu seconds=5`).
    pub action: String,
    /// What fired, in words, with the value read (`cpu 93.5 % ≥ 80 %`).
    pub trigger: String,
    /// The value that fired it.
    pub value: f64,
    /// When the condition was seen true (Unix milliseconds).
    pub fired_unix_ms: u64,
    /// When the action started.
    pub started_unix_ms: u64,
    /// When it ended.
    pub ended_unix_ms: u64,
    /// The pod (from the Downward API), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The process it is of, when it is of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// That process's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The container's cgroup the trigger read, for the triggers that
    /// read one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The file name it downloads as (`profile.pb.gz`, `core.1234`).
    pub file_name: String,
    /// Its media type.
    pub content_type: String,
    /// Its size.
    pub bytes: u64,
}
