//! Fleet captures (`--all`), the pure parts: which pods a workload or a
//! selector has (ready, with their nodes), and the answers of several pods
//! as one: folded stacks with an optional pod level, pprof profiles with
//! `pod` and `node` labels, NDJSON lines with a `pod` field, and
//! Prometheus scrapes with a `pod` label. [`crate::across`] runs the
//! captures.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use tracecar_api::pprof;

/// One pod of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPod {
    /// Its name.
    pub name: String,
    /// The node it runs on (empty if not known).
    pub node: String,
}

#[derive(Deserialize)]
struct PodList {
    items: Vec<PodItem>,
}

#[derive(Deserialize)]
struct PodItem {
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default, rename = "deletionTimestamp")]
    deletion: Option<String>,
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default, rename = "nodeName")]
    node_name: String,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    phase: String,
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

/// The ready pods of `kubectl get pods -o json`: running, `Ready` true,
/// not being deleted; sorted by name. A pod that is starting or stopping
/// has no agent to answer, or one about to go.
pub fn ready_pods(json: &[u8]) -> Result<Vec<FleetPod>, String> {
    let list: PodList = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut pods: Vec<FleetPod> = list
        .items
        .into_iter()
        .filter(|p| {
            p.status.phase == "Running"
                && p.metadata.deletion.is_none()
                && p.status
                    .conditions
                    .iter()
                    .any(|c| c.kind == "Ready" && c.status == "True")
        })
        .map(|p| FleetPod {
            name: p.metadata.name,
            node: p.spec.node_name,
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

#[derive(Deserialize)]
struct PodmanPod {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Status")]
    status: String,
}

/// The running pods of `podman pod ps --format json`, on `node` (podman
/// runs them on this machine); sorted by name.
pub fn podman_pods(json: &[u8], node: &str) -> Result<Vec<FleetPod>, String> {
    // podman prints `null`, not `[]`, when nothing matches.
    let list: Option<Vec<PodmanPod>> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut pods: Vec<FleetPod> = list
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.status == "Running")
        .map(|p| FleetPod {
            name: p.name,
            node: node.to_owned(),
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

/// Folded profiles of several pods as one: equal stacks add up; with
/// `pod_level`, each stack starts with `pod:NAME` (the pod as the
/// flamegraph's first level). Heaviest first, as the agent writes them.
pub fn merge_folded(parts: &[(FleetPod, String)], pod_level: bool) -> String {
    let mut merged: HashMap<String, u64> = HashMap::new();
    for (pod, text) in parts {
        for line in text.lines() {
            let Some((stack, count)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            let stack = if pod_level {
                format!("pod:{};{stack}", pod.name)
            } else {
                stack.to_owned()
            };
            let sum = merged.entry(stack).or_default();
            *sum = sum.saturating_add(count);
        }
    }
    let mut lines: Vec<(String, u64)> = merged.into_iter().collect();
    lines.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    lines
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}\n"))
        .collect()
}

/// One profile's strings read by index; an index out of the table reads
/// as `""`, as pprof's own tools treat a malformed one.
fn string_of(profile: &pprof::Profile, index: i64) -> &str {
    usize::try_from(index)
        .ok()
        .and_then(|i| profile.string_table.get(i))
        .map_or("", String::as_str)
}

/// The sample types of a profile, as text: what must agree to merge.
fn sample_types(profile: &pprof::Profile) -> Vec<(String, String)> {
    profile
        .sample_type
        .iter()
        .map(|t| {
            (
                string_of(profile, t.r#type).to_owned(),
                string_of(profile, t.unit).to_owned(),
            )
        })
        .collect()
}

/// pprof profiles of several pods as one, each sample labelled with its
/// `pod` and `node` (`go tool pprof -tagfocus pod=web-1`, `-tags`). They
/// must measure the same thing (their sample types agree). Mappings and
/// locations stay per pod (addresses differ between processes); equal
/// functions are kept once. The time is the earliest start, the duration
/// the longest; comments are kept once each, after one that names the
/// pods.
pub fn merge_pprof(parts: &[(FleetPod, pprof::Profile)]) -> Result<pprof::Profile, String> {
    let Some((first_pod, first)) = parts.first() else {
        return Err("no profile to merge".to_owned());
    };
    let types = sample_types(first);
    let mut strings = pprof::StringTable::default();
    let mut out = pprof::Profile {
        sample_type: types
            .iter()
            .map(|(kind, unit)| pprof::ValueType {
                r#type: strings.id(kind),
                unit: strings.id(unit),
            })
            .collect(),
        period_type: first.period_type.as_ref().map(|t| pprof::ValueType {
            r#type: strings.id(string_of(first, t.r#type)),
            unit: strings.id(string_of(first, t.unit)),
        }),
        period: first.period,
        drop_frames: strings.id(string_of(first, first.drop_frames)),
        keep_frames: strings.id(string_of(first, first.keep_frames)),
        default_sample_type: strings.id(string_of(first, first.default_sample_type)),
        ..pprof::Profile::default()
    };
    let names: Vec<&str> = parts.iter().map(|(pod, _)| pod.name.as_str()).collect();
    let header = format!(
        "tracecar: merged from {} pods: {}",
        parts.len(),
        names.join(", ")
    );
    out.comment.push(strings.id(&header));
    let mut comments: HashSet<String> = HashSet::new();
    let pod_key = strings.id("pod");
    let node_key = strings.id("node");
    let mut functions: HashMap<(i64, i64, i64, i64), u64> = HashMap::new();
    for (pod, profile) in parts {
        if sample_types(profile) != types {
            return Err(format!(
                "pod {} measured {:?}, pod {} {:?}",
                pod.name,
                sample_types(profile),
                first_pod.name,
                types
            ));
        }
        let s = |i: i64| string_of(profile, i);
        let mut mapping_ids = HashMap::new();
        for m in &profile.mapping {
            let id = out.mapping.len() as u64 + 1;
            mapping_ids.insert(m.id, id);
            out.mapping.push(pprof::Mapping {
                id,
                filename: strings.id(s(m.filename)),
                build_id: strings.id(s(m.build_id)),
                ..m.clone()
            });
        }
        let mut function_ids = HashMap::new();
        for f in &profile.function {
            let key = (
                strings.id(s(f.name)),
                strings.id(s(f.system_name)),
                strings.id(s(f.filename)),
                f.start_line,
            );
            let next = out.function.len() as u64 + 1;
            let id = *functions.entry(key).or_insert(next);
            if id == next {
                out.function.push(pprof::Function {
                    id,
                    name: key.0,
                    system_name: key.1,
                    filename: key.2,
                    start_line: key.3,
                });
            }
            function_ids.insert(f.id, id);
        }
        let mut location_ids = HashMap::new();
        for l in &profile.location {
            let id = out.location.len() as u64 + 1;
            location_ids.insert(l.id, id);
            out.location.push(pprof::Location {
                id,
                mapping_id: mapping_ids.get(&l.mapping_id).copied().unwrap_or(0),
                line: l
                    .line
                    .iter()
                    .map(|line| pprof::Line {
                        function_id: function_ids.get(&line.function_id).copied().unwrap_or(0),
                        ..line.clone()
                    })
                    .collect(),
                ..l.clone()
            });
        }
        let pod_value = strings.id(&pod.name);
        let node_value = (!pod.node.is_empty()).then(|| strings.id(&pod.node));
        for sample in &profile.sample {
            let mut label: Vec<pprof::Label> = sample
                .label
                .iter()
                .map(|l| pprof::Label {
                    key: strings.id(s(l.key)),
                    str: strings.id(s(l.str)),
                    num: l.num,
                    num_unit: strings.id(s(l.num_unit)),
                })
                .collect();
            label.push(pprof::Label {
                key: pod_key,
                str: pod_value,
                ..pprof::Label::default()
            });
            if let Some(node) = node_value {
                label.push(pprof::Label {
                    key: node_key,
                    str: node,
                    ..pprof::Label::default()
                });
            }
            out.sample.push(pprof::Sample {
                location_id: sample
                    .location_id
                    .iter()
                    .map(|id| location_ids.get(id).copied().unwrap_or(0))
                    .collect(),
                value: sample.value.clone(),
                label,
            });
        }
        for &c in &profile.comment {
            if comments.insert(s(c).to_owned()) {
                out.comment.push(strings.id(s(c)));
            }
        }
        if profile.time_nanos > 0 && (out.time_nanos == 0 || profile.time_nanos < out.time_nanos) {
            out.time_nanos = profile.time_nanos;
        }
        out.duration_nanos = out.duration_nanos.max(profile.duration_nanos);
    }
    out.string_table = strings.into_table();
    Ok(out)
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// An NDJSON line of one pod with the pod as its first field:
/// `{"pod":"web-1",…}`. A line that is not an object is wrapped:
/// `{"pod":"web-1","line":…}`.
pub fn with_pod(line: &str, pod: &str) -> String {
    let pod = json_string(pod);
    let trimmed = line.trim();
    match trimmed.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{\"pod\":{pod}{rest}"),
        Some(rest) => format!("{{\"pod\":{pod},{rest}"),
        None => format!("{{\"pod\":{pod},\"line\":{}}}", json_string(trimmed)),
    }
}

/// A Prometheus sample line with `pod="NAME"` as its first label.
fn with_pod_label(line: &str, pod: &str) -> String {
    let escaped = pod.replace('\\', r"\\").replace('"', "\\\"");
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    match rest.strip_prefix('{') {
        Some(labels) if labels.starts_with('}') => format!("{name}{{pod=\"{escaped}\"{labels}"),
        Some(labels) => format!("{name}{{pod=\"{escaped}\",{labels}"),
        None => format!("{name}{{pod=\"{escaped}\"}}{rest}"),
    }
}

/// Prometheus scrapes of several pods as one exposition: each family's
/// `# HELP` and `# TYPE` once, then its samples of every pod, labelled
/// with `pod`. A family's samples follow its `# TYPE` line (the format
/// requires it); other comments are dropped.
pub fn merge_prometheus(parts: &[(FleetPod, String)]) -> String {
    struct Family {
        name: String,
        help: Option<String>,
        kind: Option<String>,
        samples: Vec<String>,
    }
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut family = |name: &str, families: &mut Vec<Family>| -> usize {
        *index.entry(name.to_owned()).or_insert_with(|| {
            families.push(Family {
                name: name.to_owned(),
                help: None,
                kind: None,
                samples: Vec::new(),
            });
            families.len() - 1
        })
    };
    for (pod, text) in parts {
        let mut current: Option<usize> = None;
        for line in text.lines().map(str::trim_end) {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if let (Some(keyword @ ("HELP" | "TYPE")), Some(name)) =
                    (words.next(), words.next())
                {
                    let i = family(name, &mut families);
                    let slot = if keyword == "HELP" {
                        &mut families[i].help
                    } else {
                        &mut families[i].kind
                    };
                    slot.get_or_insert_with(|| line.to_owned());
                    current = Some(i);
                }
                continue;
            }
            let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
            let i = match current {
                Some(i) if name.starts_with(families[i].name.as_str()) => i,
                _ => family(name, &mut families),
            };
            families[i].samples.push(with_pod_label(line, &pod.name));
        }
    }
    let mut out = String::new();
    for f in families {
        for line in f.help.iter().chain(f.kind.iter()).chain(f.samples.iter()) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn pod(name: &str, node: &str) -> FleetPod {
        FleetPod {
            name: name.into(),
            node: node.into(),
        }
    }

    #[test]
    fn only_ready_running_pods_count() {
        let json = br#"{"items": [
            {"metadata": {"name": "web-b"}, "spec": {"nodeName": "n2"},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "web-a"}, "spec": {"nodeName": "n1"},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "web-c"}, "spec": {"nodeName": "n1"},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "web-d", "deletionTimestamp": "2026-12-06T00:00:00Z"},
             "spec": {"nodeName": "n1"},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "web-e"}, "status": {"phase": "Pending"}}
        ]}"#;
        assert_eq!(
            ready_pods(json).unwrap(),
            [pod("web-a", "n1"), pod("web-b", "n2")]
        );
        assert!(ready_pods(b"{").is_err());
    }

    #[test]
    fn podman_pods_are_the_running_ones_on_this_host() {
        let json = br#"[{"Name": "b", "Status": "Running", "Labels": {"app": "web"}},
                        {"Name": "a", "Status": "Running"},
                        {"Name": "c", "Status": "Exited"}]"#;
        assert_eq!(
            podman_pods(json, "host").unwrap(),
            [pod("a", "host"), pod("b", "host")]
        );
        assert_eq!(podman_pods(b"null", "host").unwrap(), []);
        assert!(podman_pods(b"[{}]", "host").is_err());
    }

    #[test]
    fn folded_profiles_add_up_with_an_optional_pod_level() {
        let parts = [
            (
                pod("web-a", "n1"),
                "app;main;work 3\napp;main 1\n".to_owned(),
            ),
            (pod("web-b", "n2"), "app;main;work 2\nbad line\n".to_owned()),
        ];
        assert_eq!(merge_folded(&parts, false), "app;main;work 5\napp;main 1\n");
        assert_eq!(
            merge_folded(&parts, true),
            "pod:web-a;app;main;work 3\npod:web-b;app;main;work 2\npod:web-a;app;main 1\n"
        );
    }

    /// A one-pod profile as the agent writes it: `main` calling `work`
    /// (or `idle`), with its own string table order.
    fn profile(leaf: &str, weight: i64, comment: &str) -> pprof::Profile {
        let strings: Vec<String> = [
            "",
            comment,
            "samples",
            "count",
            "main",
            leaf,
            "/app",
            "pid",
            "cpu",
            "nanoseconds",
        ]
        .map(str::to_owned)
        .to_vec();
        let function = |id: u64, name: i64| pprof::Function {
            id,
            name,
            system_name: name,
            filename: 6,
            ..Default::default()
        };
        let location = |id: u64, function_id: u64| pprof::Location {
            id,
            mapping_id: 1,
            address: 0x1000 * id,
            line: vec![pprof::Line {
                function_id,
                ..Default::default()
            }],
            ..Default::default()
        };
        pprof::Profile {
            sample_type: vec![pprof::ValueType { r#type: 2, unit: 3 }],
            sample: vec![pprof::Sample {
                location_id: vec![20, 10],
                value: vec![weight],
                label: vec![pprof::Label {
                    key: 7,
                    num: 42,
                    ..Default::default()
                }],
            }],
            mapping: vec![pprof::Mapping {
                id: 1,
                filename: 6,
                memory_start: 0x1000,
                memory_limit: 0x9000,
                ..Default::default()
            }],
            location: vec![location(10, 7), location(20, 8)],
            function: vec![function(7, 4), function(8, 5)],
            string_table: strings,
            comment: vec![1],
            time_nanos: 2_000,
            duration_nanos: 5_000,
            period_type: Some(pprof::ValueType { r#type: 8, unit: 9 }),
            period: 10_000_000,
            ..Default::default()
        }
    }

    /// The merged samples as `stack value pod node pid`, leaf last.
    fn samples(p: &pprof::Profile) -> Vec<String> {
        let s = |i: i64| p.string_table[i as usize].clone();
        let name = |loc: u64| {
            let l = &p.location[loc as usize - 1];
            assert_eq!(l.id, loc);
            let f = &p.function[l.line[0].function_id as usize - 1];
            s(f.name)
        };
        p.sample
            .iter()
            .map(|x| {
                let stack: Vec<String> = x.location_id.iter().rev().map(|&l| name(l)).collect();
                let labels: Vec<String> = x
                    .label
                    .iter()
                    .map(|l| {
                        if l.str != 0 {
                            format!("{}={}", s(l.key), s(l.str))
                        } else {
                            format!("{}={}", s(l.key), l.num)
                        }
                    })
                    .collect();
                format!("{} {} {}", stack.join(";"), x.value[0], labels.join(","))
            })
            .collect()
    }

    #[test]
    fn pprof_profiles_merge_with_pod_and_node_labels() {
        let mut b = profile("idle", 3, "k8s.pod.name=web-b");
        // The second pod's table in another order: ids must be remapped.
        b.string_table.swap(4, 5);
        b.function[0].name = 5;
        b.function[0].system_name = 5;
        b.function[1].name = 4;
        b.function[1].system_name = 4;
        b.time_nanos = 1_000;
        let parts = [
            (pod("web-a", "n1"), profile("work", 5, "k8s.pod.name=web-a")),
            (pod("web-b", "n2"), b),
        ];
        let merged = merge_pprof(&parts).unwrap();
        // It survives the wire as pprof's tools read it.
        let merged = pprof::Profile::decode(&merged.encode_to_vec()[..]).unwrap();
        assert_eq!(
            samples(&merged),
            [
                "main;work 5 pid=42,pod=web-a,node=n1",
                "main;idle 3 pid=42,pod=web-b,node=n2"
            ]
        );
        // `main` and `/app` once; each pod's locations and mapping its own.
        assert_eq!(merged.function.len(), 3);
        assert_eq!(merged.location.len(), 4);
        assert_eq!(merged.mapping.len(), 2);
        let comments: Vec<&str> = merged
            .comment
            .iter()
            .map(|&c| merged.string_table[c as usize].as_str())
            .collect();
        assert_eq!(
            comments,
            [
                "tracecar: merged from 2 pods: web-a, web-b",
                "k8s.pod.name=web-a",
                "k8s.pod.name=web-b"
            ]
        );
        assert_eq!((merged.time_nanos, merged.duration_nanos), (1_000, 5_000));
        let period = merged.period_type.unwrap();
        assert_eq!(merged.string_table[period.r#type as usize], "cpu");
        // Each string once, "" first.
        let unique: HashSet<&String> = merged.string_table.iter().collect();
        assert_eq!(unique.len(), merged.string_table.len());
        assert_eq!(merged.string_table[0], "");
    }

    #[test]
    fn profiles_of_different_measures_do_not_merge() {
        let mut other = profile("work", 1, "");
        other.string_table[2] = "alloc_space".into();
        let parts = [
            (pod("a", ""), profile("work", 1, "")),
            (pod("b", ""), other),
        ];
        let error = merge_pprof(&parts).unwrap_err();
        assert!(
            error.contains("pod b") && error.contains("alloc_space"),
            "{error}"
        );
        assert!(merge_pprof(&[]).is_err());
        // Without a node, no node label.
        let single = merge_pprof(&parts[..1]).unwrap();
        assert_eq!(samples(&single), ["main;work 1 pid=42,pod=a"]);
    }

    #[test]
    fn ndjson_lines_get_the_pod_first() {
        assert_eq!(
            with_pod(r#"{"pid":7,"ret":0}"#, "web-1"),
            r#"{"pod":"web-1","pid":7,"ret":0}"#
        );
        assert_eq!(with_pod("{}", "web-1"), r#"{"pod":"web-1"}"#);
        assert_eq!(
            with_pod("not json \"x\"", "web-1"),
            r#"{"pod":"web-1","line":"not json \"x\""}"#
        );
        for line in [r#"{"a":[1,{"b":2}]}"#, "{ }", "3"] {
            let value: serde_json::Value = serde_json::from_str(&with_pod(line, "p")).unwrap();
            assert_eq!(value["pod"], "p", "{line}");
        }
    }

    #[test]
    fn prometheus_scrapes_merge_by_family_with_a_pod_label() {
        let a = "# HELP gc_heap GC heap (bytes)\n# TYPE gc_heap gauge\ngc_heap{pid=\"7\"} 10\n\
                 # HELP cpu CPU (%)\n# TYPE cpu gauge\ncpu 1.5\n";
        let b = "# HELP gc_heap GC heap (bytes)\n# TYPE gc_heap gauge\ngc_heap{pid=\"9\"} 20\n\
                 # HELP threads threads\n# TYPE threads gauge\nthreads{} 4\n";
        let merged = merge_prometheus(&[(pod("a", ""), a.into()), (pod("b", ""), b.into())]);
        assert_eq!(
            merged,
            "# HELP gc_heap GC heap (bytes)\n# TYPE gc_heap gauge\n\
             gc_heap{pod=\"a\",pid=\"7\"} 10\ngc_heap{pod=\"b\",pid=\"9\"} 20\n\
             # HELP cpu CPU (%)\n# TYPE cpu gauge\ncpu{pod=\"a\"} 1.5\n\
             # HELP threads threads\n# TYPE threads gauge\nthreads{pod=\"b\"} 4\n"
        );
    }
}
