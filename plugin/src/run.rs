//! Running a command: resolve the pod, exec curl in the sidecar, stream
//! or save what the agent answers.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::{Cli, Command};
use crate::request::{self, OutputFormat};
use crate::target::{self, KubeFlags, Runtime, Target};

/// Why a command failed; messages read like the agent's hints.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The target is malformed.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// kubectl/podman could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// kubectl/podman failed before reaching the agent.
    #[error("{0}")]
    Exec(String),
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(String),
    /// The output file name asks for no known format.
    #[error("{file}: unknown output format\n  hint: {hint}")]
    Output {
        /// The file.
        file: String,
        /// The extensions that work.
        hint: &'static str,
    },
    /// Writing the output failed.
    #[error("cannot write {file}: {source}")]
    Write {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Where the agent's answer goes.
enum Sink<'a> {
    /// Kept in memory.
    Memory(&'a mut Vec<u8>),
    /// Written to a file (through a temporary name, renamed at the end).
    File(&'a str),
    /// Printed line by line as it arrives.
    Lines(&'a dyn Fn(&str) -> String),
}

/// Runs `cli`.
pub fn run(cli: &Cli) -> Result<(), PluginError> {
    let flags = KubeFlags {
        namespace: cli.namespace.clone(),
        context: cli.context.clone(),
    };
    let call = |raw_target: &str| -> Result<Caller<'_>, PluginError> {
        let pod = resolve(cli.runtime, &flags, &target::parse(raw_target)?)?;
        Ok(Caller {
            cli,
            flags: flags.clone(),
            pod,
        })
    };
    match &cli.command {
        Command::Ps { target } => {
            print_rendered(
                &call(target)?.body("/v1/processes")?,
                request::process_table,
            );
        }
        Command::Status { target } => {
            let caller = call(target)?;
            let body = caller.body("/v1/capabilities")?;
            println!("pod {}: agent reachable", caller.pod);
            print_rendered(&body, request::status_lines);
        }
        Command::Profile {
            target,
            seconds,
            hz,
            pid,
            unwind,
            output,
        } => {
            let format = format_of(
                output,
                request::profile_format(output),
                ".svg, .pprof, .pb.gz, .folded, .speedscope.json or .json",
            )?;
            let path = request::path(
                "/v1/profile",
                &[
                    ("seconds", Some(seconds.to_string())),
                    ("hz", hz.map(|h| h.to_string())),
                    ("pid", pid.clone()),
                    ("unwind", unwind.clone()),
                    ("format", Some(format.agent.to_owned())),
                ],
            );
            call(target)?.get(&path, Sink::File(output), Some(*seconds))?;
            eprintln!("wrote {output}");
        }
        Command::Trace {
            target,
            symbol,
            module,
            args,
            ret,
            pid,
            seconds,
            limit,
            json,
        } => {
            let caller = call(target)?;
            let pid = match pid {
                Some(pid) => pid.clone(),
                None => request::only_app_pid(&caller.body("/v1/processes")?)
                    .map_err(PluginError::Agent)?
                    .to_string(),
            };
            let path = request::path(
                "/v1/uprobe",
                &[
                    ("symbol", Some(symbol.clone())),
                    ("module", module.clone()),
                    ("args", args.clone()),
                    ("ret", ret.clone()),
                    ("pid", Some(pid)),
                    ("seconds", Some(seconds.to_string())),
                    ("limit", limit.map(|l| l.to_string())),
                ],
            );
            let pretty = |line: &str| request::trace_line(symbol, line);
            let render: &dyn Fn(&str) -> String = if *json { &as_is } else { &pretty };
            caller.get(&path, Sink::Lines(render), None)?;
        }
        Command::Lttng {
            target,
            events,
            pid,
            filter,
            loglevel,
            seconds,
            output,
            list,
            live,
        } => {
            let caller = call(target)?;
            if *list {
                let path = request::path("/v1/lttng/events", &[("pid", pid.clone())]);
                print_rendered(&caller.body(&path)?, request::tracepoint_lines);
                return Ok(());
            }
            let mut params = vec![
                ("events", events.clone()),
                ("pid", pid.clone()),
                ("filter", filter.clone()),
                ("loglevel", loglevel.clone()),
                ("seconds", Some(seconds.to_string())),
            ];
            if *live {
                let path = request::path("/v1/lttng/live", &params);
                return caller.get(&path, Sink::Lines(&as_is), None);
            }
            let format = format_of(
                output,
                request::lttng_format(output),
                ".tar.gz (CTF), .json/.ndjson or .txt",
            )?;
            params.push(("format", Some(format.agent.to_owned())));
            let path = request::path("/v1/lttng/record", &params);
            caller.get(&path, Sink::File(output), Some(*seconds))?;
            eprintln!("wrote {output}");
        }
    }
    Ok(())
}

/// The agent's JSON as `render` lays it out, or as it came if it cannot.
fn print_rendered(body: &[u8], render: fn(&[u8]) -> Option<String>) {
    print!(
        "{}",
        render(body).unwrap_or_else(|| String::from_utf8_lossy(body).into())
    );
}

/// NDJSON lines printed as they come.
fn as_is(line: &str) -> String {
    line.to_owned()
}

fn format_of(
    file: &str,
    format: Option<OutputFormat>,
    hint: &'static str,
) -> Result<OutputFormat, PluginError> {
    format.ok_or_else(|| PluginError::Output {
        file: file.to_owned(),
        hint,
    })
}

/// Runs `argv` and returns its stdout; a failure carries its stderr.
fn output_of(argv: &[String]) -> Result<String, PluginError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| PluginError::Exec("empty command".into()))?;
    let out = Process::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PluginError::Spawn {
            program: program.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PluginError::Exec(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// The pod a target names.
fn resolve(runtime: Runtime, flags: &KubeFlags, target: &Target) -> Result<String, PluginError> {
    match (target, runtime) {
        (Target::Pod(pod), _) => Ok(pod.clone()),
        (Target::Deployment(name), Runtime::Podman) => Ok(target::podman_deployment_pod(name)),
        (Target::Deployment(name), Runtime::Kubectl) => {
            let selector = output_of(&target::deployment_selector(flags, name))?;
            let pods = output_of(&target::running_pods(flags, &selector))?;
            pods.lines().next().map(str::to_owned).ok_or_else(|| {
                PluginError::Exec(format!(
                    "deploy/{name} has no running pod\n  hint: kubectl get pods -l {}",
                    selector.trim_end_matches(',')
                ))
            })
        }
    }
}

struct Caller<'a> {
    cli: &'a Cli,
    flags: KubeFlags,
    pod: String,
}

impl Caller<'_> {
    /// The whole answer to `path`.
    fn body(&self, path: &str) -> Result<Vec<u8>, PluginError> {
        let mut body = Vec::new();
        self.get(path, Sink::Memory(&mut body), None)?;
        Ok(body)
    }

    /// GETs `path` from the agent into `sink`; with `seconds`, shows a
    /// progress bar until the first bytes arrive.
    fn get(&self, path: &str, sink: Sink<'_>, seconds: Option<u32>) -> Result<(), PluginError> {
        let argv = target::exec(
            self.cli.runtime,
            &self.flags,
            &self.pod,
            &self.cli.container,
            &target::curl(&self.cli.socket, path),
        );
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| PluginError::Exec("empty command".into()))?;
        let mut child = Process::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PluginError::Spawn {
                program: program.clone(),
                source,
            })?;
        let progress = seconds.map(Progress::start);
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
        let written = match (stdout, sink) {
            (None, _) => Ok(()),
            (Some(mut out), Sink::Memory(buffer)) => out
                .read_to_end(buffer)
                .map(drop)
                .map_err(|e| write_error("stdout", e)),
            (Some(out), Sink::File(file)) => save(out, file, &progress, &mut error_body),
            (Some(out), Sink::Lines(render)) => {
                let mut result = Ok(());
                for line in BufReader::new(out).lines() {
                    match line {
                        Ok(line) if line.starts_with(r#"{"error""#) => {
                            error_body = line.into_bytes()
                        }
                        Ok(line) => println!("{}", render(&line)),
                        Err(e) => {
                            result = Err(write_error("stdout", e));
                            break;
                        }
                    }
                }
                result
            }
        };
        if let Some(progress) = progress {
            progress.finish();
        }
        let status = child.wait().map_err(|source| PluginError::Spawn {
            program: program.clone(),
            source,
        })?;
        let stderr = stderr_reader.join().unwrap_or_default();
        match status.code() {
            Some(0) => written,
            Some(target::CURL_HTTP_ERROR) => {
                Err(PluginError::Agent(request::error_message(&error_body)))
            }
            _ => Err(PluginError::Exec(self.explain(stderr.trim()))),
        }
    }

    /// kubectl/podman errors with what usually causes them.
    fn explain(&self, stderr: &str) -> String {
        let container = &self.cli.container;
        let hint = if stderr.contains("container not found")
            || stderr.contains("no container with name")
            || stderr.contains(&format!("container {container} is not valid"))
        {
            format!(
                "pod {} has no {container} sidecar: annotate its template with tracecar.dev/inject: \"true\" and roll it out",
                self.pod
            )
        } else if stderr.contains("Couldn't connect") || stderr.contains("(7)") {
            "the agent is not listening yet: check `kubectl logs POD -c tracecar`".to_owned()
        } else if stderr.contains("not found") || stderr.contains("no pod with name") {
            format!("no pod {}: list them with kubectl get pods", self.pod)
        } else {
            String::new()
        };
        if hint.is_empty() {
            stderr.to_owned()
        } else {
            format!("{stderr}\n  hint: {hint}")
        }
    }
}

fn write_error(file: &str, source: std::io::Error) -> PluginError {
    PluginError::Write {
        file: file.to_owned(),
        source,
    }
}

/// Copies the body to `file` via `file.partial`. A short body that is the
/// agent's JSON error (curl's HTTP-error case) goes to `error_body` instead.
fn save(
    mut out: impl std::io::Read,
    file: &str,
    progress: &Option<Progress>,
    error_body: &mut Vec<u8>,
) -> Result<(), PluginError> {
    const DECIDE_AFTER: usize = 4096;
    let partial = PathBuf::from(format!("{file}.partial"));
    let create = |head: &[u8]| -> Result<std::fs::File, PluginError> {
        let mut f = std::fs::File::create(&partial).map_err(|e| write_error(file, e))?;
        f.write_all(head).map_err(|e| write_error(file, e))?;
        Ok(f)
    };
    let mut head = Vec::new();
    let mut handle: Option<std::fs::File> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = out.read(&mut chunk).map_err(|e| write_error(file, e))?;
        if n == 0 {
            break;
        }
        if let Some(progress) = progress {
            progress.receiving();
        }
        match handle.as_mut() {
            Some(f) => f.write_all(&chunk[..n]).map_err(|e| write_error(file, e))?,
            None => {
                head.extend_from_slice(&chunk[..n]);
                if head.len() >= DECIDE_AFTER {
                    handle = Some(create(&head)?);
                }
            }
        }
    }
    if handle.is_none() {
        if head.starts_with(b"{\"error\"") {
            *error_body = head;
            return Ok(());
        }
        handle = Some(create(&head)?);
    }
    drop(handle);
    std::fs::rename(&partial, file).map_err(|e| write_error(file, e))
}

/// A progress bar with time remaining for captures of known length.
struct Progress {
    done: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn start(seconds: u32) -> Self {
        let total = u64::from(seconds) * 10;
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} capturing {bar:30} {msg}")
        {
            bar.set_style(style);
        }
        let done = Arc::new(AtomicBool::new(false));
        let ticker = {
            let bar = bar.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    let elapsed = start.elapsed();
                    bar.set_position((elapsed.as_millis() / 100) as u64);
                    let left = Duration::from_secs(u64::from(seconds)).saturating_sub(elapsed);
                    bar.set_message(if left.is_zero() {
                        "processing…".to_owned()
                    } else {
                        format!("{}s remaining", left.as_secs() + 1)
                    });
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            done,
            ticker: Some(ticker),
            bar,
        }
    }

    fn receiving(&self) {
        self.bar.set_message("receiving…");
    }

    fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        self.bar.finish_and_clear();
    }
}
