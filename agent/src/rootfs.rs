//! The one resolver for "a path as process P sees it".
//!
//! The app containers can write anything into the directories they share
//! with the sidecar (`/tmp`, `/var/run/lttng`) and into their own root:
//! symlinks to the agent's files, FIFOs, sockets with our names, sparse
//! files of any size. The agent runs as root, so every path an app
//! controls is opened here, and only here:
//!
//! - **Resolved inside the process's root.** `openat2` with
//!   `RESOLVE_IN_ROOT` on a descriptor of `/proc/PID/root`: `..` and
//!   absolute symlinks stay inside the app's root instead of reaching the
//!   agent's (reading `/proc/PID/root/tmp/x` with `open(2)` follows an
//!   absolute symlink in the *agent's* root). `/proc` magic links are
//!   refused (`RESOLVE_NO_MAGICLINKS`).
//! - **The last component is not followed** unless the caller says
//!   symlinks are legitimate there ([`Follow::InRoot`], for binaries named
//!   by the user). Runtimes write perf maps and diagnostic sockets
//!   themselves: a symlink at those names is an attack, and is refused.
//! - **`O_PATH` first, type and size checked, then opened.** Nothing is
//!   opened for reading before `fstat` says it is a regular file, so a
//!   FIFO cannot block the agent and a device is never opened; a file over
//!   the caller's limit is refused before a byte is read, and reads stop at
//!   the size seen (a file that grows meanwhile is not followed).
//! - **Never on FUSE.** A read of a file whose filesystem is served by a
//!   FUSE daemon waits for that daemon, and no deadline can take the
//!   thread back from the kernel: such files are refused
//!   ([`RootError::Fuse`]). Binaries on a lazily pulled image (stargz) are
//!   then not read for symbols; perf maps and the .NET runtime's names
//!   still work.
//! - **Magic links are opened the same way.** `/proc/PID/exe` and
//!   `/proc/PID/map_files/…` name the inode a process uses, whatever its
//!   path says now ([`Procfs::open_link`]): `O_PATH` first, checked, then
//!   opened.
//! - **The descriptor is kept.** Kernel interfaces that take a path (the
//!   uprobe PMU, `connect(2)`) get `/proc/self/fd/N`, the inode that was
//!   checked, so the app cannot swap the file between the check and the
//!   use.
//!
//! The agent never creates, truncates or writes anything through this
//! module.

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use crate::procfs::{MapEntry, Procfs};

/// Whether a symlink at the last component may be followed (always
/// inside the process's root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Never: the file is one a runtime writes itself (perf maps,
    /// diagnostic sockets); a symlink there is refused.
    Never,
    /// Yes, resolved inside the process's root (binaries, where
    /// `libfoo.so -> libfoo.so.1.2` is normal).
    InRoot,
}

/// A path that could not be used as the process sees it.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// Nothing at the path.
    #[error("{path} does not exist in process {pid}'s filesystem")]
    Missing {
        /// The process.
        pid: u32,
        /// The path as the process sees it.
        path: String,
    },
    /// Something other than what was asked for (a symlink where none is
    /// followed, a FIFO where a file was expected, …).
    #[error("{path} in process {pid}'s filesystem is a {found}, not a {wanted}; refused")]
    WrongType {
        /// The process.
        pid: u32,
        /// The path as the process sees it.
        path: String,
        /// What it is.
        found: &'static str,
        /// What the caller needs.
        wanted: &'static str,
    },
    /// A regular file over the caller's limit.
    #[error(
        "{path} in process {pid}'s filesystem is {size} bytes, over the agent's limit of {limit} bytes; refused"
    )]
    TooLarge {
        /// The process.
        pid: u32,
        /// The path as the process sees it.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file owned by someone who should not have written it.
    #[error(
        "{path} in process {pid}'s filesystem belongs to uid {uid}, not to the process (uid {expected}) or root; refused"
    )]
    Owner {
        /// The process.
        pid: u32,
        /// The path as the process sees it.
        path: String,
        /// Its owner.
        uid: u32,
        /// The process's effective uid.
        expected: u32,
    },
    /// A file on a FUSE filesystem: reading it would wait for whoever
    /// serves it.
    #[error(
        "{path} in process {pid}'s filesystem is on FUSE; the agent does not read files a FUSE daemon serves (a read could wait for ever)"
    )]
    Fuse {
        /// The process.
        pid: u32,
        /// The path as the process sees it.
        path: String,
    },
    /// The process exited and its number names another one now.
    #[error("{path}: {source}")]
    Reused {
        /// The path as the process sees it.
        path: String,
        /// The PID.
        #[source]
        source: crate::procfs::PidReused,
    },
    /// The path escapes the root or crosses a magic link, or the
    /// process's root cannot be opened.
    #[error("{path} in process {pid}'s filesystem: {source}")]
    Io {
        /// The process.
        pid: u32,
        /// The path as the process sees it.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl RootError {
    /// An I/O error on `path` of `pid`: [`RootError::Missing`] for ENOENT.
    fn io(pid: u32, path: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::Missing {
                pid,
                path: path.to_owned(),
            }
        } else {
            Self::Io {
                pid,
                path: path.to_owned(),
                source,
            }
        }
    }

    /// Whether nothing is at the path (the common, harmless case).
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing { .. })
    }
}

/// A file opened as a process sees it: an `O_PATH` descriptor and what
/// `fstat` said about it.
#[derive(Debug)]
pub struct Seen {
    fd: OwnedFd,
    pid: u32,
    path: String,
    kind: FileType,
    size: u64,
    uid: u32,
    fuse: bool,
}

/// `FUSE_SUPER_MAGIC`, the `f_type` of every FUSE filesystem.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

impl Seen {
    /// Opens `name` in `dir`, a directory already resolved in process
    /// `pid`'s root ([`Procfs::open_seen`]), as the other opens do:
    /// `O_PATH`, the last component not followed, then checked; `path`
    /// names it in errors.
    pub fn beneath(
        dir: BorrowedFd<'_>,
        name: &str,
        pid: u32,
        path: &str,
    ) -> Result<Self, RootError> {
        let io = |source| RootError::io(pid, path, source);
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        Self::of(fd, pid, path).map_err(io)
    }

    /// What `fstat` and `fstatfs` say of `fd`.
    fn of(fd: OwnedFd, pid: u32, path: &str) -> Result<Self, std::io::Error> {
        let stat = rustix::fs::fstat(&fd)?;
        let fuse = rustix::fs::fstatfs(&fd).is_ok_and(|fs| fs.f_type == FUSE_SUPER_MAGIC);
        Ok(Self {
            fd,
            pid,
            path: path.to_owned(),
            kind: FileType::from_raw_mode(stat.st_mode),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            uid: stat.st_uid,
            fuse,
        })
    }
}

impl Procfs {
    /// The file behind `mapping`, a regular file of at most
    /// [`limits::BINARY_BYTES`]: through `/proc/PID/map_files` (the inode
    /// the process mapped, even deleted or replaced), else by its path as
    /// the process sees it (`map_files` needs CAP_SYS_ADMIN on some
    /// kernels).
    pub fn open_mapped(&self, pid: u32, mapping: &MapEntry) -> Result<Seen, RootError> {
        let link = format!("map_files/{:x}-{:x}", mapping.start, mapping.end);
        match self
            .open_link(pid, &link)
            .and_then(|seen| seen.file(limits::BINARY_BYTES))
        {
            Ok(seen) => Ok(seen),
            // What the inode is does not change with the path.
            Err(
                e @ (RootError::WrongType { .. }
                | RootError::TooLarge { .. }
                | RootError::Fuse { .. }),
            ) => Err(e),
            Err(_) => self
                .open_seen(pid, mapping.file_path().unwrap_or_default(), Follow::InRoot)?
                .file(limits::BINARY_BYTES),
        }
    }

    /// The executable of `pid` (`/proc/PID/exe`), a regular file of at
    /// most [`limits::BINARY_BYTES`].
    pub fn open_exe(&self, pid: u32) -> Result<Seen, RootError> {
        self.open_link(pid, "exe")?.file(limits::BINARY_BYTES)
    }

    /// Opens the file behind one of `/proc/PID`'s magic links (`exe`,
    /// `map_files/START-END`): the kernel resolves them to the inode the
    /// process uses, not through a path the app controls. `O_PATH` first,
    /// then checked as [`Procfs::open_seen`] does, so a FIFO or a device
    /// is never opened.
    pub fn open_link(&self, pid: u32, link: &str) -> Result<Seen, RootError> {
        let name = format!("/proc/{pid}/{link}");
        let io = |source| RootError::io(pid, &name, source);
        let fd = rustix::fs::open(
            self.path(pid, link),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        self.still_the_same(pid, &name)?;
        Seen::of(fd, pid, &name).map_err(io)
    }

    /// [`Procfs::same_process`], as the error of opening `path` of `pid`.
    fn still_the_same(&self, pid: u32, path: &str) -> Result<(), RootError> {
        self.same_process(pid).map_err(|source| RootError::Reused {
            path: path.to_owned(),
            source,
        })
    }

    /// Opens `path` as process `pid` sees it (see the module's rules).
    pub fn open_seen(&self, pid: u32, path: &str, follow: Follow) -> Result<Seen, RootError> {
        let io = |source| RootError::io(pid, path, source);
        let root = rustix::fs::open(
            self.path(pid, "root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        self.still_the_same(pid, path)?;
        let relative = Path::new(path).strip_prefix("/").unwrap_or(Path::new(path));
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let mut flags = OFlags::PATH | OFlags::CLOEXEC;
        if follow == Follow::Never {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = rustix::fs::openat2(
            &root,
            relative,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| io(e.into()))?;
        Seen::of(fd, pid, path).map_err(io)
    }
}

/// A human name for a file type.
pub fn type_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

impl Seen {
    /// The path as the process sees it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its size when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `O_PATH` descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The `O_PATH` descriptor, kept.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Its owner.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// `/proc/self/fd/N`: the checked inode, for kernel interfaces that
    /// take a path. Valid while `self` lives.
    pub fn via(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    fn expect(self, wanted: FileType) -> Result<Self, RootError> {
        if self.kind == wanted {
            Ok(self)
        } else {
            Err(RootError::WrongType {
                pid: self.pid,
                path: self.path,
                found: type_name(self.kind),
                wanted: type_name(wanted),
            })
        }
    }

    /// A regular file of at most `limit` bytes, not on FUSE.
    pub fn file(self, limit: u64) -> Result<Self, RootError> {
        let file = self.expect(FileType::RegularFile)?;
        if file.fuse {
            return Err(RootError::Fuse {
                pid: file.pid,
                path: file.path,
            });
        }
        if file.size > limit {
            return Err(RootError::TooLarge {
                pid: file.pid,
                path: file.path,
                size: file.size,
                limit,
            });
        }
        Ok(file)
    }

    /// A socket.
    pub fn socket(self) -> Result<Self, RootError> {
        self.expect(FileType::Socket)
    }

    /// A directory.
    pub fn directory(self) -> Result<Self, RootError> {
        self.expect(FileType::Directory)
    }

    /// Owned by `uid` or by root (what `perf` asks of a perf map: a file
    /// another user of the pod planted for this process is not read).
    pub fn owned_by(self, uid: u32) -> Result<Self, RootError> {
        if self.uid == uid || self.uid == 0 {
            Ok(self)
        } else {
            Err(RootError::Owner {
                pid: self.pid,
                path: self.path,
                uid: self.uid,
                expected: uid,
            })
        }
    }

    /// The file opened for reading: regular files only (checked by
    /// [`Seen::file`], which also refuses FUSE).
    pub fn reader(&self) -> Result<std::fs::File, RootError> {
        if self.kind != FileType::RegularFile || self.fuse {
            return Err(RootError::WrongType {
                pid: self.pid,
                path: self.path.clone(),
                found: if self.fuse {
                    "file on FUSE"
                } else {
                    type_name(self.kind)
                },
                wanted: type_name(FileType::RegularFile),
            });
        }
        // Reopening the O_PATH descriptor through /proc/self/fd opens the
        // same inode; O_NONBLOCK and O_NOCTTY in case it was replaced by
        // something that is not a file (it cannot be: the inode is fixed).
        let opened = rustix::fs::open(
            self.via(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootError::Io {
            pid: self.pid,
            path: self.path.clone(),
            source: e.into(),
        })?;
        Ok(std::fs::File::from(opened))
    }

    /// Bytes `from..` of a regular file, up to the size it had when it
    /// was opened (checked by [`Seen::file`]), at most `most` of them.
    pub fn read_range(&self, from: u64, most: u64) -> Result<Vec<u8>, RootError> {
        use std::io::{Read as _, Seek as _};
        let io = |source: std::io::Error| RootError::Io {
            pid: self.pid,
            path: self.path.clone(),
            source,
        };
        let mut file = self.reader()?;
        let want = self.size.saturating_sub(from).min(most);
        let mut data = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        file.seek(std::io::SeekFrom::Start(from)).map_err(io)?;
        file.take(want).read_to_end(&mut data).map_err(io)?;
        Ok(data)
    }
}

/// Limits on what the agent reads from an app's filesystem.
pub mod limits {
    /// A perf map: 100,000 JIT methods take about 10 MiB; a runtime that
    /// ran for weeks may write far more. It is read a chunk at a time and
    /// only until its index is full ([`crate::runtime::perfmap::INDEX_BYTES`]),
    /// so this bounds only what is opened.
    pub const PERF_MAP_BYTES: u64 = 4 << 30;
    /// An ELF file looked into for symbols, unwind tables or build IDs:
    /// only its headers and the sections asked for are read
    /// ([`crate::elf`]), so this bounds only what is opened.
    pub const BINARY_BYTES: u64 = 4 << 30;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (Procfs, u32) {
        (Procfs::default(), std::process::id())
    }

    #[test]
    fn regular_files_are_read_up_to_the_size_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, b"hello world").unwrap();
        let (procfs, pid) = me();
        let seen = procfs
            .open_seen(pid, path.to_str().unwrap(), Follow::Never)
            .unwrap()
            .file(100)
            .unwrap();
        assert_eq!(seen.read_range(0, 100).unwrap(), b"hello world");
        assert_eq!(seen.read_range(6, 100).unwrap(), b"world");
        assert_eq!(seen.read_range(6, 2).unwrap(), b"wo");
        // Growth after the open is not read.
        std::fs::write(&path, b"hello world, and more").unwrap();
        assert_eq!(seen.read_range(0, 100).unwrap(), b"hello world");
        let small = procfs
            .open_seen(pid, path.to_str().unwrap(), Follow::Never)
            .unwrap()
            .file(4);
        assert!(matches!(small, Err(RootError::TooLarge { limit: 4, .. })));
    }

    #[test]
    fn symlinks_fifos_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (procfs, pid) = me();
        let open = |p: &Path, follow| procfs.open_seen(pid, p.to_str().unwrap(), follow);
        let err = open(&link, Follow::Never).unwrap().file(100).unwrap_err();
        assert!(
            err.to_string().contains("symbolic link"),
            "{err}: a symlink is refused where none is followed"
        );
        assert_eq!(
            open(&link, Follow::InRoot)
                .unwrap()
                .file(100)
                .unwrap()
                .read_range(0, 100)
                .unwrap(),
            b"secret"
        );
        let err = open(&fifo, Follow::Never).unwrap().file(100).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(
            open(&dir.path().join("none"), Follow::Never)
                .unwrap_err()
                .is_missing()
        );
        let dir_seen = open(dir.path(), Follow::Never).unwrap();
        assert!(dir_seen.directory().is_ok());
    }

    #[test]
    fn owners_other_than_the_process_or_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, b"x").unwrap();
        let (procfs, pid) = me();
        let open = || {
            procfs
                .open_seen(pid, path.to_str().unwrap(), Follow::Never)
                .unwrap()
        };
        let mine = open().uid();
        assert!(open().owned_by(mine).is_ok());
        // Root's files are accepted from any process; another user's only
        // from that user.
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
            assert!(open().owned_by(4242).is_ok());
            assert!(matches!(
                open().owned_by(1000),
                Err(RootError::Owner { uid: 4242, .. })
            ));
        }
    }
}
