//! The bounded reader: headers, sections by name, segments, symbols and
//! notes of one ELF file, read with `pread` into a [`Sparse`] image.

use std::ops::Range;
use std::os::unix::fs::FileExt as _;

use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _, Sym as _};
use object::{Endianness, ReadRef};

use super::sparse::Sparse;

/// One section read at most, in bytes (`.symtab`, `.eh_frame`, …): a
/// symbol table this size names about 350,000 functions.
pub const SECTION_LIMIT: u64 = 16 << 20;
/// All that is read of one file, in bytes.
pub const FILE_LIMIT: u64 = 48 << 20;
/// The section and program header tables, in bytes (65,535 sections).
const HEADERS_LIMIT: u64 = 4 << 20;

type Header = elf::FileHeader64<Endianness>;

/// Why an ELF file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened as the process sees it.
    #[error(transparent)]
    Root(#[from] crate::rootfs::RootError),
    /// Not a 64-bit little-endian ELF file, or its headers are broken.
    #[error("{module} is not a 64-bit ELF file the agent reads ({what})")]
    NotElf {
        /// The file.
        module: String,
        /// What was wrong.
        what: &'static str,
    },
    /// A part of the file over the agent's limits.
    #[error("{module}: {part} is {size} bytes, over the agent's limit of {limit} bytes; not read")]
    TooLarge {
        /// The file.
        module: String,
        /// Which part (a section's name, or what is read in all).
        part: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading failed (the file shrank, or an I/O error).
    #[error("{module}: reading {len} bytes at {offset}: {source}")]
    Io {
        /// The file.
        module: String,
        /// Where.
        offset: u64,
        /// How much.
        len: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A loadable segment: `(vaddr, file offset, file size)`.
pub type Segment = (u64, u64, u64);

/// A section, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name (lossy UTF-8).
    pub name: String,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_addr`: its address as the file states it.
    pub address: u64,
    /// Its file offset (`None` for `SHT_NOBITS`).
    pub offset: Option<u64>,
    /// `sh_size`.
    pub size: u64,
}

/// An ELF file being read.
#[derive(Debug)]
pub struct Elf {
    module: String,
    file: Option<std::fs::File>,
    image: Sparse,
    sections: Vec<Section>,
    segments: Vec<Segment>,
    exec_segments: Vec<Range<u64>>,
}

impl Elf {
    /// Reads the headers of the executable of `pid`, opened through the
    /// resolver ([`crate::procfs::Procfs::open_exe`]).
    pub fn open_exe(procfs: &crate::procfs::Procfs, pid: u32) -> Result<Self, ElfError> {
        Self::open(&procfs.open_exe(pid)?)
    }

    /// Reads the headers of the regular file `seen` (opened by
    /// [`crate::rootfs`]); `module` names it in errors.
    pub fn open(seen: &crate::rootfs::Seen) -> Result<Self, ElfError> {
        let file = seen.reader()?;
        Self::from_file(file, seen.size(), seen.path().to_owned())
    }

    /// Reads the headers of `file`, of `len` bytes.
    pub fn from_file(file: std::fs::File, len: u64, module: String) -> Result<Self, ElfError> {
        let mut elf = Self {
            module,
            file: Some(file),
            image: Sparse::new(len),
            sections: Vec::new(),
            segments: Vec::new(),
            exec_segments: Vec::new(),
        };
        elf.fetch(0, std::mem::size_of::<Header>() as u64, "the ELF header")?;
        elf.headers()?;
        Ok(elf)
    }

    /// An ELF image already in memory (the vDSO, read from the process).
    pub fn from_bytes(bytes: Vec<u8>, module: String) -> Result<Self, ElfError> {
        let mut elf = Self {
            module,
            file: None,
            image: Sparse::whole(bytes),
            sections: Vec::new(),
            segments: Vec::new(),
            exec_segments: Vec::new(),
        };
        elf.headers()?;
        Ok(elf)
    }

    fn not_elf(&self, what: &'static str) -> ElfError {
        ElfError::NotElf {
            module: self.module.clone(),
            what,
        }
    }

    /// Reads `len` bytes at `offset` into the image, within the limits.
    fn fetch(&mut self, offset: u64, len: u64, part: &str) -> Result<(), ElfError> {
        let range = offset..offset.saturating_add(len);
        if len == 0 || self.image.has(&range) {
            return Ok(());
        }
        let too_large = |size: u64, limit: u64, part: String| ElfError::TooLarge {
            module: self.module.clone(),
            part,
            size,
            limit,
        };
        if len > SECTION_LIMIT {
            return Err(too_large(len, SECTION_LIMIT, part.to_owned()));
        }
        let total = self.image.held().saturating_add(len);
        if total > FILE_LIMIT {
            return Err(too_large(
                total,
                FILE_LIMIT,
                format!("what {part} adds up to"),
            ));
        }
        if range.end > self.image.file_len() {
            return Err(self.not_elf("a part lies beyond the end of the file"));
        }
        let Some(file) = &self.file else {
            return Err(self.not_elf("a part lies outside the image"));
        };
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        file.read_exact_at(&mut bytes, offset)
            .map_err(|source| ElfError::Io {
                module: self.module.clone(),
                offset,
                len,
                source,
            })?;
        self.image.add(offset, bytes);
        Ok(())
    }

    /// Reads the program and section headers and the section names.
    fn headers(&mut self) -> Result<(), ElfError> {
        let (shoff, phoff, phentsize, shentsize) = {
            let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
            if !header.is_class_64() || header.is_big_endian() {
                return Err(self.not_elf("not 64-bit little-endian"));
            }
            let e = Endianness::Little;
            (
                header.e_shoff(e),
                header.e_phoff(e),
                u64::from(header.e_phentsize(e)),
                u64::from(header.e_shentsize(e)),
            )
        };
        // Section 0 first: it holds the counts when they overflow.
        if shoff != 0 {
            self.fetch(shoff, shentsize, "section header 0")?;
        }
        let (phnum, shnum) = {
            let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
            let e = Endianness::Little;
            (
                header.phnum(e, &self.image).unwrap_or(0) as u64,
                header.shnum(e, &self.image).unwrap_or(0) as u64,
            )
        };
        let table = |count: u64, size: u64| count.saturating_mul(size);
        for (offset, len, part) in [
            (phoff, table(phnum, phentsize), "the program headers"),
            (shoff, table(shnum, shentsize), "the section headers"),
        ] {
            if offset != 0 && len > HEADERS_LIMIT {
                return Err(ElfError::TooLarge {
                    module: self.module.clone(),
                    part: part.to_owned(),
                    size: len,
                    limit: HEADERS_LIMIT,
                });
            }
            if offset != 0 {
                self.fetch(offset, len, part)?;
            }
        }
        // The section names' table.
        let names = {
            let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
            let e = Endianness::Little;
            let headers = header
                .section_headers(e, &self.image)
                .map_err(|_| self.not_elf("broken section headers"))?;
            header
                .shstrndx(e, &self.image)
                .ok()
                .and_then(|i| headers.get(i as usize))
                .and_then(|s| s.file_range(e))
        };
        if let Some((offset, size)) = names {
            self.fetch(offset, size.min(HEADERS_LIMIT), "the section names")?;
        }
        let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
        let e = Endianness::Little;
        let table = header
            .sections(e, &self.image)
            .map_err(|_| self.not_elf("broken section headers"))?;
        self.sections = table
            .iter()
            .map(|s| Section {
                name: String::from_utf8_lossy(table.section_name(e, s).unwrap_or_default())
                    .into_owned(),
                kind: s.sh_type(e),
                address: s.sh_addr(e),
                offset: s.file_range(e).map(|(o, _)| o),
                size: s.sh_size(e),
            })
            .collect();
        let programs = header
            .program_headers(e, &self.image)
            .map_err(|_| self.not_elf("broken program headers"))?;
        self.segments = programs
            .iter()
            .filter(|p| p.p_type(e) == elf::PT_LOAD)
            .map(|p| (p.p_vaddr(e), p.p_offset(e), p.p_filesz(e)))
            .collect();
        self.exec_segments = programs
            .iter()
            .filter(|p| p.p_type(e) == elf::PT_LOAD && p.p_flags(e) & elf::PF_X != 0)
            .map(|p| p.p_offset(e)..p.p_offset(e).saturating_add(p.p_filesz(e)))
            .collect();
        Ok(())
    }

    /// Its sections.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Its loadable segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether `offset` lies in an executable segment.
    pub fn is_code_offset(&self, offset: u64) -> bool {
        self.exec_segments.iter().any(|r| r.contains(&offset))
    }

    /// The stated address of the segment at file offset 0 (what an
    /// unwinder calls the base SVMA).
    pub fn base_address(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|(_, offset, _)| *offset == 0)
            .map(|(vaddr, _, _)| *vaddr)
    }

    /// Whether it has a full symbol table (`.symtab`), not only the
    /// dynamic one: a stripped library does not.
    pub fn has_symtab(&self) -> bool {
        self.sections.iter().any(|s| s.kind == elf::SHT_SYMTAB)
    }

    /// Whether it is a Go binary (has `.go.buildinfo`, `.gopclntab` or a
    /// Go build ID note): section names only, nothing else is read.
    pub fn is_go(&self) -> bool {
        self.sections.iter().any(|s| {
            matches!(
                s.name.as_str(),
                ".go.buildinfo" | ".gopclntab" | ".note.go.buildid"
            )
        })
    }

    /// The bytes of the section `name` (`None` if there is none or it has
    /// no bytes in the file).
    pub fn section_data(&mut self, name: &str) -> Result<Option<(Section, Vec<u8>)>, ElfError> {
        let Some(section) = self.section(name).cloned() else {
            return Ok(None);
        };
        let Some(offset) = section.offset else {
            return Ok(None);
        };
        self.fetch(offset, section.size, name)?;
        let bytes = (&self.image)
            .read_bytes_at(offset, section.size)
            .map_err(|()| self.not_elf("a section could not be read"))?
            .to_vec();
        Ok(Some((section, bytes)))
    }

    /// The GNU build ID, from `.note.gnu.build-id`.
    pub fn build_id(&mut self) -> Option<Vec<u8>> {
        let (_, note) = self.section_data(".note.gnu.build-id").ok()??;
        // namesz, descsz, type, then the name and the descriptor, each
        // padded to 4 bytes.
        let word = |at: usize| -> Option<usize> {
            let b = note.get(at..at + 4)?;
            Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
        };
        let (namesz, descsz, kind) = (word(0)?, word(4)?, word(8)?);
        if kind != elf::NT_GNU_BUILD_ID as usize
            || note.get(12..12_usize.checked_add(namesz)?)? != b"GNU\0"
        {
            return None;
        }
        let desc = namesz.div_ceil(4).checked_mul(4)?.checked_add(12)?;
        note.get(desc..desc.checked_add(descsz)?)
            .map(<[u8]>::to_vec)
    }

    /// What reading the function symbols takes: the bytes of `.symtab`,
    /// `.dynsym` and their string tables (checked against the agent's
    /// memory bound before they are read).
    pub fn symbol_bytes(&self) -> u64 {
        self.sections
            .iter()
            .filter(|s| matches!(s.kind, elf::SHT_SYMTAB | elf::SHT_DYNSYM | elf::SHT_STRTAB))
            .filter(|s| s.name != ".shstrtab")
            .map(|s| s.size)
            .sum()
    }

    /// Calls `each` with every function symbol (`.symtab` and `.dynsym`,
    /// each address and raw name once): its stated address, its size and
    /// its raw (mangled) name. Nothing is kept but the tables' bytes.
    pub fn visit_functions(
        &mut self,
        mut each: impl FnMut(u64, u64, &[u8]),
    ) -> Result<(), ElfError> {
        self.fetch_symbol_tables(&[elf::SHT_SYMTAB, elf::SHT_DYNSYM])?;
        let e = Endianness::Little;
        let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
        let table = header
            .sections(e, &self.image)
            .map_err(|_| self.not_elf("broken section headers"))?;
        let mut seen = std::collections::HashSet::new();
        for kind in [elf::SHT_SYMTAB, elf::SHT_DYNSYM] {
            let Ok(symbols) = table.symbols(e, &self.image, kind) else {
                continue;
            };
            for symbol in symbols.iter() {
                let is_function = matches!(symbol.st_type(), elf::STT_FUNC | elf::STT_GNU_IFUNC);
                let address = symbol.st_value(e);
                if !is_function || symbol.st_shndx(e) == elf::SHN_UNDEF || address == 0 {
                    continue;
                }
                let Ok(raw) = symbols.symbol_name(e, symbol) else {
                    continue;
                };
                // `.dynsym` repeats what `.symtab` has.
                if seen.insert((address, raw)) {
                    each(address, symbol.st_size(e), raw);
                }
            }
        }
        Ok(())
    }

    /// Whether the dynamic symbol table defines (exports) any of `names`,
    /// function or data: only `.dynsym` and its strings are read.
    pub fn exports_any(&mut self, names: &[&str]) -> Result<bool, ElfError> {
        self.fetch_symbol_tables(&[elf::SHT_DYNSYM])?;
        let e = Endianness::Little;
        let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
        let table = header
            .sections(e, &self.image)
            .map_err(|_| self.not_elf("broken section headers"))?;
        let Ok(symbols) = table.symbols(e, &self.image, elf::SHT_DYNSYM) else {
            return Ok(false);
        };
        Ok(symbols.iter().any(|symbol| {
            symbol.st_shndx(e) != elf::SHN_UNDEF
                && symbols
                    .symbol_name(e, symbol)
                    .is_ok_and(|raw| names.iter().any(|n| n.as_bytes() == raw))
        }))
    }

    /// Reads the symbol tables of `kinds` and their strings into the image
    /// (within the reader's bounds): `object` then reads them from it.
    fn fetch_symbol_tables(&mut self, kinds: &[u32]) -> Result<(), ElfError> {
        let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
        let e = Endianness::Little;
        let headers = header
            .section_headers(e, &self.image)
            .map_err(|_| self.not_elf("broken section headers"))?;
        let mut ranges = Vec::new();
        for (i, s) in self.sections.iter().enumerate() {
            if !kinds.contains(&s.kind) {
                continue;
            }
            let Some(symtab) = headers.get(i) else {
                continue;
            };
            let linked = headers.get(symtab.sh_link(e) as usize);
            for (section, part) in [
                (Some(symtab), s.name.clone()),
                (linked, format!("the strings of {}", s.name)),
            ] {
                if let Some((offset, size)) = section.and_then(|s| s.file_range(e)) {
                    ranges.push((offset, size, part));
                }
            }
        }
        for (offset, size, part) in ranges {
            self.fetch(offset, size, &part)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::{Symbols, demangle, file_offset};

    /// Every function symbol, demangled: `(address, size, name)`.
    fn functions(elf: &mut Elf) -> Result<Vec<(u64, u64, String)>, ElfError> {
        let mut all = Vec::new();
        elf.visit_functions(|svma, size, raw| {
            all.push((svma, size, demangle(&String::from_utf8_lossy(raw))));
        })?;
        Ok(all)
    }

    fn own_exe() -> Elf {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let len = file.metadata().unwrap().len();
        Elf::from_file(file, len, "self".into()).unwrap()
    }

    #[test]
    fn exports_are_read_from_the_dynamic_symbols_only() {
        // libc, as this process maps it: it exports malloc (a function)
        // and environ (data), and imports nothing of CoreCLR's.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("libc is mapped");
        let file = std::fs::File::open(libc).unwrap();
        let len = file.metadata().unwrap().len();
        let mut elf = Elf::from_file(file, len, libc.into()).unwrap();
        assert!(elf.exports_any(&["no_such_symbol", "malloc"]).unwrap());
        assert!(elf.exports_any(&["environ"]).unwrap());
        assert!(
            !elf.exports_any(&["coreclr_initialize", "g_dacTable"])
                .unwrap()
        );
        // An executable imports libc's functions without exporting them.
        assert!(!own_exe().exports_any(&["malloc"]).unwrap());
    }

    #[test]
    fn functions_are_named_from_the_symbol_table_alone() {
        let mut elf = own_exe();
        let held = elf.image.held();
        assert!(held < 1 << 20, "only the headers are read at first: {held}");
        let functions = functions(&mut elf).unwrap();
        let (svma, size, name) = functions
            .iter()
            .find(|(_, _, name)| name.ends_with("functions_are_named_from_the_symbol_table_alone"))
            .expect("this test's own function");
        assert!(*size > 0);
        let offset = file_offset(*svma, elf.segments()).unwrap();
        assert!(elf.is_code_offset(offset));
        let symbols = Symbols::of(&mut elf).unwrap();
        assert_eq!(symbols.at_offset(offset + 1).as_ref(), Some(name));
        // What the table holds is what it names: 24 bytes per function and
        // its name, with a vector's growth slack (at most twice).
        let name_bytes: usize = functions.iter().map(|(_, _, n)| n.len()).sum();
        assert!(
            symbols.held() <= 2 * (24 * symbols.len() + name_bytes) + (1 << 20),
            "{} bytes held for {} symbols of {name_bytes} bytes of names",
            symbols.held(),
            symbols.len()
        );
        assert!(!elf.is_go());
        assert!(elf.build_id().is_some_and(|id| id.len() >= 16));
    }

    #[test]
    fn parts_over_the_limits_and_outside_the_file_are_refused() {
        let mut bytes = std::fs::read("/proc/self/exe").unwrap();
        // A section header table said to be beyond the end of the file.
        let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap());
        let beyond = bytes.len() as u64 + 4096;
        bytes[0x28..0x30].copy_from_slice(&beyond.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken");
        std::fs::write(&path, &bytes).unwrap();
        let open = |p: &std::path::Path| {
            let file = std::fs::File::open(p).unwrap();
            let len = file.metadata().unwrap().len();
            Elf::from_file(file, len, "broken".into())
        };
        assert!(matches!(open(&path), Err(ElfError::NotElf { .. })));
        // A symbol table said to be larger than the limit is not read.
        bytes[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        let mut elf = open_bytes(&bytes);
        let symtab = elf
            .sections()
            .iter()
            .position(|s| s.kind == elf::SHT_SYMTAB)
            .unwrap();
        let at = shoff as usize + symtab * 64 + 32;
        bytes[at..at + 8].copy_from_slice(&(SECTION_LIMIT + 8).to_le_bytes());
        elf = open_bytes(&bytes);
        let error = functions(&mut elf).unwrap_err();
        assert!(matches!(error, ElfError::TooLarge { .. }), "{error}");
        // Not ELF at all.
        assert!(matches!(
            Elf::from_bytes(b"#!/bin/sh\n".to_vec(), "script".into()),
            Err(ElfError::NotElf { .. })
        ));
    }

    fn open_bytes(bytes: &[u8]) -> Elf {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        Elf::from_file(file, bytes.len() as u64, "f".into()).unwrap()
    }

    #[test]
    fn a_file_that_shrinks_gives_an_error() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib");
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut elf = Elf::from_file(file, bytes.len() as u64, "lib".into()).unwrap();
        // Keep the headers (read already), drop everything after them.
        let keep = elf
            .sections()
            .iter()
            .filter_map(|s| s.offset)
            .min()
            .unwrap_or(4096);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(keep)
            .unwrap();
        assert!(matches!(
            functions(&mut elf),
            Err(ElfError::Io { .. } | ElfError::NotElf { .. })
        ));
    }
}
