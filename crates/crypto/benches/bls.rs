//! Threshold BLS costs per operation for n = 4, 16, 64 servers with threshold k = n − t,
//! t = ⌊(n − 1) / 3⌋ (the agreement threshold). Run single-core for the figures in
//! docs/crypto/bls.md: `taskset -c 0 cargo bench -p sintra-crypto --bench bls` (blst spreads
//! multi-scalar multiplications over all cores it may use).
//!
//! A message hashed to G1 is remembered (`bls/cache.rs`), so every benchmark below that reuses
//! `MESSAGE` measures a remembered hash — as in the protocols, where a statement is hashed once
//! per server and then signed, combined and verified — except `sign_fresh_message`, which signs
//! a new message each time (the hash included).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::Context;
use sintra_crypto::bls::{self, SignatureShare};

const GROUP_SIZES: [usize; 3] = [4, 16, 64];
const MESSAGE: &[u8] = b"batch 17 of epoch 3: 512 requests";

fn bench_bls(c: &mut Criterion) {
    let ctx = Context::new("abc/commit", b"abc/epoch 3/mvba/candidate 2");
    let mut group = c.benchmark_group("bls");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for n in GROUP_SIZES {
        let t = (n - 1) / 3;
        let k = n - t;
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let (keys, secrets) = bls::deal(k, n, &mut rng).expect("valid parameters");
        let shares: Vec<SignatureShare> = secrets.iter().map(|s| s.sign(&ctx, MESSAGE)).collect();
        let quorum = &shares[..k];
        let signature = keys
            .combine(&ctx, MESSAGE, quorum)
            .expect("valid shares")
            .value;
        // One bad share first, so the optimistic attempt fails; k + 1 shares leave k valid.
        let mut with_bad: Vec<SignatureShare> = shares[..=k].to_vec();
        with_bad[0] = secrets[0].sign(&ctx, b"another message");

        let label = format!("n={n},k={k}");
        group.bench_function(BenchmarkId::new("sign", &label), |b| {
            b.iter(|| secrets[0].sign(&ctx, MESSAGE))
        });
        let mut counter = 0u64;
        group.bench_function(BenchmarkId::new("sign_fresh_message", &label), |b| {
            b.iter_batched(
                || {
                    counter += 1;
                    format!("fresh message {n} {counter}").into_bytes()
                },
                |message| secrets[0].sign(&ctx, &message),
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("verify_share", &label), |b| {
            b.iter(|| keys.verify_share(&ctx, MESSAGE, &shares[0]))
        });
        group.bench_function(BenchmarkId::new("combine", &label), |b| {
            b.iter(|| keys.combine(&ctx, MESSAGE, quorum))
        });
        group.bench_function(BenchmarkId::new("combine_one_bad", &label), |b| {
            b.iter(|| keys.combine(&ctx, MESSAGE, &with_bad))
        });
        group.bench_function(BenchmarkId::new("verify", &label), |b| {
            b.iter(|| keys.verify(&ctx, MESSAGE, &signature))
        });
        group.bench_function(BenchmarkId::new("find_invalid_shares", &label), |b| {
            b.iter(|| keys.find_invalid_shares(&ctx, MESSAGE, quorum))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_bls);
criterion_main!(benches);
