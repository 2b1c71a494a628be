//! Property tests: over generated valid pods, the patch always applies, the
//! result passes the Pod validation checker, and re-injection is a no-op.

#![cfg(test)]

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct ContainerShape {
    mounts: Vec<(usize, &'static str)>,
    env: Vec<(&'static str, &'static str)>,
    absent_env: bool,
    absent_mounts: bool,
}

const PATHS: [&str; 6] = [
    "/tmp",
    "/tmp/",
    "/var/run/lttng",
    "/data",
    "/cache",
    "/var/run",
];
const ENV_NAMES: [&str; 5] = [
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "DOTNET_LTTng",
    "PATH",
    "PYTHONPERFSUPPORT",
];
const ENV_VALUES: [&str; 3] = ["", "--inspect", "-Xmx1g"];

fn container_shape(volumes: usize) -> impl Strategy<Value = ContainerShape> {
    (
        proptest::collection::vec((0..volumes.max(1), prop::sample::select(&PATHS[..])), 0..4),
        proptest::collection::vec(
            (
                prop::sample::select(&ENV_NAMES[..]),
                prop::sample::select(&ENV_VALUES[..]),
            ),
            0..4,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(mounts, env, absent_env, absent_mounts)| ContainerShape {
                mounts: if volumes == 0 { Vec::new() } else { mounts },
                env,
                absent_env,
                absent_mounts,
            },
        )
}

fn container_json(name: String, shape: &ContainerShape) -> Value {
    let mut c = json!({"name": name, "image": "app:1"});
    // Unique mount paths per container, as the API server requires.
    let mut seen = std::collections::BTreeSet::new();
    let mounts: Vec<Value> = shape
        .mounts
        .iter()
        .filter(|(_, p)| seen.insert(p.trim_end_matches('/')))
        .map(|(v, p)| json!({"name": format!("vol{v}"), "mountPath": p}))
        .collect();
    if !(mounts.is_empty() && shape.absent_mounts) {
        c["volumeMounts"] = Value::Array(mounts);
    }
    let env: Vec<Value> = shape
        .env
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    if !(env.is_empty() && shape.absent_env) {
        c["env"] = Value::Array(env);
    }
    c
}

fn pod_strategy() -> impl Strategy<Value = Value> {
    (0usize..4).prop_flat_map(|volumes| {
        (
            proptest::collection::vec(container_shape(volumes), 1..5),
            proptest::collection::vec((container_shape(volumes), any::<bool>()), 0..3),
            prop::option::of(prop::sample::select(
                &["dotnet", "node", "java", "python", "bogus"][..],
            )),
            prop::option::of(prop::sample::select(&["container", "native", "weird"][..])),
            prop::option::of(prop::sample::select(&["minimal", "privileged"][..])),
            prop::option::of(any::<bool>()),
            any::<bool>(),
            prop::option::of(proptest::collection::vec(0usize..5, 0..3)),
        )
            .prop_map(
                move |(apps, inits, runtime, mode, profile, spn, host_pid, selected)| {
                    let containers: Vec<Value> = apps
                        .iter()
                        .enumerate()
                        .map(|(i, s)| container_json(format!("app-{i}"), s))
                        .collect();
                    let init: Vec<Value> = inits
                        .iter()
                        .enumerate()
                        .map(|(i, (s, native))| {
                            let mut c = container_json(format!("init-{i}"), s);
                            if *native {
                                c["restartPolicy"] = "Always".into();
                            }
                            c
                        })
                        .collect();
                    let mut annotations = json!({"tracecar.dev/inject": "true"});
                    if let Some(r) = runtime {
                        annotations["tracecar.dev/runtime"] = r.into();
                    }
                    if let Some(m) = mode {
                        annotations["tracecar.dev/sidecar-mode"] = m.into();
                    }
                    if let Some(p) = profile {
                        annotations["tracecar.dev/profile"] = p.into();
                    }
                    if let Some(sel) = selected {
                        let names: Vec<String> = sel.iter().map(|i| format!("app-{i}")).collect();
                        annotations["tracecar.dev/containers"] = names.join(",").into();
                    }
                    let mut spec = json!({"containers": containers});
                    if !init.is_empty() {
                        spec["initContainers"] = Value::Array(init);
                    }
                    if volumes > 0 {
                        spec["volumes"] = (0..volumes)
                            .map(|v| json!({"name": format!("vol{v}"), "emptyDir": {}}))
                            .collect();
                    }
                    if host_pid {
                        spec["hostPID"] = true.into();
                    } else if let Some(spn) = spn {
                        spec["shareProcessNamespace"] = spn.into();
                    }
                    json!({
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": "generated", "annotations": annotations},
                        "spec": spec
                    })
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn injection_applies_validates_and_is_idempotent(pod in pod_strategy()) {
        let before = tracecar_webhook::podcheck::violations(&typed(&pod));
        prop_assume!(before.is_empty());
        // inject_checked asserts: add-only patch applies, result valid,
        // re-injection silent.
        let (patched, plan) = inject_checked(&pod);
        // Every selected app container mounts /tmp exactly once.
        for name in &plan.status.containers {
            let c = container(&patched, "containers", name);
            let tmp = mount_paths(c).iter().filter(|p| p.trim_end_matches('/') == "/tmp").count();
            prop_assert_eq!(tmp, 1);
        }
        // Replicas share a cached decision: it must equal a fresh one.
        let cached = tracecar_webhook::admission::Reviewer::new(
            tracecar_webhook::inject::Injector::new(Default::default()).unwrap(), 8);
        let fresh = tracecar_webhook::admission::Reviewer::new(
            tracecar_webhook::inject::Injector::new(Default::default()).unwrap(), 0);
        let request = tracecar_webhook::admission::parse(
            &serde_json::to_vec(&review(Some(&pod), "CREATE", "default")).unwrap()).unwrap();
        let first = serde_json::to_value(cached.review(&request).0).unwrap();
        let second = serde_json::to_value(cached.review(&request).0).unwrap();
        let uncached = serde_json::to_value(fresh.review(&request).0).unwrap();
        prop_assert_eq!(&first, &uncached);
        prop_assert_eq!(&second, &uncached);
        // Nothing the user had is lost: every original container is still there.
        for list in ["containers", "initContainers"] {
            for c in pod["spec"][list].as_array().into_iter().flatten() {
                let after = container(&patched, list, c["name"].as_str().unwrap());
                prop_assert_eq!(&after["image"], &c["image"]);
            }
        }
    }
}
