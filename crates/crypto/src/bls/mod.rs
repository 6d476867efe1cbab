//! Threshold BLS signatures on BLS12-381 (Boneh–Lynn–Shacham, ASIACRYPT 2001; the threshold
//! variant of Boldyreva, PKC 2003), as used for agreement justifications and broadcast
//! certificates (DESIGN.md §2).
//!
//! Signatures and signature shares live in G1 (48 bytes compressed), keys in G2 (96 bytes). The
//! dealer picks a random polynomial `f` of degree `k - 1`; server `i` holds `x_i = f(i)`, everybody
//! knows the verification keys `vk_i = x_i · g2` and the group key `pk = f(0) · g2`. With
//! `H(m) = hash_to_G1(ctx.bind("bls", m))`:
//!
//! - share: `σ_i = x_i · H(m)`, valid iff `e(σ_i, g2) = e(H(m), vk_i)`;
//! - combination of `k` distinct shares: `σ = Σ λ_i · σ_i` (Lagrange at zero, one multi-scalar
//!   multiplication), valid iff `e(σ, g2) = e(H(m), pk)` — the ordinary BLS signature under `pk`.
//!
//! Guarantees: any `k` valid shares give the same signature; fewer than `k` shares reveal nothing
//! about it; every share is checked on its own against its sender's key (robustness), so a bad
//! share is named, never silently used. Every message is bound to a [`Context`], so shares and
//! signatures of one protocol instance or purpose never verify in another.
//!
//! Combining is optimistic: interpolate the first `k` shares and verify the result once; only if
//! that fails, locate the bad shares with randomised batch checks and bisection
//! ([`PublicKeySet::find_invalid_shares`]), leave them out and interpolate again.
//!
//! Decoding is canonical and checks everything: points on the curve, in the prime-order
//! subgroup, not the identity, in their unique compressed encoding; scalars below the group order
//! and non-zero; key sets of `1 <= k <= n <= 1024` servers whose keys lie on one polynomial of
//! degree `k - 1` through the group key. See `docs/crypto/bls.md` for the byte layouts.

mod batch;
mod cache;
mod encoding;

use std::sync::{Arc, OnceLock};

use blstrs::{Bls12, G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Gt, Scalar};
use ff::Field;
use group::prime::PrimeCurveAffine;
use group::{Curve, Group};
use pairing::{MillerLoopResult, MultiMillerLoop};
use rand_core::CryptoRngCore;
use sha2::Digest as _;
use subtle::ConstantTimeEq;
use zeroize::{DefaultIsZeroes, Zeroize, ZeroizeOnDrop};

use crate::shamir::{check_share_ids, check_threshold, lagrange_at_zero, split};
use crate::{CombineError, Combined, Context, CryptoError, ServerId};

/// Bytes of an encoded [`Signature`]: one compressed G1 point.
pub const ENCODED_SIGNATURE_BYTES: usize = 48;

/// Bytes of an encoded [`SignatureShare`]: the server id and one compressed G1 point.
pub const ENCODED_SIGNATURE_SHARE_BYTES: usize = 2 + ENCODED_SIGNATURE_BYTES;

/// Bytes of one encoded public key (the group key or a verification key): a compressed G2 point.
pub const ENCODED_PUBLIC_KEY_BYTES: usize = 96;

/// Bytes of an encoded [`SecretKeyShare`]: the server id and a big-endian scalar.
pub const ENCODED_SECRET_KEY_SHARE_BYTES: usize = 2 + 32;

/// The hash-to-curve domain separation tag (RFC 9380 suite `BLS12381G1_XMD:SHA-256_SSWU_RO_`,
/// prefixed with our application and version), so no other BLS deployment's hashes collide with
/// ours even for equal messages.
const HASH_TO_G1_DST: &[u8] = b"SINTRA-V1-BLS12381G1_XMD:SHA-256_SSWU_RO_";

/// The scheme name bound into every message with [`Context::bind`].
const SCHEME: &str = "bls";

/// How often [`deal`] redraws a polynomial that produced a zero secret or share (probability
/// about `n / 2^255` each time; a second failure means the RNG is broken).
const DEAL_ATTEMPTS_MAX: usize = 4;

/// A scalar that is wiped when dropped. `blstrs::Scalar` is `Copy` and has no `Zeroize`; its zero
/// is the all-zero bit pattern, so `DefaultIsZeroes` gives a volatile wipe.
#[derive(Clone, Copy)]
struct SecretScalar(Scalar);

impl Default for SecretScalar {
    fn default() -> Self {
        Self(Scalar::ZERO)
    }
}

impl DefaultIsZeroes for SecretScalar {}

/// Server `id`'s share `x_i = f(i)` of the signing key. Wiped on drop; `Debug` hides it.
#[derive(Clone)]
pub struct SecretKeyShare {
    id: ServerId,
    scalar: SecretScalar,
}

/// Server `id`'s signature share `σ_i = x_i · H(m)` on one message in one context.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureShare {
    id: ServerId,
    point: G1Affine,
}

/// A threshold signature: the ordinary BLS signature `σ = f(0) · H(m)` under the group key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(G1Affine);

/// The public side of a dealing: the threshold `k`, the number of servers `n`, the group key
/// `pk = f(0) · g2` and one verification key `vk_i = f(i) · g2` per server.
///
/// Invariant (established by [`deal`] and checked by decoding): `1 <= k <= n <= 1024`, exactly
/// `n` verification keys, none of the keys the identity, and all keys on one polynomial of degree
/// `k - 1` whose value at zero is the group key — so any `k` valid shares combine to a signature
/// that verifies under the group key.
#[derive(Clone)]
pub struct PublicKeySet {
    k: u16,
    n: u16,
    group_key: G2Affine,
    verification_keys: Vec<G2Affine>,
    /// The group key's Miller-loop lines, computed once (every signature check pairs with it).
    group_prepared: Arc<G2Prepared>,
}

/// Equal key sets: the same threshold and keys (the prepared lines follow from the group key).
impl PartialEq for PublicKeySet {
    fn eq(&self, other: &Self) -> bool {
        (self.k, self.n, &self.group_key, &self.verification_keys)
            == (other.k, other.n, &other.group_key, &other.verification_keys)
    }
}

impl Eq for PublicKeySet {}

/// Deals keys for `n` servers with threshold `k` (`1 <= k <= n <= 1024`): the public key set and
/// the secret key shares of servers `1..=n`, in that order.
pub fn deal(
    k: usize,
    n: usize,
    rng: &mut (impl CryptoRngCore + ?Sized),
) -> Result<(PublicKeySet, Vec<SecretKeyShare>), CryptoError> {
    check_threshold(k, n)?;
    let (k16, n16) = match (u16::try_from(k), u16::try_from(n)) {
        (Ok(k16), Ok(n16)) => (k16, n16),
        _ => {
            return Err(CryptoError::InvalidParameters(format!(
                "{k} of {n} servers"
            )));
        }
    };
    for _ in 0..DEAL_ATTEMPTS_MAX {
        let mut secret = SecretScalar(Scalar::random(&mut *rng));
        let mut shares: Vec<SecretScalar> = split(secret.0, k, n, &mut &mut *rng)?
            .into_iter()
            .map(SecretScalar)
            .collect();
        // A zero secret or share would give an identity key, which decoding rejects: redraw.
        let degenerate =
            bool::from(secret.0.is_zero()) || shares.iter().any(|s| bool::from(s.0.is_zero()));
        if !degenerate {
            let generator = G2Projective::generator();
            let group_key = (generator * secret.0).to_affine();
            let projective: Vec<G2Projective> = shares.iter().map(|s| generator * s.0).collect();
            let mut verification_keys = vec![G2Affine::identity(); n];
            G2Projective::batch_normalize(&projective, &mut verification_keys);
            let secret_shares = ServerId::all(n16)
                .zip(shares.iter())
                .map(|(id, scalar)| SecretKeyShare {
                    id,
                    scalar: *scalar,
                })
                .collect();
            secret.zeroize();
            shares.zeroize();
            let keys = PublicKeySet::new(k16, n16, group_key, verification_keys);
            return Ok((keys, secret_shares));
        }
        secret.zeroize();
        shares.zeroize();
    }
    Err(CryptoError::InvalidParameters(
        "the random number generator keeps producing zero shares".into(),
    ))
}

impl SecretKeyShare {
    /// The server this share belongs to.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// Signs `message` in `ctx`: `σ_i = x_i · H(ctx, message)`.
    pub fn sign(&self, ctx: &Context, message: &[u8]) -> SignatureShare {
        SignatureShare {
            id: self.id,
            point: (hash_message(ctx, message) * self.scalar.0).to_affine(),
        }
    }
}

impl Drop for SecretKeyShare {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKeyShare {}

/// Constant-time in the secret, so comparing shares leaks nothing about them.
impl PartialEq for SecretKeyShare {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && bool::from(self.scalar.0.ct_eq(&other.scalar.0))
    }
}

impl Eq for SecretKeyShare {}

impl std::fmt::Debug for SecretKeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeyShare")
            .field("id", &self.id.get())
            .field("scalar", &"<secret>")
            .finish()
    }
}

impl SignatureShare {
    /// The server that produced this share.
    pub fn id(&self) -> ServerId {
        self.id
    }
}

impl std::fmt::Debug for SignatureShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureShare")
            .field("id", &self.id.get())
            .field("point", &hex::encode(self.point.to_compressed()))
            .finish()
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Signature")
            .field(&hex::encode(self.0.to_compressed()))
            .finish()
    }
}

/// Hashes the canonical encoding, which is unique per signature.
impl std::hash::Hash for Signature {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_compressed().hash(state);
    }
}

impl std::fmt::Debug for PublicKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The n verification keys (192 hex characters each) would drown the output.
        f.debug_struct("PublicKeySet")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("group_key", &hex::encode(self.group_key.to_compressed()))
            .finish_non_exhaustive()
    }
}

impl PublicKeySet {
    /// A key set from its parts (the caller established the invariant).
    fn new(k: u16, n: u16, group_key: G2Affine, verification_keys: Vec<G2Affine>) -> Self {
        Self {
            k,
            n,
            group_key,
            verification_keys,
            group_prepared: Arc::new(G2Prepared::from(group_key)),
        }
    }

    /// [`pairing_check`] under the group key, with its lines prepared once.
    fn group_check(&self, signature: &G1Affine, hashed: &G1Affine) -> bool {
        !bool::from(signature.is_identity())
            && !bool::from(self.group_key.is_identity())
            && bool::from(
                prepared_pairing_value(signature, hashed, &self.group_prepared).is_identity(),
            )
    }

    /// The threshold `k`: how many shares make a signature.
    pub fn threshold(&self) -> usize {
        usize::from(self.k)
    }

    /// The number of servers `n`.
    pub fn servers(&self) -> u16 {
        self.n
    }

    /// Checks one share against its sender's verification key: `e(σ_i, g2) = e(H(m), vk_i)`.
    pub fn verify_share(
        &self,
        ctx: &Context,
        message: &[u8],
        share: &SignatureShare,
    ) -> Result<(), CryptoError> {
        let key = self
            .verification_key(share.id)
            .ok_or(CryptoError::UnknownServer(share.id))?;
        if pairing_check(&share.point, &hash_message(ctx, message), key) {
            Ok(())
        } else {
            Err(CryptoError::InvalidShare(share.id))
        }
    }

    /// The ids of the invalid shares among `shares`, ascending and without repeats (empty: all
    /// valid). A share from a non-member is invalid.
    ///
    /// One batch check covers all shares: with coefficients `r_i` below `2^128`,
    /// `e(Σ r_i σ_i, g2) = e(H(m), Σ r_i vk_i)` (two multi-scalar multiplications, one
    /// multi-Miller loop). If it fails, the set is bisected; the left half is checked and the
    /// right half's result follows by division in the target group, so locating `b` bad shares
    /// among `s` costs about `b · log2(s)` batch checks instead of `s` pairings. A single share's
    /// result is exact, so an honest share is never named.
    ///
    /// The coefficients come from a ChaCha20 stream seeded with a hash of the message point, the
    /// group key and every share, so the function needs no RNG and is deterministic. This is sound
    /// in the Fiat–Shamir sense: the coefficients are fixed only after the shares are, so a sender
    /// cannot choose its share to cancel another's error; a set with a bad share passes a check
    /// with probability at most `2^-128` per check (modelling the hash as a random oracle).
    pub fn find_invalid_shares(
        &self,
        ctx: &Context,
        message: &[u8],
        shares: &[SignatureShare],
    ) -> Vec<ServerId> {
        batch::invalid_shares(self, &hash_message(ctx, message), shares)
    }

    /// Combines `k` of `shares` into the group signature, optimistically: the first `k` shares
    /// are interpolated and the result verified once. Only if that fails are the bad shares
    /// located ([`Self::find_invalid_shares`]), left out, and `k` valid ones interpolated; they
    /// are reported in [`Combined::faulty`].
    ///
    /// Errors: fewer than `k` shares, a duplicate, or a non-member (checked before any
    /// cryptography); [`CombineError::NotEnoughValidShares`] naming the culprits when fewer than
    /// `k` valid shares remain.
    pub fn combine(
        &self,
        ctx: &Context,
        message: &[u8],
        shares: &[SignatureShare],
    ) -> Result<Combined<Signature>, CombineError> {
        let ids: Vec<ServerId> = shares.iter().map(|share| share.id).collect();
        check_share_ids(&ids, self.threshold(), self.n)?;
        let k = self.threshold();
        let hashed = hash_message(ctx, message);

        let first: Vec<&SignatureShare> = shares.iter().take(k).collect();
        let optimistic = interpolate(&first);
        if self.group_check(&optimistic, &hashed) {
            return Ok(Combined {
                value: Signature(optimistic),
                faulty: Vec::new(),
            });
        }

        let mut faulty = batch::invalid_shares(self, &hashed, shares);
        let mut valid: Vec<&SignatureShare> = shares
            .iter()
            .filter(|share| faulty.binary_search(&share.id).is_err())
            .collect();
        if valid.len() >= k {
            let signature = interpolate(&valid[..k]);
            if self.group_check(&signature, &hashed) {
                return Ok(Combined {
                    value: Signature(signature),
                    faulty,
                });
            }
            // Reached only if a bad share passed a batch check (probability 2^-128): check the
            // survivors one by one, which is exact.
            valid.retain(|share| {
                let key = self.verification_key(share.id);
                let ok = key.is_some_and(|key| pairing_check(&share.point, &hashed, key));
                if !ok {
                    faulty.push(share.id);
                }
                ok
            });
            faulty.sort_unstable();
        }
        if valid.len() < k {
            return Err(CombineError::NotEnoughValidShares {
                needed: k,
                valid: valid.len(),
                faulty,
            });
        }
        // Every survivor now passed an exact check and the key set is consistent, so the
        // interpolation is the signature.
        Ok(Combined {
            value: Signature(interpolate(&valid[..k])),
            faulty,
        })
    }

    /// Verifies a group signature: `e(σ, g2) = e(H(m), pk)`.
    pub fn verify(
        &self,
        ctx: &Context,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        if self.group_check(&signature.0, &hash_message(ctx, message)) {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature)
        }
    }

    fn verification_key(&self, id: ServerId) -> Option<&G2Affine> {
        if id.is_member_of(self.n) {
            self.verification_keys.get(id.slot())
        } else {
            None
        }
    }
}

/// `H(m) = hash_to_G1(ctx.bind("bls", m))`, remembered by the SHA-256 of the bound bytes
/// (`cache.rs`): a statement is hashed to sign a share, to combine and to verify.
fn hash_message(ctx: &Context, message: &[u8]) -> G1Affine {
    let bound = ctx.bind(SCHEME, message);
    let key: [u8; 32] = sha2::Sha256::digest(&bound).into();
    cache::hashed(&key, || {
        G1Projective::hash_to_curve(&bound, HASH_TO_G1_DST, &[]).to_affine()
    })
}

/// The prepared negated generator of G2, computed once: every check pairs with it.
fn negated_g2() -> &'static G2Prepared {
    static PREPARED: OnceLock<G2Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| G2Prepared::from(-G2Affine::generator()))
}

/// The value `e(signature, −g2) · e(hashed, key)` in the target group: one multi-Miller loop and
/// one final exponentiation. It is the identity iff `e(signature, g2) = e(hashed, key)`.
fn pairing_value(signature: &G1Affine, hashed: &G1Affine, key: &G2Affine) -> Gt {
    prepared_pairing_value(signature, hashed, &G2Prepared::from(*key))
}

/// [`pairing_value`] with the key's lines already prepared.
fn prepared_pairing_value(signature: &G1Affine, hashed: &G1Affine, key: &G2Prepared) -> Gt {
    Bls12::multi_miller_loop(&[(signature, negated_g2()), (hashed, key)]).final_exponentiation()
}

/// Whether `e(signature, g2) = e(hashed, key)`. The identity is never a valid signature or share
/// (it would mean a zero key), and is refused outright because pairings with it are trivial.
fn pairing_check(signature: &G1Affine, hashed: &G1Affine, key: &G2Affine) -> bool {
    !bool::from(signature.is_identity())
        && !bool::from(key.is_identity())
        && bool::from(pairing_value(signature, hashed, key).is_identity())
}

/// `Σ λ_i σ_i` over the given (distinct, non-empty) shares: one multi-scalar multiplication.
fn interpolate(shares: &[&SignatureShare]) -> G1Affine {
    let ids: Vec<ServerId> = shares.iter().map(|share| share.id).collect();
    let lambdas = lagrange_at_zero::<Scalar>(&ids);
    let points: Vec<G1Projective> = shares
        .iter()
        .map(|share| G1Projective::from(share.point))
        .collect();
    if points.is_empty() {
        // blst's multi-scalar multiplication indexes its first point; never call it empty.
        return G1Affine::identity();
    }
    G1Projective::multi_exp(&points, &lambdas).to_affine()
}
