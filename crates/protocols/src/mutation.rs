//! Deliberate bugs for the simulator's self-check ("does some checker notice when the protocol is
//! wrong?"). A protocol inserts, at the one place a bug would live,
//!
//! ```text
//! if mutation::active(Mutation::RbcDeliverAfter2tReadies) { /* the wrong threshold */ }
//! ```
//!
//! and the simulator's `tests/mutations.rs` switches each bug on in turn, runs up to 1,000 seeds
//! and asserts that at least one checker fires. Without the cargo feature `mutations` (every
//! production and ordinary test build), [`active`] is a `const fn` returning `false`, so the
//! compiler removes the checks and the wrong branches entirely.
//!
//! The switch is thread-local, not a global: the test harness runs tests on parallel threads of
//! one process, and a global switch would leak one test's bug into another's runs. The simulator
//! runs a seed on one thread, so switching on that thread covers every server of the run.

/// A deliberate bug. Each variant names the property a checker should then see broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutation {
    /// ABA (and so MVBA's agreements): combine the coin from the first `t + 1` shares without
    /// checking their proofs (a Byzantine share then splits the coin between honest servers,
    /// whose coin-justified votes the others reject).
    AcceptUnverifiedCoinShares,
    /// RBC / ABA: count a repeated message (ready; pre-process, pre-vote, main-vote, coin share) of
    /// the same server again, so a Byzantine server repeating itself fills a quorum alone.
    CountDuplicateVotes,
    /// RBC: deliver after `2t` readies instead of `2t + 1` (no longer implies `t + 1` honest ones;
    /// totality and agreement break).
    RbcDeliverAfter2tReadies,
    /// MVBA: accept a proposal without checking the external predicate (validity breaks).
    SkipMvbaPredicate,
    /// CBC: certify a body with `t + 1` echoes instead of `ceil((n + t + 1) / 2)` (two bodies
    /// can both be certified; consistency breaks). A threshold signature's quorum is fixed by
    /// its key, so the bug has two halves: the broadcast key dealt `t + 1` of `n` (the
    /// simulator deals it so when this mutation is on) and cbc waiting for `t + 1` shares.
    CbcQuorumTPlusOne,
    /// ABA: release the round-`r` coin share with the round-`r` pre-vote, before the main-vote;
    /// MVBA: release the permutation coin share before `n - t` proposals are delivered (the coin
    /// becomes known while the adversary can still steer what it decides).
    RevealCoinEarly,
    /// SCABC: send decryption shares before the request's position is fixed (confidentiality
    /// before ordering breaks).
    DecryptBeforeOrdering,
    /// ABA: sign votes under a constant instance instead of the instance id, so shares and
    /// decision proofs of one instance verify in another (replays succeed).
    ForgetInstanceBinding,
    /// OABC: deliver a batch as soon as this server holds its prepared certificate, skipping the
    /// commit exchange (a recovery may then close the epoch below a batch some server delivered:
    /// total order breaks).
    OabcDeliverOnCertificate,
}

impl Mutation {
    /// Every mutation, in declaration order.
    pub const ALL: [Mutation; 9] = [
        Mutation::AcceptUnverifiedCoinShares,
        Mutation::CountDuplicateVotes,
        Mutation::RbcDeliverAfter2tReadies,
        Mutation::SkipMvbaPredicate,
        Mutation::CbcQuorumTPlusOne,
        Mutation::RevealCoinEarly,
        Mutation::DecryptBeforeOrdering,
        Mutation::ForgetInstanceBinding,
        Mutation::OabcDeliverOnCertificate,
    ];

    #[cfg(feature = "mutations")]
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Whether `mutation` is switched on for the current thread. Always `false` (a constant) without
/// the `mutations` feature.
#[cfg(not(feature = "mutations"))]
#[inline(always)]
pub const fn active(_mutation: Mutation) -> bool {
    false
}

#[cfg(feature = "mutations")]
thread_local! {
    static ACTIVE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether `mutation` is switched on for the current thread.
#[cfg(feature = "mutations")]
pub fn active(mutation: Mutation) -> bool {
    ACTIVE.with(|active| active.get() & mutation.bit() != 0)
}

/// Runs `body` with exactly the given mutations switched on for the current thread, and
/// switches them off again afterwards (also when `body` panics).
#[cfg(feature = "mutations")]
pub fn with_active<R>(mutations: &[Mutation], body: impl FnOnce() -> R) -> R {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|active| active.set(self.0));
        }
    }
    let bits = mutations.iter().fold(0, |bits, m| bits | m.bit());
    let _restore = Restore(ACTIVE.with(|active| active.replace(bits)));
    body()
}

/// The instance bytes a context carries when [`Mutation::ForgetInstanceBinding`] is on.
pub const FORGOTTEN_INSTANCE: &[u8] = b"instance";

/// The coin `name` from the first `threshold` of `shares` without checking their proofs — the
/// combination [`Mutation::AcceptUnverifiedCoinShares`] puts in place of
/// `coin::PublicKeySet::combine`: the same interpolation and value derivation (`H(name, g̃^x)`,
/// `docs/crypto/coin.md`), so valid shares give the true coin and a wrong share a wrong one.
/// `None` for too few shares, repeated senders or an undecodable share.
#[cfg(feature = "mutations")]
pub fn coin_without_proofs(
    name: &sintra_crypto::Context,
    shares: &[sintra_crypto::coin::CoinShare],
    threshold: usize,
) -> Option<[u8; 32]> {
    use curve25519_dalek::Scalar;
    use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
    use curve25519_dalek::traits::VartimeMultiscalarMul;
    use sha2::{Digest, Sha256};
    use sintra_crypto::encoding::Encode;

    let used = shares.get(..threshold)?;
    let ids: Vec<sintra_crypto::ServerId> = used.iter().map(|share| share.id()).collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != ids.len() {
        return None;
    }
    // Encoding: id (2 bytes) | g̃^{x_i} (32) | proof (96).
    let points: Option<Vec<RistrettoPoint>> = used
        .iter()
        .map(|share| {
            let bytes = share.to_bytes();
            CompressedRistretto::from_slice(bytes.get(2..34)?)
                .ok()?
                .decompress()
        })
        .collect();
    let lambdas = sintra_crypto::shamir::lagrange_at_zero::<Scalar>(&ids);
    let combined = RistrettoPoint::vartime_multiscalar_mul(lambdas, points?);
    Some(Sha256::digest(name.bind("coin/value", combined.compress().as_bytes())).into())
}

/// The permutation of `1..=n` drawn from the coin `name` combined by [`coin_without_proofs`]:
/// the same Fisher–Yates shuffle as `coin::CoinValue::permutation` (ChaCha20 keyed with
/// `SHA-256("coin/permutation" ‖ value)`, rejection-sampled draws), so valid shares give the true
/// order. `None` when the shares do not combine.
#[cfg(feature = "mutations")]
pub fn permutation_without_proofs(
    name: &sintra_crypto::Context,
    shares: &[sintra_crypto::coin::CoinShare],
    threshold: usize,
    n: u16,
) -> Option<Vec<sintra_crypto::ServerId>> {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use sha2::{Digest, Sha256};

    let value = coin_without_proofs(name, shares, threshold)?;
    let mut order: Vec<sintra_crypto::ServerId> = sintra_crypto::ServerId::all(n).collect();
    let mut hasher = Sha256::new();
    hasher.update(b"coin/permutation");
    hasher.update(value);
    let mut rng = ChaCha20Rng::from_seed(hasher.finalize().into());
    for i in (1..order.len()).rev() {
        let bound = i as u64 + 1;
        let zone = u64::MAX - (u64::MAX % bound);
        let mut draw = rng.next_u64();
        for _ in 1..8 {
            if draw < zone {
                break;
            }
            draw = rng.next_u64();
        }
        order.swap(i, (draw % bound) as usize);
    }
    Some(order)
}

#[cfg(all(test, feature = "mutations"))]
mod tests {
    use super::*;

    #[test]
    fn switch_is_scoped_to_the_call_and_the_thread() {
        assert!(!active(Mutation::CbcQuorumTPlusOne));
        with_active(&[Mutation::CbcQuorumTPlusOne], || {
            assert!(active(Mutation::CbcQuorumTPlusOne));
            assert!(!active(Mutation::RevealCoinEarly));
            std::thread::spawn(|| assert!(!active(Mutation::CbcQuorumTPlusOne)))
                .join()
                .unwrap();
        });
        assert!(!active(Mutation::CbcQuorumTPlusOne));
    }

    #[test]
    fn coin_without_proofs_gives_the_true_coin_for_valid_shares() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let (keys, secrets) = sintra_crypto::coin::deal(2, 4, &mut rng).unwrap();
        let name = sintra_crypto::Context::new("aba/coin", b"some instance");
        let shares: Vec<_> = secrets.iter().map(|s| s.share(&name, &mut rng)).collect();
        let checked = keys.combine(&name, &shares[1..3]).unwrap().value.bytes();
        assert_eq!(coin_without_proofs(&name, &shares[1..3], 2), Some(checked));
        // A share of another coin changes the value (the proofs are not looked at).
        let other = sintra_crypto::Context::new("aba/coin", b"another instance");
        let wrong = [shares[1].clone(), secrets[2].share(&other, &mut rng)];
        assert_ne!(coin_without_proofs(&name, &wrong, 2), Some(checked));
        assert_eq!(coin_without_proofs(&name, &shares[..1], 2), None);
        let combined = keys.combine(&name, &shares[1..3]).unwrap().value;
        assert_eq!(
            permutation_without_proofs(&name, &shares[1..3], 2, 4),
            Some(combined.permutation(4))
        );
    }
}
