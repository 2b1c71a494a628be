//! The `latency` trigger: a probed function slower than a threshold.
//!
//! For each process the rule matches, a [`Watch`] keeps a probe on the
//! function for as long as the rule is in force, an hour at a time, with
//! `/v1/uprobe`'s own parser, resolver and executor (a uprobe for a
//! native symbol; hardware breakpoints for a JIT method by name, as
//! `/v1/uprobe` does), with its return, and reports each call's latency.
//! It holds one of the agent's 8 probe slots while it runs. What it costs
//! the app is what the same `/v1/uprobe` costs it: a few microseconds a
//! call (docs/benchmarks.md, `make bench-uprobe`).

use std::sync::Arc;

use tracecar_api::request::UprobeRequest;

use super::watch::{Ended, Seen, Wake, Watch};
use crate::params::SpecError;
use crate::procfs::Procfs;

/// A probe's length before the next one starts.
const PROBE_SECONDS: u32 = 3600;

/// What a `latency` rule probes: the function, and the module it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// The symbol (or a .NET method, `Namespace.Type::Method`).
    pub symbol: String,
    /// The module it is in (`libc.so.6`), when not the executable.
    pub module: Option<String>,
}

/// `/v1/uprobe`'s request for `probed` in `pid`: its return, for its
/// latency, for the next hour.
fn request(probed: &Probed, pid: u32) -> UprobeRequest {
    UprobeRequest {
        symbol: Some(probed.symbol.clone()),
        module: probed.module.clone(),
        pid: Some(pid.to_string()),
        ret: Some("u64".to_owned()),
        seconds: Some(PROBE_SECONDS.to_string()),
        ..UprobeRequest::default()
    }
}

/// Checks that `/v1/uprobe` takes `probed` (for a rule's document).
pub fn check(probed: &Probed) -> Result<(), SpecError> {
    crate::uprobe::spec::parse(&request(probed, 1)).map(drop)
}

/// Probes `probed` in `pid`, holding a slot of `probes` while attached.
pub fn start(
    procfs: &Procfs,
    pid: u32,
    probed: Probed,
    probes: Arc<tokio::sync::Semaphore>,
    wake: Arc<Wake>,
) -> Result<Watch<Seen>, String> {
    let spec = crate::uprobe::spec::parse(&request(&probed, pid)).map_err(|e| e.message)?;
    let procfs = procfs.clone();
    Watch::start(format!("latency-rule-{pid}"), wake, move |cancel, emit| {
        if procfs.check_visible(&[pid]).is_err() {
            return Err(Ended::Stop(format!("pid {pid} is gone")));
        }
        let _slot = probes
            .clone()
            .try_acquire_owned()
            .map_err(|_| Ended::Retry("every probe slot is taken".to_owned()))?;
        let plan = crate::uprobe::resolve::resolve(&spec, &procfs)
            .map_err(|e| Ended::Retry(format!("cannot probe {}: {e}", probed.symbol)))?;
        let failed = std::cell::RefCell::new(None);
        crate::uprobe::stream::stream(
            &spec,
            plan,
            &procfs,
            cancel,
            |attached| {
                if let Err(e) = attached {
                    *failed.borrow_mut() = Some(e.to_string());
                }
            },
            |bytes| {
                bytes
                    .split(|b| *b == b'\n')
                    .filter_map(|line| {
                        serde_json::from_slice::<tracecar_api::uprobe::ProbeEvent>(line).ok()
                    })
                    .filter_map(|event| event.latency_ns)
                    .all(|ns| emit(Seen::Latency(ns)))
            },
        );
        match failed.into_inner() {
            Some(e) => Err(Ended::Retry(e)),
            None => Ok(()),
        }
    })
}
