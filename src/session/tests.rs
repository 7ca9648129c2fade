//! Sessions against a renewer that behaves like a provider with rotation and
//! reuse detection: a refresh token presented twice revokes the grant.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::store::tests::MemoryStore;
use super::*;
use crate::error::OAuthErrorBody;
use crate::grant::TokenResponse;

const SKEW: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Provider {
    current: Mutex<String>,
    spent: Mutex<HashSet<String>>,
    revoked: AtomicBool,
    redemptions: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// Answers queued for the next redemptions, before the grant is checked.
    faults: Mutex<Vec<ExchangeError>>,
    rotate: bool,
    /// Access tokens that live a second, less than the skew.
    short_lived: bool,
}

fn invalid_grant(why: &str) -> ExchangeError {
    ExchangeError::from_oauth(
        400,
        OAuthErrorBody { error: "invalid_grant".into(), error_description: Some(why.into()), ..Default::default() },
    )
}

impl Provider {
    fn rotating() -> Arc<Provider> {
        Arc::new(Provider { current: Mutex::new("rt-0".into()), rotate: true, ..Default::default() })
    }

    fn granted(&self, n: usize, scopes: &str, refresh_token: Option<String>) -> Granted {
        Granted {
            token: TokenResponse {
                access_token: Arc::from(format!("at-{n}-{scopes}")),
                expires_in: if self.short_lived { 1 } else { 3600 },
            },
            refresh_token,
        }
    }
}

impl Renewer for Arc<Provider> {
    async fn redeem(&self, refresh_token: &str, scopes: &str, _tenant: Option<&str>) -> Result<Granted, ExchangeError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        // Let any other redemption that could run now run.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let n = self.redemptions.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(fault) = self.faults.lock().pop() {
            return Err(fault);
        }
        assert!(scopes.ends_with(" offline_access") || scopes == OFFLINE_ACCESS || !scopes.is_empty());
        if self.revoked.load(Ordering::SeqCst) {
            return Err(invalid_grant("grant revoked"));
        }
        let mut current = self.current.lock();
        if *current != refresh_token {
            if self.spent.lock().contains(refresh_token) {
                self.revoked.store(true, Ordering::SeqCst);
                return Err(invalid_grant("refresh token reused"));
            }
            return Err(invalid_grant("unknown refresh token"));
        }
        if !self.rotate {
            return Ok(self.granted(n, scopes, None));
        }
        self.spent.lock().insert(current.clone());
        *current = format!("rt-{n}");
        Ok(self.granted(n, scopes, Some(current.clone())))
    }
}

fn in_process() -> Sessions {
    Sessions::new(
        Storage::InProcess(InProcess::default()),
        None,
        b"client".to_vec(),
        DEFAULT_SESSION_TTL,
        SKEW,
        Arc::default(),
        Arc::default(),
    )
}

fn first_grant(refresh_token: Option<&str>) -> Granted {
    Granted {
        token: TokenResponse { access_token: Arc::from("at-begin"), expires_in: 3600 },
        refresh_token: refresh_token.map(str::to_owned),
    }
}

/// Makes every access token of the session stale, as time would.
async fn age(sessions: &Sessions, key: &str) {
    let id = sessions.id(key);
    let mut record = sessions.storage.load(&id).await.unwrap().unwrap();
    for token in &mut record.tokens {
        token.serve_until_ms = 0;
    }
    sessions.storage.save(&id, &record).await.unwrap();
}

async fn acquire(
    sessions: &Sessions,
    provider: &Arc<Provider>,
    key: &str,
    scopes: &str,
    force: bool,
) -> Result<SessionToken, Arc<ExchangeError>> {
    sessions.acquire(provider, key, scopes, force, &mut Events::Off).await
}

#[tokio::test]
async fn a_session_serves_its_token_while_fresh_then_renews_with_the_rotated_token() {
    let sessions = in_process();
    let provider = Provider::rotating();
    let begun = sessions.begin(None, "user", None, "api://s", first_grant(Some("rt-0"))).await.unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&begun.session_key).unwrap().len(), 32);
    assert_eq!(begun.token.access_token, "at-begin");
    assert_eq!(sessions.held_in_process(), 1);
    let fresh = acquire(&sessions, &provider, &begun.session_key, "api://s", false).await.unwrap();
    assert_eq!((fresh.access_token.as_str(), provider.redemptions.load(Ordering::SeqCst)), ("at-begin", 0));
    age(&sessions, &begun.session_key).await;
    let renewed = acquire(&sessions, &provider, &begun.session_key, "api://s", false).await.unwrap();
    assert_eq!(renewed.access_token, "at-1-api://s");
    age(&sessions, &begun.session_key).await;
    // The second renewal presents rt-1: had it presented rt-0, the grant would be revoked.
    let again = acquire(&sessions, &provider, &begun.session_key, "api://s", false).await.unwrap();
    assert_eq!(again.access_token, "at-2-api://s");
    assert!(!provider.revoked.load(Ordering::SeqCst));
    let forced = acquire(&sessions, &provider, &begun.session_key, "api://s", true).await.unwrap();
    assert_eq!(forced.access_token, "at-3-api://s");
    assert_eq!(sessions.counters.renewals.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn without_rotation_the_old_refresh_token_stays() {
    let sessions = in_process();
    let provider = Arc::new(Provider { current: Mutex::new("rt-0".into()), ..Default::default() });
    let begun = sessions.begin(Some("job-1".into()), "user", None, "s", first_grant(Some("rt-0"))).await.unwrap();
    assert_eq!(begun.session_key, "job-1");
    for _ in 0..2 {
        acquire(&sessions, &provider, "job-1", "s", true).await.unwrap();
    }
    assert_eq!(sessions.storage.load(&sessions.id("job-1")).await.unwrap().unwrap().refresh_token, "rt-0");
}

#[tokio::test]
async fn concurrent_callers_over_several_scopes_redeem_one_at_a_time_and_are_all_served() {
    let sessions = Arc::new(in_process());
    let provider = Provider::rotating();
    sessions.begin(Some("k".into()), "user", None, "s0", first_grant(Some("rt-0"))).await.unwrap();
    age(&sessions, "k").await;
    let calls: Vec<_> = (0..20)
        .map(|n| {
            let (sessions, provider) = (sessions.clone(), provider.clone());
            tokio::spawn(async move { acquire(&sessions, &provider, "k", &format!("s{}", n % 4), false).await })
        })
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        let token = call.await.unwrap().unwrap();
        assert!(token.access_token.ends_with(&format!("-s{}", n % 4)), "{}", token.access_token);
    }
    assert_eq!(provider.most_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(provider.redemptions.load(Ordering::SeqCst), 4, "one renewal per scope set");
    assert!(!provider.revoked.load(Ordering::SeqCst));
    assert_eq!(sessions.renewals.locks.len(), 0, "no lock left behind");
}

#[tokio::test]
async fn callers_that_waited_for_a_renewal_are_served_by_it_even_when_its_token_lives_less_than_the_skew() {
    let sessions = Arc::new(in_process());
    let provider = Arc::new(Provider {
        current: Mutex::new("rt-0".into()),
        rotate: true,
        short_lived: true,
        ..Default::default()
    });
    sessions.begin(Some("k".into()), "user", None, "s", first_grant(Some("rt-0"))).await.unwrap();
    age(&sessions, "k").await;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (sessions, provider) = (sessions.clone(), provider.clone());
            tokio::spawn(async move { acquire(&sessions, &provider, "k", "s", false).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().access_token, "at-1-s");
    }
    assert_eq!(provider.redemptions.load(Ordering::SeqCst), 1, "one renewal for every caller, not one each");
}

#[tokio::test]
async fn concurrent_forced_renewals_are_served_by_the_one_they_waited_for() {
    let sessions = Arc::new(in_process());
    let provider = Provider::rotating();
    sessions.begin(Some("k".into()), "user", None, "s", first_grant(Some("rt-0"))).await.unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (sessions, provider) = (sessions.clone(), provider.clone());
            tokio::spawn(async move { acquire(&sessions, &provider, "k", "s", true).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert!(provider.redemptions.load(Ordering::SeqCst) <= 5);
    assert!(!provider.revoked.load(Ordering::SeqCst));
}

#[tokio::test]
async fn invalid_grant_ends_the_session_and_a_transient_failure_keeps_it() {
    let sessions = in_process();
    let provider = Provider::rotating();
    sessions.begin(Some("k".into()), "user", None, "s", first_grant(Some("rt-0"))).await.unwrap();
    provider.faults.lock().push(ExchangeError::failed("HTTP 503").with_status(503).retryable(true));
    let transient = acquire(&sessions, &provider, "k", "s", true).await.unwrap_err();
    assert!(transient.retryable);
    assert_eq!(transient.reason, FailureReason::ExchangeFailed);
    assert_eq!(sessions.held_in_process(), 1);
    provider.revoked.store(true, Ordering::SeqCst);
    let expired = acquire(&sessions, &provider, "k", "s", true).await.unwrap_err();
    assert_eq!((expired.reason, expired.retryable), (FailureReason::SessionExpired, false));
    assert_eq!(expired.code.as_deref(), Some("invalid_grant"));
    assert!(expired.message.contains("the user must sign in again"), "{}", expired.message);
    let before = provider.redemptions.load(Ordering::SeqCst);
    let gone = acquire(&sessions, &provider, "k", "s", false).await.unwrap_err();
    assert_eq!((gone.reason, gone.retryable), (FailureReason::SessionNotFound, false));
    assert_eq!(provider.redemptions.load(Ordering::SeqCst), before, "no request for a session not found");
    assert_eq!(sessions.counters.failures.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn no_refresh_token_begins_nothing_and_end_says_whether_it_existed() {
    let sessions = in_process();
    let err = sessions.begin(Some("k".into()), "user", None, "s", first_grant(None)).await.unwrap_err();
    assert_eq!((err.reason, err.retryable), (FailureReason::NoRefreshToken, false));
    assert!(err.message.contains("offline_access"));
    assert_eq!(sessions.held_in_process(), 0);
    sessions.begin(Some("k".into()), "user", None, "s", first_grant(Some("rt-0"))).await.unwrap();
    // Beginning again under the same key replaces the session.
    sessions.begin(Some("k".into()), "user", None, "s", first_grant(Some("rt-new"))).await.unwrap();
    assert_eq!(sessions.held_in_process(), 1);
    assert_eq!(sessions.storage.load(&sessions.id("k")).await.unwrap().unwrap().refresh_token, "rt-new");
    assert!(sessions.end("k").await.unwrap());
    assert!(!sessions.end("k").await.unwrap());
    assert_eq!(sessions.held_in_process(), 0);
}

#[tokio::test]
async fn a_session_in_a_host_store_survives_a_restart_of_the_client_and_belongs_to_its_client() {
    let memory = Arc::new(MemoryStore::default());
    let host = |client: &[u8]| {
        let store = HostStore::new(Arc::new(memory.clone()), &[9; 32], Duration::from_secs(5));
        Sessions::new(
            Storage::Host(Box::new(store)),
            None,
            client.to_vec(),
            DEFAULT_SESSION_TTL,
            SKEW,
            Arc::default(),
            Arc::default(),
        )
    };
    let provider = Provider::rotating();
    host(b"client").begin(Some("k".into()), "user", None, "s", first_grant(Some("rt-0"))).await.unwrap();
    let restarted = host(b"client");
    age(&restarted, "k").await;
    assert_eq!(acquire(&restarted, &provider, "k", "s", false).await.unwrap().access_token, "at-1-s");
    assert_eq!(restarted.held_in_process(), 0);
    let other_client = host(b"another client");
    let err = acquire(&other_client, &provider, "k", "s", false).await.unwrap_err();
    assert_eq!(err.reason, FailureReason::SessionNotFound);
    memory.failing.store(true, Ordering::SeqCst);
    let err = acquire(&restarted, &provider, "k", "s", false).await.unwrap_err();
    assert!(err.retryable && err.message.contains("database offline"), "{}", err.message);
}

#[tokio::test]
async fn a_renewal_the_store_would_not_take_is_kept_in_process_and_the_spent_token_never_presented() {
    let memory = Arc::new(MemoryStore::default());
    let store = HostStore::new(Arc::new(memory.clone()), &[9; 32], Duration::from_secs(5));
    let sessions = Sessions::new(
        Storage::Host(Box::new(store)),
        None,
        b"client".to_vec(),
        DEFAULT_SESSION_TTL,
        SKEW,
        Arc::default(),
        Arc::default(),
    );
    let provider = Provider::rotating();
    sessions.begin(Some("k".into()), "user", None, "s", first_grant(Some("rt-0"))).await.unwrap();
    memory.failing_writes.store(true, Ordering::SeqCst);
    // The provider rotated rt-0 into rt-1; the store keeps rt-0, which is spent.
    let renewed = acquire(&sessions, &provider, "k", "s", true).await.unwrap();
    assert_eq!(renewed.access_token, "at-1-s");
    assert_eq!(sessions.storage.load(&sessions.id("k")).await.unwrap().unwrap().refresh_token, "rt-0");
    memory.failing_writes.store(false, Ordering::SeqCst);
    let again = acquire(&sessions, &provider, "k", "s", true).await.unwrap();
    assert_eq!(again.access_token, "at-2-s");
    assert!(!provider.revoked.load(Ordering::SeqCst), "rt-0 was presented again");
    assert_eq!(sessions.storage.load(&sessions.id("k")).await.unwrap().unwrap().refresh_token, "rt-2");
    assert!(sessions.renewals.unsaved.lock().is_empty());
}
