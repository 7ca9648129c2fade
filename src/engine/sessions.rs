//! The engine's side of long-running sessions (see [`crate::session`]): the
//! exchange that begins one and the redemptions that renew it are requests
//! like any exchange (the endpoint, the client's authentication, retries and
//! the timeout of the configuration in force); what a session is, where it
//! lives and who may renew it is the session module's business.

use std::future::Future;
use std::sync::Arc;

use super::{Ask, Engine, Setup};
use crate::config::{Config, EnvLookup};
use crate::error::{ConfigError, ExchangeError, FailureReason};
use crate::events::{Events, Level};
use crate::key::Identity;
use crate::session::{
    self, Begun, Granted, HostSessionStore, HostStore, InProcess, RedisSessions, Renewals, Renewer, SessionCounters,
    SessionToken, Sessions, Storage,
};
use crate::shared::{Namespace, SharedTier};
use crate::stats::Counters;
use crate::token_exchange::Target;

/// `beginOboSession`'s inputs. The assertion is the user's access token: never printed.
pub struct BeginSession {
    pub identity: Identity,
    pub scopes: String,
    pub assertion: String,
    /// The host's own key; `None` for a random one.
    pub session_key: Option<String>,
    /// Token exchange: the call's own audiences and resources.
    pub target: Option<Target>,
    pub events: Events,
}

/// What a session call answers.
#[derive(Debug)]
pub enum SessionAnswer {
    Begun(Begun),
    Token(SessionToken),
    /// `endOboSession`: whether there was a session.
    Ended(bool),
}

pub type SessionOutcome = Result<SessionAnswer, Arc<ExchangeError>>;

/// The sessions of a configuration: in the host's store when it gave one
/// (which needs `cacheEncryptionKey`), else in Redis with the tier, else in
/// this process. With the tier, renewals take its lock wherever the sessions live.
pub(super) fn sessions_for(
    config: &Config,
    shared: Option<&SharedTier>,
    host_store: Option<Arc<dyn HostSessionStore>>,
    counters: &Arc<SessionCounters>,
    renewals: &Arc<Renewals>,
) -> Result<Sessions, ConfigError> {
    let redis = || shared.map(|shared| RedisSessions::new(shared.tier().clone(), shared.lease(), shared.patience()));
    let storage = match (host_store, redis()) {
        (Some(functions), _) => {
            let Some(key) = config.encryption_key else {
                return Err(ConfigError::new(
                    "cacheEncryptionKey",
                    "configure: option \"cacheEncryptionKey\" is required with sessionStore: sessions are sealed \
                     before they reach the store (64 hexadecimal characters)",
                ));
            };
            Storage::Host(Box::new(HostStore::new(functions, &key, config.timeout)))
        }
        (None, Some(redis)) => Storage::Redis(redis),
        (None, None) => Storage::InProcess(InProcess::default()),
    };
    // The application a session belongs to, as the shared tier names it.
    let client = Namespace::of(config).as_bytes().to_vec();
    Ok(Sessions::new(
        storage,
        redis(),
        client,
        config.session_ttl,
        config.expiry_skew,
        counters.clone(),
        renewals.clone(),
    ))
}

/// Redeems refresh tokens with the configuration a session call runs under.
struct Renewal<'a> {
    engine: &'a Engine,
    setup: &'a Setup,
}

impl Renewer for Renewal<'_> {
    async fn redeem(&self, refresh_token: &str, scopes: &str, tenant: Option<&str>) -> Result<Granted, ExchangeError> {
        let mut secrets = self.setup.config.secrets();
        secrets.push(refresh_token);
        let ask = Ask::Refresh { refresh_token, scopes, tenant };
        let attempt = || self.engine.attempt_grant(self.setup, &ask, session::parse_granted);
        let retrying = |_| String::new();
        // The provider may have rotated the token even when its answer was lost (a timeout, a 5xx):
        // sending the old one again would be reuse, and revoke the grant. The caller may retry later.
        let unreceived = crate::retry::never_reached_provider;
        self.engine
            .with_retries(&self.setup.config, &secrets, &mut Events::Off, retrying, unreceived, attempt)
            .await
            .map_err(|err| err.redacted(&secrets))
    }
}

impl Engine {
    /// Starts `beginOboSession`: the configuration is resolved now, as for
    /// [`Engine::exchange`]; the rest is a future to run on the runtime.
    pub fn begin_session(
        &self,
        request: BeginSession,
        env: Option<EnvLookup<'_>>,
    ) -> Result<impl Future<Output = SessionOutcome> + Send + 'static, Arc<ExchangeError>> {
        let setup = self.footing(env)?.setup;
        // A call's own audiences and resources must suit the configured grant (none for jwt-bearer).
        if let Some(target) = &request.target {
            setup.config.grant.key(Some(target)).map_err(|err| {
                Arc::new(ExchangeError::new(FailureReason::InvalidOption, err.message).with_code(err.option))
            })?;
        }
        let engine = self.clone();
        Ok(async move { engine.begin_with(&setup, request).await.map(SessionAnswer::Begun) })
    }

    /// Starts `acquireSessionToken`.
    pub fn acquire_session(
        &self,
        session_key: String,
        scopes: String,
        force: bool,
        mut events: Events,
        env: Option<EnvLookup<'_>>,
    ) -> Result<impl Future<Output = SessionOutcome> + Send + 'static, Arc<ExchangeError>> {
        let setup = self.footing(env)?.setup;
        let engine = self.clone();
        Ok(async move {
            let renewal = Renewal { engine: &engine, setup: &setup };
            let token = setup.sessions.acquire(&renewal, &session_key, &scopes, force, &mut events).await?;
            Ok(SessionAnswer::Token(token))
        })
    }

    /// Starts `endOboSession`.
    pub fn end_session(
        &self,
        session_key: String,
        env: Option<EnvLookup<'_>>,
    ) -> Result<impl Future<Output = SessionOutcome> + Send + 'static, Arc<ExchangeError>> {
        let setup = self.footing(env)?.setup;
        Ok(async move { setup.sessions.end(&session_key).await.map(SessionAnswer::Ended) })
    }

    /// Runs a session future on the process's runtime, as [`Engine::spawn`] does an exchange.
    pub fn spawn_session(
        call: impl Future<Output = SessionOutcome> + Send + 'static,
        done: impl FnOnce(SessionOutcome) + Send + 'static,
    ) {
        crate::runtime::spawn_settled(call, done, |()| {
            Err(Arc::new(ExchangeError::failed(
                "obo-native: the session call failed unexpectedly (an internal error; please report it)",
            )))
        });
    }

    /// The On-Behalf-Of exchange with `offline_access`, then the session it begins.
    async fn begin_with(&self, setup: &Setup, request: BeginSession) -> Result<Begun, Arc<ExchangeError>> {
        let BeginSession { identity, scopes, assertion, session_key, target, mut events } = request;
        let user = &identity.subject;
        let config = &setup.config;
        let requested = session::with_offline_access(&scopes);
        events.push(Level::Debug, || format!("Beginning OBO session for user: {user}, scopes: {requested}"));
        let mut secrets = config.secrets();
        secrets.push(&assertion);
        if let Some(key) = &session_key {
            secrets.push(key);
        }
        let ask = Ask::Exchange { assertion: &assertion, scopes: &requested, target: target.as_ref(), claims: None };
        let attempt = || self.attempt_grant(setup, &ask, session::parse_granted);
        let retrying = |_| format!("Transient OBO session failure for user: {user}, retrying");
        let begun = match self.with_retries(config, &secrets, &mut events, retrying, |_| true, attempt).await {
            Ok(granted) => {
                let tenant = crate::routing::home_tenant(&assertion);
                setup.sessions.begin(session_key, user, tenant, &scopes, granted).await
            }
            Err(err) => {
                Counters::bump(&self.0.counters.sessions.failures);
                Err(Arc::new(err.redacted(&secrets)))
            }
        };
        match &begun {
            Ok(_) => events.push(Level::Debug, || format!("Began OBO session for user: {user}")),
            Err(err) => events.push_error(
                Level::Error,
                || format!("Beginning OBO session failed for user: {user}, scopes: {requested}: {}", err.message),
                || ExchangeError::clone(err),
            ),
        }
        begun
    }
}
