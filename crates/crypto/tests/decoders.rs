//! Property: every decoder of the crate, fed random bytes or mutated valid encodings, returns an
//! error or a value that re-encodes to exactly the input — it never panics and never accepts two
//! encodings of one value. This is the seeded, always-run companion of the cargo-fuzz targets in
//! `fuzz/`, and uses the same harness (`sintra_crypto::fuzzing`).

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sintra_crypto::dealer::{self, GroupParameters};
use sintra_crypto::encoding::Encode;
use sintra_crypto::fuzzing::{FAMILIES, Family, decode};
use sintra_crypto::{Context, rsa};

/// Random inputs per family; short inputs are most of them, since that is where length checks bite.
const RANDOM_INPUTS_PER_FAMILY: usize = 4_000;
/// Mutations tried per valid encoding.
const MUTATIONS_PER_ENCODING: usize = 300;

#[test]
fn random_bytes_never_panic_any_decoder() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5EED_DEC0);
    for family in FAMILIES {
        for _ in 0..RANDOM_INPUTS_PER_FAMILY {
            let len = if rng.gen_bool(0.8) {
                rng.gen_range(0..160)
            } else {
                rng.gen_range(0..4_000)
            };
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            decode(family, &data);
        }
    }
}

/// Valid encodings of every type, each with the selector byte of its decoder in `fuzzing`.
fn valid_encodings() -> Vec<(Family, Vec<u8>)> {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let parameters = GroupParameters::new(4, None).unwrap();
    let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
    let (group, servers) =
        dealer::deal_with_primes(parameters, &primes, &mut rng, &mut |_| {}).unwrap();
    let server = &servers[0];
    let ctx = Context::new("test/decoders", b"instance 1");
    let message = b"a message";

    let bls_share = server.agreement.sign(&ctx, message);
    let bls_signature = group
        .agreement
        .combine(
            &ctx,
            message,
            &servers
                .iter()
                .map(|s| s.agreement.sign(&ctx, message))
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .value;
    let coin_share = server.coin.share(&ctx, &mut rng);
    let ciphertext = group.encryption.encrypt(&ctx, message, &mut rng).unwrap();
    let decryption_share = server
        .encryption
        .decryption_share(&ctx, &ciphertext, &mut rng)
        .unwrap();
    let rsa_share = server.service.sign(&group.service, message);
    let rsa_proof = server
        .service
        .prove(&group.service, &ctx, message, &rsa_share, &mut rng);
    let rsa_signature = group
        .service
        .combine(
            message,
            &servers
                .iter()
                .map(|s| s.service.sign(&group.service, message))
                .collect::<Vec<_>>(),
        )
        .unwrap();

    let with = |family: Family, selector: u8, value: &dyn Fn() -> Vec<u8>| {
        let mut data = vec![selector];
        data.extend(value());
        (family, data)
    };
    vec![
        with(Family::Bls, 0, &|| group.agreement.to_bytes()),
        with(Family::Bls, 1, &|| server.agreement.to_bytes()),
        with(Family::Bls, 2, &|| bls_share.to_bytes()),
        with(Family::Bls, 3, &|| bls_signature.to_bytes()),
        with(Family::Coin, 0, &|| group.coin.to_bytes()),
        with(Family::Coin, 1, &|| server.coin.to_bytes()),
        with(Family::Coin, 2, &|| coin_share.to_bytes()),
        with(Family::Tdh2, 0, &|| group.encryption.to_bytes()),
        with(Family::Tdh2, 1, &|| server.encryption.to_bytes()),
        with(Family::Tdh2, 2, &|| ciphertext.to_bytes()),
        with(Family::Tdh2, 3, &|| decryption_share.to_bytes()),
        with(Family::Rsa, 0, &|| group.service.to_bytes()),
        with(Family::Rsa, 1, &|| server.service.to_bytes()),
        with(Family::Rsa, 2, &|| rsa_share.to_bytes()),
        with(Family::Rsa, 3, &|| rsa_proof.to_bytes()),
        with(Family::Rsa, 4, &|| rsa_signature.to_bytes()),
    ]
}

#[test]
fn valid_encodings_decode_and_mutations_never_panic() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x00D1_5EA5);
    for (family, data) in valid_encodings() {
        assert!(
            decode(family, &data),
            "a valid {family:?} encoding did not decode"
        );
        for _ in 0..MUTATIONS_PER_ENCODING {
            let mut mutated = data.clone();
            match rng.gen_range(0..4) {
                0 => {
                    let at = rng.gen_range(1..mutated.len());
                    mutated[at] ^= 1 << rng.gen_range(0..8);
                }
                1 => {
                    let at = rng.gen_range(1..mutated.len());
                    mutated[at] = rng.r#gen();
                }
                2 => mutated.truncate(rng.gen_range(1..data.len())),
                _ => mutated.extend((0..rng.gen_range(1..40)).map(|_| rng.r#gen::<u8>())),
            }
            decode(family, &mutated);
        }
    }
}

/// Found by `cargo fuzz run decode_rsa`: an RSA key share whose modulus size is no multiple of 8
/// (2305 bits) with bits set above it in the top byte was accepted and those bits dropped, so
/// two byte strings decoded to one share. They are refused now.
#[test]
fn a_key_share_with_bits_above_its_modulus_size_is_refused() {
    let crash: &[u8] = &[
        37, 0, 255, 0, 255, 0, 0, 9, 1, 12, 0, 0, 1, 0, 2, 0, 0, 136, 128, 180, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 127, 127, 136, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 128, 128, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 128,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128,
        128, 128, 12, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 128, 128, 0, 0,
        0, 0, 27, 5, 0, 0, 0, 0, 78, 78, 78, 37, 0, 6, 232, 78, 78, 78, 78, 78, 78, 78, 78, 78, 78,
        78, 78, 78, 78, 78, 78, 78, 78, 78, 78, 232, 0, 232, 78, 78, 78, 78, 78, 78, 78, 78, 78,
        128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 0, 0, 0, 0, 0, 6, 43, 192,
        128, 128, 128, 128, 128, 128,
    ];
    // The harness asserts that whatever decodes re-encodes to exactly its input.
    decode(Family::Rsa, crash);
    // And directly: the share itself is refused.
    let share = &crash[1..];
    assert!(
        <rsa::SecretKeyShare as sintra_crypto::encoding::Decode>::from_bytes(share).is_err(),
        "a key share with bits above its modulus size decoded"
    );
}
