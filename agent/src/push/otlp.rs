//! A window as an OTLP profiles export request: a pure translation of the
//! pprof profile the window was rendered to (one profile builder, not two).
//!
//! - The pprof string table becomes the dictionary's (index 0 is `""` in
//!   both); mappings, functions and locations keep their order behind the
//!   zero entry OTLP's dictionary tables start with.
//! - Each pprof sample type becomes a profile of its own (`samples`/`count`
//!   and `cpu`/`nanoseconds` for a CPU window): OTLP profiles have one
//!   sample type each. They share the dictionary and the stack table.
//! - Sample labels become attributes: `pid` is `process.pid` and `comm`
//!   is `process.executable.name`, as OpenTelemetry names them; a module's
//!   build ID is its mapping's `process.executable.build_id.gnu`.
//! - The pod's identity is the resource; the scope is `tracecar`.

use std::collections::HashMap;

use super::otlp_proto as otlp;
use crate::stacks::pprof;

/// OTLP/HTTP's path for profiles, after the collector's base URL.
pub const PATH: &str = "/v1development/profiles";

/// The export request of `profile` from the resource `resource`
/// (`key=value` pairs); `id` seeds the profiles' IDs (one per sample
/// type).
pub fn request(
    profile: &pprof::Profile,
    resource: &[(String, String)],
    id: [u8; 16],
) -> otlp::ExportProfilesServiceRequest {
    let mut d = Dictionary::new(&profile.string_table);
    let mapping_index: HashMap<u64, i32> = profile
        .mapping
        .iter()
        .map(|m| (m.id, d.mapping(m, &profile.string_table)))
        .collect();
    let function_index: HashMap<u64, i32> = profile
        .function
        .iter()
        .map(|f| (f.id, d.function(f)))
        .collect();
    let location_index: HashMap<u64, i32> = profile
        .location
        .iter()
        .map(|l| (l.id, d.location(l, &mapping_index, &function_index)))
        .collect();
    // Each pprof sample: its stack and attributes, once.
    let samples: Vec<(i32, Vec<i32>, &[i64])> = profile
        .sample
        .iter()
        .map(|s| {
            let stack = d.stack(
                s.location_id
                    .iter()
                    .map(|id| location_index.get(id).copied().unwrap_or(0))
                    .collect(),
            );
            let attributes = s
                .label
                .iter()
                .map(|l| d.label(l, &profile.string_table))
                .collect();
            (stack, attributes, s.value.as_slice())
        })
        .collect();
    let period_type = profile.period_type.as_ref().map(|t| d.value_type(t));
    let profiles = profile
        .sample_type
        .iter()
        .enumerate()
        .map(|(i, sample_type)| {
            let mut profile_id = id.to_vec();
            profile_id[15] ^= i as u8;
            otlp::Profile {
                sample_type: Some(d.value_type(sample_type)),
                samples: samples
                    .iter()
                    .map(|(stack, attributes, values)| otlp::Sample {
                        stack_index: *stack,
                        attribute_indices: attributes.clone(),
                        values: vec![values.get(i).copied().unwrap_or(0)],
                        ..otlp::Sample::default()
                    })
                    .collect(),
                time_unix_nano: u64::try_from(profile.time_nanos).unwrap_or(0),
                duration_nano: u64::try_from(profile.duration_nanos).unwrap_or(0),
                period_type: period_type.clone(),
                period: profile.period,
                profile_id,
                ..otlp::Profile::default()
            }
        })
        .collect();
    let resource = otlp::Resource {
        attributes: resource
            .iter()
            .map(|(key, value)| otlp::KeyValue {
                key: key.clone(),
                value: Some(string(value)),
            })
            .collect(),
        dropped_attributes_count: 0,
    };
    otlp::ExportProfilesServiceRequest {
        resource_profiles: vec![otlp::ResourceProfiles {
            resource: Some(resource),
            scope_profiles: vec![otlp::ScopeProfiles {
                scope: Some(otlp::InstrumentationScope {
                    name: "tracecar".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
                profiles,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(d.finish()),
    }
}

/// What a collector's `ExportProfilesServiceResponse` says it rejected
/// (OTLP's partial success), if anything; an empty or unreadable answer
/// rejected nothing.
pub fn rejected(answer: &[u8]) -> Option<String> {
    use prost::Message as _;
    let partial = otlp::ExportProfilesServiceResponse::decode(answer)
        .ok()?
        .partial_success?;
    (partial.rejected_profiles > 0 || !partial.error_message.is_empty()).then(|| {
        format!(
            "the collector rejected {} profiles: {}",
            partial.rejected_profiles, partial.error_message
        )
    })
}

fn string(value: &str) -> otlp::AnyValue {
    otlp::AnyValue {
        value: Some(otlp::any_value::Value::StringValue(value.to_owned())),
    }
}

/// The dictionary being built: every table starts with its zero entry.
struct Dictionary {
    out: otlp::ProfilesDictionary,
    /// Where pprof's string indices land (pprof's table, shifted by one if
    /// it does not start with `""`).
    shift: i32,
    strings: HashMap<String, i32>,
    stacks: HashMap<Vec<i32>, i32>,
    attributes: HashMap<(i32, AttributeValue), i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AttributeValue {
    Str(i32),
    Int(i64),
}

impl Dictionary {
    fn new(pprof_strings: &[String]) -> Self {
        let shift = i32::from(pprof_strings.first().is_none_or(|s| !s.is_empty()));
        let mut table = Vec::with_capacity(pprof_strings.len() + 8);
        if shift == 1 {
            table.push(String::new());
        }
        table.extend(pprof_strings.iter().cloned());
        let strings = table
            .iter()
            .enumerate()
            .rev()
            .map(|(i, s)| (s.clone(), i as i32))
            .collect();
        Self {
            out: otlp::ProfilesDictionary {
                mapping_table: vec![otlp::Mapping::default()],
                location_table: vec![otlp::Location::default()],
                function_table: vec![otlp::Function::default()],
                link_table: vec![otlp::Link::default()],
                string_table: table,
                attribute_table: vec![otlp::KeyValueAndUnit::default()],
                stack_table: vec![otlp::Stack::default()],
            },
            shift,
            strings,
            stacks: HashMap::new(),
            attributes: HashMap::new(),
        }
    }

    /// A pprof string index in the dictionary's table.
    fn pprof_string(&self, index: i64) -> i32 {
        i32::try_from(index).map_or(0, |i| i + self.shift)
    }

    /// A string of the agent's own (an attribute key), added once.
    fn string(&mut self, s: &str) -> i32 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.out.string_table.len() as i32;
        self.out.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn value_type(&self, t: &pprof::ValueType) -> otlp::ValueType {
        otlp::ValueType {
            type_strindex: self.pprof_string(t.r#type),
            unit_strindex: self.pprof_string(t.unit),
        }
    }

    fn mapping(&mut self, m: &pprof::Mapping, strings: &[String]) -> i32 {
        let build_id = usize::try_from(m.build_id)
            .ok()
            .and_then(|i| strings.get(i))
            .filter(|b| !b.is_empty())
            .cloned();
        let attribute_indices = build_id
            .map(|b| {
                let key = self.string("process.executable.build_id.gnu");
                let value = self.string(&b);
                vec![self.attribute(key, AttributeValue::Str(value))]
            })
            .unwrap_or_default();
        self.out.mapping_table.push(otlp::Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename_strindex: self.pprof_string(m.filename),
            attribute_indices,
        });
        self.out.mapping_table.len() as i32 - 1
    }

    fn function(&mut self, f: &pprof::Function) -> i32 {
        self.out.function_table.push(otlp::Function {
            name_strindex: self.pprof_string(f.name),
            system_name_strindex: self.pprof_string(f.system_name),
            filename_strindex: self.pprof_string(f.filename),
            start_line: f.start_line,
        });
        self.out.function_table.len() as i32 - 1
    }

    fn location(
        &mut self,
        l: &pprof::Location,
        mappings: &HashMap<u64, i32>,
        functions: &HashMap<u64, i32>,
    ) -> i32 {
        self.out.location_table.push(otlp::Location {
            mapping_index: mappings.get(&l.mapping_id).copied().unwrap_or(0),
            address: l.address,
            lines: l
                .line
                .iter()
                .map(|line| otlp::Line {
                    function_index: functions.get(&line.function_id).copied().unwrap_or(0),
                    line: line.line,
                    column: line.column,
                })
                .collect(),
            attribute_indices: Vec::new(),
        });
        self.out.location_table.len() as i32 - 1
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(i) = self.stacks.get(&locations) {
            return *i;
        }
        let i = self.out.stack_table.len() as i32;
        self.out.stack_table.push(otlp::Stack {
            location_indices: locations.clone(),
        });
        self.stacks.insert(locations, i);
        i
    }

    /// A pprof sample label as an attribute, named as OpenTelemetry
    /// names it where it has a name.
    fn label(&mut self, l: &pprof::Label, strings: &[String]) -> i32 {
        let key = usize::try_from(l.key)
            .ok()
            .and_then(|i| strings.get(i))
            .map_or("", String::as_str);
        let key = match key {
            "pid" => "process.pid",
            "comm" => "process.executable.name",
            other => other,
        };
        let key = self.string(key);
        let value = if l.str != 0 {
            AttributeValue::Str(self.pprof_string(l.str))
        } else {
            AttributeValue::Int(l.num)
        };
        self.attribute(key, value)
    }

    fn attribute(&mut self, key: i32, value: AttributeValue) -> i32 {
        if let Some(i) = self.attributes.get(&(key, value.clone())) {
            return *i;
        }
        let any = match &value {
            AttributeValue::Str(s) => string(&self.out.string_table[*s as usize]),
            AttributeValue::Int(n) => otlp::AnyValue {
                value: Some(otlp::any_value::Value::IntValue(*n)),
            },
        };
        let i = self.out.attribute_table.len() as i32;
        self.out.attribute_table.push(otlp::KeyValueAndUnit {
            key_strindex: key,
            value: Some(any),
            unit_strindex: 0,
        });
        self.attributes.insert((key, value), i);
        i
    }

    fn finish(self) -> otlp::ProfilesDictionary {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-sample CPU profile: main→work→leaf (pid 7, "app") twice, and
    /// main→work (pid 7) once.
    fn profile() -> pprof::Profile {
        let strings: Vec<String> = [
            "",
            "samples",
            "count",
            "cpu",
            "nanoseconds",
            "pid",
            "comm",
            "app",
            "/app/bin",
            "abc123",
            "main",
            "work",
            "leaf",
        ]
        .map(str::to_owned)
        .to_vec();
        let location = |id: u64, function_id: u64| pprof::Location {
            id,
            mapping_id: 1,
            line: vec![pprof::Line {
                function_id,
                ..pprof::Line::default()
            }],
            ..pprof::Location::default()
        };
        let function = |id: u64, name: i64| pprof::Function {
            id,
            name,
            ..pprof::Function::default()
        };
        let labels = vec![
            pprof::Label {
                key: 5,
                num: 7,
                ..pprof::Label::default()
            },
            pprof::Label {
                key: 6,
                str: 7,
                ..pprof::Label::default()
            },
        ];
        pprof::Profile {
            sample_type: vec![
                pprof::ValueType { r#type: 1, unit: 2 },
                pprof::ValueType { r#type: 3, unit: 4 },
            ],
            sample: vec![
                pprof::Sample {
                    location_id: vec![3, 2, 1],
                    value: vec![2, 2 * 52_631_578],
                    label: labels.clone(),
                },
                pprof::Sample {
                    location_id: vec![2, 1],
                    value: vec![1, 52_631_578],
                    label: labels,
                },
            ],
            mapping: vec![pprof::Mapping {
                id: 1,
                filename: 8,
                build_id: 9,
                ..pprof::Mapping::default()
            }],
            location: vec![location(1, 1), location(2, 2), location(3, 3)],
            function: vec![function(1, 10), function(2, 11), function(3, 12)],
            string_table: strings,
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 15_000_000_000,
            period_type: Some(pprof::ValueType { r#type: 3, unit: 4 }),
            period: 52_631_578,
            ..pprof::Profile::default()
        }
    }

    #[test]
    fn every_sample_type_is_a_profile_over_one_dictionary() {
        let resource = vec![("k8s.pod.name".to_owned(), "web-0".to_owned())];
        let request = request(&profile(), &resource, [9; 16]);
        let d = request.dictionary.as_ref().unwrap();
        let s = |i: i32| d.string_table[i as usize].as_str();
        // Zero entries first.
        assert_eq!(s(0), "");
        assert_eq!(d.stack_table[0], otlp::Stack::default());
        assert_eq!(d.location_table[0], otlp::Location::default());
        let scope = &request.resource_profiles[0].scope_profiles[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "tracecar");
        let [count, cpu] = scope.profiles.as_slice() else {
            panic!("two profiles: {:?}", scope.profiles)
        };
        let kind = |p: &otlp::Profile| {
            let t = p.sample_type.as_ref().unwrap();
            (s(t.type_strindex), s(t.unit_strindex))
        };
        assert_eq!(kind(count), ("samples", "count"));
        assert_eq!(kind(cpu), ("cpu", "nanoseconds"));
        assert_ne!(count.profile_id, cpu.profile_id);
        assert_eq!(cpu.period, 52_631_578);
        assert_eq!(cpu.duration_nano, 15_000_000_000);
        // Stacks leaf first, as pprof's, through locations to names.
        let names = |sample: &otlp::Sample| -> Vec<&str> {
            d.stack_table[sample.stack_index as usize]
                .location_indices
                .iter()
                .map(|l| {
                    let f = d.location_table[*l as usize].lines[0].function_index;
                    s(d.function_table[f as usize].name_strindex)
                })
                .collect()
        };
        assert_eq!(names(&count.samples[0]), ["leaf", "work", "main"]);
        assert_eq!(names(&count.samples[1]), ["work", "main"]);
        assert_eq!(count.samples[0].values, [2]);
        assert_eq!(cpu.samples[1].values, [52_631_578]);
        // The two profiles' samples share stacks and attributes.
        assert_eq!(count.samples[0].stack_index, cpu.samples[0].stack_index);
        assert_eq!(d.stack_table.len(), 3);
        let attributes: Vec<(String, String)> = count.samples[0]
            .attribute_indices
            .iter()
            .map(|i| {
                let a = &d.attribute_table[*i as usize];
                let value = match a.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(otlp::any_value::Value::StringValue(v)) => v,
                    Some(otlp::any_value::Value::IntValue(n)) => n.to_string(),
                    None => String::new(),
                };
                (s(a.key_strindex).to_owned(), value)
            })
            .collect();
        assert_eq!(
            attributes,
            [
                ("process.pid".to_owned(), "7".to_owned()),
                ("process.executable.name".to_owned(), "app".to_owned())
            ]
        );
        assert_eq!(
            count.samples[0].attribute_indices,
            count.samples[1].attribute_indices
        );
        // The module and its build ID.
        let mapping = &d.mapping_table[1];
        assert_eq!(s(mapping.filename_strindex), "/app/bin");
        let build = &d.attribute_table[mapping.attribute_indices[0] as usize];
        assert_eq!(s(build.key_strindex), "process.executable.build_id.gnu");
        // The resource.
        let resource = request.resource_profiles[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "k8s.pod.name");
    }

    #[test]
    fn a_partial_success_says_what_was_rejected() {
        use prost::Message as _;
        assert_eq!(rejected(b""), None);
        let answer = otlp::ExportProfilesServiceResponse {
            partial_success: Some(otlp::ExportProfilesPartialSuccess {
                rejected_profiles: 2,
                error_message: "profiles are off".to_owned(),
            }),
        };
        assert_eq!(
            rejected(&answer.encode_to_vec()).as_deref(),
            Some("the collector rejected 2 profiles: profiles are off")
        );
        let fine = otlp::ExportProfilesServiceResponse {
            partial_success: Some(otlp::ExportProfilesPartialSuccess::default()),
        };
        assert_eq!(rejected(&fine.encode_to_vec()), None);
    }

    #[test]
    fn a_string_table_without_its_empty_string_is_shifted() {
        let mut p = profile();
        p.string_table.remove(0);
        for t in &mut p.sample_type {
            t.r#type -= 1;
            t.unit -= 1;
        }
        p.period_type = None;
        p.sample.clear();
        let request = request(&p, &[], [0; 16]);
        let d = request.dictionary.unwrap();
        assert_eq!(d.string_table[0], "");
        let t = request.resource_profiles[0].scope_profiles[0].profiles[0]
            .sample_type
            .clone()
            .unwrap();
        assert_eq!(d.string_table[t.type_strindex as usize], "samples");
    }
}
