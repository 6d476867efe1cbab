//! TDH2 threshold encryption (Shoup–Gennaro on ristretto255, hybrid with ChaCha20-Poly1305)
//! with real cryptography, over many `(n, k)`:
//! - any `k` valid decryption shares recover the plaintext; `k - 1` do not combine;
//! - a ciphertext altered in any byte, or presented under another label (other purpose, other
//!   instance), fails the public check, and servers refuse to produce shares for it;
//! - a share for another ciphertext, another label or from another key set, or with an altered
//!   byte, is rejected on its own and named in `faulty` by `combine`; duplicates and
//!   non-members are refused;
//! - plaintext size limits hold at the boundary;
//! - every type round-trips through its binary, TOML and JSON forms, and decoding random or
//!   mutated bytes never panics.

use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sintra_crypto::tdh2::{
    self, Ciphertext, DecryptionShare, PLAINTEXT_BYTES_MAX, PublicKey, SecretKeyShare,
};
use sintra_crypto::{CombineError, Context, CryptoError, Decode, DecodeError, Encode, ServerId};

const LABEL: Context<'static> = Context {
    purpose: "scabc/request",
    instance: b"scabc/epoch 3/client 17/request 9",
};
const OTHER_INSTANCE: Context<'static> = Context {
    purpose: "scabc/request",
    instance: b"scabc/epoch 3/client 17/request 10",
};
const OTHER_PURPOSE: Context<'static> = Context {
    purpose: "notary/confidential",
    instance: b"scabc/epoch 3/client 17/request 9",
};

fn id(index: u16) -> ServerId {
    ServerId::new(index).unwrap()
}

fn dealt(k: usize, n: usize, seed: u64) -> (PublicKey, Vec<SecretKeyShare>, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (public, secrets) = tdh2::deal(k, n, &mut rng).unwrap();
    assert_eq!(public.threshold(), k);
    assert_eq!(usize::from(public.servers()), n);
    assert_eq!(secrets.len(), n);
    (public, secrets, rng)
}

fn all_shares(
    secrets: &[SecretKeyShare],
    label: &Context,
    ciphertext: &Ciphertext,
    rng: &mut ChaCha20Rng,
) -> Vec<DecryptionShare> {
    secrets
        .iter()
        .map(|secret| secret.decryption_share(label, ciphertext, rng).unwrap())
        .collect()
}

/// A group size and a threshold `1 <= k <= n`, with `n <= max`.
fn group(max: usize) -> impl Strategy<Value = (usize, usize)> {
    (1..=max).prop_flat_map(|n| (Just(n), 1..=n))
}

fn decrypt(
    public: &PublicKey,
    label: &Context,
    ciphertext: &Ciphertext,
    shares: &[DecryptionShare],
) -> Vec<u8> {
    let combined = public.combine(label, ciphertext, shares).unwrap();
    assert!(combined.faulty.is_empty());
    combined.value
}

/// Asserts that `ciphertext` is refused under `label` by everyone.
fn assert_refused(
    public: &PublicKey,
    secrets: &[SecretKeyShare],
    label: &Context,
    ciphertext: &Ciphertext,
    shares: &[DecryptionShare],
    rng: &mut ChaCha20Rng,
) {
    assert_eq!(
        public.verify_ciphertext(label, ciphertext),
        Err(CryptoError::InvalidCiphertext)
    );
    for secret in secrets {
        assert_eq!(
            secret.decryption_share(label, ciphertext, rng).map(|_| ()),
            Err(CryptoError::InvalidCiphertext)
        );
    }
    assert_eq!(
        public.combine(label, ciphertext, shares),
        Err(CombineError::Crypto(CryptoError::InvalidCiphertext))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_k_valid_shares_recover_the_plaintext(
        (n, k) in group(16),
        seed in any::<u64>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let (public, secrets, mut rng) = dealt(k, n, seed);
        let ciphertext = public.encrypt(&LABEL, &plaintext, &mut rng).unwrap();
        prop_assert_eq!(public.verify_ciphertext(&LABEL, &ciphertext), Ok(()));
        prop_assert_eq!(ciphertext.sealed_len(), plaintext.len() + tdh2::TAG_BYTES);
        let mut shares = all_shares(&secrets, &LABEL, &ciphertext, &mut rng);
        for share in &shares {
            prop_assert_eq!(public.verify_share(&LABEL, &ciphertext, share), Ok(()));
        }
        for _ in 0..3 {
            shares.shuffle(&mut rng);
            prop_assert_eq!(decrypt(&public, &LABEL, &ciphertext, &shares[..k]), plaintext.clone());
        }
        prop_assert_eq!(decrypt(&public, &LABEL, &ciphertext, &shares), plaintext.clone());
        // Two encryptions of one plaintext differ, and both decrypt.
        let again = public.encrypt(&LABEL, &plaintext, &mut rng).unwrap();
        prop_assert_ne!(&again, &ciphertext);
        let again_shares = all_shares(&secrets[n - k..], &LABEL, &again, &mut rng);
        prop_assert_eq!(decrypt(&public, &LABEL, &again, &again_shares), plaintext);
    }

    #[test]
    fn k_minus_one_shares_do_not_combine((n, k) in group(12), seed in any::<u64>()) {
        let (public, secrets, mut rng) = dealt(k, n, seed);
        let ciphertext = public.encrypt(&LABEL, b"secret", &mut rng).unwrap();
        let shares = all_shares(&secrets[..k - 1], &LABEL, &ciphertext, &mut rng);
        prop_assert_eq!(
            public.combine(&LABEL, &ciphertext, &shares),
            Err(CombineError::NotEnoughShares { needed: k, given: k - 1 })
        );
    }

    #[test]
    fn foreign_shares_are_rejected_and_named(
        (n, k) in group(10),
        seed in any::<u64>(),
        culprit in any::<prop::sample::Index>(),
        kind in 0..4usize,
    ) {
        let (public, secrets, mut rng) = dealt(k, n, seed);
        let (_, other_secrets, _) = dealt(k, n, seed ^ 0x5eed);
        let plaintext = b"the request, to be opened after ordering".to_vec();
        let ciphertext = public.encrypt(&LABEL, &plaintext, &mut rng).unwrap();
        let mut shares = all_shares(&secrets, &LABEL, &ciphertext, &mut rng);
        let slot = culprit.index(k);
        let bad = match kind {
            // A share of another ciphertext of the same plaintext and label.
            0 => {
                let other = public.encrypt(&LABEL, &plaintext, &mut rng).unwrap();
                secrets[slot].decryption_share(&LABEL, &other, &mut rng).unwrap()
            }
            // A share of a ciphertext made for another label.
            1 | 2 => {
                let label = if kind == 1 { OTHER_INSTANCE } else { OTHER_PURPOSE };
                let other = public.encrypt(&label, &plaintext, &mut rng).unwrap();
                secrets[slot].decryption_share(&label, &other, &mut rng).unwrap()
            }
            // A share from another key set, of this very ciphertext.
            _ => other_secrets[slot].decryption_share(&LABEL, &ciphertext, &mut rng).unwrap(),
        };
        let culprit_id = bad.id();
        prop_assert_eq!(culprit_id, shares[slot].id());
        prop_assert_eq!(
            public.verify_share(&LABEL, &ciphertext, &bad),
            Err(CryptoError::InvalidShare(culprit_id))
        );
        shares[slot] = bad;
        prop_assert_eq!(
            public.combine(&LABEL, &ciphertext, &shares[..k]),
            Err(CombineError::NotEnoughValidShares { needed: k, valid: k - 1, faulty: vec![culprit_id] })
        );
        if n > k {
            let combined = public.combine(&LABEL, &ciphertext, &shares[..k + 1]).unwrap();
            prop_assert_eq!(combined.value, plaintext);
            prop_assert_eq!(combined.faulty, vec![culprit_id]);
        }
    }

    #[test]
    fn random_bytes_never_panic_on_decode(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Ciphertext::from_bytes(&bytes);
        let _ = DecryptionShare::from_bytes(&bytes);
        let _ = SecretKeyShare::from_bytes(&bytes);
        let _ = PublicKey::from_bytes(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic_and_never_pass(
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        seed in any::<u64>(),
    ) {
        let (public, secrets, mut rng) = dealt(2, 4, seed);
        let ciphertext = public.encrypt(&LABEL, b"mutate me", &mut rng).unwrap();
        let share = secrets[3].decryption_share(&LABEL, &ciphertext, &mut rng).unwrap();

        let mut bytes = ciphertext.to_bytes();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(mutated) = Ciphertext::from_bytes(&bytes) {
            prop_assert!(mutated == ciphertext || public.verify_ciphertext(&LABEL, &mutated).is_err());
        }

        let mut bytes = share.to_bytes();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(mutated) = DecryptionShare::from_bytes(&bytes) {
            prop_assert!(mutated == share || public.verify_share(&LABEL, &ciphertext, &mutated).is_err());
        }

        let mut bytes = secrets[0].to_bytes();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        let _ = SecretKeyShare::from_bytes(&bytes);

        let original = public.to_bytes();
        let mut bytes = original.clone();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(mutated) = PublicKey::from_bytes(&bytes) {
            prop_assert!(bytes == original || (at < 2 && mutated.threshold() > public.threshold()));
        }
    }
}

#[test]
fn a_ciphertext_altered_in_any_byte_is_refused() {
    let (public, secrets, mut rng) = dealt(2, 3, 21);
    let ciphertext = public.encrypt(&LABEL, b"short", &mut rng).unwrap();
    let shares = all_shares(&secrets, &LABEL, &ciphertext, &mut rng);
    let encoded = ciphertext.to_bytes();
    assert_eq!(encoded.len(), 4 * 32 + 4 + 5 + tdh2::TAG_BYTES);
    let mut decoded = 0;
    for at in 0..encoded.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = encoded.clone();
            bytes[at] ^= mask;
            let Ok(mutated) = Ciphertext::from_bytes(&bytes) else {
                continue;
            };
            decoded += 1;
            assert_ne!(mutated, ciphertext);
            assert_refused(&public, &secrets, &LABEL, &mutated, &shares, &mut rng);
        }
    }
    // Every byte of the scalars and of the sealed plaintext decodes when altered; the
    // validity proof caught those.
    assert!(decoded > 3 * (2 * 32 + 5 + 16) - 10, "{decoded}");
}

#[test]
fn a_ciphertext_under_another_label_is_refused() {
    let (public, secrets, mut rng) = dealt(3, 4, 22);
    let ciphertext = public
        .encrypt(&LABEL, b"for one label only", &mut rng)
        .unwrap();
    let shares = all_shares(&secrets, &LABEL, &ciphertext, &mut rng);
    for label in [
        OTHER_INSTANCE,
        OTHER_PURPOSE,
        Context::new("", b""),
        Context::new("scabc/request", b""),
    ] {
        assert_refused(&public, &secrets, &label, &ciphertext, &shares, &mut rng);
        // Shares made for the right label do not verify under the wrong one either.
        assert!(
            public
                .verify_share(&label, &ciphertext, &shares[0])
                .is_err()
        );
    }
    assert_eq!(
        decrypt(&public, &LABEL, &ciphertext, &shares[1..]),
        b"for one label only"
    );
}

#[test]
fn a_share_altered_in_any_byte_is_rejected_or_named() {
    let (public, secrets, mut rng) = dealt(2, 4, 23);
    let ciphertext = public.encrypt(&LABEL, b"payload", &mut rng).unwrap();
    let shares = all_shares(&secrets, &LABEL, &ciphertext, &mut rng);
    let encoded = shares[0].to_bytes();
    assert_eq!(encoded.len(), tdh2::DECRYPTION_SHARE_BYTES);
    let mut decoded = 0;
    for at in 0..encoded.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = encoded.clone();
            bytes[at] ^= mask;
            let Ok(mutated) = DecryptionShare::from_bytes(&bytes) else {
                continue;
            };
            decoded += 1;
            assert!(public.verify_share(&LABEL, &ciphertext, &mutated).is_err());
            if mutated.id() == shares[0].id() {
                let combined = public
                    .combine(
                        &LABEL,
                        &ciphertext,
                        &[mutated, shares[1].clone(), shares[2].clone()],
                    )
                    .unwrap();
                assert_eq!(combined.value, b"payload");
                assert_eq!(combined.faulty, vec![id(1)]);
            }
        }
    }
    assert!(decoded > 100, "{decoded}");
}

#[test]
fn duplicates_and_non_members_are_refused() {
    let (public, secrets, mut rng) = dealt(2, 4, 24);
    let ciphertext = public.encrypt(&LABEL, b"x", &mut rng).unwrap();
    let shares = all_shares(&secrets, &LABEL, &ciphertext, &mut rng);
    assert_eq!(
        public.combine(
            &LABEL,
            &ciphertext,
            &[shares[1].clone(), shares[1].clone(), shares[0].clone()]
        ),
        Err(CombineError::DuplicateShare(id(2)))
    );
    let (_, big_secrets, mut big_rng) = dealt(2, 9, 25);
    let outsider = big_secrets[8]
        .decryption_share(&LABEL, &ciphertext, &mut big_rng)
        .unwrap();
    assert_eq!(
        public.verify_share(&LABEL, &ciphertext, &outsider),
        Err(CryptoError::UnknownServer(id(9)))
    );
    assert_eq!(
        public.combine(
            &LABEL,
            &ciphertext,
            &[outsider, shares[0].clone(), shares[1].clone()]
        ),
        Err(CombineError::UnknownServer(id(9)))
    );
}

#[test]
fn large_groups_decrypt_and_name_every_culprit_met() {
    for (n, k) in [(64usize, 22usize), (64, 64), (64, 1), (40, 27)] {
        let (public, secrets, mut rng) = dealt(k, n, n as u64 * 1000 + k as u64);
        let plaintext = vec![n as u8; 250];
        let ciphertext = public.encrypt(&LABEL, &plaintext, &mut rng).unwrap();
        let other = public.encrypt(&LABEL, &plaintext, &mut rng).unwrap();
        let mut shares = all_shares(&secrets, &LABEL, &ciphertext, &mut rng);
        shares.shuffle(&mut rng);
        assert_eq!(
            decrypt(&public, &LABEL, &ciphertext, &shares[..k]),
            plaintext
        );
        if n >= k + 3 {
            for share in shares.iter_mut().take(3) {
                *share = secrets[share.id().slot()]
                    .decryption_share(&LABEL, &other, &mut rng)
                    .unwrap();
            }
            let mut expected: Vec<ServerId> = shares[..3].iter().map(DecryptionShare::id).collect();
            let combined = public
                .combine(&LABEL, &ciphertext, &shares[..k + 3])
                .unwrap();
            assert_eq!(combined.value, plaintext);
            let mut faulty = combined.faulty;
            faulty.sort();
            expected.sort();
            assert_eq!(faulty, expected);
        }
    }
}

#[test]
fn plaintext_size_limits_hold_at_the_boundary() {
    let (public, secrets, mut rng) = dealt(1, 2, 26);
    let empty = public.encrypt(&LABEL, b"", &mut rng).unwrap();
    let shares = all_shares(&secrets[..1], &LABEL, &empty, &mut rng);
    assert_eq!(decrypt(&public, &LABEL, &empty, &shares), b"");

    let largest = vec![0xa5u8; PLAINTEXT_BYTES_MAX];
    let ciphertext = public.encrypt(&LABEL, &largest, &mut rng).unwrap();
    let encoded = ciphertext.to_bytes();
    let decoded = Ciphertext::from_bytes(&encoded).unwrap();
    assert_eq!(decoded, ciphertext);
    let shares = all_shares(&secrets[1..], &LABEL, &decoded, &mut rng);
    assert_eq!(decrypt(&public, &LABEL, &decoded, &shares), largest);

    assert!(matches!(
        public.encrypt(&LABEL, &vec![0u8; PLAINTEXT_BYTES_MAX + 1], &mut rng),
        Err(CryptoError::InvalidParameters(_))
    ));
    // A length prefix one beyond the maximum is refused before anything is read or allocated.
    let mut too_long = encoded[..128].to_vec();
    too_long.extend_from_slice(&((PLAINTEXT_BYTES_MAX + tdh2::TAG_BYTES + 1) as u32).to_be_bytes());
    assert!(matches!(
        Ciphertext::from_bytes(&too_long),
        Err(DecodeError::TooLong { .. })
    ));
    // A sealed plaintext shorter than the tag cannot be a ciphertext.
    let mut too_short = encoded[..128].to_vec();
    too_short.extend_from_slice(&15u32.to_be_bytes());
    too_short.extend_from_slice(&[0; 15]);
    assert!(Ciphertext::from_bytes(&too_short).is_err());
}

#[test]
fn encodings_round_trip_in_binary_toml_and_json() {
    #[derive(Serialize, Deserialize)]
    struct Config {
        public: PublicKey,
        secret: SecretKeyShare,
        ciphertext: Ciphertext,
        share: DecryptionShare,
    }
    let (public, mut secrets, mut rng) = dealt(2, 5, 27);
    let ciphertext = public.encrypt(&LABEL, b"round trip", &mut rng).unwrap();
    let share = secrets[4]
        .decryption_share(&LABEL, &ciphertext, &mut rng)
        .unwrap();
    let secret = secrets.swap_remove(4);
    assert_eq!(PublicKey::from_bytes(&public.to_bytes()).unwrap(), public);
    assert_eq!(
        Ciphertext::from_bytes(&ciphertext.to_bytes()).unwrap(),
        ciphertext
    );
    assert_eq!(
        DecryptionShare::from_bytes(&share.to_bytes()).unwrap(),
        share
    );
    assert_eq!(
        SecretKeyShare::from_bytes(&secret.to_bytes())
            .unwrap()
            .to_bytes(),
        secret.to_bytes()
    );

    let config = Config {
        public: public.clone(),
        secret,
        ciphertext: ciphertext.clone(),
        share: share.clone(),
    };
    let toml_text = toml::to_string(&config).unwrap();
    let json_text = serde_json::to_string(&config).unwrap();
    for back in [
        toml::from_str::<Config>(&toml_text).unwrap(),
        serde_json::from_str::<Config>(&json_text).unwrap(),
    ] {
        assert_eq!(back.public, public);
        assert_eq!(back.ciphertext, ciphertext);
        assert_eq!(back.share, share);
        assert_eq!(back.secret.id(), id(5));
        let fresh = back
            .secret
            .decryption_share(&LABEL, &back.ciphertext, &mut rng)
            .unwrap();
        assert_eq!(
            back.public.verify_share(&LABEL, &ciphertext, &fresh),
            Ok(())
        );
        assert_eq!(
            decrypt(
                &public,
                &LABEL,
                &ciphertext,
                &[
                    fresh,
                    secrets[0]
                        .decryption_share(&LABEL, &ciphertext, &mut rng)
                        .unwrap()
                ]
            ),
            b"round trip"
        );
    }
}

#[test]
fn deal_refuses_impossible_parameters_and_debug_hides_secrets() {
    let mut rng = ChaCha20Rng::seed_from_u64(28);
    for (k, n) in [(0, 4), (5, 4), (1, 0), (3, 1025)] {
        assert!(matches!(
            tdh2::deal(k, n, &mut rng),
            Err(CryptoError::InvalidParameters(_))
        ));
    }
    let (public, secrets, mut rng) = dealt(1, 2, 29);
    let secret_hex = hex::encode(&secrets[1].to_bytes()[2..]);
    let shown = format!("{:?}", secrets[1]);
    assert!(!shown.contains(&secret_hex[..16]), "{shown}");
    // Nor does a ciphertext's Debug print its sealed bytes.
    let ciphertext = public.encrypt(&LABEL, &[7u8; 64], &mut rng).unwrap();
    assert!(format!("{ciphertext:?}").len() < 600);
}
