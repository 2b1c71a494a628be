//! Unit tests of the pure injector on fixture pods.

#![cfg(test)]

mod common;

use common::*;
use serde_json::{Value, json};
use tracecar_webhook::config::{InjectConfig, NamespaceDecision, SecurityProfile};
use tracecar_webhook::inject::{Decision, SkipReason};

fn status(doc: &Value) -> Value {
    let raw = doc["metadata"]["annotations"]["tracecar.dev/status"]
        .as_str()
        .expect("status annotation");
    serde_json::from_str(raw).expect("status is JSON")
}

fn caps(container: &Value) -> Vec<&str> {
    container["securityContext"]["capabilities"]["add"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn minimal_pod_without_volumes_gets_everything() {
    let (pod, plan) = inject_checked(&fixture("minimal.yaml"));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(pod["spec"]["shareProcessNamespace"], true);
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes created")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "tracecar-tmp",
            "tracecar-lttng",
            "tracecar-sys",
            "tracecar-usr-src",
            "tracecar-lib-modules",
            "tracecar-work"
        ]
    );
    let work = &pod["spec"]["volumes"][5];
    assert_eq!(work["emptyDir"]["sizeLimit"], "2Gi", "{work}");
    let app = container(&pod, "containers", "app");
    assert_eq!(mount_paths(app), ["/tmp", "/var/run/lttng"]);
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(
        sidecar["command"],
        serde_json::json!([
            "tracecar-agent",
            "serve",
            "--socket",
            "/run/tracecar/agent.sock"
        ])
    );
    assert_eq!(
        mount_paths(sidecar),
        [
            "/tmp",
            "/var/run/lttng",
            "/sys",
            "/usr/src",
            "/lib/modules",
            "/var/lib/tracecar",
            "/run/tracecar"
        ]
    );
    // The hardened sidecar: nothing written to its root filesystem, and
    // exec probes on the agent's socket.
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(sidecar["volumeMounts"][6]["subPath"], "run");
    for probe in ["startupProbe", "readinessProbe"] {
        assert_eq!(
            sidecar[probe]["exec"]["command"],
            serde_json::json!([
                "tracecar-agent",
                "health",
                "--socket",
                "/run/tracecar/agent.sock"
            ]),
            "{probe}"
        );
    }
    for m in sidecar["volumeMounts"].as_array().unwrap() {
        let host = m["name"].as_str().is_some_and(|n| {
            ["tracecar-sys", "tracecar-usr-src", "tracecar-lib-modules"].contains(&n)
        });
        assert_eq!(
            m["readOnly"] == true,
            host,
            "host paths only are read-only: {m}"
        );
    }
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        caps(sidecar),
        [
            "PERFMON",
            "SYS_ADMIN",
            "SYS_PTRACE",
            "CHECKPOINT_RESTORE",
            "DAC_READ_SEARCH",
            "SYSLOG",
            "CHOWN",
            "SETUID",
            "SETGID"
        ]
    );
    assert_eq!(sc["seccompProfile"]["type"], "Unconfined");
    let env: Vec<&str> = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        env,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "NODE_NAME",
            "TRACECAR_FEATURES",
            "LTTNG_HOME",
            "TRACECAR_MEMORY_LIMIT"
        ]
    );
    // The agent's memory bound is the container's own limit, in bytes,
    // through the Downward API.
    let memory = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TRACECAR_MEMORY_LIMIT")
        .unwrap();
    assert_eq!(
        memory["valueFrom"]["resourceFieldRef"],
        serde_json::json!({"containerName": "tracecar", "resource": "limits.memory"})
    );
    assert_eq!(sidecar["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(sidecar["resources"]["requests"]["cpu"], "10m");
    for host in ["usr-src", "lib-modules"] {
        let v = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == format!("tracecar-{host}"))
            .unwrap();
        assert_eq!(v["hostPath"]["type"], "DirectoryOrCreate");
    }
    let st = status(&pod);
    assert_eq!(st["mode"], "container");
    assert_eq!(st["profile"], "minimal");
    assert_eq!(st["containers"], serde_json::json!(["app"]));
}

#[test]
fn reinvocation_of_our_own_output_is_a_no_op() {
    let (pod, _) = inject_checked(&fixture("minimal.yaml"));
    // Another webhook adds a container after us; still no patch.
    let mut pod = pod;
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "late", "image": "late:1"}));
    match decide_in(&pod, "default", &InjectConfig::default()) {
        Decision::Skip {
            reason: SkipReason::AlreadyInjected,
            warning: None,
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_clashes_keep_the_users_mounts() {
    let (pod, plan) = inject_checked(&fixture("clashes.yaml"));
    let app = container(&pod, "containers", "app");
    // Nothing added to app: it mounts both paths itself (one with a slash).
    assert_eq!(mount_paths(app), ["/tmp/", "/var/run/lttng"]);
    let worker = container(&pod, "containers", "worker");
    assert_eq!(mount_paths(worker), ["/scratch", "/tmp", "/var/run/lttng"]);
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(plan.warnings.iter().any(|w| w.contains("/tmp")));
    assert!(plan.warnings.iter().any(|w| w.contains("/var/run/lttng")));
    assert_eq!(
        status(&pod)["containers"],
        serde_json::json!(["app", "worker"])
    );
}

#[test]
fn user_volume_with_our_prefix_means_already_injected() {
    match decide_in(
        &fixture("user-tracecar-volume.yaml"),
        "default",
        &InjectConfig::default(),
    ) {
        Decision::Skip {
            reason: SkipReason::AlreadyInjected,
            warning: Some(w),
        } => assert!(w.contains("tracecar-data"), "{w}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn annotation_keys_with_slash_and_tilde_survive() {
    let doc = fixture("escaped-annotations.yaml");
    let (pod, plan) = inject_checked(&doc);
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["example.com/a~b"], "tilde");
    assert_eq!(ann["example.com/x~1y"], "looks-escaped");
    assert_eq!(ann["~0/~1"], "both");
    let paths: Vec<String> = plan
        .patch
        .0
        .iter()
        .map(|op| match op {
            json_patch::PatchOperation::Add(a) => a.path.to_string(),
            _ => String::new(),
        })
        .collect();
    assert!(
        paths.contains(&"/metadata/annotations/tracecar.dev~1status".to_owned()),
        "{paths:?}"
    );
}

#[test]
fn native_sidecar_goes_after_existing_init_containers() {
    let (pod, _) = inject_checked(&fixture("init-containers.yaml"));
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["migrate", "proxy", "tracecar"]);
    let sidecar = container(&pod, "initContainers", "tracecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert!(
        !pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "tracecar")
    );
    // Init containers are not app containers: no shared mounts.
    assert!(mount_paths(container(&pod, "initContainers", "migrate")).is_empty());
    assert_eq!(status(&pod)["mode"], "native");
}

#[test]
fn job_pods_get_a_native_sidecar() {
    let (pod, plan) = inject_checked(&fixture("job-pod.yaml"));
    assert!(pod["spec"]["initContainers"][0]["name"] == "tracecar");
    assert!(plan.warnings.iter().any(|w| w.contains("Job")));
    // An explicit annotation wins over the Job rule.
    let mut doc = fixture("job-pod.yaml");
    doc["metadata"]["annotations"]["tracecar.dev/sidecar-mode"] = "container".into();
    let (pod, _) = inject_checked(&doc);
    assert_eq!(
        container(&pod, "containers", "tracecar")["name"],
        "tracecar"
    );
}

#[test]
fn sidecar_runs_as_root_explicitly_under_run_as_non_root() {
    let (pod, _) = inject_checked(&fixture("run-as-non-root.yaml"));
    let sc = &container(&pod, "containers", "tracecar")["securityContext"];
    assert_eq!(sc["runAsNonRoot"], false);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsGroup"], 0);
    // The pod-level setting is untouched for the app.
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn share_process_namespace_false_is_overridden_with_a_warning() {
    let (pod, plan) = inject_checked(&fixture("share-pid-false.yaml"));
    assert_eq!(pod["spec"]["shareProcessNamespace"], true);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("shareProcessNamespace")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn host_network_pods_are_injected_without_touching_networking() {
    let doc = fixture("host-network.yaml");
    let (pod, plan) = inject_checked(&doc);
    assert!(plan.warnings.is_empty());
    assert_eq!(pod["spec"]["hostNetwork"], true);
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(
        container(&pod, "containers", "tracecar")
            .get("ports")
            .is_none()
    );
}

#[test]
fn host_pid_pods_keep_share_process_namespace_unset() {
    let (pod, plan) = inject_checked(&fixture("host-pid.yaml"));
    assert!(pod["spec"].get("shareProcessNamespace").is_none());
    assert!(plan.warnings.iter().any(|w| w.contains("hostPID")));
}

#[test]
fn runtime_preset_appends_and_honours_the_container_list() {
    let (pod, plan) = inject_checked(&fixture("runtime-presets.yaml"));
    let jvm = container(&pod, "containers", "jvm");
    assert_eq!(
        env_value(jvm, "JAVA_TOOL_OPTIONS"),
        Some(
            "-Xmx512m -XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit"
        )
    );
    assert_eq!(mount_paths(jvm), ["/tmp", "/var/run/lttng"]);
    // Each selected container is told its name (the rules' container
    // filter reads it), with or without a preset.
    assert_eq!(env_value(jvm, "TRACECAR_CONTAINER"), Some("jvm"));
    let untouched = container(&pod, "containers", "untouched");
    assert!(untouched.get("env").is_none());
    assert!(mount_paths(untouched).is_empty());
    assert!(
        plan.warnings.iter().any(|w| w.contains("ghost")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(status(&pod)["runtime"], "java");
}

#[test]
fn runtime_preset_never_overwrites_a_user_variable() {
    let (pod, _) = inject_checked(&fixture("dotnet-user-env.yaml"));
    let api = container(&pod, "containers", "api");
    assert_eq!(env_value(api, "DOTNET_PerfMapEnabled"), Some("0"));
    assert_eq!(env_value(api, "DOTNET_LTTng"), Some("1"));
    assert_eq!(env_value(api, "COMPlus_PerfMapEnabled"), Some("1"));
    assert_eq!(env_value(api, "TRACECAR_CONTAINER"), Some("api"));
}

#[test]
fn node_and_python_presets() {
    let mut doc = fixture("minimal.yaml");
    doc["metadata"]["annotations"]["tracecar.dev/runtime"] = "node".into();
    let (pod, _) = inject_checked(&doc);
    assert_eq!(
        env_value(container(&pod, "containers", "app"), "NODE_OPTIONS"),
        Some("--perf-basic-prof-only-functions --interpreted-frames-native-stack")
    );
    doc["metadata"]["annotations"]["tracecar.dev/runtime"] = "python".into();
    let (pod, _) = inject_checked(&doc);
    assert_eq!(
        env_value(container(&pod, "containers", "app"), "PYTHONPERFSUPPORT"),
        Some("1")
    );
    doc["metadata"]["annotations"]["tracecar.dev/runtime"] = "cobol".into();
    let (_, plan) = inject_checked(&doc);
    assert!(plan.warnings.iter().any(|w| w.contains("cobol")));
}

#[test]
fn privileged_profile_by_annotation_and_its_override_switch() {
    // By default a pod cannot ask for more than the config's profile:
    // whoever can create a pod would otherwise get a privileged sidecar.
    let (pod, plan) = inject_checked(&fixture("privileged.yaml"));
    let sc = &container(&pod, "containers", "tracecar")["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert!(plan.warnings.iter().any(|w| w.contains("does not allow")));

    let open = InjectConfig {
        allow_profile_override: true,
        ..InjectConfig::default()
    };
    let (pod, _) = inject_checked_with(&fixture("privileged.yaml"), &open);
    let sc = &container(&pod, "containers", "tracecar")["securityContext"];
    assert_eq!(sc["privileged"], true);
    assert!(sc.get("capabilities").is_none());

    let privileged_default = InjectConfig {
        profile: SecurityProfile::Privileged,
        ..InjectConfig::default()
    };
    let (pod, _) = inject_checked_with(&fixture("minimal.yaml"), &privileged_default);
    assert_eq!(status(&pod)["profile"], "privileged");
}

#[test]
fn a_profiles_port_serves_scrapers_and_says_so_to_grafanas() {
    let config = InjectConfig {
        profiles_port: Some(6060),
        ..InjectConfig::default()
    };
    let (pod, _) = inject_checked_with(&fixture("minimal.yaml"), &config);
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(
        sidecar["ports"],
        json!([{"name": "tracecar-pprof", "containerPort": 6060, "protocol": "TCP"}])
    );
    let env = sidecar["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "TRACECAR_PROFILES_LISTEN", "value": "0.0.0.0:6060"})),
        "{env:?}"
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["profiles.grafana.com/cpu.scrape"], "true");
    assert_eq!(
        annotations["profiles.grafana.com/cpu.port_name"],
        "tracecar-pprof"
    );
    // A pod with scrape annotations of its own (its app serves pprof)
    // keeps them.
    let mut own = fixture("minimal.yaml");
    own["metadata"]["annotations"]["profiles.grafana.com/cpu.port"] = json!("8080");
    own["metadata"]["annotations"]["profiles.grafana.com/cpu.scrape"] = json!("true");
    let (pod, _) = inject_checked_with(&own, &config);
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["profiles.grafana.com/cpu.port"], "8080");
    assert!(
        annotations
            .get("profiles.grafana.com/cpu.port_name")
            .is_none()
    );
    // Without the profile feature: no listener, no port, no annotation.
    let mut no_profile = fixture("minimal.yaml");
    no_profile["metadata"]["annotations"]["tracecar.dev/features"] = json!("dotnet");
    let (pod, _) = inject_checked_with(&no_profile, &config);
    assert!(
        container(&pod, "containers", "tracecar")
            .get("ports")
            .is_none()
    );
    assert!(
        pod["metadata"]["annotations"]
            .get("profiles.grafana.com/cpu.scrape")
            .is_none()
    );
    // Off by default, and port 0 is refused.
    let (pod, _) = inject_checked(&fixture("minimal.yaml"));
    assert!(
        container(&pod, "containers", "tracecar")
            .get("ports")
            .is_none()
    );
    assert!(InjectConfig::from_yaml("profilesPort: 0\n").is_err());
}

#[test]
fn a_namespace_enforcing_baseline_or_restricted_gets_no_sidecar_and_is_told_why() {
    use tracecar_webhook::inject::{self, PodContext, PodSecurityLevel};
    for level in [PodSecurityLevel::Baseline, PodSecurityLevel::Restricted] {
        let ctx = PodContext {
            namespace: "shop",
            owner_kind: None,
            pod_security: Some(level),
        };
        let doc = fixture("minimal.yaml");
        let decision =
            inject::decide(&typed(&doc), ctx, &InjectConfig::default()).expect("decision");
        let Decision::Decline {
            reason,
            warning,
            patch,
        } = decision
        else {
            panic!("expected a decline, got {decision:?}");
        };
        assert_eq!(reason, SkipReason::PodSecurity(level));
        assert!(
            warning.contains(&format!("enforces PodSecurity {}", level.as_str()))
                && warning.contains("pod-security.kubernetes.io/enforce=privileged"),
            "{warning}"
        );
        // Only the status annotation: no sidecar, no volume, nothing the
        // level would reject.
        let mut pod = doc.clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"], doc["spec"]);
        let status = status(&pod);
        assert_eq!(status["injected"], false);
        assert!(status["reason"].as_str().unwrap().contains(level.as_str()));
        assert!(
            status["fix"]
                .as_str()
                .unwrap()
                .contains("kubectl tracecar attach")
        );
    }
    assert_eq!(PodSecurityLevel::parse("privileged"), None);
}

#[test]
fn features_are_capped_by_the_configs_ceiling() {
    let ceiling = InjectConfig {
        features: vec!["profile".into(), "dotnet".into()],
        allowed_features: vec!["profile".into(), "dotnet".into()],
        ..InjectConfig::default()
    };
    let mut doc = fixture("minimal.yaml");
    doc["metadata"]["annotations"]["tracecar.dev/features"] = json!("profile,uprobe");
    let (pod, plan) = inject_checked_with(&doc, &ceiling);
    // uprobe (CAP_SYS_ADMIN) is beyond the ceiling: dropped, with a word.
    assert_eq!(status(&pod)["features"], json!(["profile"]));
    let caps = &container(&pod, "containers", "tracecar")["securityContext"]["capabilities"]["add"];
    assert!(
        !caps.as_array().unwrap().contains(&json!("SYS_ADMIN")),
        "{caps}"
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("more than the injector config allows")),
        "{:?}",
        plan.warnings
    );
    // A config whose default features exceed its ceiling is refused.
    assert!(
        InjectConfig::from_yaml("features: [profile, uprobe]\nallowedFeatures: [profile]\n")
            .is_err()
    );
}

#[test]
fn an_app_container_mounting_our_volumes_by_name_is_not_injected() {
    // Mounting tracecar-work (the agent's socket, LTTNG_HOME) or a host
    // path by name, without the volume: valid once the webhook would add
    // it. The pod is left alone, with a warning.
    for (list, volume) in [
        ("containers", "tracecar-work"),
        ("containers", "tracecar-sys"),
        ("initContainers", "tracecar-work"),
    ] {
        let mut doc = fixture("minimal.yaml");
        let mount = json!({"name": volume, "mountPath": "/stolen"});
        if list == "initContainers" {
            doc["spec"]["initContainers"] =
                json!([{"name": "init", "image": "busybox", "volumeMounts": [mount]}]);
        } else {
            doc["spec"]["containers"][0]["volumeMounts"] = json!([mount]);
        }
        match decide_in(&doc, "default", &InjectConfig::default()) {
            Decision::Skip {
                reason: SkipReason::AlreadyInjected,
                warning: Some(warning),
            } => assert!(warning.contains(volume), "{warning}"),
            other => panic!("{list}/{volume}: {other:?}"),
        }
    }
}

#[test]
fn values_from_the_pod_are_echoed_clipped() {
    // The pod is not validated yet: its values can be megabytes, and the
    // warnings quote at most a few dozen characters of them.
    let mut doc = fixture("minimal.yaml");
    let huge = "x".repeat(3 << 20);
    doc["metadata"]["annotations"]["tracecar.dev/runtime"] = json!(huge);
    doc["metadata"]["annotations"]["tracecar.dev/sidecar-mode"] = json!(huge);
    doc["metadata"]["annotations"]["tracecar.dev/features"] = json!(huge);
    let (_, plan) = inject_checked(&doc);
    assert_eq!(plan.warnings.len(), 3, "{:?}", plan.warnings.len());
    for warning in &plan.warnings {
        assert!(warning.len() < 400, "{} bytes", warning.len());
        assert!(warning.contains("(3145728 bytes)"), "{warning}");
    }
}

#[test]
fn skipped_pods_say_why() {
    let config = InjectConfig::default();
    let cases = [
        ("windows.yaml", SkipReason::Windows, true),
        ("mirror.yaml", SkipReason::MirrorPod, true),
        ("not-annotated.yaml", SkipReason::NotAnnotated, false),
    ];
    for (file, reason, warns) in cases {
        match decide_in(&fixture(file), "default", &config) {
            Decision::Skip { reason: r, warning } => {
                assert_eq!(r, reason, "{file}");
                assert_eq!(warning.is_some(), warns, "{file}");
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn excluded_namespaces_are_never_injected() {
    let mut config = InjectConfig {
        exclude_namespaces: vec!["legacy".into()],
        ..InjectConfig::default()
    };
    let doc = fixture("minimal.yaml");
    for (ns, expected) in [
        ("kube-system", NamespaceDecision::System),
        ("kube-public", NamespaceDecision::System),
        ("kube-node-lease", NamespaceDecision::System),
        ("tracecar-system", NamespaceDecision::Webhook),
        ("legacy", NamespaceDecision::Excluded),
    ] {
        match decide_in(&doc, ns, &config) {
            Decision::Skip {
                reason: SkipReason::Namespace(d),
                warning: Some(w),
            } => {
                assert_eq!(d, expected, "{ns}");
                assert!(w.contains(ns), "{w}");
            }
            other => panic!("{ns}: {other:?}"),
        }
    }
    config.namespaces = vec!["apps".into()];
    assert!(matches!(
        decide_in(&doc, "default", &config),
        Decision::Skip {
            reason: SkipReason::Namespace(NamespaceDecision::NotAllowed),
            ..
        }
    ));
    assert!(matches!(
        decide_in(&doc, "apps", &config),
        Decision::Inject(_)
    ));
}

#[test]
fn unknown_future_fields_survive_and_nulls_become_arrays() {
    let doc = fixture("future-fields.json");
    let (pod, _) = inject_checked(&doc);
    assert_eq!(pod["spec"]["futurePodField"], doc["spec"]["futurePodField"]);
    assert_eq!(
        pod["spec"]["containers"][0]["futureContainerField"],
        "keep-me"
    );
    assert_eq!(pod["status"]["futureStatus"], "x");
    assert_eq!(
        pod["metadata"]["managedFields"],
        doc["metadata"]["managedFields"]
    );
    assert_eq!(
        mount_paths(&pod["spec"]["containers"][0]),
        ["/tmp", "/var/run/lttng"]
    );
}

#[test]
fn large_pod_is_injected_in_linear_time() {
    let doc = large_pod(20, 1000);
    let size = serde_json::to_vec(&doc).unwrap().len();
    assert!(size >= 64 * 1024, "fixture is {size} bytes");
    let started = std::time::Instant::now();
    let (pod, plan) = inject_checked(&doc);
    assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 21);
    // 20 containers × (mounts) + pod-level ops: proportional to containers, not env vars.
    assert!(plan.patch.0.len() < 100, "{} ops", plan.patch.0.len());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// The pod security variants of the LTTng run directory: whatever user the
/// app runs as (uid 1000 with fsGroup 2000, or root), the sidecar runs as
/// root, the pod's securityContext (fsGroup included) is left as it is, and
/// /var/run/lttng and /tmp are plain emptyDirs shared with the app, which
/// Kubernetes creates root-owned with mode 0777 (02777, group fsGroup)
/// before any container starts. An app image's own /var/run/lttng is
/// hidden under that emptyDir, so it needs no case here.
#[test]
fn pod_security_variants_keep_the_pod_context_and_share_plain_empty_dirs() {
    for (name, pod_security) in [
        ("fs-group.yaml", json!({"runAsUser": 1000, "fsGroup": 2000})),
        ("root-app.yaml", json!({"runAsUser": 0, "runAsGroup": 0})),
        (
            "run-as-non-root.yaml",
            json!({"runAsNonRoot": true, "runAsUser": 1000}),
        ),
    ] {
        let (pod, _) = inject_checked(&fixture(name));
        assert_eq!(pod["spec"]["securityContext"], pod_security, "{name}");
        let sc = &container(&pod, "containers", "tracecar")["securityContext"];
        assert_eq!(
            (&sc["runAsUser"], &sc["runAsGroup"]),
            (&json!(0), &json!(0)),
            "{name}"
        );
        assert_eq!(sc["runAsNonRoot"], false, "{name}");
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        for (volume, path) in [
            ("tracecar-lttng", "/var/run/lttng"),
            ("tracecar-tmp", "/tmp"),
        ] {
            let v = volumes.iter().find(|v| v["name"] == volume).unwrap();
            assert_eq!(
                v["emptyDir"],
                json!({}),
                "{name}: {volume} is not a plain emptyDir"
            );
            for c in ["app", "tracecar"] {
                let mounts = container(&pod, "containers", c)["volumeMounts"]
                    .as_array()
                    .unwrap();
                assert!(
                    mounts.iter().any(|m| m["name"] == volume
                        && m["mountPath"] == path
                        && m.get("readOnly").is_none()),
                    "{name}: {c} does not mount {volume} at {path} writable"
                );
            }
        }
    }
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn continuous_profiling_is_set_with_the_pods_identity() {
    let config =
        InjectConfig::from_yaml("continuousHz: 49\ncontinuousWindowSeconds: 30\n").unwrap();
    let mut doc = fixture("minimal.yaml");
    doc["metadata"]["annotations"]["tracecar.dev/continuous"] = json!("cpu, offcpu, gpu");
    doc["metadata"]["labels"] =
        json!({"app": "legacy", "app.kubernetes.io/name": "web", "pod-template-hash": "7d9f8b6c5"});
    doc["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5",
        "uid": "0c0c0c0c-0000-0000-0000-000000000000", "controller": true
    }]);
    let (pod, plan) = inject_checked_with(&doc, &config);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("\"gpu\" is not cpu|offcpu")),
        "{:?}",
        plan.warnings
    );
    let sidecar = container(&pod, "containers", "tracecar");
    for (name, value) in [
        ("TRACECAR_CONTINUOUS", "cpu,offcpu"),
        ("TRACECAR_CONTINUOUS_HZ", "49"),
        ("TRACECAR_CONTINUOUS_WINDOW", "30"),
        ("TRACECAR_APP_CONTAINERS", "app"),
        ("TRACECAR_SERVICE_NAME", "web"),
        ("TRACECAR_WORKLOAD", "Deployment/web"),
    ] {
        assert_eq!(env_value(sidecar, name), Some(value), "{name}");
    }
    // The pod's name, namespace and node: the Downward API's.
    let env = sidecar["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
        "{env:?}"
    );
    assert_eq!(status(&pod)["continuous"], json!(["cpu", "offcpu"]));

    // A StatefulSet's pod, named after it; no app label.
    doc["metadata"]["labels"] = json!({});
    doc["metadata"]["ownerReferences"][0]["kind"] = json!("StatefulSet");
    doc["metadata"]["ownerReferences"][0]["name"] = json!("db");
    let (pod, _) = inject_checked_with(&doc, &config);
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(
        env_value(sidecar, "TRACECAR_WORKLOAD"),
        Some("StatefulSet/db")
    );
    assert_eq!(env_value(sidecar, "TRACECAR_SERVICE_NAME"), Some("db"));

    // Without the profile feature: nothing runs, and the pod is told.
    doc["metadata"]["annotations"]["tracecar.dev/features"] = json!("dotnet");
    let (pod, plan) = inject_checked_with(&doc, &config);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("needs the profile feature")),
        "{:?}",
        plan.warnings
    );
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(env_value(sidecar, "TRACECAR_CONTINUOUS"), None);
    assert!(status(&pod).get("continuous").is_none());
    // Without the annotation, none of it.
    let (pod, _) = inject_checked(&fixture("minimal.yaml"));
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(env_value(sidecar, "TRACECAR_CONTINUOUS"), None);
    assert!(InjectConfig::from_yaml("continuousHz: 0\n").is_err());
    assert!(InjectConfig::from_yaml("continuousWindowSeconds: 601\n").is_err());
}

#[test]
fn pods_that_push_get_the_backends_and_the_secret() {
    let config = InjectConfig::from_yaml(
        "push:\n  otlp: http://otel-collector.obs:4318\n  pyroscope: https://pyroscope.obs\n  secretName: tracecar-push\n  queue: 8\n",
    )
    .unwrap();
    let mut doc = fixture("minimal.yaml");
    doc["metadata"]["annotations"]["tracecar.dev/continuous"] = json!("cpu");
    let (pod, _) = inject_checked_with(&doc, &config);
    let sidecar = container(&pod, "containers", "tracecar");
    for (name, value) in [
        ("TRACECAR_PUSH_OTLP", "http://otel-collector.obs:4318"),
        ("TRACECAR_PUSH_PYROSCOPE", "https://pyroscope.obs"),
        ("TRACECAR_PUSH_QUEUE", "8"),
        ("TRACECAR_PUSH_SECRET_DIR", "/etc/tracecar/push"),
    ] {
        assert_eq!(env_value(sidecar, name), Some(value), "{name}");
    }
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tracecar-push")
        .expect("the push Secret's volume");
    assert_eq!(
        volume["secret"],
        json!({"secretName": "tracecar-push", "optional": true, "defaultMode": 0o400})
    );
    assert!(
        sidecar["volumeMounts"].as_array().unwrap().contains(&json!(
            {"name": "tracecar-push", "mountPath": "/etc/tracecar/push", "readOnly": true}
        )),
        "{sidecar}"
    );
    assert!(
        status(&pod)["volumes"]
            .as_array()
            .unwrap()
            .contains(&json!("tracecar-push"))
    );
    // Without continuous profiling, nothing to push: no Secret either.
    let (pod, _) = inject_checked_with(&fixture("minimal.yaml"), &config);
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(env_value(sidecar, "TRACECAR_PUSH_OTLP"), None);
    assert!(
        !pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "tracecar-push")
    );
    for bad in [
        "push:\n  otlp: collector:4318\n",
        "push:\n  otlp: http://c/?x=1\n",
        "push:\n  queue: 0\n",
        "push:\n  secretName: Bad_Name\n",
        "push:\n  endpoint: http://c\n",
    ] {
        assert!(InjectConfig::from_yaml(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_rules_configmap_is_mounted_in_the_sidecar_for_the_agent_to_read() {
    let mut doc = fixture("minimal.yaml");
    doc["metadata"]["annotations"]["tracecar.dev/rules"] = json!("web-rules");
    let (pod, plan) = inject_checked(&doc);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tracecar-rules")
        .expect("the rules ConfigMap's volume");
    // Optional: a pod whose ConfigMap is missing still starts.
    assert_eq!(
        volume["configMap"],
        json!({"name": "web-rules", "optional": true})
    );
    let sidecar = container(&pod, "containers", "tracecar");
    assert!(
        sidecar["volumeMounts"].as_array().unwrap().contains(&json!(
            {"name": "tracecar-rules", "mountPath": "/etc/tracecar/rules", "readOnly": true}
        )),
        "{sidecar}"
    );
    assert_eq!(
        env_value(sidecar, "TRACECAR_RULES_DIR"),
        Some("/etc/tracecar/rules")
    );
    assert!(
        status(&pod)["volumes"]
            .as_array()
            .unwrap()
            .contains(&json!("tracecar-rules"))
    );
    // The app containers do not see it.
    let app = container(&pod, "containers", "app");
    assert!(
        !app["volumeMounts"].to_string().contains("tracecar-rules"),
        "{app}"
    );
    // Not a ConfigMap's name: a warning, and nothing mounted.
    doc["metadata"]["annotations"]["tracecar.dev/rules"] = json!("Web Rules");
    let (pod, plan) = inject_checked(&doc);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("tracecar.dev/rules")),
        "{:?}",
        plan.warnings
    );
    assert!(!pod.to_string().contains("tracecar-rules"));
    assert_eq!(
        env_value(
            container(&pod, "containers", "tracecar"),
            "TRACECAR_RULES_DIR"
        ),
        None
    );
}

#[test]
fn features_choose_the_sidecars_capabilities() {
    let mut doc = fixture("minimal.yaml");
    doc["metadata"]["annotations"]["tracecar.dev/features"] = json!("profile");
    let (pod, plan) = inject_checked(&doc);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(
        caps(sidecar),
        [
            "PERFMON",
            "SYS_PTRACE",
            "CHECKPOINT_RESTORE",
            "DAC_READ_SEARCH",
            "SYSLOG"
        ]
    );
    assert_eq!(env_value(sidecar, "TRACECAR_FEATURES"), Some("profile"));
    assert_eq!(status(&pod)["features"], json!(["profile"]));

    doc["metadata"]["annotations"]["tracecar.dev/features"] = json!("uprobe, profile");
    let (pod, _) = inject_checked(&doc);
    let sidecar = container(&pod, "containers", "tracecar");
    let granted = caps(sidecar);
    assert!(granted.contains(&"SYS_ADMIN") && granted.contains(&"PERFMON"));
    assert!(!granted.contains(&"CHOWN") && !granted.contains(&"SETUID"));
    assert_eq!(
        env_value(sidecar, "TRACECAR_FEATURES"),
        Some("profile,uprobe")
    );
}

#[test]
fn without_the_annotation_the_configs_features_apply_and_a_typo_warns() {
    let (pod, _) = inject_checked(&fixture("minimal.yaml"));
    let sidecar = container(&pod, "containers", "tracecar");
    assert_eq!(
        caps(sidecar),
        tracecar_api::security::MINIMAL_CAPABILITIES.to_vec()
    );
    assert_eq!(
        status(&pod)["features"],
        json!(["profile", "uprobe", "lttng", "dotnet", "dump"])
    );

    let config = InjectConfig::from_yaml("features: [profile, dotnet]\n").unwrap();
    let mut doc = fixture("minimal.yaml");
    let (pod, _) = inject_checked_with(&doc, &config);
    assert_eq!(status(&pod)["features"], json!(["profile", "dotnet"]));
    doc["metadata"]["annotations"]["tracecar.dev/features"] = json!("profile,uprobes");
    let (pod, plan) = inject_checked_with(&doc, &config);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("\"uprobes\" is not a feature")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(status(&pod)["features"], json!(["profile", "dotnet"]));
    assert!(InjectConfig::from_yaml("features: [gpu]\n").is_err());
}

#[test]
fn the_memory_bound_follows_the_configured_limit() {
    let env_names = |config: &InjectConfig| -> Vec<String> {
        let (pod, _) = inject_checked_with(&fixture("minimal.yaml"), config);
        container(&pod, "containers", "tracecar")["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(env_names(&InjectConfig::default()).contains(&"TRACECAR_MEMORY_LIMIT".to_owned()));
    // No memory limit configured: the Downward API would give the node's
    // allocatable memory, which bounds nothing of the sidecar's, so the
    // agent falls back to its cgroup.
    let config = InjectConfig::from_yaml("resources:\n  limits:\n    cpu: \"1\"\n").unwrap();
    assert!(!env_names(&config).contains(&"TRACECAR_MEMORY_LIMIT".to_owned()));
}
