//! Chaum–Pedersen proofs of equality of discrete logarithms, `log_g(K) = log_B(V)`: the share
//! proofs of the coin (CKS00 §3: `log_g(g^{x_i}) = log_{g̃}(g̃^{x_i})`) and of TDH2 decryption
//! shares (Shoup–Gennaro §4: `log_g(h_i) = log_u(u_i)`).
//!
//! Prover with witness `x`: nonce `s`, commitments `A = g^s`, `Â = B^s`, challenge
//! `c = H(domain, B, K, V, A, Â)`, response `z = s + c·x`. Verifier: `g^z = A·K^c` and
//! `B^z = Â·V^c`. Soundness: two accepting transcripts with the same commitments and different
//! challenges reveal `x`, and `c` is a random oracle output fixed only after the commitments.
//!
//! We send the proof in its *batchable* form `(A, Â, z)` rather than the paper's `(c, z)`: `c`
//! is recomputed from the transcript, so the two forms are equally sound, but only this one lets
//! a combiner check `k` proofs in one multi-scalar multiplication (random linear combination of
//! all `2k` equations) instead of `k` separate pairs of exponentiations. It costs 32 more bytes.
//!
//! The nonce is *hedged*: `s = H(x, domain, statement, 32 fresh random bytes)`. A broken random
//! generator then degrades to a deterministic nonce (still secret, still distinct per
//! statement) instead of repeating nonces across statements, which would reveal `x`.

use curve25519_dalek::Scalar;
use std::sync::OnceLock;

use curve25519_dalek::constants::{RISTRETTO_BASEPOINT_POINT, RISTRETTO_BASEPOINT_TABLE};
use curve25519_dalek::ristretto::VartimeRistrettoPrecomputation;
use curve25519_dalek::traits::{IsIdentity, VartimePrecomputedMultiscalarMul};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use zeroize::Zeroize;

use super::{Element, decode_scalar, encode_scalar, hash_parts, hash_to_scalar};
use crate::encoding::{DecodeError, Encode, Reader};
use crate::{CombineError, ServerId};

/// Bytes of an encoded proof: `A | Â | z`.
pub(crate) const PROOF_BYTES: usize = 96;

/// A proof that `log_g(K) = log_B(V)` in batchable form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Proof {
    commitment_generator: Element,
    commitment_base: Element,
    response: Scalar,
}

impl Proof {
    /// Reads `A | Â | z`.
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            commitment_generator: Element::decode(reader, "proof commitment")?,
            commitment_base: Element::decode(reader, "proof commitment")?,
            response: decode_scalar(reader, "proof response")?,
        })
    }
}

impl Encode for Proof {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.commitment_generator.encode_to(out);
        self.commitment_base.encode_to(out);
        encode_scalar(&self.response, out);
    }
}

/// One statement `log_g(key) = log_B(value)` with its proof, for [`verify_batch`].
#[derive(Clone, Copy)]
pub(crate) struct Claim<'a> {
    /// `K = g^x`: the prover's verification key.
    pub(crate) key: &'a Element,
    /// `V = B^x`: the share.
    pub(crate) value: &'a Element,
    /// The proof.
    pub(crate) proof: &'a Proof,
}

fn challenge(
    domain: &[u8],
    base: &Element,
    key: &Element,
    value: &Element,
    a: &Element,
    a_hat: &Element,
) -> Scalar {
    hash_to_scalar(
        "dleq/challenge",
        &[
            domain,
            base.as_bytes(),
            key.as_bytes(),
            value.as_bytes(),
            a.as_bytes(),
            a_hat.as_bytes(),
        ],
    )
}

/// Proves `log_g(key) = log_base(value)` with witness `secret`, where `key = g^secret` and
/// `value = base^secret`. `domain` binds the context (scheme tag, purpose, instance, and what
/// else the statement is about); the verifier must pass the same bytes. Constant time in the
/// secret and the nonce.
pub(crate) fn prove(
    domain: &[u8],
    base: &Element,
    key: &Element,
    value: &Element,
    secret: &Scalar,
    rng: &mut (impl CryptoRngCore + ?Sized),
) -> Proof {
    let mut fresh = [0u8; 32];
    rng.fill_bytes(&mut fresh);
    let mut secret_bytes = secret.to_bytes();
    let mut nonce = hash_to_scalar(
        "dleq/nonce",
        &[
            &secret_bytes,
            domain,
            base.as_bytes(),
            key.as_bytes(),
            value.as_bytes(),
            &fresh,
        ],
    );
    secret_bytes.zeroize();
    let commitment_generator = Element::new(RISTRETTO_BASEPOINT_TABLE * &nonce);
    let commitment_base = Element::new(base.point() * nonce);
    let c = challenge(
        domain,
        base,
        key,
        value,
        &commitment_generator,
        &commitment_base,
    );
    let response = nonce + c * secret;
    nonce.zeroize();
    Proof {
        commitment_generator,
        commitment_base,
        response,
    }
}

/// Checks every claim against the common `base`, all in one multi-scalar multiplication: with
/// weights `ρ_j, σ_j` it tests
/// `Σ_j ρ_j (z_j·g − c_j·K_j − A_j) + σ_j (z_j·B − c_j·V_j − Â_j) = 0`.
/// If any single equation fails, the sum vanishes with probability at most `2^-128` over the
/// 128-bit weights. The weights are drawn from a hash of the whole batch, so they are fixed only
/// after every proof is, and the check is deterministic (every honest combiner agrees).
/// A batch of one is the ordinary check of one proof (two equations in one multiplication).
pub(crate) fn verify_batch(domain: &[u8], base: &Element, claims: &[Claim<'_>]) -> bool {
    let mut transcript = Vec::with_capacity(claims.len() * (64 + PROOF_BYTES));
    for claim in claims {
        transcript.extend_from_slice(claim.key.as_bytes());
        transcript.extend_from_slice(claim.value.as_bytes());
        claim.proof.encode_to(&mut transcript);
    }
    let seed = hash_parts(
        "dleq/batch-weights",
        &[domain, base.as_bytes(), &transcript],
    );
    let mut weights = ChaCha20Rng::from_seed(seed_of(&seed));

    let mut generator_scalar = Scalar::ZERO;
    let mut base_scalar = Scalar::ZERO;
    let mut scalars = Vec::with_capacity(4 * claims.len() + 2);
    let mut points = Vec::with_capacity(4 * claims.len() + 2);
    for claim in claims {
        let proof = claim.proof;
        let c = challenge(
            domain,
            base,
            claim.key,
            claim.value,
            &proof.commitment_generator,
            &proof.commitment_base,
        );
        let rho = weight(&mut weights);
        let sigma = weight(&mut weights);
        generator_scalar += rho * proof.response;
        base_scalar += sigma * proof.response;
        scalars.extend([-(rho * c), -rho, -(sigma * c), -sigma]);
        points.extend([
            *claim.key.point(),
            *proof.commitment_generator.point(),
            *claim.value.point(),
            *proof.commitment_base.point(),
        ]);
    }
    scalars.push(base_scalar);
    points.push(*base.point());
    generator_precomputation()
        .vartime_mixed_multiscalar_mul([generator_scalar], scalars, points)
        .is_identity()
}

/// Wide tables of multiples of `g`, built once: `g` is in every check, so it need not pay for
/// a fresh table each time.
fn generator_precomputation() -> &'static VartimeRistrettoPrecomputation {
    static TABLE: OnceLock<VartimeRistrettoPrecomputation> = OnceLock::new();
    TABLE.get_or_init(|| VartimeRistrettoPrecomputation::new([RISTRETTO_BASEPOINT_POINT]))
}

fn seed_of(hash: &[u8; 64]) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&hash[..32]);
    seed
}

/// A uniform 128-bit scalar.
fn weight(rng: &mut ChaCha20Rng) -> Scalar {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes[..16]);
    Scalar::from_bytes_mod_order(bytes)
}

/// The optimistic choice of `needed` valid shares from `shares` (already checked for count,
/// membership and duplicates): first check the first `needed` as one batch, which succeeds
/// whenever no one cheated; if that fails, check shares one by one, in order, until `needed`
/// are valid, naming every invalid share met on the way. Shares after that point are not
/// examined (they are not needed, and not judged).
pub(crate) fn select_valid<'a, S>(
    shares: &'a [S],
    needed: usize,
    id_of: impl Fn(&S) -> ServerId,
    verify: impl Fn(&[&'a S]) -> bool,
) -> Result<(Vec<&'a S>, Vec<ServerId>), CombineError> {
    let first: Vec<&S> = shares.iter().take(needed).collect();
    if first.len() == needed && verify(&first) {
        return Ok((first, Vec::new()));
    }
    let mut valid = Vec::with_capacity(needed);
    let mut faulty = Vec::new();
    for share in shares {
        if valid.len() == needed {
            break;
        }
        if verify(&[share]) {
            valid.push(share);
        } else {
            faulty.push(id_of(share));
        }
    }
    if valid.len() < needed {
        return Err(CombineError::NotEnoughValidShares {
            needed,
            valid: valid.len(),
            faulty,
        });
    }
    Ok((valid, faulty))
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::ristretto::RistrettoPoint;
    use rand::SeedableRng;

    use super::*;

    struct Statement {
        key: Element,
        value: Element,
        proof: Proof,
    }

    fn statements(
        base: &Element,
        count: usize,
        rng: &mut rand_chacha::ChaCha20Rng,
    ) -> Vec<Statement> {
        (0..count)
            .map(|_| {
                let secret = Scalar::random(rng);
                let key = Element::new(RISTRETTO_BASEPOINT_TABLE * &secret);
                let value = Element::new(base.point() * secret);
                let proof = prove(b"domain", base, &key, &value, &secret, rng);
                Statement { key, value, proof }
            })
            .collect()
    }

    fn claims(statements: &[Statement]) -> Vec<Claim<'_>> {
        statements
            .iter()
            .map(|s| Claim {
                key: &s.key,
                value: &s.value,
                proof: &s.proof,
            })
            .collect()
    }

    #[test]
    fn a_batch_passes_exactly_when_every_proof_does() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let base = Element::new(RistrettoPoint::random(&mut rng));
        let mut batch = statements(&base, 6, &mut rng);
        assert!(verify_batch(b"domain", &base, &claims(&batch)));
        assert!(!verify_batch(b"other domain", &base, &claims(&batch)));
        let other_base = Element::new(RistrettoPoint::random(&mut rng));
        assert!(!verify_batch(b"domain", &other_base, &claims(&batch)));

        // Each way of breaking one claim breaks the batch.
        let swapped_value = batch[3].value;
        batch[3].value = batch[4].value;
        assert!(!verify_batch(b"domain", &base, &claims(&batch)));
        batch[3].value = swapped_value;
        batch[2].proof.response += Scalar::ONE;
        assert!(!verify_batch(b"domain", &base, &claims(&batch)));
        batch[2].proof.response -= Scalar::ONE;
        batch[0].proof.commitment_base = batch[1].proof.commitment_base;
        assert!(!verify_batch(b"domain", &base, &claims(&batch)));
        assert!(verify_batch(b"domain", &base, &claims(&batch[1..])));

        // Two wrong claims whose errors would cancel with equal weights do not pass.
        let mut pair = statements(&base, 2, &mut rng);
        let delta = RistrettoPoint::random(&mut rng);
        pair[0].value = Element::new(pair[0].value.point() + delta);
        pair[1].value = Element::new(pair[1].value.point() - delta);
        assert!(!verify_batch(b"domain", &base, &claims(&pair)));
    }

    #[test]
    fn select_valid_batches_first_and_names_culprits_on_failure() {
        let verify = |batch: &[&i32]| batch.iter().all(|x| **x > 0);
        let id = |x: &i32| ServerId::new(x.unsigned_abs() as u16).unwrap();
        let (valid, faulty) = select_valid(&[1, 2, 3, 4], 3, id, verify).unwrap();
        assert_eq!(valid, [&1, &2, &3]);
        assert!(faulty.is_empty());
        let (valid, faulty) = select_valid(&[1, -2, 3, -4, 5, 6], 3, id, verify).unwrap();
        assert_eq!(valid, [&1, &3, &5]);
        assert_eq!(faulty, [id(&2), id(&4)]);
        assert_eq!(
            select_valid(&[1, -2, 3], 3, id, verify),
            Err(CombineError::NotEnoughValidShares {
                needed: 3,
                valid: 2,
                faulty: vec![id(&2)]
            })
        );
    }
}
