//! ptrace for the fatal-signal watch (`tracecar-agent watch-signals`):
//! the raw requests and `waitpid`, as plain functions. The decisions
//! (which stop means what, what to do) are in `rules::fatal`; the watch
//! runs in a process of its own, whose only children are its tracees, so
//! that `waitpid(-1)` there reaps nothing the agent waits for.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the `SIGHUP` the kernel sends when the thread that started
/// this process ends ([`end_with_parent`]).
static PARENT_GONE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_parent_gone(_: libc::c_int) {
    PARENT_GONE.store(true, Ordering::Relaxed);
}

/// Asks the kernel for a `SIGHUP` when the agent's thread that started
/// this process ends (`PR_SET_PDEATHSIG`), which interrupts
/// [`wait_any`] (no `SA_RESTART`) and makes [`parent_gone`] true. A
/// parent already gone (adopted by another) counts too.
pub fn end_with_parent(parent: i32) -> io::Result<()> {
    // SAFETY: sigaction is given a zeroed struct with a handler that only
    // stores an atomic (async-signal-safe); prctl and getppid take and
    // return integers.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_parent_gone as *const () as usize;
        libc::sigemptyset(&raw mut action.sa_mask);
        check(libc::c_long::from(libc::sigaction(
            libc::SIGHUP,
            &raw const action,
            std::ptr::null_mut(),
        )))?;
        check(libc::c_long::from(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGHUP,
        )))?;
        if libc::getppid() != parent {
            PARENT_GONE.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Whether the agent's thread that started this process has ended.
pub fn parent_gone() -> bool {
    PARENT_GONE.load(Ordering::Relaxed)
}

/// What `waitpid` reported for one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The thread exited or was killed.
    Gone(i32),
    /// About to be delivered signal `sig` (signal-delivery-stop).
    Signal(i32, i32),
    /// A ptrace event stop: `event` (`PTRACE_EVENT_*`) and the stop's
    /// signal.
    Event(i32, i32, i32),
}

fn check(result: libc::c_long) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn request(request: libc::c_uint, tid: i32, data: usize) -> io::Result<()> {
    // SAFETY: the requests used here (SEIZE, INTERRUPT, CONT, LISTEN,
    // DETACH) take a tid, a null address and an integer data word
    // (options or a signal number); no memory is passed.
    check(unsafe {
        libc::ptrace(
            request,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    })
}

/// Seizes `tid`, following the threads it creates (`PTRACE_O_TRACECLONE`):
/// it keeps running.
pub fn seize(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_SEIZE, tid, libc::PTRACE_O_TRACECLONE as usize)
}

/// Stops a seized thread (it reports a `PTRACE_EVENT_STOP`).
pub fn interrupt(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_INTERRUPT, tid, 0)
}

/// Restarts a stopped thread, delivering `sig` (0: none).
pub fn resume(tid: i32, sig: i32) -> io::Result<()> {
    request(libc::PTRACE_CONT, tid, usize::try_from(sig).unwrap_or(0))
}

/// Leaves a thread in its group-stop, still traced.
pub fn listen(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_LISTEN, tid, 0)
}

/// Lets a stopped thread go, delivering `sig` (0: none).
pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    request(libc::PTRACE_DETACH, tid, usize::try_from(sig).unwrap_or(0))
}

/// Waits for any tracee of this process (`__WALL`); with `block` false,
/// `None` when none has anything to report.
pub fn wait_any(block: bool) -> io::Result<Option<Stop>> {
    let flags = libc::__WALL | if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one c_int through the pointer, which
        // points at a live local.
        let tid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if tid == 0 {
            return Ok(None);
        }
        if tid == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) && !parent_gone() {
                continue;
            }
            return Err(e);
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok(Some(Stop::Gone(tid)));
        }
        if libc::WIFSTOPPED(status) {
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xff;
            return Ok(Some(if event == 0 {
                Stop::Signal(tid, sig)
            } else {
                Stop::Event(tid, event, sig)
            }));
        }
    }
}

/// Sends `sig` to the process `pid`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers.
    check(libc::c_long::from(unsafe { libc::kill(pid, sig) }))
}

/// Sends `sig` to the thread `tid` of process `pid`.
pub fn tgkill(pid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: the tgkill syscall takes three integers.
    check(unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::c_long::from(pid),
            libc::c_long::from(tid),
            libc::c_long::from(sig),
        )
    })
}
