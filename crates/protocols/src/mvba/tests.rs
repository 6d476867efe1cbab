//! Multi-valued agreement, end to end with real threshold cryptography over a seeded-shuffle
//! network: honest servers all decide the same value, which satisfies the predicate and was
//! proposed; `t` silent servers do not block it; a Byzantine proposer of an invalid value is
//! blamed and never decided; with a selective predicate only acceptable values are decided; bad
//! votes, commits and coin shares are blamed on their sender and no honest server is ever
//! blamed; encodings are canonical and never panic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};

use super::*;
use crate::rbc::tests::network::{self, Network, Protocol, id};
use crate::{Fault, Target};

const SIZES: [u16; 4] = [1, 4, 7, 10];

impl Protocol for Mvba {
    type Output = MvbaDecision;
    fn handle(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
    ) -> Step<MvbaDecision> {
        self.handle_message(party, from, message)
    }
}

/// `Q`: non-empty values whose first byte is even.
struct EvenFirstByte;

impl Predicate for EvenFirstByte {
    fn is_valid(&self, _party: &mut Party, value: &[u8]) -> bool {
        value.first().is_some_and(|byte| byte % 2 == 0)
    }
}

fn predicate() -> Arc<dyn Predicate> {
    Arc::new(EvenFirstByte)
}

fn instance() -> InstanceId {
    InstanceId::root("test").unwrap().child("mvba").unwrap()
}

/// The instance of a networked run: one per seed, because the permutation is a function of the
/// coin key (one per group size) and the instance id alone.
fn run_instance(seed: u64) -> InstanceId {
    InstanceId::root("test")
        .unwrap()
        .child(&format!("mvba{seed}"))
        .unwrap()
}

fn child(label: &str) -> InstanceId {
    instance().child(label).unwrap()
}

fn envelope(body: Message) -> crate::Message {
    crate::Message {
        instance: instance(),
        body: Body::Mvba(body),
    }
}

fn t_of(n: u16) -> u16 {
    (n - 1) / 3
}

/// A valid proposal of `server` (even first byte), different for every server and seed.
fn valid_value(server: ServerId, seed: u64) -> Vec<u8> {
    let mut value = vec![2 * (server.get() as u8)];
    value.extend_from_slice(&seed.to_be_bytes());
    value.extend((0..40).map(|i| (i as u8).wrapping_mul(7) ^ server.get() as u8));
    value
}

/// A value `Q` rejects.
fn invalid_value(server: ServerId) -> Vec<u8> {
    vec![1, server.get() as u8, 0xee]
}

fn network(n: u16, seed: u64, byzantine: &[u16]) -> Network<Mvba> {
    Network::new(n, seed, byzantine, |_| {
        Mvba::new(run_instance(seed), predicate())
    })
}

/// Every honest server proposes `value(server)` if it is given one; returns the proposals.
fn propose_all(
    net: &mut Network<Mvba>,
    mut value: impl FnMut(ServerId) -> Option<Vec<u8>>,
) -> BTreeMap<ServerId, Vec<u8>> {
    let mut proposed = BTreeMap::new();
    for server in net.honest() {
        let Some(value) = value(server) else {
            continue;
        };
        proposed.insert(server, value.clone());
        net.call(server, |mvba, party| mvba.propose(party, value).unwrap());
    }
    proposed
}

/// Checks agreement, validity and integrity: every honest server decided, all the same value,
/// which satisfies `Q` and is what its proposer proposed; no honest server was blamed.
fn check_outcome(net: &Network<Mvba>, proposed: &BTreeMap<ServerId, Vec<u8>>) -> MvbaDecision {
    let decided = net.delivered();
    assert_eq!(
        decided.len(),
        net.honest().len(),
        "not every honest server decided"
    );
    let first = decided.values().next().unwrap().clone();
    for decision in decided.values() {
        assert_eq!(*decision, first, "disagreement");
    }
    assert_eq!(proposed.get(&first.proposer), Some(&first.value));
    assert!(EvenFirstByte.is_valid(&mut network::parties(1, 0).remove(0), &first.value));
    assert!(first.candidate >= 1 && first.candidate <= u32::from(net.n));
    for server in net.honest() {
        assert!(net.nodes[server.slot()].terminated());
    }
    net.assert_no_honest_blamed();
    first
}

fn honest_run(n: u16, seed: u64) -> (Network<Mvba>, MvbaDecision) {
    let mut net = network(n, seed, &[]);
    let proposed = propose_all(&mut net, |server| Some(valid_value(server, seed)));
    net.run();
    let decision = check_outcome(&net, &proposed);
    assert!(net.faults.is_empty(), "{:?}", net.faults);
    (net, decision)
}

#[test]
fn honest_servers_agree_on_a_proposed_valid_value() {
    for n in SIZES {
        for seed in 0..3 {
            let (net, decision) = honest_run(n, seed);
            // The decided proposer is the permutation's entry at the decided position.
            let permutation = net.nodes[0].permutation().unwrap();
            assert_eq!(
                permutation[decision.candidate as usize - 1],
                decision.proposer
            );
        }
    }
}

#[test]
fn t_silent_servers_do_not_block() {
    for n in [4u16, 7, 10] {
        let silent: Vec<u16> = (n - t_of(n) + 1..=n).collect();
        for seed in 0..3 {
            let mut net = network(n, seed, &silent);
            let proposed = propose_all(&mut net, |server| Some(valid_value(server, seed)));
            net.run();
            let decision = check_outcome(&net, &proposed);
            assert!(!silent.contains(&decision.proposer.get()));
            assert!(net.faults.is_empty(), "{:?}", net.faults);
        }
    }
}

#[test]
fn an_invalid_proposal_is_blamed_and_never_decided() {
    for n in [4u16, 7, 10] {
        for seed in 0..2 {
            let byzantine = id(1);
            let mut net = network(n, seed, &[1]);
            let proposed = propose_all(&mut net, |server| Some(valid_value(server, seed)));
            let send = crate::Message {
                instance: run_instance(seed).child("p1").unwrap(),
                body: Body::Cbc(cbc::Message::Send {
                    body: invalid_value(byzantine),
                }),
            };
            net.inject(byzantine, Target::All, send);
            net.run();
            let decision = check_outcome(&net, &proposed);
            assert_ne!(decision.proposer, byzantine);
            for observer in net.honest() {
                let blamed = net.faults.iter().any(|(at, fault)| {
                    *at == observer
                        && fault.server == byzantine
                        && fault.kind == FaultKind::InvalidValue
                        && fault.instance == run_instance(seed).child("p1").unwrap()
                });
                assert!(blamed, "{observer} did not blame the invalid proposal");
            }
        }
    }
}

#[test]
fn a_selective_predicate_decides_only_acceptable_values() {
    for n in [4u16, 7, 10] {
        for seed in 0..3 {
            let mut net = network(n, seed, &[]);
            // The last t servers hold values Q rejects: they cannot propose them, and take part
            // in everything else.
            let rejected: Vec<ServerId> = (n - t_of(n) + 1..=n).map(id).collect();
            for &server in &rejected {
                let refused = net.nodes[server.slot()]
                    .propose(&mut net.parties[server.slot()], invalid_value(server));
                assert_eq!(refused.unwrap_err(), MvbaError::InvalidValue);
            }
            let proposed = propose_all(&mut net, |server| {
                (!rejected.contains(&server)).then(|| valid_value(server, seed))
            });
            net.run();
            let decision = check_outcome(&net, &proposed);
            assert!(!rejected.contains(&decision.proposer));
            assert!(net.faults.is_empty(), "{:?}", net.faults);
        }
    }
}

#[test]
fn mean_candidates_over_seeds() {
    let seeds = 24u32;
    for (n, silent) in [(4u16, 0u16), (4, 1), (7, 2), (10, 3)] {
        let silent: Vec<u16> = (n - silent + 1..=n).collect();
        let mut total = 0u32;
        for seed in 0..seeds {
            let seed = 100 + u64::from(seed);
            let mut net = network(n, seed, &silent);
            let proposed = propose_all(&mut net, |server| Some(valid_value(server, seed)));
            net.run();
            total += check_outcome(&net, &proposed).candidate;
        }
        let mean = f64::from(total) / f64::from(seeds);
        println!(
            "n = {n}, {} silent: mean candidates {mean:.2} over {seeds} seeds",
            silent.len()
        );
        assert!(mean <= 3.0, "mean {mean}");
    }
}

/// The permutation of the run with `seed` in a group of `n`, computed ahead from coin shares.
fn permutation_of(n: u16, seed: u64) -> Vec<ServerId> {
    let mut parties = network::parties(n, seed);
    let instance = run_instance(seed);
    let name = Context::new(PERMUTATION_PURPOSE, instance.as_bytes());
    let threshold = parties[0].group.coin.threshold();
    let shares: Vec<CoinShare> = parties
        .iter_mut()
        .take(threshold)
        .map(|party| party.keys.coin.share(&name, &mut party.rng))
        .collect();
    let coin = parties[0].group.coin.combine(&name, &shares).unwrap();
    coin.value.permutation(n)
}

#[test]
fn a_server_that_missed_the_first_candidate_fetches_it_before_voting() {
    let n = 4;
    let mut fetched = 0;
    for seed in 0..4 {
        let first = permutation_of(n, seed)[0];
        let late = ServerId::all(n).find(|server| *server != first).unwrap();
        let mut net = network(n, seed, &[]);
        // `late` never sees the first candidate's SEND or FINAL: it learns the proof from the
        // commits, and must fetch the value to vote 1.
        let proposal = run_instance(seed)
            .child(&format!("p{}", first.get()))
            .unwrap();
        let requests = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = requests.clone();
        net.lose = Some(Box::new(move |from, to, message: &crate::Message| {
            if message.instance != proposal {
                return false;
            }
            match &message.body {
                Body::Cbc(cbc::Message::Send { .. } | cbc::Message::Final { .. }) => to == late,
                Body::Cbc(cbc::Message::Request { .. }) => {
                    counter.set(counter.get() + u32::from(from == late));
                    false
                }
                _ => false,
            }
        }));
        let proposed = propose_all(&mut net, |server| Some(valid_value(server, seed)));
        net.run();
        let decision = check_outcome(&net, &proposed);
        assert!(net.faults.is_empty(), "{:?}", net.faults);
        if requests.get() > 0 {
            fetched += 1;
            assert_eq!((decision.proposer, decision.candidate), (first, 1));
        }
    }
    assert!(fetched > 0, "no run exercised the fetch");
}

#[test]
fn byzantine_deviations_in_a_run_are_blamed_and_do_not_stop_it() {
    let n = 7;
    let (liar, forger) = (id(6), id(7));
    let (mut votes_blamed, mut shares_blamed) = (0, 0);
    for seed in 0..3 {
        let parent = run_instance(seed);
        let mut net = network(n, seed, &[6, 7]);
        let proposed = propose_all(&mut net, |server| Some(valid_value(server, seed)));
        let mut signers = network::parties(n, 99);
        let at = |label: &str| parent.child(label).unwrap();
        let own = |body: Message| crate::Message {
            instance: parent.clone(),
            body: Body::Mvba(body),
        };
        // The liar: a commit with too few proofs, and 1-votes whose signature is for another
        // value, on every candidate.
        let proofs: Vec<CbcProof> = (1..=2)
            .map(|proposer| {
                certify_in(
                    &parent,
                    &signers,
                    proposer,
                    &valid_value(id(proposer), seed),
                )
            })
            .collect();
        let commit = Commit { proofs }.to_bytes();
        net.inject(
            liar,
            Target::All,
            crate::Message {
                instance: at("c6"),
                body: Body::Cbc(cbc::Message::Send { body: commit }),
            },
        );
        for candidate in 1..=u32::from(n) {
            let proposer = ((candidate - 1) % 5 + 1) as u16;
            let value = valid_value(id(proposer), seed);
            let mut proof = certify_in(&parent, &signers, proposer, &value);
            proof.signature = certify_in(&parent, &signers, proposer, b"\x00forged").signature;
            net.inject(
                liar,
                Target::All,
                own(Message::Vote {
                    candidate,
                    proposal: Some((value, proof)),
                }),
            );
        }
        // The forger: a coin share of another coin, and a second, different coin share.
        let other = Context::new(PERMUTATION_PURPOSE, b"test/other");
        let forged = signers[6]
            .keys
            .coin
            .share(&other, &mut ChaCha20Rng::seed_from_u64(seed));
        net.inject(
            forger,
            Target::All,
            own(Message::CoinShare { share: forged }),
        );
        let parent_bytes = parent.clone();
        let name = Context::new(PERMUTATION_PURPOSE, parent_bytes.as_bytes());
        for _ in 0..2 {
            let party = &mut signers[6];
            let share = party.keys.coin.share(&name, &mut party.rng);
            net.inject(forger, Target::All, own(Message::CoinShare { share }));
        }
        net.run();
        let decision = check_outcome(&net, &proposed);
        assert!(decision.proposer != liar && decision.proposer != forger);
        let blamed_by = |server: ServerId, kinds: &[FaultKind]| -> Vec<ServerId> {
            net.faults
                .iter()
                .filter(|(_, fault)| fault.server == server && kinds.contains(&fault.kind))
                .map(|(observer, _)| *observer)
                .collect()
        };
        // Every honest server checks the commit's SEND, whenever it comes.
        let commit_blamers: BTreeSet<ServerId> = blamed_by(liar, &[FaultKind::InvalidValue])
            .into_iter()
            .collect();
        assert_eq!(commit_blamers.len(), net.honest().len());
        // Votes and coin shares are checked unless they come too late to matter (a passed
        // candidate, a known permutation): depending on the order, a forged vote is blamed for
        // its signature or for naming another proposer than the permutation's.
        votes_blamed += blamed_by(
            liar,
            &[FaultKind::InvalidProof, FaultKind::UnexpectedMessage],
        )
        .len();
        shares_blamed +=
            blamed_by(forger, &[FaultKind::Equivocation, FaultKind::InvalidShare]).len();
    }
    assert!(votes_blamed > 0, "no forged vote was blamed");
    assert!(shares_blamed > 0, "no bad coin share was blamed");
}

/// A run in which server 1 broadcasts a value `Q` rejects through its own instance, bypassing
/// its local check as a Byzantine server running this code could, while the others propose valid
/// values. The seed is one whose permutation starts with server 1, so that its value is the
/// first candidate.
fn run_with_a_bypassing_proposer(n: u16) -> (Network<Mvba>, BTreeMap<ServerId, MvbaDecision>) {
    let bypasser = id(1);
    let seed = (0..)
        .find(|seed| permutation_of(n, *seed)[0] == bypasser)
        .unwrap();
    let mut net = network(n, seed, &[]);
    net.call(bypasser, |mvba, party| {
        mvba.ensure_children(party);
        let child = mvba.proposals[0]
            .broadcast(party, invalid_value(bypasser))
            .unwrap();
        let mut step = Step::new();
        mvba.absorb_broadcast(party, Broadcast::Proposal, bypasser, child, &mut step);
        step
    });
    for server in ServerId::all(n).skip(1) {
        let value = valid_value(server, seed);
        net.call(server, |mvba, party| mvba.propose(party, value).unwrap());
    }
    net.run();
    let decided = net.delivered();
    (net, decided)
}

#[test]
fn a_proposer_bypassing_its_own_check_is_refused_by_the_others() {
    let (net, decided) = run_with_a_bypassing_proposer(4);
    assert_eq!(decided.len(), 4);
    for decision in decided.values() {
        assert!(EvenFirstByte.is_valid(&mut network::parties(1, 0).remove(0), &decision.value));
        assert_ne!(decision.proposer, id(1));
    }
    // Everybody else refused to echo it; nobody else was blamed.
    for (observer, fault) in &net.faults {
        assert_eq!(
            (fault.server, fault.kind),
            (id(1), FaultKind::InvalidValue),
            "{observer}"
        );
    }
}

#[cfg(feature = "mutations")]
#[test]
fn skipping_the_predicate_lets_an_invalid_value_be_decided() {
    use crate::mutation::{Mutation, with_active};
    let (_, decided) = with_active(&[Mutation::SkipMvbaPredicate], || {
        run_with_a_bypassing_proposer(4)
    });
    assert_eq!(decided.len(), 4);
    for decision in decided.values() {
        assert_eq!(decision.value, invalid_value(id(1)), "validity must break");
    }
}

// ---------------------------------------------------------------------------------------------
// One instance fed forged messages directly.

/// Server 1's instance of a group of `n`, with every party (to forge what others would send).
fn single(n: u16) -> (Mvba, Vec<Party>) {
    (Mvba::new(instance(), predicate()), network::parties(n, 7))
}

fn kinds(faults: &[Fault]) -> Vec<(u16, FaultKind)> {
    faults
        .iter()
        .map(|fault| (fault.server.get(), fault.kind))
        .collect()
}

/// A delivery proof of `value` in `ID/p<proposer>`, combined from real echo shares.
fn certify(parties: &[Party], proposer: u16, value: &[u8]) -> CbcProof {
    certify_in(&instance(), parties, proposer, value)
}

/// A delivery proof of `value` in `parent/p<proposer>`.
fn certify_in(parent: &InstanceId, parties: &[Party], proposer: u16, value: &[u8]) -> CbcProof {
    let instance = parent.child(&format!("p{proposer}")).unwrap();
    let digest = body_digest(&instance, value);
    let context = cbc::signing_context(&instance);
    let group = &parties[0].group;
    let shares: Vec<_> = parties
        .iter()
        .take(group.broadcast.threshold())
        .map(|party| party.keys.broadcast.sign(&context, &digest))
        .collect();
    let signature = group.broadcast.combine(&context, &digest, &shares).unwrap();
    CbcProof {
        instance,
        digest,
        signature: signature.value,
    }
}

fn vote(candidate: u32, proposal: Option<(Vec<u8>, CbcProof)>) -> crate::Message {
    envelope(Message::Vote {
        candidate,
        proposal,
    })
}

/// Makes server 1's instance learn the permutation from coin shares of servers 1..=t+1.
fn reveal_permutation(mvba: &mut Mvba, parties: &mut [Party]) -> Vec<ServerId> {
    let id_bytes = instance();
    let name = Context::new(PERMUTATION_PURPOSE, id_bytes.as_bytes());
    let threshold = parties[0].group.coin.threshold();
    for index in 0..threshold {
        let share = {
            let party = &mut parties[index];
            party.keys.coin.share(&name, &mut party.rng)
        };
        let from = parties[index].id;
        let step = mvba.handle_message(
            &mut parties[0],
            from,
            &envelope(Message::CoinShare { share }),
        );
        assert!(step.faults.is_empty(), "{:?}", step.faults);
    }
    mvba.permutation().unwrap().to_vec()
}

#[test]
fn bad_votes_are_blamed_on_their_sender() {
    let (mut mvba, mut parties) = single(4);
    let value = valid_value(id(2), 0);
    let proof = certify(&parties, 2, &value);
    // A signature on another digest.
    let mut forged = proof.clone();
    forged.signature = certify(&parties, 2, b"\x02other").signature;
    // A proof of another instance.
    let mut foreign = proof.clone();
    foreign.instance = InstanceId::root("elsewhere").unwrap().child("p2").unwrap();
    // A certified value that fails Q (a certificate is only signatures; Q is checked anyway).
    let bad = invalid_value(id(3));
    let bad_proof = certify(&parties, 3, &bad);
    let mut feed = |from: u16, message: crate::Message| {
        kinds(
            &mvba
                .handle_message(&mut parties[0], id(from), &message)
                .faults,
        )
    };

    // A valid 1-vote and a 0-vote are accepted.
    assert_eq!(feed(2, vote(1, Some((value.clone(), proof.clone())))), []);
    assert_eq!(feed(3, vote(2, None)), []);
    // A repeat is ignored; a different second vote on the same candidate is equivocation.
    assert_eq!(feed(2, vote(1, Some((value.clone(), proof.clone())))), []);
    assert_eq!(feed(2, vote(1, None)), [(2, FaultKind::Equivocation)]);
    assert_eq!(
        feed(3, vote(1, Some((value.clone(), forged)))),
        [(3, FaultKind::InvalidProof)]
    );
    assert_eq!(
        feed(4, vote(1, Some((b"\x02not it".to_vec(), proof.clone())))),
        [(4, FaultKind::WrongBody)]
    );
    assert_eq!(
        feed(4, vote(2, Some((value.clone(), foreign)))),
        [(4, FaultKind::UnexpectedMessage)]
    );
    assert_eq!(
        feed(1, vote(3, Some((bad, bad_proof)))),
        [(1, FaultKind::InvalidValue)]
    );
    // Candidates that do not exist.
    assert_eq!(feed(3, vote(0, None)), [(3, FaultKind::UnexpectedMessage)]);
    assert_eq!(feed(3, vote(5, None)), [(3, FaultKind::UnexpectedMessage)]);
}

#[test]
fn a_vote_for_the_wrong_proposer_is_blamed_once_the_permutation_is_known() {
    let (mut mvba, mut parties) = single(4);
    // Early: the permutation is unknown, so a 1-vote for any proposer is kept.
    let early: Vec<(u16, CbcProof, Vec<u8>)> = (1..=4)
        .map(|proposer| {
            let value = valid_value(id(proposer), 1);
            (proposer, certify(&parties, proposer, &value), value)
        })
        .collect();
    for (proposer, proof, value) in &early {
        let step = mvba.handle_message(
            &mut parties[0],
            id(*proposer),
            &vote(1, Some((value.clone(), proof.clone()))),
        );
        assert!(step.faults.is_empty(), "{:?}", step.faults);
    }
    // Once the coin is known, every vote naming another proposer than the first is blamed
    // (the coin shares come in through the same calls).
    let id_bytes = instance();
    let name = Context::new(PERMUTATION_PURPOSE, id_bytes.as_bytes());
    let mut faults = Vec::new();
    for index in 0..parties[0].group.coin.threshold() {
        let share = {
            let party = &mut parties[index];
            party.keys.coin.share(&name, &mut party.rng)
        };
        let from = parties[index].id;
        let step = mvba.handle_message(
            &mut parties[0],
            from,
            &envelope(Message::CoinShare { share }),
        );
        faults.extend(kinds(&step.faults));
    }
    let first = mvba.permutation().unwrap()[0].get();
    let mut expected: Vec<(u16, FaultKind)> = (1..=4)
        .filter(|proposer| *proposer != first)
        .map(|proposer| (proposer, FaultKind::UnexpectedMessage))
        .collect();
    faults.sort_by_key(|(server, _)| *server);
    expected.sort_by_key(|(server, _)| *server);
    assert_eq!(faults, expected);

    // Known permutation: a vote naming the wrong proposer is blamed at once.
    let (mut mvba, mut parties) = single(4);
    let order = reveal_permutation(&mut mvba, &mut parties);
    let wrong = order[1].get();
    let value = valid_value(id(wrong), 2);
    let proof = certify(&parties, wrong, &value);
    let step = mvba.handle_message(&mut parties[0], id(3), &vote(1, Some((value, proof))));
    assert_eq!(kinds(&step.faults), [(3, FaultKind::UnexpectedMessage)]);
}

#[test]
fn bad_coin_shares_are_blamed_and_the_permutation_still_comes() {
    let (mut mvba, mut parties) = single(7);
    let id_bytes = instance();
    let name = Context::new(PERMUTATION_PURPOSE, id_bytes.as_bytes());
    let other = Context::new(PERMUTATION_PURPOSE, b"test/other");
    let mut share = |index: usize, name: &Context| {
        let party = &mut parties[index];
        party.keys.coin.share(name, &mut party.rng)
    };
    let wrong_coin = share(1, &other);
    let foreign_id = share(2, &name);
    let first = share(3, &name);
    let second = share(3, &name);
    let good: Vec<CoinShare> = (4..7).map(|index| share(index, &name)).collect();
    let mut feed = |from: u16, share: CoinShare| {
        kinds(
            &mvba
                .handle_message(
                    &mut parties[0],
                    id(from),
                    &envelope(Message::CoinShare { share }),
                )
                .faults,
        )
    };
    // A share carrying another server's id.
    assert_eq!(feed(5, foreign_id), [(5, FaultKind::UnexpectedMessage)]);
    // Two different shares of one server (shares are randomized: an honest server sends one).
    assert_eq!(feed(4, first.clone()), []);
    assert_eq!(feed(4, first), []);
    assert_eq!(feed(4, second), [(4, FaultKind::Equivocation)]);
    // A share of another coin: found when combining (at t + 1 = 3 shares) and left out.
    let mut good = good.into_iter();
    assert_eq!(feed(2, wrong_coin), []);
    assert_eq!(
        feed(5, good.next().unwrap()),
        [(2, FaultKind::InvalidShare)]
    );
    assert_eq!(feed(6, good.next().unwrap()), []);
    assert!(mvba.permutation().is_some());
}

#[test]
fn bad_commits_are_blamed_and_not_echoed() {
    let n = 4;
    let parties = network::parties(n, 7);
    let proofs: Vec<CbcProof> = (1..=n)
        .map(|proposer| certify(&parties, proposer, &valid_value(id(proposer), 3)))
        .collect();
    let commit = |proofs: Vec<CbcProof>| Commit { proofs }.to_bytes();
    let send = |body: Vec<u8>| crate::Message {
        instance: child("c2"),
        body: Body::Cbc(cbc::Message::Send { body }),
    };
    let mut forged = proofs[1].clone();
    forged.signature = proofs[2].signature;
    let cases: Vec<(Vec<u8>, FaultKind)> = vec![
        (b"\x00\x00".to_vec(), FaultKind::Malformed),
        (commit(proofs[..2].to_vec()), FaultKind::InvalidValue),
        (
            commit(vec![
                proofs[1].clone(),
                proofs[0].clone(),
                proofs[2].clone(),
            ]),
            FaultKind::InvalidValue,
        ),
        (
            commit(vec![proofs[0].clone(), forged, proofs[2].clone()]),
            FaultKind::InvalidProof,
        ),
    ];
    for (body, kind) in cases {
        let (mut mvba, mut parties) = single(n);
        let step = mvba.handle_message(&mut parties[0], id(2), &send(body));
        assert_eq!(kinds(&step.faults), [(2, kind)]);
        assert!(step.messages.is_empty(), "an invalid commit was echoed");
    }
    // A valid commit is echoed; a second, different one is equivocation and is not.
    let (mut mvba, mut parties) = single(n);
    let step = mvba.handle_message(&mut parties[0], id(2), &send(commit(proofs[..3].to_vec())));
    assert!(step.faults.is_empty(), "{:?}", step.faults);
    assert_eq!(step.messages.len(), 1);
    let step = mvba.handle_message(&mut parties[0], id(2), &send(commit(proofs.clone())));
    assert_eq!(kinds(&step.faults), [(2, FaultKind::Equivocation)]);
    assert!(step.messages.is_empty());
}

#[test]
fn messages_for_other_instances_or_protocols_are_rejected() {
    let (mut mvba, mut parties) = single(4);
    let coin_share = Message::CoinShare {
        share: parties[1].keys.coin.share(
            &Context::new(PERMUTATION_PURPOSE, b"x"),
            &mut ChaCha20Rng::seed_from_u64(1),
        ),
    };
    let cases = [
        crate::Message {
            instance: InstanceId::root("elsewhere").unwrap(),
            body: Body::Mvba(coin_share.clone()),
        },
        crate::Message {
            instance: child("x1"),
            body: Body::Mvba(coin_share.clone()),
        },
        crate::Message {
            instance: child("p01"),
            body: Body::Mvba(coin_share.clone()),
        },
        crate::Message {
            instance: child("p9"),
            body: Body::Mvba(coin_share.clone()),
        },
        crate::Message {
            instance: instance(),
            body: Body::Cbc(cbc::Message::Request { digest: [0; 32] }),
        },
    ];
    for message in cases {
        let step = mvba.handle_message(&mut parties[0], id(2), &message);
        assert_eq!(
            kinds(&step.faults),
            [(2, FaultKind::UnexpectedMessage)],
            "{message:?}"
        );
    }
    // A child's message of the wrong protocol is the child's to reject.
    let step = mvba.handle_message(
        &mut parties[0],
        id(2),
        &crate::Message {
            instance: child("a2"),
            body: Body::Mvba(coin_share),
        },
    );
    assert_eq!(kinds(&step.faults), [(2, FaultKind::UnexpectedMessage)]);
}

#[test]
fn misuse_is_an_error() {
    let (mut mvba, mut parties) = single(4);
    assert_eq!(
        mvba.propose(&mut parties[0], invalid_value(id(1)))
            .unwrap_err(),
        MvbaError::InvalidValue
    );
    assert_eq!(
        mvba.propose(&mut parties[0], vec![0; VALUE_BYTES_MAX + 1])
            .unwrap_err(),
        MvbaError::ValueTooLarge {
            len: VALUE_BYTES_MAX + 1,
            max: VALUE_BYTES_MAX
        }
    );
    let step = mvba
        .propose(&mut parties[0], valid_value(id(1), 0))
        .unwrap();
    assert_eq!(step.messages.len(), 1, "the proposal's SEND");
    assert_eq!(
        mvba.propose(&mut parties[0], valid_value(id(1), 0))
            .unwrap_err(),
        MvbaError::AlreadyProposed
    );
    let mut long = InstanceId::root("x").unwrap();
    while let Some(longer) = long.child("abcdefgh") {
        long = longer;
    }
    let mut mvba = Mvba::new(long, predicate());
    assert_eq!(
        mvba.propose(&mut parties[0], valid_value(id(1), 0))
            .unwrap_err(),
        MvbaError::InstanceIdTooLong
    );
}

// ---------------------------------------------------------------------------------------------
// Encodings.

fn samples() -> Vec<Message> {
    static SAMPLES: std::sync::OnceLock<Vec<Message>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(make_samples).clone()
}

fn make_samples() -> Vec<Message> {
    let mut parties = network::parties(4, 7);
    let value = valid_value(id(2), 0);
    let proof = certify(&parties, 2, &value);
    let id_bytes = instance();
    let name = Context::new(PERMUTATION_PURPOSE, id_bytes.as_bytes());
    let share = {
        let party = &mut parties[1];
        party.keys.coin.share(&name, &mut party.rng)
    };
    vec![
        Message::CoinShare { share },
        Message::Vote {
            candidate: 1,
            proposal: None,
        },
        Message::Vote {
            candidate: u32::MAX,
            proposal: Some((value, proof)),
        },
        Message::Vote {
            candidate: 3,
            proposal: Some((Vec::new(), certify(&parties, 1, b""))),
        },
    ]
}

#[test]
fn encodings_roundtrip() {
    for message in samples() {
        let bytes = message.to_bytes();
        assert_eq!(Message::from_bytes(&bytes).unwrap(), message);
        let wrapped = envelope(message);
        assert_eq!(
            crate::Message::from_bytes(&wrapped.to_bytes()).unwrap(),
            wrapped
        );
        for cut in 0..bytes.len() {
            assert!(Message::from_bytes(&bytes[..cut]).is_err());
        }
    }
    let parties = network::parties(4, 7);
    let proofs: Vec<CbcProof> = (1..=3)
        .map(|proposer| certify(&parties, proposer, &valid_value(id(proposer), 0)))
        .collect();
    let commit = Commit { proofs };
    assert_eq!(Commit::from_bytes(&commit.to_bytes()).unwrap(), commit);
    let value = valid_value(id(1), 0);
    let pi = encode_justification(&value, &commit.proofs[0]);
    let (decoded, proof) = decode_justification(&pi).unwrap();
    assert_eq!((decoded, &proof), (&value[..], &commit.proofs[0]));
    assert!(decode_justification(&[pi.clone(), vec![0]].concat()).is_err());
    // A maximal value fits the binary agreement's external proof.
    let largest = encode_justification(&vec![0; VALUE_BYTES_MAX], &commit.proofs[0]);
    assert!(largest.len() <= crate::aba::EXTERNAL_PROOF_BYTES_MAX);
    // Oversized lengths are refused before allocating.
    let mut oversized = vec![TAG_VOTE_FOR_TESTS, 0, 0, 0, 1, 1];
    oversized.extend_from_slice(&((VALUE_BYTES_MAX + 1) as u32).to_be_bytes());
    assert!(Message::from_bytes(&oversized).is_err());
}

/// The vote tag (`docs/protocols/mvba.md`, "Messages").
const TAG_VOTE_FOR_TESTS: u8 = 1;

proptest! {
    #[test]
    fn random_bytes_never_panic_and_decode_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes.clone());
        }
        if let Ok(commit) = Commit::from_bytes(&bytes) {
            prop_assert_eq!(commit.to_bytes(), bytes.clone());
        }
        let _ = decode_justification(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(which in 0usize..4, position in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = samples()[which].to_bytes();
        let position = position % bytes.len();
        bytes[position] = byte;
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes);
        }
    }
}
