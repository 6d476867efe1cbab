//! Byzantine servers: up to `t` servers run the honest protocol underneath and change what they
//! send, per [`Strategy`] (except `silent`, which crashes at the start). A Byzantine server's
//! messages to itself are never changed, so its honest core stays consistent and keeps
//! producing plausible messages to distort.
//!
//! What each strategy sends to every other server, for each message `m` its core sends:
//!
//! | strategy | sends |
//! |---|---|
//! | `silent` | nothing |
//! | `equivocate` | `m` to one half of the peers; to the other half the twin instance's message (the twin runs with a conflicting input: another body, the other bit) or, without a twin, the adapter's conflicting copy; now and then both versions to one peer; each version withheld from some of its peers, and now and then sent `2t + 1` times over (ballot stuffing: a correct protocol counts a sender once) |
//! | `invalid-crypto` | `m` with one signature share, signature or coin share replaced by a well-formed wrong one ([`crypto::corrupt`]) |
//! | `replay` | `m`, and now and then a message it saw (its own or another server's) moved into another instance of the run, or repeated verbatim |
//! | `opposite` | the adapter's opposite of `m` (a flipped vote; the input is flipped too) |
//! | `bad-predicate` | the adapter's copy of `m` with a proof or value failing the external predicate, else `m` |
//! | `flood` | `m`, plus copies for a far-future round and for unknown instances, up to [`FLOOD_MESSAGES_MAX`] per run |
//! | `random-bytes` | half the time `m`, otherwise garbage through the decoder ([`bytes::garble`]) |

use std::collections::BTreeSet;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::ServerKeys;
use sintra_crypto::encoding::Encode;
use sintra_protocols::InstanceId;

use crate::network::Core;
use crate::protocol::{Envelope, Protocol};
use crate::record::{Detectability, DeviationKind};
use crate::scenario::Strategy;

pub mod bytes;
pub mod crypto;

/// Messages a flooding server adds per run, in total over all recipients: enough to overflow
/// any per-peer window a protocol keeps, small enough to keep runs short.
pub const FLOOD_MESSAGES_MAX: u32 = 256;

/// Messages a replaying server remembers (the first ones it sees).
pub const REPLAY_LOG_MAX: usize = 128;

/// One in this many messages of an equivocating server also goes, in both versions, to one peer.
const DOUBLE_SEND_ONE_IN: u32 = 4;

/// An equivocating server withholds each version of a message from each of its peers with
/// probability one in this many: selective omission, so that a quorum is reached at some
/// honest servers and not at others.
const WITHHOLD_ONE_IN: u32 = 3;

/// One in this many versions of an equivocating server's messages is sent `2t + 1` times.
const STUFF_ONE_IN: u32 = 8;

/// What a Byzantine server puts on the wire.
#[derive(Debug, Clone)]
pub enum Wire<M> {
    /// A well-formed message.
    Message(M),
    /// Raw bytes (decoded by the simulator like any receiver would).
    Bytes(Vec<u8>),
}

/// One message of a Byzantine server to some of its peers.
#[derive(Debug, Clone)]
pub struct Send<M> {
    /// The recipients.
    pub to: Vec<ServerId>,
    /// What they get.
    pub wire: Wire<M>,
    /// What the server did, if detectable in itself.
    pub deviation: Option<(DeviationKind, Detectability)>,
}

/// A Byzantine server's adversarial state (its honest core lives with the simulator).
#[derive(Debug)]
pub struct Byzantine<M> {
    /// Its strategy.
    pub strategy: Strategy,
    /// Its id.
    pub id: ServerId,
    /// Its randomness for mutations.
    pub rng: ChaCha20Rng,
    /// Peers that get the twin's (or the conflicting) version when equivocating.
    pub second_half: BTreeSet<ServerId>,
    /// Messages it saw, for replays.
    pub log: Vec<M>,
    /// Flood messages it may still add.
    pub flood_left: u32,
    /// Counter for unknown instance names.
    flood_instances: u32,
    /// `t`: how many copies ballot stuffing sends (`2t + 1`).
    faults: u16,
}

impl<M: Envelope> Byzantine<M> {
    /// A Byzantine server `id`. `second_half`: the servers that get the second version of an
    /// equivocation — one split for all Byzantine servers of a run, so that they collude.
    pub fn new(
        strategy: Strategy,
        id: ServerId,
        faults: u16,
        second_half: BTreeSet<ServerId>,
        rng: ChaCha20Rng,
    ) -> Self {
        Self {
            strategy,
            id,
            rng,
            second_half,
            log: Vec::new(),
            flood_left: FLOOD_MESSAGES_MAX,
            flood_instances: 0,
            faults,
        }
    }

    /// Remembers a message for replays.
    pub fn observe(&mut self, message: &M) {
        if self.strategy == Strategy::Replay && self.log.len() < REPLAY_LOG_MAX {
            self.log.push(message.clone());
        }
    }

    /// What to send to `peers` (every recipient but the server itself) for the message
    /// `message` of core `core`. `twin_active`: the server's twin instance got a conflicting
    /// input for this message's instance. `root` is the run's root instance (flood messages go
    /// to unknown instances below it), `instances` the run's instances (replay targets).
    #[allow(clippy::too_many_arguments)]
    pub fn distort<P: Protocol<Message = M>>(
        &mut self,
        adapter: &P,
        keys: &ServerKeys,
        core: Core,
        twin_active: bool,
        message: &M,
        peers: &[ServerId],
        root: &InstanceId,
        instances: &[InstanceId],
    ) -> Vec<Send<M>> {
        let all = |wire: Wire<M>, deviation| Send {
            to: peers.to_vec(),
            wire,
            deviation,
        };
        let original = || all(Wire::Message(message.clone()), None);
        match self.strategy {
            Strategy::Silent => Vec::new(),
            Strategy::Equivocate => self.equivocate(adapter, core, twin_active, message, peers),
            Strategy::InvalidCrypto => {
                match crypto::corrupt(&message.to_bytes(), keys, &mut self.rng) {
                    Some(bytes) => vec![all(
                        Wire::Bytes(bytes),
                        Some((DeviationKind::InvalidCrypto, Detectability::May)),
                    )],
                    None => vec![original()],
                }
            }
            Strategy::Replay => {
                self.observe(message);
                let mut sends = vec![original()];
                if !self.log.is_empty() && self.rng.gen_bool(0.25) {
                    // A verbatim duplicate of something seen, in its own instance: harmless to
                    // a correct protocol, which must not count it twice.
                    let old = self.log[self.rng.gen_range(0..self.log.len())].clone();
                    sends.push(all(Wire::Message(old), None));
                }
                if !self.log.is_empty() && self.rng.gen_bool(0.5) {
                    let mut old = self.log[self.rng.gen_range(0..self.log.len())].clone();
                    let others: Vec<&InstanceId> =
                        instances.iter().filter(|i| *i != old.instance()).collect();
                    if let Some(target) = others.choose(&mut self.rng) {
                        old.set_instance((*target).clone());
                    }
                    sends.push(all(
                        Wire::Message(old),
                        Some((DeviationKind::Replay, Detectability::May)),
                    ));
                }
                sends
            }
            Strategy::Opposite => match adapter.opposite(message) {
                Some(flipped) => vec![all(
                    Wire::Message(flipped),
                    Some((DeviationKind::Opposite, Detectability::May)),
                )],
                None => vec![original()],
            },
            Strategy::BadPredicate => match adapter.bad_predicate(message, &mut self.rng) {
                Some(bad) => vec![all(
                    Wire::Message(bad),
                    Some((DeviationKind::BadPredicate, Detectability::May)),
                )],
                None => vec![original()],
            },
            Strategy::Flood => {
                let mut sends = vec![original()];
                let cost = peers.len() as u32;
                if self.flood_left >= cost
                    && let Some(future) = adapter.far_future(message)
                {
                    self.flood_left -= cost;
                    sends.push(all(
                        Wire::Message(future),
                        Some((DeviationKind::FarFuture, Detectability::Must)),
                    ));
                }
                if self.flood_left >= cost {
                    self.flood_left -= cost;
                    self.flood_instances += 1;
                    let label = format!("flood-{}", self.flood_instances);
                    if let Some(unknown) = root.child(&label) {
                        let mut moved = message.clone();
                        moved.set_instance(unknown);
                        sends.push(all(
                            Wire::Message(moved),
                            Some((DeviationKind::UnknownInstance, Detectability::Must)),
                        ));
                    }
                }
                sends
            }
            Strategy::RandomBytes => {
                if self.rng.gen_bool(0.5) {
                    vec![original()]
                } else {
                    let header = message.instance().to_bytes().len() + 1;
                    let bytes = bytes::garble(&message.to_bytes(), header, &mut self.rng);
                    vec![all(
                        Wire::Bytes(bytes),
                        Some((DeviationKind::RandomMessage, Detectability::May)),
                    )]
                }
            }
        }
    }

    fn equivocate<P: Protocol<Message = M>>(
        &mut self,
        adapter: &P,
        core: Core,
        twin_active: bool,
        message: &M,
        peers: &[ServerId],
    ) -> Vec<Send<M>> {
        let (second, first): (Vec<ServerId>, Vec<ServerId>) =
            peers.iter().partition(|p| self.second_half.contains(p));
        let mut sends = Vec::new();
        if core == Core::Twin {
            self.scatter(second, message, &mut sends);
            return sends;
        }
        let conflict = adapter.conflict(message, &mut self.rng);
        self.scatter(first.clone(), message, &mut sends);
        if !twin_active {
            let other = conflict.clone().unwrap_or_else(|| message.clone());
            self.scatter(second, &other, &mut sends);
        }
        // Both versions to one peer: the receiver holds two messages of one slot from us, a
        // provable equivocation (tracked by the simulator from the slots).
        if let Some(conflict) = conflict
            && !first.is_empty()
            && self.rng.gen_ratio(1, DOUBLE_SEND_ONE_IN)
        {
            let victim = first[self.rng.gen_range(0..first.len())];
            sends.push(Send {
                to: vec![victim],
                wire: Wire::Message(conflict),
                deviation: None,
            });
        }
        sends
    }

    /// Sends one version of a message to `to`, withholding it from some and now and then
    /// repeating it `2t + 1` times.
    fn scatter(&mut self, to: Vec<ServerId>, message: &M, sends: &mut Vec<Send<M>>) {
        let to: Vec<ServerId> = to
            .into_iter()
            .filter(|_| !self.rng.gen_ratio(1, WITHHOLD_ONE_IN))
            .collect();
        if to.is_empty() {
            return;
        }
        let copies = if self.rng.gen_ratio(1, STUFF_ONE_IN) {
            2 * usize::from(self.faults) + 1
        } else {
            1
        };
        for _ in 0..copies {
            sends.push(Send {
                to: to.clone(),
                wire: Wire::Message(message.clone()),
                deviation: None,
            });
        }
    }
}
