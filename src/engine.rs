//! The exchange itself, tying the parts together: configuration, cache,
//! throttles, single flight, retries and the HTTP call. One engine serves the
//! whole process (every worker thread).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use parking_lot::RwLock;
use reqwest::{Client, Url};
use tokio::sync::OnceCell;

use crate::cache::{CacheKey, CachedToken, Hit, TokenCache};
use crate::config::{Config, EndpointSource, EnvLookup};
use crate::error::{ConfigError, ExchangeError, FailureReason};
use crate::events::{Events, Level};
use crate::flight::{FlightMap, Role};
use crate::generations::Generations;
use crate::grant::{self, ClientAuth, TokenResponse};
use crate::http;
use crate::retry::{self, Next, RetryPolicy};
use crate::runtime;
use crate::stats::{Counters, InFlight, Stats};
use crate::throttle::Throttles;

pub const CONFIG_UNAVAILABLE: &str = "OpenID configuration not available";

/// A token handed to a caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub access_token: Arc<str>,
    pub expires_in: u64,
}

pub type Outcome = Result<Token, Arc<ExchangeError>>;

/// One call's inputs. The assertion is the user's access token: never printed.
pub struct ExchangeRequest {
    pub openid_id: String,
    pub scopes: String,
    pub assertion: String,
    pub from_cache: bool,
    /// Where this call's log events go.
    pub events: Events,
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("openid_id", &self.openid_id)
            .field("scopes", &self.scopes)
            .field("assertion", &"[redacted]")
            .field("from_cache", &self.from_cache)
            .field("events", &self.events)
            .finish()
    }
}

/// A configuration in force, with what hangs on it.
struct Setup {
    config: Config,
    client: Client,
    endpoint: OnceCell<Url>,
    flights: Arc<FlightMap<Outcome>>,
}

impl Setup {
    fn new(config: Config) -> Result<Arc<Setup>, String> {
        let client = http::client_for(config.proxy.as_ref())?;
        let endpoint = match &config.endpoint {
            EndpointSource::TokenEndpoint(url) => OnceCell::new_with(Some(url.clone())),
            EndpointSource::Issuer(_) => OnceCell::new(),
        };
        Ok(Arc::new(Setup { config, client, endpoint, flights: FlightMap::new() }))
    }
}

enum ConfigSlot {
    /// LibreChat's variables, read at the first exchange that needs them.
    FromEnv(Option<Arc<Setup>>),
    Configured(Arc<Setup>),
}

struct Inner {
    slot: RwLock<ConfigSlot>,
    cache: TokenCache,
    throttles: Throttles,
    counters: Counters,
    generations: &'static Generations,
}

#[derive(Clone)]
pub struct Engine(Arc<Inner>);

static GENERATIONS: LazyLock<Generations> = LazyLock::new(Generations::new);
static ENGINE: LazyLock<Engine> = LazyLock::new(|| Engine::new(&GENERATIONS));
impl Engine {
    pub fn new(generations: &'static Generations) -> Engine {
        generations.set_env_needed(true);
        Engine(Arc::new(Inner {
            slot: RwLock::new(ConfigSlot::FromEnv(None)),
            cache: TokenCache::new(generations),
            throttles: Throttles::default(),
            counters: Counters::default(),
            generations,
        }))
    }

    /// The engine of the process.
    pub fn global() -> &'static Engine {
        &ENGINE
    }

    pub fn generations(&self) -> &'static Generations {
        self.0.generations
    }

    /// Replaces the configuration (`None`: back to the environment) and
    /// forgets every token and throttle.
    pub fn configure(&self, options_json: Option<&str>) -> Result<(), ConfigError> {
        let slot = match options_json {
            None => ConfigSlot::FromEnv(None),
            Some(json) => {
                let config = Config::from_json(json)?;
                let setup = Setup::new(config).map_err(|why| ConfigError::new("proxy", format!("configure: {why}")))?;
                ConfigSlot::Configured(setup)
            }
        };
        let env_needed = matches!(slot, ConfigSlot::FromEnv(None));
        *self.0.slot.write() = slot;
        self.0.generations.set_env_needed(env_needed);
        self.clear_cache();
        Ok(())
    }

    /// Forgets every token and throttle. Exchanges under way finish, but
    /// what they bring is not cached.
    pub fn clear_cache(&self) {
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
            ConfigSlot::FromEnv(None) => None,
        }
    }

    pub fn stats(&self) -> Stats {
        self.0.counters.snapshot(self.0.cache.len())
    }

    /// Hits served by a JavaScript thread's memo, reported in batches.
    pub fn add_cache_hits(&self, hits: u64) {
        self.0.counters.cache_hits.fetch_add(hits, Ordering::Relaxed);
    }

    /// A cached token, without any exchange: the synchronous fast path.
    pub fn lookup(&self, openid_id: &str, scopes: &str) -> Option<Hit> {
        let hit = self.0.cache.get(CacheKey::new(openid_id, scopes).as_str(), Instant::now())?;
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
        let setup = self.setup(env)?;
        let engine = self.clone();
        let epoch = self.0.generations.epoch();
        Ok(async move {
            let mut request = request;
            let mut events = std::mem::replace(&mut request.events, Events::Off);
            let outcome = engine.exchange_with(setup, &request, epoch, &mut events).await;
            match &outcome {
                Ok(token) => events.push(Level::Debug, || {
                    format!(
                        "OBO token exchange successful for user {} (expires in {} s)",
                        request.openid_id, token.expires_in
                    )
                }),
                Err(err) => events.push(Level::Error, || format!("OBO token exchange failed: {}", err.message)),
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

    /// `env` gives the caller's view of the environment, when it was sent.
    fn setup(&self, env: Option<EnvLookup<'_>>) -> Result<Arc<Setup>, Arc<ExchangeError>> {
        if let ConfigSlot::Configured(setup) | ConfigSlot::FromEnv(Some(setup)) = &*self.0.slot.read() {
            return Ok(setup.clone());
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
        let setup = Setup::new(config).map_err(|why| unavailable(Some(why)))?;
        let mut slot = self.0.slot.write();
        match &mut *slot {
            ConfigSlot::FromEnv(Some(existing)) | ConfigSlot::Configured(existing) => Ok(existing.clone()),
            ConfigSlot::FromEnv(empty) => {
                *empty = Some(setup.clone());
                self.0.generations.set_env_needed(false);
                Ok(setup)
            }
        }
    }

    async fn exchange_with(
        &self,
        setup: Arc<Setup>,
        request: &ExchangeRequest,
        epoch: u32,
        events: &mut Events,
    ) -> Outcome {
        let inner = &self.0;
        let key = CacheKey::new(&request.openid_id, &request.scopes);
        let who = || format!("user {} and scopes {}", request.openid_id, request.scopes);
        if request.from_cache {
            if let Some(hit) = inner.cache.get(key.as_str(), Instant::now()) {
                Counters::bump(&inner.counters.cache_hits);
                events.push(Level::Debug, || format!("Using cached OBO token for {}", who()));
                return Ok(Token { access_token: hit.access_token, expires_in: hit.expires_in });
            }
            Counters::bump(&inner.counters.cache_misses);
        }
        if let Some(refusal) = inner.throttles.check(&key, crate::throttle::wall_clock_ms()) {
            Counters::bump(&inner.counters.throttled);
            events.push(Level::Warn, || {
                format!(
                    "OBO token requests for {} are throttled for {} s more",
                    who(),
                    refusal.retry_after_secs().unwrap_or(0)
                )
            });
            return Err(Arc::new(refusal));
        }
        if !request.from_cache {
            return self.run(&setup, &key, request, epoch, events).await;
        }
        match setup.flights.join_or_lead(&key) {
            Role::Follower(follower) => {
                Counters::bump(&inner.counters.coalesced);
                events.push(Level::Debug, || format!("Joining in-flight OBO token exchange for {}", who()));
                follower.result().await.unwrap_or_else(|| {
                    Err(Arc::new(ExchangeError::failed("The OBO exchange this call was waiting for was abandoned")))
                })
            }
            Role::Leader(flight) => {
                // A leader that finished between our cache miss and our
                // taking its slot has stored its token: use it.
                let outcome = match inner.cache.get(key.as_str(), Instant::now()) {
                    Some(hit) => Ok(Token { access_token: hit.access_token, expires_in: hit.expires_in }),
                    None => self.run(&setup, &key, request, epoch, events).await,
                };
                flight.complete(outcome.clone());
                outcome
            }
        }
    }

    /// One exchange with the provider, retries included.
    async fn run(
        &self,
        setup: &Setup,
        key: &CacheKey,
        request: &ExchangeRequest,
        epoch: u32,
        events: &mut Events,
    ) -> Outcome {
        let inner = &self.0;
        events.push(Level::Debug, || {
            format!("Performing OBO token exchange for user {} with scopes: {}", request.openid_id, request.scopes)
        });
        let _in_flight = InFlight::enter(&inner.counters.in_flight);
        Counters::bump(&inner.counters.exchanges);
        let config = &setup.config;
        let mut secrets = config.secrets();
        secrets.push(&request.assertion);
        let fail = |err: ExchangeError, events: &mut Events| {
            let err = Arc::new(err.redacted(&secrets));
            // The provider said when to come back: no request for this key before then.
            if let Some(wait) = err.retry_after {
                let until_ms = crate::throttle::wall_clock_ms().saturating_add(wait.as_millis() as u64);
                inner.throttles.remember(key, until_ms, err.clone(), || inner.generations.epoch() == epoch);
                events.push(Level::Warn, || {
                    format!(
                        "The identity provider throttled user {} and scopes {} for {} s",
                        request.openid_id,
                        request.scopes,
                        err.retry_after_secs().unwrap_or(0)
                    )
                });
            }
            Counters::bump(&inner.counters.failures);
            Err(err)
        };

        let policy = RetryPolicy {
            max_retries: config.max_retries,
            retry_delay: config.retry_delay,
            max_retry_after: config.max_retry_after,
        };
        let mut retries_done = 0;
        loop {
            match self.attempt(setup, request).await {
                Ok(response) => return Ok(self.store(config, key, response, epoch)),
                Err(mut err) => {
                    err.retryable = err.reason == FailureReason::ExchangeFailed && retry::is_retryable(&err);
                    match policy.next(retries_done, &err) {
                        Next::Retry(wait) => {
                            events.push(Level::Warn, || {
                                format!(
                                    "Transient OBO token exchange failure, retrying in {} ms: {}",
                                    wait.as_millis(),
                                    crate::error::redact(&err.message, &secrets)
                                )
                            });
                            retries_done += 1;
                            Counters::bump(&inner.counters.retries);
                            tokio::time::sleep(wait).await;
                        }
                        Next::Throttle(_) | Next::GiveUp => return fail(err, events),
                    }
                }
            }
        }
    }

    /// One request; discovery first when the endpoint is not known yet, so
    /// that a transient discovery failure is retried like any other.
    async fn attempt(&self, setup: &Setup, request: &ExchangeRequest) -> Result<TokenResponse, ExchangeError> {
        let endpoint = &self.endpoint(setup).await?;
        let config = &setup.config;
        let auth = ClientAuth {
            client_id: &config.client_id,
            client_secret: config.client_secret.as_deref(),
            method: config.auth_method,
        };
        let body = grant::form_body(&request.assertion, &request.scopes, &auth);
        let authorization = grant::basic_authorization(&auth);
        let answer = http::post_form(&setup.client, endpoint, authorization.as_deref(), body, config.timeout).await?;
        if (200..300).contains(&answer.status) {
            return grant::parse_success(answer.status, &answer.body);
        }
        let mut err = grant::parse_failure(answer.status, answer.content_type.as_deref(), &answer.body);
        if matches!(answer.status, 429 | 503) {
            err.retry_after = answer.retry_after;
        }
        Err(err)
    }

    fn store(&self, config: &Config, key: &CacheKey, response: TokenResponse, epoch: u32) -> Token {
        let now = Instant::now();
        let access_token: Arc<str> = Arc::from(response.access_token);
        let token = CachedToken::new(access_token.clone(), response.expires_in, now, config.expiry_skew);
        let generations = self.0.generations;
        self.0.cache.insert(key.clone(), token, config.max_cache_entries, now, || generations.epoch() == epoch);
        Token { access_token, expires_in: response.expires_in }
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
async fn discover(client: &Client, issuer: &Url, timeout: std::time::Duration) -> Result<Url, ExchangeError> {
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                let responses = responses.clone();
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
                        let (status, extra, body) = responses[index.min(responses.len() - 1)];
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
        (url, count)
    }

    fn engine(url: &str, extra: &str) -> Engine {
        let engine = Engine::new(Box::leak(Box::new(Generations::new())));
        engine
            .configure(Some(&format!(
                r#"{{"tokenEndpoint":"{url}","clientId":"app","clientSecret":"secret-value","retryDelayMs":10{extra}}}"#
            )))
            .unwrap();
        engine
    }

    fn request(user: &str, from_cache: bool) -> ExchangeRequest {
        ExchangeRequest {
            openid_id: user.into(),
            scopes: "api://s".into(),
            assertion: "assertion-value-123".into(),
            from_cache,
            events: Events::Off,
        }
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
        let first = run(&engine, request("u", true)).await.0.unwrap();
        assert_eq!(first, Token { access_token: Arc::from("tok"), expires_in: 1800 });
        let hit = engine.lookup("u", "api://s").unwrap();
        assert_eq!(hit.expires_in, 1800);
        assert_eq!(&*hit.access_token, "tok");
        let again = run(&engine, request("u", true)).await;
        assert_eq!(again.0.unwrap().access_token.as_ref(), "tok");
        assert!(again.1.iter().any(|event| event.message.contains("Using cached OBO token")));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let stats = engine.stats();
        assert_eq!((stats.cache_hits, stats.cache_misses, stats.exchanges, stats.cache_size), (2, 1, 1, 1));
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
        assert!(warn.message.starts_with("[OboTokenService] Transient OBO token exchange failure, retrying in 10 ms"));
        assert!(events.iter().all(|event| !event.message.contains("assertion-value-123")));
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
        let (url, _) = provider(vec![(200, "", TOKEN)], Duration::from_millis(100)).await;
        let engine = engine(&url, "");
        let pending = tokio::spawn(engine.exchange(request("u", true), None).unwrap());
        tokio::time::sleep(Duration::from_millis(30)).await;
        engine.clear_cache();
        assert!(pending.await.unwrap().is_ok());
        assert!(engine.lookup("u", "api://s").is_none());
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
        let engine = Engine::new(Box::leak(Box::new(Generations::new())));
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

    #[test]
    fn without_configuration_the_exchange_is_refused_at_once() {
        let engine = Engine::new(Box::leak(Box::new(Generations::new())));
        let Err(err) = engine.exchange(request("u", true), None) else { panic!("no configuration") };
        assert_eq!(err.message, CONFIG_UNAVAILABLE);
        assert_eq!(err.reason, FailureReason::ConfigUnavailable);
    }
}
