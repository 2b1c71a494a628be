//! Running a resolved probe (the executor): attach, stream one NDJSON
//! line per call (or aggregate), detach, and end with a summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracecar_api::SummaryLine;
use tracecar_api::uprobe::{ProbeEvent, ProbeSummary};

use super::attach::{self, AttachError, Location};
use super::decode::{decode_arg, decode_register};
use super::events::{Config, Event, FLAG_PAIRED};
use super::resolve::ResolvedTarget;
use super::spec::UprobeSpec;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `seconds` passed.
    Seconds,
    /// `limit` events were sent.
    Limit,
    /// The client went away.
    Disconnected,
}

impl Stopped {
    fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Limit => "limit",
            Self::Disconnected => "disconnected",
        }
    }
}

/// The BPF configuration for a request.
pub fn config(spec: &UprobeSpec, host: &Host) -> Config {
    Config {
        pidns_dev: host.pidns_dev,
        pidns_ino: host.pidns_ino,
        nargs: spec.args.len() as u32,
        flags: if spec.ret.is_some() { FLAG_PAIRED } else { 0 },
        args: super::decode::captures(&spec.args),
        // The per-second budget, split evenly over the CPUs.
        max_per_cpu_per_sec: u64::from(spec.rate).div_ceil(host.cpus.max(1) as u64),
    }
}

/// What [`config`] needs of the machine: the agent's PID namespace (the
/// BPF program reports PIDs as this namespace sees them) and the CPUs the
/// rate limit is split over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Device of `/proc/self/ns/pid`.
    pub pidns_dev: u64,
    /// Inode of `/proc/self/ns/pid`.
    pub pidns_ino: u64,
    /// Online CPUs.
    pub cpus: usize,
}

impl Host {
    /// Reads them.
    pub fn read() -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata("/proc/self/ns/pid").ok();
        Self {
            pidns_dev: ns.as_ref().map_or(0, MetadataExt::dev),
            pidns_ino: ns.as_ref().map_or(0, MetadataExt::ino),
            cpus: crate::sys::online_cpus().len(),
        }
    }
}

/// The number `aggregate=` counts for one event.
fn aggregate_value(spec: &UprobeSpec, event: &Event, of: super::spec::Of) -> i64 {
    let number = |v: Value| {
        v.as_i64()
            .or_else(|| v.as_u64().map(|u| u as i64))
            .unwrap_or(0)
    };
    match of {
        super::spec::Of::Arg(i) => number(decode_arg(&spec.args[i], event, i)),
        super::spec::Of::Ret => spec
            .ret
            .map_or(0, |t| number(decode_register(t, event.ret))),
        super::spec::Of::Latency => i64::try_from(event.latency_ns).unwrap_or(i64::MAX),
    }
}

/// One event as its wire type.
pub fn probe_event(spec: &UprobeSpec, event: &Event) -> ProbeEvent {
    ProbeEvent {
        ts_ns: event.ts_ns,
        pid: event.pid,
        tid: event.tid,
        comm: event.comm(),
        args: spec
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| decode_arg(a, event, i))
            .collect(),
        ret: spec.ret.map(|ret| decode_register(ret, event.ret)),
        latency_ns: spec.ret.map(|_| event.latency_ns),
    }
}

/// One event as an NDJSON line.
fn event_line(spec: &UprobeSpec, event: &Event) -> String {
    let mut line = serde_json::to_string(&probe_event(spec, event)).unwrap_or_default();
    line.push('\n');
    line
}

/// Attaches and streams lines through `send` until the spec's limits,
/// `cancel`, or `send` failing (client gone). `ready` learns first whether
/// attaching worked.
pub fn stream(
    spec: &UprobeSpec,
    target: &ResolvedTarget,
    cancel: &Arc<AtomicBool>,
    ready: impl FnOnce(Result<(), AttachError>),
    mut send: impl FnMut(String) -> bool,
) {
    let mut attached = match attach::attach(
        &target.path,
        &Location::Offset(target.offset),
        spec.pid,
        config(spec, &Host::read()),
    ) {
        Ok(a) => a,
        Err(e) => {
            ready(Err(e));
            return;
        }
    };
    ready(Ok(()));
    let start = Instant::now();
    let deadline = Duration::from_secs(u64::from(spec.seconds));
    let mut sent: u64 = 0;
    let mut batch = Vec::new();
    let mut histogram = spec
        .aggregate
        .map(|(kind, _)| super::hist::Histogram::new(kind));
    let stopped = 'outer: loop {
        if cancel.load(Ordering::Relaxed) {
            break Stopped::Disconnected;
        }
        batch.clear();
        attached.drain(&mut batch);
        for event in &batch {
            match (&mut histogram, spec.aggregate) {
                (Some(h), Some((_, of))) => h.add(aggregate_value(spec, event, of)),
                _ => {
                    if !send(event_line(spec, event)) {
                        break 'outer Stopped::Disconnected;
                    }
                }
            }
            sent += 1;
            if spec.limit.is_some_and(|l| sent >= u64::from(l)) {
                break 'outer Stopped::Limit;
            }
        }
        if start.elapsed() >= deadline {
            break Stopped::Seconds;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (calls, lost, throttled) = attached.counters();
    // Detach before the summary, so "done" means nothing is attached.
    drop(attached);
    if let (Some(h), Some((kind, of))) = (&histogram, spec.aggregate) {
        let mut doc = h.to_json();
        doc["aggregate"] = Value::from(kind.name());
        doc["of"] = Value::from(match of {
            super::spec::Of::Arg(i) => format!("arg{}", spec.args[i].index),
            super::spec::Of::Ret => "ret".to_owned(),
            super::spec::Of::Latency => "latency".to_owned(),
        });
        let _ = send(format!("{doc}\n"));
    }
    let summary = SummaryLine {
        summary: ProbeSummary {
            events: sent,
            calls,
            lost,
            throttled,
            stopped: stopped.as_str().to_owned(),
            seconds: start.elapsed().as_secs_f64(),
            module: target.module.clone(),
            offset: format!("{:#x}", target.offset),
        },
    };
    let mut line = serde_json::to_string(&summary).unwrap_or_default();
    line.push('\n');
    let _ = send(line);
}
