//! A .NET process's dump, written by its runtime (`CreateCoreDump`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::spec::{DumpSpec, kind_name};
use super::{Dump, DumpError, take_file};
use crate::dotnet::ipc::{self, Command, DumpType};
use crate::dotnet::port::{Port, PortError};
use crate::procfs::Procfs;

/// How long the runtime may take to write a dump.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(600);

/// Resident memory of `pid`, in bytes (`VmRSS`).
fn resident_bytes(procfs: &Procfs, pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(procfs.path(pid, "status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Takes the dump `spec` asks for of a .NET process, through `port`.
pub fn take(procfs: &Procfs, spec: &DumpSpec, port: &Port) -> Result<Dump, DumpError> {
    let pid = spec.pid;
    // The dump goes next to the socket: the runtime's TMPDIR, which it can
    // write and the agent can reach.
    let dir_path = Path::new(&port.path)
        .parent()
        .map_or_else(|| "/tmp".to_string(), |d| d.display().to_string());
    let dir = open_dir(procfs, pid, &dir_path)?;
    if matches!(spec.kind, DumpType::Full | DumpType::Heap) {
        let need = resident_bytes(procfs, pid).unwrap_or(0);
        let fs = rustix::fs::fstatvfs(&dir).map_err(|e| DumpError::Unreadable {
            path: dir_path.clone(),
            why: e.to_string(),
        })?;
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        // Resident memory, plus a tenth for the ELF notes and slack.
        if free < need + need / 10 {
            return Err(DumpError::NoRoom {
                pid,
                dir: dir_path,
                free_mb: free >> 20,
                need_mb: (need + need / 10) >> 20,
                kind: kind_name(spec.kind),
            });
        }
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("tracecar-dump-{pid}-{nanos}.core");
    let path = format!("{}/{name}", dir_path.trim_end_matches('/'));
    let answer = port.request(
        procfs,
        &Command::CreateCoreDump {
            path: path.clone(),
            kind: spec.kind,
        },
        DUMP_TIMEOUT,
    );
    let hresult = match answer {
        Ok((_, payload)) => {
            ipc::hresult_payload(&payload).map_err(|source| PortError::Ipc { pid, source })
        }
        Err(e) => Err(e),
    };
    let hresult = match hresult {
        Ok(h) => h,
        Err(e) => {
            remove(&dir, &name);
            return Err(e.into());
        }
    };
    if hresult != 0 {
        remove(&dir, &name);
        return Err(DumpError::Failed { hresult });
    }
    let (file, bytes) = take_file(&dir, &name, pid, &path)?;
    let limit = u64::from(spec.limit_mb) << 20;
    if bytes > limit {
        return Err(DumpError::TooLarge {
            mb: bytes >> 20,
            limit_mb: u64::from(spec.limit_mb),
        });
    }
    tracing::info!(
        pid,
        bytes,
        kind = kind_name(spec.kind),
        "dump taken through the diagnostic port"
    );
    Ok(Dump {
        file,
        bytes,
        via: "dotnet",
        fallback: None,
    })
}

fn open_dir(procfs: &Procfs, pid: u32, dir: &str) -> Result<std::os::fd::OwnedFd, DumpError> {
    let seen = procfs
        .open_seen(pid, dir, crate::rootfs::Follow::Never)
        .and_then(crate::rootfs::Seen::directory)
        .map_err(|e| DumpError::Unreadable {
            path: dir.to_string(),
            why: e.to_string(),
        })?;
    Ok(seen.into_fd())
}

fn remove(dir: &std::os::fd::OwnedFd, name: &str) {
    let _ = rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty());
}
