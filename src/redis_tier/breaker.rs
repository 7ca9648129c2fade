//! A dead or stalled Redis must not cost every call its full budget. After a
//! run of failures the breaker opens: calls skip Redis at once for a cool-down,
//! then a single call probes it, and its outcome closes or reopens the breaker.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures (errors or timeouts) that open the breaker.
    pub failures_to_open: u32,
    /// How long calls skip Redis before one probes it again.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy { failures_to_open: 3, cool_down: Duration::from_secs(5) }
    }
}

enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing,
}

pub(crate) struct Breaker {
    policy: BreakerPolicy,
    state: Mutex<State>,
}

/// Leave to talk to Redis once. Dropping it unreported counts as a failure, so
/// that a probe abandoned by its caller cannot leave the breaker half-open forever.
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    reported: bool,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker { policy, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    pub fn admit(&self) -> Option<Permit<'_>> {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => {}
            State::Open { until } if Instant::now() >= until => *state = State::Probing,
            State::Open { .. } | State::Probing => return None,
        }
        Some(Permit { breaker: self, reported: false })
    }

    /// True while calls are kept away: during the cool-down, and while a probe runs.
    pub fn is_open(&self) -> bool {
        match *self.state.lock() {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::Probing => true,
        }
    }

    fn record(&self, ok: bool) {
        let mut state = self.state.lock();
        *state = match (&*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.policy.failures_to_open => {
                State::Closed { failures: failures + 1 }
            }
            // Calls admitted before the breaker opened may still report: they extend the cool-down.
            (_, false) => State::Open { until: Instant::now() + self.policy.cool_down },
        };
    }
}

impl Permit<'_> {
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.record(true);
    }

    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.record(false);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_one_probe_through_after_the_cool_down() {
        let breaker = Breaker::new(BreakerPolicy { failures_to_open: 2, cool_down: Duration::from_millis(30) });
        breaker.admit().unwrap().failed();
        assert!(!breaker.is_open());
        breaker.admit().unwrap().failed();
        assert!(breaker.is_open());
        assert!(breaker.admit().is_none());
        let opened = Instant::now();
        let probe = loop {
            if let Some(permit) = breaker.admit() {
                break permit;
            }
            std::thread::yield_now();
        };
        assert!(opened.elapsed() >= Duration::from_millis(25));
        assert!(breaker.admit().is_none(), "one probe at a time");
        probe.succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.admit().is_some());
    }

    #[test]
    fn an_abandoned_probe_reopens_the_breaker() {
        let breaker = Breaker::new(BreakerPolicy { failures_to_open: 1, cool_down: Duration::ZERO });
        breaker.admit().unwrap().failed();
        let probe = breaker.admit().unwrap();
        assert!(breaker.is_open() && breaker.admit().is_none());
        drop(probe);
        assert!(matches!(*breaker.state.lock(), State::Open { .. }));
        breaker.admit().unwrap().succeeded();
        assert!(!breaker.is_open());
    }
}
