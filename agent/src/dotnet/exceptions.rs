//! `/v1/dotnet/exceptions`: first-chance exceptions of a .NET process as
//! they are thrown, with their type, message and managed stack, and a
//! summary by type and throw site (what dotnet-monitor's exceptions
//! feature gives, from outside the process).
//!
//! One EventPipe session enables the runtime's Exception keyword (its
//! `ExceptionThrown` event carries the stack the runtime walked) and its
//! JIT and Loader keywords (the methods compiled meanwhile). The methods
//! that had code before the session are named by a rundown taken once the
//! session runs, so that nothing compiled in between is missed.
//!
//! Events come in per-thread buffers: an exception thrown in a method's
//! new code can arrive before the event of the tiering thread that
//! compiled it. An exception whose stack holds an address no method
//! covers yet waits (with those after it, in order) until the table
//! names it or [`HOLD`] has passed, looked at as the stream delivers and
//! at its end; the rest go out as they arrive. Frames
//! of the runtime's own exception dispatch (`System.Runtime.EH.*`, .NET 9
//! and later) are left out: the first frame is where the app threw.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tracecar_api::SummaryLine;
use tracecar_api::dotnet::{ExceptionEvent, ExceptionsSummary, ThrowSite};

use super::ipc::{Command, ProviderConfig};
use super::nettrace::Decoder;
use super::port::{Port, PortError};
use super::rundown::{self, MethodTable};
use super::session::{self, Flow, event_json};
use super::spec::{ExceptionsFormat, ExceptionsSpec};
use crate::procfs::Procfs;

/// How long an exception waits for the methods of its stack to be named.
pub const HOLD: Duration = Duration::from_millis(500);

/// Exceptions waiting at most: past it the oldest goes out as named as it
/// is (an app throwing from code not named yet cannot grow the queue).
const MAX_WAITING: usize = 10_000;

/// The frames of the runtime's own exception dispatch.
const DISPATCH: &str = "System.Runtime.EH.";

/// The runtime's keywords the session enables: Exception (0x8000), JIT
/// (0x10) and Loader (0x8), verbose (method loads carry names then).
const KEYWORDS: u64 = 0x8000 | 0x10 | 0x8;

fn command() -> Command {
    Command::CollectTracing {
        buffer_mb: 64,
        rundown: false,
        providers: vec![ProviderConfig {
            name: super::metadata::RUNTIME.to_string(),
            keywords: KEYWORDS,
            level: 5,
            filter: None,
        }],
    }
}

/// Counts exceptions by type and throw site.
#[derive(Debug, Default)]
pub struct Sites {
    counts: BTreeMap<(String, String), u64>,
}

impl Sites {
    /// Counts one exception.
    pub fn add(&mut self, exception: &ExceptionEvent) {
        let site = exception.stack.first().cloned().unwrap_or_default();
        *self
            .counts
            .entry((exception.kind.clone(), site))
            .or_default() += 1;
    }

    /// Every type and site, the most frequent first.
    pub fn by_site(&self) -> Vec<ThrowSite> {
        let mut sites: Vec<ThrowSite> = self
            .counts
            .iter()
            .map(|((kind, site), count)| ThrowSite {
                kind: kind.clone(),
                site: site.clone(),
                count: *count,
            })
            .collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.count));
        sites
    }

    /// Exceptions counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// An `ExceptionThrown` event as the answer has it: its fields, and its
/// stack (instruction pointers, innermost first) named from `methods`.
pub fn exception_of(
    ts_ns: u64,
    pid: u32,
    tid: u64,
    fields: &Map<String, Value>,
    stack: &[u64],
    methods: &MethodTable,
) -> ExceptionEvent {
    let text = |k: &str| {
        fields
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    ExceptionEvent {
        ts_ns,
        pid,
        tid,
        kind: text("ExceptionType"),
        message: text("ExceptionMessage"),
        hresult: format!(
            "{:#010x}",
            fields
                .get("ExceptionHRESULT")
                .and_then(Value::as_u64)
                .unwrap_or_default()
        ),
        stack: stack
            .iter()
            .map(|ip| {
                methods
                    .lookup(*ip)
                    .map_or_else(|| format!("[unknown] {ip:#x}"), |(m, _)| m.name.clone())
            })
            .skip_while(|name| name.starts_with(DISPATCH))
            .collect(),
    }
}

/// An exception as it arrived: named when it leaves the queue.
#[derive(Debug)]
struct Thrown {
    ts_ns: u64,
    tid: u64,
    fields: Map<String, Value>,
    stack: Vec<u64>,
    arrived: Instant,
}

/// Exceptions in arrival order, each let out once every address of its
/// stack is named or it has waited [`HOLD`].
#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Thrown>,
}

impl Queue {
    /// The exceptions that may go now (all of them with `all`), named.
    fn ready(&mut self, pid: u32, methods: &MethodTable, all: bool) -> Vec<ExceptionEvent> {
        let mut out = Vec::new();
        while let Some(front) = self.waiting.front() {
            let named = front.stack.iter().all(|ip| methods.lookup(*ip).is_some());
            let full = self.waiting.len() > MAX_WAITING;
            if !(all || named || full || front.arrived.elapsed() >= HOLD) {
                break;
            }
            let Some(t) = self.waiting.pop_front() else {
                break;
            };
            out.push(exception_of(
                t.ts_ns, pid, t.tid, &t.fields, &t.stack, methods,
            ));
        }
        out
    }
}

/// Streams the exceptions `spec` asks for to `send` (JSON lines, then the
/// summary; or the summary alone). `ready` is answered once the runtime
/// has accepted the session (with its id) or refused.
pub fn stream(
    procfs: &Procfs,
    port: &Port,
    spec: &ExceptionsSpec,
    cancel: &AtomicBool,
    ready: impl FnOnce(Result<u64, PortError>),
    mut send: impl FnMut(Vec<u8>) -> bool,
) {
    let methods = RefCell::new(MethodTable::default());
    let naming_error = RefCell::new(None);
    let mut decoder = Decoder::new();
    let mut queue = Queue::default();
    let mut out = Out {
        sites: Sites::default(),
        json: spec.format == ExceptionsFormat::Json,
        limit: spec.limit.map(u64::from),
        gone: false,
    };
    let ended = session::run(
        procfs,
        port,
        &command(),
        session::Window::seconds(Duration::from_secs(u64::from(spec.seconds))),
        cancel,
        |started| {
            let ok = started.is_ok();
            ready(started);
            if ok {
                // What had code before the session; what is compiled from
                // now on comes in the session's own stream.
                match rundown::current(procfs, port.pid) {
                    Ok(table) => *methods.borrow_mut() = table,
                    Err(e) => *naming_error.borrow_mut() = Some(e.to_string()),
                }
            }
        },
        |bytes| {
            decoder.feed(bytes);
            loop {
                let event = match decoder.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(_) => return Flow::Failed,
                };
                let name = event.metadata.name.as_str();
                if name != "ExceptionThrown" && !name.starts_with("Method") {
                    continue;
                }
                let line = event_json(&event, decoder.trace(), spec.pid);
                if name == "ExceptionThrown" {
                    queue.waiting.push_back(Thrown {
                        ts_ns: line.ts_ns,
                        tid: line.tid,
                        fields: line.fields,
                        stack: event.stack,
                        arrived: Instant::now(),
                    });
                } else {
                    methods.borrow_mut().add_event(name, &line.fields);
                }
            }
            out.take(queue.ready(spec.pid, &methods.borrow(), false), &mut send)
        },
    );
    out.take(queue.ready(spec.pid, &methods.borrow(), true), &mut send);
    let Some(ended) = ended else { return };
    if out.gone {
        return;
    }
    let summary = ExceptionsSummary {
        exceptions: out.sites.total(),
        by_site: out.sites.by_site(),
        dropped: decoder.dropped(),
        complete: decoder.ended(),
        stopped: ended.why,
        seconds: ended.seconds,
        error: ended
            .error
            .or_else(|| decoder.failed().map(|e| e.to_string()))
            .or_else(|| {
                naming_error
                    .into_inner()
                    .map(|e| format!("stacks are not named: {e}"))
            }),
    };
    if out.json {
        send_json(&SummaryLine { summary }, &mut send);
    } else {
        send_json(&summary, &mut send);
    }
}

/// Where named exceptions go: counted, and sent as lines (json) until
/// the limit.
#[derive(Debug)]
struct Out {
    sites: Sites,
    json: bool,
    limit: Option<u64>,
    gone: bool,
}

impl Out {
    /// Counts and sends `exceptions` (none past the limit); what the
    /// session should do next.
    fn take(
        &mut self,
        exceptions: Vec<ExceptionEvent>,
        send: &mut impl FnMut(Vec<u8>) -> bool,
    ) -> Flow {
        for exception in exceptions {
            if self.gone || self.limit.is_some_and(|l| self.sites.total() >= l) {
                break;
            }
            self.sites.add(&exception);
            if self.json && !send_json(&exception, send) {
                self.gone = true;
            }
        }
        if self.gone {
            Flow::Gone
        } else if self.limit.is_some_and(|l| self.sites.total() >= l) {
            Flow::Limit
        } else {
            Flow::Continue
        }
    }
}

/// Sends `value` as one JSON line; `false` when the client is gone or the
/// value cannot be written (logged: a line is never sent half).
fn send_json(value: &impl serde::Serialize, send: &mut impl FnMut(Vec<u8>) -> bool) -> bool {
    match serde_json::to_vec(value) {
        Ok(mut line) => {
            line.push(b'\n');
            send(line)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize an exceptions line; the stream stops");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dotnet::rundown::{fields_of as fields, table_of};

    #[test]
    fn exceptions_are_named_and_counted_by_site() {
        let methods = table_of(&[
            (0x1000, "App.Thrower", "Fail"),
            (0x2000, "App.Thrower", "Run"),
            (0x3000, "System.Runtime.EH", "DispatchEx"),
        ]);
        let thrown = fields(&[
            ("ExceptionType", "System.InvalidOperationException".into()),
            ("ExceptionMessage", "boom".into()),
            ("ExceptionHRESULT", 0x8013_1509u64.into()),
        ]);
        // The runtime's own dispatch frame (.NET 9+) is not the site.
        let e = exception_of(
            5,
            7,
            8,
            &thrown,
            &[0x3010, 0x1010, 0x2020, 0x9000],
            &methods,
        );
        assert_eq!(e.kind, "System.InvalidOperationException");
        assert_eq!(
            (e.message.as_str(), e.hresult.as_str()),
            ("boom", "0x80131509")
        );
        assert_eq!(
            e.stack,
            [
                "App.Thrower.Fail()",
                "App.Thrower.Run()",
                "[unknown] 0x9000"
            ]
        );
        let mut sites = Sites::default();
        sites.add(&e);
        sites.add(&e);
        sites.add(&exception_of(6, 7, 8, &thrown, &[], &methods));
        assert_eq!(sites.total(), 3);
        let by = sites.by_site();
        assert_eq!(
            (by[0].count, by[0].site.as_str()),
            (2, "App.Thrower.Fail()")
        );
        assert_eq!((by[1].count, by[1].site.as_str()), (1, ""));
    }

    #[test]
    fn an_exception_in_code_not_named_yet_waits_and_keeps_its_place() {
        let mut methods = MethodTable::default();
        let thrown = |stack: Vec<u64>| Thrown {
            ts_ns: 1,
            tid: 2,
            fields: Map::new(),
            stack,
            arrived: Instant::now(),
        };
        let mut queue = Queue::default();
        queue.waiting.push_back(thrown(vec![0x5010]));
        queue.waiting.push_back(thrown(vec![]));
        assert!(queue.ready(7, &methods, false).is_empty(), "both wait");
        methods.add_event(
            "MethodLoadVerbose",
            &fields(&[
                ("MethodStartAddress", 0x5000.into()),
                ("MethodSize", 0x100.into()),
                ("MethodNamespace", "App".into()),
                ("MethodName", "New".into()),
                ("MethodSignature", "void  ()".into()),
            ]),
        );
        let out = queue.ready(7, &methods, false);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].stack, ["App.New()"]);
        // Unnamed for good: out after HOLD, or at the end.
        queue.waiting.push_back(thrown(vec![0x9000]));
        assert!(queue.ready(7, &methods, false).is_empty());
        assert_eq!(
            queue.ready(7, &methods, true)[0].stack,
            ["[unknown] 0x9000"]
        );
        queue.waiting.push_back(Thrown {
            arrived: Instant::now() - HOLD,
            ..thrown(vec![0x9000])
        });
        assert_eq!(queue.ready(7, &methods, false).len(), 1);
        // A queue past its bound lets the oldest go at once.
        for _ in 0..MAX_WAITING + 2 {
            queue.waiting.push_back(thrown(vec![0x9000]));
        }
        assert_eq!(queue.ready(7, &methods, false).len(), 2);
        assert_eq!(queue.waiting.len(), MAX_WAITING);
    }
}
