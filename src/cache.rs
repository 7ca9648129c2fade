//! The token cache: one entry per (openidId, scopes) pair, served until a
//! safety margin before expiry, and bounded in size. Reads are lock-free
//! (`DashMap`); writes take one mutex so that the bound is exact.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::generations::{Generations, Stamp};

/// The pair (openidId, scopes) as one string that no two pairs share: the
/// length of the id comes first, so `a:b` + `c` and `a` + `b:c` differ.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(Box<str>);

impl CacheKey {
    pub fn new(openid_id: &str, scopes: &str) -> CacheKey {
        let mut key = String::with_capacity(openid_id.len() + scopes.len() + 8);
        let _ = write!(key, "{}:", openid_id.len());
        key.push_str(openid_id);
        key.push_str(scopes);
        CacheKey(key.into_boxed_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for CacheKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A token as the cache keeps it.
#[derive(Clone, Debug)]
pub struct CachedToken {
    pub access_token: Arc<str>,
    /// `expires_in` as granted, in seconds.
    pub granted_secs: u64,
    pub expires_at: Instant,
    /// `max(obtained + 1 s, expires_at − skew)`.
    pub serve_until: Instant,
}

impl CachedToken {
    pub fn new(access_token: Arc<str>, granted_secs: u64, obtained_at: Instant, skew: Duration) -> CachedToken {
        let expires_at = obtained_at + Duration::from_secs(granted_secs);
        let serve_until = expires_at.checked_sub(skew).unwrap_or(obtained_at).max(obtained_at + Duration::from_secs(1));
        CachedToken { access_token, granted_secs, expires_at, serve_until }
    }

    /// Whole seconds left, rounded up, never more than granted.
    pub fn remaining_secs(&self, now: Instant) -> u64 {
        let left = self.expires_at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        secs.min(self.granted_secs)
    }
}

/// A token served from the cache, with what the JavaScript memo needs.
#[derive(Clone, Debug)]
pub struct Hit {
    pub access_token: Arc<str>,
    pub expires_in: u64,
    pub granted_secs: u64,
    /// How much longer this token may be served.
    pub serve_for: Duration,
    /// Exact time to expiry, for the memo's own `expires_in` arithmetic.
    pub expires_after: Duration,
    pub stamp: Stamp,
}

impl Hit {
    pub fn new(token: &CachedToken, now: Instant, stamp: Stamp) -> Hit {
        Hit {
            access_token: token.access_token.clone(),
            expires_in: token.remaining_secs(now),
            granted_secs: token.granted_secs,
            serve_for: token.serve_until.saturating_duration_since(now),
            expires_after: token.expires_at.saturating_duration_since(now),
            stamp,
        }
    }
}

pub struct TokenCache {
    entries: DashMap<CacheKey, CachedToken>,
    writes: Mutex<()>,
    generations: &'static Generations,
}

impl TokenCache {
    pub fn new(generations: &'static Generations) -> TokenCache {
        TokenCache { entries: DashMap::new(), writes: Mutex::new(()), generations }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token for `key` if it may still be served at `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<Hit> {
        let entry = self.entries.get(key)?;
        if now >= entry.serve_until {
            return None;
        }
        // Stamped while the entry is held: a writer bumps the slot only after
        // replacing the entry, so the stamp can be older, never newer.
        let stamp = self.generations.stamp(key);
        Some(Hit::new(&entry, now, stamp))
    }

    /// Stores a token, keeping at most `capacity` entries, unless `still_current`
    /// says (under the write lock) that the cache was emptied since the exchange
    /// began. Returns whether the token was stored.
    pub fn insert(
        &self,
        key: CacheKey,
        token: CachedToken,
        capacity: usize,
        now: Instant,
        still_current: impl FnOnce() -> bool,
    ) -> bool {
        let _write = self.writes.lock();
        if !still_current() {
            return false;
        }
        let capacity = capacity.max(1);
        if !self.entries.contains_key(key.as_str()) && self.entries.len() >= capacity {
            self.make_room(capacity, now);
        }
        let slot = Generations::slot_of(key.as_str());
        self.entries.insert(key, token);
        self.generations.bump_slot(slot);
        true
    }

    /// Drops expired entries first; if that is not enough, the entries nearest
    /// expiry, down to 90 % of capacity so that the scan is paid once per many inserts.
    fn make_room(&self, capacity: usize, now: Instant) {
        let mut changed_slots = Vec::new();
        self.entries.retain(|key, token| {
            let keep = now < token.serve_until;
            if !keep {
                changed_slots.push(Generations::slot_of(key.as_str()));
            }
            keep
        });
        let target = capacity - capacity / 10 - 1;
        if self.entries.len() > target {
            let mut by_expiry: Vec<(Instant, CacheKey)> =
                self.entries.iter().map(|entry| (entry.serve_until, entry.key().clone())).collect();
            let excess = by_expiry.len() - target;
            by_expiry.select_nth_unstable_by_key(excess - 1, |(serve_until, _)| *serve_until);
            for (_, key) in by_expiry.into_iter().take(excess) {
                self.entries.remove(key.as_str());
                changed_slots.push(Generations::slot_of(key.as_str()));
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

    fn cache() -> TokenCache {
        TokenCache::new(Box::leak(Box::new(Generations::new())))
    }

    fn token(text: &str, granted: u64, at: Instant) -> CachedToken {
        CachedToken::new(Arc::from(text), granted, at, Duration::from_secs(30))
    }

    #[test]
    fn keys_do_not_collide_across_the_separator() {
        assert_ne!(CacheKey::new("a:b", "c"), CacheKey::new("a", "b:c"));
        assert_ne!(CacheKey::new("1:a", "b"), CacheKey::new("1", ":ab"));
        assert_eq!(CacheKey::new("a", "b"), CacheKey::new("a", "b"));
    }

    #[test]
    fn served_until_the_skew_margin() {
        let cache = cache();
        let t0 = Instant::now();
        cache.insert(CacheKey::new("u", "s"), token("tok", 100, t0), 10, t0, || true);
        let key = CacheKey::new("u", "s");
        assert!(cache.get(key.as_str(), t0 + Duration::from_secs(69)).is_some());
        assert!(cache.get(key.as_str(), t0 + Duration::from_secs(70)).is_none());
    }

    #[test]
    fn short_lived_tokens_are_served_for_one_second() {
        let t0 = Instant::now();
        for granted in [0, 5, 30] {
            let token = token("tok", granted, t0);
            assert_eq!(token.serve_until, t0 + Duration::from_secs(1), "granted {granted}");
        }
        assert_eq!(token("tok", 31, t0).serve_until, t0 + Duration::from_secs(1));
        assert_eq!(token("tok", 32, t0).serve_until, t0 + Duration::from_secs(2));
    }

    #[test]
    fn a_hit_reports_the_remaining_lifetime_rounded_up() {
        let cache = cache();
        let t0 = Instant::now();
        let key = CacheKey::new("u", "s");
        cache.insert(key.clone(), token("tok", 3600, t0), 10, t0, || true);
        assert_eq!(cache.get(key.as_str(), t0).unwrap().expires_in, 3600);
        assert_eq!(cache.get(key.as_str(), t0 + Duration::from_millis(1)).unwrap().expires_in, 3600);
        assert_eq!(cache.get(key.as_str(), t0 + Duration::from_millis(1500)).unwrap().expires_in, 3599);
        assert_eq!(cache.get(key.as_str(), t0 + Duration::from_secs(600)).unwrap().expires_in, 3000);
    }

    #[test]
    fn never_more_than_capacity_and_expired_go_first() {
        let cache = cache();
        let t0 = Instant::now();
        cache.insert(CacheKey::new("old", "s"), token("x", 1, t0), 100, t0, || true);
        let later = t0 + Duration::from_secs(5);
        for i in 0..99 {
            cache.insert(CacheKey::new(&format!("u{i}"), "s"), token("x", 3600 + i, later), 100, later, || true);
        }
        assert_eq!(cache.len(), 100);
        cache.insert(CacheKey::new("new", "s"), token("x", 7200, later), 100, later, || true);
        assert!(cache.len() <= 100);
        assert!(cache.get(CacheKey::new("old", "s").as_str(), t0).is_none());
        assert!(cache.get(CacheKey::new("new", "s").as_str(), later).is_some());
        // The longest-lived survive an eviction of live entries.
        assert!(cache.get(CacheKey::new("u98", "s").as_str(), later).is_some());
        for i in 0..1000 {
            cache.insert(CacheKey::new(&format!("w{i}"), "s"), token("x", 60, later), 100, later, || true);
            assert!(cache.len() <= 100);
        }
    }

    #[test]
    fn an_outdated_insert_is_dropped() {
        let cache = cache();
        let t0 = Instant::now();
        assert!(!cache.insert(CacheKey::new("u", "s"), token("x", 60, t0), 10, t0, || false));
        assert!(cache.is_empty());
    }

    #[test]
    fn writes_move_the_stamp() {
        let cache = cache();
        let t0 = Instant::now();
        let key = CacheKey::new("u", "s");
        assert!(cache.insert(key.clone(), token("a", 60, t0), 10, t0, || true));
        let first = cache.get(key.as_str(), t0).unwrap().stamp;
        assert!(cache.insert(key.clone(), token("b", 60, t0), 10, t0, || true));
        let second = cache.get(key.as_str(), t0).unwrap().stamp;
        assert_ne!(first, second);
        assert_eq!(first.slot, second.slot);
        cache.clear();
        assert!(cache.get(key.as_str(), t0).is_none());
    }
}
