//! When a failed attempt is worth another, and how long to wait first. The
//! classification is the JavaScript service's (so the same failures are
//! retried), plus `Retry-After`: honoured when short, and turned into a
//! per-key throttle when long, instead of sleeping inside the caller's request.

use std::time::{Duration, SystemTime};

use crate::error::ExchangeError;

pub const RETRYABLE_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];
pub const RETRYABLE_CODES: [&str; 4] = ["ETIMEDOUT", "ECONNRESET", "EAI_AGAIN", "ENOTFOUND"];
/// OAuth errors that another identical request cannot fix (RFC 6749 §5.2,
/// RFC 8693 §2.2.2 `invalid_target`, and Entra's interaction errors).
pub const NEVER_RETRIED: [&str; 9] = [
    "invalid_request",
    "invalid_grant",
    "interaction_required",
    "invalid_client",
    "invalid_scope",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_target",
    "consent_required",
];
/// Phrases the JavaScript service treated as transient.
const TRANSIENT_PHRASES: [&str; 6] =
    ["timeout", "timed out", "socket hang up", "temporarily unavailable", "too many requests", "service unavailable"];
/// The longest `Retry-After` believed.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

pub fn is_retryable(err: &ExchangeError) -> bool {
    if let Some(oauth) = &err.oauth {
        if NEVER_RETRIED.contains(&oauth.error.as_str()) {
            return false;
        }
        if oauth.error == "temporarily_unavailable" {
            return true;
        }
    }
    if err.status.is_some_and(|status| RETRYABLE_STATUSES.contains(&status)) {
        return true;
    }
    if err.code.as_deref().is_some_and(|code| RETRYABLE_CODES.contains(&code)) {
        return true;
    }
    let message = err.message.to_ascii_lowercase();
    TRANSIENT_PHRASES.iter().any(|phrase| message.contains(phrase))
}

/// Failures that show the request never reached the provider, or that the
/// provider refused it outright (429/503 with an OAuth error): the only ones
/// worth sending again when the request must not be processed twice, as a
/// rotating refresh token's redemption (see [`crate::session`]).
pub fn never_reached_provider(err: &ExchangeError) -> bool {
    if err.code.as_deref().is_some_and(|code| ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN"].contains(&code)) {
        return true;
    }
    err.oauth.is_some() && err.status.is_some_and(|status| matches!(status, 429 | 503))
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub retry_delay: Duration,
    pub max_retry_after: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    Retry(Duration),
    /// Report the failure.
    GiveUp,
    /// The provider wants more time than a caller should wait: report the
    /// failure and refuse this key until then.
    Throttle(Duration),
}

impl RetryPolicy {
    /// What to do after `err`, when `retries_done` retries were already made.
    pub fn next(&self, retries_done: u32, err: &ExchangeError) -> Next {
        if !err.retryable {
            return Next::GiveUp;
        }
        match err.retry_after {
            Some(wait) if wait > self.max_retry_after => Next::Throttle(wait),
            _ if retries_done >= self.max_retries => Next::GiveUp,
            Some(wait) => Next::Retry(wait),
            None => Next::Retry(self.retry_delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OAuthErrorBody;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_retries: 1, retry_delay: Duration::from_millis(300), max_retry_after: Duration::from_secs(5) }
    }

    fn status(code: u16) -> ExchangeError {
        let mut err = ExchangeError::failed("x").with_status(code);
        err.retryable = is_retryable(&err);
        err
    }

    #[test]
    fn the_javascript_services_transient_failures_are_retryable() {
        for code in RETRYABLE_STATUSES {
            assert!(is_retryable(&status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 501] {
            assert!(!is_retryable(&status(code)), "{code}");
        }
        for code in RETRYABLE_CODES {
            assert!(is_retryable(&ExchangeError::failed("x").with_code(code)), "{code}");
        }
        assert!(!is_retryable(&ExchangeError::failed("x").with_code("ECONNREFUSED")));
        assert!(is_retryable(&ExchangeError::failed("socket hang up")));
        assert!(is_retryable(&ExchangeError::failed("AADSTS: Service Unavailable")));
    }

    #[test]
    fn permanent_oauth_errors_are_never_retried_whatever_the_status() {
        for error in NEVER_RETRIED {
            let err = ExchangeError::from_oauth(503, OAuthErrorBody { error: error.into(), ..Default::default() });
            assert!(!is_retryable(&err), "{error}");
        }
        let err = ExchangeError::from_oauth(
            400,
            OAuthErrorBody { error: "temporarily_unavailable".into(), ..Default::default() },
        );
        assert!(is_retryable(&err));
    }

    #[test]
    fn only_a_request_that_never_reached_the_provider_or_was_refused_outright_is_unreceived() {
        for code in ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN"] {
            assert!(never_reached_provider(&ExchangeError::failed("x").with_code(code)), "{code}");
        }
        for code in ["ETIMEDOUT", "ECONNRESET"] {
            assert!(!never_reached_provider(&ExchangeError::failed("x").with_code(code)), "{code}");
        }
        for code in RETRYABLE_STATUSES {
            assert!(!never_reached_provider(&status(code)), "{code} without an OAuth error");
        }
        let refusal = |status| {
            ExchangeError::from_oauth(
                status,
                OAuthErrorBody { error: "temporarily_unavailable".into(), ..Default::default() },
            )
        };
        assert!(never_reached_provider(&refusal(429)));
        assert!(never_reached_provider(&refusal(503)));
        assert!(!never_reached_provider(&refusal(500)));
        assert!(!never_reached_provider(&ExchangeError::failed("OBO token request timed out")));
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(120)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(120));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn decisions() {
        let policy = policy();
        assert_eq!(policy.next(0, &status(503)), Next::Retry(Duration::from_millis(300)));
        assert_eq!(policy.next(1, &status(503)), Next::GiveUp);
        assert_eq!(policy.next(0, &status(400)), Next::GiveUp);
        let mut short = status(429);
        short.retry_after = Some(Duration::from_secs(2));
        assert_eq!(policy.next(0, &short), Next::Retry(Duration::from_secs(2)));
        assert_eq!(policy.next(1, &short), Next::GiveUp);
        let mut long = status(429);
        long.retry_after = Some(Duration::from_secs(60));
        assert_eq!(policy.next(0, &long), Next::Throttle(Duration::from_secs(60)));
    }
}
