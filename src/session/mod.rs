//! Long-running On-Behalf-Of sessions, for agents that act for a user who is
//! no longer there (scheduled tasks, background jobs, long tool runs). An
//! exchange needs the user's live access token, which expires within the
//! hour; a session exchanges once with `offline_access`, keeps the refresh
//! token, and renews silently later, as MSAL.NET's long-running OBO does.
//!
//! What makes it more than a stored refresh token is rotation safety:
//! providers with reuse detection (Okta, Auth0, Keycloak, oidc-provider)
//! revoke the whole grant when a rotated refresh token is presented twice, so
//! a session's refresh token is redeemed by at most one request at a time:
//! across scopes and threads (a lock per session in this process) and, with
//! the Redis tier, across instances (the tier's lock). Callers that waited
//! read the session again and are served from the renewal they waited for, or
//! renew next with the token it left.
//!
//! The module knows nothing of HTTP: the engine redeems refresh tokens for
//! it ([`Renewer`]). It owns the record ([`record`]), the stores ([`store`],
//! [`redis`]), the lock, and what each failure means for the session.

mod grant;
mod record;
mod redis;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::Mutex;
use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::cache::wall_clock_ms;
use crate::error::{ExchangeError, FailureReason};
use crate::events::{Events, Level};

pub use grant::{parse_granted, refresh_form_body, with_offline_access, Granted, OFFLINE_ACCESS};
pub use record::{ScopedToken, SessionRecord, MAX_TOKENS_PER_SESSION};
pub use redis::RedisSessions;
pub use store::{HostFuture, HostSessionStore, HostStore, InProcess, StoreUnavailable};

/// How long a session lives without a renewal when `sessionTtlMs` is not
/// given: Entra's refresh tokens for OBO last 90 days of inactivity.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(90 * 86_400);

pub const NOT_FOUND_MESSAGE: &str =
    "No OBO session under this session key: it was never begun, has ended, or has lapsed; begin a new one";

/// A session's id in this process and in the stores: a digest of the client
/// it belongs to and of its key, so that neither the key nor the client can
/// be read back from it, and two clients' sessions never meet.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 32]);

impl SessionId {
    pub fn derive(client: &[u8], session_key: &str) -> SessionId {
        let mut context = Context::new(&SHA256);
        for part in [b"obo-native session v1".as_slice(), client, session_key.as_bytes()] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(context.finish().as_ref());
        SessionId(id)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// 32 random bytes, base64url: the key of a session begun without one.
pub fn new_session_key() -> String {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).expect("the system random generator failed");
    URL_SAFE_NO_PAD.encode(key)
}

/// Renewals and failures since the package was loaded; they outlive `configure()`.
#[derive(Default, Debug)]
pub struct SessionCounters {
    pub renewals: AtomicU64,
    pub failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Redeems a refresh token: one request, with the client's authentication,
/// retries and timeout. The error is already free of secrets (the refresh
/// token among them).
pub trait Renewer: Sync {
    /// `tenant`: the user's home tenant the session began at, if any.
    fn redeem(
        &self,
        refresh_token: &str,
        scopes: &str,
        tenant: Option<&str>,
    ) -> impl Future<Output = Result<Granted, ExchangeError>> + Send;
}

/// Where a client's sessions live.
pub enum Storage {
    InProcess(InProcess),
    /// Boxed, as its keys make it large beside the others.
    Host(Box<HostStore>),
    Redis(RedisSessions),
}

impl Storage {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreUnavailable> {
        match self {
            Storage::InProcess(store) => Ok(store.load(id)),
            Storage::Host(store) => store.load(id).await,
            Storage::Redis(store) => store.load(id).await,
        }
    }

    async fn save(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreUnavailable> {
        match self {
            Storage::InProcess(store) => {
                store.save(id, record);
                Ok(())
            }
            Storage::Host(store) => store.save(id, record).await,
            Storage::Redis(store) => store.save(id, record).await,
        }
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreUnavailable> {
        match self {
            Storage::InProcess(store) => Ok(store.remove(id)),
            Storage::Host(store) => store.remove(id).await,
            Storage::Redis(store) => store.remove(id).await,
        }
    }
}

/// A token served from a session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    pub access_token: String,
    pub expires_in: u64,
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionToken")
            .field("expires_in", &self.expires_in)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl SessionToken {
    fn from_scoped(token: &ScopedToken, now_ms: u64) -> SessionToken {
        SessionToken {
            access_token: token.access_token.clone(),
            expires_in: token.remaining_secs(now_ms),
            expires_at_ms: token.expires_at_ms,
        }
    }
}

/// A session just begun.
#[derive(Debug)]
pub struct Begun {
    pub session_key: String,
    pub token: SessionToken,
}

/// One lock per session in this process: a renewal, a beginning and an end
/// of the same session never overlap here. Entries go when nobody holds or
/// waits for them.
#[derive(Default)]
struct LocalLocks {
    locks: Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>,
}

struct LocalHold {
    locks: Arc<LocalLocks>,
    id: SessionId,
    mutex: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl LocalLocks {
    async fn lock(self: &Arc<Self>, id: SessionId) -> LocalHold {
        let mutex = self.locks.lock().entry(id).or_default().clone();
        let guard = mutex.clone().lock_owned().await;
        LocalHold { locks: self.clone(), id, mutex, guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().len()
    }
}

impl Drop for LocalHold {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock();
        // The map's reference and ours: nobody else holds or waits.
        if Arc::strong_count(&self.mutex) == 2 {
            locks.remove(&self.id);
        }
    }
}

/// The right to change a session: this process's lock, and the deployment's
/// when sessions live in Redis.
struct Hold {
    _local: LocalHold,
    remote: Option<redis::RemoteHold>,
}

impl Hold {
    async fn release(self) {
        if let Some(remote) = self.remote {
            remote.release().await;
        }
    }
}

/// What this process knows of renewals whatever configuration is in force,
/// so that a `configure()` during a renewal changes none of it: who holds each
/// session's lock, and renewed sessions the store would not take. Keyed by
/// [`SessionId`], which already names the client.
#[derive(Default)]
pub struct Renewals {
    locks: Arc<LocalLocks>,
    /// Renewed sessions the store would not take (it failed right after the
    /// provider rotated the refresh token): this process keeps renewing from
    /// them, never from the spent token in the store, and writes them again
    /// whenever it holds the session's lock, until the store takes them.
    unsaved: Mutex<HashMap<SessionId, SessionRecord>>,
}

/// The sessions of one client.
pub struct Sessions {
    storage: Storage,
    /// The deployment's lock (the Redis tier's), wherever the sessions live.
    remote_lock: Option<RedisSessions>,
    /// Who the client is (client id and token endpoint): part of every id.
    client: Vec<u8>,
    ttl: Duration,
    skew: Duration,
    counters: Arc<SessionCounters>,
    /// The engine's: they outlive this configuration.
    renewals: Arc<Renewals>,
}

/// Writes of a renewed session tried before it is kept in the process instead.
const SAVE_ATTEMPTS: u32 = 3;

impl Sessions {
    pub fn new(
        storage: Storage,
        remote_lock: Option<RedisSessions>,
        client: Vec<u8>,
        ttl: Duration,
        skew: Duration,
        counters: Arc<SessionCounters>,
        renewals: Arc<Renewals>,
    ) -> Sessions {
        Sessions { storage, remote_lock, client, ttl, skew, counters, renewals }
    }

    pub fn id(&self, session_key: &str) -> SessionId {
        SessionId::derive(&self.client, session_key)
    }

    /// Sessions held in this process (none when they live in a store).
    pub fn held_in_process(&self) -> usize {
        match &self.storage {
            Storage::InProcess(store) => store.len(),
            _ => 0,
        }
    }

    async fn hold(&self, id: &SessionId) -> Result<Hold, Arc<ExchangeError>> {
        let local = self.renewals.locks.lock(*id).await;
        let remote = match &self.remote_lock {
            Some(redis) => Some(redis.lock(id).await.map_err(unavailable)?),
            None => None,
        };
        Ok(Hold { _local: local, remote })
    }

    /// Keeps a session begun (at the user's home `tenant`, if routed there)
    /// by an exchange that answered `granted` for `scopes`, under
    /// `session_key` (replacing any session there) or a new key.
    pub async fn begin(
        &self,
        session_key: Option<String>,
        subject: &str,
        tenant: Option<String>,
        scopes: &str,
        granted: Granted,
    ) -> Result<Begun, Arc<ExchangeError>> {
        let Some(refresh_token) = granted.refresh_token else {
            bump(&self.counters.failures);
            return Err(Arc::new(no_refresh_token()));
        };
        let session_key = session_key.unwrap_or_else(new_session_key);
        let id = self.id(&session_key);
        let now_ms = wall_clock_ms();
        let mut record = SessionRecord::new(refresh_token, subject.to_owned(), now_ms, self.ttl);
        record.tenant = tenant;
        let token = ScopedToken::new(scopes, &granted.token, now_ms, self.skew);
        let served = SessionToken::from_scoped(&token, now_ms);
        record.keep(token, now_ms);
        let hold = self.hold(&id).await.inspect_err(|_| bump(&self.counters.failures))?;
        let saved = self.storage.save(&id, &record).await;
        if saved.is_ok() {
            self.renewals.unsaved.lock().remove(&id);
        }
        hold.release().await;
        saved.map_err(|why| {
            bump(&self.counters.failures);
            unavailable(why)
        })?;
        Ok(Begun { session_key, token: served })
    }

    /// The session's token for `scopes`: its own while fresh (unless
    /// `force`), else one renewal's, made under the session's lock.
    pub async fn acquire(
        &self,
        renewer: &impl Renewer,
        session_key: &str,
        scopes: &str,
        force: bool,
        events: &mut Events,
    ) -> Result<SessionToken, Arc<ExchangeError>> {
        let outcome = self.acquire_counted(renewer, session_key, scopes, force, events).await;
        if outcome.is_err() {
            bump(&self.counters.failures);
        }
        outcome
    }

    async fn acquire_counted(
        &self,
        renewer: &impl Renewer,
        session_key: &str,
        scopes: &str,
        force: bool,
        events: &mut Events,
    ) -> Result<SessionToken, Arc<ExchangeError>> {
        let id = self.id(session_key);
        let asked_at_ms = wall_clock_ms();
        if !force {
            let record = self.load(&id).await.map_err(unavailable)?.ok_or_else(not_found)?;
            let now_ms = wall_clock_ms();
            if let Some(token) = record.token_for(scopes, now_ms, None) {
                events.push(Level::Debug, || format!("Using OBO session token for user: {}", record.subject));
                return Ok(SessionToken::from_scoped(token, now_ms));
            }
        }
        let hold = self.hold(&id).await?;
        let outcome = self.renew_held(renewer, &id, scopes, force.then_some(asked_at_ms), events).await;
        hold.release().await;
        outcome
    }

    /// Under the session's lock: served by the renewal this call waited for,
    /// if any, else one redemption of the refresh token.
    async fn renew_held(
        &self,
        renewer: &impl Renewer,
        id: &SessionId,
        scopes: &str,
        after_ms: Option<u64>,
        events: &mut Events,
    ) -> Result<SessionToken, Arc<ExchangeError>> {
        self.flush(id).await;
        let mut record = self.load(id).await.map_err(unavailable)?.ok_or_else(not_found)?;
        let now_ms = wall_clock_ms();
        if let Some(token) = record.token_for(scopes, now_ms, after_ms) {
            events.push(Level::Debug, || {
                format!("Using OBO session token renewed meanwhile for user: {}", record.subject)
            });
            return Ok(SessionToken::from_scoped(token, now_ms));
        }
        let subject = record.subject.clone();
        events.push(Level::Debug, || format!("Renewing OBO session for user: {subject}, scopes: {scopes}"));
        match renewer.redeem(&record.refresh_token, scopes, record.tenant.as_deref()).await {
            Ok(granted) => {
                let now_ms = wall_clock_ms();
                let token = ScopedToken::new(scopes, &granted.token, now_ms, self.skew);
                let served = SessionToken::from_scoped(&token, now_ms);
                record.renewed(granted.refresh_token, token, now_ms, self.ttl);
                bump(&self.counters.renewals);
                // The old refresh token may be spent: the new one must be kept before anyone else renews.
                if let Err(why) = self.save_renewed(id, &record).await {
                    events.push(Level::Warn, || {
                        format!(
                            "Renewed OBO session of user: {subject} could not be stored ({}); this process keeps it until the store answers",
                            why.0
                        )
                    });
                    self.renewals.unsaved.lock().insert(*id, record);
                }
                events.push(Level::Debug, || format!("Renewed OBO session for user: {subject}"));
                Ok(served)
            }
            Err(err) if is_invalid_grant(&err) => {
                self.renewals.unsaved.lock().remove(id);
                let removed = self.storage.remove(id).await;
                let err = Arc::new(expired(err));
                events.push_error(
                    Level::Warn,
                    || format!("OBO session of user: {subject} was refused by the identity provider and has ended"),
                    || ExchangeError::clone(&err),
                );
                removed.map_err(unavailable)?;
                Err(err)
            }
            Err(err) => {
                let err = Arc::new(err);
                events.push_error(
                    Level::Error,
                    || format!("OBO session renewal failed for user: {subject}, scopes: {scopes}: {}", err.message),
                    || ExchangeError::clone(&err),
                );
                Err(err)
            }
        }
    }

    /// Deletes the session wherever it is stored; whether it existed.
    pub async fn end(&self, session_key: &str) -> Result<bool, Arc<ExchangeError>> {
        let id = self.id(session_key);
        let hold = self.hold(&id).await?;
        let kept = self.renewals.unsaved.lock().remove(&id).is_some();
        let removed = self.storage.remove(&id).await;
        hold.release().await;
        removed.map(|existed| existed || kept).map_err(unavailable)
    }

    /// The session as this process knows it best: a renewal the store would
    /// not take, else the store's.
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreUnavailable> {
        let unsaved = self.renewals.unsaved.lock().get(id).cloned();
        match unsaved {
            Some(record) => Ok(Some(record)),
            None => self.storage.load(id).await,
        }
    }

    /// Under the session's lock: a renewal the store would not take, written again.
    async fn flush(&self, id: &SessionId) {
        let unsaved = self.renewals.unsaved.lock().get(id).cloned();
        if let Some(record) = unsaved {
            if self.storage.save(id, &record).await.is_ok() {
                self.renewals.unsaved.lock().remove(id);
            }
        }
    }

    /// Writes a renewed session, a few times: until it is written, the store
    /// holds a refresh token the provider may already have spent.
    async fn save_renewed(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreUnavailable> {
        let mut attempt = 1;
        loop {
            match self.storage.save(id, record).await {
                Ok(()) => {
                    self.renewals.unsaved.lock().remove(id);
                    return Ok(());
                }
                Err(why) if attempt >= SAVE_ATTEMPTS => return Err(why),
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

fn is_invalid_grant(err: &ExchangeError) -> bool {
    err.oauth.as_ref().is_some_and(|oauth| oauth.error == "invalid_grant")
}

fn not_found() -> Arc<ExchangeError> {
    Arc::new(ExchangeError::new(FailureReason::SessionNotFound, NOT_FOUND_MESSAGE))
}

fn unavailable(why: StoreUnavailable) -> Arc<ExchangeError> {
    Arc::new(ExchangeError::failed(format!("OBO session store unavailable: {}", why.0)).retryable(true))
}

fn no_refresh_token() -> ExchangeError {
    ExchangeError::new(
        FailureReason::NoRefreshToken,
        "The identity provider issued no refresh token, so no OBO session was begun: the app registration must be \
         allowed the offline_access scope (it was requested)",
    )
}

/// The provider refused the refresh token: the session is over.
fn expired(err: ExchangeError) -> ExchangeError {
    ExchangeError {
        message: format!("The OBO session has expired or was revoked ({}); the user must sign in again", err.message),
        reason: FailureReason::SessionExpired,
        retryable: false,
        ..err
    }
}

#[cfg(test)]
mod tests;
