//! Running a resolved probe (the executor): attach, read the ring buffer
//! on a timer, turn records into NDJSON lines (batched into few writes),
//! a histogram or a flamegraph of the callers, follow a JIT method's new
//! versions ([`super::follow`]), detach, and end with a summary.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tracecar_api::SummaryLine;
use tracecar_api::uprobe::{CodeVersion, ProbeEvent, ProbeSummary};

use super::attach::{self, AttachError, Counts, Location};
use super::decode::{decode_capture, decode_register};
use super::follow::{Breakpoints, Tracked, breakpoints_of, code_version};
use super::host::Host;
use super::plan::{Plan, Target};
use super::spec::{Aggregation, Of, UprobeSpec};
use crate::procfs::Procfs;
use crate::stacks::collect::{Collector, Site, UserStack};
use crate::stacks::{Captured, Measure, Unwind};
use crate::sys::events::{
    Config, EVENT_AFTER_RETURN, EVENT_FRAMELESS, FLAG_PAIRED, FLAG_STACK, RET_CAPTURE, Record,
    STACK_BYTES,
};

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `seconds` passed.
    Seconds,
    /// `limit` events were sent.
    Limit,
    /// The client went away.
    Disconnected,
    /// The probed process exited.
    Exited,
}

impl Stopped {
    fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Limit => "limit",
            Self::Disconnected => "disconnected",
            Self::Exited => "exited",
        }
    }
}

/// The BPF configuration for a request.
pub fn config(spec: &UprobeSpec, plan: &Plan, host: &Host) -> Config {
    let stack = spec.stack.is_some();
    Config {
        pidns_dev: host.pidns_dev,
        pidns_ino: host.pidns_ino,
        nargs: spec.args.len() as u32,
        flags: if spec.ret.is_some() { FLAG_PAIRED } else { 0 }
            | if stack { FLAG_STACK } else { 0 },
        captures: plan.captures.slots,
        // The per-second budget, split evenly over the CPUs.
        max_per_cpu_per_sec: u64::from(spec.rate).div_ceil(host.cpus.max(1) as u64),
        // Breakpoints fire for every process running the address.
        pid: spec.pid.unwrap_or(0),
        data_bytes: plan.captures.data_bytes,
        stack_bytes: match spec.stack {
            Some(s) if s.unwind != Unwind::Fp => STACK_BYTES,
            _ => 0,
        },
        pad: 0,
    }
}

/// The ring buffer for a request: room for about a second of records at
/// the highest rates; stack copies make records ~100 times larger.
pub fn ring_bytes(config: &Config) -> u32 {
    if config.stack_bytes > 0 {
        64 << 20
    } else {
        attach::DEFAULT_RING_BYTES
    }
}

/// Where the records go.
enum Output {
    /// NDJSON lines, batched.
    Events { batch: String },
    /// One histogram.
    Histogram(super::hist::Histogram, Of),
    /// The callers' stacks.
    Flame(Of),
}

impl Output {
    /// Sends the lines batched so far; `false` once the client is gone.
    fn flush(&mut self, send: &mut dyn FnMut(Vec<u8>) -> bool) -> bool {
        match self {
            Self::Events { batch } if !batch.is_empty() => send(std::mem::take(batch).into_bytes()),
            _ => true,
        }
    }
}

/// One probe session.
struct Session<'a> {
    spec: &'a UprobeSpec,
    plan: &'a Plan,
    collector: Option<Collector>,
    /// Per PID: the probed function's address, the leaf of stacks taken
    /// after it returned.
    leaf: HashMap<u32, Option<u64>>,
    breakpoints: Option<Breakpoints>,
    sent: u64,
}

impl Session<'_> {
    /// What the session does every 200 ms: checks that the process is
    /// still there (`false` when it is gone), follows new versions of a
    /// JIT method (and the runtime's new names for stacks), and names a
    /// flamegraph's new addresses while the process lives.
    fn look_around(
        &mut self,
        probe: &mut attach::Probe,
        procfs: &Procfs,
        since: f64,
        flame: bool,
    ) -> bool {
        if let Some(pid) = self.spec.pid
            && procfs.stat(pid).is_err()
        {
            return false;
        }
        if let Some(b) = &mut self.breakpoints
            && b.follow(probe, procfs, since)
            && let (Some(c), Some(t)) = (&mut self.collector, &b.table)
        {
            c.set_managed(b.pid, t.clone());
        }
        if flame && let Some(c) = &mut self.collector {
            c.symbolize_pending();
        }
        true
    }

    /// Where the probed function is in `pid` (uprobes); named, the first
    /// time, as the request named it.
    fn leaf_address(&mut self, procfs: &Procfs, pid: u32) -> Option<u64> {
        let Target::Uprobe(target) = &self.plan.target else {
            return None;
        };
        if let Some(known) = self.leaf.get(&pid) {
            return *known;
        }
        let address = procfs.maps(pid).ok().and_then(|maps| {
            maps.iter()
                .filter(|m| m.file_path() == Some(target.module.as_str()))
                .find(|m| m.offset <= target.offset && target.offset < m.offset + (m.end - m.start))
                .map(|m| m.start + (target.offset - m.offset))
        });
        if let (Some(address), super::spec::TargetSpec::Symbol { name, .. }, Some(c)) =
            (address, &self.spec.target, &mut self.collector)
        {
            c.name_address(pid, address, name, Some(target.module.clone()));
        }
        self.leaf.insert(pid, address);
        address
    }

    /// The user stack of a record, as lookup addresses.
    fn stack(&mut self, procfs: &Procfs, record: &Record<'_>) -> Option<Vec<u64>> {
        let head = &record.head;
        let site = if head.flags & EVENT_AFTER_RETURN != 0 {
            Site::AfterReturn
        } else if head.flags & EVENT_FRAMELESS != 0 {
            Site::Frameless
        } else {
            Site::Body
        };
        let address = self.leaf_address(procfs, head.pid);
        let leaf = address.filter(|_| site == Site::AfterReturn);
        let collector = self.collector.as_mut()?;
        Some(collector.user_stack(
            head.pid,
            &UserStack {
                site,
                chain: &record.frames,
                regs: (!record.stack.is_empty()).then_some([head.bp, head.sp, head.ip]),
                stack: record.stack,
                top: Some(head.top),
                leaf,
            },
        ))
    }

    fn code(&mut self, ip: u64) -> Option<CodeVersion> {
        let breakpoints = self.breakpoints.as_mut()?;
        let index = *breakpoints.sites.get(&ip)?;
        let tracked = breakpoints.versions.get_mut(index)?;
        tracked.events += 1;
        Some(code_version(&tracked.plan.version))
    }

    fn event(&mut self, record: &Record<'_>, stack: Option<Vec<String>>) -> ProbeEvent {
        let spec = self.spec;
        let slots = &self.plan.captures.slots;
        let head = &record.head;
        let ret = spec
            .ret
            .map(|ty| decode_capture(ty, &slots[RET_CAPTURE], record, RET_CAPTURE));
        ProbeEvent {
            ts_ns: head.ts_ns,
            pid: head.pid,
            tid: head.tid,
            comm: head.comm(),
            args: spec
                .args
                .iter()
                .enumerate()
                .map(|(i, a)| decode_capture(a.value, &slots[i], record, i))
                .collect(),
            ret,
            latency_ns: spec.ret.map(|_| head.latency_ns),
            stack,
            code: self.code(head.ip),
        }
    }

    /// Takes one record into `output`; `false` once the client is gone.
    fn take(
        &mut self,
        procfs: &Procfs,
        output: &mut Output,
        record: &Record<'_>,
        send: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> bool {
        let stack = if self.collector.is_some() {
            self.stack(procfs, record)
        } else {
            None
        };
        match output {
            Output::Events { batch } => {
                let names = match (&stack, &mut self.collector) {
                    (Some(user), Some(c)) => Some(
                        c.name_now(record.head.pid, user)
                            .into_iter()
                            .map(|f| f.name.clone())
                            .collect(),
                    ),
                    _ => None,
                };
                let event = self.event(record, names);
                if let Ok(line) = serde_json::to_string(&event) {
                    batch.push_str(&line);
                    batch.push('\n');
                }
                if batch.len() >= 256 << 10 && !send(std::mem::take(batch).into_bytes()) {
                    return false;
                }
            }
            Output::Histogram(h, of) => {
                let value = self.value(record, *of);
                h.add(value);
                self.code(record.head.ip);
            }
            Output::Flame(of) => {
                let value = self.value(record, *of).max(0) as u64;
                self.code(record.head.ip);
                if let (Some(user), Some(c)) = (stack, &mut self.collector) {
                    c.add(record.head.pid, record.head.tid, user, &[], value);
                }
            }
        }
        self.sent += 1;
        true
    }

    /// The number `of` counts for a record.
    fn value(&self, record: &Record<'_>, of: Of) -> i64 {
        let number = |v: Value| {
            v.as_i64()
                .or_else(|| v.as_u64().map(|u| u as i64))
                .unwrap_or(0)
        };
        let slots = &self.plan.captures.slots;
        match of {
            Of::Count => 1,
            Of::Arg(i) => number(decode_capture(
                self.spec.args[i].value,
                &slots[i],
                record,
                i,
            )),
            Of::Ret => self
                .spec
                .ret
                .map_or(0, |t| number(decode_register(t, record.head.ret))),
            Of::Latency => i64::try_from(record.head.latency_ns).unwrap_or(i64::MAX),
        }
    }
}

fn of_name(spec: &UprobeSpec, of: Of) -> String {
    match of {
        Of::Count => "count".to_owned(),
        Of::Arg(i) => format!("arg{}", spec.args[i].arg_index().unwrap_or(i as u8)),
        Of::Ret => "ret".to_owned(),
        Of::Latency => "latency".to_owned(),
    }
}

/// Attaches what `plan` says and streams through `send` until the spec's
/// limits, `cancel`, the process's exit, or `send` failing (client gone).
/// `ready` learns first whether attaching worked. For `aggregate=flame`,
/// `send` gets the rendered flamegraph at the end instead of lines.
pub fn stream(
    spec: &UprobeSpec,
    mut plan: Plan,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
    ready: impl FnOnce(Result<(), AttachError>),
    mut send: impl FnMut(Vec<u8>) -> bool,
) {
    let (mut probe, breakpoints) = match attach_target(spec, &mut plan) {
        Ok(attached) => attached,
        Err(e) => {
            ready(Err(e));
            return;
        }
    };
    let collector = collector_for(spec, procfs, breakpoints.as_ref());
    ready(Ok(()));
    let started = SystemTime::now();
    let start = Instant::now();
    let deadline = Duration::from_secs(u64::from(spec.seconds));
    let mut output = Output::for_spec(spec);
    let mut session = Session {
        spec,
        plan: &plan,
        collector,
        leaf: HashMap::new(),
        breakpoints,
        sent: 0,
    };
    let stopped = pump(
        spec,
        procfs,
        cancel,
        &mut probe,
        &mut session,
        &mut output,
        &mut send,
        (start, deadline),
    );
    let counts = probe.counts();
    let pending = if spec.ret.is_some() {
        probe.pending()
    } else {
        0
    };
    // Detach before the summary, so "done" means nothing is attached.
    drop(probe);
    let ended = Instant::now();
    if stopped != Stopped::Disconnected {
        let _ = output.flush(&mut send);
    }
    let summary = summary(
        &plan,
        &session,
        counts,
        pending,
        stopped,
        start.elapsed().as_secs_f64(),
    );
    let ran = Ran {
        started,
        sampling: (start, ended),
        sent: session.sent,
        lost: counts.lost,
        cancelled: stopped == Stopped::Disconnected,
    };
    end(
        spec,
        &plan,
        session.collector.take(),
        output,
        summary,
        &ran,
        &mut send,
    );
}

/// Hands the ring buffer's records to the session until the client goes,
/// the limit or the deadline is reached, or the process exits; returns
/// why it stopped.
#[allow(clippy::too_many_arguments)]
fn pump(
    spec: &UprobeSpec,
    procfs: &Procfs,
    cancel: &Arc<AtomicBool>,
    probe: &mut attach::Probe,
    session: &mut Session<'_>,
    output: &mut Output,
    send: &mut impl FnMut(Vec<u8>) -> bool,
    (start, deadline): (Instant, Duration),
) -> Stopped {
    let mut last_follow = Instant::now();
    // Records are handled where they lie in the ring buffer; lines go out
    // in batches, one write per read of the buffer (or per 256 KiB).
    let take = |session: &mut Session<'_>,
                output: &mut Output,
                send: &mut dyn FnMut(Vec<u8>) -> bool,
                bytes: &[u8]| {
        let record = Record::from_bytes(bytes)?;
        if !session.take(procfs, output, &record, send) {
            return Some(Stopped::Disconnected);
        }
        spec.limit
            .is_some_and(|l| session.sent >= u64::from(l))
            .then_some(Stopped::Limit)
    };
    let mut stopped = loop {
        if cancel.load(Ordering::Relaxed) {
            break Stopped::Disconnected;
        }
        let mut stop = None;
        probe.drain_while(|bytes| {
            stop = take(session, output, send, bytes);
            stop.is_none()
        });
        if let Some(stop) = stop {
            break stop;
        }
        if !output.flush(send) {
            break Stopped::Disconnected;
        }
        if start.elapsed() >= deadline {
            break Stopped::Seconds;
        }
        if last_follow.elapsed() >= Duration::from_millis(200) {
            last_follow = Instant::now();
            let flame = matches!(output, Output::Flame(_));
            if !session.look_around(probe, procfs, start.elapsed().as_secs_f64(), flame) {
                break Stopped::Exited;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // What the calls before the end left in the buffer is theirs too.
    if matches!(stopped, Stopped::Seconds | Stopped::Exited) {
        let mut stop = None;
        probe.drain_while(|bytes| {
            stop = take(session, output, send, bytes);
            stop.is_none()
        });
        if let Some(stop) = stop {
            stopped = stop;
        }
    }
    stopped
}

/// Sends what comes after the events: the histogram, or the callers'
/// flamegraph (its summary then goes to the log), and the summary line.
fn end(
    spec: &UprobeSpec,
    plan: &Plan,
    collector: Option<Collector>,
    output: Output,
    summary: ProbeSummary,
    ran: &Ran,
    send: &mut impl FnMut(Vec<u8>) -> bool,
) {
    match output {
        Output::Events { .. } => {}
        Output::Histogram(h, of) => {
            let mut doc = h.to_json();
            if let Some((kind, _)) = spec.aggregate {
                doc["aggregate"] = Value::from(kind.name());
            }
            doc["of"] = Value::from(of_name(spec, of));
            let _ = send(format!("{doc}\n").into_bytes());
        }
        Output::Flame(of) => {
            if let Some(collector) = collector {
                if let Some(bytes) = flamegraph(spec, plan, collector, of, ran) {
                    let _ = send(bytes);
                }
                // The summary goes to the log: the body is the flamegraph.
                tracing::info!(summary = ?summary, "probe flamegraph done");
            }
            return;
        }
    }
    match serde_json::to_vec(&SummaryLine { summary }) {
        Ok(mut line) => {
            line.push(b'\n');
            let _ = send(line);
        }
        Err(e) => tracing::error!(error = %e, "cannot serialize the probe's summary"),
    }
}

/// Loads the programs and attaches them: one uprobe, or breakpoints on
/// each planned version of a JIT method (the skipped ones follow them in
/// the list, unprobed).
fn attach_target(
    spec: &UprobeSpec,
    plan: &mut Plan,
) -> Result<(attach::Probe, Option<Breakpoints>), AttachError> {
    let host = Host::read();
    let config = config(spec, plan, &host);
    let mut probe = attach::load(config, ring_bytes(&config))?;
    let breakpoints = match &mut plan.target {
        Target::Uprobe(target) => {
            probe.attach_uprobe(
                &target.file.via(),
                &Location::Offset(target.offset),
                spec.pid,
            )?;
            None
        }
        Target::Breakpoint(jit) => {
            let planned = jit.versions.len();
            let mut b = breakpoints_of(jit, spec, &host);
            for index in 0..planned {
                b.probe(&mut probe, index)?;
            }
            Some(b)
        }
    };
    Ok((probe, breakpoints))
}

/// The stack collector of a probe with stacks (or a callers'
/// flamegraph), naming managed frames with the runtime's own method table.
fn collector_for(
    spec: &UprobeSpec,
    procfs: &Procfs,
    breakpoints: Option<&Breakpoints>,
) -> Option<Collector> {
    let flame = matches!(spec.aggregate, Some((Aggregation::Flame, _)));
    let mut collector = Collector::new(procfs, spec.stack?.unwind, false, flame);
    if let Some(pid) = spec.pid {
        let table = match breakpoints {
            Some(Breakpoints { table: Some(t), .. }) => Some(t.clone()),
            _ => procfs.maps(pid).ok().and_then(|maps| {
                crate::runtime::methods_now(
                    crate::runtime::of_process(procfs, pid, &maps),
                    procfs,
                    pid,
                )?
                .ok()
            }),
        };
        if let Some(table) = table {
            collector.set_managed(pid, table);
        }
    }
    Some(collector)
}

/// How a probe session ran, for its flamegraph.
struct Ran {
    started: SystemTime,
    sampling: (Instant, Instant),
    sent: u64,
    lost: u64,
    cancelled: bool,
}

/// The callers' flamegraph of a probe, rendered; `None` (logged) when it
/// cannot be.
fn flamegraph(
    spec: &UprobeSpec,
    plan: &Plan,
    collector: Collector,
    of: Of,
    ran: &Ran,
) -> Option<Vec<u8>> {
    let (start, ended) = ran.sampling;
    let collected = collector.finish();
    let captured = Captured {
        stacks: collected.stacks,
        samples: ran.sent,
        lost: ran.lost,
        processes: collected.processes,
        started: ran.started,
        duration: ended.duration_since(start),
        cancelled: ran.cancelled,
        measure: Measure::Probe {
            probe: probe_name(plan),
            of: of_name(spec, of),
            unit: match of {
                Of::Count => "count",
                Of::Latency => "nanoseconds",
                Of::Arg(_) | Of::Ret => "value",
            },
        },
        sampling: ran.sampling,
        build_ids: collected.build_ids,
        symbol_errors: collected.symbol_errors,
    };
    let meta = crate::stacks::render::RenderMeta {
        seconds: spec.seconds,
        unwind: spec.stack.map_or(Unwind::Auto, |s| s.unwind).name(),
        kernel: false,
        comments: Vec::new(),
    };
    crate::stacks::render::render(&captured, spec.format, &meta)
        .inspect_err(|e| tracing::warn!(error = %e, "cannot render the callers' flamegraph"))
        .ok()
}

impl Output {
    /// What a probe session writes: events, a histogram or a flamegraph.
    fn for_spec(spec: &UprobeSpec) -> Self {
        match spec.aggregate {
            Some((Aggregation::Histogram(kind), of)) => {
                Self::Histogram(super::hist::Histogram::new(kind), of)
            }
            Some((Aggregation::Flame, of)) => Self::Flame(of),
            None => Self::Events {
                batch: String::new(),
            },
        }
    }
}

fn probe_name(plan: &Plan) -> String {
    match &plan.target {
        Target::Uprobe(t) => format!(
            "{:#x} in {}",
            t.offset,
            t.module.rsplit('/').next().unwrap_or(&t.module)
        ),
        Target::Breakpoint(j) => j.name.clone(),
    }
}

fn summary(
    plan: &Plan,
    session: &Session<'_>,
    counts: Counts,
    pending: u64,
    stopped: Stopped,
    seconds: f64,
) -> ProbeSummary {
    let (module, offset, method) = match &plan.target {
        Target::Uprobe(t) => (t.module.clone(), format!("{:#x}", t.offset), None),
        Target::Breakpoint(j) => (
            "[jit]".to_owned(),
            j.versions
                .first()
                .map_or_else(String::new, |v| format!("{:#x}", v.entry)),
            Some(j.name.clone()),
        ),
    };
    ProbeSummary {
        events: session.sent,
        calls: counts.calls,
        lost: counts.lost,
        throttled: counts.throttled,
        stopped: stopped.as_str().to_owned(),
        seconds,
        module,
        offset,
        mechanism: plan.target.mechanism().to_owned(),
        method,
        abi: plan.abi.name().to_owned(),
        unpaired: counts.unpaired,
        pending,
        versions: session
            .breakpoints
            .as_ref()
            .map(|b| b.versions.iter().map(Tracked::summary).collect())
            .unwrap_or_default(),
    }
}
