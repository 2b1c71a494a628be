//! The LTTng relay daemon for live sessions, started on first use.
//!
//! It listens on three free loopback ports of the pod's network namespace
//! (control, data, live), writes what it relays under the agent's trace
//! directory, dies with the agent, and is restarted on the next live request
//! if it has exited. It is spawned by a thread of its own: the parent-death
//! signal follows the spawning thread, and the runtime's worker threads come
//! and go.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::command;
use super::stderr::keep_stderr;

/// Why the relay daemon is not available.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No free loopback port to listen on.
    #[error("no free loopback port: {0}")]
    NoPort(#[source] std::io::Error),
    /// `lttng-relayd` could not be run.
    #[error("cannot run lttng-relayd: {0} (is lttng-tools installed?)")]
    Spawn(#[source] std::io::Error),
    /// It ran but did not listen in time, or exited; `said` is the end of
    /// its stderr.
    #[error("lttng-relayd did not start listening within {timeout:?}{said}")]
    NotListening {
        /// How long it was given.
        timeout: Duration,
        /// ": <its last stderr lines>", or empty.
        said: String,
    },
    /// The thread that owns the daemon has stopped.
    #[error("the lttng-relayd thread is gone")]
    ThreadGone,
}

/// Where a running relay daemon listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPorts {
    /// Control port (sessiond → relayd).
    pub control: u16,
    /// Data port (consumerd → relayd).
    pub data: u16,
    /// Live port (babeltrace2 → relayd).
    pub live: u16,
}

type Reply = mpsc::Sender<Result<RelayPorts, RelayError>>;

/// A handle on the relay daemon's thread.
#[derive(Debug, Clone)]
pub struct Relayd {
    requests: mpsc::Sender<Reply>,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map(|l| l.local_addr().map(|a| a.port()))?
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn start(output: &Path) -> Result<(Child, RelayPorts), RelayError> {
    let port = || free_port().map_err(RelayError::NoPort);
    let ports = RelayPorts {
        control: port()?,
        data: port()?,
        live: port()?,
    };
    let mut command = Command::new("lttng-relayd");
    command
        .args(command::relayd(&ports, output))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    crate::sys::terminate_with_parent(&mut command);
    let mut child = command.spawn().map_err(RelayError::Spawn)?;
    let stderr = child
        .stderr
        .take()
        .map(|e| keep_stderr("lttng-relayd", child.id(), e));
    let deadline = Instant::now() + START_TIMEOUT;
    while !(answers(ports.live) && answers(ports.control) && answers(ports.data)) {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            crate::sys::kill_process_group(child.id());
            let _ = child.wait();
            return Err(RelayError::NotListening {
                timeout: START_TIMEOUT,
                said: stderr.map(|s| s.said()).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(pid = child.id(), ?ports, "lttng-relayd started");
    Ok((child, ports))
}

impl Relayd {
    /// The thread that owns the daemon; it relays into `output`.
    pub fn spawn(output: PathBuf) -> Self {
        let (requests, incoming) = mpsc::channel::<Reply>();
        let spawned = std::thread::Builder::new()
            .name("lttng-relayd".to_owned())
            .spawn(move || {
                let mut running: Option<(Child, RelayPorts)> = None;
                for reply in incoming {
                    if let Some((child, _)) = running.as_mut()
                        && !matches!(child.try_wait(), Ok(None))
                    {
                        tracing::warn!("lttng-relayd exited; starting it again");
                        crate::sys::kill_process_group(child.id());
                        running = None;
                    }
                    let answer = match &running {
                        Some((_, ports)) => Ok(*ports),
                        None => start(&output).map(|(child, ports)| {
                            running = Some((child, ports));
                            ports
                        }),
                    };
                    let _ = reply.send(answer);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the lttng-relayd thread");
        }
        Self { requests }
    }

    /// The running daemon's ports, starting it if needed.
    pub fn ensure(&self) -> Result<RelayPorts, RelayError> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(reply)
            .map_err(|_| RelayError::ThreadGone)?;
        answer.recv().map_err(|_| RelayError::ThreadGone)?
    }
}
