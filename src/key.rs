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
//!
//! What was asked of the provider is part of the key too ([`GrantKey`]): the
//! grant, and for token exchange the audiences, resources and requested token
//! type, since each gives another token for the same user and scopes.

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

/// The grant's part of a key: SHA-256 over the grant type, the audiences,
/// the resources and the requested token type, length-prefixed (each list
/// with its count), so that no two requests share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantKey([u8; 32]);

impl GrantKey {
    pub fn of(grant_type: &str, audiences: &[String], resources: &[String], requested_token_type: &str) -> GrantKey {
        let mut context = Context::new(&SHA256);
        let mut part = |bytes: &[u8]| {
            context.update(&(bytes.len() as u64).to_be_bytes());
            context.update(bytes);
        };
        part(grant_type.as_bytes());
        for list in [audiences, resources] {
            part(&(list.len() as u64).to_be_bytes());
            for value in list {
                part(value.as_bytes());
            }
        }
        part(requested_token_type.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        GrantKey(key)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// SHA-256 of a user's assertion: the costly part of a key (the assertion is
/// ~1.5 KB), made once per call and combined with the configuration's grant
/// key when that is known.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AssertionDigest([u8; 32]);

impl AssertionDigest {
    pub fn of(assertion: &str) -> AssertionDigest {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&SHA256, assertion.as_bytes()).as_ref());
        AssertionDigest(digest)
    }
}

/// A digest of a secret: nothing of it in a log.
impl std::fmt::Debug for AssertionDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssertionDigest(…)")
    }
}

/// SHA-256 over the length-prefixed identity, scopes, grant key and assertion
/// digest. Length prefixes make the encoding unambiguous, so no two tuples
/// share a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub fn new(identity: &Identity, scopes: &str, assertion: &str, grant: &GrantKey) -> CacheKey {
        CacheKey::with_digest(identity, scopes, &AssertionDigest::of(assertion), grant)
    }

    /// The key, from an assertion digest already made (a call hashes its 1.5 KB assertion once).
    pub fn with_digest(
        identity: &Identity,
        scopes: &str,
        assertion_digest: &AssertionDigest,
        grant: &GrantKey,
    ) -> CacheKey {
        let mut context = Context::new(&SHA256);
        for part in [&identity.tenant, &identity.issuer, &identity.subject, scopes] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        context.update(grant.as_bytes());
        context.update(&assertion_digest.0);
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
    CacheKey::new(&Identity::new("no-tenant", "no-issuer", subject), scopes, "assertion", &test_grant())
}

#[cfg(test)]
pub(crate) fn test_grant() -> GrantKey {
    GrantKey::of(crate::grant::GRANT_TYPE, &[], &[], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, issuer: &str, subject: &str, scopes: &str, assertion: &str) -> CacheKey {
        CacheKey::new(&Identity::new(tenant, issuer, subject), scopes, assertion, &test_grant())
    }

    #[test]
    fn the_grant_separates_keys_and_its_lists_do_not_run_together() {
        let identity = Identity::new("t", "i", "s");
        let grant = |audiences: &[&str], resources: &[&str]| {
            let list = |values: &[&str]| values.iter().map(|value| value.to_string()).collect::<Vec<_>>();
            GrantKey::of("te", &list(audiences), &list(resources), "at")
        };
        let base = CacheKey::new(&identity, "x", "a", &grant(&["a"], &[]));
        assert_eq!(base, CacheKey::new(&identity, "x", "a", &grant(&["a"], &[])));
        assert_ne!(base, CacheKey::new(&identity, "x", "a", &grant(&["b"], &[])));
        assert_ne!(base, CacheKey::new(&identity, "x", "a", &test_grant()));
        assert_ne!(grant(&["a"], &[]), grant(&[], &["a"]));
        assert_ne!(grant(&["a", "b"], &[]), grant(&["a"], &["b"]));
        assert_ne!(grant(&["ab"], &[]), grant(&["a", "b"], &[]));
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
    fn a_key_from_the_digest_a_call_made_is_the_key_of_its_assertion() {
        let identity = Identity::new("tenant-a", "issuer", "user-1");
        let grant = GrantKey::of("te", &["api://a".to_owned()], &[], "at");
        let digest = AssertionDigest::of("assertion-1");
        assert_eq!(
            CacheKey::with_digest(&identity, "scope", &digest, &grant),
            CacheKey::new(&identity, "scope", "assertion-1", &grant)
        );
        assert_ne!(
            CacheKey::with_digest(&identity, "scope", &AssertionDigest::of("assertion-2"), &grant),
            CacheKey::new(&identity, "scope", "assertion-1", &grant)
        );
        assert_eq!(format!("{digest:?}"), "AssertionDigest(…)");
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let text = format!("{:?}", key("tenant-a", "issuer", "user-1", "scope", "secret-assertion"));
        assert!(text.starts_with("CacheKey(") && text.chars().count() < 20, "{text}");
        assert!(!text.contains("user-1") && !text.contains("secret"));
    }
}
