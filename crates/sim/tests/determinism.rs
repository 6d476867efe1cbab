//! Determinism: a run is a function of its configuration. The same seed gives the same trace
//! (every delivered message, output and fault, hashed), on one thread or many, with cached or
//! freshly dealt keys; different seeds give different traces.

mod support;

use std::collections::BTreeSet;

use sintra_sim::batch::{AdversaryChoice, run_seeds};
use sintra_sim::keys::KeySource;
use sintra_sim::{Adversary, RunConfig, run};
use support::EchoQuorum;

const ADVERSARIES: [&str; 7] = [
    "random",
    "partition",
    "equivocate+targeted",
    "random-bytes+fifo",
    "replay+random",
    "invalid-crypto+partition",
    "flood+random",
];

#[test]
fn same_seed_gives_the_same_trace() {
    for (i, name) in ADVERSARIES.iter().enumerate() {
        let config = RunConfig::new(4, 100 + i as u64, Adversary::parse(name).unwrap());
        let first = run(&EchoQuorum::default(), &config).unwrap();
        let second = run(&EchoQuorum::default(), &config).unwrap();
        assert_eq!(first.trace_hash, second.trace_hash, "{name}");
        assert_eq!(first.metrics, second.metrics, "{name}");
        assert_eq!(first.violations, second.violations, "{name}");
        assert!(first.metrics.deliveries > 0, "{name}");
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let adversary = Adversary::parse("equivocate+random").unwrap();
    let hashes: BTreeSet<[u8; 32]> = (0..12)
        .map(|seed| {
            run(&EchoQuorum::default(), &RunConfig::new(4, seed, adversary))
                .unwrap()
                .trace_hash
        })
        .collect();
    assert_eq!(hashes.len(), 12);
}

#[test]
fn threads_do_not_change_runs() {
    let adversary = Adversary::parse("random").unwrap();
    let all = AdversaryChoice::Spread(Adversary::all(
        &sintra_sim::Strategy::ALL,
        &[
            sintra_sim::NetworkKind::Random,
            sintra_sim::NetworkKind::Partition,
        ],
    ));
    let template = RunConfig::new(4, 0, adversary);
    let parallel = run_seeds(&EchoQuorum::default(), &template, 0..12, &all, 3).unwrap();
    assert_eq!(parallel.len(), 12);
    for outcome in &parallel {
        let alone = run(&EchoQuorum::default(), &outcome.config).unwrap();
        assert_eq!(
            alone.trace_hash, outcome.trace_hash,
            "seed {}",
            outcome.config.seed
        );
    }
}

#[test]
fn fresh_keys_are_reproducible_and_differ_from_cached_ones() {
    let mut config = RunConfig::new(4, 7, Adversary::parse("random").unwrap());
    config.keys = KeySource::PerSeed;
    let fresh = run(&EchoQuorum::default(), &config).unwrap();
    assert_eq!(
        fresh.trace_hash,
        run(&EchoQuorum::default(), &config).unwrap().trace_hash
    );
    config.keys = KeySource::Cached;
    assert_ne!(
        fresh.trace_hash,
        run(&EchoQuorum::default(), &config).unwrap().trace_hash
    );
}
