//! Recording sessions: runs the `lttng` commands that [`command`] builds,
//! and turns the trace into the requested output.
//!
//! A session is destroyed and its trace directory removed on every path:
//! [`Session`] and [`TraceDir`] do it when dropped (recording finished,
//! client gone, error), and [`Lttng::clean_leftovers`] does it at start-up
//! for what a killed agent left behind.

use std::io::{BufRead as _, BufReader, Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracecar_api::SummaryLine;

use super::command::{self, ChannelPlan};
use super::mi::{self, Tracepoint};
use super::pretty;
use super::relayd::Relayd;
use super::sessiond::Sessiond;
use super::spec::RecordSpec;

/// An `lttng` command failed.
#[derive(Debug, thiserror::Error)]
pub enum LttngError {
    /// The CLI could not be run.
    #[error("cannot run lttng: {0} (is lttng-tools installed?)")]
    Spawn(#[source] std::io::Error),
    /// It ran and reported failure; `message` is what it printed.
    #[error("lttng {command} failed: {message}")]
    Failed {
        /// The subcommand.
        command: String,
        /// Its error lines.
        message: String,
    },
    /// Its XML could not be read.
    #[error(transparent)]
    Mi(#[from] mi::MiError),
}

/// Why a recording did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No session daemon answers.
    #[error("no LTTng session daemon is running")]
    NoDaemon,
    /// LTTng refused the event selection or filter.
    #[error("LTTng refused the request: {0}")]
    Rejected(String),
    /// Another LTTng step failed.
    #[error(transparent)]
    Lttng(#[from] LttngError),
    /// The trace directory could not be made.
    #[error("cannot create the trace directory {path}: {source}")]
    TraceDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The client went away.
    #[error("cancelled")]
    Cancelled,
    /// The relay daemon for live sessions is not available.
    #[error("cannot start the LTTng relay daemon: {0}")]
    Relay(#[from] super::relayd::RelayError),
    /// babeltrace2 could not be started.
    #[error("cannot run babeltrace2: {0} (is babeltrace2 installed?)")]
    Babeltrace(#[source] std::io::Error),
}

/// Runs `lttng ARGV` and returns its XML; a failure carries its stderr.
pub fn run(argv: &[String]) -> Result<String, LttngError> {
    let output = Command::new("lttng")
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .map_err(LttngError::Spawn)?;
    let xml = String::from_utf8_lossy(&output.stdout).into_owned();
    let reported = mi::succeeded(&xml).unwrap_or(false);
    if output.status.success() && reported {
        return Ok(xml);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(LttngError::Failed {
        // argv is `--no-sessiond --mi xml SUBCOMMAND …`.
        command: argv.get(3).cloned().unwrap_or_default(),
        message: if message.is_empty() {
            format!("exit status {}", output.status)
        } else {
            message
        },
    })
}

/// The LTTng side of the agent.
#[derive(Debug)]
pub struct Lttng {
    sessiond: Sessiond,
    relayd: Relayd,
    trace_root: PathBuf,
    disk_budget: u64,
    cpus: u32,
    sequence: AtomicU64,
}

/// A live session; destroyed when dropped unless already destroyed.
struct Session {
    name: String,
    destroyed: bool,
}

impl Session {
    /// `stopped`: the session was stopped, so its data are on disk already.
    fn destroy(&mut self, stopped: bool) -> Result<(), LttngError> {
        self.destroyed = true;
        run(&command::destroy(&self.name, !stopped)).map(drop)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Waits, so that nothing writes into the trace directory once the
        // caller removes it.
        if !self.destroyed
            && let Err(e) = self.destroy(false)
        {
            tracing::warn!(session = %self.name, error = %e, "cannot destroy session");
        }
    }
}

/// A trace directory, removed when dropped.
#[derive(Debug)]
pub struct TraceDir(PathBuf);

impl TraceDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TraceDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove trace"),
        }
    }
}

pub use tracecar_api::lttng::{LiveSummary, Summary};

/// A stopped, destroyed session whose trace is still on disk.
#[derive(Debug)]
pub struct Recording {
    /// The trace, removed when this is dropped.
    pub trace: TraceDir,
    /// What to report.
    pub summary: Summary,
}

impl Recording {
    /// Whether any stream was written: an empty recording has no metadata
    /// and babeltrace2 refuses it.
    fn has_trace(&self) -> bool {
        fn find_metadata(dir: &Path) -> bool {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        find_metadata(&path)
                    } else {
                        e.file_name() == "metadata"
                    }
                })
        }
        find_metadata(self.trace.path())
    }
}

/// Whether any stream of the trace used all `count` of its files.
fn limit_reached(dir: &Path, count: u32) -> bool {
    fn walk(dir: &Path, names: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, names);
            } else {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mut names = Vec::new();
    walk(dir, &mut names);
    // Stream files are `CHANNEL_CPU_INDEX`.
    let last = format!("_{}", count.saturating_sub(1));
    count > 1
        && names
            .iter()
            .any(|n| n.starts_with(command::CHANNEL) && n.ends_with(&last) && !n.ends_with(".idx"))
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Stops `babeltrace2` early, when the client is gone.
fn kill_quietly(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Creates (with `create`), configures and starts a session: the channel,
/// the events (LTTng's refusal is the client's error), the contexts, the
/// PID tracker. The session is destroyed if a later step fails.
fn open_session(
    name: &str,
    create: Vec<String>,
    plan: &ChannelPlan,
    spec: &RecordSpec,
) -> Result<Session, RecordError> {
    run(&create)?;
    let session = Session {
        name: name.to_owned(),
        destroyed: false,
    };
    run(&command::enable_channel(name, plan))?;
    run(&command::enable_events(name, spec)).map_err(|e| match e {
        LttngError::Failed { message, .. } => RecordError::Rejected(message),
        other => RecordError::Lttng(other),
    })?;
    run(&command::add_contexts(name))?;
    if let Some(pids) = &spec.pids {
        run(&command::track_pids(name, pids))?;
    }
    run(&command::start(name))?;
    Ok(session)
}

/// Where the relay daemon writes live sessions, under the trace root.
const RELAY_DIR: &str = "relay";

impl Lttng {
    /// Starts the daemon's supervisor; traces go under `trace_root`, each
    /// session capped at `disk_budget` bytes.
    pub fn start(trace_root: PathBuf, disk_budget: u64, cpus: u32) -> std::sync::Arc<Self> {
        let root = trace_root.clone();
        // An earlier agent with this PID left its sessions before the first
        // daemon answered; later restarts must spare this agent's traces.
        let first = AtomicBool::new(true);
        let sessiond = Sessiond::start(crate::procfs::Procfs::default(), move || {
            Self::clean_leftovers(&root, first.swap(false, Ordering::Relaxed))
        });
        std::sync::Arc::new(Self {
            sessiond,
            relayd: Relayd::spawn(trace_root.join(RELAY_DIR)),
            trace_root,
            disk_budget,
            cpus,
            sequence: AtomicU64::new(0),
        })
    }

    /// The supervisor.
    pub fn sessiond(&self) -> &Sessiond {
        &self.sessiond
    }

    /// Destroys `tracecar-` sessions of agents that are gone and removes
    /// their traces; with `own`, also those named with this agent's PID (an
    /// earlier agent's, at start-up).
    pub fn clean_leftovers(trace_root: &Path, own: bool) {
        let me = std::process::id();
        let stale = |name: &str| {
            command::session_owner(name)
                .is_none_or(|owner| (own && owner == me) || (owner != me && !process_alive(owner)))
        };
        let sessions = run(&command::list_sessions())
            .and_then(|xml| mi::session_names(&xml).map_err(LttngError::from));
        match sessions {
            Ok(names) => {
                for name in names
                    .iter()
                    .filter(|n| n.starts_with(command::SESSION_PREFIX) && stale(n))
                {
                    match run(&command::destroy(name, true)) {
                        Ok(_) => tracing::info!(session = %name, "destroyed a leftover session"),
                        Err(e) => {
                            tracing::warn!(session = %name, error = %e, "cannot destroy a leftover session")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list sessions for cleanup"),
        }
        for entry in std::fs::read_dir(trace_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(command::SESSION_PREFIX) && stale(&name) {
                drop(TraceDir(entry.path()));
            }
        }
    }

    /// Tracepoints offered by registered applications, optionally of some
    /// processes only.
    pub fn tracepoints(&self, pids: Option<&[u32]>) -> Result<Vec<Tracepoint>, RecordError> {
        if !self.sessiond.status().running {
            return Err(RecordError::NoDaemon);
        }
        let xml = run(&command::list_tracepoints())?;
        let mut found = mi::tracepoints(&xml).map_err(LttngError::from)?;
        if let Some(pids) = pids {
            found.retain(|t| pids.contains(&t.pid));
        }
        Ok(found)
    }

    fn next_session_name(&self) -> String {
        command::session_name(
            std::process::id(),
            self.sequence.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// Records one session for `spec.seconds`, or until `cancel` is set.
    pub fn record(&self, spec: &RecordSpec, cancel: &AtomicBool) -> Result<Recording, RecordError> {
        if !self.sessiond.status().running {
            return Err(RecordError::NoDaemon);
        }
        let began = Instant::now();
        let name = self.next_session_name();
        let trace = TraceDir(self.trace_root.join(&name));
        std::fs::create_dir_all(&self.trace_root).map_err(|source| RecordError::TraceDir {
            path: self.trace_root.clone(),
            source,
        })?;
        let plan = ChannelPlan::for_budget(self.disk_budget, self.cpus);
        let mut session = open_session(&name, command::create(&name, trace.path()), &plan, spec)?;
        let setup = began.elapsed();
        tracing::info!(session = %name, setup_ms = setup.as_millis(), "recording");

        let until = Instant::now() + Duration::from_secs(u64::from(spec.seconds));
        while Instant::now() < until {
            if cancel.load(Ordering::Relaxed) {
                tracing::info!(session = %name, "client gone; destroying the session");
                return Err(RecordError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }

        let stopping = Instant::now();
        run(&command::stop(&name))?;
        let discarded = run(&command::list_session(&name))
            .and_then(|xml| mi::discarded(&xml).map_err(LttngError::from))?;
        session.destroy(true)?;
        let teardown = stopping.elapsed();
        let disk_limit_reached = limit_reached(trace.path(), plan.tracefile_count);
        Ok(Recording {
            summary: Summary {
                session: name,
                events: None,
                discarded,
                disk_limit_bytes: plan.disk_bytes(self.cpus),
                disk_limit_reached,
                unparsed_lines: 0,
                setup_ms: setup.as_secs_f64() * 1000.0,
                teardown_ms: teardown.as_secs_f64() * 1000.0,
            },
            trace,
        })
    }
}

impl Lttng {
    /// Streams one live session as NDJSON while it records: `ready` gets
    /// the set-up result before any line is sent; then events go to `send`
    /// as they arrive (within the live timer), until `spec.seconds` pass,
    /// `cancel` is set or `send` fails; then a summary line. The session is
    /// destroyed and the relayed trace removed in every case.
    pub fn live(
        &self,
        spec: &RecordSpec,
        cancel: &AtomicBool,
        ready: impl FnOnce(Result<(), RecordError>),
        mut send: impl Sink,
    ) {
        let began = Instant::now();
        let opened = (|| {
            if !self.sessiond.status().running {
                return Err(RecordError::NoDaemon);
            }
            let ports = self.relayd.ensure()?;
            let name = self.next_session_name();
            let relayed = TraceDir(self.trace_root.join(RELAY_DIR).join(&name));
            let plan = ChannelPlan::for_budget(self.disk_budget, self.cpus);
            let session = open_session(&name, command::create_live(&name, &ports), &plan, spec)?;
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".to_owned());
            let reader = babeltrace(command::babeltrace_live(&ports, &hostname, &name))
                .map_err(RecordError::Babeltrace)?;
            Ok((session, relayed, reader))
        })();
        let (mut session, relayed, (mut child, stdout)) = match opened {
            Ok(opened) => opened,
            Err(e) => return ready(Err(e)),
        };
        ready(Ok(()));
        let setup = began.elapsed();
        tracing::info!(session = %session.name, setup_ms = setup.as_millis(), "live");

        // Lines arrive on a thread of their own so that the deadline and
        // the client's departure are noticed while babeltrace2 is quiet.
        let (line_tx, lines) = std::sync::mpsc::sync_channel::<String>(4096);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut events = 0u64;
        let mut unparsed = 0u64;
        let mut client_gone = false;
        let mut forward =
            |line: String, send: &mut dyn FnMut(Vec<u8>) -> bool| match pretty::event(&line) {
                Ok(event) => {
                    events += 1;
                    let mut out = serde_json::to_vec(&event).unwrap_or_default();
                    out.push(b'\n');
                    send(out)
                }
                Err(_) => {
                    unparsed += 1;
                    true
                }
            };
        let until = Instant::now() + Duration::from_secs(u64::from(spec.seconds));
        while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if !forward(line, &mut send) {
                        client_gone = true;
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let stopping = Instant::now();
        let stopped = run(&command::stop(&session.name));
        let discarded = run(&command::list_session(&session.name))
            .and_then(|xml| mi::discarded(&xml).map_err(LttngError::from))
            .unwrap_or_default();
        // Events flushed by the stop still reach the reader: take them for
        // up to one more second.
        let drain_until = Instant::now() + Duration::from_secs(1);
        while !client_gone && Instant::now() < drain_until {
            match lines.recv_timeout(Duration::from_millis(LIVE_DRAIN_MS)) {
                Ok(line) => client_gone = !forward(line, &mut send),
                Err(_) => break,
            }
        }
        if let Err(e) = session.destroy(stopped.is_ok()) {
            tracing::warn!(session = %session.name, error = %e, "cannot destroy live session");
        }
        kill_quietly(&mut child);
        drop(lines);
        let _ = reader.join();
        drop(relayed);
        let teardown = stopping.elapsed();
        if client_gone || cancel.load(Ordering::Relaxed) {
            tracing::info!(session = %session.name, "live client gone; session destroyed");
            return;
        }
        let summary = SummaryLine {
            summary: LiveSummary {
                session: session.name.clone(),
                events,
                discarded,
                unparsed_lines: unparsed,
                setup_ms: setup.as_secs_f64() * 1000.0,
                teardown_ms: teardown.as_secs_f64() * 1000.0,
            },
        };
        let mut line = serde_json::to_vec(&summary).unwrap_or_default();
        line.push(b'\n');
        send(line);
    }
}

/// How long the drain after a live session's stop waits for a next line.
const LIVE_DRAIN_MS: u64 = 300;

/// Where the output of a recording goes: `send` returns false once the
/// client has gone, which stops the conversion.
pub trait Sink: FnMut(Vec<u8>) -> bool {}
impl<F: FnMut(Vec<u8>) -> bool> Sink for F {}

/// Starts babeltrace2 with `args`, its stdout piped.
fn babeltrace(
    args: Vec<String>,
) -> std::io::Result<(std::process::Child, std::process::ChildStdout)> {
    let mut child = Command::new("babeltrace2")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    match child.stdout.take() {
        Some(stdout) => Ok((child, stdout)),
        None => {
            kill_quietly(&mut child);
            Err(std::io::Error::other("babeltrace2 has no stdout"))
        }
    }
}

/// Writes NDJSON events, then `{"summary": …}`.
pub fn write_json(recording: &mut Recording, mut send: impl Sink) -> std::io::Result<()> {
    let mut events = 0u64;
    let mut unparsed = 0u64;
    if recording.has_trace() {
        let (mut child, stdout) =
            babeltrace(command::babeltrace_json_source(recording.trace.path()))?;
        let mut batch = Vec::with_capacity(64 * 1024);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            match pretty::event(&line) {
                Ok(event) => {
                    serde_json::to_writer(&mut batch, &event)?;
                    batch.push(b'\n');
                    events += 1;
                }
                Err(e) => {
                    unparsed += 1;
                    tracing::debug!(error = %e, %line, "babeltrace2 line is not an event");
                }
            }
            if batch.len() >= 60 * 1024 && !send(std::mem::take(&mut batch)) {
                kill_quietly(&mut child);
                return Ok(());
            }
        }
        let _ = child.wait();
        if !batch.is_empty() && !send(batch) {
            return Ok(());
        }
    }
    recording.summary.events = Some(events);
    recording.summary.unparsed_lines = unparsed;
    let mut line = serde_json::to_vec(&SummaryLine {
        summary: &recording.summary,
    })?;
    line.push(b'\n');
    send(line);
    Ok(())
}

/// Writes babeltrace2's text, then a `# tracecar: {…}` summary line.
pub fn write_text(recording: &Recording, mut send: impl Sink) -> std::io::Result<()> {
    if recording.has_trace() {
        let (mut child, mut stdout) = babeltrace(command::babeltrace_text(recording.trace.path()))?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = stdout.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            if !send(buffer[..n].to_vec()) {
                kill_quietly(&mut child);
                return Ok(());
            }
        }
        let _ = child.wait();
    }
    let mut line = b"# tracecar: ".to_vec();
    serde_json::to_writer(&mut line, &recording.summary)?;
    line.push(b'\n');
    send(line);
    Ok(())
}

/// A `Write` that hands chunks to a [`Sink`]; fails once the client is gone.
struct SinkWriter<S: Sink>(S);

impl<S: Sink> Write for SinkWriter<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.0)(buf.to_vec()) {
            Ok(buf.len())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "client gone",
            ))
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a `.tar.gz` of the CTF trace under `SESSION/`, with
/// `SESSION/tracecar-summary.json`.
pub fn write_ctf(recording: &Recording, send: impl Sink) -> std::io::Result<()> {
    let writer = std::io::BufWriter::with_capacity(64 * 1024, SinkWriter(send));
    let gzip = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gzip);
    let root = recording.summary.session.as_str();
    tar.append_dir_all(root, recording.trace.path())?;
    let summary = serde_json::to_vec_pretty(&recording.summary)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(summary.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    header.set_cksum();
    tar.append_data(
        &mut header,
        format!("{root}/tracecar-summary.json"),
        summary.as_slice(),
    )?;
    tar.into_inner()?.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_reached_when_a_stream_uses_its_last_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let streams = dir.path().join("ust/uid/0/64-bit");
        std::fs::create_dir_all(streams.join("index")).expect("mkdir");
        for name in [
            "tracecar_0_0",
            "tracecar_1_0",
            "metadata",
            "index/tracecar_0_3.idx",
        ] {
            std::fs::write(streams.join(name), b"").expect("write");
        }
        assert!(!limit_reached(dir.path(), 4));
        std::fs::write(streams.join("tracecar_1_3"), b"").expect("write");
        assert!(limit_reached(dir.path(), 4));
    }

    #[test]
    fn trace_directories_are_removed_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trace = dir.path().join("tracecar-1-1");
        std::fs::create_dir_all(trace.join("ust")).expect("mkdir");
        drop(TraceDir(trace.clone()));
        assert!(!trace.exists());
        // Already gone is fine.
        drop(TraceDir(trace));
    }
}
