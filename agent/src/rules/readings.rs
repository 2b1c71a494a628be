//! The watch's readings: which processes match, what their triggers
//! read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tracecar_api::process::Runtime;
use tracecar_api::rules::CONTAINER_ENV;

use super::cgroup::{self, Cgroup};
use super::spec::{Filter, Trigger};
use super::{Context, Entry, Firing};
use crate::process::CpuWatch;
use crate::procfs::{CLOCK_TICKS, Procfs};

/// What the watch knows of one process, kept while it lives (by PID and
/// start time, so a reused PID is a new process).
#[derive(Debug)]
struct Known {
    comm: String,
    exe_name: Option<String>,
    own: bool,
    runtime: Option<Runtime>,
    /// The container's name, once known (`Some(None)`: not in its own
    /// environment).
    container: Option<Option<String>>,
    cgroup: Option<Result<Cgroup, String>>,
    ticks: u64,
}

/// The pod's processes at the last reading.
#[derive(Debug, Default)]
pub(super) struct Processes {
    known: HashMap<(u32, u64), Known>,
    /// PID → start time, at the last reading.
    live: Vec<(u32, u64)>,
    own: Option<crate::process::Own>,
}

impl Processes {
    /// Reads every process's `stat` (its CPU time) and forgets those
    /// that are gone.
    pub(super) fn refresh(&mut self, procfs: &Procfs) {
        let own = self
            .own
            .get_or_insert_with(|| crate::process::Own::of(procfs));
        let mut live = Vec::new();
        for pid in procfs.pids().unwrap_or_default() {
            let Ok(stat) = procfs.stat(pid) else { continue };
            let key = (pid, stat.start_time);
            let exe_name = || {
                procfs
                    .exe(pid)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            };
            let known = self.known.entry(key).or_insert_with(|| Known {
                own: own.has(procfs, pid),
                exe_name: exe_name(),
                comm: stat.comm.clone(),
                runtime: None,
                container: None,
                cgroup: None,
                ticks: 0,
            });
            // An exec keeps the PID and start time (`sh -c 'exec app'`):
            // a new name is a new program, whose runtime is looked at
            // again, and so is its environment.
            if known.comm != stat.comm {
                known.comm = stat.comm.clone();
                known.exe_name = exe_name();
                known.runtime = None;
                known.container = None;
            }
            known.ticks = stat.utime + stat.stime;
            live.push(key);
        }
        let set: std::collections::HashSet<(u32, u64)> = live.iter().copied().collect();
        self.known.retain(|key, _| set.contains(key));
        self.live = live;
    }

    fn matches(&mut self, key: (u32, u64), filter: &Filter, context: &Context) -> bool {
        let Some(known) = self.known.get_mut(&key) else {
            return false;
        };
        if known.own
            || filter.pid.is_some_and(|pid| pid != key.0)
            || filter
                .name
                .as_ref()
                .is_some_and(|n| *n != known.comm && Some(n) != known.exe_name.as_ref())
        {
            return false;
        }
        if let Some(wanted) = filter.runtime {
            let procfs = &context.procfs;
            let runtime = *known.runtime.get_or_insert_with(|| {
                let maps = procfs.maps(key.0).unwrap_or_default();
                let exe = procfs.exe(key.0).ok().map(|p| p.display().to_string());
                crate::runtime::detect(exe.as_deref().unwrap_or_default(), &maps, || {
                    crate::runtime::inspect_exe(procfs, key.0)
                })
            });
            if runtime != wanted {
                return false;
            }
        }
        match &filter.container {
            Some(wanted) => self.container(key, context).as_ref() == Some(wanted),
            None => true,
        }
    }

    /// The name of `key`'s container: [`CONTAINER_ENV`] in its
    /// environment, or else in that of another process of its cgroup (a
    /// process started with an empty environment is still in its
    /// container's cgroup). The environment is the app's to write: a
    /// process that names another container is captured by that
    /// container's rules, nothing more (docs/security.md).
    fn container(&mut self, key: (u32, u64), context: &Context) -> Option<String> {
        let own = self.environ_container(key, &context.procfs);
        if own.is_some() {
            return own;
        }
        let dir = self.cgroup(key, context).ok()?.dir;
        let others: Vec<(u32, u64)> = self.live.iter().copied().filter(|k| *k != key).collect();
        let found = others.into_iter().find_map(|other| {
            let name = self.environ_container(other, &context.procfs)?;
            let same = self.cgroup(other, context).is_ok_and(|cg| cg.dir == dir);
            same.then_some(name)
        })?;
        // Kept: the cgroup is, too.
        if let Some(known) = self.known.get_mut(&key) {
            known.container = Some(Some(found.clone()));
        }
        Some(found)
    }

    /// [`CONTAINER_ENV`] in `key`'s own environment, read once (or the
    /// name [`Self::container`] found for it).
    fn environ_container(&mut self, key: (u32, u64), procfs: &Procfs) -> Option<String> {
        let known = self.known.get_mut(&key)?;
        known
            .container
            .get_or_insert_with(|| {
                procfs
                    .environ(key.0)
                    .ok()?
                    .into_iter()
                    .find(|(k, _)| k == CONTAINER_ENV)
                    .map(|(_, v)| v)
            })
            .clone()
    }

    fn cgroup(&mut self, key: (u32, u64), context: &Context) -> Result<Cgroup, String> {
        let known = self
            .known
            .get_mut(&key)
            .ok_or_else(|| format!("pid {} is gone", key.0))?;
        known
            .cgroup
            .get_or_insert_with(|| {
                let text = context
                    .procfs
                    .cgroup(key.0)
                    .map_err(|e| format!("/proc/{}/cgroup: {e}", key.0))?;
                cgroup::find(key.0, &text, &context.cgroup_root).map_err(|e| e.to_string())
            })
            .clone()
    }

    /// What `entry`'s trigger finds true at this reading.
    pub(super) fn firings(
        &mut self,
        entry: &mut Entry,
        context: &Context,
        now: Instant,
    ) -> Result<Vec<Firing>, String> {
        let matched: Vec<(u32, u64)> = self
            .live
            .clone()
            .into_iter()
            .filter(|key| self.matches(*key, &entry.rule.filter, context))
            .collect();
        let mut firings = Vec::new();
        let firing = |pid: Option<u32>, comm: Option<String>, value: f64, text: String| Firing {
            at: SystemTime::now(),
            pid,
            comm,
            value,
            text,
            cgroup: None,
            oom_kills: None,
            resume: None,
        };
        if let Trigger::Signal { signals } = entry.rule.trigger {
            return self.signal_firings(entry, &matched, signals, context);
        }
        if matches!(
            entry.rule.trigger,
            Trigger::Exception { .. } | Trigger::Counter { .. } | Trigger::Latency { .. }
        ) {
            return self.watch_firings(entry, &matched, context);
        }
        if let Trigger::Cpu {
            above_percent,
            for_seconds,
        } = entry.rule.trigger
        {
            entry.cpu.retain(|key, _| matched.contains(key));
            for key in matched {
                let Some(known) = self.known.get(&key) else {
                    continue;
                };
                let Some(watch) = entry.cpu.get_mut(&key) else {
                    entry.cpu.insert(key, CpuWatch::new(known.ticks, now));
                    continue;
                };
                let hold = Duration::from_secs(u64::from(for_seconds));
                let (percent, held) =
                    watch.read(known.ticks, now, CLOCK_TICKS, above_percent, hold);
                if held {
                    let value = (percent * 10.0).round() / 10.0;
                    firings.push(firing(
                        Some(key.0),
                        Some(known.comm.clone()),
                        value,
                        format!("cpu {value} % ≥ {above_percent} % for {for_seconds} s"),
                    ));
                }
            }
            return Ok(firings);
        }
        // Per container: the lowest matched PID of each cgroup.
        let mut containers: Vec<(Cgroup, u32)> = Vec::new();
        let mut unreadable = None;
        for key in matched {
            match self.cgroup(key, context) {
                Ok(cg) if !containers.iter().any(|(c, _)| c.dir == cg.dir) => {
                    containers.push((cg, key.0))
                }
                Ok(_) => {}
                Err(e) => unreadable = Some(e),
            }
        }
        if containers.is_empty()
            && let Some(e) = unreadable
        {
            return Err(e);
        }
        let comm = |pid: u32| {
            self.known
                .iter()
                .find(|((p, _), _)| *p == pid)
                .map(|(_, k)| k.comm.clone())
        };
        for (cg, pid) in containers {
            let dir = cg.dir.clone();
            let found = match entry.rule.trigger {
                Trigger::Memory { above_percent } => {
                    let used = cg.memory(&context.cgroup_root).map_err(|e| e.to_string())?;
                    let Some(percent) = used.percent() else {
                        return Err(format!("{} has no memory limit", dir.display()));
                    };
                    let value = (percent * 10.0).round() / 10.0;
                    (percent >= above_percent).then(|| {
                        firing(
                            Some(pid),
                            comm(pid),
                            value,
                            format!(
                                "memory {value} % ≥ {above_percent} % of the limit ({} of {} MiB)",
                                used.working_set >> 20,
                                used.limit.unwrap_or_default() >> 20
                            ),
                        )
                    })
                }
                Trigger::Pressure {
                    resource,
                    above_percent,
                } => {
                    let (value, node) = cg
                        .pressure(resource, &context.proc_root)
                        .map_err(|e| e.to_string())?;
                    (value >= above_percent).then(|| {
                        firing(
                            Some(pid),
                            comm(pid),
                            value,
                            format!(
                                "{} pressure {value} % ≥ {above_percent} %{}",
                                resource.name(),
                                if node {
                                    " (the node's: no pressure per cgroup here)"
                                } else {
                                    ""
                                }
                            ),
                        )
                    })
                }
                Trigger::OomKill => oom_firing(entry, &cg, Some(pid), comm(pid))?,
                Trigger::Cpu { .. }
                | Trigger::Signal { .. }
                | Trigger::Exception { .. }
                | Trigger::Counter { .. }
                | Trigger::Latency { .. } => None,
            };
            if let Some(mut f) = found {
                f.cgroup = Some(dir);
                firings.push(f);
            }
        }
        if entry.rule.trigger == Trigger::OomKill {
            // Containers whose processes the kill ended: read on while
            // their cgroup is there.
            let seen: Vec<PathBuf> = firings.iter().filter_map(|f| f.cgroup.clone()).collect();
            let orphans: Vec<cgroup::Cgroup> = entry
                .oom
                .values()
                .map(|(cg, _)| cg.clone())
                .filter(|cg| !self.live_in(&cg.dir) && !seen.contains(&cg.dir))
                .collect();
            for cg in orphans {
                if !cg.dir.is_dir() {
                    entry.oom.remove(&cg.dir);
                    continue;
                }
                if let Some(mut f) = oom_firing(entry, &cg, None, None)? {
                    f.cgroup = Some(cg.dir.clone());
                    firings.push(f);
                }
            }
        }
        Ok(firings)
    }

    /// The `signal` trigger: a watch for each matched process (once: a
    /// process whose watch ended or could not start is not watched
    /// again), and the fatal signals they reported.
    fn signal_firings(
        &self,
        entry: &mut Entry,
        matched: &[(u32, u64)],
        signals: u64,
        context: &Context,
    ) -> Result<Vec<Firing>, String> {
        let mut error = None;
        entry.watchers.retain(|key, watcher| {
            let keep = matched.contains(key) && !watcher.ended();
            if !keep {
                entry.watched.insert(*key);
            }
            keep
        });
        entry.watched.retain(|key| self.known.contains_key(key));
        for key in matched {
            if entry.watchers.contains_key(key) || entry.watched.contains(key) {
                continue;
            }
            match super::fatal::Watcher::start(key.0, signals, context.wake.clone()) {
                Ok(watcher) => {
                    entry.watchers.insert(*key, watcher);
                }
                Err(e) => {
                    entry.watched.insert(*key);
                    error = Some(e);
                }
            }
        }
        let mut firings = Vec::new();
        for (key, watcher) in &entry.watchers {
            for (tid, sig, resume) in watcher.fatal() {
                firings.push(Firing {
                    at: SystemTime::now(),
                    pid: Some(key.0),
                    comm: self.known.get(key).map(|k| k.comm.clone()),
                    value: f64::from(sig),
                    text: format!(
                        "{} in thread {tid}: stopped there until the actions end",
                        super::fatal::name(sig)
                    ),
                    cgroup: None,
                    oom_kills: None,
                    resume: Some(resume),
                });
            }
        }
        match error {
            Some(e) if firings.is_empty() => Err(e),
            _ => Ok(firings),
        }
    }

    /// The triggers that read a session of their own (`exception`,
    /// `counter`, `latency`): a watch for each matched process, and what
    /// they saw: at most one firing per process and reading (the
    /// exceptions thrown since the last, their count as its value; or the
    /// highest value, or latency, at or above the rule's).
    fn watch_firings(
        &self,
        entry: &mut Entry,
        matched: &[(u32, u64)],
        context: &Context,
    ) -> Result<Vec<Firing>, String> {
        use super::watch::Seen;
        entry.watches.retain(|key, _| matched.contains(key));
        entry.watched.retain(|key| self.known.contains_key(key));
        let mut error = None;
        for key in matched {
            if entry.watches.contains_key(key) || entry.watched.contains(key) {
                continue;
            }
            match start_watch(&entry.rule.trigger, key.0, context) {
                Ok(Some(watch)) => {
                    entry.watches.insert(*key, watch);
                }
                // Not .NET, for a .NET trigger: nothing to watch.
                Ok(None) => {
                    entry.watched.insert(*key);
                }
                Err(e) => {
                    entry.watched.insert(*key);
                    error = Some(e);
                }
            }
        }
        let mut firings = Vec::new();
        for (key, watch) in &entry.watches {
            let seen = watch.seen();
            let highest = |pick: &dyn Fn(&Seen) -> Option<f64>, above: f64| {
                seen.iter()
                    .filter_map(pick)
                    .filter(|v| *v >= above)
                    .reduce(f64::max)
            };
            let found = match &entry.rule.trigger {
                Trigger::Exception { kind } => {
                    let thrown: Vec<&String> = seen
                        .iter()
                        .filter_map(|s| match s {
                            Seen::Thrown(message) => Some(message),
                            _ => None,
                        })
                        .collect();
                    thrown.last().map(|last| {
                        let text =
                            format!("{} {kind} thrown, the last: {}", thrown.len(), clip(last));
                        (thrown.len() as f64, text)
                    })
                }
                Trigger::Counter {
                    provider,
                    name,
                    above,
                    ..
                } => {
                    let value = |s: &Seen| match s {
                        Seen::Value(v) => Some(*v),
                        _ => None,
                    };
                    highest(&value, *above).map(|v| (v, format!("{provider} {name} {v} ≥ {above}")))
                }
                Trigger::Latency {
                    symbol, above_ms, ..
                } => {
                    let ms = |s: &Seen| match s {
                        Seen::Latency(ns) => Some(*ns as f64 / 1e6),
                        _ => None,
                    };
                    let calls = seen
                        .iter()
                        .filter(|s| ms(s).is_some_and(|v| v >= *above_ms))
                        .count();
                    highest(&ms, *above_ms).map(|v| {
                        let v = (v * 1000.0).round() / 1000.0;
                        (v, format!("{symbol} took {v} ms ≥ {above_ms} ms ({calls} call(s) since the last reading)"))
                    })
                }
                _ => None,
            };
            if let Some((value, text)) = found {
                firings.push(Firing {
                    at: SystemTime::now(),
                    pid: Some(key.0),
                    comm: self.known.get(key).map(|k| k.comm.clone()),
                    value,
                    text,
                    cgroup: None,
                    oom_kills: None,
                    resume: None,
                });
            } else if let Some(e) = watch.error() {
                error = Some(e);
            }
        }
        match error {
            Some(e) if firings.is_empty() => Err(e),
            _ => Ok(firings),
        }
    }

    /// Whether a process the watch knows is in the cgroup `dir`.
    fn live_in(&self, dir: &std::path::Path) -> bool {
        self.known
            .values()
            .any(|k| matches!(&k.cgroup, Some(Ok(cg)) if cg.dir == dir))
    }
}

/// An `oom_kill` firing when the container's count went up since the
/// last reading.
fn oom_firing(
    entry: &mut Entry,
    cg: &Cgroup,
    pid: Option<u32>,
    comm: Option<String>,
) -> Result<Option<Firing>, String> {
    let kills = cg.oom_kills().map_err(|e| e.to_string())?;
    let before = entry.oom.insert(cg.dir.clone(), (cg.clone(), kills));
    Ok(before.filter(|(_, b)| kills > *b).map(|(_, b)| Firing {
        at: SystemTime::now(),
        pid,
        comm,
        value: (kills - b) as f64,
        text: format!("{} OOM kill(s) in the container", kills - b),
        cgroup: None,
        oom_kills: Some(kills - b),
        resume: None,
    }))
}

/// The watch of `pid` a trigger reads, if it reads one of its own;
/// `Ok(None)` for a .NET trigger and a process that is not .NET.
fn start_watch(
    trigger: &Trigger,
    pid: u32,
    context: &Context,
) -> Result<Option<super::watch::Watch<super::watch::Seen>>, String> {
    use super::dotnet::{self, Watched};
    match trigger {
        Trigger::Exception { kind } => dotnet::start(
            &context.procfs,
            pid,
            Watched::Exception(kind.clone()),
            context.wake.clone(),
        ),
        Trigger::Counter {
            provider,
            name,
            quantile,
            interval,
            ..
        } => dotnet::start(
            &context.procfs,
            pid,
            Watched::Counter {
                provider: provider.clone(),
                name: name.clone(),
                quantile: quantile.clone(),
                interval: *interval,
            },
            context.wake.clone(),
        ),
        Trigger::Latency { symbol, module, .. } => {
            let probed = super::latency::Probed {
                symbol: symbol.clone(),
                module: module.clone(),
            };
            super::latency::start(
                &context.procfs,
                pid,
                probed,
                context.probes.clone(),
                context.wake.clone(),
            )
            .map(Some)
        }
        _ => Ok(None),
    }
}

/// At most 200 characters of an app's message, for a trigger's text.
fn clip(message: &str) -> String {
    let mut chars = message.chars();
    let head: String = chars.by_ref().take(200).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}
