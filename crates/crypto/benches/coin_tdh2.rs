//! Costs of the threshold coin and of TDH2 on ristretto255, single core, for groups of
//! `n = 4, 16, 64` with threshold `k = t + 1`, `t = (n - 1) / 3`:
//! share creation, one share check, combining `k` shares (all checked in one batch), combining
//! with one bad share among `k + 1` (the batch fails, then shares are checked one by one), and
//! for TDH2 also encryption of 250 bytes and the public ciphertext check. `key set decode` is
//! the cost of loading a public key set (it includes the consistency check).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::{Context, Decode, Encode, coin, tdh2};

const GROUP_SIZES: [usize; 3] = [4, 16, 64];

fn threshold(n: usize) -> usize {
    (n - 1) / 3 + 1
}

fn coin_benches(c: &mut Criterion) {
    let name = Context::new("aba/coin", b"abc/epoch 1/mvba/aba/round 1");
    let other = Context::new("aba/coin", b"abc/epoch 1/mvba/aba/round 2");
    let mut group = c.benchmark_group("coin");
    for n in GROUP_SIZES {
        let k = threshold(n);
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let (public, secrets) = coin::deal(k, n, &mut rng).unwrap();
        let shares: Vec<_> = secrets.iter().map(|s| s.share(&name, &mut rng)).collect();
        let mut with_bad = shares[..=k.min(n - 1)].to_vec();
        with_bad[0] = secrets[0].share(&other, &mut rng);
        let label = format!("n={n} k={k}");

        group.bench_function(BenchmarkId::new("share", &label), |b| {
            b.iter(|| secrets[0].share(&name, &mut rng))
        });
        group.bench_function(BenchmarkId::new("verify_share", &label), |b| {
            b.iter(|| public.verify_share(&name, &shares[0]).unwrap())
        });
        group.bench_function(BenchmarkId::new("combine", &label), |b| {
            b.iter(|| public.combine(&name, &shares[..k]).unwrap())
        });
        if n > k {
            group.bench_function(BenchmarkId::new("combine_one_bad", &label), |b| {
                b.iter(|| {
                    let combined = public.combine(&name, &with_bad).unwrap();
                    assert_eq!(combined.faulty.len(), 1);
                })
            });
        }
        let encoded = public.to_bytes();
        group.bench_function(BenchmarkId::new("key_set_decode", &label), |b| {
            b.iter(|| coin::PublicKeySet::from_bytes(&encoded).unwrap())
        });
    }
    group.finish();
}

fn tdh2_benches(c: &mut Criterion) {
    let label = Context::new("scabc/request", b"scabc/epoch 3/client 17/request 9");
    let plaintext = [0x5au8; 250];
    let mut group = c.benchmark_group("tdh2");
    for n in GROUP_SIZES {
        let k = threshold(n);
        let mut rng = ChaCha20Rng::seed_from_u64(100 + n as u64);
        let (public, secrets) = tdh2::deal(k, n, &mut rng).unwrap();
        let ciphertext = public.encrypt(&label, &plaintext, &mut rng).unwrap();
        let other = public.encrypt(&label, &plaintext, &mut rng).unwrap();
        let shares: Vec<_> = secrets
            .iter()
            .map(|s| s.decryption_share(&label, &ciphertext, &mut rng).unwrap())
            .collect();
        let mut with_bad = shares[..=k.min(n - 1)].to_vec();
        with_bad[0] = secrets[0]
            .decryption_share(&label, &other, &mut rng)
            .unwrap();
        let id = format!("n={n} k={k}");

        group.bench_function(BenchmarkId::new("encrypt_250B", &id), |b| {
            b.iter(|| public.encrypt(&label, &plaintext, &mut rng).unwrap())
        });
        group.bench_function(BenchmarkId::new("verify_ciphertext", &id), |b| {
            b.iter(|| public.verify_ciphertext(&label, &ciphertext).unwrap())
        });
        group.bench_function(BenchmarkId::new("decryption_share", &id), |b| {
            b.iter(|| {
                secrets[0]
                    .decryption_share(&label, &ciphertext, &mut rng)
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("verify_share", &id), |b| {
            b.iter(|| {
                public
                    .verify_share(&label, &ciphertext, &shares[0])
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("combine", &id), |b| {
            b.iter(|| public.combine(&label, &ciphertext, &shares[..k]).unwrap())
        });
        if n > k {
            group.bench_function(BenchmarkId::new("combine_one_bad", &id), |b| {
                b.iter(|| {
                    let combined = public.combine(&label, &ciphertext, &with_bad).unwrap();
                    assert_eq!(combined.faulty.len(), 1);
                })
            });
        }
    }
    group.finish();
}

/// The primitives the schemes are built from, to read the figures above against (and to see
/// how loaded the machine was).
fn baseline_benches(c: &mut Criterion) {
    use curve25519_dalek::{RistrettoPoint, Scalar};
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let point = RistrettoPoint::random(&mut rng);
    let scalar = Scalar::random(&mut rng);
    let mut group = c.benchmark_group("ristretto255");
    group.bench_function("scalar_mult", |b| b.iter(|| point * scalar));
    group.bench_function("compress", |b| b.iter(|| point.compress()));
    group.bench_function("hash_to_group", |b| {
        b.iter(|| RistrettoPoint::hash_from_bytes::<sha2::Sha512>(b"aba/coin round 1"))
    });
    group.finish();
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
    targets = baseline_benches, coin_benches, tdh2_benches
}
criterion_main!(benches);
