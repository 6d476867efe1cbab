//! What a protocol returns from every call: messages to send, outputs, and faults observed.
//!
//! Errors are for local misuse (an input given twice, say) and are returned as `Err`. Faults are
//! what *peers* did wrong — an invalid share, an equivocation, a message outside every window —
//! and are returned inside the [`Step`], attributed to the peer, while the honest server goes on.

use sintra_crypto::ServerId;

use crate::{InstanceId, Message};

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every server of the group, this one included (the runtime loops it back).
    All,
    /// One server.
    Server(ServerId),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Recipient(s).
    pub to: Target,
    /// The message.
    pub message: Message,
}

/// What a peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A signature, coin or decryption share that does not verify.
    InvalidShare,
    /// A combined signature, certificate or proof that does not verify.
    InvalidProof,
    /// Two different messages where the protocol allows one (equivocation).
    Equivocation,
    /// A message the protocol never sends in this state or from this sender (e.g. a `send`
    /// from a server that is not the broadcaster, a vote without its justification).
    UnexpectedMessage,
    /// A body that does not match the hash it claims.
    WrongBody,
    /// A message for an instance or round beyond the window a server keeps.
    OutOfWindow,
    /// A message that does not decode.
    Malformed,
    /// A proposal or value that fails the external validity predicate.
    InvalidValue,
}

/// A fault attributed to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The peer.
    pub server: ServerId,
    /// The instance the message was for.
    pub instance: InstanceId,
    /// What it did.
    pub kind: FaultKind,
}

/// The result of one call into a protocol instance.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a step carries messages to send and outputs to act on"]
pub struct Step<O> {
    /// Messages to send, in order.
    pub messages: Vec<Outgoing>,
    /// Outputs (deliveries, decisions), in order.
    pub outputs: Vec<O>,
    /// Faults observed.
    pub faults: Vec<Fault>,
}

impl<O> Default for Step<O> {
    fn default() -> Self {
        Self {
            messages: Vec::new(),
            outputs: Vec::new(),
            faults: Vec::new(),
        }
    }
}

impl<O> Step<O> {
    /// An empty step.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a message to every server.
    pub fn broadcast(&mut self, message: Message) {
        self.messages.push(Outgoing {
            to: Target::All,
            message,
        });
    }

    /// Queues a message to one server.
    pub fn send(&mut self, to: ServerId, message: Message) {
        self.messages.push(Outgoing {
            to: Target::Server(to),
            message,
        });
    }

    /// Records a fault.
    pub fn fault(&mut self, server: ServerId, instance: &InstanceId, kind: FaultKind) {
        self.faults.push(Fault {
            server,
            instance: instance.clone(),
            kind,
        });
    }

    /// Appends a child instance's step, turning its outputs into ours with `map` (outputs
    /// that `map` drops are consumed by the caller through the returned vector).
    pub fn absorb<C>(&mut self, child: Step<C>) -> Vec<C> {
        self.messages.extend(child.messages);
        self.faults.extend(child.faults);
        child.outputs
    }

    /// Appends another step of the same output type.
    pub fn extend(&mut self, other: Step<O>) {
        self.messages.extend(other.messages);
        self.outputs.extend(other.outputs);
        self.faults.extend(other.faults);
    }

    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.outputs.is_empty() && self.faults.is_empty()
    }
}
