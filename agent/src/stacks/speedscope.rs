//! speedscope's file format (`format=speedscope`): one sampled profile
//! per process over a shared frame table.

use std::collections::{BTreeMap, HashMap};

use super::{Captured, Frame, Measure};

/// speedscope's file format, serialized as it is built: frame names are
/// borrowed and samples are frame indices (a `serde_json::Value` tree of
/// a large profile takes tens of bytes per frame of every stack).
#[derive(serde::Serialize)]
pub(super) struct SpeedscopeFile<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    name: String,
    exporter: &'static str,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    shared: SpeedscopeShared<'a>,
    profiles: Vec<SpeedscopeProfile>,
}

#[derive(serde::Serialize)]
struct SpeedscopeShared<'a> {
    frames: Vec<SpeedscopeFrame<'a>>,
}

#[derive(serde::Serialize)]
struct SpeedscopeFrame<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct SpeedscopeProfile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<u32>>,
    weights: Vec<u64>,
}

/// The speedscope file of `captured`: one sampled profile per process,
/// frames shared.
pub(super) fn speedscope(captured: &Captured) -> SpeedscopeFile<'_> {
    let mut frame_index: HashMap<&Frame, u32> = HashMap::new();
    let mut frames = Vec::new();
    let mut per_pid: BTreeMap<u32, (Vec<Vec<u32>>, Vec<u64>)> = BTreeMap::new();
    for stack in &captured.stacks {
        let ids: Vec<u32> = stack
            .frames
            .iter()
            .map(|f| {
                *frame_index.entry(f).or_insert_with(|| {
                    frames.push(SpeedscopeFrame {
                        name: &f.name,
                        file: f.module.as_deref(),
                    });
                    u32::try_from(frames.len() - 1).unwrap_or(u32::MAX)
                })
            })
            .collect();
        let (samples, weights) = per_pid.entry(stack.pid).or_default();
        samples.push(ids);
        weights.push(stack.weight);
    }
    // speedscope knows time and byte units; counts and other values are
    // "none".
    let unit = match &captured.measure {
        Measure::Probe { unit, .. } if *unit == "nanoseconds" => "nanoseconds",
        Measure::Time { .. } | Measure::Runtime { what: "contention" } => "nanoseconds",
        Measure::Runtime { .. } => "bytes",
        _ => "none",
    };
    let profiles = per_pid
        .into_iter()
        .map(|(pid, (samples, weights))| {
            let comm = captured.processes.get(&pid).cloned().unwrap_or_default();
            SpeedscopeProfile {
                kind: "sampled",
                name: format!("{comm} ({pid})"),
                unit,
                start_value: 0,
                end_value: weights.iter().sum(),
                samples,
                weights,
            }
        })
        .collect();
    SpeedscopeFile {
        schema: "https://www.speedscope.app/file-format-schema.json",
        name: match &captured.measure {
            Measure::Samples { hz, .. } => format!("tracecar: {} at {hz} Hz", captured.title()),
            Measure::Probe { probe, of, .. } => {
                format!(
                    "tracecar: callers of {probe} in {}, by {of}",
                    captured.title()
                )
            }
            Measure::Time { mode, .. } => format!("tracecar: {mode} time of {}", captured.title()),
            Measure::Runtime { what } => format!("tracecar: .NET {what} of {}", captured.title()),
        },
        exporter: concat!("tracecar ", env!("CARGO_PKG_VERSION")),
        active_profile_index: 0,
        shared: SpeedscopeShared { frames },
        profiles,
    }
}
