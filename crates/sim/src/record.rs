//! What a run leaves behind for the checkers: outputs, faults, the Byzantine deviations that
//! reached honest servers, and the honest servers' votes and coin shares in send order.

use std::collections::BTreeMap;
use std::fmt;

use sintra_crypto::ServerId;
use sintra_crypto::dealer::GroupParameters;
use sintra_protocols::{Fault, InstanceId};

use crate::protocol::{Class, Output, Spec};
use crate::scenario::{Adversary, Strategy};

/// One instance of the run.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    /// Its id.
    pub id: InstanceId,
    /// What the checkers expect.
    pub spec: Spec,
    /// Every honest server's outputs, in order (servers without output are absent).
    pub outputs: BTreeMap<ServerId, Vec<Output>>,
    /// Honest servers whose instance reported `terminated()` at the end of the run.
    pub terminated: Vec<ServerId>,
}

/// How sure the simulator is that an honest receiver can prove a deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detectability {
    /// The receiver must record a fault against the sender (checked): bytes that do not decode;
    /// a message for an instance that does not exist, or for a round beyond every window,
    /// reaching a running instance; two different messages on one slot reaching a running
    /// instance at or before that slot's round.
    Must,
    /// Provable only if the receiver looks at it (counted, not checked): an invalid share
    /// after the receiver already combined a quorum without it, a replayed signature on a
    /// message it no longer needs, a bit-flipped vote.
    May,
}

/// What a Byzantine server did to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviationKind {
    /// Bytes that do not decode.
    Malformed,
    /// Random bytes that happen to decode.
    RandomMessage,
    /// A corrupted share, signature or proof.
    InvalidCrypto,
    /// A message replayed into another instance.
    Replay,
    /// A flipped vote.
    Opposite,
    /// A proof or value failing the external predicate.
    BadPredicate,
    /// A message for a round beyond every window.
    FarFuture,
    /// A message for an instance that does not exist.
    UnknownInstance,
    /// A second, different message on one slot.
    Equivocation,
}

/// A deviation that reached an honest server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredDeviation {
    /// The Byzantine sender.
    pub sender: ServerId,
    /// The honest receiver.
    pub receiver: ServerId,
    /// What it was.
    pub kind: DeviationKind,
    /// Whether the receiver must prove it.
    pub detectability: Detectability,
    /// When (delivery number).
    pub at: u64,
}

/// A fault an honest server recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFault {
    /// The honest server that recorded it.
    pub recorder: ServerId,
    /// The fault.
    pub fault: Fault,
    /// When (delivery number).
    pub at: u64,
}

/// A vote or coin share an honest server sent, in send order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HonestSend {
    /// The sender.
    pub server: ServerId,
    /// The instance.
    pub instance: InstanceId,
    /// What the adapter could tell about it.
    pub class: Class,
}

/// A secret an honest server released too early, as the adapter judged it from the server's
/// state when it sent the message ([`crate::Protocol::early_release`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyRelease {
    /// The honest server.
    pub server: ServerId,
    /// The checker that owns the property (`coin-secrecy`, `confidentiality`).
    pub checker: &'static str,
    /// What was released, and what had not happened yet.
    pub detail: String,
    /// When (delivery number).
    pub at: u64,
}

/// Everything the checkers look at.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The protocol.
    pub protocol: &'static str,
    /// `n` and `t`.
    pub parameters: GroupParameters,
    /// The seed.
    pub seed: u64,
    /// The adversary.
    pub adversary: Adversary,
    /// The Byzantine servers and their strategy.
    pub byzantine: BTreeMap<ServerId, Strategy>,
    /// The instances.
    pub instances: Vec<InstanceRecord>,
    /// Faults recorded by honest servers (and by the simulated receive path for undecodable
    /// bytes, on the receiver's behalf).
    pub faults: Vec<RecordedFault>,
    /// Byzantine deviations delivered to honest servers.
    pub deviations: Vec<DeliveredDeviation>,
    /// Honest votes and coin shares, in send order.
    pub honest_sends: Vec<HonestSend>,
    /// Secrets honest servers released too early.
    pub early_releases: Vec<EarlyRelease>,
    /// Errors returned by a protocol's start call (local misuse).
    pub start_errors: Vec<String>,
    /// Whether the delivery budget ran out with messages still in flight.
    pub budget_exhausted: bool,
}

impl RunRecord {
    /// Whether `server` is honest in this run.
    pub fn is_honest(&self, server: ServerId) -> bool {
        !self.byzantine.contains_key(&server)
    }

    /// The honest servers.
    pub fn honest(&self) -> Vec<ServerId> {
        ServerId::all(self.parameters.servers)
            .filter(|s| self.is_honest(*s))
            .collect()
    }
}

/// A property that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The checker that found it.
    pub checker: &'static str,
    /// What went wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker, self.detail)
    }
}
