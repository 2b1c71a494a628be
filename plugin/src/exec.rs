//! Reaching the agent: kubectl or podman exec, running curl in the
//! sidecar, with the errors they give turned into hints.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command as Process, Stdio};

use crate::cli::Cli;
use crate::error::PluginError;
use crate::output::{Bar, Progress, Sink, save, write_error};
use crate::target::{self, KubeFlags, Runtime, Target};

/// The program and its arguments; the builders in [`target`] never make
/// an empty argv.
fn split(argv: &[String]) -> (&str, &[String]) {
    argv.split_first()
        .map_or(("", &[][..]), |(program, args)| (program.as_str(), args))
}

/// Runs `argv` and returns its stdout; a failure carries its stderr.
pub(crate) fn output_of(argv: &[String]) -> Result<String, PluginError> {
    let (program, args) = split(argv);
    let out = Process::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PluginError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PluginError::Exec {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            hint: None,
        })
    }
}

/// The pod a target names.
pub(crate) fn resolve(
    runtime: Runtime,
    flags: &KubeFlags,
    target: &Target,
) -> Result<String, PluginError> {
    match (target, runtime) {
        (Target::Pod(pod), _) => Ok(pod.clone()),
        (Target::Workload(_, name), Runtime::Podman) => Ok(target::podman_workload_pod(name)),
        (Target::Workload(kind, name), Runtime::Kubectl) => {
            let selector = output_of(&target::workload_selector(flags, *kind, name))?;
            let pods = output_of(&target::running_pods(flags, &selector))?;
            pods.lines()
                .next()
                .map(str::to_owned)
                .ok_or_else(|| PluginError::NoRunningPod {
                    workload: format!("{}/{name}", kind.resource()),
                    selector: selector.trim_end_matches(',').to_owned(),
                })
        }
    }
}

pub(crate) struct Caller<'a> {
    pub(crate) cli: &'a Cli,
    pub(crate) flags: KubeFlags,
    pub(crate) pod: String,
    /// The container the agent runs in: the sidecar, or an attached one.
    pub(crate) container: String,
    /// The pod's progress line when it is one of several (`--all`).
    pub(crate) line: Option<crate::output::Line>,
}

/// The container the agent of `pod` answers in: `wanted` (the sidecar's
/// name) when the pod has it, else the newest running agent that
/// `attach` added; `wanted` when neither is known (the exec then says
/// what is missing).
pub(crate) fn agent_container(
    runtime: Runtime,
    flags: &KubeFlags,
    pod: &str,
    wanted: &str,
) -> String {
    match runtime {
        Runtime::Kubectl => {
            let Ok(json) = output_of(&crate::attach::get_pod(flags, pod)) else {
                return wanted.to_owned();
            };
            let Ok(found) = serde_json::from_str::<k8s_openapi::api::core::v1::Pod>(&json) else {
                return wanted.to_owned();
            };
            let has = found.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .any(|c| c.name == wanted)
            });
            match (has, crate::attach::running_attached(&found)) {
                (false, Some(attached)) => attached,
                _ => wanted.to_owned(),
            }
        }
        Runtime::Podman => {
            let exists = |container: &str| {
                output_of(&target::podman_container_exists(pod, container)).is_ok()
            };
            if !exists(wanted) && exists(crate::attach::NAME) {
                crate::attach::NAME.to_owned()
            } else {
                wanted.to_owned()
            }
        }
    }
}

impl Caller<'_> {
    /// The whole answer to `path`.
    pub(crate) fn body(&self, path: &str) -> Result<Vec<u8>, PluginError> {
        let mut body = Vec::new();
        self.get(path, Sink::Memory(&mut body), Bar::None)?;
        Ok(body)
    }

    /// GETs `path` from the agent into `sink`, with the progress `bar`
    /// asks for (time left of a capture, or bytes received).
    pub(crate) fn get(&self, path: &str, sink: Sink<'_>, bar: Bar) -> Result<(), PluginError> {
        self.call(&target::curl(&self.cli.socket, path), sink, bar)
    }

    /// Sends `method` to `path` with `body` (`POST /v1/rules`, `DELETE
    /// /v1/rules/NAME`); the whole answer.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Vec<u8>, PluginError> {
        let mut answer = Vec::new();
        self.call(
            &target::curl_send(&self.cli.socket, method, path, body),
            Sink::Memory(&mut answer),
            Bar::None,
        )?;
        Ok(answer)
    }

    /// Runs `curl` in the agent's container, its answer into `sink`.
    fn call(&self, curl: &[String], sink: Sink<'_>, bar: Bar) -> Result<(), PluginError> {
        let argv = target::exec(
            self.cli.runtime,
            &self.flags,
            &self.pod,
            &self.container,
            curl,
        );
        let (program, args) = split(&argv);
        let mut child = Process::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PluginError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        let progress = Progress::start(bar, self.line.as_ref());
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        // stderr is read on its own thread so that a chatty exec cannot
        // block the body.
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_string(&mut text);
            }
            text
        });
        let mut error_body = Vec::new();
        // A body read into memory is the agent's error when curl says so.
        let (written, memory) = read_body(stdout, sink, &progress, &mut error_body);
        if let Some(progress) = progress {
            progress.finish();
        }
        let status = child.wait().map_err(|source| PluginError::Spawn {
            program: program.to_owned(),
            source,
        })?;
        let stderr = stderr_reader.join().unwrap_or_default();
        match status.code() {
            Some(0) => written,
            Some(target::CURL_HTTP_ERROR) => Err(PluginError::from_agent(match memory {
                Some(body) => body,
                None => &error_body,
            })),
            _ => Err(PluginError::Exec {
                stderr: stderr.trim().to_owned(),
                hint: self.explain(stderr.trim()),
            }),
        }
    }

    /// What usually causes a kubectl/podman error.
    fn explain(&self, stderr: &str) -> Option<String> {
        let container = &self.container;
        if stderr.contains("container not found")
            || stderr.contains("no container with name")
            || stderr.contains(&format!("container {container} is not valid"))
        {
            Some(format!(
                "pod {pod} has no {container} sidecar: annotate its template with tracecar.dev/inject: \"true\" and roll it out, or add the agent now with `kubectl tracecar attach {pod}`",
                pod = self.pod
            ))
        } else if stderr.contains("Couldn't connect") || stderr.contains("(7)") {
            Some("the agent is not listening yet: check `kubectl logs POD -c tracecar`".to_owned())
        } else if stderr.contains("not found") || stderr.contains("no pod with name") {
            Some(format!(
                "no pod {}: list them with kubectl get pods",
                self.pod
            ))
        } else {
            None
        }
    }
}

/// Reads the agent's answer from curl's stdout into `sink`. An error line
/// in a stream or a file goes to `error_body`; a body kept in memory is
/// handed back, as it is the agent's error when curl says so.
fn read_body<'a>(
    stdout: Option<std::process::ChildStdout>,
    sink: Sink<'a>,
    progress: &Option<Progress>,
    error_body: &mut Vec<u8>,
) -> (Result<(), PluginError>, Option<&'a mut Vec<u8>>) {
    match (stdout, sink) {
        (None, _) => (Ok(()), None),
        (Some(mut out), Sink::Memory(buffer)) => {
            let read = out
                .read_to_end(buffer)
                .map(drop)
                .map_err(|e| write_error("stdout", e));
            (read, Some(buffer))
        }
        (Some(out), Sink::File(file)) => (save(out, file, progress, error_body), None),
        (Some(out), Sink::Lines(render)) => {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(line) if line.starts_with(r#"{"error""#) => *error_body = line.into_bytes(),
                    Ok(line) => println!("{}", crate::output::terminal_safe(&render(&line))),
                    Err(e) => return (Err(write_error("stdout", e)), None),
                }
            }
            (Ok(()), None)
        }
    }
}
