//! Shoup threshold RSA with a 2048-bit modulus, per operation, for groups of n = 4, 16, 64
//! with k = t + 1 (t = (n - 1) / 3). The baseline is one constant-time 2048-bit modular
//! exponentiation with a 2048-bit exponent in the same big-integer library; a signature share
//! should cost little more (its exponent is 2Δs_i, about 2048 + log2(n!) bits).
//!
//! Before the benchmarks, the safe-prime search for a 2048-bit modulus is timed three times.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sintra_crypto::Context;
use sintra_crypto::rsa::{SignatureShare, deal, generate_primes};

const MODULUS_BITS: u32 = 2048;
const PRIME_SEARCH_RUNS: u64 = 3;

fn bench_rsa(c: &mut Criterion) {
    let mut primes = None;
    for run in 0..PRIME_SEARCH_RUNS {
        let start = Instant::now();
        let found = generate_primes(
            MODULUS_BITS,
            &mut ChaCha20Rng::seed_from_u64(run),
            &mut |_| {},
        )
        .expect("primes");
        eprintln!(
            "generate_primes({MODULUS_BITS}) run {run}: {:.2?}",
            start.elapsed()
        );
        primes = Some(found);
    }
    let primes = primes.expect("at least one run");
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let ctx = Context::new("bench/rsa", b"instance");
    let message = b"a request answer to be signed by the service";

    let (public, _) = deal(&primes, 1, 1, &mut rng).expect("deal");
    let modulus = BoxedUint::from_be_slice(&public.modulus_be_bytes(), MODULUS_BITS).expect("N");
    let params = BoxedMontyParams::new_vartime(Odd::new(modulus).expect("odd N"));
    let mut bytes = [0u8; 256];
    rng.fill_bytes(&mut bytes);
    let base = BoxedMontyForm::new(
        BoxedUint::from_be_slice(&bytes, MODULUS_BITS).expect("x"),
        &params,
    );
    rng.fill_bytes(&mut bytes);
    let exponent = BoxedUint::from_be_slice(&bytes, MODULUS_BITS).expect("exponent");
    c.bench_function("rsa2048/modexp_baseline", |b| {
        b.iter(|| base.pow(&exponent))
    });

    for n in [4usize, 16, 64] {
        let k = (n - 1) / 3 + 1;
        let (public, secrets) = deal(&primes, k, n, &mut rng).expect("deal");
        let shares: Vec<SignatureShare> =
            secrets.iter().map(|s| s.sign(&public, message)).collect();
        let with_proofs: Vec<_> = secrets
            .iter()
            .zip(&shares)
            .map(|(s, share)| {
                (
                    share.clone(),
                    s.prove(&public, &ctx, message, share, &mut rng),
                )
            })
            .collect();
        let signature = public.combine(message, &shares[..k]).expect("combine");
        // One bad share first, then k good ones.
        let mut with_bad = with_proofs[..=k].to_vec();
        let mut value = with_bad[0].0.value_be_bytes().to_vec();
        value[10] ^= 1;
        with_bad[0].0 = SignatureShare::from_parts(with_bad[0].0.id(), value).expect("share");

        let combined = public
            .combine_with_proofs(&ctx, message, &with_bad)
            .expect("k valid shares remain");
        assert_eq!(combined.faulty, vec![with_bad[0].0.id()]);
        assert_eq!(combined.value, signature);

        let mut group = c.benchmark_group("rsa2048");
        group.bench_with_input(BenchmarkId::new("share_sign", n), &n, |b, _| {
            b.iter(|| secrets[0].sign(&public, message))
        });
        group.bench_with_input(BenchmarkId::new("share_prove", n), &n, |b, _| {
            b.iter(|| secrets[0].prove(&public, &ctx, message, &shares[0], &mut rng))
        });
        group.bench_with_input(
            BenchmarkId::new("share_verify_with_proof", n),
            &n,
            |b, _| {
                b.iter(|| public.verify_share(&ctx, message, &with_proofs[0].0, &with_proofs[0].1))
            },
        );
        group.bench_with_input(BenchmarkId::new("combine_optimistic", n), &n, |b, _| {
            b.iter(|| public.combine(message, &shares[..k]))
        });
        group.bench_with_input(
            BenchmarkId::new("combine_with_proofs_one_bad", n),
            &n,
            |b, _| b.iter(|| public.combine_with_proofs(&ctx, message, &with_bad)),
        );
        group.bench_with_input(BenchmarkId::new("verify", n), &n, |b, _| {
            b.iter(|| public.verify(message, &signature))
        });
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_rsa
}
criterion_main!(benches);
