//! Resolving a probe request: the facts half. The symbol, offset or
//! address a request names becomes either a file and an offset for a
//! uprobe (file-backed code, read as the process sees it), or the compiled
//! versions of a JIT method for hardware breakpoints (code in anonymous
//! memory, named by the process's perf map or the .NET runtime), with their
//! entry and return sites, within the CPU's debug registers.
//!
//! This file reads (the maps, the executable, the ELF file, the runtime's
//! JIT versions, a method's code); every decision is a pure function of
//! `plan.rs`, asked in turn, so each fact is read only on the path that
//! needs it.

use super::jit;
use super::plan::{
    self, AtAddress, BinaryChoice, Follow, JitPlan, Plan, ResolveError, ResolvedTarget, Target,
    VersionPlan,
};
use super::spec::{TargetSpec, UprobeSpec};
use super::symbols::file_offset;
use crate::elf::{Elf, ElfError};
use crate::procfs::{MapEntry, Procfs};
use crate::rootfs::{self, Seen};
use crate::runtime::perfmap::PerfMapFile;
use crate::runtime::{self, MethodLoads, Methods, Runtime};

/// Bytes of one method's code read to find its sites, at most.
const MAX_CODE_BYTES: u64 = 1 << 20;

/// A binary as `pid` sees it (the agent's own root without a pid),
/// symlinks followed inside that root, and its ELF headers.
fn open_binary(
    procfs: &Procfs,
    pid: Option<u32>,
    path: &str,
) -> Result<(std::sync::Arc<Seen>, Elf), ResolveError> {
    let seen = match pid {
        Some(pid) => procfs.open_seen(pid, path, rootfs::Follow::InRoot),
        None => Procfs::default().open_seen(std::process::id(), path, rootfs::Follow::InRoot),
    }?
    .file(crate::rootfs::limits::BINARY_BYTES)?;
    let elf = Elf::open(&seen).map_err(|e| match e {
        ElfError::NotElf { .. } => ResolveError::NotElf(path.to_owned()),
        e => e.into(),
    })?;
    Ok((std::sync::Arc::new(seen), elf))
}

/// Finds `name` among the functions of an ELF file; C++ names match with
/// or without their parameter list. Names are looked at one by one (the
/// closest five kept for the error), not all held.
pub fn find_symbol(elf: &mut Elf, name: &str, module: &str) -> Result<u64, ResolveError> {
    // Compare with the whole name and with its last path segment, so
    // `parse` finds `myapp::config::parse(...)`.
    let short = |n: &str| -> String {
        let base = n.split('(').next().unwrap_or(n);
        base.rsplit("::").next().unwrap_or(base).to_owned()
    };
    let wanted_short = short(name);
    let mut hit = None;
    let mut closest: Vec<(usize, String)> = Vec::new();
    elf.visit_functions(|svma, _, raw| {
        if hit.is_some() {
            return;
        }
        let f = crate::elf::demangle(&String::from_utf8_lossy(raw));
        if f == name || f.split('(').next() == Some(name) {
            hit = Some(svma);
            return;
        }
        let d = strsim::levenshtein(&f, name).min(strsim::levenshtein(&short(&f), &wanted_short));
        if (closest.len() < 5 || closest.last().is_some_and(|(worst, _)| d < *worst))
            && !closest.iter().any(|(_, n)| *n == f)
        {
            closest.push((d, f));
            closest.sort();
            closest.truncate(5);
        }
    })?;
    let offset = hit.and_then(|svma| file_offset(svma, elf.segments()));
    offset.ok_or_else(|| ResolveError::UnknownSymbol {
        name: name.to_owned(),
        module: module.to_owned(),
        closest: closest.into_iter().map(|(_, n)| n).collect(),
    })
}

/// Checks that `offset` lies in an executable segment.
pub fn check_offset(elf: &Elf, offset: u64, module: &str) -> Result<(), ResolveError> {
    if elf.is_code_offset(offset) {
        Ok(())
    } else {
        Err(ResolveError::OffsetOutsideText {
            offset,
            module: module.to_owned(),
        })
    }
}

/// Resolves the request: the probe point(s) and the captures.
pub fn resolve(spec: &UprobeSpec, procfs: &Procfs) -> Result<Plan, ResolveError> {
    let target = resolve_target(spec, procfs)?;
    let abi = spec.abi.unwrap_or_else(|| plan::default_abi(&target));
    let captures = super::decode::plan(&spec.args, spec.ret, spec.ret_offset, abi)
        .map_err(ResolveError::Spec)?;
    Ok(Plan {
        target,
        abi,
        captures,
    })
}

fn resolve_target(spec: &UprobeSpec, procfs: &Procfs) -> Result<Target, ResolveError> {
    let maps = match spec.pid {
        Some(pid) => procfs
            .maps(pid)
            .map_err(|_| crate::procfs::PidNotVisible(pid))?,
        None => Vec::new(),
    };
    let resolved = match &spec.target {
        TargetSpec::Symbol {
            name,
            module,
            binary,
        } => {
            let path =
                match plan::binary_for(module.as_deref(), binary.as_deref(), spec.pid, &maps)? {
                    BinaryChoice::Path(path) => path,
                    BinaryChoice::Executable => executable(procfs, spec.pid)?,
                };
            let (file, mut elf) = open_binary(procfs, spec.pid, &path)?;
            match find_symbol(&mut elf, name, &path) {
                Ok(offset) => ResolvedTarget {
                    go: elf.is_go(),
                    file,
                    module: path,
                    offset,
                },
                // Not in the executable: a JIT method of the process?
                Err(ResolveError::UnknownSymbol { closest, .. })
                    if plan::may_be_jit(&spec.target) =>
                {
                    let pid = spec.pid.ok_or(ResolveError::NoBinary)?;
                    return jit_by_name(spec, procfs, pid, &maps, name, &path, closest)
                        .map(|jit| Target::Breakpoint(Box::new(jit)));
                }
                Err(e) => return Err(e),
            }
        }
        TargetSpec::Offset { offset, binary } => {
            let (file, elf) = open_binary(procfs, spec.pid, binary)?;
            check_offset(&elf, *offset, binary)?;
            ResolvedTarget {
                go: elf.is_go(),
                file,
                module: binary.clone(),
                offset: *offset,
            }
        }
        TargetSpec::Address(address) => match plan::at_address(&maps, *address)? {
            AtAddress::Jit => {
                let pid = spec.pid.ok_or(ResolveError::NoBinary)?;
                return jit_by_address(spec, procfs, pid, &maps, *address)
                    .map(|jit| Target::Breakpoint(Box::new(jit)));
            }
            AtAddress::File {
                path,
                module,
                offset,
            } => {
                let (file, elf) = open_binary(procfs, spec.pid, &path)?;
                ResolvedTarget {
                    go: elf.is_go(),
                    file,
                    offset,
                    module,
                }
            }
        },
    };
    plan::check_return_probe(spec, &resolved)?;
    Ok(Target::Uprobe(resolved))
}

/// The executable of `pid`, as the process names it.
fn executable(procfs: &Procfs, pid: Option<u32>) -> Result<String, ResolveError> {
    let pid = pid.ok_or(ResolveError::NoBinary)?;
    procfs
        .exe(pid)
        .map(|p| crate::procfs::without_deleted(&p.display().to_string()).to_owned())
        .map_err(|_| crate::procfs::PidNotVisible(pid).into())
}

/// The runtime of `pid`.
fn runtime_of(procfs: &Procfs, pid: u32, maps: &[MapEntry]) -> Runtime {
    runtime::of_process(procfs, pid, maps)
}

/// The JIT versions a process's runtime names now, and how to follow new
/// ones: the .NET runtime's own method table for .NET (its perf map, when
/// enabled, names the same code), the perf map for every other runtime.
fn jit_versions(procfs: &Procfs, pid: u32, runtime: Runtime) -> Result<JitVersions, ResolveError> {
    let failed = |source| ResolveError::Runtime { pid, source };
    // Follow first, then take the table: nothing compiled in between is
    // missed.
    if let Some(loads) = MethodLoads::start(runtime, procfs, pid) {
        let loads = loads.map_err(failed)?;
        let table = runtime::methods_now(runtime, procfs, pid)
            .unwrap_or_else(|| Ok(Methods::default()))
            .map_err(failed)?;
        return Ok(JitVersions {
            versions: table.methods().map(plan::runtime_version).collect(),
            follow: Follow::Runtime(loads),
            table: Some(table),
        });
    }
    let Some(mut map) = PerfMapFile::of(procfs, pid) else {
        return Ok(JitVersions::default());
    };
    map.refresh();
    Ok(JitVersions {
        versions: map.index().entries().map(plan::perf_map_version).collect(),
        follow: Follow::PerfMap(map),
        table: None,
    })
}

/// What a process's runtime names: its compiled code now, how to follow
/// what it compiles next, and (.NET) its whole method table.
#[derive(Debug, Default)]
struct JitVersions {
    versions: Vec<jit::Version>,
    follow: Follow,
    table: Option<Methods>,
}

/// The entry and return sites of one version: its code read from the
/// process where [`plan::needs_code`] says so, then [`plan::sites`].
pub fn version_sites(
    procfs: &Procfs,
    pid: u32,
    runtime: Runtime,
    version: &jit::Version,
    returns: bool,
) -> Result<VersionPlan, ResolveError> {
    let code = if plan::needs_code(runtime, returns) {
        procfs
            .read_memory(
                pid,
                version.start,
                version.size.min(MAX_CODE_BYTES) as usize,
            )
            .map_err(|source| ResolveError::Code {
                pid,
                address: version.start,
                source,
            })?
    } else {
        Vec::new()
    };
    plan::sites(version, runtime, &code, returns)
}

/// A JIT method of `pid` by name, with breakpoints on its versions.
fn jit_by_name(
    spec: &UprobeSpec,
    procfs: &Procfs,
    pid: u32,
    maps: &[MapEntry],
    name: &str,
    exe: &str,
    elf_closest: Vec<String>,
) -> Result<JitPlan, ResolveError> {
    let runtime = runtime_of(procfs, pid, maps);
    let JitVersions {
        versions,
        follow,
        table,
    } = jit_versions(procfs, pid, runtime)?;
    // Only code: V8's perf map also names bytecode, which never runs.
    let code = versions
        .into_iter()
        .filter(|v| crate::procfs::is_code_at(maps, v.start));
    let method = match jit::find(name, code) {
        Ok(method) => method,
        Err(jit::FindError::Unknown { closest, symbol }) => {
            // A method the app declares, without code: say so, and where
            // it is called from.
            if let Some(table) = &table
                && let Some(declared) = runtime::without_code(runtime, procfs, pid, table, name)
            {
                let compiled = table.methods().map(|m| m.name.clone()).collect();
                return Err(plan::no_code_of_its_own(pid, declared, &compiled));
            }
            if !elf_closest.is_empty() {
                return Err(plan::unknown_anywhere(name, exe, closest, elf_closest));
            }
            return Err(jit::FindError::Unknown { closest, symbol }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let returns = spec.ret.is_some();
    let candidates = plan::by_preference(method.versions)
        .iter()
        .map(|v| version_sites(procfs, pid, runtime, v, returns))
        .collect::<Result<Vec<_>, _>>()?;
    let (versions, skipped) = plan::pack(&method.key, candidates)?;
    Ok(JitPlan {
        pid,
        name: method.key,
        runtime,
        versions,
        skipped,
        follow,
        table,
    })
}

/// JIT code of `pid` at an address: named by the perf map or the runtime
/// when one of them knows it (which gives its code range, for returns).
fn jit_by_address(
    spec: &UprobeSpec,
    procfs: &Procfs,
    pid: u32,
    maps: &[MapEntry],
    address: u64,
) -> Result<JitPlan, ResolveError> {
    let runtime = runtime_of(procfs, pid, maps);
    // Names are a courtesy here; an address works without them.
    let known = jit_versions(procfs, pid, runtime).unwrap_or_default();
    let returns = spec.ret.is_some();
    let version = plan::version_at(known.versions, address, returns)?;
    let sites = version_sites(procfs, pid, runtime, &version, returns)?;
    Ok(JitPlan {
        pid,
        name: format!("{address:#x}"),
        runtime,
        versions: vec![plan::at_exactly(sites, address)?],
        skipped: Vec::new(),
        follow: Follow::Nothing,
        table: known.table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_exe() -> Elf {
        let seen = Procfs::default().open_exe(std::process::id()).unwrap();
        Elf::open(&seen).unwrap()
    }

    #[test]
    fn closest_names_are_suggested() {
        match find_symbol(&mut own_exe(), "closest_names_are_sugested", "self") {
            Err(ResolveError::UnknownSymbol { closest, .. }) => {
                assert!(
                    closest
                        .iter()
                        .any(|c| c.contains("closest_names_are_suggested")),
                    "{closest:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn offsets_outside_text_are_refused() {
        let elf = own_exe();
        assert!(matches!(
            check_offset(&elf, u64::MAX / 2, "self"),
            Err(ResolveError::OffsetOutsideText { .. })
        ));
        // The ELF header is in a read-only segment.
        assert!(check_offset(&elf, 0, "self").is_err());
    }
}
