//! The jwt-bearer (On-Behalf-Of) token request, and the reading of what the
//! token endpoint answers: a token, an OAuth error body, or something else.
//! Pure functions over bytes, so they can be tested and fuzzed on their own.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};
use url::form_urlencoded;

use crate::config::AuthMethod;
use crate::error::{ExchangeError, FailureReason, OAuthErrorBody};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `expires_in` when the provider sends none, or nothing usable.
pub const DEFAULT_EXPIRES_IN: u64 = 3600;
/// The longest lifetime believed: a token is never cached for more than a day.
pub const MAX_EXPIRES_IN: u64 = 86_400;
pub const EMPTY_RESPONSE_MESSAGE: &str = "The identity provider returned no access token for the OBO exchange";

/// Client credentials as the token endpoint wants them.
pub struct ClientAuth<'a> {
    pub client_id: &'a str,
    pub client_secret: Option<&'a str>,
    pub method: AuthMethod,
    /// `private_key_jwt`: the client assertion of this request.
    pub client_assertion: Option<&'a str>,
}

/// The form body of the request. `claims` is a claims request (JSON), sent
/// as the `claims` parameter.
pub fn form_body(assertion: &str, scopes: &str, auth: &ClientAuth<'_>, claims: Option<&str>) -> String {
    let extra = auth.client_assertion.map_or(0, str::len) + claims.map_or(0, |claims| claims.len() * 3);
    let mut body = String::with_capacity(assertion.len() + scopes.len() + 200 + extra);
    body.push_str("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=");
    // A JWT is base64url and dots: nothing to escape, and it is most of the body.
    if assertion.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'*')) {
        body.push_str(assertion);
    } else {
        body.extend(form_urlencoded::byte_serialize(assertion.as_bytes()));
    }
    let mut form = form_urlencoded::Serializer::for_suffix(body, 0);
    form.append_pair("scope", scopes).append_pair("requested_token_use", "on_behalf_of");
    append_client_auth(&mut form, auth);
    if let Some(claims) = claims {
        form.append_pair("claims", claims);
    }
    form.finish()
}

/// The client's credentials as form fields (none for `client_secret_basic`,
/// which goes in the `Authorization` header): the same for every grant.
pub fn append_client_auth(form: &mut form_urlencoded::Serializer<'_, String>, auth: &ClientAuth<'_>) {
    match auth.method {
        AuthMethod::ClientSecretBasic => {}
        AuthMethod::ClientSecretPost => {
            form.append_pair("client_id", auth.client_id);
            form.append_pair("client_secret", auth.client_secret.unwrap_or_default());
        }
        AuthMethod::None => {
            form.append_pair("client_id", auth.client_id);
        }
        AuthMethod::PrivateKeyJwt => {
            form.append_pair("client_id", auth.client_id);
            form.append_pair("client_assertion_type", crate::credentials::CLIENT_ASSERTION_TYPE);
            form.append_pair("client_assertion", auth.client_assertion.unwrap_or_default());
        }
    }
}

/// `Authorization: Basic …` per RFC 6749 §2.3.1: id and secret are
/// form-urlencoded before they are joined and base64-encoded.
pub fn basic_authorization(auth: &ClientAuth<'_>) -> Option<String> {
    if auth.method != AuthMethod::ClientSecretBasic {
        return None;
    }
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(auth.client_id), encode(auth.client_secret.unwrap_or_default()));
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
}

/// A successful answer. The token is allocated once, where the cache keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenResponse {
    pub access_token: Arc<str>,
    pub expires_in: u64,
}

/// The usual success body, read without building a JSON tree: the token is
/// borrowed from the body (tokens are JWTs, which JSON never escapes) and
/// copied once, into the cache's allocation. Every copy of a kilobyte-long
/// token made on the runtime thread and freed again fragments its heap, and
/// each cached entry then costs more than its token. Anything unusual (an
/// error member, a missing or empty token, escapes, duplicate members) goes
/// the general way.
#[derive(Deserialize)]
struct UsualSuccess<'a> {
    #[serde(borrow, default)]
    access_token: Option<Cow<'a, str>>,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// `expires_in` as LibreChat's service reads it: numbers and numeric strings,
/// floored, at least one second (so zero or a negative lifetime is one second,
/// never an hour), capped at a day; missing or not a number → 3600.
pub fn normalize_expires_in(value: Option<&Value>) -> u64 {
    let seconds = match value {
        Some(Value::Number(number)) => number.as_f64(),
        Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        Some(seconds) if seconds.is_finite() => (seconds.floor().max(1.0) as u64).min(MAX_EXPIRES_IN),
        _ => DEFAULT_EXPIRES_IN,
    }
}

/// Reads a 2xx body.
pub fn parse_success(status: u16, body: &[u8]) -> Result<TokenResponse, ExchangeError> {
    if let Ok(UsualSuccess { access_token: Some(Cow::Borrowed(token)), expires_in, error: None }) =
        serde_json::from_slice::<UsualSuccess<'_>>(body)
    {
        if !token.is_empty() {
            return Ok(TokenResponse {
                access_token: Arc::from(token),
                expires_in: normalize_expires_in(expires_in.as_ref()),
            });
        }
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        ExchangeError::failed(format!(
            "The identity provider returned an invalid token response: HTTP {status} with a body that is not JSON ({} bytes)",
            body.len()
        ))
        .with_status(status)
    })?;
    let Value::Object(object) = value else {
        return Err(ExchangeError::failed(format!(
            "The identity provider returned an invalid token response: HTTP {status} with JSON that is not an object"
        ))
        .with_status(status));
    };
    if let Some(body) = oauth_error(&object) {
        return Err(ExchangeError::from_oauth(status, body));
    }
    match object.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => Ok(TokenResponse {
            access_token: Arc::from(token.as_str()),
            expires_in: normalize_expires_in(object.get("expires_in")),
        }),
        _ => Err(ExchangeError::new(FailureReason::EmptyExchangeResponse, EMPTY_RESPONSE_MESSAGE).with_status(status)),
    }
}

/// Reads a non-2xx answer: an OAuth error body when there is one.
pub fn parse_failure(status: u16, content_type: Option<&str>, body: &[u8]) -> ExchangeError {
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) {
        if let Some(oauth) = oauth_error(&object) {
            return ExchangeError::from_oauth(status, oauth);
        }
    }
    if status == 407 {
        return ExchangeError::failed(
            "OBO token request failed: the proxy refused it with HTTP 407 Proxy Authentication Required (check the proxy's credentials)",
        )
        .with_status(status);
    }
    let what = match content_type {
        Some(kind) if !kind.is_empty() => {
            format!("{} bytes of {}", body.len(), kind.split(';').next().unwrap_or(kind).trim())
        }
        _ => format!("{} bytes", body.len()),
    };
    ExchangeError::failed(format!(
        "OBO token request failed: the token endpoint answered HTTP {status}{} without an OAuth error ({what})",
        reason_phrase(status).map(|phrase| format!(" {phrase}")).unwrap_or_default()
    ))
    .with_status(status)
}

fn reason_phrase(status: u16) -> Option<&'static str> {
    reqwest::StatusCode::from_u16(status).ok().and_then(|code| code.canonical_reason())
}

fn oauth_error(object: &Map<String, Value>) -> Option<OAuthErrorBody> {
    let error = object.get("error")?.as_str().filter(|error| !error.is_empty())?;
    let text = |name: &str| match object.get(name) {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let error_codes = match object.get("error_codes") {
        Some(Value::Array(codes)) => Some(codes.iter().filter_map(Value::as_i64).collect()),
        _ => None,
    };
    let claims = match object.get("claims") {
        Some(Value::String(claims)) => Some(claims.clone()),
        Some(claims @ Value::Object(_)) => Some(claims.to_string()),
        _ => None,
    };
    Some(OAuthErrorBody {
        error: error.to_owned(),
        error_description: text("error_description"),
        error_codes,
        correlation_id: text("correlation_id"),
        trace_id: text("trace_id"),
        timestamp: text("timestamp"),
        suberror: text("suberror"),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth(method: AuthMethod) -> ClientAuth<'static> {
        ClientAuth { client_id: "app id:1", client_secret: Some("s&cr=t/+"), method, client_assertion: None }
    }

    #[test]
    fn body_has_the_jwt_bearer_fields() {
        let body = form_body("a.b.c", "api://x/Read offline_access", &auth(AuthMethod::ClientSecretBasic), None);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        assert_eq!(
            pairs,
            vec![
                ("grant_type".into(), GRANT_TYPE.into()),
                ("assertion".into(), "a.b.c".into()),
                ("scope".into(), "api://x/Read offline_access".into()),
                ("requested_token_use".into(), "on_behalf_of".into()),
            ]
        );
    }

    #[test]
    fn the_assertion_is_encoded_like_any_form_value() {
        for assertion in ["eyJ0eXAi.eyJzdWIi.sig-_x", "a b+c/d=e&f", "ünï\0code", ""] {
            let body = form_body(assertion, "api://x/Read", &auth(AuthMethod::ClientSecretBasic), None);
            let expected = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", GRANT_TYPE)
                .append_pair("assertion", assertion)
                .append_pair("scope", "api://x/Read")
                .append_pair("requested_token_use", "on_behalf_of")
                .finish();
            assert_eq!(body, expected, "{assertion}");
        }
    }

    #[test]
    fn client_authentication_by_method() {
        let post = form_body("a", "s", &auth(AuthMethod::ClientSecretPost), None);
        assert!(post.ends_with("&client_id=app+id%3A1&client_secret=s%26cr%3Dt%2F%2B"), "{post}");
        assert!(basic_authorization(&auth(AuthMethod::ClientSecretPost)).is_none());
        let none = form_body("a", "s", &auth(AuthMethod::None), None);
        assert!(none.ends_with("&client_id=app+id%3A1") && !none.contains("secret"));
        let basic = basic_authorization(&auth(AuthMethod::ClientSecretBasic)).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(&basic["Basic ".len()..]).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "app+id%3A1:s%26cr%3Dt%2F%2B");
    }

    #[test]
    fn private_key_jwt_sends_the_client_assertion_and_no_secret() {
        let auth = ClientAuth {
            client_id: "app",
            client_secret: None,
            method: AuthMethod::PrivateKeyJwt,
            client_assertion: Some("h.p.s"),
        };
        let body = form_body("a.b.c", "api://x/Read", &auth, None);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        assert_eq!(
            pairs[4..],
            [
                ("client_id".into(), "app".into()),
                ("client_assertion_type".into(), crate::credentials::CLIENT_ASSERTION_TYPE.into()),
                ("client_assertion".into(), "h.p.s".into()),
            ]
        );
        assert!(basic_authorization(&auth).is_none());
        assert!(!body.contains("secret"));
    }

    #[test]
    fn claims_go_last_as_one_form_value() {
        let claims = r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#;
        let body = form_body("a", "s", &auth(AuthMethod::ClientSecretBasic), Some(claims));
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        assert_eq!(pairs.last().unwrap(), &("claims".to_owned(), claims.to_owned()));
        assert!(!form_body("a", "s", &auth(AuthMethod::ClientSecretBasic), None).contains("claims"));
    }

    #[test]
    fn expires_in_is_normalised() {
        let cases = [
            (json!(1800), 1800),
            (json!("1800"), 1800),
            (json!(" 90 "), 90),
            (json!(99.9), 99),
            (json!(0), 1),
            (json!(0.5), 1),
            (json!(-5), 1),
            (json!("-30"), 1),
            (json!(""), DEFAULT_EXPIRES_IN),
            (json!("Infinity"), DEFAULT_EXPIRES_IN),
            (json!("NaN"), DEFAULT_EXPIRES_IN),
            (json!("abc"), DEFAULT_EXPIRES_IN),
            (json!(1e12), MAX_EXPIRES_IN),
            (json!(null), DEFAULT_EXPIRES_IN),
            (json!(true), DEFAULT_EXPIRES_IN),
            (json!([1]), DEFAULT_EXPIRES_IN),
        ];
        for (value, expected) in cases {
            assert_eq!(normalize_expires_in(Some(&value)), expected, "{value}");
        }
        assert_eq!(normalize_expires_in(None), DEFAULT_EXPIRES_IN);
    }

    #[test]
    fn unusual_success_bodies_read_the_same_as_usual_ones() {
        let read = |body: &str| parse_success(200, body.as_bytes());
        let usual =
            read(r#"{"token_type":"Bearer","expires_in":"1800","access_token":"a.b.c","ext":{"x":[1]}}"#).unwrap();
        assert_eq!((usual.access_token.as_ref(), usual.expires_in), ("a.b.c", 1800));
        // Escapes, a duplicate member, an empty error: the general reading, same answers.
        assert_eq!(read(r#"{"access_token":"a\/b","expires_in":60}"#).unwrap().access_token.as_ref(), "a/b");
        assert_eq!(read(r#"{"access_token":"old","access_token":"new"}"#).unwrap().access_token.as_ref(), "new");
        assert_eq!(read(r#"{"access_token":"t","error":""}"#).unwrap().access_token.as_ref(), "t");
        assert_eq!(read(r#"{"access_token":"t","error":null}"#).unwrap().access_token.as_ref(), "t");
        // An error member on a 2xx is still an error.
        let err =
            read(r#"{"access_token":"t","error":"invalid_grant","error_description":"AADSTS50013: x"}"#).unwrap_err();
        assert_eq!(err.code.as_deref(), Some("invalid_grant"));
    }

    #[test]
    fn success_without_token_is_an_empty_response() {
        for body in
            [r#"{"expires_in":3600}"#, r#"{"access_token":""}"#, r#"{"access_token":null}"#, r#"{"access_token":5}"#]
        {
            let err = parse_success(200, body.as_bytes()).unwrap_err();
            assert_eq!(err.reason, FailureReason::EmptyExchangeResponse, "{body}");
            assert_eq!(err.message, EMPTY_RESPONSE_MESSAGE);
        }
    }

    #[test]
    fn success_that_is_not_a_json_object_is_refused() {
        for body in ["<html>", "[1,2]", "\"tok\"", ""] {
            let err = parse_success(200, body.as_bytes()).unwrap_err();
            assert_eq!(err.reason, FailureReason::ExchangeFailed);
            assert!(err.message.contains("invalid token response"), "{}", err.message);
        }
    }

    #[test]
    fn entra_error_body_is_kept_whole() {
        let body = json!({
            "error": "invalid_grant",
            "error_description": "AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication.",
            "error_codes": [50076],
            "timestamp": "2026-11-29 10:00:00Z",
            "trace_id": "t-1",
            "correlation_id": "c-1",
            "suberror": "basic_action",
            "claims": "{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"x\"]}}}"
        });
        let err = parse_failure(400, Some("application/json; charset=utf-8"), body.to_string().as_bytes());
        assert!(err.message.starts_with("invalid_grant: AADSTS50076"));
        let oauth = err.oauth.unwrap();
        assert_eq!(oauth.error_codes, Some(vec![50076]));
        assert_eq!(oauth.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(oauth.trace_id.as_deref(), Some("t-1"));
        assert!(oauth.claims.unwrap().contains("capolids"));
        assert_eq!(err.code.as_deref(), Some("invalid_grant"));
    }

    #[test]
    fn html_error_page_is_described_not_echoed() {
        let err = parse_failure(502, Some("text/html"), b"<html>Bad gateway secret</html>");
        assert_eq!(err.status, Some(502));
        assert!(err.message.contains("HTTP 502 Bad Gateway"), "{}", err.message);
        assert!(err.message.contains("text/html"));
        assert!(!err.message.contains("secret"));
    }

    #[test]
    fn a_407_blames_the_proxy() {
        let err = parse_failure(407, Some("text/html"), b"<html>auth</html>");
        assert!(err.message.contains("proxy refused"), "{}", err.message);
        assert_eq!(err.status, Some(407));
    }

    #[test]
    fn error_in_a_2xx_body_is_an_error() {
        let err =
            parse_success(200, br#"{"error":"invalid_scope","error_description":"AADSTS70011: bad"}"#).unwrap_err();
        assert_eq!(err.message, "invalid_scope: AADSTS70011: bad");
    }
}
