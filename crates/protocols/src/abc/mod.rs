//! Atomic broadcast: the round structure of Cachin–Kursawe–Petzold–Shoup (CRYPTO 2001, §5) with
//! the dissemination/agreement split of Dumbo-NG. Design page: `docs/protocols/abc.md`.
//!
//! **Guarantees** (`n > 3t`, every server with the same [`AbcConfig`]): all honest servers
//! deliver the same requests in the same order (total order, agreement); a request is delivered
//! only if some server submitted it, and at most once within [`DEDUP_ROUNDS`] rounds however
//! many servers it was submitted to (integrity); a request submitted to `t + 1` honest servers
//! is eventually delivered (validity, with probability 1).
//!
//! How: in round `r` every active server consistent-broadcasts one batch of its pending
//! requests in `<id>/r<r>/b<i>` and obtains a certificate for it; the servers then agree with
//! MVBA (`<id>/r<r>/mvba`) on a list of at least `n - t` batch certificates, and deliver the
//! requests of those batches in proposer order, skipping requests delivered before. Batches go
//! out once; agreement moves only certificates. The next round's batch is broadcast while this
//! round's agreement runs (pipelining); batches of round `r` carry only requests of class
//! `r mod 2` (a bit of the request digest), so the two batches in flight never overlap.
//!
//! Call order: [`Abc::new`] at every server; then, in any order, [`Abc::submit`] for requests
//! from clients and [`Abc::handle_message`] for every message whose envelope names this instance
//! or one below it. Deliveries appear in the steps' outputs, in order.
//!
//! Limits: the [`AbcConfig`] bounds batches, requests and the pending queue (a full queue is
//! back-pressure: [`AbcError::QueueFull`]); messages are kept for the rounds from the previous
//! one to [`AbcConfig::rounds_ahead_max`] beyond the current one — further ones are dropped
//! (not a fault: an honest peer may be any number of rounds ahead of a slow server) and made up
//! for by catching up. A round's batch broadcasts and agreement are dropped once the round
//! after it was delivered; what late peers still need — the decision and the decided batches —
//! is kept [`ROUNDS_RETAINED`] rounds longer.

mod message;
mod state;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};
use thiserror::Error;

pub use message::{
    BATCH_REQUESTS_LIMIT, Batch, BatchCertificate, CERTIFICATE_BYTES, CERTIFICATES_MAX, Message,
    Proposal,
};
use state::{Delivered as DeliveredDigests, Pending};

use crate::cbc::{self, Cbc, Digest};
use crate::mvba::{Mvba, MvbaDecision, Predicate};
use crate::{Body, FaultKind, InstanceId, Party, Step};

/// Default of [`AbcConfig::batch_requests_max`].
pub const BATCH_REQUESTS_MAX: usize = 1024;
/// Default of [`AbcConfig::batch_bytes_max`] (1 MiB).
pub const BATCH_BYTES_MAX: usize = 1 << 20;
/// Default of [`AbcConfig::request_bytes_max`] (64 KiB).
pub const REQUEST_BYTES_MAX: usize = 64 << 10;
/// Default of [`AbcConfig::pending_requests_max`].
pub const PENDING_REQUESTS_MAX: usize = 16 << 10;
/// Default of [`AbcConfig::rounds_ahead_max`].
pub const ROUNDS_AHEAD_MAX: u64 = 4;
/// The largest [`AbcConfig::rounds_ahead_max`] accepted: each round in the window may hold a
/// batch per peer and an agreement.
pub const ROUNDS_AHEAD_LIMIT: u64 = 64;
/// Rounds beyond the current one (or the highest a peer was seen in) that a draining server still
/// joins when a peer starts them ([`Abc::set_draining`]): one for the batch a peer pipelines
/// ahead, one for a peer that begins to stop a moment later than this server.
pub const DRAIN_SLACK_ROUNDS: u64 = 2;
/// Rounds over which delivered requests are remembered (by digest) and not delivered again. A
/// request delivered in round `r` is skipped in rounds `r + 1 ..= r + DEDUP_ROUNDS - 1`; beyond
/// that a copy (resubmitted by a client, or replayed by a Byzantine server) counts as new, so
/// services must tolerate a very late replay (requests carry their own nonce or time).
pub const DEDUP_ROUNDS: u64 = 64;
/// Rounds a delivered round's decision and decided batches are kept after the round's own
/// instances were dropped, for servers that fell behind. A server more than this many rounds
/// behind the others, which also dropped their messages as too early, must catch up by state
/// transfer (the runtime's signed checkpoint, DESIGN.md §4).
pub const ROUNDS_RETAINED: u64 = 8;
/// The longest atomic-broadcast instance id (bytes): the ids of the rounds and of the agreement's
/// descendants (`<id>/r<round>/mvba/...`) must fit [`crate::INSTANCE_ID_BYTES_MAX`].
pub const ABC_INSTANCE_ID_BYTES_MAX: usize = 128;
/// Purpose tag of request digests.
pub const REQUEST_PURPOSE: &str = "abc/request";

const MVBA_LABEL: &str = "mvba";

// The largest proposal (every server's certificate) must be a value the agreement accepts.
const _: () = assert!(4 + CERTIFICATES_MAX * CERTIFICATE_BYTES <= crate::mvba::VALUE_BYTES_MAX);
// A batch is a consistent-broadcast body, and its FINAL must fit a message.
const _: () = assert!(cbc::BODY_BYTES_MAX + 1024 <= crate::MESSAGE_BYTES_MAX);

/// Limits of one atomic-broadcast instance. Every server of the group must use the same values:
/// a server echoes only batches within its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbcConfig {
    /// Requests per batch (default [`BATCH_REQUESTS_MAX`]).
    pub batch_requests_max: usize,
    /// Encoded bytes per batch (default [`BATCH_BYTES_MAX`]; at most
    /// [`cbc::BODY_BYTES_MAX`]).
    pub batch_bytes_max: usize,
    /// Bytes per request (default [`REQUEST_BYTES_MAX`]; at most `batch_bytes_max - 16`).
    pub request_bytes_max: usize,
    /// Requests waiting at this server (default [`PENDING_REQUESTS_MAX`]); beyond it
    /// [`Abc::submit`] refuses ([`AbcError::QueueFull`]).
    pub pending_requests_max: usize,
    /// Rounds beyond the current one whose messages are kept (default [`ROUNDS_AHEAD_MAX`];
    /// between 1 and [`ROUNDS_AHEAD_LIMIT`]).
    pub rounds_ahead_max: u64,
}

impl Default for AbcConfig {
    fn default() -> Self {
        Self {
            batch_requests_max: BATCH_REQUESTS_MAX,
            batch_bytes_max: BATCH_BYTES_MAX,
            request_bytes_max: REQUEST_BYTES_MAX,
            pending_requests_max: PENDING_REQUESTS_MAX,
            rounds_ahead_max: ROUNDS_AHEAD_MAX,
        }
    }
}

impl AbcConfig {
    /// The configuration with every field brought into its documented range (the one
    /// [`Abc::new`] uses): a batch fits a consistent broadcast, a request fits a batch, and the
    /// window holds at least the pipelined next round.
    pub fn clamped(self) -> Self {
        let batch_bytes_max = self.batch_bytes_max.clamp(32, cbc::BODY_BYTES_MAX);
        Self {
            batch_requests_max: self.batch_requests_max.clamp(1, BATCH_REQUESTS_LIMIT),
            batch_bytes_max,
            request_bytes_max: self
                .request_bytes_max
                .min(batch_bytes_max - message::BATCH_HEADER_BYTES - 4),
            pending_requests_max: self.pending_requests_max.max(1),
            rounds_ahead_max: self.rounds_ahead_max.clamp(1, ROUNDS_AHEAD_LIMIT),
        }
    }
}

/// One delivered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Its position in the total order, from 0, without gaps.
    pub position: u64,
    /// The round that delivered it.
    pub round: u64,
    /// The server whose batch carried it.
    pub proposer: ServerId,
    /// The round's agreed time ([`round_time`] of its decided batches), the same for every
    /// request of the round and at every server.
    pub time_ms: u64,
    /// The request.
    pub request: Vec<u8>,
}

/// Local misuse or back-pressure. A refused request was not taken: nothing is lost silently.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AbcError {
    /// The pending queue is full; submit again later (or to another server).
    #[error("{max} requests are pending already")]
    QueueFull {
        /// [`AbcConfig::pending_requests_max`].
        max: usize,
    },
    /// The request exceeds [`AbcConfig::request_bytes_max`].
    #[error("request of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The instance id is longer than [`ABC_INSTANCE_ID_BYTES_MAX`]: the rounds cannot be named.
    #[error("instance id too long for the rounds' instances")]
    InstanceIdTooLong,
}

/// The digest a request is known by (deduplication, the class of [`Abc`]'s batches): BLAKE3
/// over the request, bound to the instance and [`REQUEST_PURPOSE`] (the `Context::bind` layout,
/// scheme name `blake3`). It is never signed and never sent: every server computes it for every
/// request it delivers, and on CPUs without SHA extensions SHA-256 here took 8 % of a replica's
/// CPU at saturation (docs/bench.md); BLAKE3 is collision-resistant at the same 128-bit level.
pub fn request_digest(instance: &InstanceId, request: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sintra/v1");
    for field in [
        b"blake3".as_slice(),
        REQUEST_PURPOSE.as_bytes(),
        instance.as_bytes(),
        request,
    ] {
        hasher.update(&(field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// A round's agreed time: the lower median of its decided batches' times (`0` for none). A
/// round decides at least `n - t >= 2t + 1` batches of distinct proposers, at most `t` of them
/// faulty, so at least `t` values lie on either side of the median: it lies between two honest
/// servers' clocks, whatever the faulty ones propose.
pub fn round_time(times: impl IntoIterator<Item = u64>) -> u64 {
    let mut times: Vec<u64> = times.into_iter().collect();
    if times.is_empty() {
        return 0;
    }
    times.sort_unstable();
    times[(times.len() - 1) / 2]
}

/// The external predicate of round `r`'s agreement ([`Proposal::is_valid`] in `<id>/r<r>`).
struct RoundPredicate {
    round: InstanceId,
}

impl Predicate for RoundPredicate {
    fn is_valid(&self, party: &mut Party, value: &[u8]) -> bool {
        Proposal::from_bytes(value).is_ok_and(|proposal| proposal.is_valid(party, &self.round))
    }
}

/// A round whose instances are alive: from the previous round to the end of the window.
struct Round {
    id: InstanceId,
    predicate: Arc<RoundPredicate>,
    /// The batch broadcasts, created when this server broadcasts or a message arrives.
    batches: BTreeMap<ServerId, Cbc>,
    mvba: Option<Mvba>,
    /// This server broadcast its batch.
    joined: bool,
    /// This server proposed in the agreement.
    proposed: bool,
    /// The decision (from the agreement, or from `t + 1` matching [`Message::Decided`]).
    decision: Option<Proposal>,
    /// The decided batches that were missing are being fetched.
    fetched: bool,
    /// Peers' [`Message::Decided`] claims, one per peer.
    claims: BTreeMap<ServerId, Proposal>,
}

impl Round {
    fn new(id: InstanceId) -> Self {
        Self {
            predicate: Arc::new(RoundPredicate { round: id.clone() }),
            id,
            batches: BTreeMap::new(),
            mvba: None,
            joined: false,
            proposed: false,
            decision: None,
            fetched: false,
            claims: BTreeMap::new(),
        }
    }

    fn batch(&mut self, proposer: ServerId) -> Option<&mut Cbc> {
        if !self.batches.contains_key(&proposer) {
            let instance = self.id.child(&message::batch_label(proposer))?;
            self.batches.insert(proposer, Cbc::new(instance, proposer));
        }
        self.batches.get_mut(&proposer)
    }

    fn mvba(&mut self) -> Option<&mut Mvba> {
        if self.mvba.is_none() {
            let instance = self.id.child(MVBA_LABEL)?;
            let predicate: Arc<dyn Predicate> = self.predicate.clone();
            self.mvba = Some(Mvba::new(instance, predicate));
        }
        self.mvba.as_mut()
    }

    /// The certificates of the batches delivered here, by proposer.
    fn certificates(&self) -> Vec<BatchCertificate> {
        self.batches
            .iter()
            .filter_map(|(proposer, cbc)| {
                let delivery = cbc.delivered()?;
                Some(BatchCertificate::from_proof(*proposer, &delivery.proof))
            })
            .collect()
    }

    /// The body of a certified batch, once delivered here.
    fn body(&self, certificate: &BatchCertificate) -> Option<&[u8]> {
        let delivery = self.batches.get(&certificate.proposer)?.delivered()?;
        (delivery.proof.digest == certificate.digest).then_some(delivery.body.as_slice())
    }
}

/// What is kept of a round after its instances were dropped: the decision and the decided
/// batches, to answer late peers (their catch-up requests and their batch fetches).
struct Retired {
    proposal: Proposal,
    bodies: BTreeMap<ServerId, (Digest, Vec<u8>)>,
    /// `(proposer, peer)`: the batch fetches answered, one per peer and batch.
    answered: BTreeSet<(ServerId, ServerId)>,
}

/// One atomic-broadcast instance at one server.
pub struct Abc {
    instance: InstanceId,
    config: AbcConfig,
    usable: bool,
    /// The round being delivered next.
    current: u64,
    /// Requests delivered so far (the next position).
    positions: u64,
    /// Rounds `current - 1 ..= current + rounds_ahead_max` that have state.
    rounds: BTreeMap<u64, Round>,
    /// Delivered rounds older than `current - 1`, for [`ROUNDS_RETAINED`] rounds.
    retired: BTreeMap<u64, Retired>,
    pending: Pending,
    /// The time this server puts in its next batch ([`Abc::set_time`]).
    time_ms: u64,
    delivered: DeliveredDigests,
    /// The highest round within the window that a peer sent anything for: a reason to join.
    peer_round_max: Option<u64>,
    /// The highest round a message was dropped for (beyond the window): a reason to catch up.
    dropped_through: Option<u64>,
    /// The last round this server asked to catch up on.
    catch_up_asked: Option<u64>,
    /// Peers that asked to catch up on a round not decided here yet (one round per peer).
    catch_up_waiting: BTreeMap<ServerId, u64>,
    /// Per round, the peers told its decision (each at most once).
    told: BTreeMap<u64, BTreeSet<ServerId>>,
    /// While draining: joins only rounds a peer started, up to this one ([`Abc::set_draining`]).
    drain_through: Option<u64>,
}

impl Abc {
    /// An instance named `instance` with the given limits ([`AbcConfig::clamped`]).
    pub fn new(instance: InstanceId, config: AbcConfig) -> Self {
        Self {
            usable: instance.as_bytes().len() <= ABC_INSTANCE_ID_BYTES_MAX,
            instance,
            config: config.clamped(),
            current: 0,
            positions: 0,
            rounds: BTreeMap::new(),
            retired: BTreeMap::new(),
            pending: Pending::default(),
            time_ms: 0,
            delivered: DeliveredDigests::default(),
            peer_round_max: None,
            dropped_through: None,
            catch_up_asked: None,
            catch_up_waiting: BTreeMap::new(),
            told: BTreeMap::new(),
            drain_through: None,
        }
    }

    /// An instance that continues where a server's log ends, after a restart: round
    /// `next_round` is delivered next, at position `delivered_count`; `recent` lists the
    /// requests delivered in the last rounds as `(round, request_digest)` (any order; those
    /// older than the deduplication window are ignored), so that copies delivered within
    /// [`DEDUP_ROUNDS`] are skipped exactly as at the servers that never stopped.
    ///
    /// Nothing else is restored: the pending queue starts empty (clients resubmit) and the
    /// rounds from `next_round` on start from scratch. A restarted server must not send anything
    /// for rounds it may have sent messages for before (the runtime's send fence); it may still
    /// deliver those rounds from the others' decisions ([`Abc::catch_up_to`]).
    pub fn resume(
        instance: InstanceId,
        config: AbcConfig,
        next_round: u64,
        delivered_count: u64,
        recent: impl IntoIterator<Item = (u64, Digest)>,
    ) -> Self {
        let mut abc = Self::new(instance, config);
        abc.current = next_round;
        abc.positions = delivered_count;
        let oldest_kept = next_round.saturating_sub(DEDUP_ROUNDS - 1);
        let mut recent: Vec<(u64, Digest)> = recent
            .into_iter()
            .filter(|(round, _)| *round >= oldest_kept && *round < next_round)
            .collect();
        // Stable: the window expires round by round, so it is filled in round order.
        recent.sort_by_key(|(round, _)| *round);
        for (round, digest) in recent {
            abc.delivered.insert(round, digest);
        }
        abc
    }

    /// Moves this instance forward to `next_round`, at position `delivered_count`, after the
    /// rounds before it were delivered by other means (a runtime's certified state transfer).
    /// `recent` restores the deduplication window as in [`Abc::resume`].
    ///
    /// Unlike a fresh [`Abc::resume`], what this instance knows of `next_round` and later rounds
    /// stays: their broadcasts, agreements, decisions and batch fetches under way, so replies to
    /// what it asked before are still expected (a fresh instance would take them for
    /// unexpected messages and blame honest peers), and it never contradicts what it sent in
    /// those rounds. The rounds before `next_round` are dropped (this server did not deliver
    /// them itself, so it keeps nothing to serve late peers from), and so is the pending queue,
    /// as after a restart: a request pending here may have been delivered in the skipped
    /// rounds. A `next_round` at or before the current round changes nothing. The step holds
    /// what became possible (a kept round that is complete is delivered).
    pub fn advance_to(
        &mut self,
        party: &mut Party,
        next_round: u64,
        delivered_count: u64,
        recent: impl IntoIterator<Item = (u64, Digest)>,
    ) -> Step<Delivered> {
        let mut step = Step::new();
        if next_round <= self.current {
            return step;
        }
        self.current = next_round;
        self.positions = delivered_count;
        self.rounds = self.rounds.split_off(&next_round);
        self.retired.clear();
        self.told = self.told.split_off(&next_round);
        self.catch_up_waiting
            .retain(|_, asked| *asked >= next_round);
        self.catch_up_asked = self.catch_up_asked.filter(|asked| *asked >= next_round);
        self.pending = Pending::default();
        let oldest_kept = next_round.saturating_sub(DEDUP_ROUNDS - 1);
        let mut recent: Vec<(u64, Digest)> = recent
            .into_iter()
            .filter(|(round, _)| *round >= oldest_kept && *round < next_round)
            .collect();
        recent.sort_by_key(|(round, _)| *round);
        self.delivered = DeliveredDigests::default();
        for (round, digest) in recent {
            self.delivered.insert(round, digest);
        }
        // A kept round may be complete already.
        self.progress(party, &mut step);
        step
    }

    /// Tells this server that peers delivered rounds up to `round`: for every round up to it
    /// that it has not delivered, it asks the others for the decision (`CATCH-UP`, once per
    /// round) and then fetches the decided batches — the in-protocol catch-up, which reaches
    /// back [`ROUNDS_RETAINED`] rounds behind the others. A restarted server calls it when it
    /// learns where the group stands, since peers that went quiet send nothing that would
    /// reveal it. A round this server already delivered is ignored.
    pub fn catch_up_to(&mut self, party: &mut Party, round: u64) -> Step<Delivered> {
        let mut step = Step::new();
        if round >= self.current {
            self.dropped_through = self.dropped_through.max(Some(round));
            self.progress(party, &mut step);
        }
        step
    }

    /// Takes a request from a client. It waits in the pending queue until delivered (through
    /// this server's batch or another's). A request already pending or delivered within
    /// [`DEDUP_ROUNDS`] is accepted and ignored. Refused — and not kept — when too large or when
    /// the queue is full (back-pressure).
    pub fn submit(
        &mut self,
        party: &mut Party,
        request: Vec<u8>,
    ) -> Result<Step<Delivered>, AbcError> {
        if !self.usable {
            return Err(AbcError::InstanceIdTooLong);
        }
        if request.len() > self.config.request_bytes_max {
            return Err(AbcError::TooLarge {
                len: request.len(),
                max: self.config.request_bytes_max,
            });
        }
        let digest = request_digest(&self.instance, &request);
        if self.delivered.contains(&digest) || self.pending.contains(&digest) {
            return Ok(Step::new());
        }
        if self.pending.len() >= self.config.pending_requests_max {
            return Err(AbcError::QueueFull {
                max: self.config.pending_requests_max,
            });
        }
        self.pending.push(digest, request);
        let mut step = Step::new();
        self.progress(party, &mut step);
        Ok(step)
    }

    /// Handles a message for this instance or one below it. A message for another instance or
    /// protocol, or one the protocol never sends, is recorded as a fault against `from`.
    pub fn handle_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
    ) -> Step<Delivered> {
        let mut step = Step::new();
        if !from.is_member_of(party.servers()) {
            step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
            return step;
        }
        if !self.usable {
            // This server cannot run the rounds (`submit` says why); peers are not to blame.
            return step;
        }
        if message.instance == self.instance {
            match &message.body {
                Body::Abc(body) => self.on_own_message(party, from, body, &mut step),
                _ => step.fault(from, &message.instance, FaultKind::UnexpectedMessage),
            }
        } else {
            match message
                .instance
                .label_below(&self.instance)
                .and_then(parse_round_label)
            {
                Some(round) => self.on_round_message(party, from, round, message, &mut step),
                None => step.fault(from, &message.instance, FaultKind::UnexpectedMessage),
            }
        }
        self.progress(party, &mut step);
        step
    }

    /// While `draining`, this server starts no round of its own: it joins a round only when a
    /// peer sent something for it, and only up to [`Abc::drain_through`] — the rounds under way
    /// when draining began, and [`DRAIN_SLACK_ROUNDS`] more for peers a little behind in
    /// stopping — and still takes part in every round it joined, so those rounds finish. Pending
    /// requests stay pending. A stopping runtime uses it to leave no round that it, but not the
    /// others, has sent messages in; peers that go on without stopping cannot keep it busy.
    pub fn set_draining(&mut self, draining: bool) {
        self.drain_through = draining.then(|| {
            self.current
                .max(self.peer_round_max.unwrap_or(0))
                .saturating_add(DRAIN_SLACK_ROUNDS)
        });
    }

    /// While draining, the last round this server may still join.
    pub fn drain_through(&self) -> Option<u64> {
        self.drain_through
    }

    /// Sets the time, milliseconds since the Unix epoch, this server proposes with the batches
    /// it broadcasts from now on. The state machine reads no clock: the caller passes its own
    /// (a replica its system clock, the simulator its simulated time). Faulty clocks are
    /// outvoted by [`round_time`].
    pub fn set_time(&mut self, time_ms: u64) {
        self.time_ms = time_ms;
    }

    /// The round being delivered next.
    pub fn round(&self) -> u64 {
        self.current
    }

    /// Requests delivered so far.
    pub fn delivered_count(&self) -> u64 {
        self.positions
    }

    /// Requests pending at this server.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The limits in force.
    pub fn config(&self) -> &AbcConfig {
        &self.config
    }

    /// Rounds with live instances (for observing the memory bound).
    pub fn live_rounds(&self) -> usize {
        self.rounds.len()
    }

    /// Whether messages for `round`'s instances are still handled here: from the previous round
    /// to the end of the window (older rounds only answer late peers, later ones are dropped).
    pub fn keeps_round(&self, round: u64) -> bool {
        round <= self.window_end() && round.saturating_add(1) >= self.current
    }

    /// The agreement of `round`, while its instances are alive here (for observers such as the
    /// simulator, which asks whether it still listens).
    pub fn agreement_of(&self, round: u64) -> Option<&Mvba> {
        self.rounds.get(&round)?.mvba.as_ref()
    }

    /// Request digests remembered for deduplication (for observing the memory bound).
    pub fn remembered_requests(&self) -> usize {
        self.delivered.len()
    }

    fn envelope(&self, body: Message) -> crate::Message {
        crate::Message {
            instance: self.instance.clone(),
            body: Body::Abc(body),
        }
    }

    fn round_id(&self, round: u64) -> Option<InstanceId> {
        self.instance.child(&format!("r{round}"))
    }

    fn round_entry(&mut self, round: u64) -> Option<&mut Round> {
        if !self.rounds.contains_key(&round) {
            let id = self.round_id(round)?;
            self.rounds.insert(round, Round::new(id));
        }
        self.rounds.get_mut(&round)
    }

    fn window_end(&self) -> u64 {
        self.current.saturating_add(self.config.rounds_ahead_max)
    }

    /// The decision of `round`, if known and still kept.
    fn decision_of(&self, round: u64) -> Option<&Proposal> {
        match self.rounds.get(&round) {
            Some(state) => state.decision.as_ref(),
            None => self.retired.get(&round).map(|retired| &retired.proposal),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Receiving.

    fn on_round_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        round: u64,
        message: &crate::Message,
        step: &mut Step<Delivered>,
    ) {
        if round > self.window_end() {
            // An honest peer may be any number of rounds ahead of a slow server: dropping is not
            // blaming. The loss is made up for by catching up once this server gets there.
            self.dropped_through = self.dropped_through.max(Some(round));
            return;
        }
        if round.saturating_add(1) < self.current {
            return self.on_retired_round(party, from, round, message, step);
        }
        let Some(round_id) = self.round_id(round) else {
            return;
        };
        let Some(label) = message.instance.label_below(&round_id) else {
            return step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
        };
        if label == MVBA_LABEL {
            self.note_peer_round(party, from, round);
            let decisions = match self.round_entry(round).and_then(Round::mvba) {
                Some(mvba) => step.absorb(mvba.handle_message(party, from, message)),
                None => Vec::new(),
            };
            for decision in decisions {
                self.on_mvba_decision(round, &decision, step);
            }
            return;
        }
        let Some(proposer) = parse_batch_label(label, party.servers()) else {
            return step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
        };
        if let Body::Cbc(cbc::Message::Send { body }) = &message.body
            && from == proposer
        {
            if round < self.current {
                // A batch of a delivered round can no longer be decided: no use echoing it.
                return;
            }
            if !self.acceptable_batch(body) {
                // Honest servers broadcast only batches within the (common) limits; refusing to
                // echo keeps such a batch from ever being certified.
                return step.fault(from, &message.instance, FaultKind::InvalidValue);
            }
        }
        self.note_peer_round(party, from, round);
        if let Some(cbc) = self
            .round_entry(round)
            .and_then(|state| state.batch(proposer))
        {
            // Deliveries are read from the instance when needed.
            let _ = step.absorb(cbc.handle_message(party, from, message));
        }
    }

    /// A peer at work in `round` (a message routed to one of the round's instances): a reason
    /// to join it.
    fn note_peer_round(&mut self, party: &Party, from: ServerId, round: u64) {
        if from != party.id {
            self.peer_round_max = self.peer_round_max.max(Some(round));
        }
    }

    fn acceptable_batch(&self, body: &[u8]) -> bool {
        Batch::from_bytes(body).is_ok_and(|batch| {
            batch.fits(
                body.len(),
                self.config.batch_requests_max,
                self.config.request_bytes_max,
                self.config.batch_bytes_max,
            )
        })
    }

    /// A message for a round whose instances were dropped: a late peer. Answer a fetch of a
    /// decided batch from what was kept, and tell the peer the decision (once).
    fn on_retired_round(
        &mut self,
        party: &mut Party,
        from: ServerId,
        round: u64,
        message: &crate::Message,
        step: &mut Step<Delivered>,
    ) {
        if from == party.id {
            return;
        }
        let Some(round_id) = self.round_id(round) else {
            return;
        };
        let Some(retired) = self.retired.get_mut(&round) else {
            // Beyond what is kept: the peer needs state transfer.
            return;
        };
        if let Body::Cbc(cbc::Message::Request { digest }) = &message.body
            && let Some(proposer) = message
                .instance
                .label_below(&round_id)
                .and_then(|label| parse_batch_label(label, party.servers()))
            && let Some((kept, body)) = retired.bodies.get(&proposer)
            && kept == digest
            && round_id
                .child(&message::batch_label(proposer))
                .is_some_and(|id| id == message.instance)
            && retired.answered.insert((proposer, from))
        {
            step.send(
                from,
                crate::Message {
                    instance: message.instance.clone(),
                    body: Body::Cbc(cbc::Message::Body { body: body.clone() }),
                },
            );
        }
        let proposal = retired.proposal.clone();
        self.tell(from, round, proposal, step);
    }

    fn on_own_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &Message,
        step: &mut Step<Delivered>,
    ) {
        if from == party.id {
            // Never sent to oneself; links are authenticated, so nobody else can send it.
            return;
        }
        match message {
            Message::CatchUp { round } => self.on_catch_up(from, *round, step),
            Message::Decided { round, proposal } => {
                self.on_decided(party, from, *round, proposal, step)
            }
        }
    }

    fn on_catch_up(&mut self, from: ServerId, round: u64, step: &mut Step<Delivered>) {
        if let Some(proposal) = self.decision_of(round).cloned() {
            self.tell(from, round, proposal, step);
        } else if round >= self.current && round <= self.window_end() {
            // Answered when this server decides the round.
            self.catch_up_waiting.insert(from, round);
        }
    }

    fn on_decided(
        &mut self,
        party: &mut Party,
        from: ServerId,
        round: u64,
        proposal: &Proposal,
        step: &mut Step<Delivered>,
    ) {
        if let Some(known) = self.decision_of(round) {
            if known != proposal {
                // Agreement: no honest server decided anything else.
                step.fault(from, &self.instance, FaultKind::InvalidValue);
            }
            return;
        }
        if round < self.current || round > self.window_end() {
            return;
        }
        let needed = usize::from(party.faults()) + 1;
        let Some(state) = self.round_entry(round) else {
            return;
        };
        match state.claims.get(&from) {
            Some(claimed) if claimed == proposal => return,
            Some(_) => return step.fault(from, &self.instance, FaultKind::Equivocation),
            None => {
                state.claims.insert(from, proposal.clone());
            }
        }
        let matching = state
            .claims
            .values()
            .filter(|claimed| *claimed == proposal)
            .count();
        // `t + 1` matching claims include an honest server's, which is the decision. The
        // predicate check is a second line: it cannot fail then.
        if matching < needed || !proposal.is_valid(party, &state.id) {
            return;
        }
        self.set_decision(round, proposal.clone(), step);
    }

    fn on_mvba_decision(
        &mut self,
        round: u64,
        decision: &MvbaDecision,
        step: &mut Step<Delivered>,
    ) {
        // The agreement decides only values satisfying the predicate, which decode.
        if let Ok(proposal) = Proposal::from_bytes(&decision.value) {
            self.set_decision(round, proposal, step);
        }
    }

    fn set_decision(&mut self, round: u64, proposal: Proposal, step: &mut Step<Delivered>) {
        let Some(state) = self.rounds.get_mut(&round) else {
            return;
        };
        if state.decision.is_some() {
            return;
        }
        state.decision = Some(proposal.clone());
        state.claims.clear();
        let waiting: Vec<ServerId> = self
            .catch_up_waiting
            .iter()
            .filter(|(_, asked)| **asked == round)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in waiting {
            self.catch_up_waiting.remove(&peer);
            self.tell(peer, round, proposal.clone(), step);
        }
    }

    /// Sends `peer` the decision of `round`, at most once per peer and round.
    fn tell(&mut self, peer: ServerId, round: u64, proposal: Proposal, step: &mut Step<Delivered>) {
        if self.told.entry(round).or_default().insert(peer) {
            step.send(peer, self.envelope(Message::Decided { round, proposal }));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Progress: after every input, do whatever became possible, until nothing does.

    fn progress(&mut self, party: &mut Party, step: &mut Step<Delivered>) {
        if !self.usable {
            return;
        }
        loop {
            self.fetch_decided_batches(party, step);
            if self.deliver_round(step) {
                continue;
            }
            let joined =
                self.join(party, step, self.current) | self.join(party, step, self.current + 1);
            let proposed = self.propose(party, step);
            if !(joined || proposed) {
                break;
            }
        }
        self.ask_catch_up(party, step);
    }

    /// Joins `round` — broadcasts this server's batch for it, possibly empty — when
    /// * the round is the current one, or the next one once the current round's agreement
    ///   started here (pipelining: one batch ahead at most), and
    /// * there is a reason: a pending request of the round's class, or any pending request and
    ///   the round is the current one (its batch may be empty, but the round must run for the
    ///   other class's turn to come), or a peer sent something for this round or a later one.
    ///
    /// So an idle group sends nothing, and one server with work draws all others in.
    fn join(&mut self, party: &mut Party, step: &mut Step<Delivered>, round: u64) -> bool {
        if round > self.current
            && !self
                .rounds
                .get(&self.current)
                .is_some_and(|state| state.proposed || state.decision.is_some())
        {
            return false;
        }
        let class = (round % 2) as usize;
        let peer_started = self.peer_round_max.is_some_and(|seen| seen >= round);
        let wanted = match self.drain_through {
            Some(through) => peer_started && round <= through,
            None => {
                peer_started
                    || self.pending.has_class(class)
                    || (round == self.current && !self.pending.is_empty())
            }
        };
        if !wanted {
            return false;
        }
        let config = self.config;
        let pending = &self.pending;
        if self
            .rounds
            .get(&round)
            .is_some_and(|state| state.joined || state.decision.is_some())
        {
            return false;
        }
        let batch = pending.batch(
            class,
            config.batch_requests_max,
            config.batch_bytes_max,
            self.time_ms,
        );
        let Some(state) = self.round_entry(round) else {
            return false;
        };
        state.joined = true;
        let Some(cbc) = state.batch(party.id) else {
            return false;
        };
        match cbc.broadcast(party, batch.to_bytes()) {
            Ok(child) => {
                let _ = step.absorb(child);
            }
            Err(error) => debug_assert!(false, "own batch refused: {error}"),
        }
        true
    }

    /// Proposes in the current round's agreement once `n - t` batches are certified here: all
    /// certificates known at that moment, in proposer order.
    fn propose(&mut self, party: &mut Party, step: &mut Step<Delivered>) -> bool {
        let round = self.current;
        let quorum = party.quorum();
        let Some(state) = self.rounds.get_mut(&round) else {
            return false;
        };
        if !state.joined || state.proposed || state.decision.is_some() {
            return false;
        }
        let certificates = state.certificates();
        if certificates.len() < quorum {
            return false;
        }
        state.proposed = true;
        let value = Proposal { certificates }.to_bytes();
        let decisions = match state.mvba().map(|mvba| mvba.propose(party, value)) {
            Some(Ok(child)) => step.absorb(child),
            Some(Err(error)) => {
                debug_assert!(false, "own proposal refused: {error}");
                Vec::new()
            }
            None => Vec::new(),
        };
        for decision in decisions {
            self.on_mvba_decision(round, &decision, step);
        }
        true
    }

    /// For every decided round not yet delivered, fetches the decided batches not delivered
    /// here (a certificate proves an honest server holds the batch).
    fn fetch_decided_batches(&mut self, party: &mut Party, step: &mut Step<Delivered>) {
        let current = self.current;
        for (_, state) in self.rounds.range_mut(current..) {
            if state.fetched {
                continue;
            }
            let Some(proposal) = state.decision.clone() else {
                continue;
            };
            state.fetched = true;
            for certificate in &proposal.certificates {
                let Some(proof) = certificate.proof(&state.id) else {
                    continue;
                };
                if let Some(cbc) = state.batch(certificate.proposer)
                    && cbc.delivered().is_none()
                {
                    let _ = step.absorb(cbc.fetch(party, proof));
                }
            }
        }
    }

    /// Delivers the current round once it is decided and all its decided batches are here:
    /// the batches in proposer order, each request unless delivered before (within
    /// [`DEDUP_ROUNDS`]). Then moves to the next round and drops what is no longer needed.
    fn deliver_round(&mut self, step: &mut Step<Delivered>) -> bool {
        let round = self.current;
        let Some(state) = self.rounds.get(&round) else {
            return false;
        };
        let Some(proposal) = &state.decision else {
            return false;
        };
        let mut bodies = Vec::with_capacity(proposal.certificates.len());
        for certificate in &proposal.certificates {
            match state.body(certificate) {
                Some(body) => bodies.push((certificate.proposer, body)),
                None => return false,
            }
        }
        // Honest servers echo only decodable batches, so a certified batch decodes; were it
        // not, every honest server would skip it alike.
        let batches: Vec<(ServerId, Batch)> = bodies
            .into_iter()
            .filter_map(|(proposer, body)| Some((proposer, Batch::from_bytes(body).ok()?)))
            .collect();
        let time_ms = round_time(batches.iter().map(|(_, batch)| batch.time_ms));
        for (proposer, batch) in batches {
            for request in batch.requests {
                let digest = request_digest(&self.instance, &request);
                if self.delivered.contains(&digest) {
                    continue;
                }
                self.delivered.insert(round, digest);
                self.pending.remove(&digest);
                step.outputs.push(Delivered {
                    position: self.positions,
                    round,
                    proposer,
                    time_ms,
                    request,
                });
                self.positions += 1;
            }
        }
        self.finish_round(round);
        true
    }

    /// Moves past `round` and collects garbage: the instances of rounds before the previous
    /// one are dropped (the previous round's stay, so peers one round behind are served by the
    /// protocols themselves), keeping their decision and decided batches for
    /// [`ROUNDS_RETAINED`] rounds.
    fn finish_round(&mut self, round: u64) {
        self.current = round + 1;
        let keep_from = self.current - 1;
        let live = self.rounds.split_off(&keep_from);
        let dropped = std::mem::replace(&mut self.rounds, live);
        for (old, state) in dropped {
            if let Some(retired) = retire(state) {
                self.retired.insert(old, retired);
            }
        }
        let retained_from = self.current.saturating_sub(ROUNDS_RETAINED);
        self.retired = self.retired.split_off(&retained_from);
        self.told = self.told.split_off(&retained_from);
        let current = self.current;
        self.catch_up_waiting.retain(|_, asked| *asked >= current);
        self.delivered
            .expire(self.current.saturating_sub(DEDUP_ROUNDS - 1));
    }

    /// Asks all peers for the current round's decision if messages of this round or a later
    /// one were dropped as too early (they might have been this round's).
    fn ask_catch_up(&mut self, party: &Party, step: &mut Step<Delivered>) {
        let current = self.current;
        if self.dropped_through.is_none_or(|dropped| dropped < current)
            || self.catch_up_asked.is_some_and(|asked| asked >= current)
        {
            return;
        }
        self.catch_up_asked = Some(current);
        let ask = self.envelope(Message::CatchUp { round: current });
        for server in ServerId::all(party.servers()).filter(|server| *server != party.id) {
            step.send(server, ask.clone());
        }
    }
}

/// What a delivered round keeps once its instances go: the decision and its batches (moved
/// out of the dropped broadcasts, not copied: a batch may be a megabyte).
fn retire(mut state: Round) -> Option<Retired> {
    let proposal = state.decision.take()?;
    let bodies = proposal
        .certificates
        .iter()
        .filter_map(|certificate| {
            let delivery = state
                .batches
                .remove(&certificate.proposer)?
                .into_delivered()?;
            (delivery.proof.digest == certificate.digest)
                .then_some((certificate.proposer, (certificate.digest, delivery.body)))
        })
        .collect();
    Some(Retired {
        proposal,
        bodies,
        answered: BTreeSet::new(),
    })
}

/// A canonical decimal (no sign, no leading zero).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// `r<round>` → the round.
fn parse_round_label(label: &str) -> Option<u64> {
    parse_decimal(label.strip_prefix('r')?)
}

/// `b<j>` → server `j` of a group of `n`.
fn parse_batch_label(label: &str, n: u16) -> Option<ServerId> {
    let index = u16::try_from(parse_decimal(label.strip_prefix('b')?)?).ok()?;
    ServerId::new(index).filter(|server| server.is_member_of(n))
}
