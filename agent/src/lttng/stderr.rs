//! The stderr of a daemon the agent runs (lttng-sessiond),
//! read on a thread of its own: each line goes to the agent's log, and the
//! last lines are kept for the error that reports the daemon's failure.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::process::ChildStderr;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

/// How long the daemon's stderr may take to reach end-of-file once its
/// process group is gone.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// The last lines a process wrote, bounded in count and length.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    /// Lines kept.
    pub const LINES: usize = 8;
    /// Characters kept of each line.
    pub const WIDTH: usize = 400;

    /// Keeps `line` (trimmed, without blank lines), dropping the oldest.
    pub fn push(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        if self.lines.len() == Self::LINES {
            self.lines.pop_front();
        }
        self.lines
            .push_back(line.chars().take(Self::WIDTH).collect());
    }

    /// The lines, oldest first, joined with " | "; `None` if none.
    pub fn joined(&self) -> Option<String> {
        (!self.lines.is_empty()).then(|| {
            let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
            lines.join(" | ")
        })
    }
}

/// A child's stderr, read on a thread of its own: each line goes to the
/// agent's log, and the last ones are kept.
#[derive(Debug)]
pub struct Stderr {
    tail: Arc<Mutex<Tail>>,
    drained: mpsc::Receiver<()>,
}

impl Stderr {
    /// ": <the last lines>" once the stream has ended (or after
    /// [`STDERR_DRAIN`]), or "" if it said nothing.
    pub fn said(&self) -> String {
        let _ = self.drained.recv_timeout(STDERR_DRAIN);
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .joined()
            .map_or_else(String::new, |t| format!(": {t}"))
    }
}

/// Starts reading `stderr` of the child `name` (PID `pid`).
pub fn keep_stderr(name: &'static str, pid: u32, stderr: ChildStderr) -> Stderr {
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (done, drained) = mpsc::channel();
    let kept = tail.clone();
    let reader = move || {
        let mut stderr = BufReader::new(stderr);
        let mut line = Vec::new();
        while matches!(stderr.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            tracing::warn!(pid, "{name}: {}", text.trim_end());
            kept.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(&text);
            line.clear();
        }
        let _ = done.send(());
    };
    if let Err(e) = std::thread::Builder::new()
        .name(format!("{name}-stderr"))
        .spawn(reader)
    {
        tracing::warn!(error = %e, "cannot read {name}'s stderr");
    }
    Stderr { tail, drained }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_trimmed_and_bounded() {
        let mut tail = Tail::default();
        assert_eq!(tail.joined(), None);
        for i in 0..20 {
            tail.push(&format!("Error: line {i}\n"));
        }
        tail.push("   \n");
        let joined = tail.joined().unwrap_or_default();
        assert!(joined.starts_with("Error: line 12 | "), "{joined}");
        assert!(joined.ends_with("Error: line 19"), "{joined}");
        tail.push(&"x".repeat(10_000));
        let last = tail.joined().unwrap_or_default();
        assert!(last.ends_with(&"x".repeat(Tail::WIDTH)) && last.len() < 5_000);
    }
}
