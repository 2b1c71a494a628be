//! The one loop behind the triggers that read a session of their own
//! (`exception`, `counter`, `latency`): a thread per watched process runs
//! a session after another until cancelled, and what the sessions see
//! waits in a channel for the next reading of the rules. The channel holds
//! at most [`HELD`] things: an app that throws, or calls a probed
//! function, faster than that between two readings (250 ms) fills it,
//! and the rest are dropped until the next reading empties it (a firing
//! then counts at most [`HELD`]). What a watch sees also [`Wake`]s the
//! rules' thread, which reads the watches then rather than at its next
//! 250 ms reading.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// What a watch holds between two readings, at most.
pub const HELD: usize = 1024;

/// How long after a failed session the next is tried.
pub const RETRY: Duration = Duration::from_secs(10);

/// What a watch saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// An exception of the type, with its message.
    Thrown(String),
    /// A counter's value for one interval.
    Value(f64),
    /// A probed call's latency, in nanoseconds.
    Latency(u64),
}

/// What wakes the rules' thread before its next reading: a watch that
/// saw something.
#[derive(Debug, Default)]
pub struct Wake {
    woken: Mutex<bool>,
    ready: Condvar,
}

impl Wake {
    /// Wakes the waiter (or the next one to wait).
    pub fn notify(&self) {
        *crate::sync::lock(&self.woken) = true;
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for [`Self::notify`]; whether it came.
    pub fn wait(&self, timeout: Duration) -> bool {
        let woken = crate::sync::lock(&self.woken);
        let (mut woken, _) = self
            .ready
            .wait_timeout_while(woken, timeout, |woken| !*woken)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *woken)
    }
}

/// How a session ended, when it did not end by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It failed; the next is tried after [`RETRY`].
    Retry(String),
    /// It cannot go on (the process is gone): the watch ends.
    Stop(String),
}

/// A watch of one process.
#[derive(Debug)]
pub struct Watch<T> {
    cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    seen: mpsc::Receiver<T>,
    error: Arc<Mutex<Option<String>>>,
}

/// Where a session sends what it sees: `false` once the watch is being
/// stopped.
pub type Emit<'a, T> = &'a mut dyn FnMut(T) -> bool;

impl<T: Send + 'static> Watch<T> {
    /// Runs `session` on a thread named `name`, again whenever it ends,
    /// until the watch is dropped. A session reads the cancel flag, sends
    /// what it sees to its [`Emit`] (which wakes `wake`), and says how it
    /// ended.
    pub fn start(
        name: String,
        wake: Arc<Wake>,
        mut session: impl FnMut(&Arc<AtomicBool>, Emit<'_, T>) -> Result<(), Ended> + Send + 'static,
    ) -> Result<Self, String> {
        let cancel = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (tx, seen) = mpsc::sync_channel(HELD);
        let thread = {
            let (cancel, error) = (cancel.clone(), error.clone());
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    // Full: dropped, and the session goes on; gone or
                    // cancelled: it stops.
                    let mut emit = |seen: T| {
                        let sent = tx.try_send(seen);
                        if sent.is_ok() {
                            wake.notify();
                        }
                        !matches!(sent, Err(mpsc::TrySendError::Disconnected(_)))
                            && !cancel.load(Ordering::Relaxed)
                    };
                    while !cancel.load(Ordering::Relaxed) {
                        match session(&cancel, &mut emit) {
                            Ok(()) => {}
                            Err(Ended::Stop(e)) => {
                                *crate::sync::lock(&error) = Some(e);
                                return;
                            }
                            Err(Ended::Retry(e)) => {
                                *crate::sync::lock(&error) = Some(e);
                                let until = Instant::now() + RETRY;
                                while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
                                    std::thread::sleep(Duration::from_millis(100));
                                }
                            }
                        }
                    }
                })
                .map_err(|e| format!("cannot start a watch: {e}"))?
        };
        Ok(Self {
            cancel,
            thread: Some(thread),
            seen,
            error,
        })
    }

    /// What it saw since the last call.
    pub fn seen(&self) -> Vec<T> {
        self.seen.try_iter().collect()
    }

    /// Why the last session failed, if it did.
    pub fn error(&self) -> Option<String> {
        crate::sync::lock(&self.error).clone()
    }
}

impl<T> Drop for Watch<T> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_run_again_until_the_watch_is_dropped() {
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = runs.clone();
        let wake = Arc::new(Wake::default());
        let watch = Watch::start("test".into(), wake.clone(), move |cancel, emit| {
            let n = counted.fetch_add(1, Ordering::Relaxed);
            emit(n);
            if n == 2 {
                return Err(Ended::Stop("done".into()));
            }
            assert!(!cancel.load(Ordering::Relaxed));
            Ok(())
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while watch.error().is_none() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(watch.seen(), [0, 1, 2]);
        // What it saw woke the reader, once for all.
        assert!(wake.wait(Duration::ZERO));
        assert!(!wake.wait(Duration::from_millis(10)));
        assert_eq!(watch.error().as_deref(), Some("done"));
        assert_eq!(runs.load(Ordering::Relaxed), 3);
        drop(watch);
        // More than it holds between two readings: the rest are dropped,
        // and the session is not stopped for it.
        let flood = Watch::start("flood".into(), wake, |_, emit| {
            let all_taken = (0..HELD * 3).all(&mut *emit);
            Err(Ended::Stop(format!("all taken: {all_taken}")))
        })
        .unwrap();
        while flood.error().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(flood.error().as_deref(), Some("all taken: true"));
        assert_eq!(flood.seen().len(), HELD);
    }
}
