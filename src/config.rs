//! What the service needs to know to talk to the identity provider: options
//! from `configure()` (received as JSON so that every check, and every message
//! naming the wrong option, lives here), or LibreChat's environment variables.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value};

use crate::claims::Claims;
use crate::credentials::{AssertionCallback, ClientAssertionSource};
use crate::error::ConfigError;
use crate::redis_tier::RedisOptions;
use crate::token_exchange::{self, Grant};

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_RETRIES: u32 = 1;
pub const DEFAULT_RETRY_DELAY_MS: u64 = 300;
pub const DEFAULT_EXPIRY_SKEW_SECONDS: u64 = 30;
pub const DEFAULT_MAX_CACHE_ENTRIES: usize = 100_000;
pub const DEFAULT_MAX_RETRY_AFTER_MS: u64 = 5_000;

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
    /// A signed JWT instead of a secret (RFC 7523 §2.2): certificates and workload identity.
    PrivateKeyJwt,
}

impl AuthMethod {
    fn parse(value: &str) -> Option<AuthMethod> {
        match value {
            "client_secret_basic" => Some(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(AuthMethod::ClientSecretPost),
            "none" => Some(AuthMethod::None),
            "private_key_jwt" => Some(AuthMethod::PrivateKeyJwt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// Where the token endpoint comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// Discovered from `{issuer}/.well-known/openid-configuration`.
    Issuer(Url),
    TokenEndpoint(Url),
}

#[derive(Clone, PartialEq)]
pub struct Config {
    pub endpoint: EndpointSource,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub auth_method: AuthMethod,
    /// An explicit proxy (`proxy` option or `PROXY`); otherwise the standard
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` variables apply.
    pub proxy: Option<Url>,
    pub timeout: Duration,
    pub max_retries: u32,
    pub retry_delay: Duration,
    pub expiry_skew: Duration,
    pub max_cache_entries: usize,
    pub max_retry_after: Duration,
    /// `private_key_jwt`: where the client assertion comes from; `None` for the other methods.
    pub client_assertion: Option<ClientAssertionSource>,
    /// `clientCapabilities` as a claims request (`xms_cc`), sent with every exchange.
    pub capabilities: Option<Claims>,
    /// The grant of the token request, and what it asks for (token exchange).
    pub grant: Grant,
    /// The shared Redis tier, when configured (see [`RedisOptions::from_options`]).
    pub redis: Option<RedisOptions>,
    /// Why LibreChat's `USE_REDIS` was not honoured, to log once.
    pub redis_warning: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("auth_method", &self.auth_method)
            .field("proxy", &self.proxy.as_ref().map(|url| without_credentials(url).to_string()))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_delay", &self.retry_delay)
            .field("expiry_skew", &self.expiry_skew)
            .field("max_cache_entries", &self.max_cache_entries)
            .field("max_retry_after", &self.max_retry_after)
            .field("client_assertion", &self.client_assertion)
            .field("capabilities", &self.capabilities)
            .field("grant", &self.grant)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

/// Functions of the host, which cannot travel in the options' JSON.
#[derive(Default)]
pub struct HostFunctions {
    /// `clientAssertion`, when it is a function.
    pub client_assertion: Option<Arc<dyn AssertionCallback>>,
    /// `actorToken`, when it is a function.
    pub actor_token: Option<Arc<dyn AssertionCallback>>,
}

/// A view of the environment: the value of a variable, by name.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A URL fit to print: user name and password removed.
pub fn without_credentials(url: &Url) -> Url {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

const KNOWN_OPTIONS: &[&str] = &[
    "issuer",
    "tokenEndpoint",
    "clientId",
    "clientSecret",
    "tokenEndpointAuthMethod",
    "proxy",
    "timeoutMs",
    "maxRetries",
    "retryDelayMs",
    "expirySkewSeconds",
    "maxCacheEntries",
    "maxRetryAfterMs",
];

impl Config {
    /// Reads the options object of `configure()`, serialised as JSON.
    /// `null` fields mean "default"; unknown fields are refused (they are typos).
    pub fn from_json(json: &str) -> Result<Config, ConfigError> {
        Config::from_options(json, HostFunctions::default())
    }

    /// [`Config::from_json`], with the host's functions (`clientAssertion`,
    /// `actorToken`) when it gave them (a function cannot travel as JSON).
    pub fn from_options(json: &str, functions: HostFunctions) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|_| ConfigError::new("options", "configure: options must be a plain object"))?;
        let Value::Object(options) = value else {
            return Err(ConfigError::new("options", "configure: options must be an object or null"));
        };
        let redis_names = RedisOptions::known_option_names();
        let known = || KNOWN_OPTIONS.iter().chain(CREDENTIAL_OPTIONS).chain(token_exchange::OPTIONS).chain(redis_names);
        if let Some(unknown) = options.keys().find(|key| !known().any(|name| name == key)) {
            return Err(ConfigError::new(
                unknown.clone(),
                format!(
                    "configure: unknown option \"{unknown}\" (known options: {})",
                    known().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let options = Options(&options);
        let redis = RedisOptions::from_options(&options)?;

        let client_id = options.string("clientId")?.filter(|id| !id.is_empty()).ok_or_else(|| {
            ConfigError::new("clientId", "configure: option \"clientId\" is required (a non-empty string)")
        })?;
        let token_endpoint = options.url("tokenEndpoint")?;
        let issuer = options.url("issuer")?;
        let endpoint = match (token_endpoint, issuer) {
            (Some(url), _) => EndpointSource::TokenEndpoint(url),
            (None, Some(url)) => EndpointSource::Issuer(url),
            (None, None) => {
                return Err(ConfigError::new(
                    "issuer",
                    "configure: option \"issuer\" (for discovery) or \"tokenEndpoint\" is required",
                ))
            }
        };
        let explicit_method = match options.string("tokenEndpointAuthMethod")? {
            None => None,
            Some(method) => Some(AuthMethod::parse(&method).ok_or_else(|| {
                ConfigError::new(
                    "tokenEndpointAuthMethod",
                    "configure: option \"tokenEndpointAuthMethod\" must be \"client_secret_basic\", \"client_secret_post\", \"private_key_jwt\" or \"none\"",
                )
            })?),
        };
        let client_secret = options.string("clientSecret")?.filter(|secret| !secret.is_empty());
        let credentials =
            ClientCredentials::from_options(&options, explicit_method, functions.client_assertion, &client_secret)?;
        let grant = Grant::from_options(&options, functions.actor_token)?;
        let auth_method = credentials.auth_method;
        check_secret(auth_method, &client_secret, "configure: option \"clientSecret\"", "clientSecret")?;
        let proxy = match options.string("proxy")? {
            None => None,
            Some(proxy) if proxy.is_empty() => None,
            Some(proxy) => Some(
                parse_proxy(&proxy)
                    .map_err(|why| ConfigError::new("proxy", format!("configure: option \"proxy\" {why}")))?,
            ),
        };

        Ok(Config {
            endpoint,
            client_id,
            client_secret,
            auth_method,
            proxy,
            timeout: Duration::from_millis(options.integer("timeoutMs", 1, 600_000)?.unwrap_or(DEFAULT_TIMEOUT_MS)),
            max_retries: options.integer("maxRetries", 0, 10)?.map_or(DEFAULT_MAX_RETRIES, |n| n as u32),
            retry_delay: Duration::from_millis(
                options.integer("retryDelayMs", 0, 60_000)?.unwrap_or(DEFAULT_RETRY_DELAY_MS),
            ),
            expiry_skew: Duration::from_secs(
                options.integer("expirySkewSeconds", 0, 3_600)?.unwrap_or(DEFAULT_EXPIRY_SKEW_SECONDS),
            ),
            max_cache_entries: options
                .integer("maxCacheEntries", 1, 100_000_000)?
                .map_or(DEFAULT_MAX_CACHE_ENTRIES, |n| n as usize),
            max_retry_after: Duration::from_millis(
                options.integer("maxRetryAfterMs", 0, 600_000)?.unwrap_or(DEFAULT_MAX_RETRY_AFTER_MS),
            ),
            client_assertion: credentials.client_assertion,
            capabilities: credentials.capabilities,
            grant,
            redis,
            redis_warning: None,
        })
    }

    /// LibreChat's variables. `Ok(None)` when the issuer or client id is not set.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Config>, ConfigError> {
        let var = |name: &str| var(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let (Some(issuer), Some(client_id)) = (var("OPENID_ISSUER"), var("OPENID_CLIENT_ID")) else {
            return Ok(None);
        };
        let issuer =
            parse_endpoint(&issuer).map_err(|why| ConfigError::new("OPENID_ISSUER", format!("OPENID_ISSUER {why}")))?;
        let explicit_method = match var("OPENID_TOKEN_ENDPOINT_AUTH_METHOD") {
            None => None,
            Some(method) => Some(AuthMethod::parse(&method).ok_or_else(|| {
                ConfigError::new(
                    "OPENID_TOKEN_ENDPOINT_AUTH_METHOD",
                    "OPENID_TOKEN_ENDPOINT_AUTH_METHOD must be client_secret_basic, client_secret_post, private_key_jwt or none",
                )
            })?),
        };
        let client_secret = var("OPENID_CLIENT_SECRET");
        let credentials = ClientCredentials::from_env(&var, explicit_method, &client_secret)?;
        let auth_method = credentials.auth_method;
        check_secret(auth_method, &client_secret, "OPENID_CLIENT_SECRET", "OPENID_CLIENT_SECRET")?;
        let grant = Grant::from_env(&var)?;
        let proxy = match var("PROXY") {
            None => None,
            Some(proxy) => Some(parse_proxy(&proxy).map_err(|why| ConfigError::new("PROXY", format!("PROXY {why}")))?),
        };
        let (redis, redis_warning) = RedisOptions::from_env(var);
        Ok(Some(Config {
            endpoint: EndpointSource::Issuer(issuer),
            client_id,
            client_secret,
            auth_method,
            proxy,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_retries: DEFAULT_MAX_RETRIES,
            retry_delay: Duration::from_millis(DEFAULT_RETRY_DELAY_MS),
            expiry_skew: Duration::from_secs(DEFAULT_EXPIRY_SKEW_SECONDS),
            max_cache_entries: DEFAULT_MAX_CACHE_ENTRIES,
            max_retry_after: Duration::from_millis(DEFAULT_MAX_RETRY_AFTER_MS),
            client_assertion: credentials.client_assertion,
            capabilities: credentials.capabilities,
            grant,
            redis,
            redis_warning,
        }))
    }

    /// The secrets an error text must never contain.
    pub fn secrets(&self) -> crate::error::Secrets<'_> {
        use std::borrow::Cow;
        let mut secrets = crate::error::Secrets::default();
        if let Some(secret) = self.client_secret.as_deref() {
            secrets.push(secret);
            if self.auth_method == AuthMethod::ClientSecretBasic {
                secrets.push_basic(Cow::Borrowed(&self.client_id), Cow::Borrowed(secret));
            }
        }
        if let Some(proxy) = &self.proxy {
            if let Some(password) = proxy.password() {
                secrets.push_url_credentials(proxy.username(), password);
            }
        }
        if let Some(assertion) = self.client_assertion.as_ref().and_then(ClientAssertionSource::fixed_secret) {
            secrets.push(assertion);
        }
        if let Some(actor_token) = self.grant.fixed_secret() {
            secrets.push(actor_token);
        }
        secrets
    }
}

fn check_secret(method: AuthMethod, secret: &Option<String>, label: &str, option: &str) -> Result<(), ConfigError> {
    if matches!(method, AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost) && secret.is_none() {
        return Err(ConfigError::new(
            option,
            format!("{label} is required when the token endpoint auth method is {}", method.as_str()),
        ));
    }
    Ok(())
}

/// Typed access to the options object, with messages that name the option.
/// The Redis tier reads its options through it too.
pub(crate) struct Options<'a>(pub(crate) &'a Map<String, Value>);

impl Options<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(ConfigError::new(
                name,
                format!("configure: option \"{name}\" must be a string, not {}", type_name(other)),
            )),
        }
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(other) => Err(ConfigError::new(
                name,
                format!("configure: option \"{name}\" must be a boolean, not {}", type_name(other)),
            )),
        }
    }

    fn url(&self, name: &str) -> Result<Option<Url>, ConfigError> {
        match self.string(name)? {
            None => Ok(None),
            Some(text) => parse_endpoint(&text)
                .map(Some)
                .map_err(|why| ConfigError::new(name, format!("configure: option \"{name}\" {why}"))),
        }
    }

    pub(crate) fn integer(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        self.integer_of(name, "an integer", min, max)
    }

    /// [`Options::integer`], whose range message says what is counted (`"an integer number of milliseconds"`).
    pub(crate) fn integer_of(&self, name: &str, what: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let out_of_range =
            || ConfigError::new(name, format!("configure: option \"{name}\" must be {what} from {min} to {max}"));
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(number)) => {
                let value = number.as_f64().ok_or_else(out_of_range)?;
                if value.fract() != 0.0 || value < min as f64 || value > max as f64 {
                    return Err(out_of_range());
                }
                Ok(Some(value as u64))
            }
            Some(other) => Err(ConfigError::new(
                name,
                format!("configure: option \"{name}\" must be a number, not {}", type_name(other)),
            )),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a URL's host is this machine: `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An endpoint of the identity provider: `https`, or `http` on loopback only,
/// since the request carries the user's token and the client secret.
pub fn parse_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|why| format!("is not a valid URL ({why})"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "must be an https URL: plain http is allowed only for loopback hosts, and {} is not one",
                url.host_str().unwrap_or("")
            ))
        }
        other => return Err(format!("must be an https URL, not {other}:")),
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(url)
}

fn parse_proxy(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|_| "is not a valid proxy URL".to_owned())?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err("must be an http:// or https:// proxy URL".to_owned()),
    }
}

// Client credentials other than a secret (`private_key_jwt`) and client
// capabilities: kept together here so that the rest of the configuration
// reads as before.

/// The `configure()` options of certificate credentials, client assertions and capabilities.
const CREDENTIAL_OPTIONS: &[&str] = &[
    "clientCertificate",
    "clientPrivateKey",
    "clientAssertion",
    "clientAssertionAlgorithm",
    "sendX5c",
    "clientCapabilities",
];

/// How the client authenticates, and what it asks for in every request.
struct ClientCredentials {
    auth_method: AuthMethod,
    client_assertion: Option<ClientAssertionSource>,
    capabilities: Option<Claims>,
}

impl ClientCredentials {
    /// The credentials of `configure()`. Without `tokenEndpointAuthMethod`,
    /// a certificate or a client assertion means `private_key_jwt`.
    fn from_options(
        options: &Options<'_>,
        explicit_method: Option<AuthMethod>,
        assertion_callback: Option<Arc<dyn AssertionCallback>>,
        client_secret: &Option<String>,
    ) -> Result<ClientCredentials, ConfigError> {
        use crate::credentials::pem::{CERTIFICATE_OPTION, PRIVATE_KEY_OPTION};
        use crate::credentials::{AssertionAlgorithm, ClientAssertionSigner};
        const ASSERTION_OPTION: &str = "clientAssertion";
        let certificate = options.string(CERTIFICATE_OPTION)?.filter(|text| !text.trim().is_empty());
        let private_key = options.string(PRIVATE_KEY_OPTION)?.filter(|text| !text.trim().is_empty());
        let fixed_assertion = match options.string(ASSERTION_OPTION)? {
            Some(text) if text.trim().is_empty() => {
                return Err(ConfigError::new(ASSERTION_OPTION, "configure: option \"clientAssertion\" is empty"))
            }
            other => other.map(|text| text.trim().to_owned()),
        };
        let algorithm = options.string(AssertionAlgorithm::OPTION)?;
        let send_x5c = options.boolean("sendX5c")?;
        let capabilities = match options.get(crate::claims::CAPABILITIES_OPTION) {
            None => None,
            Some(Value::Array(values)) => {
                let values = values
                    .iter()
                    .map(|value| value.as_str())
                    .collect::<Option<Vec<&str>>>()
                    .ok_or_else(capabilities_error)?;
                Claims::capabilities(&values)?
            }
            Some(_) => return Err(capabilities_error()),
        };

        let given: Vec<&str> = [
            (CERTIFICATE_OPTION, certificate.is_some()),
            (PRIVATE_KEY_OPTION, private_key.is_some()),
            (ASSERTION_OPTION, fixed_assertion.is_some() || assertion_callback.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        let auth_method = match explicit_method {
            Some(method) => method,
            None if !given.is_empty() => AuthMethod::PrivateKeyJwt,
            None => AuthMethod::ClientSecretBasic,
        };
        if auth_method != AuthMethod::PrivateKeyJwt {
            if let Some(option) = given.first().copied().or_else(|| {
                [(AssertionAlgorithm::OPTION, algorithm.is_some()), ("sendX5c", send_x5c.is_some())]
                    .into_iter()
                    .find_map(|(name, present)| present.then_some(name))
            }) {
                return Err(ConfigError::new(
                    option,
                    format!(
                        "configure: option \"{option}\" is for tokenEndpointAuthMethod \"private_key_jwt\", not \"{}\"",
                        auth_method.as_str()
                    ),
                ));
            }
            return Ok(ClientCredentials { auth_method, client_assertion: None, capabilities });
        }

        if client_secret.is_some() {
            return Err(ConfigError::new(
                "clientSecret",
                "configure: option \"clientSecret\" is not used with private_key_jwt; leave it out, or choose client_secret_basic",
            ));
        }
        let certificate_only = |option: &str| {
            ConfigError::new(
                option,
                format!("configure: option \"{option}\" applies to clientCertificate, which is not given"),
            )
        };
        let client_assertion = match (certificate, private_key, fixed_assertion, assertion_callback) {
            (Some(_), _, Some(_), _) | (Some(_), _, _, Some(_)) | (_, Some(_), Some(_), _) | (_, Some(_), _, Some(_)) => {
                return Err(ConfigError::new(
                    ASSERTION_OPTION,
                    "configure: give either clientAssertion or clientCertificate with clientPrivateKey, not both",
                ))
            }
            (Some(certificate), Some(private_key), None, None) => {
                let algorithm = algorithm.as_deref().map(AssertionAlgorithm::from_option).transpose()?.unwrap_or_default();
                let signer = ClientAssertionSigner::new(&certificate, &private_key, algorithm, send_x5c.unwrap_or(false))?;
                ClientAssertionSource::Certificate(Arc::new(signer))
            }
            (Some(_), None, None, None) => {
                return Err(ConfigError::new(
                    PRIVATE_KEY_OPTION,
                    "configure: option \"clientPrivateKey\" is required with clientCertificate (the certificate's private key, PEM)",
                ))
            }
            (None, Some(_), None, None) => {
                return Err(ConfigError::new(
                    CERTIFICATE_OPTION,
                    "configure: option \"clientCertificate\" is required with clientPrivateKey (the key's certificate, PEM)",
                ))
            }
            (None, None, assertion, callback) => {
                if algorithm.is_some() {
                    return Err(certificate_only(AssertionAlgorithm::OPTION));
                }
                if send_x5c.is_some() {
                    return Err(certificate_only("sendX5c"));
                }
                match (assertion, callback) {
                    (Some(assertion), _) => ClientAssertionSource::Fixed(assertion.into()),
                    (None, Some(callback)) => ClientAssertionSource::Callback(callback),
                    (None, None) => {
                        return Err(ConfigError::new(
                            CERTIFICATE_OPTION,
                            "configure: private_key_jwt needs clientCertificate with clientPrivateKey, or clientAssertion (a string or a function)",
                        ))
                    }
                }
            }
        };
        Ok(ClientCredentials { auth_method, client_assertion: Some(client_assertion), capabilities })
    }

    /// LibreChat's environment, plus workload identity: with
    /// `AZURE_FEDERATED_TOKEN_FILE` set and no `OPENID_CLIENT_SECRET`, the
    /// file (re-read when it changes) is the client assertion.
    fn from_env(
        var: &dyn Fn(&str) -> Option<String>,
        explicit_method: Option<AuthMethod>,
        client_secret: &Option<String>,
    ) -> Result<ClientCredentials, ConfigError> {
        use crate::credentials::{FederatedTokenFile, FEDERATED_TOKEN_FILE_ENV};
        let federated = var(FEDERATED_TOKEN_FILE_ENV).filter(|_| client_secret.is_none());
        let auth_method = match (explicit_method, &federated) {
            (Some(method), _) => method,
            (None, Some(_)) => AuthMethod::PrivateKeyJwt,
            (None, None) => AuthMethod::ClientSecretBasic,
        };
        let client_assertion = match (auth_method, federated) {
            (AuthMethod::PrivateKeyJwt, Some(path)) => {
                Some(ClientAssertionSource::FederatedTokenFile(Arc::new(FederatedTokenFile::new(path))))
            }
            (AuthMethod::PrivateKeyJwt, None) => {
                return Err(ConfigError::new(
                    FEDERATED_TOKEN_FILE_ENV,
                    "OPENID_TOKEN_ENDPOINT_AUTH_METHOD private_key_jwt needs AZURE_FEDERATED_TOKEN_FILE (workload identity) and no OPENID_CLIENT_SECRET",
                ))
            }
            _ => None,
        };
        Ok(ClientCredentials { auth_method, client_assertion, capabilities: None })
    }
}

fn capabilities_error() -> ConfigError {
    ConfigError::new(
        crate::claims::CAPABILITIES_OPTION,
        "configure: option \"clientCapabilities\" must be an array of strings, such as ['cp1']",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, ConfigError> {
        Config::from_json(json)
    }

    #[test]
    fn defaults_apply_to_missing_and_null_options() {
        let config = config(
            r#"{"tokenEndpoint":"https://login.example.com/t/oauth2/v2.0/token","clientId":"app","clientSecret":"s3cret-value","timeoutMs":null}"#,
        )
        .unwrap();
        assert_eq!(config.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(config.max_retries, 1);
        assert_eq!(config.retry_delay, Duration::from_millis(300));
        assert_eq!(config.expiry_skew, Duration::from_secs(30));
        assert_eq!(config.max_cache_entries, 100_000);
        assert_eq!(config.auth_method, AuthMethod::ClientSecretBasic);
    }

    #[test]
    fn errors_name_the_option() {
        let cases = [
            (r#"{"issuer":"https://a.example","clientId":"a","clientSecret":"b","timeoutMs":"5"}"#, "timeoutMs"),
            (r#"{"issuer":"https://a.example","clientId":"a","clientSecret":"b","timeoutMs":0}"#, "timeoutMs"),
            (r#"{"issuer":"https://a.example","clientId":"a","clientSecret":"b","maxRetries":1.5}"#, "maxRetries"),
            (
                r#"{"issuer":"https://a.example","clientId":"a","clientSecret":"b","tokenEndpointAuthMethod":"x"}"#,
                "tokenEndpointAuthMethod",
            ),
            (r#"{"issuer":"https://a.example","clientId":"a","clientSecret":"b","clientTimeout":1}"#, "clientTimeout"),
            (r#"{"issuer":"https://a.example","clientId":"a"}"#, "clientSecret"),
            (r#"{"clientId":"a","clientSecret":"b"}"#, "issuer"),
            (r#"{"issuer":"https://a.example","clientSecret":"b"}"#, "clientId"),
            (r#"{"issuer":"https://a.example","clientId":"a","clientSecret":"b","proxy":"socks5://p:1"}"#, "proxy"),
        ];
        for (json, option) in cases {
            let err = config(json).unwrap_err();
            assert_eq!(err.option, option, "{json}");
            assert!(err.message.contains(option), "{}", err.message);
        }
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(parse_endpoint("http://127.0.0.1:8080/token").is_ok());
        assert!(parse_endpoint("http://127.9.9.9/token").is_ok());
        assert!(parse_endpoint("http://localhost/token").is_ok());
        assert!(parse_endpoint("http://[::1]:9/token").is_ok());
        assert!(parse_endpoint("https://login.microsoftonline.com/t/v2.0").is_ok());
        let err = parse_endpoint("http://login.example.com/token").unwrap_err();
        assert!(err.contains("https"), "{err}");
        assert!(parse_endpoint("http://localhost.example.com/token").is_err());
        assert!(parse_endpoint("ftp://example.com/").is_err());
    }

    #[test]
    fn none_auth_needs_no_secret() {
        let config =
            config(r#"{"issuer":"https://a.example","clientId":"a","tokenEndpointAuthMethod":"none"}"#).unwrap();
        assert_eq!(config.auth_method, AuthMethod::None);
        assert_eq!(config.client_secret, None);
    }

    #[test]
    fn environment_like_librechat() {
        let env = |name: &str| {
            match name {
                "OPENID_ISSUER" => Some("https://login.microsoftonline.com/tid/v2.0"),
                "OPENID_CLIENT_ID" => Some("app-id"),
                "OPENID_CLIENT_SECRET" => Some("secret-from-env"),
                "OPENID_TOKEN_ENDPOINT_AUTH_METHOD" => Some("client_secret_post"),
                "PROXY" => Some("http://user:pw-secret@proxy.local:3128"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let config = Config::from_env(env).unwrap().unwrap();
        assert!(matches!(config.endpoint, EndpointSource::Issuer(_)));
        assert_eq!(config.auth_method, AuthMethod::ClientSecretPost);
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret-from-env") && !debug.contains("pw-secret"), "{debug}");
        assert_eq!(crate::error::redact("secret-from-env pw-secret", &config.secrets()), "[redacted] [redacted]");
        assert_eq!(Config::from_env(|_| None).unwrap(), None);
    }

    fn with(extra: serde_json::Value) -> Result<Config, ConfigError> {
        let mut options =
            serde_json::json!({ "tokenEndpoint": "https://login.example/t/oauth2/v2.0/token", "clientId": "app" });
        options.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        Config::from_json(&options.to_string())
    }

    #[test]
    fn private_key_jwt_from_a_certificate_needs_no_secret() {
        let Some(pki) = crate::credentials::test_pki::pki() else { return };
        let config = with(serde_json::json!({
            "tokenEndpointAuthMethod": "private_key_jwt",
            "clientCertificate": pki.leaf_cert,
            "clientPrivateKey": pki.leaf_key_pkcs1,
            "clientAssertionAlgorithm": "RS256",
            "sendX5c": true,
        }))
        .unwrap();
        assert_eq!(config.auth_method, AuthMethod::PrivateKeyJwt);
        assert!(matches!(config.client_assertion, Some(ClientAssertionSource::Certificate(_))));
        // Without the method named, a certificate means private_key_jwt.
        let inferred =
            with(serde_json::json!({ "clientCertificate": pki.leaf_cert, "clientPrivateKey": pki.leaf_key_pkcs8 }))
                .unwrap();
        assert_eq!(inferred.auth_method, AuthMethod::PrivateKeyJwt);
        let debug = format!("{inferred:?}");
        assert!(!debug.contains("MII"), "{debug}");
    }

    #[test]
    fn credential_errors_name_the_option() {
        let Some(pki) = crate::credentials::test_pki::pki() else { return };
        let method = "private_key_jwt";
        let cases = [
            (serde_json::json!({ "tokenEndpointAuthMethod": method }), "clientCertificate"),
            (serde_json::json!({ "clientCertificate": pki.leaf_cert }), "clientPrivateKey"),
            (serde_json::json!({ "clientPrivateKey": pki.leaf_key_pkcs8 }), "clientCertificate"),
            (
                serde_json::json!({ "clientCertificate": pki.leaf_cert, "clientPrivateKey": "not a key" }),
                "clientPrivateKey",
            ),
            (
                serde_json::json!({ "clientCertificate": pki.leaf_cert, "clientPrivateKey": pki.ca_key }),
                "clientCertificate",
            ),
            (
                serde_json::json!({ "clientCertificate": pki.leaf_cert, "clientPrivateKey": pki.leaf_key_pkcs8, "clientAssertion": "a.b.c" }),
                "clientAssertion",
            ),
            (
                serde_json::json!({ "clientCertificate": pki.leaf_cert, "clientPrivateKey": pki.leaf_key_pkcs8, "clientAssertionAlgorithm": "ES256" }),
                "clientAssertionAlgorithm",
            ),
            (serde_json::json!({ "clientAssertion": "a.b.c", "sendX5c": true }), "sendX5c"),
            (serde_json::json!({ "clientAssertion": "a.b.c", "clientSecret": "s3cret-value" }), "clientSecret"),
            (serde_json::json!({ "clientAssertion": "  " }), "clientAssertion"),
            (
                serde_json::json!({ "tokenEndpointAuthMethod": "client_secret_post", "clientSecret": "s3cret-value", "clientAssertion": "a.b.c" }),
                "clientAssertion",
            ),
            (serde_json::json!({ "tokenEndpointAuthMethod": "none", "sendX5c": false }), "sendX5c"),
            (
                serde_json::json!({ "tokenEndpointAuthMethod": "none", "clientCapabilities": "cp1" }),
                "clientCapabilities",
            ),
            (serde_json::json!({ "tokenEndpointAuthMethod": "none", "clientCapabilities": [1] }), "clientCapabilities"),
            (
                serde_json::json!({ "tokenEndpointAuthMethod": "none", "clientCapabilities": [" cp1"] }),
                "clientCapabilities",
            ),
        ];
        for (extra, option) in cases {
            let err = with(extra.clone()).unwrap_err();
            assert_eq!(err.option, option, "{extra} → {}", err.message);
            // Key and certificate bodies are base64 DER sequences: "MII…".
            assert!(!err.message.contains("MII") && !err.message.contains("a.b.c"), "{}", err.message);
        }
    }

    #[test]
    fn a_fixed_assertion_and_capabilities() {
        let config = with(
            serde_json::json!({ "clientAssertion": " fixed.client.assertion ", "clientCapabilities": ["cp1", "cp1"] }),
        )
        .unwrap();
        assert_eq!(config.auth_method, AuthMethod::PrivateKeyJwt);
        assert_eq!(config.client_assertion, Some(ClientAssertionSource::Fixed("fixed.client.assertion".into())));
        assert_eq!(config.capabilities.unwrap().to_json(), r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#);
        assert_eq!(
            crate::error::redact(
                "fixed.client.assertion",
                &with(serde_json::json!({ "clientAssertion": "fixed.client.assertion" })).unwrap().secrets()
            ),
            "[redacted]"
        );
        let none = with(serde_json::json!({ "tokenEndpointAuthMethod": "none", "clientCapabilities": [] })).unwrap();
        assert_eq!(none.capabilities, None);
    }

    #[test]
    fn workload_identity_from_the_environment() {
        let env = |secret: Option<&'static str>, method: Option<&'static str>| {
            move |name: &str| {
                match name {
                    "OPENID_ISSUER" => Some("https://login.microsoftonline.com/tid/v2.0"),
                    "OPENID_CLIENT_ID" => Some("app-id"),
                    "AZURE_FEDERATED_TOKEN_FILE" => Some("/var/run/secrets/azure/tokens/azure-identity-token"),
                    "OPENID_CLIENT_SECRET" => secret,
                    "OPENID_TOKEN_ENDPOINT_AUTH_METHOD" => method,
                    _ => None,
                }
                .map(str::to_owned)
            }
        };
        let federated = Config::from_env(env(None, None)).unwrap().unwrap();
        assert_eq!(federated.auth_method, AuthMethod::PrivateKeyJwt);
        let Some(ClientAssertionSource::FederatedTokenFile(file)) = &federated.client_assertion else { panic!() };
        assert_eq!(file.path(), std::path::Path::new("/var/run/secrets/azure/tokens/azure-identity-token"));
        let with_secret = Config::from_env(env(Some("secret-from-env"), None)).unwrap().unwrap();
        assert_eq!((with_secret.auth_method, with_secret.client_assertion), (AuthMethod::ClientSecretBasic, None));
        let none = Config::from_env(env(None, Some("none"))).unwrap().unwrap();
        assert_eq!(none.auth_method, AuthMethod::None);
        let err = Config::from_env(env(Some("secret-from-env"), Some("private_key_jwt"))).unwrap_err();
        assert_eq!(err.option, "AZURE_FEDERATED_TOKEN_FILE");
    }

    #[test]
    fn redis_options_ride_along_and_a_uri_without_a_key_is_refused_naming_it() {
        let base = r#""tokenEndpoint":"https://a.example/token","clientId":"a","clientSecret":"b""#;
        assert_eq!(config(&format!("{{{base}}}")).unwrap().redis, None);
        let key = "0f".repeat(32);
        let with = config(&format!(
            r#"{{{base},"redisUri":"redis://:pw-secret@127.0.0.1:7000","redisKeyPrefix":"lc:","cacheEncryptionKey":"{key}"}}"#
        ))
        .unwrap();
        let redis = with.redis.as_ref().unwrap();
        assert_eq!((redis.uris.len(), redis.key_prefix.as_str()), (1, "lc:"));
        let debug = format!("{with:?}");
        assert!(!debug.contains("pw-secret") && !debug.contains(&key), "{debug}");
        let err = config(&format!(r#"{{{base},"redisUri":"redis://:pw-secret@127.0.0.1:7000"}}"#)).unwrap_err();
        assert_eq!(err.option, "cacheEncryptionKey");
        assert!(err.message.starts_with("configure: option \"cacheEncryptionKey\" is required"), "{}", err.message);
        assert!(!err.message.contains("pw-secret"));
    }

    #[test]
    fn use_redis_without_creds_key_runs_without_redis_and_says_why() {
        let env = |name: &str| {
            match name {
                "OPENID_ISSUER" => Some("https://login.microsoftonline.com/tid/v2.0"),
                "OPENID_CLIENT_ID" => Some("app-id"),
                "OPENID_CLIENT_SECRET" => Some("secret-from-env"),
                "USE_REDIS" => Some("true"),
                "REDIS_URI" => Some("redis://127.0.0.1:7000"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let config = Config::from_env(env).unwrap().unwrap();
        assert_eq!(config.redis, None);
        assert!(config.redis_warning.unwrap().contains("CREDS_KEY is not set"));
    }
}
