//! The threshold coin (CKS00 on ristretto255) with real cryptography, over many `(n, k)`:
//! - any `k` valid shares of a name give the same value, whichever `k` and in any order;
//!   `k - 1` shares give nothing;
//! - a share for another name, from another key set, or with an altered byte is rejected on its
//!   own and named in `faulty` by `combine`; duplicates and non-members are refused;
//! - the value is roughly balanced and its permutations are permutations of `1..=n` that differ
//!   between names;
//! - every type round-trips through its binary, TOML and JSON forms, decoding random or mutated
//!   bytes never panics, and a public key set whose keys are not consistent does not decode.

use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sintra_crypto::coin::{self, CoinShare, CoinValue, PublicKeySet, SecretKeyShare};
use sintra_crypto::{CombineError, Context, CryptoError, Decode, Encode, ServerId};

const NAME: Context<'static> = Context {
    purpose: "aba/coin",
    instance: b"abc/epoch 1/mvba/aba/round 1",
};
const OTHER_INSTANCE: Context<'static> = Context {
    purpose: "aba/coin",
    instance: b"abc/epoch 1/mvba/aba/round 2",
};
const OTHER_PURPOSE: Context<'static> = Context {
    purpose: "mvba/candidate-order",
    instance: b"abc/epoch 1/mvba/aba/round 1",
};

fn id(index: u16) -> ServerId {
    ServerId::new(index).unwrap()
}

fn dealt(k: usize, n: usize, seed: u64) -> (PublicKeySet, Vec<SecretKeyShare>, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (public, secrets) = coin::deal(k, n, &mut rng).unwrap();
    assert_eq!(public.threshold(), k);
    assert_eq!(usize::from(public.servers()), n);
    assert_eq!(secrets.len(), n);
    (public, secrets, rng)
}

fn all_shares(secrets: &[SecretKeyShare], name: &Context, rng: &mut ChaCha20Rng) -> Vec<CoinShare> {
    secrets
        .iter()
        .map(|secret| secret.share(name, rng))
        .collect()
}

/// A group size and a threshold `1 <= k <= n`, with `n <= max`.
fn group(max: usize) -> impl Strategy<Value = (usize, usize)> {
    (1..=max).prop_flat_map(|n| (Just(n), 1..=n))
}

/// The value of the coin `name` from the first `k` shares (all honest).
fn value_of(public: &PublicKeySet, name: &Context, shares: &[CoinShare]) -> CoinValue {
    let combined = public.combine(name, shares).unwrap();
    assert!(combined.faulty.is_empty());
    combined.value
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_k_valid_shares_give_the_same_value((n, k) in group(16), seed in any::<u64>()) {
        let (public, secrets, mut rng) = dealt(k, n, seed);
        let mut shares = all_shares(&secrets, &NAME, &mut rng);
        for share in &shares {
            prop_assert_eq!(public.verify_share(&NAME, share), Ok(()));
        }
        let reference = value_of(&public, &NAME, &shares[..k]);
        for _ in 0..3 {
            shares.shuffle(&mut rng);
            prop_assert_eq!(value_of(&public, &NAME, &shares[..k]), reference);
        }
        // More than k shares: the same value, no one blamed.
        prop_assert_eq!(value_of(&public, &NAME, &shares), reference);
        // Fresh shares (new proof nonces) of the same name: the same value.
        let again = all_shares(&secrets, &NAME, &mut rng);
        prop_assert_eq!(value_of(&public, &NAME, &again[n - k..]), reference);
        // Other names, other values.
        for name in [OTHER_INSTANCE, OTHER_PURPOSE] {
            let other = all_shares(&secrets, &name, &mut rng);
            prop_assert_ne!(value_of(&public, &name, &other[..k]), reference);
        }
    }

    #[test]
    fn k_minus_one_shares_do_not_combine((n, k) in group(12), seed in any::<u64>()) {
        let (public, secrets, mut rng) = dealt(k, n, seed);
        let shares = all_shares(&secrets, &NAME, &mut rng);
        prop_assert_eq!(
            public.combine(&NAME, &shares[..k - 1]),
            Err(CombineError::NotEnoughShares { needed: k, given: k - 1 })
        );
    }

    #[test]
    fn shares_of_another_name_or_key_are_rejected_and_named(
        (n, k) in group(10),
        seed in any::<u64>(),
        culprit in any::<prop::sample::Index>(),
        kind in 0..3usize,
    ) {
        let (public, secrets, mut rng) = dealt(k, n, seed);
        let (_, other_secrets, _) = dealt(k, n, seed ^ 0x5eed);
        let mut shares = all_shares(&secrets, &NAME, &mut rng);
        let honest = value_of(&public, &NAME, &shares[..k]);
        let slot = culprit.index(k);
        let bad = match kind {
            0 => secrets[slot].share(&OTHER_INSTANCE, &mut rng),
            1 => secrets[slot].share(&OTHER_PURPOSE, &mut rng),
            _ => other_secrets[slot].share(&NAME, &mut rng),
        };
        let culprit_id = bad.id();
        prop_assert_eq!(culprit_id, shares[slot].id());
        prop_assert_eq!(public.verify_share(&NAME, &bad), Err(CryptoError::InvalidShare(culprit_id)));
        shares[slot] = bad;

        // Exactly k shares, one bad: not enough valid ones, and the culprit is named.
        prop_assert_eq!(
            public.combine(&NAME, &shares[..k]),
            Err(CombineError::NotEnoughValidShares { needed: k, valid: k - 1, faulty: vec![culprit_id] })
        );
        // One share more than needed: the honest value, and the culprit is named.
        if n > k {
            let combined = public.combine(&NAME, &shares[..k + 1]).unwrap();
            prop_assert_eq!(combined.value, honest);
            prop_assert_eq!(combined.faulty, vec![culprit_id]);
        }
    }

    #[test]
    fn permutations_are_permutations_of_all_servers(n in 0u16..=130, seed in any::<u64>()) {
        let (public, secrets, mut rng) = dealt(1, 1, seed);
        let value = value_of(&public, &NAME, &all_shares(&secrets, &NAME, &mut rng));
        let mut order = value.permutation(n);
        prop_assert_eq!(order.clone(), value.permutation(n));
        order.sort();
        prop_assert_eq!(order, ServerId::all(n).collect::<Vec<_>>());
    }

    #[test]
    fn random_bytes_never_panic_on_decode(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = CoinShare::from_bytes(&bytes);
        let _ = SecretKeyShare::from_bytes(&bytes);
        let _ = PublicKeySet::from_bytes(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic_and_never_pass(
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        seed in any::<u64>(),
    ) {
        let (public, secrets, mut rng) = dealt(3, 5, seed);
        let share = secrets[1].share(&NAME, &mut rng);

        let mut bytes = share.to_bytes();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(mutated) = CoinShare::from_bytes(&bytes) {
            prop_assert!(mutated == share || public.verify_share(&NAME, &mutated).is_err());
        }

        let mut bytes = secrets[1].to_bytes();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        let _ = SecretKeyShare::from_bytes(&bytes);

        let original = public.to_bytes();
        let mut bytes = original.clone();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(mutated) = PublicKeySet::from_bytes(&bytes) {
            // Only raising the threshold keeps a key set consistent (a polynomial of degree
            // k - 1 also has degree below any larger k); every other change is refused.
            prop_assert!(bytes == original || (at < 2 && mutated.threshold() > public.threshold()));
        }
    }
}

#[test]
fn a_share_altered_in_any_byte_is_rejected_or_named() {
    let (public, secrets, mut rng) = dealt(2, 4, 11);
    let shares = all_shares(&secrets, &NAME, &mut rng);
    let honest = value_of(&public, &NAME, &shares[..2]);
    let encoded = shares[0].to_bytes();
    assert_eq!(encoded.len(), coin::COIN_SHARE_BYTES);
    let mut decoded_and_rejected = 0;
    for at in 0..encoded.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = encoded.clone();
            bytes[at] ^= mask;
            let Ok(mutated) = CoinShare::from_bytes(&bytes) else {
                continue;
            };
            decoded_and_rejected += 1;
            let blamed = mutated.id();
            assert!(
                public.verify_share(&NAME, &mutated).is_err(),
                "byte {at} mask {mask:#x}"
            );
            if blamed == shares[0].id() {
                let combined = public
                    .combine(&NAME, &[mutated, shares[1].clone(), shares[2].clone()])
                    .unwrap();
                assert_eq!(combined.value, honest);
                assert_eq!(combined.faulty, vec![blamed]);
            }
        }
    }
    // Most alterations of a scalar or of an id still decode: the proofs, not the decoder,
    // caught them.
    assert!(decoded_and_rejected > 100, "{decoded_and_rejected}");
}

#[test]
fn duplicates_and_non_members_are_refused() {
    let (public, secrets, mut rng) = dealt(2, 4, 3);
    let shares = all_shares(&secrets, &NAME, &mut rng);
    assert_eq!(
        public.combine(
            &NAME,
            &[shares[0].clone(), shares[0].clone(), shares[1].clone()]
        ),
        Err(CombineError::DuplicateShare(id(1)))
    );
    let (_, big_secrets, mut big_rng) = dealt(2, 7, 4);
    let outsider = big_secrets[6].share(&NAME, &mut big_rng);
    assert_eq!(
        public.verify_share(&NAME, &outsider),
        Err(CryptoError::UnknownServer(id(7)))
    );
    assert_eq!(
        public.combine(&NAME, &[shares[0].clone(), outsider, shares[1].clone()]),
        Err(CombineError::UnknownServer(id(7)))
    );
}

#[test]
fn large_groups_agree_and_name_every_culprit_met() {
    for (n, k) in [(64usize, 22usize), (64, 64), (64, 1), (37, 13)] {
        let (public, secrets, mut rng) = dealt(k, n, n as u64 * 1000 + k as u64);
        let mut shares = all_shares(&secrets, &NAME, &mut rng);
        let reference = value_of(&public, &NAME, &shares[..k]);
        shares.shuffle(&mut rng);
        assert_eq!(value_of(&public, &NAME, &shares[n - k..]), reference);
        if n >= k + 3 {
            // Three bad shares up front: all three are named, the value is unchanged.
            for share in shares.iter_mut().take(3) {
                *share = secrets[share.id().slot()].share(&OTHER_INSTANCE, &mut rng);
            }
            let mut expected: Vec<ServerId> = shares[..3].iter().map(CoinShare::id).collect();
            let combined = public.combine(&NAME, &shares[..k + 3]).unwrap();
            assert_eq!(combined.value, reference);
            let mut faulty = combined.faulty;
            faulty.sort();
            expected.sort();
            assert_eq!(faulty, expected);
        }
    }
}

#[test]
fn values_and_permutations_are_roughly_uniform() {
    // 400 coins of one key; the key and names are fixed, so this test is deterministic.
    let (public, secrets, mut rng) = dealt(2, 4, 2024);
    let mut ones = 0;
    let mut high_halves = 0;
    let mut first_places = [0usize; 4];
    let mut permutations = std::collections::HashSet::new();
    for round in 0u32..400 {
        let instance = format!("aba/round {round}");
        let name = Context::new("aba/coin", instance.as_bytes());
        let value = value_of(&public, &name, &all_shares(&secrets[..2], &name, &mut rng));
        ones += usize::from(value.bit());
        high_halves += usize::from(value.u64() >= 1 << 63);
        let order = value.permutation(4);
        first_places[order[0].slot()] += 1;
        if round < 60 {
            assert!(
                permutations.insert(value.permutation(16)),
                "repeated permutation"
            );
        }
        if round == 0 {
            // Beyond the largest group, the permutation is of the largest group.
            assert_eq!(value.permutation(u16::MAX).len(), 1024);
        }
    }
    // Expected 200 ± 10 (one standard deviation); the bounds are eight deviations wide.
    assert!((120..=280).contains(&ones), "{ones} ones");
    assert!(
        (120..=280).contains(&high_halves),
        "{high_halves} high halves"
    );
    // Each server first in about 100 of 400 permutations (± 8.7).
    for count in first_places {
        assert!((40..=160).contains(&count), "{first_places:?}");
    }
}

#[test]
fn encodings_round_trip_in_binary_toml_and_json() {
    #[derive(Serialize, Deserialize)]
    struct Config {
        public: PublicKeySet,
        secret: SecretKeyShare,
        share: CoinShare,
    }
    let (public, mut secrets, mut rng) = dealt(3, 7, 5);
    let share = secrets[2].share(&NAME, &mut rng);
    let secret = secrets.swap_remove(2);
    assert_eq!(
        PublicKeySet::from_bytes(&public.to_bytes()).unwrap(),
        public
    );
    assert_eq!(CoinShare::from_bytes(&share.to_bytes()).unwrap(), share);
    assert_eq!(
        SecretKeyShare::from_bytes(&secret.to_bytes())
            .unwrap()
            .to_bytes(),
        secret.to_bytes()
    );
    assert_eq!(public.to_bytes().len(), 4 + 32 * 8);

    let config = Config {
        public: public.clone(),
        secret,
        share: share.clone(),
    };
    let toml_text = toml::to_string(&config).unwrap();
    let json_text = serde_json::to_string(&config).unwrap();
    for back in [
        toml::from_str::<Config>(&toml_text).unwrap(),
        serde_json::from_str::<Config>(&json_text).unwrap(),
    ] {
        assert_eq!(back.public, public);
        assert_eq!(back.share, share);
        assert_eq!(back.secret.to_bytes(), config.secret.to_bytes());
        assert_eq!(back.secret.id(), id(3));
        // The restored secret share still produces valid shares.
        let fresh = back.secret.share(&NAME, &mut rng);
        assert_eq!(back.public.verify_share(&NAME, &fresh), Ok(()));
    }
}

#[test]
fn inconsistent_public_key_sets_do_not_decode() {
    let (public, _, _) = dealt(3, 6, 8);
    let (other, _, _) = dealt(3, 6, 9);
    let good = public.to_bytes();
    let key = |bytes: &[u8], index: usize| bytes[4 + 32 * index..4 + 32 * (index + 1)].to_vec();
    // Two verification keys swapped.
    let mut swapped = good.clone();
    swapped[4 + 32..4 + 64].copy_from_slice(&key(&good, 2));
    swapped[4 + 64..4 + 96].copy_from_slice(&key(&good, 1));
    assert!(PublicKeySet::from_bytes(&swapped).is_err());
    // One verification key from another dealing.
    let mut foreign = good.clone();
    foreign[4 + 32 * 4..4 + 32 * 5].copy_from_slice(&key(&other.to_bytes(), 4));
    assert!(PublicKeySet::from_bytes(&foreign).is_err());
    // A lower threshold than the polynomial's degree allows.
    let mut lower = good.clone();
    lower[..2].copy_from_slice(&2u16.to_be_bytes());
    assert!(PublicKeySet::from_bytes(&lower).is_err());
    // Truncated, trailing bytes, or a group size that does not match the keys.
    assert!(PublicKeySet::from_bytes(&good[..good.len() - 1]).is_err());
    assert!(PublicKeySet::from_bytes(&[good.as_slice(), &[0]].concat()).is_err());
    let mut wrong_n = good.clone();
    wrong_n[2..4].copy_from_slice(&5u16.to_be_bytes());
    assert!(PublicKeySet::from_bytes(&wrong_n).is_err());
}

#[test]
fn deal_refuses_impossible_parameters_and_debug_hides_secrets() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (k, n) in [(0, 4), (5, 4), (1, 0), (3, 1025)] {
        assert!(matches!(
            coin::deal(k, n, &mut rng),
            Err(CryptoError::InvalidParameters(_))
        ));
    }
    let (_, secrets, _) = dealt(1, 2, 2);
    let secret_hex = hex::encode(&secrets[0].to_bytes()[2..]);
    let shown = format!("{:?}", secrets[0]);
    assert!(!shown.contains(&secret_hex), "{shown}");
    assert!(!shown.to_lowercase().contains(&secret_hex[..16]), "{shown}");
}
