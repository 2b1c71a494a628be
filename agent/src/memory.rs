//! The agent's memory bound.
//!
//! The sidecar has a memory limit (256 MiB by default). A capture that
//! grows past it gets the whole container OOM-killed, with every other
//! capture, probe and LTTng session in it. So the agent watches what its
//! container holds and answers before the kernel does:
//!
//! - nothing new starts (a capture of any kind, or a probe) while the
//!   container holds [`ADMIT_PERCENT`] % of the limit or more: 503;
//! - a running profile (`/v1/profile`, `/debug/pprof/profile`, each
//!   capture of `/v1/profile/trigger`) stops when what the container
//!   holds, plus what rendering its stacks will take, reaches
//!   [`STOP_PERCENT`] %: it frees its stacks and answers 503, saying how
//!   far it got. Rendering is projected from the frames of the distinct
//!   stacks held and the format
//!   ([`crate::stacks::Format::result_bytes_per_frame`]): after the
//!   capture, the stacks are named and drawn, which takes from 8 (folded)
//!   to 128 (pretty JSON) bytes per frame. What was captured is not
//!   returned: a result cut short without saying so would mislead.
//!
//! **The limit** is, in this order: `--memory-limit`
//! (`TRACECAR_MEMORY_LIMIT`; the webhook sets it from the sidecar's
//! `limits.memory` through the Downward API), else the limit of the
//! agent's own memory cgroup when it can be read (cgroup v2 `memory.max`,
//! v1 `memory.limit_in_bytes`; read again at every check, so a resize is
//! seen), else none: no bound, and `/v1/capabilities` says so. In a pod the
//! cgroup is usually not readable (the host's `/sys` is mounted over the
//! container's), hence the Downward API.
//!
//! **What the container holds** is counted, not read from the cgroup
//! (for the same reason): the resident anonymous memory (`RssAnon`) of
//! every process in the agent's cgroups (the agent, `lttng-sessiond` and
//! its consumer, `babeltrace2`, an exec'd `curl`), plus the BPF ring
//! buffers the probes hold (kernel memory charged to the cgroup). Not
//! counted: page cache, which the kernel reclaims before it kills, and
//! LTTng's shared-memory buffers, which the session's plan sizes.
//!
//! The checks are periodic (every [`CHECK_EVERY`] in a profile that grows
//! by [`CHECK_FRAMES`] frames between them, every [`CHECK_IDLE`] in one
//! that grows slower, such as continuous profiling's 19 Hz windows), so an
//! allocation burst between two of them is not seen: the margin between
//! [`STOP_PERCENT`] and the limit is what absorbs it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::procfs::Procfs;

/// Nothing new starts at or above this share of the limit.
pub const ADMIT_PERCENT: u64 = 70;
/// A running profile stops at or above this share of the limit.
pub const STOP_PERCENT: u64 = 85;
/// How often a running profile looks, at most.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// A profile looks when it holds this many more frames than at its last
/// look (about 100 KiB at the renderers' costs per frame)…
pub const CHECK_FRAMES: u64 = 1024;
/// … or when this long has passed since, grown or not (other captures and
/// probes grow the container too).
pub const CHECK_IDLE: Duration = Duration::from_secs(5);

/// Where the limit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--memory-limit` / `TRACECAR_MEMORY_LIMIT`.
    Configured,
    /// The agent's memory cgroup: the file read.
    Cgroup(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Configured => f.write_str("--memory-limit"),
            Self::Cgroup(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A memory limit and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Bytes.
    pub bytes: u64,
    /// Where it came from.
    pub source: Source,
}

/// The container is too close to its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the agent's container holds {} MiB of its {} MiB memory limit (from {}){}: {}% or more",
    used >> 20,
    limit.bytes >> 20,
    limit.source,
    if *reserved > 0 { format!(", and rendering this profile needs about {} MiB more", reserved.div_ceil(1 << 20)) } else { String::new() },
    percent
)]
pub struct Pressure {
    /// Bytes held.
    pub used: u64,
    /// Bytes the caller will take on top (a profile's rendering).
    pub reserved: u64,
    /// The limit.
    pub limit: Limit,
    /// The mark passed ([`ADMIT_PERCENT`] or [`STOP_PERCENT`]).
    pub percent: u64,
}

/// Whether `used` bytes reach `percent` % of `limit` bytes.
pub fn reaches(used: u64, limit: u64, percent: u64) -> bool {
    u128::from(used) * 100 >= u128::from(limit) * u128::from(percent)
}

/// A cgroup limit file's value: `max` (v2) or a page-rounded
/// `i64::MAX` (v1) mean none.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 62).then_some(value)
}

/// The limit files of the cgroups named in `/proc/self/cgroup`, under
/// `root` (`/sys/fs/cgroup`), most specific first: the v1 memory
/// controller's, then the v2 hierarchy's (mounted at `root` or, on a
/// hybrid host, `root/unified`). A cgroup shown as `/` is skipped: it is
/// either the root (no limit) or the root of a cgroup namespace, whose
/// place in the host's hierarchy mounted here is unknown.
pub fn cgroup_limit_files(self_cgroup: &str, root: &Path) -> Vec<PathBuf> {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if relative.is_empty() || relative.split('/').any(|c| c == "..") {
            continue;
        }
        if controllers.split(',').any(|c| c == "memory") {
            v1.push(
                root.join("memory")
                    .join(relative)
                    .join("memory.limit_in_bytes"),
            );
        } else if controllers.is_empty() {
            v2.push(root.join(relative).join("memory.max"));
            v2.push(root.join("unified").join(relative).join("memory.max"));
        }
    }
    v1.into_iter().chain(v2).collect()
}

/// A quantity of bytes as `--memory-limit` takes it: a number of bytes
/// (what the Downward API gives), or with a Kubernetes suffix (`Ki`,
/// `Mi`, `Gi`, `Ti`, or the decimal `k`, `M`, `G`, `T`).
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let scale: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: a number of bytes, optionally with Ki, Mi, Gi, Ti, k, M, G or T"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: a positive number of bytes, e.g. 256Mi"))
}

/// The agent's view of its container's memory.
#[derive(Debug)]
pub struct Memory {
    procfs: Procfs,
    configured: Option<u64>,
    /// `/proc/self/cgroup` at start: processes with the same text are in
    /// the agent's container.
    own_cgroup: Option<String>,
    cgroup_root: PathBuf,
    /// The last reading, kept for [`CHECK_EVERY`] so that concurrent
    /// captures do not each walk `/proc`.
    last: Mutex<Option<(Instant, u64)>>,
}

impl Memory {
    /// The bound of the agent running this code: `configured` bytes, or
    /// its cgroup's limit.
    pub fn new(procfs: Procfs, configured: Option<u64>) -> Self {
        let own_cgroup = procfs.cgroup(std::process::id()).ok();
        Self {
            procfs,
            configured,
            own_cgroup,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            last: Mutex::new(None),
        }
    }

    /// The limit now, if any.
    pub fn limit(&self) -> Option<Limit> {
        if let Some(bytes) = self.configured {
            return Some(Limit {
                bytes,
                source: Source::Configured,
            });
        }
        let own = self.own_cgroup.as_deref()?;
        cgroup_limit_files(own, &self.cgroup_root)
            .into_iter()
            .find_map(|file| {
                let bytes = parse_cgroup_limit(&std::fs::read_to_string(&file).ok()?)?;
                Some(Limit {
                    bytes,
                    source: Source::Cgroup(file),
                })
            })
    }

    /// Bytes the container holds now (see the module's documentation).
    pub fn used(&self) -> u64 {
        let kib: u64 = self
            .procfs
            .pids()
            .unwrap_or_default()
            .into_iter()
            .filter(|pid| match self.own_cgroup.as_deref() {
                Some(own) => self.procfs.cgroup(*pid).is_ok_and(|theirs| theirs == own),
                None => *pid == std::process::id(),
            })
            .filter_map(|pid| self.procfs.status(pid).ok()?.rss_anon_kib)
            .sum();
        (kib << 10).saturating_add(ring_bytes_held())
    }

    /// [`Self::used`], or the reading of less than [`CHECK_EVERY`] ago.
    fn used_recently(&self) -> u64 {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *last {
            Some((at, used)) if at.elapsed() < CHECK_EVERY => used,
            _ => {
                let used = self.used();
                *last = Some((Instant::now(), used));
                used
            }
        }
    }

    fn below(
        &self,
        percent: u64,
        used: impl FnOnce() -> u64,
        reserved: u64,
    ) -> Result<(), Pressure> {
        // Without a limit there is nothing to count against.
        let Some(limit) = self.limit() else {
            return Ok(());
        };
        let used = used();
        if reaches(used.saturating_add(reserved), limit.bytes, percent) {
            return Err(Pressure {
                used,
                reserved,
                limit,
                percent,
            });
        }
        Ok(())
    }

    /// `Err` when nothing new should start ([`ADMIT_PERCENT`]). Always a
    /// fresh reading: what just ended has given its memory back.
    pub fn admit(&self) -> Result<(), Pressure> {
        self.below(
            ADMIT_PERCENT,
            || {
                let used = self.used();
                if let Ok(mut last) = self.last.lock() {
                    *last = Some((Instant::now(), used));
                }
                used
            },
            0,
        )
    }

    /// The `memory` entry of `/v1/capabilities`.
    pub fn report(&self) -> tracecar_api::capabilities::MemoryCheck {
        use tracecar_api::capabilities::{Check, MemoryCheck};
        let used = self.used();
        let limit = self.limit();
        let check = match &limit {
            None => Check::ok(format!(
                "holds {} MiB; no limit known, so no bound: captures can grow until the kernel's OOM killer acts",
                used >> 20
            )),
            Some(limit) if reaches(used, limit.bytes, ADMIT_PERCENT) => Check::fail(
                format!(
                    "holds {} MiB of a {} MiB limit (from {}): {ADMIT_PERCENT}% or more, so nothing new starts",
                    used >> 20,
                    limit.bytes >> 20,
                    limit.source
                ),
                "wait for running captures and probes to end, or raise the sidecar's memory limit (the webhook config's resources.limits.memory)",
            ),
            Some(limit) => Check::ok(format!(
                "holds {} MiB of a {} MiB limit (from {}): new captures start below {ADMIT_PERCENT}%, profiles stop at {STOP_PERCENT}%",
                used >> 20,
                limit.bytes >> 20,
                limit.source
            )),
        };
        MemoryCheck {
            check,
            limit_from: limit.as_ref().map(|l| l.source.to_string()),
            limit_bytes: limit.map(|l| l.bytes),
            used_bytes: used,
            admit_percent: ADMIT_PERCENT,
            stop_percent: STOP_PERCENT,
        }
    }

    /// `Err` when a running profile that will take `reserved` bytes more
    /// to finish should stop ([`STOP_PERCENT`]).
    pub fn check(&self, reserved: u64) -> Result<(), Pressure> {
        self.below(STOP_PERCENT, || self.used_recently(), reserved)
    }
}

/// BPF ring-buffer bytes held by probes now, agent-wide: kernel memory
/// charged to the sidecar's cgroup. The probes' budget
/// ([`crate::uprobe::attach::RingLease`]) takes and gives back through
/// [`ring_bytes`]; [`Memory`] counts what they hold.
static RING_BYTES: std::sync::Mutex<u64> = std::sync::Mutex::new(0);

/// The ring bytes held now, locked, for a lease to take or give back.
pub fn ring_bytes() -> std::sync::MutexGuard<'static, u64> {
    RING_BYTES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ring bytes the probes hold now, agent-wide.
pub fn ring_bytes_held() -> u64 {
    *ring_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_shares_of_the_limit() {
        let mib = 1u64 << 20;
        assert!(!reaches(179 * mib, 256 * mib, ADMIT_PERCENT));
        assert!(reaches(180 * mib, 256 * mib, ADMIT_PERCENT));
        assert!(!reaches(217 * mib, 256 * mib, STOP_PERCENT));
        assert!(reaches(218 * mib, 256 * mib, STOP_PERCENT));
        // No overflow at the extremes.
        assert!(reaches(u64::MAX, u64::MAX, 100));
        assert!(!reaches(0, u64::MAX, 1));
    }

    #[test]
    fn cgroup_limits() {
        assert_eq!(parse_cgroup_limit("268435456\n"), Some(256 << 20));
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit(""), None);
    }

    #[test]
    fn limit_files_of_v1_hybrid_and_v2() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/user.slice\n";
        assert_eq!(
            cgroup_limit_files(hybrid, root),
            vec![
                root.join("memory/process_api/abc/memory.limit_in_bytes"),
                root.join("user.slice/memory.max"),
                root.join("unified/user.slice/memory.max"),
            ]
        );
        // A cgroup namespace's root, or a path leaving it, says nothing of
        // where the agent is in the hierarchy mounted here.
        assert!(cgroup_limit_files("0::/\n", root).is_empty());
        assert!(cgroup_limit_files("0::/../../kubepods\n", root).is_empty());
        assert!(cgroup_limit_files("garbage", root).is_empty());
        assert_eq!(
            cgroup_limit_files("0::/kubepods/pod1/c2\n", root)[0],
            root.join("kubepods/pod1/c2/memory.max")
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("268435456"), Ok(256 << 20));
        assert_eq!(parse_quantity("256Mi"), Ok(256 << 20));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity("300M"), Ok(300_000_000));
        for bad in ["", "0", "-1", "12MB", "Mi", "1.5Gi", "99999999999Ti"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
    }

    /// This process alone (the test's cgroup may hold other processes
    /// whose memory changes meanwhile).
    fn this_process(configured: u64) -> Memory {
        Memory {
            own_cgroup: None,
            ..Memory::new(Procfs::default(), Some(configured))
        }
    }

    #[test]
    fn this_process_holds_its_own_anonymous_memory() {
        let memory = this_process(1 << 40);
        // 64 MiB touched: counted. Other tests of this binary allocate and
        // free meanwhile, so a try where they freed more is taken again
        // (five at most).
        let mut tries = Vec::new();
        let (after, block) = loop {
            let before = memory.used();
            assert!(before > 0);
            let block = std::hint::black_box(vec![1u8; 64 << 20]);
            let after = memory.used();
            if after >= before + (60 << 20) {
                break (after, block);
            }
            tries.push((before, after));
            assert!(
                tries.len() < 5,
                "(before, after) with {} more bytes: {tries:?}",
                block.len()
            );
        };
        assert_eq!(memory.limit().map(|l| l.source), Some(Source::Configured));
        assert!(memory.admit().is_ok());
        let tight = this_process(after);
        let refused = tight.admit().unwrap_err();
        assert_eq!(refused.percent, ADMIT_PERCENT);
        assert!(refused.to_string().contains("--memory-limit"), "{refused}");
        assert!(tight.check(0).is_err());
        // What a profile will take to render counts too.
        let roomy = this_process(after * 2);
        assert!(roomy.check(0).is_ok());
        let projected = roomy.check(after).unwrap_err();
        assert_eq!(projected.reserved, after);
        assert!(
            projected.to_string().contains(&format!(
                "rendering this profile needs about {} MiB more",
                after.div_ceil(1 << 20)
            )),
            "{projected}"
        );
        drop(block);
    }
}
