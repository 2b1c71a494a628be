//! `/v1/lttng/live`: a session streamed through `lttng-relayd` and
//! `babeltrace2` while it records.

use std::io::{BufRead as _, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracecar_api::SummaryLine;
use tracecar_api::lttng::LiveSummary;

use super::cli::{LttngError, run};
use super::command::{self, ChannelPlan};
use super::mi;
use super::output::{Sink, babeltrace};
use super::pretty;
use super::record::{Lttng, RELAY_DIR, RecordError};
use super::session::{TraceDir, kill_quietly, open_session};
use super::spec::RecordSpec;

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
pub(super) const LIVE_DRAIN_MS: u64 = 300;
