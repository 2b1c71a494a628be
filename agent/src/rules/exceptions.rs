//! The `exception` trigger: a .NET first-chance exception of a given
//! type, seen through the runtime's diagnostic port.
//!
//! For each .NET process the rule matches, one thread keeps an EventPipe
//! session open with `/v1/dotnet/exceptions`'s own executor
//! ([`crate::dotnet::exceptions::stream`]: the runtime's Exception
//! keyword, with the JIT and Loader keywords to name stacks), an hour at
//! a time, and reports each exception of the type. A process that is not
//! .NET is not watched; one whose session fails is tried again after
//! [`RETRY`]. What it costs the app is what `/v1/dotnet/exceptions` costs
//! it, all the time: an event per exception thrown and per method
//! compiled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::dotnet::port::{Port, PortError};
use crate::dotnet::spec::{ExceptionsFormat, ExceptionsSpec};
use crate::procfs::Procfs;

/// A session's length before the next one starts.
const SESSION_SECONDS: u32 = 3600;
/// How long after a failed session the next is tried.
pub const RETRY: Duration = Duration::from_secs(10);

/// Whether an exception of type `thrown` is one of `wanted`: the full
/// name (`System.InvalidOperationException`), or without its namespace
/// when `wanted` has none (`InvalidOperationException`).
pub fn is_type(thrown: &str, wanted: &str) -> bool {
    thrown == wanted || (!wanted.contains('.') && thrown.rsplit('.').next() == Some(wanted))
}

/// The watch of one process.
#[derive(Debug)]
pub struct ExceptionWatch {
    cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    thrown: mpsc::Receiver<String>,
    error: Arc<Mutex<Option<String>>>,
}

impl ExceptionWatch {
    /// Watches `pid` for exceptions of type `wanted`; `Ok(None)` when it
    /// is not a .NET process.
    pub fn start(procfs: &Procfs, pid: u32, wanted: &str) -> Result<Option<Self>, String> {
        match Port::find(procfs, pid) {
            Err(PortError::NotDotnet { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (tx, thrown) = mpsc::channel();
        let thread = {
            let (procfs, cancel, error, wanted) = (
                procfs.clone(),
                cancel.clone(),
                error.clone(),
                wanted.to_owned(),
            );
            std::thread::Builder::new()
                .name(format!("exceptions-{pid}"))
                .spawn(move || watch(&procfs, pid, &wanted, &cancel, &error, &tx))
                .map_err(|e| format!("cannot start the exception watch: {e}"))?
        };
        Ok(Some(Self {
            cancel,
            thread: Some(thread),
            thrown,
            error,
        }))
    }

    /// The messages of the exceptions of the type thrown since the last
    /// call.
    pub fn thrown(&self) -> Vec<String> {
        self.thrown.try_iter().collect()
    }

    /// Why the last session failed, if it did.
    pub fn error(&self) -> Option<String> {
        crate::sync::lock(&self.error).clone()
    }
}

impl Drop for ExceptionWatch {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(
    procfs: &Procfs,
    pid: u32,
    wanted: &str,
    cancel: &AtomicBool,
    error: &Mutex<Option<String>>,
    tx: &mpsc::Sender<String>,
) {
    let spec = ExceptionsSpec {
        pid,
        seconds: SESSION_SECONDS,
        limit: None,
        format: ExceptionsFormat::Json,
    };
    while !cancel.load(Ordering::Relaxed) {
        let port = match Port::find(procfs, pid) {
            Ok(port) => port,
            // Gone, or no longer reachable: the watch ends.
            Err(e) => {
                *crate::sync::lock(error) = Some(e.to_string());
                return;
            }
        };
        let failed = std::cell::RefCell::new(None);
        crate::dotnet::exceptions::stream(
            procfs,
            &port,
            &spec,
            cancel,
            |started| {
                if let Err(e) = started {
                    *failed.borrow_mut() = Some(e.to_string());
                }
            },
            |bytes| {
                for line in bytes.split(|b| *b == b'\n') {
                    let Ok(event) =
                        serde_json::from_slice::<tracecar_api::dotnet::ExceptionEvent>(line)
                    else {
                        continue;
                    };
                    if is_type(&event.kind, wanted) && tx.send(event.message).is_err() {
                        return false;
                    }
                }
                !cancel.load(Ordering::Relaxed)
            },
        );
        if let Some(e) = failed.into_inner() {
            *crate::sync::lock(error) = Some(e);
            let until = std::time::Instant::now() + RETRY;
            while std::time::Instant::now() < until && !cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_match_by_full_name_or_without_namespace() {
        let thrown = "System.InvalidOperationException";
        assert!(is_type(thrown, "System.InvalidOperationException"));
        assert!(is_type(thrown, "InvalidOperationException"));
        assert!(!is_type(thrown, "Other.InvalidOperationException"));
        assert!(!is_type(thrown, "Exception"));
        assert!(!is_type(thrown, "System.Exception"));
    }
}
