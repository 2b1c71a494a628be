//! `/v1/profile` requests: query parameters → a validated [`ProfileSpec`].

use tracecar_api::request::ProfileRequest;

use crate::params::{self, Param, SpecError};

pub use crate::stacks::{Format, Unwind};

/// A validated profile request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    /// Target PIDs; `None` means every process of the pod but the agent.
    pub pids: Option<Vec<u32>>,
    /// Capture length.
    pub seconds: u32,
    /// Samples per second per CPU.
    pub hz: u32,
    /// Unwinding mode.
    pub unwind: Unwind,
    /// Kernel frames; `None` means "where kallsyms is readable".
    pub kernel: Option<bool>,
    /// Thread names as a root frame.
    pub threads: bool,
    /// Output format.
    pub format: Format,
    /// What is measured: CPU samples, blocked time, or both.
    pub mode: Mode,
    /// Which blocks count (`offcpu` and `wall`).
    pub blocks: BlockFilter,
}

/// What a profile measures (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// CPU samples: where the CPU time goes.
    Cpu,
    /// Blocked time: each time a thread goes off the CPU, its stack at
    /// that moment, weighted by the nanoseconds it stayed off.
    OffCpu,
    /// Both, in nanoseconds, each leaf marked `[on-cpu]` or with the
    /// kernel function the thread blocked in.
    Wall,
    /// .NET allocations: the runtime's allocation ticks (one about every
    /// 100 KB allocated) with their stacks, weighted by bytes.
    Alloc,
    /// .NET lock contention: each wait for a monitor with its stack,
    /// weighted by the nanoseconds waited.
    Contention,
}

impl Mode {
    /// Parses a `mode=` value (absent: `cpu`).
    pub fn parse(value: Option<&str>) -> Option<Self> {
        Some(match value {
            None | Some("cpu") => Self::Cpu,
            Some("offcpu") => Self::OffCpu,
            Some("wall") => Self::Wall,
            Some("alloc") => Self::Alloc,
            Some("contention") => Self::Contention,
            Some(_) => return None,
        })
    }

    /// Its name in requests and outputs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::OffCpu => "offcpu",
            Self::Wall => "wall",
            Self::Alloc => "alloc",
            Self::Contention => "contention",
        }
    }

    /// Whether blocks are recorded (context switches are traced).
    pub fn records_blocks(self) -> bool {
        matches!(self, Self::OffCpu | Self::Wall)
    }

    /// Whether CPU samples are taken.
    pub fn samples_cpu(self) -> bool {
        matches!(self, Self::Cpu | Self::Wall)
    }

    /// Whether the profile is of events a language runtime reports with
    /// their stacks (.NET's, through its diagnostic port), not of perf
    /// samples.
    pub fn from_runtime(self) -> bool {
        matches!(self, Self::Alloc | Self::Contention)
    }
}

/// Which off-CPU intervals count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockFilter {
    /// Blocks shorter than this are dropped (`min_block_us=`), in ns.
    pub min_block_ns: u64,
    /// The thread states that count (`state=`).
    pub states: States,
    /// Switch-outs recorded per second at most (`rate=`); the rest are
    /// counted as throttled. 0 until parsed ([`DEFAULT_RATE`]).
    pub rate: u32,
}

/// `rate=`'s defaults: switch-outs kept per second with frame-pointer
/// stacks, and with stack copies (each of which costs a DWARF walk).
pub const DEFAULT_RATE: (u32, u32) = (100_000, 20_000);

/// The states a thread can leave the CPU in that `state=` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct States {
    /// `S`: interruptible sleep (locks, sleeps, sockets, pipes, epoll).
    pub sleeping: bool,
    /// `D`: uninterruptible sleep (disk I/O, page faults, some locks).
    pub uninterruptible: bool,
    /// `R`: preempted while runnable, waiting for a CPU (not a block:
    /// by default only in `wall` profiles).
    pub preempted: bool,
}

impl Default for States {
    /// `S` and `D`: every kind of blocking, not CPU contention.
    fn default() -> Self {
        Self {
            sleeping: true,
            uninterruptible: true,
            preempted: false,
        }
    }
}

impl States {
    /// Parses `state=`: a comma list of `S`, `D` and `R`.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut states = Self {
            sleeping: false,
            uninterruptible: false,
            preempted: false,
        };
        for part in raw.split(',').map(str::trim) {
            match part {
                "S" => states.sleeping = true,
                "D" => states.uninterruptible = true,
                "R" => states.preempted = true,
                _ => return None,
            }
        }
        Some(states)
    }
}

/// How each capture samples: the parameters `/v1/profile` and
/// `/v1/profile/trigger` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// Samples per second per CPU.
    pub hz: u32,
    /// Unwinding mode.
    pub unwind: Unwind,
    /// Kernel frames; `None` means "where kallsyms is readable".
    pub kernel: Option<bool>,
    /// Thread names as a root frame.
    pub threads: bool,
}

/// The parameters [`Sampling`] reads, which `/v1/profile` and
/// `/v1/profile/trigger` share.
#[derive(Debug, Clone, Copy)]
pub struct SamplingParams<'a> {
    /// Samples per second.
    pub hz: Param<'a>,
    /// How user stacks are walked.
    pub unwind: Param<'a>,
    /// Kernel frames.
    pub kernel: Param<'a>,
    /// Thread names as root frames.
    pub threads: Param<'a>,
}

/// Parses `hz`, `unwind`, `kernel` and `threads`.
pub fn sampling(params: SamplingParams<'_>) -> Result<Sampling, SpecError> {
    Ok(Sampling {
        hz: params::number(params.hz, 99, 1..=1000)?,
        unwind: crate::stacks::unwind_param(params.unwind)?,
        kernel: params::boolean(params.kernel)?,
        threads: params::boolean(params.threads)?.unwrap_or(false),
    })
}

impl ProfileSpec {
    /// A profile of `pids` for `seconds`, sampled as `sampling` says.
    pub fn new(pids: Option<Vec<u32>>, seconds: u32, sampling: Sampling, format: Format) -> Self {
        Self {
            pids,
            seconds,
            hz: sampling.hz,
            unwind: sampling.unwind,
            kernel: sampling.kernel,
            threads: sampling.threads,
            format,
            mode: Mode::Cpu,
            blocks: BlockFilter::default(),
        }
    }
}

/// Parses `mode`, `min_block_us`, `state` and `rate`; the last three only
/// where blocks are recorded, and `hz` only where the CPU is sampled.
fn mode_and_filter(request: &ProfileRequest) -> Result<(Mode, BlockFilter), SpecError> {
    let raw = request.mode.as_deref();
    let mode = Mode::parse(raw).ok_or_else(|| {
        SpecError::new(
            format!(
                "mode={} is not supported",
                tracecar_api::quoted(raw.unwrap_or_default())
            ),
            "use cpu, offcpu, wall, alloc (.NET) or contention (.NET)",
        )
    })?;
    if !mode.records_blocks()
        && let Some(key) = [request.min_block_us(), request.state(), request.rate()]
            .into_iter()
            .find(Param::is_set)
            .map(|p| p.name)
    {
        return Err(SpecError::new(
            format!(
                "{key} applies to blocked time, which mode={} does not record",
                mode.name()
            ),
            "add mode=offcpu or mode=wall",
        ));
    }
    if !mode.samples_cpu() && request.hz.is_some() {
        return Err(SpecError::new(
            format!(
                "hz does not apply to mode={}: the events are recorded, not sampled",
                mode.name()
            ),
            "drop hz, or use mode=wall to sample the CPU too",
        ));
    }
    if mode.from_runtime()
        && let Some(key) = [request.unwind(), request.kernel(), request.threads()]
            .into_iter()
            .find(Param::is_set)
            .map(|p| p.name)
    {
        return Err(SpecError::new(
            format!(
                "{key} does not apply to mode={}: the runtime walks the managed stack itself",
                mode.name()
            ),
            format!("drop {key}"),
        ));
    }
    let min_block_us = params::number(request.min_block_us(), 0, 0..=60_000_000)?;
    let default_rate = if crate::stacks::unwind_param(request.unwind())? == Unwind::Fp {
        DEFAULT_RATE.0
    } else {
        DEFAULT_RATE.1
    };
    let rate = params::number(request.rate(), default_rate, 1..=1_000_000)?;
    let states = match request.state.as_deref() {
        // A wall profile is every thread's whole time, waiting for a CPU
        // included; an off-CPU profile is the blocking.
        None if mode == Mode::Wall => States {
            preempted: true,
            ..States::default()
        },
        None => States::default(),
        Some(raw) => States::parse(raw).ok_or_else(|| {
            SpecError::new(
                format!("state={} is not supported", tracecar_api::quoted(raw)),
                "use S (sleeping), D (uninterruptible), R (preempted) or a list such as S,D",
            )
        })?,
    };
    Ok((
        mode,
        BlockFilter {
            min_block_ns: u64::from(min_block_us) * 1000,
            states,
            rate,
        },
    ))
}

/// Validates a `/v1/profile` request.
pub fn parse(request: &ProfileRequest) -> Result<ProfileSpec, SpecError> {
    let format = crate::stacks::format_param(request.format())?.unwrap_or(Format::Svg);
    let (mode, blocks) = mode_and_filter(request)?;
    if mode.from_runtime() {
        // The runtime of one process reports them.
        params::required_pid(request.pid()).map_err(|e| {
            SpecError::new(
                format!(
                    "mode={} profiles one .NET process: {}",
                    mode.name(),
                    e.message
                ),
                e.hint,
            )
        })?;
    }
    Ok(ProfileSpec {
        mode,
        blocks,
        ..ProfileSpec::new(
            params::pids(request.pid())?,
            params::number(request.seconds(), 10, 1..=600)?,
            sampling(SamplingParams {
                hz: request.hz(),
                unwind: request.unwind(),
                kernel: request.kernel(),
                threads: request.threads(),
            })?,
            format,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ProfileSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse(&r))
    }

    #[test]
    fn defaults() {
        let spec = q(&[]).unwrap();
        assert_eq!(spec.pids, None);
        assert_eq!((spec.seconds, spec.hz), (10, 99));
        assert_eq!(spec.unwind, Unwind::Auto);
        assert_eq!(spec.kernel, None);
        assert!(!spec.threads);
        assert_eq!(spec.format, Format::Svg);
        assert_eq!(spec.mode, Mode::Cpu);
        assert_eq!(spec.blocks.min_block_ns, 0);
        assert_eq!(spec.blocks.states, States::default());
    }

    #[test]
    fn off_cpu_requests() {
        let spec = q(&[
            ("mode", "wall"),
            ("min_block_us", "250"),
            ("state", "D"),
            ("rate", "500"),
        ])
        .unwrap();
        assert_eq!(spec.blocks.rate, 500);
        assert_eq!(spec.mode, Mode::Wall);
        assert_eq!(spec.blocks.min_block_ns, 250_000);
        assert!(spec.blocks.states.uninterruptible);
        assert!(!spec.blocks.states.sleeping && !spec.blocks.states.preempted);
        let spec = q(&[("mode", "offcpu"), ("state", "S,D,R")]).unwrap();
        assert_eq!(spec.mode, Mode::OffCpu);
        assert!(spec.blocks.states.preempted);
        assert_eq!(
            q(&[("mode", "offcpu")]).unwrap().blocks.states,
            States::default()
        );
        assert!(!States::default().preempted);
        let wall = q(&[("mode", "wall")]).unwrap().blocks;
        assert!(wall.states.sleeping && wall.states.uninterruptible && wall.states.preempted);
        assert_eq!(wall.rate, DEFAULT_RATE.1, "auto copies stacks");
        let fp = q(&[("mode", "offcpu"), ("unwind", "fp")]).unwrap();
        assert_eq!(fp.blocks.rate, DEFAULT_RATE.0);
    }

    #[test]
    fn runtime_modes_take_one_process() {
        let spec = q(&[("mode", "alloc"), ("pid", "7"), ("format", "pprof")]).unwrap();
        assert_eq!((spec.mode, spec.pids), (Mode::Alloc, Some(vec![7])));
        assert!(spec.mode.from_runtime() && !spec.mode.samples_cpu());
        let e = q(&[("mode", "contention")]).unwrap_err();
        assert!(
            e.message
                .starts_with("mode=contention profiles one .NET process"),
            "{e:?}"
        );
    }

    #[test]
    fn full_request() {
        let spec = q(&[
            ("pid", "7, 9"),
            ("seconds", "30"),
            ("hz", "999"),
            ("unwind", "fp"),
            ("kernel", "false"),
            ("threads", "true"),
            ("format", "pprof"),
        ])
        .unwrap();
        assert_eq!(spec.pids, Some(vec![7, 9]));
        assert_eq!((spec.seconds, spec.hz), (30, 999));
        assert_eq!(spec.kernel, Some(false));
        assert!(spec.threads);
        assert_eq!(spec.format, Format::Pprof);
    }

    #[test]
    fn bad_values_have_hints() {
        for pairs in [
            &[("seconds", "0")][..],
            &[("seconds", "601")],
            &[("hz", "1001")],
            &[("hz", "fast")],
            &[("format", "png")],
            &[("unwind", "lbr")],
            &[("pid", "abc")],
            &[("pid", "0")],
            &[("pid", "")],
            &[("kernel", "maybe")],
            &[("second", "5")],
            &[("mode", "offcpu-ish")],
            &[("mode", "offcpu"), ("state", "Z")],
            &[("mode", "offcpu"), ("state", "")],
            &[("mode", "offcpu"), ("min_block_us", "-1")],
            &[("mode", "offcpu"), ("hz", "99")],
            &[("min_block_us", "10")],
            &[("state", "S")],
            &[("rate", "10")],
            &[("mode", "wall"), ("rate", "0")],
            &[("mode", "alloc")],
            &[("mode", "alloc"), ("pid", "1,2")],
            &[("mode", "alloc"), ("pid", "1"), ("hz", "99")],
            &[("mode", "contention"), ("pid", "1"), ("unwind", "fp")],
            &[("mode", "contention"), ("pid", "1"), ("state", "S")],
        ] {
            let err = q(pairs)
                .err()
                .unwrap_or_else(|| panic!("{pairs:?} accepted"));
            assert!(!err.hint.is_empty(), "{pairs:?}");
        }
    }
}
