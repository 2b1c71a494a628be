//! An ELF core file of any process, taken with ptrace (the `elfcore`
//! crate: it seizes and interrupts every thread, reads the registers,
//! the auxiliary vector and the mappings, and writes the notes gdb and
//! dotnet-dump read: `NT_PRSTATUS` per thread, `NT_PRPSINFO`, `NT_AUXV`,
//! `NT_FILE`).
//!
//! Decisions:
//! - memory is read through `/proc/PID/mem`, and the core file is written
//!   to an unnamed file (`O_TMPFILE`) in the agent's own dump directory,
//!   never in the app's filesystem: there is no name to leave behind on
//!   any path, not even if the agent is killed mid-dump. The process is
//!   stopped only while that local file is written, not while a slow
//!   client downloads it;
//! - the work runs on a thread of its own that exits afterwards: the
//!   kernel detaches every tracee when its tracer thread exits, so a
//!   failure half way through (a thread that could not be seized, a race
//!   with a new thread) never leaves the app stopped;
//! - what is included, by `type`: `full` has every readable mapping;
//!   `heap` (the default), `triage` and `mini` have what the kernel's
//!   default `coredump_filter` gives (anonymous and writable memory, and
//!   the first page of each mapped ELF file so that gdb can match build
//!   ids); their read-only code is then read by gdb from the binaries;
//! - the size is computed from the mappings before the process is
//!   stopped, and over `limit_mb` the answer is 413 without stopping it.

use std::io::{Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use elfcore::{
    CoreDumpBuilder, Elf64_Auxv, MappedFile, ProcessInfoSource, ProcessView, ReadProcessMemory,
    VaProtection, VaRegion,
};

use super::spec::{DumpSpec, kind_name};
use super::{Dump, DumpError};
use crate::dotnet::ipc::DumpType;
use crate::procfs::Procfs;

/// How often seizing is retried when threads come and go meanwhile.
const SEIZE_ATTEMPTS: usize = 5;

/// The page size assumed for the ELF header pages of mapped files.
const PAGE: u64 = 4096;

/// Bytes of ELF and program headers and notes, per thread and in all,
/// added to the memory when a dump's size is estimated.
const NOTES_PER_THREAD: u64 = 4096;
const NOTES_FIXED: u64 = 1 << 20;

/// One mapping, as the region filter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Start address.
    pub begin: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Offset in the mapped file.
    pub offset: u64,
    /// Writable.
    pub write: bool,
    /// Has pages of its own (smaps' `Anonymous:` is not 0): a private
    /// file mapping written to, like the RELRO pages ld.so relocated.
    pub anonymous: bool,
    /// The mapped file, if any.
    pub file: Option<String>,
}

/// The part of `region` a dump of `kind` keeps, if any (see the module
/// doc): everything for `full`; otherwise anonymous and writable memory,
/// file mappings with pages written to (as the kernel keeps a mapping
/// with an `anon_vma`), and the first page of a file mapped from offset 0.
pub fn keep(region: &Region, kind: DumpType) -> Option<(u64, u64)> {
    if region.end <= region.begin {
        return None;
    }
    if kind == DumpType::Full || region.file.is_none() || region.write || region.anonymous {
        return Some((region.begin, region.end));
    }
    (region.offset == 0).then(|| (region.begin, region.end.min(region.begin + PAGE)))
}

/// The memory a dump of `kind` holds for these mappings, in bytes.
pub fn memory_bytes(regions: &[Region], kind: DumpType) -> u64 {
    regions
        .iter()
        .filter_map(|r| keep(r, kind))
        .map(|(b, e)| e - b)
        .sum()
}

/// Parses `/proc/PID/smaps` into the mappings elfcore dumps: readable
/// or executable ones, not `[vvar]`/`[vsyscall]`/`[vdso]`, not devices.
/// (`/proc/PID/maps` lines parse too, without the `Anonymous:` counts.)
pub fn parse_smaps(text: &str) -> Vec<Region> {
    let mut regions = Vec::new();
    // Whether the mapping being read is one elfcore dumps.
    let mut current: Option<Region> = None;
    let mut dumped = false;
    for line in text.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            if let Some(region) = current.as_mut() {
                region.anonymous = kb.trim().trim_end_matches("kB").trim() != "0";
            }
            continue;
        }
        let Some(region) = parse_header(line) else {
            continue;
        };
        if let Some(previous) = current.take().filter(|_| dumped) {
            regions.push(previous);
        }
        dumped = region.1;
        current = Some(region.0);
    }
    if let Some(last) = current.filter(|_| dumped) {
        regions.push(last);
    }
    regions
}

/// A mapping's header line, and whether elfcore dumps it.
fn parse_header(line: &str) -> Option<(Region, bool)> {
    let mut parts = line.split_whitespace();
    let (b, e) = parts.next()?.split_once('-')?;
    let (begin, end) = (
        u64::from_str_radix(b, 16).ok()?,
        u64::from_str_radix(e, 16).ok()?,
    );
    let perms = parts.next()?.as_bytes();
    if perms.len() != 4 {
        return None;
    }
    let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
    let _dev = parts.next()?;
    let _inode = parts.next()?;
    let name = parts.collect::<Vec<_>>().join(" ");
    let dumped = (perms[0] == b'r' || perms[2] == b'x')
        && !matches!(
            name.as_str(),
            "[vvar]" | "[vvar_vclock]" | "[vsyscall]" | "[vdso]"
        )
        && !name.starts_with("/dev/");
    let region = Region {
        begin,
        end,
        offset,
        write: perms[1] == b'w',
        anonymous: false,
        file: name.starts_with('/').then_some(name),
    };
    Some((region, dumped))
}

/// Estimated size of the core file: memory plus headers and notes.
pub fn estimate_bytes(regions: &[Region], threads: u64, kind: DumpType) -> u64 {
    memory_bytes(regions, kind) + NOTES_FIXED + threads * NOTES_PER_THREAD
}

/// A `ProcessView` whose regions are cut down to what `kind` keeps.
struct Filtered {
    view: ProcessView,
    regions: Vec<VaRegion>,
}

impl Filtered {
    /// `written`: the start addresses of mappings with pages of their own.
    fn new(view: ProcessView, kind: DumpType, written: &std::collections::HashSet<u64>) -> Self {
        let regions = view
            .va_regions()
            .iter()
            .filter_map(|r| {
                let region = Region {
                    begin: r.begin,
                    end: r.end,
                    offset: r.offset,
                    write: r.protection.write,
                    anonymous: written.contains(&r.begin),
                    file: r.mapped_file_name.clone(),
                };
                let (begin, end) = keep(&region, kind)?;
                Some(VaRegion {
                    begin,
                    end,
                    offset: r.offset,
                    protection: VaProtection {
                        is_private: r.protection.is_private,
                        read: r.protection.read,
                        write: r.protection.write,
                        execute: r.protection.execute,
                    },
                    mapped_file_name: r.mapped_file_name.clone(),
                })
            })
            .collect();
        Self { view, regions }
    }
}

impl ProcessInfoSource for Filtered {
    fn pid(&self) -> i32 {
        self.view.pid()
    }
    fn threads(&self) -> &[elfcore::ThreadView] {
        self.view.threads()
    }
    fn va_regions(&self) -> &[VaRegion] {
        &self.regions
    }
    fn mapped_files(&self) -> Option<&[MappedFile]> {
        self.view.mapped_files()
    }
    fn aux_vector(&self) -> Option<&[Elf64_Auxv]> {
        self.view.aux_vector()
    }
    fn page_size(&self) -> usize {
        self.view.page_size()
    }
}

/// Reads the stopped process's memory through `/proc/PID/mem`.
struct Memory(std::fs::File);

impl ReadProcessMemory for Memory {
    fn read_process_memory(
        &mut self,
        base: usize,
        buf: &mut [u8],
    ) -> Result<usize, elfcore::CoreError> {
        self.0
            .read_at(buf, base as u64)
            .map_err(elfcore::CoreError::IoError)
    }
}

/// A writer that refuses to grow past `limit` bytes.
struct Capped<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "over limit_mb",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The agent's private directory for core files being written.
fn open_dump_dir(dir: &Path) -> Result<(), DumpError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let local = |source| DumpError::Local {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(local)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(local)
}

/// Takes an ELF core file of `spec.pid` with ptrace, written to an
/// unnamed file in `dump_dir`.
pub fn take(procfs: &Procfs, spec: &DumpSpec, dump_dir: &Path) -> Result<Dump, DumpError> {
    let pid = spec.pid;
    if pid == std::process::id() {
        return Err(DumpError::Itself { pid });
    }
    let proc_err = |source| DumpError::Proc { pid, source };
    let smaps = procfs.smaps(pid).map_err(proc_err)?;
    let threads = std::fs::read_dir(procfs.path(pid, "task"))
        .map_err(proc_err)?
        .count() as u64;
    let regions = parse_smaps(&smaps);
    let estimate = estimate_bytes(&regions, threads, spec.kind);
    let limit = u64::from(spec.limit_mb) << 20;
    if estimate > limit {
        return Err(DumpError::TooLarge {
            mb: estimate >> 20,
            limit_mb: u64::from(spec.limit_mb),
        });
    }
    open_dump_dir(dump_dir)?;
    let local = |source| DumpError::Local {
        dir: dump_dir.display().to_string(),
        source,
    };
    let fs = rustix::fs::statvfs(dump_dir).map_err(|e| local(e.into()))?;
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if free < estimate {
        return Err(DumpError::NoRoom {
            pid,
            dir: dump_dir.display().to_string(),
            free_mb: free >> 20,
            need_mb: estimate >> 20,
            kind: kind_name(spec.kind),
        });
    }
    let fd = rustix::fs::open(
        dump_dir,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| local(e.into()))?;
    let file = std::fs::File::from(fd);
    let memory = std::fs::File::open(procfs.path(pid, "mem")).map_err(proc_err)?;
    let kind = spec.kind;
    let target = file.try_clone().map_err(local)?;
    // A thread of its own: its exit detaches whatever it attached.
    let written = std::thread::Builder::new()
        .name(format!("dump-{pid}"))
        .spawn({
            let dir = dump_dir.display().to_string();
            move || write_core(pid, kind, Memory(memory), target, limit, &regions, dir)
        })
        .map_err(local)?
        .join()
        .map_err(|_| DumpError::Ptrace {
            pid,
            why: "the dump thread panicked".into(),
        })??;
    let mut file = file;
    file.rewind().map_err(local)?;
    tracing::info!(
        pid,
        bytes = written,
        kind = kind_name(kind),
        "core file taken with ptrace"
    );
    Ok(Dump {
        file,
        bytes: written,
        via: "ptrace",
        fallback: None,
    })
}

fn write_core(
    pid: u32,
    kind: DumpType,
    memory: Memory,
    file: std::fs::File,
    limit: u64,
    regions: &[Region],
    dir: String,
) -> Result<u64, DumpError> {
    let raw = i32::try_from(pid).map_err(|_| DumpError::Ptrace {
        pid,
        why: "pid out of range".into(),
    })?;
    let mut attempt = 0;
    let view = loop {
        attempt += 1;
        match ProcessView::new(raw) {
            Ok(view) => break view,
            Err(elfcore::CoreError::RaceTryAgain) if attempt < SEIZE_ATTEMPTS => {}
            Err(e) => return Err(ptrace_error(pid, &e)),
        }
    };
    // Read before the stop; a mapping made since then is kept whole if
    // anonymous or writable, and is cut to its header page otherwise.
    let written = regions
        .iter()
        .filter(|r| r.anonymous)
        .map(|r| r.begin)
        .collect();
    let source = Filtered::new(view, kind, &written);
    let mut out = Capped {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        written: 0,
        limit,
    };
    let result = CoreDumpBuilder::from_source(source, memory).write(&mut out);
    // The source (and with it the ptrace attachment) is gone here.
    match result {
        Ok(_) => {
            out.flush()
                .map_err(|source| DumpError::Local { dir, source })?;
            Ok(out.written)
        }
        Err(elfcore::CoreError::IoError(e)) if e.kind() == std::io::ErrorKind::FileTooLarge => {
            Err(DumpError::TooLarge {
                mb: out.written >> 20,
                limit_mb: limit >> 20,
            })
        }
        Err(e) => Err(ptrace_error(pid, &e)),
    }
}

/// elfcore's error with its causes, as one line.
fn ptrace_error(pid: u32, e: &elfcore::CoreError) -> DumpError {
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        why.push_str(": ");
        why.push_str(&cause.to_string());
        source = cause.source();
    }
    if let elfcore::CoreError::NixError(errno) = e {
        why = format!("{why} ({errno:?})");
    }
    DumpError::Ptrace { pid, why }
}

/// Where core files are written while they are taken, by default.
pub const DEFAULT_DUMP_DIR: &str = "/var/lib/tracecar/dumps";

/// [`DEFAULT_DUMP_DIR`] as a path.
pub fn default_dump_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DUMP_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c000-55d0d000 r--p 00000000 08:01 123 /usr/bin/app
Size:                  4 kB
Anonymous:             0 kB
55d0d000-55d0f000 r-xp 00001000 08:01 123 /usr/bin/app
Anonymous:             0 kB
VmFlags: rd ex mr mw me
55d0f000-55d10000 r--p 00002000 08:01 123 /usr/bin/app
Anonymous:             4 kB
55d10000-55d11000 rw-p 00003000 08:01 123 /usr/bin/app
55d11000-55d32000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 08:01 9 /usr/lib/libc.so.6
7f0000200000-7f0000201000 ---p 00000000 00:00 0
7f0000300000-7f0000302000 rw-s 00000000 00:01 77 /dev/zero (deleted)
7ffd0000-7ffd2000 rw-p 00000000 00:00 0 [stack]
7ffd3000-7ffd4000 r--p 00000000 00:00 0 [vvar]
7ffd4000-7ffd6000 r-xp 00000000 00:00 0 [vdso]
7ffd8000-7ffd9000 r--p 00000000 08:01 55 /tmp/a file with spaces
";

    #[test]
    fn smaps_parse_into_dumpable_regions() {
        let r = parse_smaps(MAPS);
        let names: Vec<Option<&str>> = r.iter().map(|r| r.file.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("/usr/bin/app"),
                Some("/usr/bin/app"),
                Some("/usr/bin/app"),
                Some("/usr/bin/app"),
                None,
                Some("/usr/lib/libc.so.6"),
                None,
                Some("/tmp/a file with spaces"),
            ]
        );
        assert_eq!(r[1].offset, 0x1000);
        assert!(r[3].write && !r[1].write);
        assert!(r[2].anonymous && !r[1].anonymous && !r[0].anonymous);
    }

    #[test]
    fn full_keeps_everything_and_heap_what_the_kernel_keeps() {
        let r = parse_smaps(MAPS);
        let all: u64 = r.iter().map(|r| r.end - r.begin).sum();
        assert_eq!(memory_bytes(&r, DumpType::Full), all);
        // app header page + relocated RELRO + app data + heap + libc
        // header page + stack + the header page of the spaced file.
        let expected = 0x1000 + 0x1000 + 0x1000 + 0x21000 + 0x1000 + 0x2000 + 0x1000;
        assert_eq!(memory_bytes(&r, DumpType::Heap), expected);
        assert_eq!(memory_bytes(&r, DumpType::Mini), expected);
        // Code mapped from a non-zero offset is left to the binary.
        assert_eq!(keep(&r[1], DumpType::Heap), None);
        assert_eq!(
            keep(&r[5], DumpType::Triage),
            Some((0x7f0000000000, 0x7f0000001000))
        );
        assert!(estimate_bytes(&r, 3, DumpType::Full) > all);
    }
}
