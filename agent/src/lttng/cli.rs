//! The `lttng` CLI executor: runs an argv that [`super::command`] built
//! (never through a shell) and returns its machine-interface XML.

use std::process::Command;
use std::time::Duration;

use super::mi;

/// How long one `lttng` command may take. It talks to the session daemon
/// through `client-lttng-sessiond` in the run directory the app shares; a
/// root app can replace that socket with one that never answers.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The socket `lttng` talks to (the root session daemon's).
pub const CLIENT_SOCKET: &str = "/var/run/lttng/client-lttng-sessiond";

/// An `lttng` command failed.
#[derive(Debug, thiserror::Error)]
pub enum LttngError {
    /// The CLI could not be run, or did not finish in time.
    #[error("{0} (is lttng-tools installed, and does the session daemon answer?)")]
    Run(#[source] crate::child::ChildError),
    /// It ran and reported failure; `message` is what it printed.
    #[error("lttng {command} failed: {message}")]
    Failed {
        /// The subcommand.
        command: String,
        /// Its error lines.
        message: String,
    },
    /// Its XML could not be read.
    #[error(transparent)]
    Mi(#[from] mi::MiError),
}

/// Runs `lttng ARGV` and returns its XML; a failure carries its stderr.
pub fn run(argv: &[String]) -> Result<String, LttngError> {
    let output = crate::child::run_within(Command::new("lttng").args(argv), TIMEOUT, CLIENT_SOCKET)
        .map_err(LttngError::Run)?;
    let xml = String::from_utf8_lossy(&output.stdout).into_owned();
    let reported = mi::succeeded(&xml).unwrap_or(false);
    if output.status.success() && reported {
        return Ok(xml);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(LttngError::Failed {
        command: super::command::subcommand(argv).to_owned(),
        message: if message.is_empty() {
            format!("exit status {}", output.status)
        } else {
            message
        },
    })
}
