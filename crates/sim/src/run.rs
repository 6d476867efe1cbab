//! One simulated run: set up the group, the inputs, the Byzantine servers and the network from
//! the seed, deliver events until none is left or the budget is spent, and check.
//!
//! Determinism: every random choice comes from generators derived from the seed
//! ([`derive_rng`]), per purpose (setup, inputs, network, each server, each Byzantine server);
//! all collections that are iterated are ordered (`Vec`, `BTreeMap`); there is no clock and no
//! thread inside a run. The same configuration gives the same trace hash, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::Rng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use sintra_crypto::ServerId;
use sintra_crypto::dealer::GroupParameters;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_protocols::{Fault, FaultKind, InstanceId, Party, Target};

use crate::byzantine::{Byzantine, Wire};
use crate::checkers::check_all;
use crate::checkers::deviations_recorded::detection_counts;
use crate::keys::{DealtKeys, KeySource, keys};
use crate::metrics::RunMetrics;
use crate::network::{Core, Event, InFlight, Network, Payload, PickContext};
use crate::protocol::{Effects, Envelope, Plan, Protocol};
use crate::record::{
    DeliveredDeviation, Detectability, DeviationKind, EarlyRelease, HonestSend, InstanceRecord,
    RecordedFault, RunRecord, Violation,
};
use crate::scenario::{Adversary, Strategy, derive_rng, derive_seed};
use crate::trace::Trace;

/// The default delivery budget, per instance, in units of `n²` deliveries. One ABA round costs
/// about `4n²` deliveries, so this allows about a hundred rounds before termination is called
/// violated.
pub const BUDGET_DELIVERIES_PER_SERVER_SQUARED: u64 = 400;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// `n`.
    pub servers: u16,
    /// `t`; `None`: the largest with `n > 3t`.
    pub faults: Option<u16>,
    /// The seed.
    pub seed: u64,
    /// The adversary.
    pub adversary: Adversary,
    /// Where the keys come from.
    pub keys: KeySource,
    /// Deliveries before the run is stopped; `None`: the default budget.
    pub budget: Option<u64>,
    /// How many servers are Byzantine (with a strategy); `None`: 1 to `t`, drawn from the seed.
    pub byzantine: Option<u16>,
    /// Concurrent instances; `None`: 2 for `replay` (something to replay into), else 1.
    pub instances: Option<usize>,
}

impl RunConfig {
    /// A configuration with the defaults.
    pub fn new(servers: u16, seed: u64, adversary: Adversary) -> Self {
        Self {
            servers,
            faults: None,
            seed,
            adversary,
            keys: KeySource::Cached,
            budget: None,
            byzantine: None,
            instances: None,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Everything the checkers looked at.
    pub record: RunRecord,
    /// What they found.
    pub violations: Vec<Violation>,
    /// Costs and counts.
    pub metrics: RunMetrics,
    /// The hash of the whole event trace.
    pub trace_hash: [u8; 32],
    /// A few lines describing the run (Byzantine servers, inputs, what the network did).
    pub notes: Vec<String>,
}

/// Errors in the configuration (never in the run).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Invalid `n`/`t`.
    #[error("invalid group: {0}")]
    Group(#[from] sintra_crypto::CryptoError),
    /// More Byzantine servers than `t`, or honest servers too few.
    #[error("{byzantine} Byzantine servers in a group tolerating {faults}")]
    TooManyByzantine {
        /// Requested.
        byzantine: u16,
        /// `t`.
        faults: u16,
    },
}

/// (receiver, Byzantine sender, instance, slot).
type SlotKey = (ServerId, ServerId, InstanceId, (u8, u32));

struct Server<P: Protocol> {
    id: ServerId,
    party: Party,
    nodes: Vec<P::Node>,
    byzantine: Option<Byzantine<P::Message>>,
    twin: Option<(Party, Vec<P::Node>)>,
    /// Instances (by index) in which the twin got a conflicting input.
    twin_instances: BTreeSet<usize>,
}

struct Simulation<'a, P: Protocol> {
    adapter: &'a P,
    parameters: GroupParameters,
    keys: Arc<DealtKeys>,
    root: InstanceId,
    instances: Vec<InstanceId>,
    plans: Vec<Plan<P::Input, P::Setup>>,
    servers: Vec<Server<P>>,
    pool: Vec<InFlight<P::Message>>,
    next_seq: u64,
    delivered: u64,
    record: RunRecord,
    encoding_errors: Vec<String>,
    /// First message seen per (receiver, Byzantine sender, instance, slot).
    slots: BTreeMap<SlotKey, [u8; 32]>,
    metrics: RunMetrics,
    trace: Trace,
    /// Patience timers armed, per (server, instance).
    timers: BTreeSet<(ServerId, usize)>,
}

/// Runs one configuration with `adapter`.
pub fn run<P: Protocol>(adapter: &P, config: &RunConfig) -> Result<RunReport, RunError> {
    let parameters = GroupParameters::new(config.servers, config.faults)?;
    let (n, t) = (parameters.servers, parameters.faults);
    let seed = config.seed;
    let keys = keys(parameters, config.keys, seed);

    let mut setup = derive_rng(seed, "setup", 0);
    let byzantine_count = match config.adversary.strategy {
        None => 0,
        Some(_) => match config.byzantine {
            Some(count) if count > t => {
                return Err(RunError::TooManyByzantine {
                    byzantine: count,
                    faults: t,
                });
            }
            Some(count) => count,
            None if t == 0 => 0,
            None => setup.gen_range(1..=t),
        },
    };
    let everyone: Vec<ServerId> = ServerId::all(n).collect();
    let mut byzantine: Vec<ServerId> = everyone
        .choose_multiple(&mut setup, usize::from(byzantine_count))
        .copied()
        .collect();
    byzantine.sort();
    let honest: Vec<ServerId> = everyone
        .iter()
        .copied()
        .filter(|s| !byzantine.contains(s))
        .collect();

    let instance_count = config
        .instances
        .unwrap_or(match config.adversary.strategy {
            Some(Strategy::Replay) => 2,
            _ => 1,
        })
        .max(1);
    let root = InstanceId::root(&format!("{}-s{seed}", adapter.name()))
        .expect("protocol names and seeds make valid labels");
    let instances: Vec<InstanceId> = (0..instance_count)
        .map(|i| {
            root.child(&format!("i{i}"))
                .expect("short labels are valid")
        })
        .collect();
    let plans: Vec<Plan<P::Input, P::Setup>> = (0..instance_count)
        .map(|i| {
            adapter.plan(
                parameters,
                &byzantine,
                &mut derive_rng(seed, "plan", i as u64),
            )
        })
        .collect();

    let strategy = config.adversary.strategy;
    // The Byzantine servers collude: one split of the group for all their equivocations.
    let mut shuffled = everyone.clone();
    shuffled.shuffle(&mut setup);
    let second_half: BTreeSet<ServerId> = shuffled[..shuffled.len() / 2].iter().copied().collect();
    let mut servers = Vec::with_capacity(usize::from(n));
    for id in &everyone {
        let make_party = |purpose: &str| {
            Party::new(
                keys.group.clone(),
                keys.servers[id.slot()].clone(),
                derive_seed(seed, purpose, u64::from(id.get())),
            )
        };
        let party = make_party("party");
        let strategy_here = strategy.filter(|_| byzantine.contains(id));
        let create = |party: &Party, instance: &InstanceId, plan: &Plan<P::Input, P::Setup>| {
            match strategy_here {
                Some(strategy) => adapter.create_byzantine(party, instance, plan, strategy),
                None => adapter.create(party, instance, plan),
            }
        };
        let nodes = instances
            .iter()
            .zip(&plans)
            .map(|(instance, plan)| create(&party, instance, plan))
            .collect();
        let mut server = Server {
            id: *id,
            party,
            nodes,
            byzantine: None,
            twin: None,
            twin_instances: BTreeSet::new(),
        };
        if let Some(strategy) = strategy.filter(|_| byzantine.contains(id)) {
            let rng = derive_rng(seed, "byzantine", u64::from(id.get()));
            let state = Byzantine::new(strategy, *id, t, second_half.clone(), rng);
            if strategy == Strategy::Equivocate {
                let twin_party = make_party("twin");
                let twin_nodes = instances
                    .iter()
                    .zip(&plans)
                    .map(|(instance, plan)| create(&twin_party, instance, plan))
                    .collect();
                server.twin = Some((twin_party, twin_nodes));
            }
            server.byzantine = Some(state);
        }
        servers.push(server);
    }

    let record = RunRecord {
        protocol: adapter.name(),
        parameters,
        seed,
        adversary: config.adversary,
        byzantine: byzantine
            .iter()
            .map(|s| (*s, strategy.unwrap_or(Strategy::Silent)))
            .collect(),
        instances: instances
            .iter()
            .zip(&plans)
            .map(|(id, plan)| InstanceRecord {
                id: id.clone(),
                spec: plan.spec.clone(),
                outputs: BTreeMap::new(),
                terminated: Vec::new(),
            })
            .collect(),
        faults: Vec::new(),
        deviations: Vec::new(),
        honest_sends: Vec::new(),
        early_releases: Vec::new(),
        start_errors: Vec::new(),
        budget_exhausted: false,
    };

    let mut sim = Simulation {
        adapter,
        parameters,
        keys,
        root,
        instances,
        plans,
        servers,
        pool: Vec::new(),
        next_seq: 0,
        delivered: 0,
        record,
        encoding_errors: Vec::new(),
        slots: BTreeMap::new(),
        metrics: RunMetrics::default(),
        trace: Trace::default(),
        timers: BTreeSet::new(),
    };
    for instance in 0..instance_count {
        for id in &everyone {
            let silent = strategy == Some(Strategy::Silent) && byzantine.contains(id);
            if sim.plans[instance].inputs[id.slot()].is_some() && !silent {
                sim.enqueue(*id, *id, Event::Start { instance });
            }
        }
    }

    let mut network = Network::new(
        config.adversary.network,
        n,
        t,
        &honest,
        &mut derive_rng(seed, "network-setup", 0),
    );
    let mut network_rng = derive_rng(seed, "network", 0);
    let byzantine_keys: Vec<_> = byzantine
        .iter()
        .map(|s| sim.keys.servers[s.slot()].clone())
        .collect();
    let budget = config.budget.unwrap_or(
        BUDGET_DELIVERIES_PER_SERVER_SQUARED * u64::from(n) * u64::from(n) * instance_count as u64,
    );
    while !sim.pool.is_empty() {
        if sim.delivered >= budget {
            sim.record.budget_exhausted = true;
            break;
        }
        let keys = sim.keys.clone();
        let mut cx = PickContext {
            adapter,
            rng: &mut network_rng,
            delivered: sim.delivered,
            coin_keys: &keys.group.coin,
            byzantine_keys: &byzantine_keys,
        };
        let index = network.pick(&sim.pool, &mut cx);
        let event = sim.pool.remove(index);
        sim.deliver(event);
    }

    let mut notes = vec![format!(
        "n = {n}, t = {t}, seed {seed}, adversary {}",
        config.adversary
    )];
    if !byzantine.is_empty() {
        let list: Vec<String> = byzantine.iter().map(|s| s.get().to_string()).collect();
        notes.push(format!("Byzantine servers [{}]", list.join(", ")));
    }
    for (instance, plan) in sim.instances.iter().zip(&sim.plans) {
        notes.push(format!("{instance}: {}", plan.note));
    }
    let network_note = network.describe();
    if !network_note.is_empty() {
        notes.push(format!("network: {network_note}"));
    }
    Ok(sim.finish(notes))
}

impl<P: Protocol> Simulation<'_, P> {
    fn is_honest(&self, server: ServerId) -> bool {
        self.servers[server.slot()].byzantine.is_none()
    }

    fn enqueue(&mut self, from: ServerId, to: ServerId, event: Event<P::Message>) {
        self.pool.push(InFlight {
            seq: self.next_seq,
            sent_at: self.delivered,
            from,
            to,
            event,
        });
        self.next_seq += 1;
    }

    /// The run instance a message belongs to: the one its id lies within, or the first (whose
    /// protocol must then reject it as a message for another instance).
    fn route(&self, instance: &InstanceId) -> usize {
        self.instances
            .iter()
            .position(|i| instance.is_within(i))
            .unwrap_or(0)
    }

    fn payload(&mut self, wire: Wire<P::Message>) -> Payload<P::Message> {
        let (bytes, message) = match wire {
            Wire::Message(message) => {
                let bytes = message.to_bytes();
                // The wire round trip: a message must decode to itself (canonical encoding).
                match P::Message::from_bytes(&bytes) {
                    Ok(decoded) if decoded == message => {}
                    Ok(decoded) => self.encoding_errors.push(format!(
                        "{message:?} encodes to bytes that decode to {decoded:?}"
                    )),
                    Err(error) => self.encoding_errors.push(format!(
                        "{message:?} encodes to bytes that do not decode: {error}"
                    )),
                }
                (bytes, Ok(message))
            }
            Wire::Bytes(bytes) => {
                let message = P::Message::from_bytes(&bytes);
                (bytes, message)
            }
        };
        let class = match &message {
            Ok(message) => self.adapter.classify(message),
            Err(_) => Default::default(),
        };
        Payload {
            len: bytes.len(),
            digest: Sha256::digest(&bytes).into(),
            message,
            class,
        }
    }

    fn recipients(&self, target: Target) -> Vec<ServerId> {
        match target {
            Target::All => ServerId::all(self.parameters.servers).collect(),
            Target::Server(to) if to.is_member_of(self.parameters.servers) => vec![to],
            // A protocol addressing a server outside the group: nobody receives it.
            Target::Server(_) => Vec::new(),
        }
    }

    fn count(&mut self, from: ServerId, to: ServerId, len: usize) {
        if from == to {
            return;
        }
        self.metrics.messages += 1;
        self.metrics.bytes += len as u64;
        if self.is_honest(from) {
            self.metrics.honest_messages += 1;
            self.metrics.honest_bytes += len as u64;
        }
    }

    fn deliver(&mut self, event: InFlight<P::Message>) {
        self.delivered += 1;
        let (from, to) = (event.from, event.to);
        match event.event {
            Event::Start { instance } => {
                self.trace.start(to, instance);
                self.start(to, instance);
            }
            Event::Timer { instance } => {
                self.trace.timer(to, instance);
                self.timers.remove(&(to, instance));
                if self.is_honest(to) {
                    let adapter = self.adapter;
                    let s = &mut self.servers[to.slot()];
                    let effects = adapter.patience_out(&mut s.nodes[instance], &mut s.party);
                    self.honest_effects(to, instance, effects);
                }
            }
            Event::Deliver {
                payload,
                core,
                deviation,
            } => {
                self.trace.deliver(event.seq, from, to, &payload.digest);
                if self.is_honest(to) {
                    self.deliver_honest(from, to, &payload, deviation);
                } else {
                    self.deliver_byzantine(from, to, &payload, core);
                }
            }
        }
    }

    fn start(&mut self, server: ServerId, instance: usize) {
        let adapter = self.adapter;
        let Some(input) = self.plans[instance].inputs[server.slot()].clone() else {
            return;
        };
        let slot = server.slot();
        let Some(strategy) = self.servers[slot].byzantine.as_ref().map(|b| b.strategy) else {
            let s = &mut self.servers[slot];
            match adapter.start(&mut s.nodes[instance], &mut s.party, &input) {
                Ok(effects) => self.honest_effects(server, instance, effects),
                Err(error) => self
                    .record
                    .start_errors
                    .push(format!("{server} in {}: {error}", self.instances[instance])),
            }
            return;
        };
        let s = &mut self.servers[slot];
        let byzantine = s.byzantine.as_mut().expect("checked above");
        let input_main = adapter.byzantine_input(strategy, &input, &mut byzantine.rng);
        let twin_input = match s.twin {
            Some(_) => adapter.twin_input(&input, &mut byzantine.rng),
            None => None,
        };
        if let Ok(effects) = adapter.start(&mut s.nodes[instance], &mut s.party, &input_main) {
            self.byzantine_effects(server, Core::Main, effects);
        }
        let s = &mut self.servers[slot];
        if let (Some(twin_input), Some((party, nodes))) = (twin_input, s.twin.as_mut()) {
            s.twin_instances.insert(instance);
            if let Ok(effects) = adapter.start(&mut nodes[instance], party, &twin_input) {
                self.byzantine_effects(server, Core::Twin, effects);
            }
        }
    }

    fn deliver_honest(
        &mut self,
        from: ServerId,
        to: ServerId,
        payload: &Payload<P::Message>,
        deviation: Option<(DeviationKind, Detectability)>,
    ) {
        let message = match &payload.message {
            Ok(message) => message,
            Err(_) => {
                // The receive path of a real server: bytes from an authenticated link that do
                // not decode are the sender's fault.
                let fault = Fault {
                    server: from,
                    instance: self.root.clone(),
                    kind: FaultKind::Malformed,
                };
                self.trace.fault(to, &fault);
                self.record.faults.push(RecordedFault {
                    recorder: to,
                    fault,
                    at: self.delivered,
                });
                if !self.is_honest(from) {
                    self.deviation(from, to, DeviationKind::Malformed, Detectability::Must);
                }
                return;
            }
        };
        let instance = self.route(message.instance());
        if !self.is_honest(from) {
            let node = &self.servers[to.slot()].nodes[instance];
            let active = self.adapter.still_checks(node, message.instance(), None);
            if let Some((kind, detectability)) = deviation {
                let detectability = if active {
                    detectability
                } else {
                    Detectability::May
                };
                self.deviation(from, to, kind, detectability);
            }
            if let Some(slot) = payload.class.slot {
                let key = (to, from, message.instance().clone(), slot);
                match self.slots.get(&key) {
                    None => {
                        self.slots.insert(key, payload.digest);
                    }
                    Some(first) if *first != payload.digest => {
                        let node = &self.servers[to.slot()].nodes[instance];
                        let checked =
                            self.adapter
                                .still_checks(node, message.instance(), Some(slot));
                        let detectability = if checked {
                            Detectability::Must
                        } else {
                            Detectability::May
                        };
                        self.deviation(from, to, DeviationKind::Equivocation, detectability);
                    }
                    Some(_) => {}
                }
            }
        }
        let adapter = self.adapter;
        let s = &mut self.servers[to.slot()];
        let effects = adapter.handle(&mut s.nodes[instance], &mut s.party, from, message);
        self.honest_effects(to, instance, effects);
    }

    fn deliver_byzantine(
        &mut self,
        from: ServerId,
        to: ServerId,
        payload: &Payload<P::Message>,
        core: Core,
    ) {
        let Ok(message) = &payload.message else {
            return;
        };
        let instance = self.route(message.instance());
        let adapter = self.adapter;
        let s = &mut self.servers[to.slot()];
        if let Some(byzantine) = s.byzantine.as_mut()
            && from != to
        {
            byzantine.observe(message);
        }
        if from != to || core == Core::Main {
            let effects = adapter.handle(&mut s.nodes[instance], &mut s.party, from, message);
            self.byzantine_effects(to, Core::Main, effects);
        }
        let s = &mut self.servers[to.slot()];
        if (from != to || core == Core::Twin)
            && let Some((party, nodes)) = s.twin.as_mut()
        {
            let effects = adapter.handle(&mut nodes[instance], party, from, message);
            self.byzantine_effects(to, Core::Twin, effects);
        }
    }

    fn deviation(
        &mut self,
        sender: ServerId,
        receiver: ServerId,
        kind: DeviationKind,
        detectability: Detectability,
    ) {
        self.record.deviations.push(DeliveredDeviation {
            sender,
            receiver,
            kind,
            detectability,
            at: self.delivered,
        });
    }

    fn honest_effects(&mut self, server: ServerId, instance: usize, effects: Effects<P::Message>) {
        let node = &self.servers[server.slot()].nodes[instance];
        if self.adapter.patience_running(node) && self.timers.insert((server, instance)) {
            self.enqueue(server, server, Event::Timer { instance });
        }
        for output in effects.outputs {
            self.trace.output(server, instance, &output.value);
            self.record.instances[instance]
                .outputs
                .entry(server)
                .or_default()
                .push(output);
        }
        for fault in effects.faults {
            self.trace.fault(server, &fault);
            self.record.faults.push(RecordedFault {
                recorder: server,
                fault,
                at: self.delivered,
            });
        }
        for (target, message) in effects.messages {
            let node = &self.servers[server.slot()].nodes[instance];
            if let Some((checker, detail)) = self.adapter.early_release(node, &message) {
                self.record.early_releases.push(EarlyRelease {
                    server,
                    checker,
                    detail,
                    at: self.delivered,
                });
            }
            let payload = self.payload(Wire::Message(message));
            if payload.class.vote.is_some() || payload.class.coin_round.is_some() {
                let instance = match &payload.message {
                    Ok(message) => message.instance().clone(),
                    Err(_) => self.root.clone(),
                };
                self.record.honest_sends.push(HonestSend {
                    server,
                    instance,
                    class: payload.class,
                });
            }
            let payload = Arc::new(payload);
            for to in self.recipients(target) {
                self.count(server, to, payload.len);
                self.enqueue(
                    server,
                    to,
                    Event::Deliver {
                        payload: payload.clone(),
                        core: Core::Main,
                        deviation: None,
                    },
                );
            }
        }
    }

    fn byzantine_effects(&mut self, server: ServerId, core: Core, effects: Effects<P::Message>) {
        let keys = self.keys.servers[server.slot()].clone();
        let instances = self.instances.clone();
        for (target, message) in effects.messages {
            let recipients = self.recipients(target);
            let instance = self.route(message.instance());
            if recipients.contains(&server) {
                let payload = Arc::new(self.payload(Wire::Message(message.clone())));
                self.enqueue(
                    server,
                    server,
                    Event::Deliver {
                        payload,
                        core,
                        deviation: None,
                    },
                );
            }
            let s = &self.servers[server.slot()];
            if core == Core::Twin && !s.twin_instances.contains(&instance) {
                // The twin had no conflicting input here: it only mirrors the main instance.
                continue;
            }
            let peers: Vec<ServerId> = recipients.into_iter().filter(|p| *p != server).collect();
            if peers.is_empty() {
                continue;
            }
            let twin_active = s.twin_instances.contains(&instance);
            let adapter = self.adapter;
            let root = self.root.clone();
            let byzantine = self.servers[server.slot()]
                .byzantine
                .as_mut()
                .expect("Byzantine effects come from Byzantine servers");
            let sends = byzantine.distort(
                adapter,
                &keys,
                core,
                twin_active,
                &message,
                &peers,
                &root,
                &instances,
            );
            for send in sends {
                let payload = self.payload(send.wire);
                let deviation = match &payload.message {
                    Err(_) => Some((DeviationKind::Malformed, Detectability::Must)),
                    Ok(sent) if *sent == message => None,
                    Ok(_) => send.deviation,
                };
                let payload = Arc::new(payload);
                for to in send.to {
                    self.count(server, to, payload.len);
                    self.enqueue(
                        server,
                        to,
                        Event::Deliver {
                            payload: payload.clone(),
                            core,
                            deviation,
                        },
                    );
                }
            }
        }
    }

    fn finish(mut self, notes: Vec<String>) -> RunReport {
        for (index, instance) in self.record.instances.iter_mut().enumerate() {
            instance.terminated = self
                .servers
                .iter()
                .filter(|s| s.byzantine.is_none() && self.adapter.terminated(&s.nodes[index]))
                .map(|s| s.id)
                .collect();
        }
        let mut violations = check_all(&self.record);
        violations.extend(self.encoding_errors.iter().take(3).map(|e| Violation {
            checker: "encoding",
            detail: e.clone(),
        }));
        let mut metrics = self.metrics;
        metrics.deliveries = self.delivered;
        for instance in &self.record.instances {
            let outputs: Vec<_> = instance.outputs.values().flatten().collect();
            metrics.outputs += outputs.len() as u64;
            metrics.items += if instance.spec.sequence {
                outputs
                    .iter()
                    .map(|o| &o.value)
                    .collect::<BTreeSet<_>>()
                    .len() as u64
            } else {
                u64::from(!outputs.is_empty())
            };
            for output in outputs {
                if let Some(round) = output.round {
                    metrics.max_round = Some(metrics.max_round.map_or(round, |m| m.max(round)));
                }
            }
        }
        metrics.set_deviations(&detection_counts(&self.record));
        RunReport {
            record: self.record,
            violations,
            metrics,
            trace_hash: self.trace.finish(),
            notes,
        }
    }
}
