//! Multi-valued validated Byzantine agreement (Cachin–Kursawe–Petzold–Shoup, CRYPTO 2001, §4).
//! Design page: `docs/protocols/mvba.md`.
//!
//! **Guarantee** (`n > 3t`, every server with the same external predicate `Q`): all honest
//! servers decide the same value (agreement); it satisfies `Q` (external validity) and was
//! consistent-broadcast by its proposer (integrity); with probability 1 every honest server
//! decides, after an expected constant number of candidates — at most 3, and never more than
//! `2t` (termination).
//!
//! How: every server consistent-broadcasts its proposal in `ID/p<j>` (echoed only if `Q` holds);
//! once it knows `n - t` delivered proposals it consistent-broadcasts their proofs as its commit
//! in `ID/c<j>`; after `n - t` commits were delivered it releases its share of the permutation
//! coin; the coin orders the proposers; for each candidate in turn the servers exchange votes
//! (the value with its proof, or nothing) and run a biased binary agreement `ID/a<j>` whose 1
//! needs the value with its proof; the first 1 decides that value.
//!
//! Call order: [`Mvba::new`] at every server; [`Mvba::propose`] once; [`Mvba::handle_message`]
//! for every message whose envelope names this instance or one below it (children are routed
//! internally and created lazily, so messages may arrive in any order, also before `propose`).
//!
//! Limits: values at most [`VALUE_BYTES_MAX`]; per peer one coin share and one vote per
//! candidate, for candidates up to [`CANDIDATES_AHEAD_MAX`] beyond the current one (further ones
//! are [`FaultKind::OutOfWindow`]); proposals are kept once per proposer, whoever conveyed them;
//! two consistent broadcasts and at most one binary agreement per server. After deciding, an
//! instance keeps its decision and its children (the broadcasts answer late fetches, the
//! agreements up to the decided candidate answer late peers with their DECIDE) and drops its
//! votes, coin shares and known proposals.

mod message;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use sintra_crypto::coin::CoinShare;
use sintra_crypto::{CombineError, Context, Decode, Encode, ServerId};
use thiserror::Error;

pub use message::{COMMIT_PROOFS_MAX, Commit, Message, decode_justification, encode_justification};

use crate::aba::{Aba, AbaMode, ExternalValidity};
use crate::cbc::{self, Cbc, CbcDelivery, CbcProof, Digest, body_digest};
use crate::mutation::{self, Mutation};
use crate::{Body, FaultKind, InstanceId, Party, Step};

/// The largest proposal (bytes). A decision's value travels inside the binary agreement's
/// external proof, at most [`crate::aba::EXTERNAL_PROOF_BYTES_MAX`] (1 MiB); half of it leaves
/// ample room for the delivery proof and bounds what one proposer makes every server store.
/// Atomic broadcast proposes `n - t` batch certificates: about 90 KiB for the largest group.
pub const VALUE_BYTES_MAX: usize = 512 << 10;

/// How many candidates beyond the current one votes and agreement messages are kept for. An
/// honest server is ahead of another only by candidates whose agreement decided 0; each
/// candidate decides 1 with probability at least 1/3, and at most `2t` candidates are ever run
/// (design page, "Why it holds"). So for `t <= 16` no honest message is ever dropped, and beyond
/// that with probability below `(2/3)^32 < 3 · 10^-6`.
pub const CANDIDATES_AHEAD_MAX: u32 = 32;

/// Purpose tag of the permutation coin.
pub const PERMUTATION_PURPOSE: &str = "mvba/permutation";

/// The longest child label (`a1024`): `new` checks that the id leaves room for it.
const LONGEST_CHILD_LABEL: &str = "a1024";

// A decision's value travels in the binary agreement's external proof: it must fit.
const _: () = assert!(
    VALUE_BYTES_MAX + 4 + 2 + crate::INSTANCE_ID_BYTES_MAX + 32 + 48
        <= crate::aba::EXTERNAL_PROOF_BYTES_MAX
);

/// The external predicate `Q`: which values may be decided. It must be the same function at
/// every server (a value valid at one honest server is valid at all); it gets the [`Party`] so
/// that it can use the verified cache for the signatures a value carries.
pub trait Predicate: Send + Sync {
    /// Whether `Q(value)` holds.
    fn is_valid(&self, party: &mut Party, value: &[u8]) -> bool;
}

/// What an instance decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MvbaDecision {
    /// The decided value; `Q(value)` holds.
    pub value: Vec<u8>,
    /// The server whose consistent broadcast carried it.
    pub proposer: ServerId,
    /// The position of `proposer` in the permutation (from 1): how many candidates were run.
    pub candidate: u32,
}

/// Local misuse of an instance. Peers' misbehaviour is never an error: it is a fault in the step.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MvbaError {
    /// `propose` was called twice.
    #[error("this instance already has a proposal")]
    AlreadyProposed,
    /// The proposal fails the external predicate.
    #[error("the proposal fails the external predicate")]
    InvalidValue,
    /// The proposal exceeds [`VALUE_BYTES_MAX`].
    #[error("proposal of {len} bytes exceeds the maximum {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The instance id leaves no room for the children's labels (`ID/p<j>`, `ID/a<j>`).
    #[error("instance id too long for child instances")]
    InstanceIdTooLong,
}

/// The two consistent broadcasts of every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Broadcast {
    /// `ID/p<j>`: `j`'s proposal.
    Proposal,
    /// `ID/c<j>`: `j`'s commit ([`Commit`]).
    Commit,
}

impl Broadcast {
    fn prefix(self) -> char {
        match self {
            Broadcast::Proposal => 'p',
            Broadcast::Commit => 'c',
        }
    }
}

/// What this server knows of one proposer's consistent broadcast.
#[derive(Debug, Clone)]
struct Known {
    /// A valid delivery proof (at most one digest per broadcast has one).
    proof: CbcProof,
    /// The value, once obtained (delivery, fetch, or a valid 1-vote).
    value: Option<Vec<u8>>,
}

/// A peer's vote on one candidate, as far as telling a repeat from equivocation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ballot {
    Zero,
    One { proposer: ServerId, digest: Digest },
}

#[derive(Debug, Clone, Copy)]
struct VoteRecord {
    ballot: Ballot,
    /// Whether the vote passed every check (a 1-vote: value and valid proof of the candidate's
    /// broadcast, `Q`); invalid ones are kept only to recognise repeats.
    valid: bool,
}

/// One multi-valued agreement instance at one server.
pub struct Mvba {
    instance: InstanceId,
    predicate: Arc<dyn Predicate>,
    /// Whether `instance` leaves room for the children's labels.
    usable: bool,
    proposed: bool,
    /// Per server `j` (index `j.slot()`), its proposal broadcast `ID/p<j>`; created on the first
    /// call, when `n` is known.
    proposals: Vec<Cbc>,
    /// Per server `j`, its commit broadcast `ID/c<j>`.
    commits: Vec<Cbc>,
    /// Per broadcast, the digest of the sender's first SEND and whether it passed the check
    /// before echoing (`Q`, or the commit's shape and proofs): checked once per broadcast; a
    /// second, different SEND is equivocation.
    sends_checked: BTreeMap<(Broadcast, ServerId), (Digest, bool)>,
    /// Per proposer, its delivery proof and value as far as known here (at most `n` entries).
    known: BTreeMap<ServerId, Known>,
    commit_sent: bool,
    /// Servers whose commit was delivered here.
    delivered_commits: BTreeSet<ServerId>,
    coin_share_sent: bool,
    /// The first coin share of every peer (until the permutation is known).
    coin_shares: BTreeMap<ServerId, CoinShare>,
    /// Peers whose coin share was found invalid when combining.
    invalid_coin_shares: BTreeSet<ServerId>,
    /// The candidate order, once the coin is known; `positions[j.slot()]` is `j`'s position.
    permutation: Option<Vec<ServerId>>,
    positions: Vec<u32>,
    /// The current candidate position (from 1).
    candidate: u32,
    /// Whether this server voted on the current candidate.
    voted: bool,
    /// Whether this server gave its input to the current candidate's agreement.
    agreement_input_given: bool,
    /// Proposers whose value this server asked its peers for (at most once each).
    fetching: BTreeSet<ServerId>,
    /// Votes per candidate position, within the window.
    votes: BTreeMap<u32, BTreeMap<ServerId, VoteRecord>>,
    /// Binary agreements per proposer, created on the first message or when the candidate is
    /// reached.
    agreements: BTreeMap<ServerId, Aba>,
    decision: Option<MvbaDecision>,
}

impl fmt::Debug for Mvba {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mvba")
            .field("instance", &self.instance)
            .field("proposed", &self.proposed)
            .field("known", &self.known.len())
            .field("delivered_commits", &self.delivered_commits)
            .field("permutation", &self.permutation)
            .field("candidate", &self.candidate)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

/// The external validity of the binary agreement on proposer `j`: `π` is a value with a valid
/// delivery proof of `ID/p<j>`, and the value satisfies `Q`. It does not depend on the
/// permutation, so an agreement can check messages that arrive before the coin is known here —
/// the reason agreements are named by proposer rather than by position.
struct CandidateValidity {
    predicate: Arc<dyn Predicate>,
    proposal_instance: InstanceId,
}

impl ExternalValidity for CandidateValidity {
    fn is_valid(&self, party: &mut Party, proof: &[u8]) -> bool {
        decode_justification(proof).is_ok_and(|(value, cbc_proof)| {
            cbc_proof.instance == self.proposal_instance
                && check_proposal(party, &*self.predicate, value, &cbc_proof).is_ok()
        })
    }
}

/// Checks that `proof` is a valid delivery proof for `value` (in the proof's instance, which the
/// caller checked) and that `Q(value)` holds; on failure, the fault of whoever presented them.
fn check_proposal(
    party: &mut Party,
    predicate: &dyn Predicate,
    value: &[u8],
    proof: &CbcProof,
) -> Result<(), FaultKind> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(FaultKind::Malformed);
    }
    if body_digest(&proof.instance, value) != proof.digest {
        return Err(FaultKind::WrongBody);
    }
    if !proof.verify(party) {
        return Err(FaultKind::InvalidProof);
    }
    // Mutation: accept a certified value without checking Q (validity must then break).
    if !mutation::active(Mutation::SkipMvbaPredicate) && !predicate.is_valid(party, value) {
        return Err(FaultKind::InvalidValue);
    }
    Ok(())
}

/// The server named by a child label `<prefix><j>` (decimal, no leading zero), if a member.
fn parse_label(label: &str, prefix: char, servers: u16) -> Option<ServerId> {
    let digits = label.strip_prefix(prefix)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u16 = digits.parse().ok()?;
    ServerId::new(index).filter(|server| server.is_member_of(servers))
}

impl Mvba {
    /// An instance named `instance` deciding values that satisfy `predicate`. The id must leave
    /// room for the children's labels (6 bytes below [`crate::INSTANCE_ID_BYTES_MAX`]); otherwise
    /// [`Mvba::propose`] fails with [`MvbaError::InstanceIdTooLong`] and messages are ignored.
    pub fn new(instance: InstanceId, predicate: Arc<dyn Predicate>) -> Self {
        let usable = instance.child(LONGEST_CHILD_LABEL).is_some();
        Self {
            instance,
            predicate,
            usable,
            proposed: false,
            proposals: Vec::new(),
            commits: Vec::new(),
            sends_checked: BTreeMap::new(),
            known: BTreeMap::new(),
            commit_sent: false,
            delivered_commits: BTreeSet::new(),
            coin_share_sent: false,
            coin_shares: BTreeMap::new(),
            invalid_coin_shares: BTreeSet::new(),
            permutation: None,
            positions: Vec::new(),
            candidate: 1,
            voted: false,
            agreement_input_given: false,
            fetching: BTreeSet::new(),
            votes: BTreeMap::new(),
            agreements: BTreeMap::new(),
            decision: None,
        }
    }

    /// Proposes `value` (once): it must satisfy `Q` and fit [`VALUE_BYTES_MAX`]. Starts its
    /// consistent broadcast in `ID/p<i>`. A server takes part in everything else (echoes,
    /// commits, votes, agreements) whether or not it proposed.
    pub fn propose(
        &mut self,
        party: &mut Party,
        value: Vec<u8>,
    ) -> Result<Step<MvbaDecision>, MvbaError> {
        if self.proposed {
            return Err(MvbaError::AlreadyProposed);
        }
        if !self.usable {
            return Err(MvbaError::InstanceIdTooLong);
        }
        if value.len() > VALUE_BYTES_MAX {
            return Err(MvbaError::ValueTooLarge {
                len: value.len(),
                max: VALUE_BYTES_MAX,
            });
        }
        if !self.predicate.is_valid(party, &value) {
            return Err(MvbaError::InvalidValue);
        }
        self.proposed = true;
        let mut step = Step::new();
        if self.decision.is_none() {
            self.ensure_children(party);
            self.start_broadcast(party, Broadcast::Proposal, value, &mut step);
            self.progress(party, &mut step);
        }
        Ok(step)
    }

    /// Handles a message for this instance or one of its children from `from`. A message for
    /// another instance or protocol, or one the protocol never sends, is a fault against `from`.
    pub fn handle_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
    ) -> Step<MvbaDecision> {
        let mut step = Step::new();
        if !from.is_member_of(party.servers()) || !message.instance.is_within(&self.instance) {
            step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
            return step;
        }
        if !self.usable {
            return step;
        }
        self.ensure_children(party);
        if message.instance == self.instance {
            match &message.body {
                Body::Mvba(body) => self.on_own_message(party, from, body, &mut step),
                _ => self.fault(&mut step, from, FaultKind::UnexpectedMessage),
            }
        } else {
            self.route_to_child(party, from, message, &mut step);
        }
        self.progress(party, &mut step);
        step
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<&MvbaDecision> {
        self.decision.as_ref()
    }

    /// Whether this server decided. It then ignores this instance's own messages and lets its
    /// children answer late peers.
    pub fn terminated(&self) -> bool {
        self.decision.is_some()
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The candidate order, once the permutation coin is known here.
    pub fn permutation(&self) -> Option<&[ServerId]> {
        self.permutation.as_deref()
    }

    /// The current candidate position (from 1): the votes and agreement this server works on.
    pub fn candidate(&self) -> u32 {
        self.candidate
    }

    /// How many commits were delivered here; the permutation coin share is released only
    /// once there are `n - t` (and this server's own commit went out).
    pub fn delivered_commits(&self) -> usize {
        self.delivered_commits.len()
    }

    /// The binary agreement on `proposer`'s value, if this server created it (for observers
    /// such as the simulator, which asks whether it still listens).
    pub fn agreement_on(&self, proposer: ServerId) -> Option<&Aba> {
        self.agreements.get(&proposer)
    }

    // -----------------------------------------------------------------------------------------
    // Children.

    fn broadcast_instance(&self, kind: Broadcast, sender: ServerId) -> Option<InstanceId> {
        self.instance
            .child(&format!("{}{}", kind.prefix(), sender.get()))
    }

    fn agreement_instance(&self, proposer: ServerId) -> Option<InstanceId> {
        self.instance.child(&format!("a{}", proposer.get()))
    }

    fn ensure_children(&mut self, party: &Party) {
        if !self.proposals.is_empty() {
            return;
        }
        let make = |kind: Broadcast| -> Vec<Cbc> {
            ServerId::all(party.servers())
                .filter_map(|sender| {
                    let instance = self.broadcast_instance(kind, sender)?;
                    Some(Cbc::new(instance, sender))
                })
                .collect()
        };
        // `usable` guarantees every label fits, so both have `n` children.
        let (proposals, commits) = (make(Broadcast::Proposal), make(Broadcast::Commit));
        self.proposals = proposals;
        self.commits = commits;
    }

    fn broadcast_mut(&mut self, kind: Broadcast, sender: ServerId) -> Option<&mut Cbc> {
        match kind {
            Broadcast::Proposal => self.proposals.get_mut(sender.slot()),
            Broadcast::Commit => self.commits.get_mut(sender.slot()),
        }
    }

    /// Starts this server's own broadcast of `body` (its proposal or its commit).
    fn start_broadcast(
        &mut self,
        party: &mut Party,
        kind: Broadcast,
        body: Vec<u8>,
        step: &mut Step<MvbaDecision>,
    ) {
        let Some(broadcast) = self.broadcast_mut(kind, party.id) else {
            return;
        };
        // Our own SEND comes back through the network; it was checked here already.
        let digest = body_digest(broadcast.instance(), &body);
        // The CBC errors (not the sender, a second broadcast, a body above its limit) cannot
        // occur: `j`'s child has sender `j`, each kind is started once, bodies are smaller.
        let started = broadcast.broadcast(party, body);
        self.sends_checked.insert((kind, party.id), (digest, true));
        if let Ok(child) = started {
            self.absorb_broadcast(party, kind, party.id, child, step);
        }
    }

    fn agreement(&mut self, proposer: ServerId) -> Option<&mut Aba> {
        if !self.agreements.contains_key(&proposer) {
            let instance = self.agreement_instance(proposer)?;
            let validity = CandidateValidity {
                predicate: Arc::clone(&self.predicate),
                proposal_instance: self.broadcast_instance(Broadcast::Proposal, proposer)?,
            };
            let aba = Aba::new(instance, AbaMode::Biased(Arc::new(validity)));
            self.agreements.insert(proposer, aba);
        }
        self.agreements.get_mut(&proposer)
    }

    fn route_to_child(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
        step: &mut Step<MvbaDecision>,
    ) {
        let servers = party.servers();
        let label = message.instance.label_below(&self.instance).unwrap_or("");
        for kind in [Broadcast::Proposal, Broadcast::Commit] {
            let Some(sender) = parse_label(label, kind.prefix(), servers) else {
                continue;
            };
            if let Body::Cbc(cbc::Message::Send { body }) = &message.body
                && from == sender
                && !self.send_is_valid(party, kind, sender, body, step)
            {
                return;
            }
            let Some(broadcast) = self.broadcast_mut(kind, sender) else {
                return;
            };
            let child = broadcast.handle_message(party, from, message);
            return self.absorb_broadcast(party, kind, sender, child, step);
        }
        let Some(proposer) = parse_label(label, 'a', servers) else {
            return step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
        };
        if self.decision.is_some() && !self.agreements.contains_key(&proposer) {
            // No honest server runs an agreement beyond the decided candidate.
            return;
        }
        if let Some(&position) = self.positions.get(proposer.slot())
            && position > self.candidate.saturating_add(CANDIDATES_AHEAD_MAX)
        {
            return step.fault(from, &message.instance, FaultKind::OutOfWindow);
        }
        if let Some(aba) = self.agreement(proposer) {
            // The decision is read from the child in `progress`.
            let _decisions = step.absorb(aba.handle_message(party, from, message));
        }
    }

    /// The check of a SEND before the broadcast echoes it — `Q` for a proposal, shape and proofs
    /// for a commit — so that a delivery proof shows an honest server found the body valid. It
    /// runs once per broadcast; an invalid body is the sender's fault and is not passed on; a
    /// second, different SEND is equivocation and is not passed on either.
    fn send_is_valid(
        &mut self,
        party: &mut Party,
        kind: Broadcast,
        sender: ServerId,
        body: &[u8],
        step: &mut Step<MvbaDecision>,
    ) -> bool {
        let Some(instance) = self.broadcast_instance(kind, sender) else {
            return false;
        };
        let digest = body_digest(&instance, body);
        match self.sends_checked.get(&(kind, sender)) {
            Some((seen, valid)) if *seen == digest => return *valid,
            Some(_) => {
                step.fault(sender, &instance, FaultKind::Equivocation);
                return false;
            }
            None => {}
        }
        let verdict = match kind {
            Broadcast::Proposal => {
                // Mutation: echo proposals without checking Q (validity must then break).
                let skip = mutation::active(Mutation::SkipMvbaPredicate);
                if body.len() <= VALUE_BYTES_MAX && (skip || self.predicate.is_valid(party, body)) {
                    Ok(())
                } else {
                    Err(FaultKind::InvalidValue)
                }
            }
            Broadcast::Commit => self.check_commit(party, body).map(|_| ()),
        };
        self.sends_checked
            .insert((kind, sender), (digest, verdict.is_ok()));
        if let Err(kind) = verdict {
            step.fault(sender, &instance, kind);
        }
        verdict.is_ok()
    }

    /// A commit is `n - t` to `n` valid delivery proofs of this instance's proposals, proposers
    /// strictly increasing. The shape is checked before any signature. Returns the proofs with
    /// their proposers.
    fn check_commit(
        &self,
        party: &mut Party,
        body: &[u8],
    ) -> Result<Vec<(ServerId, CbcProof)>, FaultKind> {
        let commit = Commit::from_bytes(body).map_err(|_| FaultKind::Malformed)?;
        if commit.proofs.len() < party.quorum()
            || commit.proofs.len() > usize::from(party.servers())
        {
            return Err(FaultKind::InvalidValue);
        }
        let mut named = Vec::with_capacity(commit.proofs.len());
        for proof in commit.proofs {
            let proposer = self
                .proposer_of(party, &proof)
                .ok_or(FaultKind::InvalidValue)?;
            if named
                .last()
                .is_some_and(|(previous, _)| *previous >= proposer)
            {
                return Err(FaultKind::InvalidValue);
            }
            named.push((proposer, proof));
        }
        if named.iter().any(|(_, proof)| !proof.verify(party)) {
            return Err(FaultKind::InvalidProof);
        }
        Ok(named)
    }

    /// The proposer whose proposal broadcast `proof` is about, if it is one of this instance's.
    fn proposer_of(&self, party: &Party, proof: &CbcProof) -> Option<ServerId> {
        let label = proof.instance.label_below(&self.instance)?;
        let proposer = parse_label(label, 'p', party.servers())?;
        (self.broadcast_instance(Broadcast::Proposal, proposer)? == proof.instance)
            .then_some(proposer)
    }

    /// Takes a child broadcast's step: its messages and faults go out; a delivered proposal
    /// becomes known with its value; a delivered commit teaches its proofs and counts.
    fn absorb_broadcast(
        &mut self,
        party: &mut Party,
        kind: Broadcast,
        sender: ServerId,
        child: Step<CbcDelivery>,
        step: &mut Step<MvbaDecision>,
    ) {
        for delivery in step.absorb(child) {
            match kind {
                Broadcast::Proposal => self.learn(sender, delivery.proof, Some(delivery.body)),
                Broadcast::Commit => {
                    // A delivered commit was echoed by an honest server, which checked it; the
                    // check here only recovers the proofs (their verification is cached).
                    if let Ok(proofs) = self.check_commit(party, &delivery.body) {
                        for (proposer, proof) in proofs {
                            self.learn(proposer, proof, None);
                        }
                        self.delivered_commits.insert(sender);
                    }
                }
            }
        }
    }

    /// Records a valid delivery proof of `proposer`'s broadcast and, if given, its value (which
    /// hashes to the proof's digest). The first proof is kept: two valid proofs of one broadcast
    /// name the same digest.
    fn learn(&mut self, proposer: ServerId, proof: CbcProof, value: Option<Vec<u8>>) {
        let digest = proof.digest;
        let known = self
            .known
            .entry(proposer)
            .or_insert(Known { proof, value: None });
        if known.value.is_none() && known.proof.digest == digest {
            known.value = value;
        }
    }

    // -----------------------------------------------------------------------------------------
    // This instance's own messages.

    fn fault(&self, step: &mut Step<MvbaDecision>, server: ServerId, kind: FaultKind) {
        step.fault(server, &self.instance, kind);
    }

    fn envelope(&self, body: Message) -> crate::Message {
        crate::Message {
            instance: self.instance.clone(),
            body: Body::Mvba(body),
        }
    }

    fn on_own_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<MvbaDecision>,
    ) {
        if self.decision.is_some() {
            return;
        }
        match body {
            Message::CoinShare { share } => self.on_coin_share(party, from, share, step),
            Message::Vote {
                candidate,
                proposal,
            } => self.on_vote(party, from, *candidate, proposal.as_ref(), step),
        }
    }

    fn on_coin_share(
        &mut self,
        party: &mut Party,
        from: ServerId,
        share: &CoinShare,
        step: &mut Step<MvbaDecision>,
    ) {
        if share.id() != from {
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if self.permutation.is_some() {
            // Late and not needed: checking it would cost a proof verification for nothing.
            return;
        }
        match self.coin_shares.get(&from) {
            Some(seen) if seen == share => return,
            // An honest server releases one share; a second, different one is equivocation.
            Some(_) => return self.fault(step, from, FaultKind::Equivocation),
            None => {}
        }
        self.coin_shares.insert(from, share.clone());
        self.try_permutation(party, step);
    }

    /// Combines the coin once `t + 1` shares not known to be invalid are at hand (every share
    /// used is verified); invalid ones are recorded against their senders and left out.
    fn try_permutation(&mut self, party: &mut Party, step: &mut Step<MvbaDecision>) {
        if self.permutation.is_some() {
            return;
        }
        let shares: Vec<CoinShare> = self
            .coin_shares
            .iter()
            .filter(|(server, _)| !self.invalid_coin_shares.contains(server))
            .map(|(_, share)| share.clone())
            .collect();
        if shares.len() < party.group.coin.threshold() {
            return;
        }
        let name = Context::new(PERMUTATION_PURPOSE, self.instance.as_bytes());
        #[cfg(feature = "mutations")]
        if mutation::active(Mutation::AcceptUnverifiedCoinShares) {
            // The deliberate bug: the first t + 1 shares are used without their proofs.
            let threshold = party.group.coin.threshold();
            if let Some(order) =
                mutation::permutation_without_proofs(&name, &shares, threshold, party.servers())
            {
                self.set_permutation(order);
                self.check_early_votes(step);
            }
            return;
        }
        let faulty = match party.group.coin.combine(&name, &shares) {
            Ok(combined) => {
                self.set_permutation(combined.value.permutation(party.servers()));
                combined.faulty
            }
            Err(CombineError::NotEnoughValidShares { faulty, .. }) => faulty,
            // Duplicates and non-members cannot occur: shares are keyed by their checked sender.
            Err(_) => Vec::new(),
        };
        for server in faulty {
            self.invalid_coin_shares.insert(server);
            self.fault(step, server, FaultKind::InvalidShare);
        }
        if self.permutation.is_some() {
            self.check_early_votes(step);
        }
    }

    /// Adopts the candidate order and forgets the coin shares.
    fn set_permutation(&mut self, order: Vec<ServerId>) {
        let mut positions = vec![0u32; order.len()];
        for (index, server) in (1u32..).zip(&order) {
            if let Some(position) = positions.get_mut(server.slot()) {
                *position = index;
            }
        }
        self.permutation = Some(order);
        self.positions = positions;
        self.coin_shares = BTreeMap::new();
    }

    fn on_vote(
        &mut self,
        party: &mut Party,
        from: ServerId,
        candidate: u32,
        proposal: Option<&(Vec<u8>, CbcProof)>,
        step: &mut Step<MvbaDecision>,
    ) {
        if candidate == 0 || candidate > u32::from(party.servers()) {
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if candidate < self.candidate {
            // A passed candidate: its agreement decided, the vote is no longer needed.
            return;
        }
        if candidate > self.candidate.saturating_add(CANDIDATES_AHEAD_MAX) {
            return self.fault(step, from, FaultKind::OutOfWindow);
        }
        let ballot = match proposal {
            None => Ballot::Zero,
            Some((_, proof)) => match self.proposer_of(party, proof) {
                Some(proposer) => Ballot::One {
                    proposer,
                    digest: proof.digest,
                },
                None => return self.fault(step, from, FaultKind::UnexpectedMessage),
            },
        };
        match self
            .votes
            .get(&candidate)
            .and_then(|votes| votes.get(&from))
        {
            Some(seen) if seen.ballot == ballot => return,
            Some(_) => return self.fault(step, from, FaultKind::Equivocation),
            None => {}
        }
        let valid = match self.check_vote(party, candidate, ballot, proposal) {
            Ok(()) => true,
            Err(kind) => {
                self.fault(step, from, kind);
                false
            }
        };
        self.votes
            .entry(candidate)
            .or_default()
            .insert(from, VoteRecord { ballot, valid });
    }

    /// A 0-vote is always allowed (a server may not have the candidate's value). A 1-vote must
    /// name the candidate's proposer (checked once the permutation is known) and carry its value
    /// with a valid proof, and the value must satisfy `Q`; a valid one teaches us the value.
    fn check_vote(
        &mut self,
        party: &mut Party,
        candidate: u32,
        ballot: Ballot,
        proposal: Option<&(Vec<u8>, CbcProof)>,
    ) -> Result<(), FaultKind> {
        let (Ballot::One { proposer, .. }, Some((value, proof))) = (ballot, proposal) else {
            return Ok(());
        };
        if self
            .candidate_at(candidate)
            .is_some_and(|expected| expected != proposer)
        {
            return Err(FaultKind::UnexpectedMessage);
        }
        let already_checked = self
            .known
            .get(&proposer)
            .is_some_and(|known| known.proof == *proof && known.value.as_ref() == Some(value));
        if !already_checked {
            check_proposal(party, &*self.predicate, value, proof)?;
            self.learn(proposer, proof.clone(), Some(value.clone()));
        }
        Ok(())
    }

    /// Once the permutation is known: 1-votes that arrived before it and name another proposer
    /// than their candidate's are faults (an honest server votes only on the permutation's
    /// candidate).
    fn check_early_votes(&mut self, step: &mut Step<MvbaDecision>) {
        let Some(order) = &self.permutation else {
            return;
        };
        let mut faulty = Vec::new();
        for (&candidate, votes) in &mut self.votes {
            let Some(expected) = (candidate as usize)
                .checked_sub(1)
                .and_then(|index| order.get(index))
            else {
                continue;
            };
            for (server, record) in votes.iter_mut() {
                if let Ballot::One { proposer, .. } = record.ballot
                    && proposer != *expected
                    && record.valid
                {
                    record.valid = false;
                    faulty.push(*server);
                }
            }
        }
        for server in faulty {
            self.fault(step, server, FaultKind::UnexpectedMessage);
        }
    }

    /// The proposer at `position` of the permutation, once known.
    fn candidate_at(&self, position: u32) -> Option<ServerId> {
        let index = usize::try_from(position).ok()?.checked_sub(1)?;
        self.permutation.as_ref()?.get(index).copied()
    }

    // -----------------------------------------------------------------------------------------
    // Progress: everything that follows from what is known, until nothing more does.

    fn progress(&mut self, party: &mut Party, step: &mut Step<MvbaDecision>) {
        while self.decision.is_none() {
            let moved = self.try_commit(party, step)
                || self.try_release_coin_share(party, step)
                || self.try_candidate(party, step);
            if !moved {
                break;
            }
        }
    }

    /// Once `n - t` proposals are known here (with their delivery proofs): consistent-broadcast
    /// their proofs as this server's commit.
    fn try_commit(&mut self, party: &mut Party, step: &mut Step<MvbaDecision>) -> bool {
        if self.commit_sent || self.known.len() < party.quorum() {
            return false;
        }
        self.commit_sent = true;
        let commit = Commit {
            proofs: self
                .known
                .values()
                .map(|known| known.proof.clone())
                .collect(),
        };
        self.start_broadcast(party, Broadcast::Commit, commit.to_bytes(), step);
        true
    }

    /// After our commit and `n - t` delivered commits: release our share of the permutation coin.
    /// Not earlier: once `t + 1` shares are out the order is known, and by then the commits
    /// that make a third of the candidates known to every honest server must be fixed.
    fn try_release_coin_share(&mut self, party: &mut Party, step: &mut Step<MvbaDecision>) -> bool {
        // Mutation: release the share at once, before any commit is fixed (the adversary then
        // knows the order while it can still choose what becomes known to whom).
        let early = mutation::active(Mutation::RevealCoinEarly);
        if self.coin_share_sent
            || (!early && (!self.commit_sent || self.delivered_commits.len() < party.quorum()))
        {
            return false;
        }
        self.coin_share_sent = true;
        let name = Context::new(PERMUTATION_PURPOSE, self.instance.as_bytes());
        let share = party.keys.coin.share(&name, &mut party.rng);
        if self.permutation.is_none() {
            // Our own share counts at once (its loop-back is an identical repeat).
            self.coin_shares.insert(party.id, share.clone());
        }
        step.broadcast(self.envelope(Message::CoinShare { share }));
        self.try_permutation(party, step);
        true
    }

    /// One move on the current candidate `a = Π(l)`: act on its agreement's decision, or vote,
    /// or give the agreement its input. Votes wait for `n - t` delivered commits: by then every
    /// proposal named in `t + 1` of the commits that fixed the coin is known here.
    fn try_candidate(&mut self, party: &mut Party, step: &mut Step<MvbaDecision>) -> bool {
        if self.delivered_commits.len() < party.quorum() {
            return false;
        }
        let Some(proposer) = self.candidate_at(self.candidate) else {
            // No permutation yet (or every candidate ran, which at most t faulty servers cannot
            // cause: the first candidate named in t + 1 of those commits decides 1).
            return false;
        };
        if let Some(decided) = self.agreements.get(&proposer).and_then(Aba::decision) {
            let (one, external) = (decided.value, decided.external.clone());
            return if one {
                self.decide(party, proposer, external, step)
            } else {
                self.next_candidate();
                true
            };
        }
        if !self.voted {
            return self.try_vote(party, proposer, step);
        }
        if self.agreement_input_given || self.counted_votes(proposer) < party.quorum() {
            return false;
        }
        self.agreement_input_given = true;
        let justification = self.known.get(&proposer).and_then(|known| {
            let value = known.value.as_ref()?;
            Some(encode_justification(value, &known.proof))
        });
        let Some(aba) = self.agreement(proposer) else {
            return false;
        };
        let input = match justification {
            Some(pi) => aba
                .propose(party, true, Some(pi))
                // Unreachable: the value passed the same check as the agreement's. Should it
                // fail all the same, 0 is always a valid input.
                .or_else(|_| aba.propose(party, false, None)),
            None => aba.propose(party, false, None),
        };
        if let Ok(child) = input {
            let _decisions = step.absorb(child);
        }
        true
    }

    /// Votes on `proposer`: 1 with its value if known; if only its proof is known (from a
    /// commit), fetches the value first — the proof means an honest server keeps it, and every
    /// honest server voting 1 on a candidate is what makes its agreement decide 1; else 0.
    fn try_vote(
        &mut self,
        party: &mut Party,
        proposer: ServerId,
        step: &mut Step<MvbaDecision>,
    ) -> bool {
        let proposal = match self.known.get(&proposer) {
            Some(Known {
                proof,
                value: Some(value),
            }) => Some((value.clone(), proof.clone())),
            Some(Known { proof, value: None }) => {
                let proof = proof.clone();
                return self.fetch(party, proposer, proof, step);
            }
            None => None,
        };
        self.voted = true;
        let ballot = match &proposal {
            None => Ballot::Zero,
            Some((_, proof)) => Ballot::One {
                proposer,
                digest: proof.digest,
            },
        };
        // Our own vote counts at once (its loop-back is an identical repeat).
        self.votes.entry(self.candidate).or_default().insert(
            party.id,
            VoteRecord {
                ballot,
                valid: true,
            },
        );
        step.broadcast(self.envelope(Message::Vote {
            candidate: self.candidate,
            proposal,
        }));
        true
    }

    /// Asks for `proposer`'s value through its broadcast (once): it is delivered when a peer
    /// that echoed or delivered it answers. Returns whether anything was done.
    fn fetch(
        &mut self,
        party: &mut Party,
        proposer: ServerId,
        proof: CbcProof,
        step: &mut Step<MvbaDecision>,
    ) -> bool {
        if !self.fetching.insert(proposer) {
            return false;
        }
        if let Some(broadcast) = self.proposals.get_mut(proposer.slot()) {
            let child = broadcast.fetch(party, proof);
            self.absorb_broadcast(party, Broadcast::Proposal, proposer, child, step);
        }
        true
    }

    /// Valid votes on the current candidate (0-votes, and 1-votes for `proposer`).
    fn counted_votes(&self, proposer: ServerId) -> usize {
        self.votes.get(&self.candidate).map_or(0, |votes| {
            votes
                .values()
                .filter(|record| {
                    record.valid
                        && match record.ballot {
                            Ballot::Zero => true,
                            Ballot::One {
                                proposer: named, ..
                            } => named == proposer,
                        }
                })
                .count()
        })
    }

    fn next_candidate(&mut self) {
        self.votes.remove(&self.candidate);
        self.candidate += 1;
        self.voted = false;
        self.agreement_input_given = false;
    }

    /// The agreement on `proposer` decided 1: decide its value, known here or carried by the
    /// decision's `π` (which the agreement checked).
    fn decide(
        &mut self,
        party: &mut Party,
        proposer: ServerId,
        external: Option<Vec<u8>>,
        step: &mut Step<MvbaDecision>,
    ) -> bool {
        let known_value = self
            .known
            .get(&proposer)
            .and_then(|known| known.value.clone());
        let value = known_value.or_else(|| {
            let (value, proof) = decode_justification(external.as_deref()?).ok()?;
            (Some(proof.instance) == self.broadcast_instance(Broadcast::Proposal, proposer))
                .then(|| value.to_vec())
        });
        let Some(value) = value else {
            // Unreachable: a 1-decision carries a valid π. Should it not, the value can still
            // be fetched with a known proof.
            let Some(proof) = self.known.get(&proposer).map(|known| known.proof.clone()) else {
                return false;
            };
            return self.fetch(party, proposer, proof, step);
        };
        let decision = MvbaDecision {
            value,
            proposer,
            candidate: self.candidate,
        };
        step.outputs.push(decision.clone());
        self.decision = Some(decision);
        // What a decided instance no longer needs. The broadcasts stay (they answer late
        // fetches) and so do the agreements run so far (they answer late peers with DECIDE).
        let decided = self.candidate;
        let positions = &self.positions;
        self.agreements.retain(|proposer, _| {
            positions
                .get(proposer.slot())
                .is_some_and(|&position| position <= decided)
        });
        self.known = BTreeMap::new();
        self.coin_shares = BTreeMap::new();
        self.votes = BTreeMap::new();
        true
    }
}
