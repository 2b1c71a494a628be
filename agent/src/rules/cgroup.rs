//! A container's memory, pressure and OOM kills, read from its cgroup:
//! what the `memory`, `pressure` and `oom_kill` triggers watch.
//!
//! **Which cgroup.** A process's line in `/proc/PID/cgroup` names it: the
//! v1 `memory` controller's line, else the v2 (`0::`) line. The path is
//! joined to the hierarchy mounted at `/sys/fs/cgroup` (in a pod, the
//! host's, which the webhook mounts read-only). When the path is not
//! absolute in that hierarchy (a cgroup namespace shows the app's cgroup
//! as `/../cri-containerd-ID.scope`, relative to the agent's own), the
//! directory with the path's last name is looked for under the mount, at
//! most [`SEARCH_DEPTH`] deep and [`SEARCH_DIRS`] directories in all. In
//! both cases the directory's `cgroup.procs` must list the process, so a
//! directory of the same name elsewhere is never taken for it. Every file
//! read is the kernel's (cgroupfs), and every read is bounded.
//!
//! **What is read.** v2: `memory.current` less `inactive_file` of
//! `memory.stat` (the working set the kubelet evicts by) against the
//! nearest `memory.max` up the tree; `memory.events` `oom_kill`;
//! `RESOURCE.pressure` `some avg10`. v1: `memory.usage_in_bytes` less
//! `total_inactive_file` against the nearest `memory.limit_in_bytes`;
//! `memory.oom_control` `oom_kill`. v1 has no pressure per cgroup: the v2
//! hierarchy's cgroup of the process is read when it is not the root (on
//! a hybrid host it usually is), else `/proc/pressure/RESOURCE`, the
//! node's, and the reading says so.

use std::path::{Path, PathBuf};

use super::spec::Resource;

/// How deep the search for a cgroup by name goes.
pub const SEARCH_DEPTH: usize = 8;
/// How many directories the search visits at most.
pub const SEARCH_DIRS: usize = 50_000;
/// The most read of one cgroup file (`cgroup.procs` of a large cgroup
/// included).
const FILE_BYTES: u64 = 1 << 20;

/// Which hierarchy a cgroup is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The v1 `memory` controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A process's memory cgroup, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Its directory.
    pub dir: PathBuf,
    /// Its hierarchy.
    pub version: Version,
    /// The v2 directory to read pressure from (`None`: the node's).
    pub pressure_dir: Option<PathBuf>,
}

/// Why a cgroup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/PID/cgroup` names no memory cgroup that could be found.
    #[error("cannot find the memory cgroup of pid {pid} under {root} ({why})")]
    NotFound {
        /// The process.
        pid: u32,
        /// The mount searched.
        root: String,
        /// What was tried.
        why: String,
    },
    /// A file of it cannot be read or parsed.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

/// The lines of `/proc/PID/cgroup` that matter: the v1 memory
/// controller's path and the v2 path.
pub fn parse_proc_cgroup(text: &str) -> (Option<&str>, Option<&str>) {
    let mut v1 = None;
    let mut v2 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        } else if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        }
    }
    (v1, v2)
}

/// The value of `key` in a flat-keyed file (`memory.stat`,
/// `memory.events`, `memory.oom_control`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// `some avg10` of a PSI file.
pub fn some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

fn read(path: &Path) -> Result<String, CgroupError> {
    let failed = |why: String| CgroupError::Read {
        path: path.display().to_string(),
        why,
    };
    let bytes = crate::procfs::read_bounded(path, FILE_BYTES).map_err(|e| failed(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| failed(e.to_string()))
}

fn lists(dir: &Path, pid: u32) -> bool {
    read(&dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().any(|l| l.trim().parse() == Ok(pid)))
}

/// Finds the memory cgroup of `pid`, whose `/proc/PID/cgroup` is
/// `proc_cgroup`, under `root` (`/sys/fs/cgroup`).
pub fn find(pid: u32, proc_cgroup: &str, root: &Path) -> Result<Cgroup, CgroupError> {
    let (v1, v2) = parse_proc_cgroup(proc_cgroup);
    let not_found = |why: String| CgroupError::NotFound {
        pid,
        root: root.display().to_string(),
        why,
    };
    let v2_root = if root.join("unified").is_dir() {
        root.join("unified")
    } else {
        root.to_path_buf()
    };
    let pressure_dir = v2.and_then(|path| locate(pid, path, &v2_root));
    let (path, base, version) = match (v1, v2) {
        (Some(path), _) => (path, root.join("memory"), Version::V1),
        (None, Some(path)) => (path, v2_root.clone(), Version::V2),
        (None, None) => return Err(not_found("no memory or v2 line in /proc/PID/cgroup".into())),
    };
    let dir = locate(pid, path, &base).ok_or_else(|| {
        not_found(format!(
            "{path:?} is not under {}, or its cgroup.procs does not list the process",
            base.display()
        ))
    })?;
    Ok(Cgroup {
        dir,
        version,
        pressure_dir: pressure_dir.filter(|d| *d != v2_root),
    })
}

/// The directory of `path` under `base` that lists `pid`: the path
/// itself when it is absolute there, else the search by its last name.
fn locate(pid: u32, path: &str, base: &Path) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    if !relative.split('/').any(|c| c == "..") {
        let dir = base.join(relative);
        if lists(&dir, pid) {
            return Some(dir);
        }
    }
    let name = relative
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "..")?;
    let mut queue = std::collections::VecDeque::from([(base.to_path_buf(), 0usize)]);
    let mut visited = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > SEARCH_DIRS {
                return None;
            }
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child = entry.path();
            if entry.file_name() == name && lists(&child, pid) {
                return Some(child);
            }
            if depth + 1 < SEARCH_DEPTH {
                queue.push_back((child, depth + 1));
            }
        }
    }
    None
}

/// The memory a cgroup holds against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// The working set: usage less inactive file pages.
    pub working_set: u64,
    /// The nearest limit up the tree.
    pub limit: Option<u64>,
}

impl MemoryUse {
    /// The working set in percent of the limit.
    pub fn percent(&self) -> Option<f64> {
        self.limit
            .filter(|l| *l > 0)
            .map(|l| self.working_set as f64 * 100.0 / l as f64)
    }
}

impl Cgroup {
    fn names(&self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self.version {
            Version::V1 => (
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "total_inactive_file",
                "memory.oom_control",
            ),
            Version::V2 => (
                "memory.current",
                "memory.max",
                "inactive_file",
                "memory.events",
            ),
        }
    }

    /// Its memory use and limit.
    pub fn memory(&self, root: &Path) -> Result<MemoryUse, CgroupError> {
        let (usage, limit, inactive, _) = self.names();
        let path = self.dir.join(usage);
        let used: u64 = read(&path)?.trim().parse().map_err(|_| CgroupError::Read {
            path: path.display().to_string(),
            why: "not a number".into(),
        })?;
        let inactive = read(&self.dir.join("memory.stat"))
            .ok()
            .and_then(|s| keyed(&s, inactive))
            .unwrap_or(0);
        let limit = self
            .dir
            .ancestors()
            .take_while(|d| d.starts_with(root))
            .find_map(|d| {
                read(&d.join(limit))
                    .ok()
                    .and_then(|t| crate::memory::parse_cgroup_limit(&t))
            });
        Ok(MemoryUse {
            working_set: used.saturating_sub(inactive),
            limit,
        })
    }

    /// OOM kills in it so far.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let (_, _, _, events) = self.names();
        let path = self.dir.join(events);
        keyed(&read(&path)?, "oom_kill").ok_or_else(|| CgroupError::Read {
            path: path.display().to_string(),
            why: "no oom_kill count (a kernel before 4.13)".into(),
        })
    }

    /// `some avg10` of `resource`, and whether it is the node's.
    pub fn pressure(
        &self,
        resource: Resource,
        proc_root: &Path,
    ) -> Result<(f64, bool), CgroupError> {
        let (path, node) = match &self.pressure_dir {
            Some(dir) => (dir.join(format!("{}.pressure", resource.name())), false),
            None => (proc_root.join("pressure").join(resource.name()), true),
        };
        let value = some_avg10(&read(&path)?).ok_or_else(|| CgroupError::Read {
            path: path.display().to_string(),
            why: "no `some avg10=` line".into(),
        })?;
        Ok((value, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_files() {
        let hybrid = "4:memory:/kubepods/pod1/abc\n1:cpu:/\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(hybrid),
            (Some("/kubepods/pod1/abc"), Some("/"))
        );
        assert_eq!(
            parse_proc_cgroup("0::/../cri-x.scope\n"),
            (None, Some("/../cri-x.scope"))
        );
        assert_eq!(
            keyed("low 0\nhigh 3\noom 1\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n", "oom_kill"),
            Some(5)
        );
        assert_eq!(keyed("cache 1\n", "oom_kill"), None);
        let psi = "some avg10=12.50 avg60=3.00 avg300=1.00 total=99\nfull avg10=1.00 avg60=0 avg300=0 total=1\n";
        assert_eq!(some_avg10(psi), Some(12.5));
        assert_eq!(some_avg10("full avg10=1.00\n"), None);
        assert_eq!(crate::memory::parse_cgroup_limit("max\n"), None);
        assert_eq!(
            crate::memory::parse_cgroup_limit("9223372036854771712\n"),
            None
        );
        assert_eq!(
            crate::memory::parse_cgroup_limit("67108864\n"),
            Some(64 << 20)
        );
        let used = MemoryUse {
            working_set: 48 << 20,
            limit: Some(64 << 20),
        };
        assert_eq!(used.percent(), Some(75.0));
        assert_eq!(
            MemoryUse {
                limit: None,
                ..used
            }
            .percent(),
            None
        );
    }

    #[test]
    fn finds_a_cgroup_only_where_it_lists_the_process() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path();
        let scope = v2.join("kubepods.slice/pod1.slice/cri-app.scope");
        std::fs::create_dir_all(&scope).unwrap();
        std::fs::write(scope.join("cgroup.procs"), "7\n8\n").unwrap();
        std::fs::write(scope.join("memory.current"), "1000\n").unwrap();
        std::fs::write(scope.join("memory.stat"), "anon 1\ninactive_file 200\n").unwrap();
        std::fs::write(scope.join("memory.max"), "max\n").unwrap();
        std::fs::write(scope.parent().unwrap().join("memory.max"), "2000\n").unwrap();
        std::fs::write(scope.join("memory.events"), "oom 0\noom_kill 3\n").unwrap();
        std::fs::write(
            scope.join("memory.pressure"),
            "some avg10=4.00 avg60=0 avg300=0 total=0\n",
        )
        .unwrap();
        // The same name elsewhere, without the process: never taken.
        let decoy = v2.join("other/cri-app.scope");
        std::fs::create_dir_all(&decoy).unwrap();
        std::fs::write(decoy.join("cgroup.procs"), "9\n").unwrap();
        // Absolute, and relative to a cgroup namespace.
        for line in [
            "0::/kubepods.slice/pod1.slice/cri-app.scope\n",
            "0::/../cri-app.scope\n",
        ] {
            let found = find(8, line, v2).unwrap();
            assert_eq!(found.dir, scope, "{line}");
            assert_eq!(found.version, Version::V2);
            let memory = found.memory(v2).unwrap();
            assert_eq!(
                memory,
                MemoryUse {
                    working_set: 800,
                    limit: Some(2000)
                }
            );
            assert_eq!(found.oom_kills().unwrap(), 3);
            assert_eq!(
                found
                    .pressure(Resource::Memory, Path::new("/nonexistent"))
                    .unwrap(),
                (4.0, false)
            );
        }
        assert_eq!(find(9, "0::/../cri-app.scope\n", v2).unwrap().dir, decoy);
        assert!(
            find(10, "0::/../cri-app.scope\n", v2).is_err_and(|e| e.to_string().contains("pid 10"))
        );
        assert!(find(8, "0::/../elsewhere.scope\n", v2).is_err());
        // The root cgroup's pressure is the node's.
        std::fs::write(v2.join("cgroup.procs"), "8\n").unwrap();
        let proc_root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc_root.path().join("pressure")).unwrap();
        std::fs::write(
            proc_root.path().join("pressure/cpu"),
            "some avg10=1.50 avg60=0 avg300=0 total=0\n",
        )
        .unwrap();
        let at_root = Cgroup {
            pressure_dir: None,
            ..find(8, "0::/kubepods.slice/pod1.slice/cri-app.scope\n", v2).unwrap()
        };
        assert_eq!(
            at_root.pressure(Resource::Cpu, proc_root.path()).unwrap(),
            (1.5, true)
        );
    }
}
