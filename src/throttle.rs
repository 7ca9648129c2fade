//! Keys the identity provider asked us to leave alone (`Retry-After` longer
//! than a caller should wait). Only that key (identity, scopes and assertion) is refused
//! until the time has passed; every other key goes on as usual.
//!
//! Ends are wall-clock times (milliseconds since the Unix epoch), as the
//! provider means them and as another process sharing throttles would read
//! them. The map is bounded: expired entries are swept as it grows, and past
//! [`MAX_THROTTLED_KEYS`] the throttles nearest their end make room.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::cache::{wall_clock_ms, CacheKey};
use crate::error::ExchangeError;

/// The most keys remembered at once. A throttle forgotten early costs one
/// request that the provider answers with another 429.
pub const MAX_THROTTLED_KEYS: usize = 10_000;

/// Below this size the map is not swept: a scan would cost more than it frees.
const MIN_SWEEP_AT: usize = 64;

pub struct Throttles {
    until: DashMap<CacheKey, Throttle>,
    /// Taken by every write but the removal of an expired entry, so that
    /// `remember` and `clear` are ordered and the bound is exact.
    writes: Mutex<Writes>,
    capacity: usize,
}

struct Throttle {
    until_ms: u64,
    /// Insertion order: among throttles ending together, the oldest make room first.
    order: u64,
    error: Arc<ExchangeError>,
}

struct Writes {
    /// The size at which the next insert first sweeps expired entries.
    sweep_at: usize,
    inserted: u64,
}

impl Default for Throttles {
    fn default() -> Self {
        Throttles::with_capacity(MAX_THROTTLED_KEYS)
    }
}

impl Throttles {
    pub fn with_capacity(capacity: usize) -> Throttles {
        let capacity = capacity.max(1);
        Throttles {
            until: DashMap::new(),
            writes: Mutex::new(Writes { sweep_at: MIN_SWEEP_AT.min(capacity), inserted: 0 }),
            capacity,
        }
    }

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
        let mut writes = self.writes.lock();
        if !still_current() {
            return false;
        }
        if !self.until.contains_key(key) && self.until.len() >= writes.sweep_at {
            self.make_room(&mut writes, wall_clock_ms());
        }
        writes.inserted += 1;
        self.until.insert(*key, Throttle { until_ms, order: writes.inserted, error });
        true
    }

    /// Drops expired entries; if the map is still full, the throttles nearest
    /// their end, down to 90 % of capacity so that the scan is paid once per
    /// many inserts. The next sweep waits until the map has doubled.
    fn make_room(&self, writes: &mut Writes, now_ms: u64) {
        self.until.retain(|_, throttle| now_ms < throttle.until_ms);
        let target = self.capacity - self.capacity / 10 - 1;
        if self.until.len() >= self.capacity {
            let mut by_end: Vec<((u64, u64), CacheKey)> =
                self.until.iter().map(|entry| ((entry.until_ms, entry.order), *entry.key())).collect();
            let excess = by_end.len() - target;
            by_end.select_nth_unstable_by_key(excess - 1, |(end, _)| *end);
            for (_, key) in by_end.into_iter().take(excess) {
                self.until.remove(&key);
            }
        }
        writes.sweep_at = (self.until.len() * 2).max(MIN_SWEEP_AT).min(self.capacity);
    }

    /// The error to answer with, if `key` is throttled at `now_ms` (wall
    /// clock): the provider's, with the time left and `throttled` set.
    pub fn check(&self, key: &CacheKey, now_ms: u64) -> Option<ExchangeError> {
        let entry = self.until.get(key)?;
        let until = entry.until_ms;
        if now_ms >= until {
            drop(entry);
            self.until.remove_if(key, |_, throttle| now_ms >= throttle.until_ms);
            return None;
        }
        let mut error = ExchangeError::clone(&entry.error);
        error.retryable = true;
        error.throttled = true;
        error.retry_after = Some(Duration::from_millis(until - now_ms));
        Some(error)
    }

    pub fn clear(&self) {
        let mut writes = self.writes.lock();
        self.until.clear();
        writes.sweep_at = MIN_SWEEP_AT.min(self.capacity);
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
    use crate::key::test_key;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn throttled() -> Arc<ExchangeError> {
        Arc::new(ExchangeError::failed("too many requests").with_status(429))
    }

    #[test]
    fn only_the_throttled_key_is_refused_and_only_until_then() {
        let throttles = Throttles::default();
        let t0 = wall_clock_ms();
        let key = test_key("u", "s");
        assert!(throttles.remember(&key, t0 + 60_000, throttled(), || true));
        let refused = throttles.check(&key, t0 + 10_000).unwrap();
        assert_eq!(refused.retry_after_secs(), Some(50));
        assert!(refused.throttled && refused.retryable);
        assert_eq!(refused.status, Some(429));
        assert_eq!(throttles.check(&key, t0 + 59_999).unwrap().retry_after, Some(Duration::from_millis(1)));
        assert!(throttles.check(&test_key("u", "t"), t0).is_none());
        assert!(throttles.check(&key, t0 + 60_000).is_none());
        assert!(throttles.is_empty());
    }

    #[test]
    fn a_throttle_learned_before_a_clear_is_not_kept() {
        let throttles = Throttles::default();
        let key = test_key("u", "s");
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
                                let key = test_key(&format!("w{writer}-{round}"), "s");
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

    #[test]
    fn a_hundred_thousand_throttled_keys_stay_bounded_and_the_newest_are_refused() {
        let throttles = Throttles::default();
        let now = wall_clock_ms();
        let keys = 100_000;
        // Throttles that all end together: the oldest make room first.
        let until = now + 60_000;
        for i in 0..keys {
            throttles.remember(&test_key(&format!("user-{i}"), "s"), until, throttled(), || true);
            assert!(throttles.len() <= MAX_THROTTLED_KEYS);
        }
        for i in keys - 100..keys {
            let key = test_key(&format!("user-{i}"), "s");
            assert!(throttles.check(&key, now).is_some_and(|refusal| refusal.throttled), "user-{i}");
        }
        assert!(throttles.check(&test_key("user-0", "s"), now).is_none());
    }

    #[test]
    fn expired_throttles_are_swept_as_new_ones_arrive() {
        let throttles = Throttles::default();
        let past = wall_clock_ms() - 1;
        for i in 0..1_000 {
            throttles.remember(&test_key(&format!("gone-{i}"), "s"), past, throttled(), || true);
        }
        // Sweeps run each time the map doubles: expired entries never pile up past that.
        assert!(throttles.len() < 2 * MIN_SWEEP_AT, "{} expired entries kept", throttles.len());
        let live = wall_clock_ms() + 60_000;
        throttles.remember(&test_key("live", "s"), live, throttled(), || true);
        assert!(throttles.check(&test_key("live", "s"), wall_clock_ms()).is_some());
    }
}
