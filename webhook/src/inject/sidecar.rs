//! The sidecar container and the volumes it shares with the app.

use super::{LTTNG_PATH, TMP_PATH, VOL_LIB_MODULES, VOL_LTTNG, VOL_SYS, VOL_TMP, VOL_USR_SRC};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource, ResourceRequirements, Volume,
    VolumeMount,
};
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::annotations::SIDECAR_NAME;
use crate::config::{InjectConfig, SecurityProfile, SidecarMode};
use tracecar_api::security::Features;

pub(super) fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub(super) fn volumes_names() -> Vec<&'static str> {
    vec![VOL_TMP, VOL_LTTNG, VOL_SYS, VOL_USR_SRC, VOL_LIB_MODULES]
}

pub(super) fn pod_volumes(config: &InjectConfig) -> Vec<Volume> {
    let empty_dir = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let host_path = |name: &str, path: &str, type_: &str| Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: (!type_.is_empty()).then(|| type_.to_owned()),
        }),
        ..Volume::default()
    };
    let kernel_type = config.kernel_source_host_path_type.as_str();
    vec![
        empty_dir(VOL_TMP),
        empty_dir(VOL_LTTNG),
        host_path(VOL_SYS, "/sys", "Directory"),
        host_path(VOL_USR_SRC, "/usr/src", kernel_type),
        host_path(VOL_LIB_MODULES, "/lib/modules", kernel_type),
    ]
}

pub(super) fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

/// The sidecar container for a profile and mode.
pub fn sidecar_container(
    config: &InjectConfig,
    profile: SecurityProfile,
    mode: SidecarMode,
    features: Features,
) -> Container {
    let security_context = tracecar_api::security::security_context(profile, features);
    let mut env = tracecar_api::security::downward_env();
    env.push(EnvVar {
        name: tracecar_api::security::FEATURES_ENV.to_owned(),
        value: Some(features.list()),
        ..EnvVar::default()
    });
    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(
            ["tracecar-agent", "serve", "--socket", &config.socket_path]
                .map(str::to_owned)
                .to_vec(),
        ),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: quantities(&config.resources.requests),
            limits: quantities(&config.resources.limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(security_context),
        volume_mounts: Some(vec![
            mount(VOL_TMP, TMP_PATH, false),
            mount(VOL_LTTNG, LTTNG_PATH, false),
            mount(VOL_SYS, "/sys", true),
            mount(VOL_USR_SRC, "/usr/src", true),
            mount(VOL_LIB_MODULES, "/lib/modules", true),
        ]),
        restart_policy: (mode == SidecarMode::Native).then(|| "Always".to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}
