//! The executors of a firing's actions: each calls its endpoint's own
//! executor and writes what it answers into the artifact store.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use tracecar_api::rules::Artifact;

use super::spec::{Action, Rule};
use super::store::Store;
use super::{Context, Firing, OOM_LOOKBACK, Outcome, unix_ms};
use crate::dotnet::spec::{CountersSpec, ExceptionsSpec, GcdumpFormat, GcdumpSpec, TraceSpec};
use crate::lttng::RecordSpec;

/// Runs a firing's actions in order; one that fails does not stop the
/// next.
pub(super) fn run_all(
    rule: &Rule,
    firing: &Firing,
    flight: Option<&crate::lttng::Flight>,
    context: &Context,
    store: &Store,
    cancel: &Arc<AtomicBool>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut keep = |result: Result<Artifact, String>, what: &str| match result {
        Ok(artifact) => {
            tracing::info!(rule = %rule.name, artifact = %artifact.id, bytes = artifact.bytes, "rule action done");
            outcome.artifacts += 1;
        }
        Err(e) => {
            tracing::warn!(rule = %rule.name, action = what, error = %e, "rule action failed");
            outcome.errors.push(format!("{what}: {e}"));
        }
    };
    if let Some(kills) = firing.oom_kills {
        keep(
            oom_record(rule, firing, kills, context, store),
            "oom-kill record",
        );
    }
    for action in &rule.actions {
        let what = action.describe();
        keep(
            run(action, rule, firing, flight, context, store, cancel),
            &what,
        );
    }
    outcome
}

fn record(
    rule: &Rule,
    firing: &Firing,
    context: &Context,
    action: String,
    started: SystemTime,
) -> Artifact {
    Artifact {
        id: String::new(),
        rule: rule.name.clone(),
        action,
        trigger: firing.text.clone(),
        value: firing.value,
        fired_unix_ms: unix_ms(firing.at),
        started_unix_ms: unix_ms(started),
        ended_unix_ms: 0,
        pod: context.pod.clone(),
        pid: firing.pid,
        comm: firing.comm.clone(),
        cgroup: firing.cgroup.as_ref().map(|c| c.display().to_string()),
        file_name: String::new(),
        content_type: "application/octet-stream".to_owned(),
        bytes: 0,
    }
}

/// What an OOM kill leaves: when, in which container, and the artifacts
/// taken of it in the [`OOM_LOOKBACK`] before.
fn oom_record(
    rule: &Rule,
    firing: &Firing,
    kills: u64,
    context: &Context,
    store: &Store,
) -> Result<Artifact, String> {
    let started = SystemTime::now();
    let cgroup = firing.cgroup.as_ref().map(|c| c.display().to_string());
    let since =
        unix_ms(started).saturating_sub(u64::try_from(OOM_LOOKBACK.as_millis()).unwrap_or(0));
    let before: Vec<String> = store
        .list()
        .into_iter()
        .filter(|a| a.cgroup == cgroup && a.started_unix_ms >= since)
        .map(|a| a.id)
        .collect();
    let body = serde_json::json!({
        "oom_kills": kills,
        "cgroup": cgroup,
        "pod": context.pod,
        "fired_unix_ms": unix_ms(firing.at),
        "captured_before": before,
    });
    let mut artifact = record(rule, firing, context, "oom-kill record".to_owned(), started);
    artifact.file_name = "oom-kill.json".to_owned();
    artifact.content_type = "application/json".to_owned();
    store
        .put(artifact, |f| {
            serde_json::to_writer_pretty(&mut *f, &body).map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())
}

fn run(
    action: &Action,
    rule: &Rule,
    firing: &Firing,
    flight: Option<&crate::lttng::Flight>,
    context: &Context,
    store: &Store,
    cancel: &Arc<AtomicBool>,
) -> Result<Artifact, String> {
    // A snapshot reads the flight recorder, not a process: an OOM kill
    // that left none still has one.
    let pid = match (firing.pid, action) {
        (Some(pid), _) => pid,
        (None, Action::LttngSnapshot(_)) => 0,
        (None, _) => return Err("no process of the container is left to capture".to_owned()),
    };
    let procfs = context.procfs.pinned();
    let mut artifact = record(rule, firing, context, action.describe(), SystemTime::now());
    let (file_name, content_type) = action.artifact();
    artifact.file_name = file_name.replace("PID", &pid.to_string());
    artifact.content_type = content_type.to_owned();
    let put = |artifact: Artifact, write: &mut dyn FnMut(&mut Sink) -> Result<(), String>| {
        store
            .put(artifact, |file| {
                let mut sink = Sink::new(file, store.budget());
                write(&mut sink)?;
                sink.failed.map_or(Ok(()), Err)
            })
            .map_err(|e| e.to_string())
    };
    let port = || crate::dotnet::port::Port::find(&procfs, pid).map_err(|e| e.to_string());
    match action {
        Action::Profile(spec) => {
            let mut spec = (**spec).clone();
            spec.pids = Some(vec![pid]);
            let profiled = if spec.mode.from_runtime() {
                crate::profile::reported::reported(&spec, &procfs, cancel)
                    .map_err(|e| e.to_string())?
            } else {
                let (plan, meta) =
                    crate::profile::plan_here(&spec, &procfs).map_err(|e| e.to_string())?;
                crate::profile::profile(&plan, spec.format, &meta, &procfs, cancel, &context.memory)
                    .map_err(|e| e.to_string())?
            };
            let mut body = Some(profiled.body);
            put(artifact, &mut |sink| {
                sink.all(body.take().unwrap_or_default())
            })
        }
        Action::Dump(spec) => {
            let mut spec = spec.clone();
            spec.pid = pid;
            // A dump larger than the store could not be kept.
            let budget_mb = u32::try_from(store.budget() >> 20)
                .unwrap_or(u32::MAX)
                .max(1);
            spec.limit_mb = spec.limit_mb.min(budget_mb);
            let mut dump =
                crate::dump::take(&procfs, &spec, &context.dump_dir).map_err(|e| e.to_string())?;
            artifact.action = format!("{} via={}", artifact.action, dump.via);
            put(artifact, &mut |sink| {
                std::io::copy(&mut dump.file, &mut *sink.file)
                    .map(drop)
                    .map_err(|e| format!("copying the core file: {e}"))
            })
        }
        Action::Uprobe(spec) => {
            let mut spec = (**spec).clone();
            spec.pid = Some(pid);
            // As `/v1/uprobe`: a probe slot while attached.
            let _slot = context
                .probes
                .clone()
                .try_acquire_owned()
                .map_err(|_| "every probe slot is taken".to_owned())?;
            let plan =
                crate::uprobe::resolve::resolve(&spec, &procfs).map_err(|e| e.to_string())?;
            let mut plan = Some(plan);
            put(artifact, &mut |sink| {
                let plan = plan.take().ok_or("the probe ran already")?;
                sink.stream(|attached, send| {
                    crate::uprobe::stream::stream(&spec, plan, &procfs, cancel, attached, send);
                });
                Ok(())
            })
        }
        Action::DotnetTrace(spec) => {
            let spec = TraceSpec {
                pid,
                ..spec.clone()
            };
            let port = port()?;
            put(artifact, &mut |sink| {
                sink.stream(|started, send| {
                    crate::dotnet::session::trace(&procfs, &port, &spec, cancel, started, send);
                });
                Ok(())
            })
        }
        Action::DotnetCounters(spec) => {
            let spec = CountersSpec {
                pid,
                ..spec.clone()
            };
            let port = port()?;
            put(artifact, &mut |sink| {
                let sink = RefCell::new(sink);
                crate::dotnet::counters::stream(
                    &procfs,
                    &port,
                    &spec,
                    cancel,
                    |started| sink.borrow_mut().started(started),
                    |snapshot| {
                        let mut sink = sink.borrow_mut();
                        match crate::dotnet::counters::encode(&snapshot, spec.format) {
                            Ok(chunk) => sink.send(&chunk),
                            Err(e) => sink.fail(e.to_string()),
                        }
                    },
                );
                Ok(())
            })
        }
        Action::DotnetExceptions(spec) => {
            let spec = ExceptionsSpec {
                pid,
                ..spec.clone()
            };
            let port = port()?;
            put(artifact, &mut |sink| {
                sink.stream(|started, send| {
                    crate::dotnet::exceptions::stream(&procfs, &port, &spec, cancel, started, send);
                });
                Ok(())
            })
        }
        Action::DotnetGcdump(spec) => {
            let spec = GcdumpSpec {
                pid,
                ..spec.clone()
            };
            let report = crate::dotnet::gcdump::collect(&procfs, &port()?, &spec, cancel)
                .map_err(|e| e.to_string())?;
            let comm = firing.comm.clone().unwrap_or_else(|| format!("pid-{pid}"));
            // As `/v1/dotnet/gcdump` answers.
            let body = match spec.format {
                GcdumpFormat::Table => crate::dotnet::gcdump::table(&report).into_bytes(),
                GcdumpFormat::Json => serde_json::to_vec(&report).map_err(|e| e.to_string())?,
                GcdumpFormat::Pprof => {
                    crate::profile::heap::pprof(&report, &comm).map_err(|e| e.to_string())?
                }
            };
            let mut body = Some(body);
            put(artifact, &mut |sink| {
                sink.all(body.take().unwrap_or_default())
            })
        }
        Action::LttngRecord(spec) => {
            let spec = RecordSpec {
                pids: Some(vec![pid]),
                ..spec.clone()
            };
            let lttng = context
                .lttng
                .as_ref()
                .ok_or_else(|| "LTTng tracing is off in this agent".to_owned())?;
            let mut recording = lttng.record(&spec, cancel).map_err(|e| e.to_string())?;
            put(artifact, &mut |sink| {
                crate::lttng::output::write(&mut recording, spec.format, |chunk| sink.send(&chunk))
                    .map_err(|e| format!("converting the trace: {e}"))
            })
        }
        Action::LttngSnapshot(spec) => {
            let flight = flight.ok_or_else(|| {
                "the rule's flight recorder is not open (its last_error said why)".to_owned()
            })?;
            let mut recording = flight.snapshot().map_err(|e| e.to_string())?;
            put(artifact, &mut |sink| {
                crate::lttng::output::write(&mut recording, spec.format, |chunk| sink.send(&chunk))
                    .map_err(|e| format!("converting the snapshot: {e}"))
            })
        }
    }
}

/// Where a capture writes its artifact: the store's file, at most the
/// store's budget (a capture that would pass it is stopped there, and
/// its artifact refused).
struct Sink<'f> {
    file: &'f mut std::fs::File,
    left: u64,
    budget: u64,
    failed: Option<String>,
}

impl<'f> Sink<'f> {
    /// A sink into `file` of at most `budget` bytes.
    fn new(file: &'f mut std::fs::File, budget: u64) -> Self {
        Self {
            file,
            left: budget,
            budget,
            failed: None,
        }
    }

    /// Writes `chunk`; false once the capture must stop.
    fn send(&mut self, chunk: &[u8]) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let len = chunk.len() as u64;
        if len > self.left {
            return self.fail(format!(
                "the artifact passed the store's budget ({} MiB); the capture was stopped there",
                self.budget >> 20
            ));
        }
        self.left -= len;
        match self.file.write_all(chunk) {
            Ok(()) => true,
            Err(e) => self.fail(format!("writing the artifact: {e}")),
        }
    }

    /// Runs a streaming executor into the artifact: `run` gets the
    /// executor's two callbacks (its start, its chunks).
    fn stream<T, E: std::fmt::Display>(
        &mut self,
        run: impl FnOnce(&mut dyn FnMut(Result<T, E>), &mut dyn FnMut(Vec<u8>) -> bool),
    ) {
        let sink = RefCell::new(self);
        run(
            &mut |started| sink.borrow_mut().started(started),
            &mut |chunk| sink.borrow_mut().send(&chunk),
        );
    }

    /// Writes the whole of an answer made in memory.
    fn all(&mut self, body: Vec<u8>) -> Result<(), String> {
        self.send(&body);
        self.failed.take().map_or(Ok(()), Err)
    }

    /// A capture's start: its error is the artifact's.
    fn started<T, E: std::fmt::Display>(&mut self, started: Result<T, E>) {
        if let Err(e) = started {
            self.fail(format!("it did not start: {e}"));
        }
    }

    /// Keeps the first failure; false, to stop the capture.
    fn fail(&mut self, why: String) -> bool {
        self.failed.get_or_insert(why);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_stops_a_capture_at_the_budget_and_keeps_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = std::fs::File::create(dir.path().join("a")).unwrap();
        let mut sink = Sink::new(&mut file, 10 << 20);
        let mut sent = 0;
        sink.stream(|started: &mut dyn FnMut(Result<(), String>), send| {
            started(Ok(()));
            // 4 MiB chunks: the third would pass 10 MiB, and nothing is
            // written after it.
            while send(vec![7; 4 << 20]) {
                sent += 1;
            }
            assert!(!send(vec![7]));
        });
        assert_eq!(sent, 2);
        let failed = sink.failed.clone().unwrap();
        assert!(failed.contains("budget (10 MiB)"), "{failed}");
        assert_eq!(file.metadata().unwrap().len(), 8 << 20);
        // A capture that did not start says why.
        let mut other = std::fs::File::create(dir.path().join("b")).unwrap();
        let mut sink = Sink::new(&mut other, 1);
        sink.stream(|started: &mut dyn FnMut(Result<(), String>), _| {
            started(Err("no port".to_owned()));
        });
        assert_eq!(sink.failed.as_deref(), Some("it did not start: no port"));
        assert_eq!(
            sink.all(Vec::new()),
            Err("it did not start: no port".to_owned())
        );
    }
}
