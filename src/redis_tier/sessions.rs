//! Long-running OBO sessions in Redis (see `crate::session`): sealed like
//! tokens, under a name derived by HMAC from the session's id. Unlike the
//! token cache, a session cannot be exchanged again on a miss, so here a Redis
//! that cannot be asked is an error, never an absence.

use std::time::Duration;

use super::RedisTier;

/// Redis could not be asked (error, timeout, or an open breaker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable;

impl RedisTier {
    /// The session stored under `key`, opened; `Ok(None)` when there is none
    /// or it does not open under its name with this key.
    pub async fn session_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Unreachable> {
        let inner = &*self.inner;
        let name = inner.names(key).session;
        let sealed = inner.call(inner.backend.query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&name))).await;
        Ok(sealed.ok_or(Unreachable)?.and_then(|sealed| inner.sealer.open(&name, &sealed)))
    }

    /// Stores a session for `ttl`; every renewal stores it again, so its life starts again.
    pub async fn session_put(&self, key: &[u8], plaintext: &[u8], ttl: Duration) -> Result<(), Unreachable> {
        let inner = &*self.inner;
        let name = inner.names(key).session;
        let sealed = inner.sealer.seal(&name, plaintext);
        let mut set = redis::cmd("SET");
        set.arg(&name).arg(sealed).arg("PX").arg(ttl.as_millis().clamp(1, u64::MAX as u128) as u64);
        inner.call(inner.backend.query::<()>(&set)).await.ok_or(Unreachable)
    }

    /// Deletes a session; whether there was one.
    pub async fn session_delete(&self, key: &[u8]) -> Result<bool, Unreachable> {
        let inner = &*self.inner;
        let name = inner.names(key).session;
        inner.call(inner.backend.query::<i64>(redis::cmd("DEL").arg(&name))).await.map(|n| n > 0).ok_or(Unreachable)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::test_servers::{redis_available, RedisServer};
    use super::super::{RedisOptions, RedisTier};
    use super::Unreachable;
    use crate::config::Options;

    const KEY_HEX: &str = "6f626f2d6e61746976652072656469732074696572207465737420206b657921";

    fn tier(uri: &str) -> RedisTier {
        let options = RedisOptions::from_options(&Options(
            json!({ "redisUri": uri, "cacheEncryptionKey": KEY_HEX, "redisKeyPrefix": "lc:", "redisTimeoutMs": 2000 })
                .as_object()
                .unwrap(),
        ))
        .unwrap()
        .unwrap();
        RedisTier::new(options).unwrap()
    }

    #[tokio::test]
    async fn a_session_is_sealed_under_its_keyed_name_with_its_ttl_and_an_absent_redis_is_unreachable() {
        if !redis_available("redis_tier::sessions", false) {
            return;
        }
        let server = RedisServer::start();
        let tier = tier(&server.uri());
        let id = b"session id bytes: schedule-42";
        let record = br#"{"refresh_token":"rt-secret-value"}"#;
        assert_eq!(tier.session_get(id).await, Ok(None));
        tier.session_put(id, record, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(tier.session_get(id).await.unwrap().as_deref(), Some(&record[..]));

        let inner = &*tier.inner;
        let names: Vec<String> = inner.backend.query(redis::cmd("KEYS").arg("*")).await.unwrap();
        assert_eq!(names, [inner.names(id).session.clone()]);
        assert!(names[0].starts_with("lc:obo:{") && names[0].ends_with(":s") && !names[0].contains("schedule"));
        let sealed: Vec<u8> = inner.backend.query(redis::cmd("GET").arg(&names[0])).await.unwrap();
        assert!(!sealed.windows(15).any(|window| window == b"rt-secret-value"));
        let ttl_ms: i64 = inner.backend.query(redis::cmd("PTTL").arg(&names[0])).await.unwrap();
        assert!(ttl_ms > 3_590_000 && ttl_ms <= 3_600_000, "{ttl_ms}");

        assert_eq!(tier.session_delete(id).await, Ok(true));
        assert_eq!(tier.session_delete(id).await, Ok(false));
        assert_eq!(tier.session_get(id).await, Ok(None));

        drop(server);
        assert_eq!(tier.session_get(id).await, Err(Unreachable));
        assert_eq!(tier.session_put(id, record, Duration::from_secs(1)).await, Err(Unreachable));
    }
}
