//! What a runtime's heap holds by type ([`HeapReport`], from
//! `/v1/dotnet/gcdump`) as a profile: one stack per type under the
//! process, weighing its objects (`inuse_objects`) and bytes
//! (`inuse_space`), so that pprof and the other stack formats render it.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use tracecar_api::dotnet::HeapReport;

use crate::stacks::render::{RenderError, RenderMeta};
use crate::stacks::{Captured, Format, Frame, FrameKind, Measure, Stack};

/// The report as a profile: one stack per type under the process
/// (`inuse_objects`, `inuse_space`), for pprof and the other formats.
pub fn captured(report: &HeapReport, comm: &str, started: (SystemTime, Instant)) -> Captured {
    let root = Frame::new(comm, FrameKind::Root, None);
    let stacks = report
        .types
        .iter()
        .map(|t| Stack {
            pid: report.pid,
            frames: vec![
                root.clone(),
                Frame::new(t.name.clone(), FrameKind::Jit, None),
            ],
            truncated: false,
            count: t.count,
            weight: t.bytes,
        })
        .collect();
    Captured {
        stacks,
        samples: report.objects,
        lost: 0,
        processes: BTreeMap::from([(report.pid, comm.to_owned())]),
        started: started.0,
        duration: started.1.elapsed(),
        cancelled: false,
        measure: Measure::Runtime { what: "heap" },
        sampling: (started.1, Instant::now()),
        build_ids: BTreeMap::new(),
        symbol_errors: BTreeMap::new(),
    }
}

/// The report as a gzipped pprof profile.
pub fn pprof(report: &HeapReport, comm: &str) -> Result<Vec<u8>, RenderError> {
    crate::stacks::render::render(
        &captured(report, comm, (SystemTime::now(), Instant::now())),
        Format::Pprof,
        &RenderMeta {
            seconds: 0,
            unwind: "runtime",
            kernel: false,
            comments: Vec::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_is_one_stack_of_its_objects_and_bytes() {
        let report = tracecar_api::fixtures::heap_report(7);
        let captured = captured(&report, "app", (SystemTime::now(), Instant::now()));
        assert_eq!(
            captured.measure.sample_types(),
            [
                ("inuse_objects".to_owned(), "count"),
                ("inuse_space".to_owned(), "bytes")
            ]
        );
        let folded = crate::stacks::render::folded(&captured, false);
        assert!(folded.contains("app;App.Held 32000"), "{folded}");
        assert_eq!(captured.stacks[0].count, 1000);
        assert_eq!(&pprof(&report, "app").unwrap()[..2], &[0x1f, 0x8b]);
    }
}
