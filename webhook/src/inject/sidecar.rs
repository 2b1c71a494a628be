//! The sidecar container and the volumes it shares with the app.

use super::model::{
    LTTNG_PATH, TMP_PATH, VOL_LIB_MODULES, VOL_LTTNG, VOL_SYS, VOL_TMP, VOL_USR_SRC, VOL_WORK,
    WORK_PATH,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HostPathVolumeSource, Probe, ResourceFieldSelector, ResourceRequirements, Volume, VolumeMount,
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
    vec![
        VOL_TMP,
        VOL_LTTNG,
        VOL_SYS,
        VOL_USR_SRC,
        VOL_LIB_MODULES,
        VOL_WORK,
    ]
}

/// The directory of the agent's socket, when it is not under
/// [`WORK_PATH`] already (it then gets a `subPath` of the work volume).
pub(super) fn socket_dir(socket_path: &str) -> Option<&str> {
    let dir = socket_path.rsplit_once('/').map(|(d, _)| d)?;
    let under_work = dir == WORK_PATH || dir.starts_with(&format!("{WORK_PATH}/"));
    (!dir.is_empty() && !under_work).then_some(dir)
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
    let work = Volume {
        name: VOL_WORK.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(config.work_size_limit.clone())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    };
    vec![
        empty_dir(VOL_TMP),
        empty_dir(VOL_LTTNG),
        host_path(VOL_SYS, "/sys", "Directory"),
        host_path(VOL_USR_SRC, "/usr/src", kernel_type),
        host_path(VOL_LIB_MODULES, "/lib/modules", kernel_type),
        work,
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
    let mut security_context = tracecar_api::security::security_context(profile, features);
    // Everything the agent writes goes to the work volume, /tmp or
    // /var/run/lttng.
    security_context.read_only_root_filesystem = Some(true);
    let mut env = tracecar_api::security::downward_env();
    for (name, value) in [
        (tracecar_api::security::FEATURES_ENV, features.list()),
        // lttng writes its .lttngrc in $LTTNG_HOME (default: $HOME).
        ("LTTNG_HOME", WORK_PATH.to_owned()),
    ] {
        env.push(EnvVar {
            name: name.to_owned(),
            value: Some(value),
            ..EnvVar::default()
        });
    }
    // The agent's memory bound (`agent/src/memory.rs`): the container's
    // limit as the API server has it, through the Downward API, in bytes.
    if config.resources.limits.contains_key("memory") {
        env.push(EnvVar {
            name: "TRACECAR_MEMORY_LIMIT".to_owned(),
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some(SIDECAR_NAME.to_owned()),
                    resource: "limits.memory".to_owned(),
                    divisor: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    // Profiles on TCP for scrapers (`profilesPort`), only with the
    // profile feature.
    let pprof_port = config
        .profiles_port
        .filter(|_| features.contains(tracecar_api::security::Feature::Profile));
    if let Some(port) = pprof_port {
        env.push(EnvVar {
            name: "TRACECAR_PROFILES_LISTEN".to_owned(),
            value: Some(format!("0.0.0.0:{port}")),
            ..EnvVar::default()
        });
    }
    let mut mounts = vec![
        mount(VOL_TMP, TMP_PATH, false),
        mount(VOL_LTTNG, LTTNG_PATH, false),
        mount(VOL_SYS, "/sys", true),
        mount(VOL_USR_SRC, "/usr/src", true),
        mount(VOL_LIB_MODULES, "/lib/modules", true),
        mount(VOL_WORK, WORK_PATH, false),
    ];
    if let Some(dir) = socket_dir(&config.socket_path) {
        mounts.push(VolumeMount {
            sub_path: Some("run".to_owned()),
            ..mount(VOL_WORK, dir, false)
        });
    }
    // `tracecar-agent health`: exec probes, no TCP port.
    let probe = |period: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(
                ["tracecar-agent", "health", "--socket", &config.socket_path]
                    .map(str::to_owned)
                    .to_vec(),
            ),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    };
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
        ports: pprof_port.map(|port| {
            vec![ContainerPort {
                name: Some(crate::annotations::PPROF_PORT_NAME.to_owned()),
                container_port: i32::from(port),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]
        }),
        resources: Some(ResourceRequirements {
            requests: quantities(&config.resources.requests),
            limits: quantities(&config.resources.limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(security_context),
        volume_mounts: Some(mounts),
        // Up to a minute to come up (the first start also starts
        // lttng-sessiond), then checked every 10 s.
        startup_probe: Some(probe(1, 60)),
        readiness_probe: Some(probe(10, 3)),
        restart_policy: (mode == SidecarMode::Native).then(|| "Always".to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_dir_gets_a_sub_path_unless_it_is_in_the_work_dir() {
        assert_eq!(
            socket_dir("/run/tracecar/agent.sock"),
            Some("/run/tracecar")
        );
        assert_eq!(socket_dir("/var/lib/tracecar/agent.sock"), None);
        assert_eq!(socket_dir("/var/lib/tracecar/run/a.sock"), None);
        assert_eq!(
            socket_dir("/var/lib/tracecar2/a.sock"),
            Some("/var/lib/tracecar2")
        );
    }
}
