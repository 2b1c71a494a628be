//! Running `kubectl tracecar attach`: look at the pod, add the agent as an
//! ephemeral container (or the podman stand-in), wait until it runs and
//! answers. The specs and what the pod's state means are in
//! [`crate::attach`]; this drives kubectl or podman with them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tracecar_api::security::Profile;

use crate::attach::{self, Attach, Present, Progress};
use crate::cli::Cli;
use crate::error::PluginError;
use crate::exec::{Caller, output_of};
use crate::output::{Bar, Sink};
use crate::target::{KubeFlags, Runtime};

/// What the user asked for.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// `--target-container`.
    pub target_container: Option<&'a str>,
    /// `--profile`.
    pub profile: Profile,
    /// `--features`.
    pub features: tracecar_api::security::Features,
    /// `--image`.
    pub image: &'a str,
    /// How long to wait for the agent.
    pub timeout: Duration,
    /// Print the spec only.
    pub print: bool,
}

fn read_pod(flags: &KubeFlags, pod: &str) -> Result<Pod, PluginError> {
    let json = output_of(&attach::get_pod(flags, pod))?;
    serde_json::from_str(&json).map_err(|e| PluginError::NotAttached {
        message: format!("cannot read pod {pod}: {e}"),
        hint: format!("kubectl get pod {pod} -o json should print the pod"),
    })
}

/// Adds the agent to `pod` and waits until it answers; reuses an agent the
/// pod already has.
pub fn attach(
    cli: &Cli,
    flags: &KubeFlags,
    pod: &str,
    options: &Options<'_>,
) -> Result<(), PluginError> {
    match cli.runtime {
        Runtime::Kubectl => attach_kubectl(cli, flags, pod, options),
        Runtime::Podman => attach_podman(cli, flags, pod, options),
    }
}

fn attach_kubectl(
    cli: &Cli,
    flags: &KubeFlags,
    pod: &str,
    options: &Options<'_>,
) -> Result<(), PluginError> {
    let current = read_pod(flags, pod)?;
    match attach::present(&current) {
        Some(Present::Sidecar) if !options.print => {
            println!("pod {pod} has the tracecar sidecar: nothing to attach");
            return Ok(());
        }
        Some(Present::Attached(name)) if !options.print => {
            wait_healthy(cli, flags, pod, &name, options.timeout)?;
            println!("pod {pod}: the agent is attached already (ephemeral container {name})");
            return Ok(());
        }
        _ => {}
    }
    let spec = Attach {
        name: attach::free_name(&current),
        image: options.image.to_owned(),
        target: attach::target_container(pod, &current, options.target_container)?,
        profile: options.profile,
        features: options.features,
        socket: cli.socket.clone(),
    };
    let container = attach::ephemeral_container(&spec);
    if options.print {
        println!(
            "{}",
            serde_json::to_string_pretty(&container).unwrap_or_default()
        );
        return Ok(());
    }
    output_of(&attach::patch(flags, pod, &attach::patch_body(&container))).map_err(
        |e| match e {
            PluginError::Exec { stderr, .. } => {
                let hint = attach::refusal_hint(&stderr);
                PluginError::Exec { stderr, hint }
            }
            other => other,
        },
    )?;
    eprintln!(
        "added ephemeral container {} ({} profile) to pod {pod}, joined to container {}; waiting for it",
        spec.name,
        spec.profile.as_str(),
        spec.target
    );
    let deadline = Instant::now() + options.timeout;
    let mut said = None;
    loop {
        match attach::progress(&read_pod(flags, pod)?, &spec.name) {
            Progress::Running => break,
            Progress::Failed(why) => {
                return Err(PluginError::NotAttached {
                    message: format!("the agent in pod {pod} will not run: {why}"),
                    hint: format!(
                        "kubectl describe pod {pod}; kubectl logs {pod} -c {}",
                        spec.name
                    ),
                });
            }
            Progress::Waiting(reason) => {
                if reason.is_some() && reason != said {
                    eprintln!("waiting: {}", reason.as_deref().unwrap_or_default());
                    said = reason;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(PluginError::NotAttached {
                message: format!(
                    "the agent in pod {pod} is not running after {:?}",
                    options.timeout
                ),
                hint: format!("kubectl describe pod {pod}"),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_healthy(
        cli,
        flags,
        pod,
        &spec.name,
        deadline.saturating_duration_since(Instant::now()),
    )?;
    println!(
        "pod {pod}: agent attached (ephemeral container {}); every command now works on it, e.g. kubectl tracecar status {pod}",
        spec.name
    );
    Ok(())
}

fn attach_podman(
    cli: &Cli,
    flags: &KubeFlags,
    pod: &str,
    options: &Options<'_>,
) -> Result<(), PluginError> {
    let exists = |container: &str| {
        output_of(&crate::target::podman_container_exists(pod, container)).is_ok()
    };
    if exists(attach::SIDECAR) && !options.print {
        println!("pod {pod} has the tracecar sidecar: nothing to attach");
        return Ok(());
    }
    let running = output_of(&[
        "podman".to_owned(),
        "ps".to_owned(),
        "--filter".to_owned(),
        format!("name=^{pod}-{}$", attach::NAME),
        "--format".to_owned(),
        "{{.Names}}".to_owned(),
    ])
    .unwrap_or_default();
    if !running.trim().is_empty() && !options.print {
        wait_healthy(cli, flags, pod, attach::NAME, options.timeout)?;
        println!(
            "pod {pod}: the agent is attached already (container {})",
            running.trim()
        );
        return Ok(());
    }
    let target = match options.target_container {
        Some(t) if exists(t) => t.to_owned(),
        Some(t) => {
            return Err(attach::AttachError::NoSuchContainer {
                pod: pod.to_owned(),
                wanted: t.to_owned(),
                containers: podman_app_containers(pod),
            }
            .into());
        }
        None => podman_app_containers(pod)
            .into_iter()
            .next()
            .ok_or_else(|| attach::AttachError::Empty(pod.to_owned()))?,
    };
    let spec = Attach {
        name: attach::NAME.to_owned(),
        image: options.image.to_owned(),
        target,
        profile: options.profile,
        features: options.features,
        socket: cli.socket.clone(),
    };
    let argv = attach::podman_run(pod, &spec);
    if options.print {
        println!("{}", argv.join(" "));
        return Ok(());
    }
    output_of(&argv)?;
    eprintln!(
        "started {pod}-{} ({} profile), joined to container {pod}-{}; waiting for it",
        spec.name,
        spec.profile.as_str(),
        spec.target
    );
    wait_healthy(cli, flags, pod, &spec.name, options.timeout)?;
    println!(
        "pod {pod}: agent attached ({pod}-{}); every command now works on it",
        spec.name
    );
    Ok(())
}

/// The app containers of a pod `podman kube play` ran, by their names in
/// the pod (`POD-NAME` without the prefix); not its infra container, nor
/// an attached agent.
fn podman_app_containers(pod: &str) -> Vec<String> {
    let names = output_of(&[
        "podman".to_owned(),
        "ps".to_owned(),
        "--filter".to_owned(),
        format!("pod={pod}"),
        "--format".to_owned(),
        "{{.Names}} {{.IsInfra}}".to_owned(),
    ])
    .unwrap_or_default();
    names
        .lines()
        .filter_map(|l| {
            let (name, infra) = l.split_once(' ')?;
            (infra.trim() == "false").then_some(name)
        })
        .filter_map(|name| name.strip_prefix(&format!("{pod}-")).map(str::to_owned))
        .filter(|name| name != attach::SIDECAR && !name.starts_with(attach::NAME))
        .collect()
}

/// Waits until the agent in `container` answers `/healthz`.
fn wait_healthy(
    cli: &Cli,
    flags: &KubeFlags,
    pod: &str,
    container: &str,
    timeout: Duration,
) -> Result<(), PluginError> {
    let caller = Caller {
        cli,
        flags: flags.clone(),
        pod: pod.to_owned(),
        container: container.to_owned(),
        line: None,
    };
    let deadline = Instant::now() + timeout.max(Duration::from_secs(5));
    loop {
        let mut body = Vec::new();
        match caller.get("/healthz", Sink::Memory(&mut body), Bar::None) {
            Ok(()) if body.starts_with(b"ok") => return Ok(()),
            Ok(()) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(()) => {
                return Err(PluginError::NotAttached {
                    message: format!("the agent in pod {pod} answered {body:?} to /healthz"),
                    hint: format!("kubectl logs {pod} -c {container}"),
                });
            }
            Err(e) => {
                return Err(PluginError::NotAttached {
                    message: format!("the agent in pod {pod} does not answer: {e}"),
                    hint: format!("kubectl logs {pod} -c {container}"),
                });
            }
        }
    }
}
