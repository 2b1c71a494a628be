//! `/v1/dump`: a core file of a process, streamed.
//!
//! For .NET the runtime writes the dump itself (the diagnostic port's
//! `CreateCoreDump`, which runs the runtime's own `createdump` as the
//! app's user) into the app's TMPDIR, under a name the agent picks. The
//! agent opens it inside the app's root without following symlinks,
//! checks that it is a regular file within the size limit, **unlinks it
//! at once** and streams it from the open descriptor: whatever happens
//! next (a disconnect, an error, the agent dying), nothing is left on the
//! app's disk. A failed dump's file is removed too.
//!
//! Every other process, and a .NET process whose diagnostic port does not
//! answer (diagnostics disabled, or a hung runtime), gets an ELF core file
//! taken with ptrace ([`native`]); the `X-Tracecar-Dump-Via` header says
//! which (`dotnet` or `ptrace`).
//!
//! Decisions:
//! - the seed's "run createdump by hand" route is replaced by the ptrace
//!   fallback: `createdump` lives in the app's filesystem, and the root
//!   agent does not execute binaries the app controls;
//! - before a `full` or `heap` dump the agent checks that the app's
//!   TMPDIR has room for the process's resident memory, and refuses with
//!   507 if not, instead of filling the app's disk.

pub mod dotnet;
pub mod native;
pub mod spec;

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::dotnet::port::{Port, PortError};
use crate::procfs::Procfs;

/// Takes the dump `spec` asks for: through the .NET runtime when the
/// process is .NET and its port answers, else with ptrace, written in
/// `dump_dir` (the agent's own).
pub fn take(procfs: &Procfs, spec: &spec::DumpSpec, dump_dir: &Path) -> Result<Dump, DumpError> {
    let port = match Port::find(procfs, spec.pid) {
        Ok(port) => port,
        Err(PortError::NotDotnet { .. }) => return native::take(procfs, spec, dump_dir),
        Err(e) => return Err(e.into()),
    };
    match dotnet::take(procfs, spec, &port) {
        Err(DumpError::Port(e @ (PortError::NoSocket { .. } | PortError::Dead { .. }))) => {
            tracing::warn!(pid = spec.pid, error = %e, "the diagnostic port does not answer; taking the dump with ptrace");
            let mut dump = native::take(procfs, spec, dump_dir)?;
            dump.fallback = Some(format!(
                "a .NET process whose diagnostic port does not answer ({e}): dumped with ptrace, an ELF core file for gdb or dotnet-dump"
            ));
            Ok(dump)
        }
        // The runtime answers but cannot write the dump: a single-file
        // app has no createdump beside it, and an image may leave it out.
        Err(e @ (DumpError::Failed { .. } | DumpError::Port(PortError::Ipc { .. }))) => {
            tracing::warn!(pid = spec.pid, error = %e, "the runtime did not write the dump; taking it with ptrace");
            let mut dump = native::take(procfs, spec, dump_dir)?;
            dump.fallback = Some(format!(
                "the .NET runtime did not write the dump ({e}; a single-file app has no createdump beside it): dumped with ptrace, an ELF core file for gdb or dotnet-dump"
            ));
            Ok(dump)
        }
        other => other,
    }
}

/// A finished dump, open and already unlinked.
#[derive(Debug)]
pub struct Dump {
    /// The file, to stream.
    pub file: std::fs::File,
    /// Its size.
    pub bytes: u64,
    /// How it was taken: `dotnet` (the runtime's own dump) or `ptrace`.
    pub via: &'static str,
    /// Why a .NET process was dumped with ptrace instead of by its
    /// runtime (the `x-tracecar-dump-fallback` header).
    pub fallback: Option<String>,
}

/// The size of the chunks a dump is sent in.
const CHUNK: usize = 1 << 20;

impl Dump {
    /// Sends the file in chunks of [`CHUNK`] until it ends or `send`
    /// answers `false` (the client is gone); see [`send_file`].
    pub fn send(mut self, pid: u32, send: impl FnMut(Vec<u8>) -> bool) {
        send_file(&mut self.file, &format!("the dump of pid {pid}"), send);
    }
}

/// Sends a file in chunks of [`CHUNK`] until it ends or `send` answers
/// `false` (the client is gone): dumps, and the artifacts rules keep. A
/// read error ends it early: the body is then short of its
/// `Content-Length`, so the client sees a broken transfer, not a short
/// file.
pub fn send_file(file: &mut std::fs::File, what: &str, mut send: impl FnMut(Vec<u8>) -> bool) {
    use std::io::Read as _;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !send(buf[..n].to_vec()) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(what, error = %e, "reading the file to send failed");
                break;
            }
        }
    }
}

/// Why a dump could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The process cannot be read.
    #[error("cannot read /proc/{pid}: {source}")]
    Proc {
        /// The process.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// The agent was asked to dump itself.
    #[error("pid {pid} is the agent itself")]
    Itself {
        /// The process.
        pid: u32,
    },
    /// ptrace could not stop or read the process.
    #[error("cannot take a core file of pid {pid} with ptrace: {why}")]
    Ptrace {
        /// The process.
        pid: u32,
        /// Why, with causes.
        why: String,
    },
    /// The agent's own dump directory cannot be used.
    #[error("cannot write the core file in {dir}: {source}")]
    Local {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The diagnostic port failed.
    #[error(transparent)]
    Port(#[from] crate::dotnet::port::PortError),
    /// The runtime said the dump failed.
    #[error("the runtime could not write the dump (HRESULT {hresult:#010x})")]
    Failed {
        /// Its answer.
        hresult: u32,
    },
    /// The app's TMPDIR cannot hold the dump.
    #[error(
        "{dir} in pid {pid}'s filesystem has {free_mb} MiB free; a {kind} dump needs about {need_mb} MiB"
    )]
    NoRoom {
        /// The process.
        pid: u32,
        /// The directory.
        dir: String,
        /// Free space.
        free_mb: u64,
        /// Estimated need.
        need_mb: u64,
        /// The dump kind.
        kind: &'static str,
    },
    /// The dump is larger than allowed.
    #[error("the dump is {mb} MiB, over the limit of {limit_mb} MiB; it was removed")]
    TooLarge {
        /// Its size.
        mb: u64,
        /// The limit.
        limit_mb: u64,
    },
    /// The file the runtime wrote is not what the agent expects.
    #[error("the dump at {path} cannot be read: {why}")]
    Unreadable {
        /// The path, as the process sees it.
        path: String,
        /// Why.
        why: String,
    },
}

/// Opens `name` in `dir` (a descriptor resolved inside the app's root)
/// through the resolver ([`crate::rootfs::Seen::beneath`]: never through
/// a symlink, a regular file, not on FUSE), and unlinks it whatever it
/// is, so that nothing stays behind.
fn take_file(
    dir: &OwnedFd,
    name: &str,
    pid: u32,
    path: &str,
) -> Result<(std::fs::File, u64), DumpError> {
    use std::os::fd::AsFd as _;
    let unreadable = |e: crate::rootfs::RootError| DumpError::Unreadable {
        path: path.to_string(),
        why: e.to_string(),
    };
    let found = crate::rootfs::Seen::beneath(dir.as_fd(), name, pid, path);
    let _ = rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty());
    let file = found.and_then(|f| f.file(u64::MAX)).map_err(unreadable)?;
    Ok((file.reader().map_err(unreadable)?, file.size()))
}
