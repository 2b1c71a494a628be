//! Locks that a panic cannot break.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking a poisoned one as it is: every value the agent
/// keeps behind a mutex is replaced or counted whole, so a holder that
/// panicked cannot have left it half-written.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
