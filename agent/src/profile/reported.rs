//! Profiles a language runtime reports itself (`mode=alloc`,
//! `mode=contention`: .NET's allocation ticks and lock contentions, with
//! the managed stacks the runtime walked), made into the same
//! [`Captured`] as a perf profile, so every format renders them.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use super::{Mode, ProfileError, ProfileSpec, Profiled};
use crate::procfs::Procfs;
use crate::runtime::{self, NamedSample, Reported};
use crate::stacks::render::RenderMeta;
use crate::stacks::{Captured, Frame, FrameKind, Measure, Stack};

/// Profiles the one process of `spec` (checked by the spec) through its
/// runtime, and renders it.
pub fn reported(
    spec: &ProfileSpec,
    procfs: &Procfs,
    cancel: &AtomicBool,
) -> Result<Profiled, ProfileError> {
    let pid = spec
        .pids
        .as_deref()
        .and_then(<[u32]>::first)
        .copied()
        .unwrap_or_default();
    let what = match spec.mode {
        Mode::Contention => Reported::Contention,
        _ => Reported::Alloc,
    };
    let maps = procfs.maps(pid).unwrap_or_default();
    let runtime = runtime::of_process(procfs, pid, &maps);
    let started = (SystemTime::now(), Instant::now());
    let samples = runtime::reported(runtime, procfs, pid, what, spec.seconds, cancel).ok_or(
        ProfileError::NotReported {
            pid,
            mode: spec.mode.name(),
            runtime,
        },
    )??;
    let comm = procfs
        .stat(pid)
        .map_or_else(|_| format!("pid-{pid}"), |s| s.comm);
    let captured = captured(pid, &comm, what, samples, started);
    let body = crate::stacks::render::render(
        &captured,
        spec.format,
        &RenderMeta {
            seconds: spec.seconds,
            unwind: "runtime",
            kernel: false,
            comments: Vec::new(),
        },
    )?;
    Ok(Profiled {
        body,
        samples: captured.samples,
        capture: captured.duration,
        sampling: captured.sampling,
    })
}

/// The samples aggregated by stack, under a root frame named `comm`.
pub fn captured(
    pid: u32,
    comm: &str,
    what: Reported,
    samples: Vec<NamedSample>,
    started: (SystemTime, Instant),
) -> Captured {
    let count = samples.iter().map(|s| s.count).sum();
    // Stacks that differ only in addresses the runtime did not name, or
    // in code versions, have one name: merged here.
    let mut by_stack: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    for sample in samples {
        let entry = by_stack.entry(sample.frames).or_default();
        entry.0 += sample.count;
        entry.1 = entry.1.saturating_add(sample.weight);
    }
    let root = Frame::new(comm, FrameKind::Root, None);
    let frame = |name: String| {
        let kind = if name.starts_with("[unknown]") {
            FrameKind::Unknown
        } else if name.starts_with('[') {
            FrameKind::Marker
        } else {
            FrameKind::Jit
        };
        Frame::new(name, kind, None)
    };
    let stacks = by_stack
        .into_iter()
        .map(|(names, (count, weight))| Stack {
            pid,
            frames: std::iter::once(root.clone())
                .chain(names.into_iter().map(frame))
                .collect(),
            truncated: false,
            count,
            weight,
        })
        .collect();
    Captured {
        stacks,
        samples: count,
        lost: 0,
        processes: BTreeMap::from([(pid, comm.to_owned())]),
        started: started.0,
        duration: started.1.elapsed(),
        cancelled: false,
        measure: Measure::Runtime { what: what.name() },
        sampling: (started.1, Instant::now()),
        build_ids: BTreeMap::new(),
        symbol_errors: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_aggregate_by_stack_under_the_process() {
        let sample = |frames: &[&str], weight| NamedSample {
            frames: frames.iter().map(|f| (*f).to_owned()).collect(),
            count: 1,
            weight,
        };
        let captured = captured(
            7,
            "app",
            Reported::Alloc,
            vec![
                sample(
                    &["App.Main()", "App.Allocate()", "[System.Byte[]]"],
                    100_000,
                ),
                sample(
                    &["App.Main()", "App.Allocate()", "[System.Byte[]]"],
                    100_500,
                ),
                sample(&["[unknown] 0x9000"], 7),
            ],
            (SystemTime::now(), Instant::now()),
        );
        assert_eq!(captured.samples, 3);
        let folded = crate::stacks::render::folded(&captured, false);
        assert!(
            folded.contains("app;App.Main();App.Allocate();[System.Byte[]] 200500"),
            "{folded}"
        );
        assert_eq!(
            captured.measure.sample_types(),
            [
                ("alloc_samples".to_owned(), "count"),
                ("alloc_space".to_owned(), "bytes")
            ]
        );
        let kinds: Vec<FrameKind> = captured.stacks[0].frames.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                FrameKind::Root,
                FrameKind::Jit,
                FrameKind::Jit,
                FrameKind::Marker
            ]
        );
    }
}
