//! `/v1/capabilities`: what works in this sidecar, and what to fix when
//! something does not.

use std::path::Path;
use tracecar_api::security::Features;

pub use tracecar_api::capabilities::{Check, DaemonStatus, DirCheck, Mode, Report, SessiondCheck};

use crate::caps::{capability_names, has_cap};
use crate::lttng::rundir;
use crate::procfs::Procfs;
use crate::sys;

fn sessiond_check(status: Option<DaemonStatus>, dirs: &[&DirCheck]) -> SessiondCheck {
    let broken = dirs.iter().find(|d| !d.check.ok);
    let check = match &status {
        None => Check::fail(
            "LTTng is off (--no-lttng)",
            "start the agent without --no-lttng",
        ),
        Some(s) if s.running => Check::ok(match s.pid {
            Some(pid) => {
                format!("lttng-sessiond pid {pid}, started by tracecar, serving /var/run/lttng")
            }
            None => "an external lttng-sessiond serves /var/run/lttng".to_owned(),
        }),
        Some(s) => Check::fail(
            format!(
                "no session daemon answers: {}",
                s.last_error.as_deref().unwrap_or("starting")
            ),
            match broken {
                Some(dir) => format!(
                    "{}: {}",
                    dir.path,
                    dir.check.hint.as_deref().unwrap_or_default()
                ),
                None => "the agent restarts lttng-sessiond on its own; the daemon's own messages are in last_error and in the agent's log".to_owned(),
            },
        ),
    };
    SessiondCheck { check, status }
}

fn on_path(binary: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// What an attached agent says of LTTng.
pub const ATTACHED_LTTNG: &str = "LTTng needs the webhook's shared /var/run/lttng, or a pod restart: this agent is attached (an ephemeral container), and the app's LTTng-UST looks for its session daemon in its own /var/run/lttng and /dev/shm, which an ephemeral container cannot share";
/// What to do about it.
pub const ATTACHED_LTTNG_HINT: &str = "annotate the workload with tracecar.dev/inject: \"true\" and roll it out for LTTng; profiles, probes, .NET and dumps work attached";

/// Runs every check; `sessiond` is the LTTng supervisor's status, `mode`
/// how the agent runs in the pod.
pub fn report(
    procfs: &Procfs,
    sessiond: Option<DaemonStatus>,
    mode: &Mode,
    features: Features,
    memory: &crate::memory::Memory,
) -> Report {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let status = procfs.status(std::process::id()).unwrap_or_default();
    let cap_eff = status.cap_eff.unwrap_or(0);
    let lttng = lttng_checks(procfs, sessiond, mode, &status);
    Report {
        kernel,
        mode: mode.clone(),
        features: features.iter().collect(),
        btf: btf_check(),
        perf_events: perf_checks(),
        kallsyms: kallsyms_check(),
        bpf: bpf_check(cap_eff),
        uprobes: uprobes_check(cap_eff),
        tracefs: tracefs_check(),
        lttng_tools: lttng_tools_check(),
        lttng_sessiond: lttng.sessiond,
        lttng_rundir: lttng.rundir,
        lttng_shm: lttng.shm,
        lttng_ust_apps: lttng.ust_apps,
        capabilities: capability_names(cap_eff)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        memory: Some(memory.report()),
        continuous: None,
        rules: None,
    }
}

/// BTF, for BPF type information.
fn btf_check() -> Check {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Check::ok("/sys/kernel/btf/vmlinux present")
    } else {
        Check::fail(
            "no /sys/kernel/btf/vmlinux",
            "a kernel built with CONFIG_DEBUG_INFO_BTF (or the /sys hostPath mount) is needed for BPF type info",
        )
    }
}

/// Which perf events open.
fn perf_checks() -> Vec<(String, Check)> {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    let perf_hint = format!(
        "perf_event_open failed (perf_event_paranoid={paranoid}): the sidecar needs CAP_PERFMON and seccompProfile Unconfined (tracecar.dev/profile: minimal gives both)"
    );
    sys::PERF_PROBES
        .iter()
        .map(|&(name, probe)| {
            let check = match probe() {
                Ok(()) => Check::ok("can be opened"),
                Err(e) if name == "cycles" => Check::fail(
                    format!("{e}"),
                    "no hardware PMU (common in VMs): tracecar samples with cpu-clock instead",
                ),
                Err(e) => Check::fail(format!("{e}"), perf_hint.clone()),
            };
            (name.to_owned(), check)
        })
        .collect()
}

/// Whether kernel frames can be named.
fn kallsyms_check() -> Check {
    if crate::stacks::kallsyms::readable() {
        Check::ok("/proc/kallsyms has addresses")
    } else {
        Check::fail(
            "/proc/kallsyms addresses are hidden",
            "kernel frames need CAP_SYSLOG or kernel.kptr_restrict=0; profiles use kernel=false until then",
        )
    }
}

/// CAP_BPF (or CAP_SYS_ADMIN), for BPF programs.
fn bpf_check(cap_eff: u64) -> Check {
    if has_cap(cap_eff, "BPF") || has_cap(cap_eff, "SYS_ADMIN") {
        Check::ok("CAP_BPF (or CAP_SYS_ADMIN) is effective")
    } else {
        Check::fail(
            "neither CAP_BPF nor CAP_SYS_ADMIN is effective",
            "add the BPF capability (the minimal profile does) for uprobes",
        )
    }
}

/// CAP_SYS_ADMIN, which uprobe perf events need.
fn uprobes_check(cap_eff: u64) -> Check {
    if has_cap(cap_eff, "SYS_ADMIN") {
        Check::ok("CAP_SYS_ADMIN is effective")
    } else {
        Check::fail(
            "CAP_SYS_ADMIN is not effective",
            "Linux requires CAP_SYS_ADMIN for uprobe perf events since 2025 (\"perf: require CAP_SYS_ADMIN for uprobes\"); the minimal profile adds it",
        )
    }
}

/// tracefs, where uprobe events are created.
fn tracefs_check() -> Check {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find(|d| Path::new(d).join("uprobe_events").exists())
        .map_or_else(
            || {
                Check::fail(
                    "tracefs is not mounted",
                    "mount -t tracefs tracefs /sys/kernel/tracing on the node, or mount the host /sys",
                )
            },
            |d| Check::ok(format!("{d}/uprobe_events")),
        )
}

/// The LTTng tools on PATH.
fn lttng_tools_check() -> Check {
    let tools: Vec<(&str, Option<String>)> = ["lttng", "lttng-sessiond", "babeltrace2"]
        .iter()
        .map(|t| (*t, on_path(t)))
        .collect();
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() {
        Check::ok(
            tools
                .iter()
                .filter_map(|(_, p)| p.clone())
                .collect::<Vec<_>>()
                .join(", "),
        )
    } else {
        Check::fail(
            format!("not found: {}", missing.join(", ")),
            "install lttng-tools and babeltrace2 in the agent image",
        )
    }
}

/// The LTTng checks of the report.
struct LttngChecks {
    sessiond: SessiondCheck,
    rundir: DirCheck,
    shm: DirCheck,
    ust_apps: Check,
}

/// The session daemon, its directories and the apps' LTTng-UST; in an
/// attached agent, what it cannot do.
fn lttng_checks(
    procfs: &Procfs,
    sessiond: Option<DaemonStatus>,
    mode: &Mode,
    status: &crate::procfs::Status,
) -> LttngChecks {
    let [mut lttng_rundir, mut lttng_shm] = rundir::checks(&rundir::Creds::of(status));
    let (sessiond, ust_apps) = match mode {
        Mode::Sidecar => (
            sessiond_check(sessiond, &[&lttng_rundir, &lttng_shm]),
            ust_apps_check(&crate::process::ust_mismatches(procfs, None)),
        ),
        // The agent's own directories say nothing about the app's.
        Mode::Attached { .. } => {
            let attached = Check::fail(ATTACHED_LTTNG, ATTACHED_LTTNG_HINT);
            lttng_rundir.check = attached.clone();
            lttng_shm.check = attached.clone();
            (
                SessiondCheck {
                    check: attached.clone(),
                    status: None,
                },
                attached,
            )
        }
    };
    LttngChecks {
        sessiond,
        rundir: lttng_rundir,
        shm: lttng_shm,
        ust_apps,
    }
}

/// `lttng_ust_apps`: the processes whose LTTng-UST the sidecar's daemon
/// refuses, each with the reason and what to use instead.
fn ust_apps_check(mismatches: &[tracecar_api::lttng::UstMismatch]) -> Check {
    if mismatches.is_empty() {
        return Check::ok(format!(
            "no process of the pod loads an LTTng-UST other than {}",
            crate::process::SIDECAR_UST
        ));
    }
    let detail = mismatches
        .iter()
        .map(|m| {
            format!(
                "pid {} ({}): {}",
                m.pid,
                m.comm,
                m.library.as_deref().unwrap_or("no liblttng-ust")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut reasons: Vec<&str> = mismatches.iter().map(|m| m.reason.as_str()).collect();
    reasons.dedup();
    Check::fail(format!("LTTng cannot trace: {detail}"), reasons.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ust_apps_name_each_process_and_say_what_to_use() {
        assert!(ust_apps_check(&[]).ok);
        let dotnet = tracecar_api::lttng::UstMismatch {
            pid: 7,
            comm: "dotnet".into(),
            library: None,
            reason: crate::process::ust_mismatch(crate::runtime::Runtime::Dotnet, None).unwrap(),
        };
        let check = ust_apps_check(&[dotnet]);
        assert!(!check.ok);
        assert_eq!(
            check.detail,
            "LTTng cannot trace: pid 7 (dotnet): no liblttng-ust"
        );
        assert!(check.hint.unwrap().contains("/v1/dotnet/trace"));
    }

    #[test]
    fn capability_masks_decode() {
        // CAP_SYS_PTRACE (19), CAP_PERFMON (38), CAP_BPF (39).
        let mask = (1 << 19) | (1 << 38) | (1 << 39);
        assert_eq!(capability_names(mask), ["SYS_PTRACE", "PERFMON", "BPF"]);
        assert!(has_cap(mask, "BPF"));
        assert!(!has_cap(mask, "SYS_ADMIN"));
    }
}
