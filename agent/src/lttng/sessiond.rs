//! Supervision of the LTTng session daemon.
//!
//! The daemon serves the standard root run directory `/var/run/lttng`,
//! which the webhook shares with the application containers: apps linked
//! with liblttng-ust register through it. If a daemon already answers
//! there, the agent uses it and watches it; otherwise (or once it is gone)
//! the agent runs `lttng-sessiond --no-kernel` as its child, restarts it
//! when it exits, and makes it die with the agent.
//!
//! The daemon's stderr is kept: each line goes to the agent's log, and the
//! last lines go into `last_error` when it fails, together with what
//! [`super::rundir`] found wrong with its directories. Nothing is guessed:
//! LTTng's own "A session daemon is already running" often means only
//! that it could not create its lock file.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use tracecar_api::capabilities::{DaemonStatus, Owner};

use super::stderr::{Stderr, keep_stderr};
use super::{command, mi, rundir};
use crate::procfs::Procfs;

/// The supervisor's shared state.
#[derive(Debug, Clone)]
pub struct Sessiond {
    status: Arc<Mutex<DaemonStatus>>,
}

/// How often the daemon is checked.
const POLL: Duration = Duration::from_millis(250);
/// How often an external daemon is asked whether it still answers.
const EXTERNAL_POLL: Duration = Duration::from_secs(2);
/// How long a fresh daemon may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between restarts of a daemon that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the probe of the daemon may take (a socket in the shared run
/// directory that never answers must not hang the supervisor).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a session daemon answers on the run directory.
pub fn answers() -> bool {
    crate::child::run_within(
        Command::new("lttng").args(command::list_sessions()),
        PROBE_TIMEOUT,
        super::cli::CLIENT_SOCKET,
    )
    .ok()
    .filter(|o| o.status.success())
    .and_then(|o| mi::succeeded(&String::from_utf8_lossy(&o.stdout)).ok())
    .unwrap_or(false)
}

impl Sessiond {
    /// Starts supervising on a thread of its own; `on_ready` runs each time
    /// a daemon starts answering (the start-up cleanup).
    pub fn start(procfs: Procfs, on_ready: impl Fn() + Send + 'static) -> Self {
        let status = Arc::new(Mutex::new(DaemonStatus {
            running: false,
            owner: Owner::None,
            pid: None,
            starts: 0,
            last_error: None,
        }));
        let supervisor = Self { status };
        let worker = supervisor.clone();
        let spawned = std::thread::Builder::new()
            .name("lttng-sessiond".to_owned())
            .spawn(move || worker.supervise(&procfs, &on_ready));
        if let Err(e) = spawned {
            supervisor.update(|s| s.last_error = Some(format!("cannot start the supervisor: {e}")));
        }
        supervisor
    }

    /// The current status.
    pub fn status(&self) -> DaemonStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for a daemon that answers.
    pub fn wait_running(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.status().running {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn update(&self, f: impl FnOnce(&mut DaemonStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn supervise(&self, procfs: &Procfs, on_ready: &dyn Fn()) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if answers() {
                tracing::info!("using the LTTng session daemon already serving /var/run/lttng");
                self.update(|s| {
                    s.running = true;
                    s.owner = Owner::External;
                    s.pid = None;
                });
                on_ready();
                while answers() {
                    std::thread::sleep(EXTERNAL_POLL);
                }
                tracing::warn!("the external LTTng session daemon stopped answering");
                self.update(|s| s.running = false);
                continue;
            }
            match self.run_child(on_ready) {
                Ok(ran_for) if ran_for > MAX_BACKOFF => backoff = Duration::from_millis(500),
                Ok(_) => backoff = (backoff * 2).min(MAX_BACKOFF),
                Err(e) => {
                    let e = with_directory_facts(&e, procfs);
                    tracing::error!(error = %e, "cannot start lttng-sessiond");
                    self.update(|s| s.last_error = Some(e));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            std::thread::sleep(backoff);
        }
    }

    /// Runs one daemon until it exits; returns how long it ran.
    fn run_child(&self, on_ready: &dyn Fn()) -> Result<Duration, StartError> {
        let mut command = Command::new("lttng-sessiond");
        command
            .args(command::sessiond())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own process group, so that what it forks can be killed with
        // it if it dies without cleaning up.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        crate::sys::terminate_with_parent(&mut command);
        let started = Instant::now();
        let mut child = command.spawn().map_err(StartError::Spawn)?;
        let pid = child.id();
        // What the daemon said last, once it and its helpers are gone.
        let stderr = child
            .stderr
            .take()
            .map(|e| keep_stderr("lttng-sessiond", pid, e));
        let said = || stderr.as_ref().map(Stderr::said).unwrap_or_default();
        self.update(|s| {
            s.starts += 1;
            s.owner = Owner::Tracecar;
            s.pid = Some(pid);
        });
        if let Err(why) = wait_answering(&mut child) {
            crate::sys::kill_process_group(pid);
            let _ = child.wait();
            self.update(|s| s.pid = None);
            return Err(StartError::NotAnswering {
                pid,
                why,
                said: said(),
            });
        }
        tracing::info!(pid, "lttng-sessiond started");
        self.update(|s| s.running = true);
        on_ready();
        let exit = loop {
            match child.try_wait() {
                Ok(Some(exit)) => break exit.to_string(),
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => break e.to_string(),
            }
        };
        crate::sys::kill_process_group(pid);
        let error = format!("lttng-sessiond (pid {pid}) exited: {exit}{}", said());
        tracing::warn!(pid, %error, "lttng-sessiond exited; restarting it");
        self.update(|s| {
            s.running = false;
            s.pid = None;
            s.last_error = Some(error);
        });
        Ok(started.elapsed())
    }
}

/// Adds to a start failure what is wrong with the daemon's directories, if
/// anything: facts from [`rundir`], not a guess.
fn with_directory_facts(error: &StartError, procfs: &Procfs) -> String {
    let error = error.to_string();
    let status = procfs.status(std::process::id()).unwrap_or_default();
    let facts: Vec<String> = rundir::checks(&rundir::Creds::of(&status))
        .into_iter()
        .filter(|c| !c.check.ok)
        .map(|c| c.check.detail)
        .collect();
    if facts.is_empty() {
        error
    } else {
        format!("{error}; {}", facts.join("; "))
    }
}

/// Why a daemon the agent started is not serving.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// It could not be started.
    #[error("lttng-sessiond: {0} (is lttng-tools installed?)")]
    Spawn(#[source] std::io::Error),
    /// It started, then exited or stayed silent; `said` is its last stderr.
    #[error("lttng-sessiond (pid {pid}) {why}{said}")]
    NotAnswering {
        /// Its PID.
        pid: u32,
        /// What it did instead.
        why: NoAnswer,
        /// What it said last.
        said: String,
    },
}

/// What a fresh daemon did instead of answering.
#[derive(Debug, thiserror::Error)]
enum NoAnswer {
    /// It exited.
    #[error("exited at start ({0})")]
    Exited(std::process::ExitStatus),
    /// It ran, silent, until the deadline.
    #[error("did not answer within {START_TIMEOUT:?}")]
    Silent,
}

/// Waits until the fresh daemon answers; otherwise says why not.
fn wait_answering(child: &mut Child) -> Result<(), NoAnswer> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(NoAnswer::Exited(exit));
        }
        if answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(NoAnswer::Silent)
}
