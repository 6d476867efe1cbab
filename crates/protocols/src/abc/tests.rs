//! Atomic broadcast, end to end with real threshold cryptography over a seeded-shuffle network:
//! all honest servers deliver the same sequence; every submitted request is delivered exactly
//! once, also when submitted to several servers; progress continues with `t` silent servers; an
//! idle group sends nothing; a server that fell behind (its messages held back while the others
//! ran rounds) catches up to the same sequence; a decided batch that never reached a server is
//! fetched; a Byzantine server buys empty rounds only message by message; copies are skipped
//! within the deduplication window; malformed batches are refused and blamed;
//! a full queue pushes back; no honest server is ever blamed; encodings are canonical and never
//! panic. The runs print requests per round and messages and bytes per delivered request.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};

use self::driver::{Net, Node};
use super::*;
use crate::rbc::tests::network::{self, id};
use crate::{Fault, Message as Envelope, Target};

/// The test network shared by the atomic-broadcast tests: `n` parties with real keys; messages
/// are delivered one at a time in an order drawn from a seeded rng. Silent servers receive and
/// send nothing. Messages to held servers wait aside until released. Every message an honest
/// server sends is counted (per recipient, without self-delivery) and shown to a check that
/// sees the sender's state right after the step that sent it.
pub(crate) mod driver {
    use std::collections::{BTreeMap, BTreeSet};

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use sintra_crypto::ServerId;
    use sintra_crypto::encoding::Encode;

    use crate::rbc::tests::network::{id, parties};
    use crate::{Fault, Message, Party, Step, Target};

    /// Deliveries after which a run is declared stuck.
    const DELIVERIES_MAX: usize = 2_000_000;

    /// A protocol instance the network drives.
    pub(crate) trait Node {
        type Output: Clone + std::fmt::Debug;
        fn handle(
            &mut self,
            party: &mut Party,
            from: ServerId,
            message: &Message,
        ) -> Step<Self::Output>;
    }

    /// Inspects `(sender state, sender, message)` for every message an honest server sends.
    pub(crate) type Check<P> = Box<dyn FnMut(&P, ServerId, &Message)>;

    /// Decides whether a message `(from, to, message)` is lost.
    pub(crate) type Lose = Box<dyn FnMut(ServerId, ServerId, &Message) -> bool>;

    pub(crate) struct Net<P: Node> {
        pub(crate) n: u16,
        pub(crate) parties: Vec<Party>,
        pub(crate) nodes: Vec<P>,
        pub(crate) silent: BTreeSet<ServerId>,
        pub(crate) held: BTreeSet<ServerId>,
        pub(crate) outputs: BTreeMap<ServerId, Vec<P::Output>>,
        pub(crate) faults: Vec<(ServerId, Fault)>,
        /// Point-to-point messages sent by honest servers (self-deliveries not counted).
        pub(crate) messages: u64,
        /// Their encoded bytes.
        pub(crate) bytes: u64,
        pub(crate) check: Option<Check<P>>,
        /// Decides whether a message `(from, to, message)` is lost (a Byzantine sender's
        /// omission).
        pub(crate) lose: Option<Lose>,
        in_flight: Vec<(ServerId, ServerId, Message)>,
        waiting: Vec<(ServerId, ServerId, Message)>,
        rng: ChaCha20Rng,
    }

    impl<P: Node> Net<P> {
        pub(crate) fn new(
            n: u16,
            seed: u64,
            silent: &[u16],
            make: impl FnMut(ServerId) -> P,
        ) -> Self {
            Self {
                n,
                parties: parties(n, seed),
                nodes: ServerId::all(n).map(make).collect(),
                silent: silent.iter().map(|&i| id(i)).collect(),
                held: BTreeSet::new(),
                outputs: BTreeMap::new(),
                faults: Vec::new(),
                messages: 0,
                bytes: 0,
                check: None,
                lose: None,
                in_flight: Vec::new(),
                waiting: Vec::new(),
                rng: ChaCha20Rng::seed_from_u64(seed ^ 0x5eed),
            }
        }

        pub(crate) fn honest(&self) -> Vec<ServerId> {
            ServerId::all(self.n)
                .filter(|server| !self.silent.contains(server))
                .collect()
        }

        /// Calls into server `at` and queues what it returns.
        pub(crate) fn call(
            &mut self,
            at: ServerId,
            f: impl FnOnce(&mut P, &mut Party) -> Step<P::Output>,
        ) {
            let step = f(&mut self.nodes[at.slot()], &mut self.parties[at.slot()]);
            self.apply(at, step);
        }

        /// Queues a message from a (Byzantine) server.
        pub(crate) fn inject(&mut self, from: ServerId, to: Target, message: Message) {
            match to {
                Target::All => {
                    for to in ServerId::all(self.n) {
                        self.in_flight.push((from, to, message.clone()));
                    }
                }
                Target::Server(to) => self.in_flight.push((from, to, message)),
            }
        }

        fn apply(&mut self, at: ServerId, step: Step<P::Output>) {
            for outgoing in &step.messages {
                if let Some(check) = &mut self.check {
                    check(&self.nodes[at.slot()], at, &outgoing.message);
                }
                let recipients = match outgoing.to {
                    Target::All => u64::from(self.n) - 1,
                    Target::Server(to) => u64::from(to != at),
                };
                self.messages += recipients;
                self.bytes += recipients * outgoing.message.to_bytes().len() as u64;
            }
            for outgoing in step.messages {
                self.inject(at, outgoing.to, outgoing.message);
            }
            self.outputs.entry(at).or_default().extend(step.outputs);
            self.faults
                .extend(step.faults.into_iter().map(|fault| (at, fault)));
        }

        /// Delivers messages in a seeded random order until none is in flight (messages to
        /// held servers wait aside).
        pub(crate) fn run(&mut self) {
            for _ in 0..DELIVERIES_MAX {
                if !self.deliver_one() {
                    return;
                }
            }
            panic!("no quiescence after {DELIVERIES_MAX} deliveries");
        }

        /// Delivers at most `deliveries` messages (in the same seeded order as [`Self::run`]).
        pub(crate) fn run_for(&mut self, deliveries: usize) {
            for _ in 0..deliveries {
                if !self.deliver_one() {
                    return;
                }
            }
        }

        /// Takes one message in flight, drawn by the seeded rng, and delivers it unless its
        /// recipient is silent or held (it then waits) or [`Self::lose`] drops it. False when
        /// nothing is in flight.
        fn deliver_one(&mut self) -> bool {
            if self.in_flight.is_empty() {
                return false;
            }
            let pick = self.rng.gen_range(0..self.in_flight.len());
            let (from, to, message) = self.in_flight.swap_remove(pick);
            if self.silent.contains(&to) {
                return true;
            }
            if self.held.contains(&to) {
                self.waiting.push((from, to, message));
                return true;
            }
            if let Some(lose) = &mut self.lose
                && lose(from, to, &message)
            {
                return true;
            }
            let step = self.nodes[to.slot()].handle(&mut self.parties[to.slot()], from, &message);
            self.apply(to, step);
            true
        }

        /// Stops delivering to `server` (its messages wait) until [`Self::release`].
        pub(crate) fn hold(&mut self, server: ServerId) {
            self.held.insert(server);
        }

        /// Delivers what waited for `server` from now on.
        pub(crate) fn release(&mut self, server: ServerId) {
            self.held.remove(&server);
            let (release, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
                .into_iter()
                .partition(|(_, to, _)| *to == server);
            self.waiting = keep;
            self.in_flight.extend(release);
        }

        /// Forgets the messages that waited for `server` (it restarted: what it had received
        /// but not processed is gone; the others do not send it again).
        pub(crate) fn discard_waiting(&mut self, server: ServerId) {
            self.waiting.retain(|(_, to, _)| *to != server);
        }

        /// Panics if a server that is not silent was blamed.
        pub(crate) fn assert_no_honest_blamed(&self) {
            for (observer, fault) in &self.faults {
                assert!(
                    self.silent.contains(&fault.server),
                    "{observer} blamed honest {fault:?}"
                );
            }
        }
    }
}

impl Node for Abc {
    type Output = Delivered;
    fn handle(&mut self, party: &mut Party, from: ServerId, message: &Envelope) -> Step<Delivered> {
        self.handle_message(party, from, message)
    }
}

fn instance() -> InstanceId {
    InstanceId::root("test").unwrap().child("abc").unwrap()
}

fn small_config() -> AbcConfig {
    AbcConfig {
        batch_requests_max: 8,
        batch_bytes_max: 4096,
        request_bytes_max: 256,
        pending_requests_max: 64,
        rounds_ahead_max: 2,
    }
}

fn network(n: u16, seed: u64, silent: &[u16], config: AbcConfig) -> Net<Abc> {
    Net::new(n, seed, silent, |_| Abc::new(instance(), config))
}

fn request(i: usize) -> Vec<u8> {
    format!("request {i:04}").into_bytes()
}

/// The delivered requests of every honest server, checking positions and the metadata.
fn sequences(net: &Net<Abc>) -> BTreeMap<ServerId, Vec<Vec<u8>>> {
    net.honest()
        .into_iter()
        .map(|server| {
            let outputs = net.outputs.get(&server).cloned().unwrap_or_default();
            for (index, delivered) in outputs.iter().enumerate() {
                assert_eq!(
                    delivered.position, index as u64,
                    "{server}: positions without gaps"
                );
            }
            (server, outputs.into_iter().map(|d| d.request).collect())
        })
        .collect()
}

/// Asserts that every honest server delivered exactly `expected` (as a set), each once, in one
/// common order, and returns that order.
fn assert_total_order(net: &Net<Abc>, expected: &BTreeSet<Vec<u8>>) -> Vec<Vec<u8>> {
    let sequences = sequences(net);
    let (first, reference) = sequences.iter().next().expect("an honest server");
    for (server, sequence) in &sequences {
        assert_eq!(
            sequence, reference,
            "{server} and {first} delivered different sequences"
        );
    }
    let distinct: BTreeSet<Vec<u8>> = reference.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        reference.len(),
        "a request was delivered twice"
    );
    assert_eq!(
        &distinct, expected,
        "delivered set differs from the submitted set"
    );
    for server in net.honest() {
        assert_eq!(
            net.nodes[server.slot()].pending(),
            0,
            "{server} still has pending requests"
        );
    }
    reference.clone()
}

fn report(label: &str, net: &Net<Abc>, delivered: usize) {
    let rounds = net
        .honest()
        .iter()
        .map(|s| net.nodes[s.slot()].round())
        .max()
        .unwrap_or(0);
    let per = |total: u64| total as f64 / delivered.max(1) as f64;
    println!(
        "{label}: {delivered} requests in {rounds} rounds ({:.1} requests/round), {:.1} messages and {:.0} bytes per delivered request",
        delivered as f64 / rounds.max(1) as f64,
        per(net.messages),
        per(net.bytes),
    );
}

#[test]
fn all_honest_servers_deliver_every_request_once_in_the_same_order() {
    for (n, seeds) in [(1u16, 0..3u64), (4, 0..3), (7, 0..1)] {
        for seed in seeds {
            let mut net = network(n, seed, &[], small_config());
            let mut expected = BTreeSet::new();
            for i in 0..24 {
                // Every third request goes to several servers, the rest to one.
                let targets: Vec<ServerId> = if i % 3 == 0 {
                    ServerId::all(n).collect()
                } else {
                    vec![id(1 + (i as u16 % n))]
                };
                for target in targets {
                    let request = request(i);
                    net.call(target, |abc, party| abc.submit(party, request).unwrap());
                }
                expected.insert(request(i));
                if i % 8 == 7 {
                    net.run();
                }
            }
            net.run();
            let order = assert_total_order(&net, &expected);
            assert!(net.faults.is_empty(), "{:?}", net.faults);
            if seed == 0 {
                report(&format!("n={n}"), &net, order.len());
            }
        }
    }
}

#[test]
fn a_request_submitted_to_every_server_is_delivered_once() {
    let mut net = network(4, 7, &[], small_config());
    for target in ServerId::all(4) {
        net.call(target, |abc, party| {
            abc.submit(party, b"everywhere".to_vec()).unwrap()
        });
    }
    net.run();
    assert_total_order(&net, &BTreeSet::from([b"everywhere".to_vec()]));
    // Submitting it again after delivery is accepted and ignored (within the window).
    net.call(id(2), |abc, party| {
        abc.submit(party, b"everywhere".to_vec()).unwrap()
    });
    assert_eq!(net.nodes[1].pending(), 0);
    net.run();
    assert_total_order(&net, &BTreeSet::from([b"everywhere".to_vec()]));
}

#[test]
fn progress_continues_with_t_silent_servers() {
    for (n, silent, seed) in [
        (4u16, vec![4u16], 1u64),
        (4, vec![1], 2),
        (7, vec![2, 6], 3),
    ] {
        let mut net = network(n, seed, &silent, small_config());
        let honest = net.honest();
        let t = usize::from(net.parties[0].faults());
        let mut expected = BTreeSet::new();
        for i in 0..16 {
            // Each request to t + 1 honest servers: the validity premise.
            for k in 0..=t {
                let target = honest[(i + k) % honest.len()];
                net.call(target, |abc, party| abc.submit(party, request(i)).unwrap());
            }
            expected.insert(request(i));
        }
        net.run();
        let order = assert_total_order(&net, &expected);
        net.assert_no_honest_blamed();
        report(&format!("n={n}, silent {silent:?}"), &net, order.len());
    }
}

#[test]
fn an_idle_group_sends_nothing_and_goes_quiet_after_its_work() {
    let mut net = network(4, 5, &[], small_config());
    net.run();
    assert_eq!(net.messages, 0);
    net.call(id(3), |abc, party| abc.submit(party, request(1)).unwrap());
    // `run` returns only once nothing is in flight: the group went quiet by itself.
    net.run();
    assert_total_order(&net, &BTreeSet::from([request(1)]));
    let rounds: BTreeSet<u64> = net.nodes.iter().map(Abc::round).collect();
    assert_eq!(rounds.len(), 1, "all servers stopped in the same round");
    let rounds = *rounds.first().unwrap();
    assert!(rounds <= 3, "one request took {rounds} rounds");
    let sent = net.messages;
    net.run();
    assert_eq!(net.messages, sent);
}

/// A Byzantine server (4) can make honest servers run empty rounds only by sending something
/// for each: a message beyond the window starts nothing (the servers only ask to catch up), and
/// a message for round 2 makes them run rounds 0 to 2 and stop.
#[test]
fn a_byzantine_server_buys_empty_rounds_only_message_by_message() {
    let mut net = network(4, 21, &[4], small_config());
    let empty_batch = |round: u64| {
        envelope(
            batch_instance(round, 4),
            crate::Body::Cbc(cbc::Message::Send {
                body: Batch::default().to_bytes(),
            }),
        )
    };
    net.inject(id(4), Target::All, empty_batch(1_000_000));
    net.run();
    assert!(net.nodes.iter().all(|abc| abc.round() == 0));
    assert_eq!(
        net.messages, 9,
        "three CATCH-UPs from each honest server, nothing else"
    );
    net.inject(id(4), Target::All, empty_batch(2));
    net.run();
    for server in net.honest() {
        assert_eq!(net.nodes[server.slot()].round(), 3, "{server}");
    }
    assert!(sequences(&net).values().all(Vec::is_empty));
    net.assert_no_honest_blamed();
}

/// Server 4's incoming messages are held while the others run several rounds (more than its
/// window ahead, so it drops much of what it then receives), then released: it catches up from
/// the kept decisions and batches, and delivers the same sequence.
#[test]
fn a_server_that_fell_behind_catches_up() {
    let config = AbcConfig {
        rounds_ahead_max: 1,
        ..small_config()
    };
    let mut net = network(4, 11, &[], config);
    let decided_sent = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = decided_sent.clone();
    net.check = Some(Box::new(move |_, _, message| {
        if matches!(message.body, crate::Body::Abc(Message::Decided { .. })) {
            counter.set(counter.get() + 1);
        }
    }));
    net.hold(id(4));
    let mut expected = BTreeSet::new();
    for i in 0..3 {
        net.call(id(1 + (i as u16 % 3)), |abc, party| {
            abc.submit(party, request(i)).unwrap()
        });
        expected.insert(request(i));
        net.run();
    }
    let ahead = net.nodes[0].round();
    assert!(ahead >= 3, "the others ran {ahead} rounds");
    assert!(ahead < ROUNDS_RETAINED, "within what the others keep");
    assert_eq!(net.nodes[3].round(), 0);
    net.release(id(4));
    net.run();
    assert_total_order(&net, &expected);
    assert_eq!(net.nodes[3].round(), net.nodes[0].round());
    assert!(decided_sent.get() > 0, "the late server was told decisions");
    assert!(net.faults.is_empty(), "{:?}", net.faults);
    // Old rounds' instances are gone; only the previous and current rounds (and the pipelined
    // next one) keep state.
    for node in &net.nodes {
        assert!(
            node.live_rounds() <= 3,
            "{} live rounds",
            node.live_rounds()
        );
    }
}

/// Rebuilds server `server`'s instance from its deliveries alone, as a restarted server does
/// from its log.
fn restart(net: &mut Net<Abc>, server: ServerId, config: AbcConfig) {
    let outputs = net.outputs.get(&server).cloned().unwrap_or_default();
    let next_round = outputs.last().map_or(0, |last| last.round + 1);
    let next_round = next_round.max(net.nodes[server.slot()].round());
    let recent = outputs.iter().map(|delivered| {
        (
            delivered.round,
            request_digest(&instance(), &delivered.request),
        )
    });
    let resumed = Abc::resume(
        instance(),
        config,
        next_round,
        outputs.len() as u64,
        recent.collect::<Vec<_>>(),
    );
    assert_eq!(resumed.delivered_count(), outputs.len() as u64);
    net.nodes[server.slot()] = resumed;
}

/// Server 4 is rebuilt from its deliveries (its log) between two bursts of requests: it
/// continues in the same rounds and positions, agrees with the others on everything after, and
/// still skips a copy of a request it delivered before the restart (the restored window).
#[test]
fn a_server_resumed_from_its_log_continues_with_the_others() {
    for seed in [3u64, 4] {
        let config = small_config();
        let mut net = network(4, seed, &[], config);
        let mut expected = BTreeSet::new();
        for i in 0..12 {
            net.call(id(1 + (i as u16 % 4)), |abc, party| {
                abc.submit(party, request(i)).unwrap()
            });
            expected.insert(request(i));
        }
        net.run();
        let round = net.nodes[3].round();
        let remembered = net.nodes[3].remembered_requests();
        restart(&mut net, id(4), config);
        assert_eq!(net.nodes[3].round(), round);
        assert_eq!(net.nodes[3].remembered_requests(), remembered);
        // A copy of an old request, at the restarted server only: ignored, as elsewhere.
        net.call(id(4), |abc, party| abc.submit(party, request(0)).unwrap());
        assert_eq!(net.nodes[3].pending(), 0, "the dedup window was restored");
        for i in 12..24 {
            net.call(id(1 + (i as u16 % 4)), |abc, party| {
                abc.submit(party, request(i)).unwrap()
            });
            expected.insert(request(i));
        }
        net.run();
        assert_total_order(&net, &expected);
        assert!(net.faults.is_empty(), "{:?}", net.faults);
    }
}

/// Server 4 stops while the others run several rounds (what was sent to it is lost), and is
/// rebuilt from its log, which is behind. Nobody sends it anything any more (the group went
/// quiet); told where the group stands, it catches up inside the protocol — decisions from
/// `t + 1` peers, batches fetched by certificate — and delivers the same sequence.
#[test]
fn a_resumed_server_behind_the_others_catches_up_when_told_where_they_are() {
    let config = small_config();
    let mut net = network(4, 19, &[], config);
    let mut expected = BTreeSet::new();
    net.call(id(1), |abc, party| abc.submit(party, request(0)).unwrap());
    expected.insert(request(0));
    net.run();
    net.hold(id(4));
    for i in 1..4 {
        net.call(id(1 + (i as u16 % 3)), |abc, party| {
            abc.submit(party, request(i)).unwrap()
        });
        expected.insert(request(i));
        net.run();
    }
    let ahead = net.nodes[0].round();
    assert!(net.nodes[3].round() + 2 < ahead, "server 4 fell behind");
    assert!(ahead < ROUNDS_RETAINED, "within what the others keep");
    net.discard_waiting(id(4));
    restart(&mut net, id(4), config);
    net.release(id(4));
    net.run();
    assert!(
        net.nodes[3].round() < ahead,
        "nothing reaches a server nobody talks to"
    );
    net.call(id(4), |abc, party| abc.catch_up_to(party, ahead - 1));
    net.run();
    assert_total_order(&net, &expected);
    assert_eq!(net.nodes[3].round(), ahead);
    assert!(net.faults.is_empty(), "{:?}", net.faults);
}

/// Server 4 falls far behind (its messages wait aside while the others run more rounds than
/// they keep for late servers) and is moved forward, as a runtime does after a certified state
/// transfer, to the others' round with their log's deduplication window. Then it receives what
/// waited for it — messages of the skipped rounds and of later ones — and blames nobody, agrees
/// with the others on every later round, and skips a copy of a request delivered in the
/// skipped rounds.
#[test]
fn a_server_advanced_past_a_transfer_continues_with_the_others() {
    let config = small_config();
    let mut net = network(4, 23, &[], config);
    let mut expected = BTreeSet::new();
    net.call(id(1), |abc, party| abc.submit(party, request(0)).unwrap());
    expected.insert(request(0));
    net.run();
    net.hold(id(4));
    for i in 1..=2 * ROUNDS_RETAINED as usize {
        net.call(id(1 + (i as u16 % 3)), |abc, party| {
            abc.submit(party, request(i)).unwrap()
        });
        expected.insert(request(i));
        net.run();
    }
    let ahead = net.nodes[0].round();
    assert!(
        net.nodes[3].round() + ROUNDS_RETAINED < ahead,
        "server 4 fell behind what the others keep"
    );
    // The transfer: server 1's log up to its round.
    let log = net.outputs[&id(1)].clone();
    let recent: Vec<(u64, Digest)> = log
        .iter()
        .map(|delivered| {
            (
                delivered.round,
                request_digest(&instance(), &delivered.request),
            )
        })
        .collect();
    let mine = net.outputs.get(&id(4)).map_or(0, Vec::len);
    net.outputs
        .entry(id(4))
        .or_default()
        .extend(log[mine..].iter().cloned());
    net.call(id(4), |abc, party| {
        abc.advance_to(party, ahead, log.len() as u64, recent)
    });
    assert_eq!(net.nodes[3].round(), ahead);
    assert_eq!(net.nodes[3].delivered_count(), log.len() as u64);
    // A round at or before the current one changes nothing.
    net.call(id(4), |abc, party| {
        abc.advance_to(party, ahead - 1, 0, Vec::new())
    });
    assert_eq!(net.nodes[3].round(), ahead);
    net.release(id(4));
    net.run();
    // A copy of a request delivered in the skipped rounds: ignored, as elsewhere.
    net.call(id(4), |abc, party| abc.submit(party, request(3)).unwrap());
    assert_eq!(net.nodes[3].pending(), 0, "the dedup window was restored");
    for i in 100..104 {
        net.call(id(1 + (i as u16 % 4)), |abc, party| {
            abc.submit(party, request(i)).unwrap()
        });
        expected.insert(request(i));
        net.run();
    }
    assert_total_order(&net, &expected);
    assert!(net.nodes[3].round() > ahead, "server 4 took part again");
    assert!(net.faults.is_empty(), "{:?}", net.faults);
}

/// Server 4 behaves like a Byzantine broadcaster that leaves server 3 out: nothing of its batch
/// broadcasts reaches server 3, though its batches get certified by the others. Whenever the
/// decision includes one, server 3 fetches the batch by its certificate.
#[test]
fn a_decided_batch_that_never_reached_a_server_is_fetched() {
    let mut net = network(4, 13, &[], small_config());
    let batches_of_4: Vec<InstanceId> = (0..64).map(|round| batch_instance(round, 4)).collect();
    net.lose = Some(Box::new(move |from, to, message| {
        from == id(4) && to == id(3) && batches_of_4.contains(&message.instance)
    }));
    let mut expected = BTreeSet::new();
    for i in 0..12 {
        net.call(id(4), |abc, party| abc.submit(party, request(i)).unwrap());
        expected.insert(request(i));
    }
    net.run();
    assert_total_order(&net, &expected);
    let from_4 = net.outputs[&id(3)]
        .iter()
        .filter(|delivered| delivered.proposer == id(4))
        .count();
    assert!(from_4 > 0, "server 3 delivered server 4's batches");
    assert!(net.faults.is_empty(), "{:?}", net.faults);
}

#[test]
fn a_loaded_group_fills_its_batches() {
    let config = AbcConfig {
        batch_requests_max: 64,
        batch_bytes_max: 64 << 10,
        pending_requests_max: 1024,
        ..small_config()
    };
    let mut net = network(4, 17, &[], config);
    let mut expected = BTreeSet::new();
    for i in 0..512 {
        net.call(id(1 + (i % 4) as u16), |abc, party| {
            abc.submit(party, request(i)).unwrap()
        });
        expected.insert(request(i));
    }
    net.run();
    let order = assert_total_order(&net, &expected);
    assert!(net.faults.is_empty());
    report(
        "n=4, 512 requests at once, batches of 64",
        &net,
        order.len(),
    );
}

/// With one server every round completes at once, which makes the deduplication window cheap
/// to observe: a copy is skipped within [`DEDUP_ROUNDS`] rounds and counts as new after.
#[test]
fn copies_are_skipped_within_the_dedup_window_only() {
    let mut net = network(1, 0, &[], small_config());
    let submit = |net: &mut Net<Abc>, request: Vec<u8>| {
        net.call(id(1), |abc, party| abc.submit(party, request).unwrap());
        net.run();
    };
    submit(&mut net, b"once".to_vec());
    let first_round = net.outputs[&id(1)][0].round;
    let mut i = 0;
    while net.nodes[0].round() < first_round + DEDUP_ROUNDS - 3 {
        submit(&mut net, request(i));
        i += 1;
    }
    // Still within the window (a request takes at most two rounds here).
    assert!(net.nodes[0].round() < first_round + DEDUP_ROUNDS);
    net.call(id(1), |abc, party| {
        abc.submit(party, b"once".to_vec()).unwrap()
    });
    assert_eq!(
        net.nodes[0].pending(),
        0,
        "a delivered request is not pending again"
    );
    while net.nodes[0].round() < first_round + DEDUP_ROUNDS + 1 {
        submit(&mut net, request(i));
        i += 1;
    }
    assert!(net.nodes[0].remembered_requests() <= i + 1);
    submit(&mut net, b"once".to_vec());
    let copies = net.outputs[&id(1)]
        .iter()
        .filter(|delivered| delivered.request == b"once")
        .count();
    assert_eq!(copies, 2, "delivered again once the window passed");
}

#[test]
fn a_full_queue_pushes_back_and_loses_nothing() {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[0];
    let config = AbcConfig {
        pending_requests_max: 3,
        ..small_config()
    };
    let mut abc = Abc::new(instance(), config);
    for i in 0..3 {
        assert!(abc.submit(party, request(i)).is_ok());
    }
    assert_eq!(
        abc.submit(party, request(3)),
        Err(AbcError::QueueFull { max: 3 })
    );
    assert_eq!(abc.pending(), 3);
    // A duplicate of a pending request is not a new one.
    assert!(abc.submit(party, request(0)).is_ok());
    assert_eq!(abc.pending(), 3);
    assert_eq!(
        abc.submit(party, vec![0; 257]),
        Err(AbcError::TooLarge { len: 257, max: 256 })
    );
    let long = InstanceId::root(&"x".repeat(ABC_INSTANCE_ID_BYTES_MAX + 1)).unwrap();
    assert_eq!(
        Abc::new(long, config).submit(party, request(0)),
        Err(AbcError::InstanceIdTooLong)
    );
}

/// A group stopped by its operator: every server is told to drain at some moment of a loaded
/// run (rounds pipelined, batches and agreements in flight). Draining servers start nothing of
/// their own but finish what any peer started, so the group goes quiet with **every round any
/// server sent a message in delivered everywhere** — no server is left with a round it spoke in
/// but did not finish (which a restarted group could never finish: docs/node.md, "Stopping").
/// The requests not ordered stay pending and are ordered once draining ends.
#[test]
fn a_draining_group_finishes_every_round_it_started_and_starts_no_other() {
    use std::cell::RefCell;
    use std::rc::Rc;
    for (seed, deliveries) in [(31u64, 400usize), (32, 900), (33, 1_500), (34, 250)] {
        let config = small_config();
        let mut net = network(4, seed, &[], config);
        let spoken: Rc<RefCell<BTreeMap<ServerId, u64>>> = Rc::default();
        let record = spoken.clone();
        net.check = Some(Box::new(move |_, from, message| {
            let round = message
                .instance
                .label_below(&instance())
                .and_then(parse_round_label);
            if let Some(round) = round {
                let mut spoken = record.borrow_mut();
                let max = spoken.entry(from).or_insert(round);
                *max = (*max).max(round);
            }
        }));
        let mut expected = BTreeSet::new();
        for i in 0..240 {
            net.call(id(1 + (i as u16 % 4)), |abc, party| {
                abc.submit(party, request(i)).unwrap()
            });
            expected.insert(request(i));
        }
        net.run_for(deliveries);
        for abc in &mut net.nodes {
            abc.set_draining(true);
        }
        net.run();
        let rounds: BTreeSet<u64> = net.nodes.iter().map(Abc::round).collect();
        assert_eq!(
            rounds.len(),
            1,
            "seed {seed}: all servers stop in one round"
        );
        let round = *rounds.first().unwrap();
        for (server, max) in spoken.borrow().iter() {
            assert!(
                *max < round,
                "seed {seed}: {server} spoke in round {max}, the group stopped before it ({round})"
            );
        }
        let delivered: usize = net.outputs.get(&id(1)).map_or(0, Vec::len);
        let pending: usize = net.nodes.iter().map(Abc::pending).sum();
        assert!(
            delivered < expected.len(),
            "seed {seed}: drained before the end"
        );
        assert!(pending > 0, "seed {seed}: the rest stays pending");
        let sent = net.messages;
        net.run();
        assert_eq!(
            net.messages, sent,
            "seed {seed}: a drained group stays quiet"
        );
        // Draining ends (a restart): the pending requests are ordered.
        for abc in &mut net.nodes {
            abc.set_draining(false);
        }
        net.call(id(1), |abc, party| abc.submit(party, request(999)).unwrap());
        expected.insert(request(999));
        net.run();
        assert_total_order(&net, &expected);
        net.assert_no_honest_blamed();
        println!(
            "seed {seed}: drained after {deliveries} deliveries in round {round}, {delivered} requests ordered, {pending} pending"
        );
    }
}

#[test]
fn configuration_is_clamped_to_what_the_children_carry() {
    let config = AbcConfig {
        batch_requests_max: 0,
        batch_bytes_max: usize::MAX,
        request_bytes_max: usize::MAX,
        pending_requests_max: 0,
        rounds_ahead_max: 0,
    }
    .clamped();
    assert_eq!(config.batch_requests_max, 1);
    assert_eq!(config.batch_bytes_max, cbc::BODY_BYTES_MAX);
    assert_eq!(config.request_bytes_max, cbc::BODY_BYTES_MAX - 16);
    assert_eq!(config.pending_requests_max, 1);
    assert_eq!(config.rounds_ahead_max, 1);
    assert_eq!(AbcConfig::default().clamped(), AbcConfig::default());
}

fn envelope(instance: InstanceId, body: crate::Body) -> Envelope {
    Envelope { instance, body }
}

fn batch_instance(round: u64, proposer: u16) -> InstanceId {
    instance()
        .child(&format!("r{round}"))
        .unwrap()
        .child(&format!("b{proposer}"))
        .unwrap()
}

fn kinds(faults: &[Fault]) -> Vec<(u16, FaultKind)> {
    faults.iter().map(|f| (f.server.get(), f.kind)).collect()
}

#[test]
fn malformed_or_oversized_batches_are_blamed_and_not_echoed() {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[1];
    let mut abc = Abc::new(instance(), small_config());
    let too_many = Batch {
        time_ms: 0,
        requests: vec![vec![1]; 9],
    };
    let too_large = Batch {
        time_ms: 0,
        requests: vec![vec![1; 257]],
    };
    for body in [vec![0, 0, 0, 9], too_many.to_bytes(), too_large.to_bytes()] {
        let send = envelope(
            batch_instance(0, 1),
            crate::Body::Cbc(cbc::Message::Send { body }),
        );
        let step = abc.handle_message(party, id(1), &send);
        assert_eq!(kinds(&step.faults), [(1, FaultKind::InvalidValue)]);
        assert!(step.messages.is_empty(), "no echo");
    }
    // A valid batch is echoed (to its sender), and its arrival makes this server join round 0.
    let good = Batch {
        time_ms: 0,
        requests: vec![request(1)],
    };
    let send = envelope(
        batch_instance(0, 1),
        crate::Body::Cbc(cbc::Message::Send {
            body: good.to_bytes(),
        }),
    );
    let step = abc.handle_message(party, id(1), &send);
    assert!(step.faults.is_empty());
    assert!(step.messages.iter().any(|m| m.to == Target::Server(id(1))));
    assert!(
        step.messages
            .iter()
            .any(|m| m.to == Target::All && m.message.instance == batch_instance(0, 2))
    );
}

#[test]
fn messages_outside_the_tree_or_the_protocol_are_blamed() {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[0];
    let mut abc = Abc::new(instance(), small_config());
    let catch_up = crate::Body::Abc(Message::CatchUp { round: 0 });
    let round = instance().child("r0").unwrap();
    let cases = [
        envelope(InstanceId::root("other").unwrap(), catch_up.clone()),
        envelope(instance().child("x1").unwrap(), catch_up.clone()),
        envelope(instance().child("r01").unwrap(), catch_up.clone()),
        envelope(round.clone(), catch_up.clone()),
        envelope(round.child("b9").unwrap(), catch_up.clone()),
        envelope(round.child("b0").unwrap(), catch_up.clone()),
        envelope(round.child("c1").unwrap(), catch_up.clone()),
        envelope(
            instance(),
            crate::Body::Cbc(cbc::Message::Request { digest: [0; 32] }),
        ),
    ];
    for message in cases {
        let step = abc.handle_message(party, id(2), &message);
        assert_eq!(
            kinds(&step.faults),
            [(2, FaultKind::UnexpectedMessage)],
            "{message:?}"
        );
    }
    // A CatchUp from oneself is never sent, and ignored.
    assert!(
        abc.handle_message(party, id(1), &envelope(instance(), catch_up))
            .faults
            .is_empty()
    );
    // Far-future rounds are dropped without blame, and make the server ask to catch up.
    let far = envelope(
        batch_instance(100, 2),
        crate::Body::Cbc(cbc::Message::Send {
            body: Batch::default().to_bytes(),
        }),
    );
    let step = abc.handle_message(party, id(2), &far);
    assert!(step.faults.is_empty());
    let asked: Vec<&Envelope> = step.messages.iter().map(|m| &m.message).collect();
    assert_eq!(asked.len(), 3);
    assert!(
        asked
            .iter()
            .all(|m| m.body == crate::Body::Abc(Message::CatchUp { round: 0 }))
    );
}

#[test]
fn decided_claims_need_t_plus_one_and_liars_are_blamed() {
    let mut parties = network::parties(4, 0);
    let party = &mut parties[0];
    let mut abc = Abc::new(instance(), small_config());
    let forged = Proposal {
        certificates: vec![],
    };
    let decided = |proposal: &Proposal| {
        envelope(
            instance(),
            crate::Body::Abc(Message::Decided {
                round: 0,
                proposal: proposal.clone(),
            }),
        )
    };
    // Two matching claims (t + 1 = 2) of an invalid proposal: not adopted, nobody blamed (a
    // claim is checked only once t + 1 agree, which cannot happen for an invalid one).
    assert!(
        abc.handle_message(party, id(2), &decided(&forged))
            .is_empty()
    );
    assert!(
        abc.handle_message(party, id(2), &decided(&forged))
            .is_empty()
    );
    let other = Proposal {
        certificates: vec![BatchCertificate {
            proposer: id(1),
            digest: [1; 32],
            signature: sample_signature(),
        }],
    };
    let step = abc.handle_message(party, id(2), &decided(&other));
    assert_eq!(kinds(&step.faults), [(2, FaultKind::Equivocation)]);
    let step = abc.handle_message(party, id(3), &decided(&forged));
    assert!(step.faults.is_empty());
    assert_eq!(abc.round(), 0, "an invalid proposal is never adopted");
}

fn sample_signature() -> sintra_crypto::bls::Signature {
    let mut parties = network::parties(4, 0);
    let batch = batch_instance(0, 1);
    let context = crate::cbc::signing_context(&batch);
    let shares: Vec<_> = parties
        .iter_mut()
        .map(|party| party.keys.broadcast.sign(&context, &[7; 32]))
        .collect();
    parties[0]
        .group
        .broadcast
        .combine(&context, &[7; 32], &shares)
        .unwrap()
        .value
}

#[test]
fn proposals_are_valid_only_with_a_quorum_of_certificates_for_their_round() {
    let mut parties = network::parties(4, 0);
    let round = instance().child("r0").unwrap();
    let certificate = |proposer: u16, round: &InstanceId| {
        let body = Batch::default().to_bytes();
        let batch = round.child(&format!("b{proposer}")).unwrap();
        let digest = cbc::body_digest(&batch, &body);
        let context = cbc::signing_context(&batch);
        let shares: Vec<_> = parties
            .iter()
            .map(|party| party.keys.broadcast.sign(&context, &digest))
            .collect();
        let signature = parties[0]
            .group
            .broadcast
            .combine(&context, &digest, &shares)
            .unwrap()
            .value;
        BatchCertificate {
            proposer: id(proposer),
            digest,
            signature,
        }
    };
    let three: Vec<_> = (1..=3).map(|j| certificate(j, &round)).collect();
    let proposal = |certificates: Vec<BatchCertificate>| Proposal { certificates };
    let party = &mut parties[0];
    assert!(proposal(three.clone()).is_valid(party, &round));
    assert!(
        !proposal(three[..2].to_vec()).is_valid(party, &round),
        "n - t needed"
    );
    let other_round = instance().child("r1").unwrap();
    assert!(
        !proposal(three.clone()).is_valid(party, &other_round),
        "bound to the round"
    );
    let mut swapped = three.clone();
    swapped[0].proposer = id(4);
    swapped.rotate_left(1);
    assert!(
        !proposal(swapped).is_valid(party, &round),
        "bound to the proposer"
    );
    // The encoding admits only increasing proposers.
    let mut bytes = proposal(three.clone()).to_bytes();
    let encoded = proposal(vec![three[1].clone(), three[0].clone(), three[2].clone()]).to_bytes();
    assert!(Proposal::from_bytes(&encoded).is_err());
    assert_eq!(Proposal::from_bytes(&bytes), Ok(proposal(three)));
    bytes.push(0);
    assert!(Proposal::from_bytes(&bytes).is_err());
}

#[test]
fn labels_parse_canonically() {
    assert_eq!(parse_round_label("r0"), Some(0));
    assert_eq!(parse_round_label("r18446744073709551615"), Some(u64::MAX));
    for bad in [
        "r",
        "r00",
        "r01",
        "r+1",
        "r-1",
        "x1",
        "r18446744073709551616",
        "r1a",
    ] {
        assert_eq!(parse_round_label(bad), None, "{bad}");
    }
    assert_eq!(parse_batch_label("b4", 4), Some(id(4)));
    for bad in ["b0", "b5", "b04", "b", "b65536", "r1"] {
        assert_eq!(parse_batch_label(bad, 4), None, "{bad}");
    }
}

#[test]
fn the_dedup_window_is_counted_in_rounds() {
    let mut delivered = state::Delivered::default();
    delivered.insert(0, [1; 32]);
    delivered.insert(0, [2; 32]);
    delivered.insert(3, [3; 32]);
    delivered.expire(1);
    assert!(!delivered.contains(&[1; 32]) && !delivered.contains(&[2; 32]));
    assert!(delivered.contains(&[3; 32]));
    assert_eq!(delivered.len(), 1);
}

#[test]
fn batches_take_the_oldest_requests_of_their_class_within_the_limits() {
    let mut pending = state::Pending::default();
    let id = instance();
    let mut by_class: [Vec<Vec<u8>>; 2] = Default::default();
    for i in 0..40 {
        let digest = request_digest(&id, &request(i));
        by_class[state::class_of(&digest)].push(request(i));
        pending.push(digest, request(i));
    }
    for (class, requests) in by_class.iter().enumerate() {
        let batch = pending.batch(class, 5, 4096, 0);
        assert_eq!(batch.requests, requests[..5]);
        let batch = pending.batch(class, 100, Batch::encoded_len([12, 12]), 0);
        assert_eq!(batch.requests, requests[..2], "bytes bound the batch");
    }
    pending.remove(&request_digest(&id, &by_class[0][0]));
    assert_eq!(pending.batch(0, 1, 4096, 0).requests, by_class[0][1..2]);
}

fn samples() -> Vec<Message> {
    let certificate = BatchCertificate {
        proposer: id(2),
        digest: [9; 32],
        signature: sample_signature(),
    };
    vec![
        Message::CatchUp { round: 0 },
        Message::CatchUp { round: u64::MAX },
        Message::Decided {
            round: 7,
            proposal: Proposal::default(),
        },
        Message::Decided {
            round: 1,
            proposal: Proposal {
                certificates: vec![
                    BatchCertificate {
                        proposer: id(1),
                        ..certificate.clone()
                    },
                    certificate,
                ],
            },
        },
    ]
}

#[test]
fn encodings_roundtrip() {
    for message in samples() {
        let bytes = message.to_bytes();
        assert_eq!(Message::from_bytes(&bytes), Ok(message.clone()));
        let envelope = envelope(instance(), crate::Body::Abc(message));
        assert_eq!(Envelope::from_bytes(&envelope.to_bytes()), Ok(envelope));
        assert!(Message::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        for cut in 0..bytes.len() {
            assert!(Message::from_bytes(&bytes[..cut]).is_err());
        }
    }
    let batch = Batch {
        time_ms: 0,
        requests: vec![vec![], vec![1, 2, 3], request(5)],
    };
    let bytes = batch.to_bytes();
    assert_eq!(bytes.len(), Batch::encoded_len([0, 3, 12]));
    assert_eq!(Batch::from_bytes(&bytes), Ok(batch));
    assert!(Batch::from_bytes(&[0xff, 0xff, 0xff, 0xff]).is_err());
    assert_eq!(
        samples()[3].to_bytes().len(),
        1 + 8 + 4 + 2 * CERTIFICATE_BYTES
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_and_decode_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes.clone());
        }
        if let Ok(batch) = Batch::from_bytes(&bytes) {
            prop_assert_eq!(batch.to_bytes(), bytes.clone());
        }
        if let Ok(proposal) = Proposal::from_bytes(&bytes) {
            prop_assert_eq!(proposal.to_bytes(), bytes);
        }
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

/// The end-to-end properties over several seeds (`SEEDS=n` for more, default 2 — the simulator's
/// sweeps in `crates/sim` explore thousands): total order, exactly once, `t` silent, and a late
/// server catching up.
#[test]
fn many_seeds() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for seed in 0..seeds {
        for (n, silent) in [(4u16, vec![]), (4, vec![2u16]), (7, vec![1, 5])] {
            let mut net = network(n, seed * 31 + 1, &silent, small_config());
            let honest = net.honest();
            let mut expected = BTreeSet::new();
            for i in 0..20 {
                for k in 0..2 {
                    let target = honest[(i * 7 + k * (seed as usize + 1)) % honest.len()];
                    net.call(target, |abc, party| abc.submit(party, request(i)).unwrap());
                }
                expected.insert(request(i));
                if (i as u64 + seed).is_multiple_of(5) {
                    net.run();
                }
            }
            net.run();
            assert_total_order(&net, &expected);
            net.assert_no_honest_blamed();
        }
        // Catch-up with random holds.
        let config = AbcConfig {
            rounds_ahead_max: 1 + seed % 3,
            ..small_config()
        };
        let mut net = network(4, seed + 100, &[], config);
        let late = id(1 + (seed % 4) as u16);
        net.hold(late);
        let others: Vec<ServerId> = ServerId::all(4).filter(|s| *s != late).collect();
        let mut expected = BTreeSet::new();
        for i in 0..(2 + seed as usize % 3) {
            net.call(others[i % 3], |abc, party| {
                abc.submit(party, request(i)).unwrap()
            });
            expected.insert(request(i));
            net.run();
        }
        net.release(late);
        net.run();
        assert_total_order(&net, &expected);
        assert!(net.faults.is_empty(), "seed {seed}: {:?}", net.faults);
        println!("seed {seed} ok");
    }
}

#[test]
fn the_round_time_is_a_median_that_t_faulty_clocks_cannot_move_outside_the_honest_ones() {
    assert_eq!(round_time([]), 0);
    assert_eq!(round_time([7]), 7);
    // n = 4, t = 1: three or four batches; one liar at either extreme stays outvoted.
    for liar in [0, u64::MAX] {
        for honest in [[100u64, 200, 300], [250, 250, 250]] {
            let time = round_time(honest.iter().copied().chain([liar]));
            assert!((honest[0]..=honest[2]).contains(&time), "{time}");
            let without = round_time(honest[..2].iter().copied().chain([liar]));
            assert!((honest[0]..=honest[1]).contains(&without), "{without}");
        }
    }
}

#[test]
fn every_server_delivers_a_round_with_the_same_time_within_the_proposed_ones() {
    let mut net = network(4, 11, &[], small_config());
    for (slot, node) in net.nodes.iter_mut().enumerate() {
        node.set_time(1_000 * (slot as u64 + 1));
    }
    for i in 0..12 {
        let request = request(i);
        net.call(id(1 + (i as u16 % 4)), |abc, party| {
            abc.submit(party, request).unwrap()
        });
    }
    net.run();
    let mut times: Option<Vec<(u64, u64)>> = None;
    for server in ServerId::all(4) {
        let delivered = &net.outputs[&server];
        assert_eq!(delivered.len(), 12);
        let mine: Vec<(u64, u64)> = delivered.iter().map(|d| (d.round, d.time_ms)).collect();
        assert!(mine.iter().all(|(_, time)| (1_000..=4_000).contains(time)));
        match &times {
            None => times = Some(mine),
            Some(first) => assert_eq!(first, &mine, "server {server} disagrees on a round time"),
        }
    }
}
