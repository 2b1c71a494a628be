//! A checker for the subset of the API server's Pod validation that an
//! injector can break. The tests run it on every injected pod.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Whether `name` is a DNS-1123 label.
pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Returns every violation found; empty means the pod passes.
pub fn violations(pod: &Pod) -> Vec<String> {
    let mut found = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return vec!["pod has no spec".to_owned()];
    };

    let mut volume_names = BTreeSet::new();
    for volume in spec.volumes.iter().flatten() {
        if !is_dns1123_label(&volume.name) {
            found.push(format!(
                "volume name {:?} is not a DNS-1123 label",
                volume.name
            ));
        }
        if !volume_names.insert(volume.name.as_str()) {
            found.push(format!("duplicate volume name {:?}", volume.name));
        }
    }

    let mut container_names = BTreeSet::new();
    let init = spec.init_containers.iter().flatten().map(|c| (c, true));
    let app = spec.containers.iter().map(|c| (c, false));
    for (container, is_init) in init.chain(app) {
        if !is_dns1123_label(&container.name) {
            found.push(format!(
                "container name {:?} is not a DNS-1123 label",
                container.name
            ));
        }
        if !container_names.insert(container.name.as_str()) {
            found.push(format!("duplicate container name {:?}", container.name));
        }
        check_container(container, is_init, &volume_names, &mut found);
    }
    if spec.containers.is_empty() {
        found.push("pod has no containers".to_owned());
    }
    if spec.host_pid == Some(true) && spec.share_process_namespace == Some(true) {
        found.push("hostPID and shareProcessNamespace cannot both be true".to_owned());
    }
    found
}

fn check_container(
    container: &Container,
    is_init: bool,
    volume_names: &BTreeSet<&str>,
    found: &mut Vec<String>,
) {
    let name = &container.name;
    let mut paths = BTreeSet::new();
    for mount in container.volume_mounts.iter().flatten() {
        if !volume_names.contains(mount.name.as_str()) {
            found.push(format!(
                "container {name:?} mounts unknown volume {:?}",
                mount.name
            ));
        }
        if !paths.insert(mount.mount_path.as_str()) {
            found.push(format!(
                "container {name:?} mounts {:?} twice",
                mount.mount_path
            ));
        }
        if !mount.mount_path.starts_with('/') {
            found.push(format!(
                "container {name:?} mount path {:?} is not absolute",
                mount.mount_path
            ));
        }
    }
    match container.restart_policy.as_deref() {
        None => {}
        Some("Always") if is_init => {}
        Some(policy) => found.push(format!(
            "container {name:?} has restartPolicy {policy:?}, only allowed as Always on init containers"
        )),
    }
    for env in container.env.iter().flatten() {
        if env.name.is_empty() {
            found.push(format!("container {name:?} has an env var without a name"));
        }
        if env.value.is_some() && env.value_from.is_some() {
            found.push(format!(
                "container {name:?} env {:?} has both value and valueFrom",
                env.name
            ));
        }
    }
    if container.image.as_deref().unwrap_or_default().is_empty() {
        found.push(format!("container {name:?} has no image"));
    }
}
