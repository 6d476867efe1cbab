//! The threshold coin of Cachin, Kursawe and Shoup ("Random oracles in Constantinople", PODC
//! 2000 / J. Cryptology 2005, §3: the Diffie–Hellman based coin), on ristretto255.
//!
//! Guarantees, for a key dealt with threshold `k = t + 1`:
//! - *Unpredictability*: the value of the coin named `N` is unpredictable until `k` servers
//!   released their share for `N` (CDH in the random-oracle model). Fewer than `k` shares,
//!   plus shares for any number of other names, reveal nothing about it.
//! - *Agreement*: the value depends only on `N` and the key, never on which `k` valid shares
//!   were combined.
//! - *Robustness*: every share carries a proof of its correctness; a bad share is detected on
//!   its own and attributed to its sender.
//!
//! Scheme: `g̃ = H_G(N)` (hash to the group); server `i` releases `g̃^{x_i}` with a proof that
//! `log_g(g^{x_i}) = log_{g̃}(g̃^{x_i})`; any `k` valid shares give `g̃^x = Π (g̃^{x_i})^{λ_i}`;
//! the coin value is `H(N, g̃^x)`. The value has no public check, so [`PublicKeySet::combine`]
//! must verify the shares it uses: it verifies `k` shares in one batched multi-scalar
//! multiplication and falls back to one-by-one checks only when the batch fails. The design
//! page is `docs/crypto/coin.md`.

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use sha2::{Digest, Sha256, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::encoding::{Decode, DecodeError, Encode, Reader};
use crate::ristretto::{self, Claim, Element, KeySet, Proof, SecretShare};
use crate::shamir::{check_share_ids, lagrange_at_zero};
use crate::{CombineError, Combined, Context, CryptoError, ServerId};

/// Bytes of an encoded [`CoinShare`]: `id | g̃^{x_i} | A | Â | z`.
pub const COIN_SHARE_BYTES: usize = 2 + 32 + 96;

/// Scheme tags, bound with the coin name by [`Context::bind`].
const TAG_BASE: &str = "coin/base";
const TAG_PROOF: &str = "coin/share-proof";
const TAG_VALUE: &str = "coin/value";
const TAG_PERMUTATION: &str = "coin/permutation";

/// Draws of the permutation generator before [`CoinValue::permutation`] gives up rejecting.
/// Each draw is rejected with probability below `2^-54` (bounds are at most 1024 and draws are
/// 64 bits), so the cap is never reached in practice; it only bounds the loop.
const PERMUTATION_DRAWS_MAX: usize = 8;

/// A server's share of the coin key. Zeroized on drop; `Debug` shows only the id.
///
/// Encoding: `id: u16 | x_i: 32` (34 bytes).
#[derive(Debug)]
pub struct SecretKeyShare(SecretShare);

/// The public key of the coin: threshold `k`, group size `n`, `g^x`, and the verification key
/// `g^{x_i}` of every server. Decoding checks that the keys are consistent (they lie on one
/// polynomial of degree `k - 1`), so a value of this type is always a key some dealer made.
///
/// Encoding: `k: u16 | n: u16 | g^x: 32 | g^{x_1..x_n}: n × 32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeySet(KeySet);

/// One server's share of one coin: `g̃^{x_i}` and the proof that it is correct.
///
/// Encoding ([`COIN_SHARE_BYTES`]): `id: u16 | g̃^{x_i}: 32 | A: 32 | Â: 32 | z: 32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoinShare {
    id: ServerId,
    value: Element,
    proof: Proof,
}

/// The value of a coin: 32 uniformly random bytes, the same for every set of `k` valid shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoinValue([u8; 32]);

/// Deals a coin key for `n` servers, any `k` of which produce a coin.
/// `InvalidParameters` unless `1 <= k <= n <= SERVERS_MAX`.
pub fn deal(
    k: usize,
    n: usize,
    rng: &mut (impl CryptoRngCore + ?Sized),
) -> Result<(PublicKeySet, Vec<SecretKeyShare>), CryptoError> {
    let (key_set, shares) = ristretto::deal(k, n, rng)?;
    Ok((
        PublicKeySet(key_set),
        shares.into_iter().map(SecretKeyShare).collect(),
    ))
}

/// `g̃ = H_G(name)`: the base every share of this coin is a power of.
fn base(name: &Context) -> Element {
    Element::new(RistrettoPoint::hash_from_bytes::<Sha512>(
        &name.bind(TAG_BASE, b""),
    ))
}

/// The domain of the share proofs of this coin.
fn proof_domain(name: &Context) -> Vec<u8> {
    name.bind(TAG_PROOF, b"")
}

impl SecretKeyShare {
    /// The server holding this share.
    pub fn id(&self) -> ServerId {
        self.0.id()
    }

    /// This server's share of the coin `name`, with its proof. Releasing it is the server's
    /// vote to reveal the coin: `k` such shares determine the value.
    pub fn share(&self, name: &Context, rng: &mut (impl CryptoRngCore + ?Sized)) -> CoinShare {
        let base = base(name);
        let value = Element::new(base.point() * self.0.secret());
        let proof = ristretto::prove(
            &proof_domain(name),
            &base,
            self.0.verification_key(),
            &value,
            self.0.secret(),
            rng,
        );
        CoinShare {
            id: self.id(),
            value,
            proof,
        }
    }
}

impl Zeroize for SecretKeyShare {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKeyShare {}

impl CoinShare {
    /// The server that produced this share.
    pub fn id(&self) -> ServerId {
        self.id
    }
}

impl PublicKeySet {
    /// `k`: how many shares produce a coin.
    pub fn threshold(&self) -> usize {
        self.0.threshold()
    }

    /// `n`: the number of servers.
    pub fn servers(&self) -> u16 {
        self.0.servers()
    }

    fn claim<'a>(&'a self, share: &'a CoinShare) -> Option<Claim<'a>> {
        Some(Claim {
            key: self.0.verification_key(share.id)?,
            value: &share.value,
            proof: &share.proof,
        })
    }

    /// Checks one share of the coin `name` on its own: `UnknownServer` for a sender outside
    /// the group, `InvalidShare(id)` for a wrong value or proof (including a share of another
    /// coin or from another key).
    pub fn verify_share(&self, name: &Context, share: &CoinShare) -> Result<(), CryptoError> {
        let claim = self
            .claim(share)
            .ok_or(CryptoError::UnknownServer(share.id))?;
        if ristretto::verify_batch(&proof_domain(name), &base(name), &[claim]) {
            Ok(())
        } else {
            Err(CryptoError::InvalidShare(share.id))
        }
    }

    /// The value of the coin `name` from at least `k` shares from distinct members.
    ///
    /// Every share that is used is verified (the value cannot be checked afterwards): the first
    /// `k` together in one batch; if the batch fails, shares are checked one by one until `k`
    /// valid ones are found, and the invalid ones met are returned in `faulty`. Errors:
    /// `NotEnoughShares`, `DuplicateShare`, `UnknownServer` for a malformed set (checked before
    /// any cryptography), `NotEnoughValidShares` when fewer than `k` shares are valid.
    pub fn combine(
        &self,
        name: &Context,
        shares: &[CoinShare],
    ) -> Result<Combined<CoinValue>, CombineError> {
        let ids: Vec<ServerId> = shares.iter().map(CoinShare::id).collect();
        check_share_ids(&ids, self.threshold(), self.servers())?;
        let base = base(name);
        let domain = proof_domain(name);
        let (valid, faulty) = ristretto::select_valid(
            shares,
            self.threshold(),
            CoinShare::id,
            |batch: &[&CoinShare]| {
                // Membership was checked above, so every share has a verification key.
                let claims: Option<Vec<Claim<'_>>> =
                    batch.iter().map(|share| self.claim(share)).collect();
                claims.is_some_and(|claims| ristretto::verify_batch(&domain, &base, &claims))
            },
        )?;
        let ids: Vec<ServerId> = valid.iter().map(|share| share.id).collect();
        let lambdas = lagrange_at_zero::<Scalar>(&ids);
        // Vartime is fine: the shares are public by now.
        let combined = Element::new(RistrettoPoint::vartime_multiscalar_mul(
            lambdas,
            valid.iter().map(|share| *share.value.point()),
        ));
        Ok(Combined {
            value: CoinValue::derive(name, &combined),
            faulty,
        })
    }
}

impl CoinValue {
    /// `H(name, g̃^x)`: a random oracle applied to the Diffie–Hellman value.
    fn derive(name: &Context, combined: &Element) -> Self {
        Self(Sha256::digest(name.bind(TAG_VALUE, combined.as_bytes())).into())
    }

    /// The 32 bytes of the value.
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// One fair bit: the lowest bit of the first byte.
    pub fn bit(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A uniform `u64`: the first eight bytes, big-endian.
    pub fn u64(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(bytes)
    }

    /// A uniformly random permutation of the servers `1..=n` (`n` is capped at
    /// [`crate::SERVERS_MAX`]), the same for everyone who holds this value.
    ///
    /// Fisher–Yates shuffle driven by ChaCha20 keyed with `SHA-256(tag, value)`; each index is
    /// drawn by rejection sampling of 64-bit words (no modulo bias). The algorithm is spelled
    /// out here rather than taken from a library so the permutation can never change under a
    /// dependency upgrade: servers running different builds must agree on it.
    pub fn permutation(&self, n: u16) -> Vec<ServerId> {
        let mut order: Vec<ServerId> = ServerId::all(n).collect();
        let mut seed_input = Vec::with_capacity(TAG_PERMUTATION.len() + 32);
        seed_input.extend_from_slice(TAG_PERMUTATION.as_bytes());
        seed_input.extend_from_slice(&self.0);
        let mut rng = ChaCha20Rng::from_seed(Sha256::digest(&seed_input).into());
        for i in (1..order.len()).rev() {
            order.swap(i, uniform_below(&mut rng, i as u64 + 1) as usize);
        }
        order
    }
}

/// A uniform integer in `0..bound` (`1 <= bound <= 2^16`): draws of 64 bits are rejected in the
/// top partial interval so that every residue is equally likely.
fn uniform_below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    // Largest multiple of `bound` that fits: accept draws below it.
    let zone = u64::MAX - (u64::MAX % bound);
    let mut draw = rng.next_u64();
    for _ in 1..PERMUTATION_DRAWS_MAX {
        if draw < zone {
            break;
        }
        draw = rng.next_u64();
    }
    draw % bound
}

impl Encode for SecretKeyShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
    }
}

impl Decode for SecretKeyShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        SecretShare::decode_from(reader).map(Self)
    }
}

impl Encode for PublicKeySet {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
    }
}

impl Decode for PublicKeySet {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        KeySet::decode_from(reader).map(Self)
    }
}

impl Encode for CoinShare {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        self.value.encode_to(out);
        self.proof.encode_to(out);
    }
}

impl Decode for CoinShare {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: ServerId::decode_from(reader)?,
            value: Element::decode_non_identity(reader, "coin share")?,
            proof: Proof::decode(reader)?,
        })
    }
}

crate::impl_serde_via_encoding!(SecretKeyShare, PublicKeySet, CoinShare);
