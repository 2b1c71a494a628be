//! Collection rules: captures taken when something happens, without a
//! person watching, kept in the artifact store.
//!
//! A rule ([`spec::Rule`]) has a trigger, a filter (which processes), its
//! actions and its limits. Rules come from the pod's ConfigMap (the
//! `tracecar.dev/rules` annotation; the webhook mounts it and the agent
//! reads every file in it at start and again when it changes) and from
//! the API (`POST /v1/rules`).
//!
//! **The watch.** One thread reads, every [`TICK`], the pod's processes
//! (`/proc/PID/stat`) and, for the triggers that need them, their
//! containers' cgroups ([`cgroup`]). The triggers a watch of their own
//! reads (an EventPipe session, a probe, the signal watch) wake it when
//! they see something ([`watch::Wake`]), and their rules are read then,
//! at most every [`WOKEN_GAP`], with the processes of the last tick.
//! Each reading that finds a rule's condition true is a *firing*. A firing runs the rule's actions, in
//! order, on a thread of its own, unless something holds it back
//! ([`gate::HeldBack`]): the rule's previous firing still running, its
//! cooldown, its `max_actions` per `window_seconds`, every capture slot
//! taken (the API's, shared), or the agent near its memory limit. A
//! firing held back is counted in the rule's tally, never queued: a
//! condition that stays true fires every tick and runs again only when
//! its limits allow.
//!
//! **Per process or per container.** The `cpu` trigger watches each
//! process the filter matches. The `memory`, `pressure` and `oom_kill`
//! triggers watch each container (cgroup) of those processes, and their
//! actions capture its lowest-PID matched process.
//!
//! **OOM kills.** When a container's `oom_kill` count goes up, the rule
//! writes a record (`oom-kill.json`) naming the artifacts taken of that
//! container in the [`OOM_LOOKBACK`] before, then runs its actions on
//! what is left of it. The evidence itself comes from a `memory` rule,
//! which fires while the process still lives.
//!
//! Layers: [`spec`] and [`action`] (pure: documents to rules and their
//! actions), [`gate`] (pure: limits; the CPU hold is
//! [`crate::process::CpuWatch`], shared with `/v1/profile/trigger`),
//! [`cgroup`] (the kernel's files), [`store`] (the artifacts), `readings`
//! (which processes match, what their triggers read), `execute` (the
//! actions' executors, which call each capture's own), and the engine
//! here.

pub mod action;
pub mod cgroup;
pub mod dotnet;
mod execute;
pub mod fatal;
pub mod gate;
pub mod latency;
mod readings;
pub mod spec;
pub mod store;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracecar_api::rules::{RuleStatus, RuleTally, RulesReport};
use tracecar_api::security::{Feature, Features};

use crate::memory::Memory;
use crate::params::SpecError;
use crate::process::CpuWatch;
use crate::procfs::Procfs;
use gate::{HeldBack, History};
use spec::Rule;
use store::{Store, unix_ms};

/// How often the watch reads.
pub const TICK: Duration = Duration::from_millis(250);
/// How often the ConfigMap's directory is read again.
const CONFIG_EVERY: Duration = Duration::from_secs(2);
/// The shortest time between two readings (one woken by a watch, then
/// the next).
const WOKEN_GAP: Duration = Duration::from_millis(20);
/// How far back an OOM kill's record looks for artifacts of its
/// container.
pub const OOM_LOOKBACK: Duration = Duration::from_secs(900);
/// The most ConfigMap files read.
const CONFIG_FILES: usize = 64;

/// What the rules' actions use.
#[derive(Debug, Clone)]
pub struct Context {
    /// The pod's `/proc`.
    pub procfs: Procfs,
    /// Where `/proc` is (for `/proc/pressure`).
    pub proc_root: PathBuf,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The agent's memory bound.
    pub memory: Arc<Memory>,
    /// The capture slots the API shares.
    pub captures: Arc<tokio::sync::Semaphore>,
    /// The probe slots the API shares (a `latency` rule's probe holds
    /// one).
    pub probes: Arc<tokio::sync::Semaphore>,
    /// Where ptrace core files are written while taken.
    pub dump_dir: PathBuf,
    /// Wakes the rules' thread when a watch sees something.
    pub wake: Arc<watch::Wake>,
    /// The LTTng side (`lttng_record` actions), when the agent runs one.
    pub lttng: Option<Arc<crate::lttng::Lttng>>,
    /// The features the agent serves.
    pub features: Features,
    /// The pod's name, for artifacts.
    pub pod: Option<String>,
    /// The ConfigMap's directory, when the pod has one.
    pub config_dir: Option<PathBuf>,
}

/// Why a rule was not added or removed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The document is not a valid rule.
    #[error("{}", .0.message)]
    Spec(SpecError),
    /// A rule has this name already.
    #[error("a rule named {} is in force already", tracecar_api::quoted(.0))]
    Exists(String),
    /// More than [`spec::MAX_RULES`] rules.
    #[error("{0} rules would be in force; at most {max}", max = spec::MAX_RULES)]
    TooMany(usize),
    /// An action needs a feature this agent does not serve.
    #[error("rule {rule}: {action} needs the {} feature, which this agent does not serve", .feature.as_str())]
    Feature {
        /// The rule.
        rule: String,
        /// The action.
        action: String,
        /// The feature.
        feature: Feature,
    },
    /// No rule has this name.
    #[error("no rule named {}", tracecar_api::quoted(.0))]
    NotFound(String),
    /// The rule is the ConfigMap's.
    #[error("rule {name} comes from the pod's ConfigMap ({file})")]
    FromConfigMap {
        /// The rule.
        name: String,
        /// Its source (`configmap:FILE`).
        file: String,
    },
}

/// A rule in force.
#[derive(Debug)]
struct Entry {
    /// Unique for the agent's life: an action's thread finds its rule by
    /// it, not by a name a replaced rule may share.
    id: u64,
    rule: Rule,
    source: String,
    tally: RuleTally,
    history: History,
    cpu: HashMap<(u32, u64), CpuWatch>,
    /// The containers an `oom_kill` rule has read, with their count:
    /// read on after their processes are gone (the kill is what ends
    /// them).
    oom: HashMap<PathBuf, (cgroup::Cgroup, u64)>,
    /// The `signal` trigger's watches, by process.
    watchers: HashMap<(u32, u64), fatal::Watcher>,
    /// The `exception`, `counter` and `latency` triggers' watches, by
    /// process.
    watches: HashMap<(u32, u64), watch::Watch<watch::Seen>>,
    /// Processes whose watch ended or could not start: not watched
    /// again.
    watched: std::collections::HashSet<(u32, u64)>,
    /// The flight recorder of its `lttng_snapshot` action, once open.
    flight: Option<Arc<crate::lttng::Flight>>,
    /// When to try opening it again, after it failed.
    flight_retry: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<Entry>,
    config_errors: Vec<String>,
    config_seen: Option<Vec<(String, Result<String, String>)>>,
}

/// The rules in force, the store, and the watch.
#[derive(Debug)]
pub struct Rules {
    context: Context,
    store: Arc<Store>,
    state: Mutex<State>,
    next_id: AtomicU64,
    stop: Arc<AtomicBool>,
}

/// The watch's thread: dropping this stops it (and cancels running
/// profiles).
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Rules {
    /// Rules over `store`, none in force yet (the ConfigMap's are read by
    /// the watch when it starts).
    pub fn new(context: Context, store: Arc<Store>) -> Arc<Self> {
        Arc::new(Self {
            context,
            store,
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Starts the watch.
    pub fn start(self: &Arc<Self>) -> std::io::Result<Running> {
        let rules = self.clone();
        let thread = std::thread::Builder::new()
            .name("rules".to_owned())
            .spawn(move || rules.watch())?;
        Ok(Running {
            stop: self.stop.clone(),
            thread: Some(thread),
        })
    }

    /// Adds the rules of a document (`POST /v1/rules`): all or none.
    pub fn add(&self, text: &str) -> Result<Vec<RuleStatus>, RulesError> {
        let rules = spec::parse(text).map_err(RulesError::Spec)?;
        let mut state = crate::sync::lock(&self.state);
        self.check(&state, &rules)?;
        let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
        for rule in rules {
            let entry = self.entry(rule, "api".to_owned());
            state.entries.push(entry);
        }
        Ok(state
            .entries
            .iter()
            .filter(|e| names.contains(&e.rule.name))
            .map(status)
            .collect())
    }

    /// Whether `rules` may be put in force beside those in force.
    fn check(&self, state: &State, rules: &[Rule]) -> Result<(), RulesError> {
        let kept = &state.entries;
        for rule in rules {
            if kept.iter().any(|e| e.rule.name == rule.name) {
                return Err(RulesError::Exists(rule.name.clone()));
            }
            if let Some(feature) = rule
                .trigger
                .feature()
                .filter(|f| !self.context.features.contains(*f))
            {
                return Err(RulesError::Feature {
                    rule: rule.name.clone(),
                    action: format!("its trigger ({})", rule.trigger.describe()),
                    feature,
                });
            }
            if let Some(action) = rule
                .actions
                .iter()
                .find(|a| !self.context.features.contains(a.feature()))
            {
                return Err(RulesError::Feature {
                    rule: rule.name.clone(),
                    action: action.describe(),
                    feature: action.feature(),
                });
            }
        }
        if kept.len() + rules.len() > spec::MAX_RULES {
            return Err(RulesError::TooMany(kept.len() + rules.len()));
        }
        Ok(())
    }

    fn entry(&self, rule: Rule, source: String) -> Entry {
        Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            rule,
            source,
            tally: RuleTally::default(),
            history: History::default(),
            cpu: HashMap::new(),
            oom: HashMap::new(),
            watchers: HashMap::new(),
            watches: HashMap::new(),
            watched: std::collections::HashSet::new(),
            flight: None,
            flight_retry: None,
        }
    }

    /// Removes an API rule (`DELETE /v1/rules/NAME`); a firing under way
    /// finishes.
    pub fn remove(&self, name: &str) -> Result<(), RulesError> {
        let mut state = crate::sync::lock(&self.state);
        let index = state
            .entries
            .iter()
            .position(|e| e.rule.name == name)
            .ok_or_else(|| RulesError::NotFound(name.to_owned()))?;
        if state.entries[index].source != "api" {
            return Err(RulesError::FromConfigMap {
                name: name.to_owned(),
                file: state.entries[index].source.clone(),
            });
        }
        let entry = state.entries.remove(index);
        // Its watches end outside the lock: a session may take a moment
        // to see that it is cancelled.
        drop(state);
        drop(entry);
        Ok(())
    }

    /// The rules in force.
    pub fn list(&self) -> Vec<RuleStatus> {
        crate::sync::lock(&self.state)
            .entries
            .iter()
            .map(status)
            .collect()
    }

    /// For `/v1/capabilities`.
    pub fn report(&self) -> RulesReport {
        let state = crate::sync::lock(&self.state);
        RulesReport {
            rules: state.entries.iter().map(status).collect(),
            errors: state.config_errors.clone(),
            store: self.store.report(),
        }
    }

    /// Reads the ConfigMap's files when they changed, and puts their
    /// rules in force in place of its previous ones. A file that cannot
    /// be read is reported, and the others' rules are in force; a rule
    /// left as it was keeps its tally and limits.
    pub fn reload_config(&self) {
        let Some(dir) = &self.context.config_dir else {
            return;
        };
        let files = read_config(dir);
        let mut state = crate::sync::lock(&self.state);
        if state.config_seen.as_ref() == Some(&files) {
            return;
        }
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        for (name, text) in &files {
            let parsed = text.as_ref().map_err(Clone::clone).and_then(|text| {
                spec::parse(text).map_err(|e| format!("{} ({})", e.message, e.hint))
            });
            match parsed {
                Ok(parsed) => {
                    rules.extend(parsed.into_iter().map(|r| (r, format!("configmap:{name}"))))
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        let mut old: Vec<Entry> = Vec::new();
        let mut kept = Vec::new();
        for entry in std::mem::take(&mut state.entries) {
            if entry.source.starts_with("configmap:") {
                old.push(entry);
            } else {
                kept.push(entry);
            }
        }
        state.entries = kept;
        for (rule, source) in rules {
            if let Err(e) = self.check(&state, std::slice::from_ref(&rule)) {
                errors.push(format!("{source}: {e}"));
                continue;
            }
            let entry = match old.iter().position(|e| e.rule == rule) {
                Some(i) => {
                    let mut same = old.swap_remove(i);
                    same.source = source;
                    same
                }
                None => self.entry(rule, source),
            };
            state.entries.push(entry);
        }
        for error in &errors {
            tracing::warn!(dir = %dir.display(), error, "a rule of the ConfigMap is not in force");
        }
        state.config_errors = errors;
        state.config_seen = Some(files);
    }

    /// Reads every rule each [`TICK`], and the watches' rules when one
    /// wakes it (at most one such reading each [`WOKEN_GAP`]), and the
    /// ConfigMap every [`CONFIG_EVERY`].
    fn watch(self: Arc<Self>) {
        let mut processes = readings::Processes::default();
        let mut config_read: Option<Instant> = None;
        let mut next_full = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if config_read.is_none_or(|at| at.elapsed() >= CONFIG_EVERY) {
                self.reload_config();
                config_read = Some(now);
            }
            let full = now >= next_full;
            if !crate::sync::lock(&self.state).entries.is_empty() {
                if full {
                    self.open_flights();
                    processes.refresh(&self.context.procfs);
                }
                self.evaluate(&mut processes, !full);
            }
            if full {
                next_full = now + TICK;
            }
            // Until the next tick, unless a watch wakes it first: then its
            // rules are read, with the processes of the last tick.
            std::thread::sleep(WOKEN_GAP);
            self.context
                .wake
                .wait(next_full.saturating_duration_since(Instant::now()));
        }
    }

    /// Opens the flight recorders of the rules with an `lttng_snapshot`
    /// action that have none (or whose snapshot failed: the session
    /// daemon restarted, say), outside the rules' lock: LTTng's commands
    /// take a while. One that fails is tried again after
    /// [`watch::RETRY`], its error in the rule's tally.
    fn open_flights(&self) {
        let Some(lttng) = &self.context.lttng else {
            return;
        };
        let now = Instant::now();
        let wanted: Vec<(u64, crate::lttng::RecordSpec)> = crate::sync::lock(&self.state)
            .entries
            .iter()
            .filter(|e| e.flight.as_ref().is_none_or(|f| f.failed()))
            .filter(|e| e.flight_retry.is_none_or(|at| now >= at))
            .filter_map(|e| e.rule.flight().map(|spec| (e.id, spec)))
            .collect();
        for (id, spec) in wanted {
            let opened = lttng.flight(&spec);
            let mut state = crate::sync::lock(&self.state);
            // Removed meanwhile: the flight is dropped (destroyed) below,
            // outside the lock.
            let Some(entry) = state.entries.iter_mut().find(|e| e.id == id) else {
                drop(state);
                drop(opened);
                continue;
            };
            let old = match opened {
                Ok(flight) => {
                    entry.flight_retry = None;
                    entry.flight.replace(Arc::new(flight))
                }
                Err(e) => {
                    entry.tally.last_error = Some(format!("lttng_snapshot's flight recorder: {e}"));
                    entry.flight_retry = Some(now + watch::RETRY);
                    None
                }
            };
            // A failed one is destroyed outside the lock.
            drop(state);
            drop(old);
        }
    }

    /// One reading of every rule, or only of those whose trigger is a
    /// watch's (`watches_only`: what woke the thread).
    fn evaluate(self: &Arc<Self>, processes: &mut readings::Processes, watches_only: bool) {
        let now = Instant::now();
        let mut state = crate::sync::lock(&self.state);
        let mut starts = Vec::new();
        for entry in &mut state.entries {
            if watches_only && !entry.rule.trigger.is_watched() {
                continue;
            }
            let firings = match processes.firings(entry, &self.context, now) {
                Ok(firings) => firings,
                Err(e) => {
                    entry.tally.last_error = Some(e);
                    continue;
                }
            };
            for firing in firings {
                entry.tally.fired += 1;
                entry.tally.last_fired_unix_ms = Some(unix_ms(firing.at));
                match self.admit(entry, now) {
                    Ok(permit) => {
                        entry.history.started(now);
                        entry.tally.ran += 1;
                        starts.push((
                            entry.id,
                            entry.rule.clone(),
                            firing,
                            permit,
                            entry.flight.clone(),
                        ));
                    }
                    Err(held) => {
                        *entry
                            .tally
                            .held_back
                            .entry(held.name().to_owned())
                            .or_default() += 1;
                    }
                }
            }
        }
        drop(state);
        for (id, rule, firing, permit, flight) in starts {
            let rules = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rule-{}", rule.name))
                .spawn(move || {
                    let outcome = execute::run_all(
                        &rule,
                        &firing,
                        flight.as_deref(),
                        &rules.context,
                        &rules.store,
                        &rules.stop,
                    );
                    drop(permit);
                    rules.finished(id, &rule, outcome);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a rule's actions");
            }
        }
    }

    /// A slot for a firing that its own limits let through.
    fn admit(
        &self,
        entry: &mut Entry,
        now: Instant,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, HeldBack> {
        entry.history.admit(&entry.rule.limits, now)?;
        if entry.rule.actions.is_empty() {
            return Ok(None);
        }
        self.context.memory.admit().map_err(|_| HeldBack::Memory)?;
        self.context
            .captures
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| HeldBack::Slots)
    }

    fn finished(&self, id: u64, rule: &Rule, outcome: Outcome) {
        let mut state = crate::sync::lock(&self.state);
        let Some(entry) = state.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        entry.history.ended(&rule.limits, Instant::now());
        entry.tally.artifacts += outcome.artifacts;
        entry.tally.failed += outcome.errors.len() as u64;
        match outcome.errors.last() {
            Some(e) => entry.tally.last_error = Some(e.clone()),
            None => entry.tally.last_error = None,
        }
    }
}

fn status(entry: &Entry) -> RuleStatus {
    RuleStatus {
        name: entry.rule.name.clone(),
        source: entry.source.clone(),
        trigger: entry.rule.trigger.describe(),
        actions: entry
            .rule
            .actions
            .iter()
            .map(spec::Action::describe)
            .collect(),
        rule: entry.rule.document.clone(),
        tally: entry.tally.clone(),
    }
}

/// The ConfigMap's files, by name, sorted: every regular file (a key's
/// link into `..data` included) not starting with `.`, at most
/// [`CONFIG_FILES`], each at most [`spec::MAX_DOCUMENT_BYTES`] + 1 bytes
/// (so that a larger one is refused by the parser, not cut).
fn read_config(dir: &std::path::Path) -> Vec<(String, Result<String, String>)> {
    use std::io::Read as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Result<String, String>)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if name.starts_with('.') || !e.path().is_file() {
                return None;
            }
            let mut text = String::new();
            let limit = (spec::MAX_DOCUMENT_BYTES + 1) as u64;
            match std::fs::File::open(e.path())
                .and_then(|f| f.take(limit).read_to_string(&mut text))
            {
                Ok(_) => Some((name, Ok(text))),
                Err(err) => Some((name, Err(format!("cannot be read: {err}")))),
            }
        })
        .take(CONFIG_FILES)
        .collect();
    files.sort();
    files
}

/// One condition found true: what fired, for which process or container.
#[derive(Debug, Clone)]
pub struct Firing {
    /// When.
    pub at: SystemTime,
    /// The process to capture, if any is left.
    pub pid: Option<u32>,
    /// Its name.
    pub comm: Option<String>,
    /// The value read.
    pub value: f64,
    /// What fired, in words, with the value.
    pub text: String,
    /// The container's cgroup, for the triggers that read one.
    pub cgroup: Option<PathBuf>,
    /// New OOM kills (the `oom_kill` trigger).
    pub oom_kills: Option<u64>,
    /// For the `signal` trigger: lets the stopped process die of its
    /// signal once every copy of the firing is dropped (after its
    /// actions, or at once when its limits hold it back).
    pub resume: Option<Arc<fatal::Resume>>,
}

/// What a firing's actions left.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Artifacts written.
    pub artifacts: u64,
    /// The actions that failed, with why.
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests;
