//! The adapter contract: what the simulator needs from a protocol, in one trait.
//!
//! A protocol plugs in through one small file in `src/adapters/` implementing [`Protocol`]: how to
//! create an instance for a server, start it with an input, feed it a message, and what the
//! checkers should expect ([`Plan`], [`Spec`]). Everything else — the network, the adversaries,
//! the Byzantine servers, the checkers — is generic. The hooks with default bodies
//! ([`Protocol::classify`], [`Protocol::conflict`], ...) let an adapter expose what it knows about
//! its message layout to the adversaries; an adapter that knows nothing still runs under every
//! adversary, only with byte-level mutations.

use std::fmt::Debug;

use rand_chacha::ChaCha20Rng;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::dealer::GroupParameters;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_crypto::{ServerId, coin};
use sintra_protocols::{Fault, InstanceId, Party, Step, Target};

use crate::scenario::{NetworkKind, Strategy};

/// A message on the simulated wire: encodable, decodable, and naming its instance (the router
/// and the replay and flood strategies read and rewrite the instance id).
pub trait Envelope: Clone + Debug + PartialEq + Encode + Decode {
    /// The instance the message belongs to.
    fn instance(&self) -> &InstanceId;
    /// Moves the message to another instance (replays, floods).
    fn set_instance(&mut self, instance: InstanceId);
}

impl Envelope for sintra_protocols::Message {
    fn instance(&self) -> &InstanceId {
        &self.instance
    }

    fn set_instance(&mut self, instance: InstanceId) {
        self.instance = instance;
    }
}

/// A protocol output in the form the checkers compare: the agreed value as canonical bytes, and
/// the adapter's own checks of it (a certificate that verifies, an external proof that satisfies
/// the predicate), evaluated when the output appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// What was delivered or decided (RBC/CBC: the body; ABA: one byte 0 or 1).
    pub value: Vec<u8>,
    /// The agreement round the output came from (ABA), for the round metrics.
    pub round: Option<u32>,
    /// Named checks of the output's evidence; the validity checker requires all to hold.
    pub checks: Vec<(&'static str, bool)>,
}

impl Output {
    /// An output with no round and no evidence checks.
    pub fn value(value: Vec<u8>) -> Self {
        Self {
            value,
            round: None,
            checks: Vec::new(),
        }
    }
}

/// What one call into a protocol produced, with the protocol's messages and outputs in the
/// simulator's generic form.
#[derive(Debug)]
pub struct Effects<M> {
    /// Messages to send, in order.
    pub messages: Vec<(Target, M)>,
    /// Outputs, in order.
    pub outputs: Vec<Output>,
    /// Faults the server observed against peers.
    pub faults: Vec<Fault>,
}

impl<M> Default for Effects<M> {
    fn default() -> Self {
        Self {
            messages: Vec::new(),
            outputs: Vec::new(),
            faults: Vec::new(),
        }
    }
}

impl Effects<sintra_protocols::Message> {
    /// Converts a framework step, mapping each protocol output with `output`.
    pub fn from_step<O>(step: Step<O>, mut output: impl FnMut(O) -> Output) -> Self {
        Self {
            messages: step
                .messages
                .into_iter()
                .map(|outgoing| (outgoing.to, outgoing.message))
                .collect(),
            outputs: step.outputs.into_iter().map(&mut output).collect(),
            faults: step.faults,
        }
    }
}

/// Which honest servers must output, per the protocol's guarantee in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// Every honest server outputs (ABA, MVBA; RBC and CBC with an honest sender).
    All,
    /// All honest servers or none (RBC totality with a Byzantine sender).
    AllOrNone,
    /// No obligation (CBC with a Byzantine sender: consistency only).
    Optional,
    /// Every honest server delivers each of these items (atomic broadcast: the requests
    /// submitted to `t + 1` honest servers).
    Items(Vec<Vec<u8>>),
}

/// What the checkers expect of one instance in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The value every honest output must equal (validity: an honest sender's body; ABA with
    /// unanimous honest inputs).
    pub required: Option<Vec<u8>>,
    /// The values an honest output may take at all (integrity: "nothing invented"); `None` when
    /// the protocol allows any value (a Byzantine sender's body).
    pub allowed: Option<Vec<Vec<u8>>>,
    /// Who must output.
    pub termination: Termination,
    /// Outputs form a sequence (atomic broadcast): total order is checked position by position.
    /// Otherwise an instance has exactly one output per server.
    pub sequence: bool,
}

/// The inputs of one instance and what the checkers expect of it.
#[derive(Debug, Clone)]
pub struct Plan<I, S> {
    /// What every server needs to create the instance (an RBC's sender and variant).
    pub setup: S,
    /// `inputs[slot]`: the input of server `slot + 1`, if it gets one (an RBC sender's body,
    /// every ABA server's bit). Byzantine servers' entries are their honest-looking inputs; the
    /// strategy may replace them ([`Protocol::byzantine_input`]).
    pub inputs: Vec<Option<I>>,
    /// The expectations, computed from the honest servers' inputs.
    pub spec: Spec,
    /// A one-line description for reports ("sender server 3, 120-byte body").
    pub note: String,
}

/// The phase of an agreement vote, for the coin-stall adversary and the coin-secrecy checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VotePhase {
    /// An ABA pre-vote.
    Pre,
    /// An ABA main-vote.
    Main,
}

/// A vote read from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// Pre-vote or main-vote.
    pub phase: VotePhase,
    /// The round.
    pub round: u32,
    /// The value; `None` for an abstaining main-vote.
    pub value: Option<bool>,
}

/// What the adversaries and checkers may know about a message, as far as the adapter can tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Class {
    /// A server sends at most one message per slot `(kind, round)` and instance: a second,
    /// different message of the same sender on the same slot is an equivocation any receiver
    /// can prove. `None` for messages that may legitimately repeat or vary.
    pub slot: Option<(u8, u32)>,
    /// The vote the message carries, if any.
    pub vote: Option<Vote>,
    /// The coin round whose share the message carries, if any.
    pub coin_round: Option<u32>,
}

/// A protocol as the simulator drives it. One value of the implementing type is shared by all
/// servers of a run (it holds configuration only, never state).
pub trait Protocol: Sync {
    /// The wire message.
    type Message: Envelope;
    /// One server's instance of the protocol.
    type Node;
    /// A server's input.
    type Input: Clone + Debug;
    /// What every server needs to create an instance (drawn with the inputs).
    type Setup: Clone + Debug;

    /// The protocol's name on the command line (`rbc`, `aba`).
    fn name(&self) -> &'static str;

    /// The Byzantine strategies that mean something against this protocol.
    fn strategies(&self) -> Vec<Strategy> {
        Strategy::ALL
            .into_iter()
            .filter(|strategy| *strategy != Strategy::BadPredicate)
            .collect()
    }

    /// The network adversaries that mean something against this protocol.
    fn networks(&self) -> Vec<NetworkKind> {
        NetworkKind::ALL
            .into_iter()
            .filter(|network| *network != NetworkKind::CoinStall)
            .collect()
    }

    /// Draws the inputs of one instance. `byzantine` lists the Byzantine servers, whose inputs
    /// the spec must not rely on.
    fn plan(
        &self,
        parameters: GroupParameters,
        byzantine: &[ServerId],
        rng: &mut ChaCha20Rng,
    ) -> Plan<Self::Input, Self::Setup>;

    /// Creates server `party.id`'s instance `instance` (not started yet: messages may arrive
    /// before the server's input does).
    fn create(
        &self,
        party: &Party,
        instance: &InstanceId,
        plan: &Plan<Self::Input, Self::Setup>,
    ) -> Self::Node;

    /// Creates a Byzantine server's instance: by default the honest one. A protocol whose
    /// instance refuses a Byzantine input locally (an MVBA proposal failing the predicate)
    /// creates one that does not, as a Byzantine server running modified code would.
    fn create_byzantine(
        &self,
        party: &Party,
        instance: &InstanceId,
        plan: &Plan<Self::Input, Self::Setup>,
        _strategy: Strategy,
    ) -> Self::Node {
        self.create(party, instance, plan)
    }

    /// Gives the server its input. `Err` is local misuse, which the simulator reports as a
    /// violation (the simulator never misuses a protocol on purpose).
    fn start(
        &self,
        node: &mut Self::Node,
        party: &mut Party,
        input: &Self::Input,
    ) -> Result<Effects<Self::Message>, String>;

    /// Feeds one message from `from`.
    fn handle(
        &self,
        node: &mut Self::Node,
        party: &mut Party,
        from: ServerId,
        message: &Self::Message,
    ) -> Effects<Self::Message>;

    /// Whether the instance has finished (it then only answers late peers, if at all).
    fn terminated(&self, node: &Self::Node) -> bool;

    /// Whether `node`, as it stands, still checks what arrives for `instance` (the node's own
    /// id or a child's) — and, given a `slot`, a second message on that slot — so that a
    /// provable deviation must be recorded. A finished instance, a passed round or a child
    /// that stopped listening answers late peers at most. Default: until the node terminates.
    fn still_checks(
        &self,
        node: &Self::Node,
        _instance: &InstanceId,
        _slot: Option<(u8, u32)>,
    ) -> bool {
        !self.terminated(node)
    }

    /// Whether the honest `node`'s outgoing `message` releases a secret too early: a coin share
    /// before the coin may be known, a decryption share before the ciphertext is ordered.
    /// Returns the checker that owns the property and what happened. Called on every honest
    /// send, right after the call that produced it (so the node's state includes that call).
    fn early_release(
        &self,
        _node: &Self::Node,
        _message: &Self::Message,
    ) -> Option<(&'static str, String)> {
        None
    }

    /// What the adversaries may know about a message.
    /// Whether the server's patience timer runs: a protocol that relies on a runtime timeout
    /// for liveness (never for safety) says when it waits for one. The simulator then queues one
    /// timer event for the server, fired whenever the network picks it.
    fn patience_running(&self, _node: &Self::Node) -> bool {
        false
    }

    /// The server's patience ran out (see [`Protocol::patience_running`]).
    fn patience_out(&self, _node: &mut Self::Node, _party: &mut Party) -> Effects<Self::Message> {
        Effects::default()
    }

    /// How the adversaries see `message` (see [`Class`]); default: nothing known.
    fn classify(&self, _message: &Self::Message) -> Class {
        Class::default()
    }

    /// The input a Byzantine server running `strategy` uses instead of its planned one
    /// (`opposite`: the other bit; `bad-predicate`: a proof failing the predicate).
    fn byzantine_input(
        &self,
        _strategy: Strategy,
        input: &Self::Input,
        _rng: &mut ChaCha20Rng,
    ) -> Self::Input {
        input.clone()
    }

    /// The input of an equivocating server's second, "twin" instance: a conflicting input,
    /// so the twin sends validly signed messages that contradict the server's first instance.
    /// `None` when the protocol has no conflicting input to give.
    fn twin_input(&self, _input: &Self::Input, _rng: &mut ChaCha20Rng) -> Option<Self::Input> {
        None
    }

    /// A message contradicting `message` on the same slot (same kind and round, another
    /// value), for equivocation without a twin.
    fn conflict(&self, _message: &Self::Message, _rng: &mut ChaCha20Rng) -> Option<Self::Message> {
        None
    }

    /// The message voting or asserting the opposite (the `opposite` strategy).
    fn opposite(&self, _message: &Self::Message) -> Option<Self::Message> {
        None
    }

    /// The message with a proof or value failing the external predicate (the `bad-predicate`
    /// strategy), for protocols that have one.
    fn bad_predicate(
        &self,
        _message: &Self::Message,
        _rng: &mut ChaCha20Rng,
    ) -> Option<Self::Message> {
        None
    }

    /// The message moved to a round far beyond any window (the `flood` strategy).
    fn far_future(&self, _message: &Self::Message) -> Option<Self::Message> {
        None
    }

    /// The coin share a message carries, for the coin-stall adversary.
    fn coin_share<'m>(&self, _message: &'m Self::Message) -> Option<(u32, &'m CoinShare)> {
        None
    }

    /// Candidate names `(purpose, name bytes)` of the coin of `round` in `instance`. The
    /// coin-stall adversary keeps the first candidate under which an observed share verifies.
    fn coin_names(&self, _instance: &InstanceId, _round: u32) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }
}

/// Combines `shares` of the coin `(purpose, name)` if they are enough: the coin-stall
/// adversary's view of a coin before any honest server has it.
pub(crate) fn coin_value(
    keys: &coin::PublicKeySet,
    purpose: &str,
    name: &[u8],
    shares: &[CoinShare],
) -> Option<bool> {
    let context = sintra_crypto::Context::new(purpose, name);
    keys.combine(&context, shares)
        .ok()
        .map(|combined| combined.value.bit())
}
