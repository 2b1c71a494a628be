//! One recording session and its trace directory, each removed when
//! dropped, and the facts read off a finished trace.

use std::path::{Path, PathBuf};

use tracecar_api::lttng::Summary;

use super::cli::{LttngError, run};
use super::command;
use super::spec::RecordSpec;

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
    /// The session daemon answered a rotation with a chunk outside the
    /// session's own trace directory (not what the agent's own daemon
    /// does); nothing there is read or removed.
    #[error("lttng rotate named {path}, outside the session's trace directory; refused")]
    ForeignChunk {
        /// What it named.
        path: PathBuf,
    },
    /// babeltrace2 could not be started.
    #[error("cannot run babeltrace2: {0} (is babeltrace2 installed?)")]
    Babeltrace(#[source] std::io::Error),
}

/// A live session; destroyed when dropped unless already destroyed.
pub(super) struct Session {
    pub(super) name: String,
    pub(super) destroyed: bool,
}

impl Session {
    /// `stopped`: the session was stopped, so its data are on disk already.
    pub(super) fn destroy(&mut self, stopped: bool) -> Result<(), LttngError> {
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
pub struct TraceDir(pub(super) PathBuf);

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
    pub(super) fn has_trace(&self) -> bool {
        has_metadata(self.trace.path())
    }
}

/// Whether a trace directory (or one under it) holds CTF metadata.
pub(super) fn has_metadata(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let path = e.path();
            if path.is_dir() {
                has_metadata(&path)
            } else {
                e.file_name() == "metadata"
            }
        })
}

/// Whether any stream of the trace used all `count` of its files.
pub(super) fn limit_reached(dir: &Path, count: u32) -> bool {
    pub(super) fn walk(dir: &Path, names: &mut Vec<String>) {
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

pub(super) fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Creates (with `create`), configures and starts a session: the channel
/// (with `channel`), the events (LTTng's refusal is the client's error),
/// the contexts, the PID tracker. The session is destroyed if a later
/// step fails.
pub(super) fn open_session(
    name: &str,
    create: Vec<String>,
    channel: Vec<String>,
    spec: &RecordSpec,
) -> Result<Session, RecordError> {
    run(&create)?;
    let session = Session {
        name: name.to_owned(),
        destroyed: false,
    };
    run(&channel)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_limit_is_reached_when_a_stream_uses_its_last_file() {
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
    pub(super) fn trace_directories_are_removed_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trace = dir.path().join("tracecar-1-1");
        std::fs::create_dir_all(trace.join("ust")).expect("mkdir");
        drop(TraceDir(trace.clone()));
        assert!(!trace.exists());
        // Already gone is fine.
        drop(TraceDir(trace));
    }
}
