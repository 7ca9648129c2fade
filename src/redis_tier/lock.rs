//! The cross-instance exchange lock: `SET NX PX` with a random holder token,
//! released by compare-and-delete so that a holder whose lock already expired
//! cannot delete the next holder's. Releasing also wakes the waiters, so that
//! after a failed exchange they take over without waiting for a poll.
//!
//! The lock is a short lease that its live holder renews (compare-and-expire)
//! every third of it while the exchange runs. A lock sized for the longest
//! exchange would make a holder that dies (a crash, a rolling deploy) cost
//! every other instance's callers of that key a minute; a lease costs them
//! at most the lease.

use std::sync::Arc;
use std::time::Duration;

use super::{bump, Inner};

const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

const RENEW_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// The outcome of [`super::RedisTier::try_lock`].
#[derive(Debug)]
pub enum LockAttempt {
    /// This instance exchanges; the guard releases the lock when dropped.
    Acquired(LockGuard),
    /// Another instance is exchanging: wait for its value.
    HeldElsewhere,
    /// Redis cannot be asked now (error, timeout, breaker open): exchange without it.
    Unavailable,
}

/// A held lock. Dropping it releases the lock in the background (on the Tokio
/// runtime it was taken on); [`LockGuard::release`] does it in place.
pub struct LockGuard {
    pub(super) tier: Arc<Inner>,
    pub(super) lock: String,
    pub(super) channel: String,
    pub(super) token: String,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) released: bool,
    /// Renews the lease until the lock is released, given up or dropped.
    pub(super) renewal: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("released", &self.released).finish_non_exhaustive()
    }
}

impl LockGuard {
    pub async fn release(mut self) {
        self.released = true;
        self.renewal.abort();
        release(&self.tier, &self.lock, &self.channel, &self.token).await;
    }

    /// Gives the lock up without releasing it or renewing it again: it
    /// expires on its own. What a holder that dies mid-exchange amounts to.
    #[cfg(test)]
    pub(super) fn abandon(mut self) {
        self.released = true;
        self.renewal.abort();
    }
}

/// Renews the lease held under `token` every third of it, for as long as the
/// task runs. A renewal that fails (Redis slow or away) is tried again at the
/// next turn, while two thirds of the lease are still left for it; a lock
/// found taken or gone is not renewed again.
pub(super) async fn renew(tier: Arc<Inner>, lock: String, token: String, lease: Duration) {
    let every = lease / 3;
    let lease_ms = lease.as_millis().max(1) as u64;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut script = redis::cmd("EVAL");
        script.arg(RENEW_SCRIPT).arg(1).arg(&lock).arg(&token).arg(lease_ms);
        match tier.call(tier.backend.query::<i64>(&script)).await {
            Some(1) => bump(&tier.counters.lock_renewals),
            Some(_) => return,
            None => {}
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        let (tier, lock, channel, token) = (
            self.tier.clone(),
            std::mem::take(&mut self.lock),
            std::mem::take(&mut self.channel),
            std::mem::take(&mut self.token),
        );
        // A runtime that is shutting down refuses the task; the lock then expires on its own.
        self.runtime.spawn(async move { release(&tier, &lock, &channel, &token).await });
    }
}

async fn release(tier: &Inner, lock: &str, channel: &str, token: &str) {
    let mut script = redis::cmd("EVAL");
    script.arg(RELEASE_SCRIPT).arg(1).arg(lock).arg(token);
    if tier.call(tier.backend.query::<i64>(&script)).await == Some(1) {
        tier.call(tier.backend.query::<i64>(redis::cmd("PUBLISH").arg(channel).arg("l"))).await;
    }
}
