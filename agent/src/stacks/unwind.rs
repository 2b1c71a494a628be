//! DWARF unwinding in userspace: a copy of the user stack and registers
//! from each sample, walked with `framehop` using the `.eh_frame` of the
//! modules involved. Unwind info is loaded lazily, only for modules that
//! frames actually land in.

use std::collections::HashSet;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use crate::procfs::{MapEntry, Procfs};

/// Registers sampled with `PERF_SAMPLE_REGS_USER`, in mask-bit order:
/// BP (6), SP (7), IP (8).
pub const X86_REGS_MASK: u64 = (1 << 6) | (1 << 7) | (1 << 8);
/// Bytes of user stack copied per sample.
pub const USER_STACK_BYTES: u32 = 16 * 1024;
/// Frames walked at most.
const MAX_FRAMES: usize = 256;

/// One process's unwinder and the modules loaded into it.
pub struct ProcessUnwinder {
    unwinder: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
    loaded: HashSet<String>,
    failed: HashSet<String>,
}

impl std::fmt::Debug for ProcessUnwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessUnwinder")
            .field("loaded", &self.loaded)
            .finish_non_exhaustive()
    }
}

impl Default for ProcessUnwinder {
    fn default() -> Self {
        Self {
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            loaded: HashSet::new(),
            failed: HashSet::new(),
        }
    }
}

/// The unwound user stack, innermost first: the IP, then return addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwound {
    /// Frame addresses.
    pub frames: Vec<u64>,
    /// Whether walking stopped early (stack copy ended or unwind error).
    pub incomplete: bool,
}

impl ProcessUnwinder {
    /// Unwinds one sample. `regs` are BP, SP, IP; `stack` starts at SP.
    /// Modules are loaded on first use from `maps` via `procfs`.
    pub fn unwind(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        maps: &[MapEntry],
        regs: &[u64],
        stack: &[u8],
    ) -> Option<Unwound> {
        let [bp, sp, ip] = regs else { return None };
        // Each pass may discover a module it has no unwind info for yet;
        // load it and walk again.
        for _ in 0..8 {
            let mut read_stack = |addr: u64| -> Result<u64, ()> {
                let offset = usize::try_from(addr.checked_sub(*sp).ok_or(())?).map_err(|_| ())?;
                let bytes = stack.get(offset..offset + 8).ok_or(())?;
                Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
            };
            let mut iter = self.unwinder.iter_frames(
                *ip,
                UnwindRegsX86_64::new(*ip, *sp, *bp),
                &mut self.cache,
                &mut read_stack,
            );
            let mut frames = Vec::new();
            let mut incomplete = false;
            loop {
                match iter.next() {
                    Ok(Some(FrameAddress::InstructionPointer(a))) => frames.push(a),
                    // Look up the call instruction, not the one after it.
                    Ok(Some(FrameAddress::ReturnAddress(a))) => frames.push(a.get() - 1),
                    Ok(None) => break,
                    Err(_) => {
                        incomplete = true;
                        break;
                    }
                }
                if frames.len() >= MAX_FRAMES {
                    incomplete = true;
                    break;
                }
            }
            let missing = frames
                .iter()
                .filter_map(|a| crate::procfs::mapping_at(maps, *a))
                .find(|m| {
                    m.is_file_backed()
                        && m.path
                            .as_ref()
                            .is_some_and(|p| !self.loaded.contains(p) && !self.failed.contains(p))
                })
                .and_then(|m| m.path.clone());
            match missing {
                Some(path) => self.load(procfs, pid, maps, &path),
                None => return Some(Unwound { frames, incomplete }),
            }
        }
        None
    }

    fn load(&mut self, procfs: &Procfs, pid: u32, maps: &[MapEntry], path: &str) {
        match build_module(procfs, pid, maps, path) {
            Some(module) => {
                self.unwinder.add_module(module);
                self.loaded.insert(path.to_owned());
            }
            None => {
                self.failed.insert(path.to_owned());
            }
        }
    }
}

fn build_module(
    procfs: &Procfs,
    pid: u32,
    maps: &[MapEntry],
    path: &str,
) -> Option<Module<Vec<u8>>> {
    let mappings: Vec<&MapEntry> = maps
        .iter()
        .filter(|m| m.path.as_deref() == Some(path))
        .collect();
    let first = mappings.iter().min_by_key(|m| m.offset)?;
    let data = procfs.read_mapped_file(pid, first).ok()?;
    let file = object::File::parse(&*data).ok()?;
    // The segment at file offset 0 (stated address base_svma) is mapped at
    // the start of the mapping with file offset 0 (base_avma).
    let first_segment = file.segments().find(|s| s.file_range().0 == 0)?;
    let base_svma = first_segment.address();
    let base_avma = first.start.checked_sub(first.offset)?;
    let section = |name: &str| {
        let s = file.section_by_name(name)?;
        let data = s.data().ok()?.to_vec();
        Some((s.address()..s.address() + s.size(), data))
    };
    let text = section(".text");
    let eh_frame = section(".eh_frame");
    let eh_frame_hdr = section(".eh_frame_hdr");
    let debug_frame = file
        .section_by_name(".debug_frame")
        .and_then(|s| s.data().ok())
        .map(<[u8]>::to_vec);
    let info = ExplicitModuleSectionInfo {
        base_svma,
        text_svma: text.as_ref().map(|t| t.0.clone()),
        text: text.map(|t| t.1),
        eh_frame_svma: eh_frame.as_ref().map(|e| e.0.clone()),
        eh_frame: eh_frame.map(|e| e.1),
        eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|e| e.0.clone()),
        eh_frame_hdr: eh_frame_hdr.map(|e| e.1),
        debug_frame,
        ..ExplicitModuleSectionInfo::default()
    };
    let start = mappings.iter().map(|m| m.start).min()?;
    let end = mappings.iter().map(|m| m.end).max()?;
    Some(Module::new(path.to_owned(), start..end, base_avma, info))
}
