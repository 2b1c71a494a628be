//! JIT perf maps (`/tmp/perf-<pid>.map`): `START SIZE NAME` lines, hex, with
//! or without `0x` (Node and .NET write `7f3a…`, Java's `jcmd
//! Compiler.perfmap` and `-XX:+DumpPerfMapAtExit` write `0x7f3a…`).
//!
//! Later lines win: a runtime that recycles JIT code appends a new entry for
//! the same range. The file is re-read when it grows.
//!
//! The file is in a directory the app writes, so it is opened only through
//! [`crate::rootfs`]: in the process's own root, never through a symlink,
//! only as a regular file of at most [`limits::PERF_MAP_BYTES`], and only
//! if the process's user (or root) owns it, as `perf` requires.

use std::collections::BTreeMap;

use crate::procfs::Procfs;
use crate::rootfs::{Follow, limits};

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

/// What one perf map's index may hold, in bytes (counted as 64 bytes an
/// entry plus its name): about 400,000 JIT methods. A runtime that wrote
/// more (a perf map only grows) has the rest of its map left unread, and
/// the code it names stays unnamed; [`PerfMapFile::refused`] says so.
pub const INDEX_BYTES: usize = 48 << 20;
/// How much of the file is read at a time.
const READ_CHUNK: u64 = 4 << 20;

/// Symbols of one perf map, indexed by start address.
#[derive(Debug, Default, Clone)]
pub struct PerfMapIndex {
    by_start: BTreeMap<u64, PerfMapEntry>,
    /// Bytes held, as [`INDEX_BYTES`] counts them.
    held: usize,
}

impl PerfMapIndex {
    /// Adds entries in file order; a later entry replaces any earlier one
    /// it overlaps. Returns the entries added.
    pub fn extend(&mut self, text: &str) -> Vec<PerfMapEntry> {
        let mut added = Vec::new();
        self.extend_with(text, |entry| added.push(entry.clone()));
        added
    }

    /// [`PerfMapIndex::extend`], handing each entry added to `on_added`
    /// (nothing is copied for a caller that does not keep them).
    pub fn extend_with(&mut self, text: &str, mut on_added: impl FnMut(&PerfMapEntry)) {
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
                if let Some(old) = self.by_start.remove(&start) {
                    self.held = self.held.saturating_sub(64 + old.name.len());
                }
            }
            self.held += 64 + entry.name.len();
            on_added(&entry);
            self.by_start.insert(entry.start, entry);
        }
    }

    /// The symbol containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&PerfMapEntry> {
        self.by_start
            .range(..=addr)
            .next_back()
            .map(|(_, e)| e)
            .filter(|e| addr < e.start.saturating_add(e.size))
    }

    /// Bytes held, as [`INDEX_BYTES`] counts them.
    pub fn held(&self) -> usize {
        self.held
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
    procfs: Procfs,
    pid: u32,
    /// The path as the process sees it.
    path: String,
    /// Who may own it besides root: the process's effective user.
    owner: u32,
    read_len: u64,
    index: PerfMapIndex,
    refused: Option<String>,
}

impl PerfMapFile {
    /// The perf map of `pid`: `/tmp/perf-<pid as it sees itself>.map` in
    /// its own root, tracked even before the runtime writes it. `None` if
    /// the process is gone.
    pub fn of(procfs: &Procfs, pid: u32) -> Option<Self> {
        let status = procfs.status(pid).ok()?;
        let inner = status.innermost_pid().unwrap_or(pid);
        Some(Self::at(
            procfs,
            pid,
            &format!("/tmp/perf-{inner}.map"),
            status.euid.unwrap_or(0),
        ))
    }

    /// The perf map at `path` as `pid` sees it, which `owner` (or root)
    /// must own.
    pub fn at(procfs: &Procfs, pid: u32, path: &str, owner: u32) -> Self {
        Self {
            procfs: procfs.clone(),
            pid,
            path: path.to_owned(),
            owner,
            read_len: 0,
            index: PerfMapIndex::default(),
            refused: None,
        }
    }

    /// The path as the process sees it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Why the file was not read (or not all of it) at the last refresh,
    /// when something is at its path that the agent refuses (a symlink, a
    /// FIFO, a file over the limit or owned by another user) or the index
    /// reached [`INDEX_BYTES`]. Nothing at the path is not a refusal.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The file, if it is one the agent reads.
    pub fn open(&self) -> Result<crate::rootfs::Seen, crate::rootfs::RootError> {
        self.procfs
            .open_seen(self.pid, &self.path, Follow::Never)?
            .file(limits::PERF_MAP_BYTES)?
            .owned_by(self.owner)
    }

    /// Reads what was appended since the last call. A file that shrank
    /// was rewritten, so it is read again from the start.
    pub fn refresh(&mut self) {
        self.read_new(false);
    }

    /// [`PerfMapFile::refresh`], returning the entries it added (what a
    /// probe following a method's new versions looks at).
    pub fn refresh_added(&mut self) -> Vec<PerfMapEntry> {
        self.read_new(true)
    }

    fn read_new(&mut self, keep_added: bool) -> Vec<PerfMapEntry> {
        let seen = match self.open() {
            Ok(seen) => seen,
            Err(e) => {
                if !e.is_missing() && self.refused.is_none() {
                    tracing::warn!(pid = self.pid, error = %e, "perf map not read");
                }
                self.refused = (!e.is_missing()).then(|| e.to_string());
                return Vec::new();
            }
        };
        self.refused = None;
        let len = seen.size();
        if len < self.read_len {
            self.read_len = 0;
            self.index = PerfMapIndex::default();
        }
        // A chunk at a time, whole lines only (a partial last line is read
        // next time), until the end or the index's limit.
        let mut added = Vec::new();
        while self.read_len < len {
            if self.index.held() >= INDEX_BYTES {
                self.refused = Some(format!(
                    "{}: the agent indexed {} JIT symbols ({} of its {} bytes) and read no further: over the agent's limit of {} MiB for one perf map",
                    self.path,
                    self.index.len(),
                    self.read_len,
                    len,
                    INDEX_BYTES >> 20
                ));
                break;
            }
            let Ok(bytes) = seen.read_range(self.read_len, READ_CHUNK) else {
                break;
            };
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if complete == 0 {
                // No whole line in a chunk: a line longer than any name,
                // or the runtime is still writing it.
                if bytes.len() as u64 >= READ_CHUNK {
                    self.read_len += bytes.len() as u64;
                    continue;
                }
                break;
            }
            self.read_len += complete as u64;
            self.index
                .extend_with(&String::from_utf8_lossy(&bytes[..complete]), |entry| {
                    if keep_added {
                        added.push(entry.clone());
                    }
                });
        }
        added
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
        let owner = rustix::process::geteuid().as_raw();
        let mut map = PerfMapFile::at(
            &Procfs::default(),
            std::process::id(),
            path.to_str().unwrap(),
            owner,
        );
        map.refresh();
        assert!(map.index().is_empty());
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "1000 10 a\n2000 10 par").unwrap();
        f.flush().unwrap();
        let added = map.refresh_added();
        assert_eq!(map.index().len(), 1);
        assert_eq!(added.len(), 1);
        writeln!(f, "tial\n3000 10 c").unwrap();
        let added: Vec<String> = map.refresh_added().into_iter().map(|e| e.name).collect();
        assert_eq!(map.index().len(), 3);
        // Only what this read added.
        assert_eq!(added, ["partial", "c"]);
        assert!(map.refresh_added().is_empty());
        assert_eq!(
            map.index().lookup(0x2001).map(|e| e.name.as_str()),
            Some("partial")
        );
    }
}
