//! Threshold key material on ristretto255: a secret `x` shared by a polynomial `f` of degree
//! `k - 1` over `Z_q` with `f(0) = x`; server `i` holds `x_i = f(i)`; the public key set holds
//! `g^x` and the verification keys `g^{x_i}`.
//!
//! Encodings (big-endian integers, elements and scalars in their canonical 32 bytes):
//! - key set: `k: u16 | n: u16 | g^x: 32 | g^{x_1} .. g^{x_n}: n × 32`
//! - secret share: `id: u16 | x_i: 32`
//!
//! A decoded key set is *consistent*: its `n + 1` points lie on one polynomial of degree `k - 1`
//! in the exponent. Without that check a corrupted or forged configuration could make valid
//! shares combine to different values depending on which `k` were used, and the coin, which has
//! no public check of its result, would silently lose agreement.

use curve25519_dalek::Scalar;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ff::Field;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{Element, decode_scalar, encode_scalar, hash_to_scalar};
use crate::encoding::{Decode, DecodeError, Encode, Reader};
use crate::shamir::{check_threshold, split};
use crate::{CryptoError, ServerId};

/// How often the dealer draws a fresh polynomial when a secret or a share came out zero. A zero
/// happens with probability `n / 2^252` for a working generator, so a second failure in a row
/// means the generator is broken, and no key is better than a predictable one.
const DEAL_ATTEMPTS_MAX: usize = 3;

/// The public half of a threshold key: threshold, group size, `g^x` and `g^{x_i}` for every
/// server. Always consistent (see the module comment).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeySet {
    threshold: usize,
    public_key: Element,
    verification_keys: Vec<Element>,
}

impl KeySet {
    /// `k`: how many shares combine.
    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }

    /// `n`: the number of servers (at most [`crate::SERVERS_MAX`], so it fits).
    pub(crate) fn servers(&self) -> u16 {
        self.verification_keys.len() as u16
    }

    /// `g^x`.
    pub(crate) fn public_key(&self) -> &Element {
        &self.public_key
    }

    /// `g^{x_i}` of a member; `None` for a server outside the group.
    pub(crate) fn verification_key(&self, id: ServerId) -> Option<&Element> {
        self.verification_keys.get(id.slot())
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("threshold", &self.threshold)
            .field("servers", &self.servers())
            .field("public_key", &self.public_key)
            .field("verification_keys", &self.verification_keys)
            .finish()
    }
}

impl Encode for KeySet {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.threshold as u16).to_be_bytes());
        out.extend_from_slice(&self.servers().to_be_bytes());
        self.public_key.encode_to(out);
        for key in &self.verification_keys {
            key.encode_to(out);
        }
    }
}

impl Decode for KeySet {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let threshold = usize::from(reader.u16()?);
        let servers = usize::from(reader.u16()?);
        check_threshold(threshold, servers).map_err(|_| DecodeError::Invalid {
            what: "key set",
            why: "threshold and group size outside 1 <= k <= n <= 1024",
        })?;
        let public_key = Element::decode_non_identity(reader, "public key")?;
        // Take all the bytes first, so the allocation below is backed by input actually present.
        let mut keys = Reader::new(reader.take(32 * servers)?);
        let mut verification_keys = Vec::with_capacity(servers);
        for _ in 0..servers {
            verification_keys.push(Element::decode_non_identity(&mut keys, "verification key")?);
        }
        if !is_consistent(threshold, &public_key, &verification_keys) {
            return Err(DecodeError::Invalid {
                what: "key set",
                why: "the verification keys and the public key do not lie on one polynomial of degree k - 1",
            });
        }
        Ok(Self {
            threshold,
            public_key,
            verification_keys,
        })
    }
}

/// Whether `g^x, g^{x_1}, .., g^{x_n}` are the values at `0, 1, .., n` of one polynomial of degree
/// below `k` in the exponent, i.e. a codeword of the Reed–Solomon code `RS[n + 1, k]`.
///
/// The dual code consists of the vectors `(v_i · p(i))_{i = 0..n}` for polynomials `p` of degree
/// at most `m = n - k`, where `v_i = 1 / Π_{j ≠ i} (i - j) = (-1)^{n-i} / (i! (n-i)!)`; a vector is
/// a codeword exactly when it is orthogonal to all of them. We test one dual vector, with
/// `p(X) = (X - ρ)^m` for `ρ` hashed from the key set: if the points are not a codeword, the
/// inner product is a non-zero polynomial of degree at most `m` in `ρ`, so it vanishes with
/// probability at most `m / q < 2^-242`. Cost: one multi-scalar multiplication of `n + 1` points.
fn is_consistent(threshold: usize, public_key: &Element, verification_keys: &[Element]) -> bool {
    let servers = verification_keys.len();
    let degree = (servers - threshold) as u64;
    let mut transcript = Vec::with_capacity(4 + 32 * (servers + 1));
    transcript.extend_from_slice(&(threshold as u16).to_be_bytes());
    transcript.extend_from_slice(&(servers as u16).to_be_bytes());
    for key in std::iter::once(public_key).chain(verification_keys) {
        transcript.extend_from_slice(key.as_bytes());
    }
    let rho = hash_to_scalar("key-set/consistency", &[&transcript]);

    // factorial[i] = i!, and inverse_factorial[i] = 1 / i! with a single inversion.
    let mut factorial = Vec::with_capacity(servers + 1);
    factorial.push(Scalar::ONE);
    for i in 1..=servers {
        factorial.push(factorial[i - 1] * Scalar::from(i as u64));
    }
    let mut inverse_factorial = vec![Scalar::ONE; servers + 1];
    inverse_factorial[servers] = factorial[servers].invert();
    for i in (1..=servers).rev() {
        inverse_factorial[i - 1] = inverse_factorial[i] * Scalar::from(i as u64);
    }

    let coefficients = (0..=servers).map(|i| {
        let v = inverse_factorial[i] * inverse_factorial[servers - i];
        let v = if (servers - i) % 2 == 1 { -v } else { v };
        v * (Scalar::from(i as u64) - rho).pow_vartime([degree])
    });
    let points = std::iter::once(public_key)
        .chain(verification_keys)
        .map(|key| *key.point());
    RistrettoPoint::vartime_multiscalar_mul(coefficients, points).is_identity()
}

/// A server's share `x_i` of the secret, and its verification key `g^{x_i}` (derived, not
/// encoded). Zeroized on drop; `Debug` does not show the secret.
pub(crate) struct SecretShare {
    id: ServerId,
    secret: Scalar,
    verification_key: Element,
}

impl SecretShare {
    fn new(id: ServerId, secret: Scalar) -> Self {
        Self {
            id,
            secret,
            verification_key: Element::new(RISTRETTO_BASEPOINT_TABLE * &secret),
        }
    }

    /// The server holding this share.
    pub(crate) fn id(&self) -> ServerId {
        self.id
    }

    /// `x_i`.
    pub(crate) fn secret(&self) -> &Scalar {
        &self.secret
    }

    /// `g^{x_i}`.
    pub(crate) fn verification_key(&self) -> &Element {
        &self.verification_key
    }
}

impl Zeroize for SecretShare {
    fn zeroize(&mut self) {
        self.secret.zeroize();
    }
}

impl Drop for SecretShare {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretShare {}

impl std::fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretShare")
            .field("id", &self.id)
            .field("verification_key", &self.verification_key)
            .finish_non_exhaustive()
    }
}

impl Encode for SecretShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        encode_scalar(&self.secret, out);
    }
}

impl Decode for SecretShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = ServerId::decode_from(reader)?;
        let mut secret = decode_scalar(reader, "secret key share")?;
        if secret == Scalar::ZERO {
            return Err(DecodeError::Invalid {
                what: "secret key share",
                why: "zero",
            });
        }
        let share = Self::new(id, secret);
        secret.zeroize();
        Ok(share)
    }
}

/// Deals a fresh threshold key: any `k` of the `n` shares determine `x`, fewer reveal nothing.
/// Neither `x` nor any `x_i` is zero (so no public element is the identity).
pub(crate) fn deal(
    k: usize,
    n: usize,
    rng: &mut (impl CryptoRngCore + ?Sized),
) -> Result<(KeySet, Vec<SecretShare>), CryptoError> {
    check_threshold(k, n)?;
    for _ in 0..DEAL_ATTEMPTS_MAX {
        let mut secret = Scalar::random(rng);
        let mut shares = split(secret, k, n, &mut &mut *rng)?;
        let degenerate = secret == Scalar::ZERO || shares.contains(&Scalar::ZERO);
        if !degenerate {
            let public_key = Element::new(RISTRETTO_BASEPOINT_TABLE * &secret);
            let secret_shares: Vec<SecretShare> = ServerId::all(n as u16)
                .zip(&shares)
                .map(|(id, share)| SecretShare::new(id, *share))
                .collect();
            let key_set = KeySet {
                threshold: k,
                public_key,
                verification_keys: secret_shares.iter().map(|s| s.verification_key).collect(),
            };
            secret.zeroize();
            shares.zeroize();
            debug_assert!(is_consistent(
                k,
                &key_set.public_key,
                &key_set.verification_keys
            ));
            return Ok((key_set, secret_shares));
        }
        secret.zeroize();
        shares.zeroize();
    }
    Err(CryptoError::InvalidParameters(
        "the random number generator keeps producing zero secrets".into(),
    ))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn dealt_key_sets_are_consistent_for_their_threshold_and_any_larger_one_only() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        for n in 1..=9 {
            for k in 1..=n {
                let (key_set, shares) = deal(k, n, &mut rng).unwrap();
                assert_eq!(shares.len(), n);
                let keys = &key_set.verification_keys;
                for threshold in 1..=n {
                    let consistent = is_consistent(threshold, &key_set.public_key, keys);
                    assert_eq!(
                        consistent,
                        threshold >= k,
                        "n {n} k {k} threshold {threshold}"
                    );
                }
                assert_eq!(KeySet::from_bytes(&key_set.to_bytes()).unwrap(), key_set);
            }
        }
    }

    #[test]
    fn a_broken_generator_gets_no_key() {
        struct Zeros;
        impl rand_core::RngCore for Zeros {
            fn next_u32(&mut self) -> u32 {
                0
            }
            fn next_u64(&mut self) -> u64 {
                0
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                dest.fill(0);
            }
            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
                dest.fill(0);
                Ok(())
            }
        }
        impl rand_core::CryptoRng for Zeros {}
        assert!(matches!(
            deal(2, 3, &mut Zeros),
            Err(CryptoError::InvalidParameters(_))
        ));
    }
}
