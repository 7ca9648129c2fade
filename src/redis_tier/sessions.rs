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
