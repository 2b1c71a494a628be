//! Output formats of a finished capture. Pure: [`Captured`] in, bytes out.

use std::collections::{BTreeMap, HashMap};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::pprof;
use super::{Captured, Format, Frame, FrameKind, Measure};

/// Facts about the request that the outputs describe.
#[derive(Debug, Clone, Serialize)]
pub struct RenderMeta {
    /// Requested length in seconds.
    pub seconds: u32,
    /// Unwinding mode actually used.
    pub unwind: &'static str,
    /// Whether kernel frames were collected.
    pub kernel: bool,
    /// Free text about the profile (`k8s.pod.name=web-0`): pprof's
    /// comments (`go tool pprof -comments`), and a list in JSON.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
}

/// Rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// inferno could not draw the flamegraph.
    #[error("cannot render flamegraph: {0}")]
    Flamegraph(#[source] std::io::Error),
    /// Serialization or compression failed.
    #[error("cannot encode output: {0}")]
    Encode(#[from] std::io::Error),
}

/// Renders `captured` in `format`.
pub fn render(
    captured: &Captured,
    format: Format,
    meta: &RenderMeta,
) -> Result<Vec<u8>, RenderError> {
    match format {
        Format::Folded => Ok(folded(captured, false).into_bytes()),
        Format::Svg => svg(captured, meta),
        Format::Json => {
            // Sized up front: growing a buffer of hundreds of MiB by
            // doubling holds both copies for a moment.
            let mut out =
                Vec::with_capacity(usize::try_from(Totals::of(captured).json()).unwrap_or(0));
            serde_json::to_writer_pretty(&mut out, &json(captured, meta))
                .map_err(std::io::Error::other)?;
            Ok(out)
        }
        Format::Speedscope => Ok(serde_json::to_vec(&super::speedscope::speedscope(captured))
            .map_err(std::io::Error::other)?),
        Format::Pprof => pprof_gz(captured, meta),
    }
}

/// A frame name safe for the folded format (`;` separates frames).
fn folded_name(frame: &Frame, annotate: bool) -> String {
    let mut name = frame.name.replace([';', '\n', '\r'], ":");
    if annotate {
        // inferno's java palette colours these suffixes.
        match frame.kind {
            FrameKind::Kernel => name.push_str("_[k]"),
            FrameKind::Jit => name.push_str("_[j]"),
            _ => {}
        }
    }
    name
}

/// What the stacks of `captured` add up to.
struct Totals {
    stacks: u64,
    frames: u64,
    /// Bytes of the frames' names.
    names: u64,
    /// Bytes of their module paths.
    modules: u64,
}

impl Totals {
    fn of(captured: &Captured) -> Self {
        let mut totals = Self {
            stacks: captured.stacks.len() as u64,
            frames: 0,
            names: 0,
            modules: 0,
        };
        for frame in captured.stacks.iter().flat_map(|s| &s.frames) {
            totals.frames += 1;
            totals.names += frame.name.len() as u64;
            totals.modules += frame.module.as_ref().map_or(0, |m| m.len() as u64);
        }
        totals
    }

    /// The folded text's length, but for annotations.
    fn folded(&self) -> u64 {
        self.names + self.frames + self.stacks * 21
    }

    /// About the pretty JSON's length: each frame is an object of five
    /// indented lines (92 bytes) with its name and module.
    fn json(&self) -> u64 {
        self.names + self.modules + self.frames * 96 + self.stacks * 256 + (64 << 10)
    }
}

/// About how many bytes answering `captured` in `format` takes on top of
/// what it holds: the answer (exact for folded, within a few percent for
/// JSON, which are sized up front) and the renderer's own structures
/// (per frame, measured on `agent/tests/memory.rs`'s workload: pprof's
/// location lists 16 bytes, speedscope's indices 12, inferno's merge of
/// the folded lines 48). The memory bound checks it before rendering.
pub fn estimate_bytes(captured: &Captured, format: Format) -> u64 {
    let totals = Totals::of(captured);
    match format {
        Format::Folded => totals.folded(),
        Format::Svg => totals.folded() + totals.frames * 48,
        Format::Json => totals.json(),
        Format::Speedscope => totals.frames * 12 + totals.stacks * 48 + (64 << 10),
        Format::Pprof => totals.frames * 16 + totals.stacks * 64 + (64 << 10),
    }
}

/// `root;outer;…;leaf weight` lines, heaviest first.
pub fn folded(captured: &Captured, annotate: bool) -> String {
    let mut out =
        String::with_capacity(usize::try_from(Totals::of(captured).folded()).unwrap_or(0));
    for stack in &captured.stacks {
        let names: Vec<String> = stack
            .frames
            .iter()
            .map(|f| folded_name(f, annotate))
            .collect();
        out.push_str(&names.join(";"));
        out.push(' ');
        out.push_str(&stack.weight.to_string());
        out.push('\n');
    }
    out
}

fn svg(captured: &Captured, meta: &RenderMeta) -> Result<Vec<u8>, RenderError> {
    let (title, subtitle, empty) = captured.flamegraph_titles(meta.unwind);
    let titles = tracecar_api::flame::Titles {
        title,
        subtitle,
        empty: empty.to_owned(),
        count_name: captured.measure.weight_name(),
    };
    let lines = if captured.samples == 0 || captured.total_weight() == 0 {
        String::new()
    } else {
        folded(captured, true)
    };
    tracecar_api::flame::svg(&titles, &lines).map_err(RenderError::Flamegraph)
}

#[derive(Serialize)]
struct JsonProfile<'a> {
    meta: JsonMeta<'a>,
    stacks: &'a [super::Stack],
}

#[derive(Serialize)]
struct JsonMeta<'a> {
    #[serde(flatten)]
    request: &'a RenderMeta,
    processes: &'a BTreeMap<u32, String>,
    #[serde(flatten)]
    measure: MeasureMeta<'a>,
    samples: u64,
    lost: u64,
    truncated_ratio: f64,
    duration_seconds: f64,
    start_unix_ms: u128,
    cancelled: bool,
    /// Frames by module: how many, how many unnamed, and why not.
    modules: BTreeMap<String, ModuleStats>,
}

/// The measure as the JSON output states it.
#[derive(Serialize)]
#[serde(untagged)]
enum MeasureMeta<'a> {
    Samples {
        event: &'a str,
        hz: u32,
    },
    Probe {
        probe: &'a str,
        of: &'a str,
        unit: &'a str,
    },
    Time {
        mode: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        hz: Option<u32>,
        blocks: u64,
        throttled: u64,
        unit: &'a str,
    },
    Runtime {
        runtime: &'a str,
        what: &'a str,
        unit: String,
    },
}

impl<'a> From<&'a Measure> for MeasureMeta<'a> {
    fn from(measure: &'a Measure) -> Self {
        match measure {
            Measure::Samples { event, hz } => Self::Samples { event, hz: *hz },
            Measure::Probe { probe, of, unit } => Self::Probe { probe, of, unit },
            Measure::Time {
                mode,
                hz,
                blocks,
                throttled,
            } => Self::Time {
                mode,
                hz: *hz,
                blocks: *blocks,
                throttled: *throttled,
                unit: "nanoseconds",
            },
            Measure::Runtime { what } => Self::Runtime {
                runtime: "dotnet",
                what,
                unit: measure.weight_name(),
            },
        }
    }
}

/// How well one module's frames were named (sample-weighted).
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct ModuleStats {
    /// Frames in samples.
    pub frames: u64,
    /// Of which `[unknown]`.
    pub unknown: u64,
    /// `unknown / frames`.
    pub unknown_share: f64,
    /// The symbolizer's error for the module, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Per-module frame counts of a capture, with its symbolization errors.
pub fn module_stats(captured: &Captured) -> BTreeMap<String, ModuleStats> {
    let mut out: BTreeMap<String, ModuleStats> = BTreeMap::new();
    for stack in &captured.stacks {
        // The first frame is the process name, then the thread's with
        // threads=true: only code frames are counted.
        for frame in stack
            .frames
            .iter()
            .filter(|f| !matches!(f.kind, FrameKind::Root | FrameKind::Marker))
        {
            let module = match (&frame.module, frame.kind) {
                (Some(m), _) => m.clone(),
                (None, FrameKind::Kernel) => "[kernel]".into(),
                (None, FrameKind::Jit) => "[jit]".into(),
                (None, _) => "[anon]".into(),
            };
            let entry = out.entry(module).or_default();
            entry.frames += stack.count;
            if frame.kind == FrameKind::Unknown {
                entry.unknown += stack.count;
            }
        }
    }
    for ((_, module), error) in &captured.symbol_errors {
        out.entry(module.clone()).or_default().error = Some(error.clone());
    }
    for stats in out.values_mut() {
        stats.unknown_share = if stats.frames == 0 {
            0.0
        } else {
            (stats.unknown as f64 / stats.frames as f64 * 10_000.0).round() / 10_000.0
        };
    }
    out
}

fn json<'a>(captured: &'a Captured, meta: &'a RenderMeta) -> JsonProfile<'a> {
    JsonProfile {
        meta: JsonMeta {
            request: meta,
            processes: &captured.processes,
            measure: (&captured.measure).into(),
            samples: captured.samples,
            lost: captured.lost,
            truncated_ratio: (captured.truncated_ratio() * 10_000.0).round() / 10_000.0,
            duration_seconds: captured.duration.as_secs_f64(),
            start_unix_ms: captured
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            cancelled: captured.cancelled,
            modules: module_stats(captured),
        },
        stacks: &captured.stacks,
    }
}

fn pprof_gz(captured: &Captured, meta: &RenderMeta) -> Result<Vec<u8>, RenderError> {
    let mut profile = pprof_profile(captured, |pid, module| {
        captured.build_ids.get(&(pid, module.to_owned())).cloned()
    });
    for comment in &meta.comments {
        let id = profile.string_table.len() as i64;
        profile.string_table.push(comment.clone());
        profile.comment.push(id);
    }
    Ok(pprof::gzip(&profile)?)
}

/// Builds the pprof profile; `build_id(pid, module)` looks up build IDs.
pub fn pprof_profile(
    captured: &Captured,
    build_id: impl Fn(u32, &str) -> Option<String>,
) -> pprof::Profile {
    let mut t = Tables::default();
    let sample_types: Vec<pprof::ValueType> = captured
        .measure
        .sample_types()
        .into_iter()
        .map(|(kind, unit)| pprof::ValueType {
            r#type: t.strings.id(&kind),
            unit: t.strings.id(unit),
        })
        .collect();
    let pid_key = t.strings.id("pid");
    let comm_key = t.strings.id("comm");
    let mut samples = Vec::new();
    for stack in &captured.stacks {
        // pprof lists the leaf first.
        let ids = stack
            .frames
            .iter()
            .rev()
            .filter(|f| f.kind != FrameKind::Root)
            .map(|frame| {
                t.location(frame, || {
                    frame.module.as_deref().and_then(|m| build_id(stack.pid, m))
                })
            })
            .collect();
        let comm = captured
            .processes
            .get(&stack.pid)
            .cloned()
            .unwrap_or_default();
        samples.push(pprof::Sample {
            location_id: ids,
            value: captured.measure.sample_values(stack),
            label: vec![
                pprof::Label {
                    key: pid_key,
                    num: i64::from(stack.pid),
                    ..pprof::Label::default()
                },
                pprof::Label {
                    key: comm_key,
                    str: t.strings.id(&comm),
                    ..pprof::Label::default()
                },
            ],
        });
    }
    let ((period_kind, period_unit), period) = captured.measure.period();
    let period_type = pprof::ValueType {
        r#type: t.strings.id(&period_kind),
        unit: t.strings.id(period_unit),
    };
    pprof::Profile {
        sample_type: sample_types,
        sample: samples,
        mapping: t.mappings,
        location: t.locations,
        function: t.functions,
        time_nanos: captured
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: captured.duration.as_nanos() as i64,
        period_type: Some(period_type),
        period,
        string_table: t.strings.into_table(),
        ..pprof::Profile::default()
    }
}

/// A pprof profile's tables, each entry made once: strings, mappings
/// (one per module), functions (one per name) and locations (one per
/// name and module).
#[derive(Default)]
struct Tables {
    strings: pprof::StringTable,
    mapping_ids: HashMap<String, u64>,
    mappings: Vec<pprof::Mapping>,
    function_ids: HashMap<String, u64>,
    functions: Vec<pprof::Function>,
    location_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<pprof::Location>,
}

impl Tables {
    /// The location of `frame`, made on first sight; `build_id` is asked
    /// once per module.
    fn location(&mut self, frame: &Frame, build_id: impl FnOnce() -> Option<String>) -> u64 {
        let key = (frame.name.clone(), frame.module.clone());
        if let Some(id) = self.location_ids.get(&key) {
            return *id;
        }
        let mapping_id = frame
            .module
            .as_deref()
            .map_or(0, |module| self.mapping(module, build_id));
        let function_id = self.function(&frame.name);
        let id = self.locations.len() as u64 + 1;
        self.locations.push(pprof::Location {
            id,
            mapping_id,
            line: vec![pprof::Line {
                function_id,
                ..pprof::Line::default()
            }],
            ..pprof::Location::default()
        });
        self.location_ids.insert(key, id);
        id
    }

    fn mapping(&mut self, module: &str, build_id: impl FnOnce() -> Option<String>) -> u64 {
        if let Some(id) = self.mapping_ids.get(module) {
            return *id;
        }
        let id = self.mappings.len() as u64 + 1;
        let filename = self.strings.id(module);
        let build_id = build_id().map_or(0, |b| self.strings.id(&b));
        self.mappings.push(pprof::Mapping {
            id,
            filename,
            build_id,
            has_functions: true,
            ..pprof::Mapping::default()
        });
        self.mapping_ids.insert(module.to_owned(), id);
        id
    }

    fn function(&mut self, name: &str) -> u64 {
        if let Some(id) = self.function_ids.get(name) {
            return *id;
        }
        let id = self.functions.len() as u64 + 1;
        let name_id = self.strings.id(name);
        self.functions.push(pprof::Function {
            id,
            name: name_id,
            system_name: name_id,
            ..pprof::Function::default()
        });
        self.function_ids.insert(name.to_owned(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::Stack;
    use std::time::{Duration, SystemTime};

    fn frame(name: &str, kind: FrameKind) -> Frame {
        Frame::new(
            name.to_owned(),
            kind,
            (kind == FrameKind::User).then(|| "/app/bin".to_owned()),
        )
    }

    fn sample_capture() -> Captured {
        Captured {
            stacks: vec![
                Stack {
                    pid: 7,
                    frames: vec![
                        frame("app", FrameKind::Root),
                        frame("main", FrameKind::User),
                        frame("hot;weird", FrameKind::User),
                    ],
                    truncated: false,
                    count: 30,
                    weight: 30,
                },
                Stack {
                    pid: 7,
                    frames: vec![
                        frame("app", FrameKind::Root),
                        frame("LazyCompile:*js", FrameKind::Jit),
                        frame("do_syscall_64", FrameKind::Kernel),
                    ],
                    truncated: true,
                    count: 10,
                    weight: 10,
                },
            ],
            samples: 40,
            lost: 0,
            processes: BTreeMap::from([(7, "app".to_owned())]),
            started: SystemTime::now(),
            duration: Duration::from_secs(2),
            cancelled: false,
            measure: Measure::Samples {
                event: "cpu-clock",
                hz: 99,
            },
            sampling: (std::time::Instant::now(), std::time::Instant::now()),
            build_ids: BTreeMap::new(),
            symbol_errors: BTreeMap::new(),
        }
    }

    #[test]
    fn unknown_frames_and_errors_are_counted_by_module() {
        let mut c = sample_capture();
        c.stacks[0].frames.push(Frame::new(
            "[unknown] libcoreclr.so+0x10",
            FrameKind::Unknown,
            Some("/rt/libcoreclr.so".into()),
        ));
        c.symbol_errors
            .insert((7, "/rt/libcoreclr.so".into()), "bad ELF".into());
        let stats = module_stats(&c);
        assert_eq!(stats["/app/bin"].frames, 60);
        assert_eq!(stats["/app/bin"].unknown, 0);
        assert_eq!(stats["[jit]"].frames, 10);
        assert_eq!(stats["[kernel]"].frames, 10);
        let coreclr = &stats["/rt/libcoreclr.so"];
        assert_eq!(
            (coreclr.frames, coreclr.unknown, coreclr.unknown_share),
            (30, 30, 1.0)
        );
        assert_eq!(coreclr.error.as_deref(), Some("bad ELF"));
        assert!(!stats.contains_key("app"), "roots are not code");
    }

    fn meta() -> RenderMeta {
        RenderMeta {
            seconds: 2,
            unwind: "fp",
            kernel: true,
            comments: Vec::new(),
        }
    }

    #[test]
    fn folded_escapes_separators_and_annotates_for_svg() {
        let c = sample_capture();
        assert_eq!(
            folded(&c, false),
            "app;main;hot:weird 30\napp;LazyCompile:*js;do_syscall_64 10\n"
        );
        assert!(folded(&c, true).contains("LazyCompile:*js_[j];do_syscall_64_[k] 10"));
        assert!((c.truncated_ratio() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn svg_has_title_and_truncation_subtitle() {
        let svg = String::from_utf8(svg(&sample_capture(), &meta()).unwrap_or_default())
            .unwrap_or_default();
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("tracecar: app (7)"));
        assert!(svg.contains("25.0% truncated stacks"));
        assert!(svg.contains("hot:weird"));
    }

    #[test]
    fn time_profiles_say_their_unit_and_what_was_dropped() {
        let mut c = sample_capture();
        c.measure = Measure::Time {
            mode: "offcpu",
            hz: None,
            blocks: 40,
            throttled: 12,
        };
        let svg = String::from_utf8(svg(&c, &meta()).unwrap_or_default()).unwrap_or_default();
        assert!(svg.contains("off-CPU time of app (7)"), "{svg}");
        assert!(
            svg.contains("12 blocks over the rate cap not recorded"),
            "{svg}"
        );
        let p = pprof_profile(&c, |_, _| None);
        let name = |i: i64| p.string_table[usize::try_from(i).unwrap_or(0)].clone();
        let types: Vec<(String, String)> = p
            .sample_type
            .iter()
            .map(|t| (name(t.r#type), name(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("blocks".to_owned(), "count".to_owned()),
                ("off_cpu".to_owned(), "nanoseconds".to_owned())
            ]
        );
        c.measure = Measure::Time {
            mode: "wall",
            hz: Some(99),
            blocks: 40,
            throttled: 0,
        };
        let p = pprof_profile(&c, |_, _| None);
        let name = |i: i64| p.string_table[usize::try_from(i).unwrap_or(0)].clone();
        assert_eq!(name(p.sample_type[1].r#type), "wall");
        assert_eq!(p.sample[0].value, vec![30, 30]);
        let speedscope = serde_json::to_value(super::super::speedscope::speedscope(&c)).unwrap();
        assert_eq!(speedscope["profiles"][0]["unit"], "nanoseconds");
    }

    #[test]
    fn pprof_structure() {
        let p = pprof_profile(&sample_capture(), |_, _| Some("abcd".into()));
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.string_table[0], "");
        let name = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(name(p.sample_type[0].r#type), "samples");
        assert_eq!(name(p.sample_type[1].unit), "nanoseconds");
        // Leaf first; root frames are labels, not locations.
        let leaf = p.sample[0].location_id[0];
        let loc = &p.location[(leaf - 1) as usize];
        let func = &p.function[(loc.line[0].function_id - 1) as usize];
        assert_eq!(name(func.name), "hot;weird");
        assert_eq!(p.sample[0].value, vec![30, 30 * (1_000_000_000 / 99)]);
        assert_eq!(name(p.mapping[0].build_id), "abcd");
    }

    #[test]
    fn speedscope_shares_frames() {
        let s =
            serde_json::to_value(super::super::speedscope::speedscope(&sample_capture())).unwrap();
        assert_eq!(
            s["$schema"],
            "https://www.speedscope.app/file-format-schema.json"
        );
        assert_eq!(s["profiles"][0]["type"], "sampled");
        assert_eq!(s["shared"]["frames"].as_array().map(Vec::len), Some(5));
        assert_eq!(s["profiles"][0]["weights"], serde_json::json!([30, 10]));
        assert_eq!(s["profiles"][0]["endValue"], 40);
    }

    /// Many deep stacks with long names, as a real profile has.
    fn deep_capture(stacks: usize, depth: usize) -> Captured {
        let mut c = sample_capture();
        let names: Vec<Frame> = (0..64)
            .map(|i| {
                Frame::new(
                    format!("com.example.service.Handler{i}.process(Request)"),
                    FrameKind::User,
                    Some("/usr/lib/jvm/app/libservice.so".to_owned()),
                )
            })
            .collect();
        c.stacks = (0..stacks)
            .map(|n| Stack {
                pid: 7,
                frames: std::iter::once(frame("app", FrameKind::Root))
                    .chain((0..depth).map(|d| names[(n * 7 + d * 13) % names.len()].clone()))
                    .collect(),
                truncated: false,
                count: 1,
                weight: 1,
            })
            .collect();
        c
    }

    #[test]
    fn answers_are_estimated_before_they_are_rendered() {
        let meta = RenderMeta {
            seconds: 2,
            unwind: "fp",
            kernel: false,
            comments: Vec::new(),
        };
        let c = deep_capture(500, 80);
        // Folded: exact. JSON: within 10%. Both are sized up front.
        let folded_len = render(&c, Format::Folded, &meta).unwrap().len() as u64;
        assert!(
            estimate_bytes(&c, Format::Folded).abs_diff(folded_len) * 100 <= folded_len,
            "folded {folded_len}, estimated {}",
            estimate_bytes(&c, Format::Folded)
        );
        let json_len = render(&c, Format::Json, &meta).unwrap().len() as u64;
        let estimate = estimate_bytes(&c, Format::Json);
        assert!(
            estimate.abs_diff(json_len) * 10 <= json_len,
            "json {json_len}, estimated {estimate}"
        );
        // The other formats' estimates cover at least their answers.
        for format in [Format::Svg, Format::Speedscope, Format::Pprof] {
            let len = render(&c, format, &meta).unwrap().len() as u64;
            assert!(estimate_bytes(&c, format) >= len, "{format:?}: {len}");
        }
    }
}
