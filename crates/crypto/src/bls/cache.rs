//! Bounded memo tables for the two costly BLS steps that repeat on identical input: decoding a
//! G1 point (decompression, a square root in the base field, and the prime-order subgroup check)
//! and hashing a message to G1. In the protocols the same signature travels in many messages —
//! a consistent-broadcast certificate in its FINAL, in every proposal and vote that names it; a
//! justification in every vote that carries it — and the same statement is hashed to sign a
//! share, to combine and to verify. Before these tables, decoding alone took about a sixth of a
//! replica's CPU near idle (docs/bench.md).
//!
//! Only *results of successful checks* are remembered, under the exact input bytes (a point's
//! one canonical encoding; a SHA-256 of the bound message), so a table can never make invalid
//! input pass or change a result: a hit returns what the full computation returned before.
//! Each table holds at most [`POINTS_MAX`] / [`HASHES_MAX`] entries and starts over when full;
//! an adversary sending fresh valid points only makes it miss.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

use blstrs::G1Affine;

/// Decoded G1 points remembered (48-byte key and a 96-byte point each: under 1 MiB).
pub(crate) const POINTS_MAX: usize = 4096;
/// Hashed messages remembered (32-byte key and a 96-byte point each: under 1 MiB).
pub(crate) const HASHES_MAX: usize = 4096;

/// A map that forgets everything when it reaches its bound.
pub(crate) struct Bounded<K, V> {
    entries: HashMap<K, V>,
    max: usize,
}

impl<K: Eq + Hash, V: Copy> Bounded<K, V> {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.entries.get(key).copied()
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.max {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

type Table<K> = Mutex<Bounded<K, G1Affine>>;

fn points() -> &'static Table<[u8; 48]> {
    static TABLE: OnceLock<Table<[u8; 48]>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(Bounded::new(POINTS_MAX)))
}

fn hashes() -> &'static Table<[u8; 32]> {
    static TABLE: OnceLock<Table<[u8; 32]>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(Bounded::new(HASHES_MAX)))
}

/// The point `decode` returns for `bytes`, computed at most once while remembered. Only `Ok`
/// results are remembered. (A poisoned lock only turns the table off.)
pub(crate) fn point<E>(
    bytes: &[u8; 48],
    decode: impl FnOnce() -> Result<G1Affine, E>,
) -> Result<G1Affine, E> {
    memo(points(), bytes, decode)
}

/// The point `hash` returns for the message whose bound bytes have SHA-256 `key`.
pub(crate) fn hashed(key: &[u8; 32], hash: impl FnOnce() -> G1Affine) -> G1Affine {
    match memo(hashes(), key, || Ok::<_, std::convert::Infallible>(hash())) {
        Ok(point) => point,
        Err(never) => match never {},
    }
}

fn memo<K: Eq + Hash + Copy, E>(
    table: &Table<K>,
    key: &K,
    compute: impl FnOnce() -> Result<G1Affine, E>,
) -> Result<G1Affine, E> {
    if let Some(point) = table.lock().ok().and_then(|table| table.get(key)) {
        return Ok(point);
    }
    let point = compute()?;
    if let Ok(mut table) = table.lock() {
        table.insert(*key, point);
    }
    Ok(point)
}

/// Entries in the two tables (for tests).
#[cfg(test)]
pub(crate) fn sizes() -> (usize, usize) {
    (
        points().lock().map_or(0, |table| table.len()),
        hashes().lock().map_or(0, |table| table.len()),
    )
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::bls::{Signature, SignatureShare, deal};
    use crate::{Context, Decode, Encode};

    #[test]
    fn a_full_table_starts_over_and_never_exceeds_its_bound() {
        let mut table = Bounded::new(3);
        for key in 0u32..10 {
            table.insert(key, key * 2);
            assert!(table.len() <= 3);
            assert_eq!(table.get(&key), Some(key * 2));
        }
        assert_eq!(table.get(&0), None);
    }

    /// Remembered points change nothing: the same bytes decode to the same point, and invalid
    /// encodings — a changed byte of a remembered point, a non-canonical one — are still
    /// refused after valid ones were remembered. Hashing a message twice gives one point.
    #[test]
    fn remembered_results_are_the_computed_ones_and_invalid_input_still_fails() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (keys, secrets) = deal(2, 4, &mut rng).unwrap();
        let ctx = Context::new("test/cache", b"instance");
        let shares: Vec<SignatureShare> = secrets
            .iter()
            .map(|secret| secret.sign(&ctx, b"message"))
            .collect();
        let combined = keys.combine(&ctx, b"message", &shares).unwrap().value;
        let bytes = combined.to_bytes();
        let first = Signature::from_bytes(&bytes).unwrap();
        let second = Signature::from_bytes(&bytes).unwrap();
        assert_eq!(first, combined);
        assert_eq!(second, combined);
        assert!(keys.verify(&ctx, b"message", &second).is_ok());
        for share in &shares {
            let decoded = SignatureShare::from_bytes(&share.to_bytes()).unwrap();
            assert_eq!(&decoded, share);
            assert!(keys.verify_share(&ctx, b"message", &decoded).is_ok());
        }
        let (points, hashes) = sizes();
        assert!(
            points >= 1 && hashes >= 1,
            "tables in use: {points}, {hashes}"
        );
        for position in [0, 1, 20, 47] {
            for flip in [0x01u8, 0x80] {
                let mut changed = bytes.clone();
                changed[position] ^= flip;
                if let Ok(other) = Signature::from_bytes(&changed) {
                    // A changed byte may hit another valid point; never the original one.
                    assert_ne!(other, combined);
                    assert!(keys.verify(&ctx, b"message", &other).is_err());
                }
            }
        }
        // The compression flag cleared: not the canonical encoding of any point.
        let mut uncompressed_flag = bytes.clone();
        uncompressed_flag[0] &= 0x7f;
        assert!(Signature::from_bytes(&uncompressed_flag).is_err());
        // Hashing: the remembered point is the one a fresh hash gives.
        assert!(keys.verify(&ctx, b"message", &combined).is_ok());
        assert!(keys.verify(&ctx, b"other message", &combined).is_err());
    }
}
