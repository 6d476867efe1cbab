//! Locating invalid signature shares: one randomised batch check over all shares, then
//! bisection, so `b` bad shares among `s` cost about `b · log2(s)` batch checks instead of `s`
//! pairings (Bellare–Garay–Rabin, EUROCRYPT 1998, small-exponent test; here over pairings).
//!
//! With coefficients `r_i` (uniform in `1..2^128`), the batch value of a set `S` is
//! `V(S) = e(Σ_S r_i σ_i, −g2) · e(H(m), Σ_S r_i vk_i) = e(Σ_S r_i (σ_i − x_i H(m)), −g2)`:
//! two multi-scalar multiplications, one multi-Miller loop and one final exponentiation. `V(S)`
//! is the identity when every share in `S` is valid. A set with a bad share gives the identity
//! only if the errors cancel, which for coefficients drawn after the shares were fixed happens
//! with probability at most `2^-128` — and for a single share never, as `r_i ≠ 0` and the
//! groups have prime order: the check of one share is exact, so an honest server is never named.
//!
//! Values multiply over disjoint sets, `V(L ∪ R) = V(L) · V(R)`, so bisection computes only the
//! left half at each step and gets the right half by a division in the target group.
//!
//! The coefficients come from a ChaCha20 stream seeded with a hash of the message point, the group
//! key and every share checked: no RNG argument, deterministic, and sound in the Fiat–Shamir
//! sense, since a sender cannot know the coefficients before fixing its share, and so cannot
//! choose it to cancel another share's error (modelling the hash as a random oracle).

use blstrs::{G1Affine, G1Projective, G2Affine, G2Projective, Gt, Scalar};
use ff::Field;
use group::{Curve, Group};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::{PublicKeySet, SignatureShare, pairing_check, pairing_value};
use crate::ServerId;
use crate::encoding::Encode;

/// Domain of the hash that seeds the batch coefficients.
const BATCH_SEED_DOMAIN: &[u8] = b"sintra/v1/bls/batch-coefficients";

/// Bytes of randomness in each batch coefficient: 128-bit coefficients give a soundness error of
/// at most `2^-128` per batch check, matching the curve's security level.
const BATCH_COEFFICIENT_BYTES: usize = 16;

/// One share in a batch check, with its verification key and coefficient.
struct BatchEntry {
    id: ServerId,
    share: G1Affine,
    key: G2Affine,
    coefficient: Scalar,
}

/// The ids of the invalid shares, ascending and without repeats. A share from a non-member is
/// invalid. `hashed` is `H(m)`.
pub(super) fn invalid_shares(
    keys: &PublicKeySet,
    hashed: &G1Affine,
    shares: &[SignatureShare],
) -> Vec<ServerId> {
    let mut faulty = Vec::new();
    let mut members = Vec::with_capacity(shares.len());
    for share in shares {
        match keys.verification_key(share.id) {
            Some(key) => members.push((share, *key)),
            None => faulty.push(share.id),
        }
    }
    let coefficients = batch_coefficients(hashed, &keys.group_key, &members);
    let entries: Vec<BatchEntry> = members
        .iter()
        .zip(coefficients)
        .map(|((share, key), coefficient)| BatchEntry {
            id: share.id,
            share: share.point,
            key: *key,
            coefficient,
        })
        .collect();
    match entries.as_slice() {
        [] => {}
        // One share: a plain pairing check is cheaper than a batch of one.
        [entry] => check_one(hashed, entry, &mut faulty),
        _ => bisect(hashed, &entries, batch_value(hashed, &entries), &mut faulty),
    }
    faulty.sort_unstable();
    faulty.dedup();
    faulty
}

/// The coefficients `r_i` (uniform in `1..2^128`) for a batch check of `members`, seeded from a
/// hash of everything the check is about.
fn batch_coefficients(
    hashed: &G1Affine,
    group_key: &G2Affine,
    members: &[(&SignatureShare, G2Affine)],
) -> Vec<Scalar> {
    let mut digest = Sha256::new();
    digest.update(BATCH_SEED_DOMAIN);
    digest.update(hashed.to_compressed());
    digest.update(group_key.to_compressed());
    digest.update((members.len() as u64).to_be_bytes());
    for (share, _) in members {
        digest.update(share.to_bytes());
    }
    let mut rng = ChaCha20Rng::from_seed(digest.finalize().into());
    members
        .iter()
        .map(|_| {
            let mut little_endian = [0u8; 32];
            rng.fill_bytes(&mut little_endian[..BATCH_COEFFICIENT_BYTES]);
            // Below 2^128 < r, so always canonical; a zero draw (probability 2^-128) becomes 1
            // because a zero coefficient would hide its share.
            Option::<Scalar>::from(Scalar::from_bytes_le(&little_endian))
                .filter(|scalar| !bool::from(scalar.is_zero()))
                .unwrap_or(Scalar::ONE)
        })
        .collect()
}

/// `V(S)` for the non-empty set `entries` (see the module documentation).
fn batch_value(hashed: &G1Affine, entries: &[BatchEntry]) -> Gt {
    if entries.is_empty() {
        // blst's multi-scalar multiplication indexes its first point; never call it empty.
        return Gt::identity();
    }
    let coefficients: Vec<Scalar> = entries.iter().map(|entry| entry.coefficient).collect();
    let shares: Vec<G1Projective> = entries.iter().map(|e| e.share.into()).collect();
    let keys: Vec<G2Projective> = entries.iter().map(|e| e.key.into()).collect();
    let signature = G1Projective::multi_exp(&shares, &coefficients).to_affine();
    let key = G2Projective::multi_exp(&keys, &coefficients).to_affine();
    pairing_value(&signature, hashed, &key)
}

/// The exact check of one share.
fn check_one(hashed: &G1Affine, entry: &BatchEntry, faulty: &mut Vec<ServerId>) {
    if !pairing_check(&entry.share, hashed, &entry.key) {
        faulty.push(entry.id);
    }
}

/// Names every entry with a bad share, given `value = V(entries)`. The recursion depth is at
/// most `log2(SERVERS_MAX) + 1 = 11`.
fn bisect(hashed: &G1Affine, entries: &[BatchEntry], value: Gt, faulty: &mut Vec<ServerId>) {
    if bool::from(value.is_identity()) {
        return;
    }
    // Not the identity: some share here is bad, for certain (valid shares always pass).
    let [first, ..] = entries else {
        return;
    };
    if entries.len() == 1 {
        faulty.push(first.id);
        return;
    }
    let (left, right) = entries.split_at(entries.len() / 2);
    if let [entry] = left {
        // A single left share: its exact pairing check is cheaper than its batch value. If it
        // is valid, V(left) is the identity and V(right) = value; if not, V(right) is unknown.
        if pairing_check(&entry.share, hashed, &entry.key) {
            bisect(hashed, right, value, faulty);
        } else {
            faulty.push(entry.id);
            match right {
                [single] => check_one(hashed, single, faulty),
                _ => bisect(hashed, right, batch_value(hashed, right), faulty),
            }
        }
    } else {
        let left_value = batch_value(hashed, left);
        let right_value = value - left_value;
        bisect(hashed, left, left_value, faulty);
        bisect(hashed, right, right_value, faulty);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;
    use crate::bls::deal;
    use rand::SeedableRng;

    /// Every subset of bad shares, for sizes that exercise each branch of the bisection (the
    /// single-share shortcut on the left, sizes 2 and 3 on the right, deeper splits).
    #[test]
    fn bisection_names_exactly_the_bad_shares_for_every_subset() {
        let ctx = Context::new("test", b"bisect");
        for n in [1usize, 2, 3, 4, 5, 7] {
            let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
            let (keys, secrets) = deal(1, n, &mut rng).unwrap();
            let good: Vec<SignatureShare> = secrets.iter().map(|s| s.sign(&ctx, b"m")).collect();
            let bad: Vec<SignatureShare> = secrets.iter().map(|s| s.sign(&ctx, b"x")).collect();
            for mask in 0u32..(1 << n) {
                let shares: Vec<SignatureShare> = (0..n)
                    .map(|i| if mask >> i & 1 == 1 { bad[i] } else { good[i] })
                    .collect();
                let expected: Vec<ServerId> = (0..n)
                    .filter(|i| mask >> i & 1 == 1)
                    .map(|i| secrets[i].id())
                    .collect();
                assert_eq!(
                    keys.find_invalid_shares(&ctx, b"m", &shares),
                    expected,
                    "n = {n}, mask = {mask:b}"
                );
            }
        }
    }
}
