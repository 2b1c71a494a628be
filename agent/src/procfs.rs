//! `/proc` parsing: pure parsers over `&str` plus thin readers.
//!
//! PIDs are those of the agent's PID namespace (the pod's, with
//! `shareProcessNamespace`), because that is the `/proc` the agent sees.

use std::io::BufRead as _;
use std::path::PathBuf;

/// Fields of `/proc/PID/stat` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Process ID.
    pub pid: u32,
    /// `comm`, without the parentheses.
    pub comm: String,
    /// State letter (R, S, D, Z, …).
    pub state: char,
    /// Parent PID (0 when the parent is outside the namespace).
    pub ppid: u32,
    /// User-mode CPU time in clock ticks.
    pub utime: u64,
    /// Kernel-mode CPU time in clock ticks.
    pub stime: u64,
    /// Number of threads.
    pub threads: u32,
    /// Start time after boot, in clock ticks.
    pub start_time: u64,
}

/// Why a `/proc` file could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The line or file does not have the expected shape.
    #[error("malformed {file}: {detail}")]
    Malformed {
        /// Which file kind.
        file: &'static str,
        /// What was wrong.
        detail: String,
    },
}

fn malformed(file: &'static str, detail: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        file,
        detail: detail.into(),
    }
}

/// Parses `/proc/PID/stat`. `comm` may contain spaces and parentheses, so
/// it is taken up to the *last* `)`.
pub fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    let open = text.find('(').ok_or_else(|| malformed("stat", "no '('"))?;
    let close = text.rfind(')').ok_or_else(|| malformed("stat", "no ')'"))?;
    let pid = text[..open]
        .trim()
        .parse()
        .map_err(|_| malformed("stat", "bad pid"))?;
    let comm = text[open + 1..close].to_owned();
    // Fields after comm, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<&str, ParseError> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| malformed("stat", format!("missing field {n}")))
    };
    let num = |n: usize| -> Result<u64, ParseError> {
        field(n)?
            .parse()
            .map_err(|_| malformed("stat", format!("field {n} is not a number")))
    };
    Ok(Stat {
        pid,
        comm,
        state: field(3)?.chars().next().unwrap_or('?'),
        ppid: u32::try_from(num(4)?).unwrap_or(0),
        utime: num(14)?,
        stime: num(15)?,
        threads: u32::try_from(num(20)?).unwrap_or(u32::MAX),
        start_time: num(22)?,
    })
}

/// Where a thread blocked in a system call stopped, from
/// `/proc/PID/task/TID/syscall`: `NR arg0 … arg5 SP PC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InSyscall {
    /// The system call number.
    pub nr: u64,
    /// The user stack pointer.
    pub sp: u64,
    /// The user program counter (just after the `syscall` instruction).
    pub pc: u64,
}

/// Parses `/proc/PID/task/TID/syscall`. `None` when the thread is not in a
/// system call (`running`, or `-1 SP PC` for a block outside one).
pub fn parse_syscall(text: &str) -> Option<InSyscall> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    match fields.as_slice() {
        [nr, _, _, _, _, _, _, sp, pc] => Some(InSyscall {
            nr: nr.parse().ok()?,
            sp: hex(sp)?,
            pc: hex(pc)?,
        }),
        _ => None,
    }
}

/// Fields of `/proc/PID/status` the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Real UID.
    pub uid: Option<u32>,
    /// Effective UID.
    pub euid: Option<u32>,
    /// Effective GID.
    pub egid: Option<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// PIDs of the process in each nested PID namespace, outermost first.
    pub ns_pids: Vec<u32>,
    /// Effective capability mask.
    pub cap_eff: Option<u64>,
    /// Resident anonymous memory (`RssAnon`), in KiB; absent for kernel
    /// threads.
    pub rss_anon_kib: Option<u64>,
    /// The signals it handles (`SigCgt`), a bit per signal (`1 << (n - 1)`).
    pub sig_cgt: u64,
}

impl Status {
    /// The PID as the process itself sees it (innermost namespace); this is
    /// the number JIT runtimes put in `/tmp/perf-<pid>.map`.
    pub fn innermost_pid(&self) -> Option<u32> {
        self.ns_pids.last().copied()
    }
}

/// Parses `/proc/PID/status`.
pub fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Uid" => {
                status.uid = nth_id(value, 0);
                status.euid = nth_id(value, 1);
            }
            "Gid" => status.egid = nth_id(value, 1),
            "Groups" => {
                status.groups = value
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
            }
            "NSpid" => {
                status.ns_pids = value
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
            }
            "CapEff" => status.cap_eff = u64::from_str_radix(value, 16).ok(),
            "SigCgt" => status.sig_cgt = u64::from_str_radix(value, 16).unwrap_or(0),
            "RssAnon" => {
                status.rss_anon_kib = value.strip_suffix("kB").and_then(|v| v.trim().parse().ok());
            }
            _ => {}
        }
    }
    status
}

/// The `n`th of the real, effective, saved and filesystem IDs of a
/// `Uid:`/`Gid:` line.
fn nth_id(value: &str, n: usize) -> Option<u32> {
    value.split_whitespace().nth(n).and_then(|v| v.parse().ok())
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `r`, `w`, `x`, `p`/`s` flags.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Inode; 0 for anonymous memory.
    pub inode: u64,
    /// Path or pseudo-name (`[vdso]`, `[heap]`), possibly with ` (deleted)`.
    pub path: Option<String>,
}

impl MapEntry {
    /// Whether the mapping is executable.
    pub fn is_exec(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    /// Whether it is backed by a file (not anonymous, not a pseudo-name).
    pub fn is_file_backed(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }

    /// Whether a uprobe can be put in it: code in a private mapping of a
    /// file. Anonymous memory (JIT code) has no file, and the kernel does
    /// not put uprobes in shared mappings (a JIT's double-mapped
    /// `memfd:` code, for one).
    pub fn is_uprobe_capable(&self) -> bool {
        self.is_file_backed()
            && self.perms.as_bytes().get(3) == Some(&b'p')
            && !self
                .path
                .as_deref()
                .is_some_and(|p| p.starts_with("/memfd:"))
    }

    /// Whether `addr` is inside it.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The file's path as the process sees it, without the ` (deleted)`
    /// the kernel appends to a file that was removed or replaced.
    pub fn file_path(&self) -> Option<&str> {
        self.path.as_deref().map(without_deleted)
    }
}

/// `path` without the ` (deleted)` the kernel appends to the links and
/// maps of a removed or replaced file.
pub fn without_deleted(path: &str) -> &str {
    path.strip_suffix(" (deleted)").unwrap_or(path)
}

/// The mapping that holds `addr`.
pub fn mapping_at(maps: &[MapEntry], addr: u64) -> Option<&MapEntry> {
    maps.iter().find(|m| m.contains(addr))
}

/// Whether `addr` is in executable memory: code, not heap or data (V8's
/// perf map also names bytecode, which never runs).
pub fn is_code_at(maps: &[MapEntry], addr: u64) -> bool {
    mapping_at(maps, addr).is_some_and(MapEntry::is_exec)
}

/// Parses one `/proc/PID/maps` line.
pub fn parse_maps_line(line: &str) -> Result<MapEntry, ParseError> {
    let mut parts = line.splitn(6, char::is_whitespace);
    let mut next = |what: &str| {
        parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed("maps", format!("missing {what} in {line:?}")))
    };
    let range = next("range")?;
    let perms = next("perms")?.to_owned();
    let offset = next("offset")?;
    let _dev = next("dev")?;
    let inode = next("inode")?;
    let path = parts
        .next()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| malformed("maps", format!("bad range {range:?}")))?;
    let hex = |s: &str| {
        u64::from_str_radix(s, 16).map_err(|_| malformed("maps", format!("bad hex {s:?}")))
    };
    Ok(MapEntry {
        start: hex(start)?,
        end: hex(end)?,
        perms,
        offset: hex(offset)?,
        inode: inode
            .parse()
            .map_err(|_| malformed("maps", format!("bad inode {inode:?}")))?,
        path,
    })
}

/// Parses a whole `/proc/PID/maps`, skipping malformed lines.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines()
        .filter_map(|l| parse_maps_line(l).ok())
        .collect()
}

/// Mappings read from one `/proc/PID/maps` at most (the kernel's default
/// `vm.max_map_count` is 65,530).
pub const MAPS_ENTRIES: usize = 65_536;
/// Bytes of path names kept from one `/proc/PID/maps` at most.
pub const MAPS_PATH_BYTES: usize = 16 << 20;
/// The longest `/proc/PID/maps` line read (a path is at most 4,096 bytes).
const MAPS_LINE_BYTES: usize = 8 << 10;
/// `/proc/PID/smaps` read at most (a dump reads it to size the core).
pub const SMAPS_BYTES: u64 = 64 << 20;
/// What is read at most of the small `/proc/PID` files (`stat`, `status`,
/// `cmdline`, `environ`, …): what an app puts in its arguments or
/// environment is not read past this.
pub const SMALL_FILE_BYTES: u64 = 1 << 20;

/// Why `/proc/PID/maps` was not read.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A line longer than the kernel writes.
    #[error("a line longer than {MAPS_LINE_BYTES} bytes")]
    LongLine,
    /// More mappings or path names than the agent holds.
    #[error("over {MAPS_ENTRIES} mappings or {} MiB of path names; not read", MAPS_PATH_BYTES >> 20)]
    TooMany,
}

/// Parses `/proc/PID/maps` from a reader, a line at a time, within
/// [`MAPS_ENTRIES`], [`MAPS_PATH_BYTES`] and a line length; malformed
/// lines are skipped.
pub fn parse_maps_from(mut reader: impl std::io::BufRead) -> Result<Vec<MapEntry>, MapsError> {
    let mut out = Vec::new();
    let mut path_bytes = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = std::io::Read::take(&mut reader, MAPS_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        if line.len() > MAPS_LINE_BYTES {
            return Err(MapsError::LongLine);
        }
        let Ok(entry) = parse_maps_line(&String::from_utf8_lossy(&line)) else {
            continue;
        };
        path_bytes += entry.path.as_ref().map_or(0, String::len);
        if out.len() >= MAPS_ENTRIES || path_bytes > MAPS_PATH_BYTES {
            return Err(MapsError::TooMany);
        }
        out.push(entry);
    }
    Ok(out)
}

/// At most `limit` bytes of a kernel-generated file.
pub(crate) fn read_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A PID that is not in this PID namespace: the one error every endpoint
/// gives for it (with `shareProcessNamespace` off, the app's processes are
/// not in the sidecar's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pid {0} is not visible")]
pub struct PidNotVisible(pub u32);

/// Where `/proc` is; tests may point elsewhere.
#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
    /// With [`Procfs::pinned`]: the start time of each process first seen
    /// through this handle, so that a process that exits and whose number
    /// is reused by another is not taken for it.
    pins: Option<std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, u64>>>>,
}

impl Default for Procfs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc"),
            pins: None,
        }
    }
}

/// A PID that now names another process than the one first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pid {0} exited and its number now names another process")]
pub struct PidReused(pub u32);

impl Procfs {
    /// A `/proc` at another path.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            pins: None,
        }
    }

    /// The same `/proc`, remembering each process it opens files of
    /// ([`Procfs::same_process`]): one per request, so that a capture that
    /// runs for minutes keeps reading the process it started with.
    pub fn pinned(&self) -> Self {
        Self {
            root: self.root.clone(),
            pins: Some(Default::default()),
        }
    }

    /// Checks, after something of `pid` was opened, that `pid` is still
    /// the process this handle first saw under that number (its start
    /// time); the first call pins it. Without [`Procfs::pinned`], always
    /// true. A process's number is not reused while it lives, so a file
    /// opened before a successful check belongs to the pinned process.
    pub fn same_process(&self, pid: u32) -> Result<(), PidReused> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        let Ok(start) = self.stat(pid).map(|s| s.start_time) else {
            return Err(PidReused(pid));
        };
        let mut pins = pins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match pins.get(&pid) {
            Some(&pinned) if pinned != start => Err(PidReused(pid)),
            Some(_) => Ok(()),
            None => {
                pins.insert(pid, start);
                Ok(())
            }
        }
    }

    /// `/proc/PID/<name>`.
    pub fn path(&self, pid: u32, name: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(name)
    }

    /// Fails with the first of `pids` that is not in this PID namespace.
    pub fn check_visible(&self, pids: &[u32]) -> Result<(), PidNotVisible> {
        match pids.iter().find(|p| !self.path(**p, "stat").exists()) {
            Some(pid) => Err(PidNotVisible(*pid)),
            None => Ok(()),
        }
    }

    /// Every numeric entry of `/proc`.
    pub fn pids(&self) -> std::io::Result<Vec<u32>> {
        let mut pids: Vec<u32> = std::fs::read_dir(&self.root)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Thread IDs of a process.
    pub fn tids(&self, pid: u32) -> std::io::Result<Vec<u32>> {
        let mut tids: Vec<u32> = std::fs::read_dir(self.path(pid, "task"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        Ok(tids)
    }

    fn read(&self, pid: u32, name: &str) -> std::io::Result<String> {
        let bytes = read_bounded(&self.path(pid, name), SMALL_FILE_BYTES)?;
        String::from_utf8(bytes).map_err(std::io::Error::other)
    }

    /// `/proc/PID/stat`.
    pub fn stat(&self, pid: u32) -> std::io::Result<Stat> {
        parse_stat(&self.read(pid, "stat")?).map_err(std::io::Error::other)
    }

    /// `/proc/PID/status`.
    pub fn status(&self, pid: u32) -> std::io::Result<Status> {
        Ok(parse_status(&self.read(pid, "status")?))
    }

    /// `/proc/PID/cgroup`, as is: two processes are in the same cgroups
    /// (the same container) when theirs are equal.
    pub fn cgroup(&self, pid: u32) -> std::io::Result<String> {
        self.read(pid, "cgroup")
    }

    /// `/proc/PID/maps`, read a line at a time: at most
    /// [`MAPS_ENTRIES`] mappings and [`MAPS_PATH_BYTES`] of path names
    /// (an app can map 65,530 files with 4 KiB names: a quarter of a GiB
    /// of text), else an error.
    pub fn maps(&self, pid: u32) -> std::io::Result<Vec<MapEntry>> {
        let file = std::fs::File::open(self.path(pid, "maps"))?;
        parse_maps_from(std::io::BufReader::with_capacity(64 << 10, file))
            .map_err(|e| std::io::Error::other(format!("/proc/{pid}/maps: {e}")))
    }

    /// `/proc/PID/smaps` as text, if it is at most [`SMAPS_BYTES`] (65,000
    /// mappings of a file with a 4 KiB name make it hundreds of MiB).
    pub fn smaps(&self, pid: u32) -> std::io::Result<String> {
        let bytes = read_bounded(&self.path(pid, "smaps"), SMAPS_BYTES + 1)?;
        if bytes.len() as u64 > SMAPS_BYTES {
            return Err(std::io::Error::other(format!(
                "/proc/{pid}/smaps is over {} MiB; not read",
                SMAPS_BYTES >> 20
            )));
        }
        String::from_utf8(bytes).map_err(std::io::Error::other)
    }

    /// `/proc/PID/cmdline` as arguments (at most [`SMALL_FILE_BYTES`]).
    pub fn cmdline(&self, pid: u32) -> std::io::Result<Vec<String>> {
        let raw = read_bounded(&self.path(pid, "cmdline"), SMALL_FILE_BYTES)?;
        Ok(raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect())
    }

    /// The target of `/proc/PID/exe`.
    pub fn exe(&self, pid: u32) -> std::io::Result<PathBuf> {
        std::fs::read_link(self.path(pid, "exe"))
    }

    /// The mount namespace `pid` is in (the inode of `/proc/PID/ns/mnt`,
    /// which needs ptrace access to read): each container of a pod has
    /// its own.
    pub fn mount_namespace(&self, pid: u32) -> std::io::Result<u64> {
        let link = std::fs::read_link(self.path(pid, "ns/mnt"))?;
        parse_namespace(&link.to_string_lossy()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a namespace link: {}", link.display()),
            )
        })
    }

    /// A thread's name.
    pub fn thread_comm(&self, pid: u32, tid: u32) -> std::io::Result<String> {
        let path = self
            .root
            .join(pid.to_string())
            .join("task")
            .join(tid.to_string())
            .join("comm");
        let bytes = read_bounded(&path, SMALL_FILE_BYTES)?;
        Ok(String::from_utf8_lossy(&bytes).trim_end().to_owned())
    }

    /// `/proc/PID/task/TID/stat`.
    pub fn thread_stat(&self, pid: u32, tid: u32) -> std::io::Result<Stat> {
        parse_stat(&self.read(pid, &format!("task/{tid}/stat"))?).map_err(std::io::Error::other)
    }

    /// Where thread `tid` of `pid` is blocked in a system call
    /// (`/proc/PID/task/TID/syscall`, which needs ptrace access), if it is.
    pub fn thread_syscall(&self, pid: u32, tid: u32) -> std::io::Result<Option<InSyscall>> {
        Ok(parse_syscall(
            &self.read(pid, &format!("task/{tid}/syscall"))?,
        ))
    }

    /// The kernel function thread `tid` of `pid` sleeps in
    /// (`/proc/PID/task/TID/wchan`; `None` for `0` or an empty answer).
    pub fn thread_wchan(&self, pid: u32, tid: u32) -> Option<String> {
        let text = self.read(pid, &format!("task/{tid}/wchan")).ok()?;
        let name = text.trim();
        (!name.is_empty() && name != "0").then(|| name.to_owned())
    }

    /// `len` bytes of `pid`'s memory at `address` (`/proc/PID/mem`, which
    /// needs ptrace access: CAP_SYS_PTRACE, or the same user).
    pub fn read_memory(&self, pid: u32, address: u64, len: usize) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt as _;
        let file = std::fs::File::open(self.path(pid, "mem"))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, address)?;
        Ok(buf)
    }

    /// `/proc/PID/environ` as `NAME=value` pairs (at most
    /// [`SMALL_FILE_BYTES`]).
    pub fn environ(&self, pid: u32) -> std::io::Result<Vec<(String, String)>> {
        let raw = read_bounded(&self.path(pid, "environ"), SMALL_FILE_BYTES)?;
        Ok(raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect())
    }
}

/// The inode of a namespace link's target (`mnt:[4026531841]`).
pub fn parse_namespace(target: &str) -> Option<u64> {
    target.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 on every Linux
/// architecture tracecar supports.
pub const CLOCK_TICKS: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links() {
        assert_eq!(parse_namespace("mnt:[4026531841]"), Some(4_026_531_841));
        assert_eq!(parse_namespace("mnt:[x]"), None);
        assert_eq!(parse_namespace("/tmp/x"), None);
        let own = Procfs::default()
            .mount_namespace(std::process::id())
            .unwrap();
        assert!(own > 0);
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(
            parse_syscall("0 0x3 0x7ffd 0x1 0x0 0x0 0x0 0x7ffc8a2b1f28 0x7f1e2d3c4b5a\n"),
            Some(InSyscall {
                nr: 0,
                sp: 0x7ffc_8a2b_1f28,
                pc: 0x7f1e_2d3c_4b5a
            })
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffc8a2b1f28 0x7f1e2d3c4b5a\n"), None);
        assert_eq!(parse_syscall(""), None);
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "4242 (my (weird) app) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 7 0 12345 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "my (weird) app");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!((stat.utime, stat.stime), (150, 25));
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_time, 12345);
    }

    #[test]
    fn stat_errors_are_typed() {
        assert!(parse_stat("garbage").is_err());
        assert!(parse_stat("1 (x) S").is_err());
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tnode\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t8123\t7\nCapEff:\t000001ffffffffff\n";
        let status = parse_status(text);
        assert_eq!(status.uid, Some(1000));
        assert_eq!(status.ns_pids, vec![8123, 7]);
        assert_eq!(status.innermost_pid(), Some(7));
        assert_eq!(status.cap_eff, Some(0x1ff_ffff_ffff));
        assert_eq!(status.rss_anon_kib, None);
        let status =
            parse_status("VmRSS:\t  40960 kB\nRssAnon:\t   30720 kB\nRssFile:\t 10240 kB\n");
        assert_eq!(status.rss_anon_kib, Some(30720));
    }

    #[test]
    fn status_effective_ids_and_groups() {
        let text = "Uid:\t1000\t0\t0\t0\nGid:\t1000\t2000\t2000\t2000\nGroups:\t0 2000 3000 \n";
        let status = parse_status(text);
        assert_eq!(
            (status.uid, status.euid, status.egid),
            (Some(1000), Some(0), Some(2000))
        );
        assert_eq!(status.groups, vec![0, 2000, 3000]);
        assert_eq!(parse_status("Groups:\t\n").groups, Vec::<u32>::new());
    }

    #[test]
    fn maps_lines() {
        let e = parse_maps_line(
            "55d0c0a00000-55d0c0a21000 r-xp 00002000 fd:01 1234567                    /usr/bin/app (deleted)",
        )
        .unwrap();
        assert_eq!(e.start, 0x55d0_c0a0_0000);
        assert_eq!(e.end, 0x55d0_c0a2_1000);
        assert!(e.is_exec());
        assert_eq!(e.offset, 0x2000);
        assert_eq!(e.inode, 1_234_567);
        assert_eq!(e.path.as_deref(), Some("/usr/bin/app (deleted)"));
        assert_eq!(e.file_path(), Some("/usr/bin/app"));
        assert!(e.contains(0x55d0_c0a0_0000) && !e.contains(0x55d0_c0a2_1000));
        assert_eq!(
            mapping_at(std::slice::from_ref(&e), 0x55d0_c0a0_1000),
            Some(&e)
        );
        assert_eq!(mapping_at(std::slice::from_ref(&e), 0x1000), None);
        assert_eq!(without_deleted("/a (deleted)"), "/a");
        assert!(e.is_file_backed());
        let anon = parse_maps_line("7f0000000000-7f0000001000 rwxp 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, None);
        assert!(!anon.is_file_backed());
        let vdso = parse_maps_line(
            "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]",
        )
        .unwrap();
        assert_eq!(vdso.path.as_deref(), Some("[vdso]"));
        assert!(parse_maps_line("zz").is_err());
    }

    #[test]
    fn maps_are_read_within_bounds() {
        let line = |i: usize, name: &str| {
            format!(
                "{:x}-{:x} r-xp 00000000 08:01 5 /{name}\n",
                i * 0x1000,
                i * 0x1000 + 0x1000
            )
        };
        let text: String = (0..10).map(|i| line(i, "lib")).collect();
        assert_eq!(parse_maps_from(text.as_bytes()).unwrap().len(), 10);
        // Long names, many of them: refused, not held.
        let long = "x".repeat(4000);
        let text: String = (0..(MAPS_PATH_BYTES / 4000 + 2))
            .map(|i| line(i, &long))
            .collect();
        assert!(
            parse_maps_from(text.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("path names")
        );
        let text: String = (0..MAPS_ENTRIES + 1).map(|i| line(i, "l")).collect();
        assert!(parse_maps_from(text.as_bytes()).is_err());
        // A line without an end, longer than any the kernel writes.
        let endless = "7f00-7f10 r-xp 0 08:01 5 /".to_string() + &"y".repeat(MAPS_LINE_BYTES);
        assert!(
            parse_maps_from(endless.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("line")
        );
    }

    #[test]
    fn a_pinned_handle_notices_a_reused_pid() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let procfs = Procfs::default().pinned();
        assert_eq!(procfs.same_process(pid), Ok(()));
        assert_eq!(procfs.same_process(pid), Ok(()));
        // Another start time under the same number, as after a reuse.
        if let Some(pins) = &procfs.pins {
            pins.lock().unwrap().insert(pid, 1);
        }
        assert_eq!(procfs.same_process(pid), Err(PidReused(pid)));
        // Unpinned handles do not check.
        assert_eq!(Procfs::default().same_process(pid), Ok(()));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn real_proc_self() {
        let procfs = Procfs::default();
        let me = std::process::id();
        let stat = procfs.stat(me).unwrap();
        assert_eq!(stat.pid, me);
        assert!(
            procfs
                .maps(me)
                .is_ok_and(|m| m.iter().any(MapEntry::is_exec))
        );
        assert!(procfs.pids().is_ok_and(|p| p.contains(&me)));
    }
}
