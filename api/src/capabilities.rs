//! `/v1/capabilities`: what works in this sidecar, and what to fix when
//! something does not.

use serde::{Deserialize, Serialize};

/// One checked capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Whether it works.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it does not work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
            hint: None,
        }
    }

    /// A check that failed, with what to do.
    pub fn fail(detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// Who runs the LTTng session daemon the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// None answers yet.
    None,
    /// The agent's child.
    Tracecar,
    /// Something else started it; the agent only uses it.
    External,
}

/// The session daemon's supervisor state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Whether it answers `lttng list`.
    pub running: bool,
    /// Who runs it.
    pub owner: Owner,
    /// PID of the agent's child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Times the agent has (re)started it.
    pub starts: u32,
    /// The last failure, with the daemon's own last stderr lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The session daemon's check and its supervisor's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessiondCheck {
    /// Whether it answers.
    #[serde(flatten)]
    pub check: Check,
    /// Owner, PID, starts, last error (absent with `--no-lttng`).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DaemonStatus>,
}

/// The fix that applies to a directory the daemon cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fix {
    /// Mount a writable emptyDir there (as `tracecar.dev/inject` does).
    EmptyDir,
    /// Set the pod's `securityContext.fsGroup`.
    FsGroup,
    /// Grant the capability named in `missing_capability`.
    Capability,
}

/// A directory the daemon writes into, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirCheck {
    /// Whether the daemon can work there, what was found, what to do.
    #[serde(flatten)]
    pub check: Check,
    /// The directory.
    pub path: String,
    /// Its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Its mode, in octal (`"0755"`, `"2777"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Which fix applies when it is unusable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
    /// The capability whose absence is the cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_capability: Option<String>,
}

/// The agent's memory bound (`agent/src/memory.rs`): its limit, where it
/// came from, and what the container holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryCheck {
    /// Below the mark at which nothing new starts (or no limit known).
    #[serde(flatten)]
    pub check: Check,
    /// The limit, in bytes; absent when none is known (no bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// Where the limit came from: `--memory-limit` or a cgroup file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_from: Option<String>,
    /// Bytes the container holds now.
    pub used_bytes: u64,
    /// Nothing new starts at or above this percentage of the limit.
    pub admit_percent: u64,
    /// A running profile stops at or above this percentage.
    pub stop_percent: u64,
}

/// How the agent runs in the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mode {
    /// Injected by the webhook: the pod shares one PID namespace, `/tmp`
    /// and `/var/run/lttng` with it.
    Sidecar,
    /// Added to a running pod as an ephemeral container by `kubectl
    /// tracecar attach`: it sees the processes of one app container and
    /// reaches its files through `/proc/PID/root`; no shared volumes.
    Attached {
        /// The app container whose processes it joined.
        target: String,
    },
}

impl Mode {
    /// How `kubectl tracecar status` names it.
    pub fn describe(&self) -> String {
        match self {
            Self::Sidecar => "sidecar (injected)".to_owned(),
            Self::Attached { target } => format!("attached (ephemeral) to container {target}"),
        }
    }
}

/// The header `/v1/processes` names the agent's [`Mode`] in: `sidecar`
/// or `attached`.
pub const MODE_HEADER: &str = "x-tracecar-mode";

/// The `/v1/capabilities` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// How the agent runs in the pod (absent from agents before attach).
    #[serde(default = "sidecar")]
    pub mode: Mode,
    /// What the agent was started for (`tracecar.dev/features`); requests
    /// outside them get 403. Absent from agents before features: all.
    #[serde(default = "all_features")]
    pub features: Vec<crate::security::Feature>,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux`.
    pub btf: Check,
    /// perf events that can be opened, by name.
    pub perf_events: Vec<(String, Check)>,
    /// `/proc/kallsyms` has real addresses (kernel frames can be named).
    pub kallsyms: Check,
    /// BPF program loading.
    pub bpf: Check,
    /// Creating uprobes (CAP_SYS_ADMIN on current kernels).
    pub uprobes: Check,
    /// tracefs with `uprobe_events`.
    pub tracefs: Check,
    /// LTTng and babeltrace2 command-line tools.
    pub lttng_tools: Check,
    /// The LTTng session daemon apps register with.
    pub lttng_sessiond: SessiondCheck,
    /// Whether the daemon can create its lock file and sockets in
    /// `/var/run/lttng`: owner, mode, and the fix that applies.
    pub lttng_rundir: DirCheck,
    /// Whether it can create, or take over, its wait shared memory in
    /// `/dev/shm`.
    pub lttng_shm: DirCheck,
    /// Whether every process of the pod that loaded LTTng-UST, and every
    /// .NET process, can register with the sidecar's daemon; which cannot,
    /// and what to use instead.
    pub lttng_ust_apps: Check,
    /// Effective capabilities of the agent.
    pub capabilities: Vec<String>,
    /// The memory bound (absent from agents before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryCheck>,
    /// Continuous profiling and its pushes, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<ContinuousReport>,
    /// The collection rules in force, and the artifact store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<crate::rules::RulesReport>,
}

/// Continuous profiling (`tracecar.dev/continuous`): its windows so far,
/// and where they are pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousReport {
    /// One entry per mode.
    pub modes: Vec<ContinuousMode>,
    /// One entry per backend windows are pushed to.
    #[serde(default)]
    pub push: Vec<PushReport>,
}

/// The windows of one mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousMode {
    /// `cpu` or `offcpu`.
    pub mode: String,
    /// A window's length.
    pub window_seconds: u32,
    /// Samples per second (CPU windows).
    pub hz: u32,
    /// Windows completed.
    pub completed: u64,
    /// Windows not started because the agent's memory was near its limit.
    pub skipped: u64,
    /// Windows that failed.
    pub failed: u64,
    /// The last failure or skip, until a window completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What happened to the windows pushed to one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReport {
    /// `otlp` or `pyroscope`.
    pub destination: String,
    /// Where it sends (without the query).
    pub url: String,
    /// Windows waiting to be sent.
    pub queued: u64,
    /// Windows the backend took.
    pub sent: u64,
    /// Windows dropped, oldest first, while the backend could not take
    /// them.
    pub dropped: u64,
    /// Windows the backend refused, not sent again.
    pub rejected: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// The last failure, until a window is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn all_features() -> Vec<crate::security::Feature> {
    crate::security::Feature::ALL.to_vec()
}

fn sidecar() -> Mode {
    Mode::Sidecar
}

impl Report {
    /// The named checks, in the order `kubectl tracecar status` shows them.
    pub fn checks(&self) -> Vec<(String, &Check)> {
        let mut all: Vec<(String, &Check)> = vec![
            ("btf".to_owned(), &self.btf),
            ("kallsyms".to_owned(), &self.kallsyms),
            ("bpf".to_owned(), &self.bpf),
            ("uprobes".to_owned(), &self.uprobes),
            ("tracefs".to_owned(), &self.tracefs),
            ("lttng_tools".to_owned(), &self.lttng_tools),
            ("lttng_sessiond".to_owned(), &self.lttng_sessiond.check),
            ("lttng_rundir".to_owned(), &self.lttng_rundir.check),
            ("lttng_shm".to_owned(), &self.lttng_shm.check),
            ("lttng_ust_apps".to_owned(), &self.lttng_ust_apps),
        ];
        if let Some(memory) = &self.memory {
            all.push(("memory".to_owned(), &memory.check));
        }
        all.extend(
            self.perf_events
                .iter()
                .map(|(name, check)| (format!("perf {name}"), check)),
        );
        all
    }
}
