//! Binary validated Byzantine agreement: the randomized agreement of Cachin, Kursawe and Shoup
//! ("Random oracles in Constantinople", PODC 2000, §4: ABBA), and its biased, externally
//! validated variant of Cachin, Kursawe, Petzold and Shoup (CRYPTO 2001, §3) used by MVBA.
//!
//! Guarantees with `n > 3t` (design page: `docs/protocols/aba.md`):
//! * **Agreement**: no two honest servers decide differently.
//! * **Validity**: plain — the decision was some honest server's input; biased — a decision `1`
//!   carries an external proof `π` with `Q(π)`, and if `t + 1` honest servers propose `1` the
//!   decision is `1`.
//! * **Termination**: with probability 1, in an expected constant number of rounds. A decision
//!   carries a proof (the `n - t` signature on a main-vote) that makes every honest server that
//!   receives it decide the same value and stop.
//!
//! Call order: [`Aba::new`], then [`Aba::propose`] once and [`Aba::handle_message`] for every
//! message of the instance, in any order (messages that arrive before the proposal are kept
//! within the limits below). The first [`Decision`] appears once in a step's outputs.
//!
//! Limits: a peer occupies at most one slot per message kind and round (a second, different
//! message is [`FaultKind::Equivocation`]), for the rounds from the previous one to
//! [`ROUNDS_AHEAD_MAX`] beyond the current one; messages further ahead are dropped
//! ([`FaultKind::OutOfWindow`]), messages of passed rounds are ignored. External proofs are at
//! most [`EXTERNAL_PROOF_BYTES_MAX`] bytes and checked on arrival, not stored per message. After
//! deciding, an instance keeps only its decision and the set of peers it answered.

mod message;
mod state;
mod statement;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use sintra_crypto::bls::{Signature, SignatureShare};
use sintra_crypto::{CombineError, Combined, Context, ServerId};

pub use message::{
    JUSTIFICATION_SHARES_MAX, MainVoteJustification, Message, PreVoteJustification, Vote,
};
use state::{
    MainVoteEntry, PreProcessEntry, PreVoteEntry, RoundState, Slot, Standing, counted, digest,
    mark_checked, reject,
};
use statement::{PURPOSE_COIN, Statement, coin_name};

use crate::message::Body;
use crate::mutation::{self, Mutation};
use crate::{FaultKind, InstanceId, Party, Step};

/// How many rounds beyond the current one a server keeps messages for. Messages further ahead
/// are dropped and recorded as [`FaultKind::OutOfWindow`]: an honest server is that far ahead
/// only after 16 rounds without a decision, which happens with probability about `2^-16`
/// (each round decides with probability at least 1/2), and then the DECIDE it eventually
/// sends, which no window limits, still ends the instance for everyone.
pub const ROUNDS_AHEAD_MAX: u32 = 16;

/// The largest external proof `π` accepted (bytes). MVBA's proofs are a consistent-broadcast
/// certificate on a small value; the bound only keeps a peer from making us hash or check
/// arbitrary amounts. A proof is checked on arrival and only one valid proof is kept, so the
/// bound does not multiply with the number of buffered messages.
pub const EXTERNAL_PROOF_BYTES_MAX: usize = 1 << 20;

/// External validity for the biased mode: decides whether `proof` justifies the value 1. It
/// gets the [`Party`] to use the verified cache (it is called for every message that carries a
/// proof different from the one this instance already accepted).
pub trait ExternalValidity: Send + Sync {
    /// Whether `Q(proof)` holds.
    fn is_valid(&self, party: &mut Party, proof: &[u8]) -> bool;
}

/// Which agreement to run. Every server of an instance must use the same mode.
#[derive(Clone)]
pub enum AbaMode {
    /// CKS00: validity means the decision was some honest server's input.
    Plain,
    /// CKPS01 §3: a `1` needs an external proof `π` with `Q(π)`; round 1 has no coin but the
    /// constant `1`, so `t + 1` honest servers proposing `1` force the decision `1`.
    Biased(Arc<dyn ExternalValidity>),
}

impl fmt::Debug for AbaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbaMode::Plain => f.write_str("Plain"),
            AbaMode::Biased(_) => f.write_str("Biased"),
        }
    }
}

/// The outcome of an instance, with what proves it to anyone holding the group's public keys
/// ([`verify_decision`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The decided value.
    pub value: bool,
    /// The round in which it was decided (by this server or by the server whose DECIDE it
    /// accepted).
    pub round: u32,
    /// The `n - t` signature on `main-vote(round, value)`.
    pub proof: Signature,
    /// `π` with `Q(π)`: biased mode and `value = 1` only.
    pub external: Option<Vec<u8>>,
}

/// Local misuse of an instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbaError {
    /// `propose` was called twice.
    #[error("this instance already has an input")]
    AlreadyProposed,
    /// Biased mode, input `1` without an external proof.
    #[error("biased agreement: proposing 1 needs an external proof")]
    MissingProof,
    /// Biased mode, input `1` with a proof that fails the predicate or exceeds
    /// [`EXTERNAL_PROOF_BYTES_MAX`].
    #[error("biased agreement: the external proof for 1 is not valid")]
    InvalidProof,
}

/// Where the local server is in the protocol.
#[derive(Debug, Clone)]
enum Phase {
    /// No input yet: messages are kept, nothing is sent.
    Idle,
    /// Pre-process vote sent; waiting for `n - t` valid ones.
    PreProcess,
    /// Pre-vote of the current round sent; waiting for `n - t` justified pre-votes.
    PreVote,
    /// Main-vote of the current round sent; waiting for `n - t` justified main-votes.
    MainVote,
    /// `n - t` main-votes of the current round were all abstain: coin share released, waiting
    /// for the coin; the signature on `main-vote(r, abstain)` will justify the next pre-vote.
    Coin(Signature),
    /// Decided; only answers late peers with the DECIDE.
    Decided,
}

/// One instance of binary agreement at one server.
pub struct Aba {
    instance: InstanceId,
    mode: AbaMode,
    /// The local input, once proposed.
    input: Option<bool>,
    /// The current round: 0 before the input, then from 1.
    round: u32,
    phase: Phase,
    /// Pre-process votes, until pre-processing is done.
    pre_process: BTreeMap<ServerId, Slot<PreProcessEntry>>,
    pre_processing_done: bool,
    /// Per-round state: the previous round (while its coin matters), the current one and the
    /// ones ahead within [`ROUNDS_AHEAD_MAX`].
    rounds: BTreeMap<u32, RoundState>,
    /// The first valid external proof seen (biased mode): attached to this server's 1-votes.
    external: Option<Vec<u8>>,
    /// The digest of the DECIDE each peer sent (one per peer).
    decides: BTreeMap<ServerId, [u8; 32]>,
    decision: Option<Decision>,
    /// Peers that were sent the DECIDE again (at most once each) or that decided themselves.
    answered: BTreeSet<ServerId>,
}

impl fmt::Debug for Aba {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aba")
            .field("instance", &self.instance)
            .field("mode", &self.mode)
            .field("round", &self.round)
            .field("phase", &self.phase)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

impl Aba {
    /// A new instance. It sends nothing until [`Aba::propose`]; messages received before are
    /// kept.
    pub fn new(instance: InstanceId, mode: AbaMode) -> Self {
        let mut rounds = BTreeMap::new();
        if matches!(mode, AbaMode::Biased(_)) {
            // The bias: the coin of round 1 is the constant 1 (CKPS01 §3).
            rounds.insert(
                1,
                RoundState {
                    coin: Some(true),
                    ..RoundState::default()
                },
            );
        }
        Self {
            instance,
            mode,
            input: None,
            round: 0,
            phase: Phase::Idle,
            pre_process: BTreeMap::new(),
            pre_processing_done: false,
            rounds,
            external: None,
            decides: BTreeMap::new(),
            decision: None,
            answered: BTreeSet::new(),
        }
    }

    /// Gives the local input. In biased mode `proof` must be a valid `π` when `value` is `1`
    /// (else `Err`); otherwise it is ignored. Proposing after the instance decided (through a
    /// peer's DECIDE) records the input and sends nothing.
    pub fn propose(
        &mut self,
        party: &mut Party,
        value: bool,
        proof: Option<Vec<u8>>,
    ) -> Result<Step<Decision>, AbaError> {
        if self.input.is_some() {
            return Err(AbaError::AlreadyProposed);
        }
        let external = match (&self.mode, value) {
            (AbaMode::Biased(validity), true) => {
                let proof = proof.ok_or(AbaError::MissingProof)?;
                if proof.len() > EXTERNAL_PROOF_BYTES_MAX || !validity.is_valid(party, &proof) {
                    return Err(AbaError::InvalidProof);
                }
                if self.external.is_none() {
                    self.external = Some(proof.clone());
                }
                Some(proof)
            }
            _ => None,
        };
        self.input = Some(value);
        let mut step = Step::new();
        if self.decision.is_some() {
            return Ok(step);
        }
        self.round = 1;
        self.phase = Phase::PreProcess;
        let share = statement::sign(party, &self.instance, Statement::PreProcess(value));
        step.broadcast(self.envelope(Message::PreProcess {
            value,
            share,
            external,
        }));
        self.progress(party, &mut step);
        Ok(step)
    }

    /// Handles a message from `from`. A message for another instance or protocol is a fault
    /// ([`FaultKind::UnexpectedMessage`]); so is anything the protocol never sends.
    pub fn handle_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
    ) -> Step<Decision> {
        let mut step = Step::new();
        let body = match &message.body {
            Body::Aba(body) if message.instance == self.instance => body,
            _ => {
                step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
                return step;
            }
        };
        if !from.is_member_of(party.servers()) {
            step.fault(from, &self.instance, FaultKind::UnexpectedMessage);
            return step;
        }
        if self.decision.is_some() {
            self.answer_after_decision(party, from, body, &mut step);
            return step;
        }
        match body {
            Message::PreProcess { .. } => self.on_pre_process(party, from, body, &mut step),
            Message::PreVote { .. } => self.on_pre_vote(party, from, body, &mut step),
            Message::MainVote { .. } => self.on_main_vote(party, from, body, &mut step),
            Message::CoinShare { .. } => self.on_coin_share(party, from, body, &mut step),
            Message::Decide { .. } => self.on_decide(party, from, body, &mut step),
        }
        self.progress(party, &mut step);
        step
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// Whether the instance decided. It then sends nothing more except the DECIDE, at most
    /// once more to each peer that writes to it.
    pub fn terminated(&self) -> bool {
        self.decision.is_some()
    }

    /// The current round (0 before the input).
    pub fn round(&self) -> u32 {
        self.round
    }

    /// The instance id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    fn biased(&self) -> bool {
        matches!(self.mode, AbaMode::Biased(_))
    }

    fn envelope(&self, body: Message) -> crate::Message {
        crate::Message {
            instance: self.instance.clone(),
            body: Body::Aba(body),
        }
    }

    fn coin(&self, round: u32) -> Option<bool> {
        self.rounds.get(&round).and_then(|state| state.coin)
    }

    /// The proof to attach to a message of this server that asserts `1` (biased mode).
    fn external_for(&self, asserts_one: bool) -> Option<Vec<u8>> {
        if self.biased() && asserts_one {
            // Invariant: this server asserts 1 only after it accepted a message carrying a
            // valid π (or proposed 1 with one), so it holds one.
            debug_assert!(self.external.is_some(), "a 1-vote without a proof");
            self.external.clone()
        } else {
            None
        }
    }

    // -----------------------------------------------------------------------------------------
    // Receiving: every message is checked as far as it can be on arrival and kept in its slot.

    /// Whether a vote of `round` is kept: not a passed round and not beyond the window.
    fn admit_round(&self, from: ServerId, round: u32, step: &mut Step<Decision>) -> bool {
        if round == 0 {
            step.fault(from, &self.instance, FaultKind::UnexpectedMessage);
            return false;
        }
        let base = self.round.max(1);
        if round > base.saturating_add(ROUNDS_AHEAD_MAX) {
            step.fault(from, &self.instance, FaultKind::OutOfWindow);
            return false;
        }
        round >= base
    }

    /// Checks the external proof of a message from the sender's point of view: present and
    /// valid exactly when the message asserts `1` in biased mode.
    fn check_external(
        &mut self,
        party: &mut Party,
        asserts_one: bool,
        external: &Option<Vec<u8>>,
    ) -> Result<(), FaultKind> {
        let validity = match (&self.mode, asserts_one, external) {
            (AbaMode::Plain, _, None) | (AbaMode::Biased(_), false, None) => return Ok(()),
            (AbaMode::Biased(validity), true, Some(_)) => Arc::clone(validity),
            _ => return Err(FaultKind::UnexpectedMessage),
        };
        let Some(proof) = external else {
            return Err(FaultKind::UnexpectedMessage);
        };
        if self.external.as_ref() == Some(proof) {
            return Ok(());
        }
        if proof.len() > EXTERNAL_PROOF_BYTES_MAX {
            return Err(FaultKind::Malformed);
        }
        if !validity.is_valid(party, proof) {
            return Err(FaultKind::InvalidValue);
        }
        // A decided instance keeps nothing but its decision.
        if self.external.is_none() && self.decision.is_none() {
            self.external = Some(proof.clone());
        }
        Ok(())
    }

    /// Whether `justification` allows `pre-vote(round, value)`.
    fn check_pre_vote_justification(
        &self,
        party: &mut Party,
        round: u32,
        value: bool,
        justification: &PreVoteJustification,
    ) -> Result<Standing, FaultKind> {
        let biased = self.biased();
        let instance = &self.instance;
        let valid = match justification {
            PreVoteJustification::PreProcessShares(shares) if round == 1 && !biased => {
                statement::verify_pre_process_shares(party, instance, value, shares)
            }
            PreVoteJustification::PreProcessQuorum(signature) if round == 1 && biased && !value => {
                statement::verify_signature(
                    party,
                    instance,
                    Statement::PreProcess(false),
                    signature,
                )
            }
            // π itself, checked with the message that carries it.
            PreVoteJustification::External => round == 1 && biased && value,
            PreVoteJustification::PreVotes(signature) if round > 1 => statement::verify_signature(
                party,
                instance,
                Statement::PreVote(round - 1, value),
                signature,
            ),
            PreVoteJustification::Abstain(signature) if round > 1 => {
                let statement = Statement::MainVote(round - 1, Vote::Abstain);
                if !statement::verify_signature(party, instance, statement, signature) {
                    return Err(FaultKind::InvalidProof);
                }
                return match self.coin(round - 1) {
                    None => Ok(Standing::AwaitingCoin(value)),
                    Some(coin) if coin == value => Ok(Standing::Justified),
                    Some(_) => Err(FaultKind::InvalidProof),
                };
            }
            _ => false,
        };
        if valid {
            Ok(Standing::Justified)
        } else {
            Err(FaultKind::InvalidProof)
        }
    }

    /// Whether `justification` allows `main-vote(round, vote)`.
    fn check_main_vote_justification(
        &self,
        party: &mut Party,
        round: u32,
        vote: Vote,
        justification: &MainVoteJustification,
    ) -> Result<Standing, FaultKind> {
        match (vote, justification) {
            (Vote::Value(value), MainVoteJustification::Unanimous(signature)) => {
                let statement = Statement::PreVote(round, value);
                if statement::verify_signature(party, &self.instance, statement, signature) {
                    Ok(Standing::Justified)
                } else {
                    Err(FaultKind::InvalidProof)
                }
            }
            (Vote::Abstain, MainVoteJustification::Conflict { zero, one }) => {
                let zero = self.check_pre_vote_justification(party, round, false, zero)?;
                let one = self.check_pre_vote_justification(party, round, true, one)?;
                match (zero, one) {
                    // The coin cannot be both values.
                    (Standing::AwaitingCoin(_), Standing::AwaitingCoin(_)) => {
                        Err(FaultKind::InvalidProof)
                    }
                    (Standing::AwaitingCoin(value), _) | (_, Standing::AwaitingCoin(value)) => {
                        Ok(Standing::AwaitingCoin(value))
                    }
                    _ => Ok(Standing::Justified),
                }
            }
            _ => Err(FaultKind::InvalidProof),
        }
    }

    fn on_pre_process(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Decision>,
    ) {
        let Message::PreProcess {
            value,
            share,
            external,
        } = body
        else {
            return;
        };
        if self.pre_processing_done {
            return;
        }
        let digest = digest(body);
        if let Some(slot) = self.pre_process.get_mut(&from) {
            if slot.digest != digest {
                step.fault(from, &self.instance, FaultKind::Equivocation);
            } else {
                slot.repeated();
            }
            return;
        }
        let verdict = if share.id() != from {
            Err(FaultKind::InvalidShare)
        } else {
            self.check_external(party, *value, external)
                .map(|()| Standing::Justified)
        };
        let standing = self.settle(from, verdict, step);
        self.pre_process.insert(
            from,
            Slot::new(
                digest,
                standing,
                PreProcessEntry {
                    value: *value,
                    share: *share,
                },
            ),
        );
    }

    fn on_pre_vote(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Decision>,
    ) {
        let Message::PreVote {
            round,
            value,
            justification,
            share,
            external,
        } = body
        else {
            return;
        };
        let round = *round;
        if !self.admit_round(from, round, step) {
            return;
        }
        let digest = digest(body);
        if let Some(slot) = self
            .rounds
            .get_mut(&round)
            .and_then(|state| state.pre_votes.get_mut(&from))
        {
            if slot.digest != digest {
                step.fault(from, &self.instance, FaultKind::Equivocation);
            } else {
                slot.repeated();
            }
            return;
        }
        let verdict = if share.id() != from {
            Err(FaultKind::InvalidShare)
        } else {
            self.check_external(party, *value, external).and_then(|()| {
                self.check_pre_vote_justification(party, round, *value, justification)
            })
        };
        let standing = self.settle(from, verdict, step);
        self.rounds.entry(round).or_default().pre_votes.insert(
            from,
            Slot::new(
                digest,
                standing,
                PreVoteEntry {
                    value: *value,
                    justification: justification.clone(),
                    share: *share,
                },
            ),
        );
    }

    fn on_main_vote(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Decision>,
    ) {
        let Message::MainVote {
            round,
            vote,
            justification,
            share,
            external,
        } = body
        else {
            return;
        };
        let round = *round;
        if !self.admit_round(from, round, step) {
            return;
        }
        let digest = digest(body);
        if let Some(slot) = self
            .rounds
            .get_mut(&round)
            .and_then(|state| state.main_votes.get_mut(&from))
        {
            if slot.digest != digest {
                step.fault(from, &self.instance, FaultKind::Equivocation);
            } else {
                slot.repeated();
            }
            return;
        }
        let verdict = if share.id() != from {
            Err(FaultKind::InvalidShare)
        } else {
            // An abstain justifies a pre-vote for 1, so in biased mode it carries π too.
            self.check_external(party, *vote != Vote::Value(false), external)
                .and_then(|()| {
                    self.check_main_vote_justification(party, round, *vote, justification)
                })
        };
        let standing = self.settle(from, verdict, step);
        self.rounds.entry(round).or_default().main_votes.insert(
            from,
            Slot::new(
                digest,
                standing,
                MainVoteEntry {
                    vote: *vote,
                    justification: justification.clone(),
                    share: *share,
                },
            ),
        );
    }

    fn on_coin_share(
        &mut self,
        _party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Decision>,
    ) {
        let Message::CoinShare { round, share } = body else {
            return;
        };
        let round = *round;
        if self.biased() && round == 1 {
            // Round 1 of the biased mode has no coin, so no honest server sends a share.
            step.fault(from, &self.instance, FaultKind::UnexpectedMessage);
            return;
        }
        // A share of the previous round is still useful while its coin is unknown.
        let still_needed = self.rounds.get(&round).is_some_and(|s| s.coin.is_none());
        if !self.admit_round(from, round, step) && !still_needed {
            return;
        }
        let state = self.rounds.entry(round).or_default();
        if state.coin.is_some() {
            return;
        }
        let digest = digest(body);
        if let Some(slot) = state.coin_shares.get_mut(&from) {
            if slot.digest != digest {
                step.fault(from, &self.instance, FaultKind::Equivocation);
            } else {
                slot.repeated();
            }
            return;
        }
        // The share itself is checked when the coin is combined.
        let standing = if share.id() != from {
            step.fault(from, &self.instance, FaultKind::InvalidShare);
            Standing::Rejected
        } else {
            Standing::Justified
        };
        state
            .coin_shares
            .insert(from, Slot::new(digest, standing, share.clone()));
    }

    fn on_decide(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Decision>,
    ) {
        let Message::Decide {
            round,
            value,
            signature,
            external,
        } = body
        else {
            return;
        };
        if !self.check_decide(party, from, body, step) {
            return;
        }
        // The sender has decided: it needs no DECIDE from us.
        self.answered.insert(from);
        let external = if self.biased() && *value {
            external.clone()
        } else {
            None
        };
        self.decide(*round, *value, *signature, external, step);
    }

    /// Checks a DECIDE (one per peer; no round window, as the proof stands on its own).
    fn check_decide(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Decision>,
    ) -> bool {
        let Message::Decide {
            round,
            value,
            signature,
            external,
        } = body
        else {
            return false;
        };
        let digest = digest(body);
        if let Some(seen) = self.decides.get(&from) {
            if *seen != digest {
                step.fault(from, &self.instance, FaultKind::Equivocation);
            }
            return false;
        }
        self.decides.insert(from, digest);
        if *round == 0 {
            step.fault(from, &self.instance, FaultKind::UnexpectedMessage);
            return false;
        }
        if let Err(kind) = self.check_external(party, *value, external) {
            step.fault(from, &self.instance, kind);
            return false;
        }
        let statement = Statement::MainVote(*round, Vote::Value(*value));
        if !statement::verify_signature(party, &self.instance, statement, signature) {
            step.fault(from, &self.instance, FaultKind::InvalidProof);
            return false;
        }
        true
    }

    /// After the decision: a DECIDE is still checked (its sender has decided and needs no
    /// answer); any other message gets the DECIDE back, once per peer, so a late server ends.
    fn answer_after_decision(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Decision>,
    ) {
        if matches!(body, Message::Decide { .. }) {
            if self.check_decide(party, from, body, step) {
                self.answered.insert(from);
            }
            return;
        }
        if from == party.id || !self.answered.insert(from) {
            return;
        }
        if let Some(decision) = &self.decision {
            let decide = Message::Decide {
                round: decision.round,
                value: decision.value,
                signature: decision.proof,
                external: decision.external.clone(),
            };
            step.send(from, self.envelope(decide));
        }
    }

    /// Records the fault of a rejected message and gives the standing of its slot.
    fn settle(
        &self,
        from: ServerId,
        verdict: Result<Standing, FaultKind>,
        step: &mut Step<Decision>,
    ) -> Standing {
        match verdict {
            Ok(standing) => standing,
            Err(kind) => {
                step.fault(from, &self.instance, kind);
                Standing::Rejected
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Progress: after every call, move through the phases as far as the messages allow.

    fn progress(&mut self, party: &mut Party, step: &mut Step<Decision>) {
        // Every pass either learns a coin (at most once per kept round) or moves the phase
        // forward (bounded by the rounds the messages justify), so the loop ends.
        loop {
            let learned = self.learn_coins(party, step);
            let moved = match self.phase {
                Phase::Idle | Phase::Decided => false,
                Phase::PreProcess => self.try_finish_pre_processing(party, step),
                Phase::PreVote => self.try_main_vote(party, step),
                Phase::MainVote => self.try_conclude_round(party, step),
                Phase::Coin(abstain) => self.try_leave_coin(party, abstain, step),
            };
            if !learned && !moved {
                break;
            }
        }
    }

    /// Batch-checks the shares of the given votes (grouped by statement); invalid ones are
    /// faults. Returns the senders of invalid shares.
    fn check_shares(
        &self,
        party: &Party,
        votes: &[(ServerId, Statement, SignatureShare)],
        step: &mut Step<Decision>,
    ) -> (Vec<ServerId>, Vec<ServerId>) {
        let mut groups: BTreeMap<Statement, Vec<SignatureShare>> = BTreeMap::new();
        for (_, statement, share) in votes {
            groups.entry(*statement).or_default().push(*share);
        }
        let mut invalid = Vec::new();
        for (statement, shares) in &groups {
            invalid.extend(statement::invalid_shares(
                party,
                &self.instance,
                *statement,
                shares,
            ));
        }
        for server in &invalid {
            step.fault(*server, &self.instance, FaultKind::InvalidShare);
        }
        let valid = votes
            .iter()
            .map(|(server, _, _)| *server)
            .filter(|server| !invalid.contains(server))
            .collect();
        (valid, invalid)
    }

    /// Records the faulty shares a combination found, and which shares it showed valid (on
    /// the fast path the first `k`; after a fallback every share was checked).
    fn after_combine(
        &self,
        shares: &[SignatureShare],
        threshold: usize,
        faulty: &[ServerId],
        step: &mut Step<Decision>,
    ) -> Vec<ServerId> {
        for server in faulty {
            step.fault(*server, &self.instance, FaultKind::InvalidShare);
        }
        let checked = if faulty.is_empty() {
            &shares[..threshold.min(shares.len())]
        } else {
            shares
        };
        checked
            .iter()
            .map(SignatureShare::id)
            .filter(|id| !faulty.contains(id))
            .collect()
    }

    /// Pre-processing ends with `n - t` pre-process votes with valid shares (and `π` for a
    /// biased 1); the pre-vote of round 1 follows from them.
    fn try_finish_pre_processing(&mut self, party: &mut Party, step: &mut Step<Decision>) -> bool {
        let quorum = party.quorum();
        // Each pass checks the unchecked shares, so the second pass finds none.
        let checked = loop {
            let counted = counted(&self.pre_process);
            if counted.len() < quorum {
                return false;
            }
            let unchecked: Vec<(ServerId, Statement, SignatureShare)> = counted
                .iter()
                .filter(|vote| vote.unchecked)
                .map(|vote| {
                    (
                        vote.server,
                        Statement::PreProcess(vote.entry.value),
                        vote.entry.share,
                    )
                })
                .collect();
            if unchecked.is_empty() {
                break counted
                    .iter()
                    .map(|vote| (vote.entry.value, vote.entry.share))
                    .collect::<Vec<_>>();
            }
            let (valid, invalid) = self.check_shares(party, &unchecked, step);
            reject(&mut self.pre_process, &invalid);
            mark_checked(&mut self.pre_process, &valid);
        };
        let ones = checked.iter().filter(|(value, _)| *value).count();
        let zeros = checked.len() - ones;
        let (value, justification) = if self.biased() {
            if ones > 0 {
                (true, PreVoteJustification::External)
            } else {
                let shares: Vec<SignatureShare> = checked.iter().map(|(_, share)| *share).collect();
                let statement = Statement::PreProcess(false);
                match statement::combine(party, &self.instance, statement, &shares) {
                    // Every share was checked already, so the fast path is taken.
                    Ok(combined) if combined.faulty.is_empty() => (
                        false,
                        PreVoteJustification::PreProcessQuorum(combined.value),
                    ),
                    Ok(Combined { faulty, .. })
                    | Err(CombineError::NotEnoughValidShares { faulty, .. }) => {
                        // Only if shares that passed a batch check fail later (probability
                        // 2^-128 per check): drop them and count again.
                        for server in &faulty {
                            step.fault(*server, &self.instance, FaultKind::InvalidShare);
                        }
                        reject(&mut self.pre_process, &faulty);
                        return !faulty.is_empty() && self.try_finish_pre_processing(party, step);
                    }
                    Err(_) => return false,
                }
            }
        } else {
            // The simple majority has at least t + 1 of the >= n - t >= 2t + 1 votes; a tie
            // (possible when n - t is even) goes to the local input.
            let value = match ones.cmp(&zeros) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => self.input.unwrap_or(false),
            };
            let needed = usize::from(party.faults()) + 1;
            let shares: Vec<SignatureShare> = checked
                .iter()
                .filter(|(v, _)| *v == value)
                .map(|(_, share)| *share)
                .take(needed)
                .collect();
            statement::remember_pre_process_shares(party, &self.instance, value, &shares);
            (value, PreVoteJustification::PreProcessShares(shares))
        };
        self.pre_processing_done = true;
        self.pre_process = BTreeMap::new();
        self.enter_round(party, 1, value, justification, step);
        true
    }

    /// Starts round `round` with the pre-vote `value`, forgetting what earlier rounds no
    /// longer need.
    fn enter_round(
        &mut self,
        party: &mut Party,
        round: u32,
        value: bool,
        justification: PreVoteJustification,
        step: &mut Step<Decision>,
    ) {
        // The previous round's coin (and its shares, while it is unknown) still decides which
        // pre-votes of this round are justified; its votes and everything older are not needed.
        let previous = round.saturating_sub(1);
        self.rounds = self.rounds.split_off(&previous);
        if let Some(state) = self.rounds.get_mut(&previous) {
            state.forget_votes();
        }
        self.rounds.entry(round).or_default();
        self.round = round;
        self.phase = Phase::PreVote;
        let share = statement::sign(party, &self.instance, Statement::PreVote(round, value));
        let external = self.external_for(value);
        step.broadcast(self.envelope(Message::PreVote {
            round,
            value,
            justification,
            share,
            external,
        }));
        if mutation::active(Mutation::RevealCoinEarly) && !(self.biased() && round == 1) {
            // The deliberate bug: the coin of the round is out before the main-votes are fixed.
            self.send_coin_share(party, round, step);
        }
    }

    /// Main-vote once `n - t` justified pre-votes of the round are in: the value if `n - t` of
    /// them agree (justified by their combined signature), else abstain (justified by one
    /// justification of each value).
    fn try_main_vote(&mut self, party: &mut Party, step: &mut Step<Decision>) -> bool {
        let round = self.round;
        let quorum = party.quorum();
        // Each pass either returns or rejects at least one vote, so the loop ends.
        loop {
            let Some(state) = self.rounds.get(&round) else {
                return false;
            };
            let counted = counted(&state.pre_votes);
            if counted.len() < quorum {
                return false;
            }
            let ones = counted.iter().filter(|vote| vote.entry.value).count();
            let unanimous = if ones >= quorum {
                Some(true)
            } else if counted.len() - ones >= quorum {
                Some(false)
            } else {
                None
            };
            if let Some(value) = unanimous {
                let shares: Vec<SignatureShare> = counted
                    .iter()
                    .filter(|vote| vote.entry.value == value)
                    .map(|vote| vote.entry.share)
                    .collect();
                let statement = Statement::PreVote(round, value);
                match statement::combine(party, &self.instance, statement, &shares) {
                    Ok(combined) => {
                        let checked = self.after_combine(&shares, quorum, &combined.faulty, step);
                        if let Some(state) = self.rounds.get_mut(&round) {
                            reject(&mut state.pre_votes, &combined.faulty);
                            mark_checked(&mut state.pre_votes, &checked);
                        }
                        let justification = MainVoteJustification::Unanimous(combined.value);
                        self.send_main_vote(party, Vote::Value(value), justification, step);
                        return true;
                    }
                    Err(CombineError::NotEnoughValidShares { faulty, .. })
                        if !faulty.is_empty() =>
                    {
                        for server in &faulty {
                            step.fault(*server, &self.instance, FaultKind::InvalidShare);
                        }
                        if let Some(state) = self.rounds.get_mut(&round) {
                            reject(&mut state.pre_votes, &faulty);
                        }
                        continue;
                    }
                    Err(_) => return false,
                }
            }
            // Both values among n - t votes: abstain. No vote counts unless its share is valid.
            let unchecked: Vec<(ServerId, Statement, SignatureShare)> = counted
                .iter()
                .filter(|vote| vote.unchecked)
                .map(|vote| {
                    (
                        vote.server,
                        Statement::PreVote(round, vote.entry.value),
                        vote.entry.share,
                    )
                })
                .collect();
            if !unchecked.is_empty() {
                let (valid, invalid) = self.check_shares(party, &unchecked, step);
                if let Some(state) = self.rounds.get_mut(&round) {
                    reject(&mut state.pre_votes, &invalid);
                    mark_checked(&mut state.pre_votes, &valid);
                }
                continue;
            }
            let justification_of = |wanted: bool| {
                counted
                    .iter()
                    .find(|vote| vote.entry.value == wanted)
                    .map(|vote| vote.entry.justification.clone())
            };
            let (Some(zero), Some(one)) = (justification_of(false), justification_of(true)) else {
                return false;
            };
            let justification = MainVoteJustification::Conflict { zero, one };
            self.send_main_vote(party, Vote::Abstain, justification, step);
            return true;
        }
    }

    fn send_main_vote(
        &mut self,
        party: &mut Party,
        vote: Vote,
        justification: MainVoteJustification,
        step: &mut Step<Decision>,
    ) {
        let round = self.round;
        let share = statement::sign(party, &self.instance, Statement::MainVote(round, vote));
        let external = self.external_for(vote != Vote::Value(false));
        step.broadcast(self.envelope(Message::MainVote {
            round,
            vote,
            justification,
            share,
            external,
        }));
        self.phase = Phase::MainVote;
    }

    /// Once `n - t` justified main-votes of the round are in: decide if `n - t` of them are for
    /// the same value; else release the coin share and pre-vote a value some main-vote carries,
    /// or — when all abstain — the coin.
    fn try_conclude_round(&mut self, party: &mut Party, step: &mut Step<Decision>) -> bool {
        let round = self.round;
        let quorum = party.quorum();
        // Each pass either returns or rejects at least one vote, so the loop ends.
        loop {
            let Some(state) = self.rounds.get(&round) else {
                return false;
            };
            let counted = counted(&state.main_votes);
            if counted.len() < quorum {
                return false;
            }
            let count = |wanted: Vote| {
                counted
                    .iter()
                    .filter(|vote| vote.entry.vote == wanted)
                    .count()
            };
            let has_value = counted.iter().any(|vote| vote.entry.vote != Vote::Abstain);
            let unanimous = [Vote::Value(false), Vote::Value(true), Vote::Abstain]
                .into_iter()
                .find(|vote| count(*vote) >= quorum);
            // A value forced by n - t main-votes is decided; all-abstain needs the coin. When
            // some main-vote carries a value, it is pre-voted next and the coin is not needed.
            match unanimous {
                Some(vote) if vote != Vote::Abstain || !has_value => {
                    let shares: Vec<SignatureShare> = counted
                        .iter()
                        .filter(|counted| counted.entry.vote == vote)
                        .map(|counted| counted.entry.share)
                        .collect();
                    let statement = Statement::MainVote(round, vote);
                    match statement::combine(party, &self.instance, statement, &shares) {
                        Ok(combined) => {
                            let checked =
                                self.after_combine(&shares, quorum, &combined.faulty, step);
                            if let Some(state) = self.rounds.get_mut(&round) {
                                reject(&mut state.main_votes, &combined.faulty);
                                mark_checked(&mut state.main_votes, &checked);
                            }
                            match vote {
                                Vote::Value(value) => {
                                    let external = self.external_for(value);
                                    self.decide(round, value, combined.value, external, step);
                                }
                                Vote::Abstain => {
                                    self.release_coin_share(party, round, step);
                                    self.phase = Phase::Coin(combined.value);
                                }
                            }
                            return true;
                        }
                        Err(CombineError::NotEnoughValidShares { faulty, .. })
                            if !faulty.is_empty() =>
                        {
                            for server in &faulty {
                                step.fault(*server, &self.instance, FaultKind::InvalidShare);
                            }
                            if let Some(state) = self.rounds.get_mut(&round) {
                                reject(&mut state.main_votes, &faulty);
                            }
                            continue;
                        }
                        Err(_) => return false,
                    }
                }
                _ => {}
            }
            // Mixed: no vote counts unless its share is valid.
            let unchecked: Vec<(ServerId, Statement, SignatureShare)> = counted
                .iter()
                .filter(|vote| vote.unchecked)
                .map(|vote| {
                    (
                        vote.server,
                        Statement::MainVote(round, vote.entry.vote),
                        vote.entry.share,
                    )
                })
                .collect();
            if !unchecked.is_empty() {
                let (valid, invalid) = self.check_shares(party, &unchecked, step);
                if let Some(state) = self.rounds.get_mut(&round) {
                    reject(&mut state.main_votes, &invalid);
                    mark_checked(&mut state.main_votes, &valid);
                }
                continue;
            }
            // A main-vote for a value carries the n - t signature on pre-vote(r, value), which
            // justifies pre-voting that value in round r + 1. (Two values cannot both have one,
            // see the design page; the lowest sender's is taken.)
            let next = counted.iter().find_map(|vote| {
                match (&vote.entry.vote, &vote.entry.justification) {
                    (Vote::Value(value), MainVoteJustification::Unanimous(signature)) => {
                        Some((*value, *signature))
                    }
                    _ => None,
                }
            });
            let Some((value, signature)) = next else {
                return false;
            };
            self.release_coin_share(party, round, step);
            self.enter_round(
                party,
                round.saturating_add(1),
                value,
                PreVoteJustification::PreVotes(signature),
                step,
            );
            return true;
        }
    }

    /// Releases this server's share of the coin of `round` — only ever after its main-vote of
    /// that round, which is what keeps the coin unpredictable until the votes are fixed.
    /// Biased mode has no coin in round 1.
    fn release_coin_share(&mut self, party: &mut Party, round: u32, step: &mut Step<Decision>) {
        if self.biased() && round == 1 {
            return;
        }
        if mutation::active(Mutation::RevealCoinEarly) {
            // Released with the pre-vote already (the deliberate bug, see `enter_round`).
            return;
        }
        self.send_coin_share(party, round, step);
    }

    fn send_coin_share(&mut self, party: &mut Party, round: u32, step: &mut Step<Decision>) {
        let name = coin_name(&self.instance, round);
        let share = party
            .keys
            .coin
            .share(&Context::new(PURPOSE_COIN, &name), &mut party.rng);
        step.broadcast(self.envelope(Message::CoinShare { round, share }));
    }

    /// All main-votes were abstain: once the coin is known, pre-vote it in the next round,
    /// justified by the signature on `main-vote(r, abstain)`.
    fn try_leave_coin(
        &mut self,
        party: &mut Party,
        abstain: Signature,
        step: &mut Step<Decision>,
    ) -> bool {
        let round = self.round;
        let Some(coin) = self.coin(round) else {
            return false;
        };
        self.enter_round(
            party,
            round.saturating_add(1),
            coin,
            PreVoteJustification::Abstain(abstain),
            step,
        );
        true
    }

    /// Whether this server may reveal the coin of `round` to itself: only after its own
    /// main-vote of that round.
    fn may_use_coin(&self, round: u32) -> bool {
        round < self.round || (round == self.round && matches!(self.phase, Phase::Coin(_)))
    }

    /// Combines the coins that can be combined now, and settles the votes that waited for them.
    fn learn_coins(&mut self, party: &mut Party, step: &mut Step<Decision>) -> bool {
        let threshold = party.group.coin.threshold();
        let ready: Vec<u32> = self
            .rounds
            .iter()
            .filter(|(round, state)| {
                state.coin.is_none()
                    && self.may_use_coin(**round)
                    && state
                        .coin_shares
                        .values()
                        .filter(|slot| slot.standing.counts())
                        .count()
                        >= threshold
            })
            .map(|(round, _)| *round)
            .collect();
        let mut learned = false;
        for round in ready {
            learned |= self.learn_coin(party, round, threshold, step);
        }
        learned
    }

    fn learn_coin(
        &mut self,
        party: &mut Party,
        round: u32,
        threshold: usize,
        step: &mut Step<Decision>,
    ) -> bool {
        let name = coin_name(&self.instance, round);
        let context = Context::new(PURPOSE_COIN, &name);
        loop {
            let Some(state) = self.rounds.get_mut(&round) else {
                return false;
            };
            let shares: Vec<_> = counted(&state.coin_shares)
                .into_iter()
                .map(|share| share.entry.clone())
                .collect();
            if shares.len() < threshold {
                return false;
            }
            #[cfg(feature = "mutations")]
            if mutation::active(Mutation::AcceptUnverifiedCoinShares) {
                // The deliberate bug: the first t + 1 shares are used without their proofs.
                let Some(value) = mutation::coin_without_proofs(&context, &shares, threshold)
                else {
                    return false;
                };
                state.coin_shares = BTreeMap::new();
                state.coin = Some(value[0] & 1 == 1);
                self.settle_awaiting_coin(round.saturating_add(1), step);
                return true;
            }
            match party.group.coin.combine(&context, &shares) {
                Ok(combined) => {
                    for server in &combined.faulty {
                        step.fault(*server, &self.instance, FaultKind::InvalidShare);
                    }
                    // The coin is known: its shares are no longer needed.
                    state.coin_shares = BTreeMap::new();
                    state.coin = Some(combined.value.bit());
                    self.settle_awaiting_coin(round.saturating_add(1), step);
                    return true;
                }
                Err(CombineError::NotEnoughValidShares { faulty, .. }) if !faulty.is_empty() => {
                    for server in &faulty {
                        step.fault(*server, &self.instance, FaultKind::InvalidShare);
                    }
                    reject(&mut state.coin_shares, &faulty);
                }
                Err(_) => return false,
            }
        }
    }

    /// The coin of the round before `round` is now known: the votes of `round` justified by an
    /// all-abstain signature are justified iff their value is that coin.
    fn settle_awaiting_coin(&mut self, round: u32, step: &mut Step<Decision>) {
        let Some(coin) = self.coin(round.saturating_sub(1)) else {
            return;
        };
        let Some(state) = self.rounds.get_mut(&round) else {
            return;
        };
        let mut wrong = Vec::new();
        let standings = state
            .pre_votes
            .iter_mut()
            .map(|(server, slot)| (server, &mut slot.standing))
            .chain(
                state
                    .main_votes
                    .iter_mut()
                    .map(|(server, slot)| (server, &mut slot.standing)),
            );
        for (server, standing) in standings {
            if let Standing::AwaitingCoin(value) = *standing {
                if value == coin {
                    *standing = Standing::Justified;
                } else {
                    *standing = Standing::Rejected;
                    wrong.push(*server);
                }
            }
        }
        for server in wrong {
            step.fault(server, &self.instance, FaultKind::InvalidProof);
        }
    }

    /// Decides, sends the DECIDE to everyone once, and forgets everything but the decision.
    fn decide(
        &mut self,
        round: u32,
        value: bool,
        proof: Signature,
        external: Option<Vec<u8>>,
        step: &mut Step<Decision>,
    ) {
        let decision = Decision {
            value,
            round,
            proof,
            external,
        };
        step.broadcast(self.envelope(Message::Decide {
            round,
            value,
            signature: proof,
            external: decision.external.clone(),
        }));
        step.outputs.push(decision.clone());
        self.decision = Some(decision);
        self.phase = Phase::Decided;
        self.pre_process = BTreeMap::new();
        self.pre_processing_done = true;
        self.rounds = BTreeMap::new();
        self.external = None;
    }
}

/// Whether `decision` is a valid decision of `instance` in `mode`: its proof is the `n - t`
/// signature on `main-vote(round, value)` and, in biased mode, a `1` carries a valid `π`. This is
/// what makes a decision transferable: a parent protocol or a late server can check it alone.
pub fn verify_decision(
    party: &mut Party,
    instance: &InstanceId,
    mode: &AbaMode,
    decision: &Decision,
) -> bool {
    if decision.round == 0 {
        return false;
    }
    let external_ok = match (mode, decision.value, &decision.external) {
        (AbaMode::Biased(validity), true, Some(proof)) => {
            proof.len() <= EXTERNAL_PROOF_BYTES_MAX && validity.is_valid(party, proof)
        }
        (AbaMode::Biased(_), true, None) => false,
        (_, _, external) => external.is_none(),
    };
    external_ok
        && statement::verify_signature(
            party,
            instance,
            Statement::MainVote(decision.round, Vote::Value(decision.value)),
            &decision.proof,
        )
}
