//! The `lttng` CLI executor: runs an argv that [`super::command`] built
//! (never through a shell) and returns its machine-interface XML.

use std::process::{Command, Stdio};

use super::mi;

/// An `lttng` command failed.
#[derive(Debug, thiserror::Error)]
pub enum LttngError {
    /// The CLI could not be run.
    #[error("cannot run lttng: {0} (is lttng-tools installed?)")]
    Spawn(#[source] std::io::Error),
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
    let output = Command::new("lttng")
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .map_err(LttngError::Spawn)?;
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
