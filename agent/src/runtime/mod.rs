//! The one seam between the agent and language runtimes. What the rest of
//! the agent knows of a process's runtime comes from here, and `stacks/`,
//! `uprobe/` and `process.rs` ask only this module:
//!
//! - which runtime a process runs ([`detect`], [`of_process`]);
//! - what `/v1/processes` says of it beyond that ([`dotnet_facts`]);
//! - names for its JIT-compiled code: the runtime's own method table where
//!   the runtime gives one ([`methods_now`], [`MethodsDuring`] for the
//!   length of a capture, [`MethodLoads`] to follow new code), else the
//!   perf map it writes ([`perfmap`]), read the same way for every runtime.
//!
//! Each runtime that names its own code has one file here ([`dotnet`]);
//! the functions below dispatch on [`Runtime`]. Adding one is a new arm of
//! `Runtime` in `tracecar-api`, a file here and an arm in each dispatcher
//! (docs/architecture.md, "Adding a runtime").

mod dotnet;
pub mod perfmap;

use std::collections::BTreeSet;
use std::path::Path;

pub use tracecar_api::dotnet::DotnetInfo;
pub use tracecar_api::process::Runtime;

pub use crate::dotnet::profiles::{Kind as Reported, NamedSample};
pub use crate::dotnet::rundown::{Method, MethodTable as Methods};
use crate::procfs::{MapEntry, Procfs};

/// Why a runtime did not name its code.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The .NET runtime's rundown or method-load session failed.
    #[error(transparent)]
    Dotnet(#[from] crate::dotnet::rundown::RundownError),
    /// The .NET runtime's own profile (allocations, contention) failed.
    #[error(transparent)]
    DotnetProfile(#[from] crate::dotnet::profiles::ProfileError),
}

/// What a runtime reports itself, with the stacks it walked, for
/// `seconds` (or until `cancel`): .NET's allocation ticks or lock
/// contentions. `None` for a runtime that reports none.
pub fn reported(
    runtime: Runtime,
    procfs: &Procfs,
    pid: u32,
    what: Reported,
    seconds: u32,
    cancel: &std::sync::atomic::AtomicBool,
) -> Option<Result<Vec<NamedSample>, RuntimeError>> {
    match runtime {
        Runtime::Dotnet => Some(dotnet::reported(procfs, pid, what, seconds, cancel)),
        _ => None,
    }
}

/// What a process's executable says of its runtime when its name and
/// mapped libraries do not: read from its ELF file only then
/// ([`inspect_exe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExeKind {
    /// A Go binary.
    Go,
    /// CoreCLR linked into the executable: a single-file .NET app, which
    /// maps no `libcoreclr.so`.
    Coreclr,
    /// Nothing known, or not read.
    Other,
}

/// Detects the runtime from the executable's name and mapped libraries;
/// `inspect` (which reads the executable's ELF file) is asked only when
/// nothing else matched.
pub fn detect(exe: &str, maps: &[MapEntry], inspect: impl FnOnce() -> ExeKind) -> Runtime {
    let base = Path::new(exe)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let libs: BTreeSet<&str> = maps
        .iter()
        .filter_map(|m| m.path.as_deref())
        .filter_map(|p| p.rsplit('/').next())
        .collect();
    let has_lib = |prefix: &str| libs.iter().any(|l| l.starts_with(prefix));
    if has_lib("libcoreclr.so") || base == "dotnet" {
        Runtime::Dotnet
    } else if has_lib("libjvm.so") || base == "java" {
        Runtime::Java
    } else if base == "node" || base == "nodejs" || has_lib("libnode.so") {
        Runtime::Node
    } else if base.starts_with("python") || has_lib("libpython") {
        Runtime::Python
    } else {
        match inspect() {
            ExeKind::Go => Runtime::Go,
            ExeKind::Coreclr => Runtime::Dotnet,
            ExeKind::Other => Runtime::Native,
        }
    }
}

/// The runtime of `pid`: its executable's name and mapped libraries, then
/// its executable's ELF file ([`inspect_exe`]) when those do not tell.
pub fn of_process(procfs: &Procfs, pid: u32, maps: &[MapEntry]) -> Runtime {
    let exe = procfs
        .exe(pid)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    detect(&exe, maps, || inspect_exe(procfs, pid))
}

/// What the executable of `pid` is, from its ELF file opened through the
/// resolver: its section names (Go) and its dynamic symbols (CoreCLR's
/// exports: [`crate::dotnet::port::links_coreclr`]); nothing else is read.
pub fn inspect_exe(procfs: &Procfs, pid: u32) -> ExeKind {
    let Ok(mut elf) = crate::elf::Elf::open_exe(procfs, pid) else {
        return ExeKind::Other;
    };
    if elf.is_go() {
        ExeKind::Go
    } else if crate::dotnet::port::links_coreclr(&mut elf) {
        ExeKind::Coreclr
    } else {
        ExeKind::Other
    }
}

/// What `/v1/processes` says of a runtime beyond its name: for .NET, its
/// version, diagnostic socket and port (asked until `deadline`).
pub fn dotnet_facts(
    runtime: Runtime,
    procfs: &Procfs,
    pid: u32,
    maps: &[MapEntry],
    deadline: std::time::Instant,
) -> Option<DotnetInfo> {
    (runtime == Runtime::Dotnet).then(|| dotnet::facts(procfs, pid, maps, deadline))
}

/// Whether `runtime` names its own code (so a method table is worth
/// asking for, and wins over its perf map).
pub fn names_own_code(runtime: Runtime) -> bool {
    match runtime {
        Runtime::Dotnet => true,
        Runtime::Node | Runtime::Java | Runtime::Python | Runtime::Go | Runtime::Native => false,
    }
}

/// The methods that have code now, as the runtime names them; `None` for
/// a runtime that does not name its own code.
pub fn methods_now(
    runtime: Runtime,
    procfs: &Procfs,
    pid: u32,
) -> Option<Result<Methods, RuntimeError>> {
    match runtime {
        Runtime::Dotnet => Some(dotnet::methods_now(procfs, pid)),
        _ => None,
    }
}

/// A method an app declares that has no compiled code of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCode {
    /// `Namespace.Type.Method`.
    pub method: String,
    /// The file that declares it.
    pub module: String,
    /// The methods whose code calls it (where the JIT inlines it).
    pub callers: Vec<String>,
}

/// Why `name` picks no compiled method of `pid`, when the app declares
/// it: `None` when no assembly of the app has such a method (or for a
/// runtime that does not name its own code).
pub fn without_code(
    runtime: Runtime,
    procfs: &Procfs,
    pid: u32,
    table: &Methods,
    name: &str,
) -> Option<NoCode> {
    match runtime {
        Runtime::Dotnet => dotnet::without_code(procfs, pid, table, name),
        _ => None,
    }
}

/// A session that names the methods a process compiles while it runs (a
/// capture's length), and those that have code at its end.
#[derive(Debug)]
pub enum MethodsDuring {
    /// The .NET runtime's rundown.
    Dotnet(crate::dotnet::rundown::Rundown),
}

impl MethodsDuring {
    /// Starts one for `pid`; `None` for a runtime that does not name its
    /// own code.
    pub fn start(runtime: Runtime, procfs: &Procfs, pid: u32) -> Option<Self> {
        match runtime {
            Runtime::Dotnet => Some(Self::Dotnet(dotnet::methods_during(procfs, pid))),
            _ => None,
        }
    }

    /// Ends it: every method named.
    pub fn finish(self) -> Result<Methods, RuntimeError> {
        match self {
            Self::Dotnet(rundown) => Ok(rundown.finish()?),
        }
    }
}

/// The methods a process loads (compiles, tiers up) as it happens, for
/// probes that follow a method's versions. Stopped when dropped.
#[derive(Debug)]
pub enum MethodLoads {
    /// The .NET runtime's method-load events.
    Dotnet(crate::dotnet::rundown::Follower),
}

impl MethodLoads {
    /// Starts following `pid`, once the runtime accepted; `None` for a
    /// runtime that does not name its own code.
    pub fn start(
        runtime: Runtime,
        procfs: &Procfs,
        pid: u32,
    ) -> Option<Result<Self, RuntimeError>> {
        match runtime {
            Runtime::Dotnet => Some(dotnet::method_loads(procfs, pid).map(Self::Dotnet)),
            _ => None,
        }
    }

    /// The methods loaded since the last call.
    pub fn loaded(&self) -> Vec<Method> {
        match self {
            Self::Dotnet(follower) => follower.loaded(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::parse_maps;

    #[test]
    fn runtimes_are_detected() {
        let maps = |lib: &str| parse_maps(&format!("7f00-7f10 r-xp 0 08:01 5 /usr/lib/{lib}\n"));
        assert_eq!(
            detect("/usr/bin/dotnet", &[], || ExeKind::Other),
            Runtime::Dotnet
        );
        assert_eq!(
            detect("/app/api", &maps("libcoreclr.so"), || ExeKind::Other),
            Runtime::Dotnet
        );
        assert_eq!(
            detect("/opt/jdk/bin/java", &[], || ExeKind::Other),
            Runtime::Java
        );
        assert_eq!(
            detect("/x", &maps("libjvm.so"), || ExeKind::Other),
            Runtime::Java
        );
        assert_eq!(
            detect("/usr/bin/node", &[], || ExeKind::Other),
            Runtime::Node
        );
        assert_eq!(
            detect("/usr/bin/python3.12", &[], || ExeKind::Other),
            Runtime::Python
        );
        assert_eq!(detect("/app/server", &[], || ExeKind::Go), Runtime::Go);
        assert_eq!(
            detect("/app/server", &[], || ExeKind::Other),
            Runtime::Native
        );
        // A single-file .NET app: no libcoreclr.so, CoreCLR in the
        // executable.
        assert_eq!(
            detect("/app/shop", &maps("libstdc++.so.6"), || ExeKind::Coreclr),
            Runtime::Dotnet
        );
        // The ELF file is read only when nothing else told.
        assert_eq!(
            detect("/usr/bin/node", &[], || panic!("read for nothing")),
            Runtime::Node
        );
    }

    #[test]
    fn only_runtimes_that_name_their_code_are_asked() {
        let procfs = Procfs::default();
        for runtime in [
            Runtime::Node,
            Runtime::Java,
            Runtime::Python,
            Runtime::Go,
            Runtime::Native,
        ] {
            assert!(!names_own_code(runtime));
            assert!(methods_now(runtime, &procfs, 1).is_none());
            assert!(MethodsDuring::start(runtime, &procfs, 1).is_none());
            assert!(MethodLoads::start(runtime, &procfs, 1).is_none());
        }
        assert!(names_own_code(Runtime::Dotnet));
        let maps = parse_maps("7f00-7f10 r-xp 0 08:01 5 /usr/share/dotnet/libcoreclr.so\n");
        assert_eq!(detect("", &maps, || ExeKind::Other), Runtime::Dotnet);
        assert_eq!(detect("", &[], || ExeKind::Other), Runtime::Native);
    }
}
