//! The .NET triggers, seen through the runtime's diagnostic port:
//! `exception` (a first-chance exception of a given type) and `counter`
//! (a counter or metric at or above a value).
//!
//! For each .NET process the rule matches, one thread keeps an EventPipe
//! session open, an hour at a time, with the executor of the endpoint
//! that reads the same thing: [`crate::dotnet::exceptions::stream`]
//! (`/v1/dotnet/exceptions`: the runtime's Exception keyword, with its JIT
//! and Loader keywords to name stacks) or [`crate::dotnet::counters::watch`]
//! (`/v1/dotnet/counters`' session: EventCounters and meters, at the
//! rule's interval, each value seen as it comes rather than when its
//! snapshot closes at the next interval), in a [`Watch`]. A process that is not .NET is not watched;
//! a session that fails is tried again after [`super::watch::RETRY`]. What it costs the app is what
//! that endpoint costs it, all the time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::dotnet::port::{Port, PortError};
use crate::dotnet::spec::{
    CountersFormat, CountersSpec, ExceptionsFormat, ExceptionsSpec, RUNTIME_COUNTERS,
};
use crate::procfs::Procfs;

use super::watch::{Emit, Ended, Seen, Wake, Watch};

/// A session's length before the next one starts.
const SESSION_SECONDS: u32 = 3600;

/// What a watch reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// Exceptions of this type ([`is_type`]).
    Exception(String),
    /// One counter of one provider, every `interval` seconds.
    Counter {
        /// The EventSource or Meter (`System.Runtime`).
        provider: String,
        /// The counter's name in the snapshot (`working-set`, or a
        /// metric with its tags, `name{route=/a}`).
        name: String,
        /// For a histogram: this quantile (`0.99`) instead of its mean.
        quantile: Option<String>,
        /// The runtime's measuring interval, in seconds.
        interval: u32,
    },
}

/// Whether an exception of type `thrown` is one of `wanted`: the full
/// name (`System.InvalidOperationException`), or without its namespace
/// when `wanted` has none (`InvalidOperationException`).
pub fn is_type(thrown: &str, wanted: &str) -> bool {
    thrown == wanted || (!wanted.contains('.') && thrown.rsplit('.').next() == Some(wanted))
}

/// The counter's value in a reading, if it is of that counter (and has
/// the quantile asked for).
pub fn value_of(
    reading: &crate::dotnet::counters::Reading,
    provider: &str,
    name: &str,
    quantile: Option<&str>,
) -> Option<f64> {
    if reading.provider != provider || reading.key != name {
        return None;
    }
    match quantile {
        None => Some(reading.value.value),
        Some(q) => reading.value.quantiles.get(q).copied(),
    }
}

/// Watches `pid` for `what`; `Ok(None)` when it is not a .NET
/// process.
pub fn start(
    procfs: &Procfs,
    pid: u32,
    what: Watched,
    wake: Arc<Wake>,
) -> Result<Option<Watch<Seen>>, String> {
    match Port::find(procfs, pid) {
        Err(PortError::NotDotnet { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
        Ok(_) => {}
    }
    let procfs = procfs.clone();
    Watch::start(format!("dotnet-rule-{pid}"), wake, move |cancel, emit| {
        // Gone, or no longer reachable: the watch ends.
        let port = Port::find(&procfs, pid).map_err(|e| Ended::Stop(e.to_string()))?;
        match session(&procfs, &port, pid, &what, cancel, emit) {
            Some(e) => Err(Ended::Retry(e)),
            None => Ok(()),
        }
    })
    .map(Some)
}

/// One session of `what` until it ends or `emit` answers `false`; why it
/// could not start, if it could not.
fn session(
    procfs: &Procfs,
    port: &Port,
    pid: u32,
    what: &Watched,
    cancel: &AtomicBool,
    emit: Emit<'_, Seen>,
) -> Option<String> {
    let failed = std::cell::RefCell::new(None);
    match what {
        Watched::Exception(wanted) => {
            let spec = ExceptionsSpec {
                pid,
                seconds: SESSION_SECONDS,
                limit: None,
                format: ExceptionsFormat::Json,
            };
            let ready = |started: Result<u64, PortError>| {
                if let Err(e) = started {
                    *failed.borrow_mut() = Some(e.to_string());
                }
            };
            crate::dotnet::exceptions::stream(procfs, port, &spec, cancel, ready, |bytes| {
                bytes
                    .split(|b| *b == b'\n')
                    .filter_map(|line| {
                        serde_json::from_slice::<tracecar_api::dotnet::ExceptionEvent>(line).ok()
                    })
                    .filter(|e| is_type(&e.kind, wanted))
                    .all(|e| emit(Seen::Thrown(e.message)))
            });
        }
        Watched::Counter {
            provider,
            name,
            quantile,
            interval,
        } => {
            let mut providers = vec![RUNTIME_COUNTERS.to_owned()];
            if provider != RUNTIME_COUNTERS {
                providers.push(provider.clone());
            }
            let spec = CountersSpec {
                pid,
                providers,
                seconds: SESSION_SECONDS,
                interval: *interval,
                format: CountersFormat::Json,
            };
            let ready = |started: Result<(), crate::dotnet::counters::CountersError>| {
                if let Err(e) = started {
                    *failed.borrow_mut() = Some(e.to_string());
                }
            };
            crate::dotnet::counters::watch(procfs, port, &spec, cancel, ready, |reading| {
                match value_of(reading, provider, name, quantile.as_deref()) {
                    Some(value) => emit(Seen::Value(value)),
                    None => !cancel.load(Ordering::Relaxed),
                }
            });
        }
    }
    failed.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_match_by_full_name_or_without_namespace() {
        let thrown = "System.InvalidOperationException";
        assert!(is_type(thrown, "System.InvalidOperationException"));
        assert!(is_type(thrown, "InvalidOperationException"));
        assert!(!is_type(thrown, "Other.InvalidOperationException"));
        assert!(!is_type(thrown, "Exception"));
        assert!(!is_type(thrown, "System.Exception"));
    }

    #[test]
    fn counters_are_read_by_provider_name_and_quantile() {
        use crate::dotnet::counters::Reading;
        let reading = |provider: &str, key: &str, value: serde_json::Value| Reading {
            provider: provider.to_owned(),
            key: key.to_owned(),
            value: serde_json::from_value(value).unwrap(),
            interval: Some(1.0),
        };
        let working_set = reading(
            "System.Runtime",
            "working-set",
            serde_json::json!({"value": 42.5, "kind": "mean", "unit": "MB", "display": "Working Set"}),
        );
        assert_eq!(
            value_of(&working_set, "System.Runtime", "working-set", None),
            Some(42.5)
        );
        assert_eq!(
            value_of(&working_set, "System.Runtime", "cpu-usage", None),
            None
        );
        assert_eq!(value_of(&working_set, "Other", "working-set", None), None);
        let name = "http.server.request.duration{route=/a}";
        let duration = reading(
            "Web",
            name,
            serde_json::json!({"value": 0.02, "kind": "histogram", "unit": "s", "display": "d",
                "quantiles": {"0.5": 0.01, "0.99": 0.4}}),
        );
        assert_eq!(value_of(&duration, "Web", name, None), Some(0.02));
        assert_eq!(value_of(&duration, "Web", name, Some("0.99")), Some(0.4));
        assert_eq!(value_of(&duration, "Web", name, Some("0.95")), None);
    }
}
