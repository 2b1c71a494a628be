//! Fleet captures (`--all`): the ready pods of a workload or a selector,
//! reached concurrently, each with its own progress line. What each pod
//! answers is handed to [`crate::fleet`] to merge; a pod that fails is
//! said at once, with why, and the others go on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracecar_api::{flame, pprof};

use crate::cli::Cli;
use crate::error::PluginError;
use crate::exec::{self, Caller, output_of};
use crate::fleet::{self, FleetPod};
use crate::output::{Bar, Line, Sink, write_whole};
use crate::request::OutputFormat;
use crate::target::{self, KubeFlags, Runtime, Target};

/// At most this many pods are reached at once (each is a `kubectl exec`:
/// a process and a connection to the API server); the others wait for a
/// free slot.
pub const CONCURRENT: usize = 16;

/// The pods `--all` covers: the ready pods of the target's workload, or
/// those `-l SELECTOR` matches; a pod named on its own is the only one.
/// Under podman, a workload is the one pod `podman kube play` made of it,
/// and the node is this machine.
pub(crate) fn pods(
    cli: &Cli,
    flags: &KubeFlags,
    target: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<FleetPod>, PluginError> {
    let named = target.map(target::parse).transpose()?;
    let host = || {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "localhost".to_owned(), |h| h.trim().to_owned())
    };
    let (pods, looked_for) = match (cli.runtime, named, selector) {
        (Runtime::Kubectl, Some(Target::Pod(name)), _) => (vec![one(name, "")], String::new()),
        (Runtime::Podman, Some(Target::Pod(name)), _) => (vec![one(name, &host())], String::new()),
        (Runtime::Podman, Some(Target::Workload(_, name)), _) => (
            vec![one(target::podman_workload_pod(&name), &host())],
            String::new(),
        ),
        (Runtime::Kubectl, Some(Target::Workload(kind, name)), _) => {
            let selector = output_of(&target::workload_selector(flags, kind, &name))?;
            if selector.trim().is_empty() {
                return Err(PluginError::NoReadyPod {
                    selector: format!("{}/{name}", kind.resource()),
                    hint: "its selector has no matchLabels: name its pods with -l".to_owned(),
                });
            }
            let selector = selector.trim_end_matches(',').to_owned();
            (kubectl_pods(flags, &selector)?, selector)
        }
        (Runtime::Kubectl, None, Some(selector)) => {
            (kubectl_pods(flags, selector)?, selector.to_owned())
        }
        (Runtime::Podman, None, Some(selector)) => {
            let argv = target::podman_pods_json(selector).map_err(PluginError::Selector)?;
            let listed = output_of(&argv)?;
            let pods =
                fleet::podman_pods(listed.as_bytes(), &host()).map_err(PluginError::PodList)?;
            (pods, selector.to_owned())
        }
        (_, None, None) => return Err(PluginError::Usage("--all needs a TARGET or -l SELECTOR")),
    };
    if pods.is_empty() {
        return Err(PluginError::NoReadyPod {
            hint: format!("kubectl get pods -l {looked_for}"),
            selector: looked_for,
        });
    }
    Ok(pods)
}

fn one(name: String, node: &str) -> FleetPod {
    FleetPod {
        name,
        node: node.to_owned(),
    }
}

fn kubectl_pods(flags: &KubeFlags, selector: &str) -> Result<Vec<FleetPod>, PluginError> {
    let listed = output_of(&target::pods_json(flags, selector))?;
    fleet::ready_pods(listed.as_bytes()).map_err(PluginError::PodList)
}

/// What each pod answered; the others failed, each said as it happened.
pub(crate) struct Answers<T> {
    /// The pods that answered, in the order of the pod list.
    pub(crate) ok: Vec<(FleetPod, T)>,
    /// How many did not.
    pub(crate) failed: usize,
}

impl<T> Answers<T> {
    /// An error when any pod failed.
    pub(crate) fn outcome(&self) -> Result<(), PluginError> {
        outcome(self.failed, self.failed + self.ok.len())
    }
}

/// An error when `failed` of `of` pods failed: every one (nothing was
/// written), or some (said after the output is written, so that the
/// command still exits 1).
fn outcome(failed: usize, of: usize) -> Result<(), PluginError> {
    match failed {
        0 => Ok(()),
        failed => Err(PluginError::Fleet { failed, of }),
    }
}

/// Runs `work` against each pod's agent, [`CONCURRENT`] at most at once,
/// each with its own progress line.
pub(crate) fn each<T: Send>(
    cli: &Cli,
    flags: &KubeFlags,
    pods: &[FleetPod],
    work: impl Fn(&Caller<'_>) -> Result<T, PluginError> + Sync,
) -> Answers<T> {
    let lines = indicatif::MultiProgress::new();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new(pods.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..pods.len().min(CONCURRENT) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(pod) = pods.get(i) else { break };
                    let line = Line {
                        lines: lines.clone(),
                        prefix: pod.name.clone(),
                    };
                    let caller = Caller {
                        cli,
                        flags: flags.clone(),
                        pod: pod.name.clone(),
                        container: exec::agent_container(
                            cli.runtime,
                            flags,
                            &pod.name,
                            &cli.container,
                        ),
                        line: Some(line.clone()),
                    };
                    match work(&caller) {
                        Ok(answer) => {
                            line.say(&format!("pod {}: done", pod.name));
                            let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(slot) = results.get_mut(i) {
                                *slot = Some(answer);
                            }
                        }
                        Err(e) => line.say(&format!("pod {}: failed: {e}", pod.name)),
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut answers = Answers {
        ok: Vec::new(),
        failed: 0,
    };
    for (pod, result) in pods.iter().zip(results) {
        match result {
            Some(answer) => answers.ok.push((pod.clone(), answer)),
            None => answers.failed += 1,
        }
    }
    answers
}

/// A merged flamegraph: what it shows, and where it goes.
pub(crate) struct Flame<'a> {
    /// The title's subject (`cpu profile`, `callers of malloc`).
    pub(crate) what: String,
    /// What the weights count, as the agent names it.
    pub(crate) count_name: String,
    /// The file; its name picks the format.
    pub(crate) output: &'a str,
    /// The pod as the first level of the stacks (SVG and folded).
    pub(crate) pod_level: bool,
    /// Each pod's progress.
    pub(crate) bar: Bar,
}

/// A pod's pprof is read up to this much unpacked (a merge holds them all).
const PPROF_BYTES: u64 = 1 << 30;

/// The formats `--all` merges.
const MERGED: &str = ".svg, .folded, .pprof or .pb.gz (--all merges these)";

/// Asks every pod for its stacks (`path` builds a pod's request for a
/// format) and writes them merged into `flame.output`: folded stacks
/// added up (SVG, folded), or pprof with `pod` and `node` labels.
pub(crate) fn flame(
    cli: &Cli,
    flags: &KubeFlags,
    pods: &[FleetPod],
    flame: &Flame<'_>,
    path: impl Fn(&Caller<'_>, OutputFormat) -> Result<String, PluginError> + Sync,
) -> Result<(), PluginError> {
    let format = crate::request::profile_format(flame.output).map(|f| f.agent);
    let fetch = |caller: &Caller<'_>, agent: &'static str| -> Result<Vec<u8>, PluginError> {
        let mut body = Vec::new();
        let path = path(caller, OutputFormat { agent })?;
        caller.get(&path, Sink::Memory(&mut body), flame.bar)?;
        Ok(body)
    };
    let (bytes, failed) = match format {
        Some(agent @ ("svg" | "folded")) => {
            let answers = each(cli, flags, pods, |caller| {
                let body = fetch(caller, "folded")?;
                String::from_utf8(body).map_err(|e| PluginError::Merge(e.to_string()))
            });
            if answers.ok.is_empty() {
                return answers.outcome();
            }
            let merged = fleet::merge_folded(&answers.ok, flame.pod_level);
            let bytes = if agent == "svg" {
                flame::svg(&titles(flame, &answers), &merged)
                    .map_err(|e| PluginError::Merge(e.to_string()))?
            } else {
                merged.into_bytes()
            };
            (bytes, answers.failed)
        }
        Some("pprof") => {
            let answers = each(cli, flags, pods, |caller| {
                let body = fetch(caller, "pprof")?;
                pprof::gunzip(&body, PPROF_BYTES)
                    .map_err(|e| PluginError::Merge(format!("pprof: {e}")))
            });
            if answers.ok.is_empty() {
                return answers.outcome();
            }
            let merged = fleet::merge_pprof(&answers.ok).map_err(PluginError::Merge)?;
            let bytes = pprof::gzip(&merged).map_err(|e| PluginError::Merge(e.to_string()))?;
            (bytes, answers.failed)
        }
        _ => {
            return Err(PluginError::Output {
                file: flame.output.to_owned(),
                hint: MERGED,
            });
        }
    };
    write_whole(flame.output, &bytes)?;
    eprintln!(
        "wrote {} ({} of {} pods)",
        flame.output,
        pods.len() - failed,
        pods.len()
    );
    outcome(failed, pods.len())
}

fn titles<T>(flame: &Flame<'_>, answers: &Answers<T>) -> flame::Titles {
    let names: Vec<&str> = answers.ok.iter().map(|(p, _)| p.name.as_str()).collect();
    let failed = match answers.failed {
        0 => String::new(),
        n => format!(" ({n} failed)"),
    };
    flame::Titles {
        title: format!("tracecar: {} of {} pods", flame.what, names.len()),
        subtitle: format!("{}{failed}, merged by kubectl tracecar", names.join(", ")),
        empty: format!("nothing recorded in {}{failed}", names.join(", ")),
        count_name: flame.count_name.clone(),
    }
}

/// Streams every pod's NDJSON lines as they come, each through `render`
/// with its pod.
pub(crate) fn lines(
    cli: &Cli,
    flags: &KubeFlags,
    pods: &[FleetPod],
    path: impl Fn(&Caller<'_>) -> Result<String, PluginError> + Sync,
    render: impl Fn(&str, &str) -> String + Sync,
) -> Result<(), PluginError> {
    each(cli, flags, pods, |caller| {
        let pod = caller.pod.as_str();
        let line = |text: &str| render(pod, text);
        caller.get(&path(caller)?, Sink::Lines(&line), Bar::None)
    })
    .outcome()
}

/// Every pod's Prometheus scrape, printed as one exposition with a `pod`
/// label.
pub(crate) fn prometheus(
    cli: &Cli,
    flags: &KubeFlags,
    pods: &[FleetPod],
    path: impl Fn(&Caller<'_>) -> Result<String, PluginError> + Sync,
) -> Result<(), PluginError> {
    let answers = each(cli, flags, pods, |caller| {
        let body = caller.body(&path(caller)?)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    });
    print!(
        "{}",
        crate::output::terminal_safe(&fleet::merge_prometheus(&answers.ok))
    );
    answers.outcome()
}
