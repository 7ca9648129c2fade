//! Who a token belongs to, and the key it is cached, coalesced and throttled
//! under.
//!
//! LibreChat keys its tokens by (tenant, issuer, subject, scopes, SHA-256 of
//! the user's assertion): the same subject in two tenants or at two issuers is
//! two people, and a rotated assertion must never be answered with a token
//! minted for another one. The key here covers the same five parts, but is
//! itself a SHA-256 digest of them: 32 bytes inline in the cache's table (no
//! allocation per entry), no raw assertion or user id kept anywhere, and a
//! value that can leave the process (Redis names are derived from it).

use ring::digest::{Context, SHA256};

/// The identity tuple of LibreChat's service, already normalised (trimmed,
/// defaults applied, issuer without trailing `/` or discovery suffix): the
/// facade does that, so that its memo compares the same strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub tenant: String,
    pub issuer: String,
    pub subject: String,
}

impl Identity {
    pub fn new(tenant: impl Into<String>, issuer: impl Into<String>, subject: impl Into<String>) -> Identity {
        Identity { tenant: tenant.into(), issuer: issuer.into(), subject: subject.into() }
    }
}

/// SHA-256 over the length-prefixed identity, scopes and assertion digest.
/// Length prefixes make the encoding unambiguous, so no two tuples share a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub fn new(identity: &Identity, scopes: &str, assertion: &str) -> CacheKey {
        let assertion_digest = ring::digest::digest(&SHA256, assertion.as_bytes());
        let mut context = Context::new(&SHA256);
        for part in [&identity.tenant, &identity.issuer, &identity.subject, scopes] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        context.update(assertion_digest.as_ref());
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        CacheKey(key)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A short prefix is enough to tell keys apart in a log; the rest stays out of it.
impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
pub(crate) fn test_key(subject: &str, scopes: &str) -> CacheKey {
    CacheKey::new(&Identity::new("no-tenant", "no-issuer", subject), scopes, "assertion")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, issuer: &str, subject: &str, scopes: &str, assertion: &str) -> CacheKey {
        CacheKey::new(&Identity::new(tenant, issuer, subject), scopes, assertion)
    }

    #[test]
    fn every_part_of_the_tuple_separates_keys() {
        let base = key("t", "i", "s", "api://x", "a1");
        assert_eq!(base, key("t", "i", "s", "api://x", "a1"));
        for other in [
            key("t2", "i", "s", "api://x", "a1"),
            key("t", "i2", "s", "api://x", "a1"),
            key("t", "i", "s2", "api://x", "a1"),
            key("t", "i", "s", "api://y", "a1"),
            key("t", "i", "s", "api://x", "a2"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn parts_do_not_run_into_each_other() {
        assert_ne!(key("a\u{1f}b", "c", "s", "x", "a"), key("a", "b\u{1f}c", "s", "x", "a"));
        assert_ne!(key("t", "i", "a:b", "c", "a"), key("t", "i", "a", "b:c", "a"));
        assert_ne!(key("", "", "ab", "", "a"), key("", "a", "b", "", "a"));
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let text = format!("{:?}", key("tenant-a", "issuer", "user-1", "scope", "secret-assertion"));
        assert!(text.starts_with("CacheKey(") && text.chars().count() < 20, "{text}");
        assert!(!text.contains("user-1") && !text.contains("secret"));
    }
}
