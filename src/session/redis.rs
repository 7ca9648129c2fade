//! Sessions in the Redis tier: shared by every instance of a deployment, and
//! renewed under the tier's cross-instance lock, so that one refresh token is
//! redeemed by one request at a time in the whole deployment. The record is
//! sealed by the tier (AES-256-GCM under `cacheEncryptionKey`, its name, an
//! HMAC of the session's id, as associated data) and lives `sessionTtlMs`
//! from its last renewal.

use std::time::{Duration, Instant};

use super::record::SessionRecord;
use super::store::StoreUnavailable;
use super::SessionId;
use crate::cache::wall_clock_ms;
use crate::redis_tier::{LockAttempt, LockGuard, RedisTier};

const UNREACHABLE: &str = "Redis could not be asked (error, timeout, or circuit breaker open)";

pub struct RedisSessions {
    tier: RedisTier,
    /// The lock's lease, which the tier renews while the holder lives.
    lease: Duration,
    /// The longest one renewal can last: a waiter gives up after twice this.
    patience: Duration,
}

/// The deployment's lock on one session.
pub struct RemoteHold(LockGuard);

impl RemoteHold {
    pub async fn release(self) {
        self.0.release().await;
    }
}

fn unreachable(_: crate::redis_tier::Unreachable) -> StoreUnavailable {
    StoreUnavailable(UNREACHABLE.to_owned())
}

impl RedisSessions {
    pub fn new(tier: RedisTier, lease: Duration, patience: Duration) -> RedisSessions {
        RedisSessions { tier, lease, patience }
    }

    pub async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreUnavailable> {
        let plaintext = self.tier.session_get(id.as_bytes()).await.map_err(unreachable)?;
        let record = plaintext.and_then(|plaintext| SessionRecord::from_json(&plaintext));
        Ok(record.filter(|record| !record.is_lapsed(wall_clock_ms())))
    }

    pub async fn save(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreUnavailable> {
        let ttl = Duration::from_millis(record.lapses_at_ms.saturating_sub(wall_clock_ms()).max(1));
        self.tier.session_put(id.as_bytes(), &record.to_json(), ttl).await.map_err(unreachable)
    }

    pub async fn remove(&self, id: &SessionId) -> Result<bool, StoreUnavailable> {
        self.tier.session_delete(id.as_bytes()).await.map_err(unreachable)
    }

    /// Takes the session's lock, waiting (woken when it is released, or when
    /// a dead holder's lease runs out) while another instance holds it, for
    /// about twice a renewal's longest life.
    pub async fn lock(&self, id: &SessionId) -> Result<RemoteHold, StoreUnavailable> {
        let deadline = Instant::now() + self.patience * 2;
        loop {
            match self.tier.try_lock(id.as_bytes(), self.lease).await {
                LockAttempt::Acquired(guard) => return Ok(RemoteHold(guard)),
                LockAttempt::Unavailable => return Err(StoreUnavailable(UNREACHABLE.to_owned())),
                LockAttempt::HeldElsewhere => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreUnavailable("another instance held the session's lock for too long".to_owned()));
            }
            // No token is ever stored under a session's id: this returns when the lock is gone.
            self.tier.wait_for(id.as_bytes(), left).await;
        }
    }
}
