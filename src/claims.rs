//! Claims requests (OpenID Connect Core §5.5) sent with an exchange: the
//! challenge a resource answers when Conditional Access or continuous access
//! evaluation (CAE) wants a fresher token, and the client capabilities
//! (`xms_cc`) that tell Entra ID this client can handle such challenges.
//! Both end up in the one `claims` form parameter, merged key by key.
//!
//! Accepted challenge forms, after trimming white space:
//! - the JSON object text, as in the `claims` property of Entra's error body
//!   or once decoded from a `WWW-Authenticate` header:
//!   `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`;
//! - that text base64-encoded, exactly as a `WWW-Authenticate` header sends it
//!   (`Bearer …, error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsi…"`),
//!   standard or URL-safe alphabet, padded or not. A JSON object starts with
//!   `{`, which is not a base64 character, so the two cannot be confused.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::ConfigError;

/// The name callers see in errors about a challenge (a `TypeError` naming `claims`).
pub const CLAIMS_OPTION: &str = "claims";
/// The `configure()` option for client capabilities.
pub const CAPABILITIES_OPTION: &str = "clientCapabilities";

/// Longer than any real challenge, short enough to keep a form body small.
pub const MAX_CLAIMS_LENGTH: usize = 16 * 1024;

/// A claims request: a JSON object.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims(Map<String, Value>);

/// A challenge that is not a claims request; its message names `claims`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimsError(String);

impl ClaimsError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClaimsError {}

/// Base64 as `WWW-Authenticate` challenges carry it: padding optional.
fn lenient(alphabet: &base64::alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(alphabet, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent))
}

impl Claims {
    /// A claims challenge, in one of the forms the module documentation lists.
    pub fn parse(challenge: &str) -> Result<Claims, ClaimsError> {
        let challenge = challenge.trim();
        if challenge.is_empty() {
            return Err(ClaimsError("claims is empty; leave it out when there is no challenge".into()));
        }
        if challenge.len() > MAX_CLAIMS_LENGTH {
            return Err(ClaimsError(format!("claims is longer than {MAX_CLAIMS_LENGTH} bytes")));
        }
        let decoded;
        let json = if challenge.starts_with('{') {
            challenge
        } else {
            let bytes = lenient(&base64::alphabet::STANDARD)
                .decode(challenge)
                .or_else(|_| lenient(&base64::alphabet::URL_SAFE).decode(challenge))
                .map_err(|_| {
                    ClaimsError(
                        "claims must be a JSON object, or the base64 form a WWW-Authenticate challenge carries".into(),
                    )
                })?;
            decoded = String::from_utf8(bytes)
                .map_err(|_| ClaimsError("claims is base64 of something other than UTF-8 text".into()))?;
            decoded.trim()
        };
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(object)) => Ok(Claims(object)),
            Ok(_) => Err(ClaimsError("claims must be a JSON object".into())),
            // serde_json's message gives a position, never the text.
            Err(why) => Err(ClaimsError(format!("claims is not valid JSON ({why})"))),
        }
    }

    /// `{"access_token":{"xms_cc":{"values":[…]}}}` for `clientCapabilities`,
    /// or `None` for an empty list. Repeated values are sent once.
    pub fn capabilities<S: AsRef<str>>(values: &[S]) -> Result<Option<Claims>, ConfigError> {
        let mut unique: Vec<&str> = Vec::with_capacity(values.len());
        for value in values.iter().map(AsRef::as_ref) {
            if value.trim().is_empty() || value.trim() != value {
                return Err(ConfigError::new(
                    CAPABILITIES_OPTION,
                    "clientCapabilities must be a list of non-empty strings without surrounding spaces, such as ['cp1']",
                ));
            }
            if !unique.contains(&value) {
                unique.push(value);
            }
        }
        if unique.is_empty() {
            return Ok(None);
        }
        let mut claims = Map::new();
        claims.insert("access_token".into(), serde_json::json!({ "xms_cc": { "values": unique } }));
        Ok(Some(Claims(claims)))
    }

    /// The claims to send: the challenge and the capabilities merged key by
    /// key, objects deeply. Where both set the same member to something other
    /// than two objects, the challenge wins: it is what the resource needs now.
    pub fn merged(challenge: Option<&Claims>, capabilities: Option<&Claims>) -> Option<Claims> {
        match (challenge, capabilities) {
            (None, None) => None,
            (Some(only), None) | (None, Some(only)) => Some(only.clone()),
            (Some(challenge), Some(capabilities)) => {
                let mut merged = challenge.0.clone();
                merge_into(&mut merged, &capabilities.0);
                Some(Claims(merged))
            }
        }
    }

    /// The `claims` form parameter.
    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn merge_into(target: &mut Map<String, Value>, addition: &Map<String, Value>) {
    for (name, value) in addition {
        match (target.get_mut(name), value) {
            (Some(Value::Object(existing)), Value::Object(added)) => merge_into(existing, added),
            (Some(_), _) => {}
            (None, _) => {
                target.insert(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use serde_json::json;

    const CAE: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;

    fn value(claims: &Claims) -> Value {
        Value::Object(claims.as_map().clone())
    }

    #[test]
    fn accepts_the_json_of_an_error_body() {
        let claims = Claims::parse(&format!("  {CAE}\n")).unwrap();
        assert_eq!(value(&claims), serde_json::from_str::<Value>(CAE).unwrap());
    }

    #[test]
    fn accepts_the_base64_of_a_www_authenticate_challenge() {
        let expected = serde_json::from_str::<Value>(CAE).unwrap();
        // Entra's header value for this challenge, padded.
        let header_value = STANDARD.encode(CAE);
        assert_eq!(value(&Claims::parse(&header_value).unwrap()), expected);
        assert_eq!(value(&Claims::parse(header_value.trim_end_matches('=')).unwrap()), expected);
        let url_safe = URL_SAFE_NO_PAD.encode(r#"{"access_token":{"acrs":{"essential":true,"value":"c1?>"}}}"#);
        assert!(url_safe.contains('_') || url_safe.contains('-'), "{url_safe}");
        assert_eq!(Claims::parse(&url_safe).unwrap().as_map()["access_token"]["acrs"]["value"], "c1?>");
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for (challenge, expected) in [
            ("", "claims is empty"),
            ("   ", "claims is empty"),
            (r#"{"access_token":"#, "claims is not valid JSON"),
            (r#"{"a":1} trailing"#, "claims is not valid JSON"),
            ("not base64!", "claims must be a JSON object, or the base64"),
            ("[1,2]", "claims must be a JSON object, or the base64"),
            ("WzEsMl0=", "claims must be a JSON object"),
            ("bnVsbA", "claims must be a JSON object"),
            ("gA==", "claims is base64 of something other than UTF-8"),
        ] {
            let error = Claims::parse(challenge).unwrap_err();
            assert!(error.message().starts_with(expected), "{challenge:?}: {error}");
        }
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_CLAIMS_LENGTH));
        assert!(Claims::parse(&long).unwrap_err().message().contains("longer than"));
    }

    #[test]
    fn capabilities_build_the_xms_cc_claim() {
        let claims = Claims::capabilities(&["cp1", "cp1", "llt"]).unwrap().unwrap();
        assert_eq!(claims.to_json(), r#"{"access_token":{"xms_cc":{"values":["cp1","llt"]}}}"#);
        assert_eq!(Claims::capabilities::<&str>(&[]).unwrap(), None);
        for bad in [&[""][..], &[" cp1"], &["cp1", "  "]] {
            assert_eq!(Claims::capabilities(bad).unwrap_err().option, CAPABILITIES_OPTION);
        }
    }

    #[test]
    fn a_challenge_and_capabilities_merge_key_by_key() {
        let capabilities = Claims::capabilities(&["cp1"]).unwrap().unwrap();
        let challenge = Claims::parse(
            r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"},"xms_cc":{"essential":true}},"id_token":{"auth_time":{"essential":true}}}"#,
        )
        .unwrap();
        let merged = Claims::merged(Some(&challenge), Some(&capabilities)).unwrap();
        assert_eq!(
            value(&merged),
            json!({
                "access_token": {
                    "nbf": { "essential": true, "value": "1700000000" },
                    "xms_cc": { "essential": true, "values": ["cp1"] },
                },
                "id_token": { "auth_time": { "essential": true } },
            })
        );
        assert_eq!(Claims::merged(None, Some(&capabilities)), Some(capabilities.clone()));
        assert_eq!(Claims::merged(Some(&challenge), None), Some(challenge));
        assert_eq!(Claims::merged(None, None), None);
    }

    #[test]
    fn on_a_conflict_the_challenge_wins() {
        let capabilities = Claims::capabilities(&["cp1"]).unwrap().unwrap();
        let challenge = Claims::parse(r#"{"access_token":{"xms_cc":{"values":["cp2"]}}}"#).unwrap();
        let merged = Claims::merged(Some(&challenge), Some(&capabilities)).unwrap();
        assert_eq!(merged.to_json(), r#"{"access_token":{"xms_cc":{"values":["cp2"]}}}"#);
        let scalar = Claims::parse(r#"{"access_token":null}"#).unwrap();
        assert_eq!(Claims::merged(Some(&scalar), Some(&capabilities)).unwrap().to_json(), r#"{"access_token":null}"#);
    }
}
