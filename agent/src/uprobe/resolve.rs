//! Resolving a probe request (the plan): the symbol, offset or address it
//! names becomes either a file and an offset for a uprobe (file-backed
//! code, read as the process sees it), or the compiled versions of a JIT
//! method for hardware breakpoints (code in anonymous memory, named by the
//! process's perf map or the .NET runtime), with their entry and return
//! sites, within the CPU's debug registers.

use super::decode::Captures;
use super::jit::{self, Version};
use super::spec::{Abi, TargetSpec, UprobeSpec};
use super::symbols::{self, file_offset};
use crate::elf::{Elf, ElfError};
use crate::procfs::{MapEntry, Procfs};
use crate::rootfs::{self, Seen};
use crate::runtime::perfmap::PerfMapFile;
use crate::runtime::{self, MethodLoads, Methods, Runtime, RuntimeError};

/// Debug registers per CPU on x86-64: breakpoints at most, per CPU.
pub const DEBUG_REGISTERS: usize = 4;
/// Bytes of one method's code read to find its sites, at most.
const MAX_CODE_BYTES: u64 = 1 << 20;

/// One version of a JIT method with the sites to put breakpoints on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPlan {
    /// The version.
    pub version: Version,
    /// Where calls enter it.
    pub entry: u64,
    /// Its `ret` instructions (with `ret=`).
    pub returns: Vec<u64>,
}

impl VersionPlan {
    /// Debug registers it takes.
    pub fn registers(&self) -> usize {
        1 + self.returns.len()
    }
}

/// How the agent learns of a method's new versions during a session.
#[derive(Debug, Default)]
pub enum Follow {
    /// It does not (an address).
    #[default]
    Nothing,
    /// The process's perf map, re-read as it grows.
    PerfMap(PerfMapFile),
    /// The runtime's method-load events.
    Runtime(MethodLoads),
}

/// JIT code to probe with breakpoints.
#[derive(Debug)]
pub struct JitPlan {
    /// The process.
    pub pid: u32,
    /// The method ([`jit::MethodName::key`]), or the address asked for.
    pub name: String,
    /// The process's runtime.
    pub runtime: Runtime,
    /// Versions to probe now, best first; those that did not fit in the
    /// debug registers are in `skipped`.
    pub versions: Vec<VersionPlan>,
    /// Versions left out: no register left for them.
    pub skipped: Vec<Version>,
    /// How new versions are found.
    pub follow: Follow,
    /// For .NET: every method the runtime named (for stacks).
    pub table: Option<Methods>,
}

/// What a probe attaches to.
#[derive(Debug)]
pub enum Target {
    /// File-backed code: a uprobe (and a uretprobe for returns).
    Uprobe(ResolvedTarget),
    /// JIT code: execute breakpoints on each version.
    Breakpoint(Box<JitPlan>),
}

impl Target {
    /// `uprobe` or `breakpoint`.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Self::Uprobe(_) => "uprobe",
            Self::Breakpoint(_) => "breakpoint",
        }
    }
}

/// A resolved request: what to attach to, and what to capture there.
#[derive(Debug)]
pub struct Plan {
    /// The probe point(s).
    pub target: Target,
    /// `argN`'s calling convention.
    pub abi: Abi,
    /// The BPF captures.
    pub captures: Captures,
}

/// A probe point: the file, opened as the process sees it, and the offset.
#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    /// The file the kernel attaches to: the inode that was checked and
    /// read, given to the kernel as `/proc/self/fd/N` ([`Seen::via`]).
    pub file: std::sync::Arc<Seen>,
    /// Whether it is a Go binary (no uretprobes there).
    pub go: bool,
    /// The module as the process names it.
    pub module: String,
    /// File offset.
    pub offset: u64,
}

/// A request that cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The PID is not in the pod.
    #[error(transparent)]
    NotVisible(#[from] crate::procfs::PidNotVisible),
    /// The file cannot be read, or is refused (not a regular file, too
    /// large).
    #[error("cannot read the binary: {0}")]
    Binary(#[from] crate::rootfs::RootError),
    /// The file is not an ELF object.
    #[error("{0} is not an ELF file")]
    NotElf(String),
    /// A part of the file the agent would need is over its limits, or
    /// could not be read.
    #[error("cannot read the binary: {0}")]
    Elf(ElfError),
    /// No such symbol.
    #[error("no function {name:?} in {module}")]
    UnknownSymbol {
        /// Requested.
        name: String,
        /// Searched.
        module: String,
        /// Closest names.
        closest: Vec<String>,
    },
    /// `module=` is not mapped.
    #[error(transparent)]
    Module(#[from] symbols::SymbolsError),
    /// The offset is not in executable code.
    #[error("offset {offset:#x} is outside the executable segments of {module}")]
    OffsetOutsideText {
        /// Requested.
        offset: u64,
        /// The file.
        module: String,
    },
    /// The address is not in executable memory.
    #[error("address {0:#x} is not in executable memory (heap, stack or data)")]
    NotCode(u64),
    /// No JIT method has the name.
    #[error(transparent)]
    Jit(#[from] jit::FindError),
    /// The runtime's method table could not be read.
    #[error("cannot read pid {pid}'s method table from its runtime ({source})")]
    Runtime {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: RuntimeError,
    },
    /// The method's code could not be read.
    #[error("cannot read the code at {address:#x} in pid {pid}: {source}")]
    Code {
        /// The process.
        pid: u32,
        /// Where.
        address: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ret=` on JIT code with no known code range.
    #[error(
        "{address:#x} is JIT code that no perf map or runtime names, so its returns cannot be found"
    )]
    NoCodeRange {
        /// The address.
        address: u64,
    },
    /// `ret=` on a method without a `ret` instruction.
    #[error("{name} has no ret instruction (it leaves through a tail call or never returns)")]
    NoReturns {
        /// The method.
        name: String,
    },
    /// One version of the method needs more breakpoints than a CPU has.
    #[error(
        "{name} needs {needed} breakpoints (its entry and {} returns), and x86-64 has {DEBUG_REGISTERS} debug registers",
        needed - 1
    )]
    RegisterBudget {
        /// The method.
        name: String,
        /// Breakpoints one version needs.
        needed: usize,
    },
    /// The address is not mapped at all.
    #[error("address {0:#x} is not mapped in the process")]
    Unmapped(u64),
    /// Neither a process nor a file to look the symbol up in.
    #[error("symbol= without pid= needs binary=PATH")]
    NoBinary,
    /// The captures do not fit the calling convention.
    #[error("{}", .0.message)]
    Spec(crate::params::SpecError),
    /// A uretprobe on a Go binary.
    #[error(
        "{0} is a Go binary: uretprobes can crash Go programs (stack moves and goroutine switches break the return trampoline)"
    )]
    GoReturnProbe(String),
}

impl From<ElfError> for ResolveError {
    fn from(e: ElfError) -> Self {
        match e {
            ElfError::Root(e) => Self::Binary(e),
            ElfError::NotElf { module, .. } => Self::NotElf(module),
            e => Self::Elf(e),
        }
    }
}

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
    let abi = spec.abi.unwrap_or(match &target {
        Target::Breakpoint(jit) => match jit.runtime {
            Runtime::Java => Abi::Java,
            Runtime::Node => Abi::V8,
            _ => Abi::Sysv,
        },
        Target::Uprobe(_) => Abi::Sysv,
    });
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
        Some(pid) => Some(
            procfs
                .maps(pid)
                .map_err(|_| crate::procfs::PidNotVisible(pid))?,
        ),
        None => None,
    };
    let resolved = match &spec.target {
        TargetSpec::Symbol {
            name,
            module,
            binary,
        } => {
            let module_path = match (module, binary, spec.pid) {
                (_, Some(b), _) => b.clone(),
                (Some(m), None, Some(pid)) => {
                    let maps = maps.as_deref().unwrap_or_default();
                    mapped_path(maps, m).ok_or_else(|| symbols::SymbolsError::ModuleNotMapped {
                        pid,
                        module: m.clone(),
                        mapped: mapped_modules(maps),
                    })?
                }
                (None, None, Some(pid)) => procfs
                    .exe(pid)
                    .map(|p| crate::procfs::without_deleted(&p.display().to_string()).to_owned())
                    .map_err(|_| crate::procfs::PidNotVisible(pid))?,
                (_, None, None) => return Err(ResolveError::NoBinary),
            };
            let (file, mut elf) = open_binary(procfs, spec.pid, &module_path)?;
            match find_symbol(&mut elf, name, &module_path) {
                Ok(offset) => ResolvedTarget {
                    go: elf.is_go(),
                    file,
                    module: module_path,
                    offset,
                },
                // Not in the executable: a JIT method of the process?
                Err(ResolveError::UnknownSymbol { closest, .. })
                    if module.is_none() && binary.is_none() =>
                {
                    let (Some(pid), Some(maps)) = (spec.pid, maps.as_deref()) else {
                        return Err(ResolveError::NoBinary);
                    };
                    return jit_by_name(spec, procfs, pid, maps, name, &module_path, closest)
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
        TargetSpec::Address(address) => {
            let maps = maps.unwrap_or_default();
            let map: &MapEntry = crate::procfs::mapping_at(&maps, *address)
                .ok_or(ResolveError::Unmapped(*address))?;
            if !map.is_exec() {
                return Err(ResolveError::NotCode(*address));
            }
            if !map.is_uprobe_capable() {
                let pid = spec.pid.ok_or(ResolveError::NoBinary)?;
                return jit_by_address(spec, procfs, pid, &maps, *address)
                    .map(|jit| Target::Breakpoint(Box::new(jit)));
            }
            let module = map.path.clone().unwrap_or_default();
            let (file, elf) = open_binary(procfs, spec.pid, map.file_path().unwrap_or_default())?;
            ResolvedTarget {
                go: elf.is_go(),
                file,
                offset: address - map.start + map.offset,
                module,
            }
        }
    };
    if spec.ret.is_some() && !spec.force && resolved.go {
        return Err(ResolveError::GoReturnProbe(resolved.module));
    }
    Ok(Target::Uprobe(resolved))
}

/// The runtime of `pid`.
fn runtime_of(procfs: &Procfs, pid: u32, maps: &[MapEntry]) -> Runtime {
    let exe = procfs
        .exe(pid)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    runtime::detect(&exe, maps, || false)
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
            versions: table.methods().map(runtime_version).collect(),
            follow: Follow::Runtime(loads),
            table: Some(table),
        });
    }
    let Some(mut map) = PerfMapFile::of(procfs, pid) else {
        return Ok(JitVersions::default());
    };
    map.refresh();
    Ok(JitVersions {
        versions: map.index().entries().map(perf_map_version).collect(),
        follow: Follow::PerfMap(map),
        table: None,
    })
}

/// What a process's runtime names: its compiled code now, how to follow
/// what it compiles next, and (.NET) its whole method table.
#[derive(Debug, Default)]
struct JitVersions {
    versions: Vec<Version>,
    follow: Follow,
    table: Option<Methods>,
}

/// A version named by the runtime itself.
pub fn runtime_version(method: &runtime::Method) -> Version {
    Version {
        start: method.start,
        size: u64::from(method.size),
        name: method.name.clone(),
        tier: method.tier.map(str::to_owned),
        source: jit::Source::DotnetRuntime,
    }
}

/// A version named by a perf map.
pub fn perf_map_version(entry: &crate::runtime::perfmap::PerfMapEntry) -> Version {
    Version {
        start: entry.start,
        size: entry.size,
        name: entry.name.clone(),
        tier: jit::parse_name(&entry.name).tier,
        source: jit::Source::PerfMap,
    }
}

/// How recent a tier is: later tiers replace earlier ones, so when the
/// debug registers do not fit every version, the most optimized go first.
pub(crate) fn tier_rank(tier: Option<&str>) -> u8 {
    match tier {
        Some("OptimizedTier1" | "Optimized" | "optimized") => 3,
        Some("maglev" | "baseline") => 2,
        Some("QuickJitted" | "MinOptJitted" | "interpreted") => 1,
        _ => 0,
    }
}

/// The entry and return sites of one version, read from its code.
pub fn version_sites(
    procfs: &Procfs,
    pid: u32,
    runtime: Runtime,
    version: &Version,
    returns: bool,
) -> Result<VersionPlan, ResolveError> {
    let needs_code = returns || runtime == Runtime::Java;
    let code = if needs_code {
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
    let entry = if runtime == Runtime::Java {
        super::disasm::java_verified_entry(&code, version.start)
    } else {
        version.start
    };
    let returns = if returns {
        let found = super::disasm::returns(&code, version.start);
        if found.is_empty() {
            return Err(ResolveError::NoReturns {
                name: version.name.clone(),
            });
        }
        found
    } else {
        Vec::new()
    };
    Ok(VersionPlan {
        version: version.clone(),
        entry,
        returns,
    })
}

/// Plans breakpoints on `versions` of method `name`, the most optimized
/// first, as many as the debug registers hold.
fn plan_versions(
    procfs: &Procfs,
    pid: u32,
    runtime: Runtime,
    name: &str,
    mut versions: Vec<Version>,
    returns: bool,
) -> Result<(Vec<VersionPlan>, Vec<Version>), ResolveError> {
    versions.sort_by_key(|v| std::cmp::Reverse((tier_rank(v.tier.as_deref()), v.start)));
    let mut planned: Vec<VersionPlan> = Vec::new();
    let mut skipped = Vec::new();
    for version in versions {
        let sites = version_sites(procfs, pid, runtime, &version, returns)?;
        let used: usize = planned.iter().map(VersionPlan::registers).sum();
        if sites.registers() > DEBUG_REGISTERS && planned.is_empty() {
            return Err(ResolveError::RegisterBudget {
                name: name.to_owned(),
                needed: sites.registers(),
            });
        }
        if used + sites.registers() <= DEBUG_REGISTERS {
            planned.push(sites);
        } else {
            skipped.push(version);
        }
    }
    Ok((planned, skipped))
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
        Err(jit::FindError::Unknown { closest, .. }) if !elf_closest.is_empty() => {
            let mut all = closest;
            all.extend(elf_closest);
            all.truncate(5);
            return Err(ResolveError::UnknownSymbol {
                name: name.to_owned(),
                module: format!("{exe} or the process's JIT code"),
                closest: all,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let (versions, skipped) = plan_versions(
        procfs,
        pid,
        runtime,
        &method.key,
        method.versions,
        spec.ret.is_some(),
    )?;
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
    let named = known
        .versions
        .into_iter()
        .filter(|v| v.start <= address && address < v.start + v.size.max(1))
        .min_by_key(|v| v.size);
    let version = match named {
        // Probing inside a method: its returns are still its returns.
        Some(v) => Version {
            start: address,
            size: v.size - (address - v.start),
            ..v
        },
        None if spec.ret.is_some() => return Err(ResolveError::NoCodeRange { address }),
        None => Version {
            start: address,
            size: 0,
            name: format!("{address:#x}"),
            tier: None,
            source: jit::Source::PerfMap,
        },
    };
    let name = version.name.clone();
    let mut sites = version_sites(procfs, pid, runtime, &version, spec.ret.is_some())?;
    // The address asked for is the entry, whatever the runtime.
    sites.entry = address;
    if sites.registers() > DEBUG_REGISTERS {
        return Err(ResolveError::RegisterBudget {
            name,
            needed: sites.registers(),
        });
    }
    Ok(JitPlan {
        pid,
        name: format!("{address:#x}"),
        runtime,
        versions: vec![sites],
        skipped: Vec::new(),
        follow: Follow::Nothing,
        table: known.table,
    })
}

/// Basenames of the executable modules a process maps.
fn mapped_modules(maps: &[MapEntry]) -> Vec<String> {
    let mut names: Vec<String> = maps
        .iter()
        .filter(|m| m.is_exec() && m.is_file_backed())
        .filter_map(|m| m.path.as_deref()?.rsplit('/').next().map(str::to_owned))
        .collect();
    names.dedup();
    names
}

/// The full path of a mapped module named by basename or path.
fn mapped_path(maps: &[MapEntry], module: &str) -> Option<String> {
    maps.iter()
        .filter_map(|m| m.path.as_deref())
        .find(|p| *p == module || p.rsplit('/').next() == Some(module))
        .map(str::to_owned)
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
