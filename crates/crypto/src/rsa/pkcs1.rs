//! The PKCS#1 side of threshold RSA: the EMSA-PKCS1-v1_5 encoding with SHA-256 that turns a
//! digest into the integer `x` the servers exponentiate (RFC 8017 §9.2), and the export of the
//! public key as X.509 SubjectPublicKeyInfo DER and PEM (RFC 5280 §4.1, RFC 8017 appendix A.1,
//! RFC 7468), written by hand: the structures are small and fixed, so no ASN.1 crate is needed.

/// DER of `DigestInfo { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING (32 bytes) }`
/// without the digest itself (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// RFC 8017 §9.2 step 3: at least 8 bytes of `0xff` padding.
const PADDING_BYTES_MIN: usize = 8;

/// `EM = 0x00 ‖ 0x01 ‖ 0xff… ‖ 0x00 ‖ DigestInfo(SHA-256, digest)` of exactly `em_len` bytes
/// (the modulus length in bytes). `None` if `em_len` is too short for the padding.
pub(super) fn emsa_pkcs1_v15_sha256(digest: &[u8; 32], em_len: usize) -> Option<Vec<u8>> {
    let t_len = SHA256_DIGEST_INFO_PREFIX.len() + digest.len();
    let padding_len = em_len.checked_sub(t_len + 3)?;
    if padding_len < PADDING_BYTES_MIN {
        return None;
    }
    let mut em = Vec::with_capacity(em_len);
    em.extend_from_slice(&[0x00, 0x01]);
    em.resize(2 + padding_len, 0xff);
    em.push(0x00);
    em.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
    em.extend_from_slice(digest);
    Some(em)
}

/// DER of `AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }`.
const RSA_ENCRYPTION_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// `SubjectPublicKeyInfo { rsaEncryption, BIT STRING (RSAPublicKey { n, e }) }` in DER, from the
/// modulus as big-endian bytes and the public exponent.
pub(super) fn subject_public_key_info_der(modulus_be: &[u8], exponent: u32) -> Vec<u8> {
    let mut rsa_public_key = Vec::new();
    der_unsigned_integer(&mut rsa_public_key, modulus_be);
    der_unsigned_integer(&mut rsa_public_key, &exponent.to_be_bytes());
    let rsa_public_key = der_tlv(0x30, &rsa_public_key);

    // BIT STRING contents: the number of unused bits (0), then the bytes.
    let mut bit_string = Vec::with_capacity(1 + rsa_public_key.len());
    bit_string.push(0x00);
    bit_string.extend_from_slice(&rsa_public_key);

    let mut info = RSA_ENCRYPTION_ALGORITHM.to_vec();
    info.extend_from_slice(&der_tlv(0x03, &bit_string));
    der_tlv(0x30, &info)
}

/// A DER INTEGER holding a non-negative value given as big-endian bytes: leading zeros dropped,
/// one zero byte put back when the top bit is set (DER integers are two's complement).
fn der_unsigned_integer(out: &mut Vec<u8>, be: &[u8]) {
    let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let digits = &be[first..];
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0x00);
    }
    content.extend_from_slice(digits);
    out.extend_from_slice(&der_tlv(0x02, &content));
}

/// Tag, definite length (short or long form), contents.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes = (len as u64).to_be_bytes();
        let first = len_bytes.iter().position(|b| *b != 0).unwrap_or(7);
        out.push(0x80 | (8 - first) as u8);
        out.extend_from_slice(&len_bytes[first..]);
    }
    out.extend_from_slice(content);
    out
}

/// PEM text (RFC 7468): the label lines around standard base64 in lines of 64 characters.
pub(super) fn pem(label: &str, der: &[u8]) -> String {
    let body = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (group >> (18 - 6 * position)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn encoded_message_has_the_rfc8017_layout() {
        let digest = [7u8; 32];
        let em = emsa_pkcs1_v15_sha256(&digest, 128).unwrap();
        assert_eq!(em.len(), 128);
        assert_eq!(&em[..2], &[0, 1]);
        assert!(em[2..128 - 52].iter().all(|b| *b == 0xff));
        assert_eq!(em[128 - 52], 0);
        assert_eq!(&em[128 - 32..], &digest);
        assert!(emsa_pkcs1_v15_sha256(&digest, 61).is_none());
        assert!(emsa_pkcs1_v15_sha256(&digest, 62).is_some());
    }

    #[test]
    fn der_lengths_and_integers() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        assert_eq!(&der_tlv(0x04, &[0; 200])[..3], &[0x04, 0x81, 200]);
        assert_eq!(&der_tlv(0x04, &[0; 300])[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut out = Vec::new();
        der_unsigned_integer(&mut out, &[0x00, 0x80]);
        assert_eq!(out, vec![0x02, 2, 0x00, 0x80]);
        let mut out = Vec::new();
        der_unsigned_integer(&mut out, &[0x01, 0x00, 0x01]);
        assert_eq!(out, vec![0x02, 3, 1, 0, 1]);
    }
}
