//! The refresh_token grant (RFC 6749 §6) a session renews with, and the
//! reading of an answer that may carry a refresh token: at the beginning of a
//! session (the On-Behalf-Of exchange with `offline_access`) and at every
//! renewal, where a provider that rotates refresh tokens sends the next one.

use serde_json::Value;
use url::form_urlencoded;

use crate::error::ExchangeError;
use crate::grant::{self, ClientAuth, TokenResponse};

/// The scope that asks the provider for a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// A token answer with what a session keeps of it.
#[derive(Clone, PartialEq)]
pub struct Granted {
    pub token: TokenResponse,
    /// Absent when the provider does not rotate (the old one stays good) or,
    /// at the beginning, when it issued none.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("expires_in", &self.token.expires_in)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// `scopes` with `offline_access` added when absent.
pub fn with_offline_access(scopes: &str) -> String {
    if scopes.split_ascii_whitespace().any(|scope| scope == OFFLINE_ACCESS) {
        return scopes.to_owned();
    }
    format!("{scopes} {OFFLINE_ACCESS}")
}

/// The form body of a renewal.
pub fn refresh_form_body(refresh_token: &str, scopes: &str, auth: &ClientAuth<'_>) -> String {
    let mut form =
        form_urlencoded::Serializer::new(String::with_capacity(refresh_token.len() * 2 + scopes.len() + 200));
    form.append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", refresh_token)
        .append_pair("scope", &with_offline_access(scopes));
    grant::append_client_auth(&mut form, auth);
    form.finish()
}

/// Reads a 2xx answer as [`grant::parse_success`] does, plus its refresh token.
pub fn parse_granted(status: u16, body: &[u8]) -> Result<Granted, ExchangeError> {
    let token = grant::parse_success(status, body)?;
    let refresh_token = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut object)) => match object.remove("refresh_token") {
            Some(Value::String(refresh_token)) if !refresh_token.trim().is_empty() => Some(refresh_token),
            _ => None,
        },
        _ => None,
    };
    Ok(Granted { token, refresh_token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMethod;

    #[test]
    fn offline_access_is_added_once() {
        assert_eq!(with_offline_access("api://x/Read"), "api://x/Read offline_access");
        assert_eq!(with_offline_access("offline_access api://x/Read"), "offline_access api://x/Read");
        assert_eq!(with_offline_access("api://x/offline_access"), "api://x/offline_access offline_access");
    }

    #[test]
    fn the_renewal_body_has_the_grant_the_token_the_scopes_and_the_client() {
        let auth = ClientAuth {
            client_id: "app",
            client_secret: Some("s&c"),
            method: AuthMethod::ClientSecretPost,
            client_assertion: None,
        };
        let body = refresh_form_body("rt/+=1", "api://x/Read", &auth);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        let expected = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt/+=1"),
            ("scope", "api://x/Read offline_access"),
            ("client_id", "app"),
            ("client_secret", "s&c"),
        ];
        assert_eq!(pairs, expected.map(|(name, value)| (name.to_owned(), value.to_owned())));
        let basic = ClientAuth { method: AuthMethod::ClientSecretBasic, ..auth };
        assert!(!refresh_form_body("rt", "s", &basic).contains("client"));
    }

    #[test]
    fn a_rotated_refresh_token_is_read_and_a_missing_or_blank_one_is_none() {
        let rotated =
            parse_granted(200, br#"{"access_token":"a.b.c","expires_in":60,"refresh_token":"rt-2"}"#).unwrap();
        assert_eq!((rotated.token.access_token.as_ref(), rotated.refresh_token.as_deref()), ("a.b.c", Some("rt-2")));
        for body in [
            r#"{"access_token":"a.b.c"}"#,
            r#"{"access_token":"a.b.c","refresh_token":""}"#,
            r#"{"access_token":"a.b.c","refresh_token":null}"#,
            r#"{"access_token":"a.b.c","refresh_token":7}"#,
        ] {
            assert_eq!(parse_granted(200, body.as_bytes()).unwrap().refresh_token, None, "{body}");
        }
        let err = parse_granted(200, br#"{"error":"invalid_grant"}"#).unwrap_err();
        assert_eq!(err.code.as_deref(), Some("invalid_grant"));
        assert!(!format!("{rotated:?}").contains("rt-2"));
    }
}
