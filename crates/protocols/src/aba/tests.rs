//! Binary agreement between `n` in-process servers with real cryptography, driven by a seeded
//! random scheduler (any message may overtake any other, and may arrive before its receiver's
//! input): all honest servers decide the same value and terminate; plain validity (unanimous
//! input `b` decides `b`) and biased validity (`t + 1` honest proposals of `1` decide `1`, with a
//! valid external proof); termination with `t` silent or Byzantine servers; faults recorded
//! against Byzantine senders only, never against honest ones; decisions that prove themselves;
//! messages bound to their instance; per-round state kept only within the window; canonical
//! encodings that never panic on arbitrary bytes.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::encoding::{Decode, Encode};
use sintra_crypto::rsa;

use super::*;
use crate::{Fault, Target};

// ---------------------------------------------------------------------------------------------
// Keys: RSA primes once per process (the dealer needs them; agreement does not use RSA), one
// dealing per group size.

struct Keys {
    group: Arc<GroupKeys>,
    servers: Vec<Arc<ServerKeys>>,
}

fn keys(n: u16) -> &'static Keys {
    static PRIMES: OnceLock<rsa::Primes> = OnceLock::new();
    static KEYS: OnceLock<Mutex<BTreeMap<u16, &'static Keys>>> = OnceLock::new();
    let primes = PRIMES.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        rsa::generate_primes(1024, &mut rng, &mut |_| {}).expect("primes")
    });
    let mut dealt = KEYS
        .get_or_init(|| Mutex::new(BTreeMap::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    dealt.entry(n).or_insert_with(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(n));
        let parameters = GroupParameters::new(n, None).expect("parameters");
        let (group, servers) =
            deal_with_primes(parameters, primes, &mut rng, &mut |_| {}).expect("dealing");
        Box::leak(Box::new(Keys {
            group: Arc::new(group),
            servers: servers.into_iter().map(Arc::new).collect(),
        }))
    })
}

fn party(n: u16, id: u16, seed: u64) -> Party {
    let keys = keys(n);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    bytes[8..10].copy_from_slice(&id.to_be_bytes());
    Party::new(
        Arc::clone(&keys.group),
        Arc::clone(&keys.servers[usize::from(id) - 1]),
        bytes,
    )
}

fn server(id: u16) -> ServerId {
    ServerId::new(id).expect("server id")
}

fn instance(label: &str) -> InstanceId {
    InstanceId::root("test")
        .and_then(|root| root.child(label))
        .expect("instance id")
}

// ---------------------------------------------------------------------------------------------
// The external predicate of the biased tests: `π` is a broadcast-key threshold signature on a
// fixed claim — a stand-in for MVBA's consistent-broadcast certificate, with real verification.

const CLAIM_PURPOSE: &str = "test/aba-external";
const CLAIM: &[u8] = b"the candidate was broadcast";

struct SignedClaim;

impl ExternalValidity for SignedClaim {
    fn is_valid(&self, party: &mut Party, proof: &[u8]) -> bool {
        let Ok(signature) = Signature::from_bytes(proof) else {
            return false;
        };
        let group = &party.group;
        party.cache.check(&[b"test/claim", proof], || {
            group
                .broadcast
                .verify(&Context::new(CLAIM_PURPOSE, b"claim"), CLAIM, &signature)
                .is_ok()
        })
    }
}

fn biased() -> AbaMode {
    AbaMode::Biased(Arc::new(SignedClaim))
}

/// A valid `π`: the broadcast servers' combined signature on the claim.
fn valid_claim(n: u16) -> Vec<u8> {
    let keys = keys(n);
    let context = Context::new(CLAIM_PURPOSE, b"claim");
    let shares: Vec<SignatureShare> = keys
        .servers
        .iter()
        .map(|server| server.broadcast.sign(&context, CLAIM))
        .collect();
    keys.group
        .broadcast
        .combine(&context, CLAIM, &shares)
        .expect("combine")
        .value
        .to_bytes()
}

/// A well-formed `π` that fails the predicate: the signature on another claim.
fn invalid_claim(n: u16) -> Vec<u8> {
    let keys = keys(n);
    let context = Context::new(CLAIM_PURPOSE, b"claim");
    let shares: Vec<SignatureShare> = keys
        .servers
        .iter()
        .map(|server| server.broadcast.sign(&context, b"another claim"))
        .collect();
    keys.group
        .broadcast
        .combine(&context, b"another claim", &shares)
        .expect("combine")
        .value
        .to_bytes()
}

// ---------------------------------------------------------------------------------------------
// The driver: a queue of events, one picked uniformly at random at each step.

/// Rewrites what a Byzantine server sends to one recipient (it runs the honest code
/// underneath).
type Mutator = fn(&mut Party, &InstanceId, Message, u16) -> Vec<Message>;

#[derive(Clone, Copy)]
enum Role {
    Honest,
    /// Never starts, receives nothing.
    Silent,
    Byzantine(Mutator),
}

enum Event {
    Propose(u16),
    Deliver {
        from: ServerId,
        to: u16,
        /// Shared by the copies of a message sent to all.
        message: Arc<crate::Message>,
    },
}

/// Events after which a run counts as stuck (a run of 10 servers takes a few thousand).
const EVENTS_MAX: usize = 200_000;

struct Net {
    n: u16,
    instance: InstanceId,
    mode: AbaMode,
    parties: Vec<Party>,
    nodes: Vec<Aba>,
    roles: Vec<Role>,
    inputs: Vec<(bool, Option<Vec<u8>>)>,
    queue: Vec<Event>,
    rng: ChaCha20Rng,
    /// (reporter, fault) for faults recorded by honest servers.
    faults: Vec<(ServerId, Fault)>,
    decisions: Vec<Option<Decision>>,
    /// Every message sent, for the encoding tests (capped).
    sent: Vec<crate::Message>,
}

const SENT_KEPT_MAX: usize = 2_000;

impl Net {
    fn new(
        n: u16,
        mode: AbaMode,
        roles: Vec<Role>,
        inputs: Vec<(bool, Option<Vec<u8>>)>,
        seed: u64,
    ) -> Self {
        let instance = instance("aba");
        let parties = (1..=n).map(|id| party(n, id, seed)).collect();
        let nodes = (1..=n)
            .map(|_| Aba::new(instance.clone(), mode.clone()))
            .collect();
        let queue = (1..=n)
            .filter(|id| !matches!(roles[usize::from(*id) - 1], Role::Silent))
            .map(Event::Propose)
            .collect();
        Self {
            n,
            instance,
            mode,
            parties,
            nodes,
            roles,
            inputs,
            queue,
            rng: ChaCha20Rng::seed_from_u64(seed ^ 0x5eed),
            faults: Vec::new(),
            decisions: vec![None; usize::from(n)],
            sent: Vec::new(),
        }
    }

    fn honest(&self, id: u16) -> bool {
        matches!(self.roles[usize::from(id) - 1], Role::Honest)
    }

    fn run(&mut self) {
        let mut events = 0;
        while !self.queue.is_empty() {
            events += 1;
            assert!(
                events <= EVENTS_MAX,
                "no termination after {EVENTS_MAX} events"
            );
            let index = self.rng.gen_range(0..self.queue.len());
            let event = self.queue.swap_remove(index);
            let (id, step) = match event {
                Event::Propose(id) => {
                    let slot = usize::from(id) - 1;
                    let (value, proof) = self.inputs[slot].clone();
                    let step = self.nodes[slot]
                        .propose(&mut self.parties[slot], value, proof)
                        .expect("a valid input");
                    (id, step)
                }
                Event::Deliver { from, to, message } => {
                    let slot = usize::from(to) - 1;
                    if matches!(self.roles[slot], Role::Silent) {
                        continue;
                    }
                    let step =
                        self.nodes[slot].handle_message(&mut self.parties[slot], from, &message);
                    (to, step)
                }
            };
            self.absorb(id, step);
            if self.honest(id) {
                check_state_bounds(&self.nodes[usize::from(id) - 1]);
            }
        }
    }

    fn absorb(&mut self, id: u16, step: Step<Decision>) {
        let slot = usize::from(id) - 1;
        let from = server(id);
        if self.honest(id) {
            self.faults
                .extend(step.faults.into_iter().map(|fault| (from, fault)));
            assert!(step.outputs.len() <= 1, "one decision per step");
            for decision in step.outputs {
                assert!(self.decisions[slot].is_none(), "{from} decided twice");
                self.decisions[slot] = Some(decision);
            }
        }
        for outgoing in step.messages {
            let recipients: Vec<u16> = match outgoing.to {
                Target::All => (1..=self.n).collect(),
                Target::Server(to) => vec![to.get()],
            };
            let mutate = match (self.roles[slot], &outgoing.message.body) {
                (Role::Byzantine(mutate), Body::Aba(body)) => Some((mutate, body.clone())),
                _ => None,
            };
            let Some((mutate, body)) = mutate else {
                if self.sent.len() < SENT_KEPT_MAX {
                    self.sent.push(outgoing.message.clone());
                }
                let message = Arc::new(outgoing.message);
                for to in recipients {
                    self.queue.push(Event::Deliver {
                        from,
                        to,
                        message: Arc::clone(&message),
                    });
                }
                continue;
            };
            // A Byzantine server may send each recipient something else.
            for to in recipients {
                let bodies = mutate(&mut self.parties[slot], &self.instance, body.clone(), to);
                for body in bodies {
                    self.queue.push(Event::Deliver {
                        from,
                        to,
                        message: Arc::new(crate::Message {
                            instance: outgoing.message.instance.clone(),
                            body: Body::Aba(body),
                        }),
                    });
                }
            }
        }
    }

    /// Checks agreement, termination, decision proofs, and that honest servers blamed only
    /// Byzantine ones. Returns the common decision.
    fn check_outcome(&mut self) -> Decision {
        let mut common: Option<Decision> = None;
        for id in 1..=self.n {
            if !self.honest(id) {
                continue;
            }
            let slot = usize::from(id) - 1;
            let decision = self.decisions[slot]
                .clone()
                .unwrap_or_else(|| panic!("server {id} did not decide"));
            assert!(self.nodes[slot].terminated());
            assert_eq!(self.nodes[slot].decision(), Some(&decision));
            assert!(
                verify_decision(
                    &mut self.parties[slot],
                    &self.instance,
                    &self.mode,
                    &decision
                ),
                "the decision of server {id} does not verify"
            );
            if let Some(common) = &common {
                assert_eq!(common.value, decision.value, "disagreement");
            } else {
                common = Some(decision);
            }
        }
        for (reporter, fault) in &self.faults {
            assert!(
                !self.honest(fault.server.get()),
                "{reporter} blamed honest {}: {:?}",
                fault.server,
                fault.kind
            );
        }
        common.expect("at least one honest server")
    }

    /// The servers some honest server recorded a fault against.
    fn blamed(&self) -> BTreeSet<u16> {
        self.faults
            .iter()
            .map(|(_, fault)| fault.server.get())
            .collect()
    }
}

/// The state an undecided instance keeps lies within the window; a decided one keeps nothing
/// but its decision.
fn check_state_bounds(aba: &Aba) {
    if aba.terminated() {
        assert!(aba.rounds.is_empty() && aba.pre_process.is_empty());
        return;
    }
    let base = aba.round.max(1);
    for (round, state) in &aba.rounds {
        assert!(*round + 1 >= base, "round {round} kept in round {base}");
        assert!(*round <= base + ROUNDS_AHEAD_MAX);
        if *round < aba.round {
            assert!(state.pre_votes.is_empty() && state.main_votes.is_empty());
        }
    }
    if aba.pre_processing_done {
        assert!(aba.pre_process.is_empty());
    }
}

fn t(n: u16) -> u16 {
    (n - 1) / 3
}

fn honest_roles(n: u16) -> Vec<Role> {
    vec![Role::Honest; usize::from(n)]
}

/// Roles with the last `t` servers in `role`.
fn roles_with_last_t(n: u16, role: Role) -> Vec<Role> {
    let honest = usize::from(n - t(n));
    (0..usize::from(n))
        .map(|slot| if slot < honest { Role::Honest } else { role })
        .collect()
}

fn plain_inputs(values: impl IntoIterator<Item = bool>) -> Vec<(bool, Option<Vec<u8>>)> {
    values.into_iter().map(|value| (value, None)).collect()
}

fn biased_inputs(n: u16, values: impl IntoIterator<Item = bool>) -> Vec<(bool, Option<Vec<u8>>)> {
    let proof = valid_claim(n);
    values
        .into_iter()
        .map(|value| (value, value.then(|| proof.clone())))
        .collect()
}

fn random_values(n: u16, seed: u64) -> Vec<bool> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed.wrapping_mul(7919));
    (0..n).map(|_| rng.r#gen()).collect()
}

const SIZES: [u16; 4] = [1, 4, 7, 10];

/// Seeds per group size: many for small groups, fewer for large (real pairings per message).
fn seeds(n: u16) -> u64 {
    match n {
        1 => 4,
        4 => 24,
        7 => 8,
        _ => 4,
    }
}

// ---------------------------------------------------------------------------------------------
// Agreement, validity, termination.

#[test]
fn unanimous_input_is_decided_in_round_one() {
    for n in SIZES {
        for seed in 0..seeds(n).min(6) {
            for value in [false, true] {
                let mut net = Net::new(
                    n,
                    AbaMode::Plain,
                    honest_roles(n),
                    plain_inputs(vec![value; usize::from(n)]),
                    seed,
                );
                net.run();
                let decision = net.check_outcome();
                assert_eq!(decision.value, value, "n = {n}, seed {seed}");
                assert_eq!(decision.round, 1);
                assert!(net.faults.is_empty(), "{:?}", net.faults);
            }
        }
    }
}

#[test]
fn mixed_inputs_agree_and_terminate() {
    for n in SIZES {
        for seed in 0..seeds(n) {
            let values = random_values(n, seed);
            let mut net = Net::new(
                n,
                AbaMode::Plain,
                honest_roles(n),
                plain_inputs(values.clone()),
                seed,
            );
            net.run();
            let decision = net.check_outcome();
            assert!(values.contains(&decision.value), "validity");
            assert!(net.faults.is_empty(), "{:?}", net.faults);
        }
    }
}

#[test]
fn biased_t_plus_one_ones_decide_one_with_a_valid_proof() {
    for n in SIZES {
        for seed in 0..seeds(n).min(8) {
            // Exactly t + 1 honest servers propose 1 (at random positions), the rest 0.
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut values = vec![false; usize::from(n)];
            let mut ones = 0;
            while ones < t(n) + 1 {
                let slot = rng.gen_range(0..usize::from(n));
                if !values[slot] {
                    values[slot] = true;
                    ones += 1;
                }
            }
            let mut net = Net::new(n, biased(), honest_roles(n), biased_inputs(n, values), seed);
            net.run();
            let decision = net.check_outcome();
            assert!(decision.value, "n = {n}, seed {seed}");
            assert_eq!(decision.round, 1);
            let proof = decision.external.clone().expect("a decision 1 carries π");
            assert!(SignedClaim.is_valid(&mut party(n, 1, 0), &proof));
        }
    }
}

#[test]
fn biased_mixed_inputs_agree_and_terminate() {
    for n in SIZES {
        for seed in 0..seeds(n) {
            let values = random_values(n, seed + 100);
            let mut net = Net::new(
                n,
                biased(),
                honest_roles(n),
                biased_inputs(n, values.clone()),
                seed,
            );
            net.run();
            let decision = net.check_outcome();
            if decision.value {
                assert!(values.contains(&true), "a 1 needs a proof someone had");
                let proof = decision.external.clone().expect("π");
                assert!(SignedClaim.is_valid(&mut party(n, 1, 0), &proof));
            } else {
                assert!(decision.external.is_none());
            }
            assert!(net.faults.is_empty(), "{:?}", net.faults);
        }
    }
}

#[test]
fn biased_all_zero_decides_zero() {
    for n in SIZES {
        let mut net = Net::new(
            n,
            biased(),
            honest_roles(n),
            biased_inputs(n, vec![false; usize::from(n)]),
            3,
        );
        net.run();
        let decision = net.check_outcome();
        assert!(!decision.value);
        assert_eq!(decision.round, 1);
    }
}

#[test]
fn t_silent_servers_do_not_block() {
    for n in [4, 7, 10] {
        for seed in 0..seeds(n).min(6) {
            for mode in [AbaMode::Plain, biased()] {
                let values = random_values(n, seed + 7);
                let inputs = match mode {
                    AbaMode::Plain => plain_inputs(values),
                    AbaMode::Biased(_) => biased_inputs(n, values),
                };
                let mut net = Net::new(n, mode, roles_with_last_t(n, Role::Silent), inputs, seed);
                net.run();
                net.check_outcome();
                assert!(net.faults.is_empty(), "{:?}", net.faults);
            }
        }
    }
}

/// The mean number of rounds to a decision (over honest servers and seeds), printed for the
/// record and bounded: constant expected rounds.
#[test]
fn mean_rounds_are_small() {
    let mut table = Vec::new();
    for (label, mode) in [("plain", AbaMode::Plain), ("biased", biased())] {
        for n in [4, 7, 10] {
            let runs = seeds(n) * 2;
            let mut rounds = 0u64;
            let mut decisions = 0u64;
            let mut worst = 0;
            for seed in 0..runs {
                let values = random_values(n, seed + 1000);
                let inputs = match mode {
                    AbaMode::Plain => plain_inputs(values),
                    AbaMode::Biased(_) => biased_inputs(n, values),
                };
                let mut net = Net::new(n, mode.clone(), honest_roles(n), inputs, seed + 1000);
                net.run();
                net.check_outcome();
                for decision in net.decisions.iter().flatten() {
                    rounds += u64::from(decision.round);
                    decisions += 1;
                    worst = worst.max(decision.round);
                }
            }
            let mean = rounds as f64 / decisions as f64;
            table.push(format!(
                "{label:>6} n = {n:>2}: {runs:>2} runs, mean round {mean:.2}, worst {worst}"
            ));
            assert!(mean < 4.0, "{label} n = {n}: mean round {mean}");
        }
    }
    println!("aba, random inputs:\n{}", table.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Byzantine servers: their deviations are recorded against them, never against honest ones.

/// Replaces every share by a share of the right sender on a statement nobody asked for.
fn corrupt_shares(
    party: &mut Party,
    instance: &InstanceId,
    message: Message,
    _to: u16,
) -> Vec<Message> {
    let wrong = statement::sign(party, instance, Statement::PreVote(u32::MAX, true));
    vec![match message {
        Message::PreProcess {
            value, external, ..
        } => Message::PreProcess {
            value,
            share: wrong,
            external,
        },
        Message::PreVote {
            round,
            value,
            justification,
            external,
            ..
        } => Message::PreVote {
            round,
            value,
            justification,
            share: wrong,
            external,
        },
        Message::MainVote {
            round,
            vote,
            justification,
            external,
            ..
        } => Message::MainVote {
            round,
            vote,
            justification,
            share: wrong,
            external,
        },
        Message::CoinShare { round, .. } => {
            let name = coin_name(instance, round.wrapping_add(1000));
            Message::CoinShare {
                round,
                share: party
                    .keys
                    .coin
                    .share(&Context::new(PURPOSE_COIN, &name), &mut party.rng),
            }
        }
        decide @ Message::Decide { .. } => decide,
    }]
}

/// Votes the other value with the justification of the one it should have voted (shares are
/// valid for what is claimed, so only the justification is wrong).
fn unjustified_votes(
    party: &mut Party,
    instance: &InstanceId,
    message: Message,
    _to: u16,
) -> Vec<Message> {
    vec![match message {
        Message::PreVote {
            round,
            value,
            justification,
            external,
            ..
        } => Message::PreVote {
            round,
            value: !value,
            justification,
            share: statement::sign(party, instance, Statement::PreVote(round, !value)),
            external,
        },
        Message::MainVote {
            round,
            vote,
            justification,
            external,
            ..
        } => {
            let vote = match vote {
                Vote::Value(value) => Vote::Value(!value),
                Vote::Abstain => Vote::Value(false),
            };
            Message::MainVote {
                round,
                vote,
                justification,
                share: statement::sign(party, instance, Statement::MainVote(round, vote)),
                external,
            }
        }
        other => other,
    }]
}

/// Sends every pre-vote twice: as computed, and for the other value.
fn equivocate(party: &mut Party, instance: &InstanceId, message: Message, to: u16) -> Vec<Message> {
    let mut out = vec![message.clone()];
    if let Message::PreVote { .. } = message {
        out.extend(unjustified_votes(party, instance, message, to));
    }
    out
}

/// Valid messages only, but a different input for each half of the group (a Byzantine server
/// may do that: no receiver sees both); in biased mode with a valid `π` for its 1s.
fn split_inputs(
    party: &mut Party,
    instance: &InstanceId,
    message: Message,
    to: u16,
    biased: bool,
) -> Vec<Message> {
    vec![match message {
        Message::PreProcess { .. } => {
            let value = to.is_multiple_of(2);
            Message::PreProcess {
                value,
                share: statement::sign(party, instance, Statement::PreProcess(value)),
                external: (biased && value).then(|| valid_claim(party.servers())),
            }
        }
        other => other,
    }]
}

fn split_inputs_plain(
    party: &mut Party,
    instance: &InstanceId,
    message: Message,
    to: u16,
) -> Vec<Message> {
    split_inputs(party, instance, message, to, false)
}

fn split_inputs_biased(
    party: &mut Party,
    instance: &InstanceId,
    message: Message,
    to: u16,
) -> Vec<Message> {
    split_inputs(party, instance, message, to, true)
}

fn byzantine_run(mutate: Mutator, expected: &[FaultKind]) {
    for n in [4, 7, 10] {
        for seed in 0..seeds(n).min(6) {
            for mode in [AbaMode::Plain, biased()] {
                let values = random_values(n, seed + 50);
                let inputs = match mode {
                    AbaMode::Plain => plain_inputs(values),
                    AbaMode::Biased(_) => biased_inputs(n, values),
                };
                let roles = roles_with_last_t(n, Role::Byzantine(mutate));
                let mut net = Net::new(n, mode, roles, inputs, seed);
                net.run();
                net.check_outcome();
                let byzantine: BTreeSet<u16> = (n - t(n) + 1..=n).collect();
                assert_eq!(net.blamed(), byzantine, "n = {n}, seed {seed}");
                assert!(
                    net.faults
                        .iter()
                        .all(|(_, fault)| expected.contains(&fault.kind)),
                    "{:?}",
                    net.faults
                );
            }
        }
    }
}

#[test]
fn byzantine_split_inputs_do_not_break_agreement() {
    for n in [4, 7, 10] {
        for seed in 0..seeds(n).min(8) {
            for plain in [true, false] {
                let values = random_values(n, seed + 70);
                let (mode, inputs, split): (_, _, Mutator) = if plain {
                    (AbaMode::Plain, plain_inputs(values), split_inputs_plain)
                } else {
                    (biased(), biased_inputs(n, values), split_inputs_biased)
                };
                let roles = roles_with_last_t(n, Role::Byzantine(split));
                let mut net = Net::new(n, mode, roles, inputs, seed);
                net.run();
                net.check_outcome();
                // Every message was valid for its receiver: nobody is blamed.
                assert!(net.faults.is_empty(), "{:?}", net.faults);
            }
        }
    }
}

#[test]
fn invalid_shares_are_blamed_on_their_sender() {
    byzantine_run(corrupt_shares, &[FaultKind::InvalidShare]);
}

#[test]
fn unjustified_votes_are_blamed_on_their_sender() {
    byzantine_run(
        unjustified_votes,
        // A flipped biased vote for 1 lacks its π.
        &[FaultKind::InvalidProof, FaultKind::UnexpectedMessage],
    );
}

#[test]
fn equivocation_is_blamed_on_its_sender() {
    byzantine_run(
        equivocate,
        &[
            FaultKind::Equivocation,
            FaultKind::InvalidProof,
            FaultKind::UnexpectedMessage,
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Single-server checks.

fn envelope(instance: &InstanceId, body: Message) -> crate::Message {
    crate::Message {
        instance: instance.clone(),
        body: Body::Aba(body),
    }
}

/// A plain run of 4 servers on `label`, returning its messages and decision.
fn finished_run(label: &str, seed: u64) -> (Vec<crate::Message>, Decision) {
    let mut net = Net::new(
        4,
        AbaMode::Plain,
        honest_roles(4),
        plain_inputs(random_values(4, seed)),
        seed,
    );
    net.instance = instance(label);
    net.nodes = (0..4)
        .map(|_| Aba::new(net.instance.clone(), AbaMode::Plain))
        .collect();
    net.run();
    let decision = net.check_outcome();
    (net.sent, decision)
}

#[test]
fn a_decide_with_a_bad_signature_is_rejected() {
    let (messages, decision) = finished_run("a", 1);
    let own = instance("a");
    let mut party = party(4, 1, 9);
    // The signature of another round, of the other value, and of another statement.
    let forged = [
        (decision.round + 1, decision.value),
        (decision.round, !decision.value),
    ];
    for (round, value) in forged {
        let mut aba = Aba::new(own.clone(), AbaMode::Plain);
        let bad = Message::Decide {
            round,
            value,
            signature: decision.proof,
            external: None,
        };
        let step = aba.handle_message(&mut party, server(2), &envelope(&own, bad));
        assert_eq!(step.faults.len(), 1);
        assert_eq!(step.faults[0].server, server(2));
        assert_eq!(step.faults[0].kind, FaultKind::InvalidProof);
        assert!(step.outputs.is_empty() && aba.decision().is_none());
    }
    // The genuine DECIDE makes a server that never proposed decide, and it says so once.
    let decide = messages
        .iter()
        .find(|message| matches!(message.body, Body::Aba(Message::Decide { .. })))
        .expect("a DECIDE was sent")
        .clone();
    let mut aba = Aba::new(own.clone(), AbaMode::Plain);
    let step = aba.handle_message(&mut party, server(3), &decide);
    assert!(step.faults.is_empty());
    assert_eq!(step.outputs.len(), 1);
    assert_eq!(step.outputs[0].value, decision.value);
    assert_eq!(step.messages.len(), 1);
    assert_eq!(step.messages[0].to, Target::All);
    assert!(aba.terminated());
    // Proposing afterwards is accepted and sends nothing.
    let step = aba.propose(&mut party, true, None).expect("input");
    assert!(step.is_empty());
    assert_eq!(
        aba.propose(&mut party, true, None),
        Err(AbaError::AlreadyProposed)
    );
}

#[test]
fn messages_replayed_from_another_instance_are_rejected() {
    // Everything servers 2..4 sent in a finished run of instance `a`, delivered to server 1's
    // instance `b` (which has proposed): as sent, the envelope names another instance; re-wrapped,
    // the shares and signatures bind `a`. Nothing counts, nothing is decided, the senders are
    // blamed.
    let (messages, decision) = finished_run("a", 2);
    let other = instance("b");
    let mut party = party(4, 1, 9);
    let mut aba = Aba::new(other.clone(), AbaMode::Plain);
    let step = aba.propose(&mut party, true, None).expect("input");
    assert_eq!(step.messages.len(), 1, "only the pre-process");
    let mut seen = BTreeSet::new();
    let mut faults = Vec::new();
    for message in &messages {
        let Body::Aba(body) = &message.body else {
            unreachable!()
        };
        let (sender, round) = match body {
            Message::PreProcess { share, .. }
            | Message::PreVote { share, .. }
            | Message::MainVote { share, .. } => (share.id(), body.round()),
            Message::CoinShare { share, .. } => (share.id(), body.round()),
            // Whoever sent it: one DECIDE per peer is checked.
            Message::Decide { .. } => (server(4), None),
        };
        let kind = format!("{:?}", std::mem::discriminant(body));
        if sender == party.id || !seen.insert((sender, kind, round)) {
            continue;
        }
        let step = aba.handle_message(&mut party, sender, message);
        assert_eq!(step.faults.len(), 1);
        assert_eq!(step.faults[0].kind, FaultKind::UnexpectedMessage);
        let step = aba.handle_message(&mut party, sender, &envelope(&other, body.clone()));
        assert!(
            step.outputs.is_empty() && step.messages.is_empty(),
            "{step:?}"
        );
        faults.extend(step.faults);
    }
    assert!(aba.decision().is_none());
    let blamed: BTreeSet<u16> = faults.iter().map(|fault| fault.server.get()).collect();
    assert_eq!(blamed, (2..=4).collect());
    assert!(faults.iter().all(|fault| matches!(
        fault.kind,
        FaultKind::InvalidShare | FaultKind::InvalidProof
    )));
    assert!(!verify_decision(
        &mut party,
        &other,
        &AbaMode::Plain,
        &decision
    ));
    assert!(verify_decision(
        &mut party,
        &instance("a"),
        &AbaMode::Plain,
        &decision
    ));
}

#[test]
fn replayed_coin_shares_do_not_make_a_coin() {
    // Coin shares of round 1 of instance `a`, delivered to instance `b` in the state that needs
    // the coin of round 1: they are named when combined, and no coin results.
    let a = instance("a");
    let b = instance("b");
    let mut party_one = party(4, 1, 9);
    let mut aba = Aba::new(b.clone(), AbaMode::Plain);
    aba.round = 1;
    aba.phase = Phase::Coin(decide_signature(&b));
    aba.rounds.insert(1, RoundState::default());
    let mut faults = Vec::new();
    for id in 2..=4 {
        let mut sender = party(4, id, 0);
        let name = coin_name(&a, 1);
        let share = sender
            .keys
            .coin
            .share(&Context::new(PURPOSE_COIN, &name), &mut sender.rng);
        let step = aba.handle_message(
            &mut party_one,
            server(id),
            &envelope(&b, Message::CoinShare { round: 1, share }),
        );
        faults.extend(step.faults);
    }
    assert_eq!(aba.coin(1), None);
    // Combined (and named) as soon as t + 1 = 2 were in; the third alone is too few to try.
    let blamed: BTreeSet<u16> = faults.iter().map(|fault| fault.server.get()).collect();
    assert_eq!(blamed, (2..=3).collect());
    assert!(
        faults
            .iter()
            .all(|fault| fault.kind == FaultKind::InvalidShare)
    );
}

/// Some valid agreement signature of instance `id` (on main-vote(1, abstain)).
fn decide_signature(id: &InstanceId) -> Signature {
    let statement = Statement::MainVote(1, Vote::Abstain);
    let shares: Vec<SignatureShare> = (1..=4)
        .map(|server| statement::sign(&party(4, server, 0), id, statement))
        .collect();
    statement::combine(&mut party(4, 1, 0), id, statement, &shares)
        .expect("combine")
        .value
}

#[test]
fn a_decided_server_answers_each_late_peer_once() {
    let (messages, decision) = finished_run("a", 3);
    let own = instance("a");
    let mut party = party(4, 1, 9);
    let mut aba = Aba::new(own.clone(), AbaMode::Plain);
    let decide = messages
        .iter()
        .find(|message| matches!(message.body, Body::Aba(Message::Decide { .. })))
        .expect("a DECIDE")
        .clone();
    let _ = aba.handle_message(&mut party, server(4), &decide);
    assert!(aba.terminated());
    let pre_process = messages
        .iter()
        .find(|message| {
            matches!(&message.body, Body::Aba(Message::PreProcess { share, .. }) if share.id() == server(2))
        })
        .expect("a pre-process of server 2");
    let step = aba.handle_message(&mut party, server(2), pre_process);
    assert!(step.faults.is_empty());
    assert_eq!(step.messages.len(), 1);
    assert_eq!(step.messages[0].to, Target::Server(server(2)));
    let Body::Aba(Message::Decide {
        value, signature, ..
    }) = &step.messages[0].message.body
    else {
        panic!("not a DECIDE: {:?}", step.messages[0]);
    };
    assert_eq!((*value, *signature), (decision.value, decision.proof));
    // Once per peer; the server that sent the DECIDE needs none.
    assert!(
        aba.handle_message(&mut party, server(2), pre_process)
            .is_empty()
    );
    assert!(
        aba.handle_message(&mut party, server(4), pre_process)
            .is_empty()
    );
}

#[test]
fn rounds_beyond_the_window_are_dropped() {
    let own = instance("a");
    let mut sender = party(4, 2, 0);
    let coin_share = |sender: &mut Party, round: u32| {
        let name = coin_name(&own, round);
        Message::CoinShare {
            round,
            share: sender
                .keys
                .coin
                .share(&Context::new(PURPOSE_COIN, &name), &mut sender.rng),
        }
    };
    let mut party = party(4, 1, 9);
    let mut aba = Aba::new(own.clone(), AbaMode::Plain);
    // Before the input the current round counts as 1.
    let last = 1 + ROUNDS_AHEAD_MAX;
    let inside = coin_share(&mut sender, last);
    let step = aba.handle_message(&mut party, server(2), &envelope(&own, inside));
    assert!(step.faults.is_empty());
    assert!(aba.rounds.contains_key(&last));
    let outside = coin_share(&mut sender, last + 1);
    let step = aba.handle_message(&mut party, server(2), &envelope(&own, outside));
    assert_eq!(step.faults.len(), 1);
    assert_eq!(step.faults[0].kind, FaultKind::OutOfWindow);
    assert!(!aba.rounds.contains_key(&(last + 1)));
}

#[test]
fn messages_before_the_input_are_kept_and_used() {
    // Server 1 receives everyone else's pre-process before proposing: its proposal then goes
    // straight to the pre-vote.
    let own = instance("a");
    let mut party_one = party(4, 1, 9);
    let mut aba = Aba::new(own.clone(), AbaMode::Plain);
    for id in 2..=4 {
        let sender = party(4, id, 0);
        let share = statement::sign(&sender, &own, Statement::PreProcess(true));
        let step = aba.handle_message(
            &mut party_one,
            server(id),
            &envelope(
                &own,
                Message::PreProcess {
                    value: true,
                    share,
                    external: None,
                },
            ),
        );
        assert!(step.is_empty());
    }
    let step = aba.propose(&mut party_one, false, None).expect("input");
    let bodies: Vec<&Message> = step
        .messages
        .iter()
        .filter_map(|outgoing| match &outgoing.message.body {
            Body::Aba(body) => Some(body),
            _ => None,
        })
        .collect();
    assert!(matches!(
        bodies[0],
        Message::PreProcess { value: false, .. }
    ));
    // The majority of the three others' 1s, justified by t + 1 = 2 of their shares.
    match bodies.get(1) {
        Some(Message::PreVote {
            round: 1,
            value: true,
            justification: PreVoteJustification::PreProcessShares(shares),
            ..
        }) => assert_eq!(shares.len(), 2),
        other => panic!("expected a pre-vote for 1, got {other:?}"),
    }
}

#[test]
fn a_second_different_message_is_an_equivocation() {
    let own = instance("a");
    let mut party_one = party(4, 1, 9);
    let sender = party(4, 2, 0);
    let mut aba = Aba::new(own.clone(), AbaMode::Plain);
    let pre_process = |value| {
        envelope(
            &own,
            Message::PreProcess {
                value,
                share: statement::sign(&sender, &own, Statement::PreProcess(value)),
                external: None,
            },
        )
    };
    assert!(
        aba.handle_message(&mut party_one, server(2), &pre_process(true))
            .is_empty()
    );
    // The same message again is a duplicate, not an equivocation.
    assert!(
        aba.handle_message(&mut party_one, server(2), &pre_process(true))
            .is_empty()
    );
    let step = aba.handle_message(&mut party_one, server(2), &pre_process(false));
    assert_eq!(step.faults.len(), 1);
    assert_eq!(step.faults[0].kind, FaultKind::Equivocation);
    // A share naming another server than the sender is its sender's fault.
    let step = aba.handle_message(&mut party_one, server(3), &pre_process(true));
    assert_eq!(step.faults.len(), 1);
    assert_eq!(step.faults[0].server, server(3));
    assert_eq!(step.faults[0].kind, FaultKind::InvalidShare);
}

#[test]
fn biased_mode_checks_external_proofs() {
    let own = instance("a");
    let mut party_one = party(4, 1, 9);
    let mut aba = Aba::new(own.clone(), biased());
    assert_eq!(
        aba.propose(&mut party_one, true, None),
        Err(AbaError::MissingProof)
    );
    assert_eq!(
        aba.propose(&mut party_one, true, Some(invalid_claim(4))),
        Err(AbaError::InvalidProof)
    );
    assert_eq!(
        aba.propose(&mut party_one, true, Some(b"garbage".to_vec())),
        Err(AbaError::InvalidProof)
    );
    let sender = party(4, 2, 0);
    let pre_process = |value, external| {
        envelope(
            &own,
            Message::PreProcess {
                value,
                share: statement::sign(&sender, &own, Statement::PreProcess(value)),
                external,
            },
        )
    };
    let cases = [
        (true, Some(invalid_claim(4)), FaultKind::InvalidValue),
        (true, None, FaultKind::UnexpectedMessage),
        (false, Some(valid_claim(4)), FaultKind::UnexpectedMessage),
    ];
    for (value, external, kind) in cases {
        let mut aba = Aba::new(own.clone(), biased());
        let step = aba.handle_message(&mut party_one, server(2), &pre_process(value, external));
        assert_eq!(step.faults.len(), 1);
        assert_eq!(step.faults[0].kind, kind);
    }
    // Round 1 of the biased mode has no coin.
    let mut sender = party(4, 3, 0);
    let name = coin_name(&own, 1);
    let share = sender
        .keys
        .coin
        .share(&Context::new(PURPOSE_COIN, &name), &mut sender.rng);
    let mut aba = Aba::new(own.clone(), biased());
    let step = aba.handle_message(
        &mut party_one,
        server(3),
        &envelope(&own, Message::CoinShare { round: 1, share }),
    );
    assert_eq!(step.faults.len(), 1);
    assert_eq!(step.faults[0].kind, FaultKind::UnexpectedMessage);
    // A proof in plain mode is a message no honest server sends.
    let mut plain = Aba::new(own.clone(), AbaMode::Plain);
    let step = plain.handle_message(
        &mut party_one,
        server(2),
        &pre_process(true, Some(valid_claim(4))),
    );
    assert_eq!(step.faults.len(), 1);
    assert_eq!(step.faults[0].kind, FaultKind::UnexpectedMessage);
}

// ---------------------------------------------------------------------------------------------
// Encodings.

/// Messages of real runs (both modes, several rounds) as test vectors.
fn sample_messages() -> &'static [crate::Message] {
    static SAMPLES: OnceLock<Vec<crate::Message>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let mut out = Vec::new();
        for (mode, seed) in [(AbaMode::Plain, 11), (biased(), 12)] {
            let values = random_values(4, seed);
            let inputs = match mode {
                AbaMode::Plain => plain_inputs(values),
                AbaMode::Biased(_) => biased_inputs(4, values),
            };
            let mut net = Net::new(4, mode, honest_roles(4), inputs, seed);
            net.run();
            out.extend(net.sent);
        }
        out
    })
}

#[test]
fn encodings_roundtrip() {
    let samples = sample_messages();
    let mut kinds = BTreeSet::new();
    for message in samples {
        let bytes = message.to_bytes();
        let decoded = crate::Message::from_bytes(&bytes).expect("decodes");
        assert_eq!(&decoded, message);
        assert_eq!(decoded.to_bytes(), bytes);
        if let Body::Aba(body) = &message.body {
            kinds.insert(format!("{:?}", std::mem::discriminant(body)));
            assert_eq!(&Message::from_bytes(&body.to_bytes()).expect("body"), body);
        }
    }
    assert!(kinds.len() >= 4, "samples cover the message kinds");
    // Hand-made justifications not every run produces.
    let signature = decide_signature(&instance("a"));
    let share = statement::sign(&party(4, 1, 0), &instance("a"), Statement::PreVote(2, true));
    for justification in [
        PreVoteJustification::PreProcessQuorum(signature),
        PreVoteJustification::External,
        PreVoteJustification::PreVotes(signature),
        PreVoteJustification::Abstain(signature),
        PreVoteJustification::PreProcessShares(vec![share, share]),
    ] {
        let message = Message::MainVote {
            round: 7,
            vote: Vote::Abstain,
            justification: MainVoteJustification::Conflict {
                zero: justification.clone(),
                one: justification,
            },
            share,
            external: Some(vec![1, 2, 3]),
        };
        assert_eq!(Message::from_bytes(&message.to_bytes()), Ok(message));
    }
    // Round 0 and out-of-range flags do not decode.
    let decide = Message::Decide {
        round: 1,
        value: true,
        signature,
        external: None,
    };
    let mut bytes = decide.to_bytes();
    bytes[4] = 0;
    assert!(Message::from_bytes(&bytes).is_err());
    let mut bytes = decide.to_bytes();
    bytes[5] = 2;
    assert!(Message::from_bytes(&bytes).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(message) = Message::from_bytes(&bytes) {
            prop_assert_eq!(message.to_bytes(), bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(
        which in any::<prop::sample::Index>(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let samples = sample_messages();
        let message = which.get(samples);
        let Body::Aba(body) = &message.body else { unreachable!() };
        let mut bytes = body.to_bytes();
        let at = position.index(bytes.len());
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] = byte;
        }
        if let Ok(decoded) = Message::from_bytes(&bytes) {
            prop_assert_eq!(decoded.to_bytes(), bytes);
        }
    }
}
