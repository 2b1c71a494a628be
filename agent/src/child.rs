//! Running a helper program with a deadline: the one way the agent runs a
//! command to completion (`lttng`, the session daemon probe), and the one
//! way it reads a program's output while it runs ([`stream_within`]:
//! babeltrace2 converting a recording).
//!
//! Such a program may talk to something the app controls: `lttng` connects
//! to `client-lttng-sessiond` in the run directory the app shares, where a
//! root app can put a socket that never answers. So every run has a
//! deadline; past it the program's process group is killed and reaped, and
//! the error names the program and the deadline. What it prints is kept up
//! to a bound (the rest is read and dropped, so a chatty program does not
//! block on a full pipe either).

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// It printed nothing for too long, and was killed.
    #[error("{program} printed nothing for {stall:?} and was killed")]
    Stalled {
        /// The program.
        program: String,
        /// How long it may be quiet.
        stall: Duration,
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

/// Starts `command` in a process group of its own, stdin from /dev/null,
/// stdout piped, stderr as `stderr` says; with the program's name.
fn spawn_in_group(
    command: &mut Command,
    stderr: Stdio,
) -> Result<(String, std::process::Child), ChildError> {
    use std::os::unix::process::CommandExt as _;
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0);
    match command.spawn() {
        Ok(child) => Ok((program, child)),
        Err(source) => Err(ChildError::Spawn { program, source }),
    }
}

/// Runs `command` (stdin from /dev/null, in a process group of its own)
/// to its end, or kills it after `timeout`. `waiting_on` says what it
/// talks to, for the error (a socket path).
pub fn run_within(
    command: &mut Command,
    timeout: Duration,
    waiting_on: &str,
) -> Result<Finished, ChildError> {
    let (program, mut child) = spawn_in_group(command, Stdio::piped())?;
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

/// A program whose stdout is read while it runs, in a process group of its
/// own: killed with its group when it prints nothing for `stall` (its
/// input is a trace the app's events filled: a conversion that hangs on it
/// ends), and when it is dropped before [`Streaming::finish`].
#[derive(Debug)]
pub struct Streaming {
    child: std::process::Child,
    program: String,
    stall: Duration,
    done: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

/// A [`Streaming`] program's stdout: a read that returns bytes is progress.
#[derive(Debug)]
pub struct StreamingStdout {
    inner: std::process::ChildStdout,
    started: Instant,
    progress: Arc<AtomicU64>,
}

impl Read for StreamingStdout {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.progress.store(now, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Starts `command` (stdin and stderr from and to /dev/null) with its
/// stdout piped, watched: quiet for `stall`, its group is killed, its
/// stdout ends and [`Streaming::finish`] says [`ChildError::Stalled`].
pub fn stream_within(
    command: &mut Command,
    stall: Duration,
) -> Result<(Streaming, StreamingStdout), ChildError> {
    let (program, mut child) = spawn_in_group(command, Stdio::null())?;
    let Some(inner) = child.stdout.take() else {
        crate::sys::kill_process_group(child.id());
        let _ = child.wait();
        return Err(ChildError::Wait {
            program,
            source: std::io::Error::other("no stdout"),
        });
    };
    let started = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicBool::new(false));
    // The group is killed only while the child is not reaped (`finish`
    // and `drop` stop this thread first), so its pid is still its own.
    let watchdog = {
        let (progress, done, stalled) = (progress.clone(), done.clone(), stalled.clone());
        let pgid = child.id();
        let tick = (stall / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let last = Duration::from_millis(progress.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) > stall {
                    stalled.store(true, Ordering::Relaxed);
                    crate::sys::kill_process_group(pgid);
                    return;
                }
            }
        })
    };
    let stdout = StreamingStdout {
        inner,
        started,
        progress,
    };
    let streaming = Streaming {
        child,
        program,
        stall,
        done,
        stalled,
        watchdog: Some(watchdog),
    };
    Ok((streaming, stdout))
}

impl Streaming {
    /// Waits for the program's end (its stdout read to the end first): its
    /// status, or [`ChildError::Stalled`] if it was killed for silence.
    pub fn finish(mut self) -> Result<ExitStatus, ChildError> {
        self.stop_watching();
        let status = self.child.wait().map_err(|source| ChildError::Wait {
            program: self.program.clone(),
            source,
        })?;
        if self.stalled.load(Ordering::Relaxed) {
            return Err(ChildError::Stalled {
                program: self.program.clone(),
                stall: self.stall,
            });
        }
        Ok(status)
    }

    fn stop_watching(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
    }
}

impl Drop for Streaming {
    /// Not finished (the reader has gone, or failed): killed and reaped.
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.stop_watching();
            crate::sys::kill_process_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_program_that_goes_quiet_is_killed() {
        // Output, then silence past the stall: killed, and said so.
        let started = Instant::now();
        let (streaming, mut stdout) = stream_within(
            Command::new("sh").args(["-c", "echo one; sleep 60 & sleep 60"]),
            Duration::from_millis(400),
        )
        .unwrap();
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        assert_eq!(text, "one\n");
        let error = streaming.finish().unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            error.to_string(),
            "sh printed nothing for 400ms and was killed"
        );
        // Steady output is never cut, however long it takes in all.
        let (streaming, mut stdout) = stream_within(
            Command::new("sh").args(["-c", "for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done"]),
            Duration::from_millis(600),
        )
        .unwrap();
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        assert_eq!(text.lines().count(), 6);
        assert!(streaming.finish().unwrap().success());
        // Dropped unfinished: the group goes.
        let (streaming, _stdout) =
            stream_within(Command::new("sleep").arg("60"), Duration::from_secs(60)).unwrap();
        let pid = streaming.child.id();
        drop(streaming);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

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
