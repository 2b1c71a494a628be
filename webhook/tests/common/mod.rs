//! Helpers shared by the webhook's test binaries.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tracecar_webhook::config::InjectConfig;
use tracecar_webhook::inject::{self, Decision, Plan, PodContext, SkipReason};
use tracecar_webhook::podcheck;

/// Loads a fixture (YAML or JSON) as a JSON value.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn typed(doc: &Value) -> Pod {
    serde_json::from_value(doc.clone()).expect("pod decodes")
}

pub fn decide_in(doc: &Value, namespace: &str, config: &InjectConfig) -> Decision {
    let ctx = PodContext {
        namespace,
        owner_kind: None,
        pod_security: None,
    };
    inject::decide(&typed(doc), ctx, config).expect("decision")
}

/// Injects with the default config in `default`, applies the patch, checks
/// the result against the Pod validation rules and that re-injection is a
/// silent no-op. Returns the patched document and the plan.
pub fn inject_checked(doc: &Value) -> (Value, Plan) {
    inject_checked_with(doc, &InjectConfig::default())
}

pub fn inject_checked_with(doc: &Value, config: &InjectConfig) -> (Value, Plan) {
    let plan = match decide_in(doc, "default", config) {
        Decision::Inject(plan) => plan,
        other => panic!("expected injection, got {other:?}"),
    };
    for op in &plan.patch.0 {
        assert!(
            matches!(op, json_patch::PatchOperation::Add(_)),
            "only add operations are emitted: {op:?}"
        );
    }
    let mut patched = doc.clone();
    json_patch::patch(&mut patched, &plan.patch).expect("patch applies");
    let violations = podcheck::violations(&typed(&patched));
    assert!(violations.is_empty(), "invalid pod: {violations:?}");
    match decide_in(&patched, "default", config) {
        Decision::Skip {
            reason: SkipReason::AlreadyInjected,
            warning: None,
        } => {}
        other => panic!("re-injection must be a silent no-op, got {other:?}"),
    }
    (patched, plan)
}

/// Wraps a pod in the AdmissionReview envelope of
/// `fixtures/admission-review.json` (shared with the e2e and the bench).
pub fn review(pod: Option<&Value>, operation: &str, namespace: &str) -> Value {
    let mut review = fixture("admission-review.json");
    let request = &mut review["request"];
    request["name"] = pod
        .and_then(|p| p.pointer("/metadata/name"))
        .cloned()
        .unwrap_or(json!(""));
    request["namespace"] = json!(namespace);
    request["operation"] = json!(operation);
    request["object"] = pod.cloned().unwrap_or(Value::Null);
    review
}

/// Container by name in a patched pod document.
pub fn container<'a>(doc: &'a Value, list: &str, name: &str) -> &'a Value {
    doc["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry {name}"))
}

pub fn mount_paths(container: &Value) -> Vec<String> {
    container["volumeMounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| m["mountPath"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// A pod of about `env_count` env vars spread over `containers` containers.
pub fn large_pod(containers: usize, env_count: usize) -> Value {
    let per = env_count / containers;
    let cs: Vec<Value> = (0..containers)
        .map(|c| {
            let env: Vec<Value> = (0..per)
                .map(|i| json!({"name": format!("VAR_{c}_{i}"), "value": format!("value-{i:08}-padding-padding-padding")}))
                .collect();
            json!({"name": format!("c{c}"), "image": "app:1", "env": env})
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "large", "annotations": {"tracecar.dev/inject": "true"}},
        "spec": {"containers": cs}
    })
}
