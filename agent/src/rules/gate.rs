//! A rule's own limits, pure: whether a firing may run its actions now.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::spec::Limits;

/// Why a firing did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBack {
    /// Its previous firing's actions still run.
    Busy,
    /// Within the cooldown after the last firing's actions.
    Cooldown,
    /// `max_actions` ran within the last `window_seconds`.
    Rate,
    /// Every capture slot is taken.
    Slots,
    /// The agent is near its memory limit.
    Memory,
}

impl HeldBack {
    /// Its name in the rule's tally.
    pub fn name(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Cooldown => "cooldown",
            Self::Rate => "rate",
            Self::Slots => "slots",
            Self::Memory => "memory",
        }
    }
}

/// A rule's firings that ran, and whether one runs.
#[derive(Debug, Clone, Default)]
pub struct History {
    ran: VecDeque<Instant>,
    running: bool,
    quiet_until: Option<Instant>,
}

impl History {
    /// Whether a firing at `now` may run under `limits`.
    pub fn admit(&mut self, limits: &Limits, now: Instant) -> Result<(), HeldBack> {
        if self.running {
            return Err(HeldBack::Busy);
        }
        if self.quiet_until.is_some_and(|until| now < until) {
            return Err(HeldBack::Cooldown);
        }
        let window = Duration::from_secs(u64::from(limits.window_seconds));
        while self
            .ran
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.ran.pop_front();
        }
        if self.ran.len() >= limits.max_actions as usize {
            return Err(HeldBack::Rate);
        }
        Ok(())
    }

    /// A firing started running at `now`.
    pub fn started(&mut self, now: Instant) {
        self.running = true;
        self.ran.push_back(now);
    }

    /// Its actions ended at `now`.
    pub fn ended(&mut self, limits: &Limits, now: Instant) {
        self.running = false;
        self.quiet_until = Some(now + Duration::from_secs(u64::from(limits.cooldown_seconds)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_firings_back_in_order() {
        let limits = Limits {
            max_actions: 2,
            window_seconds: 100,
            cooldown_seconds: 10,
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = History::default();
        assert_eq!(h.admit(&limits, at(0)), Ok(()));
        h.started(at(0));
        assert_eq!(h.admit(&limits, at(1)), Err(HeldBack::Busy));
        h.ended(&limits, at(5));
        assert_eq!(h.admit(&limits, at(14)), Err(HeldBack::Cooldown));
        assert_eq!(h.admit(&limits, at(15)), Ok(()));
        h.started(at(15));
        h.ended(&limits, at(16));
        // Two ran within 100 s: the third waits for the first to leave
        // the window.
        assert_eq!(h.admit(&limits, at(50)), Err(HeldBack::Rate));
        assert_eq!(h.admit(&limits, at(99)), Err(HeldBack::Rate));
        assert_eq!(h.admit(&limits, at(100)), Ok(()));
        let names: Vec<&str> = [
            HeldBack::Busy,
            HeldBack::Cooldown,
            HeldBack::Rate,
            HeldBack::Slots,
            HeldBack::Memory,
        ]
        .into_iter()
        .map(HeldBack::name)
        .collect();
        assert_eq!(names, ["busy", "cooldown", "rate", "slots", "memory"]);
    }
}
