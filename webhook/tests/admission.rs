//! AdmissionReview handling: operations, subresources, wire format.

#![cfg(test)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use tracecar_webhook::admission::{self, Outcome, ReviewError};
use tracecar_webhook::config::InjectConfig;
use tracecar_webhook::inject::Injector;

fn reviewer(cache: usize) -> admission::Reviewer {
    admission::Reviewer::new(Injector::new(InjectConfig::default()).unwrap(), cache)
}

fn run_with(reviewer: &admission::Reviewer, review: &Value) -> (Value, Outcome) {
    let request = admission::parse(&serde_json::to_vec(review).unwrap()).expect("parses");
    let (response, outcome) = reviewer.review(&request);
    (serde_json::to_value(&response).unwrap(), outcome)
}

fn run(review: &Value) -> (Value, Outcome) {
    run_with(&reviewer(0), review)
}

fn decoded_patch(response: &Value) -> json_patch::Patch {
    let b64 = response["response"]["patch"]
        .as_str()
        .expect("patch is a base64 string on the wire");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn create_returns_a_base64_json_patch() {
    let pod = fixture("minimal.yaml");
    let (response, outcome) = run(&review(Some(&pod), "CREATE", "default"));
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(
        response["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &decoded_patch(&response)).unwrap();
    assert_eq!(patched["spec"]["shareProcessNamespace"], true);
}

#[test]
fn a_podsecurity_namespace_gets_the_status_and_a_warning_not_the_sidecar() {
    use tracecar_webhook::inject::PodSecurityLevel;
    let pod = fixture("minimal.yaml");
    let request =
        admission::parse(&serde_json::to_vec(&review(Some(&pod), "CREATE", "shop")).unwrap())
            .expect("parses");
    let (response, outcome) = reviewer(0).review_in(&request, Some(PodSecurityLevel::Baseline));
    let response = serde_json::to_value(&response).unwrap();
    assert_eq!(outcome, Outcome::Skipped("podsecurity_baseline"));
    assert_eq!(response["response"]["allowed"], true);
    let warnings = response["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("PodSecurity baseline"),
        "{warnings:?}"
    );
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &decoded_patch(&response)).unwrap();
    assert_eq!(patched["spec"], pod["spec"]);
    assert!(
        patched["metadata"]["annotations"]["tracecar.dev/status"]
            .as_str()
            .unwrap()
            .contains("\"injected\":false")
    );
}

#[test]
fn dry_run_gets_the_same_patch() {
    let pod = fixture("minimal.yaml");
    let mut dry = review(Some(&pod), "CREATE", "default");
    dry["request"]["dryRun"] = true.into();
    let (wet, _) = run(&review(Some(&pod), "CREATE", "default"));
    let (dry, outcome) = run(&dry);
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(dry["response"]["patch"], wet["response"]["patch"]);
}

#[test]
fn update_and_delete_are_allowed_without_a_patch() {
    let pod = fixture("minimal.yaml");
    let mut update = review(Some(&pod), "UPDATE", "default");
    update["request"]["oldObject"] = pod.clone();
    let delete = review(None, "DELETE", "default");
    assert!(delete["request"]["object"].is_null());
    for r in [update, delete] {
        let (response, outcome) = run(&r);
        assert_eq!(outcome, Outcome::Skipped("not_pod_create"));
        assert_eq!(response["response"]["allowed"], true);
        assert!(response["response"].get("patch").is_none());
        assert!(response["response"].get("patchType").is_none());
    }
}

#[test]
fn subresources_are_not_mutated() {
    let pod = fixture("minimal.yaml");
    for sub in ["ephemeralcontainers", "status", "binding"] {
        let mut r = review(Some(&pod), "CREATE", "default");
        r["request"]["subResource"] = sub.into();
        r["request"]["requestSubResource"] = sub.into();
        let (response, outcome) = run(&r);
        assert_eq!(outcome, Outcome::Skipped("not_pod_create"), "{sub}");
        assert!(response["response"].get("patch").is_none());
    }
}

#[test]
fn generate_name_with_empty_name_is_injected() {
    let mut pod = fixture("minimal.yaml");
    pod["metadata"].as_object_mut().unwrap().remove("name");
    pod["metadata"]["generateName"] = "web-7d4b9c-".into();
    let r = review(Some(&pod), "CREATE", "default");
    assert_eq!(r["request"]["name"], "");
    let (_, outcome) = run(&r);
    assert_eq!(outcome, Outcome::Injected);
}

#[test]
fn excluded_namespace_gets_allowed_with_a_warning() {
    let pod = fixture("minimal.yaml");
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "tracecar-system",
    ] {
        let (response, outcome) = run(&review(Some(&pod), "CREATE", ns));
        assert!(matches!(outcome, Outcome::Skipped(_)), "{ns}");
        assert_eq!(response["response"]["allowed"], true);
        assert!(response["response"].get("patch").is_none());
        let warning = response["response"]["warnings"][0].as_str().unwrap();
        assert!(warning.contains(ns), "{warning}");
    }
}

#[test]
fn create_without_object_fails_open() {
    let (response, outcome) = run(&review(None, "CREATE", "default"));
    assert_eq!(outcome, Outcome::Error);
    assert_eq!(response["response"]["allowed"], true);
    assert!(response["response"].get("patch").is_none());
    assert!(
        response["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("internal error")
    );
}

#[test]
fn pod_without_spec_fails_open() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "annotations": {"tracecar.dev/inject": "true"}}});
    let (response, outcome) = run(&review(Some(&pod), "CREATE", "default"));
    assert_eq!(outcome, Outcome::Error);
    assert_eq!(response["response"]["allowed"], true);
}

#[test]
fn malformed_bodies_are_errors() {
    for body in [
        &b"not json"[..],
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":1}}"#,
    ] {
        assert!(
            admission::parse(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let wrong_version = serde_json::to_vec(&{
        let mut r = review(Some(&fixture("minimal.yaml")), "CREATE", "default");
        r["apiVersion"] = "admission.k8s.io/v1beta1".into();
        r
    })
    .unwrap();
    assert!(matches!(
        admission::parse(&wrong_version),
        Err(ReviewError::ApiVersion(_))
    ));
}

#[test]
fn cached_decisions_equal_fresh_ones() {
    let cached = reviewer(4);
    let fixtures = [
        "minimal.yaml",
        "clashes.yaml",
        "escaped-annotations.yaml",
        "init-containers.yaml",
        "job-pod.yaml",
        "run-as-non-root.yaml",
        "share-pid-false.yaml",
        "host-network.yaml",
        "host-pid.yaml",
        "runtime-presets.yaml",
        "dotnet-user-env.yaml",
        "user-tracecar-volume.yaml",
        "windows.yaml",
        "mirror.yaml",
        "privileged.yaml",
        "not-annotated.yaml",
        "future-fields.json",
    ];
    // Twice round, with a cache smaller than the set, so hits, misses and
    // evictions all happen.
    for _ in 0..2 {
        for name in fixtures {
            let r = review(Some(&fixture(name)), "CREATE", "default");
            assert_eq!(run_with(&cached, &r), run(&r), "{name}");
        }
    }
    // Same facts, different namespace: not confused by the cache.
    let pod = fixture("minimal.yaml");
    let (_, outcome) = run_with(&cached, &review(Some(&pod), "CREATE", "kube-system"));
    assert_eq!(outcome, Outcome::Skipped("system_namespace"));
    let (_, outcome) = run_with(&cached, &review(Some(&pod), "CREATE", "default"));
    assert_eq!(outcome, Outcome::Injected);
}

#[test]
fn the_decision_cache_keeps_replicas_and_not_megabytes_of_pod_strings() {
    let reviewer = reviewer(1024);
    let pod = fixture("minimal.yaml");
    // Replicas of one workload: one decision, cached once.
    for _ in 0..3 {
        let (response, outcome) = run_with(&reviewer, &review(Some(&pod), "CREATE", "default"));
        assert_eq!(outcome, Outcome::Injected, "{response}");
    }
    let (entries, bytes) = reviewer.cached();
    assert_eq!(entries, 1);
    assert!(bytes > 0 && bytes < 64 << 10, "{bytes}");
    // Pods with distinct megabyte annotations: decided, answered, not kept.
    for i in 0..5 {
        let mut pod = pod.clone();
        pod["metadata"]["annotations"]["tracecar.dev/runtime"] =
            json!(format!("{i}{}", "r".repeat(1 << 20)));
        let (response, _) = run_with(&reviewer, &review(Some(&pod), "CREATE", "default"));
        assert_eq!(response["response"]["allowed"], true);
    }
    assert_eq!(reviewer.cached().0, 1, "no megabyte decision was cached");
    // Many distinct small pods: the cache stays within its byte budget.
    for i in 0..2000 {
        let mut pod = pod.clone();
        pod["metadata"]["annotations"]["tracecar.dev/containers"] =
            json!(format!("app,c{i}{}", "x".repeat(8000)));
        run_with(&reviewer, &review(Some(&pod), "CREATE", "default"));
        assert!(reviewer.cached().1 <= admission::CACHE_BYTES);
    }
}
