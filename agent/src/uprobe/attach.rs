//! Loading the BPF programs with aya and attaching them: the executor of a
//! probe plan. File-backed code gets a uprobe (and a uretprobe for
//! returns); code in anonymous memory (JIT) gets hardware execute
//! breakpoints, one per CPU per address, with the `perf_event` programs
//! attached. Dropping [`Probe`] detaches every probe and closes every map,
//! link and perf event (the kernel also does this if the agent is killed).

use std::collections::BTreeMap;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::sync::Mutex;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::programs::{PerfEvent, UProbe};
use perf_event_open::count::Counter;

use crate::sys::events::{Config, FLAG_PAIRED, PENDING_BYTES, counter};

/// Where to attach in the target file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An ELF symbol name.
    Symbol(String),
    /// A file offset.
    Offset(u64),
}

/// What a breakpoint stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A function's first instruction.
    Entry,
    /// One of its `ret` instructions.
    Return,
}

/// Attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The BPF object could not be loaded (verifier, permissions).
    #[error("cannot load the BPF programs: {0}")]
    Load(#[source] aya::EbpfError),
    /// A program or map is missing from the object (a build problem).
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("BPF map error: {0}")]
    Map(#[source] aya::maps::MapError),
    /// The kernel refused to load or attach a program.
    #[error("cannot attach to {target}: {}", with_causes(source))]
    Program {
        /// The target file.
        target: String,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Every debug register of a CPU is taken.
    #[error(
        "no free debug register for a breakpoint at {address:#x}: x86-64 has 4 per CPU, and {}",
        describe_users(users)
    )]
    NoDebugRegister {
        /// Where the breakpoint was wanted.
        address: u64,
        /// What tracecar probes hold (the rest are held by something else:
        /// a debugger, `perf`, another agent).
        users: Vec<String>,
    },
    /// The ring buffers of the running probes leave no room for one more.
    #[error(
        "the probes' ring buffers already hold {} MiB of the agent's {} MiB budget",
        in_use >> 20,
        budget >> 20
    )]
    RingBudget {
        /// Bytes held.
        in_use: u64,
        /// The budget.
        budget: u64,
    },
    /// The loaded program's descriptor could not be duplicated for the
    /// breakpoints.
    #[error("cannot hand the BPF program to perf events: {0}")]
    ProgramFd(#[source] std::io::Error),
    /// `perf_event_open` of a breakpoint failed otherwise.
    #[error("cannot open a breakpoint at {address:#x}: {source}")]
    Breakpoint {
        /// Where.
        address: u64,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

fn describe_users(users: &[String]) -> String {
    if users.is_empty() {
        "tracecar holds none of them: a debugger, perf or another tool holds them".to_owned()
    } else {
        format!(
            "tracecar's probes hold {}: {}{}",
            users.len(),
            users.join("; "),
            if users.len() < 4 {
                " (the others are held by something else: a debugger, perf or another tool)"
            } else {
                ""
            }
        )
    }
}

/// An error and its sources: aya's messages name the syscall, the source
/// says why it failed (the errno).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Debug registers that tracecar's breakpoints hold, agent-wide: what a
/// request that finds none free is told about.
static HELD: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<(u64, String)>> {
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One breakpoint, on every CPU: held open (closing the perf events
/// detaches the program and frees the debug registers).
struct Breakpoint {
    _counters: Vec<Counter>,
}

/// A loaded probe: the programs, their maps and what they are attached to.
pub struct Probe {
    // Keeps programs, links and maps alive; dropping it detaches.
    ebpf: aya::Ebpf,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    pending: BpfHashMap<MapData, [u8; 16], [u8; PENDING_BYTES]>,
    paired: bool,
    breakpoints: BTreeMap<u64, Breakpoint>,
    programs: BTreeMap<&'static str, std::fs::File>,
    // Last: the budget is given back once the maps are gone.
    _lease: RingLease,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("breakpoints", &self.breakpoints.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The compiled BPF object (built by `build.rs` from `bpf/uprobe.bpf.c`).
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/uprobe.bpf.o"));

/// The ring buffer's size when none is asked for.
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;

/// The ring buffers of all probes together: kernel memory charged to the
/// sidecar's memory cgroup (the default limit is 256 MiB), so it is
/// bounded here, not by the OOM killer. Eight probes without stacks
/// (16 MiB each) fit; probes with stacks ask for 64 MiB and get what is
/// left, down to [`MIN_RING_BYTES`].
pub const RING_BUDGET_BYTES: u64 = 128 << 20;
/// The smallest ring a probe is given; below it, it is refused.
pub const MIN_RING_BYTES: u32 = 1 << 20;

/// What a probe asking for `requested` bytes gets when `available` are
/// left: the largest power of two within both, or `None` below
/// [`MIN_RING_BYTES`].
pub fn grant(requested: u32, available: u64) -> Option<u32> {
    let cap = u64::from(requested).min(available);
    if cap < u64::from(MIN_RING_BYTES) {
        return None;
    }
    let power = 1u64 << (63 - cap.leading_zeros());
    u32::try_from(power).ok()
}

/// A share of [`RING_BUDGET_BYTES`], given back when dropped.
#[derive(Debug)]
pub struct RingLease(u64);

impl RingLease {
    /// Takes up to `requested` bytes of the budget.
    pub fn take(requested: u32) -> Result<Self, AttachError> {
        let mut used = crate::memory::ring_bytes();
        let available = RING_BUDGET_BYTES.saturating_sub(*used);
        let granted = grant(requested, available).ok_or(AttachError::RingBudget {
            in_use: *used,
            budget: RING_BUDGET_BYTES,
        })?;
        *used += u64::from(granted);
        Ok(Self(u64::from(granted)))
    }

    /// The bytes granted.
    pub fn bytes(&self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
}

impl Drop for RingLease {
    fn drop(&mut self) {
        let mut used = crate::memory::ring_bytes();
        *used = used.saturating_sub(self.0);
    }
}

/// Loads the programs with `config` and a ring buffer of up to
/// `ring_bytes` (a power of two; less when other probes hold the budget),
/// attached to nothing yet.
pub fn load(config: Config, ring_bytes: u32) -> Result<Probe, AttachError> {
    let lease = RingLease::take(ring_bytes)?;
    let mut ebpf = aya::EbpfLoader::new()
        .map_max_entries("EVENTS", lease.bytes())
        .load(BPF_OBJECT)
        .map_err(AttachError::Load)?;
    {
        let map = ebpf
            .map_mut("CONFIG")
            .ok_or(AttachError::Missing("CONFIG map"))?;
        let mut array: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(AttachError::Map)?;
        array.set(0, config, 0).map_err(AttachError::Map)?;
    }
    let events = RingBuf::try_from(
        ebpf.take_map("EVENTS")
            .ok_or(AttachError::Missing("EVENTS map"))?,
    )
    .map_err(AttachError::Map)?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map("COUNTERS")
            .ok_or(AttachError::Missing("COUNTERS map"))?,
    )
    .map_err(AttachError::Map)?;
    let pending = BpfHashMap::try_from(
        ebpf.take_map("PENDING")
            .ok_or(AttachError::Missing("PENDING map"))?,
    )
    .map_err(AttachError::Map)?;
    Ok(Probe {
        ebpf,
        events,
        counters,
        pending,
        paired: config.flags & FLAG_PAIRED != 0,
        breakpoints: BTreeMap::new(),
        programs: BTreeMap::new(),
        _lease: lease,
    })
}

/// Loads the programs and attaches a uprobe (and a uretprobe when
/// `config` asks for pairing) to `location` in `target`, for `pid` only or
/// for every process running the file.
pub fn attach(
    target: &Path,
    location: &Location,
    pid: Option<u32>,
    config: Config,
) -> Result<Probe, AttachError> {
    let mut probe = load(config, DEFAULT_RING_BYTES)?;
    probe.attach_uprobe(target, location, pid)?;
    Ok(probe)
}

impl Probe {
    /// Attaches the uprobe (and the uretprobe when paired) at `location`
    /// in `target`.
    pub fn attach_uprobe(
        &mut self,
        target: &Path,
        location: &Location,
        pid: Option<u32>,
    ) -> Result<(), AttachError> {
        let scope = match pid.and_then(std::num::NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        // The return probe goes first: an entry recorded before its return
        // probe existed would wait for a return that is never seen.
        // Returns without a recorded entry are counted and dropped, so the
        // reverse is safe.
        let programs: &[&'static str] = if self.paired {
            &["tracecar_return", "tracecar_entry"]
        } else {
            &["tracecar_entry"]
        };
        let program_error = |source| AttachError::Program {
            target: target.display().to_string(),
            source,
        };
        for name in programs {
            let program: &mut UProbe = self
                .ebpf
                .program_mut(name)
                .ok_or(AttachError::Missing("uprobe program"))?
                .try_into()
                .map_err(program_error)?;
            program.load().map_err(program_error)?;
            let point = match location {
                Location::Symbol(s) => UProbeAttachLocation::Symbol(s.as_str()),
                Location::Offset(o) => UProbeAttachLocation::AbsoluteOffset(*o),
            };
            program
                .attach(point, target, scope)
                .map_err(program_error)?;
        }
        Ok(())
    }

    /// The loaded `perf_event` program `name`, as a file to attach.
    fn program(&mut self, name: &'static str) -> Result<&std::fs::File, AttachError> {
        if !self.programs.contains_key(name) {
            let program_error = |source| AttachError::Program {
                target: "a breakpoint".to_owned(),
                source,
            };
            let program: &mut PerfEvent = self
                .ebpf
                .program_mut(name)
                .ok_or(AttachError::Missing("perf_event program"))?
                .try_into()
                .map_err(program_error)?;
            program.load().map_err(program_error)?;
            let fd = program
                .fd()
                .map_err(program_error)?
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| AttachError::Breakpoint { address: 0, source })?;
            self.programs.insert(name, std::fs::File::from(fd));
        }
        self.programs
            .get(name)
            .ok_or(AttachError::Missing("perf_event program"))
    }

    /// Puts an execute breakpoint at `address` on every CPU of `cpus`, for
    /// the entry or a return of the probed function; `what` says what it
    /// is for when another request finds no register free.
    pub fn add_breakpoint(
        &mut self,
        address: u64,
        role: Role,
        cpus: &[u32],
        what: &str,
    ) -> Result<(), AttachError> {
        if self.breakpoints.contains_key(&address) {
            return Ok(());
        }
        let name = match role {
            Role::Entry => "tracecar_bp_entry",
            Role::Return => "tracecar_bp_return",
        };
        let program = self.program(name)?;
        let counters = crate::sys::open_breakpoints(address, cpus).map_err(|source| {
            if source.raw_os_error() == Some(28) {
                AttachError::NoDebugRegister {
                    address,
                    users: held().iter().map(|(_, w)| w.clone()).collect(),
                }
            } else {
                AttachError::Breakpoint { address, source }
            }
        })?;
        crate::sys::attach_program(&counters, program)
            .map_err(|source| AttachError::Breakpoint { address, source })?;
        held().push((address, what.to_owned()));
        self.breakpoints.insert(
            address,
            Breakpoint {
                _counters: counters,
            },
        );
        Ok(())
    }

    /// Removes the breakpoint at `address` (its code was freed or reused).
    pub fn remove_breakpoint(&mut self, address: u64) {
        if self.breakpoints.remove(&address).is_some() {
            release(address);
        }
    }

    /// Addresses with a breakpoint.
    pub fn breakpoints(&self) -> impl Iterator<Item = u64> + '_ {
        self.breakpoints.keys().copied()
    }

    /// Hands every record waiting in the ring buffer to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        self.drain_while(|bytes| {
            f(bytes);
            true
        });
    }

    /// Hands the records waiting in the ring buffer to `f`, in place,
    /// until it returns `false`.
    pub fn drain_while(&mut self, mut f: impl FnMut(&[u8]) -> bool) {
        while let Some(item) = self.events.next() {
            if !f(&item) {
                break;
            }
        }
    }

    /// The programs' counters, summed over CPUs.
    pub fn counts(&self) -> Counts {
        let sum = |i: u32| {
            self.counters
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        Counts {
            calls: sum(counter::CALLS),
            lost: sum(counter::LOST),
            throttled: sum(counter::THROTTLED),
            unpaired: sum(counter::UNPAIRED),
        }
    }

    /// Entries waiting for their return now: calls inside the function,
    /// or that left it other than through a probed return.
    pub fn pending(&self) -> u64 {
        self.pending.keys().filter(Result::is_ok).count() as u64
    }
}

fn release(address: u64) {
    let mut held = held();
    if let Some(i) = held.iter().position(|(a, _)| *a == address) {
        held.remove(i);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // The perf events close with the map; the registry forgets them.
        for address in std::mem::take(&mut self.breakpoints).into_keys() {
            release(address);
        }
    }
}

/// What the programs counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls of the target.
    pub calls: u64,
    /// Records the ring buffer had no room for.
    pub lost: u64,
    /// Calls over the rate limit.
    pub throttled: u64,
    /// Returns whose entry was not recorded.
    pub unpaired: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_granted_within_the_budget_in_powers_of_two() {
        assert_eq!(grant(64 << 20, 128 << 20), Some(64 << 20));
        assert_eq!(grant(64 << 20, 48 << 20), Some(32 << 20));
        assert_eq!(grant(16 << 20, 16 << 20), Some(16 << 20));
        assert_eq!(grant(16 << 20, (1 << 20) + 5), Some(1 << 20));
        assert_eq!(grant(16 << 20, (1 << 20) - 1), None);
        assert_eq!(grant(16 << 20, 0), None);
    }
}
