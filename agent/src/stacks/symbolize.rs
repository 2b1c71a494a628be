//! Naming the addresses of one process: its mappings, its JIT perf map
//! (read as it grows), DWARF unwinding of stack copies with its modules,
//! and blazesym for file-backed code. The one symbolizer: CPU profiles use
//! it while the targets run, and probes that record stacks can use it too.

use std::collections::{HashMap, HashSet};

use super::perfmap::PerfMapFile;
use super::{Frame, FrameKind};
use crate::procfs::{MapEntry, Procfs};

/// Demangles Rust and C++ (`_Z…`) names; others are returned as they
/// are (a C function called `a` is not "signed char").
pub fn demangle(name: &str) -> String {
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return format!("{rust:#}");
    }
    if name.starts_with("_Z")
        && let Ok(cpp) = cpp_demangle::Symbol::new(name)
        && let Ok(text) = cpp.demangle()
    {
        return text;
    }
    name.to_owned()
}

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
    /// Managed methods named by the .NET runtime (rundown).
    managed: Option<crate::dotnet::rundown::MethodTable>,
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
    pub fn symbolize_pending(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        symbolizer: &blazesym::symbolize::Symbolizer,
    ) {
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
        if let Some(map) = &mut self.perf_map {
            map.refresh();
        }
        for addr in pending {
            let in_file = self.map_of(addr).is_some_and(MapEntry::is_file_backed)
                || self
                    .map_of(addr)
                    .is_some_and(|m| m.path.as_deref() == Some("[vdso]"));
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
        // One blazesym call per module: an address blazesym cannot resolve
        // (the runtime patches its own text, leaving rwx and r-- pieces
        // inside libcoreclr.so) must not cost the module's other addresses,
        // or other modules', their names.
        let mut by_module: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for addr in file_backed {
            let module = self
                .map_of(addr)
                .and_then(|m| m.path.clone())
                .unwrap_or_default();
            by_module.entry(module).or_default().push(addr);
        }
        for (module, addrs) in by_module {
            match symbolize_addrs(symbolizer, pid, &addrs) {
                Ok(frames) => self.insert_named(&addrs, frames),
                Err(error) => {
                    // Address by address: the ones that resolve keep their
                    // names, and the module's first error is reported.
                    for addr in addrs {
                        if let Ok(frames) = symbolize_addrs(symbolizer, pid, &[addr]) {
                            self.insert_named(&[addr], frames);
                        }
                    }
                    self.errors.entry(module).or_insert(error);
                }
            }
        }
    }

    fn insert_named(&mut self, addrs: &[u64], frames: Vec<Option<Frame>>) {
        for (addr, frame) in addrs.iter().zip(frames) {
            if let Some(frame) = frame {
                self.named.insert(*addr, frame);
            }
        }
    }

    /// Whether the process runs CoreCLR.
    pub fn is_dotnet(&self) -> bool {
        crate::dotnet::port::is_dotnet(&self.maps)
    }

    /// Names managed code (JIT and ReadyToRun) with the runtime's own
    /// method table; these names win over perf-map and ELF names.
    pub fn set_managed(&mut self, table: crate::dotnet::rundown::MethodTable) {
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

/// Names `addrs` of process `pid` with blazesym (file-backed code, through
/// `/proc/PID/map_files`); one entry per address.
fn symbolize_addrs(
    symbolizer: &blazesym::symbolize::Symbolizer,
    pid: u32,
    addrs: &[u64],
) -> Result<Vec<Option<Frame>>, String> {
    use blazesym::symbolize::source::{Process, Source};
    use blazesym::symbolize::{Input, Symbolized};
    let mut source = Process::new(blazesym::Pid::from(pid));
    source.perf_map = false;
    source.map_files = true;
    let results = symbolizer
        .symbolize(&Source::Process(source), Input::AbsAddr(addrs))
        .map_err(|e| format!("{e:#}"))?;
    Ok(results
        .into_iter()
        .map(|result| match result {
            Symbolized::Sym(sym) => Some(Frame::new(
                demangle(&sym.name),
                FrameKind::User,
                sym.module
                    .as_ref()
                    .map(|m| m.to_string_lossy().into_owned()),
            )),
            Symbolized::Unknown(_) => None,
        })
        .collect())
}
