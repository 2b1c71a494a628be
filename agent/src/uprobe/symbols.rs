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

use serde::Serialize;

use crate::procfs::{MapEntry, Procfs};
use crate::runtime::perfmap::PerfMapFile;

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
    /// The agent's memory is near its limit: a module's symbol tables
    /// are not read.
    #[error(transparent)]
    Memory(#[from] crate::memory::Pressure),
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

pub use crate::elf::{Segment, demangle, file_offset};

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
    memory: &crate::memory::Memory,
) -> Result<Listing, SymbolsError> {
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
    let mut found = Found {
        pattern,
        limit,
        listing: Listing {
            symbols: Vec::new(),
            total: 0,
            refused: Vec::new(),
        },
    };
    for path in wanted {
        found.module(procfs, pid, &maps, path, memory)?;
    }
    if module.is_none()
        && let Some(map) = PerfMapFile::of(procfs, pid)
    {
        found.perf_map(map, &maps);
    }
    let mut listing = found.listing;
    listing.symbols.sort_by(by_name);
    listing.symbols.truncate(limit);
    Ok(listing)
}

/// What a listing has found so far.
struct Found<'a> {
    pattern: &'a regex::Regex,
    limit: usize,
    listing: Listing,
}

impl Found<'_> {
    /// Counts a match and keeps it if it is among the first `limit`.
    fn push(&mut self, info: SymbolInfo) {
        self.listing.total += 1;
        self.listing.symbols.push(info);
        keep_first(&mut self.listing.symbols, self.limit);
    }

    /// The functions of the mapped module `path` that match.
    fn module(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        maps: &[MapEntry],
        path: &str,
        memory: &crate::memory::Memory,
    ) -> Result<(), SymbolsError> {
        let mappings: Vec<&MapEntry> = maps
            .iter()
            .filter(|m| m.path.as_deref() == Some(path))
            .collect();
        let Some(first) = mappings.iter().min_by_key(|m| m.offset) else {
            return Ok(());
        };
        let opened = procfs
            .open_mapped(pid, first)
            .map_err(crate::elf::ElfError::from)
            .and_then(|seen| crate::elf::Elf::open(&seen));
        let mut elf = match opened {
            Ok(elf) => elf,
            Err(crate::elf::ElfError::NotElf { .. }) => return Ok(()),
            Err(crate::elf::ElfError::Root(e)) if e.is_missing() => return Ok(()),
            Err(e) => {
                self.listing.refused.push(e.to_string());
                return Ok(());
            }
        };
        // The tables are read whole: only if the agent's memory allows.
        memory.check(elf.symbol_bytes().saturating_mul(2))?;
        let segments = elf.segments().to_vec();
        let pattern = self.pattern;
        let read = elf.visit_functions(|svma, size, raw| {
            let name = demangle(&String::from_utf8_lossy(raw));
            if !pattern.is_match(&name) {
                return;
            }
            let offset = file_offset(svma, &segments);
            self.push(SymbolInfo {
                address: offset.and_then(|o| process_address(o, &mappings)),
                name,
                size,
                module: Some(path.to_owned()),
                file_offset: offset,
                source: SymbolSource::Elf,
                probeable: offset.is_some(),
                mechanism: offset.map(|_| "uprobe"),
            });
        });
        if let Err(e) = read {
            self.listing.refused.push(e.to_string());
        }
        Ok(())
    }

    /// The JIT perf map's entries that match.
    fn perf_map(&mut self, mut map: PerfMapFile, maps: &[MapEntry]) {
        map.refresh();
        if let Some(why) = map.refused() {
            self.listing.refused.push(why.to_owned());
        }
        let pattern = self.pattern;
        for entry in map.index().entries().filter(|e| pattern.is_match(&e.name)) {
            let mapping = crate::procfs::mapping_at(maps, entry.start);
            let backing = mapping.filter(|m| m.is_uprobe_capable());
            let code = crate::procfs::is_code_at(maps, entry.start);
            self.push(SymbolInfo {
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
}

fn by_name(a: &SymbolInfo, b: &SymbolInfo) -> std::cmp::Ordering {
    a.name.cmp(&b.name).then(a.address.cmp(&b.address))
}

/// Keeps `out` within twice `limit` matches, the first by name: a
/// pattern that matches every function of a large process does not hold
/// them all.
fn keep_first(out: &mut Vec<SymbolInfo>, limit: usize) {
    if out.len() >= limit.saturating_mul(2).max(64) {
        out.sort_by(by_name);
        out.truncate(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_matches_by_name_are_held() {
        let info = |name: String| SymbolInfo {
            name,
            address: None,
            size: 0,
            module: None,
            file_offset: None,
            source: SymbolSource::Elf,
            probeable: false,
            mechanism: None,
        };
        let mut out = Vec::new();
        for i in (0..10_000).rev() {
            out.push(info(format!("f{i:05}")));
            keep_first(&mut out, 10);
            assert!(out.len() < 64);
        }
        out.sort_by(by_name);
        out.truncate(10);
        let names: Vec<_> = out.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names[0], "f00000");
        assert_eq!(names[9], "f00009");
    }

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
        let procfs = Procfs::default();
        let memory = crate::memory::Memory::new(procfs.clone(), None);
        let pattern = regex::Regex::new("offsets_follow_segments$").unwrap();
        let listing = list(&procfs, std::process::id(), &pattern, None, 10, &memory).unwrap();
        let f = listing
            .symbols
            .iter()
            .find(|f| f.source == SymbolSource::Elf)
            .unwrap_or_else(|| panic!("test function not found: {listing:?}"));
        assert!(
            f.file_offset.is_some() && f.address.is_some() && f.probeable,
            "{f:?}"
        );
    }
}
