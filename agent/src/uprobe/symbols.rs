//! `/v1/symbols`: the functions of a process that a uprobe can attach to,
//! with the file offsets the old offset-calculation scripts computed by hand.
//!
//! ELF symbols come from `.symtab` and `.dynsym` of every executable module
//! the process maps (read through `/proc/PID/map_files`, so container and
//! deleted files work); JIT symbols come from the process's perf map. Code
//! in a file is probed with a uprobe; code in anonymous memory (JIT) with
//! hardware breakpoints; entries that name no code (V8 names its bytecode
//! too) cannot be probed.

use std::collections::BTreeSet;

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _, SymbolKind};
use serde::Serialize;

use crate::procfs::{MapEntry, Procfs};
use crate::stacks::perfmap::PerfMapFile;

/// Where a symbol was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SymbolSource {
    /// An ELF symbol table.
    Elf,
    /// The process's JIT perf map.
    PerfMap,
}

/// One probeable (or, for JIT code, possibly unprobeable) function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolInfo {
    /// Demangled name.
    pub name: String,
    /// Address in the process, when the module is mapped there (`"0x…"`).
    #[serde(serialize_with = "hex")]
    pub address: Option<u64>,
    /// Size in bytes.
    pub size: u64,
    /// Module path as the process sees it.
    pub module: Option<String>,
    /// Offset in the module's file: what a uprobe attaches at (`"0x…"`).
    #[serde(serialize_with = "hex")]
    pub file_offset: Option<u64>,
    /// Symbol table or perf map.
    pub source: SymbolSource,
    /// Whether a probe can attach here (the address is code).
    pub probeable: bool,
    /// How: `uprobe` (file-backed code) or `breakpoint` (JIT code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<&'static str>,
}

/// Addresses as `"0x…"` strings: what users paste into `offset=`, and safe
/// from JSON readers that lose precision above 2^53.
fn hex<S: serde::Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.serialize_str(&format!("{v:#x}")),
        None => serializer.serialize_none(),
    }
}

/// Why symbols could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    /// The process is not in this PID namespace.
    #[error(transparent)]
    NotVisible(#[from] crate::procfs::PidNotVisible),
    /// `module=` names nothing the process maps.
    #[error("module {module:?} is not mapped by pid {pid}")]
    ModuleNotMapped {
        /// The process.
        pid: u32,
        /// The requested module.
        module: String,
        /// What it does map (basenames).
        mapped: Vec<String>,
    },
}

pub use crate::stacks::symbolize::demangle;

/// A function symbol of an ELF file: stated address, size, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFunction {
    /// Stated virtual address.
    pub svma: u64,
    /// Size.
    pub size: u64,
    /// Demangled name.
    pub name: String,
}

/// A loadable segment: `(vaddr, file offset, file size)`.
pub type Segment = (u64, u64, u64);

/// Function symbols of an ELF image and its loadable segments, for
/// address → offset mapping.
pub fn elf_functions(data: &[u8]) -> Option<(Vec<ElfFunction>, Vec<Segment>)> {
    let file = object::File::parse(data).ok()?;
    let mut seen = BTreeSet::new();
    let functions = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
        .filter_map(|s| {
            let raw = s.name().ok()?;
            seen.insert((s.address(), raw.to_owned()))
                .then(|| ElfFunction {
                    svma: s.address(),
                    size: s.size(),
                    name: demangle(raw),
                })
        })
        .collect();
    let segments = file
        .segments()
        .map(|seg| {
            let (offset, size) = seg.file_range();
            (seg.address(), offset, size)
        })
        .collect();
    Some((functions, segments))
}

/// The file offset of a stated address, through the loadable segments.
pub fn file_offset(svma: u64, segments: &[Segment]) -> Option<u64> {
    segments
        .iter()
        .find(|(vaddr, _, size)| *vaddr <= svma && svma < vaddr + size)
        .map(|(vaddr, offset, _)| svma - vaddr + offset)
}

/// The address in the process of a module's file offset.
pub fn process_address(offset: u64, mappings: &[&MapEntry]) -> Option<u64> {
    mappings
        .iter()
        .find(|m| m.offset <= offset && offset < m.offset + (m.end - m.start))
        .map(|m| m.start + (offset - m.offset))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What [`list`] found.
#[derive(Debug)]
pub struct Listing {
    /// The matches, sorted by name, at most the limit.
    pub symbols: Vec<SymbolInfo>,
    /// How many matched in all.
    pub total: usize,
    /// Files the agent would have read but refused (a perf map that is a
    /// symlink, a FIFO, too large, or another user's), and why.
    pub refused: Vec<String>,
}

/// Lists functions of `pid` whose names match `pattern`, optionally only in
/// the module whose basename or path is `module`. Results are sorted by
/// name and capped at `limit`; the total match count is returned too.
pub fn list(
    procfs: &Procfs,
    pid: u32,
    pattern: &regex::Regex,
    module: Option<&str>,
    limit: usize,
) -> Result<Listing, SymbolsError> {
    let mut refused = Vec::new();
    let maps = procfs
        .maps(pid)
        .map_err(|_| crate::procfs::PidNotVisible(pid))?;
    let modules: BTreeSet<&str> = maps
        .iter()
        .filter(|m| m.is_exec() && m.is_file_backed())
        .filter_map(|m| m.path.as_deref())
        .collect();
    let wanted: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|p| module.is_none_or(|m| *p == m || basename(p) == m))
        .collect();
    if let Some(m) = module
        && wanted.is_empty()
    {
        return Err(SymbolsError::ModuleNotMapped {
            pid,
            module: m.to_owned(),
            mapped: modules.iter().map(|p| basename(p).to_owned()).collect(),
        });
    }
    let mut out = Vec::new();
    for path in wanted {
        let mappings: Vec<&MapEntry> = maps
            .iter()
            .filter(|m| m.path.as_deref() == Some(path))
            .collect();
        let Some(first) = mappings.iter().min_by_key(|m| m.offset) else {
            continue;
        };
        let Ok(data) = procfs.read_mapped_file(pid, first) else {
            continue;
        };
        let Some((functions, segments)) = elf_functions(&data) else {
            continue;
        };
        for f in functions.into_iter().filter(|f| pattern.is_match(&f.name)) {
            let offset = file_offset(f.svma, &segments);
            out.push(SymbolInfo {
                address: offset.and_then(|o| process_address(o, &mappings)),
                name: f.name,
                size: f.size,
                module: Some(path.to_owned()),
                file_offset: offset,
                source: SymbolSource::Elf,
                probeable: offset.is_some(),
                mechanism: offset.map(|_| "uprobe"),
            });
        }
    }
    if module.is_none()
        && let Some(mut map) = PerfMapFile::of(procfs, pid)
    {
        map.refresh();
        if let Some(why) = map.refused() {
            refused.push(why.to_owned());
        }
        for entry in map.index().entries().filter(|e| pattern.is_match(&e.name)) {
            let mapping = crate::procfs::mapping_at(&maps, entry.start);
            let backing = mapping.filter(|m| m.is_uprobe_capable());
            let code = crate::procfs::is_code_at(&maps, entry.start);
            out.push(SymbolInfo {
                name: entry.name.clone(),
                address: Some(entry.start),
                size: entry.size,
                module: backing.and_then(|m| m.path.clone()),
                file_offset: backing.map(|m| entry.start - m.start + m.offset),
                source: SymbolSource::PerfMap,
                probeable: code,
                mechanism: match (code, backing) {
                    (false, _) => None,
                    (true, Some(_)) => Some("uprobe"),
                    (true, None) => Some("breakpoint"),
                },
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.address.cmp(&b.address)));
    let total = out.len();
    out.truncate(limit);
    Ok(Listing {
        symbols: out,
        total,
        refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_demangled() {
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(demangle("_ZN3foo3barEi"), "foo::bar(int)");
        assert_eq!(demangle("calc"), "calc");
    }

    #[test]
    fn offsets_follow_segments() {
        // A non-PIE style layout: text at 0x401000 from file offset 0x1000.
        let segments = [(0x400000, 0, 0x800), (0x401000, 0x1000, 0x2000)];
        assert_eq!(file_offset(0x401920, &segments), Some(0x1920));
        assert_eq!(file_offset(0x500000, &segments), None);
        let map = crate::procfs::parse_maps_line(
            "55d0c0a01000-55d0c0a03000 r-xp 00001000 fd:01 42 /app/bin",
        )
        .unwrap();
        assert_eq!(process_address(0x1920, &[&map]), Some(0x55d0_c0a0_1920));
        assert_eq!(process_address(0x5000, &[&map]), None);
    }

    #[test]
    fn own_binary_has_functions_with_offsets() {
        let data = std::fs::read("/proc/self/exe").unwrap_or_default();
        let (functions, segments) = elf_functions(&data).unwrap_or_default();
        let f = functions
            .iter()
            .find(|f| f.name.contains("offsets_follow_segments"))
            .unwrap_or_else(|| panic!("test function not found among {}", functions.len()));
        assert!(file_offset(f.svma, &segments).is_some());
    }
}
