//! `/v1/stacks`: where every thread of one process is right now, like
//! dotnet-stack, with native and kernel-wait frames beside the managed
//! ones (which dotnet-stack cannot show).
//!
//! The threads are stopped with ptrace ([`crate::sys::ptrace`]) only long
//! enough to read each one's registers and a copy of its stack (at most
//! [`USER_STACK_BYTES`] from its stack pointer); they run again before any
//! of it is unwound or named. Unwinding and naming are the profiles' own
//! ([`Collector`]): DWARF with the frame-pointer chain found in the copy,
//! whichever gets further; a runtime that names its own code (.NET) is
//! asked for its method table after the threads run again (its diagnostic
//! thread is one of those stopped).

use std::time::{Duration, Instant};

use tracecar_api::quoted;
use tracecar_api::request::StacksRequest;
use tracecar_api::stacks::{StackFrame, ThreadStack, ThreadStacks};

use crate::params::{self, SpecError};
use crate::procfs::{self, MapEntry, Procfs};
use crate::runtime;
use crate::stacks::collect::{Collector, Site, UserStack};
use crate::stacks::unwind::{USER_STACK_BYTES, frame_pointer_scan};
use crate::stacks::{FrameKind, Unwind};
use crate::sys::ptrace::{Registers, Stopped};

/// Threads one answer shows at most; the rest are counted.
pub const MAX_THREADS: usize = 4096;

/// How long the agent waits for the threads to stop.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// What `/v1/stacks` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StacksFormat {
    /// Text: each thread, then its frames, innermost first.
    Text,
    /// [`ThreadStacks`] as JSON.
    Json,
}

impl StacksFormat {
    /// The answer's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain; charset=utf-8",
            Self::Json => "application/json",
        }
    }
}

/// A validated `/v1/stacks` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StacksSpec {
    /// The process.
    pub pid: u32,
    /// What to answer with.
    pub format: StacksFormat,
}

/// Validates a `/v1/stacks` request.
pub fn parse(request: &StacksRequest) -> Result<StacksSpec, SpecError> {
    Ok(StacksSpec {
        pid: params::required_pid(request.pid())?,
        format: params::one_of(
            request.format(),
            &[
                ("text", "each thread and its frames", StacksFormat::Text),
                ("json", "the threads as JSON", StacksFormat::Json),
            ],
        )?,
    })
}

/// Why there are no stacks.
#[derive(Debug, thiserror::Error)]
pub enum StacksError {
    /// The process's threads could not be listed.
    #[error("cannot list the threads of pid {pid}: {source}")]
    Threads {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not one thread could be stopped.
    #[error("cannot stop any thread of pid {pid} with ptrace: {why}")]
    NotStopped {
        /// The process.
        pid: u32,
        /// The first thread's error.
        why: String,
        /// Whether it was refused (not allowed, or traced by another
        /// debugger), rather than gone or late.
        refused: bool,
    },
}

/// A stopped thread's registers and stack copy, or why it was not
/// stopped.
type Taken = Result<(Registers, Vec<u8>), String>;

/// One thread as it was while stopped.
#[derive(Debug)]
struct Snapshot {
    tid: u32,
    name: String,
    state: char,
    wchan: Option<String>,
    stopped: Taken,
}

/// Stops the threads of `spec.pid`, copies where each one is, lets them
/// run, then unwinds and names each stack.
pub fn take(procfs: &Procfs, spec: &StacksSpec) -> Result<ThreadStacks, StacksError> {
    let pid = spec.pid;
    let mut tids = procfs
        .tids(pid)
        .map_err(|source| StacksError::Threads { pid, source })?;
    tids.sort_unstable();
    let left_out = tids.len().saturating_sub(MAX_THREADS);
    tids.truncate(MAX_THREADS);
    let maps = procfs.maps(pid).unwrap_or_default();
    // State and wait channel first: stopped, every thread is `t`.
    let before: Vec<(u32, String, char, Option<String>)> = tids
        .iter()
        .map(|&tid| {
            let name = procfs
                .thread_comm(pid, tid)
                .map_or_else(|_| format!("tid-{tid}"), |n| n.trim().to_owned());
            let state = procfs.thread_stat(pid, tid).map_or('?', |s| s.state);
            (tid, name, state, procfs.thread_wchan(pid, tid))
        })
        .collect();
    let started = Instant::now();
    let (stopped, registers) = Stopped::threads(&tids, started + STOP_WITHIN);
    let copies: Vec<(u32, Taken)> = registers
        .into_iter()
        .map(|(tid, regs)| {
            let copy = regs
                .map_err(|e| e.to_string())
                .map(|regs| (regs, stack_copy(procfs, pid, &maps, regs.sp)));
            (tid, copy)
        })
        .collect();
    drop(stopped);
    let stopped_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if copies.iter().all(|(_, c)| c.is_err()) {
        let why = copies
            .iter()
            .find_map(|(_, c)| c.as_ref().err().cloned())
            .unwrap_or_else(|| "no thread".to_owned());
        let refused = why.contains("not permitted") || why.contains("denied");
        return Err(StacksError::NotStopped { pid, why, refused });
    }
    let snapshots: Vec<Snapshot> = before
        .into_iter()
        .map(|(tid, name, state, wchan)| Snapshot {
            tid,
            name,
            state,
            wchan,
            stopped: copies
                .iter()
                .find(|(t, _)| *t == tid)
                .map_or_else(|| Err("not stopped".to_owned()), |(_, c)| c.clone()),
        })
        .collect();
    Ok(name_stacks(
        procfs, pid, &maps, snapshots, stopped_us, left_out,
    ))
}

/// The stack from `sp` up to the end of its mapping, at most
/// [`USER_STACK_BYTES`] (empty when it cannot be read).
fn stack_copy(procfs: &Procfs, pid: u32, maps: &[MapEntry], sp: u64) -> Vec<u8> {
    procfs::mapping_at(maps, sp)
        .map(|m| (m.end - sp).min(u64::from(USER_STACK_BYTES)))
        .and_then(|len| procfs.read_memory(pid, sp, usize::try_from(len).ok()?).ok())
        .unwrap_or_default()
}

/// Unwinds and names the copied stacks (the threads run again).
fn name_stacks(
    procfs: &Procfs,
    pid: u32,
    maps: &[MapEntry],
    snapshots: Vec<Snapshot>,
    stopped_us: u64,
    left_out: usize,
) -> ThreadStacks {
    let mut collector = Collector::new(procfs, Unwind::Auto, false, false);
    let process = runtime::of_process(procfs, pid, maps);
    let naming_error = match runtime::methods_now(process, procfs, pid) {
        Some(Ok(methods)) => {
            collector.set_managed(pid, methods);
            None
        }
        Some(Err(e)) => Some(format!("managed frames are not named: {e}")),
        None => None,
    };
    let threads = snapshots
        .into_iter()
        .map(|s| {
            let (frames, error) = match &s.stopped {
                Ok((regs, stack)) => (frames(&mut collector, pid, maps, *regs, stack), None),
                Err(e) => (Vec::new(), Some(format!("not stopped: {e}"))),
            };
            ThreadStack {
                tid: s.tid,
                name: s.name,
                state: state_name(s.state),
                blocked_in: s.wchan.filter(|_| matches!(s.state, 'S' | 'D')),
                frames,
                error,
            }
        })
        .collect();
    ThreadStacks {
        pid,
        comm: procfs
            .stat(pid)
            .map_or_else(|_| format!("pid-{pid}"), |s| s.comm),
        threads,
        stopped_us,
        threads_left_out: left_out as u64,
        naming_error,
    }
}

/// One thread's frames, innermost first.
fn frames(
    collector: &mut Collector,
    pid: u32,
    maps: &[MapEntry],
    regs: Registers,
    stack: &[u8],
) -> Vec<StackFrame> {
    // The frame-pointer chain in the copy, for the walk DWARF cannot do
    // (JIT code has no unwind tables the agent reads).
    let (_, chain) = frame_pointer_scan(stack, regs.sp, regs.ip, |a| procfs::is_code_at(maps, a))
        .unwrap_or((0, vec![regs.ip]));
    let user = collector.user_stack_as(
        Unwind::Auto,
        pid,
        &UserStack {
            site: Site::Body,
            chain: &chain,
            regs: Some([regs.bp, regs.sp, regs.ip]),
            stack,
            top: None,
            leaf: None,
        },
    );
    collector
        .name_now(pid, &user)
        .into_iter()
        .map(|f| StackFrame {
            name: f.name.clone(),
            kind: match f.kind {
                FrameKind::User => "user",
                FrameKind::Jit => "jit",
                FrameKind::Kernel => "kernel",
                FrameKind::Root | FrameKind::Marker => "marker",
                FrameKind::Unknown => "unknown",
            }
            .to_owned(),
            module: f.module.clone(),
        })
        .collect()
}

/// A state letter as a word.
fn state_name(state: char) -> String {
    match state {
        'R' => "running".to_owned(),
        'S' => "sleeping".to_owned(),
        'D' => "uninterruptible".to_owned(),
        other => other.to_string(),
    }
}

/// The stacks as text: a line per thread, then its frames, innermost
/// first, each with its file's name.
pub fn text(stacks: &ThreadStacks) -> String {
    let mut out = format!(
        "# pid {} ({}): {} threads, stopped for {:.1} ms{}\n",
        stacks.pid,
        stacks.comm,
        stacks.threads.len(),
        stacks.stopped_us as f64 / 1000.0,
        match &stacks.naming_error {
            Some(e) => format!("; {e}"),
            None => String::new(),
        }
    );
    for t in &stacks.threads {
        let state = match &t.blocked_in {
            Some(function) => format!("{} in {function}", t.state),
            None => t.state.clone(),
        };
        out.push_str(&format!("\nThread {} {} ({state})", t.tid, quoted(&t.name)));
        if let Some(e) = &t.error {
            out.push_str(&format!(": {e}"));
        }
        out.push('\n');
        for f in &t.frames {
            let module = f
                .module
                .as_deref()
                .and_then(|m| m.rsplit('/').next())
                .map(|m| format!("  [{m}]"))
                .unwrap_or_default();
            out.push_str(&format!("    {}{module}\n", f.name));
        }
    }
    if stacks.threads_left_out > 0 {
        out.push_str(&format!(
            "\n# {} more threads left out (at most {MAX_THREADS})\n",
            stacks.threads_left_out
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let stacks = |pairs: &[(&str, &str)]| params::from_pairs(pairs).and_then(|r| parse(&r));
        assert_eq!(
            stacks(&[("pid", "7")]).unwrap(),
            StacksSpec {
                pid: 7,
                format: StacksFormat::Text
            }
        );
        assert_eq!(
            stacks(&[("pid", "7"), ("format", "json")]).unwrap().format,
            StacksFormat::Json
        );
        for bad in [
            &[][..],
            &[("pid", "7"), ("format", "svg")],
            &[("pid", "7,8")],
            &[("pid", "7"), ("seconds", "1")],
        ] {
            assert!(stacks(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_reads_like_dotnet_stack_with_native_frames() {
        let frame = |name: &str, kind: &str, module: Option<&str>| StackFrame {
            name: name.into(),
            kind: kind.into(),
            module: module.map(Into::into),
        };
        let stacks = ThreadStacks {
            pid: 7,
            comm: "dotnet".into(),
            threads: vec![
                ThreadStack {
                    tid: 7,
                    name: "dotnet".into(),
                    state: "running".into(),
                    blocked_in: None,
                    frames: vec![
                        frame("App.Work.HotLoop(int32)", "jit", None),
                        frame("main", "user", Some("/usr/bin/dotnet")),
                    ],
                    error: None,
                },
                ThreadStack {
                    tid: 9,
                    name: "gone\u{1b}[2J".into(),
                    state: "sleeping".into(),
                    blocked_in: Some("futex_wait_queue".into()),
                    frames: vec![],
                    error: Some("not stopped: No such process".into()),
                },
            ],
            stopped_us: 1500,
            threads_left_out: 0,
            naming_error: None,
        };
        let text = text(&stacks);
        assert_eq!(
            text,
            "# pid 7 (dotnet): 2 threads, stopped for 1.5 ms\n\
             \nThread 7 \"dotnet\" (running)\n    App.Work.HotLoop(int32)\n    main  [dotnet]\n\
             \nThread 9 \"gone\\u{1b}[2J\" (sleeping in futex_wait_queue): not stopped: No such process\n"
        );
    }
}
