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
