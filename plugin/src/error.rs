//! Why a command failed, and the exit code it gives.

use crate::target;
use tracecar_api::error::ErrorBody;

/// Why a command failed; messages read like the agent's hints.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The target is malformed.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// kubectl/podman could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// kubectl/podman failed before reaching the agent; `stderr` is what
    /// it said, `hint` what usually causes that.
    #[error("{stderr}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Exec {
        /// Its stderr.
        stderr: String,
        /// What to do, when the cause is known.
        hint: Option<String>,
    },
    /// A workload has no running pod.
    #[error("{workload} has no running pod\n  hint: kubectl get pods -l {selector}")]
    NoRunningPod {
        /// The workload, as `deploy/NAME`.
        workload: String,
        /// Its pod selector.
        selector: String,
    },
    /// `--all` found no ready pod.
    #[error("no ready pod matches {selector}\n  hint: {hint}")]
    NoReadyPod {
        /// The selector, or the workload.
        selector: String,
        /// Where to look.
        hint: String,
    },
    /// The pod list could not be read.
    #[error("cannot read the pod list: {0}")]
    PodList(String),
    /// `--all`: the answers of the pods could not be merged.
    #[error("cannot merge the pods' answers: {0}")]
    Merge(String),
    /// `--all`: some pods failed (each is listed above); the others'
    /// answers were merged.
    #[error("{failed} of {of} pods failed (listed above){}", if failed < of { "; the output has the others" } else { "" })]
    Fleet {
        /// How many failed.
        failed: usize,
        /// Out of.
        of: usize,
    },
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(ErrorBody),
    /// The agent's error answer was not its JSON (a proxy, an old agent).
    #[error("{0}")]
    AgentText(String),
    /// The pod's processes do not say which one to trace.
    #[error("{0}")]
    Processes(String),
    /// The pod cannot get an agent.
    #[error(transparent)]
    Attach(#[from] crate::attach::AttachError),
    /// The attached agent did not come up.
    #[error("{message}\n  hint: {hint}")]
    NotAttached {
        /// What happened.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The output file name asks for no known format.
    #[error("{file}: unknown output format\n  hint: {hint}")]
    Output {
        /// The file.
        file: String,
        /// The extensions that work.
        hint: &'static str,
    },
    /// A selector term podman cannot filter by.
    #[error("{0:?}: with --runtime podman, -l takes key=value terms only")]
    Selector(String),
    /// The command line asks for what cannot be done together.
    #[error("{0}")]
    Usage(&'static str),
    /// An input file cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write {file}: {source}")]
    Write {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl PluginError {
    /// The process exit code: 64 (EX_USAGE) for what the user must fix in
    /// the command line, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Target(_)
            | Self::Output { .. }
            | Self::Usage(_)
            | Self::Selector(_)
            | Self::Read { .. } => 64,
            _ => 1,
        }
    }

    /// The agent's error body, typed when it is the agent's JSON.
    pub fn from_agent(body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(error) => Self::Agent(error),
            Err(_) => Self::AgentText(String::from_utf8_lossy(body).trim().to_owned()),
        }
    }
}
