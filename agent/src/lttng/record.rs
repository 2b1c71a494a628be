//! The LTTng side of the agent: the [`Lttng`] facade over the supervised
//! session daemon, and recording sessions.
//!
//! A session is destroyed and its trace directory removed on every path:
//! [`super::session::Session`] and [`TraceDir`] do it when dropped
//! (recording finished, client gone, error), and [`Lttng::clean_leftovers`]
//! does it at start-up for what a killed agent left behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracecar_api::lttng::Summary;

use super::cli::{LttngError, run};
use super::command::{self, ChannelPlan};
use super::mi::{self, Tracepoint};
use super::session::{
    RecordError, Recording, Session, TraceDir, limit_reached, open_session, process_alive,
};
use super::sessiond::Sessiond;
use super::spec::RecordSpec;

/// The LTTng side of the agent.
#[derive(Debug)]
pub struct Lttng {
    pub(super) sessiond: Sessiond,
    pub(super) trace_root: PathBuf,
    pub(super) disk_budget: u64,
    pub(super) cpus: u32,
    pub(super) sequence: AtomicU64,
}

impl Lttng {
    /// Starts the daemon's supervisor; traces go under `trace_root`, each
    /// session capped at `disk_budget` bytes.
    pub fn start(trace_root: PathBuf, disk_budget: u64, cpus: u32) -> std::sync::Arc<Self> {
        // Absolute: LTTng names a live session's chunks by absolute path,
        // and only chunks under the session's own directory are read.
        let trace_root = std::path::absolute(&trace_root).unwrap_or(trace_root);
        let root = trace_root.clone();
        // An earlier agent with this PID left its sessions before the first
        // daemon answered; later restarts must spare this agent's traces.
        let first = AtomicBool::new(true);
        let sessiond = Sessiond::start(crate::procfs::Procfs::default(), move || {
            Self::clean_leftovers(&root, first.swap(false, Ordering::Relaxed))
        });
        std::sync::Arc::new(Self {
            sessiond,
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

    pub(super) fn next_session_name(&self) -> String {
        command::session_name(
            std::process::id(),
            self.sequence.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// Opens a session of `spec` named after this agent, with its trace
    /// directory under the trace root; refused when no daemon runs. Both
    /// are removed when dropped.
    pub(super) fn open(
        &self,
        spec: &RecordSpec,
    ) -> Result<(Session, TraceDir, ChannelPlan), RecordError> {
        if !self.sessiond.status().running {
            return Err(RecordError::NoDaemon);
        }
        let name = self.next_session_name();
        let trace = TraceDir(self.trace_root.join(&name));
        std::fs::create_dir_all(&self.trace_root).map_err(|source| RecordError::TraceDir {
            path: self.trace_root.clone(),
            source,
        })?;
        let plan = ChannelPlan::for_budget(self.disk_budget, self.cpus);
        let session = open_session(
            &name,
            command::create(&name, trace.path()),
            command::enable_channel(&name, &plan),
            spec,
        )?;
        Ok((session, trace, plan))
    }

    /// Records one session for `spec.seconds`, or until `cancel` is set.
    pub fn record(&self, spec: &RecordSpec, cancel: &AtomicBool) -> Result<Recording, RecordError> {
        let began = Instant::now();
        let (mut session, trace, plan) = self.open(spec)?;
        let name = session.name.clone();
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
                conversion_error: None,
                setup_ms: setup.as_secs_f64() * 1000.0,
                teardown_ms: teardown.as_secs_f64() * 1000.0,
            },
            trace,
        })
    }
}
