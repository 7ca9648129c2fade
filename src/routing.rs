//! Home-tenant routing, and the identity an incoming assertion names.
//!
//! A multi-tenant application configured with the `common` or `organizations`
//! endpoint must redeem a user's assertion in that user's home tenant: Entra
//! ID refuses an On-Behalf-Of exchange at `common` for guest and cross-tenant
//! users. The assertion's `tid` names the tenant. Its claims are read without
//! verifying the signature, which is safe only because of what they are used
//! for: the tenant chooses a URL path segment (so it must be a plain GUID or
//! domain name, anything else keeps the configured endpoint, and the provider
//! still verifies the assertion itself), and the identity only keys a cache
//! entry whose key also holds the assertion's digest.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

/// Path segments that stand for "any tenant" in Entra ID endpoints.
const MULTI_TENANT_SEGMENTS: [&str; 2] = ["common", "organizations"];

/// Larger than any real access token's payload (a token with a groups
/// overage stays far below); bigger ones are not decoded at all.
const MAX_PAYLOAD_LENGTH: usize = 64 * 1024;

/// Longest identity value kept for keying; real ones are GUIDs and URLs.
const MAX_CLAIM_LENGTH: usize = 1024;

/// Whether the endpoint's path starts with `common` or `organizations`.
pub fn is_multi_tenant(endpoint: &Url) -> bool {
    endpoint
        .path_segments()
        .and_then(|mut segments| segments.next())
        .is_some_and(|first| MULTI_TENANT_SEGMENTS.iter().any(|segment| first.eq_ignore_ascii_case(segment)))
}

/// The endpoint to call for this assertion: `endpoint` with its multi-tenant
/// segment replaced by the assertion's `tid` when there is one and it is a
/// GUID or a domain name; `endpoint` itself otherwise.
pub fn route<'a>(endpoint: &'a Url, assertion: &str) -> Cow<'a, Url> {
    route_to(endpoint, home_tenant(assertion).as_deref())
}

/// The tenant an assertion's `tid` names, when it is one ([`is_tenant`]).
pub fn home_tenant(assertion: &str) -> Option<String> {
    payload::<TenantClaim>(assertion).and_then(|claims| claims.tid).and_then(string).filter(|tenant| is_tenant(tenant))
}

/// `endpoint` in `tenant` when it is multi-tenant: where a session begun at
/// the user's home tenant is renewed.
pub fn route_to<'a>(endpoint: &'a Url, tenant: Option<&str>) -> Cow<'a, Url> {
    match tenant.filter(|tenant| is_multi_tenant(endpoint) && is_tenant(tenant)) {
        Some(tenant) => Cow::Owned(with_first_segment(endpoint, tenant)),
        None => Cow::Borrowed(endpoint),
    }
}

fn with_first_segment(endpoint: &Url, tenant: &str) -> Url {
    let path = endpoint.path();
    let first_length = path[1..].find('/').unwrap_or(path.len() - 1);
    let mut routed = endpoint.clone();
    // The rest of the path is kept as written (already percent-encoded), and
    // `is_tenant` allows no character that a path would need to escape.
    routed.set_path(&format!("/{tenant}{}", &path[1 + first_length..]));
    routed
}

/// A tenant id as Entra ID writes it (a GUID), or a verified domain name
/// (`contoso.onmicrosoft.com`): letters, digits and hyphens in dot-separated
/// labels of 1–63 characters, at least two labels, at most 253 characters,
/// and a top-level label that is not all digits (no IP addresses).
pub fn is_tenant(tenant: &str) -> bool {
    is_guid(tenant) || is_domain_name(tenant)
}

fn is_guid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

fn is_domain_name(text: &str) -> bool {
    if text.is_empty() || text.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = text.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
        && !labels[labels.len() - 1].bytes().all(|byte| byte.is_ascii_digit())
}

/// Who an assertion says it is for, read without verification: for keying
/// only (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssertionIdentity {
    /// `tid`.
    pub tenant: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
    /// `oid`, or else `sub`.
    pub subject: Option<String>,
}

/// The identity claims of a JWT assertion; `None` when it is not a JWT whose
/// payload can be read (an opaque or encrypted token). A claim that is not a
/// string, is empty or blank, or is longer than 1024 characters counts as absent.
pub fn assertion_identity(assertion: &str) -> Option<AssertionIdentity> {
    let claims = payload::<IdentityClaims>(assertion)?;
    Some(AssertionIdentity {
        tenant: claims.tid.and_then(string),
        issuer: claims.iss.and_then(string),
        subject: claims.oid.and_then(string).or_else(|| claims.sub.and_then(string)),
    })
}

#[derive(Deserialize)]
struct TenantClaim {
    tid: Option<Value>,
}

#[derive(Deserialize)]
struct IdentityClaims {
    tid: Option<Value>,
    iss: Option<Value>,
    oid: Option<Value>,
    sub: Option<Value>,
}

fn string(value: Value) -> Option<String> {
    match value {
        // A blank claim names no one: it must not key a token, nor hide the next claim.
        Value::String(text) if !text.trim().is_empty() && text.len() <= MAX_CLAIM_LENGTH => Some(text),
        _ => None,
    }
}

/// The decoded payload of a compact JWS (`header.payload.signature`).
fn payload<T: for<'de> Deserialize<'de>>(assertion: &str) -> Option<T> {
    let mut parts = assertion.trim().split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    // Five parts is an encrypted token (JWE), whose second part is a key, not claims.
    if parts.next().is_some() || payload.len() > MAX_PAYLOAD_LENGTH {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn jwt(payload: &str) -> String {
        format!("eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(payload))
    }

    fn routed(endpoint: &str, payload: &str) -> String {
        route(&Url::parse(endpoint).unwrap(), &jwt(payload)).to_string()
    }

    #[test]
    fn common_and_organizations_route_to_the_home_tenant() {
        let tid = format!(r#"{{"tid":"{TENANT}","oid":"x"}}"#);
        for segment in ["common", "organizations", "Common", "ORGANIZATIONS"] {
            assert_eq!(
                routed(&format!("https://login.microsoftonline.com/{segment}/oauth2/v2.0/token"), &tid),
                format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
            );
        }
        assert_eq!(
            routed(
                "http://127.0.0.1:8080/common/oauth2/a%2Fb/token?api-version=1",
                r#"{"tid":"contoso.onmicrosoft.com"}"#
            ),
            "http://127.0.0.1:8080/contoso.onmicrosoft.com/oauth2/a%2Fb/token?api-version=1"
        );
        assert_eq!(routed("https://idp.example/common", &tid), format!("https://idp.example/{TENANT}"));
    }

    #[test]
    fn a_single_tenant_endpoint_is_kept() {
        let tid = format!(r#"{{"tid":"{TENANT}"}}"#);
        for endpoint in [
            "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token",
            "https://login.microsoftonline.com/consumers/oauth2/v2.0/token",
            "https://idp.example/oauth2/common/token",
            "https://idp.example/commons/token",
            "https://idp.example/",
        ] {
            assert_eq!(routed(endpoint, &tid), endpoint);
        }
        let url = Url::parse("https://login.microsoftonline.com/contoso.com/token").unwrap();
        assert!(matches!(route(&url, &jwt(&tid)), Cow::Borrowed(_)));
    }

    #[test]
    fn hostile_or_missing_tenants_keep_the_configured_endpoint() {
        let endpoint = "https://login.microsoftonline.com/common/oauth2/v2.0/token";
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}comx", "abcdefghi.".repeat(25));
        let hostile = [
            r#""../x""#,
            r#""a/b""#,
            r#""evil.com#""#,
            r#""evil.com?x=1""#,
            r#""%2e%2e""#,
            r#""evil.com%2f..""#,
            r#""user@evil.com""#,
            r#""evil..com""#,
            r#""evil.com.""#,
            r#"".evil.com""#,
            r#""-evil.com""#,
            r#""evil .com""#,
            r#""evil.com\n""#,
            r#""évil.com""#,
            r#""xn--vil-9oa.com/../x""#,
            r#""localhost""#,
            r#""10.0.0.1""#,
            r#""""#,
            r#"null"#,
            r#"42"#,
            r#"["72f988bf-86f1-41af-91ab-2d7cd011db47"]"#,
            r#"{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47"}"#,
            r#""72f988bf-86f1-41af-91ab-2d7cd011db4""#,
            r#""72f988bf_86f1-41af-91ab-2d7cd011db47""#,
        ];
        for tid in
            hostile.iter().map(|tid| tid.to_string()).chain([format!("\"{long_label}\""), format!("\"{long_name}\"")])
        {
            assert_eq!(routed(endpoint, &format!(r#"{{"tid":{tid}}}"#)), endpoint, "tid {tid}");
        }
        assert_eq!(long_name.len(), 254);
        assert_eq!(routed(endpoint, r#"{"oid":"x"}"#), endpoint);
        assert_eq!(routed(endpoint, "not json"), endpoint);
        let url = Url::parse(endpoint).unwrap();
        for opaque in ["opaque-reference-token", "a.b", "", "a.!!!.c", "h.e.a.d.er", "...."] {
            assert_eq!(route(&url, opaque).as_str(), endpoint, "{opaque:?}");
        }
    }

    /// Whether `text` has the dashes of a GUID (8-4-4-4-12), whatever its other characters.
    fn guid_shaped(text: &str) -> bool {
        text.len() == 36 && text.split('-').map(str::len).eq([8, 4, 4, 4, 12])
    }

    #[test]
    fn guid_shaped_tenants_of_other_characters_keep_the_configured_endpoint() {
        let endpoint = "https://login.microsoftonline.com/common/oauth2/v2.0/token";
        assert!(guid_shaped(TENANT) && is_tenant(TENANT));
        // None of these is a domain name either (no dot, or characters a label cannot hold).
        for tid in [
            "../../x/-abc/-def/-ghi/-jklmnopqrstu",
            "..%2f..%-2fx/-abcd-efgh-ijklmnopqrst",
            "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
            "72f988bf-86f1-41af-91ab-2d7cd011db4g",
            "72f988bf-86f1-41af-91ab-2d7cd011d/..",
            "72f988bf-86f1-41af-91ab-2d7cd011db4?",
            "72f988bf-86f1-41af-91ab-2d7cd011db4#",
            "72f988bf-86f1-41af-91ab-2d7cd011db4 ",
            "72f988bf-86f1-41af-91ab-2d7cd011dbé",
        ] {
            assert!(guid_shaped(tid), "{tid:?} has the dashes of a GUID");
            assert_eq!(routed(endpoint, &format!(r#"{{"tid":"{tid}"}}"#)), endpoint, "tid {tid:?}");
            assert!(!is_tenant(tid), "{tid:?}");
        }
    }

    #[test]
    fn tenants_are_guids_or_domain_names() {
        assert!(is_tenant(TENANT));
        assert!(is_tenant(&TENANT.to_uppercase()));
        assert!(is_tenant("contoso.onmicrosoft.com"));
        assert!(is_tenant("Contoso-EU.example"));
        assert!(is_tenant("xn--bcher-kva.example"));
        assert!(is_tenant(&format!("{}.com", "a".repeat(63))));
        assert!(is_tenant(&format!("{}com", "abcdefghi.".repeat(25))), "253 characters");
        assert!(!is_tenant("common"));
        assert!(!is_tenant("1.2.3.4"));
    }

    #[test]
    fn identity_claims_are_read_without_verification() {
        let assertion = jwt(&format!(
            r#"{{"tid":"{TENANT}","iss":"https://sts.windows.net/{TENANT}/","oid":"object-id","sub":"pairwise-subject"}}"#
        ));
        assert_eq!(
            assertion_identity(&assertion),
            Some(AssertionIdentity {
                tenant: Some(TENANT.into()),
                issuer: Some(format!("https://sts.windows.net/{TENANT}/")),
                subject: Some("object-id".into()),
            })
        );
        let without_oid = jwt(r#"{"iss":"https://idp.example","sub":"subject","oid":7}"#);
        assert_eq!(
            assertion_identity(&without_oid),
            Some(AssertionIdentity {
                tenant: None,
                issuer: Some("https://idp.example".into()),
                subject: Some("subject".into())
            })
        );
        let oversized = jwt(&format!(r#"{{"sub":"{}","tid":""}}"#, "s".repeat(MAX_CLAIM_LENGTH + 1)));
        assert_eq!(assertion_identity(&oversized), Some(AssertionIdentity::default()));
        assert_eq!(assertion_identity("opaque"), None);
        assert_eq!(assertion_identity(&jwt("[1]")), None);
        let padded = format!("h.{}.s", base64::engine::general_purpose::URL_SAFE.encode(r#"{"sub":"s12"}"#));
        assert!(padded.contains("=."));
        assert_eq!(assertion_identity(&padded).unwrap().subject.as_deref(), Some("s12"));
        let huge = jwt(&format!(r#"{{"sub":"s","pad":"{}"}}"#, "p".repeat(MAX_PAYLOAD_LENGTH)));
        assert_eq!(assertion_identity(&huge), None);
    }

    #[test]
    fn blank_claims_count_as_absent_and_a_blank_oid_does_not_hide_the_sub() {
        let blank_oid = jwt(r#"{"tid":" ","oid":" \t ","sub":"pairwise-subject"}"#);
        assert_eq!(
            assertion_identity(&blank_oid),
            Some(AssertionIdentity { tenant: None, issuer: None, subject: Some("pairwise-subject".into()) })
        );
        let nobody = jwt(r#"{"oid":"  ","sub":"\n"}"#);
        assert_eq!(assertion_identity(&nobody), Some(AssertionIdentity::default()));
    }
}
