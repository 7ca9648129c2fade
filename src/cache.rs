//! The token cache: one entry per assertion-bound key (see [`crate::key`]),
//! served until a safety margin before expiry, and bounded in size. Reads are
//! lock-free (`DashMap`); writes take one mutex so that the bound is exact.
//!
//! Expiry is judged against the wall clock, in ms since the Unix epoch, as the
//! provider judges it: a monotonic clock stops while a laptop sleeps or a VM is
//! paused, and expired tokens would look fresh afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::generations::{Generations, Stamp};
pub use crate::key::CacheKey;

/// Now, on the wall clock, in ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

static LAST_BEGUN_US: AtomicU64 = AtomicU64::new(0);

/// When an exchange begins, in µs since the Unix epoch: the wall clock, but
/// strictly increasing within the process. It orders the tokens of a key: a
/// token is never replaced by one from an exchange that began before it (a
/// claims challenge's or a forced refresh's token by a plain exchange that
/// was already under way), in this cache or in Redis, where the wall clock
/// is the only order the instances share.
pub fn exchange_begins() -> u64 {
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64);
    let previous = LAST_BEGUN_US
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now_us.max(last + 1)))
        .unwrap_or_default();
    now_us.max(previous + 1)
}

/// Until when a token is served: `skew` before it expires, but never less
/// than a second after it was obtained, so that a token that lives less than
/// the skew still serves the callers that waited for it instead of each
/// asking for another.
pub fn serve_until_ms(obtained_at_ms: u64, expires_at_ms: u64, skew: Duration) -> u64 {
    expires_at_ms.saturating_sub(skew.as_millis() as u64).max(obtained_at_ms.saturating_add(1000))
}

/// A token as the cache keeps it.
#[derive(Clone, Debug)]
pub struct CachedToken {
    pub access_token: Arc<str>,
    /// `expires_in` as granted, in seconds.
    pub granted_secs: u64,
    /// Wall-clock expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// `max(obtained + 1 s, expires_at − skew)`, ms since the Unix epoch.
    pub serve_until_ms: u64,
    /// When the exchange that brought it began ([`exchange_begins`]); 0 when unknown.
    pub begun_us: u64,
}

impl CachedToken {
    pub fn new(access_token: Arc<str>, granted_secs: u64, obtained_at_ms: u64, skew: Duration) -> CachedToken {
        let expires_at_ms = obtained_at_ms.saturating_add(granted_secs.saturating_mul(1000));
        let serve_until_ms = serve_until_ms(obtained_at_ms, expires_at_ms, skew);
        CachedToken { access_token, granted_secs, expires_at_ms, serve_until_ms, begun_us: 0 }
    }

    /// Whole seconds left, rounded up, never more than granted.
    pub fn remaining_secs(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000).min(self.granted_secs)
    }
}

/// A token served from the cache, with what the JavaScript memo needs.
#[derive(Clone, Debug)]
pub struct Hit {
    pub access_token: Arc<str>,
    pub expires_in: u64,
    pub granted_secs: u64,
    pub expires_at_ms: u64,
    pub serve_until_ms: u64,
    pub stamp: Stamp,
}

impl Hit {
    pub fn new(token: &CachedToken, now_ms: u64, stamp: Stamp) -> Hit {
        Hit {
            access_token: token.access_token.clone(),
            expires_in: token.remaining_secs(now_ms),
            granted_secs: token.granted_secs,
            expires_at_ms: token.expires_at_ms,
            serve_until_ms: token.serve_until_ms,
            stamp,
        }
    }
}

pub struct TokenCache {
    entries: DashMap<CacheKey, CachedToken>,
    writes: Mutex<()>,
    generations: Arc<Generations>,
}

impl TokenCache {
    pub fn new(generations: Arc<Generations>) -> TokenCache {
        TokenCache { entries: DashMap::new(), writes: Mutex::new(()), generations }
    }

    /// The counters that mirror this cache's changes to JavaScript.
    pub fn generations(&self) -> &Arc<Generations> {
        &self.generations
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token for `key` if it may still be served at `now_ms`.
    pub fn get(&self, key: &CacheKey, now_ms: u64) -> Option<Hit> {
        let entry = self.entries.get(key)?;
        if now_ms >= entry.serve_until_ms {
            return None;
        }
        // Stamped while the entry is held: a writer bumps the slot only after
        // replacing the entry, so the stamp can be older, never newer.
        let stamp = self.generations.stamp(key.as_bytes());
        Some(Hit::new(&entry, now_ms, stamp))
    }

    /// Stores a token, keeping at most `capacity` entries, unless `still_current`
    /// says (under the write lock) that the cache was emptied since the exchange
    /// began, or the key holds a servable token from an exchange that began
    /// later. Returns whether the token was stored.
    pub fn insert(
        &self,
        key: CacheKey,
        token: CachedToken,
        capacity: usize,
        now_ms: u64,
        still_current: impl FnOnce() -> bool,
    ) -> bool {
        let _write = self.writes.lock();
        if !still_current() {
            return false;
        }
        if self.entries.get(&key).is_some_and(|held| held.begun_us > token.begun_us && now_ms < held.serve_until_ms) {
            return false;
        }
        let capacity = capacity.max(1);
        if !self.entries.contains_key(&key) && self.entries.len() >= capacity {
            self.make_room(capacity, now_ms);
        }
        let slot = Generations::slot_of(key.as_bytes());
        self.entries.insert(key, token);
        self.generations.bump_slot(slot);
        true
    }

    /// Drops expired entries first; if that is not enough, the entries nearest
    /// expiry, down to 90 % of capacity so that the scan is paid once per many inserts.
    fn make_room(&self, capacity: usize, now_ms: u64) {
        let mut changed_slots = Vec::new();
        self.entries.retain(|key, token| {
            let keep = now_ms < token.serve_until_ms;
            if !keep {
                changed_slots.push(Generations::slot_of(key.as_bytes()));
            }
            keep
        });
        let target = capacity - capacity / 10 - 1;
        if self.entries.len() > target {
            let mut by_expiry: Vec<(u64, CacheKey)> =
                self.entries.iter().map(|entry| (entry.serve_until_ms, *entry.key())).collect();
            let excess = by_expiry.len() - target;
            by_expiry.select_nth_unstable_by_key(excess - 1, |(serve_until, _)| *serve_until);
            for (_, key) in by_expiry.into_iter().take(excess) {
                self.entries.remove(&key);
                changed_slots.push(Generations::slot_of(key.as_bytes()));
            }
        }
        for slot in changed_slots {
            self.generations.bump_slot(slot);
        }
    }

    pub fn clear(&self) {
        let _write = self.writes.lock();
        self.entries.clear();
        self.generations.bump_epoch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::test_key as key;

    const T0: u64 = 1_800_000_000_000;

    fn cache() -> TokenCache {
        TokenCache::new(Arc::new(Generations::new()))
    }

    fn token(text: &str, granted: u64, at_ms: u64) -> CachedToken {
        CachedToken::new(Arc::from(text), granted, at_ms, Duration::from_secs(30))
    }

    #[test]
    fn served_until_the_skew_margin() {
        let cache = cache();
        cache.insert(key("u", "s"), token("tok", 100, T0), 10, T0, || true);
        assert!(cache.get(&key("u", "s"), T0 + 69_999).is_some());
        assert!(cache.get(&key("u", "s"), T0 + 70_000).is_none());
    }

    #[test]
    fn expiry_follows_the_wall_clock_not_the_time_the_process_ran() {
        // A suspended machine wakes with the wall clock far ahead; the cache
        // reads nothing but the wall clock, so the token is gone.
        let cache = cache();
        cache.insert(key("u", "s"), token("tok", 3600, T0), 10, T0, || true);
        assert!(cache.get(&key("u", "s"), T0 + 1).is_some());
        assert!(cache.get(&key("u", "s"), T0 + 3_600_000).is_none());
    }

    #[test]
    fn short_lived_tokens_are_served_for_one_second() {
        for granted in [0, 1, 5, 30] {
            let token = token("tok", granted, T0);
            assert_eq!(token.serve_until_ms, T0 + 1000, "granted {granted}");
        }
        assert_eq!(token("tok", 31, T0).serve_until_ms, T0 + 1000);
        assert_eq!(token("tok", 32, T0).serve_until_ms, T0 + 2000);
    }

    #[test]
    fn a_hit_reports_the_remaining_lifetime_rounded_up_and_the_original_expiry() {
        let cache = cache();
        cache.insert(key("u", "s"), token("tok", 3600, T0), 10, T0, || true);
        assert_eq!(cache.get(&key("u", "s"), T0).unwrap().expires_in, 3600);
        assert_eq!(cache.get(&key("u", "s"), T0 + 1).unwrap().expires_in, 3600);
        assert_eq!(cache.get(&key("u", "s"), T0 + 1500).unwrap().expires_in, 3599);
        let later = cache.get(&key("u", "s"), T0 + 600_000).unwrap();
        assert_eq!(later.expires_in, 3000);
        assert_eq!(later.expires_at_ms, T0 + 3_600_000);
    }

    #[test]
    fn never_more_than_capacity_and_expired_go_first() {
        let cache = cache();
        cache.insert(key("old", "s"), token("x", 1, T0), 100, T0, || true);
        let later = T0 + 5000;
        for i in 0..99 {
            cache.insert(key(&format!("u{i}"), "s"), token("x", 3600 + i, later), 100, later, || true);
        }
        assert_eq!(cache.len(), 100);
        cache.insert(key("new", "s"), token("x", 7200, later), 100, later, || true);
        assert!(cache.len() <= 100);
        assert!(cache.get(&key("old", "s"), T0).is_none());
        assert!(cache.get(&key("new", "s"), later).is_some());
        // The longest-lived survive an eviction of live entries.
        assert!(cache.get(&key("u98", "s"), later).is_some());
        for i in 0..1000 {
            cache.insert(key(&format!("w{i}"), "s"), token("x", 60, later), 100, later, || true);
            assert!(cache.len() <= 100);
        }
    }

    #[test]
    fn an_outdated_insert_is_dropped() {
        let cache = cache();
        assert!(!cache.insert(key("u", "s"), token("x", 60, T0), 10, T0, || false));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_token_is_never_replaced_by_one_from_an_exchange_that_began_before_it() {
        let cache = cache();
        let (older, newer) = (exchange_begins(), exchange_begins());
        assert!(newer > older);
        let begun = |text: &str, begun_us: u64| CachedToken { begun_us, ..token(text, 3600, T0) };
        assert!(cache.insert(key("u", "s"), begun("claims", newer), 10, T0, || true));
        assert!(!cache.insert(key("u", "s"), begun("plain", older), 10, T0, || true));
        assert_eq!(&*cache.get(&key("u", "s"), T0).unwrap().access_token, "claims");
        // Once the newer token can no longer be served, any token replaces it.
        let late = T0 + 3_600_000;
        assert!(cache.insert(
            key("u", "s"),
            CachedToken { begun_us: older, ..token("plain", 3600, late) },
            10,
            late,
            || true
        ));
    }

    #[test]
    fn writes_move_the_stamp() {
        let cache = cache();
        assert!(cache.insert(key("u", "s"), token("a", 60, T0), 10, T0, || true));
        let first = cache.get(&key("u", "s"), T0).unwrap().stamp;
        assert!(cache.insert(key("u", "s"), token("b", 60, T0), 10, T0, || true));
        let second = cache.get(&key("u", "s"), T0).unwrap().stamp;
        assert_ne!(first, second);
        assert_eq!(first.slot, second.slot);
        cache.clear();
        assert!(cache.get(&key("u", "s"), T0).is_none());
    }
}
