//! Trigger mode (the old "trap" workflow): watch a process's CPU use and
//! capture a short profile each time it goes above a threshold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::capture;
use super::plan::{CaptureError, CapturePlan};
use tracecar_api::request::TriggerRequest;

use super::spec::{Format, ProfileSpec, SamplingParams, sampling};
use crate::params::{self, SpecError};
use crate::process::CpuWatch;
use crate::procfs::{CLOCK_TICKS, Procfs};

/// A validated trigger request.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    /// The process to watch.
    pub pid: u32,
    /// Threshold, in percent of one CPU (may exceed 100 for threaded code).
    pub cpu_above: f64,
    /// Length of each capture.
    pub seconds: u32,
    /// Captures at most.
    pub max: u32,
    /// How long to watch in total.
    pub timeout: u32,
    /// The profile parameters for each capture (`hz`, `unwind`, `kernel`).
    pub profile: super::ProfileSpec,
}

/// Validates `/v1/profile/trigger` query parameters. Each capture is a
/// folded profile of the watched process for `seconds`, sampled as `hz`,
/// `unwind`, `kernel` and `threads` say. `format` is accepted and has no
/// effect: the report always holds folded stacks.
pub fn parse(request: &TriggerRequest) -> Result<TriggerSpec, SpecError> {
    let pid = params::required_pid(request.pid())?;
    let cpu_above = match request.cpu_above.as_deref() {
        None => 80.0,
        Some(raw) => match raw.parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 10_000.0 => v,
            _ => {
                return Err(SpecError::new(
                    format!("cpu_above={} is out of range", tracecar_api::quoted(raw)),
                    "a percentage of one CPU, e.g. cpu_above=80",
                ));
            }
        },
    };
    let seconds = params::number(request.seconds(), 5, 1..=60)?;
    let sampling = sampling(SamplingParams {
        hz: request.hz(),
        unwind: request.unwind(),
        kernel: request.kernel(),
        threads: request.threads(),
    })?;
    Ok(TriggerSpec {
        pid,
        cpu_above,
        seconds,
        max: params::number(request.max(), 3, 1..=20)?,
        timeout: params::number(request.timeout(), 300, 1..=3600)?,
        profile: ProfileSpec::new(Some(vec![pid]), seconds, sampling, Format::Folded),
    })
}

/// One capture taken because the threshold was crossed.
#[derive(Debug, Clone, Serialize)]
pub struct TriggeredCapture {
    /// When the capture started.
    pub started_unix_ms: u128,
    /// The CPU reading that triggered it.
    pub cpu_percent: f64,
    /// Samples in the capture.
    pub samples: u64,
    /// Share of truncated stacks.
    pub truncated_ratio: f64,
    /// The stacks, folded (`root;…;leaf count` lines).
    pub folded: String,
}

/// The trigger result.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerReport {
    /// The watched process.
    pub pid: u32,
    /// The threshold.
    pub cpu_above: f64,
    /// How long it watched.
    pub watched_seconds: f64,
    /// Why it stopped: `max`, `timeout`, `exited` or `cancelled`.
    pub stopped: &'static str,
    /// Highest CPU reading seen.
    pub peak_cpu_percent: f64,
    /// The captures, oldest first.
    pub captures: Vec<TriggeredCapture>,
}

/// Watches and captures until `max` captures, the timeout, the process's
/// exit or cancellation.
pub fn run(
    spec: &TriggerSpec,
    plan: &CapturePlan,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
    memory: &crate::memory::Memory,
) -> Result<TriggerReport, CaptureError> {
    let poll = Duration::from_millis(500);
    let start = Instant::now();
    let timeout = Duration::from_secs(u64::from(spec.timeout));
    let ticks = |pid| procfs.stat(pid).ok().map(|s| s.utime + s.stime);
    let above = Duration::ZERO;
    let mut report = TriggerReport {
        pid: spec.pid,
        cpu_above: spec.cpu_above,
        watched_seconds: 0.0,
        stopped: "timeout",
        peak_cpu_percent: 0.0,
        captures: Vec::new(),
    };
    let Some(first) = ticks(spec.pid) else {
        report.stopped = "exited";
        return Ok(report);
    };
    let mut watch = CpuWatch::new(first, Instant::now());
    while start.elapsed() < timeout {
        if cancel.load(Ordering::Relaxed) {
            report.stopped = "cancelled";
            break;
        }
        std::thread::sleep(poll);
        let Some(now) = ticks(spec.pid) else {
            report.stopped = "exited";
            break;
        };
        let (cpu, crossed) = watch.read(now, Instant::now(), CLOCK_TICKS, spec.cpu_above, above);
        report.peak_cpu_percent = report.peak_cpu_percent.max((cpu * 10.0).round() / 10.0);
        if crossed {
            let started = SystemTime::now();
            let captured = capture::run(plan, procfs, cancel, memory)?;
            report.captures.push(TriggeredCapture {
                started_unix_ms: started
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
                cpu_percent: (cpu * 10.0).round() / 10.0,
                samples: captured.samples,
                truncated_ratio: (captured.truncated_ratio() * 10_000.0).round() / 10_000.0,
                folded: crate::stacks::render::folded(&captured, false),
            });
            if report.captures.len() >= spec.max as usize {
                report.stopped = "max";
                break;
            }
        }
        // A capture's own time is not read as the process's.
        if let Some(after) = ticks(spec.pid) {
            watch = CpuWatch::new(after, Instant::now());
        }
    }
    report.watched_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<TriggerSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse(&r))
    }

    #[test]
    fn parses_with_defaults() {
        let spec = q(&[("pid", "7")]).unwrap();
        assert_eq!(spec.pid, 7);
        assert!((spec.cpu_above - 80.0).abs() < f64::EPSILON);
        assert_eq!((spec.seconds, spec.max, spec.timeout), (5, 3, 300));
        assert_eq!(spec.profile.pids, Some(vec![7]));
        // The plan for each capture comes from the trigger's own spec.
        assert_eq!(spec.profile.seconds, spec.seconds);
        assert_eq!(spec.profile.format, Format::Folded);
        let spec = q(&[("pid", "7"), ("seconds", "2"), ("hz", "49")]).unwrap();
        assert_eq!((spec.profile.seconds, spec.profile.hz), (2, 49));
    }

    #[test]
    fn rejects_bad_requests() {
        for pairs in [
            &[][..],
            &[("pid", "1,2")],
            &[("pid", "7"), ("cpu_above", "0")],
            &[("pid", "7"), ("max", "0")],
            &[("pid", "7"), ("timeout", "99999")],
            &[("pid", "7"), ("hz", "0")],
            &[("pid", "7"), ("bogus", "1")],
        ] {
            assert!(q(pairs).is_err(), "{pairs:?}");
        }
    }
}
