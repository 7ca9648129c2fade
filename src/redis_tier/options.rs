//! What the Redis tier needs to know, read from `configure()`'s flat options or
//! from LibreChat's own environment variables. Everything is checked here, once,
//! so that the tier itself never meets a malformed setting at request time, and
//! so that a mistake is reported naming the option, never echoing its value
//! (URIs carry passwords).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::breaker::BreakerPolicy;
use crate::config::Options;
use crate::error::ConfigError as OptionError;
use redis::IntoConnectionInfo;

/// The budget of one Redis operation when `redisTimeoutMs` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// How often a waiter looks again when no pub/sub message arrives.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
const MAX_TIMEOUT_MS: u64 = 60_000;

/// Settings of the shared tier. `Debug` shows no credential.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URIs; credentials in them are allowed.
    pub uris: Vec<String>,
    /// True with several URIs, or when `redisCluster` makes one URI a cluster seed.
    pub cluster: bool,
    pub key_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The PEM file to trust for `rediss://`, as given.
    pub ca_path: Option<PathBuf>,
    /// Its contents, read when the options were checked so that a wrong path
    /// fails `configure()` instead of every later connection.
    pub ca_pem: Option<Vec<u8>>,
    /// The budget of one Redis operation.
    pub timeout: Duration,
    /// The master key: key names and values are protected by subkeys derived from it.
    pub encryption_key: [u8; 32],
    pub breaker: BreakerPolicy,
    /// Fallback polling of [`super::RedisTier::wait_for`] for a lost pub/sub message.
    pub poll_interval: Duration,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("uris", &self.uris.len())
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("ca_path", &self.ca_path)
            .field("timeout", &self.timeout)
            .field("encryption_key", &"<set>")
            .field("breaker", &self.breaker)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// A Redis setting that cannot be used. `option` is the name the user wrote
/// (`redisUri`, `cacheEncryptionKey`, or an environment variable); the message
/// never contains the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub option: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(option: &'static str, message: impl Into<String>) -> Self {
        ConfigError { option, message: message.into() }
    }

    /// As `configure()` reports it: a TypeError naming the option.
    pub fn for_configure(self) -> OptionError {
        OptionError::new(self.option, format!("configure: option \"{}\" {}", self.option, self.message))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.message)
    }
}

impl std::error::Error for ConfigError {}

const OPTION_NAMES: &[&str] = &[
    "redisUri",
    "redisCluster",
    "redisKeyPrefix",
    "redisUsername",
    "redisPassword",
    "redisCa",
    "redisTimeoutMs",
    "cacheEncryptionKey",
];

/// Where each setting comes from: the option names of `configure()`, or the
/// environment variables of LibreChat. Errors name the source the user wrote.
struct Names {
    uri: &'static str,
    username: &'static str,
    password: &'static str,
    ca: &'static str,
    encryption_key: &'static str,
}

const OPTION_SOURCE: Names = Names {
    uri: "redisUri",
    username: "redisUsername",
    password: "redisPassword",
    ca: "redisCa",
    encryption_key: "cacheEncryptionKey",
};

const ENV_SOURCE: Names = Names {
    uri: "REDIS_URI",
    username: "REDIS_USERNAME",
    password: "REDIS_PASSWORD",
    ca: "REDIS_CA",
    encryption_key: "CREDS_KEY",
};

impl RedisOptions {
    /// The option names of `configure()` that belong to this tier, for the
    /// caller's unknown-option check.
    pub fn known_option_names() -> &'static [&'static str] {
        OPTION_NAMES
    }

    /// From `configure()`'s options object, read through the configuration's
    /// [`Options`] so that type errors read like every other option's. `Ok(None)`
    /// without `redisUri` (an explicit configuration without it uses no Redis).
    pub(crate) fn from_options(options: &Options<'_>) -> Result<Option<RedisOptions>, OptionError> {
        // Blank strings count as absent, as LibreChat's empty variables do.
        let string = |name: &str| Ok::<_, OptionError>(options.string(name)?.filter(|text| !text.trim().is_empty()));
        let key_text = string("cacheEncryptionKey")?;
        let encryption_key = key_text
            .as_deref()
            .map(|text| parse_encryption_key(text, OPTION_SOURCE.encryption_key))
            .transpose()
            .map_err(ConfigError::for_configure)?;
        let cluster = options.boolean("redisCluster")?.unwrap_or(false);
        let key_prefix = string("redisKeyPrefix")?.unwrap_or_default();
        let username = string("redisUsername")?;
        let password = string("redisPassword")?;
        let ca_path = string("redisCa")?;
        let timeout = options
            .integer_of("redisTimeoutMs", "an integer number of milliseconds", 1, MAX_TIMEOUT_MS)?
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let Some(uri_text) = string("redisUri")? else {
            return Ok(None);
        };
        let Some(encryption_key) = encryption_key else {
            return Err(ConfigError::for_configure(ConfigError::new(
                "cacheEncryptionKey",
                "is required with redisUri: Redis must hold nothing readable, so the tier is \
                 refused without 64 hex characters to encrypt it with",
            )));
        };
        build(
            &OPTION_SOURCE,
            Settings { uri_text, cluster, key_prefix, username, password, ca_path, timeout, encryption_key },
        )
        .map(Some)
        .map_err(ConfigError::for_configure)
    }

    /// From LibreChat's environment (`USE_REDIS`, `REDIS_URI`, `USE_REDIS_CLUSTER`,
    /// `REDIS_KEY_PREFIX` or `REDIS_KEY_PREFIX_VAR`, `REDIS_USERNAME`,
    /// `REDIS_PASSWORD`, `REDIS_CA`, `CREDS_KEY`). The environment cannot throw at anyone: an unusable setting
    /// gives no tier and a warning to log once.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> (Option<RedisOptions>, Option<String>) {
        if !is_enabled(var("USE_REDIS")) {
            return (None, None);
        }
        let warn =
            |why: String| (None, Some(format!("USE_REDIS is set, but {why}; running without the shared Redis tier")));
        let Some(uri_text) = var("REDIS_URI").filter(|v| !v.trim().is_empty()) else {
            return warn("REDIS_URI is empty".into());
        };
        let encryption_key = match var("CREDS_KEY").filter(|v| !v.trim().is_empty()) {
            None => return warn("CREDS_KEY is not set, and tokens are not stored in Redis unencrypted".into()),
            Some(text) => match parse_encryption_key(text.trim(), ENV_SOURCE.encryption_key) {
                Ok(key) => key,
                Err(err) => return warn(err.to_string()),
            },
        };
        let non_blank = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        // As LibreChat's cacheConfig: REDIS_KEY_PREFIX_VAR names the variable
        // that holds the prefix (a deployment id); both set is refused.
        let key_prefix =
            match (non_blank("REDIS_KEY_PREFIX_VAR"), non_blank("REDIS_KEY_PREFIX")) {
                (Some(_), Some(_)) => return warn(
                    "both REDIS_KEY_PREFIX_VAR and REDIS_KEY_PREFIX are set, and LibreChat refuses to start with both"
                        .into(),
                ),
                (Some(name), None) => non_blank(&name).unwrap_or_default(),
                (None, prefix) => prefix.unwrap_or_default(),
            };
        let settings = Settings {
            uri_text,
            cluster: is_enabled(var("USE_REDIS_CLUSTER")),
            key_prefix,
            username: non_blank("REDIS_USERNAME"),
            password: non_blank("REDIS_PASSWORD"),
            ca_path: non_blank("REDIS_CA"),
            timeout: DEFAULT_TIMEOUT,
            encryption_key,
        };
        match build(&ENV_SOURCE, settings) {
            Ok(options) => (Some(options), None),
            Err(err) => warn(err.to_string()),
        }
    }
}

/// LibreChat's `isEnabled`: the text `true`, in any case, trimmed.
fn is_enabled(value: Option<String>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

struct Settings {
    uri_text: String,
    cluster: bool,
    key_prefix: String,
    username: Option<String>,
    password: Option<String>,
    ca_path: Option<String>,
    timeout: Duration,
    encryption_key: [u8; 32],
}

fn build(names: &Names, s: Settings) -> Result<RedisOptions, ConfigError> {
    let uris: Vec<String> = s.uri_text.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    if uris.is_empty() {
        return Err(ConfigError::new(names.uri, "is empty"));
    }
    let mut tls = None;
    for (i, uri) in uris.iter().enumerate() {
        let this_tls = if uri.starts_with("rediss://") {
            true
        } else if uri.starts_with("redis://") {
            false
        } else {
            return Err(ConfigError::new(names.uri, format!("URI {} must start with redis:// or rediss://", i + 1)));
        };
        if tls.is_some_and(|t| t != this_tls) {
            return Err(ConfigError::new(names.uri, "mixes redis:// and rediss:// URIs"));
        }
        tls = Some(this_tls);
        // The parser's own message may quote the URI, password included: not passed on.
        if uri.as_str().into_connection_info().is_err() {
            return Err(ConfigError::new(names.uri, format!("URI {} is not a valid Redis URI", i + 1)));
        }
    }
    if s.username.is_some() && s.password.is_none() {
        return Err(ConfigError::new(names.password, format!("is required with {}", names.username)));
    }
    let ca_pem = match &s.ca_path {
        None => None,
        Some(path) => Some(read_ca(path, names.ca)?),
    };
    Ok(RedisOptions {
        cluster: s.cluster || uris.len() > 1,
        uris,
        key_prefix: s.key_prefix,
        username: s.username,
        password: s.password,
        ca_path: s.ca_path.map(PathBuf::from),
        ca_pem,
        timeout: s.timeout,
        encryption_key: s.encryption_key,
        breaker: BreakerPolicy::default(),
        poll_interval: DEFAULT_POLL_INTERVAL,
    })
}

fn read_ca(path: &str, option: &'static str) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|err| ConfigError::new(option, format!("cannot read the CA file {path:?}: {}", err.kind())))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(option, format!("the CA file {path:?} holds no PEM certificate")));
    }
    Ok(pem)
}

/// The `CREDS_KEY` of LibreChat's `.env.example`, copied into many public
/// deployment files: anyone can read it, so it protects nothing.
const LIBRECHAT_EXAMPLE_KEY: &str = "f34be427ebb29de8d88c107a71546019685ed8b241d8f2ed00c3df97ad2566f0";

fn parse_encryption_key(text: &str, option: &'static str) -> Result<[u8; 32], ConfigError> {
    let bytes = text.as_bytes();
    let invalid = || ConfigError::new(option, "must be 64 hexadecimal characters (32 bytes)");
    if bytes.len() != 64 {
        return Err(invalid());
    }
    let generate = "generate one with `openssl rand -hex 32`";
    if text.eq_ignore_ascii_case(LIBRECHAT_EXAMPLE_KEY) {
        return Err(ConfigError::new(
            option,
            format!(
                "is the example value of LibreChat's .env.example, published with it: it cannot protect tokens in Redis; {generate}"
            ),
        ));
    }
    if bytes.iter().all(|byte| byte.eq_ignore_ascii_case(&bytes[0])) {
        return Err(ConfigError::new(option, format!("is one character repeated, not a secret key; {generate}")));
    }
    let mut key = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hex = |b: u8| (b as char).to_digit(16).ok_or_else(invalid);
        key[i] = (hex(pair[0])? * 16 + hex(pair[1])?) as u8;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    fn options(value: Value) -> Result<Option<RedisOptions>, OptionError> {
        RedisOptions::from_options(&Options(value.as_object().unwrap()))
    }

    #[test]
    fn no_uri_means_no_tier() {
        assert!(options(json!({})).unwrap().is_none());
        assert!(options(json!({ "cacheEncryptionKey": KEY, "redisUri": null })).unwrap().is_none());
    }

    #[test]
    fn a_uri_without_an_encryption_key_is_refused_naming_the_key() {
        let err = options(json!({ "redisUri": "redis://127.0.0.1:1" })).unwrap_err();
        assert_eq!(err.option, "cacheEncryptionKey");
        let err = options(json!({ "redisUri": "redis://127.0.0.1:1", "cacheEncryptionKey": "abc" })).unwrap_err();
        assert_eq!(err.option, "cacheEncryptionKey");
    }

    #[test]
    fn options_are_parsed_and_several_uris_make_a_cluster() {
        let o = options(json!({
            "redisUri": "redis://127.0.0.1:7001, redis://127.0.0.1:7002",
            "redisKeyPrefix": "lc:",
            "redisTimeoutMs": 50,
            "cacheEncryptionKey": KEY,
        }))
        .unwrap()
        .unwrap();
        assert_eq!(o.uris, ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]);
        assert!(o.cluster);
        assert_eq!(o.key_prefix, "lc:");
        assert_eq!(o.timeout, Duration::from_millis(50));
        assert_eq!(o.encryption_key[0], 0x00);
        assert_eq!(o.encryption_key[31], 0xff);
        let single = options(json!({ "redisUri": "redis://h:1", "cacheEncryptionKey": KEY, "redisCluster": true }))
            .unwrap()
            .unwrap();
        assert!(single.cluster);
        assert_eq!(single.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn errors_name_the_option_and_never_quote_a_uri() {
        let secret = "redis://user:hunter2@127.0.0.1:1";
        for (value, option) in [
            (json!({ "redisUri": 5, "cacheEncryptionKey": KEY }), "redisUri"),
            (json!({ "redisUri": "http://user:hunter2@h", "cacheEncryptionKey": KEY }), "redisUri"),
            (
                json!({ "redisUri": format!("{secret},rediss://user:hunter2@h:2"), "cacheEncryptionKey": KEY }),
                "redisUri",
            ),
            (json!({ "redisUri": secret, "cacheEncryptionKey": KEY, "redisTimeoutMs": 0 }), "redisTimeoutMs"),
            (json!({ "redisUri": secret, "cacheEncryptionKey": KEY, "redisTimeoutMs": "5" }), "redisTimeoutMs"),
            (json!({ "redisUri": secret, "cacheEncryptionKey": KEY, "redisCluster": "yes" }), "redisCluster"),
            (json!({ "redisUri": secret, "cacheEncryptionKey": KEY, "redisCa": "/nonexistent/ca.pem" }), "redisCa"),
            (json!({ "redisUri": secret, "cacheEncryptionKey": KEY, "redisUsername": "u" }), "redisPassword"),
        ] {
            let err = options(value).unwrap_err();
            assert_eq!(err.option, option, "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn debug_shows_no_credential() {
        let o = options(json!({
            "redisUri": "redis://user:hunter2@127.0.0.1:1",
            "redisPassword": "sesame",
            "redisUsername": "user",
            "cacheEncryptionKey": KEY,
        }))
        .unwrap()
        .unwrap();
        let shown = format!("{o:?}");
        for secret in ["hunter2", "sesame", "00112233"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn librechats_example_key_and_repeated_characters_are_refused_naming_the_key() {
        let example = "f34be427ebb29de8d88c107a71546019685ed8b241d8f2ed00c3df97ad2566f0";
        for key in [example.to_owned(), example.to_uppercase(), "0".repeat(64), "aA".repeat(32)] {
            let err = options(json!({ "redisUri": "redis://127.0.0.1:1", "cacheEncryptionKey": key })).unwrap_err();
            assert_eq!(err.option, "cacheEncryptionKey");
            assert!(err.message.starts_with("configure: option \"cacheEncryptionKey\" is "), "{}", err.message);
            assert!(err.message.contains("openssl rand -hex 32") && !err.message.contains(&key), "{}", err.message);
        }
        for pairs in [
            &[("USE_REDIS", "true"), ("REDIS_URI", "redis://h:1"), ("CREDS_KEY", example)][..],
            &[
                ("USE_REDIS", "true"),
                ("REDIS_URI", "redis://h:1"),
                ("CREDS_KEY", "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
            ][..],
        ] {
            let pairs: &'static [(&str, &str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            let (o, warning) = RedisOptions::from_env(env(pairs));
            assert!(o.is_none());
            let warning = warning.unwrap();
            assert!(warning.starts_with("USE_REDIS is set, but CREDS_KEY: is "), "{warning}");
            assert!(warning.ends_with("running without the shared Redis tier"), "{warning}");
        }
        assert!(options(json!({ "redisUri": "redis://127.0.0.1:1", "cacheEncryptionKey": "0f".repeat(32) })).is_ok());
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn librechat_environment() {
        let (o, warning) = RedisOptions::from_env(env(&[
            ("USE_REDIS", "TRUE "),
            ("REDIS_URI", "redis://127.0.0.1:7001"),
            ("USE_REDIS_CLUSTER", "true"),
            ("REDIS_KEY_PREFIX", "lc"),
            ("CREDS_KEY", KEY),
        ]));
        let o = o.unwrap();
        assert!(warning.is_none());
        assert!(o.cluster);
        assert_eq!(o.key_prefix, "lc");

        assert_eq!(
            RedisOptions::from_env(env(&[("REDIS_URI", "redis://h:1"), ("CREDS_KEY", KEY)])).0.map(|_| ()),
            None
        );
        assert!(RedisOptions::from_env(env(&[("REDIS_URI", "redis://h:1"), ("CREDS_KEY", KEY)])).1.is_none());
    }

    #[test]
    fn redis_key_prefix_var_names_the_variable_that_holds_the_prefix_as_in_librechat() {
        let base = [("USE_REDIS", "true"), ("REDIS_URI", "redis://h:1"), ("CREDS_KEY", KEY)];
        let with = |extra: &[(&'static str, &'static str)]| {
            let pairs: &'static [(&str, &str)] = Box::leak([&base[..], extra].concat().into_boxed_slice());
            RedisOptions::from_env(env(pairs))
        };
        let (o, warning) = with(&[("REDIS_KEY_PREFIX_VAR", "DEPLOYMENT_ID"), ("DEPLOYMENT_ID", "prod-eu-7")]);
        assert_eq!((o.unwrap().key_prefix.as_str(), warning), ("prod-eu-7", None));
        // A variable that is unset or empty: no prefix, as LibreChat.
        assert_eq!(with(&[("REDIS_KEY_PREFIX_VAR", "DEPLOYMENT_ID")]).0.unwrap().key_prefix, "");
        assert_eq!(with(&[("REDIS_KEY_PREFIX", "lc:")]).0.unwrap().key_prefix, "lc:");
        let (o, warning) = with(&[("REDIS_KEY_PREFIX_VAR", "DEPLOYMENT_ID"), ("REDIS_KEY_PREFIX", "lc:")]);
        assert!(o.is_none());
        assert!(warning.unwrap().contains("both REDIS_KEY_PREFIX_VAR and REDIS_KEY_PREFIX are set"));
    }

    #[test]
    fn librechat_environment_without_a_usable_creds_key_warns_and_runs_without_redis() {
        for pairs in [
            &[("USE_REDIS", "true"), ("REDIS_URI", "redis://u:hunter2@h:1")][..],
            &[("USE_REDIS", "true"), ("REDIS_URI", "redis://u:hunter2@h:1"), ("CREDS_KEY", "short")][..],
        ] {
            let pairs: &'static [(&str, &str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            let (o, warning) = RedisOptions::from_env(env(pairs));
            assert!(o.is_none());
            let warning = warning.unwrap();
            assert!(warning.contains("CREDS_KEY"), "{warning}");
            assert!(!warning.contains("hunter2"), "{warning}");
        }
    }
}
