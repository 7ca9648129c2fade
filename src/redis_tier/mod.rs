//! The shared tier behind the in-process cache, for deployments that run
//! several instances on one Redis (LibreChat with `USE_REDIS`). It lets the
//! instances share tokens and throttles, and lets one of them exchange per key
//! while the others wait for its value, so a deployment makes one exchange per
//! key instead of one per instance.
//!
//! The engine only asks it: every operation answers within the configured
//! budget, and any failure (error, timeout, undecryptable value, open breaker)
//! comes back as a miss or as [`LockAttempt::Unavailable`], never as an error.
//! Redis holds nothing readable: key names are keyed hashes and values are
//! sealed (see `crypto`), and every key written expires.
//!
//! Key names, for a shared key `k` (the engine's key under the application's
//! namespace, see [`crate::shared::Namespace`]; `tag = base64url(HMAC-SHA256(k))`):
//! `{prefix}obo:{tag}:t` the token, `…:l` the exchange lock, `…:r` a throttle,
//! and the pub/sub channel `…:c` that announces a new token or a released lock;
//! for a long-running OBO session's id, `…:s` holds the session (`sessions`).

mod breaker;
mod client;
mod crypto;
mod lock;
mod options;
mod ordered;
mod sessions;
mod wait;

#[cfg(test)]
pub(crate) mod test_servers;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::RedisResult;
use serde::{Deserialize, Serialize};

use crate::cache::wall_clock_ms;

pub use breaker::{BreakerPolicy, Notice};
pub use lock::{LockAttempt, LockGuard};
pub(crate) use options::encryption_key_from_options;
pub use options::{ConfigError, RedisOptions, DEFAULT_POLL_INTERVAL, DEFAULT_TIMEOUT};
pub use sessions::Unreachable;

/// Sessions kept in a host's own store are sealed the same way (see `crate::session`).
pub(crate) use crypto::Sealer;

use breaker::Breaker;
use client::Backend;
use crypto::KeyNames;
use wait::Subscriptions;

/// A token as the instances share it. Times are wall-clock milliseconds since
/// the epoch, the only clock that instances share.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedToken {
    pub access_token: String,
    /// The provider's `expires_in`, after normalisation.
    pub granted_secs: u64,
    /// The token's absolute expiry (`expires_at`).
    pub expires_at_ms: u64,
    /// Until when it may be served; the Redis entry expires then.
    pub serve_until_ms: u64,
    /// When the exchange that brought it began, as read back from Redis
    /// (stored in clear in front of the sealed value, see [`ordered`]): an
    /// instance that copies the token keeps it, so that a claims or forced
    /// token from an exchange begun later still replaces the copy. On a token
    /// about to be put it is unused: [`RedisTier::put`] takes the time apart.
    #[serde(skip)]
    pub begun_us: u64,
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedToken")
            .field("access_token", &"<redacted>")
            .field("granted_secs", &self.granted_secs)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("serve_until_ms", &self.serve_until_ms)
            .field("begun_us", &self.begun_us)
            .finish()
    }
}

/// A provider's refusal with a long `Retry-After`, as every instance must
/// repeat it without a request. The texts are the engine's, already redacted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedThrottle {
    /// Wall-clock ms since the epoch until which the key is refused.
    pub until_ms: u64,
    pub status: Option<u16>,
    pub message: String,
    pub code: Option<String>,
    /// The OAuth `error` and `error_description` of the refusal.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What Redis holds for a key, read in one round trip by [`RedisTier::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shared {
    Token(SharedToken),
    /// No token, and the key is throttled.
    Throttled(SharedThrottle),
    Nothing,
}

/// Counters since the tier was created. Every `get`, `lookup` and `wait_for`
/// (not `get_again`, the second look of a call already counted)
/// counts one hit or one miss; `errors` counts failed or timed-out Redis operations
/// (whatever the call); `lock_waits` counts calls of `wait_for`;
/// `lock_renewals` counts the leases this process's lock holders renewed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub lock_waits: u64,
    pub lock_renewals: u64,
}

/// The counters behind [`RedisStats`]. A tier can count into counters that
/// outlive it, so that the process's totals survive `configure()`.
#[derive(Default, Debug)]
pub struct RedisCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    lock_waits: AtomicU64,
    lock_renewals: AtomicU64,
}

impl RedisCounters {
    pub fn snapshot(&self) -> RedisStats {
        RedisStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            lock_waits: self.lock_waits.load(Ordering::Relaxed),
            lock_renewals: self.lock_renewals.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The shared tier. Cheap to clone; connects on first use, inside the Tokio
/// runtime that calls it.
#[derive(Clone)]
pub struct RedisTier {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    prefix: String,
    sealer: Sealer,
    backend: Backend,
    breaker: Breaker,
    timeout: Duration,
    poll_interval: Duration,
    counters: Arc<RedisCounters>,
    subscriptions: Subscriptions,
    /// How many times waiters read Redis: tells a pub/sub wake-up from a poll.
    #[cfg(test)]
    peeks: AtomicU64,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

enum Peek {
    Token(SharedToken),
    Locked,
    Unlocked,
    Unavailable,
}

/// What went wrong with a Redis operation, in words that hold no address,
/// user name or password (the client library's own texts may quote them).
fn failure(err: &redis::RedisError) -> String {
    let what = if err.is_connection_refusal() {
        "connection refused"
    } else if err.is_timeout() {
        "timed out"
    } else if err.is_connection_dropped() {
        "connection dropped"
    } else {
        err.category()
    };
    what.to_owned()
}

impl Inner {
    /// Runs one Redis operation within the budget, through the breaker.
    async fn call<T>(&self, operation: impl Future<Output = RedisResult<T>>) -> Option<T> {
        let permit = self.breaker.admit()?;
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => {
                permit.succeeded();
                Some(value)
            }
            Ok(Err(err)) => {
                permit.failed(&failure(&err));
                bump(&self.counters.errors);
                None
            }
            Err(_) => {
                permit.failed(&format!("no answer within {} ms (redisTimeoutMs)", self.timeout.as_millis()));
                bump(&self.counters.errors);
                None
            }
        }
    }

    /// What the breaker opened on, when it did, once.
    fn take_notices(&self) -> Vec<Notice> {
        self.breaker.take_notices()
    }

    fn names(&self, key: &[u8]) -> KeyNames {
        self.sealer.key_names(&self.prefix, key)
    }

    fn open_token(&self, name: &str, stored: &[u8]) -> Option<SharedToken> {
        let (begun_us, sealed) = ordered::split(stored)?;
        let token: SharedToken = serde_json::from_slice(&self.sealer.open(name, sealed)?).ok()?;
        (token.serve_until_ms > wall_clock_ms()).then_some(SharedToken { begun_us, ..token })
    }

    fn open_throttle(&self, name: &str, sealed: &[u8]) -> Option<SharedThrottle> {
        let throttle: SharedThrottle = serde_json::from_slice(&self.sealer.open(name, sealed)?).ok()?;
        (throttle.until_ms > wall_clock_ms()).then_some(throttle)
    }

    fn count(&self, found: Option<SharedToken>) -> Option<SharedToken> {
        bump(if found.is_some() { &self.counters.hits } else { &self.counters.misses });
        found
    }

    /// The token and whether the lock is held, in one round trip (the names
    /// share a hash tag, hence a cluster slot).
    async fn peek(&self, names: &KeyNames) -> Peek {
        let mut pipeline = redis::pipe();
        pipeline.cmd("GET").arg(&names.token).cmd("EXISTS").arg(&names.lock);
        let answer = self.call(self.backend.query_pipeline::<(Option<Vec<u8>>, bool)>(&pipeline)).await;
        #[cfg(test)]
        bump(&self.peeks);
        match answer {
            None => Peek::Unavailable,
            Some((sealed, locked)) => match sealed.and_then(|sealed| self.open_token(&names.token, &sealed)) {
                Some(token) => Peek::Token(token),
                None if locked => Peek::Locked,
                None => Peek::Unlocked,
            },
        }
    }

    async fn set_expiring(&self, name: &str, plaintext: &[u8], until_ms: u64) -> bool {
        let ttl_ms = until_ms.saturating_sub(wall_clock_ms());
        if ttl_ms == 0 {
            return false;
        }
        let sealed = self.sealer.seal(name, plaintext);
        let mut set = redis::cmd("SET");
        set.arg(name).arg(sealed).arg("PX").arg(ttl_ms);
        self.call(self.backend.query::<()>(&set)).await.is_some()
    }
}

impl RedisTier {
    /// The clients are built here; nothing connects before the first call.
    /// Fails only for settings the client library refuses as a whole (for
    /// example cluster URIs carrying different passwords).
    pub fn new(options: RedisOptions) -> Result<RedisTier, ConfigError> {
        RedisTier::with_counters(options, Arc::default())
    }

    /// As [`RedisTier::new`], counting into `counters`.
    pub fn with_counters(options: RedisOptions, counters: Arc<RedisCounters>) -> Result<RedisTier, ConfigError> {
        let backend =
            Backend::new(&options).map_err(|message| ConfigError { option: "redisUri", message: message.into() })?;
        Ok(RedisTier {
            inner: Arc::new(Inner {
                prefix: options.key_prefix,
                sealer: Sealer::new(&options.encryption_key),
                backend,
                breaker: Breaker::new(options.breaker),
                timeout: options.timeout,
                poll_interval: options.poll_interval,
                counters,
                subscriptions: Subscriptions::default(),
                #[cfg(test)]
                peeks: AtomicU64::new(0),
            }),
        })
    }

    /// The token stored for `key`, if one can be served now. Absent, expired,
    /// undecryptable, failed, late or skipped by the breaker: `None`.
    pub async fn get(&self, key: &[u8]) -> Option<SharedToken> {
        let inner = &*self.inner;
        let name = inner.names(key).token;
        let sealed = inner.call(inner.backend.query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&name))).await.flatten();
        inner.count(sealed.and_then(|sealed| inner.open_token(&name, &sealed)))
    }

    /// [`RedisTier::get`] for a call whose [`RedisTier::lookup`] already
    /// counted its miss (the look again after taking the lock): not counted,
    /// so that a cold exchange counts one miss.
    pub async fn get_again(&self, key: &[u8]) -> Option<SharedToken> {
        let inner = &*self.inner;
        let name = inner.names(key).token;
        let sealed = inner.call(inner.backend.query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&name))).await.flatten();
        sealed.and_then(|sealed| inner.open_token(&name, &sealed))
    }

    /// The token of `key`, else its throttle: what a cold call needs to know
    /// before it takes the lock, in one round trip (the names share a slot).
    pub async fn lookup(&self, key: &[u8]) -> Shared {
        let inner = &*self.inner;
        let names = inner.names(key);
        let mut pipeline = redis::pipe();
        pipeline.cmd("GET").arg(&names.token).cmd("GET").arg(&names.throttle);
        let answer = inner.call(inner.backend.query_pipeline::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&pipeline)).await;
        let (token, throttle) = answer.unwrap_or_default();
        let token = inner.count(token.and_then(|sealed| inner.open_token(&names.token, &sealed)));
        match (token, throttle.and_then(|sealed| inner.open_throttle(&names.throttle, &sealed))) {
            (Some(token), _) => Shared::Token(token),
            (None, Some(throttle)) => Shared::Throttled(throttle),
            (None, None) => Shared::Nothing,
        }
    }

    /// Stores `token`, from an exchange that began at `begun_us`, until its
    /// `serve_until_ms` (nothing when that has passed), then announces it to
    /// the waiters of `key`; unless Redis holds a token from an exchange that
    /// began later, which stays (see [`ordered`]).
    pub async fn put(&self, key: &[u8], token: &SharedToken, begun_us: u64) {
        let inner = &*self.inner;
        let names = inner.names(key);
        let ttl_ms = token.serve_until_ms.saturating_sub(wall_clock_ms());
        if ttl_ms == 0 {
            return;
        }
        let plaintext = serde_json::to_vec(token).expect("a SharedToken serialises");
        let stored = ordered::join(begun_us, &inner.sealer.seal(&names.token, &plaintext));
        let put = ordered::put_unless_newer(&names.token, &stored, begun_us, ttl_ms);
        if inner.call(inner.backend.query::<i64>(&put)).await == Some(1) {
            inner.call(inner.backend.query::<i64>(redis::cmd("PUBLISH").arg(&names.channel).arg("t"))).await;
        }
    }

    /// Takes the exchange lock of `key` as a lease of `lease`, renewed every
    /// third of it until the guard is released or dropped: a holder that dies
    /// keeps the others waiting at most `lease`.
    pub async fn try_lock(&self, key: &[u8], lease: Duration) -> LockAttempt {
        let inner = &*self.inner;
        let names = inner.names(key);
        let token = inner.sealer.lock_token();
        let mut set = redis::cmd("SET");
        set.arg(&names.lock).arg(&token).arg("NX").arg("PX").arg(lease.as_millis().max(1) as u64);
        match inner.call(inner.backend.query::<Option<String>>(&set)).await {
            Some(Some(_)) => LockAttempt::Acquired(LockGuard {
                tier: self.inner.clone(),
                renewal: tokio::spawn(lock::renew(self.inner.clone(), names.lock.clone(), token.clone(), lease)),
                lock: names.lock,
                channel: names.channel,
                token,
                runtime: tokio::runtime::Handle::current(),
                released: false,
            }),
            Some(None) => LockAttempt::HeldElsewhere,
            None => LockAttempt::Unavailable,
        }
    }

    /// Waits, at most `up_to`, for another instance's exchange of `key`:
    /// returns its token as soon as it is stored, or `None` as soon as the lock
    /// is gone without a token (the holder failed or died and its lock expired;
    /// the caller then checks the shared throttle and exchanges itself), when
    /// Redis cannot be asked, or when time is up. Woken by pub/sub, with
    /// polling every `poll_interval` for a lost message. Returns within
    /// `up_to` plus two Redis budgets (the subscription and the last read).
    pub async fn wait_for(&self, key: &[u8], up_to: Duration) -> Option<SharedToken> {
        self.inner.count(self.wait(key, up_to).await)
    }

    /// Waits, at most `up_to`, while another instance holds the lock of a
    /// `key` under which no token is ever stored (a session's): a lock wait,
    /// but no Redis hit or miss, as no token was looked for.
    pub async fn wait_for_release(&self, key: &[u8], up_to: Duration) {
        self.wait(key, up_to).await;
    }

    /// [`RedisTier::wait_for`], uncounted but for the lock wait.
    async fn wait(&self, key: &[u8], up_to: Duration) -> Option<SharedToken> {
        let inner = &*self.inner;
        bump(&inner.counters.lock_waits);
        if inner.breaker.is_open() {
            // Not even a subscriber connection to a server known to be down.
            return None;
        }
        let deadline = Instant::now() + up_to;
        let names = inner.names(key);
        let registration = Subscriptions::register(&self.inner, &names.channel).await;
        loop {
            // Armed before reading Redis, so that a message sent after the read still wakes us.
            let woken = registration.notify().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match inner.peek(&names).await {
                Peek::Token(token) => return Some(token),
                Peek::Unlocked | Peek::Unavailable => return None,
                Peek::Locked => {}
            }
            let next_poll = (Instant::now() + inner.poll_interval).min(deadline);
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(next_poll.into()) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The shared throttle of `key`, while it lasts.
    pub async fn throttle_get(&self, key: &[u8]) -> Option<SharedThrottle> {
        let inner = &*self.inner;
        let name = inner.names(key).throttle;
        let sealed =
            inner.call(inner.backend.query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&name))).await.flatten()?;
        let throttle: SharedThrottle = serde_json::from_slice(&inner.sealer.open(&name, &sealed)?).ok()?;
        (throttle.until_ms > wall_clock_ms()).then_some(throttle)
    }

    /// Shares a throttle of `key` until its `until_ms`.
    pub async fn throttle_put(&self, key: &[u8], throttle: &SharedThrottle) {
        let inner = &*self.inner;
        let name = inner.names(key).throttle;
        let plaintext = serde_json::to_vec(throttle).expect("a SharedThrottle serialises");
        inner.set_expiring(&name, &plaintext, throttle.until_ms).await;
    }

    /// What the operator should hear of since the last time asked: the breaker
    /// opening, Redis answering again. One notice per change, never per call.
    pub fn take_notices(&self) -> Vec<Notice> {
        self.inner.take_notices()
    }

    /// False while the breaker keeps calls away from Redis.
    pub fn is_available(&self) -> bool {
        !self.inner.breaker.is_open()
    }

    pub fn stats(&self) -> RedisStats {
        self.inner.counters.snapshot()
    }
}
