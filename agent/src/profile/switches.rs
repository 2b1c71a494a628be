//! The `offcpu`/`wall` half of a capture: the `sched:sched_switch`
//! rings, drained by a thread of their own ([`SwitchRings`]), and the
//! pairing of their records on the capture's thread ([`Pairing`]), each
//! block that ends unwound and counted ([`add_block`]). The pure parts
//! (states, pairing, time order, the blocking function) are in
//! [`super::blocks`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use perf_event_open::sample::record::Record;
use perf_event_open::sample::record::ctx::Switch;
use perf_event_open::sample::record::sample::Sample;

use super::blocks::{self, Block, LeftAs, Reorder, Tracker};
use super::plan::{CaptureError, CapturePlan};
use super::ring::{chains, read_rings, sample_user_stack, wanted_task};
use super::spec::BlockFilter;
use crate::procfs::Procfs;
use crate::stacks::Unwind;
use crate::stacks::collect::{Collector, Reason, Site, UserStack};
use crate::stacks::symbolize::lookup_addresses;
use crate::stacks::unwind::frame_pointer_scan;
use crate::sys::{self, CpuSampler};

/// Records after the watermark by this much stay held for the next drain:
/// a record's timestamp is taken a little before it is written.
const REORDER_MARGIN_NS: u64 = 5_000_000;

/// Bytes of user stack read from `/proc/PID/mem` for a thread blocked
/// when the capture starts (as much as a sample's stack copy).
const SNAPSHOT_STACK_BYTES: u64 = crate::stacks::unwind::USER_STACK_BYTES as u64;

/// A stack kept from a switch-out until its block ends.
enum Kept {
    /// The `sched_switch` sample.
    Sample(Box<Sample>),
    /// A thread blocked at the start, read from `/proc`.
    Snapshot {
        /// BP (found by [`frame_pointer_scan`], else 0), SP, PC.
        regs: [u64; 3],
        /// The frame-pointer chain found in the stack, if any.
        chain: Vec<u64>,
        stack: Vec<u8>,
        wchan: Option<String>,
    },
}

/// A context-switch record, in time order.
enum Switched {
    Out {
        pid: u32,
        tid: u32,
        state: Option<LeftAs>,
        sample: Box<Sample>,
    },
    In {
        tid: u32,
    },
}

/// Context-switch records held between the drain thread and the pairing
/// at most: past it, switch-outs are dropped (counted as lost) and
/// switch-ins still pass, so that nothing is paired wrongly.
const QUEUE_BYTES: usize = 64 << 20;

/// One drain of the `sched_switch` rings.
pub(super) struct Drained {
    /// Records in ring order (per CPU), with their times.
    events: Vec<(u64, Switched)>,
    /// A wall profile's CPU samples of wanted processes: PID, TID, sample.
    on_cpu: Vec<(u32, u32, Box<Sample>)>,
    /// Every record older than this has been read.
    watermark: u64,
    /// Records the kernel or the queue bound dropped.
    lost: u64,
    /// Switch-outs over the rate cap.
    throttled: u64,
    /// The stack bytes the events hold.
    pub(super) bytes: usize,
    /// Set on the last drain: when the events were disabled.
    end: Option<u64>,
}

/// The `sched_switch` rings, read by their own thread so that unwinding
/// and symbolizing on the capture's thread never let them overflow.
pub(super) struct SwitchRings {
    samplers: Vec<CpuSampler>,
    /// A wall profile's CPU samplers, read here too, for the same reason.
    cpu: Vec<CpuSampler>,
    prev_state: (usize, usize),
    /// Switch-outs of the targets kept per second at most (`rate=`): past
    /// it, the rest of the second's switch-outs are dropped before they
    /// are queued and counted as throttled, so that the agent's CPU and
    /// memory stay bounded whatever the targets do. Switch-ins still pass.
    cap: u64,
    /// The current second (by CLOCK_MONOTONIC) and what it kept.
    window: (u64, u64),
}

impl SwitchRings {
    /// Starts recording.
    pub(super) fn enable(&self) -> Result<(), CaptureError> {
        for s in self.samplers.iter().chain(&self.cpu) {
            s.counter.enable().map_err(CaptureError::Perf)?;
        }
        Ok(())
    }

    /// Opens the `sched_switch` rings; `cpu` are a wall profile's CPU
    /// samplers, which this thread reads too.
    pub(super) fn open(plan: &CapturePlan, cpu: Vec<CpuSampler>) -> Result<Self, CaptureError> {
        let tracepoint = sys::tracepoint("sched", "sched_switch")?;
        let prev_state = blocks::field_offset(&tracepoint.format, "prev_state")
            .ok_or(CaptureError::Format("prev_state"))?;
        let samplers = sys::open_tracepoint_samplers(tracepoint.id, &plan.cpus, plan.switch_attrs)
            .map_err(CaptureError::Perf)?;
        Ok(Self {
            samplers,
            cpu,
            prev_state,
            cap: u64::from(plan.blocks.rate),
            window: (0, 0),
        })
    }

    /// Drains every `tick` until `stop`, then disables the events, drains
    /// the rest and sends it with the end time. Stops early if the
    /// receiver is gone.
    pub(super) fn run(
        mut self,
        tick: Duration,
        stop: &AtomicBool,
        queued: &AtomicUsize,
        mut wanted: impl FnMut(u32) -> bool,
        tx: &mpsc::Sender<Drained>,
    ) {
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let end = stopping.then(|| {
                for s in self.samplers.iter().chain(&self.cpu) {
                    let _ = s.counter.disable();
                }
                sys::monotonic_ns()
            });
            let watermark = sys::monotonic_ns().saturating_sub(REORDER_MARGIN_NS);
            let mut drained = self.drain(&mut wanted, watermark);
            drained.end = end;
            if queued.load(Ordering::Relaxed) + drained.bytes > QUEUE_BYTES {
                let before = drained.events.len() + drained.on_cpu.len();
                drained
                    .events
                    .retain(|(_, e)| matches!(e, Switched::In { .. }));
                drained.on_cpu.clear();
                drained.lost += (before - drained.events.len()) as u64;
                drained.bytes = 0;
            }
            queued.fetch_add(drained.bytes, Ordering::Relaxed);
            if tx.send(drained).is_err() || stopping {
                return;
            }
            std::thread::sleep(tick);
        }
    }

    /// Reads every ring: switch-outs of wanted processes, and every
    /// switch-in; CPU samples of wanted processes.
    fn drain(&mut self, wanted: &mut impl FnMut(u32) -> bool, watermark: u64) -> Drained {
        let mut out = Drained {
            events: Vec::new(),
            on_cpu: Vec::new(),
            watermark,
            lost: 0,
            throttled: 0,
            bytes: 0,
            end: None,
        };
        read_rings(&self.cpu, &mut out.lost, |record| {
            if let Record::Sample(sample) = record
                && let Some((pid, tid)) = wanted_task(&sample, wanted)
            {
                out.bytes += sample.user_stack.as_ref().map_or(0, Vec::len) + 1024;
                out.on_cpu.push((pid, tid, sample));
            }
        });
        let mut lost = 0;
        read_rings(&self.samplers, &mut lost, |record| match record {
            Record::Sample(sample) => {
                let (Some((pid, tid)), Some(time)) =
                    (wanted_task(&sample, wanted), sample.record_id.time)
                else {
                    return;
                };
                let second = time / 1_000_000_000;
                if self.window.0 != second {
                    self.window = (second, 0);
                }
                if self.window.1 >= self.cap {
                    out.throttled += 1;
                    return;
                }
                self.window.1 += 1;
                let state = sample
                    .raw
                    .as_deref()
                    .and_then(|raw| blocks::read_field(raw, self.prev_state))
                    .and_then(blocks::left_as);
                out.bytes += sample.user_stack.as_ref().map_or(0, Vec::len) + 1024;
                out.events.push((
                    time,
                    Switched::Out {
                        pid,
                        tid,
                        state,
                        sample,
                    },
                ));
            }
            Record::CtxSwitch(switch) => {
                if let (Switch::InFrom(_), Some(id)) = (&switch.info, switch.record_id.as_ref())
                    && let (Some(task), Some(time)) = (id.task.as_ref(), id.time)
                    && task.tid != 0
                {
                    out.events.push((time, Switched::In { tid: task.tid }));
                }
            }
            _ => {}
        });
        out.lost += lost;
        out
    }
}

/// The pairing half of an `offcpu`/`wall` capture, on the capture's
/// thread: records back in time order, switch-outs paired with
/// switch-ins, and each block that ends unwound and counted.
pub(super) struct Pairing {
    /// What a wall profile's CPU sample weighs (its period in ns).
    on_cpu_weight: u64,
    reorder: Reorder<Switched>,
    tracker: Tracker<Kept>,
    blocks: u64,
    lost: u64,
    throttled: u64,
    end: Option<u64>,
}

/// What a finished pairing counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counts {
    /// Blocks kept.
    pub(super) blocks: u64,
    /// Records lost (full rings, the queue bound) and switch-outs whose
    /// switch-in was lost with them.
    pub(super) lost: u64,
    /// Switch-outs over the rate cap.
    pub(super) throttled: u64,
}

impl Pairing {
    /// Whether the last drain has been taken in.
    pub(super) fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// What was counted, logged.
    pub(super) fn counts(&self) -> Counts {
        tracing::info!(
            blocks = self.blocks,
            lost = self.lost,
            throttled = self.throttled,
            unmatched = self.tracker.unmatched,
            short = self.tracker.short,
            "context switches paired"
        );
        Counts {
            blocks: self.blocks,
            lost: self.lost + self.tracker.unmatched,
            throttled: self.throttled,
        }
    }

    pub(super) fn new(filter: BlockFilter, on_cpu_weight: u64) -> Self {
        Self {
            on_cpu_weight,
            reorder: Reorder::default(),
            tracker: Tracker::new(filter),
            blocks: 0,
            lost: 0,
            throttled: 0,
            end: None,
        }
    }

    /// Threads of the targets blocked right now: open blocks since
    /// `start`, with the stack their syscall left.
    pub(super) fn snapshot_blocked(
        &mut self,
        procfs: &Procfs,
        pids: impl Iterator<Item = u32>,
        start: u64,
    ) {
        for pid in pids {
            let maps = procfs.maps(pid).unwrap_or_default();
            for tid in procfs.tids(pid).unwrap_or_default() {
                let Some((state, wchan)) = blocked_in(procfs, pid, tid) else {
                    continue;
                };
                let (sp, pc) = procfs
                    .thread_syscall(pid, tid)
                    .ok()
                    .flatten()
                    .map_or((0, 0), |s| (s.sp, s.pc));
                // The stack from SP up to the end of its mapping.
                let stack = crate::procfs::mapping_at(&maps, sp)
                    .map(|m| (m.end - sp).min(SNAPSHOT_STACK_BYTES))
                    .and_then(|len| procfs.read_memory(pid, sp, len as usize).ok())
                    .unwrap_or_default();
                // No BP register without stopping the thread: look for the
                // frame-pointer chain in the stack itself.
                let (bp, chain) =
                    frame_pointer_scan(&stack, sp, pc, |a| crate::procfs::is_code_at(&maps, a))
                        .unwrap_or((0, vec![pc]));
                self.tracker.blocked_since(
                    pid,
                    tid,
                    start,
                    state,
                    Kept::Snapshot {
                        regs: [bp, sp, pc],
                        chain,
                        stack,
                        wchan,
                    },
                );
            }
        }
    }

    /// Takes in one drain and pairs what it makes final; each block that
    /// ends goes to the collector. On the last drain, closes every block
    /// still open.
    pub(super) fn take(&mut self, drained: Drained, collector: &mut Collector, kernel: bool) {
        self.lost += drained.lost;
        self.throttled += drained.throttled;
        for (pid, tid, sample) in drained.on_cpu {
            let user = sample_user_stack(collector, pid, &sample);
            let (_, kernel) = chains(&sample);
            collector.add_with_reason(
                pid,
                tid,
                user,
                kernel,
                self.on_cpu_weight,
                Some(Reason::OnCpu),
            );
        }
        for (time, event) in drained.events {
            self.reorder.push(time, event);
        }
        let watermark = match drained.end {
            Some(_) => u64::MAX - 1,
            None => drained.watermark,
        };
        for (time, event) in self.reorder.ready(watermark) {
            match event {
                Switched::Out {
                    pid,
                    tid,
                    state,
                    sample,
                } => self
                    .tracker
                    .switched_out(pid, tid, time, state, Kept::Sample(sample)),
                Switched::In { tid } => {
                    if let Some(block) = self.tracker.switched_in(tid, time) {
                        self.blocks += 1;
                        add_block(collector, block, kernel);
                    }
                }
            }
        }
        if let Some(end) = drained.end {
            self.end = Some(end);
            for block in self.tracker.finish(end) {
                self.blocks += 1;
                add_block(collector, block, kernel);
            }
        }
    }
}

/// Counts one block: its stack, weighted by its nanoseconds, with the
/// kernel function it waited in as the leaf.
fn add_block(collector: &mut Collector, block: Block<Kept>, kernel: bool) {
    let state = block.state.letter();
    match block.payload {
        Kept::Sample(sample) => {
            let user = sample_user_stack(collector, block.pid, &sample);
            let (_, chain) = chains(&sample);
            let reason = Reason::Blocked {
                kernel: lookup_addresses(chain).collect(),
                state,
            };
            let shown: &[u64] = if kernel { chain } else { &[] };
            collector.add_with_reason(block.pid, block.tid, user, shown, block.ns, Some(reason));
        }
        Kept::Snapshot {
            regs,
            chain,
            stack,
            wchan,
        } => {
            // Whichever of DWARF and the scanned frame-pointer chain gets
            // further: the request's unwind= cannot apply to a stack read
            // from /proc.
            let user = if regs[2] == 0 {
                Vec::new()
            } else {
                collector.user_stack_as(
                    Unwind::Auto,
                    block.pid,
                    &UserStack {
                        site: Site::Body,
                        chain: &chain,
                        regs: Some(regs),
                        stack: &stack,
                        top: None,
                        leaf: None,
                    },
                )
            };
            let reason = Reason::In {
                function: wchan,
                state,
            };
            collector.add_with_reason(block.pid, block.tid, user, &[], block.ns, Some(reason));
        }
    }
}

/// Whether thread `tid` of `pid` is blocked, and the kernel function it
/// waits in. `stat` and `wchan` are two reads: a thread that wakes between
/// them shows `S` and then no function. Both are read again (three times
/// at most) until they agree; a thread found running is not blocked, and
/// one that stays blocked with no function named keeps `None` (its leaf
/// is then its state, `[sleeping]`).
fn blocked_in(procfs: &Procfs, pid: u32, tid: u32) -> Option<(LeftAs, Option<String>)> {
    let state = || {
        procfs
            .thread_stat(pid, tid)
            .ok()
            .and_then(|s| LeftAs::from_letter(s.state))
    };
    for _ in 0..3 {
        let blocked = state()?;
        if let Some(function) = procfs.thread_wchan(pid, tid) {
            return Some((blocked, Some(function)));
        }
    }
    // Still blocked after the last read, with nothing named.
    state().map(|s| (s, None))
}
