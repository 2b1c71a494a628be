//! The one place that opens kernel interfaces for sampling. The
//! `perf-event-open` crate holds the `unsafe` syscall wrappers; everything
//! above this module works on plain values.

pub mod events;
/// ptrace for `/v1/stacks`: its requests and `waitpid` are `unsafe` calls.
#[allow(unsafe_code)]
pub mod ptrace;
/// ptrace for the fatal-signal watch: its requests, `waitpid` and
/// `tgkill` are `unsafe` calls.
#[allow(unsafe_code)]
pub mod seize;

use perf_event_open::config::{
    CallChain, Cpu, Opts, Priv, Proc, RegsMask, SampleFormat, SampleOn, Size,
};
use perf_event_open::count::Counter;
use perf_event_open::event::hw::Hardware;
use perf_event_open::event::sw::Software;
use perf_event_open::sample::Sampler;

/// A failed `perf_event_open`, with the errno text.
pub type PerfError = std::io::Error;

fn probe_counter(
    event: impl TryInto<perf_event_open::event::Event, Error = std::io::Error>,
) -> Result<(), PerfError> {
    Counter::new(event, (Proc::CURRENT, Cpu::ALL), Opts::default()).map(drop)
}

fn probe_cpu_clock() -> Result<(), PerfError> {
    probe_counter(Software::CpuClock)
}

fn probe_cycles() -> Result<(), PerfError> {
    probe_counter(Hardware::CpuCycle)
}

/// Opens and closes one event to see whether it works here.
pub type PerfProbe = fn() -> Result<(), PerfError>;

/// Events `/v1/capabilities` tries to open, by perf's names.
pub const PERF_PROBES: [(&str, PerfProbe); 2] =
    [("cpu-clock", probe_cpu_clock), ("cycles", probe_cycles)];

/// Parses `/sys/devices/system/cpu/online` (`0-3,6`).
pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

/// Online CPUs.
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|t| parse_cpu_list(&t))
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            (0..n).collect()
        })
}

/// A per-CPU sampling counter and its ring buffer. Dropping it closes both.
pub struct CpuSampler {
    /// The CPU.
    pub cpu: u32,
    /// The counter (kept open while sampling).
    pub counter: Counter,
    /// Its ring buffer.
    pub sampler: Sampler,
}

/// Maps `counter`'s ring buffer of 2^`pages_exp` pages, saying what to do
/// when the locked-memory limit refuses it (EPERM).
fn ring(counter: &Counter, pages_exp: u8) -> Result<Sampler, PerfError> {
    counter.sampler(pages_exp).map_err(|e| {
        if e.raw_os_error() != Some(1) {
            return e;
        }
        let kib = 4u64 << pages_exp;
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot map a {kib} KiB ring buffer per CPU: over the locked-memory limit (kernel.perf_event_mlock_kb per CPU, then RLIMIT_MEMLOCK); raise the container's RLIMIT_MEMLOCK, or use unwind=fp and a lower hz, which need smaller rings ({e})"
            ),
        )
    })
}

/// One counter per CPU of `cpus` (`open` makes it for its CPU), each with
/// its ring buffer of 2^`pages_exp` pages.
fn per_cpu(
    cpus: &[u32],
    pages_exp: u8,
    open: impl Fn(Cpu) -> Result<Counter, PerfError>,
) -> Result<Vec<CpuSampler>, PerfError> {
    cpus.iter()
        .map(|&cpu| {
            let counter = open(Cpu(cpu))?;
            let sampler = ring(&counter, pages_exp)?;
            Ok(CpuSampler {
                cpu,
                counter,
                sampler,
            })
        })
        .collect()
}

/// Frames the kernel walks per callchain; deeper stacks are truncated.
pub const MAX_STACK_FRAMES: u16 = 127;

impl std::fmt::Debug for CpuSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuSampler")
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

/// What to sample.
#[derive(Debug, Clone, Copy)]
pub struct SamplingAttrs {
    /// Samples per second per CPU.
    pub hz: u64,
    /// Include kernel frames in callchains.
    pub kernel: bool,
    /// Ring buffer size as a power of two of pages.
    pub ring_pages_exp: u8,
    /// Copy user registers (`regs_mask`) and this many bytes of user stack
    /// into each sample, for unwinding in userspace.
    pub stack_copy: Option<(u64, u32)>,
    /// Sample the `cpu-clock` timer even where a PMU has cycles, so that
    /// each sample is the same length of time (wall profiles).
    pub timer_only: bool,
}

/// Opens a sampler on every CPU in `cpus`, disabled: hardware cycles
/// where the CPU has a PMU, else the `cpu-clock` software timer (VMs often
/// have no PMU). Samples carry pid/tid, time, CPU and the frame-pointer
/// callchain, plus registers and a stack copy when asked. Returns the
/// samplers and the event's perf name.
pub fn open_cpu_samplers(
    cpus: &[u32],
    attrs: SamplingAttrs,
) -> Result<(Vec<CpuSampler>, &'static str), PerfError> {
    let mut opts = Opts {
        sample_on: SampleOn::Freq(attrs.hz),
        exclude: Priv {
            kernel: !attrs.kernel,
            hv: true,
            idle: true,
            ..Priv::default()
        },
        sample_format: SampleFormat {
            call_chain: Some(CallChain {
                exclude_user: false,
                exclude_kernel: !attrs.kernel,
                defer_user: false,
                // The kernel's default limit (kernel.perf_event_max_stack).
                max_stack_frames: MAX_STACK_FRAMES,
            }),
            user_regs: attrs.stack_copy.map(|(mask, _)| RegsMask(mask)),
            user_stack: attrs.stack_copy.map(|(_, bytes)| Size(bytes)),
            ..SampleFormat::default()
        },
        ..Opts::default()
    };
    opts.record_id_format.task = true;
    opts.record_id_format.time = true;
    opts.record_id_format.cpu = true;
    let open_all = |hardware: bool| -> Result<Vec<CpuSampler>, PerfError> {
        per_cpu(cpus, attrs.ring_pages_exp, |cpu| {
            if hardware {
                Counter::new(Hardware::CpuCycle, (Proc::ALL, cpu), &opts)
            } else {
                Counter::new(Software::CpuClock, (Proc::ALL, cpu), &opts)
            }
        })
    };
    if attrs.timer_only {
        return Ok((open_all(false)?, "cpu-clock"));
    }
    match open_all(true) {
        Ok(samplers) => Ok((samplers, "cycles")),
        Err(_) => Ok((open_all(false)?, "cpu-clock")),
    }
}

/// Where tracefs is looked for, in order.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A tracepoint: its perf ID and its `format` text (field offsets).
#[derive(Debug, Clone)]
pub struct TracepointInfo {
    /// The ID `perf_event_open` takes.
    pub id: u64,
    /// The `format` file.
    pub format: String,
}

/// Why a tracepoint cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum TracepointError {
    /// tracefs is not mounted, and mounting it failed.
    #[error(
        "the tracepoint {0} is not visible: tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({1}); mount it on the node (mount -t tracefs tracefs /sys/kernel/tracing)"
    )]
    NoTracefs(String, #[source] std::io::Error),
    /// The kernel has no such tracepoint, or its files cannot be read.
    #[error("cannot read the tracepoint {0} under tracefs: {1}")]
    Unreadable(String, #[source] std::io::Error),
}

/// Reads tracepoint `group:name` from tracefs, mounting tracefs at
/// `/sys/kernel/tracing` first when it is not there (needs CAP_SYS_ADMIN;
/// without it the error says what to mount).
pub fn tracepoint(group: &str, name: &str) -> Result<TracepointInfo, TracepointError> {
    let label = format!("{group}:{name}");
    let read = |root: &str| -> std::io::Result<TracepointInfo> {
        let dir = std::path::Path::new(root)
            .join("events")
            .join(group)
            .join(name);
        let id = std::fs::read_to_string(dir.join("id"))?;
        Ok(TracepointInfo {
            id: id.trim().parse().map_err(std::io::Error::other)?,
            format: std::fs::read_to_string(dir.join("format"))?,
        })
    };
    let mut first_error = None;
    for root in TRACEFS {
        match read(root) {
            Ok(info) => return Ok(info),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mounted = std::path::Path::new(TRACEFS[0]).join("events").exists();
    if mounted {
        let error = first_error.unwrap_or_else(|| std::io::Error::other("not found"));
        return Err(TracepointError::Unreadable(label, error));
    }
    rustix::mount::mount(
        "tracefs",
        TRACEFS[0],
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| TracepointError::NoTracefs(label.clone(), e.into()))?;
    read(TRACEFS[0]).map_err(|e| TracepointError::Unreadable(label, e))
}

/// Opens the tracepoint `id` on every CPU of `cpus` for every task,
/// disabled, with a sample on each hit carrying the task, time
/// (CLOCK_MONOTONIC), CPU, the tracepoint's raw fields and the callchain,
/// kernel part included (plus registers and a stack copy when asked), and
/// with context-switch records (`PERF_RECORD_SWITCH_CPU_WIDE`) on, whose
/// switch-ins say when each task got a CPU back. For `sched:sched_switch`
/// the sample is taken in the task leaving the CPU, so its stacks are
/// where it blocked.
pub fn open_tracepoint_samplers(
    id: u64,
    cpus: &[u32],
    attrs: SamplingAttrs,
) -> Result<Vec<CpuSampler>, PerfError> {
    use perf_event_open::config::{Clock, ExtraRecord};
    use perf_event_open::event::tp::Tracepoint;
    let mut opts = Opts {
        sample_on: SampleOn::Count(1),
        exclude: Priv {
            hv: true,
            ..Priv::default()
        },
        sample_format: SampleFormat {
            raw: true,
            call_chain: Some(CallChain {
                exclude_user: false,
                exclude_kernel: false,
                defer_user: false,
                max_stack_frames: MAX_STACK_FRAMES,
            }),
            user_regs: attrs.stack_copy.map(|(mask, _)| RegsMask(mask)),
            user_stack: attrs.stack_copy.map(|(_, bytes)| Size(bytes)),
            ..SampleFormat::default()
        },
        extra_record: ExtraRecord {
            ctx_switch: true,
            ..ExtraRecord::default()
        },
        record_id_all: true,
        timer: Some(Clock::Monotonic),
        ..Opts::default()
    };
    opts.record_id_format.task = true;
    opts.record_id_format.time = true;
    opts.record_id_format.cpu = true;
    per_cpu(cpus, attrs.ring_pages_exp, |cpu| {
        Counter::new(Tracepoint { id }, (Proc::ALL, cpu), &opts)
    })
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the samples
/// [`open_tracepoint_samplers`] takes.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Opens one hardware execute breakpoint at `address` on each CPU of
/// `cpus`, for every task that runs there (`pid = -1`), disabled, with an
/// overflow on every hit so that an attached BPF program sees each one.
/// Per CPU rather than per task: a per-task breakpoint on a process that
/// is already running counted no hits on this kernel, and per-CPU events
/// also cover threads created later. x86-64 has four debug registers per
/// CPU; when they are taken the kernel answers `ENOSPC`.
pub fn open_breakpoints(address: u64, cpus: &[u32]) -> Result<Vec<Counter>, PerfError> {
    use perf_event_open::event::bp::{Breakpoint, Type};
    let opts = Opts {
        sample_on: SampleOn::Count(1),
        exclude: Priv {
            kernel: true,
            hv: true,
            ..Priv::default()
        },
        ..Opts::default()
    };
    cpus.iter()
        .map(|&cpu| {
            Counter::new(
                Breakpoint {
                    ty: Type::X,
                    addr: address,
                },
                (Proc::ALL, Cpu(cpu)),
                &opts,
            )
        })
        .collect()
}

/// Attaches the BPF program `program` (a loaded `perf_event` program) to
/// each counter and enables it. Closing a counter detaches the program.
pub fn attach_program(counters: &[Counter], program: &std::fs::File) -> Result<(), PerfError> {
    for counter in counters {
        counter.attach_bpf(program)?;
        counter.enable()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6\n"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }
}

/// The marker aya needs to copy our structs into BPF maps, the
/// `pre_exec` hook that sets the parent-death signal for daemons the agent
/// supervises, and `malloc_trim`: with [`ptrace`], the only `unsafe` in
/// the agent.
#[allow(unsafe_code)]
mod raw {
    // SAFETY: `Config` is `#[repr(C)]`, `Copy`, and made only of integers and
    // arrays of `Capture` (itself integers), with no padding (checked against
    // bpf/events.h by the layout test), so any bit pattern is valid.
    unsafe impl aya::Pod for crate::sys::events::Config {}

    /// Makes the child get SIGTERM when the thread that spawns it exits, so
    /// that a daemon the agent started never outlives a killed agent.
    pub fn terminate_with_parent(command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the closure runs between fork and exec and makes one
        // prctl(2) call, which is async-signal-safe; it touches no Rust
        // state and does not allocate.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(Into::into)
            });
        }
    }

    /// Gives the allocator's free memory back to the kernel.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn malloc_trim() {
        // SAFETY: malloc_trim(3) takes no pointer and is thread-safe (it
        // takes the arenas' locks); it only returns free pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Other allocators return memory on their own.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn malloc_trim() {}
}

/// Gives the memory freed by a capture back to the kernel, so that the
/// agent's resident memory (what [`crate::memory`] counts against the
/// limit) falls when a large capture ends. glibc keeps freed small blocks
/// in its arenas otherwise.
pub fn release_free_memory() {
    raw::malloc_trim();
}

/// Sends SIGKILL to every process of the group `pgid`: what a killed
/// daemon's helpers (forked workers, consumer daemons) leave behind.
pub fn kill_process_group(pgid: u32) {
    let Some(pgid) = i32::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // ESRCH (the group is gone already) is what it is for.
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
}

pub use raw::terminate_with_parent;

/// Whether this process may create entries in the directory `dir`, with
/// its effective IDs and capabilities (`faccessat(W_OK|X_OK, AT_EACCESS)`):
/// the kernel's own answer, ACLs and read-only mounts included. Creates
/// nothing.
pub fn can_create_in(dir: &std::path::Path) -> Result<(), rustix::io::Errno> {
    use rustix::fs::{Access, AtFlags, CWD, accessat};
    accessat(
        CWD,
        dir,
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
}

/// Runs `f` on this thread with the effective user and group `uid`/`gid`,
/// then switches back (Linux's IDs are per thread; the kernel's raw
/// `setresuid`/`setresgid` change only the calling thread, and the
/// effective capabilities, cleared while the effective uid is not 0, come
/// back from the permitted set when it is 0 again). For what the kernel
/// checks against the owner of a file the app made, such as connecting to
/// its `srw-------` socket, without CAP_DAC_OVERRIDE for everything else.
/// Needs CAP_SETUID and CAP_SETGID; `Err` when the switch is refused, and
/// `f` does not run.
pub fn as_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> Result<T, rustix::io::Errno> {
    use rustix::process::{Gid, Uid};
    use rustix::thread::{set_thread_res_gid, set_thread_res_uid};
    let (old_uid, old_gid) = (rustix::process::geteuid(), rustix::process::getegid());
    set_thread_res_gid(None, Gid::from_raw(gid), None)?;
    if let Err(e) = set_thread_res_uid(None, Uid::from_raw(uid), None) {
        let _ = set_thread_res_gid(None, old_gid, None);
        return Err(e);
    }
    let value = f();
    // Back to what the thread was; if this failed the thread would keep
    // the app's identity, so it is checked and the agent stops.
    let restored = set_thread_res_uid(None, old_uid, None)
        .and_then(|()| set_thread_res_gid(None, old_gid, None));
    if let Err(e) = restored {
        tracing::error!(error = %e, "cannot switch a thread back from uid {uid}; exiting");
        std::process::abort();
    }
    Ok(value)
}
