//! The one "ready, then stream" worker: a capture runs on a blocking
//! thread, says once that it is set up (or why not), then sends chunks
//! that become the response body as they come. Used by `/v1/uprobe`,
//! `/v1/lttng/record` and `/v1/lttng/live`.
//!
//! Cancellation works the same for all of them: the handler's future is
//! dropped when the client goes away before the worker is ready, and the
//! body is dropped when it goes away later; both set the worker's cancel
//! flag, and the worker's next send fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::ApiError;

/// Sets the flag when dropped.
#[derive(Debug)]
pub(super) struct CancelOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The worker's "I am set up" (or its error), sent once.
#[derive(Debug)]
pub(super) struct Ready<R, E>(oneshot::Sender<Result<R, E>>);

impl<R, E> Ready<R, E> {
    /// Answers the handler: the value the response needs, or the error.
    pub(super) fn send(self, result: Result<R, E>) {
        let _ = self.0.send(result);
    }
}

/// Where the worker sends the body's chunks.
#[derive(Debug, Clone)]
pub(super) struct Chunks(mpsc::Sender<Bytes>);

impl Chunks {
    /// Sends one chunk; `false` once the client is gone.
    pub(super) fn send(&self, chunk: impl Into<Bytes>) -> bool {
        self.0.blocking_send(chunk.into()).is_ok()
    }
}

/// Runs `work(ready, chunks, cancel)` on a blocking thread, holding
/// `permit` until it returns. Answers with the worker's error if it has
/// one, else with the value it is ready with and a body of what it sends
/// (at most `buffered` chunks queue up before the worker waits).
pub(super) async fn ready_then_stream<R, E, W>(
    buffered: usize,
    permit: OwnedSemaphorePermit,
    work: W,
) -> Result<(R, Body), ApiError>
where
    R: Send + 'static,
    E: Into<ApiError> + Send + 'static,
    W: FnOnce(Ready<R, E>, Chunks, Arc<AtomicBool>) + Send + 'static,
{
    let cancel = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = oneshot::channel();
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(buffered);
    let worker_cancel = cancel.clone();
    tokio::task::spawn_blocking(move || {
        work(Ready(ready_tx), Chunks(chunk_tx), worker_cancel);
        drop(permit);
    });
    // From here on, a client that leaves stops the worker.
    let guard = CancelOnDrop(cancel);
    let value = match ready_rx.await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(ApiError::internal(
                "the capture worker stopped before it was ready",
                "see the agent's log",
            ));
        }
    };
    // The body ends when the worker stops; dropping it (client gone)
    // cancels the worker, and its next send fails.
    let body = futures_util::stream::unfold((chunk_rx, guard), |(mut rx, guard)| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), (rx, guard)))
    });
    Ok((value, Body::from_stream(body)))
}
