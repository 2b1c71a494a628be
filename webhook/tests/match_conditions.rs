//! The MutatingWebhookConfiguration's CEL `matchConditions`, evaluated with a
//! CEL interpreter against pods, so only opted-in pods reach the webhook.

#![cfg(test)]

use serde_json::{Value, json};

fn expressions() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/base/mutatingwebhookconfiguration.yaml"
    );
    let doc: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["webhooks"][0]["matchConditions"]
        .as_array()
        .expect("matchConditions")
        .iter()
        .map(|c| c["expression"].as_str().unwrap().to_owned())
        .collect()
}

fn matches(object: &Value) -> bool {
    expressions().iter().all(|expression| {
        let program = cel::Program::compile(expression).expect("expression compiles");
        let mut context = cel::Context::default();
        context.add_variable("object", object.clone()).unwrap();
        match program.execute(&context).expect("expression evaluates") {
            cel::Value::Bool(b) => b,
            other => panic!("matchCondition must be boolean, got {other:?}"),
        }
    })
}

#[test]
fn only_opted_in_pods_match() {
    let pod = |annotations: Option<Value>| {
        let mut metadata = json!({"generateName": "web-"});
        if let Some(a) = annotations {
            metadata["annotations"] = a;
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": []}})
    };
    assert!(matches(&pod(Some(json!({"tracecar.dev/inject": "true"})))));
    assert!(!matches(&pod(Some(
        json!({"tracecar.dev/inject": "false"})
    ))));
    assert!(!matches(&pod(Some(json!({"other": "true"})))));
    assert!(!matches(&pod(Some(json!({})))));
    assert!(!matches(&pod(None)));
}
