//! Optimistic atomic broadcast end to end with real threshold cryptography over the seeded-shuffle
//! network of the atomic-broadcast tests: an honest leader delivers everything without the
//! recovery; a silent leader is replaced through the recovery; complaints at random moments (a
//! hostile timer) never break total order; an equivocating leader cannot split the order and the
//! server it deceived fetches the certified batch; bad shares and forged reports are blamed on
//! their sender; encodings round-trip and arbitrary bytes never panic the decoder.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};

use super::*;
use crate::abc::tests::driver::{Net, Node};
use crate::rbc::tests::network::id;
use crate::{Message as Envelope, Target};

impl Node for Oabc {
    type Output = Delivered;
    fn handle(&mut self, party: &mut Party, from: ServerId, message: &Envelope) -> Step<Delivered> {
        self.handle_message(party, from, message)
    }
}

fn instance() -> InstanceId {
    InstanceId::root("test").unwrap().child("oabc").unwrap()
}

fn config() -> OabcConfig {
    OabcConfig {
        abc: AbcConfig {
            batch_requests_max: 8,
            batch_bytes_max: 4096,
            request_bytes_max: 256,
            pending_requests_max: 256,
            rounds_ahead_max: 2,
        },
        pipeline_max: 3,
        ..OabcConfig::default()
    }
}

fn network(n: u16, seed: u64, silent: &[u16]) -> Net<Oabc> {
    Net::new(n, seed, silent, |_| Oabc::new(instance(), config()))
}

fn request(i: usize) -> Vec<u8> {
    format!("request {i:04}").into_bytes()
}

/// Submits `requests` to every honest server (what the runtime's forwarding does).
fn submit_everywhere(net: &mut Net<Oabc>, requests: &[Vec<u8>]) {
    for server in net.honest() {
        for request in requests {
            net.call(server, |node, party| {
                node.submit(party, request.clone()).expect("accepted")
            });
        }
    }
}

/// Runs to quiescence; while an honest server still has pending requests, its patience runs
/// out (it suspects) and the run goes on — at most `rounds` times.
fn run_with_patience(net: &mut Net<Oabc>, rounds: usize) -> usize {
    let mut suspicions = 0;
    for _ in 0..rounds {
        net.run();
        let waiting: Vec<ServerId> = net
            .honest()
            .into_iter()
            .filter(|s| net.nodes[s.slot()].pending() > 0)
            .collect();
        if waiting.is_empty() {
            return suspicions;
        }
        for server in waiting {
            suspicions += 1;
            net.call(server, |node, party| node.suspect(party));
        }
    }
    suspicions
}

/// Asserts one common sequence at every honest server, positions without gaps, each request
/// once, exactly `expected`; returns the deliveries of the first honest server.
fn assert_total_order(net: &Net<Oabc>, expected: &BTreeSet<Vec<u8>>) -> Vec<Delivered> {
    let honest = net.honest();
    let reference = net.outputs.get(&honest[0]).cloned().unwrap_or_default();
    for server in &honest {
        let outputs = net.outputs.get(server).cloned().unwrap_or_default();
        for (index, delivered) in outputs.iter().enumerate() {
            assert_eq!(delivered.position, index as u64, "{server}: positions");
        }
        let requests: Vec<&Vec<u8>> = outputs.iter().map(|d| &d.request).collect();
        let first: Vec<&Vec<u8>> = reference.iter().map(|d| &d.request).collect();
        assert_eq!(requests, first, "{server} and {} differ", honest[0]);
        assert_eq!(
            outputs.iter().map(|d| (d.epoch, d.seq)).collect::<Vec<_>>(),
            reference
                .iter()
                .map(|d| (d.epoch, d.seq))
                .collect::<Vec<_>>(),
            "{server}: the same epochs and batches"
        );
        assert_eq!(net.nodes[server.slot()].pending(), 0, "{server} pending");
    }
    let distinct: BTreeSet<Vec<u8>> = reference.iter().map(|d| d.request.clone()).collect();
    assert_eq!(distinct.len(), reference.len(), "a request delivered twice");
    assert_eq!(&distinct, expected, "delivered set");
    reference
}

#[test]
fn an_honest_leader_delivers_everything_without_the_recovery() {
    for (n, seed) in [(1u16, 1u64), (4, 2), (4, 3), (7, 4)] {
        let mut net = network(n, seed, &[]);
        let requests: Vec<Vec<u8>> = (0..40).map(request).collect();
        submit_everywhere(&mut net, &requests);
        net.run();
        let expected: BTreeSet<Vec<u8>> = requests.iter().cloned().collect();
        let delivered = assert_total_order(&net, &expected);
        assert!(delivered.iter().all(|d| d.epoch == 0 && d.seq.is_some()));
        for server in net.honest() {
            let node = &net.nodes[server.slot()];
            assert_eq!(
                node.recovery().round(),
                0,
                "{server}: the recovery never ran"
            );
            assert_eq!(node.epoch(), 0);
        }
        net.assert_no_honest_blamed();
        let batches = delivered.iter().filter_map(|d| d.seq).max().unwrap_or(0);
        println!(
            "n = {n}: 40 requests in {batches} batches, {:.1} messages and {:.0} bytes per request",
            net.messages as f64 / 40.0,
            net.bytes as f64 / 40.0
        );
    }
}

#[test]
fn a_silent_leader_is_replaced_through_the_recovery() {
    for seed in 10..13u64 {
        // Server 1 leads epoch 0 and says nothing.
        let mut net = network(4, seed, &[1]);
        let requests: Vec<Vec<u8>> = (0..20).map(request).collect();
        submit_everywhere(&mut net, &requests);
        net.run();
        assert!(
            net.outputs.values().all(|o| o.is_empty()),
            "nothing without a leader"
        );
        let suspicions = run_with_patience(&mut net, 10);
        let expected: BTreeSet<Vec<u8>> = requests.iter().cloned().collect();
        let delivered = assert_total_order(&net, &expected);
        for server in net.honest() {
            assert!(
                net.nodes[server.slot()].epoch() >= 1,
                "{server} left epoch 0"
            );
        }
        net.assert_no_honest_blamed();
        let recovered = delivered.iter().filter(|d| d.seq.is_none()).count();
        println!(
            "seed {seed}: {suspicions} suspicions; {recovered} requests ordered by the recovery, {} by epoch 1's leader",
            delivered.len() - recovered
        );
        // Later requests go through epoch 1's leader (server 2) optimistically.
        let later: Vec<Vec<u8>> = (100..110).map(request).collect();
        submit_everywhere(&mut net, &later);
        net.run();
        let mut all = expected.clone();
        all.extend(later.iter().cloned());
        let delivered = assert_total_order(&net, &all);
        assert!(
            delivered[delivered.len() - 10..]
                .iter()
                .all(|d| d.seq.is_some() && d.epoch >= 1),
            "optimistic again after the recovery"
        );
    }
}

#[test]
fn complaints_at_any_moment_never_break_total_order() {
    for seed in 20..26u64 {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut net = network(4, seed, &[]);
        let mut expected = BTreeSet::new();
        for wave in 0..4 {
            let requests: Vec<Vec<u8>> = (0..12).map(|i| request(wave * 100 + i)).collect();
            expected.extend(requests.iter().cloned());
            submit_everywhere(&mut net, &requests);
            // A hostile timer: a random server suspects after a random number of deliveries.
            for _ in 0..3 {
                net.run_for(rng.gen_range(0..60));
                for _ in 0..rng.gen_range(1..=2) {
                    let server = id(rng.gen_range(1..=4));
                    net.call(server, |node, party| node.suspect(party));
                }
            }
        }
        run_with_patience(&mut net, 20);
        let delivered = assert_total_order(&net, &expected);
        net.assert_no_honest_blamed();
        let epochs = net
            .honest()
            .iter()
            .map(|s| net.nodes[s.slot()].epoch())
            .max();
        println!(
            "seed {seed}: {} requests, {} through recoveries, epochs reached {epochs:?}",
            delivered.len(),
            delivered.iter().filter(|d| d.seq.is_none()).count()
        );
    }
}

fn batch_of(requests: &[Vec<u8>]) -> Vec<u8> {
    Batch {
        time_ms: 0,
        requests: requests.to_vec(),
    }
    .to_bytes()
}

/// What server 1 (Byzantine, the leader of epoch 0) sends to `to`: ORDER(0, 1, batch), its
/// prepare share on the chain that batch makes, and a COMMIT on the chain `committed` makes.
fn leader_sends(net: &mut Net<Oabc>, to: u16, batch: &[u8], committed: &[u8]) {
    let chain_of = |batch: &[u8]| link(&genesis(&instance(), 0), &batch_digest(&instance(), batch));
    let chain = chain_of(batch);
    let commit_share = net.parties[0].keys.agreement.sign(
        &Context::new(COMMIT_PURPOSE, instance().as_bytes()),
        &statement(0, 1, &chain_of(committed)),
    );
    let share = net.parties[0].keys.agreement.sign(
        &Context::new(PREPARE_PURPOSE, instance().as_bytes()),
        &statement(0, 1, &chain),
    );
    let envelope = |body| Envelope {
        instance: instance(),
        body: Body::Oabc(body),
    };
    net.inject(
        id(1),
        Target::Server(id(to)),
        envelope(Message::Order {
            epoch: 0,
            seq: 1,
            batch: batch.to_vec(),
        }),
    );
    net.inject(
        id(1),
        Target::Server(id(to)),
        envelope(Message::Prepare {
            epoch: 0,
            seq: 1,
            chain,
            share,
        }),
    );
    net.inject(
        id(1),
        Target::Server(id(to)),
        envelope(Message::Commit {
            epoch: 0,
            seq: 1,
            chain: chain_of(committed),
            share: commit_share,
        }),
    );
}

#[test]
fn an_equivocating_leader_cannot_split_the_order() {
    for seed in 30..33u64 {
        let mut net = network(4, seed, &[1]);
        let requests: Vec<Vec<u8>> = (0..6).map(request).collect();
        submit_everywhere(&mut net, &requests);
        let a = batch_of(&requests[..3]);
        let b = batch_of(&requests[3..]);
        // Servers 2 and 3 get batch A, server 4 gets batch B: A is certified (1, 2, 3) and
        // committed (the leader's COMMIT on A completes the quorum at server 4 too); server 4
        // must fetch A instead of delivering B.
        leader_sends(&mut net, 2, &a, &a);
        leader_sends(&mut net, 3, &a, &a);
        leader_sends(&mut net, 4, &b, &a);
        net.run();
        for server in [2u16, 3, 4] {
            let outputs = net.outputs.get(&id(server)).cloned().unwrap_or_default();
            let got: Vec<Vec<u8>> = outputs.iter().map(|d| d.request.clone()).collect();
            assert_eq!(
                got,
                requests[..3].to_vec(),
                "server {server} delivered batch A"
            );
        }
        run_with_patience(&mut net, 10);
        let expected: BTreeSet<Vec<u8>> = requests.iter().cloned().collect();
        assert_total_order(&net, &expected);
        net.assert_no_honest_blamed();
    }
}

#[test]
fn two_orders_for_one_sequence_number_are_an_equivocation_and_a_complaint() {
    let mut net = network(4, 40, &[1]);
    let requests: Vec<Vec<u8>> = (0..4).map(request).collect();
    submit_everywhere(&mut net, &requests);
    let (a, b) = (batch_of(&requests[..2]), batch_of(&requests[2..]));
    leader_sends(&mut net, 2, &a, &a);
    leader_sends(&mut net, 2, &b, &b);
    net.run();
    assert!(
        net.faults
            .iter()
            .any(|(at, f)| *at == id(2) && f.server == id(1) && f.kind == FaultKind::Equivocation),
        "server 2 blamed the leader: {:?}",
        net.faults
    );
    net.assert_no_honest_blamed();
    run_with_patience(&mut net, 10);
    assert_total_order(&net, &requests.iter().cloned().collect());
}

#[test]
fn invalid_shares_and_forged_reports_are_blamed_on_their_sender() {
    let mut net = network(4, 50, &[4]);
    let requests: Vec<Vec<u8>> = (0..5).map(request).collect();
    submit_everywhere(&mut net, &requests);
    // Server 4 signs the wrong statement for batch 1 of whatever the leader orders: its share
    // cannot combine.
    let bad = net.parties[3].keys.agreement.sign(
        &Context::new(PREPARE_PURPOSE, instance().as_bytes()),
        b"something else",
    );
    // A report in server 4's name with a bad share.
    let forged = Report {
        epoch: 0,
        seq: 0,
        chain: genesis(&instance(), 0),
        certificate: None,
        share: bad,
    };
    for to in [1u16, 2, 3] {
        net.inject(
            id(4),
            Target::Server(id(to)),
            Envelope {
                instance: instance(),
                body: Body::Oabc(Message::Report(forged.clone())),
            },
        );
    }
    net.run();
    // Make server 4's bad share take part: the honest ones prepared batch 1 under chain c.
    let chain = net.nodes[1].epochs[&0].chain[&1];
    let mut net2 = network(4, 51, &[4]);
    submit_everywhere(&mut net2, &requests);
    for to in [1u16, 2, 3] {
        net2.inject(
            id(4),
            Target::Server(id(to)),
            Envelope {
                instance: instance(),
                body: Body::Oabc(Message::Prepare {
                    epoch: 0,
                    seq: 1,
                    chain,
                    share: bad,
                }),
            },
        );
    }
    net2.run();
    assert_total_order(&net, &requests.iter().cloned().collect());
    assert_total_order(&net2, &requests.iter().cloned().collect());
    let blamed = |net: &Net<Oabc>, kind| {
        net.faults
            .iter()
            .filter(|(_, f)| f.server == id(4) && f.kind == kind)
            .count()
    };
    assert_eq!(
        blamed(&net, FaultKind::InvalidShare),
        3,
        "the forged report"
    );
    assert!(
        blamed(&net2, FaultKind::InvalidShare) >= 1,
        "the bad prepare share: {:?}",
        net2.faults
    );
    net.assert_no_honest_blamed();
    net2.assert_no_honest_blamed();
}

fn arbitrary_message() -> impl proptest::strategy::Strategy<Value = Message> {
    let parties = crate::rbc::tests::network::parties(4, 9);
    let context = Context::new("x", b"y");
    let share = parties[0].keys.agreement.sign(&context, b"z");
    let shares: Vec<_> = parties[..3]
        .iter()
        .map(|p| p.keys.agreement.sign(&context, b"z"))
        .collect();
    let certificate = parties[0]
        .group
        .agreement
        .combine(&context, b"z", &shares)
        .unwrap()
        .value;
    (
        0u8..8,
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(move |(tag, epoch, seq, chain, batch)| match tag {
            0 => Message::Order { epoch, seq, batch },
            1 => Message::Prepare {
                epoch,
                seq,
                chain,
                share,
            },
            2 => Message::Commit {
                epoch,
                seq,
                chain,
                share,
            },
            7 => Message::Committed {
                epoch,
                seq,
                chain,
                certificate,
            },
            3 => Message::Complain { epoch },
            4 => Message::Report(Report {
                epoch,
                seq: 0,
                chain,
                certificate: None,
                share,
            }),
            5 => Message::Fetch { epoch, seq, chain },
            _ => Message::Batch {
                epoch,
                seq,
                previous: chain,
                batch,
            },
        })
}

proptest! {
    #[test]
    fn messages_round_trip(message in arbitrary_message()) {
        let bytes = message.to_bytes();
        prop_assert_eq!(Message::from_bytes(&bytes).unwrap(), message);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::from_bytes(&bytes);
        let _ = Report::from_bytes(&bytes);
    }
}

#[test]
fn the_state_stays_within_its_windows() {
    let mut net = network(4, 60, &[]);
    let mut expected = BTreeSet::new();
    for wave in 0..6 {
        let requests: Vec<Vec<u8>> = (0..30).map(|i| request(wave * 100 + i)).collect();
        expected.extend(requests.iter().cloned());
        submit_everywhere(&mut net, &requests);
        net.run();
        for server in net.honest() {
            net.call(server, |node, party| node.suspect(party));
        }
    }
    run_with_patience(&mut net, 20);
    assert_total_order(&net, &expected);
    for server in net.honest() {
        let node = &net.nodes[server.slot()];
        assert!(node.live_epochs() as u64 <= EPOCHS_AHEAD_MAX + 1 + EPOCHS_RETAINED);
        assert!(node.epoch() >= 5, "{server} went through the recoveries");
        let _: &BTreeMap<u64, Epoch> = &node.epochs;
    }
}

#[test]
fn a_server_the_optimistic_phase_left_out_catches_up_from_a_commit_certificate() {
    for (seed, everyone) in [(70u64, false), (71, false), (72, true), (73, true)] {
        let mut net = network(4, seed, &[]);
        // Server 4 gets none of epoch 0's ORDER, PREPARE and COMMIT messages: from the leader
        // only (a faulty leader leaving it out; the others' PREPAREs and COMMITs reach it, too
        // few for a quorum), or from everyone.
        net.lose = Some(Box::new(move |from, to, message| {
            to == id(4)
                && (everyone || from == id(1))
                && matches!(
                    &message.body,
                    Body::Oabc(
                        Message::Order { epoch: 0, .. }
                            | Message::Prepare { epoch: 0, .. }
                            | Message::Commit { epoch: 0, .. }
                    )
                )
        }));
        let requests: Vec<Vec<u8>> = (0..30).map(request).collect();
        submit_everywhere(&mut net, &requests);
        net.run();
        let optimistic = net.outputs.get(&id(1)).map_or(0, Vec::len);
        assert_eq!(optimistic, 30, "servers 1 to 3 delivered optimistically");
        assert!(net.outputs.get(&id(4)).is_none_or(Vec::is_empty));
        // Server 4's patience runs out; alone it cannot start a recovery, but its complaint
        // brings it the others' commit certificate, and it fetches the batches.
        let suspicions = run_with_patience(&mut net, 10);
        let expected: BTreeSet<Vec<u8>> = requests.iter().cloned().collect();
        let delivered = assert_total_order(&net, &expected);
        assert!(delivered.iter().all(|d| d.epoch == 0 && d.seq.is_some()));
        assert_eq!(net.nodes[3].epoch(), 0, "no recovery was needed");
        net.assert_no_honest_blamed();
        println!(
            "seed {seed} (lost from {}): server 4 suspected {suspicions} time(s) and caught up with the {} requests",
            if everyone { "everyone" } else { "the leader" },
            delivered.len()
        );
    }
}

#[test]
fn requests_the_recovery_orders_outside_a_recovery_are_held_bounded_and_then_delivered() {
    // Server 4 (faulty, otherwise following the protocol) feeds requests straight into the
    // recovery broadcast while the optimistic phase runs: every server holds what that
    // broadcast orders until the epoch closes, and complains once `held_complain` are held.
    // Without that bound reached (the default 4,096) they stay held and epoch 0 goes on.
    for held_complain in [3, HELD_COMPLAIN] {
        let mut config = config();
        config.held_complain = held_complain;
        let mut net = Net::new(4, 80, &[], |_| Oabc::new(instance(), config));
        let honest: Vec<Vec<u8>> = (0..5).map(request).collect();
        submit_everywhere(&mut net, &honest);
        let smuggled: Vec<Vec<u8>> = (500..504).map(request).collect();
        net.call(id(4), |node, party| {
            let mut step = Step::new();
            for request in &smuggled {
                let mut tagged = vec![ABC_REQUEST];
                tagged.extend_from_slice(request);
                let child = node.abc.submit(party, tagged).expect("accepted");
                step.messages.extend(child.messages);
            }
            step
        });
        net.run();
        if held_complain == HELD_COMPLAIN {
            for server in net.honest() {
                let node = &net.nodes[server.slot()];
                assert_eq!((node.epoch(), node.held.len()), (0, 4), "{server}");
            }
            assert_total_order(&net, &honest.iter().cloned().collect());
            continue;
        }
        for server in net.honest() {
            let node = &net.nodes[server.slot()];
            assert_eq!(node.held.len(), 0, "{server}: nothing held any more");
            assert!(
                node.epoch() >= 1,
                "{server}: the held requests closed epoch 0"
            );
        }
        let mut expected: BTreeSet<Vec<u8>> = honest.iter().cloned().collect();
        expected.extend(smuggled.iter().cloned());
        let delivered = assert_total_order(&net, &expected);
        let recovered = delivered.iter().filter(|d| d.seq.is_none()).count();
        assert!(
            recovered >= smuggled.len(),
            "the smuggled requests came through the recovery"
        );
        net.assert_no_honest_blamed();
        println!(
            "{} requests: {} optimistic, {recovered} through the recovery",
            delivered.len(),
            delivered.len() - recovered
        );
    }
}

/// The runtime's send fence, as the test network applies it to a restarted server: nothing it
/// says in an epoch up to `through` (ORDER, PREPARE, COMMIT) leaves, nor in a round of the
/// recovery broadcast up to `rounds_through`; complaints, reports (from the stored
/// certificate), fetches, batches and commit certificates do, and so do the recovery
/// broadcast's exempt messages.
fn fenced(message: &Envelope, through: u64, rounds_through: Option<u64>) -> bool {
    match &message.body {
        Body::Oabc(
            Message::Order { epoch, .. }
            | Message::Prepare { epoch, .. }
            | Message::Commit { epoch, .. },
        ) => *epoch <= through,
        _ => recovery_round(message)
            .is_some_and(|round| rounds_through.is_some_and(|fence| round <= fence)),
    }
}

/// The recovery broadcast's round of a message the runtime's round fence covers (`None` for the
/// exempt ones: batch fetches and bodies, CATCH-UP and DECIDED).
fn recovery_round(message: &Envelope) -> Option<u64> {
    if matches!(
        message.body,
        Body::Cbc(crate::cbc::Message::Request { .. })
            | Body::Cbc(crate::cbc::Message::Body { .. })
            | Body::Abc(_)
    ) {
        return None;
    }
    let recovery = instance().child(ABC_LABEL)?;
    let label = message.instance.label_below(&recovery)?;
    label.strip_prefix('r')?.parse().ok()
}

#[test]
fn a_server_restarted_from_its_point_delivers_the_same_order() {
    let mut rng = ChaCha20Rng::seed_from_u64(80);
    let mut replays = 0;
    for seed in 80..92u64 {
        let mut net = network(4, seed, &[]);
        // The highest recovery round server 3 spoke in before its restart.
        let spoke = std::rc::Rc::new(std::cell::Cell::new(None::<u64>));
        let record = spoke.clone();
        net.check = Some(Box::new(move |_, from, message| {
            if from == id(3)
                && let Some(round) = recovery_round(message)
            {
                record.set(record.get().max(Some(round)));
            }
        }));
        let mut expected = BTreeSet::new();
        let first: Vec<Vec<u8>> = (0..24).map(request).collect();
        expected.extend(first.iter().cloned());
        submit_everywhere(&mut net, &first);
        net.run_for(rng.gen_range(0..400));
        // Every server complains at some moment: epoch 0 closes through the recovery.
        for server in net.honest() {
            net.call(server, |node, party| node.suspect(party));
        }
        let second: Vec<Vec<u8>> = (100..124).map(request).collect();
        expected.extend(second.iter().cloned());
        submit_everywhere(&mut net, &second);
        net.run_for(rng.gen_range(0..3000));
        // Server 3 crashes here and restarts from its point; its pending requests are gone
        // (clients resubmit), the messages in flight to it still arrive (the links resend).
        let restarted = id(3);
        let point = net.nodes[restarted.slot()].point();
        let delivered = net.outputs.get(&restarted).cloned().unwrap_or_default();
        assert_eq!(
            point.positions,
            delivered.len() as u64,
            "the point counts deliveries"
        );
        let recent: Vec<Digest> = delivered
            .iter()
            .map(|d| abc::request_digest(&instance(), &d.request))
            .collect();
        let bytes = point.to_bytes();
        let point = Point::from_bytes(&bytes).expect("a point decodes");
        let certified = net.nodes[restarted.slot()]
            .certified()
            .map(|c| Certified::from_bytes(&c.to_bytes()).expect("decodes"));
        replays += usize::from(point.epoch > 0);
        net.nodes[restarted.slot()] = Oabc::resume(
            instance(),
            config(),
            &point,
            certified.as_ref(),
            &net.parties[restarted.slot()],
            recent,
        );
        let through = point.epoch;
        let rounds_through = spoke.get();
        net.lose = Some(Box::new(move |from, _, message| {
            from == restarted && fenced(message, through, rounds_through)
        }));
        let third: Vec<Vec<u8>> = (200..224).map(request).collect();
        expected.extend(third.iter().cloned());
        submit_everywhere(&mut net, &third);
        // Clients resubmit what the restarted server had pending (deduplication keeps it once).
        submit_everywhere(&mut net, &second);
        submit_everywhere(&mut net, &first);
        run_with_patience(&mut net, 20);
        let order = assert_total_order(&net, &expected);
        // Nobody blames an honest server, except that the restarted one may take replies to
        // what its earlier life asked for as unexpected (it no longer knows those rounds).
        for (at, fault) in &net.faults {
            assert!(
                *at == restarted
                    && matches!(
                        fault.kind,
                        FaultKind::UnexpectedMessage | FaultKind::OutOfWindow
                    ),
                "{at} blamed honest {fault:?}"
            );
        }
        println!(
            "seed {seed}: restarted at epoch {} seq {} position {}; {} delivered, last epoch {}",
            point.epoch,
            point.seq,
            point.positions,
            order.len(),
            order.last().map_or(0, |d| d.epoch)
        );
    }
    assert!(
        replays > 0,
        "some restart ran the recovery again from a marker"
    );
}

#[test]
fn a_server_away_while_an_epoch_closed_catches_up_through_the_recovery_decisions() {
    for seed in 100..104u64 {
        let mut net = network(4, seed, &[]);
        let away = id(4);
        let first: Vec<Vec<u8>> = (0..12).map(request).collect();
        submit_everywhere(&mut net, &first);
        net.run();
        let point = net.nodes[away.slot()].point();
        let delivered = net.outputs.get(&away).cloned().unwrap_or_default();
        // Server 4 is down: nothing reaches it while servers 1 to 3 close epoch 0 through the
        // recovery (they all complain) and go on in epoch 1.
        net.lose = Some(Box::new(move |_, to, _| to == away));
        for server in [id(1), id(2), id(3)] {
            net.call(server, |node, party| node.suspect(party));
        }
        let second: Vec<Vec<u8>> = (100..112).map(request).collect();
        for server in [id(1), id(2), id(3)] {
            for request in &second {
                net.call(server, |node, party| {
                    node.submit(party, request.clone()).expect("accepted")
                });
            }
        }
        net.run();
        assert!(net.nodes[0].epoch() >= 1, "epoch 0 closed without server 4");
        // It restarts from its point in epoch 0 and hears from the others again; clients
        // resubmit to it. Only new traffic of epoch 1 tells it the others moved on.
        let recent: Vec<Digest> = delivered
            .iter()
            .map(|d| abc::request_digest(&instance(), &d.request))
            .collect();
        net.nodes[away.slot()] = Oabc::resume(
            instance(),
            config(),
            &point,
            None,
            &net.parties[away.slot()],
            recent,
        );
        net.lose = Some(Box::new(move |from, _, message| {
            from == away && fenced(message, 0, None)
        }));
        let third: Vec<Vec<u8>> = (200..206).map(request).collect();
        submit_everywhere(&mut net, &third);
        submit_everywhere(&mut net, &second);
        run_with_patience(&mut net, 10);
        let expected: BTreeSet<Vec<u8>> =
            first.iter().chain(&second).chain(&third).cloned().collect();
        let order = assert_total_order(&net, &expected);
        assert!(net.nodes[away.slot()].epoch() >= 1, "server 4 left epoch 0");
        println!(
            "seed {seed}: server 4 restarted at epoch 0 position {}; {} delivered, now in epoch {}",
            point.positions,
            order.len(),
            net.nodes[away.slot()].epoch()
        );
    }
}

#[test]
fn the_leader_paces_batches_that_are_not_full() {
    let paced = OabcConfig {
        batch_interval_ms: 50,
        ..config()
    };
    let mut net = Net::new(4, 110, &[], |_| Oabc::new(instance(), paced));
    let leader = id(1);
    let at = |net: &mut Net<Oabc>, time_ms: u64| {
        for server in net.honest() {
            net.nodes[server.slot()].set_time(time_ms);
        }
    };
    let orders = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let counted = orders.clone();
    net.check = Some(Box::new(move |_, _, message| {
        if matches!(message.body, Body::Oabc(Message::Order { .. })) {
            counted.set(counted.get() + 1);
        }
    }));
    at(&mut net, 1_000_000);
    // The first request goes at once, alone.
    submit_everywhere(&mut net, &[request(0)]);
    net.run();
    assert_eq!(orders.get(), 1);
    // The next ones wait for the interval, then go together.
    submit_everywhere(&mut net, &[request(1), request(2), request(3)]);
    net.run();
    assert_eq!(orders.get(), 1, "held back within the interval");
    assert_eq!(
        net.nodes[leader.slot()].next_order_at(&net.parties[leader.slot()]),
        Some(1_000_050)
    );
    at(&mut net, 1_000_049);
    net.call(leader, |node, party| node.poll(party));
    net.run();
    assert_eq!(orders.get(), 1, "still held back");
    at(&mut net, 1_000_050);
    net.call(leader, |node, party| node.poll(party));
    net.run();
    assert_eq!(orders.get(), 2, "one batch with the three");
    // A full batch (8 requests here) goes at once, pacing or not.
    let full: Vec<Vec<u8>> = (10..18).map(request).collect();
    submit_everywhere(&mut net, &full);
    net.run();
    assert_eq!(orders.get(), 3, "the full batch went at once");
    assert_eq!(
        net.nodes[leader.slot()].next_order_at(&net.parties[leader.slot()]),
        None
    );
    let expected: BTreeSet<Vec<u8>> = (0..4).chain(10..18).map(request).collect();
    let delivered = assert_total_order(&net, &expected);
    assert_eq!(
        delivered
            .iter()
            .map(|d| d.seq)
            .collect::<BTreeSet<_>>()
            .len(),
        3,
        "three batches"
    );
}

#[test]
fn a_whole_group_restarted_while_idle_closes_the_epoch_it_is_silent_in() {
    for seed in 120..126u64 {
        let mut net = network(4, seed, &[]);
        // The highest recovery round each server spoke in.
        let spoke = std::rc::Rc::new(std::cell::RefCell::new(BTreeMap::<ServerId, u64>::new()));
        let record = spoke.clone();
        net.check = Some(Box::new(move |_, from, message| {
            if let Some(round) = recovery_round(message) {
                let mut spoke = record.borrow_mut();
                let entry = spoke.entry(from).or_insert(round);
                *entry = (*entry).max(round);
            }
        }));
        // (Restarting the whole group after a recovery that left requests held for the next
        // epoch's segment is not covered: docs/node.md, known gaps.)
        let first: Vec<Vec<u8>> = (0..20).map(request).collect();
        submit_everywhere(&mut net, &first);
        net.run();
        let before: Vec<Delivered> = net.outputs.get(&id(1)).cloned().unwrap_or_default();
        // Idle: every server crashes and restarts from its point and its stored certificate,
        // silent in the epoch it is in (all spoke in it) and in the recovery rounds it spoke in.
        let mut fences = BTreeMap::new();
        for server in net.honest() {
            let node = &net.nodes[server.slot()];
            let point = node.point();
            let certified = node.certified();
            let recent: Vec<Digest> = net.outputs[&server]
                .iter()
                .map(|d| abc::request_digest(&instance(), &d.request))
                .collect();
            fences.insert(server, (point.epoch, spoke.borrow().get(&server).copied()));
            net.nodes[server.slot()] = Oabc::resume(
                instance(),
                config(),
                &point,
                certified.as_ref(),
                &net.parties[server.slot()],
                recent,
            );
        }
        net.lose = Some(Box::new(move |from, _, message| {
            fences
                .get(&from)
                .is_some_and(|(through, rounds)| fenced(message, *through, *rounds))
        }));
        let after: Vec<Vec<u8>> = (100..110).map(request).collect();
        submit_everywhere(&mut net, &after);
        let suspicions = run_with_patience(&mut net, 20);
        let mut expected: BTreeSet<Vec<u8>> = before.iter().map(|d| d.request.clone()).collect();
        expected.extend(after.iter().cloned());
        let order = assert_total_order(&net, &expected);
        let epoch = net.nodes[0].epoch();
        let silent_in = before.last().map_or(0, |b| b.epoch);
        assert!(
            order[before.len()..]
                .iter()
                .all(|d| d.seq.is_none() || d.epoch > silent_in),
            "the requests after the restart came through the recovery or a later epoch"
        );
        println!(
            "seed {seed}: whole group restarted at position {}; {suspicions} suspicions closed the \
             epoch; now in epoch {epoch}, {} delivered",
            before.len(),
            order.len()
        );
    }
}
