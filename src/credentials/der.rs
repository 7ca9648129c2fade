//! Just enough DER to find a certificate's public key: whether the private key
//! matches the certificate is the one question `configure()` must answer about
//! X.509, and a full parser (with its dependency tree) would be out of
//! proportion to it. Every read is bounds-checked; anything unexpected is
//! `None`, and the caller reports an unreadable certificate.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OBJECT_IDENTIFIER: u8 = 0x06;
/// `[0] EXPLICIT Version` of a v2/v3 `tbsCertificate`.
const VERSION_TAG: u8 = 0xa0;

/// rsaEncryption, 1.2.840.113549.1.1.1.
pub const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// One tag-length-value, and what follows it.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // High tag numbers never occur in the structures read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // 0x80 is BER's indefinite length, which DER forbids; more than four
        // length bytes would describe a certificate larger than any real one.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes.iter().fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (value, rest) = rest.split_at(length);
    Some((tag, value, rest))
}

/// The value of a `tag` element at the start of `input`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, value, rest) = read_tlv(input)?;
    (found == tag).then_some((value, rest))
}

/// The public key a certificate carries.
#[derive(Debug, PartialEq, Eq)]
pub struct SubjectPublicKeyInfo<'a> {
    /// The algorithm's OID (contents only, without tag and length).
    pub algorithm: &'a [u8],
    /// The `subjectPublicKey` bits (for RSA: a DER `RSAPublicKey`).
    pub public_key: &'a [u8],
}

/// `Certificate → tbsCertificate → subjectPublicKeyInfo` (RFC 5280 §4.1).
pub fn subject_public_key_info(certificate: &[u8]) -> Option<SubjectPublicKeyInfo<'_>> {
    let (certificate, trailing) = expect(certificate, SEQUENCE)?;
    if !trailing.is_empty() {
        return None;
    }
    let (tbs, _signature_parts) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION_TAG) {
        rest = read_tlv(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (_validity, rest) = expect(rest, SEQUENCE)?;
    let (_subject, rest) = expect(rest, SEQUENCE)?;
    let (spki, _extensions) = expect(rest, SEQUENCE)?;
    let (algorithm, rest) = expect(spki, SEQUENCE)?;
    let (algorithm, _parameters) = expect(algorithm, OBJECT_IDENTIFIER)?;
    let (bits, rest) = expect(rest, BIT_STRING)?;
    if !rest.is_empty() {
        return None;
    }
    // A key is a whole number of bytes: no unused bits.
    let (&unused_bits, public_key) = bits.split_first()?;
    (unused_bits == 0).then_some(SubjectPublicKeyInfo { algorithm, public_key })
}

/// The modulus and exponent of a DER `RSAPublicKey`, without leading zeros.
pub fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (key, trailing) = expect(der, SEQUENCE)?;
    if !trailing.is_empty() {
        return None;
    }
    let (modulus, rest) = expect(key, INTEGER)?;
    let (exponent, rest) = expect(rest, INTEGER)?;
    rest.is_empty().then(|| (strip_leading_zeros(modulus), strip_leading_zeros(exponent)))
}

fn strip_leading_zeros(integer: &[u8]) -> &[u8] {
    let start = integer.iter().position(|&byte| byte != 0).unwrap_or(integer.len());
    &integer[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match value.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(value);
        out
    }

    /// A certificate skeleton with the given public key and, optionally, no version field.
    fn certificate(public_key: &[u8], with_version: bool) -> Vec<u8> {
        let spki = tlv(
            SEQUENCE,
            &[
                tlv(SEQUENCE, &[tlv(OBJECT_IDENTIFIER, OID_RSA_ENCRYPTION), vec![0x05, 0x00]].concat()),
                tlv(BIT_STRING, &[&[0][..], public_key].concat()),
            ]
            .concat(),
        );
        let mut tbs = Vec::new();
        if with_version {
            tbs.extend(tlv(VERSION_TAG, &tlv(INTEGER, &[2])));
        }
        tbs.extend(tlv(INTEGER, &[0x01, 0x02]));
        tbs.extend(tlv(SEQUENCE, &tlv(OBJECT_IDENTIFIER, &[0x2a])));
        tbs.extend(tlv(SEQUENCE, &[]));
        tbs.extend(tlv(SEQUENCE, &[]));
        tbs.extend(tlv(SEQUENCE, &[]));
        tbs.extend(spki);
        tbs.extend(tlv(0xa3, &tlv(SEQUENCE, &[])));
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &tlv(OBJECT_IDENTIFIER, &[0x2a])), tlv(BIT_STRING, &[0, 1, 2])]
                .concat(),
        )
    }

    #[test]
    fn finds_the_public_key_with_and_without_a_version() {
        let key = tlv(SEQUENCE, &[tlv(INTEGER, &[0x00, 0xc1, 0x02]), tlv(INTEGER, &[0x01, 0x00, 0x01])].concat());
        for with_version in [true, false] {
            let der = certificate(&key, with_version);
            let spki = subject_public_key_info(&der).expect("a certificate");
            assert_eq!(spki.algorithm, OID_RSA_ENCRYPTION);
            assert_eq!(spki.public_key, key.as_slice());
            assert_eq!(rsa_public_key(spki.public_key), Some((&[0xc1, 0x02][..], &[0x01, 0x00, 0x01][..])));
        }
    }

    #[test]
    fn long_form_lengths_are_read() {
        let long = vec![0x42; 300];
        let der = tlv(SEQUENCE, &tlv(INTEGER, &long));
        let (tag, value, rest) = read_tlv(&der).unwrap();
        assert_eq!((tag, rest.len()), (SEQUENCE, 0));
        assert_eq!(expect(value, INTEGER).unwrap().0, long.as_slice());
    }

    #[test]
    fn truncated_or_malformed_input_is_refused_without_panicking() {
        let key = tlv(SEQUENCE, &[tlv(INTEGER, &[0xc1]), tlv(INTEGER, &[0x03])].concat());
        let der = certificate(&key, true);
        for end in 0..der.len() {
            assert_eq!(subject_public_key_info(&der[..end]), None, "prefix of {end} bytes");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(subject_public_key_info(&trailing), None);
        // Indefinite length, too many length bytes, high tag numbers.
        assert_eq!(read_tlv(&[SEQUENCE, 0x80, 0, 0]), None);
        assert_eq!(read_tlv(&[SEQUENCE, 0x85, 0, 0, 0, 0, 1, 0]), None);
        assert_eq!(read_tlv(&[0x1f, 0x01, 0x00]), None);
        assert_eq!(rsa_public_key(&tlv(SEQUENCE, &tlv(INTEGER, &[1]))), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_or_mutated_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            let _ = subject_public_key_info(&bytes);
            let _ = rsa_public_key(&bytes);
            let key = tlv(SEQUENCE, &[tlv(INTEGER, &[0xc1]), tlv(INTEGER, &[0x03])].concat());
            let mut der = certificate(&key, true);
            let at = flip.0 % der.len();
            der[at] ^= flip.1;
            let _ = subject_public_key_info(&der);
        }
    }
}
