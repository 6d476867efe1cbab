//! The mutation self-check: with each deliberate protocol bug of
//! `sintra_protocols::mutation::Mutation` switched on, one of the checkers named for it must
//! fire within 1,000 seeds of the scenarios that expose it (the adversary that attacks exactly
//! that bug). A mutation no checker notices means the simulator has a blind spot. Without the
//! mutation the same scenarios pass, so the detection is the bug's.
//!
//! The switches are compiled in for the simulator's tests (its dev-dependency on
//! `sintra-protocols` enables `mutations`) and are thread-local, so these tests run in every
//! `cargo test` beside the others.

use sintra_protocols::mutation::{Mutation, with_active};
use sintra_sim::adapters::{
    aba::AbaAdapter, cbc::CbcAdapter, mvba::MvbaAdapter, oabc::OabcAdapter, rbc::RbcAdapter,
    scabc::ScabcAdapter,
};
use sintra_sim::{Adversary, Protocol, RunConfig, run};

/// Seeds tried per mutation before giving up.
const SEEDS_MAX: u64 = 1000;

/// Seeds run without the mutation first: none may violate anything.
const CONTROL_SEEDS: u64 = 4;

/// The first seed (and its violation) at which one of the `expected` checkers fires with
/// `mutation` on, cycling through `adversaries` and the group sizes `servers`.
fn first_detection<P: Protocol>(
    adapter: &P,
    mutation: Mutation,
    adversaries: &[&str],
    servers: &[u16],
    expected: &[&str],
) -> Option<(u64, String)> {
    (0..SEEDS_MAX).find_map(|seed| {
        let adversary = Adversary::parse(adversaries[(seed as usize) % adversaries.len()])
            .expect("valid adversary names");
        let n = servers[(seed as usize / adversaries.len()) % servers.len()];
        let config = RunConfig::new(n, seed, adversary);
        let report = with_active(&[mutation], || run(adapter, &config)).unwrap();
        report
            .violations
            .iter()
            .find(|v| expected.contains(&v.checker))
            .map(|v| (seed, format!("{adversary}, n = {n}: {v}")))
    })
}

/// Asserts that one of the `expected` checkers notices `mutation` within [`SEEDS_MAX`] seeds.
fn assert_detected<P: Protocol>(
    adapter: &P,
    mutation: Mutation,
    adversaries: &[&str],
    servers: &[u16],
    expected: &[&str],
) {
    for seed in 0..CONTROL_SEEDS {
        let adversary = Adversary::parse(adversaries[seed as usize % adversaries.len()]).unwrap();
        let report = run(adapter, &RunConfig::new(servers[0], seed, adversary)).unwrap();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }
    match first_detection(adapter, mutation, adversaries, servers, expected) {
        Some((seed, violation)) => eprintln!(
            "mutation {mutation:?} in {}: caught at seed {seed}: {violation}",
            adapter.name()
        ),
        None => panic!(
            "{mutation:?} in {}: none of {expected:?} fired in {SEEDS_MAX} seeds of {adversaries:?}",
            adapter.name()
        ),
    }
}

/// A coin split between honest servers shows as votes the others reject (their justification
/// names another coin) or as a stall.
const SPLIT_COIN: &[&str] = &["honest-not-faulty", "termination", "agreement"];

#[test]
fn accept_unverified_coin_shares_is_detected_in_aba() {
    assert_detected(
        &AbaAdapter,
        Mutation::AcceptUnverifiedCoinShares,
        &[
            "invalid-crypto+random",
            "invalid-crypto+coin-stall",
            "invalid-crypto+fifo",
        ],
        &[4, 7],
        SPLIT_COIN,
    );
}

#[test]
fn accept_unverified_coin_shares_is_detected_in_mvba() {
    assert_detected(
        &MvbaAdapter,
        Mutation::AcceptUnverifiedCoinShares,
        &["invalid-crypto+random", "invalid-crypto+fifo"],
        &[4, 7],
        SPLIT_COIN,
    );
}

#[test]
fn count_duplicate_votes_is_detected_in_aba() {
    assert_detected(
        &AbaAdapter,
        Mutation::CountDuplicateVotes,
        &["replay+random", "equivocate+partition", "replay+coin-stall"],
        &[4, 7],
        &["honest-not-faulty", "termination", "agreement", "validity"],
    );
}

#[test]
fn count_duplicate_votes_is_detected_in_rbc() {
    assert_detected(
        &RbcAdapter,
        Mutation::CountDuplicateVotes,
        &[
            "equivocate+partition",
            "equivocate+random",
            "equivocate+targeted",
        ],
        &[4, 7],
        &["termination", "agreement", "validity"],
    );
}

#[test]
fn rbc_deliver_after_2t_readies_is_detected() {
    assert_detected(
        &RbcAdapter,
        Mutation::RbcDeliverAfter2tReadies,
        &[
            "equivocate+partition",
            "equivocate+targeted",
            "equivocate+random",
        ],
        &[4, 7, 10],
        &["termination", "agreement"],
    );
}

#[test]
fn cbc_quorum_t_plus_one_is_detected() {
    assert_detected(
        &CbcAdapter,
        Mutation::CbcQuorumTPlusOne,
        &[
            "equivocate+partition",
            "equivocate+random",
            "equivocate+targeted",
        ],
        &[4, 7],
        &["agreement"],
    );
}

#[test]
fn reveal_coin_early_is_detected_in_aba() {
    assert_detected(
        &AbaAdapter,
        Mutation::RevealCoinEarly,
        &["random", "coin-stall"],
        &[4],
        &["coin-secrecy"],
    );
}

#[test]
fn reveal_coin_early_is_detected_in_mvba() {
    assert_detected(
        &MvbaAdapter,
        Mutation::RevealCoinEarly,
        &["random", "fifo"],
        &[4],
        &["coin-secrecy"],
    );
}

#[test]
fn forget_instance_binding_is_detected() {
    assert_detected(
        &AbaAdapter,
        Mutation::ForgetInstanceBinding,
        &["replay+random", "replay+fifo", "replay+partition"],
        &[4, 7],
        &["agreement", "validity", "honest-not-faulty"],
    );
}

#[test]
fn skip_mvba_predicate_is_detected() {
    assert_detected(
        &MvbaAdapter,
        Mutation::SkipMvbaPredicate,
        &[
            "bad-predicate+random",
            "bad-predicate+fifo",
            "bad-predicate+targeted",
        ],
        &[4, 7],
        &["validity"],
    );
}

#[test]
fn decrypt_before_ordering_is_detected() {
    assert_detected(
        &ScabcAdapter,
        Mutation::DecryptBeforeOrdering,
        &["random", "fifo", "silent+random"],
        &[4, 7],
        &["confidentiality"],
    );
}

#[test]
fn oabc_deliver_on_certificate_is_detected() {
    assert_detected(
        &OabcAdapter,
        Mutation::OabcDeliverOnCertificate,
        &["random", "targeted", "partition", "fifo", "silent+random"],
        &[4, 7],
        &["total-order", "agreement", "integrity"],
    );
}
