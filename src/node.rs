//! The napi layer: converts arguments and results, nothing else. Results go
//! out as plain data; `index.js` turns failures into `Error` objects, so they
//! belong to the caller's realm.
//!
//! Every function that acts on a client takes its handle (`External<Client>`)
//! first: `defaultClient()` is the process's engine, which the module's
//! top-level functions use; `createClient()` makes an independent one for
//! `createOboClient()`. Handles are cheap clones of the engine, so each
//! JavaScript thread holds its own handle to the same default engine.
//!
//! Finished exchanges reach their JavaScript thread through one threadsafe
//! function per facade instance, made once (a promise per call would create
//! and tear down a threadsafe function per call), and completions that finish
//! together are delivered in one wake-up of the event loop.

use std::ptr;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::sys;
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use parking_lot::Mutex;

use crate::cache::Hit;
use crate::claims::Claims;
use crate::config::{EnvLookup, HostFunctions};
use crate::credentials::{AssertionCallback, AssertionFailure, AssertionFuture, AssertionRequest};
use crate::engine::{BeginSession, Engine, ExchangeRequest, SessionAnswer, SessionOutcome};
use crate::error::ExchangeError;
use crate::events::{Event, Events};
use crate::generations::{Generations, Mirror};
use crate::key::Identity;
use crate::lent_string::{self, TokenString};
use crate::outcome::Outcome;
use crate::session::{HostFuture, HostSessionStore, SessionToken};
use crate::token_exchange::check_target;

/// A client as JavaScript holds it: an opaque handle to an engine.
pub struct Client(pub(crate) Engine);

/// The process's engine: the module's top-level functions, in every thread.
#[napi(catch_unwind)]
pub fn default_client() -> External<Client> {
    External::new(Client(Engine::global().clone()))
}

/// An engine of its own (configuration, cache, flights, throttles, counters,
/// generations), reading the environment until `configure` is called on it.
#[napi(catch_unwind)]
pub fn create_client() -> External<Client> {
    External::new(Client(Engine::new()))
}

/// Closes a client: its cache and configuration are dropped and every later
/// call is refused. Exchanges under way still answer their callers.
#[napi(catch_unwind)]
pub fn close_client(client: &External<Client>) {
    client.0.close();
}

#[napi(object)]
pub struct ConfigFailure {
    pub option: String,
    pub message: String,
}

/// What the facade's wrapper of a `clientAssertion` function resolves to:
/// it never rejects, so no JavaScript error object has to leave its thread.
#[napi(object)]
pub struct AssertionAnswer {
    pub assertion: Option<String>,
    pub error: Option<String>,
    /// The boolean `retryable` of the function's error, when it has one.
    pub retryable: Option<bool>,
}

type AssertionArgs = FnArgs<(String, String)>;

/// Weak: a configured function must not keep its thread's event loop alive.
type AssertionFn = ThreadsafeFunction<AssertionRequest, Promise<AssertionAnswer>, AssertionArgs, Status, false, true>;

/// The host's `clientAssertion` function, called on the thread that
/// configured it, when an exchange is about to send a request.
struct HostAssertion(Arc<AssertionFn>);

const ASSERTION_THREAD_GONE: &str =
    "its JavaScript thread (the one that called configure()) has ended; call configure() again from a running thread";

impl AssertionCallback for HostAssertion {
    fn call(&self, request: AssertionRequest) -> AssertionFuture {
        let function = self.0.clone();
        Box::pin(async move {
            if function.aborted() {
                return Err(AssertionFailure::new(ASSERTION_THREAD_GONE));
            }
            // A call queued when the thread ends is dropped unanswered: that is an error here, not a wait.
            let gone = |_| AssertionFailure::new(ASSERTION_THREAD_GONE);
            let answer = function.call_async_catch(request).await.map_err(gone)?;
            let answer = answer.await.map_err(gone)?;
            match (answer.assertion, answer.error) {
                (Some(assertion), None) => Ok(Arc::from(assertion)),
                (_, Some(message)) => Err(AssertionFailure { message, retryable: answer.retryable.unwrap_or(false) }),
                (None, None) => Err(AssertionFailure::new("it gave no assertion")),
            }
        })
    }
}

/// What the facade's wrapper of a `sessionStore` resolves to: the value read
/// (for `get`), or why the host's function failed. It never rejects.
#[napi(object)]
pub struct StoreAnswer {
    pub value: Option<String>,
    pub error: Option<String>,
}

/// `(operation, id, value, ttlMs)`: `get`/`delete` pass no value or TTL.
type StoreArgs = FnArgs<(String, String, Option<String>, Option<f64>)>;

struct StoreCall {
    operation: &'static str,
    id: String,
    value: Option<String>,
    ttl_ms: Option<u64>,
}

/// Weak, like the `clientAssertion` function: a store must not keep its thread alive.
type StoreFn = ThreadsafeFunction<StoreCall, Promise<StoreAnswer>, StoreArgs, Status, false, true>;

/// The host's `sessionStore`, called on the thread that configured it.
struct HostStoreBridge(Arc<StoreFn>);

const STORE_THREAD_GONE: &str =
    "its JavaScript thread (the one that called configure()) has ended; call configure() again from a running thread";

impl HostStoreBridge {
    fn call(&self, call: StoreCall) -> HostFuture<Option<String>> {
        let function = self.0.clone();
        Box::pin(async move {
            if function.aborted() {
                return Err(STORE_THREAD_GONE.to_owned());
            }
            let answer = function.call_async_catch(call).await.map_err(|_| STORE_THREAD_GONE.to_owned())?;
            // The facade's wrapper never rejects: a failure here is an answer that could not be read.
            let answer = answer.await.map_err(|_| "its answer could not be read".to_owned())?;
            match answer.error {
                Some(error) => Err(error),
                None => Ok(answer.value),
            }
        })
    }
}

impl HostSessionStore for HostStoreBridge {
    fn get(&self, id: String) -> HostFuture<Option<String>> {
        self.call(StoreCall { operation: "get", id, value: None, ttl_ms: None })
    }

    fn set(&self, id: String, value: String, ttl_ms: u64) -> HostFuture<()> {
        let call = self.call(StoreCall { operation: "set", id, value: Some(value), ttl_ms: Some(ttl_ms) });
        Box::pin(async move { call.await.map(|_| ()) })
    }

    fn delete(&self, id: String) -> HostFuture<()> {
        let call = self.call(StoreCall { operation: "delete", id, value: None, ttl_ms: None });
        Box::pin(async move { call.await.map(|_| ()) })
    }
}

type HostFunction<'f> = Function<'f, AssertionArgs, Promise<AssertionAnswer>>;

/// A host function (the facade's wrapper of it) as the core calls it.
fn host_callback(function: Option<HostFunction<'_>>) -> Result<Option<Arc<dyn AssertionCallback>>> {
    let Some(function) = function else { return Ok(None) };
    let function = function
        .build_threadsafe_function::<AssertionRequest>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(|context: ThreadsafeCallContext<AssertionRequest>| {
            Ok(FnArgs::from((context.value.client_id, context.value.token_endpoint)))
        })?;
    Ok(Some(Arc::new(HostAssertion(Arc::new(function))) as Arc<dyn AssertionCallback>))
}

/// Replaces the configuration; `null` returns to the environment. Returns
/// what is wrong with the options, or nothing. `client_assertion` and
/// `actor_token` are the facade's wrappers of the `clientAssertion` and
/// `actorToken` functions, when they were given.
#[napi(catch_unwind)]
pub fn configure(
    client: &External<Client>,
    options_json: Option<String>,
    client_assertion: Option<HostFunction<'_>>,
    actor_token: Option<HostFunction<'_>>,
    session_store: Option<Function<'_, StoreArgs, Promise<StoreAnswer>>>,
) -> Result<Option<ConfigFailure>> {
    let functions =
        HostFunctions { client_assertion: host_callback(client_assertion)?, actor_token: host_callback(actor_token)? };
    let session_store = match session_store {
        None => None,
        Some(function) => {
            let function = function
                .build_threadsafe_function::<StoreCall>()
                .weak::<true>()
                .callee_handled::<false>()
                .build_callback(|context: ThreadsafeCallContext<StoreCall>| {
                let StoreCall { operation, id, value, ttl_ms } = context.value;
                Ok(FnArgs::from((operation.to_owned(), id, value, ttl_ms.map(|ttl| ttl as f64))))
            })?;
            Some(Arc::new(HostStoreBridge(Arc::new(function))) as Arc<dyn HostSessionStore>)
        }
    };
    Ok(client
        .0
        .configure_with(options_json.as_deref(), functions, session_store)
        .err()
        .map(|err| ConfigFailure { option: err.option, message: err.message }))
}

/// Who an assertion says it is for (`tid`, `iss`, `oid` or else `sub`), read
/// without verification, for keying only; `null` for an opaque assertion.
#[napi(object)]
pub struct AssertionIdentity {
    pub tenant: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
}

#[napi(catch_unwind)]
pub fn assertion_identity(assertion: String) -> Option<AssertionIdentity> {
    crate::routing::assertion_identity(&assertion).map(|identity| AssertionIdentity {
        tenant: identity.tenant,
        issuer: identity.issuer,
        subject: identity.subject,
    })
}

#[napi(catch_unwind)]
pub fn clear_cache(client: &External<Client>) {
    client.0.clear_cache();
}

/// The token endpoint in use: configured, or discovered; `null` before discovery.
#[napi(catch_unwind)]
pub fn token_endpoint(client: &External<Client>) -> Option<String> {
    client.0.token_endpoint()
}

#[napi(object)]
pub struct NativeStats {
    pub cache_hits: f64,
    pub cache_misses: f64,
    pub coalesced: f64,
    pub exchanges: f64,
    pub retries: f64,
    pub failures: f64,
    pub throttled: f64,
    pub cache_size: f64,
    pub in_flight: f64,
    pub redis_hits: f64,
    pub redis_misses: f64,
    pub redis_errors: f64,
    pub lock_waits: f64,
    pub sessions: f64,
    pub session_renewals: f64,
    pub session_failures: f64,
}

/// Counters; `memo_hits` and `joins` are the calling thread's memo hits and
/// joins not yet reported.
#[napi(catch_unwind)]
pub fn stats(client: &External<Client>, memo_hits: u32, joins: u32) -> NativeStats {
    let engine = &client.0;
    engine.add_cache_hits(memo_hits.into());
    engine.add_joins(joins.into());
    let stats = engine.stats();
    NativeStats {
        cache_hits: stats.cache_hits as f64,
        cache_misses: stats.cache_misses as f64,
        coalesced: stats.coalesced as f64,
        exchanges: stats.exchanges as f64,
        retries: stats.retries as f64,
        failures: stats.failures as f64,
        throttled: stats.throttled as f64,
        cache_size: stats.cache_size as f64,
        in_flight: stats.in_flight as f64,
        redis_hits: stats.redis_hits as f64,
        redis_misses: stats.redis_misses as f64,
        redis_errors: stats.redis_errors as f64,
        lock_waits: stats.lock_waits as f64,
        sessions: stats.sessions as f64,
        session_renewals: stats.session_renewals as f64,
        session_failures: stats.session_failures as f64,
    }
}

#[napi(catch_unwind)]
pub fn add_cache_hits(client: &External<Client>, hits: u32) {
    client.0.add_cache_hits(hits.into());
}

/// Calls the calling thread joined to its own exchanges under way, not yet reported.
#[napi(catch_unwind)]
pub fn add_joins(client: &External<Client>, joins: u32) {
    client.0.add_joins(joins.into());
}

#[napi(object, object_from_js = false)]
pub struct LookupHit {
    /// Over the cache's buffer where the runtime allows (see `lent_string`).
    #[napi(ts_type = "string")]
    pub access_token: TokenString,
    pub expires_in: u32,
    pub granted: u32,
    /// Wall clock, ms since the Unix epoch.
    pub serve_until_ms: f64,
    pub expires_at_ms: f64,
    pub epoch: u32,
    pub slot: u32,
    pub generation: u32,
}

/// A cached token, synchronously, or nothing. The identity is normalised by
/// the facade; `audiences`/`resources` are a call's own (token exchange).
/// The facade itself asks `exchange`, which answers hits too; this is the
/// read alone, which the bench times against it (the miss path before issue
/// 19 called this, then `exchange`).
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)] // positional arguments are the cheapest to pass across napi
pub fn lookup(
    client: &External<Client>,
    tenant: String,
    issuer: String,
    subject: String,
    scopes: String,
    assertion: String,
    audiences: Option<Vec<String>>,
    resources: Option<Vec<String>>,
) -> Option<LookupHit> {
    let target = match (audiences, resources) {
        (None, None) => None,
        (audiences, resources) => Some(check_target(audiences, resources).ok()?),
    };
    client.0.lookup(&Identity { tenant, issuer, subject }, &scopes, &assertion, target.as_ref()).map(lookup_hit)
}

fn lookup_hit(hit: Hit) -> LookupHit {
    LookupHit {
        access_token: TokenString(hit.access_token),
        expires_in: hit.expires_in as u32,
        granted: hit.granted_secs as u32,
        serve_until_ms: hit.serve_until_ms as f64,
        expires_at_ms: hit.expires_at_ms as f64,
        epoch: hit.stamp.epoch,
        slot: hit.stamp.slot,
        generation: hit.stamp.generation,
    }
}

#[napi(object, object_from_js = false)]
pub struct Failure {
    pub message: String,
    pub reason: String,
    pub retryable: bool,
    pub status: Option<u32>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub error_codes: Option<Vec<i64>>,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub timestamp: Option<String>,
    pub suberror: Option<String>,
    pub claims: Option<String>,
    pub retry_after: Option<u32>,
    pub throttled: bool,
}

#[napi(object, object_from_js = false)]
pub struct LogEvent {
    pub level: String,
    pub message: String,
    /// The error the event is about, logged as the second argument.
    pub failure: Option<Failure>,
}

#[napi(object, object_from_js = false)]
pub struct ExchangeOutcome {
    #[napi(ts_type = "string")]
    pub access_token: Option<TokenString>,
    pub expires_in: Option<u32>,
    pub expires_at_ms: Option<f64>,
    pub failure: Option<Failure>,
    /// `beginOboSession`: the session's key.
    pub session_key: Option<String>,
    /// `endOboSession`: whether there was a session.
    pub existed: Option<bool>,
}

fn failure(err: &ExchangeError) -> Failure {
    let oauth = err.oauth.as_deref().cloned().unwrap_or_default();
    Failure {
        message: err.message.clone(),
        reason: err.reason.as_str().to_owned(),
        retryable: err.retryable,
        status: err.status.map(u32::from),
        code: err.code.clone(),
        error: err.oauth.as_ref().map(|oauth| oauth.error.clone()),
        error_description: oauth.error_description,
        error_codes: oauth.error_codes,
        correlation_id: oauth.correlation_id,
        trace_id: oauth.trace_id,
        timestamp: oauth.timestamp,
        suberror: oauth.suberror,
        claims: oauth.claims,
        retry_after: err.retry_after_secs().map(|secs| secs.min(u32::MAX as u64) as u32),
        throttled: err.throttled,
    }
}

fn outcome(result: Outcome) -> ExchangeOutcome {
    match result {
        Ok(token) => ExchangeOutcome {
            access_token: Some(TokenString(token.access_token)),
            expires_in: Some(token.expires_in as u32),
            expires_at_ms: Some(token.expires_at_ms as f64),
            failure: None,
            session_key: None,
            existed: None,
        },
        Err(err) => failed(&err),
    }
}

fn failed(err: &ExchangeError) -> ExchangeOutcome {
    ExchangeOutcome {
        access_token: None,
        expires_in: None,
        expires_at_ms: None,
        failure: Some(failure(err)),
        session_key: None,
        existed: None,
    }
}

fn session_outcome(result: SessionOutcome) -> ExchangeOutcome {
    let token = |token: SessionToken, session_key: Option<String>| ExchangeOutcome {
        access_token: Some(TokenString(Arc::from(token.access_token))),
        expires_in: Some(token.expires_in.min(u32::MAX as u64) as u32),
        expires_at_ms: Some(token.expires_at_ms as f64),
        failure: None,
        session_key,
        existed: None,
    };
    match result {
        Ok(SessionAnswer::Begun(begun)) => token(begun.token, Some(begun.session_key)),
        Ok(SessionAnswer::Token(served)) => token(served, None),
        Ok(SessionAnswer::Ended(existed)) => ExchangeOutcome {
            access_token: None,
            expires_in: None,
            expires_at_ms: None,
            failure: None,
            session_key: None,
            existed: Some(existed),
        },
        Err(err) => failed(&err),
    }
}

/// Where, in the array of `generations_view`, a 1 says that the environment
/// must be sent with the next exchange.
#[napi]
pub const ENV_SLOT: u32 = crate::generations::ENV_SLOT as u32;

/// LibreChat's variables as the calling thread's `process.env` has them.
#[napi(object)]
pub struct OpenIdEnv {
    pub openid_issuer: Option<String>,
    pub openid_client_id: Option<String>,
    pub openid_client_secret: Option<String>,
    pub openid_token_endpoint_auth_method: Option<String>,
    pub proxy: Option<String>,
    pub azure_federated_token_file: Option<String>,
    /// The shared Redis tier's (`redis_tier::RedisOptions::from_env`).
    pub use_redis: Option<String>,
    pub redis_uri: Option<String>,
    pub use_redis_cluster: Option<String>,
    pub redis_key_prefix: Option<String>,
    /// The name of the variable that holds the prefix (LibreChat's indirection)…
    pub redis_key_prefix_var: Option<String>,
    /// …and that variable's value, read by the facade, which alone sees `process.env`.
    pub redis_key_prefix_from_var: Option<String>,
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    pub redis_ca: Option<String>,
    pub creds_key: Option<String>,
    /// Token exchange (`token_exchange::Grant::from_env`).
    pub obo_grant_type: Option<String>,
    pub obo_audience: Option<String>,
    pub obo_resource: Option<String>,
    pub obo_subject_token_type: Option<String>,
    pub obo_requested_token_type: Option<String>,
}

impl OpenIdEnv {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "OPENID_ISSUER" => self.openid_issuer.clone(),
            "OPENID_CLIENT_ID" => self.openid_client_id.clone(),
            "OPENID_CLIENT_SECRET" => self.openid_client_secret.clone(),
            "OPENID_TOKEN_ENDPOINT_AUTH_METHOD" => self.openid_token_endpoint_auth_method.clone(),
            "PROXY" => self.proxy.clone(),
            crate::credentials::FEDERATED_TOKEN_FILE_ENV => self.azure_federated_token_file.clone(),
            "USE_REDIS" => self.use_redis.clone(),
            "REDIS_URI" => self.redis_uri.clone(),
            "USE_REDIS_CLUSTER" => self.use_redis_cluster.clone(),
            "REDIS_KEY_PREFIX" => self.redis_key_prefix.clone(),
            "REDIS_USERNAME" => self.redis_username.clone(),
            "REDIS_PASSWORD" => self.redis_password.clone(),
            "REDIS_CA" => self.redis_ca.clone(),
            "CREDS_KEY" => self.creds_key.clone(),
            "OBO_GRANT_TYPE" => self.obo_grant_type.clone(),
            "OBO_AUDIENCE" => self.obo_audience.clone(),
            "OBO_RESOURCE" => self.obo_resource.clone(),
            "OBO_SUBJECT_TOKEN_TYPE" => self.obo_subject_token_type.clone(),
            "OBO_REQUESTED_TOKEN_TYPE" => self.obo_requested_token_type.clone(),
            "REDIS_KEY_PREFIX_VAR" => self.redis_key_prefix_var.clone(),
            named if self.redis_key_prefix_var.as_deref() == Some(named) => self.redis_key_prefix_from_var.clone(),
            _ => None,
        }
    }
}

/// News of an exchange on its way to the thread that asked for it: a log
/// event as it happens, then the outcome.
pub enum Completion {
    Log { id: u32, event: Event },
    Done { id: u32, outcome: Outcome },
    Session { id: u32, outcome: SessionOutcome },
}

/// `(id, outcome, event)`: exactly one of the last two is set.
type CompletionArgs = FnArgs<(u32, Option<ExchangeOutcome>, Option<LogEvent>)>;

/// Weak: it keeps the event loop alive only while `hold_loop(true)` says so.
type CompletionFn = ThreadsafeFunction<Completion, (), CompletionArgs, Status, false, true>;

/// A JavaScript thread's channel for the news of its exchanges; JavaScript
/// holds it as an opaque handle and passes it back with each call.
pub struct CompletionChannel(Arc<Mutex<CompletionFn>>);

/// Makes a channel through which `callback(id, outcome, event)` hears of the
/// exchanges started with it: their log events as they happen, then their outcome.
#[napi(catch_unwind)]
pub fn on_completion(callback: Function<'_, CompletionArgs, ()>) -> Result<External<CompletionChannel>> {
    let completions =
        callback.build_threadsafe_function::<Completion>().weak::<true>().callee_handled::<false>().build_callback(
            |context: ThreadsafeCallContext<Completion>| {
                Ok(FnArgs::from(match context.value {
                    Completion::Done { id, outcome: result } => (id, Some(outcome(result)), None),
                    Completion::Session { id, outcome: result } => (id, Some(session_outcome(result)), None),
                    Completion::Log { id, event } => (
                        id,
                        None,
                        Some(LogEvent {
                            level: event.level.as_str().to_owned(),
                            message: event.message,
                            failure: event.error.as_deref().map(failure),
                        }),
                    ),
                }))
            },
        )?;
    Ok(External::new(CompletionChannel(Arc::new(Mutex::new(completions)))))
}

/// Sends news of an exchange to its thread. Fails only when the thread is
/// gone (a terminated worker): nobody is waiting then.
fn report(completions: &Mutex<CompletionFn>, news: Completion) {
    completions.lock().call(news, ThreadsafeFunctionCallMode::NonBlocking);
}

/// Keeps the event loop alive (`true`) while the channel's thread has exchanges under way.
#[napi(catch_unwind)]
#[allow(deprecated)] // `refer`/`unref` are napi_ref/unref_threadsafe_function, which is what is meant here
pub fn hold_loop(env: &Env, channel: &External<CompletionChannel>, hold: bool) -> Result<()> {
    let mut completions = channel.0.lock();
    if hold {
        completions.refer(env)
    } else {
        completions.unref(env)
    }
}

/// Starts an exchange that reports through `channel` with `id`: the one call
/// into the addon that a miss of the memo makes. The assertion is converted
/// and hashed once: a token the cache holds is answered at once (a
/// `LookupHit`, for the memo), and so is a call that cannot start (no
/// configuration, a closed client, a malformed claims challenge or target:
/// an `ExchangeOutcome` with its failure); otherwise the exchange starts with
/// the assertion's digest already made, and this returns `null`.
#[napi(catch_unwind, ts_return_type = "LookupHit | ExchangeOutcome | null")]
#[allow(clippy::too_many_arguments)] // positional arguments are the cheapest to pass across napi; this is called on every miss
pub fn exchange(
    client: &External<Client>,
    channel: &External<CompletionChannel>,
    id: u32,
    tenant: String,
    issuer: String,
    subject: String,
    scopes: String,
    assertion: String,
    from_cache: bool,
    openid_env: Option<OpenIdEnv>,
    log: bool,
    claims: Option<String>,
    audiences: Option<Vec<String>>,
    resources: Option<Vec<String>>,
) -> Result<Option<Either<LookupHit, ExchangeOutcome>>> {
    let claims = match claims.as_deref().map(Claims::parse).transpose() {
        Ok(claims) => claims,
        Err(err) => return Ok(Some(Either::B(invalid_argument(INVALID_CLAIMS, None, err.message())))),
    };
    let target = match (audiences, resources) {
        (None, None) => None,
        (audiences, resources) => match check_target(audiences, resources) {
            Ok(target) => Some(target),
            Err(err) => return Ok(Some(Either::B(invalid_argument(INVALID_OPTION, Some(err.option), &err.message)))),
        },
    };
    let completions = channel.0.clone();
    let events = if log {
        let completions = completions.clone();
        Events::Stream(Box::new(move |event| report(&completions, Completion::Log { id, event })))
    } else {
        Events::Off
    };
    let identity = Identity { tenant, issuer, subject };
    let request = ExchangeRequest::new(identity, scopes, assertion, from_cache, claims, target, events);
    if request.reads_cache() {
        if let Some(hit) = client.0.cached(&request) {
            return Ok(Some(Either::A(lookup_hit(hit))));
        }
    }
    let from_env = |name: &str| openid_env.as_ref().and_then(|env| env.var(name));
    let env: Option<EnvLookup<'_>> = openid_env.is_some().then_some(&from_env);
    match client.0.exchange(request, env) {
        Ok(exchange) => {
            Engine::spawn(exchange, move |outcome| report(&completions, Completion::Done { id, outcome }));
            Ok(None)
        }
        Err(err) => Ok(Some(Either::B(outcome(Err(err))))),
    }
}

/// Log events of a call, through its thread's channel, when it has a logger.
fn call_events(completions: &Arc<Mutex<CompletionFn>>, id: u32, log: bool) -> Events {
    if !log {
        return Events::Off;
    }
    let completions = completions.clone();
    Events::Stream(Box::new(move |event| report(&completions, Completion::Log { id, event })))
}

/// Runs a session call that could start, reporting through `channel` with `id`;
/// one that could not start answers at once.
fn start_session<F>(
    channel: &External<CompletionChannel>,
    id: u32,
    started: std::result::Result<F, Arc<ExchangeError>>,
) -> Option<ExchangeOutcome>
where
    F: std::future::Future<Output = SessionOutcome> + Send + 'static,
{
    match started {
        Ok(call) => {
            let completions = channel.0.clone();
            Engine::spawn_session(call, move |outcome| report(&completions, Completion::Session { id, outcome }));
            None
        }
        Err(err) => Some(failed(&err)),
    }
}

/// Starts `beginOboSession`: the exchange with `offline_access`, then the
/// session. The identity is normalised by the facade.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn begin_session(
    client: &External<Client>,
    channel: &External<CompletionChannel>,
    id: u32,
    tenant: String,
    issuer: String,
    subject: String,
    scopes: String,
    assertion: String,
    session_key: Option<String>,
    openid_env: Option<OpenIdEnv>,
    log: bool,
    audiences: Option<Vec<String>>,
    resources: Option<Vec<String>>,
) -> Option<ExchangeOutcome> {
    let target = match (audiences, resources) {
        (None, None) => None,
        (audiences, resources) => match check_target(audiences, resources) {
            Ok(target) => Some(target),
            Err(err) => return Some(invalid_argument(INVALID_OPTION, Some(err.option), &err.message)),
        },
    };
    let request = BeginSession {
        identity: Identity { tenant, issuer, subject },
        scopes,
        assertion,
        session_key,
        target,
        events: call_events(&channel.0, id, log),
    };
    let from_env = |name: &str| openid_env.as_ref().and_then(|env| env.var(name));
    let env: Option<EnvLookup<'_>> = openid_env.is_some().then_some(&from_env);
    start_session(channel, id, client.0.begin_session(request, env))
}

/// Starts `acquireSessionToken`.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)] // positional arguments, as `exchange` takes them
pub fn acquire_session(
    client: &External<Client>,
    channel: &External<CompletionChannel>,
    id: u32,
    session_key: String,
    scopes: String,
    force: bool,
    openid_env: Option<OpenIdEnv>,
    log: bool,
) -> Option<ExchangeOutcome> {
    let events = call_events(&channel.0, id, log);
    let from_env = |name: &str| openid_env.as_ref().and_then(|env| env.var(name));
    let env: Option<EnvLookup<'_>> = openid_env.is_some().then_some(&from_env);
    start_session(channel, id, client.0.acquire_session(session_key, scopes, force, events, env))
}

/// Starts `endOboSession`.
#[napi(catch_unwind)]
pub fn end_session(
    client: &External<Client>,
    channel: &External<CompletionChannel>,
    id: u32,
    session_key: String,
    openid_env: Option<OpenIdEnv>,
) -> Option<ExchangeOutcome> {
    let from_env = |name: &str| openid_env.as_ref().and_then(|env| env.var(name));
    let env: Option<EnvLookup<'_>> = openid_env.is_some().then_some(&from_env);
    start_session(channel, id, client.0.end_session(session_key, env))
}

/// The reason the facade turns into a `TypeError` naming `claims`.
const INVALID_CLAIMS: &str = "invalid_claims";
/// The reason the facade turns into a `TypeError` naming the option in `code`.
const INVALID_OPTION: &str = "invalid_option";

fn invalid_argument(reason: &str, option: Option<&str>, message: &str) -> ExchangeOutcome {
    ExchangeOutcome {
        access_token: None,
        expires_in: None,
        expires_at_ms: None,
        failure: Some(Failure {
            message: message.to_owned(),
            reason: reason.to_owned(),
            retryable: false,
            status: None,
            code: option.map(str::to_owned),
            error: None,
            error_description: None,
            error_codes: None,
            correlation_id: None,
            trace_id: None,
            timestamp: None,
            suberror: None,
            claims: None,
            retry_after: None,
            throttled: false,
        }),
        session_key: None,
        existed: None,
    }
}

/// What an external `ArrayBuffer` over a mirror keeps alive until it is collected.
struct MirrorHold {
    generations: Arc<Generations>,
    mirror: Arc<Mirror>,
}

unsafe extern "C" fn release_mirror(_env: sys::napi_env, _data: *mut std::ffi::c_void, hint: *mut std::ffi::c_void) {
    let hold = unsafe { Box::from_raw(hint.cast::<MirrorHold>()) };
    hold.generations.release(&hold.mirror);
}

/// This thread's view of the cache's generation counters (an `ArrayBuffer`
/// over memory Rust keeps current), or `null` where the runtime does not
/// allow external buffers; the memo is then off.
#[napi(catch_unwind)]
pub fn generations_view<'env>(env: &'env Env, client: &External<Client>) -> Result<Option<Unknown<'env>>> {
    let generations = client.0.generations().clone();
    let mirror = generations.mirror();
    let (data, length) = mirror.as_ptr_and_len();
    let hint = Box::into_raw(Box::new(MirrorHold { generations, mirror }));
    let mut value = ptr::null_mut();
    let status = unsafe {
        sys::napi_create_external_arraybuffer(
            env.raw(),
            data.cast(),
            length,
            Some(release_mirror),
            hint.cast(),
            &mut value,
        )
    };
    if status != sys::Status::napi_ok {
        let hold = unsafe { Box::from_raw(hint) };
        hold.generations.release(&hold.mirror);
        return Ok(None);
    }
    Ok(Some(unsafe { Unknown::from_raw_unchecked(env.raw(), value) }))
}

/// How tokens reach JavaScript in this process: `"external"` (strings over
/// the cache's buffers) or `"copy"`.
#[napi(catch_unwind)]
pub fn token_strings() -> &'static str {
    lent_string::mode()
}

/// For tests: strings over a token's buffer that V8 has not released yet, in every thread.
#[napi(catch_unwind)]
pub fn lent_tokens() -> u32 {
    lent_string::lent().min(u32::MAX as usize) as u32
}
