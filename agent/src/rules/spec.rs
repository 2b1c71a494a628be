//! Rules as users write them (YAML or JSON; one rule or a list), read
//! into validated [`Rule`]s. Every error names the field, as a path
//! (`actions[1].profile.hz`), with what to write instead.
//!
//! ```yaml
//! name: hot-cpu
//! trigger: {cpu: {above_percent: 80, for_seconds: 3}}
//! filter: {name: dotnet}                # or pid, runtime, container
//! actions:
//!   - profile: {mode: cpu, seconds: 5, format: pprof}
//!   - dump: {type: mini}
//! limits: {max_actions: 5, window_seconds: 3600, cooldown_seconds: 60}
//! ```
//!
//! An action's parameters are its endpoint's query parameters (`profile`
//! is `/v1/profile`'s, `dump` is `/v1/dump`'s, and so on:
//! [`super::action`]), checked by that endpoint's own parser, without
//! `pid`: the process is the one the trigger fired for.

use std::collections::BTreeMap;

use serde::Deserialize;
use tracecar_api::process::Runtime;
use tracecar_api::security::Feature;

pub use super::action::Action;
use super::action::Scalar;
use crate::params::SpecError;

/// The largest rule document read (a request body or a ConfigMap file).
pub const MAX_DOCUMENT_BYTES: usize = 64 << 10;
/// The most rules in force at once.
pub const MAX_RULES: usize = 32;
/// The most actions one rule runs.
pub const MAX_ACTIONS: usize = 8;

/// A rule, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name: letters, digits, `-`, `_`, `.`, at most 63.
    pub name: String,
    /// What makes it fire.
    pub trigger: Trigger,
    /// Which processes it watches.
    pub filter: Filter,
    /// What it does when it fires, in order.
    pub actions: Vec<Action>,
    /// What holds it back.
    pub limits: Limits,
    /// The rule as given, for `GET /v1/rules`.
    pub document: serde_json::Value,
}

impl Rule {
    /// What its flight recorder records, if it has an `lttng_snapshot`
    /// action: those events, of its `filter.pid` or of every process.
    pub fn flight(&self) -> Option<crate::lttng::RecordSpec> {
        self.actions.iter().find_map(|a| match a {
            Action::LttngSnapshot(spec) => Some(crate::lttng::RecordSpec {
                pids: self.filter.pid.map(|pid| vec![pid]),
                ..spec.clone()
            }),
            _ => None,
        })
    }
}

/// What makes a rule fire.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// A watched process uses more than `above_percent` of one CPU for
    /// `for_seconds` (0: at one reading, over the last 250 ms).
    Cpu {
        /// Percent of one CPU (above 100 for threaded code).
        above_percent: f64,
        /// How long it must last.
        for_seconds: u32,
    },
    /// A watched process's container uses more than `above_percent` of
    /// its memory limit (cgroup v2 `memory.current` against the nearest
    /// `memory.max`).
    Memory {
        /// Percent of the limit.
        above_percent: f64,
    },
    /// The container's pressure stall (PSI `some avg10`) of a resource
    /// is above `above_percent`.
    Pressure {
        /// `memory`, `cpu` or `io`.
        resource: Resource,
        /// Percent of time stalled over the last 10 s.
        above_percent: f64,
    },
    /// The kernel OOM-killed a process of the container (its
    /// `memory.events` `oom_kill` count went up).
    OomKill,
    /// A watched process got a fatal signal it does not handle: it is
    /// stopped there and dumped before it dies ([`super::fatal`]).
    Signal {
        /// The signals, as a mask ([`super::fatal::bit`]).
        signals: u64,
    },
    /// A watched .NET process threw a first-chance exception of this type
    /// ([`super::dotnet`]).
    Exception {
        /// The type: its full name, or its name without the namespace.
        kind: String,
    },
    /// A call of a probed function took at least `above_ms`
    /// ([`super::latency`]).
    Latency {
        /// The function (a symbol, or a .NET method by name).
        symbol: String,
        /// The module it is in, when not the executable.
        module: Option<String>,
        /// Milliseconds.
        above_ms: f64,
    },
    /// A .NET counter or metric of a watched process is at or above a
    /// value for an interval ([`super::dotnet`]).
    Counter {
        /// The EventSource or Meter (`System.Runtime` by default).
        provider: String,
        /// The counter (`working-set`), or a metric with its tags
        /// (`http.server.request.duration{http.route=/a}`).
        name: String,
        /// For a histogram: this quantile (`0.5`, `0.95`, `0.99`) instead
        /// of its mean.
        quantile: Option<String>,
        /// The value, in the counter's unit.
        above: f64,
        /// The runtime's measuring interval, in seconds.
        interval: u32,
    },
}

/// A resource PSI reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `memory.pressure`.
    Memory,
    /// `cpu.pressure`.
    Cpu,
    /// `io.pressure`.
    Io,
}

impl Resource {
    /// Its name, as written.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::Io => "io",
        }
    }
}

impl Trigger {
    /// The trigger in words.
    pub fn describe(&self) -> String {
        match self {
            Self::Cpu {
                above_percent,
                for_seconds,
            } => format!("cpu > {above_percent} % for {for_seconds} s"),
            Self::Memory { above_percent } => {
                format!("container memory > {above_percent} % of its limit")
            }
            Self::Pressure {
                resource,
                above_percent,
            } => format!(
                "{} pressure (some avg10) > {above_percent} %",
                resource.name()
            ),
            Self::OomKill => "an OOM kill in the container".to_owned(),
            Self::Signal { signals } => {
                let names: Vec<&str> = super::fatal::SIGNALS
                    .iter()
                    .filter(|(_, s)| signals & super::fatal::bit(*s) != 0)
                    .map(|(n, _)| *n)
                    .collect();
                format!(
                    "a fatal {} (stopped there, and let die after the actions)",
                    names.join(" or ")
                )
            }
            Self::Exception { kind } => format!("a .NET first-chance {kind}"),
            Self::Latency {
                symbol,
                module,
                above_ms,
            } => format!(
                "a call of {symbol}{} of {above_ms} ms or more",
                module
                    .as_ref()
                    .map_or(String::new(), |m| format!(" in {m}"))
            ),
            Self::Counter {
                provider,
                name,
                quantile,
                above,
                interval,
            } => format!(
                "{provider} {name}{} ≥ {above} over {interval} s",
                quantile.as_ref().map_or(String::new(), |q| format!(
                    " p{}",
                    q.trim_start_matches("0.")
                ))
            ),
        }
    }

    /// Whether a watch of its own reads it (a session, a probe, the
    /// signal watch), rather than the readings of `/proc` and cgroups.
    pub fn is_watched(&self) -> bool {
        matches!(
            self,
            Self::Exception { .. }
                | Self::Counter { .. }
                | Self::Latency { .. }
                | Self::Signal { .. }
        )
    }

    /// The feature the agent must serve for it: the diagnostic port for
    /// `exception`, ptrace (with the dumps) for `signal`.
    pub fn feature(&self) -> Option<Feature> {
        match self {
            Self::Exception { .. } | Self::Counter { .. } => Some(Feature::Dotnet),
            Self::Latency { .. } => Some(Feature::Uprobe),
            Self::Signal { .. } => Some(Feature::Dump),
            _ => None,
        }
    }

    /// Whether it watches containers (cgroups) rather than processes.
    pub fn per_cgroup(&self) -> bool {
        matches!(
            self,
            Self::Memory { .. } | Self::Pressure { .. } | Self::OomKill
        )
    }
}

/// Which processes a rule watches; all of the pod's when empty. Every
/// field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// This PID only.
    pub pid: Option<u32>,
    /// The process's name (`comm`) or its executable's file name.
    pub name: Option<String>,
    /// The runtime detected (`dotnet`, `node`, `java`, `python`, `go`,
    /// `native`).
    pub runtime: Option<Runtime>,
    /// The container's name, as the webhook wrote it in the container's
    /// environment ([`tracecar_api::rules::CONTAINER_ENV`]).
    pub container: Option<String>,
}

/// What holds a rule back. A firing they hold back is counted, not
/// queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Firings whose actions run, at most, per `window_seconds`.
    pub max_actions: u32,
    /// The sliding window of `max_actions`.
    pub window_seconds: u32,
    /// Quiet time after a firing's actions end.
    pub cooldown_seconds: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_actions: 5,
            window_seconds: 3600,
            cooldown_seconds: 60,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    name: String,
    trigger: TriggerDoc,
    #[serde(default)]
    filter: FilterDoc,
    actions: Vec<BTreeMap<String, BTreeMap<String, Scalar>>>,
    #[serde(default)]
    limits: LimitsDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum TriggerDoc {
    Cpu {
        above_percent: f64,
        #[serde(default)]
        for_seconds: u32,
    },
    Memory {
        above_percent: f64,
    },
    Pressure {
        resource: String,
        above_percent: f64,
    },
    OomKill {},
    Signal {
        #[serde(default)]
        signals: Vec<String>,
    },
    Exception {
        r#type: String,
    },
    Counter {
        name: String,
        provider: Option<String>,
        quantile: Option<f64>,
        above: f64,
        interval: Option<u32>,
    },
    Latency {
        symbol: String,
        module: Option<String>,
        above_ms: f64,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilterDoc {
    pid: Option<u32>,
    name: Option<String>,
    runtime: Option<String>,
    container: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsDoc {
    max_actions: Option<u32>,
    window_seconds: Option<u32>,
    cooldown_seconds: Option<u32>,
}

/// Reads a document of one rule or a list of rules.
pub fn parse(text: &str) -> Result<Vec<Rule>, SpecError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(SpecError::new(
            format!("the rules are {} bytes", text.len()),
            format!("send at most {MAX_DOCUMENT_BYTES} bytes"),
        ));
    }
    // Kept as given, for GET /v1/rules.
    let value: serde_json::Value = serde_norway::from_str(text).map_err(|e| {
        SpecError::new(
            format!("the rules are not YAML or JSON: {e}"),
            "send one rule (a mapping with name, trigger and actions) or a list of them",
        )
    })?;
    let docs: Vec<(RuleDoc, serde_json::Value)> = match &value {
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| Ok((rule_doc(item, &format!("[{i}]."))?, item.clone())))
            .collect::<Result<_, SpecError>>()?,
        _ => vec![(rule_doc(&value, "")?, value.clone())],
    };
    if docs.is_empty() {
        return Err(SpecError::new(
            "the list of rules is empty",
            "send at least one rule",
        ));
    }
    let rules = docs
        .into_iter()
        .enumerate()
        .map(|(i, (doc, document))| {
            let at = if value.is_array() {
                format!("[{i}].")
            } else {
                String::new()
            };
            validate(doc, document)
                .map_err(|e| SpecError::new(format!("{at}{}", e.message), e.hint))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(SpecError::new(
            format!("two rules are named {}", tracecar_api::quoted(twice[0])),
            "give each rule its own name",
        ));
    }
    Ok(rules)
}

/// One rule's document, typed; a serde error names the field's path.
fn rule_doc(value: &serde_json::Value, at: &str) -> Result<RuleDoc, SpecError> {
    serde_path_to_error::deserialize::<_, RuleDoc>(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { format!("{path}: ") };
        SpecError::new(
            format!("{at}{field}{}", e.inner()),
            "a rule is {name, trigger: {cpu|memory|pressure|oom_kill|signal|exception|counter|latency: {…}}, filter: {pid, name, runtime, container}, actions: [{KIND: {…}}], limits: {max_actions, window_seconds, cooldown_seconds}}",
        )
    })
}

fn field(path: &str, value: impl std::fmt::Display, why: &str, hint: &str) -> SpecError {
    SpecError::new(format!("{path}={value} {why}"), hint.to_owned())
}

/// The mask of a `signal` trigger's names (`SIGSEGV` or `SEGV`); all five
/// when none is given.
fn signal_mask(names: &[String]) -> Result<u64, SpecError> {
    use super::fatal::{SIGNALS, bit};
    if names.is_empty() {
        return Ok(SIGNALS.iter().fold(0, |m, (_, s)| m | bit(*s)));
    }
    names.iter().try_fold(0, |mask, name| {
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        SIGNALS
            .iter()
            .find(|(n, _)| *n == full)
            .map(|(_, s)| mask | bit(*s))
            .ok_or_else(|| {
                field(
                    "trigger.signal.signals",
                    tracecar_api::quoted(name),
                    "is not a fatal signal",
                    "SIGSEGV, SIGABRT, SIGBUS, SIGFPE or SIGILL",
                )
            })
    })
}

/// `value` when `ok`, else "PATH=VALUE is out of range" with `hint`.
fn in_range<T: std::fmt::Display>(
    path: &str,
    value: T,
    ok: bool,
    hint: String,
) -> Result<T, SpecError> {
    if ok {
        Ok(value)
    } else {
        Err(field(path, value, "is out of range", &hint))
    }
}

fn percent(path: &str, value: f64, max: f64) -> Result<f64, SpecError> {
    let ok = value.is_finite() && value > 0.0 && value <= max;
    in_range(
        path,
        value,
        ok,
        format!("a percentage above 0 and at most {max}"),
    )
}

fn validate(doc: RuleDoc, document: serde_json::Value) -> Result<Rule, SpecError> {
    let name_ok = !doc.name.is_empty()
        && doc.name.len() <= 63
        && doc
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(SpecError::new(
            format!(
                "name={} is not a rule name",
                tracecar_api::quoted(&doc.name)
            ),
            "letters, digits, '-', '_' and '.', at most 63",
        ));
    }
    let trigger = match doc.trigger {
        TriggerDoc::Cpu {
            above_percent,
            for_seconds,
        } => Trigger::Cpu {
            above_percent: percent("trigger.cpu.above_percent", above_percent, 10_000.0)?,
            for_seconds: in_range(
                "trigger.cpu.for_seconds",
                for_seconds,
                for_seconds <= 3600,
                "0 to 3600 seconds".to_owned(),
            )?,
        },
        TriggerDoc::Memory { above_percent } => Trigger::Memory {
            above_percent: percent("trigger.memory.above_percent", above_percent, 100.0)?,
        },
        TriggerDoc::Pressure {
            resource,
            above_percent,
        } => Trigger::Pressure {
            resource: match resource.as_str() {
                "memory" => Resource::Memory,
                "cpu" => Resource::Cpu,
                "io" => Resource::Io,
                other => {
                    return Err(field(
                        "trigger.pressure.resource",
                        tracecar_api::quoted(other),
                        "is not a resource",
                        "memory, cpu or io",
                    ));
                }
            },
            above_percent: percent("trigger.pressure.above_percent", above_percent, 100.0)?,
        },
        TriggerDoc::OomKill {} => Trigger::OomKill,
        TriggerDoc::Signal { signals } => Trigger::Signal {
            signals: signal_mask(&signals)?,
        },
        TriggerDoc::Counter {
            name,
            provider,
            quantile,
            above,
            interval,
        } => {
            let text_ok =
                |t: &str| !t.is_empty() && t.len() <= 256 && !t.chars().any(char::is_control);
            let name_ok = text_ok(&name);
            let provider =
                provider.unwrap_or_else(|| crate::dotnet::spec::RUNTIME_COUNTERS.to_owned());
            let provider_ok = text_ok(&provider);
            let quantile = match quantile {
                None => None,
                Some(q) => Some(
                    ["0.5", "0.95", "0.99"]
                        .into_iter()
                        .find(|k| k.parse::<f64>() == Ok(q))
                        .ok_or_else(|| {
                            field(
                                "trigger.counter.quantile",
                                q,
                                "is not a quantile the runtime reports",
                                "0.5, 0.95 or 0.99",
                            )
                        })?
                        .to_owned(),
                ),
            };
            let interval = interval.unwrap_or(1);
            Trigger::Counter {
                name: in_range(
                    "trigger.counter.name",
                    name,
                    name_ok,
                    "a counter's name, working-set or http.server.request.duration".to_owned(),
                )?,
                provider: in_range(
                    "trigger.counter.provider",
                    provider,
                    provider_ok,
                    "an EventSource or Meter, System.Runtime by default".to_owned(),
                )?,
                quantile,
                above: in_range(
                    "trigger.counter.above",
                    above,
                    above.is_finite(),
                    "a number in the counter's unit".to_owned(),
                )?,
                interval: in_range(
                    "trigger.counter.interval",
                    interval,
                    (1..=60).contains(&interval),
                    "1 to 60 seconds".to_owned(),
                )?,
            }
        }
        TriggerDoc::Latency {
            symbol,
            module,
            above_ms,
        } => {
            let above_ms = in_range(
                "trigger.latency.above_ms",
                above_ms,
                (0.0..=3_600_000.0).contains(&above_ms),
                "milliseconds, e.g. 5 or 0.5".to_owned(),
            )?;
            let probed = super::latency::Probed { symbol, module };
            super::latency::check(&probed)
                .map_err(|e| SpecError::new(format!("trigger.latency: {}", e.message), e.hint))?;
            Trigger::Latency {
                symbol: probed.symbol,
                module: probed.module,
                above_ms,
            }
        }
        TriggerDoc::Exception { r#type } => {
            let ok = !r#type.is_empty()
                && r#type.len() <= 512
                && !r#type.chars().any(|c| c.is_whitespace() || c.is_control());
            Trigger::Exception {
                kind: in_range(
                    "trigger.exception.type",
                    r#type,
                    ok,
                    "a .NET type name, System.InvalidOperationException or InvalidOperationException".to_owned(),
                )?,
            }
        }
    };
    let filter = Filter {
        pid: match doc.filter.pid {
            Some(0) => {
                return Err(field(
                    "filter.pid",
                    0,
                    "is not a process",
                    "a PID from /v1/processes",
                ));
            }
            other => other,
        },
        name: match doc.filter.name {
            Some(n) if n.is_empty() || n.len() > 255 => {
                return Err(field(
                    "filter.name",
                    tracecar_api::quoted(&n),
                    "is not a process name",
                    "a process's name (comm) or its executable's file name",
                ));
            }
            other => other,
        },
        runtime: doc
            .filter
            .runtime
            .map(|r| {
                serde_json::from_value::<Runtime>(serde_json::Value::String(r.clone())).map_err(
                    |_| {
                        field(
                            "filter.runtime",
                            tracecar_api::quoted(&r),
                            "is not a runtime",
                            "dotnet, node, java, python, go or native",
                        )
                    },
                )
            })
            .transpose()?,
        container: match doc.filter.container {
            // A Kubernetes container name is a DNS label.
            Some(c)
                if c.is_empty()
                    || c.len() > 63
                    || c.starts_with('-')
                    || c.ends_with('-')
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') =>
            {
                return Err(field(
                    "filter.container",
                    tracecar_api::quoted(&c),
                    "is not a container name",
                    "a container of the pod, as its spec names it (a DNS label: a-z, 0-9 and -)",
                ));
            }
            other => other,
        },
    };
    if doc.actions.is_empty() && trigger != Trigger::OomKill {
        return Err(SpecError::new(
            "actions is empty",
            format!(
                "give at least one action: {} (only oom_kill may have none: its record is kept anyway)",
                super::action::KINDS
            ),
        ));
    }
    if doc.actions.len() > MAX_ACTIONS {
        return Err(field(
            "actions",
            format!("[{} actions]", doc.actions.len()),
            "is too many",
            &format!("at most {MAX_ACTIONS}"),
        ));
    }
    let actions = doc
        .actions
        .iter()
        .enumerate()
        .map(|(i, action)| super::action::parse(i, action))
        .collect::<Result<Vec<_>, _>>()?;
    if matches!(trigger, Trigger::Signal { .. })
        && let Some(i) = actions.iter().position(|a| !matches!(a, Action::Dump(_)))
    {
        return Err(SpecError::new(
            format!("actions[{i}] cannot run at a fatal signal"),
            "a process stopped at its fatal signal can only be dumped: use {dump: {…}}",
        ));
    }
    if let Some(i) = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Action::LttngSnapshot(_)))
        .nth(1)
        .map(|(i, _)| i)
    {
        return Err(SpecError::new(
            format!("actions[{i}] is a second lttng_snapshot"),
            "a rule has one flight recorder: one lttng_snapshot, whose events= list them all",
        ));
    }
    let defaults = Limits::default();
    let limit =
        |path: &str, value: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>| {
            let value = value.unwrap_or(default);
            let hint = format!("{} to {}", range.start(), range.end());
            in_range(path, value, range.contains(&value), hint)
        };
    let limits = Limits {
        max_actions: limit(
            "limits.max_actions",
            doc.limits.max_actions,
            defaults.max_actions,
            1..=100,
        )?,
        window_seconds: limit(
            "limits.window_seconds",
            doc.limits.window_seconds,
            defaults.window_seconds,
            1..=604_800,
        )?,
        cooldown_seconds: limit(
            "limits.cooldown_seconds",
            doc.limits.cooldown_seconds,
            defaults.cooldown_seconds,
            0..=86_400,
        )?,
    };
    Ok(Rule {
        name: doc.name,
        trigger,
        filter,
        actions,
        limits,
        document,
    })
}

#[cfg(test)]
mod tests;
