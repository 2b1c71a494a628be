//! .NET through the runtime's diagnostic port ([`crate::dotnet`]): its
//! facts, its method table (the rundown) and its method loads.

use super::{Methods, RuntimeError};
use crate::dotnet::{port, rundown};
use crate::procfs::{MapEntry, Procfs};
use tracecar_api::dotnet::DotnetInfo;

pub(super) fn facts(
    procfs: &Procfs,
    pid: u32,
    maps: &[MapEntry],
    deadline: std::time::Instant,
) -> DotnetInfo {
    port::describe(procfs, pid, maps, deadline)
}

pub(super) fn reported(
    procfs: &Procfs,
    pid: u32,
    what: crate::dotnet::profiles::Kind,
    seconds: u32,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Vec<crate::dotnet::profiles::NamedSample>, RuntimeError> {
    Ok(crate::dotnet::profiles::profile(
        procfs, pid, what, seconds, cancel,
    )?)
}

pub(super) fn methods_now(procfs: &Procfs, pid: u32) -> Result<Methods, RuntimeError> {
    Ok(rundown::current(procfs, pid)?)
}

pub(super) fn methods_during(procfs: &Procfs, pid: u32) -> rundown::Rundown {
    rundown::Rundown::start(procfs, pid)
}

pub(super) fn method_loads(procfs: &Procfs, pid: u32) -> Result<rundown::Follower, RuntimeError> {
    Ok(rundown::Follower::start(procfs, pid)?)
}

/// Assemblies read at most to say why a method has no code.
const MAX_ASSEMBLIES: usize = 32;

/// The largest assembly read.
const MAX_ASSEMBLY_BYTES: u64 = 64 << 20;

/// A method the app's assemblies declare that has no compiled code: its
/// name, its file, and the methods whose IL calls it.
pub(super) fn without_code(
    procfs: &Procfs,
    pid: u32,
    table: &Methods,
    wanted: &str,
) -> Option<super::NoCode> {
    use crate::dotnet::assembly::Assembly;
    let wanted = wanted.trim().replace("::", ".");
    let wanted = wanted.split('(').next().unwrap_or(&wanted).to_owned();
    let paths: Vec<&str> = table.module_paths().collect();
    // The framework's assemblies sit beside System.Private.CoreLib.dll:
    // the app's own are the ones a user names.
    let framework = paths
        .iter()
        .find(|p| p.ends_with("/System.Private.CoreLib.dll"))
        .and_then(|p| p.rsplit_once('/'))
        .map(|(dir, _)| format!("{dir}/"));
    for path in paths
        .iter()
        .filter(|p| framework.as_deref().is_none_or(|f| !p.starts_with(f)))
        .take(MAX_ASSEMBLIES)
    {
        let Ok(bytes) = procfs
            .open_seen(pid, path, crate::rootfs::Follow::InRoot)
            .and_then(|seen| seen.file(MAX_ASSEMBLY_BYTES))
            .and_then(|seen| seen.read_range(0, MAX_ASSEMBLY_BYTES))
        else {
            continue;
        };
        let Ok(assembly) = Assembly::parse(&bytes) else {
            continue;
        };
        // `Type.Method` or `Namespace.Type.Method`, or the method alone
        // when only one method has that name.
        let named: Vec<usize> = (0..assembly.methods.len())
            .filter(|&i| {
                let q = assembly.methods[i].qualified();
                q == wanted || q.ends_with(&format!(".{wanted}"))
            })
            .collect();
        let [index] = named.as_slice() else {
            continue;
        };
        let callers = assembly
            .callers(*index)
            .iter()
            .map(|m| m.qualified())
            .collect();
        return Some(super::NoCode {
            method: assembly.methods[*index].qualified(),
            module: (*path).to_owned(),
            callers,
        });
    }
    None
}
