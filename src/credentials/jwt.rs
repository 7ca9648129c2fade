//! The signed client assertion of `private_key_jwt` (RFC 7523 §2.2, in the
//! shape Entra ID documents for certificate credentials), kept per audience
//! and reused until shortly before it expires: signing costs an RSA private
//! key operation, and a token endpoint accepts one assertion many times.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use parking_lot::Mutex;
use ring::rand::{SecureRandom, SystemRandom};
use ring::rsa::KeyPair as RsaKeyPair;
use ring::{digest, signature};
use serde_json::json;

use super::pem;
use crate::error::ConfigError;

/// How long an assertion is valid: the ten minutes Entra ID's examples use;
/// a short life limits what a leaked assertion is worth.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// An assertion is signed anew when less than this is left of its life, so
/// that it never reaches the provider expired (clock skew, a slow request).
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(120);

/// Audiences remembered at most: one per token endpoint, so one per tenant
/// with home-tenant routing; past this, expired entries go, then all.
const MAX_AUDIENCES: usize = 1024;

/// The signature algorithm of the assertion (`clientAssertionAlgorithm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256, and an `x5t#S256` thumbprint: what Entra ID recommends.
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, and an `x5t` (SHA-1) thumbprint: for AD FS and older providers.
    Rs256,
}

impl AssertionAlgorithm {
    pub const OPTION: &'static str = "clientAssertionAlgorithm";

    /// The value of `clientAssertionAlgorithm`.
    pub fn from_option(value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_uppercase().as_str() {
            "PS256" => Ok(AssertionAlgorithm::Ps256),
            "RS256" => Ok(AssertionAlgorithm::Rs256),
            _ => Err(ConfigError::new(Self::OPTION, "clientAssertionAlgorithm must be 'PS256' or 'RS256'")),
        }
    }

    /// The JWS `alg`.
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::Ps256 => "PS256",
            AssertionAlgorithm::Rs256 => "RS256",
        }
    }

    fn encoding(self) -> &'static dyn signature::RsaEncoding {
        match self {
            AssertionAlgorithm::Ps256 => &signature::RSA_PSS_SHA256,
            AssertionAlgorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
        }
    }
}

/// Signing failed: ring reports only that (an exhausted or broken system
/// random source), so this carries no detail, and certainly no key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningError;

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client assertion could not be signed (the system random source failed)")
    }
}

impl std::error::Error for SigningError {}

/// `(audience, client id)`.
type AssertionKey = (Box<str>, Box<str>);

struct Signed {
    jwt: Arc<str>,
    issued_at: u64,
    expires_at: u64,
}

/// Signs client assertions with one certificate's key. A new certificate or
/// key is a new signer (a new `configure()`), so nothing signed with the
/// previous key is ever reused.
pub struct ClientAssertionSigner {
    key: RsaKeyPair,
    algorithm: AssertionAlgorithm,
    /// The thumbprint the header carries (`x5t#S256` or `x5t`), base64url.
    thumbprint: String,
    /// The encoded JOSE header, the same for every assertion.
    encoded_header: String,
    random: SystemRandom,
    signed: Mutex<HashMap<AssertionKey, Signed>>,
}

impl ClientAssertionSigner {
    /// Checks `clientPrivateKey` and `clientCertificate` (leaf first, chain
    /// optional) and that the key is the leaf's. `send_x5c` puts the chain in
    /// the header, for subject-name/issuer authentication.
    pub fn new(
        certificate_pem: &str,
        private_key_pem: &str,
        algorithm: AssertionAlgorithm,
        send_x5c: bool,
    ) -> Result<Self, ConfigError> {
        let key = pem::rsa_key_pair(private_key_pem)?;
        let chain = pem::certificate_chain(certificate_pem)?;
        let leaf = &chain[0];
        if !pem::key_matches_certificate(&key, leaf) {
            return Err(ConfigError::new(
                pem::CERTIFICATE_OPTION,
                "clientPrivateKey does not match clientCertificate: the first certificate must be the one issued for this key",
            ));
        }
        let (thumbprint_name, thumbprint) = match algorithm {
            AssertionAlgorithm::Ps256 => ("x5t#S256", URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, leaf))),
            AssertionAlgorithm::Rs256 => {
                ("x5t", URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf)))
            }
        };
        let mut header = json!({ "alg": algorithm.as_str(), "typ": "JWT", thumbprint_name: thumbprint });
        if send_x5c {
            header["x5c"] = chain.iter().map(|der| STANDARD.encode(der)).collect();
        }
        Ok(ClientAssertionSigner {
            key,
            algorithm,
            thumbprint,
            encoded_header: URL_SAFE_NO_PAD.encode(header.to_string()),
            random: SystemRandom::new(),
            signed: Mutex::new(HashMap::new()),
        })
    }

    pub fn algorithm(&self) -> AssertionAlgorithm {
        self.algorithm
    }

    /// The leaf certificate's thumbprint as the header carries it: what the
    /// app registration lists, to tell which certificate is in use.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The assertion for a request to the token endpoint `audience` (the URL
    /// actually called, after routing), signed now or reused.
    pub fn assertion(&self, audience: &str, client_id: &str, now: SystemTime) -> Result<Arc<str>, SigningError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let key: AssertionKey = (audience.into(), client_id.into());
        if let Some(signed) = self.signed.lock().get(&key) {
            // A clock set back before the signing would make the provider see an assertion from the future.
            if signed.issued_at <= now && now + RENEW_BEFORE_EXPIRY.as_secs() < signed.expires_at {
                return Ok(signed.jwt.clone());
            }
        }
        // Signed outside the lock: two callers may both sign, which is harmless.
        let expires_at = now + ASSERTION_LIFETIME.as_secs();
        let jwt: Arc<str> = self.sign(audience, client_id, now, expires_at)?.into();
        let mut signed = self.signed.lock();
        if signed.len() >= MAX_AUDIENCES && !signed.contains_key(&key) {
            signed.retain(|_, signed| now < signed.expires_at);
            if signed.len() >= MAX_AUDIENCES {
                signed.clear();
            }
        }
        signed.insert(key, Signed { jwt: jwt.clone(), issued_at: now, expires_at });
        Ok(jwt)
    }

    fn sign(&self, audience: &str, client_id: &str, now: u64, expires_at: u64) -> Result<String, SigningError> {
        let payload = json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": self.jti()?,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
        });
        let mut jwt = format!("{}.{}", self.encoded_header, URL_SAFE_NO_PAD.encode(payload.to_string()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(self.algorithm.encoding(), &self.random, jwt.as_bytes(), &mut signature)
            .map_err(|_| SigningError)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        Ok(jwt)
    }

    /// A random version-4 UUID, the form Entra ID documents for `jti`.
    fn jti(&self) -> Result<String, SigningError> {
        let mut bytes = [0u8; 16];
        self.random.fill(&mut bytes).map_err(|_| SigningError)?;
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
    }
}

impl fmt::Debug for ClientAssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertionSigner")
            .field("algorithm", &self.algorithm)
            .field("thumbprint", &self.thumbprint)
            .field("audiences", &self.signed.lock().len())
            .finish_non_exhaustive()
    }
}

/// Two signers are equal when they sign the same header with the same key:
/// a `configure()` that repeats the credentials changes nothing. The public
/// key is compared; it determines the private one.
impl PartialEq for ClientAssertionSigner {
    fn eq(&self, other: &Self) -> bool {
        self.algorithm == other.algorithm
            && self.encoded_header == other.encoded_header
            && self.key.public().as_ref() == other.key.public().as_ref()
    }
}

impl Eq for ClientAssertionSigner {}

#[cfg(test)]
mod tests {
    use super::super::der;
    use super::super::test_pki::{der_of, pki, Pki};
    use super::*;
    use serde_json::Value;

    const ENDPOINT: &str = "https://login.microsoftonline.com/tenant/oauth2/v2.0/token";
    const CLIENT: &str = "11111111-2222-3333-4444-555555555555";

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Checks the signature with the certificate's public key and returns header and payload.
    fn verify(
        jwt: &str,
        certificate_pem: &str,
        algorithm: &'static dyn signature::VerificationAlgorithm,
    ) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let certificate = der_of(certificate_pem);
        let public_key = der::subject_public_key_info(&certificate).unwrap().public_key.to_vec();
        let signed = format!("{}.{}", parts[0], parts[1]);
        signature::UnparsedPublicKey::new(algorithm, public_key)
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .expect("the signature verifies with the certificate's key");
        (decode(parts[0]), decode(parts[1]))
    }

    fn signer(pki: &Pki, algorithm: AssertionAlgorithm, send_x5c: bool) -> ClientAssertionSigner {
        ClientAssertionSigner::new(
            &format!("{}{}", pki.leaf_cert, pki.ca_cert),
            &pki.leaf_key_pkcs8,
            algorithm,
            send_x5c,
        )
        .unwrap()
    }

    fn check_payload(payload: &Value, now: u64) {
        assert_eq!(payload["aud"], ENDPOINT);
        assert_eq!(payload["iss"], CLIENT);
        assert_eq!(payload["sub"], CLIENT);
        assert_eq!(payload["iat"], now);
        assert_eq!(payload["nbf"], now);
        assert_eq!(payload["exp"], now + 600);
        let jti = payload["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 36);
        assert_eq!(jti.as_bytes()[14], b'4', "a version-4 UUID: {jti}");
        assert_eq!(payload.as_object().unwrap().len(), 7, "{payload}");
    }

    #[test]
    fn ps256_assertions_carry_the_sha256_thumbprint() {
        let Some(pki) = pki() else { return };
        let jwt = signer(pki, AssertionAlgorithm::Ps256, false).assertion(ENDPOINT, CLIENT, at(1_800_000_000)).unwrap();
        let (header, payload) = verify(&jwt, &pki.leaf_cert, &signature::RSA_PSS_2048_8192_SHA256);
        let thumbprint = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &der_of(&pki.leaf_cert)));
        assert_eq!(header, json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": thumbprint }));
        check_payload(&payload, 1_800_000_000);
    }

    #[test]
    fn rs256_assertions_carry_the_sha1_thumbprint_and_the_chain_when_asked() {
        let Some(pki) = pki() else { return };
        let signer = signer(pki, AssertionAlgorithm::Rs256, true);
        let jwt = signer.assertion(ENDPOINT, CLIENT, at(1_800_000_000)).unwrap();
        let (header, payload) = verify(&jwt, &pki.leaf_cert, &signature::RSA_PKCS1_2048_8192_SHA256);
        let thumbprint =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &der_of(&pki.leaf_cert)));
        let chain = [STANDARD.encode(der_of(&pki.leaf_cert)), STANDARD.encode(der_of(&pki.ca_cert))];
        assert_eq!(header, json!({ "alg": "RS256", "typ": "JWT", "x5t": thumbprint, "x5c": chain }));
        assert_eq!(signer.thumbprint(), thumbprint);
        check_payload(&payload, 1_800_000_000);
    }

    #[test]
    fn a_pss_signature_is_not_a_pkcs1_signature() {
        let Some(pki) = pki() else { return };
        let jwt = signer(pki, AssertionAlgorithm::Ps256, false).assertion(ENDPOINT, CLIENT, at(1_800_000_000)).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let certificate = der_of(&pki.leaf_cert);
        let public_key = der::subject_public_key_info(&certificate).unwrap().public_key.to_vec();
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let pkcs1 = signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &public_key);
        assert!(pkcs1.verify(signed.as_bytes(), &signature).is_err());
        let pss = signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, &public_key);
        assert!(pss.verify(format!("{signed}x").as_bytes(), &signature).is_err(), "a changed payload fails");
    }

    #[test]
    fn an_assertion_is_reused_per_audience_until_shortly_before_it_expires() {
        let Some(pki) = pki() else { return };
        let signer = signer(pki, AssertionAlgorithm::Ps256, false);
        let start = 1_800_000_000;
        let first = signer.assertion(ENDPOINT, CLIENT, at(start)).unwrap();
        let last_reuse = start + 600 - 120 - 1;
        assert!(Arc::ptr_eq(&first, &signer.assertion(ENDPOINT, CLIENT, at(last_reuse)).unwrap()));
        let other = "https://login.microsoftonline.com/other/oauth2/v2.0/token";
        let elsewhere = signer.assertion(other, CLIENT, at(start)).unwrap();
        assert_eq!(decode(elsewhere.split('.').nth(1).unwrap())["aud"], other);
        assert_ne!(signer.assertion(ENDPOINT, "another-client", at(start)).unwrap(), first);

        let renewed = signer.assertion(ENDPOINT, CLIENT, at(last_reuse + 1)).unwrap();
        assert_ne!(renewed, first);
        let payload = decode(renewed.split('.').nth(1).unwrap());
        assert_eq!(payload["iat"], last_reuse + 1);
        assert_ne!(payload["jti"], decode(first.split('.').nth(1).unwrap())["jti"]);
        // The clock set back: an assertion issued "later" is not reused.
        assert_ne!(signer.assertion(ENDPOINT, CLIENT, at(start)).unwrap(), renewed);
    }

    #[test]
    fn a_new_signer_signs_anew() {
        let Some(pki) = pki() else { return };
        let now = at(1_800_000_000);
        let first = signer(pki, AssertionAlgorithm::Ps256, false).assertion(ENDPOINT, CLIENT, now).unwrap();
        let second = signer(pki, AssertionAlgorithm::Ps256, false).assertion(ENDPOINT, CLIENT, now).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn signers_are_equal_when_credentials_and_settings_are() {
        let Some(pki) = pki() else { return };
        let ps = signer(pki, AssertionAlgorithm::Ps256, false);
        assert_eq!(ps, signer(pki, AssertionAlgorithm::Ps256, false));
        let from_pkcs1 = ClientAssertionSigner::new(
            &format!("{}{}", pki.leaf_cert, pki.ca_cert),
            &pki.leaf_key_pkcs1,
            AssertionAlgorithm::Ps256,
            false,
        )
        .unwrap();
        assert_eq!(ps, from_pkcs1);
        assert_ne!(ps, signer(pki, AssertionAlgorithm::Rs256, false));
        assert_ne!(ps, signer(pki, AssertionAlgorithm::Ps256, true));
        let ca = ClientAssertionSigner::new(&pki.ca_cert, &pki.ca_key, AssertionAlgorithm::Ps256, false).unwrap();
        assert_ne!(ps, ca);
    }

    #[test]
    fn many_audiences_stay_bounded() {
        let Some(pki) = pki() else { return };
        let signer = signer(pki, AssertionAlgorithm::Rs256, false);
        for tenant in 0..=MAX_AUDIENCES {
            signer.assertion(&format!("https://idp.example/{tenant}/token"), CLIENT, at(1_800_000_000)).unwrap();
        }
        assert!(signer.signed.lock().len() <= MAX_AUDIENCES);
    }

    #[test]
    fn construction_checks_key_and_certificate() {
        let Some(pki) = pki() else { return };
        let ps = AssertionAlgorithm::Ps256;
        let mismatch = ClientAssertionSigner::new(&pki.ca_cert, &pki.leaf_key_pkcs8, ps, false).unwrap_err();
        assert_eq!(mismatch.option, "clientCertificate");
        assert!(mismatch.message.contains("does not match"), "{}", mismatch.message);
        // The chain in the wrong order: the leaf must come first.
        let reversed = format!("{}{}", pki.ca_cert, pki.leaf_cert);
        assert_eq!(
            ClientAssertionSigner::new(&reversed, &pki.leaf_key_pkcs8, ps, false).unwrap_err().option,
            "clientCertificate"
        );
        let bad_key = ClientAssertionSigner::new(&pki.leaf_cert, "nonsense", ps, false).unwrap_err();
        assert_eq!(bad_key.option, "clientPrivateKey");
        let bad_certificate = ClientAssertionSigner::new("nonsense", &pki.leaf_key_pkcs1, ps, false).unwrap_err();
        assert_eq!(bad_certificate.option, "clientCertificate");
        ClientAssertionSigner::new(&pki.leaf_cert, &pki.leaf_key_pkcs1, ps, false).unwrap();
    }

    #[test]
    fn debug_shows_no_key_material() {
        let Some(pki) = pki() else { return };
        let signer = signer(pki, AssertionAlgorithm::Ps256, true);
        let jwt = signer.assertion(ENDPOINT, CLIENT, at(1_800_000_000)).unwrap();
        let shown = format!("{signer:?}");
        assert!(shown.contains("Ps256") && shown.contains(signer.thumbprint()), "{shown}");
        assert!(!shown.contains(jwt.split('.').nth(2).unwrap()));
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = signer.key.public().into();
        assert!(!shown.contains(&STANDARD.encode(&public.n[..32])));
        assert!(shown.len() < 200, "{shown}");
    }

    #[test]
    fn the_algorithm_option_is_checked() {
        assert_eq!(AssertionAlgorithm::from_option("PS256"), Ok(AssertionAlgorithm::Ps256));
        assert_eq!(AssertionAlgorithm::from_option("rs256"), Ok(AssertionAlgorithm::Rs256));
        let error = AssertionAlgorithm::from_option("HS256").unwrap_err();
        assert_eq!(error.option, "clientAssertionAlgorithm");
    }
}
