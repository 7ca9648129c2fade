//! The second dialect of On-Behalf-Of: OAuth 2.0 Token Exchange (RFC 8693).
//!
//! Entra ID speaks the jwt-bearer grant (`grant.rs`); Keycloak, Okta, Auth0,
//! Ping and ZITADEL speak token exchange instead. Both dialects share
//! everything else (client authentication, cache, flights, retries, Redis),
//! so the configuration holds a [`Grant`] and the engine only asks it for the
//! request's form body, for an actor token, and for its verdict on a token
//! response: it never branches on the dialect itself.
//!
//! What a token exchange returns depends on more than the user and the
//! scopes: the audiences, the resources and the requested token type. They
//! are part of every key ([`Grant::key`]), so two audiences never share a token.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::form_urlencoded;

use crate::config::Options;
use crate::credentials::{AssertionCallback, AssertionRequest};
use crate::error::{ConfigError, ExchangeError};
use crate::grant::{self, ClientAuth};
use crate::key::GrantKey;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The default `subject_token_type`, `requested_token_type` and `actor_token_type`.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §2.2.1: the `token_type` of an issued token that is not an access token.
pub const NOT_APPLICABLE: &str = "N_A";
/// The `code` of a response whose token is not of the requested type.
pub const TOKEN_TYPE_MISMATCH: &str = "ETOKENTYPE";
/// The `code` of an exchange that failed because the `actorToken` function gave no token.
pub const ACTOR_TOKEN_UNAVAILABLE: &str = "EACTORTOKEN";

/// The options of `configure()` that belong to token exchange.
pub const OPTIONS: &[&str] =
    &["grantType", "audience", "resource", "subjectTokenType", "requestedTokenType", "actorToken", "actorTokenType"];

/// Which grant the token request uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Grant {
    /// Entra ID's On-Behalf-Of: `jwt-bearer` with `requested_token_use=on_behalf_of`.
    #[default]
    JwtBearer,
    TokenExchange(TokenExchange),
}

/// The configured parameters of RFC 8693 §2.1.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenExchange {
    pub subject_token_type: String,
    pub requested_token_type: String,
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub actor: Option<ActorToken>,
    pub actor_token_type: String,
}

/// Where `actor_token` comes from: fixed, or asked of the host before each request.
#[derive(Clone)]
pub enum ActorToken {
    Fixed(Arc<str>),
    Callback(Arc<dyn AssertionCallback>),
}

impl PartialEq for ActorToken {
    fn eq(&self, other: &ActorToken) -> bool {
        match (self, other) {
            (ActorToken::Fixed(a), ActorToken::Fixed(b)) => a == b,
            (ActorToken::Callback(a), ActorToken::Callback(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for ActorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActorToken::Fixed(_) => "ActorToken::Fixed([redacted])",
            ActorToken::Callback(_) => "ActorToken::Callback",
        })
    }
}

/// A call's own audiences and resources (`acquireOboToken({ audience, resource })`),
/// each in place of the configured ones when given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub audiences: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
}

/// A refused per-call `audience` or `resource`: the facade makes it a TypeError naming `option`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError {
    pub option: &'static str,
    pub message: String,
}

impl Grant {
    /// The options of `configure()`: `grantType` and, for token exchange, its
    /// parameters. `actor_callback` is the host's `actorToken` function.
    pub(crate) fn from_options(
        options: &Options<'_>,
        actor_callback: Option<Arc<dyn AssertionCallback>>,
    ) -> Result<Grant, ConfigError> {
        let exchange = match options.string("grantType")?.as_deref() {
            None | Some("jwt-bearer") | Some(grant::GRANT_TYPE) => false,
            Some("token-exchange") | Some(GRANT_TYPE) => true,
            Some(_) => return Err(ConfigError::new(
                "grantType",
                "configure: option \"grantType\" must be \"jwt-bearer\" (Entra ID) or \"token-exchange\" (RFC 8693)",
            )),
        };
        if !exchange {
            let given = OPTIONS[1..].iter().find(|name| options.get(name).is_some());
            let given = given.copied().or(actor_callback.is_some().then_some("actorToken"));
            if let Some(option) = given {
                return Err(ConfigError::new(
                    option,
                    format!(
                        "configure: option \"{option}\" applies to grantType \"token-exchange\", not \"jwt-bearer\""
                    ),
                ));
            }
            return Ok(Grant::JwtBearer);
        }
        let list = |name: &'static str| -> Result<Vec<String>, ConfigError> {
            let values = match options.get(name) {
                None => Vec::new(),
                Some(Value::String(text)) => vec![text.clone()],
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|value| value.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| list_error("configure: option", name))?,
                Some(_) => return Err(list_error("configure: option", name)),
            };
            check_values(name, values)
                .map_err(|err| ConfigError::new(err.option, format!("configure: {}", err.message)))
        };
        let token_type = |name: &'static str| -> Result<String, ConfigError> {
            match options.string(name)? {
                None => Ok(ACCESS_TOKEN_TYPE.to_owned()),
                Some(text) => check_token_type(&text)
                    .map(str::to_owned)
                    .map_err(|why| ConfigError::new(name, format!("configure: option \"{name}\" {why}"))),
            }
        };
        let actor = match (options.string("actorToken")?, actor_callback) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new("actorToken", "configure: option \"actorToken\" is given twice"))
            }
            (Some(text), None) if text.trim().is_empty() => {
                return Err(ConfigError::new("actorToken", "configure: option \"actorToken\" is empty"))
            }
            (Some(text), None) => Some(ActorToken::Fixed(Arc::from(text.trim()))),
            (None, Some(callback)) => Some(ActorToken::Callback(callback)),
            (None, None) => None,
        };
        if actor.is_none() && options.get("actorTokenType").is_some() {
            return Err(ConfigError::new(
                "actorTokenType",
                "configure: option \"actorTokenType\" applies to actorToken, which is not given",
            ));
        }
        Ok(Grant::TokenExchange(TokenExchange {
            subject_token_type: token_type("subjectTokenType")?,
            requested_token_type: token_type("requestedTokenType")?,
            audiences: list("audience")?,
            resources: list("resource")?,
            actor,
            actor_token_type: token_type("actorTokenType")?,
        }))
    }

    /// LibreChat's deployments configure by environment: `OBO_GRANT_TYPE`,
    /// and `OBO_AUDIENCE` / `OBO_RESOURCE` (space-separated lists),
    /// `OBO_SUBJECT_TOKEN_TYPE`, `OBO_REQUESTED_TOKEN_TYPE`.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Grant, ConfigError> {
        let exchange = match var("OBO_GRANT_TYPE").as_deref() {
            None | Some("jwt-bearer") | Some(grant::GRANT_TYPE) => false,
            Some("token-exchange") | Some(GRANT_TYPE) => true,
            Some(_) => {
                return Err(ConfigError::new("OBO_GRANT_TYPE", "OBO_GRANT_TYPE must be jwt-bearer or token-exchange"))
            }
        };
        const EXCHANGE_ONLY: [&str; 4] =
            ["OBO_AUDIENCE", "OBO_RESOURCE", "OBO_SUBJECT_TOKEN_TYPE", "OBO_REQUESTED_TOKEN_TYPE"];
        if !exchange {
            if let Some(name) = EXCHANGE_ONLY.iter().find(|name| var(name).is_some()) {
                return Err(ConfigError::new(
                    *name,
                    format!("{name} applies to OBO_GRANT_TYPE=token-exchange, which is not set"),
                ));
            }
            return Ok(Grant::JwtBearer);
        }
        let list = |name: &'static str| -> Result<Vec<String>, ConfigError> {
            let values = var(name).map(|text| text.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
            check_values(if name == "OBO_RESOURCE" { "resource" } else { "audience" }, values)
                .map_err(|err| ConfigError::new(name, format!("{name}: {}", err.message)))
        };
        let token_type = |name: &'static str| -> Result<String, ConfigError> {
            match var(name) {
                None => Ok(ACCESS_TOKEN_TYPE.to_owned()),
                Some(text) => check_token_type(&text)
                    .map(str::to_owned)
                    .map_err(|why| ConfigError::new(name, format!("{name} {why}"))),
            }
        };
        Ok(Grant::TokenExchange(TokenExchange {
            subject_token_type: token_type("OBO_SUBJECT_TOKEN_TYPE")?,
            requested_token_type: token_type("OBO_REQUESTED_TOKEN_TYPE")?,
            audiences: list("OBO_AUDIENCE")?,
            resources: list("OBO_RESOURCE")?,
            actor: None,
            actor_token_type: ACCESS_TOKEN_TYPE.to_owned(),
        }))
    }

    /// The grant's part of the key of a call without audiences or resources of its own.
    pub fn configured_key(&self) -> GrantKey {
        match self {
            Grant::JwtBearer => GrantKey::of(grant::GRANT_TYPE, &[], &[], ""),
            Grant::TokenExchange(exchange) => {
                GrantKey::of(GRANT_TYPE, &exchange.audiences, &exchange.resources, &exchange.requested_token_type)
            }
        }
    }

    /// The grant's part of every key: its type, and for token exchange the
    /// audiences and resources (the call's, else the configured ones) and
    /// the requested token type.
    pub fn key(&self, target: Option<&Target>) -> Result<GrantKey, TargetError> {
        match self {
            Grant::JwtBearer => match target {
                None => Ok(self.configured_key()),
                Some(target) => Err(TargetError {
                    option: if target.audiences.is_some() { "audience" } else { "resource" },
                    message:
                        "audience and resource apply to grantType \"token-exchange\"; this client uses \"jwt-bearer\""
                            .into(),
                }),
            },
            Grant::TokenExchange(exchange) => {
                let (audiences, resources) = exchange.targets(target);
                Ok(GrantKey::of(GRANT_TYPE, audiences, resources, &exchange.requested_token_type))
            }
        }
    }

    /// The form body of the token request for `assertion` (the user's token).
    pub fn form_body(
        &self,
        assertion: &str,
        scopes: &str,
        target: Option<&Target>,
        actor_token: Option<&str>,
        auth: &ClientAuth<'_>,
        claims: Option<&str>,
    ) -> String {
        match self {
            Grant::JwtBearer => grant::form_body(assertion, scopes, auth, claims),
            Grant::TokenExchange(exchange) => exchange.form_body(assertion, scopes, target, actor_token, auth, claims),
        }
    }

    /// The actor token of the next request, if the configuration has one. A
    /// function has `deadline` to answer, as a `clientAssertion` function
    /// has; its failure is never retried within the call, and is retryable
    /// later only when its error says so.
    pub async fn actor_token(
        &self,
        token_endpoint: &str,
        client_id: &str,
        deadline: Duration,
    ) -> Result<Option<Arc<str>>, ExchangeError> {
        let Grant::TokenExchange(TokenExchange { actor: Some(actor), .. }) = self else { return Ok(None) };
        let callback = match actor {
            ActorToken::Fixed(token) => return Ok(Some(token.clone())),
            ActorToken::Callback(callback) => callback,
        };
        let request = AssertionRequest { client_id: client_id.to_owned(), token_endpoint: token_endpoint.to_owned() };
        let (why, retryable) = match tokio::time::timeout(deadline, callback.call(request)).await {
            Ok(Ok(token)) if !token.trim().is_empty() => return Ok(Some(Arc::from(token.trim()))),
            Ok(Ok(_)) => ("the actorToken function returned an empty token".to_owned(), false),
            Ok(Err(failure)) => (format!("the actorToken function failed: {}", failure.message), failure.retryable),
            Err(_) => (
                format!("the actorToken function did not settle within {} ms (timeoutMs)", deadline.as_millis()),
                false,
            ),
        };
        let mut err =
            ExchangeError::failed(format!("OBO token request not sent: {why}")).with_code(ACTOR_TOKEN_UNAVAILABLE);
        err.retryable = retryable;
        Err(err)
    }

    /// RFC 8693 §2.2.1 on a successful answer: the issued token must be of
    /// the requested type, and `token_type` `N_A` (not an access token) is
    /// accepted only when no access token was requested.
    pub fn check_success(&self, status: u16, body: &[u8]) -> Result<(), ExchangeError> {
        let Grant::TokenExchange(exchange) = self else { return Ok(()) };
        #[derive(Deserialize)]
        struct Types {
            #[serde(default)]
            issued_token_type: Option<Value>,
            #[serde(default)]
            token_type: Option<Value>,
        }
        let Ok(types) = serde_json::from_slice::<Types>(body) else { return Ok(()) };
        let requested = exchange.requested_token_type.as_str();
        if let Some(Value::String(issued)) = &types.issued_token_type {
            if issued != requested {
                return Err(ExchangeError::failed(format!(
                    "The identity provider issued a token of type {issued}, but {requested} was requested (issued_token_type); the token was not used"
                ))
                .with_status(status)
                .with_code(TOKEN_TYPE_MISMATCH));
            }
        }
        if let Some(Value::String(token_type)) = &types.token_type {
            if token_type.eq_ignore_ascii_case(NOT_APPLICABLE) && requested == ACCESS_TOKEN_TYPE {
                return Err(ExchangeError::failed(format!(
                    "The identity provider answered token_type N_A (the token is not an access token), but {requested} was requested; the token was not used"
                ))
                .with_status(status)
                .with_code(TOKEN_TYPE_MISMATCH));
            }
        }
        Ok(())
    }

    pub fn is_token_exchange(&self) -> bool {
        matches!(self, Grant::TokenExchange(_))
    }

    /// A fixed actor token: a secret that an error text must never contain.
    pub fn fixed_secret(&self) -> Option<&str> {
        match self {
            Grant::TokenExchange(TokenExchange { actor: Some(ActorToken::Fixed(token)), .. }) => Some(token),
            _ => None,
        }
    }
}

impl TokenExchange {
    fn targets<'a>(&'a self, target: Option<&'a Target>) -> (&'a [String], &'a [String]) {
        let audiences = target.and_then(|target| target.audiences.as_deref()).unwrap_or(&self.audiences);
        let resources = target.and_then(|target| target.resources.as_deref()).unwrap_or(&self.resources);
        (audiences, resources)
    }

    /// RFC 8693 §2.1: no `assertion` and no `requested_token_use`; each
    /// audience and resource a parameter of its own.
    fn form_body(
        &self,
        subject_token: &str,
        scopes: &str,
        target: Option<&Target>,
        actor_token: Option<&str>,
        auth: &ClientAuth<'_>,
        claims: Option<&str>,
    ) -> String {
        let (audiences, resources) = self.targets(target);
        let capacity = subject_token.len() + scopes.len() + actor_token.map_or(0, str::len) + 300;
        let mut form = form_urlencoded::Serializer::new(String::with_capacity(capacity));
        form.append_pair("grant_type", GRANT_TYPE)
            .append_pair("subject_token", subject_token)
            .append_pair("subject_token_type", &self.subject_token_type)
            .append_pair("requested_token_type", &self.requested_token_type);
        if !scopes.is_empty() {
            form.append_pair("scope", scopes);
        }
        for audience in audiences {
            form.append_pair("audience", audience);
        }
        for resource in resources {
            form.append_pair("resource", resource);
        }
        if let Some(actor_token) = actor_token {
            form.append_pair("actor_token", actor_token).append_pair("actor_token_type", &self.actor_token_type);
        }
        grant::append_client_auth(&mut form, auth);
        if let Some(claims) = claims {
            form.append_pair("claims", claims);
        }
        form.finish()
    }
}

/// A call's own `audience`/`resource`, checked as the configured ones are.
pub fn check_target(audiences: Option<Vec<String>>, resources: Option<Vec<String>>) -> Result<Target, TargetError> {
    let check = |name: &'static str, values: Option<Vec<String>>| match values {
        None => Ok(None),
        Some(values) => check_values(name, values).map(Some),
    };
    Ok(Target { audiences: check("audience", audiences)?, resources: check("resource", resources)? })
}

fn list_error(prefix: &str, name: &'static str) -> ConfigError {
    ConfigError::new(name, format!("{prefix} \"{name}\" must be a string or an array of strings"))
}

/// Audiences are names (anything but blank); resources are absolute URIs
/// without a fragment (RFC 8707 §2).
fn check_values(name: &'static str, values: Vec<String>) -> Result<Vec<String>, TargetError> {
    for value in &values {
        if value.trim().is_empty() {
            return Err(TargetError {
                option: name,
                message: format!("option \"{name}\" must not hold a blank value"),
            });
        }
        if name == "resource" {
            match url::Url::parse(value) {
                Ok(url) if url.fragment().is_none() => {}
                _ => {
                    return Err(TargetError {
                        option: name,
                        message: format!("option \"{name}\" must hold absolute URIs without a fragment (RFC 8707)"),
                    })
                }
            }
        }
    }
    Ok(values)
}

/// Token type identifiers are URIs (RFC 8693 §3): Auth0's custom ones too.
fn check_token_type(text: &str) -> Result<&str, &'static str> {
    let text = text.trim();
    let scheme = text.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default();
    let is_scheme = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme || text.chars().any(char::is_whitespace) {
        return Err("must be a token type URI, such as urn:ietf:params:oauth:token-type:access_token");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMethod;
    use serde_json::json;

    fn grant(options: Value) -> Result<Grant, ConfigError> {
        let Value::Object(map) = options else { unreachable!() };
        Grant::from_options(&Options(&map), None)
    }

    fn pairs(body: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(body.as_bytes()).into_owned().collect()
    }

    const AUTH: ClientAuth<'static> = ClientAuth {
        client_id: "app",
        client_secret: Some("s"),
        method: AuthMethod::ClientSecretPost,
        client_assertion: None,
    };

    #[test]
    fn the_request_has_the_rfc_8693_fields_and_defaults() {
        let grant = grant(json!({ "grantType": "token-exchange" })).unwrap();
        let body = grant.form_body("subject.jwt", "openid mcp:read", None, None, &AUTH, None);
        assert_eq!(
            pairs(&body),
            [
                ("grant_type", GRANT_TYPE),
                ("subject_token", "subject.jwt"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "openid mcp:read"),
                ("client_id", "app"),
                ("client_secret", "s"),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
        );
        assert!(!body.contains("assertion=") && !body.contains("requested_token_use"));
    }

    #[test]
    fn audiences_and_resources_repeat_and_a_call_replaces_them() {
        let grant = grant(json!({
            "grantType": "token-exchange", "audience": ["mcp-a", "mcp-b"], "resource": "https://mcp.example.com/api",
            "subjectTokenType": "urn:acme:legacy-token", "requestedTokenType": "urn:ietf:params:oauth:token-type:jwt",
            "actorToken": " actor.jwt ", "actorTokenType": "urn:ietf:params:oauth:token-type:jwt",
        }))
        .unwrap();
        let named = |body: &str, name: &str| -> Vec<String> {
            pairs(body).into_iter().filter(|(key, _)| key == name).map(|(_, value)| value).collect()
        };
        let body = grant.form_body("s", "x", None, Some("actor.jwt"), &AUTH, None);
        assert_eq!(named(&body, "audience"), ["mcp-a", "mcp-b"]);
        assert_eq!(named(&body, "resource"), ["https://mcp.example.com/api"]);
        assert_eq!(named(&body, "subject_token_type"), ["urn:acme:legacy-token"]);
        assert_eq!(named(&body, "actor_token"), ["actor.jwt"]);
        assert_eq!(named(&body, "actor_token_type"), ["urn:ietf:params:oauth:token-type:jwt"]);
        let target = check_target(Some(vec!["mcp-c".into()]), None).unwrap();
        let body = grant.form_body("s", "x", Some(&target), None, &AUTH, None);
        assert_eq!(named(&body, "audience"), ["mcp-c"]);
        assert_eq!(named(&body, "resource"), ["https://mcp.example.com/api"]);
        assert!(named(&body, "actor_token").is_empty());
        assert_eq!(grant.fixed_secret(), Some("actor.jwt"));
    }

    #[test]
    fn the_key_separates_grants_audiences_resources_and_token_types() {
        let exchange = grant(json!({ "grantType": "token-exchange", "audience": "a" })).unwrap();
        let keys = [
            Grant::JwtBearer.key(None).unwrap(),
            exchange.key(None).unwrap(),
            exchange.key(Some(&check_target(Some(vec!["b".into()]), None).unwrap())).unwrap(),
            exchange.key(Some(&check_target(None, Some(vec!["https://r".into()])).unwrap())).unwrap(),
            grant(json!({ "grantType": "token-exchange", "audience": "a", "requestedTokenType": "urn:x:y" }))
                .unwrap()
                .key(None)
                .unwrap(),
            grant(json!({ "grantType": "token-exchange", "audience": ["a", "b"] })).unwrap().key(None).unwrap(),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The configured audience given again per call is the same key.
        let same = check_target(Some(vec!["a".into()]), None).unwrap();
        assert_eq!(exchange.key(Some(&same)).unwrap(), keys[1]);
        assert_eq!(Grant::JwtBearer.key(Some(&same)).unwrap_err().option, "audience");
    }

    #[test]
    fn options_are_checked_and_errors_name_them() {
        let cases = [
            (json!({ "grantType": "saml" }), "grantType"),
            (json!({ "audience": "a" }), "audience"),
            (json!({ "grantType": "jwt-bearer", "actorToken": "x" }), "actorToken"),
            (json!({ "grantType": "token-exchange", "audience": [1] }), "audience"),
            (json!({ "grantType": "token-exchange", "audience": " " }), "audience"),
            (json!({ "grantType": "token-exchange", "resource": "not a uri" }), "resource"),
            (json!({ "grantType": "token-exchange", "resource": "https://r#frag" }), "resource"),
            (json!({ "grantType": "token-exchange", "subjectTokenType": "access_token" }), "subjectTokenType"),
            (json!({ "grantType": "token-exchange", "requestedTokenType": 5 }), "requestedTokenType"),
            (json!({ "grantType": "token-exchange", "actorTokenType": "urn:x:y" }), "actorTokenType"),
            (json!({ "grantType": "token-exchange", "actorToken": "" }), "actorToken"),
        ];
        for (options, option) in cases {
            let err = grant(options.clone()).unwrap_err();
            assert_eq!(err.option, option, "{options}: {}", err.message);
            assert!(err.message.starts_with("configure: option"), "{}", err.message);
        }
        assert!(grant(json!({ "grantType": GRANT_TYPE })).unwrap().is_token_exchange());
        assert!(!grant(json!({})).unwrap().is_token_exchange());
    }

    #[test]
    fn the_environment_names_the_variable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
        };
        let Grant::TokenExchange(exchange) = Grant::from_env(&env(&[
            ("OBO_GRANT_TYPE", "token-exchange"),
            ("OBO_AUDIENCE", "mcp-a  mcp-b"),
            ("OBO_RESOURCE", "https://mcp.example.com"),
        ]))
        .unwrap() else {
            panic!("token exchange")
        };
        assert_eq!(exchange.audiences, ["mcp-a", "mcp-b"]);
        assert_eq!(exchange.resources, ["https://mcp.example.com"]);
        assert!(matches!(Grant::from_env(&env(&[])).unwrap(), Grant::JwtBearer));
        for (pairs, name) in [
            (&[("OBO_GRANT_TYPE", "exchange")][..], "OBO_GRANT_TYPE"),
            (&[("OBO_AUDIENCE", "a")][..], "OBO_AUDIENCE"),
            (&[("OBO_GRANT_TYPE", "token-exchange"), ("OBO_RESOURCE", "relative")][..], "OBO_RESOURCE"),
            (&[("OBO_GRANT_TYPE", "token-exchange"), ("OBO_SUBJECT_TOKEN_TYPE", "jwt")][..], "OBO_SUBJECT_TOKEN_TYPE"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            assert_eq!(Grant::from_env(&env(pairs)).unwrap_err().option, name);
        }
    }

    #[test]
    fn a_token_of_another_type_or_n_a_for_an_access_token_is_refused() {
        let exchange = grant(json!({ "grantType": "token-exchange" })).unwrap();
        let check = |body: Value| exchange.check_success(200, body.to_string().as_bytes());
        assert!(check(json!({ "access_token": "t", "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer" }))
            .is_ok());
        assert!(check(json!({ "access_token": "t" })).is_ok());
        let err =
            check(json!({ "access_token": "t", "issued_token_type": "urn:ietf:params:oauth:token-type:id_token" }))
                .unwrap_err();
        assert!(
            err.message.contains("urn:ietf:params:oauth:token-type:id_token")
                && err.message.contains(ACCESS_TOKEN_TYPE)
        );
        assert_eq!((err.code.as_deref(), err.retryable), (Some(TOKEN_TYPE_MISMATCH), false));
        let err = check(json!({ "access_token": "t", "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "N_A" }))
            .unwrap_err();
        assert!(err.message.contains("N_A"));
        let jwt = grant(
            json!({ "grantType": "token-exchange", "requestedTokenType": "urn:ietf:params:oauth:token-type:jwt" }),
        )
        .unwrap();
        let body = json!({ "access_token": "t", "issued_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_type": "N_A" });
        assert!(jwt.check_success(200, body.to_string().as_bytes()).is_ok());
        assert!(Grant::JwtBearer.check_success(200, br#"{"access_token":"t","token_type":"N_A"}"#).is_ok());
    }
}
