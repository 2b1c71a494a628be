//! A flight recorder: a session in LTTng's snapshot mode, recording into
//! its ring buffers only (overwrite mode: the newest events kept), for as
//! long as it is held; each [`Flight::snapshot`] writes what the buffers
//! hold at that moment (`lttng snapshot record`), the events from before
//! it, as a [`Recording`]. A collection rule's `lttng_snapshot` action
//! holds one while the rule is in force.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracecar_api::lttng::Summary;

use super::cli::{LttngError, run};
use super::command::{self, ChannelPlan};
use super::mi;
use super::record::Lttng;
use super::session::{RecordError, Recording, Session, TraceDir, open_session};
use super::spec::RecordSpec;

/// A snapshot-mode session and its output directory, both removed when
/// dropped.
pub struct Flight {
    session: Mutex<Session>,
    name: String,
    // Dropped after the session: nothing writes into it then.
    trace: TraceDir,
    disk_limit_bytes: u64,
    failed: AtomicBool,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight").field("name", &self.name).finish()
    }
}

impl Lttng {
    /// Starts a flight recorder of `spec`'s events (its `seconds` and
    /// `format` are not used), its ring buffers sized as a recording's.
    pub fn flight(&self, spec: &RecordSpec) -> Result<Flight, RecordError> {
        if !self.sessiond.status().running {
            return Err(RecordError::NoDaemon);
        }
        let name = self.next_session_name();
        let trace = TraceDir(self.trace_root.join(&name));
        std::fs::create_dir_all(trace.path()).map_err(|source| RecordError::TraceDir {
            path: trace.path().to_owned(),
            source,
        })?;
        let plan = ChannelPlan::for_budget(self.disk_budget, self.cpus);
        let session = open_session(
            &name,
            command::create_snapshot(&name, trace.path()),
            command::enable_flight_channel(&name, &plan),
            spec,
        )?;
        tracing::info!(session = %name, "flight recorder on");
        Ok(Flight {
            session: Mutex::new(session),
            name,
            trace,
            disk_limit_bytes: plan.subbuf_size
                * u64::from(plan.subbuf_count)
                * u64::from(self.cpus.max(1)),
            failed: AtomicBool::new(false),
        })
    }
}

impl Flight {
    /// Whether a snapshot failed (its session is gone, with a restarted
    /// daemon): the holder opens another.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The session's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes what the ring buffers hold now (one snapshot at a time), and
    /// answers it as a recording whose directory is removed when dropped.
    /// The session keeps recording.
    pub fn snapshot(&self) -> Result<Recording, RecordError> {
        let began = Instant::now();
        let _one = crate::sync::lock(&self.session);
        // What an earlier snapshot that failed half-way left.
        for old in self.taken() {
            drop(TraceDir(old));
        }
        if let Err(e) = run(&command::snapshot_record(&self.name)) {
            self.failed.store(true, Ordering::Relaxed);
            return Err(e.into());
        }
        let discarded = run(&command::list_session(&self.name))
            .and_then(|xml| mi::discarded(&xml).map_err(LttngError::from))?;
        let mut taken = self.taken();
        let dir = taken.pop().ok_or_else(|| {
            RecordError::Rejected(format!(
                "lttng snapshot record wrote nothing under {}",
                self.trace.path().display()
            ))
        })?;
        for extra in taken {
            drop(TraceDir(extra));
        }
        Ok(Recording {
            trace: TraceDir(dir),
            summary: Summary {
                session: self.name.clone(),
                events: None,
                discarded,
                disk_limit_bytes: self.disk_limit_bytes,
                disk_limit_reached: false,
                unparsed_lines: 0,
                conversion_error: None,
                setup_ms: 0.0,
                teardown_ms: began.elapsed().as_secs_f64() * 1000.0,
            },
        })
    }

    /// The snapshot directories in the output, oldest first (LTTng names
    /// them `snapshot-N-DATE-TIME-I`, N counting up).
    fn taken(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<(u64, PathBuf)> = std::fs::read_dir(self.trace.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name
                    .strip_prefix("snapshot-")?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some((n, e.path()))
            })
            .collect();
        dirs.sort();
        dirs.into_iter().map(|(_, path)| path).collect()
    }
}
