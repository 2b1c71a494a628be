//! One destination's bounded queue of windows, and what happened to them.
//! Windows come from the continuous threads ([`Queue::push`] never
//! blocks); the sender takes them oldest first. A full queue drops its
//! oldest window to make room, and counts it: when the backend is down,
//! memory holds at most the queue and the window being sent.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::profile::continuous::Window;
use crate::sync::lock;

/// What happened to the windows of one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Windows the backend took.
    pub sent: u64,
    /// Windows dropped because newer ones filled the queue while the
    /// backend could not take them.
    pub dropped: u64,
    /// Windows the backend refused (a 4xx other than 408 and 429), or
    /// that could not be encoded: not retried.
    pub rejected: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// The last failure, until a window is sent.
    pub last_error: Option<String>,
}

/// A destination's queue.
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    items: Mutex<VecDeque<Window>>,
    tally: Mutex<Tally>,
    ready: tokio::sync::Notify,
}

impl Queue {
    /// A queue of at most `capacity` windows (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            items: Mutex::new(VecDeque::new()),
            tally: Mutex::new(Tally::default()),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Adds `window`, dropping the oldest if the queue is full.
    pub fn push(&self, window: Window) {
        let mut items = lock(&self.items);
        if items.len() >= self.capacity {
            items.pop_front();
            lock(&self.tally).dropped += 1;
        }
        items.push_back(window);
        drop(items);
        self.ready.notify_one();
    }

    /// The oldest window, when there is one.
    pub async fn next(&self) -> Window {
        loop {
            if let Some(window) = lock(&self.items).pop_front() {
                return window;
            }
            self.ready.notified().await;
        }
    }

    /// Whether the queue is full: the window being retried is then the
    /// oldest one held, and gives way.
    pub fn full(&self) -> bool {
        lock(&self.items).len() >= self.capacity
    }

    /// Windows waiting.
    pub fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// Whether no window waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A window was sent.
    pub fn sent(&self) {
        let mut tally = lock(&self.tally);
        tally.sent += 1;
        tally.last_error = None;
    }

    /// A window was refused, or could not be encoded.
    pub fn rejected(&self, why: String) {
        let mut tally = lock(&self.tally);
        tally.rejected += 1;
        tally.last_error = Some(why);
    }

    /// An attempt failed and will be retried.
    pub fn retry(&self, why: String) {
        let mut tally = lock(&self.tally);
        tally.retries += 1;
        tally.last_error = Some(why);
    }

    /// The window being retried gave way to newer ones.
    pub fn gave_up(&self) {
        lock(&self.tally).dropped += 1;
    }

    /// What happened so far.
    pub fn tally(&self) -> Tally {
        lock(&self.tally).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Mode;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn window(samples: u64) -> Window {
        Window {
            mode: Mode::Cpu,
            hz: 19,
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(15),
            samples,
            pprof: Arc::new(Vec::new()),
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts_it() {
        let queue = Queue::new(2);
        for samples in 1..=5 {
            queue.push(window(samples));
        }
        assert_eq!(queue.len(), 2);
        assert!(queue.full());
        assert_eq!(queue.tally().dropped, 3);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(queue.next()).samples, 4);
        assert_eq!(runtime.block_on(queue.next()).samples, 5);
        assert!(queue.is_empty());
        queue.retry("connection refused".to_owned());
        queue.gave_up();
        assert_eq!(
            queue.tally(),
            Tally {
                dropped: 4,
                retries: 1,
                last_error: Some("connection refused".to_owned()),
                ..Tally::default()
            }
        );
        queue.sent();
        assert_eq!(queue.tally().last_error, None);
    }
}
