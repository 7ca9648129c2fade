//! Counters since the package was loaded, shared by every thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::redis_tier::RedisCounters;
use crate::session::SessionCounters;

#[derive(Default)]
pub struct Counters {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub exchanges: AtomicU64,
    pub retries: AtomicU64,
    pub failures: AtomicU64,
    pub throttled: AtomicU64,
    pub in_flight: AtomicU64,
    /// The Redis tier's and the sessions' counters: every configuration
    /// counts into them, so that totals survive `configure()`.
    pub redis: Arc<RedisCounters>,
    pub sessions: Arc<SessionCounters>,
}

/// A snapshot, as `stats()` returns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// `fromCache` calls that found no usable token.
    pub cache_misses: u64,
    /// Calls that joined an exchange already in flight.
    pub coalesced: u64,
    /// Exchanges started with the identity provider (retries not counted).
    pub exchanges: u64,
    pub retries: u64,
    /// Exchanges that ended in failure.
    pub failures: u64,
    /// Calls refused, without a request, because their key was throttled.
    pub throttled: u64,
    pub cache_size: u64,
    /// Exchanges under way now.
    pub in_flight: u64,
    /// Reads of the shared Redis tier that found a token, or did not (an
    /// unavailable Redis counts a miss), and Redis operations that failed or
    /// timed out.
    pub redis_hits: u64,
    pub redis_misses: u64,
    pub redis_errors: u64,
    /// Waits for another instance's exchange of the same key.
    pub lock_waits: u64,
    /// Long-running sessions held in this process (none when they live in Redis or a host store).
    pub sessions: u64,
    /// Refresh tokens redeemed for sessions.
    pub session_renewals: u64,
    /// Session calls (begin or acquire) that failed.
    pub session_failures: u64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, cache_size: usize, sessions: usize) -> Stats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let redis = self.redis.snapshot();
        Stats {
            cache_hits: read(&self.cache_hits),
            cache_misses: read(&self.cache_misses),
            coalesced: read(&self.coalesced),
            exchanges: read(&self.exchanges),
            retries: read(&self.retries),
            failures: read(&self.failures),
            throttled: read(&self.throttled),
            cache_size: cache_size as u64,
            in_flight: read(&self.in_flight),
            redis_hits: redis.hits,
            redis_misses: redis.misses,
            redis_errors: redis.errors,
            lock_waits: redis.lock_waits,
            sessions: sessions as u64,
            session_renewals: read(&self.sessions.renewals),
            session_failures: read(&self.sessions.failures),
        }
    }
}

/// Counts an exchange as under way for as long as it lives.
pub struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
