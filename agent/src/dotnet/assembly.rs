//! The methods a .NET assembly file declares, and which of them call
//! which: enough of ECMA-335 (the PE file's CLI header, the metadata
//! tables `TypeDef` and `MethodDef`, method bodies' IL) to say why a
//! method the user names has no compiled code (the JIT inlined it into
//! its callers, or it has not run) and which methods to probe instead.
//!
//! No crate reads ECMA-335 metadata without pulling in a whole
//! disassembler; this reads only what it needs, from bytes the caller
//! read with a bound, and every offset is checked ([`Cursor`]).
//!
//! Callers are found by scanning each body's IL for `call`, `callvirt`
//! and `ldftn` followed by the method's `MethodDef` token. The scan does
//! not decode every instruction, so an operand could in principle look
//! like such a call; the token's table byte and exact row make that
//! unlikely, and a caller named wrongly only adds a suggestion.

use super::bytes::{BytesError, Cursor};

/// One method the assembly declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodDef {
    /// `Namespace.Type` (nested types by their own name).
    pub type_name: String,
    /// The method's name.
    pub name: String,
    /// Where its IL is (0 for abstract, extern and runtime methods).
    rva: u32,
}

impl MethodDef {
    /// `Namespace.Type.Method`, as the runtime names it before the
    /// parameter list.
    pub fn qualified(&self) -> String {
        if self.type_name.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.type_name, self.name)
        }
    }
}

/// Why a file could not be read as an assembly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// Not a PE file with a CLI header.
    #[error("not a .NET assembly: {0}")]
    NotAssembly(&'static str),
    /// A structure ends past the file, or points outside it.
    #[error("a truncated or inconsistent assembly: {0}")]
    Bytes(#[from] BytesError),
    /// An offset or size points past the file.
    #[error("a truncated or inconsistent assembly: {0} points outside the file")]
    Outside(&'static str),
    /// Edit-and-continue metadata (pointer tables), which this does not
    /// read.
    #[error("unoptimized (edit-and-continue) metadata")]
    Uncompressed,
}

/// An assembly's methods and its IL.
#[derive(Debug)]
pub struct Assembly<'a> {
    file: &'a [u8],
    sections: Vec<Section>,
    /// Every method, in `MethodDef` order (row 1 first).
    pub methods: Vec<MethodDef>,
}

#[derive(Debug, Clone, Copy)]
struct Section {
    va: u32,
    size: u32,
    raw: u32,
}

/// The sizes of the metadata heap indexes and of the tables before
/// `MethodDef`, from the `#~` stream's header.
#[derive(Debug)]
struct Layout {
    string: usize,
    guid: usize,
    blob: usize,
    rows: [u32; 64],
}

impl Layout {
    fn index(&self, table: usize) -> usize {
        if self.rows[table] < 1 << 16 { 2 } else { 4 }
    }

    fn coded(&self, tables: &[usize], tag_bits: u32) -> usize {
        let most = tables.iter().map(|t| self.rows[*t]).max().unwrap_or(0);
        if most < 1 << (16 - tag_bits) { 2 } else { 4 }
    }
}

const TYPE_REF: usize = 0x01;
const TYPE_DEF: usize = 0x02;
const FIELD_PTR: usize = 0x03;
const FIELD: usize = 0x04;
const METHOD_PTR: usize = 0x05;
const METHOD_DEF: usize = 0x06;
const PARAM: usize = 0x08;
const MODULE_REF: usize = 0x1a;
const TYPE_SPEC: usize = 0x1b;
const ASSEMBLY_REF: usize = 0x23;
const MODULE: usize = 0x00;

fn read_index(c: &mut Cursor<'_>, size: usize) -> Result<u32, BytesError> {
    if size == 2 {
        c.u16().map(u32::from)
    } else {
        c.u32()
    }
}

impl<'a> Assembly<'a> {
    /// Reads `file`'s method table.
    pub fn parse(file: &'a [u8]) -> Result<Self, AssemblyError> {
        let mut c = Cursor::new(file);
        if c.take(2)? != b"MZ" {
            return Err(AssemblyError::NotAssembly("no MZ header"));
        }
        c = Cursor::new(file);
        c.take(0x3c)?;
        let pe = c.u32()? as usize;
        let mut c = Cursor::new(
            file.get(pe..)
                .ok_or(AssemblyError::Outside("the PE header offset"))?,
        );
        if c.take(4)? != b"PE\0\0" {
            return Err(AssemblyError::NotAssembly("no PE signature"));
        }
        let _machine = c.u16()?;
        let sections = c.u16()?;
        c.take(12)?;
        let optional_size = usize::from(c.u16()?);
        let _characteristics = c.u16()?;
        let optional = c.take(optional_size)?;
        let mut o = Cursor::new(optional);
        let directories = match o.u16()? {
            0x10b => 96,
            0x20b => 112,
            _ => return Err(AssemblyError::NotAssembly("unknown optional header")),
        };
        // Data directory 14: the CLI header.
        let mut d = Cursor::new(
            optional
                .get(directories + 14 * 8..)
                .ok_or(AssemblyError::Outside("the data directories"))?,
        );
        let cli_rva = d.u32()?;
        if cli_rva == 0 {
            return Err(AssemblyError::NotAssembly("no CLI header"));
        }
        let mut table = Vec::new();
        for _ in 0..sections {
            let s = c.take(40)?;
            let mut s = Cursor::new(s);
            s.take(8)?;
            let virtual_size = s.u32()?;
            let va = s.u32()?;
            let raw_size = s.u32()?;
            let raw = s.u32()?;
            table.push(Section {
                va,
                size: virtual_size.max(raw_size),
                raw,
            });
        }
        let mut assembly = Self {
            file,
            sections: table,
            methods: Vec::new(),
        };
        let mut cli = Cursor::new(assembly.at_rva(cli_rva)?);
        cli.take(8)?;
        let metadata_rva = cli.u32()?;
        let metadata = assembly.at_rva(metadata_rva)?;
        assembly.methods = methods(metadata)?;
        Ok(assembly)
    }

    /// The file's bytes from `rva` on.
    fn at_rva(&self, rva: u32) -> Result<&'a [u8], AssemblyError> {
        let section = self
            .sections
            .iter()
            .find(|s| rva >= s.va && rva - s.va < s.size)
            .ok_or(AssemblyError::NotAssembly("an RVA in no section"))?;
        let offset = (rva - section.va) as usize + section.raw as usize;
        self.file
            .get(offset..)
            .ok_or(AssemblyError::Outside("an RVA"))
    }

    /// The IL of method `index` (0-based), if it has a body.
    fn il(&self, index: usize) -> Option<&'a [u8]> {
        let method = self.methods.get(index)?;
        if method.rva == 0 {
            return None;
        }
        let body = self.at_rva(method.rva).ok()?;
        let first = *body.first()?;
        let (start, size) = match first & 3 {
            // Tiny header: the size in its upper six bits.
            2 => (1, usize::from(first >> 2)),
            // Fat header: flags and size (in dwords), max stack, code size.
            3 => {
                let mut c = Cursor::new(body);
                let flags = c.u16().ok()?;
                let _max_stack = c.u16().ok()?;
                let size = c.u32().ok()? as usize;
                (usize::from(flags >> 12) * 4, size)
            }
            _ => return None,
        };
        body.get(start..start.checked_add(size)?)
    }

    /// The methods whose IL calls (`call`, `callvirt`) or takes the
    /// address of (`ldftn`) method `index` (0-based).
    pub fn callers(&self, index: usize) -> Vec<&MethodDef> {
        let Ok(row) = u32::try_from(index + 1) else {
            return Vec::new();
        };
        let token = (0x06u32 << 24 | row).to_le_bytes();
        (0..self.methods.len())
            .filter(|&i| i != index)
            .filter(|&i| {
                self.il(i).is_some_and(|il| {
                    il.windows(5)
                        .any(|w| matches!(w[0], 0x28 | 0x6f) && w[1..] == token)
                        || il
                            .windows(6)
                            .any(|w| w[..2] == [0xfe, 0x06] && w[2..] == token)
                })
            })
            .map(|i| &self.methods[i])
            .collect()
    }
}

/// Every `MethodDef` row with its type, from the metadata root.
fn methods(metadata: &[u8]) -> Result<Vec<MethodDef>, AssemblyError> {
    let mut c = Cursor::new(metadata);
    if c.u32()? != 0x424a_5342 {
        return Err(AssemblyError::NotAssembly("no metadata signature"));
    }
    c.take(8)?;
    let version_length = c.u32()? as usize;
    c.take(version_length)?;
    let _flags = c.u16()?;
    let streams = c.u16()?;
    let (mut tables, mut strings) = (None, None);
    for _ in 0..streams {
        let offset = c.u32()? as usize;
        let size = c.u32()? as usize;
        let mut name = Vec::new();
        loop {
            let chunk = c.take(4)?;
            name.extend_from_slice(chunk);
            if chunk.contains(&0) {
                break;
            }
        }
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let bytes = offset
            .checked_add(size)
            .and_then(|end| metadata.get(offset..end))
            .ok_or(AssemblyError::Outside("a metadata stream"))?;
        match &name[..end] {
            b"#~" => tables = Some(bytes),
            b"#-" => return Err(AssemblyError::Uncompressed),
            b"#Strings" => strings = Some(bytes),
            _ => {}
        }
    }
    let (Some(tables), Some(strings)) = (tables, strings) else {
        return Err(AssemblyError::NotAssembly("no #~ or #Strings stream"));
    };
    let string = |index: u32| -> String {
        let rest = strings.get(index as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    };
    let mut t = Cursor::new(tables);
    t.take(6)?;
    let heaps = t.u8()?;
    t.take(1)?;
    let valid = t.u64()?;
    let _sorted = t.u64()?;
    let mut layout = Layout {
        string: if heaps & 1 != 0 { 4 } else { 2 },
        guid: if heaps & 2 != 0 { 4 } else { 2 },
        blob: if heaps & 4 != 0 { 4 } else { 2 },
        rows: [0; 64],
    };
    for (table, rows) in layout.rows.iter_mut().enumerate() {
        if valid >> table & 1 != 0 {
            *rows = t.u32()?;
        }
    }
    if layout.rows[FIELD_PTR] != 0 || layout.rows[METHOD_PTR] != 0 {
        return Err(AssemblyError::Uncompressed);
    }
    let module_row = 2 + layout.string + 3 * layout.guid;
    let resolution_scope = layout.coded(&[MODULE, MODULE_REF, ASSEMBLY_REF, TYPE_REF], 2);
    let type_ref_row = resolution_scope + 2 * layout.string;
    let type_def_or_ref = layout.coded(&[TYPE_DEF, TYPE_REF, TYPE_SPEC], 2);
    let field_row = 2 + layout.string + layout.blob;
    let skip = |rows: u32, size: usize| {
        (rows as usize)
            .checked_mul(size)
            .ok_or(AssemblyError::Outside("a table"))
    };
    t.take(skip(layout.rows[MODULE], module_row)?)?;
    t.take(skip(layout.rows[TYPE_REF], type_ref_row)?)?;
    // TypeDef: each type's name and its first method.
    let mut types = Vec::new();
    for _ in 0..layout.rows[TYPE_DEF] {
        let _flags = t.u32()?;
        let name = read_index(&mut t, layout.string)?;
        let namespace = read_index(&mut t, layout.string)?;
        read_index(&mut t, type_def_or_ref)?;
        read_index(&mut t, layout.index(FIELD))?;
        let first_method = read_index(&mut t, layout.index(METHOD_DEF))?;
        let (name, namespace) = (string(name), string(namespace));
        let type_name = if namespace.is_empty() {
            name
        } else {
            format!("{namespace}.{name}")
        };
        types.push((first_method, type_name));
    }
    t.take(skip(layout.rows[FIELD], field_row)?)?;
    let mut methods = Vec::new();
    for row in 1..=layout.rows[METHOD_DEF] {
        let rva = t.u32()?;
        let _impl_flags = t.u16()?;
        let _flags = t.u16()?;
        let name = read_index(&mut t, layout.string)?;
        read_index(&mut t, layout.blob)?;
        read_index(&mut t, layout.index(PARAM))?;
        // The type whose method list starts at or before this row, last.
        let type_name = types
            .iter()
            .rev()
            .find(|(first, _)| *first <= row)
            .map(|(_, name)| name.clone())
            .unwrap_or_default();
        methods.push(MethodDef {
            type_name,
            name: string(name),
            rva,
        });
    }
    Ok(methods)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample app, built as the tests build it.
    fn sample() -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().ok()?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/dotnet-app/build.sh");
        let built = std::process::Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        built.then(|| std::fs::read(dir.path().join("App.dll")).ok())?
    }

    #[test]
    fn methods_and_their_callers_in_the_sample_app() {
        // mcs (Debian's mono-mcs) is a test dependency; without it this
        // test has nothing to read.
        let Some(file) = sample() else {
            assert!(
                std::env::var_os("TRACECAR_REQUIRE_PRIVILEGED").is_none(),
                "mcs could not build the sample app"
            );
            return;
        };
        let assembly = Assembly::parse(&file).unwrap();
        let index = |q: &str| {
            assembly
                .methods
                .iter()
                .position(|m| m.qualified() == q)
                .unwrap_or_else(|| panic!("{q} not in {:?}", assembly.methods))
        };
        let hot = index("Tracecar.Sample.Work.HotLoop");
        let callers: Vec<String> = assembly
            .callers(hot)
            .iter()
            .map(|m| m.qualified())
            .collect();
        assert!(
            callers.contains(&"Tracecar.Sample.Work.Spin".to_owned()),
            "{callers:?}"
        );
        let fail = index("Tracecar.Sample.Thrower.Fail");
        let callers: Vec<String> = assembly
            .callers(fail)
            .iter()
            .map(|m| m.qualified())
            .collect();
        // Serve throws every 50th request.
        assert_eq!(
            callers,
            ["Tracecar.Sample.Work.Serve", "Tracecar.Sample.Thrower.Run"]
        );
        // A method only a delegate names: ldftn counts.
        let queue = index("Tracecar.Sample.Metered.Queue");
        let callers: Vec<String> = assembly
            .callers(queue)
            .iter()
            .map(|m| m.qualified())
            .collect();
        assert_eq!(callers, ["Tracecar.Sample.Metered.Run"]);
    }

    #[test]
    fn what_is_not_an_assembly_is_refused_without_reading_past_its_end() {
        assert!(matches!(
            Assembly::parse(b"M"),
            Err(AssemblyError::Bytes(_))
        ));
        assert!(matches!(
            Assembly::parse(b"ELF"),
            Err(AssemblyError::NotAssembly(_))
        ));
        assert!(matches!(
            Assembly::parse(
                b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
            ),
            Err(AssemblyError::NotAssembly(_))
        ));
        let mut pe = vec![0u8; 0x80];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert!(Assembly::parse(&pe).is_err());
        // Every prefix of a real assembly fails cleanly or parses.
        if let Some(file) = sample() {
            for len in (0..file.len()).step_by(97) {
                let _ = Assembly::parse(&file[..len]);
            }
        }
    }
}
