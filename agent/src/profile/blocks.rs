//! Blocked time from context switches, pure: which state a thread left
//! the CPU in ([`left_as`], from `sched:sched_switch`'s `prev_state`), the
//! pairing of each switch-out with the same thread's next switch-in
//! ([`Tracker`]), and the time order across CPUs ([`Reorder`]). Which
//! kernel function a blocked stack waits in is named with the kernel
//! symbols ([`crate::stacks::kallsyms::blocking_function`]).
//!
//! The executor ([`super::capture`]) feeds it the kernel's records; the
//! payload `P` is whatever it keeps of the stack until the block ends.

use std::collections::{BTreeMap, HashMap};

use super::spec::{BlockFilter, States};

/// How a thread left the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeftAs {
    /// `S`: interruptible sleep.
    Sleeping,
    /// `D`: uninterruptible sleep.
    Uninterruptible,
    /// `R`: preempted while runnable.
    Preempted,
}

impl LeftAs {
    /// The state's letter, as `ps` shows it.
    pub fn letter(self) -> char {
        match self {
            Self::Sleeping => 'S',
            Self::Uninterruptible => 'D',
            Self::Preempted => 'R',
        }
    }

    /// Whether `states` selects it.
    pub fn selected_by(self, states: States) -> bool {
        match self {
            Self::Sleeping => states.sleeping,
            Self::Uninterruptible => states.uninterruptible,
            Self::Preempted => states.preempted,
        }
    }

    /// From a `/proc/PID/stat` state letter (a thread blocked when a
    /// capture starts).
    pub fn from_letter(letter: char) -> Option<Self> {
        match letter {
            'S' => Some(Self::Sleeping),
            'D' => Some(Self::Uninterruptible),
            _ => None,
        }
    }
}

/// `prev_state`'s bit for a preempted task (`TASK_REPORT_MAX`, printed as
/// `R+`).
const PREEMPTED: i64 = 0x100;

/// The state `sched:sched_switch`'s `prev_state` reports: the kernel's
/// report index as a bit (`1` S, `2` D, `4` T, … `0x80` I), `0` or
/// [`PREEMPTED`] for a runnable task. Stopped, traced, dead and idle
/// kernel tasks give `None`: they are not waiting for anything the app
/// does.
pub fn left_as(prev_state: i64) -> Option<LeftAs> {
    if prev_state & PREEMPTED != 0 || prev_state == 0 {
        return Some(LeftAs::Preempted);
    }
    match prev_state & 0xff {
        1 => Some(LeftAs::Sleeping),
        2 => Some(LeftAs::Uninterruptible),
        _ => None,
    }
}

/// Where a field is in a tracepoint's raw record, from its `format` file
/// (`field:long prev_state;\toffset:32;\tsize:8;\tsigned:1;`).
pub fn field_offset(format: &str, name: &str) -> Option<(usize, usize)> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let field = decl.rsplit(' ').next()?.split('[').next()?;
        if field != name {
            return None;
        }
        let value = |key: &str| -> Option<usize> {
            line.split(';')
                .find_map(|part| part.trim().strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        Some((value("offset:")?, value("size:")?))
    })
}

/// A signed little-endian integer of `size` bytes at `offset` of `raw`.
pub fn read_field(raw: &[u8], (offset, size): (usize, usize)) -> Option<i64> {
    let bytes = raw.get(offset..offset.checked_add(size)?)?;
    Some(match size {
        4 => i64::from(i32::from_le_bytes(bytes.try_into().ok()?)),
        8 => i64::from_le_bytes(bytes.try_into().ok()?),
        _ => return None,
    })
}

/// A block that ended: who, how long, why, and the payload kept from
/// the switch-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block<P> {
    /// The process.
    pub pid: u32,
    /// The thread.
    pub tid: u32,
    /// How long it stayed off the CPU.
    pub ns: u64,
    /// The state it left in.
    pub state: LeftAs,
    /// What the executor kept (the stack at the switch-out).
    pub payload: P,
}

#[derive(Debug)]
struct Pending<P> {
    pid: u32,
    since: u64,
    state: LeftAs,
    payload: P,
}

/// Pairs each thread's switch-out with its next switch-in, in time order,
/// keeping only blocks in the states `filter` selects and at least its
/// minimum long. A thread blocked when the capture starts is
/// [`Self::blocked_since`] the start; one still blocked at the end is
/// closed then ([`Self::finish`]): each block is counted once, cut to the
/// capture.
#[derive(Debug)]
pub struct Tracker<P> {
    filter: BlockFilter,
    pending: HashMap<u32, Pending<P>>,
    /// Switch-outs never closed by a switch-in (its record was lost):
    /// dropped rather than guessed.
    pub unmatched: u64,
    /// Blocks shorter than the filter's minimum.
    pub short: u64,
}

impl<P> Tracker<P> {
    /// An empty tracker.
    pub fn new(filter: BlockFilter) -> Self {
        Self {
            filter,
            pending: HashMap::new(),
            unmatched: 0,
            short: 0,
        }
    }

    /// A thread already blocked at `start` (found in `/proc` when the
    /// capture began).
    pub fn blocked_since(&mut self, pid: u32, tid: u32, start: u64, state: LeftAs, payload: P) {
        if state.selected_by(self.filter.states) {
            self.pending.insert(
                tid,
                Pending {
                    pid,
                    since: start,
                    state,
                    payload,
                },
            );
        }
    }

    /// Thread `tid` of `pid` left the CPU at `time` in `state` (`None`:
    /// a state that is not a wait, such as exiting).
    pub fn switched_out(
        &mut self,
        pid: u32,
        tid: u32,
        time: u64,
        state: Option<LeftAs>,
        payload: P,
    ) {
        let kept = state.filter(|s| s.selected_by(self.filter.states));
        let replaced = match kept {
            Some(state) => self.pending.insert(
                tid,
                Pending {
                    pid,
                    since: time,
                    state,
                    payload,
                },
            ),
            None => self.pending.remove(&tid),
        };
        // A switch-out while one is open: the switch-in between was lost,
        // unless the open one is the start snapshot of a thread whose
        // wake-up came before the capture's first record.
        if replaced.is_some_and(|p| p.since < time) {
            self.unmatched += 1;
        }
    }

    /// Thread `tid` got a CPU back at `time`: the block it was in, if one
    /// was open, long enough, and in a selected state.
    pub fn switched_in(&mut self, tid: u32, time: u64) -> Option<Block<P>> {
        let pending = self.pending.remove(&tid)?;
        self.close(tid, pending, time)
    }

    fn close(&mut self, tid: u32, pending: Pending<P>, end: u64) -> Option<Block<P>> {
        let ns = end.saturating_sub(pending.since);
        if ns < self.filter.min_block_ns || ns == 0 {
            self.short += 1;
            return None;
        }
        Some(Block {
            pid: pending.pid,
            tid,
            ns,
            state: pending.state,
            payload: pending.payload,
        })
    }

    /// Threads blocked now, by PID: what [`Self::finish`] will close.
    pub fn open(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.pending.iter().map(|(tid, p)| (p.pid, *tid))
    }

    /// Closes every open block at `end`, the capture's end.
    pub fn finish(&mut self, end: u64) -> Vec<Block<P>> {
        let pending: Vec<(u32, Pending<P>)> = self.pending.drain().collect();
        pending
            .into_iter()
            .filter_map(|(tid, p)| self.close(tid, p, end))
            .collect()
    }
}

/// Records from several per-CPU rings put back in time order: each ring
/// is ordered, but a thread's switch-out and switch-in are on different
/// CPUs and are read in different drains. [`Self::ready`] gives what is
/// older than a watermark, taken before the rings were drained, less a
/// margin for records written just after their timestamp.
#[derive(Debug)]
pub struct Reorder<E> {
    held: BTreeMap<(u64, u64), E>,
    seq: u64,
}

impl<E> Default for Reorder<E> {
    fn default() -> Self {
        Self {
            held: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E> Reorder<E> {
    /// Holds `event` of `time`.
    pub fn push(&mut self, time: u64, event: E) {
        self.held.insert((time, self.seq), event);
        self.seq += 1;
    }

    /// Everything up to `watermark`, oldest first.
    pub fn ready(&mut self, watermark: u64) -> Vec<(u64, E)> {
        let later = self.held.split_off(&(watermark.saturating_add(1), 0));
        let ready = std::mem::replace(&mut self.held, later);
        ready.into_iter().map(|((t, _), e)| (t, e)).collect()
    }

    /// Everything, oldest first.
    pub fn drain(&mut self) -> Vec<(u64, E)> {
        self.ready(u64::MAX - 1)
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: sched_switch\nID: 372\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n";

    #[test]
    fn format_offsets() {
        assert_eq!(field_offset(FORMAT, "prev_state"), Some((32, 8)));
        assert_eq!(field_offset(FORMAT, "prev_pid"), Some((24, 4)));
        assert_eq!(field_offset(FORMAT, "prev_comm"), Some((8, 16)));
        assert_eq!(field_offset(FORMAT, "next_pid"), None);
        let mut raw = vec![0u8; 40];
        raw[32..40].copy_from_slice(&2i64.to_le_bytes());
        raw[24..28].copy_from_slice(&(-7i32).to_le_bytes());
        assert_eq!(read_field(&raw, (32, 8)), Some(2));
        assert_eq!(read_field(&raw, (24, 4)), Some(-7));
        assert_eq!(read_field(&raw, (36, 8)), None);
    }

    #[test]
    fn states() {
        assert_eq!(left_as(1), Some(LeftAs::Sleeping));
        assert_eq!(left_as(2), Some(LeftAs::Uninterruptible));
        assert_eq!(left_as(0), Some(LeftAs::Preempted));
        assert_eq!(left_as(0x100), Some(LeftAs::Preempted));
        for other in [4, 8, 0x10, 0x20, 0x40, 0x80] {
            assert_eq!(left_as(other), None, "{other:#x}");
        }
    }

    fn all_states() -> BlockFilter {
        BlockFilter {
            min_block_ns: 0,
            states: States {
                sleeping: true,
                uninterruptible: true,
                preempted: true,
            },
            rate: 1,
        }
    }

    #[test]
    fn pairs_outs_with_ins() {
        let mut t = Tracker::new(BlockFilter::default());
        t.switched_out(10, 11, 100, Some(LeftAs::Sleeping), "a");
        assert_eq!(t.switched_in(12, 150), None, "never went out");
        let b = t.switched_in(11, 175).unwrap();
        assert_eq!((b.pid, b.tid, b.ns, b.payload), (10, 11, 75, "a"));
        assert_eq!(t.switched_in(11, 200), None, "closed once");
        // Preemption is not a block by default.
        t.switched_out(10, 11, 300, Some(LeftAs::Preempted), "p");
        assert_eq!(t.switched_in(11, 310), None);
        // Exiting is not a block.
        t.switched_out(10, 11, 400, None, "x");
        assert_eq!(t.switched_in(11, 410), None);
        assert_eq!(t.unmatched, 0);
    }

    #[test]
    fn filters_by_state_and_length() {
        let mut t = Tracker::new(BlockFilter {
            min_block_ns: 50,
            states: States {
                sleeping: false,
                uninterruptible: true,
                preempted: false,
            },
            rate: 1,
        });
        t.switched_out(1, 1, 0, Some(LeftAs::Sleeping), ());
        assert_eq!(t.switched_in(1, 100), None);
        t.switched_out(1, 1, 200, Some(LeftAs::Uninterruptible), ());
        assert_eq!(t.switched_in(1, 240), None, "shorter than 50");
        assert_eq!(t.short, 1);
        t.switched_out(1, 1, 300, Some(LeftAs::Uninterruptible), ());
        assert_eq!(t.switched_in(1, 400).map(|b| b.ns), Some(100));
    }

    #[test]
    fn blocked_all_along_counts_once_with_the_whole_capture() {
        let mut t = Tracker::new(all_states());
        t.blocked_since(5, 6, 1_000, LeftAs::Sleeping, "stuck");
        t.switched_out(5, 7, 1_500, Some(LeftAs::Sleeping), "other");
        let blocks = t.finish(11_000);
        let stuck: Vec<_> = blocks.iter().filter(|b| b.tid == 6).collect();
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].ns, 10_000);
        assert_eq!(blocks.len(), 2);
        assert!(t.finish(12_000).is_empty(), "nothing is closed twice");
    }

    #[test]
    fn a_lost_switch_in_is_dropped_not_guessed() {
        let mut t = Tracker::new(all_states());
        t.switched_out(1, 2, 10, Some(LeftAs::Sleeping), 1);
        t.switched_out(1, 2, 50, Some(LeftAs::Sleeping), 2);
        assert_eq!(t.unmatched, 1);
        assert_eq!(
            t.switched_in(2, 60).map(|b| (b.ns, b.payload)),
            Some((10, 2))
        );
    }

    #[test]
    fn reorders_across_rings() {
        let mut r = Reorder::default();
        r.push(30, "in");
        r.push(10, "out");
        r.push(50, "later");
        assert_eq!(r.ready(30), vec![(10, "out"), (30, "in")]);
        assert_eq!(r.len(), 1);
        r.push(40, "late");
        assert_eq!(r.drain(), vec![(40, "late"), (50, "later")]);
        assert!(r.is_empty());
    }
}
