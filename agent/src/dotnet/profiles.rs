//! Profiles the .NET runtime reports itself, with the managed stacks it
//! walked: allocations (`/v1/profile?mode=alloc`, from `GCAllocationTick`,
//! which the runtime raises about every 100 KB allocated, with the
//! amount since the last one and the type that crossed the mark) and lock
//! contention (`mode=contention`, from `ContentionStart` and
//! `ContentionStop`, the time between them on one thread). This module
//! gives named samples; `profile::reported` makes them a profile that
//! every stack format renders (pprof with `alloc_space` or `delay`, as Go
//! names them).
//!
//! One EventPipe session enables the runtime's GC keyword (verbose: the
//! allocation ticks) or its Contention keyword, and its JIT and Loader
//! keywords; a rundown taken once the session runs names what had code
//! before it, and the session's own method loads the rest. Stacks are
//! named at the end, when every method of the session is known.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Map, Value};

use super::ipc::{Command, ProviderConfig};
use super::nettrace::Decoder;
use super::port::{Port, PortError};
use super::rundown::{self, MethodTable};
use super::session::{self, Flow, event_json};
use crate::procfs::Procfs;

/// What the runtime reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Allocation ticks, weighted by bytes.
    Alloc,
    /// Contentions, weighted by nanoseconds waited.
    Contention,
}

impl Kind {
    /// `alloc` or `contention`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alloc => "alloc",
            Self::Contention => "contention",
        }
    }

    /// GC (0x1, verbose for the ticks) or Contention (0x4000), with JIT
    /// (0x10) and Loader (0x8).
    fn keywords(self) -> u64 {
        0x18 | match self {
            Self::Alloc => 0x1,
            Self::Contention => 0x4000,
        }
    }
}

/// Why the runtime's profile has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The session could not start.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The stream could not be decoded.
    #[error("pid {pid}'s event stream could not be read: {why}")]
    Stream {
        /// The process.
        pid: u32,
        /// What went wrong.
        why: String,
    },
}

/// A stack (instruction pointers, innermost first) and, for allocations,
/// the type allocated: what samples are counted by.
type StackKey = (Vec<u64>, Option<String>);

/// Pairs what the runtime sends into samples, counted by stack as they
/// come (a long allocation profile sends millions of ticks over a few
/// thousand stacks): memory grows with the distinct stacks, not the
/// events.
#[derive(Debug, Default)]
pub struct Samples {
    kind: Option<Kind>,
    /// Stack → (events, weight).
    by_stack: HashMap<StackKey, (u64, u64)>,
    /// Contention started, by thread: when and with which stack.
    waiting: HashMap<u64, (u64, Vec<u64>)>,
}

impl Samples {
    /// Samples of `kind`.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind: Some(kind),
            ..Self::default()
        }
    }

    /// Takes one event (`ts_ns` on the event's clock).
    pub fn add(
        &mut self,
        event: &str,
        tid: u64,
        ts_ns: u64,
        fields: &Map<String, Value>,
        stack: Vec<u64>,
    ) {
        let u = |k: &str| fields.get(k).and_then(Value::as_u64);
        match (self.kind, event) {
            (Some(Kind::Alloc), "GCAllocationTick") => {
                // V2 and later carry the 64-bit amount.
                let bytes = u("AllocationAmount64")
                    .or_else(|| u("AllocationAmount"))
                    .unwrap_or_default();
                let label = fields
                    .get("TypeName")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                self.count((stack, label), bytes);
            }
            (Some(Kind::Contention), "ContentionStart") => {
                self.waiting.insert(tid, (ts_ns, stack));
            }
            (Some(Kind::Contention), "ContentionStop") => {
                if let Some((start, stack)) = self.waiting.remove(&tid) {
                    self.count((stack, None), ts_ns.saturating_sub(start));
                }
            }
            _ => {}
        }
    }

    fn count(&mut self, key: StackKey, weight: u64) {
        let entry = self.by_stack.entry(key).or_default();
        entry.0 += 1;
        entry.1 = entry.1.saturating_add(weight);
    }

    /// The samples by stack, named from `methods`, outermost frame first,
    /// an allocation's type last (`[System.Byte[]]`), in no given order.
    pub fn named(self, methods: &MethodTable) -> Vec<NamedSample> {
        self.by_stack
            .into_iter()
            .map(|((stack, label), (count, weight))| {
                let mut frames: Vec<String> = stack
                    .iter()
                    .rev()
                    .map(|ip| {
                        methods
                            .lookup(*ip)
                            .map_or_else(|| format!("[unknown] {ip:#x}"), |(m, _)| m.name.clone())
                    })
                    .collect();
                frames.extend(label.map(|t| format!("[{t}]")));
                NamedSample {
                    frames,
                    count,
                    weight,
                }
            })
            .collect()
    }
}

/// The samples of one stack, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSample {
    /// Outermost first; `[unknown] 0x…` for code the runtime did not
    /// name; an allocation's type last, in brackets.
    pub frames: Vec<String>,
    /// Events with this stack.
    pub count: u64,
    /// Their bytes or nanoseconds, summed.
    pub weight: u64,
}

/// Runs the session for `seconds` (or until `cancel`) on `pid` and returns
/// what the runtime reported, named.
pub fn profile(
    procfs: &Procfs,
    pid: u32,
    kind: Kind,
    seconds: u32,
    cancel: &AtomicBool,
) -> Result<Vec<NamedSample>, ProfileError> {
    let port = Port::find(procfs, pid)?;
    let port = &port;
    let command = Command::CollectTracing {
        buffer_mb: 64,
        rundown: false,
        providers: vec![ProviderConfig {
            name: super::metadata::RUNTIME.to_string(),
            keywords: kind.keywords(),
            level: 5,
            filter: None,
        }],
    };
    let methods = RefCell::new(MethodTable::default());
    let started = RefCell::new(Err(None));
    let mut decoder = Decoder::new();
    let mut samples = Samples::new(kind);
    let ended = session::run(
        procfs,
        port,
        &command,
        session::Window::seconds(Duration::from_secs(u64::from(seconds))),
        cancel,
        |result| match result {
            Err(e) => *started.borrow_mut() = Err(Some(e)),
            Ok(_) => {
                *started.borrow_mut() = Ok(());
                if let Ok(table) = rundown::current(procfs, pid) {
                    *methods.borrow_mut() = table;
                }
            }
        },
        |bytes| {
            decoder.feed(bytes);
            loop {
                let event = match decoder.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => return Flow::Continue,
                    Err(_) => return Flow::Failed,
                };
                let name = event.metadata.name.clone();
                if !(name.starts_with("Method")
                    || name.starts_with("Contention")
                    || name == "GCAllocationTick")
                {
                    continue;
                }
                let line = event_json(&event, decoder.trace(), pid);
                if name.starts_with("Method") {
                    methods.borrow_mut().add_event(&name, &line.fields);
                } else {
                    samples.add(&name, line.tid, line.ts_ns, &line.fields, event.stack);
                }
            }
        },
    );
    if let Err(Some(e)) = started.into_inner() {
        return Err(e.into());
    }
    if let Some(e) = decoder.failed() {
        return Err(ProfileError::Stream {
            pid,
            why: e.to_string(),
        });
    }
    if let Some(error) = ended.and_then(|e| e.error) {
        tracing::warn!(
            pid,
            error,
            "the runtime's profile session ended with an error"
        );
    }
    Ok(samples.named(&methods.borrow()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dotnet::rundown::{fields_of as fields, table_of};

    fn table() -> MethodTable {
        table_of(&[(0x1000, "App", "Allocate"), (0x2000, "App", "Main")])
    }

    #[test]
    fn allocation_ticks_weigh_their_bytes_under_their_type() {
        let mut samples = Samples::new(Kind::Alloc);
        let tick = |amount: u64| {
            fields(&[
                ("AllocationAmount", 1.into()),
                ("AllocationAmount64", amount.into()),
                ("TypeName", "System.Byte[]".into()),
            ])
        };
        let main = vec![0x1010, 0x2010];
        samples.add("GCAllocationTick", 1, 10, &tick(100_000), main.clone());
        samples.add(
            "GCAllocationTick",
            1,
            20,
            &tick(100_500),
            vec![0x1020, 0x9000],
        );
        samples.add("GCAllocationTick", 2, 25, &tick(100_001), main);
        samples.add("GCHeapStats", 1, 30, &tick(9), vec![]);
        let mut named = samples.named(&table());
        named.sort_by_key(|n| n.weight);
        let frames = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            named,
            [
                NamedSample {
                    frames: frames(&["[unknown] 0x9000", "App.Allocate()", "[System.Byte[]]"]),
                    count: 1,
                    weight: 100_500,
                },
                NamedSample {
                    frames: frames(&["App.Main()", "App.Allocate()", "[System.Byte[]]"]),
                    count: 2,
                    weight: 200_001,
                },
            ]
        );
    }

    #[test]
    fn contention_is_the_time_between_start_and_stop_on_a_thread() {
        let mut samples = Samples::new(Kind::Contention);
        let none = Map::new();
        samples.add("ContentionStart", 4, 1_000, &none, vec![0x1010]);
        samples.add("ContentionStart", 5, 1_500, &none, vec![0x2010]);
        samples.add("ContentionStop", 4, 4_000, &none, vec![]);
        samples.add("ContentionStop", 6, 9_000, &none, vec![]);
        let named = samples.named(&table());
        assert_eq!(named.len(), 1, "thread 5 still waits; 6 never started");
        assert_eq!(named[0].frames, ["App.Allocate()"]);
        assert_eq!((named[0].count, named[0].weight), (1, 3_000));
    }
}
