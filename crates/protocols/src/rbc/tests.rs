//! Reliable broadcast, end to end over a tiny deterministic network with real keys: an honest
//! sender makes everybody deliver its body (plain and erasure-coded alike); a silent sender makes
//! nobody deliver; an equivocating sender makes all honest servers deliver the same body or none;
//! a server that missed the body fetches it; every deviation of a Byzantine peer is recorded
//! against it and no honest server is ever blamed; encodings are canonical and never panic.

use std::collections::BTreeSet;

use proptest::prelude::*;
use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};

use self::network::{Network, id};
use super::*;
use crate::{Fault, FaultKind, Party, Target};

/// The test driver shared by the broadcast tests: `n` parties with real keys and a queue of
/// in-flight messages delivered in an order drawn from a seeded rng. Byzantine servers have no
/// instance: what is sent to them is captured, and the test speaks for them with `inject`.
pub(crate) mod network {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex, OnceLock};

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use sintra_crypto::ServerId;
    use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
    use sintra_crypto::rsa::{Primes, generate_primes};

    use crate::{Fault, FaultKind, Message, Party, Step, Target};

    /// Deliveries after which a run is declared stuck (a protocol bug, not a slow network).
    const DELIVERIES_MAX: usize = 1_000_000;

    type Keys = (Arc<GroupKeys>, Vec<Arc<ServerKeys>>);

    /// The keys of a group of `n` (largest `t`), dealt once per test process.
    pub(crate) fn keys(n: u16) -> Keys {
        static PRIMES: OnceLock<Primes> = OnceLock::new();
        static GROUPS: OnceLock<Mutex<BTreeMap<u16, Keys>>> = OnceLock::new();
        let primes = PRIMES.get_or_init(|| {
            let mut rng = ChaCha20Rng::seed_from_u64(1024);
            generate_primes(1024, &mut rng, &mut |_| {}).expect("1024-bit safe primes")
        });
        let mut groups = GROUPS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        groups
            .entry(n)
            .or_insert_with(|| {
                let parameters = GroupParameters::new(n, None).expect("n in 1..=1024");
                let mut rng = ChaCha20Rng::seed_from_u64(u64::from(n));
                let (group, servers) =
                    deal_with_primes(parameters, primes, &mut rng, &mut |_| {}).expect("dealing");
                (Arc::new(group), servers.into_iter().map(Arc::new).collect())
            })
            .clone()
    }

    /// Server `i`.
    pub(crate) fn id(i: u16) -> ServerId {
        ServerId::new(i).expect("server ids start at 1")
    }

    /// The parties of a group of `n`, seeded from `seed`.
    pub(crate) fn parties(n: u16, seed: u64) -> Vec<Party> {
        let (group, servers) = keys(n);
        servers
            .into_iter()
            .map(|keys| {
                let mut party_seed = [0u8; 32];
                party_seed[..8].copy_from_slice(&seed.to_be_bytes());
                party_seed[8..10].copy_from_slice(&keys.id.get().to_be_bytes());
                Party::new(group.clone(), keys, party_seed)
            })
            .collect()
    }

    /// A protocol instance the network drives.
    pub(crate) trait Protocol {
        type Output: Clone + std::fmt::Debug;
        fn handle(
            &mut self,
            party: &mut Party,
            from: ServerId,
            message: &Message,
        ) -> Step<Self::Output>;
    }

    impl Protocol for crate::rbc::Rbc {
        type Output = Vec<u8>;
        fn handle(
            &mut self,
            party: &mut Party,
            from: ServerId,
            message: &Message,
        ) -> Step<Vec<u8>> {
            self.handle_message(party, from, message)
        }
    }

    impl Protocol for crate::cbc::Cbc {
        type Output = crate::cbc::CbcDelivery;
        fn handle(
            &mut self,
            party: &mut Party,
            from: ServerId,
            message: &Message,
        ) -> Step<Self::Output> {
            self.handle_message(party, from, message)
        }
    }

    /// Decides whether a message `(from, to, message)` is lost.
    pub(crate) type Filter = Box<dyn FnMut(ServerId, ServerId, &Message) -> bool>;

    pub(crate) struct Network<P: Protocol> {
        pub(crate) n: u16,
        pub(crate) parties: Vec<Party>,
        pub(crate) nodes: Vec<P>,
        pub(crate) byzantine: BTreeSet<ServerId>,
        /// Messages sent to Byzantine servers, for the test to read.
        pub(crate) captured: Vec<(ServerId, ServerId, Message)>,
        /// Outputs per honest server, in order.
        pub(crate) outputs: BTreeMap<ServerId, Vec<P::Output>>,
        /// Faults recorded, with the server that recorded them.
        pub(crate) faults: Vec<(ServerId, Fault)>,
        /// Messages dropped instead of delivered.
        pub(crate) lose: Option<Filter>,
        in_flight: Vec<(ServerId, ServerId, Message)>,
        rng: ChaCha20Rng,
    }

    impl<P: Protocol> Network<P> {
        pub(crate) fn new(
            n: u16,
            seed: u64,
            byzantine: &[u16],
            mut make: impl FnMut(ServerId) -> P,
        ) -> Self {
            Self {
                n,
                parties: parties(n, seed),
                nodes: ServerId::all(n).map(&mut make).collect(),
                byzantine: byzantine.iter().map(|&i| id(i)).collect(),
                captured: Vec::new(),
                outputs: BTreeMap::new(),
                faults: Vec::new(),
                lose: None,
                in_flight: Vec::new(),
                rng: ChaCha20Rng::seed_from_u64(seed),
            }
        }

        pub(crate) fn honest(&self) -> Vec<ServerId> {
            ServerId::all(self.n)
                .filter(|server| !self.byzantine.contains(server))
                .collect()
        }

        /// Calls into server `at`'s instance and queues what it returns.
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
            for outgoing in step.messages {
                self.inject(at, outgoing.to, outgoing.message);
            }
            self.outputs.entry(at).or_default().extend(step.outputs);
            self.faults
                .extend(step.faults.into_iter().map(|fault| (at, fault)));
        }

        /// Delivers messages in a seeded random order until none is in flight.
        pub(crate) fn run(&mut self) {
            for _ in 0..DELIVERIES_MAX {
                if self.in_flight.is_empty() {
                    return;
                }
                let pick = self.rng.gen_range(0..self.in_flight.len());
                let (from, to, message) = self.in_flight.swap_remove(pick);
                if self.byzantine.contains(&to) {
                    self.captured.push((from, to, message));
                    continue;
                }
                if let Some(lose) = &mut self.lose
                    && lose(from, to, &message)
                {
                    continue;
                }
                let step =
                    self.nodes[to.slot()].handle(&mut self.parties[to.slot()], from, &message);
                self.apply(to, step);
            }
            panic!("no quiescence after {DELIVERIES_MAX} deliveries");
        }

        /// The one output of each honest server that has one; panics on a second output.
        pub(crate) fn delivered(&self) -> BTreeMap<ServerId, P::Output> {
            self.outputs
                .iter()
                .filter(|(server, _)| !self.byzantine.contains(server))
                .filter_map(|(server, outputs)| {
                    assert!(outputs.len() <= 1, "{server} delivered twice: {outputs:?}");
                    outputs.first().map(|output| (*server, output.clone()))
                })
                .collect()
        }

        /// The kinds of faults recorded against `server`, by anybody.
        pub(crate) fn faults_against(&self, server: ServerId) -> Vec<FaultKind> {
            self.faults
                .iter()
                .filter(|(_, fault)| fault.server == server)
                .map(|(_, fault)| fault.kind)
                .collect()
        }

        /// Panics if an honest server was blamed.
        pub(crate) fn assert_no_honest_blamed(&self) {
            for (observer, fault) in &self.faults {
                assert!(
                    self.byzantine.contains(&fault.server),
                    "{observer} blamed honest {fault:?}"
                );
            }
        }
    }
}

const SIZES: [u16; 4] = [1, 4, 7, 10];

fn instance() -> InstanceId {
    InstanceId::root("test").unwrap().child("rbc").unwrap()
}

fn envelope(body: Message) -> crate::Message {
    crate::Message {
        instance: instance(),
        body: crate::Body::Rbc(body),
    }
}

fn config(erasure_coded: bool) -> RbcConfig {
    RbcConfig { erasure_coded }
}

fn network(n: u16, seed: u64, byzantine: &[u16], erasure_coded: bool) -> Network<Rbc> {
    Network::new(n, seed, byzantine, |_| {
        Rbc::new(instance(), id(1), config(erasure_coded))
    })
}

fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Runs an honest broadcast of `body` from server 1 and returns what each server delivered.
fn honest_run(n: u16, seed: u64, erasure_coded: bool, body: &[u8]) -> Network<Rbc> {
    let mut net = network(n, seed, &[], erasure_coded);
    let body = body.to_vec();
    net.call(id(1), |rbc, party| rbc.broadcast(party, body).unwrap());
    net.run();
    net
}

#[test]
fn honest_sender_everybody_delivers_its_body() {
    for n in SIZES {
        for erasure_coded in [false, true] {
            for seed in 0..3 {
                let body = body_of(100 + 37 * seed as usize, seed as u8);
                let net = honest_run(n, seed, erasure_coded, &body);
                let delivered = net.delivered();
                assert_eq!(
                    delivered.len(),
                    usize::from(n),
                    "n={n} erasure={erasure_coded}"
                );
                assert!(delivered.values().all(|got| *got == body));
                assert!(net.faults.is_empty(), "{:?}", net.faults);
                assert!(net.nodes.iter().all(Rbc::terminated));
            }
        }
    }
}

#[test]
fn erasure_coded_delivers_exactly_what_plain_delivers() {
    for n in [4, 7] {
        for len in [0, 1, 2, 3, 5, 64, 1000, 4097] {
            let body = body_of(len, 9);
            let plain = honest_run(n, 7, false, &body).delivered();
            let coded = honest_run(n, 7, true, &body).delivered();
            assert_eq!(plain, coded, "n={n} len={len}");
            assert!(plain.values().all(|got| *got == body));
        }
    }
}

#[test]
fn a_maximal_body_is_delivered_and_fits_the_envelope() {
    let body = body_of(BODY_BYTES_MAX, 6);
    for (n, erasure_coded) in [(4, false), (2, true), (4, true)] {
        let mut net = network(n, 2, &[], erasure_coded);
        let sent = body.clone();
        net.call(id(1), |rbc, party| rbc.broadcast(party, sent).unwrap());
        net.run();
        let delivered = net.delivered();
        assert_eq!(delivered.len(), usize::from(n));
        assert!(delivered.values().all(|got| *got == body));
        assert!(net.faults.is_empty());
    }
    // The largest messages (a SEND, and a fragment with one data shard) fit the envelope limit.
    let send = envelope(Message::Send { body: body.clone() });
    assert!(send.to_bytes().len() <= crate::MESSAGE_BYTES_MAX);
    assert_eq!(crate::Message::from_bytes(&send.to_bytes()), Ok(send));
    let fragment = disperse(&instance(), 3, 0, &body).unwrap().remove(2);
    assert_eq!(fragment.data.len(), erasure::fragment_bytes_max(1));
    assert!(fragment.data.len() <= FRAGMENT_BYTES_MAX);
    let echo = envelope(Message::EchoFragment(fragment));
    assert!(echo.to_bytes().len() <= crate::MESSAGE_BYTES_MAX);
    assert_eq!(crate::Message::from_bytes(&echo.to_bytes()), Ok(echo));
}

#[test]
fn a_silent_sender_makes_nobody_deliver() {
    for n in SIZES.into_iter().filter(|&n| n > 1) {
        for erasure_coded in [false, true] {
            let mut net = network(n, 3, &[1], erasure_coded);
            net.run();
            assert!(net.delivered().is_empty());
            assert!(net.faults.is_empty());
        }
    }
}

/// The Byzantine sender (server 1) sends SEND(m1) to the first `split` servers and SEND(m2) to
/// the others, and echoes and readies both digests to everybody; it answers REQUESTs with the
/// wrong body. Honest servers must deliver one body all together, or nothing.
#[test]
fn an_equivocating_sender_gets_all_or_none() {
    let mut outcomes = BTreeSet::new();
    for n in [4u16, 7, 10] {
        for split in 1..n {
            for seed in 0..2 {
                let mut net = network(n, seed, &[1], false);
                let (m1, m2) = (body_of(50, 1), body_of(60, 2));
                let (h1, h2) = (body_digest(&instance(), &m1), body_digest(&instance(), &m2));
                for to in ServerId::all(n) {
                    let body = if to.get() <= split {
                        m1.clone()
                    } else {
                        m2.clone()
                    };
                    net.inject(id(1), Target::Server(to), envelope(Message::Send { body }));
                }
                for digest in [h1, h2] {
                    net.inject(id(1), Target::All, envelope(Message::Echo { digest }));
                    net.inject(id(1), Target::All, envelope(Message::Ready { digest }));
                }
                net.run();
                // Answer every request with the other body.
                let requests: Vec<_> = std::mem::take(&mut net.captured);
                for (from, _, message) in requests {
                    if let crate::Body::Rbc(Message::Request { digest }) = message.body {
                        let body = if digest == h1 { m2.clone() } else { m1.clone() };
                        net.inject(
                            id(1),
                            Target::Server(from),
                            envelope(Message::Body { body }),
                        );
                    }
                }
                net.run();

                let delivered = net.delivered();
                let bodies: BTreeSet<&Vec<u8>> = delivered.values().collect();
                assert!(bodies.len() <= 1, "n={n} split={split}: two bodies");
                assert!(
                    delivered.is_empty() || delivered.len() == net.honest().len(),
                    "n={n} split={split}: {} of {} delivered",
                    delivered.len(),
                    net.honest().len()
                );
                net.assert_no_honest_blamed();
                // Its double echoes and readies are equivocation; whoever asked it for the body
                // got the wrong one back.
                outcomes.insert(delivered.is_empty());
                let against_sender = net.faults_against(id(1));
                assert!(against_sender.contains(&FaultKind::Equivocation));
                assert!(
                    against_sender
                        .iter()
                        .all(|kind| matches!(kind, FaultKind::Equivocation | FaultKind::WrongBody))
                );
            }
        }
    }
    assert_eq!(
        outcomes.len(),
        2,
        "both all and none occur among the splits"
    );
}

#[test]
fn a_server_that_missed_the_send_fetches_the_body() {
    for n in [4u16, 7, 10] {
        let mut net = network(n, 11, &[], false);
        let late = id(n);
        net.lose = Some(Box::new(move |_, to, message| {
            to == late && matches!(message.body, crate::Body::Rbc(Message::Send { .. }))
        }));
        let body = body_of(300, 5);
        let sent = body.clone();
        net.call(id(1), |rbc, party| rbc.broadcast(party, sent).unwrap());
        net.run();
        let delivered = net.delivered();
        assert_eq!(delivered.len(), usize::from(n));
        assert_eq!(delivered[&late], body);
        assert!(net.faults.is_empty(), "{:?}", net.faults);
    }
}

/// Byzantine server 2 (not the sender) echoes a forged fragment; every honest server records it
/// and still delivers.
#[test]
fn a_bad_fragment_is_a_fault_and_the_broadcast_completes() {
    for n in [4u16, 7, 10] {
        let mut net = network(n, 5, &[2], true);
        let body = body_of(999, 3);
        let fragments = disperse(&instance(), n, net.parties[0].faults(), &body).unwrap();
        let mut forged = fragments[1].clone();
        forged.data[0] ^= 1;
        net.inject(id(2), Target::All, envelope(Message::EchoFragment(forged)));
        let sent = body.clone();
        net.call(id(1), |rbc, party| rbc.broadcast(party, sent).unwrap());
        net.run();
        let delivered = net.delivered();
        assert_eq!(delivered.len(), usize::from(n) - 1);
        assert!(delivered.values().all(|got| *got == body));
        assert_eq!(
            net.faults_against(id(2)),
            vec![FaultKind::InvalidProof; usize::from(n) - 1]
        );
        net.assert_no_honest_blamed();
    }
}

/// A Byzantine sender commits to fragments that are not a codeword: every honest server
/// delivers the invalid marker and blames the sender.
#[test]
fn an_inconsistent_dispersal_delivers_the_invalid_marker_everywhere() {
    for n in [4u16, 7, 10] {
        let mut net = network(n, 8, &[1], true);
        let t = net.parties[0].faults();
        let k = erasure::data_shards(t);
        let mut shards = erasure::encode(&body_of(500, 4), usize::from(n), k).unwrap();
        shards[usize::from(n) - 1][3] ^= 0x40;
        for fragment in commit(&instance(), shards) {
            let to = fragment.index;
            if to == id(1) {
                net.inject(
                    id(1),
                    Target::All,
                    envelope(Message::EchoFragment(fragment)),
                );
            } else {
                net.inject(
                    id(1),
                    Target::Server(to),
                    envelope(Message::Fragment(fragment)),
                );
            }
        }
        net.run();
        let delivered = net.delivered();
        assert_eq!(delivered.len(), usize::from(n) - 1, "n={n}");
        assert!(delivered.values().all(|got| got.as_slice() == INVALID_BODY));
        assert_eq!(
            net.faults_against(id(1)),
            vec![FaultKind::WrongBody; usize::from(n) - 1]
        );
        net.assert_no_honest_blamed();
    }
}

/// Direct calls into server 4 of a group of 4: one handler at a time.
struct Probe {
    party: Party,
    rbc: Rbc,
}

impl Probe {
    fn new(erasure_coded: bool) -> Self {
        let party = network::parties(4, 0).pop().unwrap();
        Self {
            party,
            rbc: Rbc::new(instance(), id(1), config(erasure_coded)),
        }
    }

    fn handle(&mut self, from: u16, body: Message) -> Step<Vec<u8>> {
        self.rbc
            .handle_message(&mut self.party, id(from), &envelope(body))
    }

    fn faults(&mut self, from: u16, body: Message) -> Vec<Fault> {
        self.handle(from, body).faults
    }
}

fn kinds(faults: &[Fault]) -> Vec<(u16, FaultKind)> {
    faults.iter().map(|f| (f.server.get(), f.kind)).collect()
}

#[test]
fn a_wrong_body_answer_is_blamed_and_an_honest_answer_delivers() {
    let mut probe = Probe::new(false);
    let body = body_of(40, 1);
    let digest = body_digest(&instance(), &body);
    for from in 1..=3 {
        assert!(probe.faults(from, Message::Echo { digest }).is_empty());
    }
    let mut requests = Vec::new();
    for from in 1..=3 {
        let step = probe.handle(from, Message::Ready { digest });
        requests.extend(step.messages);
    }
    // 2t + 1 = 3 readies, no body: ask the three echoers, once each.
    let asked: Vec<_> = requests
        .iter()
        .filter(|out| matches!(out.message.body, crate::Body::Rbc(Message::Request { .. })))
        .map(|out| out.to)
        .collect();
    assert_eq!(asked, [1, 2, 3].map(|i| Target::Server(id(i))));
    let garbage = Message::Body {
        body: b"garbage".to_vec(),
    };
    assert_eq!(
        kinds(&probe.faults(3, garbage.clone())),
        [(3, FaultKind::WrongBody)]
    );
    assert_eq!(
        kinds(&probe.faults(3, garbage)),
        [(3, FaultKind::UnexpectedMessage)],
        "one answer per asked server"
    );
    let step = probe.handle(2, Message::Body { body: body.clone() });
    assert_eq!(step.outputs, vec![body.clone()]);
    assert_eq!(probe.rbc.delivered(), Some(body.as_slice()));
    // A late honest answer is ignored, an unsolicited one is not.
    assert!(
        probe
            .faults(1, Message::Body { body: body.clone() })
            .is_empty()
    );
    assert_eq!(
        kinds(&probe.faults(4, Message::Body { body })),
        [(4, FaultKind::UnexpectedMessage)]
    );
}

#[test]
fn deviations_are_recorded_against_their_sender() {
    let mut probe = Probe::new(false);
    let body = body_of(10, 0);
    let digest = body_digest(&instance(), &body);
    let other = body_digest(&instance(), b"other");
    // SEND from a server that is not the sender.
    assert_eq!(
        kinds(&probe.faults(2, Message::Send { body: body.clone() })),
        [(2, FaultKind::UnexpectedMessage)]
    );
    // The sender's SEND, a repeat (ignored), and a different one (equivocation).
    let step = probe.handle(1, Message::Send { body: body.clone() });
    assert!(step.faults.is_empty());
    assert_eq!(step.messages.len(), 1, "one ECHO to all");
    assert!(
        probe
            .handle(1, Message::Send { body: body.clone() })
            .is_empty()
    );
    assert_eq!(
        kinds(&probe.faults(
            1,
            Message::Send {
                body: b"other".to_vec()
            }
        )),
        [(1, FaultKind::Equivocation)]
    );
    // Echo and ready equivocation.
    assert!(probe.faults(2, Message::Echo { digest }).is_empty());
    assert!(probe.handle(2, Message::Echo { digest }).is_empty());
    assert_eq!(
        kinds(&probe.faults(2, Message::Echo { digest: other })),
        [(2, FaultKind::Equivocation)]
    );
    assert!(probe.faults(3, Message::Ready { digest: other }).is_empty());
    assert_eq!(
        kinds(&probe.faults(3, Message::Ready { digest })),
        [(3, FaultKind::Equivocation)]
    );
    // Requests: for the echoed digest answered once; a second one, or one for a digest this
    // server never echoed, is a fault.
    let step = probe.handle(2, Message::Request { digest });
    assert!(step.faults.is_empty());
    assert!(matches!(
        &step.messages[..],
        [out] if out.to == Target::Server(id(2))
            && out.message.body == crate::Body::Rbc(Message::Body { body: body.clone() })
    ));
    assert_eq!(
        kinds(&probe.faults(2, Message::Request { digest })),
        [(2, FaultKind::UnexpectedMessage)]
    );
    assert_eq!(
        kinds(&probe.faults(3, Message::Request { digest: other })),
        [(3, FaultKind::UnexpectedMessage)]
    );
    // An unsolicited body; messages of the erasure-coded variant.
    assert_eq!(
        kinds(&probe.faults(3, Message::Body { body: body.clone() })),
        [(3, FaultKind::UnexpectedMessage)]
    );
    let fragment = disperse(&instance(), 4, 1, &body).unwrap().remove(3);
    assert_eq!(
        kinds(&probe.faults(1, Message::Fragment(fragment))),
        [(1, FaultKind::UnexpectedMessage)]
    );
}

#[test]
fn messages_for_another_instance_or_protocol_are_rejected() {
    let mut probe = Probe::new(false);
    let body = body_of(10, 0);
    let mut message = envelope(Message::Send { body: body.clone() });
    message.instance = InstanceId::root("test").unwrap().child("other").unwrap();
    let step = probe.rbc.handle_message(&mut probe.party, id(1), &message);
    assert_eq!(kinds(&step.faults), [(1, FaultKind::UnexpectedMessage)]);
    assert_eq!(step.faults[0].instance, message.instance);
    assert!(step.messages.is_empty());
    let cbc = crate::Message {
        instance: instance(),
        body: crate::Body::Cbc(crate::cbc::Message::Send { body }),
    };
    let step = probe.rbc.handle_message(&mut probe.party, id(1), &cbc);
    assert_eq!(kinds(&step.faults), [(1, FaultKind::UnexpectedMessage)]);
    // A message from outside the group.
    let step = probe.handle(5, Message::Ready { digest: [0; 32] });
    assert_eq!(kinds(&step.faults), [(5, FaultKind::UnexpectedMessage)]);
}

#[test]
fn fragment_deviations_are_recorded_against_their_sender() {
    let mut probe = Probe::new(true);
    let body = body_of(77, 2);
    let fragments = disperse(&instance(), 4, 1, &body).unwrap();
    // Fragment 3 sent to server 4: not its own.
    assert_eq!(
        kinds(&probe.faults(1, Message::Fragment(fragments[2].clone()))),
        [(1, FaultKind::InvalidProof)]
    );
    let mut probe = Probe::new(true);
    let step = probe.handle(1, Message::Fragment(fragments[3].clone()));
    assert!(step.faults.is_empty());
    assert!(matches!(
        &step.messages[..],
        [out] if out.to == Target::All
            && out.message.body == crate::Body::Rbc(Message::EchoFragment(fragments[3].clone()))
    ));
    // An echo of someone else's fragment; a forged path; an oversized fragment; a plain echo.
    assert_eq!(
        kinds(&probe.faults(2, Message::EchoFragment(fragments[2].clone()))),
        [(2, FaultKind::InvalidProof)]
    );
    let mut forged = fragments[2].clone();
    forged.merkle_path[0][0] ^= 1;
    assert_eq!(
        kinds(&probe.faults(3, Message::EchoFragment(forged))),
        [(3, FaultKind::InvalidProof)]
    );
    let mut oversized = fragments[1].clone();
    oversized.data = vec![0; erasure::fragment_bytes_max(2) + 2];
    let mut fresh = Probe::new(true);
    assert_eq!(
        kinds(&fresh.faults(2, Message::EchoFragment(oversized))),
        [(2, FaultKind::Malformed)]
    );
    // A second, different echo from the same server.
    assert_eq!(
        kinds(&probe.faults(2, Message::EchoFragment(fragments[1].clone()))),
        [(2, FaultKind::Equivocation)]
    );
    assert_eq!(
        kinds(&probe.faults(1, Message::Echo { digest: [1; 32] })),
        [(1, FaultKind::UnexpectedMessage)]
    );
    assert!(
        probe
            .faults(1, Message::EchoFragment(fragments[0].clone()))
            .is_empty()
    );
}

#[test]
fn misuse_is_an_error() {
    let mut parties = network::parties(4, 0);
    let mut rbc = Rbc::new(instance(), id(1), RbcConfig::default());
    assert_eq!(
        rbc.broadcast(&mut parties[1], vec![1]),
        Err(RbcError::NotSender)
    );
    assert_eq!(
        rbc.broadcast(&mut parties[0], vec![0; BODY_BYTES_MAX + 1]),
        Err(RbcError::BodyTooLarge {
            len: BODY_BYTES_MAX + 1,
            max: BODY_BYTES_MAX
        })
    );
    assert!(rbc.broadcast(&mut parties[0], vec![1]).is_ok());
    assert_eq!(
        rbc.broadcast(&mut parties[0], vec![1]),
        Err(RbcError::AlreadyBroadcast)
    );
    assert_eq!(rbc.sender(), id(1));
    assert_eq!(rbc.instance(), &instance());
}

fn samples() -> Vec<Message> {
    let fragment = disperse(&instance(), 7, 2, b"sample").unwrap().remove(4);
    vec![
        Message::Send { body: vec![] },
        Message::Send {
            body: body_of(33, 1),
        },
        Message::Echo { digest: [7; 32] },
        Message::Ready { digest: [8; 32] },
        Message::Request { digest: [9; 32] },
        Message::Body {
            body: vec![1, 2, 3],
        },
        Message::Fragment(fragment.clone()),
        Message::EchoFragment(fragment),
    ]
}

#[test]
fn encodings_roundtrip() {
    for message in samples() {
        let bytes = message.to_bytes();
        assert_eq!(Message::from_bytes(&bytes), Ok(message.clone()));
        let envelope = envelope(message);
        assert_eq!(
            crate::Message::from_bytes(&envelope.to_bytes()),
            Ok(envelope)
        );
        assert!(Message::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        for cut in 0..bytes.len() {
            assert!(Message::from_bytes(&bytes[..cut]).is_err());
        }
    }
    // Length fields above the limits are refused before allocating.
    let mut huge = vec![0u8];
    huge.extend_from_slice(&u32::try_from(BODY_BYTES_MAX + 1).unwrap().to_be_bytes());
    assert!(Message::from_bytes(&huge).is_err());
    let mut long_path = Message::Fragment(Fragment {
        root: [0; 32],
        index: id(1),
        data: vec![0, 0],
        merkle_path: vec![[0; 32]; MERKLE_PATH_LEN_MAX + 1],
    })
    .to_bytes();
    assert!(Message::from_bytes(&long_path).is_err());
    long_path.truncate(long_path.len() - 32);
    assert!(Message::from_bytes(&long_path).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_and_decode_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes.clone());
        }
        if let Ok(message) = crate::Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(which in 0usize..8, position in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = samples()[which].to_bytes();
        let position = position % bytes.len();
        bytes[position] = byte;
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes);
        }
    }
}
