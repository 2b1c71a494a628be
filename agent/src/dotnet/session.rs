//! An EventPipe session over the diagnostic port, from start to the end
//! of the runtime's stream: `/v1/dotnet/trace` and the rundown of
//! profiles run on it.
//!
//! The session is stopped on every path: at `seconds`, at `limit`, when
//! the client goes away (the cancel flag) and when reading fails — the
//! agent sends `StopTracing` on a new connection and reads the stream to
//! its end (the runtime writes the rundown then), for at most
//! [`DRAIN_LIMIT`]. If the process exits, the stream ends early; a JSON
//! answer then has every event decoded so far and a summary with
//! `complete: false`, and a nettrace answer ends after the last complete
//! object, with the end tag added, so that it is a valid file.

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracecar_api::SummaryLine;
use tracecar_api::dotnet::{DotnetEvent, TraceSummary};

use super::ipc::Command;
use super::metadata;
use super::nettrace::{Decoder, Event, TraceInfo};
use super::port::{ANSWER_TIMEOUT, Port, PortError};
use super::spec::{TraceFormat, TraceSpec};
use crate::procfs::Procfs;

/// How long the runtime may take to finish its stream after the stop
/// (rundown of every method included).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How often the reader looks at the clock and the cancel flag.
const POLL: Duration = Duration::from_millis(100);
/// The session's own metadata event (`ProcessInfo`), not sent as JSON.
const SESSION_PROVIDER: &str = "Microsoft-DotNETCore-EventPipe";

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Seconds,
    Limit,
    Disconnected,
    Failed,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Limit => "limit",
            Self::Disconnected => "disconnected",
            Self::Failed => "error",
        }
    }
}

/// An event as the JSON answer has it.
pub fn event_json(event: &Event, trace: Option<TraceInfo>, pid: u32) -> DotnetEvent {
    let m = &event.metadata;
    let (fields, payload) = match m
        .fields
        .as_deref()
        .map(|f| metadata::decode(f, &event.payload))
    {
        Some(Ok(fields)) => (fields, None),
        Some(Err(_)) | None => (Default::default(), Some(metadata::hex(&event.payload))),
    };
    let ts_ns = trace.map_or(event.timestamp, |t| {
        u64::try_from(u128::from(event.timestamp) * 1_000_000_000 / u128::from(t.frequency))
            .unwrap_or(u64::MAX)
    });
    DotnetEvent {
        ts_ns,
        pid,
        tid: event.thread,
        provider: m.provider.clone(),
        event: m.name.clone(),
        id: m.event_id,
        version: m.version,
        fields,
        payload,
    }
}

/// What the reader turns the stream into.
struct Output {
    format: TraceFormat,
    decoder: Decoder,
    /// nettrace: bytes read and not yet forwarded (an incomplete object).
    held: Vec<u8>,
    /// nettrace: the decoder failed, forward everything as it comes.
    raw: bool,
    pid: u32,
    sent: u64,
    limit: Option<u32>,
    error: Option<String>,
}

impl Output {
    /// Takes bytes of the stream; returns the chunk to send.
    fn take(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.format == TraceFormat::Nettrace && self.raw {
            return bytes.to_vec();
        }
        self.decoder.feed(bytes);
        if self.format == TraceFormat::Nettrace {
            self.held.extend_from_slice(bytes);
        }
        loop {
            match self.decoder.next_event() {
                Ok(Some(event)) => self.line(&event, &mut out),
                Ok(None) => break,
                Err(e) => {
                    self.error = Some(e.to_string());
                    if self.format == TraceFormat::Nettrace {
                        // Our decoder is not the judge of the runtime's
                        // stream: pass it on unchanged.
                        self.raw = true;
                        out.append(&mut self.held);
                    }
                    return out;
                }
            }
        }
        if self.format == TraceFormat::Nettrace {
            let complete = self.held.len() - self.decoder.pending().min(self.held.len());
            out.extend(self.held.drain(..complete));
        }
        out
    }

    fn line(&mut self, event: &Event, out: &mut Vec<u8>) {
        if self.format != TraceFormat::Json
            || event.metadata.provider == SESSION_PROVIDER
            || self.limit_reached()
        {
            return;
        }
        let json = event_json(event, self.decoder.trace(), self.pid);
        if serde_json::to_writer(&mut *out, &json).is_ok() {
            out.push(b'\n');
            self.sent += 1;
        }
    }

    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= u64::from(l))
    }

    /// What closes the answer.
    fn finish(&mut self, summary: TraceSummary) -> Vec<u8> {
        match self.format {
            TraceFormat::Nettrace if !self.raw && !self.decoder.ended() => vec![1],
            TraceFormat::Nettrace => Vec::new(),
            TraceFormat::Json => {
                let mut line = serde_json::to_vec(&SummaryLine { summary }).unwrap_or_default();
                line.push(b'\n');
                line
            }
        }
    }
}

/// Whether `pid` still runs (a zombie does not).
fn alive(procfs: &Procfs, pid: u32) -> bool {
    // A runtime that exits cleanly ends its sessions first: give it a
    // moment to be gone.
    let running = || {
        procfs
            .stat(pid)
            .is_ok_and(|s| s.state != 'Z' && s.state != 'X')
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while running() {
        if Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends `StopTracing` from another thread: the runtime answers it only
/// after it has written the rest of the stream (the rundown), which the
/// session's reader must keep reading meanwhile. The thread's answer is
/// the error, if the stop failed.
fn stop_in_background(
    procfs: &Procfs,
    port: &Port,
    session: u64,
) -> std::thread::JoinHandle<Option<String>> {
    let (procfs, port) = (procfs.clone(), port.clone());
    std::thread::spawn(move || {
        let result = port.stop_within(&procfs, session, DRAIN_LIMIT);
        result.err().map(|e| {
            tracing::warn!(pid = port.pid, session, error = %e, "cannot stop the EventPipe session");
            e.to_string()
        })
    })
}

/// What the consumer of a session's bytes says after each piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Keep going: the answer has its first result now (see
    /// [`Window::first_within`]).
    Produced,
    /// Stop the session: its limit is reached.
    Limit,
    /// Stop the session: nobody wants the rest (the client is gone).
    Gone,
    /// Stop reading now: the stream cannot be decoded past this point, and
    /// a runtime that keeps sending must not keep the session (or the
    /// agent's reading thread) going. The session is stopped, the
    /// connection closed.
    Failed,
}

/// How a session ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The runtime's session id.
    pub session: u64,
    /// Why: `seconds`, `limit`, `disconnected`, `error`, `process exited`
    /// or `stopped by the runtime`.
    pub why: String,
    /// What went wrong, if anything did.
    pub error: Option<String>,
    /// How long it ran.
    pub seconds: f64,
}

/// How long a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The session is stopped this long after it started…
    pub seconds: Duration,
    /// …but not before `consume` has said [`Flow::Produced`] once, when
    /// this is set, unless this long has passed since the start: an
    /// answer that needs one result (a counters snapshot) waits for the
    /// runtime's first one, however short the session asked for.
    pub first_within: Option<Duration>,
}

impl Window {
    /// A session of `seconds`.
    pub fn seconds(seconds: Duration) -> Self {
        Self {
            seconds,
            first_within: None,
        }
    }
}

/// The one EventPipe stream loop: starts the session `command` describes
/// (answering `ready` with its id, or why not), hands every piece of the
/// stream to `consume` until the runtime ends it, and stops the session
/// at the end of `window`, when `cancel` is set, or when `consume` asks.
/// `None` if the session did not start.
pub fn run(
    procfs: &Procfs,
    port: &Port,
    command: &Command,
    window: Window,
    cancel: &AtomicBool,
    ready: impl FnOnce(Result<u64, PortError>),
    mut consume: impl FnMut(&[u8]) -> Flow,
) -> Option<Ended> {
    let (mut stream, session) = match start(procfs, port, command) {
        Ok(started) => started,
        Err(e) => {
            ready(Err(e));
            return None;
        }
    };
    ready(Ok(session));
    tracing::info!(pid = port.pid, session, "EventPipe session started");

    let started = Instant::now();
    let deadline = started + window.seconds;
    let mut produced = window.first_within.is_none();
    let wait_first = started + window.first_within.unwrap_or_default().max(window.seconds);
    let mut stopped: Option<(Stop, Instant)> = None;
    let mut asked: Option<Stop> = None;
    let mut error = None;
    let mut buf = vec![0u8; 256 << 10];
    let mut stopper = None;
    loop {
        if stopped.is_none() {
            let why = if cancel.load(Ordering::Relaxed) {
                Some(Stop::Disconnected)
            } else if asked.is_some() {
                asked
            } else if Instant::now() >= deadline && (produced || Instant::now() >= wait_first) {
                Some(Stop::Seconds)
            } else {
                None
            };
            if let Some(why) = why {
                stopper = Some(stop_in_background(procfs, port, session));
                stopped = Some((why, Instant::now()));
            }
        }
        if let Some((_, at)) = stopped
            && at.elapsed() > DRAIN_LIMIT
        {
            error = Some(format!(
                "the runtime did not end the stream within {DRAIN_LIMIT:?} of the stop"
            ));
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => match consume(&buf[..n]) {
                Flow::Continue => {}
                Flow::Produced => produced = true,
                Flow::Limit => {
                    asked.get_or_insert(Stop::Limit);
                }
                Flow::Gone => {
                    asked.get_or_insert(Stop::Disconnected);
                }
                Flow::Failed => {
                    error = Some("the stream could not be decoded".to_owned());
                    if stopped.is_none() {
                        stopper = Some(stop_in_background(procfs, port, session));
                        stopped = Some((Stop::Failed, Instant::now()));
                    }
                    break;
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                error = Some(format!("reading the stream: {e}"));
                if stopped.is_none() {
                    stopper = Some(stop_in_background(procfs, port, session));
                    stopped = Some((Stop::Failed, Instant::now()));
                }
                break;
            }
        }
    }
    // Close the stream first: a runtime that is exiting waits for it.
    drop(stream);
    let stop_error =
        stopper.and_then(|s: std::thread::JoinHandle<Option<String>>| s.join().ok().flatten());
    Some(ended(
        procfs,
        port,
        session,
        stopped.map(|(why, _)| why),
        error.or(stop_error),
        started,
    ))
}

/// Asks the runtime for the session; its stream (polled every [`POLL`])
/// and id.
fn start(
    procfs: &Procfs,
    port: &Port,
    command: &Command,
) -> Result<(std::os::unix::net::UnixStream, u64), PortError> {
    let (stream, payload) = port.request(procfs, command, ANSWER_TIMEOUT)?;
    let session = super::ipc::u64_payload(&payload).map_err(|source| PortError::Ipc {
        pid: port.pid,
        source,
    })?;
    if let Err(e) = stream.set_read_timeout(Some(POLL)) {
        let _ = port.stop_within(procfs, session, ANSWER_TIMEOUT);
        return Err(PortError::Dead {
            pid: port.pid,
            path: port.path.clone(),
            source: e,
        });
    }
    Ok((stream, session))
}

/// How the session ended: why (ours, or the process's exit, or the
/// runtime's own stop) and what went wrong.
fn ended(
    procfs: &Procfs,
    port: &Port,
    session: u64,
    stopped: Option<Stop>,
    error: Option<String>,
    started: Instant,
) -> Ended {
    let why = match stopped {
        Some(why) => why.name().to_string(),
        // The stream ended without our stop: the process exited (or was
        // killed), or someone stopped the session.
        None if !alive(procfs, port.pid) => "process exited".to_string(),
        None => "stopped by the runtime".to_string(),
    };
    tracing::info!(pid = port.pid, session, stopped = %why, "EventPipe session ended");
    Ended {
        session,
        why,
        error,
        seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    }
}

/// Runs the session `spec` asks for: answers `ready` once the runtime has
/// accepted it (with its session id) or refused, then hands the answer's
/// chunks to `send` until the stream ends. `send` returning `false` (the
/// client is gone) or `cancel` stops the session.
pub fn trace(
    procfs: &Procfs,
    port: &Port,
    spec: &TraceSpec,
    cancel: &AtomicBool,
    ready: impl FnOnce(Result<u64, PortError>),
    mut send: impl FnMut(Vec<u8>) -> bool,
) {
    let command = Command::CollectTracing {
        buffer_mb: spec.buffer_mb,
        rundown: spec.rundown,
        providers: spec.providers.clone(),
    };
    let mut out = Output {
        format: spec.format,
        decoder: Decoder::new(),
        held: Vec::new(),
        raw: false,
        pid: port.pid,
        sent: 0,
        limit: spec.limit,
        error: None,
    };
    let mut client_gone = false;
    let ended = run(
        procfs,
        port,
        &command,
        Window::seconds(Duration::from_secs(u64::from(spec.seconds))),
        cancel,
        ready,
        |bytes| {
            let chunk = out.take(bytes);
            if client_gone || (!chunk.is_empty() && !send(chunk)) {
                client_gone = true;
                Flow::Gone
            } else if out.format == TraceFormat::Json && out.error.is_some() {
                // Nothing more can be decoded (nettrace is passed on raw).
                Flow::Failed
            } else if out.limit_reached() {
                Flow::Limit
            } else {
                Flow::Continue
            }
        },
    );
    let Some(ended) = ended else { return };
    if client_gone {
        return;
    }
    let summary = TraceSummary {
        events: out.sent,
        dropped: out.decoder.dropped(),
        stopped: ended.why,
        complete: out.decoder.ended() && !out.raw,
        seconds: ended.seconds,
        session: ended.session,
        error: out.error.clone().or(ended.error),
    };
    let last = out.finish(summary);
    if !last.is_empty() {
        send(last);
    }
}
