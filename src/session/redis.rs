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
            self.tier.wait_for_release(id.as_bytes(), left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::Options;
    use crate::redis_tier::test_servers::{redis_available, RedisServer};
    use crate::redis_tier::RedisOptions;

    fn instance(uri: &str) -> RedisSessions {
        let options = RedisOptions::from_options(&Options(
            json!({ "redisUri": uri, "cacheEncryptionKey": "ab".repeat(32), "redisTimeoutMs": 2000 })
                .as_object()
                .unwrap(),
        ))
        .unwrap()
        .unwrap();
        RedisSessions::new(RedisTier::new(options).unwrap(), Duration::from_secs(3), Duration::from_secs(30))
    }

    #[tokio::test]
    async fn waiting_for_another_instances_renewal_is_a_lock_wait_and_no_redis_miss() {
        if !redis_available("session::redis: a session wait is no Redis miss", false) {
            return;
        }
        let server = RedisServer::start();
        let (holder, waiter) = (instance(&server.uri()), instance(&server.uri()));
        let id = SessionId::derive(b"client", "session key");
        let held = holder.lock(&id).await.unwrap();
        let (taken, ()) = tokio::join!(waiter.lock(&id), async {
            while waiter.tier.stats().lock_waits == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            held.release().await;
        });
        taken.unwrap().release().await;
        let stats = waiter.tier.stats();
        assert!(stats.lock_waits >= 1 && (stats.misses, stats.hits) == (0, 0), "{stats:?}");
    }
}
