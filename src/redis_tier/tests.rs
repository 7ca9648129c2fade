//! The tier against real Redis servers: a single node and a three-node cluster.

use std::time::{Duration, Instant};

use serde_json::json;

use super::test_servers::{redis_available, RedisCluster, RedisServer};
use super::*;
use crate::config::Options;

const KEY_HEX: &str = "6f626f2d6e61746976652072656469732074696572207465737420206b657921";
const OTHER_KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const TENANT: &str = "tenant-contoso";
const ISSUER: &str = "https://login.example.com/tenant-contoso/v2.0";
const SUBJECT: &str = "user-subject-4711";
const SCOPES: &str = "api://downstream-app/.default";
const ASSERTION_SHA256: &str = "5f1d0c6ab3a2b8e0c4e9f7d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.access-token-minted-for-user-subject-4711";

macro_rules! require_redis {
    ($test:literal) => {
        require_redis!($test, false)
    };
    ($test:literal, $with_openssl:expr) => {
        if !redis_available($test, $with_openssl) {
            return;
        }
    };
}

fn engine_key(subject: &str) -> Vec<u8> {
    format!("{TENANT}\x1f{ISSUER}\x1f{subject}\x1f{SCOPES}\x1f{ASSERTION_SHA256}").into_bytes()
}

fn options(uris: &str, key_hex: &str) -> RedisOptions {
    // Generous: a first connection on a busy machine must not turn into a miss. The
    // tests of a slow or dead server set their own budget.
    let mut options = RedisOptions::from_options(&Options(
        json!({ "redisUri": uris, "cacheEncryptionKey": key_hex, "redisKeyPrefix": "lc:", "redisTimeoutMs": 2000 })
            .as_object()
            .unwrap(),
    ))
    .unwrap()
    .unwrap();
    options.poll_interval = Duration::from_millis(50);
    options
}

fn tier(options: RedisOptions) -> RedisTier {
    RedisTier::new(options).unwrap()
}

fn token(serve_for: Duration) -> SharedToken {
    let now = wall_clock_ms();
    SharedToken {
        access_token: ACCESS_TOKEN.into(),
        granted_secs: 3600,
        expires_at_ms: now + 3_600_000,
        serve_until_ms: now + serve_for.as_millis() as u64,
        // The tests put it as begun at 1 µs, and read it back so.
        begun_us: 1,
    }
}

fn throttle() -> SharedThrottle {
    SharedThrottle {
        until_ms: wall_clock_ms() + 60_000,
        status: Some(429),
        message: format!("The identity provider throttled {SUBJECT}"),
        code: Some("temporarily_unavailable".into()),
        error: Some("temporarily_unavailable".into()),
        error_description: Some(format!("AADSTS50196: too many requests for {SCOPES}")),
    }
}

async fn raw(uri: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(uri).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Every key of a node with its value and remaining lifetime.
async fn dump(uri: &str) -> Vec<(String, Vec<u8>, i64)> {
    let mut conn = raw(uri).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let mut entries = Vec::new();
    for key in keys {
        let value: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        entries.push((key, value, ttl));
    }
    entries
}

fn assert_nothing_readable(entries: &[(String, Vec<u8>, i64)]) {
    let secrets = [TENANT, ISSUER, SUBJECT, SCOPES, ASSERTION_SHA256, ACCESS_TOKEN, "4711", "contoso", "AADSTS", "eyJ"];
    for (name, value, ttl) in entries {
        assert!(*ttl > 0, "{name} has no TTL ({ttl})");
        for secret in secrets {
            let secret = secret.as_bytes();
            assert!(!name.as_bytes().windows(secret.len()).any(|w| w == secret), "{name} reveals {secret:?}");
            assert!(!value.windows(secret.len()).any(|w| w == secret), "the value of {name} reveals {secret:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_throttles_round_trip_expire_and_are_stored_unreadable() {
    require_redis!("tokens_and_throttles_round_trip_expire_and_are_stored_unreadable");
    let server = RedisServer::start();
    let tier = tier(options(&server.uri(), KEY_HEX));
    let key = engine_key(SUBJECT);

    assert_eq!(tier.get(&key).await, None);
    let stored = token(Duration::from_secs(600));
    tier.put(&key, &stored, 1).await;
    assert_eq!(tier.get(&key).await, Some(stored.clone()));
    assert_eq!(tier.get(&engine_key("someone-else")).await, None);

    let refusal = throttle();
    let throttled_key = engine_key("throttled-user");
    tier.throttle_put(&throttled_key, &refusal).await;
    assert_eq!(tier.throttle_get(&throttled_key).await, Some(refusal.clone()));
    assert_eq!(tier.throttle_get(&key).await, None);
    assert_eq!(tier.lookup(&throttled_key).await, Shared::Throttled(refusal));
    assert_eq!(tier.lookup(&key).await, Shared::Token(stored.clone()));
    assert_eq!(tier.lookup(&engine_key("someone-else")).await, Shared::Nothing);
    let LockAttempt::Acquired(guard) = tier.try_lock(&key, Duration::from_secs(30)).await else { panic!("lock") };

    let entries = dump(&server.uri()).await;
    assert_eq!(entries.len(), 3, "token, throttle and lock");
    assert_nothing_readable(&entries);
    guard.release().await;
    assert_eq!(dump(&server.uri()).await.len(), 2);

    // A token past its serve-until is never stored, and one read after it is a miss.
    tier.put(&engine_key("expired"), &SharedToken { serve_until_ms: wall_clock_ms() - 1, ..stored.clone() }, 1).await;
    assert_eq!(dump(&server.uri()).await.len(), 2);
    assert_eq!(tier.stats(), RedisStats { hits: 2, misses: 4, errors: 0, lock_waits: 0, lock_renewals: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_never_replaced_by_one_from_an_exchange_that_began_before_it() {
    require_redis!("a_token_is_never_replaced_by_one_from_an_exchange_that_began_before_it");
    let server = RedisServer::start();
    let tier = tier(options(&server.uri(), KEY_HEX));
    let key = engine_key(SUBJECT);
    let named = |text: &str| SharedToken { access_token: text.into(), ..token(Duration::from_secs(600)) };
    tier.put(&key, &named("claims"), 2_000).await;
    tier.put(&key, &named("plain, begun before"), 1_000).await;
    assert_eq!(tier.get(&key).await.unwrap().access_token, "claims");
    tier.put(&key, &named("begun after"), 3_000).await;
    assert_eq!(tier.get(&key).await.unwrap().access_token, "begun after");
    assert_eq!(tier.stats().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_under_another_encryption_key_or_another_name_is_a_miss() {
    require_redis!("a_value_under_another_encryption_key_or_another_name_is_a_miss");
    let server = RedisServer::start();
    let ours = tier(options(&server.uri(), KEY_HEX));
    let rotated = tier(options(&server.uri(), OTHER_KEY_HEX));
    let (key, other_key) = (engine_key(SUBJECT), engine_key("another-user"));
    ours.put(&key, &token(Duration::from_secs(600)), 1).await;
    assert_eq!(rotated.get(&key).await, None, "another key computes other names");

    // Copy the sealed value under the names a reader would look up.
    let mut conn = raw(&server.uri()).await;
    let sealed: Vec<u8> = redis::cmd("GET").arg(ours.inner.names(&key).token).query_async(&mut conn).await.unwrap();
    let copy_to = |name: String| {
        let mut set = redis::cmd("SET");
        set.arg(name).arg(&sealed).arg("PX").arg(60_000);
        set
    };
    let _: () = copy_to(rotated.inner.names(&key).token).query_async(&mut conn).await.unwrap();
    assert_eq!(rotated.get(&key).await, None, "sealed under another encryption key");
    let _: () = copy_to(ours.inner.names(&other_key).token).query_async(&mut conn).await.unwrap();
    assert_eq!(ours.get(&other_key).await, None, "moved to another key");
    let _: () = copy_to(ours.inner.names(&key).throttle).query_async(&mut conn).await.unwrap();
    assert_eq!(ours.throttle_get(&key).await, None, "moved to a throttle name");
    assert_eq!(rotated.stats().errors + ours.stats().errors, 0, "an undecryptable value is a miss, not an error");
    assert!(ours.get(&key).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_exclusive_released_by_its_holder_and_expires_when_abandoned() {
    require_redis!("the_lock_is_exclusive_released_by_its_holder_and_expires_when_abandoned");
    let server = RedisServer::start();
    let (first, second) = (tier(options(&server.uri(), KEY_HEX)), tier(options(&server.uri(), KEY_HEX)));
    let key = engine_key(SUBJECT);

    let LockAttempt::Acquired(guard) = first.try_lock(&key, Duration::from_secs(30)).await else { panic!() };
    assert!(matches!(second.try_lock(&key, Duration::from_secs(30)).await, LockAttempt::HeldElsewhere));
    assert!(matches!(first.try_lock(&key, Duration::from_secs(30)).await, LockAttempt::HeldElsewhere));
    assert!(matches!(second.try_lock(&engine_key("other"), Duration::from_secs(30)).await, LockAttempt::Acquired(_)));
    // Dropped, not released in place: released in the background, and the release wakes the waiter.
    let waiting = tokio::spawn({
        let (second, key) = (second.clone(), key.clone());
        async move { second.wait_for(&key, Duration::from_secs(20)).await }
    });
    wait_until_subscribed(&server, &first.inner.names(&key).channel).await;
    drop(guard);
    assert_eq!(waiting.await.unwrap(), None, "the lock is gone without a token");

    // A holder that dies: its lock expires and a waiter takes over.
    let LockAttempt::Acquired(guard) = second.try_lock(&key, Duration::from_millis(300)).await else { panic!() };
    guard.abandon();
    let started = Instant::now();
    assert_eq!(first.wait_for(&key, Duration::from_secs(20)).await, None);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(matches!(first.try_lock(&key, Duration::from_secs(30)).await, LockAttempt::Acquired(_)));
    assert_eq!(first.stats().lock_waits, 1);
    assert_eq!(first.inner.subscriptions.local_channels(), 0, "waiters unregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_a_lease_its_live_holder_renews_and_a_dead_holders_lease_runs_out() {
    require_redis!("the_lock_is_a_lease_its_live_holder_renews_and_a_dead_holders_lease_runs_out");
    let server = RedisServer::start();
    let (holder, other) = (tier(options(&server.uri(), KEY_HEX)), tier(options(&server.uri(), KEY_HEX)));
    let key = engine_key(SUBJECT);
    let lease = Duration::from_millis(2400);
    let mut conn = raw(&server.uri()).await;
    let lock = holder.inner.names(&key).lock;

    let LockAttempt::Acquired(guard) = holder.try_lock(&key, lease).await else { panic!("lock") };
    let pttl: i64 = redis::cmd("PTTL").arg(&lock).query_async(&mut conn).await.unwrap();
    assert!((1..=2400).contains(&pttl), "a short lease, not the longest exchange: {pttl}");
    // Four renewals, a third of the lease apart: held past its first lease.
    let deadline = Instant::now() + Duration::from_secs(60);
    while holder.stats().lock_renewals < 4 {
        assert!(Instant::now() < deadline, "the holder stopped renewing its lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pttl: i64 = redis::cmd("PTTL").arg(&lock).query_async(&mut conn).await.unwrap();
    assert!((1..=2400).contains(&pttl), "{pttl}");
    assert!(matches!(other.try_lock(&key, lease).await, LockAttempt::HeldElsewhere));

    // A holder that dies renews no more: its lease runs out and the waiter takes over.
    guard.abandon();
    assert_eq!(other.wait_for(&key, Duration::from_secs(60)).await, None);
    assert!(matches!(other.try_lock(&key, lease).await, LockAttempt::Acquired(_)));
    assert_eq!(other.stats().errors + holder.stats().errors, 0);
}

async fn wait_until_subscribed(server: &RedisServer, channel: &str) {
    let mut conn = raw(&server.uri()).await;
    loop {
        let (_, subscribers): (String, u64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(&mut conn).await.unwrap();
        if subscribers > 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_the_published_token_well_before_its_next_poll() {
    require_redis!("a_waiter_is_woken_by_the_published_token_well_before_its_next_poll");
    let server = RedisServer::start();
    let holder = tier(options(&server.uri(), KEY_HEX));
    let mut slow_poll = options(&server.uri(), KEY_HEX);
    slow_poll.poll_interval = Duration::from_secs(30);
    let waiter = tier(slow_poll);
    let key = engine_key(SUBJECT);

    let LockAttempt::Acquired(guard) = holder.try_lock(&key, Duration::from_secs(60)).await else { panic!() };
    let waiting = tokio::spawn({
        let (waiter, key) = (waiter.clone(), key.clone());
        async move { waiter.wait_for(&key, Duration::from_secs(60)).await }
    });
    // Subscribed and past its first read (which found the lock): only a message can wake it now.
    wait_until_subscribed(&server, &holder.inner.names(&key).channel).await;
    while waiter.inner.peeks.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    let stored = token(Duration::from_secs(600));
    let published = Instant::now();
    holder.put(&key, &stored, 1).await;
    guard.release().await;
    assert_eq!(waiting.await.unwrap(), Some(stored));
    assert!(published.elapsed() < Duration::from_secs(10), "woken after {:?}", published.elapsed());
    assert_eq!(waiter.inner.peeks.load(Ordering::Relaxed), 2, "one read before, one after the wake-up");
    assert_eq!(waiter.stats(), RedisStats { hits: 1, misses: 0, errors: 0, lock_waits: 1, lock_renewals: 0 });

    // A dropped tier leaves no connection behind: only the holder's and ours remain.
    drop(waiter);
    let mut conn = raw(&server.uri()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
        if clients.lines().count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "connections outlived their tier:\n{clients}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_frozen_server_costs_one_budget_per_call_until_the_breaker_opens() {
    require_redis!("a_dead_or_frozen_server_costs_one_budget_per_call_until_the_breaker_opens");
    let mut server = RedisServer::start();
    let budget = Duration::from_millis(100);
    for frozen in [true, false] {
        let mut opts = options(&server.uri(), KEY_HEX);
        opts.timeout = budget;
        opts.breaker = BreakerPolicy { failures_to_open: 2, cool_down: Duration::from_secs(600) };
        let tier = tier(opts);
        let key = engine_key(SUBJECT);
        tier.put(&key, &token(Duration::from_secs(600)), 1).await;
        assert!(tier.get(&key).await.is_some());
        if frozen {
            server.pause();
        } else {
            server.kill();
        }
        for _ in 0..2 {
            let started = Instant::now();
            assert_eq!(tier.get(&key).await, None);
            // The budget, plus scheduling slack on a busy machine.
            assert!(started.elapsed() < budget + Duration::from_millis(400), "{:?}", started.elapsed());
        }
        assert!(!tier.is_available());
        let started = Instant::now();
        assert_eq!(tier.get(&key).await, None);
        assert!(matches!(tier.try_lock(&key, Duration::from_secs(1)).await, LockAttempt::Unavailable));
        assert_eq!(tier.wait_for(&key, Duration::from_secs(30)).await, None);
        tier.put(&key, &token(Duration::from_secs(600)), 1).await;
        assert!(started.elapsed() < budget, "an open breaker does not wait: {:?}", started.elapsed());
        assert_eq!(tier.stats().errors, 2);
        if frozen {
            server.resume();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_recovers_when_the_server_comes_back() {
    require_redis!("the_tier_recovers_when_the_server_comes_back");
    let mut server = RedisServer::start();
    let mut opts = options(&server.uri(), KEY_HEX);
    opts.breaker = BreakerPolicy { failures_to_open: 1, cool_down: Duration::from_millis(100) };
    let tier = tier(opts);
    let key = engine_key(SUBJECT);
    let stored = token(Duration::from_secs(600));
    tier.put(&key, &stored, 1).await;
    server.kill();
    assert_eq!(tier.get(&key).await, None);
    assert!(!tier.is_available());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tier.put(&key, &stored, 1).await;
        if tier.get(&key).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery");
        tokio::task::yield_now().await;
    }
    assert!(tier.is_available());
    assert!(tier.stats().errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_options_or_the_uri_authenticate_and_a_wrong_one_is_a_miss() {
    require_redis!("credentials_from_the_options_or_the_uri_authenticate_and_a_wrong_one_is_a_miss");
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pass"]);
    let key = engine_key(SUBJECT);
    let stored = token(Duration::from_secs(600));
    let in_uri = tier(options(&format!("redis://:s3cret-pass@127.0.0.1:{}", server.port), KEY_HEX));
    in_uri.put(&key, &stored, 1).await;
    let mut in_options = options(&server.uri(), KEY_HEX);
    in_options.password = Some("s3cret-pass".into());
    assert_eq!(tier(in_options).get(&key).await, Some(stored));
    let wrong = tier(options(&format!("redis://:wrong@127.0.0.1:{}", server.port), KEY_HEX));
    assert_eq!(wrong.get(&key).await, None);
    assert_eq!(wrong.stats().errors, 1);
    assert!(!format!("{wrong:?}").contains("wrong@"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_tokens_locks_throttles_and_wake_ups() {
    require_redis!("a_cluster_shares_tokens_locks_throttles_and_wake_ups");
    let cluster = RedisCluster::start();
    let (first, second) = (tier(options(&cluster.uris(), KEY_HEX)), tier(options(&cluster.uris(), KEY_HEX)));
    // A single seed with `redisCluster` finds the other nodes.
    let mut seeded = options(&cluster.nodes[2].uri(), KEY_HEX);
    seeded.cluster = true;
    let seeded = tier(seeded);

    let stored = token(Duration::from_secs(600));
    let keys: Vec<Vec<u8>> = (0..24).map(|i| engine_key(&format!("{SUBJECT}-{i}"))).collect();
    for key in &keys {
        first.put(key, &stored, 1).await;
    }
    for key in &keys {
        assert_eq!(second.get(key).await, Some(stored.clone()));
        assert_eq!(seeded.get(key).await, Some(stored.clone()));
    }
    let refusal = throttle();
    first.throttle_put(&keys[0], &refusal).await;
    assert_eq!(seeded.throttle_get(&keys[0]).await, Some(refusal.clone()));
    assert_eq!(second.lookup(&keys[0]).await, Shared::Token(stored.clone()), "one pipeline on the key's slot");
    let throttled_only = engine_key("throttled-only");
    first.throttle_put(&throttled_only, &refusal).await;
    assert_eq!(second.lookup(&throttled_only).await, Shared::Throttled(refusal));

    let cold = engine_key(SUBJECT);
    let LockAttempt::Acquired(guard) = first.try_lock(&cold, Duration::from_secs(60)).await else { panic!() };
    assert!(matches!(second.try_lock(&cold, Duration::from_secs(60)).await, LockAttempt::HeldElsewhere));
    let waiting = tokio::spawn({
        let (second, cold) = (second.clone(), cold.clone());
        async move { second.wait_for(&cold, Duration::from_secs(60)).await }
    });
    let channel = first.inner.names(&cold).channel;
    'subscribed: loop {
        for node in &cluster.nodes {
            let mut conn = raw(&node.uri()).await;
            let (_, n): (String, u64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
            if n > 0 {
                break 'subscribed;
            }
        }
        tokio::task::yield_now().await;
    }
    first.put(&cold, &stored, 1).await;
    guard.release().await;
    assert_eq!(waiting.await.unwrap(), Some(stored));

    let mut entries = Vec::new();
    for node in &cluster.nodes {
        let on_node = dump(&node.uri()).await;
        assert!(!on_node.is_empty(), "keys spread over every node");
        entries.extend(on_node);
    }
    assert_eq!(entries.len(), keys.len() + 3, "tokens, two throttles, the cold token");
    assert_nothing_readable(&entries);
    assert_eq!(first.stats().errors + second.stats().errors + seeded.stats().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_trusts_the_configured_ca_and_refuses_an_unknown_one() {
    require_redis!("rediss_trusts_the_configured_ca_and_refuses_an_unknown_one", true);
    let (server, ca) = RedisServer::start_tls();
    let key = engine_key(SUBJECT);
    let stored = token(Duration::from_secs(600));
    let with_ca = RedisOptions::from_options(&Options(
        json!({ "redisUri": server.uri(), "cacheEncryptionKey": KEY_HEX, "redisCa": ca, "redisTimeoutMs": 2000 })
            .as_object()
            .unwrap(),
    ))
    .unwrap()
    .unwrap();
    let trusted = tier(with_ca);
    trusted.put(&key, &stored, 1).await;
    assert_eq!(trusted.get(&key).await, Some(stored));
    assert_eq!(trusted.stats().errors, 0);

    let untrusted = tier(options(&server.uri(), KEY_HEX));
    assert_eq!(untrusted.get(&key).await, None, "the test CA is in no system store");
    assert_eq!(untrusted.stats().errors, 1);
}
