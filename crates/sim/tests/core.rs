//! The simulator core, exercised with the echo-quorum test protocol (tests/support): a correct
//! protocol passes every checker under every adversary; each Byzantine strategy really deviates;
//! and each checker fires when the protocol has the matching bug.

mod support;

use sintra_sim::batch::{AdversaryChoice, run_seeds};
use sintra_sim::cli::{SimArgs, summarise_batch};
use sintra_sim::{Adversary, NetworkKind, Protocol, RunConfig, Strategy, run};
use support::{Bugs, EchoQuorum};

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn every_adversary() -> AdversaryChoice {
    let adapter = EchoQuorum::default();
    AdversaryChoice::Spread(Adversary::all(&adapter.strategies(), &adapter.networks()))
}

#[test]
fn a_correct_protocol_passes_every_checker_under_every_adversary() {
    let combos = match every_adversary() {
        AdversaryChoice::Spread(list) => list.len() as u64,
        AdversaryChoice::One(_) => 1,
    };
    for (servers, seeds) in [(4u16, 4 * combos), (7, combos), (10, 8)] {
        let template = RunConfig::new(servers, 0, Adversary::parse("random").unwrap());
        let outcomes = run_seeds(
            &EchoQuorum::default(),
            &template,
            0..seeds,
            &every_adversary(),
            threads(),
        )
        .unwrap();
        for outcome in &outcomes {
            assert!(
                outcome.violations.is_empty(),
                "n = {servers}, seed {} ({}): {:?}\n{:?}",
                outcome.config.seed,
                outcome.config.adversary,
                outcome.violations,
                outcome.notes
            );
        }
        // Honest senders deliver: most runs deliver something.
        let delivered = outcomes.iter().filter(|o| o.metrics.items > 0).count();
        assert!(
            delivered * 2 >= outcomes.len(),
            "{delivered} of {}",
            outcomes.len()
        );
    }
}

#[test]
fn every_strategy_deviates() {
    let adapter = EchoQuorum::default();
    for strategy in adapter.strategies() {
        let mut deviations = (0, 0);
        let mut byzantine_messages = 0;
        for seed in 0..16 {
            let adversary = Adversary {
                strategy: Some(strategy),
                network: NetworkKind::Random,
            };
            let report = run(&adapter, &RunConfig::new(4, seed, adversary)).unwrap();
            assert!(
                report.violations.is_empty(),
                "{strategy:?} seed {seed}: {:?}",
                report.violations
            );
            deviations.0 += report.metrics.must_deviations.0;
            deviations.1 += report.metrics.may_deviations.0;
            byzantine_messages += report.metrics.messages - report.metrics.honest_messages;
        }
        match strategy {
            Strategy::Silent => assert_eq!(byzantine_messages, 0),
            // Equivocation to different peers is invisible to each; both versions to one peer
            // happen now and then.
            Strategy::Equivocate | Strategy::Flood | Strategy::RandomBytes => {
                assert!(deviations.0 > 0, "{strategy:?}: no detectable deviation")
            }
            Strategy::InvalidCrypto | Strategy::Replay | Strategy::Opposite => {
                assert!(deviations.1 > 0, "{strategy:?}: no deviation")
            }
            Strategy::BadPredicate => {}
        }
    }
}

/// Runs seeds of `bugs` until some checker named `checker` fires.
fn first_violation(bugs: Bugs, adversary: &str, checker: &str) -> Option<u64> {
    let adapter = EchoQuorum { bugs };
    (0..200).find(|seed| {
        let config = RunConfig::new(4, *seed, Adversary::parse(adversary).unwrap());
        run(&adapter, &config)
            .unwrap()
            .violations
            .iter()
            .any(|v| v.checker == checker)
    })
}

#[test]
fn each_checker_notices_its_bug() {
    let cases = [
        (
            Bugs {
                deliver_on_send: true,
                ..Bugs::default()
            },
            "equivocate+random",
            "agreement",
        ),
        (
            Bugs {
                ignore_equivocation: true,
                ..Bugs::default()
            },
            "equivocate+random",
            "deviations-recorded",
        ),
        (
            Bugs {
                blame_echoes: true,
                ..Bugs::default()
            },
            "random",
            "honest-not-faulty",
        ),
        (
            Bugs {
                wait_for_all: true,
                ..Bugs::default()
            },
            "silent+random",
            "termination",
        ),
        (
            Bugs {
                deliver_repeatedly: true,
                ..Bugs::default()
            },
            "fifo",
            "integrity",
        ),
        (
            Bugs {
                deliver_altered: true,
                ..Bugs::default()
            },
            "random",
            "validity",
        ),
    ];
    for (bugs, adversary, checker) in cases {
        assert!(
            first_violation(bugs, adversary, checker).is_some(),
            "{checker} never fired for {bugs:?} under {adversary}"
        );
    }
}

#[test]
fn a_failing_seed_prints_the_command_that_replays_it() {
    let adapter = EchoQuorum {
        bugs: Bugs {
            deliver_on_send: true,
            ..Bugs::default()
        },
    };
    let args = SimArgs {
        protocol: "echo-quorum".into(),
        servers: 4,
        faults: None,
        seeds: 40,
        first_seed: 3,
        adversary: "all".into(),
        byzantine: None,
        budget: None,
        fresh_keys: false,
        threads: Some(threads()),
        json: true,
        verbose: false,
    };
    let summary = summarise_batch(&adapter, &args).unwrap();
    assert_eq!(summary.seeds, 40);
    assert!(summary.violations > 0);
    let json = serde_json::to_value(&summary).unwrap();
    for key in ["seeds", "violations", "protocol", "servers"] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    let failure = &summary.failures[0];
    let expected = format!(
        "sintra sim --protocol echo-quorum --servers 4 --seeds 1 --first-seed {} --adversary {}",
        failure.seed, failure.adversary
    );
    assert_eq!(failure.replay, expected);
    // Replaying exactly that seed and adversary reproduces the failure.
    let replay = SimArgs {
        seeds: 1,
        first_seed: failure.seed,
        adversary: failure.adversary.clone(),
        ..args
    };
    let again = summarise_batch(&adapter, &replay).unwrap();
    assert_eq!(again.violations, 1);
    assert_eq!(again.failures[0].violations, failure.violations);
    let table = sintra_sim::cli::table(&summary, false);
    assert!(
        table.contains("replay: sintra sim --protocol echo-quorum"),
        "{table}"
    );
    assert!(table.contains("msgs/delivery"), "{table}");
}
