//! Reading `clientCertificate` and `clientPrivateKey`. The errors say what is
//! wrong with the text and how to fix it, and never quote it: a key pasted in
//! the wrong option must not end up in a log.

use ring::rsa::{KeyPair as RsaKeyPair, PublicKeyComponents};
use rustls_pki_types::pem::{PemObject, SectionKind};

use super::der;
use crate::error::ConfigError;

pub const CERTIFICATE_OPTION: &str = "clientCertificate";
pub const PRIVATE_KEY_OPTION: &str = "clientPrivateKey";

/// Keys and certificates often come from environment variables, where the
/// line breaks of a PEM text are written as the two characters `\n`.
fn with_line_breaks(pem: &str) -> std::borrow::Cow<'_, str> {
    if !pem.contains('\n') && pem.contains("\\n") {
        pem.replace("\\n", "\n").into()
    } else {
        pem.into()
    }
}

/// Said when an option holds no PEM at all: most often a file path given where the content belongs.
const NOT_A_PATH: &str = "; give the PEM text itself (for example fs.readFileSync(path, 'utf8')), not a file path";

fn hint(pem: &str) -> &'static str {
    if pem.contains("-----BEGIN") {
        ""
    } else {
        NOT_A_PATH
    }
}

/// Every PEM section of `pem`, in order; `None` when the text is not valid PEM.
fn sections(pem: &str) -> Option<Vec<(SectionKind, Vec<u8>)>> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(with_line_breaks(pem).as_bytes()).collect::<Result<Vec<_>, _>>().ok()
}

/// The DER certificates of `clientCertificate`, leaf first. Sections other
/// than certificates are skipped, so a file holding both the certificate and
/// its key can be given to both options.
pub fn certificate_chain(pem: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let unreadable = |why: &str| ConfigError::new(CERTIFICATE_OPTION, format!("clientCertificate {why}"));
    let sections = sections(pem).ok_or_else(|| unreadable("is not valid PEM (a damaged or truncated section)"))?;
    let chain: Vec<Vec<u8>> =
        sections.into_iter().filter(|(kind, _)| *kind == SectionKind::Certificate).map(|(_, der)| der).collect();
    if chain.is_empty() {
        return Err(unreadable(&format!("holds no PEM certificate (-----BEGIN CERTIFICATE-----){}", hint(pem))));
    }
    for (position, certificate) in chain.iter().enumerate() {
        if der::subject_public_key_info(certificate).is_none() {
            let which = if position == 0 {
                "its first certificate".to_owned()
            } else {
                format!("its certificate #{}", position + 1)
            };
            return Err(unreadable(&format!("is not readable: {which} is not a valid X.509 certificate")));
        }
    }
    Ok(chain)
}

/// The RSA key of `clientPrivateKey`: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
pub fn rsa_key_pair(pem: &str) -> Result<RsaKeyPair, ConfigError> {
    let unreadable = |why: &str| ConfigError::new(PRIVATE_KEY_OPTION, format!("clientPrivateKey {why}"));
    let pem = with_line_breaks(pem);
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(unreadable(
            "is encrypted; give the decrypted key (for example `openssl pkey -in key.pem -out plain.pem`) or a clientAssertion callback",
        ));
    }
    let sections = sections(&pem).ok_or_else(|| unreadable("is not valid PEM (a damaged or truncated section)"))?;
    let mut keys = sections.into_iter().filter(|(kind, _)| {
        matches!(kind, SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey)
    });
    let (kind, der) = keys.next().ok_or_else(|| {
        unreadable(&format!(
            "holds no PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----){}",
            hint(&pem)
        ))
    })?;
    if keys.next().is_some() {
        return Err(unreadable("holds more than one private key"));
    }
    let parsed = match kind {
        SectionKind::PrivateKey => RsaKeyPair::from_pkcs8(&der),
        SectionKind::RsaPrivateKey => RsaKeyPair::from_der(&der),
        _ => return Err(unreadable("is an EC key; private_key_jwt here signs with RSA keys (PS256 or RS256)")),
    };
    parsed.map_err(|rejected| {
        let why = match rejected.to_string().as_str() {
            "WrongAlgorithm" => {
                "is not an RSA key; private_key_jwt here signs with RSA keys (PS256 or RS256)".to_owned()
            }
            "TooSmall" => "is an RSA key shorter than 2048 bits, which Entra ID refuses".to_owned(),
            "TooLarge" => "is an RSA key longer than 8192 bits".to_owned(),
            "PrivateModulusLenNotMultipleOf512Bits" => {
                "is an RSA key whose length is not a multiple of 512 bits (use 2048, 3072 or 4096)".to_owned()
            }
            // ring's reasons are fixed words (InvalidEncoding, InconsistentComponents, …), never key bytes.
            other => format!("is not a usable RSA private key ({other})"),
        };
        unreadable(&why)
    })
}

/// Whether `certificate` (DER) carries the public half of `key`.
pub fn key_matches_certificate(key: &RsaKeyPair, certificate: &[u8]) -> bool {
    let Some(spki) = der::subject_public_key_info(certificate) else { return false };
    if spki.algorithm != der::OID_RSA_ENCRYPTION {
        return false;
    }
    let Some((modulus, exponent)) = der::rsa_public_key(spki.public_key) else { return false };
    let public: PublicKeyComponents<Vec<u8>> = key.public().into();
    public.n == modulus && public.e == exponent
}

#[cfg(test)]
mod tests {
    use super::super::test_pki::{der_of, pki};
    use super::*;

    #[test]
    fn reads_pkcs8_and_pkcs1_keys_alike() {
        let Some(pki) = pki() else { return };
        let pkcs8 = rsa_key_pair(&pki.leaf_key_pkcs8).unwrap();
        let pkcs1 = rsa_key_pair(&pki.leaf_key_pkcs1).unwrap();
        assert_eq!(pkcs8.public().as_ref(), pkcs1.public().as_ref());
        assert_eq!(pkcs8.public().modulus_len(), 256);
    }

    #[test]
    fn reads_the_chain_in_order() {
        let Some(pki) = pki() else { return };
        let chain = certificate_chain(&format!("{}{}", pki.leaf_cert, pki.ca_cert)).unwrap();
        assert_eq!(chain, vec![der_of(&pki.leaf_cert), der_of(&pki.ca_cert)]);
    }

    #[test]
    fn one_file_can_hold_the_certificate_and_its_key() {
        let Some(pki) = pki() else { return };
        let bundle = format!("{}{}", pki.leaf_key_pkcs8, pki.leaf_cert);
        let chain = certificate_chain(&bundle).unwrap();
        let key = rsa_key_pair(&bundle).unwrap();
        assert_eq!(chain.len(), 1);
        assert!(key_matches_certificate(&key, &chain[0]));
    }

    #[test]
    fn escaped_line_breaks_from_environment_variables_are_accepted() {
        let Some(pki) = pki() else { return };
        let escaped = pki.leaf_key_pkcs1.trim_end().replace('\n', "\\n");
        assert!(!escaped.contains('\n'));
        rsa_key_pair(&escaped).unwrap();
        certificate_chain(&pki.leaf_cert.replace('\n', "\\n")).unwrap();
    }

    #[test]
    fn the_key_must_match_the_leaf() {
        let Some(pki) = pki() else { return };
        let leaf = &certificate_chain(&pki.leaf_cert).unwrap()[0];
        let ca = &certificate_chain(&pki.ca_cert).unwrap()[0];
        let leaf_key = rsa_key_pair(&pki.leaf_key_pkcs8).unwrap();
        let ca_key = rsa_key_pair(&pki.ca_key).unwrap();
        assert!(key_matches_certificate(&leaf_key, leaf));
        assert!(key_matches_certificate(&ca_key, ca));
        assert!(!key_matches_certificate(&leaf_key, ca));
        assert!(!key_matches_certificate(&ca_key, leaf));
    }

    fn key_error(pem: &str) -> ConfigError {
        let error = rsa_key_pair(pem).map(|_| ()).unwrap_err();
        assert_eq!(error.option, PRIVATE_KEY_OPTION);
        error
    }

    fn certificate_error(pem: &str) -> ConfigError {
        let error = certificate_chain(pem).unwrap_err();
        assert_eq!(error.option, CERTIFICATE_OPTION);
        error
    }

    #[test]
    fn unusable_keys_are_named_without_quoting_them() {
        let Some(pki) = pki() else { return };
        let body_line = pki.leaf_key_pkcs8.lines().nth(1).unwrap();
        let truncated: String = pki.leaf_key_pkcs8.lines().take(5).collect::<Vec<_>>().join("\n");
        let mut damaged = pki.leaf_key_pkcs8.clone();
        damaged.replace_range(40..44, "!!!!");
        for (pem, expected) in [
            (pki.leaf_key_encrypted.as_str(), "is encrypted"),
            (pki.ec_key.as_str(), "is not an RSA key"),
            (truncated.as_str(), "not valid PEM"),
            (damaged.as_str(), "not valid PEM"),
            (pki.leaf_cert.as_str(), "holds no PEM private key"),
            ("", "holds no PEM private key"),
            ("not a key at all", "holds no PEM private key"),
        ] {
            let error = key_error(pem);
            assert!(error.message.contains(expected), "{expected:?} in {:?}", error.message);
            assert!(!error.message.contains(body_line), "the message quotes the key");
        }
        assert!(key_error("/etc/keys/client.key").message.ends_with(NOT_A_PATH));
        assert!(!key_error(&pki.leaf_cert).message.contains("file path"));
        let two = format!("{}{}", pki.leaf_key_pkcs8, pki.ca_key);
        assert!(key_error(&two).message.contains("more than one private key"));
        let not_a_key = "-----BEGIN RSA PRIVATE KEY-----\nMAMCAQA=\n-----END RSA PRIVATE KEY-----\n";
        assert!(key_error(not_a_key).message.contains("not a usable RSA private key (InvalidEncoding)"));
    }

    #[test]
    fn unusable_certificates_are_named() {
        let Some(pki) = pki() else { return };
        assert!(certificate_error(&pki.leaf_key_pkcs8).message.contains("holds no PEM certificate"));
        assert!(certificate_error("").message.contains("holds no PEM certificate"));
        assert!(certificate_error("./client.pem").message.ends_with(NOT_A_PATH));
        assert!(!certificate_error(&pki.leaf_key_pkcs8).message.contains("file path"));
        let truncated: String = pki.leaf_cert.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(certificate_error(&truncated).message.contains("not valid PEM"));
        let garbage = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        assert!(certificate_error(garbage).message.contains("its first certificate is not a valid X.509"));
        let second = format!("{}{garbage}", pki.leaf_cert);
        assert!(certificate_error(&second).message.contains("certificate #2"));
    }
}
