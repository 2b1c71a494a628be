//! `/v1/stacks`: where every thread of a process is right now.

use serde::{Deserialize, Serialize};

/// One frame, innermost first in a [`ThreadStack`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFrame {
    /// The function: a native symbol, a managed method as its runtime
    /// names it, or `[unknown] module+0xoff`.
    pub name: String,
    /// `user` (native code in a file), `jit` (code a runtime compiled),
    /// `unknown`.
    pub kind: String,
    /// The file the code is in, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// One thread and its stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStack {
    /// The thread id.
    pub tid: u32,
    /// Its name (`/proc/PID/task/TID/comm`).
    pub name: String,
    /// `running`, `sleeping`, `uninterruptible`, or the kernel's state
    /// letter for another state.
    pub state: String,
    /// The kernel function a sleeping thread waits in, when the kernel
    /// says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_in: Option<String>,
    /// Its frames, innermost first.
    pub frames: Vec<StackFrame>,
    /// Why the thread has no stack (it exited, could not be stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `/v1/stacks` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStacks {
    /// The process.
    pub pid: u32,
    /// Its name.
    pub comm: String,
    /// Its threads, by tid.
    pub threads: Vec<ThreadStack>,
    /// How long the threads were stopped, in microseconds.
    pub stopped_us: u64,
    /// Threads left out past the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub threads_left_out: u64,
    /// Why managed frames are not named, if they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naming_error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
