//! The `signal` trigger: a process stopped at a fatal signal (SIGSEGV,
//! SIGABRT, SIGBUS, SIGFPE, SIGILL) and dumped before it dies, as procdump
//! does, then left to die as it would have.
//!
//! **How.** For each process a `signal` rule watches, the agent runs
//! `tracecar-agent watch-signals --pid PID` (its own binary; a process of
//! its own, so that `waitpid(-1)` there reaps only its tracees, never the
//! agent's children). It seizes every thread (`PTRACE_SEIZE` with
//! `PTRACE_O_TRACECLONE`: the threads keep running, and new ones are
//! followed) and then sees each signal before the thread it is for:
//!
//! - a signal the rule does not watch, or one the app handles (its bit in
//!   `SigCgt`: the JVM's and .NET's own SIGSEGV handlers, a handler that
//!   logs and exits), is handed back at once;
//! - a watched signal the app does not handle, which would kill it: the
//!   other threads are interrupted, a `SIGSTOP` is queued for the process
//!   and every thread is let go with the fatal signal held back, so the
//!   whole process stops in a group-stop with the faulting thread at the
//!   faulting instruction. The watch prints `fatal TID SIG` and waits;
//!   the rule's `dump` runs (ptrace, as `/v1/dump` does); then the agent
//!   answers `resume`, and the watch sends the same signal to the same
//!   thread (`tgkill`) and `SIGCONT`: the process dies by it, with the
//!   kernel's own core file if the node writes one. Without an answer in
//!   [`RESUME_AFTER`] (an agent that died), it does the same by itself.
//!
//! **What it costs the app, and prevents** (why it is opt-in, per rule):
//! every signal the process gets goes through the watch first (two
//! context switches, tens of microseconds), and so does every thread it
//! creates; and while seized, no other debugger can attach: gdb, strace,
//! `dotnet-dump`, `createdump`, and the agent's own `/v1/stacks` and
//! ptrace dumps of that process fail (`/v1/dump` of a .NET process still
//! works through its runtime). A watch that dies (the agent stopped, the
//! rule removed) lets every thread go at once. A fatal signal arriving
//! while the watch itself is killed may be lost for a signal sent with
//! `kill`; a fault repeats when the instruction runs again. The watch
//! ends when the agent's rules thread that started it does
//! (`PR_SET_PDEATHSIG`): an agent that stops or dies leaves no tracer
//! behind, and a process it held stopped reads the end of its pipe as
//! `resume`.

use std::collections::HashSet;
use std::io::{BufRead as _, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::sys::seize::{self, Stop};

/// The fatal signals a `signal` rule may watch, by name.
pub const SIGNALS: [(&str, i32); 5] = [
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGABRT", libc::SIGABRT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGILL", libc::SIGILL),
];

/// How long a stopped process waits for the agent's `resume`.
pub const RESUME_AFTER: Duration = Duration::from_secs(120);
/// How long the other threads are given to stop at a fatal signal.
const STOP_OTHERS: Duration = Duration::from_secs(2);

/// A signal's name (`SIGSEGV`), or its number.
pub fn name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, s)| *s == sig)
        .map_or_else(|| format!("signal {sig}"), |(n, _)| (*n).to_owned())
}

/// The bit of `sig` in a signal mask (`SigCgt`, a rule's set).
pub fn bit(sig: i32) -> u64 {
    u32::try_from(sig - 1)
        .ok()
        .and_then(|s| 1u64.checked_shl(s))
        .unwrap_or(0)
}

/// What the watch does with one stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Restart the thread, delivering the signal (0: none).
    Resume(i32, i32),
    /// Leave it in its group-stop (`PTRACE_LISTEN`).
    Listen(i32),
    /// The thread is gone.
    Forget(i32),
    /// A watched signal the app does not handle, for this thread.
    Fatal(i32, i32),
}

/// The stop signals, whose `PTRACE_EVENT_STOP` is a group-stop.
fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// Decides what to do with `stop` (pure): `watched` and `caught` are
/// signal masks (the rule's, and the process's `SigCgt`).
pub fn step(stop: Stop, watched: u64, caught: u64) -> Step {
    match stop {
        Stop::Gone(tid) => Step::Forget(tid),
        Stop::Signal(tid, sig) if watched & bit(sig) != 0 && caught & bit(sig) == 0 => {
            Step::Fatal(tid, sig)
        }
        Stop::Signal(tid, sig) => Step::Resume(tid, sig),
        Stop::Event(tid, event, sig) if event == libc::PTRACE_EVENT_STOP && is_stop_signal(sig) => {
            Step::Listen(tid)
        }
        // A new thread's first stop, an interrupt, a clone reported by
        // its parent, or the end of a group-stop (SIGTRAP).
        Stop::Event(tid, ..) => Step::Resume(tid, 0),
    }
}

/// The signals `pid` handles (`SigCgt`; none when it cannot be read).
fn caught(pid: i32) -> u64 {
    crate::procfs::Procfs::default()
        .status(pid.unsigned_abs())
        .map_or(0, |s| s.sig_cgt)
}

fn tids(pid: i32) -> std::io::Result<Vec<i32>> {
    let tids = crate::procfs::Procfs::default().tids(pid.unsigned_abs())?;
    Ok(tids
        .into_iter()
        .filter_map(|t| i32::try_from(t).ok())
        .collect())
}

/// Why the watch stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The process could not be seized.
    #[error("cannot seize pid {pid}: {source} (another debugger attached, or ptrace not allowed)")]
    Seize {
        /// The process.
        pid: i32,
        /// Why.
        source: std::io::Error,
    },
    /// Writing to the agent failed.
    #[error("cannot tell the agent: {0}")]
    Report(std::io::Error),
}

/// The watch, in its own process: seizes `pid`'s threads, hands back
/// every signal but a fatal one of `watched`, and at that one stops the
/// process, reports it on `out` (`fatal TID SIG`), waits for `resume` on
/// `answers` (or [`RESUME_AFTER`]) and lets it die of it. Returns when
/// the process is gone or has been let go.
pub fn watch(
    pid: i32,
    watched: u64,
    parent: i32,
    out: &mut impl Write,
    answers: impl std::io::Read + Send + 'static,
) -> Result<(), WatchError> {
    // The agent gone (or its rules stopped): the watch ends, and the
    // kernel lets the threads go.
    seize::end_with_parent(parent).map_err(|source| WatchError::Seize { pid, source })?;
    if seize::parent_gone() {
        return Ok(());
    }
    let mut known = HashSet::new();
    // Threads may start while the others are seized: again until none is
    // new (those started after are followed by PTRACE_O_TRACECLONE).
    for _ in 0..8 {
        let now = tids(pid).map_err(|source| WatchError::Seize { pid, source })?;
        let new: Vec<i32> = now.into_iter().filter(|t| !known.contains(t)).collect();
        if new.is_empty() {
            break;
        }
        for tid in new {
            match seize::seize(tid) {
                Ok(()) => {
                    known.insert(tid);
                }
                // A thread that exited meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => return Err(WatchError::Seize { pid, source }),
            }
        }
    }
    writeln!(out, "watching {}", known.len()).map_err(WatchError::Report)?;
    out.flush().map_err(WatchError::Report)?;
    loop {
        let stop = match seize::wait_any(true) {
            Ok(Some(stop)) => stop,
            Ok(None) => continue,
            // No tracee left, or the agent is gone.
            Err(_) => return Ok(()),
        };
        let watched_now = match stop {
            Stop::Signal(_, sig) if watched & bit(sig) != 0 => caught(pid),
            _ => 0,
        };
        match step(stop, watched, watched_now) {
            Step::Resume(tid, sig) => {
                known.insert(tid);
                let _ = seize::resume(tid, sig);
            }
            Step::Listen(tid) => {
                let _ = seize::listen(tid);
            }
            Step::Forget(tid) => {
                known.remove(&tid);
                if known.is_empty() {
                    return Ok(());
                }
            }
            Step::Fatal(tid, sig) => {
                known.remove(&tid);
                stop_process(pid, tid, &known);
                writeln!(out, "fatal {tid} {sig}").map_err(WatchError::Report)?;
                out.flush().map_err(WatchError::Report)?;
                wait_for_resume(answers);
                let _ = seize::tgkill(pid, tid, sig);
                let _ = seize::kill(pid, libc::SIGCONT);
                return Ok(());
            }
        }
    }
}

/// Stops every thread of `pid` in a group-stop: the others interrupted
/// and waited for, a `SIGSTOP` queued, each let go (`faulting` with its
/// signal held back, the others with any signal they stopped for).
fn stop_process(pid: i32, faulting: i32, others: &HashSet<i32>) {
    let mut waiting: HashSet<i32> = others
        .iter()
        .copied()
        .filter(|t| seize::interrupt(*t).is_ok())
        .collect();
    let mut hand_back = Vec::new();
    let deadline = Instant::now() + STOP_OTHERS;
    while !waiting.is_empty() && Instant::now() < deadline {
        match seize::wait_any(false) {
            Ok(Some(Stop::Gone(tid))) => {
                waiting.remove(&tid);
            }
            Ok(Some(Stop::Signal(tid, sig))) => {
                waiting.remove(&tid);
                hand_back.push((tid, sig));
            }
            Ok(Some(Stop::Event(tid, ..))) => {
                waiting.remove(&tid);
                hand_back.push((tid, 0));
            }
            Ok(None) => std::thread::sleep(Duration::from_micros(200)),
            Err(_) => break,
        }
    }
    let _ = seize::kill(pid, libc::SIGSTOP);
    for (tid, sig) in hand_back {
        let _ = seize::detach(tid, sig);
    }
    let _ = seize::detach(faulting, 0);
    // A thread that did not stop in time is detached by the kernel when
    // this process exits; the SIGSTOP stops it then.
}

/// Waits for a `resume` line, the end of `answers`, or [`RESUME_AFTER`].
fn wait_for_resume(answers: impl std::io::Read + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(answers).read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(RESUME_AFTER);
}

/// The agent's side of one watch: the `watch-signals` process, what it
/// reported, and the way to answer it.
#[derive(Debug)]
pub struct Watcher {
    child: std::process::Child,
    events: mpsc::Receiver<(i32, i32)>,
    answer: Arc<Mutex<Option<std::process::ChildStdin>>>,
    pid: i32,
}

impl Watcher {
    /// Starts a watch of `pid` for the signals of `watched`, and waits
    /// (up to 5 s) until it has seized the process. A fatal signal wakes
    /// `wake`.
    pub fn start(pid: u32, watched: u64, wake: Arc<super::watch::Wake>) -> Result<Self, String> {
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().map_err(|e| format!("the agent's own binary: {e}"))?;
        let mut child = Command::new(exe)
            .args([
                "watch-signals",
                "--pid",
                &pid.to_string(),
                "--mask",
                &watched.to_string(),
                "--parent",
                &std::process::id().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the signal watch: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("watch-{pid}"))
            .spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["watching", _] => {
                            let _ = ready_tx.send(());
                        }
                        ["fatal", tid, sig] => {
                            if let (Ok(tid), Ok(sig)) = (tid.parse(), sig.parse()) {
                                let _ = tx.send((tid, sig));
                                wake.notify();
                            }
                        }
                        _ => {}
                    }
                }
            })
            .map_err(|e| format!("cannot read the signal watch: {e}"))?;
        let answer = Arc::new(Mutex::new(child.stdin.take()));
        let mut watcher = Self {
            child,
            events,
            answer,
            pid: i32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?,
        };
        if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            let mut why = String::new();
            if let Some(mut err) = watcher.child.stderr.take() {
                let _ = watcher.child.kill();
                let _ = std::io::Read::read_to_string(&mut err, &mut why);
            }
            return Err(format!(
                "the signal watch of pid {pid} did not start: {}",
                why.trim()
            ));
        }
        Ok(watcher)
    }

    /// The fatal signals reported since the last call: (thread, signal,
    /// the answer that lets the process die when dropped).
    pub fn fatal(&self) -> Vec<(i32, i32, Arc<Resume>)> {
        self.events
            .try_iter()
            .map(|(tid, sig)| {
                let resume = Resume {
                    answer: self.answer.clone(),
                    pid: self.pid,
                    tid,
                    sig,
                };
                (tid, sig, Arc::new(resume))
            })
            .collect()
    }

    /// Whether the watch has ended (the process is gone or let go).
    pub fn ended(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing its input lets a process it holds stopped die at once
        // (the watch reads the end as `resume`); then the watch ends, and
        // the kernel lets every thread it traces go.
        drop(crate::sync::lock(&self.answer).take());
        let deadline = Instant::now() + Duration::from_secs(1);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets a process stopped at its fatal signal die of it, when dropped:
/// after the rule's actions, or at once when its limits hold it back.
/// When its watch is gone, the agent sends the signal and `SIGCONT`
/// itself.
#[derive(Debug)]
pub struct Resume {
    answer: Arc<Mutex<Option<std::process::ChildStdin>>>,
    pid: i32,
    tid: i32,
    sig: i32,
}

impl Drop for Resume {
    fn drop(&mut self) {
        let Some(mut stdin) = crate::sync::lock(&self.answer).take() else {
            // Its watch closed it: the process was let go already.
            return;
        };
        if stdin.write_all(b"resume\n").is_err() {
            let _ = seize::tgkill(self.pid, self.tid, self.sig);
            let _ = seize::kill(self.pid, libc::SIGCONT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unhandled_watched_signal_is_fatal() {
        let watched = bit(libc::SIGSEGV) | bit(libc::SIGABRT);
        assert_eq!(bit(1), 1);
        assert_eq!(bit(0), 0);
        assert_eq!(
            step(Stop::Signal(9, libc::SIGSEGV), watched, 0),
            Step::Fatal(9, libc::SIGSEGV)
        );
        // The app handles it (.NET's null references, a JVM): handed back.
        let handles_segv = bit(libc::SIGSEGV);
        assert_eq!(
            step(Stop::Signal(9, libc::SIGSEGV), watched, handles_segv),
            Step::Resume(9, libc::SIGSEGV)
        );
        // Not watched: handed back.
        assert_eq!(
            step(Stop::Signal(9, libc::SIGBUS), watched, 0),
            Step::Resume(9, libc::SIGBUS)
        );
        assert_eq!(
            step(Stop::Signal(9, libc::SIGUSR1), watched, 0),
            Step::Resume(9, libc::SIGUSR1)
        );
        // A group-stop stays stopped; a new thread, an interrupt or a
        // clone runs on.
        assert_eq!(
            step(
                Stop::Event(9, libc::PTRACE_EVENT_STOP, libc::SIGSTOP),
                watched,
                0
            ),
            Step::Listen(9)
        );
        assert_eq!(
            step(
                Stop::Event(9, libc::PTRACE_EVENT_STOP, libc::SIGTRAP),
                watched,
                0
            ),
            Step::Resume(9, 0)
        );
        assert_eq!(
            step(
                Stop::Event(9, libc::PTRACE_EVENT_CLONE, libc::SIGTRAP),
                watched,
                0
            ),
            Step::Resume(9, 0)
        );
        assert_eq!(step(Stop::Gone(9), watched, 0), Step::Forget(9));
        assert_eq!(name(libc::SIGABRT), "SIGABRT");
        assert_eq!(name(40), "signal 40");
    }

    #[test]
    fn reads_the_handled_signals() {
        let status = "Name:\tapp\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000400\n";
        let caught = crate::procfs::parse_status(status).sig_cgt;
        assert_ne!(caught & bit(libc::SIGSEGV), 0, "bit 11 (0x400)");
        assert_eq!(caught & bit(libc::SIGABRT), 0);
        assert_eq!(crate::procfs::parse_status("Name:\tapp\n").sig_cgt, 0);
    }
}
