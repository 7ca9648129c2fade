//! A dead or stalled Redis must not cost every call its full budget. After a
//! run of failures the breaker opens: calls skip Redis at once for a cool-down,
//! then a single call probes it, and its outcome closes or reopens the breaker.
//!
//! The operator hears of it twice, not once per call: a [`Notice`] when the
//! breaker opens (what failed, never where: URIs carry credentials) and one
//! when Redis answers again. Failed probes in between say nothing new.

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
    /// Changes the operator has not been told of yet.
    notices: Mutex<Vec<Notice>>,
}

/// A change of the breaker worth one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Redis failed `failures` times in a row, the last time because `why`.
    Opened { why: String, failures: u32, cool_down: Duration },
    /// Redis answered again after the breaker had opened.
    Recovered,
}

impl Notice {
    pub fn message(&self) -> String {
        match self {
            Notice::Opened { why, failures, cool_down } => format!(
                "The shared Redis tier is unavailable ({failures} operations in a row failed, the last: {why}); \
                 this instance exchanges on its own and asks Redis again every {} s until it answers",
                cool_down.as_secs_f64()
            ),
            Notice::Recovered => "The shared Redis tier answers again and is back in use".to_owned(),
        }
    }
}

/// Leave to talk to Redis once. Dropping it unreported counts as a failure, so
/// that a probe abandoned by its caller cannot leave the breaker half-open forever.
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    reported: bool,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker { policy, state: Mutex::new(State::Closed { failures: 0 }), notices: Mutex::new(Vec::new()) }
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

    /// The changes not reported yet, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock())
    }

    /// `failure`: why the operation failed, `None` when it succeeded.
    fn record(&self, failure: Option<&str>) {
        let mut state = self.state.lock();
        let was_closed = matches!(*state, State::Closed { .. });
        *state = match (&*state, failure) {
            (_, None) => State::Closed { failures: 0 },
            (State::Closed { failures }, Some(_)) if failures + 1 < self.policy.failures_to_open => {
                State::Closed { failures: failures + 1 }
            }
            // Calls admitted before the breaker opened may still report: they extend the cool-down.
            (_, Some(_)) => State::Open { until: Instant::now() + self.policy.cool_down },
        };
        let notice = match (was_closed, &*state, failure) {
            (true, State::Open { .. }, Some(why)) => Some(Notice::Opened {
                why: why.to_owned(),
                failures: self.policy.failures_to_open,
                cool_down: self.policy.cool_down,
            }),
            (false, State::Closed { .. }, _) => Some(Notice::Recovered),
            _ => None,
        };
        if let Some(notice) = notice {
            self.notices.lock().push(notice);
        }
    }
}

impl Permit<'_> {
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.record(None);
    }

    /// `why`: what failed, in words fit for a log (no URI, user name or password).
    pub fn failed(mut self, why: &str) {
        self.reported = true;
        self.breaker.record(Some(why));
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(Some("the operation was abandoned before Redis answered"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_one_probe_through_after_the_cool_down() {
        let breaker = Breaker::new(BreakerPolicy { failures_to_open: 2, cool_down: Duration::from_millis(30) });
        breaker.admit().unwrap().failed("refused");
        assert!(!breaker.is_open());
        breaker.admit().unwrap().failed("refused");
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
    fn the_operator_is_told_once_when_it_opens_and_once_when_redis_answers_again() {
        let breaker = Breaker::new(BreakerPolicy { failures_to_open: 2, cool_down: Duration::ZERO });
        breaker.admit().unwrap().failed("connection refused");
        assert_eq!(breaker.take_notices(), []);
        breaker.admit().unwrap().failed("connection refused");
        // Failed probes say nothing new.
        for _ in 0..3 {
            breaker.admit().unwrap().failed("timed out");
        }
        let notices = breaker.take_notices();
        assert_eq!(
            notices,
            [Notice::Opened { why: "connection refused".into(), failures: 2, cool_down: Duration::ZERO }]
        );
        assert!(notices[0].message().contains("the last: connection refused"), "{}", notices[0].message());
        breaker.admit().unwrap().succeeded();
        breaker.admit().unwrap().succeeded();
        assert_eq!(breaker.take_notices(), [Notice::Recovered]);
    }

    #[test]
    fn an_abandoned_probe_reopens_the_breaker() {
        let breaker = Breaker::new(BreakerPolicy { failures_to_open: 1, cool_down: Duration::ZERO });
        breaker.admit().unwrap().failed("refused");
        let probe = breaker.admit().unwrap();
        assert!(breaker.is_open() && breaker.admit().is_none());
        drop(probe);
        assert!(matches!(*breaker.state.lock(), State::Open { .. }));
        breaker.admit().unwrap().succeeded();
        assert!(!breaker.is_open());
    }
}
