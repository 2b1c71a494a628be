//! DWARF unwinding in userspace: a copy of the user stack and registers
//! from each sample, walked with `framehop` using the `.eh_frame` of the
//! modules involved. Unwind info is loaded lazily, only for modules that
//! frames actually land in.

use std::collections::HashSet;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};

use crate::procfs::{MapEntry, Procfs};

/// Registers sampled with `PERF_SAMPLE_REGS_USER`, in mask-bit order:
/// BP (6), SP (7), IP (8).
pub const X86_REGS_MASK: u64 = (1 << 6) | (1 << 7) | (1 << 8);
/// Bytes of user stack copied per sample.
pub const USER_STACK_BYTES: u32 = 16 * 1024;
/// Frames walked at most.
const MAX_FRAMES: usize = 256;

/// The 8-byte word at `address` of a stack copy that starts at `sp`.
fn word_at(stack: &[u8], sp: u64, address: u64) -> Option<u64> {
    let offset = usize::try_from(address.checked_sub(sp)?).ok()?;
    let bytes = stack.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A frame-pointer chain found in a stack copy when the BP register is not
/// known (a thread blocked in a system call, read from `/proc`, which
/// gives only SP and PC): the lowest 8-byte slot at or above `sp` that
/// holds a saved BP pointing further up the copy, with a code address
/// (`is_code`) just above it, and whose saved BP is the same kind of
/// frame in turn or the chain's end (0). Returns that BP and the chain it
/// gives: `pc`, then the return addresses (as the kernel's callchain
/// has them). `None` when no slot fits.
pub fn frame_pointer_scan(
    stack: &[u8],
    sp: u64,
    pc: u64,
    is_code: impl Fn(u64) -> bool,
) -> Option<(u64, Vec<u64>)> {
    let end = sp.checked_add(stack.len() as u64)?;
    let is_frame = |bp: u64| -> Option<(u64, u64)> {
        let saved = word_at(stack, sp, bp)?;
        let ret = word_at(stack, sp, bp.checked_add(8)?)?;
        let fits = is_code(ret) && (saved == 0 || (saved > bp && saved < end && saved % 8 == 0));
        fits.then_some((saved, ret))
    };
    let first = (0..stack.len() as u64 / 8)
        .map(|i| sp + i * 8)
        .find(|bp| match is_frame(*bp) {
            Some((0, _)) => false,
            Some((saved, _)) => is_frame(saved).is_some(),
            None => false,
        })?;
    let mut chain = vec![pc];
    let mut bp = first;
    while let Some((saved, ret)) = is_frame(bp) {
        chain.push(ret);
        if saved == 0 || chain.len() >= MAX_FRAMES {
            break;
        }
        bp = saved;
    }
    Some((first, chain))
}

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
    let seen = procfs.open_mapped(pid, first).ok()?;
    let mut elf = crate::elf::Elf::open(&seen).ok()?;
    // The segment at file offset 0 (stated address base_svma) is mapped at
    // the start of the mapping with file offset 0 (base_avma).
    let base_svma = elf.base_address()?;
    let base_avma = first.start.checked_sub(first.offset)?;
    // Only the unwind tables and the code are read, each within the
    // ELF reader's limits; a section over them is left out (the code is
    // only for the prologue and epilogue heuristics).
    let mut section = |name: &str| {
        let (s, data) = elf.section_data(name).ok()??;
        Some((s.address..s.address.checked_add(s.size)?, data))
    };
    let text = section(".text");
    let eh_frame = section(".eh_frame");
    let eh_frame_hdr = section(".eh_frame_hdr");
    let debug_frame = section(".debug_frame").map(|(_, data)| data);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_pointers_are_found_in_a_stack_copy() {
        let sp = 0x7000_0000u64;
        let mut words = [0u64; 16];
        // Noise below the first frame: a code address with no saved BP.
        words[1] = 0x40_1000;
        // Frame at sp+24: saved BP sp+64, return 0x401234.
        words[3] = sp + 64;
        words[4] = 0x40_1234;
        // Frame at sp+64: the chain's end, return 0x405678.
        words[8] = 0;
        words[9] = 0x40_5678;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let is_code = |a: u64| (0x40_0000..0x41_0000).contains(&a);
        let (bp, chain) = frame_pointer_scan(&bytes, sp, 0x40_0010, is_code).unwrap();
        assert_eq!(bp, sp + 24);
        assert_eq!(chain, vec![0x40_0010, 0x40_1234, 0x40_5678]);
        assert_eq!(frame_pointer_scan(&bytes[..16], sp, 1, is_code), None);
    }
}
