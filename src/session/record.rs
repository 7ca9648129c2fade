//! What a session is: the refresh token, the access tokens it was last
//! renewed for (one per scope set), and when it lapses. Serialised as JSON,
//! which the stores seal before it leaves the process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::serve_until_ms;
use crate::grant::TokenResponse;

/// Access tokens kept per session: an agent uses a handful of scope sets.
pub const MAX_TOKENS_PER_SESSION: usize = 16;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub refresh_token: String,
    /// Whose session it is, for log lines only.
    pub subject: String,
    /// Moves at every renewal.
    pub revision: u64,
    /// Wall-clock ms since the epoch after which the session is gone.
    pub lapses_at_ms: u64,
    pub tokens: Vec<ScopedToken>,
    /// The user's home tenant, when the session began there (see
    /// [`crate::routing`]): its renewals go there too. Absent from older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// An access token of the session, for one scope set (as the caller wrote it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedToken {
    pub scopes: String,
    pub access_token: String,
    pub granted_secs: u64,
    pub obtained_at_ms: u64,
    pub expires_at_ms: u64,
    pub serve_until_ms: u64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("refresh_token", &"[redacted]")
            .field("subject", &self.subject)
            .field("revision", &self.revision)
            .field("lapses_at_ms", &self.lapses_at_ms)
            .field("tokens", &self.tokens)
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl std::fmt::Debug for ScopedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedToken")
            .field("scopes", &self.scopes)
            .field("access_token", &"[redacted]")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl ScopedToken {
    /// Served as the exchange cache serves a token ([`serve_until_ms`]): a
    /// token that lives less than the skew still serves, for a second, the
    /// callers that waited for its renewal.
    pub fn new(scopes: &str, token: &TokenResponse, now_ms: u64, skew: Duration) -> ScopedToken {
        let expires_at_ms = now_ms.saturating_add(token.expires_in.saturating_mul(1000));
        ScopedToken {
            scopes: scopes.to_owned(),
            access_token: token.access_token.to_string(),
            granted_secs: token.expires_in,
            obtained_at_ms: now_ms,
            expires_at_ms,
            serve_until_ms: serve_until_ms(now_ms, expires_at_ms, skew),
        }
    }

    /// Whole seconds left, rounded up, never more than granted.
    pub fn remaining_secs(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000).min(self.granted_secs)
    }
}

impl SessionRecord {
    pub fn new(refresh_token: String, subject: String, now_ms: u64, ttl: Duration) -> SessionRecord {
        SessionRecord {
            refresh_token,
            subject,
            revision: 0,
            lapses_at_ms: lapse(now_ms, ttl),
            tokens: Vec::new(),
            tenant: None,
        }
    }

    pub fn is_lapsed(&self, now_ms: u64) -> bool {
        now_ms >= self.lapses_at_ms
    }

    /// The token for `scopes` that may be served at `now_ms`, and, with
    /// `after_ms`, was obtained after it (a forced renewal is served only by a
    /// renewal that ended after it was asked for).
    pub fn token_for(&self, scopes: &str, now_ms: u64, after_ms: Option<u64>) -> Option<&ScopedToken> {
        self.tokens.iter().find(|token| {
            token.scopes == scopes
                && now_ms < token.serve_until_ms
                && after_ms.is_none_or(|after_ms| token.obtained_at_ms > after_ms)
        })
    }

    /// Keeps `token`, in place of any for the same scopes; expired tokens go,
    /// and the one closest to expiry when there are too many.
    pub fn keep(&mut self, token: ScopedToken, now_ms: u64) {
        self.tokens.retain(|kept| kept.scopes != token.scopes && now_ms < kept.serve_until_ms);
        if self.tokens.len() >= MAX_TOKENS_PER_SESSION {
            if let Some(oldest) = (0..self.tokens.len()).min_by_key(|&at| self.tokens[at].serve_until_ms) {
                self.tokens.remove(oldest);
            }
        }
        self.tokens.push(token);
    }

    /// After a renewal: the rotated refresh token when one came (else the old
    /// one stays), the new token, and the session's life starts again.
    pub fn renewed(&mut self, refresh_token: Option<String>, token: ScopedToken, now_ms: u64, ttl: Duration) {
        if let Some(refresh_token) = refresh_token {
            self.refresh_token = refresh_token;
        }
        self.revision += 1;
        self.lapses_at_ms = lapse(now_ms, ttl);
        self.keep(token, now_ms);
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a SessionRecord serialises")
    }

    /// `None` for anything that is not a record (a value of another version).
    pub fn from_json(bytes: &[u8]) -> Option<SessionRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

fn lapse(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn response(token: &str, expires_in: u64) -> TokenResponse {
        TokenResponse { access_token: Arc::from(token), expires_in }
    }

    const SKEW: Duration = Duration::from_secs(30);
    const TTL: Duration = Duration::from_secs(90 * 86_400);

    #[test]
    fn a_token_is_served_per_scope_set_until_its_margin_and_only_when_new_enough() {
        let mut record = SessionRecord::new("rt-1".into(), "user".into(), 1_000, TTL);
        record.keep(ScopedToken::new("a", &response("ta", 3600), 1_000, SKEW), 1_000);
        record.keep(ScopedToken::new("b", &response("tb", 3600), 1_000, SKEW), 1_000);
        assert_eq!(record.token_for("a", 2_000, None).unwrap().access_token, "ta");
        assert!(record.token_for("c", 2_000, None).is_none());
        assert!(record.token_for("a", 1_000 + 3_570_000, None).is_none(), "past expiry minus skew");
        assert!(record.token_for("a", 2_000, Some(1_000)).is_none(), "obtained before the call began");
        record.keep(ScopedToken::new("a", &response("ta2", 3600), 5_000, SKEW), 5_000);
        assert_eq!(record.tokens.len(), 2);
        assert_eq!(record.token_for("a", 6_000, Some(4_999)).unwrap().access_token, "ta2");
    }

    #[test]
    fn a_renewal_keeps_the_old_refresh_token_unless_rotated_and_restarts_the_life() {
        let mut record = SessionRecord::new("rt-1".into(), "user".into(), 0, TTL);
        record.renewed(None, ScopedToken::new("a", &response("t", 60), 10, SKEW), 10, TTL);
        assert_eq!((record.refresh_token.as_str(), record.revision), ("rt-1", 1));
        record.renewed(Some("rt-2".into()), ScopedToken::new("a", &response("t", 60), 20, SKEW), 20, TTL);
        assert_eq!((record.refresh_token.as_str(), record.revision), ("rt-2", 2));
        assert_eq!(record.lapses_at_ms, 20 + TTL.as_millis() as u64);
        assert!(!record.is_lapsed(20) && record.is_lapsed(record.lapses_at_ms));
    }

    #[test]
    fn a_token_that_lives_less_than_the_skew_is_served_for_a_second_as_the_cache_does() {
        let mut record = SessionRecord::new("rt".into(), "user".into(), 0, TTL);
        record.keep(ScopedToken::new("a", &response("t", 1), 1_000, SKEW), 1_000);
        assert_eq!(record.token_for("a", 1_999, None).unwrap().access_token, "t");
        assert!(record.token_for("a", 2_000, None).is_none());
        let cached = crate::cache::CachedToken::new(Arc::from("t"), 1, 1_000, SKEW);
        assert_eq!(record.tokens[0].serve_until_ms, cached.serve_until_ms);
    }

    #[test]
    fn tokens_are_bounded_and_the_record_round_trips_without_showing_secrets() {
        let mut record = SessionRecord::new("rt-secret".into(), "user".into(), 0, TTL);
        for n in 0..(MAX_TOKENS_PER_SESSION as u64 + 4) {
            record.keep(ScopedToken::new(&format!("s{n}"), &response("at-secret", 3600 + n), 0, SKEW), 0);
        }
        assert_eq!(record.tokens.len(), MAX_TOKENS_PER_SESSION);
        assert!(record.token_for("s0", 1, None).is_none(), "the one closest to expiry went first");
        assert_eq!(SessionRecord::from_json(&record.to_json()), Some(record.clone()));
        assert_eq!(SessionRecord::from_json(b"{\"other\":1}"), None);
        let shown = format!("{record:?}");
        assert!(!shown.contains("rt-secret") && !shown.contains("at-secret"), "{shown}");
    }
}
