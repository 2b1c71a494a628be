//! Loading the BPF programs with aya and attaching them: the executor of a
//! uprobe plan. Dropping [`Attached`] detaches every probe and closes every
//! map and link (the kernel also does this if the agent is killed).

use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};

use super::events::{Config, Event};

/// Where to attach in the target file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An ELF symbol name.
    Symbol(String),
    /// A file offset.
    Offset(u64),
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

/// Probes attached to one function, with their ring buffer.
pub struct Attached {
    // Keeps programs, links and maps alive; dropping it detaches.
    _ebpf: aya::Ebpf,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached").finish_non_exhaustive()
    }
}

/// The compiled BPF object (built by `build.rs` from `bpf/uprobe.bpf.c`).
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/uprobe.bpf.o"));

/// Loads the programs, writes `config`, and attaches a uprobe (and a
/// uretprobe when `config` asks for pairing) to `location` in `target`,
/// for `pid` only or for every process running the file.
pub fn attach(
    target: &Path,
    location: &Location,
    pid: Option<u32>,
    config: Config,
) -> Result<Attached, AttachError> {
    let mut ebpf = aya::Ebpf::load(BPF_OBJECT).map_err(AttachError::Load)?;
    {
        let map = ebpf
            .map_mut("CONFIG")
            .ok_or(AttachError::Missing("CONFIG map"))?;
        let mut array: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(AttachError::Map)?;
        array.set(0, config, 0).map_err(AttachError::Map)?;
    }
    let scope = match pid.and_then(std::num::NonZeroU32::new) {
        Some(pid) => UProbeScope::OneProcess(pid),
        None => UProbeScope::AllProcesses,
    };
    let paired = config.flags & super::events::FLAG_PAIRED != 0;
    // The uretprobe goes first: an entry recorded before its uretprobe
    // existed would never be popped and would shift every later pairing.
    // Returns without a recorded entry are ignored, so the reverse is safe.
    let programs: &[&'static str] = if paired {
        &["tracecar_return", "tracecar_entry"]
    } else {
        &["tracecar_entry"]
    };
    let program_error = |source| AttachError::Program {
        target: target.display().to_string(),
        source,
    };
    for name in programs {
        let program: &mut UProbe = ebpf
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
    Ok(Attached {
        _ebpf: ebpf,
        events,
        counters,
    })
}

impl Attached {
    /// Takes every event waiting in the ring buffer.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        while let Some(item) = self.events.next() {
            if let Some(event) = Event::from_bytes(&item) {
                out.push(event);
            }
        }
    }

    /// Calls seen, events lost (ring buffer full) and calls dropped by the
    /// rate limit, summed over CPUs.
    pub fn counters(&self) -> (u64, u64, u64) {
        let sum = |i: u32| {
            self.counters
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        (sum(0), sum(1), sum(2))
    }
}
