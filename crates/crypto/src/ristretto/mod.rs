//! The ristretto255 machinery shared by the threshold coin ([`crate::coin`]) and TDH2
//! ([`crate::tdh2`]): canonical group elements and scalars, domain-separated hashing, the
//! equality-of-discrete-logarithms proof with batch verification, and the threshold key
//! material (dealing, encoding, and the consistency check of a public key set).
//!
//! Both schemes live in the same group (ristretto255, prime order `q ≈ 2^252`, no cofactor) with
//! the same key structure: a secret `x` shared with Shamir's scheme of degree `k - 1`, public
//! key `g^x`, and one verification key `g^{x_i}` per server. They differ only in what a share
//! is an exponentiation *of*: the hash of a coin name, or the `u` of a ciphertext.

mod dleq;
mod element;
mod key;

pub(crate) use dleq::{Claim, Proof, prove, select_valid, verify_batch};
pub(crate) use element::{Element, decode_scalar, encode_scalar};
pub(crate) use key::{KeySet, SecretShare, deal};

use curve25519_dalek::Scalar;
use sha2::{Digest, Sha512};

/// SHA-512 over a domain tag and a list of parts, each length-prefixed (`u64`, big-endian), so
/// that no two different `(tag, parts)` lists hash the same input.
pub(crate) fn hash_parts(tag: &str, parts: &[&[u8]]) -> [u8; 64] {
    let mut hasher = Sha512::new();
    hasher.update(b"sintra/v1/ristretto255");
    for part in std::iter::once(tag.as_bytes()).chain(parts.iter().copied()) {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A scalar uniform in `Z_q` (up to a bias of `2^-259`) from [`hash_parts`]: the Fiat–Shamir
/// challenges and the hedged nonces.
pub(crate) fn hash_to_scalar(tag: &str, parts: &[&[u8]]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&hash_parts(tag, parts))
}
