//! Threshold BLS on BLS12-381, with real pairings: over many `(n, k)` (including `k = 1`,
//! `k = n`, `n = 1` and `n` up to 64), any `k` valid shares combine to one and the same signature,
//! which verifies; fewer than `k` shares, duplicates and non-members are refused by name; a
//! signature or share never verifies under another message, key set, instance or purpose; bad
//! shares are named in `faulty` (or `NotEnoughValidShares`) and never used; encodings roundtrip
//! through bytes, TOML and JSON, and decoding rejects — without panicking — random bytes, every
//! single-byte mutation that does not give another canonical value, the identity, non-canonical
//! encodings, points outside the subgroup and scalars out of range.

use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sintra_crypto::bls::{
    self, ENCODED_SIGNATURE_BYTES, PublicKeySet, SecretKeyShare, Signature, SignatureShare,
};
use sintra_crypto::{CombineError, Context, CryptoError, Decode, Encode, ServerId};

const MESSAGE: &[u8] = b"deliver request 42 in epoch 7";

fn ctx() -> Context<'static> {
    Context::new("aba/main-vote", b"abc/epoch 7/aba/round 2")
}

fn id(index: u16) -> ServerId {
    ServerId::new(index).unwrap()
}

/// A dealing for `n` servers with threshold `k` and every server's share on `MESSAGE`.
fn setup(
    k: usize,
    n: usize,
    seed: u64,
) -> (PublicKeySet, Vec<SecretKeyShare>, Vec<SignatureShare>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (keys, secrets) = bls::deal(k, n, &mut rng).unwrap();
    let shares = secrets.iter().map(|s| s.sign(&ctx(), MESSAGE)).collect();
    (keys, secrets, shares)
}

/// A share from server `id` that does not verify: its own scalar times another message's hash.
fn bad_share(secret: &SecretKeyShare) -> SignatureShare {
    secret.sign(&ctx(), b"some other message")
}

/// `(n, k)` with `1 <= k <= n <= 64`, biased towards small groups and the edges `k = 1`, `k = n`.
fn group() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        (1usize..=10).prop_flat_map(|n| (Just(n), 1..=n)),
        (1usize..=64).prop_flat_map(|n| (Just(n), prop_oneof![Just(1), Just(n), 1..=n])),
    ]
}

#[test]
fn edge_groups_sign_combine_and_verify() {
    for (n, k) in [
        (1, 1),
        (2, 1),
        (2, 2),
        (3, 3),
        (4, 3),
        (7, 5),
        (10, 1),
        (10, 10),
        (64, 43),
        (64, 64),
    ] {
        let (keys, _, shares) = setup(k, n, (n * 100 + k) as u64);
        assert_eq!((keys.threshold(), usize::from(keys.servers())), (k, n));
        for share in &shares {
            assert_eq!(keys.verify_share(&ctx(), MESSAGE, share), Ok(()));
        }
        let first = keys.combine(&ctx(), MESSAGE, &shares[..k]).unwrap();
        let last = keys.combine(&ctx(), MESSAGE, &shares[n - k..]).unwrap();
        assert!(first.faulty.is_empty() && last.faulty.is_empty());
        assert_eq!(first.value, last.value, "(n, k) = ({n}, {k})");
        assert_eq!(keys.verify(&ctx(), MESSAGE, &first.value), Ok(()));
        assert!(
            keys.find_invalid_shares(&ctx(), MESSAGE, &shares)
                .is_empty()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_k_shares_combine_to_the_same_signature((n, k) in group(), seed in any::<u64>()) {
        let (keys, _, shares) = setup(k, n, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 1);
        let subset = |rng: &mut ChaCha20Rng| {
            let mut picked: Vec<SignatureShare> = shares.choose_multiple(rng, k).copied().collect();
            picked.shuffle(rng);
            picked
        };
        let a = keys.combine(&ctx(), MESSAGE, &subset(&mut rng)).unwrap();
        let b = keys.combine(&ctx(), MESSAGE, &subset(&mut rng)).unwrap();
        prop_assert!(a.faulty.is_empty() && b.faulty.is_empty());
        prop_assert_eq!(a.value, b.value);
        prop_assert_eq!(keys.verify(&ctx(), MESSAGE, &a.value), Ok(()));
        // More than k shares give the same signature too.
        let all = keys.combine(&ctx(), MESSAGE, &shares).unwrap();
        prop_assert_eq!(all.value, a.value);
    }

    #[test]
    fn fewer_than_k_shares_are_not_enough((n, k) in group(), seed in any::<u64>()) {
        prop_assume!(k >= 2);
        let (keys, _, shares) = setup(k, n, seed);
        prop_assert_eq!(
            keys.combine(&ctx(), MESSAGE, &shares[..k - 1]),
            Err(CombineError::NotEnoughShares { needed: k, given: k - 1 })
        );
    }

    #[test]
    fn one_bad_share_among_k_plus_one_is_named_and_left_out(
        (n, k) in group().prop_filter("needs a spare share", |(n, k)| k < n),
        seed in any::<u64>(),
        position in any::<prop::sample::Index>(),
    ) {
        let (keys, secrets, shares) = setup(k, n, seed);
        let expected = keys.combine(&ctx(), MESSAGE, &shares[..k]).unwrap().value;
        let mut given = shares[..=k].to_vec();
        // Among the first k, so the optimistic attempt uses it and fails.
        let bad = position.index(k);
        given[bad] = bad_share(&secrets[bad]);
        let culprit = given[bad].id();
        prop_assert_eq!(
            keys.verify_share(&ctx(), MESSAGE, &given[bad]),
            Err(CryptoError::InvalidShare(culprit))
        );
        let combined = keys.combine(&ctx(), MESSAGE, &given).unwrap();
        prop_assert_eq!(combined.value, expected);
        prop_assert_eq!(combined.faulty, vec![culprit]);
        // Exactly k with one bad: not enough valid shares, and the culprit is named.
        prop_assert_eq!(
            keys.combine(&ctx(), MESSAGE, &given[..k]),
            Err(CombineError::NotEnoughValidShares { needed: k, valid: k - 1, faulty: vec![culprit] })
        );
    }

    #[test]
    fn several_bad_shares_are_all_named(
        (n, k) in group(),
        seed in any::<u64>(),
        bad_count in 1usize..=8,
    ) {
        let (keys, secrets, mut shares) = setup(k, n, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 2);
        let mut bad: Vec<usize> = (0..n).collect();
        bad.shuffle(&mut rng);
        bad.truncate(bad_count.min(n));
        for &slot in &bad {
            shares[slot] = bad_share(&secrets[slot]);
        }
        shares.shuffle(&mut rng);
        let mut culprits: Vec<ServerId> = bad.iter().map(|&slot| secrets[slot].id()).collect();
        culprits.sort();
        prop_assert_eq!(keys.find_invalid_shares(&ctx(), MESSAGE, &shares), culprits.clone());
        let valid = n - culprits.len();
        match keys.combine(&ctx(), MESSAGE, &shares) {
            Ok(combined) => {
                prop_assert!(valid >= k);
                prop_assert_eq!(keys.verify(&ctx(), MESSAGE, &combined.value), Ok(()));
                // The optimistic attempt may have used only valid shares: then nobody is named.
                prop_assert!(combined.faulty.is_empty() || combined.faulty == culprits);
            }
            Err(error) => {
                prop_assert!(valid < k);
                prop_assert_eq!(error, CombineError::NotEnoughValidShares { needed: k, valid, faulty: culprits });
            }
        }
    }

    #[test]
    fn signatures_and_shares_are_bound_to_message_keys_and_context(
        (n, k) in group(),
        seed in any::<u64>(),
    ) {
        let (keys, _, shares) = setup(k, n, seed);
        let (other_keys, _, _) = setup(k, n, seed.wrapping_add(1));
        let signature = keys.combine(&ctx(), MESSAGE, &shares).unwrap().value;
        let other_instance = Context::new(ctx().purpose, b"abc/epoch 7/aba/round 3");
        let other_purpose = Context::new("aba/pre-vote", ctx().instance);
        prop_assert_eq!(keys.verify(&ctx(), MESSAGE, &signature), Ok(()));
        let refused = Err(CryptoError::InvalidSignature);
        prop_assert_eq!(keys.verify(&ctx(), b"another message", &signature), refused.clone());
        prop_assert_eq!(other_keys.verify(&ctx(), MESSAGE, &signature), refused.clone());
        prop_assert_eq!(keys.verify(&other_instance, MESSAGE, &signature), refused.clone());
        prop_assert_eq!(keys.verify(&other_purpose, MESSAGE, &signature), refused);
        let share = &shares[0];
        let refused = Err(CryptoError::InvalidShare(share.id()));
        prop_assert_eq!(keys.verify_share(&other_instance, MESSAGE, share), refused.clone());
        prop_assert_eq!(keys.verify_share(&other_purpose, MESSAGE, share), refused.clone());
        prop_assert_eq!(other_keys.verify_share(&ctx(), MESSAGE, share), refused);
        // Shares for another context are all invalid here, and all named.
        let all: Vec<ServerId> = shares.iter().map(SignatureShare::id).collect();
        prop_assert_eq!(
            keys.combine(&other_instance, MESSAGE, &shares),
            Err(CombineError::NotEnoughValidShares { needed: k, valid: 0, faulty: all })
        );
    }

    #[test]
    fn an_altered_share_byte_is_refused_or_named(
        (n, k) in group().prop_filter("needs a spare share", |(n, k)| k < n),
        seed in any::<u64>(),
        // Weighted towards the mutations that decode: the sign flag (the negated point) and the id.
        (byte, flip) in prop_oneof![
            Just((2usize, 0x20u8)),
            (0usize..2, 1u8..=255),
            (0usize..bls::ENCODED_SIGNATURE_SHARE_BYTES, 1u8..=255),
        ],
        position in any::<prop::sample::Index>(),
    ) {
        let (keys, _, shares) = setup(k, n, seed);
        let mut given = shares[..=k].to_vec();
        let slot = position.index(k);
        let mut bytes = given[slot].to_bytes();
        bytes[byte] ^= flip;
        let Ok(altered) = SignatureShare::from_bytes(&bytes) else {
            return Ok(());
        };
        prop_assert_ne!(altered, given[slot]);
        given[slot] = altered;
        match keys.combine(&ctx(), MESSAGE, &given) {
            Ok(combined) => {
                // With k = 1 every share equals the group signature, so a share whose id byte was
                // changed to another member's id is still that member's valid share: nothing to name.
                let expected = match keys.verify_share(&ctx(), MESSAGE, &altered) {
                    Ok(()) => vec![],
                    Err(_) => vec![altered.id()],
                };
                prop_assert_eq!(combined.faulty, expected);
                prop_assert_eq!(keys.verify(&ctx(), MESSAGE, &combined.value), Ok(()));
            }
            // An altered id byte can make the share claim another server's place.
            Err(CombineError::UnknownServer(culprit) | CombineError::DuplicateShare(culprit)) => {
                prop_assert_eq!(culprit, altered.id());
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

#[test]
fn with_threshold_one_a_share_renamed_to_another_member_is_still_valid() {
    // Found by the property test above: for k = 1 the sharing polynomial is constant, so every
    // share is the group signature itself and an id changed to another member's is not a fault.
    let (keys, _, shares) = setup(1, 5, 450);
    let mut bytes = shares[0].to_bytes();
    bytes[1] ^= 4;
    let renamed = SignatureShare::from_bytes(&bytes).unwrap();
    assert_eq!(renamed.id(), id(5));
    assert_eq!(keys.verify_share(&ctx(), MESSAGE, &renamed), Ok(()));
    let combined = keys
        .combine(&ctx(), MESSAGE, &[renamed, shares[1]])
        .unwrap();
    assert!(combined.faulty.is_empty());
    // With k = 2 the same renaming is a fault and is named.
    let (keys, _, shares) = setup(2, 5, 450);
    let mut bytes = shares[0].to_bytes();
    bytes[1] ^= 4;
    let renamed = SignatureShare::from_bytes(&bytes).unwrap();
    assert_eq!(
        keys.verify_share(&ctx(), MESSAGE, &renamed),
        Err(CryptoError::InvalidShare(id(5)))
    );
    let combined = keys
        .combine(&ctx(), MESSAGE, &[renamed, shares[1], shares[2]])
        .unwrap();
    assert_eq!(combined.faulty, vec![id(5)]);
}

#[test]
fn duplicates_and_non_members_are_refused_by_name() {
    let (keys, _, shares) = setup(3, 5, 11);
    let mut duplicated = shares[..3].to_vec();
    duplicated.push(shares[1]);
    assert_eq!(
        keys.combine(&ctx(), MESSAGE, &duplicated),
        Err(CombineError::DuplicateShare(id(2)))
    );
    let (_, _, bigger) = setup(3, 6, 12);
    let stranger = bigger[5];
    let mut with_stranger = shares[..3].to_vec();
    with_stranger.insert(1, stranger);
    assert_eq!(
        keys.combine(&ctx(), MESSAGE, &with_stranger),
        Err(CombineError::UnknownServer(id(6)))
    );
    assert_eq!(
        keys.verify_share(&ctx(), MESSAGE, &stranger),
        Err(CryptoError::UnknownServer(id(6)))
    );
    assert_eq!(
        keys.find_invalid_shares(&ctx(), MESSAGE, &with_stranger),
        vec![id(6)]
    );
    assert!(keys.find_invalid_shares(&ctx(), MESSAGE, &[]).is_empty());
}

#[test]
fn deal_refuses_impossible_groups() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for (k, n) in [(0, 4), (5, 4), (1, 1025), (0, 0)] {
        assert!(matches!(
            bls::deal(k, n, &mut rng),
            Err(CryptoError::InvalidParameters(_))
        ));
    }
}

#[test]
fn secrets_are_hidden_from_debug_output() {
    let (keys, secrets, shares) = setup(2, 3, 4);
    let secret_hex = hex::encode(&secrets[0].to_bytes()[2..]);
    let shown = format!("{:?}", secrets[0]);
    assert!(!shown.contains(&secret_hex), "{shown}");
    assert!(shown.contains("SecretKeyShare"));
    assert!(format!("{keys:?}").contains("PublicKeySet"));
    assert!(format!("{:?}", shares[0]).contains("SignatureShare"));
}

// ---------------------------------------------------------------------------------------------
// Encodings

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Document {
    keys: PublicKeySet,
    secret: SecretKeyShare,
    share: SignatureShare,
    signature: Signature,
}

#[test]
fn encodings_roundtrip_through_bytes_toml_and_json() {
    for (n, k) in [(1, 1), (4, 3), (10, 7)] {
        let (keys, secrets, shares) = setup(k, n, 5);
        let signature = keys.combine(&ctx(), MESSAGE, &shares).unwrap().value;
        assert_eq!(signature.to_bytes().len(), ENCODED_SIGNATURE_BYTES);
        assert_eq!(
            shares[0].to_bytes().len(),
            bls::ENCODED_SIGNATURE_SHARE_BYTES
        );
        assert_eq!(
            secrets[0].to_bytes().len(),
            bls::ENCODED_SECRET_KEY_SHARE_BYTES
        );
        assert_eq!(
            keys.to_bytes().len(),
            8 + (n + 1) * bls::ENCODED_PUBLIC_KEY_BYTES
        );
        assert_eq!(PublicKeySet::from_bytes(&keys.to_bytes()), Ok(keys.clone()));
        assert_eq!(
            SecretKeyShare::from_bytes(&secrets[0].to_bytes()),
            Ok(secrets[0].clone())
        );
        assert_eq!(
            SignatureShare::from_bytes(&shares[0].to_bytes()),
            Ok(shares[0])
        );
        assert_eq!(Signature::from_bytes(&signature.to_bytes()), Ok(signature));

        let document = Document {
            keys: keys.clone(),
            secret: secrets[n - 1].clone(),
            share: shares[n - 1],
            signature,
        };
        let toml_text = toml::to_string(&document).unwrap();
        assert_eq!(toml::from_str::<Document>(&toml_text).unwrap(), document);
        let json_text = serde_json::to_string(&document).unwrap();
        assert_eq!(
            serde_json::from_str::<Document>(&json_text).unwrap(),
            document
        );
        // A decoded secret share still signs: same signature as before.
        let decoded = toml::from_str::<Document>(&toml_text).unwrap();
        assert_eq!(decoded.secret.sign(&ctx(), MESSAGE), shares[n - 1]);
    }
}

/// Every decode of `bytes` either fails or gives a value whose encoding is exactly `bytes`.
fn decodes_canonically_or_fails<T: Decode + Encode>(bytes: &[u8]) -> bool {
    match T::from_bytes(bytes) {
        Ok(value) => value.to_bytes() == bytes,
        Err(_) => true,
    }
}

/// Every single-byte mutation of `valid` (all positions, the given xor masks) is refused or is
/// another canonical encoding, never a panic. Returns how many mutations decoded.
fn mutations_decode_canonically<T: Decode + Encode>(valid: &[u8], masks: &[u8]) -> usize {
    let mut accepted = 0;
    for position in 0..valid.len() {
        for &mask in masks {
            let mut bytes = valid.to_vec();
            bytes[position] ^= mask;
            assert!(
                decodes_canonically_or_fails::<T>(&bytes),
                "byte {position} ^ {mask:#x}"
            );
            accepted += usize::from(T::from_bytes(&bytes).is_ok());
        }
        assert!(
            T::from_bytes(&valid[..position]).is_err(),
            "truncated at {position}"
        );
    }
    let mut longer = valid.to_vec();
    longer.push(0);
    assert!(T::from_bytes(&longer).is_err());
    accepted
}

#[test]
fn every_single_byte_mutation_of_points_and_scalars_is_refused() {
    let (keys, secrets, shares) = setup(2, 3, 6);
    let signature = keys.combine(&ctx(), MESSAGE, &shares).unwrap().value;
    let all_masks: Vec<u8> = (1..=255).collect();
    // Changing a compressed point's bytes gives another point of the subgroup only when it flips
    // the sign flag (0x20 in the first byte): that is the negated point, which does not verify.
    // Any other change is refused (except with negligible probability). A mutated id gives
    // another valid id within 1..=1024, and a mutated scalar may well be another valid scalar.
    let signature_bytes = signature.to_bytes();
    assert_eq!(
        mutations_decode_canonically::<Signature>(&signature_bytes, &all_masks),
        1
    );
    let mut negated = signature_bytes.clone();
    negated[0] ^= 0x20;
    let negated = Signature::from_bytes(&negated).unwrap();
    assert_eq!(
        keys.verify(&ctx(), MESSAGE, &negated),
        Err(CryptoError::InvalidSignature)
    );
    let share_bytes = shares[0].to_bytes();
    mutations_decode_canonically::<SignatureShare>(&share_bytes, &all_masks);
    for (position, mask) in
        (2..share_bytes.len()).flat_map(|p| all_masks.iter().map(move |m| (p, *m)))
    {
        let mut bytes = share_bytes.clone();
        bytes[position] ^= mask;
        if let Ok(negated) = SignatureShare::from_bytes(&bytes) {
            assert_eq!((position, mask), (2, 0x20));
            assert_eq!(
                keys.find_invalid_shares(&ctx(), MESSAGE, &[negated, shares[1]]),
                vec![negated.id()]
            );
        }
    }
    mutations_decode_canonically::<SecretKeyShare>(&secrets[0].to_bytes(), &all_masks);
    // Key sets: every position with a few masks (each decode checks n + 1 G2 points).
    mutations_decode_canonically::<PublicKeySet>(&keys.to_bytes(), &[0x01, 0x20, 0x80, 0xff]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_the_decoders(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..120),
            prop::collection::vec(any::<u8>(), 48..=50),
            prop::collection::vec(any::<u8>(), 34..=34),
        ],
    ) {
        prop_assert!(decodes_canonically_or_fails::<Signature>(&bytes));
        prop_assert!(decodes_canonically_or_fails::<SignatureShare>(&bytes));
        prop_assert!(decodes_canonically_or_fails::<SecretKeyShare>(&bytes));
        prop_assert!(decodes_canonically_or_fails::<PublicKeySet>(&bytes));
    }

    #[test]
    fn random_key_set_bodies_are_refused(
        k in 1u16..=4,
        n in 1u16..=4,
        count in 0u32..=6,
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&k.to_be_bytes());
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.extend_from_slice(&body[..body.len().min(96)]);
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes.extend_from_slice(&body[body.len().min(96)..]);
        prop_assert!(PublicKeySet::from_bytes(&bytes).is_err());
    }
}

/// The field modulus p of BLS12-381, big-endian.
const FIELD_MODULUS: &str = "1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab";
/// The group order r, big-endian.
const GROUP_ORDER: &str = "73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001";

/// `a + b` over big-endian byte strings of equal length (the carry out of the top is dropped).
fn add_big_endian(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut carry = 0u16;
    for i in (0..a.len()).rev() {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

#[test]
fn identity_non_canonical_and_out_of_subgroup_encodings_are_refused() {
    let (keys, secrets, shares) = setup(2, 3, 8);
    // The identity: compression and infinity flags, all else zero.
    let mut identity_g1 = [0u8; 48];
    identity_g1[0] = 0xc0;
    assert!(Signature::from_bytes(&identity_g1).is_err());
    let mut share_bytes = shares[0].to_bytes();
    share_bytes[2..].copy_from_slice(&identity_g1);
    assert!(SignatureShare::from_bytes(&share_bytes).is_err());
    let mut keys_bytes = keys.to_bytes();
    let mut identity_g2 = [0u8; 96];
    identity_g2[0] = 0xc0;
    keys_bytes[4..100].copy_from_slice(&identity_g2);
    assert!(PublicKeySet::from_bytes(&keys_bytes).is_err());
    let mut keys_bytes = keys.to_bytes();
    keys_bytes[104..200].copy_from_slice(&identity_g2);
    assert!(PublicKeySet::from_bytes(&keys_bytes).is_err());

    // x + p in place of x: same point modulo p, not the canonical encoding. About a quarter of
    // signatures have x small enough for x + p to fit in 381 bits.
    let modulus = hex::decode(FIELD_MODULUS).unwrap();
    let mut tried = 0;
    for round in 0u32..64 {
        let message = round.to_be_bytes();
        let round_shares: Vec<SignatureShare> =
            secrets.iter().map(|s| s.sign(&ctx(), &message)).collect();
        let signature = keys.combine(&ctx(), &message, &round_shares).unwrap().value;
        let bytes = signature.to_bytes();
        let mut x = bytes.clone();
        x[0] &= 0x1f;
        let mut lifted = add_big_endian(&x, &modulus);
        // The top three bits are flags: x + p must stay below 2^381.
        if lifted[0] < 0x20 {
            lifted[0] |= bytes[0] & 0xe0;
            assert!(Signature::from_bytes(&lifted).is_err());
            tried += 1;
        }
    }
    assert!(tried > 0);

    // Points on the curve outside the prime-order subgroup: x = 0, 1, 2, … until x³ + 4 is a
    // square (the cofactor is about 2^126, so such points are almost never in the subgroup).
    let mut found = 0;
    for x in 0u8..64 {
        let mut bytes = [0u8; 48];
        bytes[0] = 0x80;
        bytes[47] = x;
        let unchecked =
            Option::<blstrs::G1Affine>::from(blstrs::G1Affine::from_compressed_unchecked(&bytes));
        if unchecked.is_some() {
            assert!(Signature::from_bytes(&bytes).is_err(), "x = {x}");
            found += 1;
        }
    }
    assert!(found > 0);
    let mut found = 0;
    for x in 0u8..64 {
        let mut bytes = [0u8; 96];
        bytes[0] = 0x80;
        bytes[95] = x;
        let unchecked =
            Option::<blstrs::G2Affine>::from(blstrs::G2Affine::from_compressed_unchecked(&bytes));
        if unchecked.is_some() {
            let mut keys_bytes = keys.to_bytes();
            keys_bytes[4..100].copy_from_slice(&bytes);
            assert!(PublicKeySet::from_bytes(&keys_bytes).is_err(), "x = {x}");
            found += 1;
        }
    }
    assert!(found > 0);

    // Scalars: zero, the group order itself, and all ones are refused.
    let order = hex::decode(GROUP_ORDER).unwrap();
    for scalar in [vec![0u8; 32], order, vec![0xff; 32]] {
        let mut bytes = vec![0, 1];
        bytes.extend_from_slice(&scalar);
        assert!(SecretKeyShare::from_bytes(&bytes).is_err());
    }
    // Server id 0 and 1025.
    for bad_id in [0u16, 1025] {
        let mut bytes = shares[0].to_bytes();
        bytes[..2].copy_from_slice(&bad_id.to_be_bytes());
        assert!(SignatureShare::from_bytes(&bytes).is_err());
    }
}

#[test]
fn key_sets_that_are_not_one_dealing_are_refused() {
    let (keys, _, _) = setup(3, 5, 9);
    let (other, _, _) = setup(3, 5, 10);
    let bytes = keys.to_bytes();
    let other_bytes = other.to_bytes();
    let key_at = |slot: usize| 104 + slot * 96;
    // One verification key from another dealing.
    for slot in 0..5 {
        let mut mixed = bytes.clone();
        mixed[key_at(slot)..key_at(slot) + 96]
            .copy_from_slice(&other_bytes[key_at(slot)..key_at(slot) + 96]);
        assert!(PublicKeySet::from_bytes(&mixed).is_err(), "slot {slot}");
    }
    // Another dealing's group key.
    let mut mixed = bytes.clone();
    mixed[4..100].copy_from_slice(&other_bytes[4..100]);
    assert!(PublicKeySet::from_bytes(&mixed).is_err());
    // Two keys swapped.
    let mut swapped = bytes.clone();
    let (a, b) = (
        bytes[key_at(0)..key_at(1)].to_vec(),
        bytes[key_at(1)..key_at(2)].to_vec(),
    );
    swapped[key_at(0)..key_at(1)].copy_from_slice(&b);
    swapped[key_at(1)..key_at(2)].copy_from_slice(&a);
    assert!(PublicKeySet::from_bytes(&swapped).is_err());
    // A lower threshold than the keys were dealt for; a count that is not n.
    let mut lower = bytes.clone();
    lower[..2].copy_from_slice(&2u16.to_be_bytes());
    assert!(PublicKeySet::from_bytes(&lower).is_err());
    let mut count = bytes.clone();
    count[100..104].copy_from_slice(&4u32.to_be_bytes());
    assert!(PublicKeySet::from_bytes(&count).is_err());
    // Threshold outside 1..=n.
    for (k, n) in [(0u16, 5u16), (6, 5)] {
        let mut header = bytes.clone();
        header[..2].copy_from_slice(&k.to_be_bytes());
        header[2..4].copy_from_slice(&n.to_be_bytes());
        assert!(PublicKeySet::from_bytes(&header).is_err());
    }
}
