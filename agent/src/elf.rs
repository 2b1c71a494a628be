//! ELF files of the app, read a piece at a time and within limits.
//!
//! Every ELF file the agent looks into (a process's executable, the
//! libraries it maps, a binary named by a probe) is the app's: it can be
//! a gigabyte of sparse file, claim a section larger than itself, or be
//! truncated while the agent reads it. So this module never maps a file
//! and never reads one whole:
//!
//! - the file is opened by [`crate::rootfs`] (a regular file, checked
//!   before it is opened for reading, inside the process's root or
//!   through `/proc/PID/map_files`, never on FUSE);
//! - only the byte ranges asked for are read, with `pread`, into a
//!   [`Sparse`] image: the headers first, then the sections a caller
//!   names, each under [`SECTION_LIMIT`] and all of them under
//!   [`FILE_LIMIT`];
//! - `object` parses that image, and any read outside the ranges fetched
//!   fails as a malformed file would, instead of reading more.
//!
//! A file that shrinks while it is read gives a short read: an error for
//! that file, not a `SIGBUS` in the agent (which an `mmap` would give; the
//! reason the agent does not let a library such as blazesym open and map
//! the app's files).
//!
//! Only 64-bit little-endian ELF is read (x86-64, the agent's target).

use std::ops::Range;
use std::os::unix::fs::FileExt as _;

use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _, Sym as _};
use object::{Endianness, ReadRef};

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

/// The byte ranges of a file that were read, as `object` reads a file:
/// reads inside them succeed, all others fail.
#[derive(Debug, Default)]
pub struct Sparse {
    len: u64,
    regions: Vec<(u64, Vec<u8>)>,
}

impl Sparse {
    /// An image of a file of `len` bytes with nothing read yet.
    pub fn new(len: u64) -> Self {
        Self {
            len,
            regions: Vec::new(),
        }
    }

    /// The whole of `bytes` (an image already in memory, such as the
    /// vDSO).
    pub fn whole(bytes: Vec<u8>) -> Self {
        Self {
            len: bytes.len() as u64,
            regions: vec![(0, bytes)],
        }
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.regions.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// The longest run of bytes read from `offset` on.
    fn region(&self, offset: u64) -> Option<&[u8]> {
        self.regions
            .iter()
            .filter_map(|(start, bytes)| {
                let skip = usize::try_from(offset.checked_sub(*start)?).ok()?;
                bytes.get(skip..)
            })
            .max_by_key(|b| b.len())
    }

    fn has(&self, range: &Range<u64>) -> bool {
        self.region(range.start)
            .is_some_and(|b| b.len() as u64 >= range.end - range.start)
    }
}

impl<'a> ReadRef<'a> for &'a Sparse {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        let size = usize::try_from(size).map_err(|_| ())?;
        self.region(offset).and_then(|b| b.get(..size)).ok_or(())
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        let bytes = self.region(range.start).ok_or(())?;
        let most = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let bytes = &bytes[..bytes.len().min(most)];
        let end = bytes.iter().position(|b| *b == delimiter).ok_or(())?;
        Ok(&bytes[..end])
    }
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

/// A function symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFunction {
    /// Demangled name.
    pub name: String,
    /// Stated virtual address.
    pub svma: u64,
    /// Size in bytes (0 when the symbol does not say).
    pub size: u64,
}

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

/// Where a separate debug file for `build_id` is, in the agent's own
/// filesystem: `/usr/lib/debug/.build-id/ab/cdef….debug`, the layout
/// Debian's `-dbg` and `-dbgsym` packages (and Fedora's `debuginfo`)
/// install. Only the sidecar image's own debug files are read this way:
/// the app chooses the build ID, which is hex, so it names a file there
/// and nothing else; `.gnu_debuglink` names and the app's own directories
/// are never looked at.
pub fn debug_file_path(build_id: &[u8]) -> Option<String> {
    if build_id.len() < 2 {
        return None;
    }
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ))
}

/// The file offset of a stated address, through the loadable segments.
pub fn file_offset(svma: u64, segments: &[Segment]) -> Option<u64> {
    segments
        .iter()
        .find(|(vaddr, _, size)| *vaddr <= svma && svma < vaddr.saturating_add(*size))
        .and_then(|(vaddr, offset, _)| (svma - vaddr).checked_add(*offset))
}

/// The stated address of a file offset, through the loadable segments.
pub fn stated_address(offset: u64, segments: &[Segment]) -> Option<u64> {
    segments
        .iter()
        .find(|(_, start, size)| *start <= offset && offset < start.saturating_add(*size))
        .and_then(|(vaddr, start, _)| (offset - start).checked_add(*vaddr))
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
        if range.end > self.image.len {
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
        self.image.regions.push((offset, bytes));
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

    /// The file, as named in errors.
    pub fn module(&self) -> &str {
        &self.module
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
        // Fetch the tables and their strings first: `object` then reads
        // them from the image.
        let header = Header::parse(&self.image).map_err(|_| self.not_elf("no ELF header"))?;
        let e = Endianness::Little;
        let headers = header
            .section_headers(e, &self.image)
            .map_err(|_| self.not_elf("broken section headers"))?;
        let mut ranges = Vec::new();
        for (i, s) in self.sections.iter().enumerate() {
            if !matches!(s.kind, elf::SHT_SYMTAB | elf::SHT_DYNSYM) {
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

    /// Its function symbols, demangled (every one of them: for a table
    /// that is looked through once, [`Elf::visit_functions`] holds less).
    pub fn functions(&mut self) -> Result<Vec<ElfFunction>, ElfError> {
        let mut functions = Vec::new();
        self.visit_functions(|svma, size, raw| {
            functions.push(ElfFunction {
                svma,
                size,
                name: demangle(&String::from_utf8_lossy(raw)),
            });
        })?;
        Ok(functions)
    }
}

/// The functions of one module, sorted for naming addresses: addresses,
/// sizes and raw names packed in one buffer (a name is demangled when it
/// is looked up), so a table costs about its string bytes plus 24 bytes a
/// function.
#[derive(Debug, Default)]
pub struct Symbols {
    /// `(stated address, size, where the name starts in names)`, sorted.
    functions: Vec<(u64, u64, u32)>,
    names: Vec<u8>,
    segments: Vec<Segment>,
}

impl Symbols {
    /// The functions of `elf`.
    pub fn of(elf: &mut Elf) -> Result<Self, ElfError> {
        Self::with_debug(elf, None)
    }

    /// The functions of `elf` and of its separate debug file, if given
    /// (the same addresses: a debug file keeps the program's layout).
    pub fn with_debug(elf: &mut Elf, debug: Option<&mut Elf>) -> Result<Self, ElfError> {
        let mut functions = Vec::new();
        let mut names = Vec::new();
        let mut add = |svma, size, raw: &[u8]| {
            if let Ok(at) = u32::try_from(names.len()) {
                functions.push((svma, size, at));
                names.extend_from_slice(raw);
                names.push(0);
            }
        };
        elf.visit_functions(&mut add)?;
        if let Some(debug) = debug {
            // Best effort: the program's own tables name what they can.
            let _ = debug.visit_functions(&mut add);
        }
        functions.sort_unstable_by_key(|(svma, size, _)| (*svma, std::cmp::Reverse(*size)));
        // One name per address (a debug file repeats the dynamic symbols).
        functions.dedup_by_key(|(svma, _, _)| *svma);
        functions.shrink_to_fit();
        names.shrink_to_fit();
        Ok(Self {
            functions,
            names,
            segments: elf.segments().to_vec(),
        })
    }

    fn name(&self, at: u32) -> String {
        let rest = self.names.get(at as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        demangle(&String::from_utf8_lossy(&rest[..end]))
    }

    /// The (demangled) name of the function at file offset `offset`: the
    /// one whose range holds it, else the closest one before it that
    /// states no size.
    pub fn at_offset(&self, offset: u64) -> Option<String> {
        let svma = stated_address(offset, &self.segments)?;
        let before = self
            .functions
            .partition_point(|(start, _, _)| *start <= svma);
        let candidates = &self.functions[..before];
        candidates
            .iter()
            .rev()
            .take(64)
            .find(|(start, size, _)| svma < start.saturating_add(*size))
            .or_else(|| candidates.last().filter(|(_, size, _)| *size == 0))
            .map(|(_, _, at)| self.name(*at))
    }

    /// How many functions.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.functions.capacity() * 24 + self.names.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_exe() -> Elf {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let len = file.metadata().unwrap().len();
        Elf::from_file(file, len, "self".into()).unwrap()
    }

    #[test]
    fn functions_are_named_from_the_symbol_table_alone() {
        let mut elf = own_exe();
        let held = elf.image.held();
        assert!(held < 1 << 20, "only the headers are read at first: {held}");
        let functions = elf.functions().unwrap();
        let me = functions
            .iter()
            .find(|f| {
                f.name
                    .ends_with("functions_are_named_from_the_symbol_table_alone")
            })
            .expect("this test's own function");
        assert!(me.size > 0);
        let offset = file_offset(me.svma, elf.segments()).unwrap();
        assert!(elf.is_code_offset(offset));
        let symbols = Symbols::of(&mut elf).unwrap();
        assert_eq!(symbols.at_offset(offset + 1).as_ref(), Some(&me.name));
        assert!(symbols.held() < 64 * symbols.len() + (4 << 20));
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
        let error = elf.functions().unwrap_err();
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
            elf.functions(),
            Err(ElfError::Io { .. } | ElfError::NotElf { .. })
        ));
    }

    #[test]
    fn hostile_addresses_do_not_overflow() {
        // A segment at the top of the address space (found by the elf
        // fuzz target): the arithmetic is checked, not wrapped or panicking.
        let segments = [(u64::MAX - 8, 0x1000, 0x1000)];
        assert_eq!(stated_address(0x1010, &segments), None);
        assert_eq!(stated_address(0x1004, &segments), Some(u64::MAX - 4));
        let segments = [(0x1000, u64::MAX - 8, 0x100)];
        assert_eq!(file_offset(0x1010, &segments), None);
    }

    #[test]
    fn demangling() {
        assert_eq!(demangle("_ZN3foo3barE"), "foo::bar");
        assert_eq!(demangle("a"), "a");
        assert_eq!(demangle("main"), "main");
    }
}
