//! The pure half of resolving a probe: every decision, from facts already
//! read. `resolve.rs` reads those facts (the maps, the executable, the ELF
//! file, the runtime's JIT versions, a method's code) in the order these
//! decisions ask for them, so a JIT method table is read only when the ELF
//! file has no such symbol, and a method's code only when its sites are
//! needed. Nothing here does I/O; the tests below need no process.
//!
//! The types of a plan are here too: what the executor (`stream`,
//! `follow`) is handed.

use super::decode::Captures;
use super::jit::{self, Version};
use super::spec::{Abi, TargetSpec, UprobeSpec};
use super::symbols;
use crate::elf::ElfError;
use crate::procfs::MapEntry;
use crate::rootfs::Seen;
use crate::runtime::perfmap::PerfMapFile;
use crate::runtime::{self, MethodLoads, Methods, Runtime, RuntimeError};

/// Debug registers per CPU on x86-64: breakpoints at most, per CPU.
pub const DEBUG_REGISTERS: usize = 4;

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
    /// The app declares the method, but it has no compiled code.
    #[error(
        "{method} (in {module}) has no code of its own in pid {pid}: the JIT inlined it into its callers, or it has not run yet"
    )]
    NoCodeOfItsOwn {
        /// `Namespace.Type.Method`.
        method: String,
        /// The assembly that declares it.
        module: String,
        /// The process.
        pid: u32,
        /// Its callers that have code: where it is inlined, if it is.
        compiled_callers: Vec<String>,
        /// Its callers without code yet.
        other_callers: Vec<String>,
    },
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

/// Which file a symbol is looked up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryChoice {
    /// This path, as the process (or the agent, without a pid) sees it.
    Path(String),
    /// The process's executable.
    Executable,
}

/// The file `symbol=` is looked up in: `binary=`, else the mapped module
/// `module=` names, else the process's executable.
pub fn binary_for(
    module: Option<&str>,
    binary: Option<&str>,
    pid: Option<u32>,
    maps: &[MapEntry],
) -> Result<BinaryChoice, ResolveError> {
    match (module, binary, pid) {
        (_, Some(b), _) => Ok(BinaryChoice::Path(b.to_owned())),
        (Some(m), None, Some(pid)) => {
            mapped_path(maps, m).map(BinaryChoice::Path).ok_or_else(|| {
                symbols::SymbolsError::ModuleNotMapped {
                    pid,
                    module: m.to_owned(),
                    mapped: mapped_modules(maps),
                }
                .into()
            })
        }
        (None, None, Some(_)) => Ok(BinaryChoice::Executable),
        (_, None, None) => Err(ResolveError::NoBinary),
    }
}

/// Whether a symbol the ELF file lacks may be a JIT method: only when the
/// request named no file.
pub fn may_be_jit(target: &TargetSpec) -> bool {
    matches!(
        target,
        TargetSpec::Symbol {
            module: None,
            binary: None,
            ..
        }
    )
}

/// What is at an address of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtAddress {
    /// File-backed code: a uprobe at `offset` in `path`.
    File {
        /// The file to open (without ` (deleted)`).
        path: String,
        /// The module as the process names it.
        module: String,
        /// The file offset.
        offset: u64,
    },
    /// Code a uprobe cannot go in (anonymous, shared or `memfd:`): JIT
    /// code, for breakpoints.
    Jit,
}

/// Classifies `address` by the mapping that holds it.
pub fn at_address(maps: &[MapEntry], address: u64) -> Result<AtAddress, ResolveError> {
    let map = crate::procfs::mapping_at(maps, address).ok_or(ResolveError::Unmapped(address))?;
    if !map.is_exec() {
        return Err(ResolveError::NotCode(address));
    }
    if !map.is_uprobe_capable() {
        return Ok(AtAddress::Jit);
    }
    Ok(AtAddress::File {
        path: map.file_path().unwrap_or_default().to_owned(),
        module: map.path.clone().unwrap_or_default(),
        offset: address - map.start + map.offset,
    })
}

/// Refuses a return probe on a Go binary unless forced.
pub fn check_return_probe(spec: &UprobeSpec, target: &ResolvedTarget) -> Result<(), ResolveError> {
    if spec.ret.is_some() && !spec.force && target.go {
        return Err(ResolveError::GoReturnProbe(target.module.clone()));
    }
    Ok(())
}

/// The calling convention when the request names none: the runtime's for
/// JIT code, the platform's otherwise.
pub fn default_abi(target: &Target) -> Abi {
    match target {
        Target::Breakpoint(jit) => match jit.runtime {
            Runtime::Java => Abi::Java,
            Runtime::Node => Abi::V8,
            _ => Abi::Sysv,
        },
        Target::Uprobe(_) => Abi::Sysv,
    }
}

/// A method the app declares without compiled code: its callers split
/// into those that have code (`compiled` names every compiled method,
/// `Namespace.Type.Method(params)`) and the others, five of each at most.
pub fn no_code_of_its_own(
    pid: u32,
    declared: crate::runtime::NoCode,
    compiled: &std::collections::BTreeSet<String>,
) -> ResolveError {
    let has_code = |caller: &String| {
        compiled.iter().any(|name| {
            name.strip_prefix(caller.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('('))
        })
    };
    let (mut compiled_callers, mut other_callers): (Vec<String>, Vec<String>) =
        declared.callers.into_iter().partition(has_code);
    compiled_callers.truncate(5);
    other_callers.truncate(5);
    ResolveError::NoCodeOfItsOwn {
        method: declared.method,
        module: declared.module,
        pid,
        compiled_callers,
        other_callers,
    }
}

/// A name found neither in the executable nor in the JIT code: the
/// closest of both, JIT names first, five at most.
pub fn unknown_anywhere(
    name: &str,
    exe: &str,
    jit_closest: Vec<String>,
    elf_closest: Vec<String>,
) -> ResolveError {
    let mut closest = jit_closest;
    closest.extend(elf_closest);
    closest.truncate(5);
    ResolveError::UnknownSymbol {
        name: name.to_owned(),
        module: format!("{exe} or the process's JIT code"),
        closest,
    }
}

/// Whether finding a version's sites needs its code: for returns, and for
/// HotSpot's verified entry.
pub fn needs_code(runtime: Runtime, returns: bool) -> bool {
    returns || runtime == Runtime::Java
}

/// The entry and return sites of one version, from its code (empty when
/// [`needs_code`] says it is not needed).
pub fn sites(
    version: &Version,
    runtime: Runtime,
    code: &[u8],
    returns: bool,
) -> Result<VersionPlan, ResolveError> {
    let entry = if runtime == Runtime::Java {
        super::disasm::java_verified_entry(code, version.start)
    } else {
        version.start
    };
    let returns = if returns {
        let found = super::disasm::returns(code, version.start);
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

/// Versions in the order they get debug registers: the most optimized
/// tier first, then the latest code.
pub fn by_preference(mut versions: Vec<Version>) -> Vec<Version> {
    versions.sort_by_key(|v| std::cmp::Reverse((tier_rank(v.tier.as_deref()), v.start)));
    versions
}

/// Fits versions (in [`by_preference`] order, with their sites) into the
/// debug registers: those that fit, and those left out. The first one not
/// fitting alone is an error: nothing could be probed.
pub fn pack(
    name: &str,
    candidates: Vec<VersionPlan>,
) -> Result<(Vec<VersionPlan>, Vec<Version>), ResolveError> {
    let mut planned: Vec<VersionPlan> = Vec::new();
    let mut skipped = Vec::new();
    for sites in candidates {
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
            skipped.push(sites.version);
        }
    }
    Ok((planned, skipped))
}

/// The version to probe at `address`: the smallest named version holding
/// it, cut to start there (its returns are still its returns); unnamed
/// code only without returns, which need the code's range.
pub fn version_at(
    named: Vec<Version>,
    address: u64,
    returns: bool,
) -> Result<Version, ResolveError> {
    let holding = named
        .into_iter()
        .filter(|v| v.start <= address && address < v.start + v.size.max(1))
        .min_by_key(|v| v.size);
    match holding {
        Some(v) => Ok(Version {
            start: address,
            size: v.size - (address - v.start),
            ..v
        }),
        None if returns => Err(ResolveError::NoCodeRange { address }),
        None => Ok(Version {
            start: address,
            size: 0,
            name: format!("{address:#x}"),
            tier: None,
            source: jit::Source::PerfMap,
        }),
    }
}

/// A breakpoint at exactly `address`, if its sites fit the registers.
pub fn at_exactly(mut sites: VersionPlan, address: u64) -> Result<VersionPlan, ResolveError> {
    // The address asked for is the entry, whatever the runtime.
    sites.entry = address;
    let needed = sites.registers();
    if needed > DEBUG_REGISTERS {
        return Err(ResolveError::RegisterBudget {
            name: sites.version.name,
            needed,
        });
    }
    Ok(sites)
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

/// Basenames of the executable modules a process maps.
pub fn mapped_modules(maps: &[MapEntry]) -> Vec<String> {
    let mut names: Vec<String> = maps
        .iter()
        .filter(|m| m.is_exec() && m.is_file_backed())
        .filter_map(|m| m.path.as_deref()?.rsplit('/').next().map(str::to_owned))
        .collect();
    names.dedup();
    names
}

/// The full path of a mapped module named by basename or path.
pub fn mapped_path(maps: &[MapEntry], module: &str) -> Option<String> {
    maps.iter()
        .filter_map(|m| m.path.as_deref())
        .find(|p| *p == module || p.rsplit('/').next() == Some(module))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, perms: &str, inode: u64, path: Option<&str>) -> MapEntry {
        MapEntry {
            start,
            end,
            perms: perms.to_owned(),
            offset: 0x1000,
            inode,
            path: path.map(str::to_owned),
        }
    }

    fn version(start: u64, size: u64, tier: Option<&str>) -> Version {
        Version {
            start,
            size,
            name: format!("M@{start:#x}"),
            tier: tier.map(str::to_owned),
            source: jit::Source::DotnetRuntime,
        }
    }

    fn with_returns(v: Version, returns: usize) -> VersionPlan {
        VersionPlan {
            entry: v.start,
            returns: (0..returns as u64).map(|i| v.start + 10 + i).collect(),
            version: v,
        }
    }

    #[test]
    fn the_binary_is_the_one_named_or_mapped_or_the_executable() {
        let maps = [map(0x1000, 0x2000, "r-xp", 7, Some("/usr/lib/libc.so.6"))];
        assert_eq!(
            binary_for(None, Some("/app/x"), None, &maps).unwrap(),
            BinaryChoice::Path("/app/x".into())
        );
        assert_eq!(
            binary_for(Some("libc.so.6"), None, Some(3), &maps).unwrap(),
            BinaryChoice::Path("/usr/lib/libc.so.6".into())
        );
        match binary_for(Some("libz.so"), None, Some(3), &maps) {
            Err(ResolveError::Module(e)) => assert!(e.to_string().contains("libz.so"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            binary_for(None, None, Some(3), &maps).unwrap(),
            BinaryChoice::Executable
        );
        assert!(matches!(
            binary_for(Some("libc.so.6"), None, None, &maps),
            Err(ResolveError::NoBinary)
        ));
    }

    #[test]
    fn addresses_are_file_code_jit_code_or_refused() {
        let maps = [
            map(0x1000, 0x2000, "r-xp", 7, Some("/app/x (deleted)")),
            map(0x2000, 0x3000, "rw-p", 0, Some("[heap]")),
            map(0x3000, 0x4000, "rwxp", 0, None),
            map(0x4000, 0x5000, "r-xs", 9, Some("/memfd:jit (deleted)")),
        ];
        assert_eq!(
            at_address(&maps, 0x1010).unwrap(),
            AtAddress::File {
                path: "/app/x".into(),
                module: "/app/x (deleted)".into(),
                offset: 0x1010,
            }
        );
        assert!(matches!(
            at_address(&maps, 0x2010),
            Err(ResolveError::NotCode(0x2010))
        ));
        assert_eq!(at_address(&maps, 0x3010).unwrap(), AtAddress::Jit);
        assert_eq!(at_address(&maps, 0x4010).unwrap(), AtAddress::Jit);
        assert!(matches!(
            at_address(&maps, 0x9000),
            Err(ResolveError::Unmapped(0x9000))
        ));
    }

    #[test]
    fn versions_fill_the_registers_most_optimized_first() {
        let ordered = by_preference(vec![
            version(0x100, 16, Some("QuickJitted")),
            version(0x300, 16, Some("OptimizedTier1")),
            version(0x200, 16, None),
            version(0x400, 16, Some("OptimizedTier1")),
        ]);
        let starts: Vec<u64> = ordered.iter().map(|v| v.start).collect();
        assert_eq!(starts, [0x400, 0x300, 0x100, 0x200]);
        // Two registers each: two versions fit, two are left out.
        let candidates = ordered.into_iter().map(|v| with_returns(v, 1)).collect();
        let (planned, skipped) = pack("M", candidates).unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].version.start, 0x400);
        assert_eq!(skipped.len(), 2);
        // One version with more returns than registers: nothing to probe.
        let e = pack("M", vec![with_returns(version(0x100, 64, None), 4)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "M needs 5 breakpoints (its entry and 4 returns), and x86-64 has 4 debug registers"
        );
        assert_eq!(pack("M", Vec::new()).unwrap(), (Vec::new(), Vec::new()));
    }

    #[test]
    fn an_address_inside_a_method_starts_a_shorter_version() {
        let named = vec![version(0x100, 0x100, None), version(0x180, 0x20, None)];
        let v = version_at(named.clone(), 0x190, true).unwrap();
        assert_eq!((v.start, v.size, v.name.as_str()), (0x190, 0x10, "M@0x180"));
        assert!(matches!(
            version_at(named.clone(), 0x900, true),
            Err(ResolveError::NoCodeRange { address: 0x900 })
        ));
        let bare = version_at(named, 0x900, false).unwrap();
        assert_eq!((bare.size, bare.name.as_str()), (0, "0x900"));
        let e = at_exactly(with_returns(version(0x100, 64, None), 4), 0x104).unwrap_err();
        assert!(matches!(e, ResolveError::RegisterBudget { needed: 5, .. }));
        let fits = at_exactly(with_returns(version(0x100, 64, None), 1), 0x104).unwrap();
        assert_eq!(fits.entry, 0x104);
    }

    #[test]
    fn sites_come_from_the_code() {
        // push rbp; mov rbp, rsp; pop rbp; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3];
        let v = version(0x1000, code.len() as u64, None);
        let plan = sites(&v, Runtime::Dotnet, &code, true).unwrap();
        assert_eq!(
            (plan.entry, plan.returns.as_slice()),
            (0x1000, &[0x1005][..])
        );
        assert!(matches!(
            sites(&v, Runtime::Dotnet, &code[..4], true),
            Err(ResolveError::NoReturns { .. })
        ));
        assert!(
            sites(&v, Runtime::Dotnet, &[], false)
                .unwrap()
                .returns
                .is_empty()
        );
        assert!(needs_code(Runtime::Java, false) && needs_code(Runtime::Dotnet, true));
        assert!(!needs_code(Runtime::Node, false));
    }

    #[test]
    fn a_method_without_code_names_its_callers_that_have_code() {
        let compiled: std::collections::BTreeSet<String> =
            ["App.Run()", "App.Other(int32)", "App.RunFast(int32)"]
                .into_iter()
                .map(String::from)
                .collect();
        let declared = crate::runtime::NoCode {
            method: "App.Add".into(),
            module: "/app/App.dll".into(),
            callers: vec!["App.Run".into(), "App.Run2".into(), "App.RunFast".into()],
        };
        match no_code_of_its_own(7, declared, &compiled) {
            ResolveError::NoCodeOfItsOwn {
                compiled_callers,
                other_callers,
                ..
            } => {
                assert_eq!(compiled_callers, ["App.Run", "App.RunFast"]);
                assert_eq!(other_callers, ["App.Run2"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_names_suggest_from_both_places() {
        let e = unknown_anywhere(
            "Calc",
            "/app/x",
            vec!["Calc2".into(), "Calk".into()],
            (0..5).map(|i| format!("calc{i}")).collect(),
        );
        match e {
            ResolveError::UnknownSymbol {
                closest, module, ..
            } => {
                assert_eq!(closest, ["Calc2", "Calk", "calc0", "calc1", "calc2"]);
                assert_eq!(module, "/app/x or the process's JIT code");
            }
            other => panic!("{other:?}"),
        }
    }
}
