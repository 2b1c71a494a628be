//! The agent's error answer.

use serde::{Deserialize, Serialize};

/// Every 4xx/5xx body: what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What happened.
    pub error: String,
    /// What to do about it.
    pub hint: String,
}

impl std::fmt::Display for ErrorBody {
    /// `error`, then `  hint: …` on a line of its own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.hint.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}\n  hint: {}", self.error, self.hint)
        }
    }
}
