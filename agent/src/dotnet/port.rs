//! The diagnostic port of a .NET process: where its socket is, opening it
//! safely, and one request/answer over it. The thin socket layer under the
//! pure [`super::ipc`] framing.
//!
//! The runtime listens on `$TMPDIR/dotnet-diagnostic-PID-KEY-socket`
//! (`/tmp` without TMPDIR), where PID is its PID in its own namespace and
//! KEY its start time in clock ticks (field 22 of `/proc/PID/stat`). The
//! agent computes that exact name instead of listing the directory, opens
//! it with [`Procfs::open_in_root`] (resolved inside the app's root, no
//! symlink followed) as `O_PATH`, checks that it is a socket, and connects
//! through `/proc/self/fd/N`, so the app cannot point the agent at another
//! socket, and a long TMPDIR does not hit the 108-byte `sun_path` limit.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use tracecar_api::dotnet::DotnetInfo;

use super::ipc::{self, Command, IpcError};
use crate::procfs::{MapEntry, Procfs};

/// How long a request may wait for its answer (a dump waits longer: see
/// [`Port::request`]).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may wait: a socket whose listener never accepts
/// (its backlog full) blocks `connect(2)` until it does.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the Unix socket at `path`, waiting at most `timeout` for
/// the listener to take the connection (`SO_SNDTIMEO` bounds the wait of a
/// Unix `connect(2)` on a full backlog; it then fails with `EAGAIN`,
/// reported here as a timeout).
pub fn connect_within(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, sockopt};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_timeout(
        &fd,
        sockopt::Timeout::Send,
        Some(timeout.max(Duration::from_millis(1))),
    )?;
    match rustix::net::connect(&fd, &SocketAddrUnix::new(path)?) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(rustix::io::Errno::AGAIN) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the listener took no connection within {timeout:?} (its backlog is full: nothing accepts)"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Why the diagnostic port of a process cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The process does not run CoreCLR.
    #[error(
        "pid {pid} is not a .NET process (no libcoreclr.so mapped, and its executable does not link CoreCLR)"
    )]
    NotDotnet {
        /// The process.
        pid: u32,
    },
    /// The process's files cannot be read.
    #[error("cannot read /proc/{pid}: {source}")]
    Proc {
        /// The process.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// No socket at the runtime's path, or something the agent refuses
    /// to use there (a symlink, a regular file, a FIFO: anything in the
    /// app's TMPDIR can have the socket's name).
    #[error("pid {pid} has no diagnostic socket the agent uses: {source}")]
    NoSocket {
        /// The process.
        pid: u32,
        /// The path, as the process sees it.
        path: String,
        /// Why.
        source: crate::rootfs::RootError,
    },
    /// The socket does not answer.
    #[error("pid {pid}'s diagnostic socket {path} does not answer: {source}")]
    Dead {
        /// The process.
        pid: u32,
        /// The path, as the process sees it.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime answered with an error, or not in the protocol.
    #[error("pid {pid}'s runtime: {source}")]
    Ipc {
        /// The process.
        pid: u32,
        /// What it answered.
        source: IpcError,
    },
}

/// A .NET process's diagnostic port.
#[derive(Debug, Clone)]
pub struct Port {
    /// The process (in the agent's PID namespace).
    pub pid: u32,
    /// The socket's path as the process sees it.
    pub path: String,
}

/// Whether `maps` show CoreCLR.
pub fn is_dotnet(maps: &[MapEntry]) -> bool {
    maps.iter().any(|m| {
        m.path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .is_some_and(|f| f.starts_with("libcoreclr.so"))
    })
}

/// What CoreCLR exports wherever it is linked: `libcoreclr.so`, or the
/// executable of a single-file app, which maps no `libcoreclr.so`
/// (`coreclr_initialize` for hosts, `g_dacTable` for the DAC, and
/// `DotNetRuntimeInfo`, which the single-file host exports for debuggers).
pub const CORECLR_EXPORTS: &[&str] = &["coreclr_initialize", "g_dacTable", "DotNetRuntimeInfo"];

/// Whether an ELF file links CoreCLR: it exports its symbols (only the
/// dynamic symbol table is read). An app could export these names without
/// being .NET; it then only gets IPC requests it does not answer, each
/// with its deadline.
pub fn links_coreclr(elf: &mut crate::elf::Elf) -> bool {
    elf.exports_any(CORECLR_EXPORTS).unwrap_or(false)
}

/// Whether `pid` runs CoreCLR: `libcoreclr.so` mapped, or linked into its
/// executable (a single-file app).
pub fn runs_coreclr(procfs: &Procfs, pid: u32, maps: &[MapEntry]) -> bool {
    is_dotnet(maps)
        || crate::elf::Elf::open_exe(procfs, pid).is_ok_and(|mut elf| links_coreclr(&mut elf))
}

/// The runtime's version from the directory of the mapped `libcoreclr.so`
/// (`…/shared/Microsoft.NETCore.App/3.1.23/libcoreclr.so`); `None` for a
/// self-contained app, whose directory is the app's.
pub fn runtime_version(maps: &[MapEntry]) -> Option<String> {
    maps.iter().find_map(|m| {
        let path = Path::new(crate::procfs::without_deleted(m.path.as_deref()?));
        if path.file_name()? != "libcoreclr.so" {
            return None;
        }
        let dir = path.parent()?;
        let framework = dir.parent()?.file_name()?.to_str()?;
        let version = dir.file_name()?.to_str()?;
        (framework == "Microsoft.NETCore.App" && version.starts_with(|c: char| c.is_ascii_digit()))
            .then(|| version.to_string())
    })
}

/// The socket's path, as the process sees it: its TMPDIR (or `/tmp`), its
/// own PID and its start time.
pub fn socket_path(tmpdir: Option<&str>, inner_pid: u32, start_time: u64) -> String {
    let dir = tmpdir
        .filter(|d| d.starts_with('/'))
        .unwrap_or("/tmp")
        .trim_end_matches('/');
    format!("{dir}/dotnet-diagnostic-{inner_pid}-{start_time}-socket")
}

impl Port {
    /// The port of `pid`, which must be a .NET process.
    pub fn find(procfs: &Procfs, pid: u32) -> Result<Self, PortError> {
        let proc_error = |source| PortError::Proc { pid, source };
        let maps = procfs.maps(pid).map_err(proc_error)?;
        if !runs_coreclr(procfs, pid, &maps) {
            return Err(PortError::NotDotnet { pid });
        }
        Self::of(procfs, pid)
    }

    /// The port's path for `pid`, without checking the runtime.
    pub fn of(procfs: &Procfs, pid: u32) -> Result<Self, PortError> {
        let proc_error = |source| PortError::Proc { pid, source };
        let stat = procfs.stat(pid).map_err(proc_error)?;
        let inner = procfs
            .status(pid)
            .map_err(proc_error)?
            .innermost_pid()
            .unwrap_or(pid);
        let environ = procfs.environ(pid).unwrap_or_default();
        let tmpdir = environ
            .iter()
            .find(|(k, _)| k == "TMPDIR")
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty());
        Ok(Self {
            pid,
            path: socket_path(tmpdir, inner, stat.start_time),
        })
    }

    /// Opens the socket file as the process sees it
    /// ([`crate::rootfs`]): never through a symlink, and only a socket.
    fn open(&self, procfs: &Procfs) -> Result<crate::rootfs::Seen, PortError> {
        procfs
            .open_seen(self.pid, &self.path, crate::rootfs::Follow::Never)
            .and_then(crate::rootfs::Seen::socket)
            .map_err(|source| PortError::NoSocket {
                pid: self.pid,
                path: self.path.clone(),
                source,
            })
    }

    /// A connection to the runtime.
    ///
    /// The runtime makes its socket `srw-------` for the app's user; an
    /// agent without CAP_DAC_OVERRIDE (the minimal profile) is refused,
    /// and connects again as that user, on this thread only
    /// ([`crate::sys::as_user`]).
    pub fn connect(&self, procfs: &Procfs) -> Result<UnixStream, PortError> {
        self.connect_within(procfs, CONNECT_TIMEOUT)
    }

    /// [`Port::connect`], waiting at most `timeout` for the runtime to
    /// take the connection.
    pub fn connect_within(
        &self,
        procfs: &Procfs,
        timeout: Duration,
    ) -> Result<UnixStream, PortError> {
        let socket = self.open(procfs)?;
        let via = socket.via();
        let stream = match connect_within(&via, timeout) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let stat = rustix::fs::fstat(socket.fd()).map_err(|e| self.dead(e.into()))?;
                match crate::sys::as_user(stat.st_uid, stat.st_gid, || connect_within(&via, timeout)) {
                    Ok(connected) => connected,
                    Err(errno) => Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "{e}; connecting as the socket's owner (uid {}) was refused too ({errno}): the agent needs CAP_SETUID and CAP_SETGID (the minimal profile has them), or CAP_DAC_OVERRIDE",
                            stat.st_uid
                        ),
                    )),
                }
            }
            other => other,
        }
        .map_err(|source| self.dead(source))?;
        drop(socket);
        Ok(stream)
    }

    fn dead(&self, source: std::io::Error) -> PortError {
        PortError::Dead {
            pid: self.pid,
            path: self.path.clone(),
            source,
        }
    }

    fn ipc(&self, source: IpcError) -> PortError {
        PortError::Ipc {
            pid: self.pid,
            source,
        }
    }

    /// Sends `command` on a new connection and reads the answer's payload
    /// (waiting at most `timeout`); the connection stays open for what
    /// follows (the nettrace stream of `CollectTracing`).
    pub fn request(
        &self,
        procfs: &Procfs,
        command: &Command,
        timeout: Duration,
    ) -> Result<(UnixStream, Vec<u8>), PortError> {
        let bytes = ipc::encode(command).map_err(|e| self.ipc(e))?;
        let mut stream = self.connect_within(procfs, CONNECT_TIMEOUT.min(timeout))?;
        stream
            .set_write_timeout(Some(ANSWER_TIMEOUT.min(timeout)))
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .map_err(|e| self.dead(e))?;
        stream.write_all(&bytes).map_err(|e| self.dead(e))?;
        let mut header = [0u8; ipc::HEADER_LEN];
        stream.read_exact(&mut header).map_err(|e| self.dead(e))?;
        let header = ipc::parse_header(&header).map_err(|e| self.ipc(e))?;
        let mut payload = vec![0u8; header.payload_len()];
        stream.read_exact(&mut payload).map_err(|e| self.dead(e))?;
        let payload = ipc::ok_payload(header, &payload)
            .map_err(|e| self.ipc(e))?
            .to_vec();
        Ok((stream, payload))
    }

    /// Stops an EventPipe session (on its own connection), waiting at
    /// most `timeout` for the answer, which comes once the runtime has
    /// written the rest of the session's stream.
    pub fn stop_within(
        &self,
        procfs: &Procfs,
        session: u64,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.request(procfs, &Command::StopTracing(session), timeout)
            .map(drop)
    }

    /// `ProcessInfo2`, else `ProcessInfo`; `Ok(None)` when the runtime
    /// knows neither (.NET Core 3.1), which still proves it answers.
    pub fn process_info(
        &self,
        procfs: &Procfs,
        timeout: Duration,
    ) -> Result<Option<ipc::ProcessInfo>, PortError> {
        for (command, two) in [(Command::ProcessInfo2, true), (Command::ProcessInfo, false)] {
            match self.request(procfs, &command, timeout) {
                Ok((_, payload)) => {
                    return ipc::parse_process_info(&payload, two)
                        .map(Some)
                        .map_err(|e| self.ipc(e));
                }
                Err(PortError::Ipc {
                    source:
                        IpcError::Runtime {
                            hresult: ipc::E_UNKNOWN_COMMAND,
                        },
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// How long `/v1/processes` waits for one runtime's answer.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/v1/processes` says about a .NET process: its runtime version,
/// its diagnostic socket and whether it answers, and whether perf maps
/// are on. The runtime is asked only until `deadline` (the listing's),
/// each question for at most a second.
pub fn describe(
    procfs: &Procfs,
    pid: u32,
    maps: &[MapEntry],
    deadline: std::time::Instant,
) -> DotnetInfo {
    let environ = procfs.environ(pid).unwrap_or_default();
    let perf_map_enabled = environ.iter().any(|(k, v)| {
        (k == "DOTNET_PerfMapEnabled" || k == "COMPlus_PerfMapEnabled") && !v.is_empty() && v != "0"
    });
    let mut info = DotnetInfo {
        runtime_version: runtime_version(maps),
        diagnostic_socket: String::new(),
        diagnostic_port: false,
        diagnostic_error: None,
        perf_map_enabled,
        assembly: None,
    };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match Port::of(procfs, pid) {
        Ok(port) if left.is_zero() => {
            info.diagnostic_socket = port.path.clone();
            info.diagnostic_error = Some(format!(
                "not asked: the listing's time for asking runtimes ran out (a runtime that does not answer costs up to {DESCRIBE_TIMEOUT:?}); GET /v1/processes again, or ask /v1/dotnet/* for pid {pid}"
            ));
        }
        Ok(port) => {
            info.diagnostic_socket = port.path.clone();
            match port.process_info(procfs, DESCRIBE_TIMEOUT.min(left)) {
                Ok(answer) => {
                    info.diagnostic_port = true;
                    if let Some(answer) = answer {
                        info.runtime_version = answer.runtime_version.or(info.runtime_version);
                        info.assembly = answer.assembly;
                    }
                }
                Err(e) => info.diagnostic_error = Some(e.to_string()),
            }
        }
        Err(e) => info.diagnostic_error = Some(e.to_string()),
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::parse_maps;

    #[test]
    fn socket_names_follow_the_runtime() {
        assert_eq!(
            socket_path(None, 14398, 951921),
            "/tmp/dotnet-diagnostic-14398-951921-socket"
        );
        assert_eq!(
            socket_path(Some("/var/tmp/"), 1, 2),
            "/var/tmp/dotnet-diagnostic-1-2-socket"
        );
        // A relative TMPDIR is not what the runtime would resolve; /tmp.
        assert_eq!(
            socket_path(Some("tmp"), 1, 2),
            "/tmp/dotnet-diagnostic-1-2-socket"
        );
    }

    #[test]
    fn runtime_and_version_from_maps() {
        let shared = parse_maps(
            "7f00-7f10 r-xp 0 08:01 5 /usr/share/dotnet/shared/Microsoft.NETCore.App/3.1.23/libcoreclr.so\n",
        );
        assert!(is_dotnet(&shared));
        assert_eq!(runtime_version(&shared).as_deref(), Some("3.1.23"));
        let contained = parse_maps("7f00-7f10 r-xp 0 08:01 5 /app/libcoreclr.so\n");
        assert!(is_dotnet(&contained));
        assert_eq!(runtime_version(&contained), None);
        assert!(!is_dotnet(&parse_maps(
            "7f00-7f10 r-xp 0 08:01 5 /usr/lib/libc.so.6\n"
        )));
    }
}
