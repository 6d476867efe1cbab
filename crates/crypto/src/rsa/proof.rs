//! Proofs of correctness of signature shares (Shoup, §2.2) and the pessimistic combine.
//!
//! The proof shows `log_v v_i = log_{x̃} x_i²` with `x̃ = x^{4Δ}`, non-interactively (Fiat–Shamir):
//! the prover picks `r` of `L(N) + L_c + L_zk` bits, computes `v' = v^r`, `x' = x̃^r`,
//! `c = H'(…, v, x̃, v_i, x_i², v', x')` and `z = s_i·c + r` over the integers; the verifier
//! recomputes `v' = v^z v_i^{-c}` and `x' = x̃^z x_i^{-2c}` and checks the hash.
//!
//! Deviation from the paper's parameters: Shoup takes a challenge of `L1 = 128` bits and `r` of
//! `L(N) + 2·L1` bits. We take a 256-bit challenge (`CHALLENGE_BITS`, the full SHA-256 output)
//! and therefore `r` of `L(N) + 256 + 128` bits, which keeps `s_i·c` hidden in `z` up to a
//! statistical distance of `2^-128` (with a 256-bit `c` and the paper's `r`, `z` would leak).
//!
//! The hash binds the [`Context`], the server id, the modulus and the message digest, so a proof
//! answers exactly one request in one protocol instance.

use crypto_bigint::modular::BoxedMontyForm;
use crypto_bigint::{BoxedUint, ConcatenatingMul};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::arith::{
    from_be, mul_small, multi_pow_vartime, pow_secret, resize_secret, to_be_fixed, to_be_minimal,
};
use super::{MODULUS_BITS_MAX, PublicKey, SecretKeyShare, Signature, SignatureShare};
use crate::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};
use crate::{CombineError, Combined, Context, CryptoError, ServerId, shamir};

/// Bits of the Fiat–Shamir challenge `c` (the whole SHA-256 output).
pub const CHALLENGE_BITS: u32 = 256;

/// Statistical hiding of `s_i·c` inside `z`: `r` has this many bits more than `s_i·c` can have.
pub const ZERO_KNOWLEDGE_SLACK_BITS: u32 = 128;

/// Bytes of the challenge `c`.
const CHALLENGE_BYTES: usize = (CHALLENGE_BITS / 8) as usize;

/// The largest response `z` any key admits, in bytes: `z < 2^{L(N) + 256 + 128 + 1}` for the
/// largest modulus.
pub const PROOF_RESPONSE_BYTES_MAX: usize =
    ((MODULUS_BITS_MAX + CHALLENGE_BITS + ZERO_KNOWLEDGE_SLACK_BITS + 1) as usize).div_ceil(8);

/// Domain-separation tag of the proof hash `H'`.
const PROOF_SCHEME: &str = "shoup-rsa/share-proof/v1";

/// Bits of the nonce `r` for a modulus of `modulus_bits`.
fn nonce_bits(modulus_bits: u32) -> u32 {
    modulus_bits + CHALLENGE_BITS + ZERO_KNOWLEDGE_SLACK_BITS
}

/// A proof that a signature share is correct: the challenge `c` and the response `z`.
///
/// Encoding: `c` (32 bytes) ‖ `len: u32` ‖ `z` big-endian without leading zeros
/// (`1 <= len <= PROOF_RESPONSE_BYTES_MAX`, first byte non-zero).
#[derive(Clone, PartialEq, Eq)]
pub struct ShareProof {
    challenge: [u8; CHALLENGE_BYTES],
    response: Vec<u8>,
}

impl std::fmt::Debug for ShareProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareProof")
            .field("challenge", &hex::encode(self.challenge))
            .field("response", &hex::encode(&self.response))
            .finish()
    }
}

impl Encode for ShareProof {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.challenge);
        put_bytes(out, &self.response);
    }
}

impl Decode for ShareProof {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let challenge = reader.array()?;
        let response = reader.bytes("RSA share proof response", PROOF_RESPONSE_BYTES_MAX)?;
        if response.first().is_none_or(|b| *b == 0) {
            return Err(DecodeError::Invalid {
                what: "RSA share proof response",
                why: "empty or with a leading zero byte",
            });
        }
        Ok(Self {
            challenge,
            response: response.to_vec(),
        })
    }
}

impl SecretKeyShare {
    /// A proof that `share` (this server's share on `message`) is correct, bound to `ctx`.
    /// Produced on request only, when an optimistic combination failed.
    pub fn prove(
        &self,
        public: &PublicKey,
        ctx: &Context,
        message: &[u8],
        share: &SignatureShare,
        rng: &mut (impl CryptoRngCore + ?Sized),
    ) -> ShareProof {
        self.prove_digest(public, ctx, &super::sha256(message), share, rng)
    }

    /// [`Self::prove`] for a SHA-256 `digest` the caller computed.
    pub fn prove_digest(
        &self,
        public: &PublicKey,
        ctx: &Context,
        digest: &[u8; 32],
        share: &SignatureShare,
        rng: &mut (impl CryptoRngCore + ?Sized),
    ) -> ShareProof {
        let modulus_bits = public.modulus_bits();
        let x_tilde = public.x_tilde(digest, self.servers());

        // r uniform in [0, 2^{nonce_bits}), drawn as bytes with the excess top bits cleared.
        let r_bits = nonce_bits(modulus_bits);
        let mut r_bytes = Zeroizing::new(vec![0u8; r_bits.div_ceil(8) as usize]);
        rng.fill_bytes(&mut r_bytes);
        let excess_bits = r_bytes.len() as u32 * 8 - r_bits;
        if let Some(top) = r_bytes.first_mut() {
            *top &= 0xff >> excess_bits;
        }
        // Not `from_be`: its size check would scan the secret in variable time.
        let r = Zeroizing::new(
            BoxedUint::from_be_slice(&r_bytes, r_bits).unwrap_or_else(|_| BoxedUint::zero()),
        );

        let v_commit = pow_secret(public.generator_form(), &r, r_bits).retrieve();
        let x_commit = pow_secret(&x_tilde, &r, r_bits).retrieve();
        let share_squared = public
            .share_value(share)
            .map(|x_i| x_i.square().retrieve())
            .unwrap_or_else(|_| BoxedUint::zero());
        let challenge = public.challenge(
            ctx,
            self.id(),
            digest,
            &x_tilde.retrieve(),
            &share_squared,
            &v_commit,
            &x_commit,
        );

        // z = s_i·c + r over the integers, in a fixed precision so the arithmetic does not
        // depend on the secret's size.
        let c = BoxedUint::from_be_slice(&challenge, CHALLENGE_BITS)
            .unwrap_or_else(|_| BoxedUint::zero());
        let z_bits = r_bits + 1;
        let product = Zeroizing::new(resize_secret(self.secret().concatenating_mul(&c), z_bits));
        let r_wide = Zeroizing::new(resize_secret(BoxedUint::clone(&r), z_bits));
        let z = Zeroizing::new(product.wrapping_add(&*r_wide));
        ShareProof {
            challenge,
            response: to_be_minimal(&z),
        }
    }
}

impl PublicKey {
    /// `x̃ = x^{4Δ}` in Montgomery form.
    fn x_tilde(&self, digest: &[u8; 32], servers: u16) -> BoxedMontyForm {
        let four_delta = mul_small(&super::arith::factorial(servers), 4);
        let x = self.encoded_digest(digest);
        multi_pow_vartime(self.params(), &[(&x, &four_delta)])
    }

    /// `c = H'(ctx, modulus, id, digest, v, x̃, v_i, x_i², v', x')`, every integer in the
    /// modulus length.
    #[allow(clippy::too_many_arguments)]
    fn challenge(
        &self,
        ctx: &Context,
        id: ServerId,
        digest: &[u8; 32],
        x_tilde: &BoxedUint,
        share_squared: &BoxedUint,
        v_commit: &BoxedUint,
        x_commit: &BoxedUint,
    ) -> [u8; CHALLENGE_BYTES] {
        let len = self.modulus_bytes();
        let verification_key = self
            .verification_key(id)
            .cloned()
            .unwrap_or_else(BoxedUint::zero);
        let mut payload = Vec::with_capacity(2 + 32 + 7 * len);
        payload.extend_from_slice(&id.get().to_be_bytes());
        payload.extend_from_slice(digest);
        for value in [
            self.modulus(),
            self.generator(),
            x_tilde,
            &verification_key,
            share_squared,
            v_commit,
            x_commit,
        ] {
            payload.extend_from_slice(&to_be_fixed(value, len));
        }
        Sha256::digest(ctx.bind(PROOF_SCHEME, &payload)).into()
    }

    /// Checks one share and its proof for `message` under `ctx`.
    pub fn verify_share(
        &self,
        ctx: &Context,
        message: &[u8],
        share: &SignatureShare,
        proof: &ShareProof,
    ) -> Result<(), CryptoError> {
        self.verify_share_digest(ctx, &super::sha256(message), share, proof)
    }

    /// [`Self::verify_share`] for a SHA-256 `digest` the caller computed.
    pub fn verify_share_digest(
        &self,
        ctx: &Context,
        digest: &[u8; 32],
        share: &SignatureShare,
        proof: &ShareProof,
    ) -> Result<(), CryptoError> {
        let id = share.id();
        if !id.is_member_of(self.servers()) {
            return Err(CryptoError::UnknownServer(id));
        }
        let x_tilde = self.x_tilde(digest, self.servers());
        self.check_proof(ctx, digest, &x_tilde, share, proof)
            .ok_or(CryptoError::InvalidShare(id))
    }

    /// The proof check proper; `None` for any failure (all of them are the sender's fault).
    fn check_proof(
        &self,
        ctx: &Context,
        digest: &[u8; 32],
        x_tilde: &BoxedMontyForm,
        share: &SignatureShare,
        proof: &ShareProof,
    ) -> Option<()> {
        let modulus_bits = self.modulus_bits();
        let x_i = self.share_value(share).ok()?;
        let z = from_be(&proof.response, nonce_bits(modulus_bits) + 1)?;
        let c = BoxedUint::from_be_slice(&proof.challenge, CHALLENGE_BITS).ok()?;
        let two_c = mul_small(&c, 2);
        let v_i = self.to_monty(self.verification_key(share.id())?.clone());
        let v_i_inverse = Option::from(v_i.invert_vartime())?;
        let x_i_inverse = Option::from(x_i.invert_vartime())?;

        let v_commit = multi_pow_vartime(
            self.params(),
            &[(self.generator_form(), &z), (&v_i_inverse, &c)],
        );
        let x_commit = multi_pow_vartime(self.params(), &[(x_tilde, &z), (&x_i_inverse, &two_c)]);
        let expected = self.challenge(
            ctx,
            share.id(),
            digest,
            &x_tilde.retrieve(),
            &x_i.square().retrieve(),
            &v_commit.retrieve(),
            &x_commit.retrieve(),
        );
        bool::from(expected.ct_eq(&proof.challenge)).then_some(())
    }

    /// Combines after checking proofs: verifies the shares one by one, in order, until `k` are
    /// valid, names the senders of the invalid ones in [`Combined::faulty`], and combines the
    /// `k` valid shares. Fails with `NotEnoughValidShares { faulty }` when fewer than `k` are
    /// valid, and with `DuplicateShare` / `UnknownServer` / `NotEnoughShares` before any work.
    pub fn combine_with_proofs(
        &self,
        ctx: &Context,
        message: &[u8],
        shares: &[(SignatureShare, ShareProof)],
    ) -> Result<Combined<Signature>, CombineError> {
        self.combine_with_proofs_digest(ctx, &super::sha256(message), shares)
    }

    /// [`Self::combine_with_proofs`] for a SHA-256 `digest` the caller computed.
    pub fn combine_with_proofs_digest(
        &self,
        ctx: &Context,
        digest: &[u8; 32],
        shares: &[(SignatureShare, ShareProof)],
    ) -> Result<Combined<Signature>, CombineError> {
        let ids: Vec<ServerId> = shares.iter().map(|(share, _)| share.id()).collect();
        shamir::check_share_ids(&ids, self.threshold(), self.servers())?;
        // x̃ = x^{4Δ} is the same for every share: computed once.
        let x_tilde = self.x_tilde(digest, self.servers());
        let mut valid = Vec::with_capacity(self.threshold());
        let mut faulty = Vec::new();
        for (share, proof) in shares {
            if valid.len() == self.threshold() {
                break;
            }
            match self
                .check_proof(ctx, digest, &x_tilde, share, proof)
                .and_then(|()| self.share_value(share).ok())
            {
                Some(value) => valid.push((share.id(), value)),
                None => faulty.push(share.id()),
            }
        }
        if valid.len() < self.threshold() {
            return Err(CombineError::NotEnoughValidShares {
                needed: self.threshold(),
                valid: valid.len(),
                faulty,
            });
        }
        let value = self.combine_values(digest, &valid)?;
        Ok(Combined { value, faulty })
    }
}
