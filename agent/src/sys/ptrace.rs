//! Stopping a process's threads for a moment with ptrace, to read where
//! each one is (`/v1/stacks`). The threads are seized (`PTRACE_SEIZE`,
//! which sends no signal and leaves no `SIGSTOP` pending) and interrupted
//! (`PTRACE_INTERRUPT`); dropping the [`Stopped`] detaches every one,
//! handing back a signal that arrived meanwhile, and they run again. If the
//! agent dies while they are stopped, the kernel detaches them.

use std::io;
use std::time::{Duration, Instant};

/// A thread stopped with ptrace: its frame, stack and instruction
/// pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    /// RBP.
    pub bp: u64,
    /// RSP.
    pub sp: u64,
    /// RIP.
    pub ip: u64,
}

/// Threads stopped with ptrace until this is dropped. Not `Send`: the
/// kernel takes ptrace requests for a tracee only from the thread that
/// seized it, so the detach must run there.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Seized threads, the signal each is to get back on detach, and
    /// whether it was seen stopped.
    seized: Vec<(i32, i32, bool)>,
    _same_thread: std::marker::PhantomData<*const ()>,
}

/// How long a thread that did not stop in time is waited for once more
/// before it is detached: the kernel detaches only a stopped tracee, and
/// the interrupt stays pending until the thread leaves what it is in.
const LATE_STOP: Duration = Duration::from_secs(1);

impl Stopped {
    /// Seizes and interrupts each of `tids`, and waits (until `deadline`)
    /// for each to stop. Returns the guard and, per thread, its registers
    /// or why it could not be stopped (gone, traced by another debugger,
    /// not allowed, not stopped in time).
    pub fn threads(tids: &[u32], deadline: Instant) -> (Self, Vec<(u32, io::Result<Registers>)>) {
        let mut stopped = Self::default();
        let mut pending = Vec::new();
        let mut results = Vec::new();
        for &tid in tids {
            let Ok(raw) = i32::try_from(tid) else {
                results.push((tid, Err(io::Error::from_raw_os_error(libc::ESRCH))));
                continue;
            };
            match seize_and_interrupt(raw) {
                Ok(()) => {
                    stopped.seized.push((raw, 0, false));
                    pending.push(raw);
                }
                Err(e) => results.push((tid, Err(e))),
            }
        }
        for raw in pending {
            let tid = raw.unsigned_abs();
            let result = match wait_stop(raw, deadline) {
                Ok(signal) => {
                    if let Some(entry) = stopped.seized.iter_mut().find(|(t, ..)| *t == raw) {
                        entry.1 = signal;
                        entry.2 = true;
                    }
                    registers(raw)
                }
                Err(e) => Err(e),
            };
            results.push((tid, result));
        }
        (stopped, results)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let late = Instant::now() + LATE_STOP;
        for (tid, mut signal, stopped) in self.seized.drain(..) {
            if !stopped {
                // Detaching needs the stop the interrupt asked for; a
                // thread still seized after this agent thread is gone is
                // detached by the kernel then.
                signal = wait_stop(tid, late).unwrap_or(0);
            }
            // SAFETY: PTRACE_DETACH takes a tid and a signal number as the
            // data argument; no memory is passed.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_DETACH,
                    tid,
                    std::ptr::null_mut::<libc::c_void>(),
                    signal as usize as *mut libc::c_void,
                );
            }
        }
    }
}

fn check(result: libc::c_long) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn seize_and_interrupt(tid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT take a tid, a null address
    // and an options word of 0; no memory is passed.
    unsafe {
        check(libc::ptrace(
            libc::PTRACE_SEIZE,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        ))?;
        let interrupted = check(libc::ptrace(
            libc::PTRACE_INTERRUPT,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        ));
        if interrupted.is_err() {
            libc::ptrace(
                libc::PTRACE_DETACH,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            );
        }
        interrupted
    }
}

/// Waits for `tid` to stop; returns the signal to hand back on detach (0
/// for the interrupt's own stop or a group stop).
fn wait_stop(tid: i32, deadline: Instant) -> io::Result<i32> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one c_int through the pointer, which
        // points at a live local.
        let got = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if got == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if got == tid {
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if libc::WIFSTOPPED(status) {
                // An event stop (the interrupt, or a group stop) has the
                // event in the high bits; otherwise a signal was about to
                // be delivered, and goes back with the detach.
                let event = (status >> 16) & 0xff;
                return Ok(if event == 0 {
                    libc::WSTOPSIG(status)
                } else {
                    0
                });
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the thread did not stop in time",
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn registers(tid: i32) -> io::Result<Registers> {
    // SAFETY: user_regs_struct is plain integers; zeroed is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct through the data
    // pointer, which points at a live local of that type.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            (&raw mut regs).cast::<libc::c_void>(),
        )
    })?;
    Ok(Registers {
        bp: regs.rbp,
        sp: regs.rsp,
        ip: regs.rip,
    })
}
