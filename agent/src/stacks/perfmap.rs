//! JIT perf maps (`/tmp/perf-<pid>.map`): `START SIZE NAME` lines, hex, with
//! or without `0x` (Node and .NET write `7f3a…`, Java's `jcmd
//! Compiler.perfmap` and `-XX:+DumpPerfMapAtExit` write `0x7f3a…`).
//!
//! Later lines win: a runtime that recycles JIT code appends a new entry for
//! the same range. The file is re-read when it grows.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One JIT symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfMapEntry {
    /// Start address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Symbol name as the runtime wrote it.
    pub name: String,
}

fn hex(s: &str) -> Option<u64> {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

/// Parses one line; `None` for lines that are not entries.
pub fn parse_line(line: &str) -> Option<PerfMapEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    Some(PerfMapEntry {
        start: hex(start)?,
        size: hex(size)?,
        name: name.trim().to_owned(),
    })
}

/// Symbols of one perf map, indexed by start address.
#[derive(Debug, Default, Clone)]
pub struct PerfMapIndex {
    by_start: BTreeMap<u64, PerfMapEntry>,
}

impl PerfMapIndex {
    /// Adds entries in file order; a later entry replaces any earlier one
    /// it overlaps. Returns the entries added.
    pub fn extend(&mut self, text: &str) -> Vec<PerfMapEntry> {
        let mut added = Vec::new();
        for entry in text.lines().filter_map(parse_line) {
            if entry.size == 0 {
                continue;
            }
            let end = entry.start.saturating_add(entry.size);
            // Drop older entries that overlap the new range.
            let overlapping: Vec<u64> = self
                .by_start
                .range(..end)
                .rev()
                .take_while(|(_, e)| e.start.saturating_add(e.size) > entry.start)
                .map(|(s, _)| *s)
                .collect();
            for start in overlapping {
                self.by_start.remove(&start);
            }
            added.push(entry.clone());
            self.by_start.insert(entry.start, entry);
        }
        added
    }

    /// The symbol containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&PerfMapEntry> {
        self.by_start
            .range(..=addr)
            .next_back()
            .map(|(_, e)| e)
            .filter(|e| addr < e.start.saturating_add(e.size))
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Every entry, in address order.
    pub fn entries(&self) -> impl Iterator<Item = &PerfMapEntry> {
        self.by_start.values()
    }
}

/// A perf map file that is re-read as it grows.
#[derive(Debug)]
pub struct PerfMapFile {
    path: PathBuf,
    read_len: u64,
    index: PerfMapIndex,
}

impl PerfMapFile {
    /// Tracks `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            read_len: 0,
            index: PerfMapIndex::default(),
        }
    }

    /// Reads what was appended since the last call, and returns the
    /// entries it added (what a probe following a method's new versions
    /// looks at). A file that shrank was rewritten, so it is read again
    /// from the start.
    pub fn refresh(&mut self) -> Vec<PerfMapEntry> {
        use std::io::{Read as _, Seek as _};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < self.read_len {
            self.read_len = 0;
            self.index = PerfMapIndex::default();
        }
        if len == self.read_len {
            return Vec::new();
        }
        if file.seek(std::io::SeekFrom::Start(self.read_len)).is_err() {
            return Vec::new();
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        // Only whole lines; a partial last line is read next time.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.read_len += complete as u64;
        self.index.extend(&text[..complete])
    }

    /// The index as read so far.
    pub fn index(&self) -> &PerfMapIndex {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_address_forms_parse() {
        assert_eq!(
            parse_line("7f3a10000040 8c LazyCompile:*hot /app/x.js:3\n"),
            Some(PerfMapEntry {
                start: 0x7f3a_1000_0040,
                size: 0x8c,
                name: "LazyCompile:*hot /app/x.js:3".into()
            })
        );
        assert_eq!(
            parse_line("0x00007f3a10000040 0x0000008c void Main.hot(int)"),
            Some(PerfMapEntry {
                start: 0x7f3a_1000_0040,
                size: 0x8c,
                name: "void Main.hot(int)".into()
            })
        );
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line("zz 10 name"), None);
    }

    #[test]
    fn last_entry_wins_when_code_is_recycled() {
        let mut index = PerfMapIndex::default();
        index.extend("1000 100 old\n2000 10 other\n");
        index.extend("1080 40 new\n");
        assert_eq!(index.lookup(0x1090).map(|e| e.name.as_str()), Some("new"));
        // The old entry overlapped and is gone entirely.
        assert_eq!(index.lookup(0x1010), None);
        assert_eq!(index.lookup(0x2005).map(|e| e.name.as_str()), Some("other"));
        assert_eq!(index.lookup(0x2010), None);
    }

    #[test]
    fn file_is_reread_when_it_grows() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perf-7.map");
        let mut map = PerfMapFile::new(path.clone());
        map.refresh();
        assert!(map.index().is_empty());
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "1000 10 a\n2000 10 par").unwrap();
        f.flush().unwrap();
        let added = map.refresh();
        assert_eq!(map.index().len(), 1);
        assert_eq!(added.len(), 1);
        writeln!(f, "tial\n3000 10 c").unwrap();
        let added: Vec<String> = map.refresh().into_iter().map(|e| e.name).collect();
        assert_eq!(map.index().len(), 3);
        // Only what this read added.
        assert_eq!(added, ["partial", "c"]);
        assert!(map.refresh().is_empty());
        assert_eq!(
            map.index().lookup(0x2001).map(|e| e.name.as_str()),
            Some("partial")
        );
    }
}
