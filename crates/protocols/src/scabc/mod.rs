//! Secure causal atomic broadcast: atomic broadcast of TDH2 ciphertexts, opened by threshold
//! decryption only once their position in the order is fixed (Cachin–Kursawe–Petzold–Shoup,
//! CRYPTO 2001, §6). Design page: `docs/protocols/abc.md`.
//!
//! **Guarantees** (`n > 3t`): those of atomic broadcast ([`crate::abc`]) for the plaintexts —
//! all honest servers deliver the same plaintexts in the same order, each accepted ciphertext
//! submitted to `t + 1` honest servers is eventually delivered, a ciphertext is delivered once —
//! and **causal secrecy**: an honest server releases its decryption share of a ciphertext only
//! after atomic broadcast delivered that ciphertext, so its plaintext stays hidden (TDH2 needs
//! `t + 1` shares) until its position is fixed; the adversary cannot make a request depend on
//! the content of one ordered after it. Ciphertexts that fail the public validity check under
//! [`request_label`] (or that do not decode) are ordered like any request and then skipped by
//! every honest server alike: no share is ever released for them and nothing is delivered.
//!
//! How: requests go through an [`Abc`] instance `<id>/abc`; for the ciphertext at position `p`
//! every honest server sends its share in `<id>/d<p>`; `t + 1` valid shares open it (combined
//! optimistically, invalid shares blamed); plaintexts are delivered in position order.
//!
//! Call order: [`Scabc::new`]; then [`Scabc::submit`] and [`Scabc::handle_message`] in any order.
//!
//! Limits: shares that arrive before their position is ordered are kept for
//! [`DECRYPTIONS_AHEAD_MAX`] positions (one per peer and position), further ones are dropped
//! (not a fault: a slow server sees honest peers far ahead), and the server then asks for
//! replies when it sends its own share; opened positions keep this server's own share for
//! [`POSITIONS_RETAINED`] positions to answer such requests. Ordered but unopened positions keep
//! their ciphertext until `t + 1` shares arrive ([`Scabc::undecrypted`] lets the runtime stop
//! reading ordering messages while that backlog is large).

mod message;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};
use sintra_crypto::encoding::{Decode, Encode};
use sintra_crypto::tdh2::{Ciphertext, DecryptionShare};
use sintra_crypto::{CombineError, Combined, Context, CryptoError, ServerId};
use thiserror::Error;

pub use message::Message;

use crate::abc::{self, Abc, AbcConfig, AbcError};
use crate::mutation::{self, Mutation};
use crate::{Body, FaultKind, InstanceId, Party, Step};

/// Purpose of the label clients encrypt requests under ([`request_label`]).
pub const REQUEST_PURPOSE: &str = "scabc/request";
/// Positions beyond the last ordered one for which early shares are kept (per peer, one share
/// of 130 bytes each).
pub const DECRYPTIONS_AHEAD_MAX: u64 = 4096;
/// Opened positions for which this server keeps its own share, to answer late peers.
pub const POSITIONS_RETAINED: u64 = 4096;

const ABC_LABEL: &str = "abc";

/// The TDH2 label clients encrypt requests under for the instance `instance`: a ciphertext made
/// for another instance or purpose is invalid here.
pub fn request_label(instance: &InstanceId) -> Context<'_> {
    Context::new(REQUEST_PURPOSE, instance.as_bytes())
}

/// One delivered plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The position of its ciphertext in the atomic-broadcast order (positions of skipped
    /// ciphertexts are not delivered, so positions increase with gaps).
    pub position: u64,
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// SHA-256 of the ordered ciphertext's encoding (`Ciphertext::to_bytes`): lets the runtime
    /// match the plaintext with the client that submitted the ciphertext.
    pub ciphertext_digest: [u8; 32],
}

/// Local misuse or back-pressure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScabcError {
    /// The ciphertext fails the validity check under [`request_label`].
    #[error("the ciphertext is not valid for this instance")]
    InvalidCiphertext,
    /// Refused by atomic broadcast (queue full, too large).
    #[error(transparent)]
    Abc(#[from] AbcError),
}

/// Where an ordered position stands.
enum State {
    /// Valid ciphertext, collecting shares.
    Decrypting {
        ciphertext: Box<Ciphertext>,
        shares: BTreeMap<ServerId, DecryptionShare>,
        invalid: BTreeSet<ServerId>,
    },
    /// Opened; the plaintext until it is delivered.
    Opened(Option<Vec<u8>>),
    /// Never delivered: the ciphertext was invalid (`shares_expected` false: no honest server
    /// shares it), or valid but sealed garbage that no key opens (`true`: honest servers share
    /// it, and every one finds the same).
    Skipped { shares_expected: bool },
}

struct Position {
    state: State,
    /// This server's share (valid ciphertexts only).
    own: Option<DecryptionShare>,
    /// Peers whose request for a reply was answered.
    answered: BTreeSet<ServerId>,
    /// SHA-256 of the ordered ciphertext bytes.
    digest: [u8; 32],
}

/// One secure causal atomic broadcast instance at one server.
pub struct Scabc {
    instance: InstanceId,
    abc: Abc,
    /// Ordered positions from `next_output - POSITIONS_RETAINED` on.
    positions: BTreeMap<u64, Position>,
    /// The next position to deliver (or skip).
    next_output: u64,
    /// Shares for positions not ordered yet, one per peer.
    early: BTreeMap<u64, BTreeMap<ServerId, DecryptionShare>>,
    /// The highest position a share was dropped for (too far ahead).
    dropped_through: Option<u64>,
}

impl Scabc {
    /// An instance named `instance`; its atomic broadcast runs in `<instance>/abc` with `config`.
    pub fn new(instance: InstanceId, config: AbcConfig) -> Self {
        // An id without room for the child makes the child unusable (it is longer than atomic
        // broadcast accepts); `submit` then reports it.
        let abc_id = instance
            .child(ABC_LABEL)
            .unwrap_or_else(|| instance.clone());
        Self {
            abc: Abc::new(abc_id, config),
            instance,
            positions: BTreeMap::new(),
            next_output: 0,
            early: BTreeMap::new(),
            dropped_through: None,
        }
    }

    /// An instance that continues after a restart where a server's log ends (see
    /// [`Abc::resume`]): atomic broadcast delivers round `next_round` next at position
    /// `delivered_count`, and `recent` restores its deduplication window (`(round, digest of the
    /// ciphertext bytes)`). The runtime may resume only where every ordered position was opened
    /// or skipped (`undecrypted() == 0` when it stopped, or after it persisted those positions'
    /// outcomes): positions below `delivered_count` are not decrypted again.
    pub fn resume(
        instance: InstanceId,
        config: AbcConfig,
        next_round: u64,
        delivered_count: u64,
        recent: impl IntoIterator<Item = (u64, crate::cbc::Digest)>,
    ) -> Self {
        let mut scabc = Self::new(instance, config);
        let abc_id = scabc.abc.instance().clone();
        scabc.abc = Abc::resume(abc_id, config, next_round, delivered_count, recent);
        scabc.next_output = delivered_count;
        scabc
    }

    /// [`Abc::catch_up_to`] for the atomic broadcast underneath: peers delivered rounds up to
    /// `round`.
    pub fn catch_up_to(&mut self, party: &mut Party, round: u64) -> Step<Delivered> {
        let mut step = Step::new();
        let ordered = self.abc.catch_up_to(party, round);
        self.on_ordering_step(party, ordered, &mut step);
        step
    }

    /// Takes a client's ciphertext: checks it under [`request_label`] and hands it to atomic
    /// broadcast. Refused — and not kept — when invalid, too large, or when the queue is full.
    pub fn submit(
        &mut self,
        party: &mut Party,
        ciphertext: Ciphertext,
    ) -> Result<Step<Delivered>, ScabcError> {
        let label = request_label(&self.instance);
        if party
            .group
            .encryption
            .verify_ciphertext(&label, &ciphertext)
            .is_err()
        {
            return Err(ScabcError::InvalidCiphertext);
        }
        let mut step = Step::new();
        if mutation::active(Mutation::DecryptBeforeOrdering) {
            self.leak_share_before_ordering(party, &ciphertext, &mut step);
        }
        let ordered = self.abc.submit(party, ciphertext.to_bytes())?;
        self.on_ordering_step(party, ordered, &mut step);
        Ok(step)
    }

    /// The deliberate bug [`Mutation::DecryptBeforeOrdering`]: releases this server's share of a
    /// ciphertext on submission, in the decryption instance of the position the ciphertext would
    /// get if it were ordered next — before atomic broadcast fixed anything.
    fn leak_share_before_ordering(
        &mut self,
        party: &mut Party,
        ciphertext: &Ciphertext,
        step: &mut Step<Delivered>,
    ) {
        let label = request_label(&self.instance);
        let guess = self.abc.delivered_count() + self.abc.pending() as u64;
        if let Ok(share) =
            party
                .keys
                .encryption
                .decryption_share(&label, ciphertext, &mut party.rng)
            && let Some(message) = self.share_envelope(guess, share, false)
        {
            step.broadcast(message);
        }
    }

    /// Handles a message for this instance or one below it (atomic broadcast's in `<id>/abc/...`,
    /// decryption shares in `<id>/d<p>`). Anything else is a fault of `from`.
    pub fn handle_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
    ) -> Step<Delivered> {
        let mut step = Step::new();
        let label = message.instance.label_below(&self.instance);
        if label == Some(ABC_LABEL) {
            let ordered = self.abc.handle_message(party, from, message);
            self.on_ordering_step(party, ordered, &mut step);
            return step;
        }
        let position = label
            .and_then(|label| label.strip_prefix('d'))
            .and_then(abc::parse_decimal)
            .filter(|position| {
                self.instance
                    .child(&format!("d{position}"))
                    .is_some_and(|id| id == message.instance)
            });
        match (&message.body, position) {
            (Body::Scabc(Message::Share { share, wants_reply }), Some(position))
                if from.is_member_of(party.servers()) =>
            {
                self.on_share(party, from, position, share, *wants_reply, &mut step);
                self.deliver_in_order(&mut step);
            }
            _ => step.fault(from, &message.instance, FaultKind::UnexpectedMessage),
        }
        step
    }

    /// After a restart: positions up to `position` may have been shared by this server before
    /// it stopped, and peers that already opened them will not share them again unasked, so
    /// this server's share of each of them asks for replies (as for shares it dropped).
    pub fn expect_replies_through(&mut self, position: u64) {
        self.dropped_through = self.dropped_through.max(Some(position));
    }

    /// [`Abc::set_time`] for the atomic broadcast underneath: the clock this server proposes
    /// its ordering batches with (the plaintexts carry no time of their own).
    pub fn set_time(&mut self, time_ms: u64) {
        self.abc.set_time(time_ms);
    }

    /// [`Abc::set_draining`] for the atomic broadcast underneath.
    pub fn set_draining(&mut self, draining: bool) {
        self.abc.set_draining(draining);
    }

    /// The atomic broadcast underneath.
    pub fn abc(&self) -> &Abc {
        &self.abc
    }

    /// The next position to be delivered or skipped.
    pub fn next_position(&self) -> u64 {
        self.next_output
    }

    /// Ordered positions not delivered or skipped yet (waiting for shares or for an earlier
    /// position).
    pub fn undecrypted(&self) -> u64 {
        self.abc.delivered_count() - self.next_output
    }

    /// The ciphertext ordered at `position`, while it is being decrypted.
    pub fn decrypting(&self, position: u64) -> Option<&Ciphertext> {
        match &self.positions.get(&position)?.state {
            State::Decrypting { ciphertext, .. } => Some(ciphertext),
            _ => None,
        }
    }

    fn share_envelope(
        &self,
        position: u64,
        share: DecryptionShare,
        wants_reply: bool,
    ) -> Option<crate::Message> {
        Some(crate::Message {
            instance: self.instance.child(&format!("d{position}"))?,
            body: Body::Scabc(Message::Share {
                share: Box::new(share),
                wants_reply,
            }),
        })
    }

    fn on_ordering_step(
        &mut self,
        party: &mut Party,
        ordered: Step<abc::Delivered>,
        step: &mut Step<Delivered>,
    ) {
        for delivered in step.absorb(ordered) {
            self.on_ordered(party, delivered, step);
        }
        self.deliver_in_order(step);
    }

    /// Atomic broadcast fixed `delivered.position`: from here on, and only from here on, this
    /// server releases its share of the ciphertext there.
    fn on_ordered(
        &mut self,
        party: &mut Party,
        delivered: abc::Delivered,
        step: &mut Step<Delivered>,
    ) {
        let position = delivered.position;
        let digest: [u8; 32] = Sha256::digest(&delivered.request).into();
        let early = self.early.remove(&position).unwrap_or_default();
        self.early = self.early.split_off(&position);
        let label = request_label(&self.instance);
        let own = Ciphertext::from_bytes(&delivered.request)
            .ok()
            .and_then(|ciphertext| {
                let share = party
                    .keys
                    .encryption
                    .decryption_share(&label, &ciphertext, &mut party.rng)
                    .ok()?;
                Some((ciphertext, share))
            });
        let Some((ciphertext, own)) = own else {
            // Invalid under the label, the same verdict at every honest server: skipped, and no
            // honest server shares it, so shares received for it are faults.
            for sender in early.keys() {
                step.fault(
                    *sender,
                    &self.position_id(position),
                    FaultKind::UnexpectedMessage,
                );
            }
            self.positions.insert(
                position,
                Position {
                    state: State::Skipped {
                        shares_expected: false,
                    },
                    own: None,
                    answered: BTreeSet::new(),
                    digest,
                },
            );
            return;
        };
        let wants_reply = self
            .dropped_through
            .is_some_and(|dropped| dropped >= position);
        if let Some(message) = self.share_envelope(position, own.clone(), wants_reply) {
            step.broadcast(message);
        }
        let mut shares = early;
        shares.insert(party.id, own.clone());
        self.positions.insert(
            position,
            Position {
                state: State::Decrypting {
                    ciphertext: Box::new(ciphertext),
                    shares,
                    invalid: BTreeSet::new(),
                },
                own: Some(own),
                answered: BTreeSet::new(),
                digest,
            },
        );
        self.try_open(party, position, step);
    }

    fn position_id(&self, position: u64) -> InstanceId {
        self.instance
            .child(&format!("d{position}"))
            .unwrap_or_else(|| self.instance.clone())
    }

    fn on_share(
        &mut self,
        party: &mut Party,
        from: ServerId,
        position: u64,
        share: &DecryptionShare,
        wants_reply: bool,
        step: &mut Step<Delivered>,
    ) {
        let instance = self.position_id(position);
        if share.id() != from {
            // Shares are made with the sender's own key.
            return step.fault(from, &instance, FaultKind::UnexpectedMessage);
        }
        if from == party.id {
            // Our own broadcast, looped back: already counted.
            return;
        }
        let ordered = self.abc.delivered_count();
        let Some(entry) = self.positions.get_mut(&position) else {
            if position < ordered {
                // Opened long ago and forgotten: the peer needs state transfer.
                return;
            }
            if position - ordered >= DECRYPTIONS_AHEAD_MAX {
                self.dropped_through = self.dropped_through.max(Some(position));
                return;
            }
            let slot = self.early.entry(position).or_default();
            match slot.get(&from) {
                Some(kept) if kept.same_value(share) => {}
                Some(_) => step.fault(from, &instance, FaultKind::Equivocation),
                None => {
                    slot.insert(from, share.clone());
                }
            }
            return;
        };
        if wants_reply
            && let Some(own) = entry.own.clone()
            && entry.answered.insert(from)
            && let Some(message) = self.share_envelope(position, own, false)
        {
            step.send(from, message);
        }
        let Some(entry) = self.positions.get_mut(&position) else {
            return;
        };
        match &mut entry.state {
            State::Skipped {
                shares_expected: false,
            } => step.fault(from, &instance, FaultKind::UnexpectedMessage),
            State::Decrypting { shares, .. } => {
                match shares.get(&from) {
                    // Each server shares a position once (the same value when it replies or
                    // shares again after a restart; only the proof's randomness differs).
                    Some(kept) if kept.same_value(share) => {}
                    Some(_) => step.fault(from, &instance, FaultKind::Equivocation),
                    None => {
                        shares.insert(from, share.clone());
                        self.try_open(party, position, step);
                    }
                }
            }
            // Done: the share is not needed and not checked.
            State::Opened(_) | State::Skipped { .. } => {}
        }
    }

    /// Combines once `t + 1` shares not known to be invalid are at hand: optimistically, one
    /// check of the result; on failure the invalid shares are found, blamed and left out.
    fn try_open(&mut self, party: &mut Party, position: u64, step: &mut Step<Delivered>) {
        let instance = self.position_id(position);
        let label = request_label(&self.instance);
        let Some(entry) = self.positions.get_mut(&position) else {
            return;
        };
        let State::Decrypting {
            ciphertext,
            shares,
            invalid,
        } = &mut entry.state
        else {
            return;
        };
        let candidates: Vec<DecryptionShare> = shares
            .iter()
            .filter(|(server, _)| !invalid.contains(server))
            .map(|(_, share)| share.clone())
            .collect();
        let key = &party.group.encryption;
        if candidates.len() < key.threshold() {
            return;
        }
        let (next, faulty) = match key.combine(&label, ciphertext, &candidates) {
            Ok(Combined { value, faulty }) => (Some(State::Opened(Some(value))), faulty),
            Err(CombineError::NotEnoughValidShares { faulty, .. }) => (None, faulty),
            // Valid proof, but the sealed part does not open under the key: the encryptor sealed
            // garbage. Every honest server combines the same key and finds the same.
            Err(CombineError::Crypto(CryptoError::InvalidCiphertext)) => (
                Some(State::Skipped {
                    shares_expected: true,
                }),
                Vec::new(),
            ),
            // Shares are keyed by their checked sender: no duplicates, no strangers.
            Err(_) => (None, Vec::new()),
        };
        for server in faulty {
            invalid.insert(server);
            step.fault(server, &instance, FaultKind::InvalidShare);
        }
        if let Some(next) = next {
            entry.state = next;
        }
    }

    /// Delivers opened plaintexts and passes skipped positions, in position order; forgets
    /// positions older than [`POSITIONS_RETAINED`].
    fn deliver_in_order(&mut self, step: &mut Step<Delivered>) {
        while let Some(entry) = self.positions.get_mut(&self.next_output) {
            match &mut entry.state {
                State::Opened(plaintext) => {
                    if let Some(plaintext) = plaintext.take() {
                        step.outputs.push(Delivered {
                            position: self.next_output,
                            plaintext,
                            ciphertext_digest: entry.digest,
                        });
                    }
                }
                State::Skipped { .. } => {}
                State::Decrypting { .. } => break,
            }
            self.next_output += 1;
        }
        let oldest = self.next_output.saturating_sub(POSITIONS_RETAINED);
        self.positions = self.positions.split_off(&oldest);
    }
}
