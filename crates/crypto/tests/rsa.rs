//! Shoup threshold RSA produces ordinary RSASSA-PKCS1-v1_5 / SHA-256 signatures: any `k` valid
//! shares of a `k`-of-`n` group combine into one and the same signature, which our verifier, the
//! RustCrypto `rsa` crate and `openssl dgst -verify` accept; `k - 1` shares are refused; a bad
//! share makes the optimistic combine fail and is named by the proof-checking combine; a proof
//! binds its message, its context and its share; every encoding roundtrips, and no byte string
//! makes a decoder (or a use of what it decoded) panic.
//!
//! Real cryptography throughout: one 1024-bit modulus serves the property tests over many
//! `(n, k)`, one 2048-bit key the interoperability tests.

use std::sync::OnceLock;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sintra_crypto::rsa::{
    MODULUS_BITS_ALLOWED, Primes, PublicKey, SecretKeyShare, ShareProof, Signature, SignatureShare,
    deal, generate_primes,
};
use sintra_crypto::{CombineError, Context, CryptoError, Decode, Encode, ServerId};

const CTX: Context<'static> = Context {
    purpose: "test/rsa",
    instance: b"instance 1",
};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// One 1024-bit modulus (safe primes) for all property tests.
fn primes_1024() -> &'static Primes {
    static PRIMES: OnceLock<Primes> = OnceLock::new();
    PRIMES.get_or_init(|| {
        generate_primes(1024, &mut rng(1024), &mut |_| {}).expect("1024-bit primes")
    })
}

/// One 2048-bit key, 2-of-4, for the interoperability tests.
fn key_2048() -> &'static (PublicKey, Vec<SecretKeyShare>) {
    static KEY: OnceLock<(PublicKey, Vec<SecretKeyShare>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut lines = Vec::new();
        let primes = generate_primes(MODULUS_BITS_ALLOWED[0], &mut rng(2048), &mut |line| {
            lines.push(line.to_string())
        })
        .expect("2048-bit primes");
        assert_eq!(
            lines.len(),
            4,
            "progress reports each search's start and end"
        );
        deal(&primes, 2, 4, &mut rng(2049)).expect("deal 2-of-4")
    })
}

fn group(k: usize, n: usize, seed: u64) -> (PublicKey, Vec<SecretKeyShare>) {
    deal(primes_1024(), k, n, &mut rng(seed)).expect("deal")
}

fn sign_all(public: &PublicKey, secrets: &[SecretKeyShare], message: &[u8]) -> Vec<SignatureShare> {
    secrets.iter().map(|s| s.sign(public, message)).collect()
}

fn prove_all(
    public: &PublicKey,
    secrets: &[SecretKeyShare],
    message: &[u8],
    shares: &[SignatureShare],
    seed: u64,
) -> Vec<(SignatureShare, ShareProof)> {
    let mut rng = rng(seed);
    secrets
        .iter()
        .zip(shares)
        .map(|(secret, share)| {
            let proof = secret.prove(public, &CTX, message, share, &mut rng);
            (share.clone(), proof)
        })
        .collect()
}

fn id(index: u16) -> ServerId {
    ServerId::new(index).expect("server id")
}

/// A share with the same id but a wrong value in range: `x_i · 2 mod N` (almost never `x_i`).
fn corrupt(public: &PublicKey, share: &SignatureShare) -> SignatureShare {
    let modulus = public.modulus_be_bytes();
    let mut value = share.value_be_bytes().to_vec();
    // Add 1 to the low byte and keep it below N: N is odd and fills its top byte.
    let last = value.len() - 1;
    value[last] = value[last].wrapping_add(1);
    if value >= modulus || value.iter().all(|b| *b == 0) {
        value[last] = value[last].wrapping_sub(2);
    }
    SignatureShare::from_parts(share.id(), value).expect("share")
}

fn rustcrypto_key(public: &PublicKey) -> rsa::RsaPublicKey {
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&public.modulus_be_bytes()),
        rsa::BigUint::from(public.public_exponent()),
    )
    .expect("RSA public key")
}

fn rustcrypto_verify(key: rsa::RsaPublicKey, message: &[u8], signature: &Signature) -> bool {
    use rsa::signature::Verifier;
    let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
    let Ok(signature) = rsa::pkcs1v15::Signature::try_from(signature.as_bytes()) else {
        return false;
    };
    verifier.verify(message, &signature).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 14, ..ProptestConfig::default() })]

    #[test]
    fn any_k_shares_give_the_same_signature_which_verifies(
        n in 1usize..=20,
        k_fraction in 0.0f64..=1.0,
        seed in any::<u64>(),
        message in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let k = 1 + ((n - 1) as f64 * k_fraction).round() as usize;
        let (public, secrets) = group(k, n, seed);
        prop_assert_eq!(public.threshold(), k);
        prop_assert_eq!(usize::from(public.servers()), n);
        let shares = sign_all(&public, &secrets, &message);
        let mut order = shares.clone();
        order.shuffle(&mut rng(seed ^ 1));
        let first = public.combine(&message, &order[..k]).expect("combine");
        order.shuffle(&mut rng(seed ^ 2));
        let second = public.combine(&message, &order[..k]).expect("combine");
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(first.as_bytes().len(), 128);
        prop_assert!(public.verify(&message, &first).is_ok());
        prop_assert!(rustcrypto_verify(rustcrypto_key(&public), &message, &first));
        prop_assert_eq!(
            public.verify(b"another message", &first),
            Err(CryptoError::InvalidSignature)
        );
        if k > 1 {
            prop_assert_eq!(
                public.combine(&message, &order[..k - 1]),
                Err(CombineError::NotEnoughShares { needed: k, given: k - 1 })
            );
        }
    }

    #[test]
    fn a_bad_share_fails_combine_and_is_named_by_combine_with_proofs(
        n in 2usize..=16,
        k_fraction in 0.0f64..=1.0,
        bad_slot_fraction in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let k = 1 + ((n - 1) as f64 * k_fraction).round() as usize;
        let (public, secrets) = group(k, n, seed);
        let message = b"request 42";
        let mut shares = sign_all(&public, &secrets, message);
        let mut with_proofs = prove_all(&public, &secrets, message, &shares, seed);
        let bad = (bad_slot_fraction * k as f64) as usize; // among the first k
        let culprit = shares[bad].id();
        shares[bad] = corrupt(&public, &shares[bad]);
        with_proofs[bad].0 = shares[bad].clone();

        prop_assert_eq!(
            public.combine(message, &shares[..k]),
            Err(CombineError::Crypto(CryptoError::InvalidSignature))
        );
        prop_assert_eq!(
            public.verify_share(&CTX, message, &with_proofs[bad].0, &with_proofs[bad].1),
            Err(CryptoError::InvalidShare(culprit))
        );
        if k < n {
            let combined = public.combine_with_proofs(&CTX, message, &with_proofs).expect("k valid remain");
            prop_assert_eq!(&combined.faulty, &vec![culprit]);
            prop_assert!(public.verify(message, &combined.value).is_ok());
            let optimistic = public
                .combine(message, &shares.iter().filter(|s| s.id() != culprit).cloned().collect::<Vec<_>>())
                .expect("valid shares");
            prop_assert_eq!(combined.value, optimistic);
        } else {
            prop_assert_eq!(
                public.combine_with_proofs(&CTX, message, &with_proofs),
                Err(CombineError::NotEnoughValidShares { needed: k, valid: k - 1, faulty: vec![culprit] })
            );
        }
    }
}

#[test]
fn edge_groups_sign_and_verify() {
    for (k, n) in [(1, 1), (1, 20), (20, 20), (7, 20), (2, 2)] {
        let (public, secrets) = group(k, n, (k * 100 + n) as u64);
        let message = format!("edge {k} of {n}");
        let shares = sign_all(&public, &secrets, message.as_bytes());
        let from_first = public
            .combine(message.as_bytes(), &shares[..k])
            .expect("first k");
        let from_last = public
            .combine(message.as_bytes(), &shares[n - k..])
            .expect("last k");
        assert_eq!(from_first, from_last, "k = {k}, n = {n}");
        assert!(public.verify(message.as_bytes(), &from_first).is_ok());
        let with_proofs = prove_all(&public, &secrets, message.as_bytes(), &shares, 5);
        for (share, proof) in &with_proofs {
            assert_eq!(
                public.verify_share(&CTX, message.as_bytes(), share, proof),
                Ok(())
            );
        }
        let combined = public
            .combine_with_proofs(&CTX, message.as_bytes(), &with_proofs)
            .expect("all valid");
        assert!(combined.faulty.is_empty());
        assert_eq!(combined.value, from_first);
    }
}

#[test]
fn proofs_bind_message_context_and_share() {
    let (public, secrets) = group(3, 5, 77);
    let message = b"the document";
    let shares = sign_all(&public, &secrets, message);
    let proofs = prove_all(&public, &secrets, message, &shares, 78);
    let (share, proof) = &proofs[1];
    assert_eq!(public.verify_share(&CTX, message, share, proof), Ok(()));

    let other_ctx = Context::new("test/rsa", b"instance 2");
    assert_eq!(
        public.verify_share(&other_ctx, message, share, proof),
        Err(CryptoError::InvalidShare(id(2)))
    );
    let other_purpose = Context::new("test/other", b"instance 1");
    assert!(
        public
            .verify_share(&other_purpose, message, share, proof)
            .is_err()
    );

    // The same share value presented for another message: the proof does not carry over.
    assert!(
        public
            .verify_share(&CTX, b"another document", share, proof)
            .is_err()
    );
    // A proof made for the other message's share does not vouch for this one.
    let other_share = secrets[1].sign(&public, b"another document");
    let other_proof = secrets[1].prove(
        &public,
        &CTX,
        b"another document",
        &other_share,
        &mut rng(9),
    );
    assert_eq!(
        public.verify_share(&CTX, b"another document", &other_share, &other_proof),
        Ok(())
    );
    assert!(
        public
            .verify_share(&CTX, message, share, &other_proof)
            .is_err()
    );

    // Server 3's proof attached to server 2's share, and a share relabelled with another id.
    assert!(
        public
            .verify_share(&CTX, message, share, &proofs[2].1)
            .is_err()
    );
    let relabelled = SignatureShare::from_parts(id(3), share.value_be_bytes().to_vec()).unwrap();
    assert_eq!(
        public.verify_share(&CTX, message, &relabelled, proof),
        Err(CryptoError::InvalidShare(id(3)))
    );

    // Tampered proofs: every byte of the encoding flipped in turn never verifies.
    let encoded = proof.to_bytes();
    for position in 0..encoded.len() {
        let mut mutated = encoded.clone();
        mutated[position] ^= 0x01;
        if let Ok(mutated) = ShareProof::from_bytes(&mutated) {
            assert!(
                public.verify_share(&CTX, message, share, &mutated).is_err(),
                "mutated proof byte {position} verified"
            );
        }
    }

    // A non-member share is an unknown server, not an invalid share.
    let stranger = SignatureShare::from_parts(id(6), share.value_be_bytes().to_vec()).unwrap();
    assert_eq!(
        public.verify_share(&CTX, message, &stranger, proof),
        Err(CryptoError::UnknownServer(id(6)))
    );
}

#[test]
fn duplicated_and_non_member_shares_are_named() {
    let (public, secrets) = group(2, 3, 5);
    let message = b"m";
    let shares = sign_all(&public, &secrets, message);
    let with_proofs = prove_all(&public, &secrets, message, &shares, 6);

    let duplicated = [shares[0].clone(), shares[0].clone()];
    assert_eq!(
        public.combine(message, &duplicated),
        Err(CombineError::DuplicateShare(id(1)))
    );
    let duplicated = [
        with_proofs[1].clone(),
        with_proofs[0].clone(),
        with_proofs[1].clone(),
    ];
    assert_eq!(
        public.combine_with_proofs(&CTX, message, &duplicated),
        Err(CombineError::DuplicateShare(id(2)))
    );

    let stranger = SignatureShare::from_parts(id(9), shares[1].value_be_bytes().to_vec()).unwrap();
    assert_eq!(
        public.combine(message, &[shares[0].clone(), stranger.clone()]),
        Err(CombineError::UnknownServer(id(9)))
    );
    assert_eq!(
        public.combine_with_proofs(
            &CTX,
            message,
            &[with_proofs[0].clone(), (stranger, with_proofs[1].1.clone())]
        ),
        Err(CombineError::UnknownServer(id(9)))
    );
    assert_eq!(
        public.combine(message, &shares[..1]),
        Err(CombineError::NotEnoughShares {
            needed: 2,
            given: 1
        })
    );
}

#[test]
fn out_of_range_shares_are_named_without_proofs() {
    let (public, secrets) = group(2, 3, 11);
    let message = b"range";
    let shares = sign_all(&public, &secrets, message);
    let len = public.modulus_bytes();
    let zero = SignatureShare::from_parts(id(1), vec![0; len]).unwrap();
    let modulus = SignatureShare::from_parts(id(1), public.modulus_be_bytes()).unwrap();
    let short = SignatureShare::from_parts(id(1), vec![1; len - 1]).unwrap();
    let long = SignatureShare::from_parts(id(1), vec![0; len + 1]).unwrap();
    for bad in [zero, modulus, short, long] {
        assert_eq!(
            public.check_share_range(&bad),
            Err(CryptoError::InvalidShare(id(1)))
        );
        assert_eq!(
            public.combine(message, &[bad, shares[1].clone()]),
            Err(CombineError::Crypto(CryptoError::InvalidShare(id(1))))
        );
    }
    assert_eq!(public.check_share_range(&shares[0]), Ok(()));
}

#[test]
fn digest_level_entry_points_match_the_message_level_ones() {
    let (public, secrets) = group(2, 4, 21);
    let message = b"a large document, hashed by the service itself";
    let digest: [u8; 32] = Sha256::digest(message).into();
    let shares = sign_all(&public, &secrets, message);
    let digest_shares: Vec<_> = secrets
        .iter()
        .map(|s| s.sign_digest(&public, &digest))
        .collect();
    assert_eq!(shares, digest_shares);
    let signature = public
        .combine_digest(&digest, &digest_shares[1..3])
        .unwrap();
    assert_eq!(signature, public.combine(message, &shares[2..4]).unwrap());
    assert_eq!(public.verify_digest(&digest, &signature), Ok(()));
    let proof = secrets[0].prove_digest(&public, &CTX, &digest, &shares[0], &mut rng(1));
    assert_eq!(
        public.verify_share(&CTX, message, &shares[0], &proof),
        Ok(())
    );
    assert_eq!(
        public.verify_share_digest(&CTX, &digest, &shares[0], &proof),
        Ok(())
    );
}

#[test]
fn invalid_parameters_are_refused() {
    for bits in [0, 512, 1022, 1025, 4098, 8192] {
        assert!(matches!(
            generate_primes(bits, &mut rng(1), &mut |_| {}),
            Err(CryptoError::InvalidParameters(_))
        ));
    }
    for (k, n) in [(0, 3), (4, 3), (1, 0), (3, 1025)] {
        assert!(matches!(
            deal(primes_1024(), k, n, &mut rng(1)),
            Err(CryptoError::InvalidParameters(_))
        ));
    }
}

#[test]
fn a_2048_bit_signature_verifies_with_rustcrypto_from_the_modulus_and_from_our_pem() {
    use rsa::pkcs8::DecodePublicKey;
    let (public, secrets) = key_2048();
    assert_eq!(public.modulus_bits(), 2048);
    assert_eq!(public.modulus_be_bytes().len(), 256);
    let message = b"interoperable";
    let shares = sign_all(public, secrets, message);
    let signature = public.combine(message, &shares[2..]).unwrap();
    assert_eq!(signature.as_bytes().len(), 256);
    assert_eq!(public.verify(message, &signature), Ok(()));
    assert!(rustcrypto_verify(
        rustcrypto_key(public),
        message,
        &signature
    ));

    let pem = public.to_public_key_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
    assert!(pem.lines().all(|line| line.len() <= 64));
    let from_pem = rsa::RsaPublicKey::from_public_key_pem(&pem).expect("our PEM parses");
    assert_eq!(from_pem, rustcrypto_key(public));
    assert!(rustcrypto_verify(from_pem.clone(), message, &signature));
    let from_der = rsa::RsaPublicKey::from_public_key_der(&public.to_public_key_der())
        .expect("our DER parses");
    assert_eq!(from_der, from_pem);

    let mut tampered = signature.as_bytes().to_vec();
    tampered[100] ^= 0x40;
    let tampered = Signature::from_raw_bytes(&tampered).unwrap();
    assert!(!rustcrypto_verify(from_pem, message, &tampered));
    assert_eq!(
        public.verify(message, &tampered),
        Err(CryptoError::InvalidSignature)
    );
    assert!(!rustcrypto_verify(
        rustcrypto_key(public),
        b"other",
        &signature
    ));
}

#[test]
fn a_2048_bit_signature_verifies_with_openssl() {
    let (public, secrets) = key_2048();
    let message = b"verified by openssl dgst -sha256 -verify";
    let shares = sign_all(public, secrets, message);
    let signature = public.combine(message, &shares[..2]).unwrap();

    let dir = std::env::temp_dir().join(format!(
        "sintra-rsa-openssl-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, msg, sig) = (dir.join("key.pem"), dir.join("msg"), dir.join("sig"));
    std::fs::write(&key, public.to_public_key_pem()).unwrap();
    std::fs::write(&msg, message).unwrap();
    std::fs::write(&sig, signature.as_bytes()).unwrap();
    let run = |message_path: &std::path::Path| {
        std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&key)
            .arg("-signature")
            .arg(&sig)
            .arg(message_path)
            .output()
            .unwrap_or_else(|err| {
                panic!("this test needs the `openssl` command on PATH (CI installs it): {err}")
            })
    };
    let output = run(&msg);
    let other = dir.join("other");
    std::fs::write(&other, b"not the message").unwrap();
    let rejected = run(&other);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "openssl refused: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "Verified OK"
    );
    assert!(
        !rejected.status.success(),
        "openssl accepted another message"
    );
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Wrapper<T> {
    value: T,
}

fn assert_roundtrips<T>(value: &T)
where
    T: Encode + Decode + Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let bytes = value.to_bytes();
    assert_eq!(&T::from_bytes(&bytes).expect("binary"), value);
    let wrapped = Wrapper { value };
    let json = serde_json::to_string(&wrapped).unwrap();
    assert_eq!(
        &serde_json::from_str::<Wrapper<T>>(&json).unwrap().value,
        value
    );
    let toml = toml::to_string(&wrapped).unwrap();
    assert_eq!(&toml::from_str::<Wrapper<T>>(&toml).unwrap().value, value);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(T::from_bytes(&longer).is_err(), "trailing byte accepted");
    assert!(
        T::from_bytes(&bytes[..bytes.len() - 1]).is_err(),
        "truncation accepted"
    );
}

#[test]
fn encodings_roundtrip_in_binary_json_and_toml() {
    let (public, secrets) = group(3, 4, 31);
    let message = b"encode me";
    let shares = sign_all(&public, &secrets, message);
    let proof = secrets[0].prove(&public, &CTX, message, &shares[0], &mut rng(3));
    let signature = public.combine(message, &shares[..3]).unwrap();
    assert_roundtrips(&public);
    assert_roundtrips(&secrets[2]);
    assert_roundtrips(&shares[1]);
    assert_roundtrips(&proof);
    assert_roundtrips(&signature);

    // A decoded key share signs exactly as the original.
    let decoded = SecretKeyShare::from_bytes(&secrets[2].to_bytes()).unwrap();
    assert_eq!(decoded.sign(&public, message), shares[2]);
    let decoded_public = PublicKey::from_bytes(&public.to_bytes()).unwrap();
    assert_eq!(decoded_public.verify(message, &signature), Ok(()));

    // The secret never shows in Debug output.
    let debug = format!("{:?}", secrets[2]);
    let secret_hex = hex::encode(&secrets[2].to_bytes()[8..]);
    assert!(!debug.contains(&secret_hex[..32]), "{debug}");
    assert!(debug.contains("<secret>"));
}

/// Decodes `bytes` as every type and, when a value comes out, uses it with the key: nothing may
/// panic.
fn decode_and_use(public: &PublicKey, secret: &SecretKeyShare, bytes: &[u8]) {
    let message = b"fuzz";
    if let Ok(key) = PublicKey::from_bytes(bytes) {
        let share = secret.sign(&key, message);
        let _ = key.combine(message, std::slice::from_ref(&share));
        let proof = secret.prove(&key, &CTX, message, &share, &mut rng(0));
        let _ = key.verify_share(&CTX, message, &share, &proof);
        let _ = key.to_public_key_pem();
    }
    if let Ok(share) = SecretKeyShare::from_bytes(bytes) {
        let _ = share.sign(public, message);
    }
    if let Ok(share) = SignatureShare::from_bytes(bytes) {
        let _ = public.check_share_range(&share);
        let _ = public.combine(message, &[share.clone(), share.clone()]);
        let _ = public.combine(message, std::slice::from_ref(&share));
    }
    if let Ok(proof) = ShareProof::from_bytes(bytes) {
        let share = secret.sign(public, message);
        let _ = public.verify_share(&CTX, message, &share, &proof);
    }
    if let Ok(signature) = Signature::from_bytes(bytes) {
        let _ = public.verify(message, &signature);
    }
}

fn fuzz_group() -> &'static (PublicKey, Vec<SecretKeyShare>) {
    static GROUP: OnceLock<(PublicKey, Vec<SecretKeyShare>)> = OnceLock::new();
    GROUP.get_or_init(|| group(2, 3, 41))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let (public, secrets) = fuzz_group();
        decode_and_use(public, &secrets[0], &bytes);
    }

    #[test]
    fn single_byte_mutations_never_panic_a_decoder(
        which in 0usize..5,
        position_fraction in 0.0f64..1.0,
        xor in 1u8..=255,
    ) {
        let (public, secrets) = fuzz_group();
        let message = b"fuzz";
        let share = secrets[1].sign(public, message);
        let encodings = [
            public.to_bytes(),
            secrets[1].to_bytes(),
            share.to_bytes(),
            secrets[1].prove(public, &CTX, message, &share, &mut rng(2)).to_bytes(),
            public.combine(message, &[secrets[0].sign(public, message), share.clone()]).unwrap().to_bytes(),
        ];
        let mut bytes = encodings[which].clone();
        let position = (position_fraction * bytes.len() as f64) as usize;
        bytes[position] ^= xor;
        decode_and_use(public, &secrets[0], &bytes);
    }
}
