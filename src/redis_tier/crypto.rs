//! Redis holds nothing readable. Key names are an HMAC of the engine's key,
//! so they reveal no user, tenant, scope or assertion; values are sealed with
//! AES-256-GCM, bound to their key name as associated data so that a value
//! copied under another name fails to open. Both subkeys come from the one
//! configured key through HKDF, each under its own label.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

const HKDF_SALT: &[u8] = b"obo-native redis tier";
const NAME_KEY_LABEL: &[u8] = b"obo-native redis key names v1";
const VALUE_KEY_LABEL: &[u8] = b"obo-native redis values v1";

/// The Redis names that belong to one engine key. They share a hash tag
/// (`{…}`), so that in a cluster they live in one slot and can be read in one
/// pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyNames {
    pub token: String,
    pub lock: String,
    pub throttle: String,
    /// The pub/sub channel that announces a new token or a released lock.
    pub channel: String,
    /// A long-running OBO session (see `crate::session`), when the key is a session's id.
    pub session: String,
}

pub(crate) struct Sealer {
    names: hmac::Key,
    values: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    pub fn new(master: &[u8; 32]) -> Sealer {
        let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(master);
        let names = hmac::Key::from(prk.expand(&[NAME_KEY_LABEL], hmac::HMAC_SHA256).expect("HMAC key length"));
        let values = LessSafeKey::new(UnboundKey::from(
            prk.expand(&[VALUE_KEY_LABEL], &aead::AES_256_GCM).expect("AES-256 key length"),
        ));
        Sealer { names, values, rng: SystemRandom::new() }
    }

    pub fn key_names(&self, prefix: &str, key: &[u8]) -> KeyNames {
        let tag = self.tag(key);
        let name = |suffix: &str| format!("{prefix}obo:{{{tag}}}:{suffix}");
        KeyNames { token: name("t"), lock: name("l"), throttle: name("r"), channel: name("c"), session: name("s") }
    }

    /// A keyed hash of `key`, base64url: a name that reveals nothing of it
    /// to whoever lacks the master key (the session store's ids too).
    pub fn tag(&self, key: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.names, key).as_ref())
    }

    /// `nonce ‖ ciphertext ‖ tag`, with `name` as associated data.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system random generator failed");
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + aead::AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .values
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed[NONCE_LEN..],
            )
            .expect("AES-GCM input within limits");
        sealed.extend_from_slice(tag.as_ref());
        sealed
    }

    /// The plaintext, or `None` for anything that was not sealed under `name`
    /// with this key (another key, another name, a truncated or altered value).
    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plaintext_len = self.values.open_in_place(nonce, Aad::from(name.as_bytes()), &mut body).ok()?.len();
        body.truncate(plaintext_len);
        Some(body)
    }

    /// A random value that identifies one lock holder.
    pub fn lock_token(&self) -> String {
        let mut token = [0u8; 18];
        self.rng.fill(&mut token).expect("the system random generator failed");
        URL_SAFE_NO_PAD.encode(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_keyed_and_reveal_nothing() {
        let sealer = Sealer::new(&[7; 32]);
        let names = sealer.key_names("lc:", b"tenant-a\x1fissuer\x1fuser-1\x1fscope\x1fabcdef");
        for name in [&names.token, &names.lock, &names.throttle, &names.channel] {
            assert!(name.starts_with("lc:obo:{"));
            assert!(!name.contains("tenant") && !name.contains("user") && !name.contains("scope"));
        }
        let tag = |n: &str| n[n.find('{').unwrap()..=n.find('}').unwrap()].to_string();
        assert_eq!(tag(&names.token), tag(&names.lock));
        assert_ne!(names.token, names.lock);
        assert_ne!(sealer.key_names("lc:", b"other").token, names.token);
        assert_ne!(Sealer::new(&[8; 32]).key_names("lc:", b"tenant-a\x1fissuer\x1fuser-1\x1fscope\x1fabcdef"), names);
    }

    #[test]
    fn a_value_opens_only_under_its_name_and_key() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal("a", b"secret token");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(sealer.open("a", &sealed).unwrap(), b"secret token");
        assert_eq!(sealer.open("b", &sealed), None);
        assert_eq!(Sealer::new(&[8; 32]).open("a", &sealed), None);
        let mut altered = sealed.clone();
        altered[NONCE_LEN] ^= 1;
        assert_eq!(sealer.open("a", &altered), None);
        assert_eq!(sealer.open("a", &sealed[..10]), None);
        assert_ne!(sealer.seal("a", b"secret token"), sealed, "a fresh nonce every time");
    }
}
