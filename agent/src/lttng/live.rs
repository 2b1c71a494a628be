//! `/v1/lttng/live`: a session streamed while it records.
//!
//! A live session is a local one, rotated every [`ROTATE_EVERY`]: each
//! `lttng rotate` closes the current trace chunk (its buffers flushed, the
//! chunk readable on its own), `babeltrace2` reads the chunk, its events
//! go to the client, and the chunk is removed. There is no relay daemon
//! and no network port: LTTng's live protocol needs `lttng-relayd`
//! listening on TCP, which in a pod is the network namespace the app
//! shares, with no authentication: the app could read the traces or push
//! sessions of its own into the agent's disk. Events reach the client
//! within about a rotation period.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracecar_api::SummaryLine;
use tracecar_api::lttng::LiveSummary;

use super::cli::{LttngError, run};
use super::command;
use super::mi;
use super::output::{Sink, babeltrace};
use super::pretty;
use super::record::Lttng;
use super::session::RecordError;
use super::session::TraceDir;
use super::spec::RecordSpec;

/// How often a live session's chunk is closed and read.
pub const ROTATE_EVERY: Duration = Duration::from_millis(500);

/// Counts of what a live session forwarded.
#[derive(Debug, Default)]
struct Forwarded {
    events: u64,
    unparsed: u64,
    client_gone: bool,
}

impl Lttng {
    /// Streams one live session as NDJSON while it records: `ready` gets
    /// the set-up result before any line is sent; then events go to `send`
    /// a chunk at a time, until `spec.seconds` pass, `cancel` is set or
    /// `send` fails; then a summary line. The session is destroyed and its
    /// trace removed in every case.
    pub fn live(
        &self,
        spec: &RecordSpec,
        cancel: &AtomicBool,
        ready: impl FnOnce(Result<(), RecordError>),
        mut send: impl Sink,
    ) {
        let began = Instant::now();
        let opened = self.open(spec);
        let (mut session, trace) = match opened {
            Ok((session, trace, _)) => (session, trace),
            Err(e) => return ready(Err(e)),
        };
        ready(Ok(()));
        let setup = began.elapsed();
        tracing::info!(session = %session.name, setup_ms = setup.as_millis(), "live");

        let mut forwarded = Forwarded::default();
        let mut failure = None;
        let until = Instant::now() + Duration::from_secs(u64::from(spec.seconds));
        let mut next = Instant::now() + ROTATE_EVERY;
        while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(20).min(next - Instant::now()));
                continue;
            }
            next = Instant::now() + ROTATE_EVERY;
            if let Err(e) =
                forward_next_chunk(&session.name, trace.path(), &mut forwarded, &mut send)
            {
                failure = Some(e);
                break;
            }
            if forwarded.client_gone {
                break;
            }
        }
        let stopping = Instant::now();
        let stopped = run(&command::stop(&session.name));
        let discarded = run(&command::list_session(&session.name))
            .and_then(|xml| mi::discarded(&xml).map_err(LttngError::from))
            .unwrap_or_default();
        // What the stop flushed: the last chunk.
        if failure.is_none()
            && !forwarded.client_gone
            && !cancel.load(Ordering::Relaxed)
            && stopped.is_ok()
            && let Err(e) =
                forward_next_chunk(&session.name, trace.path(), &mut forwarded, &mut send)
        {
            failure = Some(e);
        }
        if let Err(e) = session.destroy(stopped.is_ok()) {
            tracing::warn!(session = %session.name, error = %e, "cannot destroy live session");
        }
        drop(trace);
        let teardown = stopping.elapsed();
        if forwarded.client_gone || cancel.load(Ordering::Relaxed) {
            tracing::info!(session = %session.name, "live client gone; session destroyed");
            return;
        }
        if let Some(e) = &failure {
            tracing::warn!(session = %session.name, error = %e, "live session ended early");
        }
        let summary = SummaryLine {
            summary: LiveSummary {
                session: session.name.clone(),
                events: forwarded.events,
                discarded,
                unparsed_lines: forwarded.unparsed,
                setup_ms: setup.as_secs_f64() * 1000.0,
                teardown_ms: teardown.as_secs_f64() * 1000.0,
                error: failure.map(|e| e.to_string()),
            },
        };
        let mut line = serde_json::to_vec(&summary).unwrap_or_default();
        line.push(b'\n');
        send(line);
    }
}

/// Closes the session's current chunk, sends its events, removes it.
fn forward_next_chunk(
    session: &str,
    trace: &Path,
    forwarded: &mut Forwarded,
    send: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), RecordError> {
    let xml = run(&command::rotate(session))?;
    let Some(chunk) = mi::rotated_chunk(&xml).map_err(LttngError::from)? else {
        return Ok(());
    };
    // The chunk is removed after it is read: only ever one inside the
    // session's own directory (the daemon's answer comes through a socket
    // in the directory the app shares).
    let inside = chunk.starts_with(trace)
        && chunk
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir));
    if !inside {
        return Err(RecordError::ForeignChunk { path: chunk });
    }
    let chunk = TraceDir(chunk);
    if !super::session::has_metadata(chunk.path()) {
        return Ok(());
    }
    let (child, stdout) = babeltrace(command::babeltrace_json_source(chunk.path()))
        .map_err(RecordError::Babeltrace)?;
    let mut batch = Vec::with_capacity(64 * 1024);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        match pretty::event(&line) {
            Ok(event) => {
                forwarded.events += 1;
                if serde_json::to_writer(&mut batch, &event).is_ok() {
                    batch.push(b'\n');
                }
            }
            Err(_) => forwarded.unparsed += 1,
        }
        if batch.len() >= 60 * 1024 && !send(std::mem::take(&mut batch)) {
            // Dropping `child` kills it.
            forwarded.client_gone = true;
            return Ok(());
        }
    }
    let finished = child.finish();
    if !batch.is_empty() && !send(batch) {
        forwarded.client_gone = true;
    }
    finished
        .map(drop)
        .map_err(|e| RecordError::Babeltrace(std::io::Error::other(e)))
}
