//! Keys the identity provider asked us to leave alone (`Retry-After` longer
//! than a caller should wait). Only that (openidId, scopes) pair is refused
//! until the time has passed; every other key goes on as usual.
//!
//! Ends are wall-clock times (milliseconds since the Unix epoch), as the
//! provider means them and as another process sharing throttles would read
//! them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::cache::CacheKey;
use crate::error::ExchangeError;

/// Milliseconds since the Unix epoch, now.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

#[derive(Default)]
pub struct Throttles {
    until: DashMap<CacheKey, (u64, Arc<ExchangeError>)>,
    /// Taken by `remember` and `clear`, so that they are ordered.
    writes: Mutex<()>,
}

impl Throttles {
    /// Refuses `key` until `until_ms` (wall clock), unless `still_current`
    /// says, under the lock `clear` takes, that the throttles were cleared
    /// since the exchange that learned it began. Returns whether it was kept.
    pub fn remember(
        &self,
        key: &CacheKey,
        until_ms: u64,
        error: Arc<ExchangeError>,
        still_current: impl FnOnce() -> bool,
    ) -> bool {
        let _write = self.writes.lock();
        if !still_current() {
            return false;
        }
        self.until.insert(key.clone(), (until_ms, error));
        true
    }

    /// The error to answer with, if `key` is throttled at `now_ms` (wall
    /// clock): the provider's, with the time left and `throttled` set.
    pub fn check(&self, key: &CacheKey, now_ms: u64) -> Option<ExchangeError> {
        let entry = self.until.get(key.as_str())?;
        let (until, error) = entry.value();
        if now_ms >= *until {
            drop(entry);
            self.until.remove_if(key.as_str(), |_, (until, _)| now_ms >= *until);
            return None;
        }
        let mut error = ExchangeError::clone(error);
        error.retryable = true;
        error.throttled = true;
        error.retry_after = Some(Duration::from_millis(until - now_ms));
        Some(error)
    }

    pub fn clear(&self) {
        let _write = self.writes.lock();
        self.until.clear();
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn throttled() -> Arc<ExchangeError> {
        Arc::new(ExchangeError::failed("too many requests").with_status(429))
    }

    #[test]
    fn only_the_throttled_key_is_refused_and_only_until_then() {
        let throttles = Throttles::default();
        let t0 = wall_clock_ms();
        let key = CacheKey::new("u", "s");
        assert!(throttles.remember(&key, t0 + 60_000, throttled(), || true));
        let refused = throttles.check(&key, t0 + 10_000).unwrap();
        assert_eq!(refused.retry_after_secs(), Some(50));
        assert!(refused.throttled && refused.retryable);
        assert_eq!(refused.status, Some(429));
        assert_eq!(throttles.check(&key, t0 + 59_999).unwrap().retry_after, Some(Duration::from_millis(1)));
        assert!(throttles.check(&CacheKey::new("u", "t"), t0).is_none());
        assert!(throttles.check(&key, t0 + 60_000).is_none());
        assert!(throttles.is_empty());
    }

    #[test]
    fn a_throttle_learned_before_a_clear_is_not_kept() {
        let throttles = Throttles::default();
        let key = CacheKey::new("u", "s");
        let until = wall_clock_ms() + 60_000;
        assert!(!throttles.remember(&key, until, throttled(), || false));
        assert!(throttles.is_empty());
        assert!(throttles.check(&key, wall_clock_ms()).is_none());
    }

    /// The epoch check and the insert are one step against `clear`: whatever
    /// the interleaving, no throttle learned in an older epoch survives a clear.
    #[test]
    fn remember_racing_clear_never_keeps_a_stale_throttle() {
        let throttles = Throttles::default();
        let epoch = AtomicU32::new(0);
        let until = wall_clock_ms() + 60_000;
        let rounds = 20_000;
        let remembered: Vec<Vec<(CacheKey, u32)>> = std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..rounds / 4 {
                    // As `Engine::clear_cache`: the epoch moves, then the throttles go.
                    epoch.fetch_add(1, Ordering::SeqCst);
                    throttles.clear();
                }
            });
            let writers: Vec<_> = (0..2)
                .map(|writer| {
                    let (throttles, epoch) = (&throttles, &epoch);
                    scope.spawn(move || {
                        (0..rounds)
                            .map(|round| {
                                let began = epoch.load(Ordering::SeqCst);
                                let key = CacheKey::new(&format!("w{writer}-{round}"), "s");
                                throttles.remember(&key, until, throttled(), || epoch.load(Ordering::SeqCst) == began);
                                (key, began)
                            })
                            .collect()
                    })
                })
                .collect();
            writers.into_iter().map(|writer| writer.join().unwrap()).collect()
        });
        let last = epoch.load(Ordering::SeqCst);
        let now = wall_clock_ms();
        let stale: Vec<_> = remembered
            .iter()
            .flatten()
            .filter(|(key, began)| *began != last && throttles.check(key, now).is_some())
            .collect();
        assert!(stale.is_empty(), "{} throttles of an older epoch survived a clear", stale.len());
    }
}
