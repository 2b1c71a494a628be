//! Offline injection (`tracecar-webhook inject -f`): the same pure injector,
//! applied to pod templates in multi-document YAML.
//!
//! Documents that are not changed are copied through byte for byte;
//! changed ones are re-serialized with their key order kept.

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::annotations;
use crate::config::InjectConfig;
use crate::inject::{self, Decision, Injector, PodContext};

/// Why offline injection failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A document is not valid YAML.
    #[error("document {index}: invalid YAML: {source}")]
    Yaml {
        /// 1-based document number.
        index: usize,
        /// The parser error.
        #[source]
        source: serde_norway::Error,
    },
    /// A pod template does not match the Pod schema.
    #[error("{object}: pod template does not match the Pod schema: {source}")]
    Template {
        /// `Kind/name`.
        object: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The injector failed.
    #[error("{object}: {source}")]
    Inject {
        /// `Kind/name`.
        object: String,
        /// The injector error.
        #[source]
        source: inject::InjectError,
    },
    /// The generated patch did not apply (a bug: please report it).
    #[error("{object}: generated patch does not apply: {source}")]
    Patch {
        /// `Kind/name`.
        object: String,
        /// The patch error.
        #[source]
        source: json_patch::PatchError,
    },
    /// Re-serializing a changed document failed.
    #[error("{object}: cannot write YAML: {source}")]
    Write {
        /// `Kind/name`.
        object: String,
        /// The serializer error.
        #[source]
        source: serde_norway::Error,
    },
}

/// Result of injecting a YAML stream.
#[derive(Debug, Default)]
pub struct Injected {
    /// The output stream.
    pub yaml: String,
    /// `Kind/name: message` lines for the user.
    pub warnings: Vec<String>,
    /// How many pod templates were changed.
    pub injected: usize,
}

/// Where the pod template of `kind` lives, as JSON pointer tokens.
pub fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        "PodTemplate" => Some(&["template"]),
        _ => None,
    }
}

/// Splits a YAML stream at `---` document markers, keeping each document's
/// raw text (marker lines included with the document they open).
fn split_documents(input: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in input.split_inclusive('\n') {
        let is_marker = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '#');
        if is_marker && offset > start {
            docs.push(&input[start..offset]);
            start = offset;
        }
        offset += line.len();
    }
    if start < input.len() {
        docs.push(&input[start..]);
    }
    docs
}

/// Injects every annotated pod template in `input`.
pub fn inject_yaml(
    input: &str,
    default_namespace: &str,
    config: &InjectConfig,
) -> Result<Injected, WorkloadError> {
    let injector = Injector::new(config.clone()).map_err(|source| WorkloadError::Inject {
        object: "configuration".to_owned(),
        source,
    })?;
    let mut out = Injected::default();
    for (index, raw) in split_documents(input).into_iter().enumerate() {
        let mut doc: Value = match serde_norway::from_str::<Option<Value>>(raw) {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                out.yaml.push_str(raw);
                continue;
            }
            Err(source) => {
                return Err(WorkloadError::Yaml {
                    index: index + 1,
                    source,
                });
            }
        };
        let changed = inject_object(&mut doc, default_namespace, &injector, &mut out)?;
        if changed {
            let object = describe(&doc);
            let yaml = serde_norway::to_string(&doc)
                .map_err(|source| WorkloadError::Write { object, source })?;
            if !out.yaml.is_empty() && !out.yaml.ends_with('\n') {
                out.yaml.push('\n');
            }
            if !out.yaml.is_empty() || raw.starts_with("---") {
                out.yaml.push_str("---\n");
            }
            out.yaml.push_str(&yaml);
        } else {
            out.yaml.push_str(raw);
        }
    }
    Ok(out)
}

fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = doc
        .pointer("/metadata/name")
        .or_else(|| doc.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
}

/// Injects one object (recursing into `List` items). Returns whether it changed.
fn inject_object(
    doc: &mut Value,
    default_namespace: &str,
    injector: &Injector,
    out: &mut Injected,
) -> Result<bool, WorkloadError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind == "List" {
        let mut changed = false;
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                changed |= inject_object(item, default_namespace, injector, out)?;
            }
        }
        return Ok(changed);
    }
    let Some(path) = template_path(&kind) else {
        return Ok(false);
    };
    let object = describe(doc);
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_owned();
    if !path.is_empty()
        && doc
            .pointer(
                jsonptr::PointerBuf::from_tokens(["metadata", "annotations", annotations::INJECT])
                    .as_str(),
            )
            .is_some()
    {
        out.warnings.push(format!(
            "{object}: {} is on the workload's own metadata; it only works on the pod template ({}.metadata.annotations)",
            annotations::INJECT,
            path.join(".")
        ));
    }
    let Some(template) = path.iter().try_fold(&mut *doc, |v, key| v.get_mut(*key)) else {
        return Ok(false);
    };
    let pod: Pod =
        serde_json::from_value(template.clone()).map_err(|source| WorkloadError::Template {
            object: object.clone(),
            source,
        })?;
    let ctx = PodContext {
        namespace: &namespace,
        owner_kind: Some(kind.as_str()),
        pod_security: None,
    };
    let decision = injector
        .decide(&pod, ctx)
        .map_err(|source| WorkloadError::Inject {
            object: object.clone(),
            source,
        })?;
    match decision {
        Decision::Skip { warning, .. } => {
            out.warnings
                .extend(warning.map(|w| format!("{object}: {w}")));
            Ok(false)
        }
        Decision::Decline { warning, .. } => {
            out.warnings.push(format!("{object}: {warning}"));
            Ok(false)
        }
        Decision::Inject(plan) => {
            apply(template, &plan.patch).map_err(|source| WorkloadError::Patch {
                object: object.clone(),
                source,
            })?;
            out.warnings
                .extend(plan.warnings.into_iter().map(|w| format!("{object}: {w}")));
            out.injected += 1;
            Ok(true)
        }
    }
}

/// Applies a patch atomically (on error the document is unchanged).
pub fn apply(doc: &mut Value, patch: &Patch) -> Result<(), json_patch::PatchError> {
    json_patch::patch(doc, patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_raw_text() {
        let input = "a: 1\n---\nb: 2\n--- # c\nc: 3\n";
        assert_eq!(
            split_documents(input),
            vec!["a: 1\n", "---\nb: 2\n", "--- # c\nc: 3\n"]
        );
        assert_eq!(split_documents("---\nx: 1\n"), vec!["---\nx: 1\n"]);
        assert_eq!(split_documents("a: '---x'\n"), vec!["a: '---x'\n"]);
    }

    #[test]
    fn every_workload_kind_has_a_template_path() {
        for kind in [
            "Pod",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
        ] {
            assert!(template_path(kind).is_some(), "{kind}");
        }
        assert!(template_path("Service").is_none());
    }
}
