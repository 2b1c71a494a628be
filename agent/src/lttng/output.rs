//! A finished recording as NDJSON, babeltrace2 text or a CTF tarball.

use std::io::{BufRead as _, BufReader, Read as _, Write};
use std::process::Command;
use std::time::Duration;

use tracecar_api::SummaryLine;

use super::command;
use super::pretty;
use super::session::Recording;
use crate::child;

/// Where the output of a recording goes: `send` returns false once the
/// client has gone, which stops the conversion.
pub trait Sink: FnMut(Vec<u8>) -> bool {}
impl<F: FnMut(Vec<u8>) -> bool> Sink for F {}

/// How long babeltrace2 may print nothing before it is killed: it reads a
/// trace the app's events filled, and a conversion that hangs on it must
/// end. A healthy one prints an event at a time.
pub const BABELTRACE_STALL: Duration = Duration::from_secs(30);

/// Starts babeltrace2 with `args`, its stdout piped and watched
/// ([`BABELTRACE_STALL`]).
pub(super) fn babeltrace(
    args: Vec<String>,
) -> std::io::Result<(child::Streaming, child::StreamingStdout)> {
    child::stream_within(Command::new("babeltrace2").args(args), BABELTRACE_STALL)
        .map_err(std::io::Error::other)
}

/// Why a conversion stopped short, for the summary: babeltrace2 killed for
/// silence, or failing to be waited for.
fn conversion_error(
    finished: Result<std::process::ExitStatus, child::ChildError>,
) -> Option<String> {
    finished.err().map(|e| e.to_string())
}

/// Writes `recording` as `format`: the one choice of writer for
/// `/v1/lttng/record`.
pub fn write(
    recording: &mut Recording,
    format: super::RecordFormat,
    send: impl Sink,
) -> std::io::Result<()> {
    match format {
        super::RecordFormat::Json => write_json(recording, send),
        super::RecordFormat::Text => write_text(recording, send),
        super::RecordFormat::Ctf => write_ctf(recording, send),
    }
}

/// Writes NDJSON events, then `{"summary": …}`.
pub fn write_json(recording: &mut Recording, mut send: impl Sink) -> std::io::Result<()> {
    let mut events = 0u64;
    let mut unparsed = 0u64;
    if recording.has_trace() {
        let (child, stdout) = babeltrace(command::babeltrace_json_source(recording.trace.path()))?;
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
                // Dropping `child` kills it.
                return Ok(());
            }
        }
        recording.summary.conversion_error = conversion_error(child.finish());
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
pub fn write_text(recording: &mut Recording, mut send: impl Sink) -> std::io::Result<()> {
    if recording.has_trace() {
        let (child, mut stdout) = babeltrace(command::babeltrace_text(recording.trace.path()))?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = stdout.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            if !send(buffer[..n].to_vec()) {
                return Ok(());
            }
        }
        recording.summary.conversion_error = conversion_error(child.finish());
    }
    let mut line = b"# tracecar: ".to_vec();
    serde_json::to_writer(&mut line, &recording.summary)?;
    line.push(b'\n');
    send(line);
    Ok(())
}

/// A `Write` that hands chunks to a [`Sink`]; fails once the client is gone.
pub(super) struct SinkWriter<S: Sink>(S);

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
