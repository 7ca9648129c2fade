//! Error kinds of an exchange, shaped after what callers of the JavaScript
//! service read from a rejection (`retryable`, `oboFailureReason`, `status`,
//! `code`) plus the OAuth error body Entra sends, so that a failing set-up can
//! be diagnosed from the error alone. Nothing here ever holds a secret: texts
//! that come from outside pass through [`redact`] before they are stored.

use std::fmt;

/// Why an exchange failed, as LibreChat's callers see it in `oboFailureReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The provider refused, failed or could not be reached.
    ExchangeFailed,
    /// The provider answered 2xx without an `access_token`.
    EmptyExchangeResponse,
    /// No usable OpenID configuration (missing, invalid, or discovery failed).
    ConfigUnavailable,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ExchangeFailed => "exchange_failed",
            FailureReason::EmptyExchangeResponse => "empty_exchange_response",
            FailureReason::ConfigUnavailable => "config_unavailable",
        }
    }
}

/// The fields of an OAuth 2.0 error response (RFC 6749 §5.2) with Entra's extras.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OAuthErrorBody {
    pub error: String,
    pub error_description: Option<String>,
    pub error_codes: Option<Vec<i64>>,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub timestamp: Option<String>,
    pub suberror: Option<String>,
    pub claims: Option<String>,
}

/// A failed exchange. Cheap to share between the callers of one flight.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeError {
    pub message: String,
    pub reason: FailureReason,
    pub retryable: bool,
    /// HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// `ETIMEDOUT`, `ECONNRESET`, … for transport failures; the OAuth `error` otherwise.
    pub code: Option<String>,
    /// Boxed: it is rare, and every `Result` carrying this error stays small.
    pub oauth: Option<Box<OAuthErrorBody>>,
    /// How long the provider asked us to wait (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    /// True when this rejection came from a remembered throttle, without a request.
    pub throttled: bool,
}

impl ExchangeError {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        ExchangeError {
            message: message.into(),
            reason,
            retryable: false,
            status: None,
            code: None,
            oauth: None,
            retry_after: None,
            throttled: false,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(FailureReason::ExchangeFailed, message)
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The message Entra users know: `invalid_grant: AADSTS50013: …`.
    pub fn from_oauth(status: u16, body: OAuthErrorBody) -> Self {
        let message = match &body.error_description {
            Some(description) if !description.is_empty() => format!("{}: {}", body.error, description),
            _ => body.error.clone(),
        };
        ExchangeError {
            code: Some(body.error.clone()),
            oauth: Some(Box::new(body)),
            ..ExchangeError::failed(message).with_status(status)
        }
    }

    /// Removes every occurrence of each secret from every text of the error.
    pub fn redacted(mut self, secrets: &[&str]) -> Self {
        self.message = redact(&self.message, secrets);
        if let Some(oauth) = self.oauth.as_mut() {
            for text in [
                Some(&mut oauth.error),
                oauth.error_description.as_mut(),
                oauth.correlation_id.as_mut(),
                oauth.trace_id.as_mut(),
                oauth.timestamp.as_mut(),
                oauth.suberror.as_mut(),
                oauth.claims.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                *text = redact(text, secrets);
            }
        }
        if let Some(code) = self.code.as_mut() {
            *code = redact(code, secrets);
        }
        self
    }
}

impl ExchangeError {
    /// `Retry-After` in whole seconds, rounded up, as callers read it.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExchangeError {}

/// Replaces each (non-trivial) secret found in `text` with `[redacted]`.
/// Secrets shorter than 8 characters are left alone: they would match
/// ordinary words and cannot be told apart from them.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if secret.len() >= 8 && out.contains(secret) {
            out = out.replace(secret, "[redacted]");
        }
    }
    out
}

/// An invalid `configure()` option; the JavaScript side throws it as a `TypeError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub option: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(option: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { option: option.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_message_joins_error_and_description() {
        let err = ExchangeError::from_oauth(
            400,
            OAuthErrorBody {
                error: "invalid_grant".into(),
                error_description: Some("AADSTS50013: Assertion failed signature validation".into()),
                ..Default::default()
            },
        );
        assert_eq!(err.message, "invalid_grant: AADSTS50013: Assertion failed signature validation");
        assert_eq!(err.code.as_deref(), Some("invalid_grant"));
        assert_eq!(err.status, Some(400));
    }

    #[test]
    fn oauth_message_without_description_is_the_error_code() {
        let err =
            ExchangeError::from_oauth(401, OAuthErrorBody { error: "invalid_client".into(), ..Default::default() });
        assert_eq!(err.message, "invalid_client");
    }

    #[test]
    fn redaction_covers_every_text() {
        let secret = "eyJhbGciOiJSUzI1NiJ9.payload.sig";
        let err = ExchangeError::from_oauth(
            400,
            OAuthErrorBody {
                error: "invalid_grant".into(),
                error_description: Some(format!("bad assertion {secret}")),
                claims: Some(secret.into()),
                ..Default::default()
            },
        )
        .redacted(&[secret]);
        assert!(!format!("{err:?}").contains(secret));
        assert!(err.message.contains("[redacted]"));
    }

    #[test]
    fn short_secrets_are_not_redacted() {
        assert_eq!(redact("a b c", &["b"]), "a b c");
    }
}
