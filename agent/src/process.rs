//! The processes of the pod, as `/v1/processes` reports them.

use std::time::{Duration, Instant};

pub use tracecar_api::process::ProcessInfo;

use crate::runtime::{self, Runtime};

use crate::procfs::{CLOCK_TICKS, MapEntry, Procfs};

/// The LTTng-UST library `maps` show (`liblttng-ust.so.0` or `.so.1`).
pub fn lttng_ust_abi(maps: &[MapEntry]) -> Option<String> {
    maps.iter()
        .filter_map(|m| m.path.as_deref())
        .filter_map(|p| crate::procfs::without_deleted(p).rsplit('/').next())
        .find(|f| f.starts_with("liblttng-ust.so."))
        .map(|f| {
            // liblttng-ust.so.1.0.0 → liblttng-ust.so.1
            let major = f["liblttng-ust.so.".len()..]
                .split('.')
                .next()
                .unwrap_or_default();
            format!("liblttng-ust.so.{major}")
        })
}

/// The LTTng-UST library the sidecar's session daemon serves: the image's
/// LTTng 2.13 (Debian 12), whose daemon refuses 2.12 (`.so.0`) apps.
pub const SIDECAR_UST: &str = "liblttng-ust.so.1";

/// Why a process with `runtime` that loaded `library` cannot register
/// with the sidecar's session daemon, and what to do; `None` if it can (or
/// does not try).
pub fn ust_mismatch(runtime: Runtime, library: Option<&str>) -> Option<String> {
    match library {
        Some(lib) if lib != SIDECAR_UST => Some(format!(
            "it loaded {lib} (LTTng-UST 2.12 or older); the sidecar's lttng-sessiond is 2.13 ({SIDECAR_UST}) and refuses it. \
Trace its functions with /v1/uprobe{}, or give the app LTTng-UST 2.13",
            if runtime == Runtime::Dotnet {
                ", and its runtime events with /v1/dotnet/trace (EventPipe, no library needed)"
            } else {
                ""
            }
        )),
        None if runtime == Runtime::Dotnet => Some(
            "the .NET runtime's LTTng provider (libcoreclrtraceptprovider.so) needs liblttng-ust.so.0, which this process did not load, \
so its DotNETRuntime events are not offered over LTTng; /v1/dotnet/trace has them through EventPipe"
                .to_string(),
        ),
        _ => None,
    }
}

/// The processes among `pids` (default: the pod's, without the agent's
/// own) whose LTTng-UST cannot talk to the sidecar's daemon.
pub fn ust_mismatches(
    procfs: &Procfs,
    pids: Option<&[u32]>,
) -> Vec<tracecar_api::lttng::UstMismatch> {
    let all = match pids {
        Some(p) => p.to_vec(),
        None => {
            let own = Own::of(procfs);
            procfs
                .pids()
                .unwrap_or_default()
                .into_iter()
                .filter(|&pid| !own.has(procfs, pid))
                .collect()
        }
    };
    all.into_iter()
        .filter_map(|pid| {
            let maps = procfs.maps(pid).ok()?;
            let exe = procfs.exe(pid).ok().map(|p| p.display().to_string());
            // A single-file .NET app is .NET too: its executable is read
            // when the maps do not tell.
            let runtime = runtime::detect(exe.as_deref().unwrap_or_default(), &maps, || {
                runtime::inspect_exe(procfs, pid)
            });
            let library = lttng_ust_abi(&maps);
            let reason = ust_mismatch(runtime, library.as_deref())?;
            Some(tracecar_api::lttng::UstMismatch {
                pid,
                comm: procfs.stat(pid).map(|s| s.comm).unwrap_or_default(),
                library,
                reason,
            })
        })
        .collect()
}

/// The perf map of `pid` as it sees it (`/tmp/perf-<its own pid>.map`),
/// when one is there that the agent would read
/// ([`crate::runtime::perfmap::PerfMapFile`]).
pub fn perf_map_path(procfs: &Procfs, pid: u32) -> Option<String> {
    let map = crate::runtime::perfmap::PerfMapFile::of(procfs, pid)?;
    map.open().ok()?;
    Some(map.path().to_owned())
}

/// Whether a process is the pod's infrastructure process: Kubernetes'
/// `pause` or podman's `catatonit`, which is PID 1 of a shared PID
/// namespace. A name alone is not enough: every container's first process
/// has parent 0 there too, and an app could call itself `pause` to hide
/// from listings and pod-wide profiles.
pub fn is_pod_init(pid: u32, comm: &str, ppid: u32) -> bool {
    pid == 1 && ppid == 0 && matches!(comm, "pause" | "catatonit")
}

/// The PIDs a capture should not look at by default: the agent itself, its
/// descendants (curl, lttng tools), and the pod's pause process.
pub fn is_infrastructure(procfs: &Procfs, pid: u32, agent_pid: u32) -> bool {
    if pid == agent_pid {
        return true;
    }
    let Ok(stat) = procfs.stat(pid) else {
        return true;
    };
    if is_pod_init(pid, &stat.comm, stat.ppid) {
        return true;
    }
    // Walk up a few parents: descendants of the agent are its tools.
    let mut parent = stat.ppid;
    for _ in 0..8 {
        if parent == agent_pid {
            return true;
        }
        if parent <= 1 {
            break;
        }
        parent = procfs.stat(parent).map_or(0, |s| s.ppid);
    }
    false
}

/// What tells the agent's own processes from the app's: the agent, its
/// descendants and the pod's pause process ([`is_infrastructure`]), and
/// whatever runs in the agent's own container, such as the `curl` that
/// `kubectl tracecar` runs there through `kubectl exec`, which is no
/// descendant of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Own {
    agent: u32,
    /// The agent's container (its mount namespace), when the pod's other
    /// processes are in other containers.
    container: Option<u64>,
}

impl Own {
    /// The agent's own, looked up now.
    pub fn of(procfs: &Procfs) -> Self {
        Self {
            agent: std::process::id(),
            container: own_container(
                procfs.mount_namespace(std::process::id()).ok(),
                procfs.mount_namespace(1).ok(),
            ),
        }
    }

    /// Whether `pid` is the agent's own, not the app's.
    pub fn has(&self, procfs: &Procfs, pid: u32) -> bool {
        is_infrastructure(procfs, pid, self.agent)
            || self
                .container
                .is_some_and(|own| procfs.mount_namespace(pid).ok() == Some(own))
    }
}

/// The agent's container, by its mount namespace `own`, when it is not
/// that of PID 1 (`init`) of the PID namespace the agent sees: in a pod,
/// PID 1 is the pause process (or, attached with `--target`, the app's
/// first process), in a container of its own; on a host (the agent run as
/// the tests run it) PID 1 is the host's init, in the agent's namespace,
/// and there is no container to leave out.
pub fn own_container(own: Option<u64>, init: Option<u64>) -> Option<u64> {
    match (own, init) {
        (Some(own), Some(init)) if own != init => Some(own),
        _ => None,
    }
}

/// How long a listing may spend asking .NET runtimes about themselves in
/// all: a fake runtime that never answers costs a second, and a pod of
/// them cannot hold the listing longer than this.
pub const ASK_RUNTIMES_FOR: Duration = Duration::from_secs(5);

/// Clock ticks of CPU time over `seconds` as a percentage of one CPU
/// (above 100 for threaded code).
pub fn cpu_percent(ticks: u64, ticks_per_second: u64, seconds: f64) -> f64 {
    ticks as f64 / ticks_per_second.max(1) as f64 / seconds.max(0.001) * 100.0
}

/// A process's CPU use between readings, and since when it has been
/// above a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuWatch {
    ticks: u64,
    at: Instant,
    above_since: Option<Instant>,
}

impl CpuWatch {
    /// The first reading.
    pub fn new(ticks: u64, at: Instant) -> Self {
        Self {
            ticks,
            at,
            above_since: None,
        }
    }

    /// A new reading of `ticks` (clock ticks of user and system time) at
    /// `at`: the CPU use since the last one in percent of one CPU, and
    /// whether it has been at or above `above` for `hold` (counted from
    /// the start of the first interval above).
    pub fn read(
        &mut self,
        ticks: u64,
        at: Instant,
        ticks_per_second: u64,
        above: f64,
        hold: Duration,
    ) -> (f64, bool) {
        let seconds = at.duration_since(self.at).as_secs_f64().max(0.001);
        let percent =
            ticks.saturating_sub(self.ticks) as f64 / ticks_per_second as f64 / seconds * 100.0;
        if percent >= above {
            self.above_since.get_or_insert(self.at);
        } else {
            self.above_since = None;
        }
        self.ticks = ticks;
        self.at = at;
        let held = self
            .above_since
            .is_some_and(|since| at.duration_since(since) >= hold);
        (percent, held)
    }
}

/// Lists the pod's processes, measuring CPU use over `interval`.
pub fn list(procfs: &Procfs, interval: Duration) -> std::io::Result<Vec<ProcessInfo>> {
    let own = Own::of(procfs);
    let pids: Vec<u32> = procfs
        .pids()?
        .into_iter()
        .filter(|&pid| !own.has(procfs, pid))
        .collect();
    let cpu_ticks = |pid: u32| procfs.stat(pid).ok().map(|s| s.utime + s.stime);
    let before: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    std::thread::sleep(interval);
    let seconds = interval.as_secs_f64();
    let ask_until = std::time::Instant::now() + ASK_RUNTIMES_FOR;
    let mut out = Vec::new();
    for (pid, before) in pids.into_iter().zip(before) {
        // A process may exit while we look; skip it.
        let Ok(stat) = procfs.stat(pid) else { continue };
        let status = procfs.status(pid).unwrap_or_default();
        let maps = procfs.maps(pid).unwrap_or_default();
        let exe = procfs.exe(pid).ok().map(|p| p.display().to_string());
        let runtime = runtime::detect(exe.as_deref().unwrap_or_default(), &maps, || {
            runtime::inspect_exe(procfs, pid)
        });
        let after = stat.utime + stat.stime;
        let cpu_percent = before.map_or(0.0, |b| {
            cpu_percent(after.saturating_sub(b), CLOCK_TICKS, seconds)
        });
        out.push(ProcessInfo {
            pid,
            ppid: stat.ppid,
            comm: stat.comm,
            cmdline: procfs.cmdline(pid).unwrap_or_default(),
            exe,
            uid: status.uid,
            threads: stat.threads,
            cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            runtime,
            perf_map: perf_map_path(procfs, pid),
            lttng_ust: lttng_ust_abi(&maps),
            dotnet: runtime::dotnet_facts(runtime, procfs, pid, &maps, ask_until),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::parse_maps;

    #[test]
    fn cpu_must_stay_above_for_the_hold() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let hold = Duration::from_secs(1);
        let mut w = CpuWatch::new(0, at(0));
        // 100 ticks a second: 50 ticks in 500 ms is 100 %.
        let (p, held) = w.read(50, at(500), 100, 80.0, hold);
        assert!((p - 100.0).abs() < 1e-9 && !held);
        let (_, held) = w.read(100, at(1000), 100, 80.0, hold);
        assert!(held, "above from 0 to 1000 ms");
        // A dip resets it.
        let (p, held) = w.read(110, at(1500), 100, 80.0, hold);
        assert!((p - 20.0).abs() < 1e-9 && !held);
        let (_, held) = w.read(160, at(2000), 100, 80.0, hold);
        assert!(!held);
        let (_, held) = w.read(210, at(2500), 100, 80.0, hold);
        assert!(held);
        // No hold: the first reading above is enough.
        let mut now = CpuWatch::new(0, at(0));
        assert!(now.read(25, at(250), 100, 80.0, Duration::ZERO).1);
    }

    #[test]
    fn lttng_ust_abi_is_the_librarys_major() {
        let maps = |lib: &str| parse_maps(&format!("7f00-7f10 r-xp 0 08:01 5 /usr/lib/{lib}\n"));
        assert_eq!(
            lttng_ust_abi(&maps("liblttng-ust.so.0.0.0")).as_deref(),
            Some("liblttng-ust.so.0")
        );
        assert_eq!(
            lttng_ust_abi(&maps("liblttng-ust.so.1")).as_deref(),
            Some("liblttng-ust.so.1")
        );
        // The tracepoint helpers are not the library.
        assert_eq!(lttng_ust_abi(&maps("liblttng-ust-tracepoint.so.1")), None);
        assert_eq!(lttng_ust_abi(&maps("libc.so.6")), None);
    }

    #[test]
    fn lttng_ust_mismatches_say_what_to_do() {
        let old = ust_mismatch(Runtime::Dotnet, Some("liblttng-ust.so.0")).unwrap();
        assert!(
            old.contains("refuses") && old.contains("/v1/dotnet/trace"),
            "{old}"
        );
        let native = ust_mismatch(Runtime::Native, Some("liblttng-ust.so.0")).unwrap();
        assert!(!native.contains("dotnet"), "{native}");
        assert!(ust_mismatch(Runtime::Native, Some(SIDECAR_UST)).is_none());
        assert!(ust_mismatch(Runtime::Native, None).is_none());
        let dotnet = ust_mismatch(Runtime::Dotnet, None).unwrap();
        assert!(dotnet.contains("liblttng-ust.so.0"), "{dotnet}");
        assert!(ust_mismatch(Runtime::Dotnet, Some(SIDECAR_UST)).is_none());
    }

    #[test]
    fn only_pid_1_is_the_pods_init() {
        assert!(is_pod_init(1, "pause", 0));
        assert!(is_pod_init(1, "catatonit", 0));
        // An app's first process, named to hide.
        assert!(!is_pod_init(7, "pause", 0));
        assert!(!is_pod_init(1, "app", 0));
    }

    #[test]
    fn the_agents_container_is_left_out_only_in_a_pod() {
        // In a pod: the pause process is in a container of its own.
        assert_eq!(own_container(Some(5), Some(9)), Some(5));
        // On a host (the tests): init is in the agent's namespace.
        assert_eq!(own_container(Some(5), Some(5)), None);
        // Unreadable namespaces tell nothing.
        assert_eq!(own_container(Some(5), None), None);
        assert_eq!(own_container(None, Some(9)), None);
        let procfs = Procfs::default();
        let own = Own::of(&procfs);
        assert!(own.has(&procfs, std::process::id()));
    }

    #[test]
    fn own_process_is_infrastructure() {
        let procfs = Procfs::default();
        assert!(is_infrastructure(
            &procfs,
            std::process::id(),
            std::process::id()
        ));
    }
}
