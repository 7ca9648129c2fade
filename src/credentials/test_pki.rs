//! Keys and certificates for the tests, made once per test run by `openssl`
//! in a temporary directory (removed as soon as it has been read), so that
//! no key material is committed. Without `openssl` the tests that need it say
//! so and pass, unless `CI` is set, where a missing `openssl` is a failure.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub struct Pki {
    /// RSA 2048, PKCS#8 (`PRIVATE KEY`).
    pub leaf_key_pkcs8: String,
    /// The same key, PKCS#1 (`RSA PRIVATE KEY`).
    pub leaf_key_pkcs1: String,
    /// The same key, encrypted PKCS#8.
    pub leaf_key_encrypted: String,
    /// The leaf certificate, issued by the CA.
    pub leaf_cert: String,
    /// The CA's certificate.
    pub ca_cert: String,
    /// Another RSA key, which matches no certificate above but the CA's.
    pub ca_key: String,
    /// A P-256 key (PKCS#8).
    pub ec_key: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn make() -> Option<Pki> {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "openssl is required on CI to make the test certificates");
        eprintln!("NOTICE: openssl not found; skipping the tests that need certificates");
        return None;
    }
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "obo-native-pki-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let rsa = ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"];
    openssl(&dir, &[&rsa[..], &["ca.key"]].concat());
    openssl(&dir, &[&rsa[..], &["leaf.key"]].concat());
    openssl(&dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.key"]);
    openssl(&dir, &["pkey", "-in", "leaf.key", "-traditional", "-out", "leaf.pkcs1.key"]);
    openssl(&dir, &["pkey", "-in", "leaf.key", "-aes256", "-passout", "pass:test", "-out", "leaf.enc.key"]);
    openssl(
        &dir,
        &["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=obo-native test CA", "-days", "2", "-out", "ca.pem"],
    );
    openssl(&dir, &["req", "-new", "-key", "leaf.key", "-subj", "/CN=obo-native test client", "-out", "leaf.csr"]);
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "2",
            "-out",
            "leaf.pem",
        ],
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let pki = Pki {
        leaf_key_pkcs8: read("leaf.key"),
        leaf_key_pkcs1: read("leaf.pkcs1.key"),
        leaf_key_encrypted: read("leaf.enc.key"),
        leaf_cert: read("leaf.pem"),
        ca_cert: read("ca.pem"),
        ca_key: read("ca.key"),
        ec_key: read("ec.key"),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    Some(pki)
}

/// The test material, or `None` (after a notice) where `openssl` is missing.
pub fn pki() -> Option<&'static Pki> {
    static PKI: OnceLock<Option<Pki>> = OnceLock::new();
    PKI.get_or_init(make).as_ref()
}

/// The DER of the first `CERTIFICATE` of a PEM text, decoded independently of the code under test.
pub fn der_of(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}
