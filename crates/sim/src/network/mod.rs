//! The simulated network: a pool of in-flight events from which the network adversary picks the
//! next one to deliver.
//!
//! Everything that happens in a run is an event in the pool: a message from one server to
//! another (or to itself: `Target::All` includes the sender), or a server receiving its input.
//! Each step the adversary ([`Network`]) picks one event; the simulator delivers it and adds
//! whatever the receiver sends. No adversary ever drops a message: an adversary may hold a
//! message only while something else can be delivered (or, for `coin-stall`, for a bounded
//! number of deliveries), so every message between honest servers is eventually delivered —
//! the asynchronous model, never a lossy one. A run ends when the pool is empty or its delivery
//! budget is spent.

use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::ServerKeys;
use sintra_crypto::encoding::DecodeError;

use crate::protocol::{Class, Protocol};
use crate::record::{Detectability, DeviationKind};
use crate::scenario::NetworkKind;

mod coin_stall;
mod partition;
mod targeted;

pub use coin_stall::CoinStall;
pub use partition::Partition;
pub use targeted::Targeted;

/// A message as it travels: encoded once when sent, decoded once (decoding is deterministic, so
/// every receiver would get the same result), classified once for the adversaries.
#[derive(Debug)]
pub struct Payload<M> {
    /// Encoded size in bytes (the bytes metric).
    pub len: usize,
    /// SHA-256 of the encoding (the trace hash, equivocation tracking).
    pub digest: [u8; 32],
    /// The decoded message, or why the bytes do not decode.
    pub message: Result<M, DecodeError>,
    /// What the adapter could tell about the message.
    pub class: Class,
}

/// Which of a Byzantine server's two protocol instances a message comes from (honest servers
/// have only the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Core {
    /// The server's instance.
    Main,
    /// An equivocating server's second instance, started with a conflicting input.
    Twin,
}

/// What an in-flight event is.
#[derive(Debug, Clone)]
pub enum Event<M> {
    /// The server receives its input for instance number `instance` of the run.
    Start {
        /// Index of the instance in the run.
        instance: usize,
    },
    /// The server's patience timer for instance number `instance` runs out (it is armed while
    /// [`crate::Protocol::patience_running`] says so; the network decides when it fires, like
    /// any delivery — early, late, or in the middle of a burst).
    Timer {
        /// Index of the instance in the run.
        instance: usize,
    },
    /// A message.
    Deliver {
        /// The message.
        payload: Arc<Payload<M>>,
        /// The instance of the sender it comes from (the receiver's loopback goes to it only).
        core: Core,
        /// What a Byzantine sender did to it, if anything it did is detectable in itself.
        deviation: Option<(DeviationKind, Detectability)>,
    },
}

/// An event in the pool.
#[derive(Debug, Clone)]
pub struct InFlight<M> {
    /// Send order, unique within the run.
    pub seq: u64,
    /// Deliveries made before this event was queued (its age is `delivered - sent_at`).
    pub sent_at: u64,
    /// The sender (for a start event: the server itself).
    pub from: ServerId,
    /// The receiver.
    pub to: ServerId,
    /// The event.
    pub event: Event<M>,
}

impl<M> InFlight<M> {
    /// The decoded message, if the event is a message that decodes.
    pub fn message(&self) -> Option<&M> {
        match &self.event {
            Event::Deliver { payload, .. } => payload.message.as_ref().ok(),
            Event::Start { .. } | Event::Timer { .. } => None,
        }
    }

    /// The adapter's classification, if the event is a message.
    pub fn class(&self) -> Class {
        match &self.event {
            Event::Deliver { payload, .. } => payload.class,
            Event::Start { .. } | Event::Timer { .. } => Class::default(),
        }
    }
}

/// What an adversary may consult when it picks.
pub struct PickContext<'a, P: Protocol> {
    /// The protocol adapter (to read messages).
    pub adapter: &'a P,
    /// The adversary's randomness.
    pub rng: &'a mut ChaCha20Rng,
    /// Deliveries made so far.
    pub delivered: u64,
    /// The group's coin keys.
    pub coin_keys: &'a sintra_crypto::coin::PublicKeySet,
    /// The Byzantine servers' keys: the adversary controls them.
    pub byzantine_keys: &'a [Arc<ServerKeys>],
}

/// The network adversary of a run.
#[derive(Debug)]
pub enum Network {
    /// Uniformly random.
    Random,
    /// Oldest first.
    Fifo,
    /// See [`Targeted`].
    Targeted(Targeted),
    /// See [`Partition`].
    Partition(Partition),
    /// See [`CoinStall`].
    CoinStall(CoinStall),
}

impl Network {
    /// The adversary `kind` for a run whose honest servers are `honest`.
    pub fn new(
        kind: NetworkKind,
        servers: u16,
        faults: u16,
        honest: &[ServerId],
        rng: &mut ChaCha20Rng,
    ) -> Self {
        match kind {
            NetworkKind::Random => Network::Random,
            NetworkKind::Fifo => Network::Fifo,
            NetworkKind::Targeted => Network::Targeted(Targeted::new(faults, honest, rng)),
            NetworkKind::Partition => Network::Partition(Partition::new(servers, honest, rng)),
            NetworkKind::CoinStall => Network::CoinStall(CoinStall::new(servers)),
        }
    }

    /// The index in `pool` (non-empty, in send order) of the event to deliver next.
    pub fn pick<P: Protocol>(
        &mut self,
        pool: &[InFlight<P::Message>],
        cx: &mut PickContext<'_, P>,
    ) -> usize {
        debug_assert!(!pool.is_empty());
        match self {
            Network::Random => cx.rng.gen_range(0..pool.len()),
            Network::Fifo => 0,
            Network::Targeted(targeted) => targeted.pick(pool, cx.rng),
            Network::Partition(partition) => partition.pick(pool, cx),
            Network::CoinStall(stall) => stall.pick(pool, cx),
        }
    }

    /// A line for reports ("victims [2]", "groups [1, 3] | [2, 4], healed at 120").
    pub fn describe(&self) -> String {
        match self {
            Network::Random | Network::Fifo => String::new(),
            Network::Targeted(targeted) => targeted.describe(),
            Network::Partition(partition) => partition.describe(),
            Network::CoinStall(stall) => stall.describe(),
        }
    }
}

/// A uniformly random index among those of `pool` for which `eligible` holds, or `None`.
pub(crate) fn random_among<M>(
    pool: &[InFlight<M>],
    rng: &mut ChaCha20Rng,
    mut eligible: impl FnMut(&InFlight<M>) -> bool,
) -> Option<usize> {
    let candidates: Vec<usize> = (0..pool.len()).filter(|i| eligible(&pool[*i])).collect();
    if candidates.is_empty() {
        None
    } else {
        Some(candidates[rng.gen_range(0..candidates.len())])
    }
}
