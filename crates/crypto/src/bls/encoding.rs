//! The canonical byte encodings of the BLS types (layouts in `docs/crypto/bls.md`) and the
//! checks that make decoding safe on untrusted input: every point compressed, on the curve, in
//! the prime-order subgroup, not the identity and in its one canonical encoding; scalars below
//! the group order and non-zero; key sets with `1 <= k <= n <= 1024`, exactly `n` verification
//! keys, all on one polynomial of degree `k - 1` through the group key.

use blstrs::{G1Affine, G2Affine, G2Projective, Scalar};
use ff::{BatchInvert, Field};
use group::Group;
use group::prime::PrimeCurveAffine;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::{
    ENCODED_PUBLIC_KEY_BYTES, ENCODED_SIGNATURE_BYTES, PublicKeySet, SecretKeyShare, SecretScalar,
    Signature, SignatureShare,
};
use crate::encoding::{Decode, DecodeError, Encode, Reader};
use crate::shamir::check_threshold;
use crate::{SERVERS_MAX, ServerId};

/// Domain of the hash that seeds the key-set consistency check.
const KEY_SET_SEED_DOMAIN: &[u8] = b"sintra/v1/bls/key-set-consistency";

/// A G1 point with every check of the module documentation; a point decoded before is taken
/// from the memo table (`cache.rs`: same bytes, same result).
fn decode_g1(reader: &mut Reader<'_>, what: &'static str) -> Result<G1Affine, DecodeError> {
    let bytes: [u8; ENCODED_SIGNATURE_BYTES] = reader.array()?;
    super::cache::point(&bytes, || {
        let point = Option::<G1Affine>::from(G1Affine::from_compressed(&bytes)).ok_or(
            DecodeError::Invalid {
                what,
                why: "not a compressed point of the prime-order subgroup of G1",
            },
        )?;
        check_point(
            bool::from(point.is_identity()),
            point.to_compressed() == bytes,
            what,
        )?;
        Ok(point)
    })
}

fn decode_g2(
    reader: &mut Reader<'_>,
    what: &'static str,
) -> Result<(G2Affine, [u8; ENCODED_PUBLIC_KEY_BYTES]), DecodeError> {
    let bytes: [u8; ENCODED_PUBLIC_KEY_BYTES] = reader.array()?;
    let point = Option::<G2Affine>::from(G2Affine::from_compressed(&bytes)).ok_or(
        DecodeError::Invalid {
            what,
            why: "not a compressed point of the prime-order subgroup of G2",
        },
    )?;
    check_point(
        bool::from(point.is_identity()),
        point.to_compressed() == bytes,
        what,
    )?;
    Ok((point, bytes))
}

fn check_point(
    is_identity: bool,
    is_canonical: bool,
    what: &'static str,
) -> Result<(), DecodeError> {
    if is_identity {
        return Err(DecodeError::Invalid {
            what,
            why: "the identity",
        });
    }
    // Re-encoding must give the input back: one encoding per point, whatever blst tolerates.
    if !is_canonical {
        return Err(DecodeError::Invalid {
            what,
            why: "non-canonical encoding",
        });
    }
    Ok(())
}

impl Encode for SecretKeyShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        out.extend_from_slice(&self.scalar.0.to_bytes_be());
    }
}

impl Decode for SecretKeyShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = ServerId::decode_from(reader)?;
        let mut bytes: [u8; 32] = reader.array()?;
        let scalar = Option::<Scalar>::from(Scalar::from_bytes_be(&bytes));
        bytes.zeroize();
        let scalar = SecretScalar(scalar.ok_or(DecodeError::Invalid {
            what: "secret key share",
            why: "scalar not below the group order",
        })?);
        if bool::from(scalar.0.is_zero()) {
            return Err(DecodeError::Invalid {
                what: "secret key share",
                why: "zero scalar",
            });
        }
        Ok(Self { id, scalar })
    }
}

impl Encode for SignatureShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        out.extend_from_slice(&self.point.to_compressed());
    }
}

impl Decode for SignatureShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = ServerId::decode_from(reader)?;
        let point = decode_g1(reader, "signature share")?;
        Ok(Self { id, point })
    }
}

impl Encode for Signature {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_compressed());
    }
}

impl Decode for Signature {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_g1(reader, "signature").map(Self)
    }
}

impl Encode for PublicKeySet {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.k.to_be_bytes());
        out.extend_from_slice(&self.n.to_be_bytes());
        out.extend_from_slice(&self.group_key.to_compressed());
        out.extend_from_slice(&(self.verification_keys.len() as u32).to_be_bytes());
        for key in &self.verification_keys {
            out.extend_from_slice(&key.to_compressed());
        }
    }
}

impl Decode for PublicKeySet {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let k = reader.u16()?;
        let n = reader.u16()?;
        if check_threshold(usize::from(k), usize::from(n)).is_err() {
            return Err(DecodeError::Invalid {
                what: "public key set",
                why: "threshold outside 1 <= k <= n <= 1024",
            });
        }
        let mut digest = Sha256::new();
        digest.update(KEY_SET_SEED_DOMAIN);
        digest.update(k.to_be_bytes());
        digest.update(n.to_be_bytes());
        let (group_key, bytes) = decode_g2(reader, "group key")?;
        digest.update(bytes);
        // The count must be n: checked before anything is allocated.
        if reader.u32()? != u32::from(n) {
            return Err(DecodeError::Invalid {
                what: "public key set",
                why: "number of verification keys differs from n",
            });
        }
        let mut verification_keys = Vec::with_capacity(usize::from(n.min(SERVERS_MAX)));
        for _ in 0..n {
            let (key, bytes) = decode_g2(reader, "verification key")?;
            digest.update(bytes);
            verification_keys.push(key);
        }
        let seed: [u8; 32] = digest.finalize().into();
        if !keys_lie_on_one_polynomial(usize::from(k), &group_key, &verification_keys, seed) {
            return Err(DecodeError::Invalid {
                what: "public key set",
                why: "keys do not lie on one polynomial of degree k - 1 through the group key",
            });
        }
        Ok(Self::new(k, n, group_key, verification_keys))
    }
}

/// Whether `(pk, vk_1, …, vk_n)` are the values at `0, 1, …, n` of one polynomial of degree
/// below `k` (with coefficients in G2): a Reed–Solomon codeword of dimension `k` over the points
/// `0..=n`. Checked against one random codeword of the dual code (as in SCRAPE, Cascudo–David,
/// ACNS 2017): with `u_i = 1 / Π_{j≠i} (i − j)` and a random polynomial `g` of degree at most
/// `n − k`, a codeword satisfies `Σ_i u_i g(i) P_i = 0`, and any other vector fails with
/// probability `1 − 1/r`. One multi-scalar multiplication over `n + 1` points, instead of
/// interpolating each of the `n - k` extra keys.
fn keys_lie_on_one_polynomial(
    k: usize,
    group_key: &G2Affine,
    keys: &[G2Affine],
    seed: [u8; 32],
) -> bool {
    let n = keys.len();
    if k == 0 || k > n {
        return false;
    }
    // Π_{j≠i, 0<=j<=n} (i − j) = i! · (−1)^{n−i} · (n − i)!
    let mut factorials = Vec::with_capacity(n + 1);
    factorials.push(Scalar::ONE);
    for i in 1..=n as u64 {
        let previous = factorials.last().copied().unwrap_or(Scalar::ONE);
        factorials.push(previous * Scalar::from(i));
    }
    let mut weights: Vec<Scalar> = (0..=n)
        .map(|i| {
            let product = factorials[i] * factorials[n - i];
            if (n - i) % 2 == 1 { -product } else { product }
        })
        .collect();
    weights.iter_mut().batch_invert();

    let mut rng = ChaCha20Rng::from_seed(seed);
    let dual: Vec<Scalar> = (0..=n - k).map(|_| Scalar::random(&mut rng)).collect();
    for (i, weight) in weights.iter_mut().enumerate() {
        let x = Scalar::from(i as u64);
        *weight *= dual.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c);
    }
    let points: Vec<G2Projective> = std::iter::once(group_key)
        .chain(keys)
        .map(G2Projective::from)
        .collect();
    bool::from(G2Projective::multi_exp(&points, &weights).is_identity())
}

crate::impl_serde_via_encoding!(SecretKeyShare, PublicKeySet, SignatureShare, Signature);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bls::deal;

    #[test]
    fn a_forged_key_set_fails_the_consistency_check() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (keys, _) = deal(3, 7, &mut rng).unwrap();
        let seed = [7u8; 32];
        assert!(keys_lie_on_one_polynomial(
            3,
            &keys.group_key,
            &keys.verification_keys,
            seed
        ));
        let mut moved = keys.verification_keys.clone();
        moved[6] = keys.verification_keys[0];
        assert!(!keys_lie_on_one_polynomial(
            3,
            &keys.group_key,
            &moved,
            seed
        ));
        let other = keys.verification_keys[1];
        assert!(!keys_lie_on_one_polynomial(
            3,
            &other,
            &keys.verification_keys,
            seed
        ));
        // k = n: the group key is the interpolation of all n keys.
        let (full, _) = deal(5, 5, &mut rng).unwrap();
        assert!(keys_lie_on_one_polynomial(
            5,
            &full.group_key,
            &full.verification_keys,
            seed
        ));
        assert!(!keys_lie_on_one_polynomial(
            5,
            &keys.group_key,
            &full.verification_keys,
            seed
        ));
    }
}
