//! What a server remembers about the messages it received: one slot per peer, kind and round.
//!
//! A slot holds the digest of the first message a peer sent for it (so a second, different one
//! is an equivocation, and an identical copy is ignored) and how far that message was checked.
//! Only the parts needed later are kept: the value, the justification (reused to justify this
//! server's own next votes) and the share (combined into the next justification). External
//! proofs are checked on arrival and not stored per message — one valid proof is enough.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sintra_crypto::ServerId;
use sintra_crypto::bls::SignatureShare;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::encoding::Encode;

use super::message::{MainVoteJustification, Message, PreVoteJustification, Vote};

/// How far a received message has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// The justification is a valid `main-vote(r - 1, abstain)` signature, so the vote is
    /// justified iff the coin of round `r - 1` (not known yet) equals this value.
    AwaitingCoin(bool),
    /// Justification and external proof valid; the share is checked when it is used.
    Justified,
    /// Justification, external proof and share valid.
    Checked,
    /// Found invalid (a fault was recorded). The slot stays taken so that the sender cannot
    /// make this server check another message in its place.
    Rejected,
}

impl Standing {
    /// Whether the message counts towards a quorum.
    pub(super) fn counts(self) -> bool {
        matches!(self, Standing::Justified | Standing::Checked)
    }
}

/// The one message a peer may send for one kind (and round).
#[derive(Debug, Clone)]
pub(super) struct Slot<T> {
    /// SHA-256 of the message's encoding.
    pub(super) digest: [u8; 32],
    /// How far it was checked.
    pub(super) standing: Standing,
    /// What is kept of it; nothing for a message rejected on arrival, so that an oversized
    /// invalid justification costs no memory.
    pub(super) entry: Option<T>,
    /// Identical repeats received, counted only by the `CountDuplicateVotes` mutation.
    #[cfg(feature = "mutations")]
    pub(super) repeats: usize,
}

impl<T> Slot<T> {
    /// A slot for a message judged `standing` on arrival.
    pub(super) fn new(digest: [u8; 32], standing: Standing, entry: T) -> Self {
        Self {
            digest,
            standing,
            entry: (standing != Standing::Rejected).then_some(entry),
            #[cfg(feature = "mutations")]
            repeats: 0,
        }
    }

    /// The peer sent a message with this slot's digest again: an identical repeat, which a
    /// correct server ignores (only the `CountDuplicateVotes` mutation remembers it).
    pub(super) fn repeated(&mut self) {
        #[cfg(feature = "mutations")]
        if crate::mutation::active(crate::mutation::Mutation::CountDuplicateVotes) {
            self.repeats += 1;
        }
    }

    /// How many times the message counts: once (the mutation `CountDuplicateVotes` counts
    /// every repeat too).
    fn weight(&self) -> usize {
        #[cfg(feature = "mutations")]
        if crate::mutation::active(crate::mutation::Mutation::CountDuplicateVotes) {
            return 1 + self.repeats;
        }
        1
    }
}

/// A message that counts towards a quorum.
pub(super) struct Counted<'a, T> {
    /// Its sender.
    pub(super) server: ServerId,
    /// What is kept of it.
    pub(super) entry: &'a T,
    /// Whether its share is still unchecked.
    pub(super) unchecked: bool,
}

// Not derived: a derive would demand `T: Clone`, and only the reference is copied.
impl<T> Clone for Counted<'_, T> {
    fn clone(&self) -> Self {
        Self {
            server: self.server,
            entry: self.entry,
            unchecked: self.unchecked,
        }
    }
}

/// The messages of `slots` that count, in ascending order of sender.
pub(super) fn counted<T>(slots: &BTreeMap<ServerId, Slot<T>>) -> Vec<Counted<'_, T>> {
    slots
        .iter()
        .filter(|(_, slot)| slot.standing.counts())
        .filter_map(|(server, slot)| {
            let counted = Counted {
                server: *server,
                entry: slot.entry.as_ref()?,
                unchecked: slot.standing == Standing::Justified,
            };
            Some(std::iter::repeat_n(counted, slot.weight()))
        })
        .flatten()
        .collect()
}

/// A pre-process vote.
#[derive(Debug, Clone)]
pub(super) struct PreProcessEntry {
    pub(super) value: bool,
    pub(super) share: SignatureShare,
}

/// A pre-vote.
#[derive(Debug, Clone)]
pub(super) struct PreVoteEntry {
    pub(super) value: bool,
    pub(super) justification: PreVoteJustification,
    pub(super) share: SignatureShare,
}

/// A main-vote.
#[derive(Debug, Clone)]
pub(super) struct MainVoteEntry {
    pub(super) vote: Vote,
    pub(super) justification: MainVoteJustification,
    pub(super) share: SignatureShare,
}

/// Everything received for one round. Kept for the current round, the rounds ahead within
/// the window, and the previous round while its coin is still unknown (the coin decides
/// whether some of this round's votes are justified).
#[derive(Debug, Clone, Default)]
pub(super) struct RoundState {
    pub(super) pre_votes: BTreeMap<ServerId, Slot<PreVoteEntry>>,
    pub(super) main_votes: BTreeMap<ServerId, Slot<MainVoteEntry>>,
    pub(super) coin_shares: BTreeMap<ServerId, Slot<CoinShare>>,
    /// The coin of this round, once known (constant `1` for round 1 in biased mode).
    pub(super) coin: Option<bool>,
}

impl RoundState {
    /// Forgets the votes (their shares and justifications are no longer needed once the
    /// round is passed) but keeps the coin and its shares.
    pub(super) fn forget_votes(&mut self) {
        self.pre_votes = BTreeMap::new();
        self.main_votes = BTreeMap::new();
    }
}

/// The digest that identifies a message in its slot.
pub(super) fn digest(message: &Message) -> [u8; 32] {
    Sha256::digest(message.to_bytes()).into()
}

/// Marks the slots of `servers` rejected.
pub(super) fn reject<T>(slots: &mut BTreeMap<ServerId, Slot<T>>, servers: &[ServerId]) {
    for server in servers {
        if let Some(slot) = slots.get_mut(server) {
            slot.standing = Standing::Rejected;
        }
    }
}

/// Marks the slots of `servers` checked, unless rejected.
pub(super) fn mark_checked<T>(slots: &mut BTreeMap<ServerId, Slot<T>>, servers: &[ServerId]) {
    for server in servers {
        if let Some(slot) = slots.get_mut(server)
            && slot.standing.counts()
        {
            slot.standing = Standing::Checked;
        }
    }
}
