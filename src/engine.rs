//! The exchange itself, tying the parts together: configuration, cache,
//! throttles, single flight, retries and the HTTP call. One engine serves the
//! whole process (every worker thread).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::RwLock;
use reqwest::{Client, Url};
use tokio::sync::OnceCell;

use crate::cache::{exchange_begins, wall_clock_ms, CacheKey, CachedToken, Hit, TokenCache};
use crate::claims::Claims;
use crate::config::{without_credentials, Config, EndpointSource, EnvLookup, HostFunctions};
use crate::error::{ConfigError, ExchangeError, FailureReason, Secrets};
use crate::events::{Events, Level};
use crate::flight::{FlightMap, Role};
use crate::generations::Generations;
use crate::grant::{self, ClientAuth, TokenResponse};
use crate::http;
use crate::key::{AssertionDigest, GrantKey, Identity};
use crate::outcome::{Outcome, Token};
use crate::redis_tier::RedisTier;
use crate::retry::{self, Next, RetryPolicy};
use crate::routing;
use crate::runtime;
use crate::session::{HostSessionStore, Renewals, Sessions};
use crate::shared::{Ahead, Local, SharedTier};
use crate::stats::{Counters, InFlight, Stats};
use crate::throttle::Throttles;
use crate::token_exchange::Target;

mod sessions;
pub use sessions::{BeginSession, SessionAnswer, SessionOutcome};

pub const CONFIG_UNAVAILABLE: &str = "OpenID configuration not available";
/// The `code` of a call refused by a closed client.
pub const CLIENT_CLOSED_CODE: &str = "ERR_OBO_CLIENT_CLOSED";
/// Why a closed client refuses a call.
pub const CLIENT_CLOSED: &str = "obo-native: this OBO client is closed (close() was called); create another one";

/// One call's inputs. The assertion is the user's access token: never printed.
pub struct ExchangeRequest {
    pub identity: Identity,
    pub scopes: String,
    pub assertion: String,
    /// Made once, when the call arrives: the cache check before the exchange
    /// starts and the exchange itself use the same digest of the 1.5 KB assertion.
    pub assertion_digest: AssertionDigest,
    pub from_cache: bool,
    /// A claims challenge: the exchange skips the cache and the flights, and its token is stored.
    pub claims: Option<Claims>,
    /// Token exchange: the call's own audiences and resources.
    pub target: Option<Target>,
    /// Where this call's log events go.
    pub events: Events,
}

impl ExchangeRequest {
    pub fn new(
        identity: Identity,
        scopes: String,
        assertion: String,
        from_cache: bool,
        claims: Option<Claims>,
        target: Option<Target>,
        events: Events,
    ) -> ExchangeRequest {
        let assertion_digest = AssertionDigest::of(&assertion);
        ExchangeRequest { identity, scopes, assertion, assertion_digest, from_cache, claims, target, events }
    }

    /// Whether the cache may answer this call (not a forced refresh or a claims challenge).
    pub fn reads_cache(&self) -> bool {
        self.from_cache && self.claims.is_none()
    }
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("identity", &self.identity)
            .field("scopes", &self.scopes)
            .field("assertion", &"[redacted]")
            .field("from_cache", &self.from_cache)
            .field("claims", &self.claims)
            .field("target", &self.target)
            .field("events", &self.events)
            .finish()
    }
}

/// What one request to the token endpoint asks for.
enum Ask<'a> {
    /// The configured grant (jwt-bearer or token exchange) for an assertion.
    Exchange { assertion: &'a str, scopes: &'a str, target: Option<&'a Target>, claims: Option<&'a Claims> },
    /// A long-running session's renewal (see [`crate::session`]), at the user's home tenant when it began there.
    Refresh { refresh_token: &'a str, scopes: &'a str, tenant: Option<&'a str> },
}

/// A configuration in force, with what hangs on it.
struct Setup {
    config: Config,
    /// The grant's part of the key of a call that names no audience or resource of its own.
    grant_key: GrantKey,
    client: Client,
    endpoint: OnceCell<Url>,
    /// The Redis tier shared with other instances, when configured.
    shared: Option<SharedTier>,
    /// The long-running sessions begun under this configuration.
    sessions: Sessions,
}

impl Setup {
    /// `from_env`: a Redis tier the client library refuses is then a warning
    /// and no tier, as the environment cannot throw at anyone.
    fn new(
        mut config: Config,
        engine: &Inner,
        from_env: bool,
        session_store: Option<Arc<dyn HostSessionStore>>,
    ) -> Result<Arc<Setup>, ConfigError> {
        let counters = &engine.counters;
        let client = http::client_for(config.proxy.as_ref())
            .map_err(|why| ConfigError::new("proxy", format!("configure: {why}")))?;
        let endpoint = match &config.endpoint {
            EndpointSource::TokenEndpoint(url) => OnceCell::new_with(Some(url.clone())),
            EndpointSource::Issuer(_) => OnceCell::new(),
        };
        let tier = match config.redis.clone().map(|options| RedisTier::with_counters(options, counters.redis.clone())) {
            None => None,
            Some(Ok(tier)) => Some(tier),
            Some(Err(err)) if from_env => {
                config.redis_warning =
                    Some(format!("USE_REDIS is set, but {err}; running without the shared Redis tier"));
                None
            }
            Some(Err(err)) => return Err(err.for_configure()),
        };
        let shared = tier.map(|tier| SharedTier::new(tier, &config));
        let sessions =
            sessions::sessions_for(&config, shared.as_ref(), session_store, &counters.sessions, &engine.renewals)?;
        let grant_key = config.grant.configured_key();
        Ok(Arc::new(Setup { config, grant_key, client, endpoint, shared, sessions }))
    }
}

enum ConfigSlot {
    /// LibreChat's variables, read at the first exchange that needs them.
    FromEnv(Option<Arc<Setup>>),
    Configured(Arc<Setup>),
    /// `close()`d: nothing is configured again, and every call is refused.
    Closed,
}

/// What an exchange runs under, read together under the slot's lock: a
/// `configure()` replaces the setup and moves the epoch under the write lock,
/// so a token from the old client can never be stored under the new epoch.
struct Footing {
    setup: Arc<Setup>,
    epoch: u32,
    flights: Arc<FlightMap<Outcome>>,
    /// The grant's part of this call's key: the setup's, or for the call's own audiences and resources.
    grant_key: GrantKey,
    /// Set for the one call that read the environment: why `USE_REDIS` was not honoured.
    redis_warning: Option<String>,
    /// When the call began ([`exchange_begins`]): what its token is ordered by.
    begun_us: u64,
}

struct Inner {
    slot: RwLock<ConfigSlot>,
    cache: TokenCache,
    throttles: Throttles,
    /// Replaced by `clearCache()`/`configure()`: a call made after them starts
    /// its own exchange instead of joining one begun before.
    flights: RwLock<Arc<FlightMap<Outcome>>>,
    counters: Counters,
    generations: Arc<Generations>,
    /// Sessions' locks and unsaved renewals: a `configure()` must not let a
    /// second renewal of a session start beside one under way, nor lose one.
    renewals: Arc<Renewals>,
}

#[derive(Clone)]
pub struct Engine(Arc<Inner>);

static ENGINE: LazyLock<Engine> = LazyLock::new(Engine::new);

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    /// An engine of its own: configuration, cache, flights, throttles,
    /// counters and generations. The runtime and HTTP clients are the process's.
    pub fn new() -> Engine {
        let generations = Arc::new(Generations::new());
        generations.set_env_needed(true);
        Engine(Arc::new(Inner {
            slot: RwLock::new(ConfigSlot::FromEnv(None)),
            cache: TokenCache::new(generations.clone()),
            throttles: Throttles::default(),
            flights: RwLock::new(FlightMap::new()),
            counters: Counters::default(),
            generations,
            renewals: Arc::default(),
        }))
    }

    /// The engine of the process: the module's top-level functions.
    pub fn global() -> &'static Engine {
        &ENGINE
    }

    pub fn generations(&self) -> &Arc<Generations> {
        &self.0.generations
    }

    /// Replaces the configuration (`None`: back to the environment) and
    /// forgets every token, throttle and flight, and the sessions held in
    /// this process (they belong to the configuration that began them).
    pub fn configure(&self, options_json: Option<&str>) -> Result<(), ConfigError> {
        self.configure_with(options_json, HostFunctions::default(), None)
    }

    /// [`Engine::configure`], with the host's functions (`clientAssertion`,
    /// `actorToken`) and its `sessionStore`.
    pub fn configure_with(
        &self,
        options_json: Option<&str>,
        functions: HostFunctions,
        session_store: Option<Arc<dyn HostSessionStore>>,
    ) -> Result<(), ConfigError> {
        let slot = match options_json {
            None => ConfigSlot::FromEnv(None),
            Some(json) => {
                let config = Config::from_options(json, functions)?;
                let setup = Setup::new(config, &self.0, false, session_store)?;
                ConfigSlot::Configured(setup)
            }
        };
        let env_needed = matches!(slot, ConfigSlot::FromEnv(None));
        let mut current = self.0.slot.write();
        if matches!(*current, ConfigSlot::Closed) {
            return Err(ConfigError::new("options", CLIENT_CLOSED));
        }
        *current = slot;
        self.0.generations.set_env_needed(env_needed);
        // Still under the slot's lock: see `Footing`.
        self.clear_cache();
        Ok(())
    }

    /// Forgets every token and throttle of this process (a shared Redis tier
    /// keeps its entries), and lets calls from now on start
    /// their own exchanges. Exchanges under way still answer the callers they
    /// have, but what they bring is not cached.
    pub fn clear_cache(&self) {
        *self.0.flights.write() = FlightMap::new();
        self.0.cache.clear();
        self.0.throttles.clear();
    }

    /// The token endpoint of the configuration in force: configured, or
    /// discovered by an exchange; `None` before discovery.
    pub fn token_endpoint(&self) -> Option<String> {
        match &*self.0.slot.read() {
            ConfigSlot::Configured(setup) | ConfigSlot::FromEnv(Some(setup)) => {
                setup.endpoint.get().map(Url::to_string)
            }
            ConfigSlot::FromEnv(None) | ConfigSlot::Closed => None,
        }
    }

    /// Forgets the configuration and everything cached, and refuses every
    /// later call. Exchanges under way still answer their callers; the
    /// configuration's resources (its Redis connections) go with the last of them.
    pub fn close(&self) {
        let mut slot = self.0.slot.write();
        *slot = ConfigSlot::Closed;
        self.0.generations.set_env_needed(false);
        self.clear_cache();
    }

    pub fn is_closed(&self) -> bool {
        matches!(*self.0.slot.read(), ConfigSlot::Closed)
    }

    pub fn stats(&self) -> Stats {
        let sessions = match &*self.0.slot.read() {
            ConfigSlot::Configured(setup) | ConfigSlot::FromEnv(Some(setup)) => setup.sessions.held_in_process(),
            ConfigSlot::FromEnv(None) | ConfigSlot::Closed => 0,
        };
        self.0.counters.snapshot(self.0.cache.len(), sessions)
    }

    /// Hits served by a JavaScript thread's memo, reported in batches.
    pub fn add_cache_hits(&self, hits: u64) {
        self.0.counters.cache_hits.fetch_add(hits, Ordering::Relaxed);
    }

    /// Calls a JavaScript thread joined to one of its own exchanges under way
    /// (each missed the cache, then joined), reported in batches.
    pub fn add_joins(&self, joins: u64) {
        self.0.counters.cache_misses.fetch_add(joins, Ordering::Relaxed);
        self.0.counters.coalesced.fetch_add(joins, Ordering::Relaxed);
    }

    /// A cached token, without any exchange: the synchronous fast path.
    pub fn lookup(&self, identity: &Identity, scopes: &str, assertion: &str, target: Option<&Target>) -> Option<Hit> {
        self.cached_for(identity, scopes, &AssertionDigest::of(assertion), target)
    }

    /// The cached token for `request`, from the digest it was made with; a
    /// miss is counted by the exchange that follows.
    pub fn cached(&self, request: &ExchangeRequest) -> Option<Hit> {
        self.cached_for(&request.identity, &request.scopes, &request.assertion_digest, request.target.as_ref())
    }

    fn cached_for(
        &self,
        identity: &Identity,
        scopes: &str,
        assertion_digest: &AssertionDigest,
        target: Option<&Target>,
    ) -> Option<Hit> {
        let grant_key = match &*self.0.slot.read() {
            ConfigSlot::Configured(setup) | ConfigSlot::FromEnv(Some(setup)) => match target {
                None => setup.grant_key,
                Some(target) => setup.config.grant.key(Some(target)).ok()?,
            },
            ConfigSlot::FromEnv(None) | ConfigSlot::Closed => return None,
        };
        let key = CacheKey::with_digest(identity, scopes, assertion_digest, &grant_key);
        let hit = self.0.cache.get(&key, wall_clock_ms())?;
        Counters::bump(&self.0.counters.cache_hits);
        Some(hit)
    }

    /// Starts an exchange. The configuration is resolved now, from `env` (the
    /// caller's view of the environment) when it comes from the environment
    /// and was not read yet; the rest is a future to run on [`Engine::spawn`].
    pub fn exchange(
        &self,
        request: ExchangeRequest,
        env: Option<EnvLookup<'_>>,
    ) -> Result<impl Future<Output = Outcome> + Send + 'static, Arc<ExchangeError>> {
        let mut footing = self.footing(env)?;
        if let Some(target) = &request.target {
            footing.grant_key = footing.setup.config.grant.key(Some(target)).map_err(|err| {
                Arc::new(ExchangeError::new(FailureReason::InvalidOption, err.message).with_code(err.option))
            })?;
        }
        let engine = self.clone();
        Ok(async move {
            let mut request = request;
            let mut events = std::mem::replace(&mut request.events, Events::Off);
            if let Some(warning) = &footing.redis_warning {
                events.push(Level::Warn, || warning.clone());
            }
            let setup = footing.setup.clone();
            let outcome = engine.exchange_with(footing, &request, &mut events).await;
            // The first call with a logger after Redis went away or came back tells it, once.
            if let Some(shared) = &setup.shared {
                shared.report(&mut events);
            }
            if let Err(err) = &outcome {
                if !err.throttled {
                    events.push_error(
                        Level::Error,
                        || {
                            format!(
                                "OBO exchange failed for user: {}, scopes: {}: {}",
                                request.identity.subject, request.scopes, err.message
                            )
                        },
                        || ExchangeError::clone(err),
                    );
                }
            }
            outcome
        })
    }

    /// Runs an exchange on the process's runtime and hands its outcome to
    /// `done`, whatever happens to it (a panic becomes an error).
    pub fn spawn(
        exchange: impl Future<Output = Outcome> + Send + 'static,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) {
        runtime::spawn_settled(exchange, done, |()| {
            Err(Arc::new(ExchangeError::failed(
                "obo-native: the exchange failed unexpectedly (an internal error; please report it)",
            )))
        });
    }

    /// The setup, epoch and flights a call runs under.
    fn footing(&self, env: Option<EnvLookup<'_>>) -> Result<Footing, Arc<ExchangeError>> {
        let inner = &self.0;
        let footing = |setup: &Arc<Setup>| Footing {
            setup: setup.clone(),
            epoch: inner.generations.epoch(),
            flights: inner.flights.read().clone(),
            grant_key: setup.grant_key,
            redis_warning: None,
            begun_us: exchange_begins(),
        };
        match &*inner.slot.read() {
            ConfigSlot::Configured(setup) | ConfigSlot::FromEnv(Some(setup)) => return Ok(footing(setup)),
            ConfigSlot::Closed => {
                return Err(Arc::new(ExchangeError::failed(CLIENT_CLOSED).with_code(CLIENT_CLOSED_CODE)))
            }
            ConfigSlot::FromEnv(None) => {}
        }
        let unavailable = |why: Option<String>| {
            let message = match why {
                Some(why) => format!("{CONFIG_UNAVAILABLE}: {why}"),
                None => CONFIG_UNAVAILABLE.to_owned(),
            };
            Arc::new(ExchangeError::new(FailureReason::ConfigUnavailable, message))
        };
        // Not sent: another thread returned to the environment after this one
        // looked; the process's own environment is the best view there is.
        let process_env = |name: &str| std::env::var(name).ok();
        let config = match Config::from_env(env.unwrap_or(&process_env)) {
            Ok(Some(config)) => config,
            Ok(None) => return Err(unavailable(None)),
            Err(err) => return Err(unavailable(Some(err.message))),
        };
        let setup = Setup::new(config, inner, true, None).map_err(|err| unavailable(Some(err.message)))?;
        let mut slot = inner.slot.write();
        match &mut *slot {
            ConfigSlot::FromEnv(Some(existing)) | ConfigSlot::Configured(existing) => Ok(footing(existing)),
            ConfigSlot::Closed => Err(Arc::new(ExchangeError::failed(CLIENT_CLOSED).with_code(CLIENT_CLOSED_CODE))),
            ConfigSlot::FromEnv(empty) => {
                *empty = Some(setup.clone());
                inner.generations.set_env_needed(false);
                Ok(Footing { redis_warning: setup.config.redis_warning.clone(), ..footing(&setup) })
            }
        }
    }

    async fn exchange_with(&self, footing: Footing, request: &ExchangeRequest, events: &mut Events) -> Outcome {
        let inner = &self.0;
        let key =
            CacheKey::with_digest(&request.identity, &request.scopes, &request.assertion_digest, &footing.grant_key);
        let user = &request.identity.subject;
        let from_cache = request.reads_cache();
        if from_cache {
            if let Some(hit) = inner.cache.get(&key, wall_clock_ms()) {
                Counters::bump(&inner.counters.cache_hits);
                events.push(Level::Debug, || format!("Using cached token for user: {user}"));
                return Ok(hit.into());
            }
            Counters::bump(&inner.counters.cache_misses);
        }
        if let Some(refusal) = inner.throttles.check(&key, wall_clock_ms()) {
            Counters::bump(&inner.counters.throttled);
            events.push(Level::Warn, || {
                format!(
                    "Refusing throttled OBO exchange for user: {user}, scopes: {}, for {} s more",
                    request.scopes,
                    refusal.retry_after_secs().unwrap_or(0)
                )
            });
            return Err(Arc::new(refusal));
        }
        if !from_cache {
            let outcome = self.run(&footing, &key, request, events).await;
            if let Some(shared) = &footing.setup.shared {
                shared.bypass().finish(shared, &key, &outcome, &self.local(&footing)).await;
            }
            return outcome;
        }
        match footing.flights.join_or_lead(&key) {
            Role::Follower(follower) => {
                Counters::bump(&inner.counters.coalesced);
                events.push(Level::Debug, || format!("Joining in-flight OBO exchange for user: {user}"));
                follower.result().await.unwrap_or_else(|| {
                    Err(Arc::new(ExchangeError::failed("The OBO exchange this call was waiting for was abandoned")))
                })
            }
            Role::Leader(flight) => {
                // A leader that finished between our cache miss and our
                // taking its slot has stored its token: use it.
                let outcome = match inner.cache.get(&key, wall_clock_ms()) {
                    Some(hit) => Ok(hit.into()),
                    None => self.lead(&footing, &key, request, events).await,
                };
                flight.complete(outcome.clone());
                outcome
            }
        }
    }

    /// A leader's exchange; with a shared tier, only after asking it (see [`crate::shared`]).
    async fn lead(&self, footing: &Footing, key: &CacheKey, request: &ExchangeRequest, events: &mut Events) -> Outcome {
        let Some(shared) = &footing.setup.shared else {
            return self.run(footing, key, request, events).await;
        };
        let local = self.local(footing);
        match shared.ahead(key, &local).await {
            Ahead::Served(token) => {
                events.push(Level::Debug, || {
                    format!("Using token shared by another instance for user: {}", request.identity.subject)
                });
                Ok(token)
            }
            Ahead::Refused(refusal) => {
                Counters::bump(&self.0.counters.throttled);
                events.push(Level::Warn, || {
                    format!(
                        "Refusing OBO exchange throttled by another instance for user: {}, scopes: {}, for {} s more",
                        request.identity.subject,
                        request.scopes,
                        refusal.retry_after_secs().unwrap_or(0)
                    )
                });
                Err(Arc::new(refusal))
            }
            Ahead::Exchange(exchanging) => {
                let outcome = self.run(footing, key, request, events).await;
                exchanging.finish(shared, key, &outcome, &local).await;
                outcome
            }
        }
    }

    fn local(&self, footing: &Footing) -> Local<'_> {
        Local {
            cache: &self.0.cache,
            throttles: &self.0.throttles,
            capacity: footing.setup.config.max_cache_entries,
            generations: &self.0.generations,
            epoch: footing.epoch,
            begun_us: footing.begun_us,
        }
    }

    /// One exchange with the provider, retries included.
    async fn run(&self, footing: &Footing, key: &CacheKey, request: &ExchangeRequest, events: &mut Events) -> Outcome {
        let inner = &self.0;
        let setup = &footing.setup;
        let epoch = footing.epoch;
        let user = &request.identity.subject;
        events.push(Level::Debug, || format!("Requesting new OBO token for user: {user}, scopes: {}", request.scopes));
        let _in_flight = InFlight::enter(&inner.counters.in_flight);
        Counters::bump(&inner.counters.exchanges);
        let config = &setup.config;
        let mut secrets = config.secrets();
        secrets.push(&request.assertion);
        let fail = |err: ExchangeError, events: &mut Events| {
            let err = Arc::new(err.redacted(&secrets));
            // The provider said when to come back: no request for this key before then.
            if let Some(wait) = err.retry_after {
                let until_ms = wall_clock_ms().saturating_add(wait.as_millis() as u64);
                inner.throttles.remember(key, until_ms, err.clone(), || inner.generations.epoch() == epoch);
                events.push(Level::Warn, || {
                    format!(
                        "Identity provider throttled OBO exchange for user: {user}, scopes: {}, for {} s",
                        request.scopes,
                        err.retry_after_secs().unwrap_or(0)
                    )
                });
            }
            Counters::bump(&inner.counters.failures);
            Err(err)
        };

        let retrying = |retries_done: u32| match config.max_retries {
            1 => format!("Transient OBO exchange failure for user: {user}, retrying once"),
            most => format!("Transient OBO exchange failure for user: {user}, retrying ({retries_done} of {most})"),
        };
        let attempt = || self.attempt(setup, request);
        match self.with_retries(config, &secrets, events, retrying, |_| true, attempt).await {
            Ok(response) => {
                let token = self.store(config, key, response, footing);
                events.push(Level::Debug, || format!("Successfully obtained and cached OBO token for user: {user}"));
                Ok(token)
            }
            Err(err) => fail(err, events),
        }
    }

    /// `attempt` until it succeeds or the retry policy gives up; `may_resend`
    /// narrows which failures are retried. `retrying` words the warning of
    /// each retry (given the retries made). The error that ends it is not
    /// redacted yet: the caller does it.
    async fn with_retries<T, A>(
        &self,
        config: &Config,
        secrets: &Secrets<'_>,
        events: &mut Events,
        retrying: impl Fn(u32) -> String,
        may_resend: impl Fn(&ExchangeError) -> bool,
        attempt: impl Fn() -> A,
    ) -> Result<T, ExchangeError>
    where
        A: Future<Output = Result<T, ExchangeError>>,
    {
        let policy = RetryPolicy {
            max_retries: config.max_retries,
            retry_delay: config.retry_delay,
            max_retry_after: config.max_retry_after,
        };
        let mut retries_done = 0;
        loop {
            let mut err = match attempt().await {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            // Nothing was sent, and the source said whether a later call may do better.
            if matches!(
                err.code.as_deref(),
                Some(crate::credentials::CLIENT_ASSERTION_UNAVAILABLE | crate::token_exchange::ACTOR_TOKEN_UNAVAILABLE)
            ) {
                return Err(err);
            }
            err.retryable = err.reason == FailureReason::ExchangeFailed && retry::is_retryable(&err);
            match policy.next(retries_done, &err) {
                Next::Retry(wait) if may_resend(&err) => {
                    retries_done += 1;
                    events.push_error(Level::Warn, || retrying(retries_done), || err.clone().redacted(secrets));
                    Counters::bump(&self.0.counters.retries);
                    tokio::time::sleep(wait).await;
                }
                Next::Retry(_) | Next::Throttle(_) | Next::GiveUp => return Err(err),
            }
        }
    }

    /// One exchange request (see [`Engine::attempt_grant`]).
    async fn attempt(&self, setup: &Setup, request: &ExchangeRequest) -> Result<TokenResponse, ExchangeError> {
        let ask = Ask::Exchange {
            assertion: &request.assertion,
            scopes: &request.scopes,
            target: request.target.as_ref(),
            claims: request.claims.as_ref(),
        };
        self.attempt_grant(setup, &ask, grant::parse_success).await
    }

    /// One request (`ask`; `parse` reads a 2xx answer); discovery first when
    /// the endpoint is not known yet, so that a transient discovery failure
    /// is retried like any other. The attempt, discovery included, ends after
    /// `timeoutMs`; a `clientAssertion` (or `actorToken`) function's time is
    /// not counted, as it has a deadline of its own.
    async fn attempt_grant<T>(
        &self,
        setup: &Setup,
        ask: &Ask<'_>,
        parse: fn(u16, &[u8]) -> Result<T, ExchangeError>,
    ) -> Result<T, ExchangeError> {
        let config = &setup.config;
        let timeout = config.timeout;
        let timed_out = || {
            let what = match setup.endpoint.get() {
                Some(endpoint) => format!("OBO token request to {}", without_credentials(endpoint)),
                None => "OpenID discovery request".to_owned(),
            };
            ExchangeError::failed(format!("{what} timed out after {} ms (ETIMEDOUT)", timeout.as_millis()))
                .with_code("ETIMEDOUT")
        };
        let mut deadline = tokio::time::Instant::now() + timeout;
        let configured = tokio::time::timeout_at(deadline, self.endpoint(setup)).await.map_err(|_| timed_out())??;
        // An exchange goes to the user's home tenant (see `routing`), and so does a session's renewal.
        let endpoint = match ask {
            Ask::Exchange { assertion, .. } => routing::route(&configured, assertion),
            Ask::Refresh { tenant, .. } => routing::route_to(&configured, *tenant),
        };
        let client_assertion = match &config.client_assertion {
            Some(source) => {
                let asked = tokio::time::Instant::now();
                let assertion = source.assertion(endpoint.as_str(), &config.client_id, timeout).await?;
                deadline += asked.elapsed();
                Some(assertion)
            }
            None => None,
        };
        let actor_token = match ask {
            Ask::Exchange { .. } => {
                let asked = tokio::time::Instant::now();
                let actor_token =
                    config.grant.actor_token(endpoint.as_str(), &config.client_id, timeout).await.map_err(|err| {
                        crate::credentials::without_client_assertion(err, client_assertion.as_deref())
                    })?;
                deadline += asked.elapsed();
                actor_token
            }
            Ask::Refresh { .. } => None,
        };
        let request_sent = self.send(setup, ask, &endpoint, client_assertion.as_deref(), actor_token.as_deref(), parse);
        tokio::time::timeout_at(deadline, request_sent).await.map_err(|_| timed_out())?
    }

    /// The token request itself, authenticated with `client_assertion` when there is one.
    async fn send<T>(
        &self,
        setup: &Setup,
        ask: &Ask<'_>,
        endpoint: &Url,
        client_assertion: Option<&str>,
        actor_token: Option<&str>,
        parse: fn(u16, &[u8]) -> Result<T, ExchangeError>,
    ) -> Result<T, ExchangeError> {
        let config = &setup.config;
        let auth = ClientAuth {
            client_id: &config.client_id,
            client_secret: config.client_secret.as_deref(),
            method: config.auth_method,
            client_assertion,
        };
        let body = match ask {
            Ask::Exchange { assertion, scopes, target, claims } => {
                let claims = Claims::merged(*claims, config.capabilities.as_ref()).map(|claims| claims.to_json());
                config.grant.form_body(assertion, scopes, *target, actor_token, &auth, claims.as_deref())
            }
            Ask::Refresh { refresh_token, scopes, .. } => {
                crate::session::refresh_form_body(refresh_token, scopes, &auth)
            }
        };
        let authorization = grant::basic_authorization(&auth);
        let answer = http::post_form(&setup.client, endpoint, authorization.as_deref(), body, config.timeout).await;
        let answer = answer.and_then(|answer| {
            if (200..300).contains(&answer.status) {
                let token = parse(answer.status, &answer.body)?;
                if let Ask::Exchange { .. } = ask {
                    config.grant.check_success(answer.status, &answer.body)?;
                }
                return Ok(token);
            }
            let mut err = grant::parse_failure(answer.status, answer.content_type.as_deref(), &answer.body);
            if matches!(answer.status, 429 | 503) {
                err.retry_after = answer.retry_after;
            }
            Err(err)
        });
        // Both are credentials that change per request: no error text may hold them.
        answer.map_err(|err| {
            let err = crate::credentials::without_client_assertion(err, client_assertion);
            crate::credentials::without_client_assertion(err, actor_token)
        })
    }

    fn store(&self, config: &Config, key: &CacheKey, response: TokenResponse, footing: &Footing) -> Token {
        let (now_ms, epoch) = (wall_clock_ms(), footing.epoch);
        let access_token = response.access_token;
        let token = CachedToken {
            begun_us: footing.begun_us,
            ..CachedToken::new(access_token.clone(), response.expires_in, now_ms, config.expiry_skew)
        };
        let expires_at_ms = token.expires_at_ms;
        let generations = &self.0.generations;
        self.0.cache.insert(*key, token, config.max_cache_entries, now_ms, || generations.epoch() == epoch);
        Token { access_token, expires_in: response.expires_in, expires_at_ms }
    }

    /// The token endpoint: configured, or discovered once per configuration.
    /// A failed discovery is not remembered.
    async fn endpoint(&self, setup: &Setup) -> Result<Url, ExchangeError> {
        let EndpointSource::Issuer(issuer) = &setup.config.endpoint else {
            return setup.endpoint.get().cloned().ok_or_else(|| ExchangeError::failed(CONFIG_UNAVAILABLE));
        };
        setup.endpoint.get_or_try_init(|| discover(&setup.client, issuer, setup.config.timeout)).await.cloned()
    }
}

/// `{issuer}/.well-known/openid-configuration` → `token_endpoint`.
async fn discover(client: &Client, issuer: &Url, timeout: Duration) -> Result<Url, ExchangeError> {
    let mut document = issuer.clone();
    let path = format!("{}/.well-known/openid-configuration", issuer.path().trim_end_matches('/'));
    document.set_path(&path);
    let failed = |why: String, mut err: Option<ExchangeError>| {
        let message = format!("{CONFIG_UNAVAILABLE}: discovery at {document} failed: {why}");
        let mut failure = ExchangeError::failed(message);
        if let Some(err) = err.take() {
            failure.code = err.code;
            failure.status = err.status;
        }
        failure.retryable = retry::is_retryable(&failure);
        failure
    };
    let answer = http::get(client, &document, timeout).await.map_err(|err| failed(err.message.clone(), Some(err)))?;
    if !(200..300).contains(&answer.status) {
        return Err(failed(
            format!("HTTP {}", answer.status),
            Some(ExchangeError::failed("").with_status(answer.status)),
        ));
    }
    let endpoint = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|document| document.get("token_endpoint")?.as_str().map(str::to_owned))
        .ok_or_else(|| failed("the document has no token_endpoint".into(), None))?;
    crate::config::parse_endpoint(&endpoint).map_err(|why| failed(format!("its token_endpoint {why}"), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A token endpoint on loopback: answers each request with the next
    /// canned response (the last one repeats), after `delay`, and counts them.
    async fn provider(
        responses: Vec<(u16, &'static str, &'static str)>,
        delay: Duration,
    ) -> (String, Arc<AtomicUsize>) {
        let (url, count, _) = gated_provider(responses, delay, None).await;
        (url, count)
    }

    /// Like [`provider`]; with a gate, each answer waits for a permit, and
    /// `received` is told of each request as it arrives.
    async fn gated_provider(
        responses: Vec<(u16, &'static str, &'static str)>,
        delay: Duration,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    ) -> (String, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
        let received = Arc::new(tokio::sync::Notify::new());
        let told = received.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                let responses = responses.clone();
                let gate = gate.clone();
                let told = told.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let mut read = 0;
                    loop {
                        let Ok(n) = socket.read(&mut buffer[read..]).await else { return };
                        if n == 0 {
                            return;
                        }
                        read += n;
                        let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                        let Some(head_end) = text.find("\r\n\r\n") else { continue };
                        let length = text[..head_end]
                            .lines()
                            .find_map(|line| {
                                line.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if read < head_end + 4 + length {
                            continue;
                        }
                        let index = seen.fetch_add(1, Ordering::SeqCst);
                        told.notify_one();
                        let (status, extra, body) = responses[index.min(responses.len() - 1)];
                        if let Some(gate) = &gate {
                            gate.acquire().await.unwrap().forget();
                        }
                        tokio::time::sleep(delay).await;
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(answer.as_bytes()).await;
                        read = 0;
                    }
                });
            }
        });
        (url, count, received)
    }

    fn engine(url: &str, extra: &str) -> Engine {
        let engine = Engine::new();
        engine
            .configure(Some(&format!(
                r#"{{"tokenEndpoint":"{url}","clientId":"app","clientSecret":"secret-value","retryDelayMs":10{extra}}}"#
            )))
            .unwrap();
        engine
    }

    fn identity(user: &str) -> Identity {
        Identity::new("no-tenant", "no-issuer", user)
    }

    fn request(user: &str, from_cache: bool) -> ExchangeRequest {
        request_for(identity(user), "assertion-value-123", from_cache)
    }

    fn request_for(identity: Identity, assertion: &str, from_cache: bool) -> ExchangeRequest {
        ExchangeRequest::new(identity, "api://s".into(), assertion.into(), from_cache, None, None, Events::Off)
    }

    fn lookup(engine: &Engine, user: &str) -> Option<Hit> {
        engine.lookup(&identity(user), "api://s", "assertion-value-123", None)
    }

    /// An exchange run to its end, with the events it streamed.
    async fn run(engine: &Engine, mut request: ExchangeRequest) -> (Outcome, Vec<Event>) {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = seen.clone();
        request.events = Events::Stream(Box::new(move |event| sink.lock().push(event)));
        let outcome = engine.exchange(request, None).unwrap().await;
        let events = std::mem::take(&mut *seen.lock());
        (outcome, events)
    }

    const TOKEN: &str = r#"{"access_token":"tok","expires_in":"1800","token_type":"Bearer"}"#;

    #[tokio::test]
    async fn a_token_is_fetched_once_then_served_from_the_cache() {
        let (url, count) = provider(vec![(200, "", TOKEN)], Duration::ZERO).await;
        let engine = engine(&url, "");
        let before = wall_clock_ms();
        let (first, events) = run(&engine, request("u", true)).await;
        let first = first.unwrap();
        assert_eq!((first.access_token.as_ref(), first.expires_in), ("tok", 1800));
        assert!((before + 1_800_000..=wall_clock_ms() + 1_800_000).contains(&first.expires_at_ms));
        let messages: Vec<_> = events.iter().map(|event| (event.level, event.message.as_str())).collect();
        assert_eq!(
            messages,
            [
                (Level::Debug, "[OboTokenService] Requesting new OBO token for user: u, scopes: api://s"),
                (Level::Debug, "[OboTokenService] Successfully obtained and cached OBO token for user: u"),
            ]
        );
        let hit = lookup(&engine, "u").unwrap();
        assert_eq!(hit.expires_in, 1800);
        assert_eq!(hit.expires_at_ms, first.expires_at_ms);
        assert_eq!(&*hit.access_token, "tok");
        let again = run(&engine, request("u", true)).await;
        assert_eq!(again.0.unwrap().expires_at_ms, first.expires_at_ms);
        assert_eq!(again.1[0].message, "[OboTokenService] Using cached token for user: u");
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let stats = engine.stats();
        assert_eq!((stats.cache_hits, stats.cache_misses, stats.exchanges, stats.cache_size), (2, 1, 1, 1));
    }

    #[tokio::test]
    async fn a_request_finds_its_cached_token_from_the_digest_it_was_made_with() {
        let (url, count) = provider(vec![(200, "", TOKEN)], Duration::ZERO).await;
        let engine = engine(&url, "");
        assert!(engine.cached(&request("u", true)).is_none());
        run(&engine, request("u", true)).await.0.unwrap();
        let hit = engine.cached(&request("u", true)).unwrap();
        assert_eq!((&*hit.access_token, hit.stamp), ("tok", lookup(&engine, "u").unwrap().stamp));
        assert!(engine.cached(&request_for(identity("u"), "another-assertion", true)).is_none());
        assert!(engine.cached(&request("v", true)).is_none());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Two reads that hit (cached and lookup), one miss counted by the exchange.
        let stats = engine.stats();
        assert_eq!((stats.cache_hits, stats.cache_misses), (2, 1));
    }

    #[tokio::test]
    async fn a_claims_challenge_skips_the_cache_and_its_token_is_stored() {
        let second = r#"{"access_token":"fresh","expires_in":"1800"}"#;
        let (url, count) = provider(vec![(200, "", TOKEN), (200, "", second)], Duration::ZERO).await;
        let engine = engine(&url, "");
        run(&engine, request("u", true)).await.0.unwrap();
        let mut challenged = request("u", true);
        challenged.claims = Some(Claims::parse(r#"{"access_token":{"nbf":{"essential":true}}}"#).unwrap());
        let (outcome, _) = run(&engine, challenged).await;
        assert_eq!(&*outcome.unwrap().access_token, "fresh");
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(&*lookup(&engine, "u").unwrap().access_token, "fresh");
    }

    struct Refusing;

    impl crate::credentials::AssertionCallback for Refusing {
        fn call(&self, _: crate::credentials::AssertionRequest) -> crate::credentials::AssertionFuture {
            Box::pin(async { Err(crate::credentials::AssertionFailure::new("vault sealed")) })
        }
    }

    #[tokio::test]
    async fn without_a_client_assertion_no_request_is_sent() {
        let (url, count) = provider(vec![(200, "", TOKEN)], Duration::ZERO).await;
        let engine = Engine::new();
        engine
            .configure_with(
                Some(&format!(r#"{{"tokenEndpoint":"{url}","clientId":"app","maxRetries":0}}"#)),
                HostFunctions { client_assertion: Some(Arc::new(Refusing)), actor_token: None },
                None,
            )
            .unwrap();
        let err = run(&engine, request("u", true)).await.0.unwrap_err();
        assert_eq!(err.message, "OBO token request not sent: the clientAssertion function failed: vault sealed");
        assert_eq!(err.code.as_deref(), Some(crate::credentials::CLIENT_ASSERTION_UNAVAILABLE));
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn without_an_actor_token_no_request_is_sent() {
        let (url, count) = provider(vec![(200, "", TOKEN)], Duration::ZERO).await;
        let engine = Engine::new();
        let options = format!(
            r#"{{"tokenEndpoint":"{url}","clientId":"app","clientSecret":"s","maxRetries":0,"grantType":"token-exchange"}}"#
        );
        engine
            .configure_with(
                Some(&options),
                HostFunctions { client_assertion: None, actor_token: Some(Arc::new(Refusing)) },
                None,
            )
            .unwrap();
        let err = run(&engine, request("u", true)).await.0.unwrap_err();
        assert_eq!(err.message, "OBO token request not sent: the actorToken function failed: vault sealed");
        assert_eq!(err.code.as_deref(), Some(crate::token_exchange::ACTOR_TOKEN_UNAVAILABLE));
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_call_s_own_audience_is_its_own_key_and_refused_by_jwt_bearer() {
        let (url, count) = provider(vec![(200, "", TOKEN)], Duration::ZERO).await;
        let target =
            |audience: &str| Some(crate::token_exchange::check_target(Some(vec![audience.into()]), None).unwrap());
        let jwt_bearer = engine(&url, "");
        let mut call = request("u", true);
        call.target = target("mcp-a");
        let Err(err) = jwt_bearer.exchange(call, None) else { panic!("jwt-bearer took an audience") };
        assert_eq!((err.reason, err.code.as_deref()), (FailureReason::InvalidOption, Some("audience")));
        let exchange = engine(&url, r#","grantType":"token-exchange","audience":"mcp-a""#);
        let mut call = request("u", true);
        call.target = target("mcp-b");
        run(&exchange, call).await.0.unwrap();
        assert!(lookup(&exchange, "u").is_none(), "the configured audience's key holds another audience's token");
        let identity = Identity::new("no-tenant", "no-issuer", "u");
        assert!(exchange.lookup(&identity, "api://s", "assertion-value-123", target("mcp-b").as_ref()).is_some());
        // The configured audience named per call is the configured key.
        run(&exchange, request("u", true)).await.0.unwrap();
        assert!(exchange.lookup(&identity, "api://s", "assertion-value-123", target("mcp-a").as_ref()).is_some());
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request_and_from_cache_false_does_not_join() {
        let (url, count) = provider(vec![(200, "", TOKEN)], Duration::from_millis(100)).await;
        let engine = engine(&url, "");
        let calls: Vec<_> = (0..20).map(|_| tokio::spawn(engine.exchange(request("u", true), None).unwrap())).collect();
        let forced = tokio::spawn(engine.exchange(request("u", false), None).unwrap());
        for call in calls {
            assert!(call.await.unwrap().is_ok());
        }
        assert!(forced.await.unwrap().is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(engine.stats().coalesced, 19);
        assert_eq!(engine.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_and_the_events_say_so() {
        let (url, count) = provider(vec![(503, "", r#"{}"#), (200, "", TOKEN)], Duration::ZERO).await;
        let engine = engine(&url, "");
        let (outcome, events) = run(&engine, request("u", true)).await;
        assert!(outcome.is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(engine.stats().retries, 1);
        let warn = events.iter().find(|event| event.level == Level::Warn).unwrap();
        assert_eq!(warn.message, "[OboTokenService] Transient OBO exchange failure for user: u, retrying once");
        assert_eq!(warn.error.as_ref().unwrap().status, Some(503));
        assert!(events.iter().all(|event| !format!("{event:?}").contains("assertion-value-123")));
    }

    #[tokio::test]
    async fn the_retry_warning_carries_the_echoed_error_redacted() {
        // A provider that echoes the request (assertion and client secret) into a retryable 503.
        let echo = r#"{"error":"temporarily_unavailable","error_description":"echo assertion=assertion-value-123&client_secret=secret-value","correlation_id":"assertion-value-123","claims":"secret-value"}"#;
        let (url, count) = provider(vec![(503, "", echo)], Duration::ZERO).await;
        let engine = engine(&url, "");
        let (outcome, events) = run(&engine, request("u", true)).await;
        let failure = outcome.unwrap_err();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        let warned = events
            .iter()
            .find(|event| event.message.ends_with("retrying once"))
            .and_then(|event| event.error.as_ref())
            .expect("the retry warning carries its error");
        assert_eq!(warned.status, Some(503));
        assert!(warned.message.starts_with("temporarily_unavailable: echo assertion="), "{}", warned.message);
        for text in events.iter().map(|event| format!("{event:?}")).chain([format!("{failure:?}")]) {
            assert!(!text.contains("assertion-value-123") && !text.contains("secret-value"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_long_retry_after_throttles_the_key_without_more_requests() {
        let (url, count) =
            provider(vec![(429, "retry-after: 60\r\n", r#"{"error":"temporarily_unavailable"}"#)], Duration::ZERO)
                .await;
        let engine = engine(&url, "");
        let first = run(&engine, request("u", true)).await.0.unwrap_err();
        assert_eq!(
            (first.status, first.retry_after_secs(), first.retryable, first.throttled),
            (Some(429), Some(60), true, false)
        );
        let second = run(&engine, request("u", true)).await.0.unwrap_err();
        assert!(second.throttled);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        engine.clear_cache();
        let _ = run(&engine, request("u", true)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_token_arriving_after_clear_cache_is_not_cached() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (url, _, received) = gated_provider(vec![(200, "", TOKEN)], Duration::ZERO, Some(gate.clone())).await;
        let engine = engine(&url, "");
        let pending = tokio::spawn(engine.exchange(request("u", true), None).unwrap());
        received.notified().await;
        engine.clear_cache();
        gate.add_permits(1);
        assert!(pending.await.unwrap().is_ok());
        assert!(lookup(&engine, "u").is_none());
    }

    #[tokio::test]
    async fn a_call_after_clear_cache_starts_its_own_exchange() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (url, count, received) = gated_provider(vec![(200, "", TOKEN)], Duration::ZERO, Some(gate.clone())).await;
        let engine = engine(&url, "");
        let before = tokio::spawn(engine.exchange(request("u", true), None).unwrap());
        received.notified().await;
        engine.clear_cache();
        let after = tokio::spawn(engine.exchange(request("u", true), None).unwrap());
        received.notified().await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(engine.stats().coalesced, 0);
        gate.add_permits(2);
        assert!(before.await.unwrap().is_ok() && after.await.unwrap().is_ok());
        // The exchange begun after the clear is the one the cache keeps.
        assert!(lookup(&engine, "u").is_some());
    }

    #[tokio::test]
    async fn identities_and_assertions_each_get_their_own_token_and_flight() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (url, count, received) = gated_provider(vec![(200, "", TOKEN)], Duration::ZERO, Some(gate.clone())).await;
        let engine = engine(&url, "");
        let calls = [
            request_for(
                Identity::new("tenant-a", "https://issuer.example.com", "shared-sub"),
                "access-token-old",
                true,
            ),
            request_for(
                Identity::new("tenant-b", "https://issuer.example.com", "shared-sub"),
                "access-token-old",
                true,
            ),
            request_for(
                Identity::new("tenant-a", "https://issuer-b.example.com", "shared-sub"),
                "access-token-old",
                true,
            ),
            request_for(
                Identity::new("tenant-a", "https://issuer.example.com", "shared-sub"),
                "access-token-new",
                true,
            ),
        ];
        let pending: Vec<_> =
            calls.into_iter().map(|call| tokio::spawn(engine.exchange(call, None).unwrap())).collect();
        while count.load(Ordering::SeqCst) < 4 {
            received.notified().await;
        }
        assert_eq!(engine.stats().coalesced, 0);
        gate.add_permits(4);
        for call in pending {
            assert!(call.await.unwrap().is_ok());
        }
        let old = Identity::new("tenant-a", "https://issuer.example.com", "shared-sub");
        assert!(engine.lookup(&old, "api://s", "access-token-old", None).is_some());
        assert!(engine.lookup(&old, "api://s", "access-token-new", None).is_some());
        assert!(engine.lookup(&old, "api://s", "access-token-other", None).is_none());
        assert_eq!(engine.stats().cache_size, 4);
    }

    #[test]
    fn a_configuration_and_its_epoch_are_read_together() {
        let engine = engine("http://127.0.0.1:9/token", "");
        let configs = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"];
        let configure = |url: &str| {
            engine
                .configure(Some(&format!(r#"{{"tokenEndpoint":"{url}","clientId":"app","clientSecret":"s"}}"#)))
                .unwrap()
        };
        configure(configs[0]);
        let writer = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for round in 0..2000 {
                    let url = configs[round % 2];
                    engine
                        .configure(Some(&format!(r#"{{"tokenEndpoint":"{url}","clientId":"app","clientSecret":"s"}}"#)))
                        .unwrap();
                }
            })
        };
        // Each configure() moves the epoch once: a footing whose epoch is
        // newer than its setup would let the old client's token in.
        let mut seen = std::collections::HashMap::new();
        while !writer.is_finished() {
            let footing = engine.footing(None).unwrap();
            let endpoint = footing.setup.endpoint.get().unwrap().to_string();
            if let Some(previous) = seen.insert(footing.epoch, endpoint.clone()) {
                assert_eq!(previous, endpoint, "epoch {} seen with two configurations", footing.epoch);
            }
        }
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn one_attempt_with_discovery_ends_within_its_timeout() {
        // Discovery and the token request each take 60 % of the budget.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let document = format!(r#"{{"token_endpoint":"{base}/token"}}"#);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let document = document.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 8192];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(600)).await;
                        let body = if buffer.starts_with(b"GET") { document.as_str() } else { TOKEN };
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        let _ = socket.write_all(answer.as_bytes()).await;
                    }
                });
            }
        });
        let engine = Engine::new();
        engine
            .configure(Some(&format!(
                r#"{{"issuer":"{base}","clientId":"a","clientSecret":"b","timeoutMs":1000,"maxRetries":0}}"#
            )))
            .unwrap();
        let err = run(&engine, request("u", true)).await.0.unwrap_err();
        assert_eq!(err.code.as_deref(), Some("ETIMEDOUT"), "{}", err.message);
        assert!(err.message.contains("timed out after 1000 ms"), "{}", err.message);
    }

    #[tokio::test]
    async fn errors_never_carry_the_assertion_or_the_secret() {
        let body =
            r#"{"error":"invalid_grant","error_description":"AADSTS50013: assertion-value-123 with secret-value"}"#;
        let (url, _) = provider(vec![(400, "", body)], Duration::ZERO).await;
        let engine = engine(&url, "");
        let err = run(&engine, request("u", true)).await.0.unwrap_err();
        let text = format!("{err:?}");
        assert!(!text.contains("assertion-value-123") && !text.contains("secret-value"), "{text}");
    }

    #[test]
    fn a_panicking_exchange_still_settles_with_an_error() {
        let (sender, receiver) = std::sync::mpsc::channel();
        Engine::spawn(async { panic!("boom") }, move |exchanged| sender.send(exchanged).unwrap());
        let exchanged = receiver.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(exchanged.unwrap_err().message.contains("internal error"));
    }

    #[tokio::test]
    async fn the_token_endpoint_in_use_is_known_once_discovered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}/tenant/v2.0", listener.local_addr().unwrap());
        let token_endpoint = format!("http://{}/tenant/oauth2/v2.0/token", listener.local_addr().unwrap());
        let document = format!(r#"{{"token_endpoint":"{token_endpoint}"}}"#);
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{document}", document.len());
            let _ = socket.write_all(answer.as_bytes()).await;
        });
        let engine = Engine::new();
        engine.configure(Some(&format!(r#"{{"issuer":"{issuer}","clientId":"a","clientSecret":"b"}}"#))).unwrap();
        assert_eq!(engine.token_endpoint(), None);
        let _ = run(&engine, request("u", true)).await;
        assert_eq!(engine.token_endpoint().as_deref(), Some(token_endpoint.as_str()));
        engine
            .configure(Some(
                r#"{"tokenEndpoint":"https://login.example.com/t/token","clientId":"a","clientSecret":"b"}"#,
            ))
            .unwrap();
        assert_eq!(engine.token_endpoint().as_deref(), Some("https://login.example.com/t/token"));
        engine.configure(None).unwrap();
        assert_eq!(engine.token_endpoint(), None);
    }

    #[tokio::test]
    async fn a_closed_engine_refuses_every_call_and_keeps_nothing() {
        let (url, count) = provider(vec![(200, "", TOKEN)], Duration::ZERO).await;
        let engine = engine(&url, "");
        let other = self::engine(&url, "");
        run(&engine, request("u", true)).await.0.unwrap();
        run(&other, request("u", true)).await.0.unwrap();
        engine.close();
        assert!(engine.is_closed() && !other.is_closed());
        assert!(lookup(&engine, "u").is_none());
        assert_eq!(engine.token_endpoint(), None);
        let Err(err) = engine.exchange(request("u", true), None) else { panic!("a closed engine exchanged") };
        assert_eq!((err.message.as_str(), err.code.as_deref()), (CLIENT_CLOSED, Some(CLIENT_CLOSED_CODE)));
        assert_eq!(
            engine
                .configure(Some(r#"{"tokenEndpoint":"https://x/t","clientId":"a","clientSecret":"b"}"#))
                .unwrap_err()
                .message,
            CLIENT_CLOSED
        );
        // Another engine of the process keeps its token.
        assert!(lookup(&other, "u").is_some());
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn without_configuration_the_exchange_is_refused_at_once() {
        let engine = Engine::new();
        // The caller's view of an empty environment: the test must not depend on the real one.
        let no_environment = |_: &str| None;
        let Err(err) = engine.exchange(request("u", true), Some(&no_environment)) else { panic!("no configuration") };
        assert_eq!(err.message, CONFIG_UNAVAILABLE);
        assert_eq!(err.reason, FailureReason::ConfigUnavailable);
    }
}
