//! Running a helper program with a deadline: the one way the agent runs a
//! command to completion (`lttng`, the session daemon probe).
//!
//! Such a program may talk to something the app controls: `lttng` connects
//! to `client-lttng-sessiond` in the run directory the app shares, where a
//! root app can put a socket that never answers. So every run has a
//! deadline; past it the program's process group is killed and reaped, and
//! the error names the program and the deadline. What it prints is kept up
//! to a bound (the rest is read and dropped, so a chatty program does not
//! block on a full pipe either).

use std::io::Read as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Bytes kept of each of a program's stdout and stderr.
pub const KEPT_BYTES: usize = 16 << 20;

/// Why a program gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time, and was killed.
    #[error("{program} did not finish within {timeout:?} and was killed{waiting_on}")]
    TimedOut {
        /// The program.
        program: String,
        /// Its deadline.
        timeout: Duration,
        /// ": waiting on …", what it talks to, or empty.
        waiting_on: String,
    },
    /// Waiting for it failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a finished program left.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout (at most [`KEPT_BYTES`]).
    pub stdout: Vec<u8>,
    /// Its stderr (at most [`KEPT_BYTES`]).
    pub stderr: Vec<u8>,
}

/// Reads all of `pipe`, keeping at most [`KEPT_BYTES`].
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = (&mut pipe).take(KEPT_BYTES as u64).read_to_end(&mut kept);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        }
        kept
    })
}

/// Runs `command` (stdin from /dev/null, in a process group of its own)
/// to its end, or kills it after `timeout`. `waiting_on` says what it
/// talks to, for the error (a socket path).
pub fn run_within(
    command: &mut Command,
    timeout: Duration,
    waiting_on: &str,
) -> Result<Finished, ChildError> {
    use std::os::unix::process::CommandExt as _;
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| ChildError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                crate::sys::kill_process_group(child.id());
                let _ = child.wait();
                break Err(ChildError::TimedOut {
                    program: program.clone(),
                    timeout,
                    waiting_on: if waiting_on.is_empty() {
                        String::new()
                    } else {
                        format!(": waiting on {waiting_on}")
                    },
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => {
                crate::sys::kill_process_group(child.id());
                let _ = child.wait();
                break Err(ChildError::Wait {
                    program: program.clone(),
                    source,
                });
            }
        }
    };
    // The group is gone (or the program ended): the pipes close unless a
    // descendant that left the group holds them; the readers are not
    // waited for then.
    let collect = |reader: std::thread::JoinHandle<Vec<u8>>| {
        let until = Instant::now() + Duration::from_secs(1);
        while !reader.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if reader.is_finished() {
            reader.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    Ok(Finished {
        status: status?,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_and_a_hung_program_is_killed() {
        let done = run_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
            "",
        )
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, b"out\n");
        assert_eq!(done.stderr, b"err\n");
        let started = Instant::now();
        // A child of the program holds the pipes too: the whole group goes.
        let error = run_within(
            Command::new("sh").args(["-c", "sleep 60 & sleep 60"]),
            Duration::from_millis(300),
            "/var/run/lttng/client-lttng-sessiond",
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let text = error.to_string();
        assert!(
            text.contains("sh did not finish within 300ms")
                && text.contains("client-lttng-sessiond"),
            "{text}"
        );
    }
}
