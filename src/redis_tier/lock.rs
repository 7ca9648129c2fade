//! The cross-instance exchange lock: `SET NX PX` with a random holder token,
//! released by compare-and-delete so that a holder whose lock already expired
//! cannot delete the next holder's. Releasing also wakes the waiters, so that
//! after a failed exchange they take over without waiting for a poll.

use std::sync::Arc;

use super::Inner;

const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

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
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("released", &self.released).finish_non_exhaustive()
    }
}

impl LockGuard {
    pub async fn release(mut self) {
        self.released = true;
        release(&self.tier, &self.lock, &self.channel, &self.token).await;
    }

    /// Gives the lock up without releasing it: it expires on its own. What a
    /// holder that dies mid-exchange amounts to.
    #[cfg(test)]
    pub(super) fn abandon(mut self) {
        self.released = true;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
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
