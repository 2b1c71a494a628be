//! Naming the addresses of one process: its mappings, its JIT perf map
//! (read as it grows), DWARF unwinding of stack copies with its modules,
//! and the ELF symbol tables of file-backed code ([`crate::elf`], read
//! through the resolver, a section at a time). The one symbolizer: CPU
//! profiles use it while the targets run, and probes that record stacks
//! can use it too.
//!
//! No symbolization library reads the app's files: blazesym, which this
//! module used before, opens `<module>.dwp` and `.gnu_debuglink` targets by
//! path in the agent's own root (a FIFO planted there hung every profile)
//! and maps the files it reads (a library the app truncates would kill the
//! agent with `SIGBUS`). Names come from `.symtab` and `.dynsym`; DWARF
//! debug info (inlined frames, source lines) is not read.

use std::collections::{HashMap, HashSet};

use super::{Frame, FrameKind};
use crate::procfs::{MapEntry, Procfs};
use crate::runtime::perfmap::PerfMapFile;

pub use crate::elf::demangle;

/// Addresses to symbolize, innermost first: the sampled IP as is, return
/// addresses minus one so they fall inside the call instruction.
pub fn lookup_addresses(chain: &[u64]) -> impl Iterator<Item = u64> + '_ {
    chain
        .iter()
        .enumerate()
        .map(|(i, a)| if i == 0 { *a } else { a.saturating_sub(1) })
}

/// Everything known for naming one process's addresses.
pub struct ProcessSymbols {
    maps: Vec<MapEntry>,
    perf_map: Option<PerfMapFile>,
    unwinder: Option<super::unwind::ProcessUnwinder>,
    pending: HashSet<u64>,
    named: HashMap<u64, Frame>,
    errors: std::collections::BTreeMap<String, String>,
    /// The symbol tables of the modules looked at (`None`: could not be
    /// read; the reason is in `errors`).
    modules: HashMap<String, Option<std::sync::Arc<crate::elf::Symbols>>>,
    /// Managed methods named by the .NET runtime (rundown).
    managed: Option<crate::runtime::Methods>,
}

impl std::fmt::Debug for ProcessSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSymbols")
            .field("maps", &self.maps.len())
            .field("named", &self.named.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ProcessSymbols {
    /// Unwinds a sample's stack copy with this process's modules.
    pub fn unwind(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        regs: &[u64],
        stack: &[u8],
    ) -> Option<super::unwind::Unwound> {
        if regs.get(2).is_some_and(|ip| self.map_of(*ip).is_none())
            && let Ok(maps) = procfs.maps(pid)
        {
            self.maps = maps;
        }
        let unwinder = self.unwinder.get_or_insert_with(Default::default);
        unwinder.unwind(procfs, pid, &self.maps, regs, stack)
    }

    /// What is known of `pid` now; its perf map is tracked even if the
    /// runtime has not written it yet.
    pub fn new(procfs: &Procfs, pid: u32) -> Self {
        Self {
            maps: procfs.maps(pid).unwrap_or_default(),
            perf_map: PerfMapFile::of(procfs, pid),
            unwinder: None,
            pending: HashSet::new(),
            named: HashMap::new(),
            errors: Default::default(),
            modules: HashMap::new(),
            managed: None,
        }
    }

    /// Names `addr` `name` (a probed function, as the request named it:
    /// `malloc`, not libc's internal alias for the same address).
    pub fn name_address(&mut self, addr: u64, name: &str, module: Option<String>) {
        self.pending.remove(&addr);
        self.named
            .insert(addr, Frame::new(name.to_owned(), FrameKind::User, module));
    }

    /// Asks for `addr` to be named at the next [`Self::symbolize_pending`].
    pub fn note(&mut self, addr: u64) {
        if !self.named.contains_key(&addr) {
            self.pending.insert(addr);
        }
    }

    fn map_of(&self, addr: u64) -> Option<&MapEntry> {
        crate::procfs::mapping_at(&self.maps, addr)
    }

    /// Whether `addr` is in the kernel's uretprobe trampoline page: a
    /// return address that a pending uretprobe replaced on the stack.
    pub fn is_uretprobe_trampoline(&self, addr: u64) -> bool {
        self.map_of(addr)
            .is_some_and(|m| m.path.as_deref() == Some("[uprobes]"))
    }

    /// Names the addresses noted since the last call, while the process
    /// still exists.
    pub fn symbolize_pending(&mut self, procfs: &Procfs, pid: u32) {
        if self.pending.is_empty() {
            return;
        }
        // New code may have been mapped (dlopen, JIT) since we last looked.
        if self.pending.iter().any(|a| self.map_of(*a).is_none())
            && let Ok(maps) = procfs.maps(pid)
        {
            self.maps = maps;
        }
        let mut file_backed = Vec::new();
        let pending: Vec<u64> = self.pending.drain().collect();
        // The perf map names anonymous memory only: read it when such an
        // address is pending (a native process's never is).
        let in_file = |this: &Self, addr: u64| {
            this.map_of(addr)
                .is_some_and(|m| m.is_file_backed() || m.path.as_deref() == Some("[vdso]"))
        };
        if pending.iter().any(|a| !in_file(self, *a))
            && let Some(map) = &mut self.perf_map
        {
            map.refresh();
        }
        for addr in pending {
            let in_file = in_file(self, addr);
            let jit = if in_file {
                None
            } else {
                self.perf_map
                    .as_ref()
                    .and_then(|m| m.index().lookup(addr))
                    .map(|e| Frame::new(e.name.clone(), FrameKind::Jit, None))
            };
            match jit {
                Some(frame) => {
                    self.named.insert(addr, frame);
                }
                None if in_file => file_backed.push(addr),
                // Anonymous memory without a perf-map entry (yet): leave it
                // unnamed, it is rendered from the maps at the end.
                None => {}
            }
        }
        if file_backed.is_empty() {
            return;
        }
        for addr in file_backed {
            let Some(index) = self.maps.iter().position(|m| m.contains(addr)) else {
                continue;
            };
            let Some(symbols) = self.module_symbols(procfs, pid, index) else {
                continue;
            };
            let mapping = &self.maps[index];
            let offset = addr - mapping.start
                + if mapping.is_file_backed() {
                    mapping.offset
                } else {
                    0
                };
            if let Some(name) = symbols.at_offset(offset) {
                let module = mapping
                    .file_path()
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_owned);
                self.named
                    .insert(addr, Frame::new(name, FrameKind::User, module));
            }
        }
    }

    /// The symbol table of the module that mapping `index` belongs to,
    /// read once (the vDSO from the process's memory, files through the
    /// resolver).
    fn module_symbols(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        index: usize,
    ) -> Option<std::sync::Arc<crate::elf::Symbols>> {
        let mapping = self.maps.get(index)?;
        let module = mapping.path.as_deref()?;
        if let Some(known) = self.modules.get(module) {
            return known.clone();
        }
        let read = if module == "[vdso]" {
            read_vdso(procfs, pid, mapping)
        } else {
            // The mapping with the lowest offset: map_files of any one of
            // them is the same inode.
            let first = self
                .maps
                .iter()
                .filter(|m| m.path.as_deref() == Some(module))
                .min_by_key(|m| m.offset)
                .unwrap_or(mapping);
            procfs
                .open_mapped(pid, first)
                .map_err(crate::elf::ElfError::from)
                .and_then(|seen| crate::elf::Elf::open(&seen))
                .and_then(|mut elf| {
                    let mut debug = own_debug_file(&mut elf);
                    crate::elf::Symbols::with_debug(&mut elf, debug.as_mut())
                })
        };
        let module = module.to_owned();
        let symbols = match read {
            Ok(symbols) => Some(std::sync::Arc::new(symbols)),
            Err(error) => {
                self.errors
                    .entry(module.clone())
                    .or_insert_with(|| error.to_string());
                None
            }
        };
        self.modules.insert(module, symbols.clone());
        symbols
    }

    /// The process's mappings, as seen when it was first met (or last
    /// refreshed for an unmapped address).
    pub fn maps(&self) -> &[crate::procfs::MapEntry] {
        &self.maps
    }

    /// Names managed code (JIT and ReadyToRun) with the runtime's own
    /// method table; these names win over perf-map and ELF names.
    pub fn set_managed(&mut self, table: crate::runtime::Methods) {
        self.managed = Some(table);
    }

    /// Records an error of a symbol source that is not a module file.
    pub fn note_error(&mut self, source: &str, error: String) {
        self.errors.entry(source.to_string()).or_insert(error);
    }

    /// Symbolization errors by module path (the first one of each).
    pub fn errors(&self) -> &std::collections::BTreeMap<String, String> {
        &self.errors
    }

    /// The frame for `addr`: its name, or `[unknown] module+0xoffset`.
    pub fn frame(&self, addr: u64) -> Frame {
        if let Some((method, module)) = self.managed.as_ref().and_then(|t| t.lookup(addr)) {
            return Frame::new(
                method.name.clone(),
                FrameKind::Jit,
                module.map(str::to_string),
            );
        }
        if let Some(frame) = self.named.get(&addr) {
            return frame.clone();
        }
        let (module, offset) = match self.map_of(addr) {
            Some(m) if m.path.is_some() => (
                m.path.clone().unwrap_or_default(),
                addr - m.start + if m.is_file_backed() { m.offset } else { 0 },
            ),
            Some(m) => ("[anon]".to_owned(), addr - m.start),
            None => ("[unmapped]".to_owned(), addr),
        };
        let short = module.rsplit('/').next().unwrap_or(&module).to_owned();
        Frame::new(
            format!("[unknown] {short}+0x{offset:x}"),
            FrameKind::Unknown,
            Some(module).filter(|m| m.starts_with('/')),
        )
    }
}

/// The separate debug file of a stripped module (no `.symtab`), by its
/// build ID, from the agent's own `/usr/lib/debug` (the sidecar image's
/// debug packages: [`crate::elf::debug_file_path`]), opened through the
/// resolver in the agent's own root.
fn own_debug_file(elf: &mut crate::elf::Elf) -> Option<crate::elf::Elf> {
    if elf.has_symtab() {
        return None;
    }
    let path = crate::elf::debug_file_path(&elf.build_id()?)?;
    let seen = Procfs::default()
        .open_seen(std::process::id(), &path, crate::rootfs::Follow::InRoot)
        .ok()?
        .file(crate::rootfs::limits::BINARY_BYTES)
        .ok()?;
    crate::elf::Elf::open(&seen).ok()
}

/// The vDSO's symbols, from the process's memory (the kernel's image,
/// mapped at offset 0; a few KiB).
fn read_vdso(
    procfs: &Procfs,
    pid: u32,
    mapping: &MapEntry,
) -> Result<crate::elf::Symbols, crate::elf::ElfError> {
    const VDSO_BYTES: u64 = 64 << 10;
    let len = (mapping.end - mapping.start).min(VDSO_BYTES);
    let bytes = procfs
        .read_memory(pid, mapping.start, usize::try_from(len).unwrap_or(0))
        .map_err(|source| crate::elf::ElfError::Io {
            module: "[vdso]".into(),
            offset: mapping.start,
            len,
            source,
        })?;
    let mut elf = crate::elf::Elf::from_bytes(bytes, "[vdso]".into())?;
    crate::elf::Symbols::of(&mut elf)
}
