//! Naming addresses with what [`super::Elf`] reads: demangling, segment
//! arithmetic (checked: the file states the addresses), the packed
//! symbol table of one module, and where its separate debug file is.

use super::reader::{Elf, ElfError, Segment};

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
