//! What the leader of a local flight does when instances share a Redis tier:
//! look there first, then make sure that only one instance of the deployment
//! exchanges a given key while the others wait for its token, and afterwards
//! share what the exchange learned (the token, or a throttle).
//!
//! It lives apart from the engine so that the engine keeps one job (a call's
//! way through the local cache, throttles, flight and retries) and only asks
//! this module before and after an exchange. Everything here is best effort:
//! the tier answers every failure as a miss or as "unavailable", and then the
//! instance simply exchanges on its own.
//!
//! ```text
//! leader ──lookup──▶ token? ──▶ copy to the local cache, answer
//!          │         throttle? ─▶ remember locally, refuse
//!          ▼
//!        try_lock ─ acquired ──▶ (token put meanwhile? serve it) exchange,
//!          │                     put token or throttle, release
//!          ├─ unavailable ─────▶ exchange on our own
//!          ▼
//!        wait_for ─ token ─────▶ copy, answer
//!          └─ lock gone / timed out ─▶ back to lookup (bounded)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use ring::digest::{Context, SHA256};

use crate::cache::{wall_clock_ms, CacheKey, CachedToken, TokenCache};
use crate::config::{Config, EndpointSource};
use crate::error::{ExchangeError, OAuthErrorBody};
use crate::events::{Events, Level};
use crate::generations::Generations;
use crate::outcome::{Outcome, Token};
use crate::redis_tier::{LockAttempt, LockGuard, Notice, RedisTier, Shared, SharedThrottle, SharedToken};
use crate::throttle::Throttles;

/// Slack added to the longest exchange when sizing how long a waiter waits.
const WAIT_MARGIN: Duration = Duration::from_secs(1);

/// The lock's lease with the default Redis budget: what a holder that dies
/// mid-exchange costs the other instances' callers of its key, at most.
const LOCK_LEASE: Duration = Duration::from_secs(3);

/// What every shared name of a configuration is derived under. The engine's
/// key says whose token it is and for what; the namespace says which
/// application holds it, so that two deployments sharing a Redis, a prefix
/// and an encryption key still never serve each other a token, a throttle or
/// a lock. Every Redis name (token, lock, throttle, channel) is a keyed hash
/// of [`Namespace::key`], so this is the one place where it is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace([u8; 32]);

impl Namespace {
    /// The parts of a configuration that change what a token is: the client
    /// it is issued to, and the authority that issues it (the token
    /// endpoint's; with discovery the issuer's, as the namespace must be the
    /// same before and after the endpoint is learned). A new part that
    /// changes what a token is goes here, under a name of its own.
    pub fn of(config: &Config) -> Namespace {
        let provider = match &config.endpoint {
            EndpointSource::TokenEndpoint(url) | EndpointSource::Issuer(url) => authority(url),
        };
        // The grant, audiences, resources and requested token type; a call's
        // own audiences and resources are in its engine key as well.
        let grant = config.grant.configured_key();
        Namespace::from_parts(&[
            ("client_id", config.client_id.as_bytes()),
            ("authority", provider.as_bytes()),
            ("grant", grant.as_bytes()),
        ])
    }

    /// SHA-256 over the named, length-prefixed parts: no two lists share a namespace.
    pub fn from_parts(parts: &[(&str, &[u8])]) -> Namespace {
        let mut context = Context::new(&SHA256);
        context.update(b"obo-native shared namespace v1");
        for (name, value) in parts {
            for bytes in [name.as_bytes(), value] {
                context.update(&(bytes.len() as u64).to_be_bytes());
                context.update(bytes);
            }
        }
        let mut namespace = [0u8; 32];
        namespace.copy_from_slice(context.finish().as_ref());
        Namespace(namespace)
    }

    /// The namespace itself: long-running sessions derive their ids under it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key that the Redis names of an engine key are derived from.
    pub fn key(&self, key: &CacheKey) -> [u8; 32] {
        let mut context = Context::new(&SHA256);
        context.update(&self.0);
        context.update(key.as_bytes());
        let mut shared = [0u8; 32];
        shared.copy_from_slice(context.finish().as_ref());
        shared
    }
}

/// `host:port`, the port spelled out even when it is the scheme's default.
fn authority(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or_default())
}

/// The Redis tier of one configuration, with what it needs to know of it.
pub struct SharedTier {
    tier: RedisTier,
    namespace: Namespace,
    /// The exchange lock's lease, renewed by its holder every third of it.
    lease: Duration,
    /// The longest one exchange can last, retries included, with a margin:
    /// a waiter waits for other instances at most twice this.
    patience: Duration,
    /// The configuration's expiry skew, to recompute a fresh token's serve-until.
    skew: Duration,
}

/// The local tiers a shared answer is copied into, and the epoch the call
/// began in: nothing is copied into tiers cleared since.
pub struct Local<'a> {
    pub cache: &'a TokenCache,
    pub throttles: &'a Throttles,
    pub capacity: usize,
    pub generations: &'a Generations,
    pub epoch: u32,
    /// When the call began: a token from an exchange begun later is never replaced by its own.
    pub begun_us: u64,
}

impl Local<'_> {
    fn still_current(&self) -> bool {
        self.generations.epoch() == self.epoch
    }
}

/// What the leader does after asking the shared tier.
pub enum Ahead {
    /// Another instance's token, copied into the local cache.
    Served(Token),
    /// The key is throttled for the whole deployment (now remembered locally too).
    Refused(ExchangeError),
    /// Exchange, then hand the outcome to [`Exchanging::finish`].
    Exchange(Exchanging),
}

/// The right to exchange a key: with the deployment's lock, or without one
/// when Redis could not be asked.
pub struct Exchanging {
    lock: Option<LockGuard>,
}

impl SharedTier {
    pub fn new(tier: RedisTier, config: &Config) -> SharedTier {
        SharedTier {
            tier,
            namespace: Namespace::of(config),
            lease: config.redis.as_ref().map_or(LOCK_LEASE, |redis| lease(redis.timeout)),
            patience: longest_exchange(config) + WAIT_MARGIN,
            skew: config.expiry_skew,
        }
    }

    pub fn tier(&self) -> &RedisTier {
        &self.tier
    }

    /// The lock's lease, renewed by its live holder.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The longest one exchange (or a session's renewal) can last, with a margin.
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// For the local leader of a cold key: a token or throttle from another
    /// instance, or the right to exchange. Waits for another instance's
    /// exchange while its holder is alive (renews its lease), at most about
    /// twice the longest exchange; then exchanges itself.
    pub async fn ahead(&self, key: &CacheKey, local: &Local<'_>) -> Ahead {
        let deadline = Instant::now() + self.patience * 2;
        let shared = self.namespace.key(key);
        loop {
            match self.tier.lookup(&shared).await {
                Shared::Token(token) => return Ahead::Served(adopt(key, token, local)),
                Shared::Throttled(throttle) => return Ahead::Refused(refusal(key, &throttle, local)),
                Shared::Nothing => {}
            }
            match self.tier.try_lock(&shared, self.lease).await {
                LockAttempt::Acquired(lock) => {
                    // A holder may have stored its token and let go between our read and our lock.
                    if let Some(token) = self.tier.get_again(&shared).await {
                        lock.release().await;
                        return Ahead::Served(adopt(key, token, local));
                    }
                    return Ahead::Exchange(Exchanging { lock: Some(lock) });
                }
                LockAttempt::Unavailable => return Ahead::Exchange(Exchanging { lock: None }),
                LockAttempt::HeldElsewhere => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ahead::Exchange(Exchanging { lock: None });
            }
            // `None`: the holder let go without a token, or time is up. Look
            // again: a throttle it shared refuses us, and of the waiters only
            // the one that takes the lock next exchanges.
            if let Some(token) = self.tier.wait_for(&shared, left).await {
                return Ahead::Served(adopt(key, token, local));
            }
        }
    }

    /// Logs what changed in the tier's availability since the last call that
    /// asked: a warning when Redis became unavailable, a line when it answers again.
    /// A call without a logger leaves them for one that has one: each is said once.
    pub fn report(&self, events: &mut Events) {
        if !events.is_streaming() {
            return;
        }
        for notice in self.tier.take_notices() {
            let level = match notice {
                Notice::Opened { .. } => Level::Warn,
                Notice::Recovered => Level::Info,
            };
            events.push(level, || notice.message());
        }
    }

    /// The right to exchange without asking Redis (`fromCache = false`): the
    /// outcome still replaces what the other instances are served.
    pub fn bypass(&self) -> Exchanging {
        Exchanging { lock: None }
    }
}

impl Exchanging {
    /// Shares the outcome of the exchange (a token until its serve-until, or
    /// the provider's `Retry-After`) before letting go of the lock, so that
    /// the waiters it wakes find it. Nothing is shared from an exchange begun
    /// before a `configure()`/`clearCache()`, as nothing is cached locally.
    pub async fn finish(self, shared: &SharedTier, key: &CacheKey, outcome: &Outcome, local: &Local<'_>) {
        if local.still_current() {
            let name_key = shared.namespace.key(key);
            match outcome {
                Ok(token) => shared.tier.put(&name_key, &shared_token(token, shared.skew), local.begun_us).await,
                Err(err) if !err.throttled => {
                    if let Some(wait) = err.retry_after {
                        let until_ms = wall_clock_ms().saturating_add(wait.as_millis() as u64);
                        shared.tier.throttle_put(&name_key, &shared_throttle(err, until_ms)).await;
                    }
                }
                Err(_) => {}
            }
        }
        if let Some(lock) = self.lock {
            lock.release().await;
        }
    }
}

/// The lock's lease for a Redis budget of `redis_timeout`: [`LOCK_LEASE`],
/// longer when the budget is, so that after each renewal falls due (every
/// third of the lease) two of the holder's Redis round trips still fit.
fn lease(redis_timeout: Duration) -> Duration {
    LOCK_LEASE.max(redis_timeout * 3)
}

/// Attempts × timeout, plus the waits between them (a short `Retry-After` is
/// waited out, up to `maxRetryAfterMs`).
fn longest_exchange(config: &Config) -> Duration {
    let attempts = config.max_retries + 1;
    let between = config.retry_delay.max(config.max_retry_after);
    config.timeout * attempts + between * config.max_retries
}

/// A token as [`crate::engine`]'s `store` cached it, from what the exchange
/// answered: it is fresh, so `expires_in` is the whole grant.
fn shared_token(token: &Token, skew: Duration) -> SharedToken {
    let obtained_at_ms = token.expires_at_ms.saturating_sub(token.expires_in.saturating_mul(1000));
    let cached = CachedToken::new(token.access_token.clone(), token.expires_in, obtained_at_ms, skew);
    SharedToken {
        access_token: token.access_token.to_string(),
        granted_secs: cached.granted_secs,
        expires_at_ms: cached.expires_at_ms,
        serve_until_ms: cached.serve_until_ms,
        begun_us: 0,
    }
}

/// Another instance's token, into the local cache with the same serve-until
/// and the begin time of the exchange that brought it.
fn adopt(key: &CacheKey, shared: SharedToken, local: &Local<'_>) -> Token {
    let now_ms = wall_clock_ms();
    let cached = CachedToken {
        access_token: Arc::from(shared.access_token),
        granted_secs: shared.granted_secs,
        expires_at_ms: shared.expires_at_ms,
        serve_until_ms: shared.serve_until_ms,
        // Its own exchange's begin, not our call's: a later claims token must still replace it.
        begun_us: shared.begun_us,
    };
    let token = Token {
        access_token: cached.access_token.clone(),
        expires_in: cached.remaining_secs(now_ms),
        expires_at_ms: cached.expires_at_ms,
    };
    local.cache.insert(*key, cached, local.capacity, now_ms, || local.still_current());
    token
}

fn shared_throttle(err: &ExchangeError, until_ms: u64) -> SharedThrottle {
    SharedThrottle {
        until_ms,
        status: err.status,
        message: err.message.clone(),
        code: err.code.clone(),
        error: err.oauth.as_ref().map(|oauth| oauth.error.clone()),
        error_description: err.oauth.as_ref().and_then(|oauth| oauth.error_description.clone()),
    }
}

/// Another instance's throttle: remembered locally, and answered as the
/// local throttle would answer it.
fn refusal(key: &CacheKey, throttle: &SharedThrottle, local: &Local<'_>) -> ExchangeError {
    let mut error = ExchangeError::failed(throttle.message.clone());
    error.status = throttle.status;
    error.code = throttle.code.clone();
    error.oauth = throttle.error.as_ref().map(|oauth_error| {
        Box::new(OAuthErrorBody {
            error: oauth_error.clone(),
            error_description: throttle.error_description.clone(),
            ..OAuthErrorBody::default()
        })
    });
    error.retryable = true;
    let now_ms = wall_clock_ms();
    local.throttles.remember(key, throttle.until_ms, Arc::new(error.clone()), || local.still_current());
    error.throttled = true;
    error.retry_after = Some(Duration::from_millis(throttle.until_ms.saturating_sub(now_ms)));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_json(&format!(
            r#"{{"tokenEndpoint":"http://127.0.0.1:9/token","clientId":"a","clientSecret":"b"{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_lease_is_a_few_seconds_and_leaves_room_for_two_round_trips_after_each_renewal() {
        assert_eq!(lease(crate::redis_tier::DEFAULT_TIMEOUT), Duration::from_secs(3));
        assert_eq!(lease(Duration::from_secs(1)), Duration::from_secs(3));
        let slow = lease(Duration::from_secs(2));
        assert!(slow - slow / 3 >= Duration::from_secs(4), "{slow:?}");
        let defaults =
            config(&format!(r#","redisUri":"redis://127.0.0.1:9","cacheEncryptionKey":"{}""#, "0f".repeat(32)));
        let shared = SharedTier::new(RedisTier::new(defaults.redis.clone().unwrap()).unwrap(), &defaults);
        assert!(shared.lease < Duration::from_secs(5), "a dead holder costs the others under 5 s");
    }

    #[test]
    fn a_waiter_waits_for_the_longest_exchange_and_no_more() {
        // 2 attempts of 500 ms, one wait of at most max(300 ms, 5 s).
        let longest = longest_exchange(&config(r#","timeoutMs":500,"maxRetries":1,"retryDelayMs":300"#));
        assert_eq!(longest, Duration::from_millis(2 * 500 + 5_000));
        let single = longest_exchange(&config(r#","timeoutMs":400,"maxRetries":0"#));
        assert_eq!(single, Duration::from_millis(400));
    }

    #[test]
    fn a_fresh_token_is_shared_with_the_serve_until_the_local_cache_gave_it() {
        let now = wall_clock_ms();
        let token = Token { access_token: Arc::from("tok"), expires_in: 3600, expires_at_ms: now + 3_600_000 };
        let shared = shared_token(&token, Duration::from_secs(30));
        let local = CachedToken::new(Arc::from("tok"), 3600, now, Duration::from_secs(30));
        assert_eq!(
            (shared.granted_secs, shared.expires_at_ms, shared.serve_until_ms),
            (3600, local.expires_at_ms, local.serve_until_ms)
        );
    }

    #[test]
    fn a_shared_throttle_is_answered_as_the_provider_refused() {
        let generations = Arc::new(Generations::new());
        let (cache, throttles) = (TokenCache::new(generations.clone()), Throttles::default());
        let local = Local {
            cache: &cache,
            throttles: &throttles,
            capacity: 10,
            generations: &generations,
            epoch: generations.epoch(),
            begun_us: 0,
        };
        let key = crate::key::test_key("u", "s");
        let throttle = SharedThrottle {
            until_ms: wall_clock_ms() + 60_000,
            status: Some(429),
            message: "Too many requests".into(),
            code: Some("temporarily_unavailable".into()),
            error: Some("temporarily_unavailable".into()),
            error_description: Some("AADSTS50196".into()),
        };
        let refused = refusal(&key, &throttle, &local);
        assert!(refused.throttled && refused.retryable);
        assert_eq!(refused.status, Some(429));
        assert!((59..=60).contains(&refused.retry_after_secs().unwrap()));
        assert_eq!(refused.oauth.unwrap().error_description.as_deref(), Some("AADSTS50196"));
        assert!(throttles.check(&key, wall_clock_ms()).is_some_and(|local| local.throttled));
    }

    /// One process's local tiers, for the tests that play several instances.
    struct Instance {
        shared: SharedTier,
        cache: TokenCache,
        throttles: Throttles,
        generations: Arc<Generations>,
    }

    impl Instance {
        fn new(uri: &str) -> Instance {
            Instance::of(uri, "a", "http://127.0.0.1:9/token")
        }

        /// An instance of the application `client_id` at `token_endpoint`.
        fn of(uri: &str, client_id: &str, token_endpoint: &str) -> Instance {
            let options = serde_json::json!({
                "tokenEndpoint": token_endpoint, "clientId": client_id, "clientSecret": "b",
                "timeoutMs": 2000, "maxRetries": 0,
                "redisUri": uri, "cacheEncryptionKey": "ab".repeat(32), "redisTimeoutMs": 1000,
            });
            let config = Config::from_json(&options.to_string()).unwrap();
            let mut redis = config.redis.clone().unwrap();
            redis.poll_interval = Duration::from_millis(50);
            let generations = Arc::new(Generations::new());
            Instance {
                shared: SharedTier::new(RedisTier::new(redis).unwrap(), &config),
                cache: TokenCache::new(generations.clone()),
                throttles: Throttles::default(),
                generations,
            }
        }

        fn local(&self) -> Local<'_> {
            Local {
                cache: &self.cache,
                throttles: &self.throttles,
                capacity: 100,
                generations: &self.generations,
                epoch: self.generations.epoch(),
                begun_us: crate::cache::exchange_begins(),
            }
        }

        async fn ahead(&self, key: &CacheKey) -> Ahead {
            self.shared.ahead(key, &self.local()).await
        }

        /// Resolves once this instance waits for another's exchange.
        async fn waiting(&self) {
            while self.shared.tier().stats().lock_waits == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    fn exchanging(ahead: Ahead) -> Exchanging {
        match ahead {
            Ahead::Exchange(exchanging) => {
                assert!(exchanging.lock.is_some(), "exchanging without the lock");
                exchanging
            }
            _ => panic!("expected the right to exchange"),
        }
    }

    #[tokio::test]
    async fn a_waiting_instance_is_served_the_holders_token_with_its_serve_until() {
        if !crate::redis_tier::test_servers::redis_available("shared: served the holder's token", false) {
            return;
        }
        let server = crate::redis_tier::test_servers::RedisServer::start();
        let (holder, waiter) = (Instance::new(&server.uri()), Instance::new(&server.uri()));
        let key = crate::key::test_key("u", "s");
        let exchange = exchanging(holder.ahead(&key).await);
        let token =
            Token { access_token: Arc::from("tok"), expires_in: 3600, expires_at_ms: wall_clock_ms() + 3_600_000 };
        let (served, ()) = tokio::join!(waiter.ahead(&key), async {
            waiter.waiting().await;
            exchange.finish(&holder.shared, &key, &Ok(token.clone()), &holder.local()).await;
        });
        let Ahead::Served(served) = served else { panic!("the waiter was not served") };
        assert_eq!((served.access_token.as_ref(), served.expires_at_ms), ("tok", token.expires_at_ms));
        let copied = waiter.cache.get(&key, wall_clock_ms()).unwrap();
        assert_eq!(copied.serve_until_ms, shared_token(&token, Duration::from_secs(30)).serve_until_ms);
        // A third instance finds it at once, without waiting.
        let late = Instance::new(&server.uri());
        assert!(matches!(late.ahead(&key).await, Ahead::Served(_)));
        assert_eq!(late.shared.tier().stats().lock_waits, 0);
    }

    #[tokio::test]
    async fn a_token_taken_from_redis_keeps_its_own_begin_time_so_a_later_claims_token_replaces_it() {
        if !crate::redis_tier::test_servers::redis_available("shared: a token from Redis keeps its begin time", false) {
            return;
        }
        let server = crate::redis_tier::test_servers::RedisServer::start();
        let (elsewhere, instance) = (Instance::new(&server.uri()), Instance::new(&server.uri()));
        let key = crate::key::test_key("u", "s");
        let token = |text: &str| Token {
            access_token: Arc::from(text),
            expires_in: 3600,
            expires_at_ms: wall_clock_ms() + 3_600_000,
        };
        // Another instance's exchange, begun first, stored the old token.
        let old_exchange = elsewhere.local();
        exchanging(elsewhere.ahead(&key).await).finish(&elsewhere.shared, &key, &Ok(token("old")), &old_exchange).await;
        // Here a claims call begins, then a plain call that leads and is served the old token from Redis.
        let claims_begun_us = crate::cache::exchange_begins();
        let Ahead::Served(served) = instance.ahead(&key).await else { panic!("not served from Redis") };
        assert_eq!(&*served.access_token, "old");
        // The claims call's token, from an exchange begun after the old one's, replaces it.
        let fresh = CachedToken {
            begun_us: claims_begun_us,
            ..CachedToken::new(Arc::from("claims"), 3600, wall_clock_ms(), Duration::from_secs(30))
        };
        assert!(instance.cache.insert(key, fresh, 100, wall_clock_ms(), || true), "the claims token was refused");
        assert_eq!(&*instance.cache.get(&key, wall_clock_ms()).unwrap().access_token, "claims");
    }

    #[tokio::test]
    async fn a_holders_throttle_refuses_the_waiter_and_a_failed_holder_hands_the_lock_on() {
        if !crate::redis_tier::test_servers::redis_available("shared: throttle and hand-over", false) {
            return;
        }
        let server = crate::redis_tier::test_servers::RedisServer::start();
        let (holder, waiter) = (Instance::new(&server.uri()), Instance::new(&server.uri()));

        let throttled = crate::key::test_key("throttled", "s");
        let exchange = exchanging(holder.ahead(&throttled).await);
        let mut refusal = ExchangeError::failed("too many requests").with_status(429);
        refusal.retry_after = Some(Duration::from_secs(60));
        let (answer, ()) = tokio::join!(waiter.ahead(&throttled), async {
            waiter.waiting().await;
            exchange.finish(&holder.shared, &throttled, &Err(Arc::new(refusal)), &holder.local()).await;
        });
        let Ahead::Refused(refused) = answer else { panic!("the waiter was not refused") };
        assert!(refused.throttled && refused.status == Some(429));
        assert!(waiter.throttles.check(&throttled, wall_clock_ms()).is_some());

        // A holder that fails without a throttle lets go: the waiter takes the lock itself.
        let failing = crate::key::test_key("failing", "s");
        let exchange = exchanging(holder.ahead(&failing).await);
        let waits_before = waiter.shared.tier().stats().lock_waits;
        let (answer, ()) = tokio::join!(waiter.ahead(&failing), async {
            while waiter.shared.tier().stats().lock_waits == waits_before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let failed = Arc::new(ExchangeError::failed("invalid_grant"));
            exchange.finish(&holder.shared, &failing, &Err(failed), &holder.local()).await;
        });
        drop(exchanging(answer));
    }

    #[tokio::test]
    async fn applications_on_one_redis_prefix_and_key_never_share_a_token_a_throttle_or_a_lock() {
        if !crate::redis_tier::test_servers::redis_available("shared: applications are isolated", false) {
            return;
        }
        let server = crate::redis_tier::test_servers::RedisServer::start();
        let endpoint = "http://127.0.0.1:9/token";
        let app = Instance::of(&server.uri(), "app-a", endpoint);
        let same_app = Instance::of(&server.uri(), "app-a", endpoint);
        let others = [
            Instance::of(&server.uri(), "app-b", endpoint),
            Instance::of(&server.uri(), "app-a", "http://127.0.0.2:9/token"),
        ];
        let failed = || Err(Arc::new(ExchangeError::failed("invalid_grant")));

        // While the application holds the lock, the others take their own at once.
        let key = crate::key::test_key("u", "s");
        let held = exchanging(app.ahead(&key).await);
        for other in &others {
            exchanging(other.ahead(&key).await).finish(&other.shared, &key, &failed(), &other.local()).await;
            assert_eq!(other.shared.tier().stats().lock_waits, 0);
        }
        // Its token is served to its own instances only.
        let token =
            Token { access_token: Arc::from("tok"), expires_in: 3600, expires_at_ms: wall_clock_ms() + 3_600_000 };
        held.finish(&app.shared, &key, &Ok(token), &app.local()).await;
        assert!(matches!(same_app.ahead(&key).await, Ahead::Served(_)));
        for other in &others {
            exchanging(other.ahead(&key).await).finish(&other.shared, &key, &failed(), &other.local()).await;
        }

        // So is its throttle.
        let throttled = crate::key::test_key("throttled", "s");
        let mut refusal = ExchangeError::failed("too many requests").with_status(429);
        refusal.retry_after = Some(Duration::from_secs(60));
        exchanging(app.ahead(&throttled).await)
            .finish(&app.shared, &throttled, &Err(Arc::new(refusal)), &app.local())
            .await;
        assert!(matches!(same_app.ahead(&throttled).await, Ahead::Refused(_)));
        for other in &others {
            exchanging(other.ahead(&throttled).await)
                .finish(&other.shared, &throttled, &failed(), &other.local())
                .await;
        }
    }

    #[tokio::test]
    async fn a_call_without_a_logger_leaves_the_outage_warning_to_one_that_has_one() {
        // Nothing listens on a port just freed: every Redis call is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config =
            config(&format!(r#","redisUri":"redis://127.0.0.1:{port}","cacheEncryptionKey":"{}""#, "0f".repeat(32)));
        let mut redis = config.redis.clone().unwrap();
        redis.breaker = crate::redis_tier::BreakerPolicy { failures_to_open: 1, cool_down: Duration::from_secs(60) };
        let shared = SharedTier::new(RedisTier::new(redis).unwrap(), &config);
        assert!(shared.tier().get(b"key").await.is_none());
        assert!(!shared.tier().is_available(), "the breaker did not open");

        shared.report(&mut Events::Off);
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = seen.clone();
        shared.report(&mut Events::Stream(Box::new(move |event| sink.lock().push(event))));
        let seen = seen.lock();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].level, Level::Warn);
        assert!(seen[0].message.contains("The shared Redis tier is unavailable"), "{}", seen[0].message);
    }

    #[test]
    fn the_namespace_changes_with_every_part() {
        let base = Namespace::from_parts(&[("client_id", b"a"), ("authority", b"h:443")]);
        assert_eq!(base, Namespace::from_parts(&[("client_id", b"a"), ("authority", b"h:443")]));
        for other in [
            Namespace::from_parts(&[("client_id", b"b"), ("authority", b"h:443")]),
            Namespace::from_parts(&[("client_id", b"a"), ("authority", b"h:444")]),
            Namespace::from_parts(&[("client_id", b"ah"), ("authority", b":443")]),
            Namespace::from_parts(&[("client_id", b"a"), ("authority", b"h:443"), ("audience", b"x")]),
        ] {
            assert_ne!(base, other);
        }
        let same_authority = |url: &str| {
            let json = format!(r#"{{"tokenEndpoint":"{url}","clientId":"a","clientSecret":"b"}}"#);
            Namespace::of(&Config::from_json(&json).unwrap())
        };
        assert_eq!(
            same_authority("https://login.example/t1/token"),
            same_authority("https://login.example:443/t2/token")
        );
        assert_ne!(same_authority("https://login.example/t/token"), same_authority("https://login2.example/t/token"));
        let with_grant = |extra: &str| {
            let json =
                format!(r#"{{"tokenEndpoint":"https://login.example/t","clientId":"a","clientSecret":"b"{extra}}}"#);
            Namespace::of(&Config::from_json(&json).unwrap())
        };
        let namespaces = [
            with_grant(""),
            with_grant(r#","grantType":"token-exchange""#),
            with_grant(r#","grantType":"token-exchange","audience":"mcp-a""#),
            with_grant(r#","grantType":"token-exchange","audience":"mcp-b""#),
            with_grant(r#","grantType":"token-exchange","resource":"https://mcp.example""#),
            with_grant(r#","grantType":"token-exchange","requestedTokenType":"urn:ietf:params:oauth:token-type:jwt""#),
        ];
        for (i, a) in namespaces.iter().enumerate() {
            for b in &namespaces[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
