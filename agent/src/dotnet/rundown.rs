//! Managed method names for CPU profiles, from the runtime itself: while a
//! profile samples a .NET process, an EventPipe session with the runtime's
//! JIT and loader keywords records every method compiled meanwhile
//! (`MethodLoadVerbose`, tier-ups included), and its rundown at the stop
//! lists every method that has code (`MethodDCEndVerbose`, ReadyToRun
//! methods included) with its start address, size and names. No perf map,
//! no environment variable, no restart.
//!
//! [`MethodTable`] is the pure part: events in, a range lookup out. A newer
//! method at an address replaces what was there (code memory is reused
//! after unloads and re-JITs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Map, Value};

use super::ipc::{Command, ProviderConfig};
use super::metadata::{self, RUNTIME};
use super::nettrace::{Decoder, NettraceError};
use super::port::{Port, PortError};
use super::session::{self, Flow};
use crate::procfs::Procfs;

/// One method's native code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// First byte of its code.
    pub start: u64,
    /// Bytes of code.
    pub size: u32,
    /// `Namespace.Type.Method(args)`.
    pub name: String,
    /// The runtime's id of its module.
    pub module_id: Option<u64>,
    /// How this code was compiled (`MethodFlags`' optimization tier).
    pub tier: Option<&'static str>,
}

/// The optimization tier in an event's `MethodFlags` (bits 7–9, as
/// .NET Core 3.0 and later set them).
pub fn tier(flags: u64) -> Option<&'static str> {
    Some(match (flags >> 7) & 0x7 {
        1 => "MinOptJitted",
        2 => "Optimized",
        3 => "QuickJitted",
        4 => "OptimizedTier1",
        5 => "ReadyToRun",
        6 => "PreJIT",
        _ => return None,
    })
}

/// Methods by address.
#[derive(Debug, Default, Clone)]
pub struct MethodTable {
    methods: BTreeMap<u64, Method>,
    /// Module id → IL path.
    modules: BTreeMap<u64, String>,
}

/// `Namespace.Type` + `Method` + the parameter list of an ETW signature
/// (`"int64  (int32,class System.String)"` → `(int32,class System.String)`).
pub fn method_name(namespace: &str, name: &str, signature: &str) -> String {
    let params = signature.find('(').map_or("", |i| &signature[i..]);
    if namespace.is_empty() {
        format!("{name}{params}")
    } else {
        format!("{namespace}.{name}{params}")
    }
}

/// The method a method-load or rundown event describes; `None` for other
/// events and for methods without code.
pub fn method_of(event: &str, fields: &Map<String, Value>) -> Option<Method> {
    if !matches!(
        event,
        "MethodLoadVerbose" | "MethodDCStartVerbose" | "MethodDCEndVerbose"
    ) {
        return None;
    }
    let u = |k: &str| fields.get(k).and_then(Value::as_u64);
    let s = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default();
    let start = u("MethodStartAddress")?;
    let size = u32::try_from(u("MethodSize")?).ok()?;
    (start != 0 && size != 0).then(|| Method {
        start,
        size,
        name: method_name(s("MethodNamespace"), s("MethodName"), s("MethodSignature")),
        module_id: u("ModuleID"),
        tier: u("MethodFlags").and_then(tier),
    })
}

impl MethodTable {
    /// Takes one decoded runtime or rundown event; others are ignored.
    pub fn add_event(&mut self, event: &str, fields: &Map<String, Value>) {
        let u = |k: &str| fields.get(k).and_then(Value::as_u64);
        let s = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default();
        match event {
            "MethodLoadVerbose" | "MethodDCStartVerbose" | "MethodDCEndVerbose" => {
                if let Some(method) = method_of(event, fields) {
                    self.insert(method);
                }
            }
            "ModuleLoad" | "ModuleDCStart" | "ModuleDCEnd" => {
                if let Some(id) = u("ModuleID") {
                    let path = s("ModuleILPath");
                    // Rundown lists methods before their modules: the
                    // module is looked up when a method is.
                    if !path.is_empty() {
                        self.modules.insert(id, path.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    /// Adds a method (its code replaces whatever it overlaps).
    pub fn insert(&mut self, method: Method) {
        let end = method.start + u64::from(method.size);
        // Whatever overlaps the new code is gone.
        let overlapping: Vec<u64> = self
            .methods
            .range(..end)
            .rev()
            .take_while(|(_, m)| m.start + u64::from(m.size) > method.start)
            .map(|(s, _)| *s)
            .collect();
        for start in overlapping {
            self.methods.remove(&start);
        }
        self.methods.insert(method.start, method);
    }

    /// The files of the modules the runtime named (assemblies as it
    /// loaded them).
    pub fn module_paths(&self) -> impl Iterator<Item = &str> {
        self.modules.values().map(String::as_str)
    }

    /// The method whose code holds `addr`, and its module's file.
    pub fn lookup(&self, addr: u64) -> Option<(&Method, Option<&str>)> {
        let (_, m) = self.methods.range(..=addr).next_back()?;
        let module = m
            .module_id
            .and_then(|id| self.modules.get(&id))
            .map(String::as_str);
        (addr < m.start + u64::from(m.size)).then_some((m, module))
    }

    /// Every method, by address.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.methods.values()
    }

    /// Methods known.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// Whether no method is known.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }
}

/// Why the runtime did not name its methods.
#[derive(Debug, thiserror::Error)]
pub enum RundownError {
    /// The diagnostic port cannot be reached, or refused the session.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The runtime's event stream cannot be decoded.
    #[error("the runtime's method events cannot be decoded: {0}")]
    Stream(#[source] NettraceError),
    /// The session failed before any method was named.
    #[error("the rundown session failed: {0}")]
    Session(String),
    /// The worker thread panicked.
    #[error("the rundown worker panicked")]
    Panicked,
    /// The session stopped before the runtime accepted it.
    #[error("the method-load session stopped before it started")]
    NotStarted,
}

/// A background session collecting method names for one process.
#[derive(Debug)]
pub struct Rundown {
    stop: Arc<AtomicBool>,
    worker: std::thread::JoinHandle<Result<MethodTable, RundownError>>,
}

impl Rundown {
    /// Starts collecting for `pid` (a .NET process).
    pub fn start(procfs: &Procfs, pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (procfs, flag) = (procfs.clone(), stop.clone());
        let worker = std::thread::spawn(move || collect(&procfs, pid, &flag));
        Self { stop, worker }
    }

    /// Stops the session and returns what it named (after the rundown).
    pub fn finish(self) -> Result<MethodTable, RundownError> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.worker.join().map_err(|_| RundownError::Panicked)?
    }
}

/// The methods of a .NET process that have code now: a rundown session
/// started and stopped at once.
pub fn current(procfs: &Procfs, pid: u32) -> Result<MethodTable, RundownError> {
    Rundown::start(procfs, pid).finish()
}

/// Method loads of a running .NET process as they happen (tier-ups
/// included): what probes follow a method's new versions with. Stopped
/// when dropped.
#[derive(Debug)]
pub struct Follower {
    stop: Arc<AtomicBool>,
    loads: std::sync::mpsc::Receiver<Method>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// Starts following `pid`; returns once the runtime has accepted the
    /// session (or why it did not).
    pub fn start(procfs: &Procfs, pid: u32) -> Result<Self, RundownError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (procfs, flag) = (procfs.clone(), stop.clone());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (loads_tx, loads) = std::sync::mpsc::channel();
        let worker =
            std::thread::spawn(move || follow(&procfs, pid, &flag, &started_tx, &loads_tx));
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop,
                loads,
                worker: Some(worker),
            }),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e.into())
            }
            Err(_) => {
                let _ = worker.join();
                Err(RundownError::NotStarted)
            }
        }
    }

    /// The methods loaded since the last call.
    pub fn loaded(&self) -> Vec<Method> {
        self.loads.try_iter().collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn follow(
    procfs: &Procfs,
    pid: u32,
    stop: &AtomicBool,
    started: &std::sync::mpsc::Sender<Result<(), PortError>>,
    loads: &std::sync::mpsc::Sender<Method>,
) {
    let port = match Port::find(procfs, pid) {
        Ok(port) => port,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let mut decoder = Decoder::new();
    let command = Command::CollectTracing {
        buffer_mb: 16,
        rundown: false,
        providers: vec![ProviderConfig {
            name: RUNTIME.to_string(),
            keywords: 0x10,
            level: 5,
            filter: None,
        }],
    };
    session::run(
        procfs,
        &port,
        &command,
        session::Window::seconds(Duration::from_secs(86_400)),
        stop,
        |result| {
            let _ = started.send(result.map(drop));
        },
        |bytes| {
            decoder.feed(bytes);
            loop {
                let event = match decoder.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => return Flow::Continue,
                    Err(e) => {
                        tracing::warn!(pid, error = %e, "the JIT follower's stream cannot be decoded; it stops");
                        return Flow::Failed;
                    }
                };
                let m = &event.metadata;
                if let Some(fields) = m.fields.as_deref()
                    && let Ok(values) = metadata::decode(fields, &event.payload)
                    && let Some(method) = method_of(&m.name, &values)
                    && loads.send(method).is_err()
                {
                    return Flow::Gone;
                }
            }
        },
    );
}

/// JIT (0x10) and Loader (0x8) at verbose: method and module loads with
/// names; the rundown comes with every session's stop.
fn command() -> Command {
    Command::CollectTracing {
        buffer_mb: 64,
        rundown: true,
        providers: vec![ProviderConfig {
            name: RUNTIME.to_string(),
            keywords: 0x18,
            level: 5,
            filter: None,
        }],
    }
}

fn collect(procfs: &Procfs, pid: u32, stop: &AtomicBool) -> Result<MethodTable, RundownError> {
    let port = Port::find(procfs, pid)?;
    let mut decoder = Decoder::new();
    let mut table = MethodTable::default();
    let mut failed = None;
    let mut start_error = None;
    let ended = session::run(
        procfs,
        &port,
        &command(),
        // Until the profile ends (finish), at most a day.
        session::Window::seconds(Duration::from_secs(86_400)),
        stop,
        |started| start_error = started.err(),
        |bytes| {
            decoder.feed(bytes);
            loop {
                match decoder.next_event() {
                    Ok(Some(event)) => {
                        let m = &event.metadata;
                        if let Some(fields) = m.fields.as_deref()
                            && let Ok(values) = metadata::decode(fields, &event.payload)
                        {
                            table.add_event(&m.name, &values);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed.get_or_insert(e);
                        return Flow::Failed;
                    }
                }
            }
            Flow::Continue
        },
    );
    if let Some(e) = start_error {
        return Err(e.into());
    }
    let error = failed
        .map(RundownError::Stream)
        .or(ended.and_then(|e| e.error).map(RundownError::Session));
    if let Some(e) = error {
        if table.is_empty() {
            return Err(e);
        }
        tracing::warn!(pid, error = %e, "rundown incomplete");
    }
    Ok(table)
}

/// Event fields from pairs, for tests.
#[cfg(test)]
pub(crate) fn fields_of(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// A method table of `(start, namespace, name)`, each method 0x100 bytes
/// of `void ()`, for tests.
#[cfg(test)]
pub(crate) fn table_of(methods: &[(u64, &str, &str)]) -> MethodTable {
    let mut table = MethodTable::default();
    for (start, namespace, name) in methods {
        table.add_event(
            "MethodLoadVerbose",
            &fields_of(&[
                ("MethodStartAddress", (*start).into()),
                ("MethodSize", 0x100.into()),
                ("MethodNamespace", (*namespace).into()),
                ("MethodName", (*name).into()),
                ("MethodSignature", "void  ()".into()),
            ]),
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fields_of as fields;

    fn load(table: &mut MethodTable, event: &str, start: u64, size: u64, name: &str) {
        table.add_event(
            event,
            &fields(&[
                ("MethodStartAddress", start.into()),
                ("MethodSize", size.into()),
                ("ModuleID", 7.into()),
                ("MethodNamespace", "Shop.Cart".into()),
                ("MethodName", name.into()),
                ("MethodSignature", "int64  (int32)".into()),
            ]),
        );
    }

    #[test]
    fn names_and_ranges() {
        let mut t = MethodTable::default();
        load(&mut t, "MethodDCEndVerbose", 0x1000, 0x100, "Total");
        // Rundown sends modules after their methods.
        t.add_event(
            "ModuleDCEnd",
            &fields(&[
                ("ModuleID", 7.into()),
                ("ModuleILPath", "/app/Shop.dll".into()),
            ]),
        );
        load(&mut t, "MethodLoadVerbose", 0x2000, 0x10, "Add");
        let (m, module) = t.lookup(0x10ff).unwrap();
        assert_eq!(m.name, "Shop.Cart.Total(int32)");
        assert_eq!(module, Some("/app/Shop.dll"));
        assert!(t.lookup(0x1100).is_none(), "one past the end");
        assert!(t.lookup(0xfff).is_none());
        assert_eq!(t.lookup(0x2000).unwrap().0.name, "Shop.Cart.Add(int32)");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn newer_code_replaces_what_it_overlaps() {
        let mut t = MethodTable::default();
        load(&mut t, "MethodLoadVerbose", 0x1000, 0x100, "Old");
        load(&mut t, "MethodLoadVerbose", 0x1080, 0x100, "New");
        assert_eq!(t.lookup(0x1090).unwrap().0.name, "Shop.Cart.New(int32)");
        assert!(t.lookup(0x1010).is_none(), "the old method is gone");
        // Zero-sized or unplaced methods are not entries.
        load(&mut t, "MethodLoadVerbose", 0, 0x10, "Nowhere");
        load(&mut t, "MethodLoadVerbose", 0x5000, 0, "Empty");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn signatures_give_the_parameter_list() {
        assert_eq!(
            method_name("A.B", "C", "instance void  (class System.String,int32)"),
            "A.B.C(class System.String,int32)"
        );
        assert_eq!(method_name("", "Main", ""), "Main");
    }

    /// The rundown the 3.1 runtime sent for the sample app.
    #[test]
    fn the_recorded_rundown_names_the_apps_methods() {
        let mut d = Decoder::new();
        d.feed(include_bytes!("../../tests/fixtures/dotnet/burst.nettrace"));
        let mut t = MethodTable::default();
        let mut burst = None;
        while let Some(e) = d.next_event().unwrap() {
            let values =
                metadata::decode(e.metadata.fields.as_deref().unwrap_or(&[]), &e.payload).unwrap();
            if e.metadata.name == "MethodDCEndVerbose" && values["MethodName"] == "Burst" {
                burst = values["MethodStartAddress"].as_u64();
            }
            t.add_event(&e.metadata.name, &values);
        }
        assert!(t.len() > 100);
        let (m, module) = t.lookup(burst.unwrap() + 1).unwrap();
        assert_eq!(m.name, "Tracecar.Sample.Work.Burst(int32,bool)");
        assert!(module.unwrap().ends_with("/App.dll"), "{module:?}");
    }
}
