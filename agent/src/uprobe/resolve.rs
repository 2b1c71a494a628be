//! Resolving a uprobe request to a file and an offset (the plan): the
//! symbol, offset or address it names, in the binary the process maps,
//! read as the process sees it.

use std::path::PathBuf;

use object::{Object as _, ObjectSegment as _, SegmentFlags};

use super::spec::{TargetSpec, UprobeSpec};
use super::symbols::{self, elf_functions, file_offset};
use crate::process;
use crate::procfs::{MapEntry, Procfs};

/// A probe point: the file as the agent can open it, and the offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// Path the kernel attaches to (through `/proc/PID/root` for files in
    /// the app's container).
    pub path: PathBuf,
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
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Binary {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ELF object.
    #[error("{0} is not an ELF file")]
    NotElf(String),
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
    /// The address is in anonymous memory (JIT code).
    #[error(
        "address {0:#x} is in anonymous memory (JIT code or heap), which uprobes cannot attach to"
    )]
    Anonymous(u64),
    /// The address is not mapped at all.
    #[error("address {0:#x} is not mapped in the process")]
    Unmapped(u64),
    /// Neither a process nor a file to look the symbol up in.
    #[error("symbol= without pid= needs binary=PATH")]
    NoBinary,
    /// A uretprobe on a Go binary.
    #[error(
        "{0} is a Go binary: uretprobes can crash Go programs (stack moves and goroutine switches break the return trampoline)"
    )]
    GoReturnProbe(String),
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ResolveError> {
    std::fs::read(path).map_err(|source| ResolveError::Binary {
        path: path.display().to_string(),
        source,
    })
}

/// Finds `name` among the functions of an ELF image; C++ names match with
/// or without their parameter list.
pub fn find_symbol(data: &[u8], name: &str, module: &str) -> Result<u64, ResolveError> {
    let (functions, segments) =
        elf_functions(data).ok_or_else(|| ResolveError::NotElf(module.to_owned()))?;
    let hit = functions
        .iter()
        .find(|f| f.name == name || f.name.split('(').next() == Some(name))
        .and_then(|f| file_offset(f.svma, &segments));
    hit.ok_or_else(|| {
        // Compare with the whole name and with its last path segment, so
        // `parse` finds `myapp::config::parse(...)`.
        let short = |n: &str| -> String {
            let base = n.split('(').next().unwrap_or(n);
            base.rsplit("::").next().unwrap_or(base).to_owned()
        };
        let mut scored: Vec<(usize, &str)> = functions
            .iter()
            .map(|f| {
                let d = strsim::levenshtein(&f.name, name)
                    .min(strsim::levenshtein(&short(&f.name), &short(name)));
                (d, f.name.as_str())
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        ResolveError::UnknownSymbol {
            name: name.to_owned(),
            module: module.to_owned(),
            closest: scored
                .into_iter()
                .take(5)
                .map(|(_, n)| n.to_owned())
                .collect(),
        }
    })
}

/// Checks that `offset` lies in an executable segment.
pub fn check_offset(data: &[u8], offset: u64, module: &str) -> Result<(), ResolveError> {
    let file = object::File::parse(data).map_err(|_| ResolveError::NotElf(module.to_owned()))?;
    let in_text = file.segments().any(|s| {
        let (start, size) = s.file_range();
        let exec =
            matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
        exec && start <= offset && offset < start + size
    });
    if in_text {
        Ok(())
    } else {
        Err(ResolveError::OffsetOutsideText {
            offset,
            module: module.to_owned(),
        })
    }
}

/// Resolves the request's target to a file and offset.
pub fn resolve(spec: &UprobeSpec, procfs: &Procfs) -> Result<ResolvedTarget, ResolveError> {
    let maps = match spec.pid {
        Some(pid) => Some(
            procfs
                .maps(pid)
                .map_err(|_| crate::procfs::PidNotVisible(pid))?,
        ),
        None => None,
    };
    // A path as the process sees it, opened from the agent.
    let visible = |path: &str| match spec.pid {
        Some(pid) => procfs.in_root(pid, std::path::Path::new(path)),
        None => PathBuf::from(path),
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
            let path = visible(&module_path);
            let data = read_file(&path)?;
            let offset = find_symbol(&data, name, &module_path)?;
            ResolvedTarget {
                path,
                module: module_path,
                offset,
            }
        }
        TargetSpec::Offset { offset, binary } => {
            let path = visible(binary);
            let data = read_file(&path)?;
            check_offset(&data, *offset, binary)?;
            ResolvedTarget {
                path,
                module: binary.clone(),
                offset: *offset,
            }
        }
        TargetSpec::Address(address) => {
            let maps = maps.unwrap_or_default();
            let map: &MapEntry = crate::procfs::mapping_at(&maps, *address)
                .ok_or(ResolveError::Unmapped(*address))?;
            if !map.is_file_backed() {
                return Err(ResolveError::Anonymous(*address));
            }
            let module = map.path.clone().unwrap_or_default();
            ResolvedTarget {
                path: visible(map.file_path().unwrap_or_default()),
                offset: address - map.start + map.offset,
                module,
            }
        }
    };
    if spec.ret.is_some() && !spec.force && process::is_go_binary(&resolved.path) {
        return Err(ResolveError::GoReturnProbe(resolved.module));
    }
    Ok(resolved)
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

    #[test]
    fn closest_names_are_suggested() {
        let data = std::fs::read("/proc/self/exe").unwrap_or_default();
        match find_symbol(&data, "closest_names_are_sugested", "self") {
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
        let data = std::fs::read("/proc/self/exe").unwrap_or_default();
        assert!(matches!(
            check_offset(&data, u64::MAX / 2, "self"),
            Err(ResolveError::OffsetOutsideText { .. })
        ));
        // The ELF header is in a read-only segment.
        assert!(check_offset(&data, 0, "self").is_err());
    }
}
