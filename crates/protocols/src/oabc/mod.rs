//! Optimistic atomic broadcast (Kursawe–Shoup): a leader sequences batches and servers commit
//! them with two all-to-all exchanges; on complaints, a recovery through the randomized atomic
//! broadcast ([`crate::abc`]) fixes where the optimistic phase ended, orders what the leader left
//! out, and hands over to the next leader. Design page: `docs/protocols/oabc.md`.
//!
//! **Guarantees** (`n > 3t`, every server with the same [`OabcConfig`]): all honest servers
//! deliver the same requests in the same order, whatever the network and the leader do; a
//! request submitted to `t + 1` honest servers is eventually delivered provided every honest
//! server with undelivered requests eventually calls [`Oabc::suspect`] (its patience timer).
//! Safety never depends on when anyone suspects.
//!
//! Call order: [`Oabc::new`] at every server; then [`Oabc::submit`], [`Oabc::handle_message`]
//! for every message whose envelope names this instance or one below it, [`Oabc::suspect`] when
//! the runtime's patience runs out, and [`Oabc::set_time`] with the server's clock.

mod message;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sintra_crypto::bls::{Signature, SignatureShare};
use sintra_crypto::encoding::{Decode, Encode};
use sintra_crypto::{Context, ServerId};

pub use message::{Certified, Message, Point, Report};
use state::{Pending, Window};

use crate::abc::{self, Abc, AbcConfig, AbcError, Batch};
use crate::cbc::Digest;
use crate::mutation::{self, Mutation};
use crate::{Body, FaultKind, InstanceId, Party, Step};

/// Default of [`OabcConfig::pipeline_max`].
pub const PIPELINE_MAX: u64 = 4;
/// Default of [`OabcConfig::time_skew_ms`].
pub const TIME_SKEW_MS: u64 = 30_000;
/// Default of [`OabcConfig::held_complain`].
pub const HELD_COMPLAIN: usize = 4096;
/// Default of [`OabcConfig::held_max`].
pub const HELD_MAX: usize = 65_536;
/// Sequence numbers beyond the last delivered one whose messages are kept.
pub const SEQS_AHEAD_MAX: u64 = 256;
/// Batches of an epoch kept (for fetches) below the last delivered one, and the longest range
/// one fetch asks for.
pub const BATCHES_RETAINED: u64 = 256;
/// Epochs beyond the current one whose messages are kept.
pub const EPOCHS_AHEAD_MAX: u64 = 2;
/// Closed epochs whose delivered batches are kept for fetches.
pub const EPOCHS_RETAINED: u64 = 2;
/// Delivered requests whose digests are remembered: a copy within that many positions is
/// skipped (32 bytes each: 8 MiB).
pub const DEDUP_POSITIONS: usize = 1 << 18;

/// Purpose of prepare shares and certificates.
pub const PREPARE_PURPOSE: &str = "oabc/prepare";
/// Purpose of commit shares and certificates.
pub const COMMIT_PURPOSE: &str = "oabc/commit";
/// Purpose of report shares.
pub const REPORT_PURPOSE: &str = "oabc/report";

/// Tags of what this instance submits to its recovery broadcast.
const ABC_REQUEST: u8 = 0;
const ABC_REPORT: u8 = 1;
const ABC_LABEL: &str = "abc";

/// Limits and timing of one instance; the same at every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OabcConfig {
    /// Batch, request and queue limits; also those of the recovery broadcast.
    pub abc: AbcConfig,
    /// Batches the leader has ordered and not yet delivered, at most.
    pub pipeline_max: u64,
    /// How far a batch's time may be from this server's clock for it to prepare the batch.
    pub time_skew_ms: u64,
    /// Requests held from the recovery broadcast at which a server complains.
    pub held_complain: usize,
    /// Requests held from the recovery broadcast per epoch, at most (later ones are dropped by
    /// every server alike; they stay pending at honest servers).
    pub held_max: usize,
    /// Leader: a batch that is not full goes at most once per this many milliseconds of its
    /// clock (full ones go at once, up to `pipeline_max`), so that under light load each batch
    /// carries what came in meanwhile instead of one request — every batch costs the runtime a
    /// round of its own. 0 (the default): no pacing. Liveness only: the others' patience must
    /// be longer.
    pub batch_interval_ms: u64,
}

impl Default for OabcConfig {
    fn default() -> Self {
        Self {
            abc: AbcConfig::default(),
            pipeline_max: PIPELINE_MAX,
            time_skew_ms: TIME_SKEW_MS,
            held_complain: HELD_COMPLAIN,
            held_max: HELD_MAX,
            batch_interval_ms: 0,
        }
    }
}

/// One delivered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Its position in the total order, from 0, without gaps.
    pub position: u64,
    /// The epoch whose optimistic phase or recovery delivered it.
    pub epoch: u64,
    /// The batch's sequence number in the optimistic phase; `None` for a request ordered by
    /// the epoch's recovery.
    pub seq: Option<u64>,
    /// The batch's time (the leader's, accepted by `t + 1` honest servers), or the recovery
    /// round's agreed time.
    pub time_ms: u64,
    /// The request.
    pub request: Vec<u8>,
}

/// A batch the leader ordered, as received.
struct Ordered {
    bytes: Vec<u8>,
    time_ms: u64,
}

/// One epoch's optimistic state at one server.
struct Epoch {
    /// Batches received from the leader (or fetched), by sequence number.
    batches: BTreeMap<u64, Ordered>,
    /// This server's chain values: `chain[0]` is the genesis; `chain[s]` for every `s` it
    /// prepared or delivered.
    chain: BTreeMap<u64, Digest>,
    /// The highest `s` this server signed `prepare` for (or delivered).
    signed: u64,
    /// The time of batch `signed`.
    last_time: u64,
    /// Prepare shares by sequence number and sender.
    shares: BTreeMap<u64, BTreeMap<ServerId, (Digest, SignatureShare)>>,
    /// The highest certificate held.
    certified: Option<(u64, Digest, Signature)>,
    /// Commits (chain value and commit share) by sequence number and sender.
    commits: BTreeMap<u64, BTreeMap<ServerId, (Digest, SignatureShare)>>,
    /// The highest commit certificate known: what this server delivers up to in the
    /// optimistic phase, and hands to servers that complain.
    committed: Option<(u64, Digest, Signature)>,
    /// Per complaining peer, the highest sequence number whose commit certificate it was sent.
    helped: BTreeMap<ServerId, u64>,
    /// Batches delivered from this epoch (the last sequence number).
    delivered: u64,
    /// Fetch replies: sequence number → sender → (previous chain value, batch).
    fetched: BTreeMap<u64, BTreeMap<ServerId, (Digest, Vec<u8>)>>,
    /// The `to` of fetches sent.
    fetch_asked: BTreeSet<u64>,
    /// Fetches answered: (peer, to).
    fetch_answered: BTreeSet<(ServerId, u64)>,
    complaints: BTreeSet<ServerId>,
    complained: bool,
    /// `n - t` complaints: no more ORDER, PREPARE or COMMIT in this epoch.
    stopped: bool,
    /// Reporters whose report this server submitted to the recovery.
    reports_submitted: BTreeSet<ServerId>,
    /// Leader only: the next sequence number, the pending-queue cursor, the last batch time,
    /// and this server's clock when it last ordered a batch that was not full.
    next_seq: u64,
    cursor: u64,
    ordered_time: u64,
    partial_at: Option<u64>,
}

impl Epoch {
    fn new(genesis: Digest) -> Self {
        Self {
            batches: BTreeMap::new(),
            chain: BTreeMap::from([(0, genesis)]),
            signed: 0,
            last_time: 0,
            shares: BTreeMap::new(),
            certified: None,
            commits: BTreeMap::new(),
            committed: None,
            helped: BTreeMap::new(),
            delivered: 0,
            fetched: BTreeMap::new(),
            fetch_asked: BTreeSet::new(),
            fetch_answered: BTreeSet::new(),
            complaints: BTreeSet::new(),
            complained: false,
            stopped: false,
            reports_submitted: BTreeSet::new(),
            next_seq: 1,
            cursor: 0,
            ordered_time: 0,
            partial_at: None,
        }
    }

    /// Whether `seq` is within this epoch's window.
    fn in_window(&self, seq: u64) -> bool {
        seq > self.delivered && seq <= self.delivered + SEQS_AHEAD_MAX
    }

    /// Drops what delivered sequence numbers no longer need (keeping [`BATCHES_RETAINED`]
    /// batches and chain values for fetches).
    fn prune(&mut self) {
        let keep_from = self.delivered.saturating_sub(BATCHES_RETAINED);
        self.batches = self.batches.split_off(&(keep_from + 1));
        self.chain = self.chain.split_off(&keep_from);
        self.shares = self.shares.split_off(&(self.delivered + 1));
        self.commits = self.commits.split_off(&(self.delivered + 1));
        self.fetched = self.fetched.split_off(&(self.delivered + 1));
        self.fetch_asked = self.fetch_asked.split_off(&(self.delivered + 1));
        self.fetch_answered.retain(|(_, to)| *to > keep_from);
    }
}

/// An epoch the recovery closed: where its optimistic phase ends, and the requests the
/// recovery ordered before the marker.
struct Closed {
    epoch: u64,
    seq: u64,
    chain: Digest,
    held: Vec<(u64, Vec<u8>)>,
    /// The recovery broadcast's round that held the marker, its delivered count before it, and
    /// the reporters of the marker delivered before that round.
    recovery: (u64, u64, Vec<ServerId>),
}

/// One optimistic atomic-broadcast instance at one server.
pub struct Oabc {
    instance: InstanceId,
    config: OabcConfig,
    abc: Abc,
    /// The epoch this server is in (the next to close locally).
    epoch: u64,
    /// Epochs `epoch ..= epoch + EPOCHS_AHEAD_MAX` with state.
    epochs: BTreeMap<u64, Epoch>,
    /// Closed epochs kept for fetches.
    retired: BTreeMap<u64, Epoch>,
    /// Epochs closed by the recovery and not yet delivered here, in order.
    closed: VecDeque<Closed>,
    /// The next epoch the recovery broadcast's sequence closes.
    abc_epoch: u64,
    /// Valid reports for `abc_epoch` delivered by the recovery broadcast, by reporter, with the
    /// recovery round that delivered each.
    abc_reports: BTreeMap<ServerId, (Option<Report>, u64)>,
    /// Requests the recovery broadcast delivered since the last marker.
    held: Vec<(u64, Vec<u8>)>,
    pending: Pending,
    window: Window,
    positions: u64,
    time_ms: u64,
    /// The round the recovery broadcast is delivering and its delivered count before it.
    recovery_round: (u64, u64),
    /// The same at the marker of the last epoch delivered here (where a restart runs it again),
    /// with the marker's reporters delivered before that round.
    recovery_resume: (u64, u64, Vec<ServerId>),
    /// Resumed: the recovery broadcast runs again from the round of the marker of `epoch - 1`,
    /// whose reports and held requests were delivered before; that marker only discards them.
    replaying: bool,
    /// Draining: orders no new batch as leader.
    draining: bool,
    /// The highest epoch a peer's message was about (see [`Oabc::catch_up`]).
    epoch_seen: u64,
}

impl Oabc {
    /// An instance named `instance` with the given limits.
    pub fn new(instance: InstanceId, config: OabcConfig) -> Self {
        let abc_config = recovery_config(&config.abc);
        let abc_id = instance
            .child(ABC_LABEL)
            .unwrap_or_else(|| instance.clone());
        let mut config = config;
        config.abc.request_bytes_max = abc_config.request_bytes_max.saturating_sub(1);
        config.abc.batch_bytes_max = abc_config.batch_bytes_max;
        config.abc.batch_requests_max = abc_config.batch_requests_max;
        config.pipeline_max = config.pipeline_max.clamp(1, SEQS_AHEAD_MAX);
        let mut oabc = Self {
            abc: Abc::new(abc_id, abc_config),
            config,
            epoch: 0,
            epochs: BTreeMap::new(),
            retired: BTreeMap::new(),
            closed: VecDeque::new(),
            abc_epoch: 0,
            abc_reports: BTreeMap::new(),
            held: Vec::new(),
            pending: Pending::default(),
            window: Window::new(DEDUP_POSITIONS),
            positions: 0,
            time_ms: 0,
            recovery_round: (0, 0),
            recovery_resume: (0, 0, Vec::new()),
            replaying: false,
            draining: false,
            epoch_seen: 0,
            instance,
        };
        oabc.ensure_epochs();
        oabc
    }

    /// An instance that resumes at `point` (taken from [`Oabc::point`] before a restart).
    /// `recent` are the digests ([`abc::request_digest`] under `instance`) of the requests
    /// delivered last, oldest first, up to [`DEDUP_POSITIONS`]: the deduplication window.
    ///
    /// The batches of `point.epoch` after `point.seq` come from the others' commit certificates
    /// and fetches; the recovery broadcast runs again from the round that closed the epoch
    /// before (its decisions come from the others' catch-up), and the requests and reports it
    /// delivered before that epoch's marker are discarded again. The runtime keeps the restarted
    /// server silent wherever it may have spoken before (its send fence).
    ///
    /// `certified` is the last [`Oabc::certified`] the runtime stored (before a COMMIT left):
    /// what the server reports if its epoch is `point.epoch` (a certificate that does not verify
    /// is ignored).
    pub fn resume(
        instance: InstanceId,
        config: OabcConfig,
        point: &Point,
        certified: Option<&Certified>,
        party: &Party,
        recent: impl IntoIterator<Item = Digest>,
    ) -> Self {
        let mut oabc = Self::new(instance, config);
        oabc.abc = Abc::resume(
            oabc.abc.instance().clone(),
            recovery_config(&oabc.config.abc),
            point.recovery_round,
            point.recovery_height,
            std::iter::empty(),
        );
        oabc.epoch = point.epoch;
        oabc.epochs.clear();
        oabc.ensure_epochs();
        if let Some(state) = oabc.epochs.get_mut(&point.epoch) {
            state.chain.insert(point.seq, point.chain);
            state.delivered = point.seq;
            state.signed = point.seq;
            state.last_time = point.time_ms;
            state.next_seq = point.seq + 1;
            state.ordered_time = point.time_ms;
        }
        if let Some(certified) = certified
            && certified.epoch == point.epoch
            && certified.seq > point.seq
        {
            let valid = party.group.agreement.verify(
                &Context::new(PREPARE_PURPOSE, oabc.instance.as_bytes()),
                &statement(certified.epoch, certified.seq, &certified.chain),
                &certified.certificate,
            );
            if valid.is_ok()
                && let Some(state) = oabc.epochs.get_mut(&point.epoch)
            {
                state.certified = Some((certified.seq, certified.chain, certified.certificate));
            }
        }
        oabc.positions = point.positions;
        oabc.recovery_round = (point.recovery_round, point.recovery_height);
        oabc.recovery_resume = (
            point.recovery_round,
            point.recovery_height,
            point.reporters_before.clone(),
        );
        oabc.abc_epoch = point.epoch;
        if point.replay && point.epoch > 0 {
            oabc.abc_epoch = point.epoch - 1;
            oabc.replaying = true;
            // Stand-ins for the reports delivered before the marker's round: only their
            // reporters count.
            for reporter in &point.reporters_before {
                oabc.abc_reports.insert(*reporter, (None, 0));
            }
        }
        for digest in recent {
            oabc.window.insert(digest);
        }
        oabc
    }

    /// The highest prepare certificate of the current epoch held here (`None` before the
    /// first): a runtime stores it before a COMMIT leaves (see [`Certified`]).
    pub fn certified(&self) -> Option<Certified> {
        let state = self.epochs.get(&self.epoch)?;
        let (seq, chain, certificate) = state.certified.as_ref()?;
        Some(Certified {
            epoch: self.epoch,
            seq: *seq,
            chain: *chain,
            certificate: *certificate,
        })
    }

    /// Where this server stands: everything up to `positions` delivered (see [`Oabc::resume`]).
    pub fn point(&self) -> Point {
        let state = self.epochs.get(&self.epoch);
        let seq = state.map_or(0, |s| s.delivered);
        let chain = state
            .and_then(|s| s.chain.get(&seq).copied())
            .unwrap_or_else(|| genesis(&self.instance, self.epoch));
        let time_ms = state
            .and_then(|s| s.batches.get(&seq))
            .map_or(0, |b| b.time_ms);
        // With nothing under way in the recovery, a restart resumes it at its next round and
        // needs nobody's memory of earlier rounds (a whole group restarted while idle).
        let quiet = self.closed.is_empty()
            && self.held.is_empty()
            && self.abc_reports.is_empty()
            && self.abc_epoch == self.epoch
            && !self.replaying;
        if quiet {
            return Point {
                epoch: self.epoch,
                seq,
                chain,
                time_ms,
                positions: self.positions,
                recovery_round: self.abc.round(),
                replay: false,
                recovery_height: self.abc.delivered_count(),
                reporters_before: Vec::new(),
            };
        }
        Point {
            epoch: self.epoch,
            seq,
            chain,
            time_ms,
            positions: self.positions,
            recovery_round: self.recovery_resume.0,
            replay: true,
            recovery_height: self.recovery_resume.1,
            reporters_before: self.recovery_resume.2.clone(),
        }
    }

    /// Leader: when (by this server's clock) the batch held back by the pacing
    /// ([`OabcConfig::batch_interval_ms`]) may go; the runtime calls [`Oabc::poll`] then.
    /// `None` when nothing is held back.
    pub fn next_order_at(&self, party: &Party) -> Option<u64> {
        let state = self.epochs.get(&self.epoch)?;
        let due = state
            .partial_at?
            .saturating_add(self.config.batch_interval_ms);
        let held = leader_of(self.epoch, party.servers()) == Some(party.id)
            && self.closed.is_empty()
            && !self.draining
            && !state.stopped
            && state.next_seq <= state.delivered + self.config.pipeline_max
            && self.pending.has_after(state.cursor)
            && self.time_ms < due;
        held.then_some(due)
    }

    /// Does whatever became possible with the time set last ([`Oabc::set_time`]): a batch the
    /// pacing held back goes.
    pub fn poll(&mut self, party: &mut Party) -> Step<Delivered> {
        let mut step = Step::new();
        self.progress(party, &mut step);
        step
    }

    /// Draining (the server is stopping): no new batch as leader; what is under way finishes.
    /// The recovery broadcast drains too ([`Abc::set_draining`]).
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
        self.abc.set_draining(draining);
    }

    /// Takes a request from a client; it waits until delivered. A request already pending or
    /// delivered within [`DEDUP_POSITIONS`] is accepted and ignored; refused (and not kept)
    /// when too large or when the queue is full.
    pub fn submit(
        &mut self,
        party: &mut Party,
        request: Vec<u8>,
    ) -> Result<Step<Delivered>, AbcError> {
        if request.len() > self.config.abc.request_bytes_max {
            return Err(AbcError::TooLarge {
                len: request.len(),
                max: self.config.abc.request_bytes_max,
            });
        }
        let digest = abc::request_digest(&self.instance, &request);
        if self.window.contains(&digest) || self.pending.contains(&digest) {
            return Ok(Step::new());
        }
        if self.pending.len() >= self.config.abc.pending_requests_max {
            return Err(AbcError::QueueFull {
                max: self.config.abc.pending_requests_max,
            });
        }
        self.pending.push(digest, request);
        let mut step = Step::new();
        self.progress(party, &mut step);
        Ok(step)
    }

    /// The runtime's patience ran out: requests are pending here and nothing was delivered for
    /// a while. Complains about the current epoch's leader (once per epoch).
    pub fn suspect(&mut self, party: &mut Party) -> Step<Delivered> {
        let mut step = Step::new();
        if self.closed.is_empty() {
            self.complain(&mut step);
        }
        self.progress(party, &mut step);
        step
    }

    /// The runtime learned that the others delivered more than this server (after a restart,
    /// where an idle group sends nothing that would tell it). It complains — the others answer
    /// a complaint with their highest commit certificate, whose batches it then fetches — and
    /// asks for the recovery broadcast's decisions in case the others closed its epoch.
    pub fn lagging(&mut self, party: &mut Party) -> Step<Delivered> {
        self.epoch_seen = self.epoch_seen.max(self.epoch + 1);
        self.suspect(party)
    }

    /// Sets this server's clock (milliseconds since the Unix epoch): the time it puts in the
    /// batches it orders as leader, and the reference for the batches it accepts.
    pub fn set_time(&mut self, time_ms: u64) {
        self.time_ms = time_ms;
        self.abc.set_time(time_ms);
    }

    /// Handles a message for this instance or one below it.
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
        if message.instance == self.instance {
            match &message.body {
                Body::Oabc(body) => self.on_message(party, from, body, &mut step),
                _ => step.fault(from, &message.instance, FaultKind::UnexpectedMessage),
            }
        } else if message.instance.is_within(self.abc.instance()) {
            let child = self.abc.handle_message(party, from, message);
            let delivered = step.absorb(child);
            self.on_abc_delivered(party, delivered, &mut step);
        } else {
            step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
        }
        self.progress(party, &mut step);
        step
    }

    /// The epoch this server is in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The leader of `epoch`.
    pub fn leader(&self, party: &Party, epoch: u64) -> Option<ServerId> {
        leader_of(epoch, party.servers())
    }

    /// Requests delivered so far.
    pub fn delivered_count(&self) -> u64 {
        self.positions
    }

    /// Requests pending here.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether this server stopped the optimistic phase of its current epoch (recovery under
    /// way) or is delivering a closed one.
    pub fn recovering(&self) -> bool {
        !self.closed.is_empty() || self.epochs.get(&self.epoch).is_some_and(|e| e.stopped)
    }

    /// Whether the runtime's patience timer should run: requests are pending here and this
    /// server has not complained about its current epoch yet (once it has, further timeouts
    /// change nothing until the epoch ends).
    pub fn waiting(&self) -> bool {
        !self.pending.is_empty()
            && self.closed.is_empty()
            && self.epochs.get(&self.epoch).is_some_and(|e| !e.complained)
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Request digests remembered for deduplication (for observing the memory bound).
    pub fn remembered_requests(&self) -> usize {
        self.window.len()
    }

    /// The recovery broadcast (for observers).
    pub fn recovery(&self) -> &Abc {
        &self.abc
    }

    /// Epochs with state, open and retired (for observing the memory bound).
    pub fn live_epochs(&self) -> usize {
        self.epochs.len() + self.retired.len()
    }

    fn envelope(&self, body: Message) -> crate::Message {
        crate::Message {
            instance: self.instance.clone(),
            body: Body::Oabc(body),
        }
    }

    fn ensure_epochs(&mut self) {
        for epoch in self.epoch..=self.epoch + EPOCHS_AHEAD_MAX {
            if !self.epochs.contains_key(&epoch) {
                let genesis = genesis(&self.instance, epoch);
                self.epochs.insert(epoch, Epoch::new(genesis));
            }
        }
    }

    fn complain(&mut self, step: &mut Step<Delivered>) {
        let epoch = self.epoch;
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        if state.complained {
            return;
        }
        state.complained = true;
        let message = self.envelope(Message::Complain { epoch });
        step.broadcast(message);
    }

    fn on_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &Message,
        step: &mut Step<Delivered>,
    ) {
        self.epoch_seen = self.epoch_seen.max(body.epoch());
        match body {
            Message::Order { epoch, seq, batch } => {
                self.on_order(party, from, *epoch, *seq, batch, step)
            }
            Message::Prepare {
                epoch,
                seq,
                chain,
                share,
            } => self.on_share(false, from, *epoch, *seq, *chain, share, step),
            Message::Commit {
                epoch,
                seq,
                chain,
                share,
            } => self.on_share(true, from, *epoch, *seq, *chain, share, step),
            Message::Committed {
                epoch,
                seq,
                chain,
                certificate,
            } => self.on_committed(party, from, *epoch, *seq, *chain, certificate, step),
            Message::Complain { epoch } => {
                if let Some(state) = self.open_epoch(*epoch) {
                    state.complaints.insert(from);
                }
            }
            Message::Report(report) => self.on_report(party, from, report, step),
            Message::Fetch { epoch, seq, chain } => self.on_fetch(from, *epoch, *seq, *chain, step),
            Message::Batch {
                epoch,
                seq,
                previous,
                batch,
            } => {
                let batch_bytes_max = self.config.abc.batch_bytes_max;
                let Some(state) = self.open_epoch(*epoch) else {
                    return;
                };
                if !state.fetch_asked.iter().any(|to| seq <= to)
                    || !state.in_window(*seq)
                    || batch.len() > batch_bytes_max
                {
                    return;
                }
                state
                    .fetched
                    .entry(*seq)
                    .or_default()
                    .entry(from)
                    .or_insert_with(|| (*previous, batch.clone()));
            }
        }
    }

    /// The state of `epoch` if it is open here (current or within the window ahead).
    fn open_epoch(&mut self, epoch: u64) -> Option<&mut Epoch> {
        self.epochs.get_mut(&epoch)
    }

    fn on_order(
        &mut self,
        party: &mut Party,
        from: ServerId,
        epoch: u64,
        seq: u64,
        bytes: &[u8],
        step: &mut Step<Delivered>,
    ) {
        let instance = self.instance.clone();
        let config = self.config;
        let current = self.epoch;
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        if Some(from) != leader_of(epoch, party.servers()) {
            step.fault(from, &instance, FaultKind::UnexpectedMessage);
            return;
        }
        if seq == 0 || !state.in_window(seq) {
            return;
        }
        if let Some(known) = state.batches.get(&seq) {
            if known.bytes != bytes {
                step.fault(from, &instance, FaultKind::Equivocation);
                if epoch == current {
                    self.complain(step);
                }
            }
            return;
        }
        let batch = match Batch::from_bytes(bytes) {
            Ok(batch)
                if batch.fits(
                    bytes.len(),
                    config.abc.batch_requests_max,
                    config.abc.request_bytes_max,
                    config.abc.batch_bytes_max,
                ) =>
            {
                batch
            }
            _ => {
                step.fault(from, &instance, FaultKind::InvalidValue);
                if epoch == current {
                    self.complain(step);
                }
                return;
            }
        };
        state.batches.insert(
            seq,
            Ordered {
                bytes: bytes.to_vec(),
                time_ms: batch.time_ms,
            },
        );
    }

    /// Keeps a PREPARE (`commit` false) or COMMIT share: one per sequence number and sender
    /// (a second one on another chain value is an equivocation), within the window and above
    /// the highest certificate of its kind held here (a lower one is never needed again).
    #[allow(clippy::too_many_arguments, reason = "the fields of one message")]
    fn on_share(
        &mut self,
        commit: bool,
        from: ServerId,
        epoch: u64,
        seq: u64,
        chain: Digest,
        share: &SignatureShare,
        step: &mut Step<Delivered>,
    ) {
        let instance = self.instance.clone();
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        if share.id() != from {
            step.fault(from, &instance, FaultKind::UnexpectedMessage);
            return;
        }
        let in_window = state.in_window(seq);
        let (held, shares) = if commit {
            (&state.committed, &mut state.commits)
        } else {
            (&state.certified, &mut state.shares)
        };
        if !in_window || held.as_ref().is_some_and(|(s, ..)| *s >= seq) {
            return;
        }
        let shares = shares.entry(seq).or_default();
        match shares.get(&from) {
            Some((known, _)) if *known != chain => {
                step.fault(from, &instance, FaultKind::Equivocation)
            }
            Some(_) => {}
            None => {
                shares.insert(from, (chain, *share));
            }
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of one message")]
    fn on_committed(
        &mut self,
        party: &mut Party,
        from: ServerId,
        epoch: u64,
        seq: u64,
        chain: Digest,
        certificate: &Signature,
        step: &mut Step<Delivered>,
    ) {
        let Some(state) = self.epochs.get(&epoch) else {
            return;
        };
        if state.committed.as_ref().is_some_and(|(s, ..)| *s >= seq) || seq <= state.delivered {
            return;
        }
        if !check_certificate(
            party,
            &self.instance,
            COMMIT_PURPOSE,
            epoch,
            seq,
            &chain,
            certificate,
        ) {
            step.fault(from, &self.instance, FaultKind::InvalidProof);
            return;
        }
        if let Some(state) = self.epochs.get_mut(&epoch) {
            state.committed = Some((seq, chain, *certificate));
        }
    }

    fn on_report(
        &mut self,
        party: &mut Party,
        from: ServerId,
        report: &Report,
        step: &mut Step<Delivered>,
    ) {
        if report.reporter() != from {
            step.fault(from, &self.instance, FaultKind::UnexpectedMessage);
            return;
        }
        if report.epoch < self.abc_epoch {
            return;
        }
        let Some(state) = self.epochs.get(&report.epoch) else {
            return;
        };
        if state.reports_submitted.contains(&from) {
            return;
        }
        if let Err(kind) = check_report(party, &self.instance, report) {
            step.fault(from, &self.instance, kind);
            return;
        }
        if let Some(state) = self.epochs.get_mut(&report.epoch) {
            state.reports_submitted.insert(from);
        }
        let mut request = vec![ABC_REPORT];
        report.encode_to(&mut request);
        // A full queue only delays: the report's author and the other servers submit it too.
        if let Ok(child) = self.abc.submit(party, request) {
            let delivered = step.absorb(child);
            self.on_abc_delivered(party, delivered, step);
        }
    }

    fn on_fetch(
        &mut self,
        from: ServerId,
        epoch: u64,
        to: u64,
        chain: Digest,
        step: &mut Step<Delivered>,
    ) {
        let state = match self.epochs.get_mut(&epoch) {
            Some(state) => state,
            None => match self.retired.get_mut(&epoch) {
                Some(state) => state,
                None => return,
            },
        };
        // One answer per peer and `to`; `to` must lie within the window ahead of what this
        // server delivered (kept by `prune`), so the set stays within `n × 2 × SEQS_AHEAD_MAX`.
        let lowest = state.delivered.saturating_sub(BATCHES_RETAINED);
        if to <= lowest
            || to > state.delivered + SEQS_AHEAD_MAX
            || !state.fetch_answered.insert((from, to))
        {
            return;
        }
        // Only when this server's chain agrees with the asker's trusted value: then every batch
        // below `to` here is the one the asker needs (the chain value fixes the prefix).
        if to == 0 || state.chain.get(&to) != Some(&chain) {
            return;
        }
        let from_seq = to.saturating_sub(BATCHES_RETAINED - 1).max(1);
        let mut replies = Vec::new();
        for seq in from_seq..=to {
            let (Some(previous), Some(batch)) =
                (state.chain.get(&(seq - 1)), state.batches.get(&seq))
            else {
                continue;
            };
            replies.push(Message::Batch {
                epoch,
                seq,
                previous: *previous,
                batch: batch.bytes.clone(),
            });
        }
        for reply in replies {
            let message = self.envelope(reply);
            step.send(from, message);
        }
    }

    /// Handles what the recovery broadcast delivered, in its order.
    fn on_abc_delivered(
        &mut self,
        party: &mut Party,
        delivered: Vec<abc::Delivered>,
        step: &mut Step<Delivered>,
    ) {
        for item in delivered {
            if item.round != self.recovery_round.0 {
                self.recovery_round = (item.round, item.position);
            }
            match item.request.split_first() {
                Some((&ABC_REQUEST, request)) => {
                    if self.held.len() < self.config.held_max {
                        self.held.push((item.time_ms, request.to_vec()));
                    }
                    if self.held.len() >= self.config.held_complain
                        && self.closed.is_empty()
                        && !self.replaying
                    {
                        self.complain(step);
                    }
                }
                Some((&ABC_REPORT, bytes)) => {
                    let Ok(report) = Report::from_bytes(bytes) else {
                        continue;
                    };
                    if report.epoch != self.abc_epoch
                        || self.abc_reports.contains_key(&report.reporter())
                        || check_report(party, &self.instance, &report).is_err()
                    {
                        continue;
                    }
                    self.abc_reports
                        .insert(report.reporter(), (Some(report), self.recovery_round.0));
                    if self.abc_reports.len() >= party.quorum() {
                        self.marker();
                    }
                }
                // Only a faulty server's batch carries anything else; every server skips it.
                _ => {}
            }
        }
    }

    /// `n - t` reports on `abc_epoch` are in: the epoch's optimistic phase ends at the highest
    /// certified sequence number among them.
    fn marker(&mut self) {
        if self.replaying {
            // Delivered before the restart: the epoch after it is where this server resumed.
            self.replaying = false;
            self.held.clear();
            self.abc_epoch += 1;
            self.abc_reports.clear();
            return;
        }
        let before: Vec<ServerId> = self
            .abc_reports
            .iter()
            .filter(|(_, (_, round))| *round < self.recovery_round.0)
            .map(|(reporter, _)| *reporter)
            .collect();
        let mut best: Option<&Report> = None;
        for report in self.abc_reports.values().filter_map(|(r, _)| r.as_ref()) {
            if best.is_none_or(|b| report.seq > b.seq) {
                best = Some(report);
            }
        }
        let (seq, chain) = best.map_or((0, genesis(&self.instance, self.abc_epoch)), |r| {
            (r.seq, r.chain)
        });
        self.closed.push_back(Closed {
            epoch: self.abc_epoch,
            seq,
            chain,
            held: std::mem::take(&mut self.held),
            recovery: (self.recovery_round.0, self.recovery_round.1, before),
        });
        if let Some(state) = self.epochs.get_mut(&self.abc_epoch) {
            state.stopped = true;
        }
        self.abc_epoch += 1;
        self.abc_reports.clear();
    }

    /// A peer spoke of a later epoch: the others closed this server's epoch through the
    /// recovery broadcast, whose rounds it may have missed (down at the time, or restarted
    /// since). It asks for their decisions, round after round (once per round), until its own
    /// epoch catches up. (A faulty peer naming a far epoch costs one request per recovery
    /// round.)
    fn catch_up(&mut self, party: &mut Party, step: &mut Step<Delivered>) {
        if self.epoch_seen <= self.epoch || !self.closed.is_empty() {
            return;
        }
        let child = self.abc.catch_up_to(party, self.abc.round());
        let delivered = step.absorb(child);
        self.on_abc_delivered(party, delivered, step);
    }

    /// Everything that may have become possible.
    fn progress(&mut self, party: &mut Party, step: &mut Step<Delivered>) {
        self.catch_up(party, step);
        loop {
            // Deliver closed epochs, in order.
            if let Some(closed) = self.closed.front() {
                let (epoch, seq, chain) = (closed.epoch, closed.seq, closed.chain);
                if !self.complete_to(party, epoch, seq, chain, step) {
                    return;
                }
                if let Some(closed) = self.closed.pop_front() {
                    self.recovery_resume = closed.recovery;
                    for (time_ms, request) in closed.held {
                        self.deliver(epoch, None, time_ms, request, step);
                    }
                }
                self.next_epoch();
                continue;
            }
            break;
        }
        let epoch = self.epoch;
        self.complaints(party, step);
        if self.epochs.get(&epoch).is_some_and(|state| state.stopped) {
            return;
        }
        self.order(party, step);
        self.prepare(party, step);
        self.certify(party, step);
        self.commit_certificate(party, step);
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        let mut anchor = state
            .committed
            .as_ref()
            .map(|(seq, chain, _)| (*seq, *chain));
        if mutation::active(Mutation::OabcDeliverOnCertificate)
            && let Some((seq, chain, _)) = &state.certified
            && anchor.is_none_or(|(s, _)| *seq > s)
        {
            // The deliberate bug: a prepare certificate taken for a commit certificate.
            anchor = Some((*seq, *chain));
        }
        if let Some((seq, chain)) = anchor {
            self.complete_to(party, epoch, seq, chain, step);
            // Delivering may free the leader's pipeline.
            self.order(party, step);
        }
        self.help(party.id, step);
    }

    /// Combines `n - t` commit shares on one `(s, chain)` — the highest such `s` — into a
    /// commit certificate (optimistically; bad shares are blamed and dropped).
    fn commit_certificate(&mut self, party: &mut Party, step: &mut Step<Delivered>) {
        let epoch = self.epoch;
        let quorum = party.quorum();
        let instance = self.instance.clone();
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        let from = state
            .committed
            .as_ref()
            .map_or(state.delivered, |(s, ..)| (*s).max(state.delivered));
        let candidates: Vec<(u64, Digest, Vec<SignatureShare>)> = state
            .commits
            .range(from + 1..)
            .rev()
            .filter_map(|(seq, commits)| {
                let mut by_chain: BTreeMap<Digest, Vec<SignatureShare>> = BTreeMap::new();
                for (chain, share) in commits.values() {
                    by_chain.entry(*chain).or_default().push(*share);
                }
                by_chain
                    .into_iter()
                    .find(|(_, shares)| shares.len() >= quorum)
                    .map(|(chain, shares)| (*seq, chain, shares))
            })
            .collect();
        for (seq, chain, shares) in candidates {
            let payload = statement(epoch, seq, &chain);
            let context = Context::new(COMMIT_PURPOSE, instance.as_bytes());
            let (combined, bad) = match party.group.agreement.combine(&context, &payload, &shares) {
                Ok(combined) => (Some(combined.value), combined.faulty),
                Err(_) => (
                    None,
                    party
                        .group
                        .agreement
                        .find_invalid_shares(&context, &payload, &shares),
                ),
            };
            for server in bad {
                step.fault(server, &instance, FaultKind::InvalidShare);
                if let Some(commits) = state.commits.get_mut(&seq) {
                    commits.remove(&server);
                }
            }
            if let Some(certificate) = combined {
                let bytes = certificate.to_bytes();
                party.cache.check(
                    &[
                        COMMIT_PURPOSE.as_bytes(),
                        instance.as_bytes(),
                        &payload,
                        &bytes,
                    ],
                    || true,
                );
                state.committed = Some((seq, chain, certificate));
                return;
            }
        }
    }

    /// Hands the current commit certificate to every peer that complained about this epoch and
    /// has not been sent it: a server the leader left out catches up from it.
    fn help(&mut self, me: ServerId, step: &mut Step<Delivered>) {
        let epoch = self.epoch;
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        let Some((seq, chain, certificate)) = state.committed else {
            return;
        };
        let mut messages = Vec::new();
        for peer in &state.complaints {
            if *peer == me || state.helped.get(peer).is_some_and(|s| *s >= seq) {
                continue;
            }
            state.helped.insert(*peer, seq);
            messages.push(*peer);
        }
        for peer in messages {
            let message = self.envelope(Message::Committed {
                epoch,
                seq,
                chain,
                certificate,
            });
            step.send(peer, message);
        }
    }

    fn complaints(&mut self, party: &mut Party, step: &mut Step<Delivered>) {
        let epoch = self.epoch;
        if !self.closed.is_empty() {
            return;
        }
        let Some(state) = self.epochs.get(&epoch) else {
            return;
        };
        let count = state.complaints.len();
        if count > usize::from(party.faults()) && !state.complained {
            self.complain(step);
        }
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        if count < party.quorum() || state.stopped {
            return;
        }
        state.stopped = true;
        let (seq, chain, certificate) = match &state.certified {
            Some((seq, chain, certificate)) => (*seq, *chain, Some(*certificate)),
            None => (0, genesis(&self.instance, epoch), None),
        };
        let share = party.keys.agreement.sign(
            &Context::new(REPORT_PURPOSE, self.instance.as_bytes()),
            &statement(epoch, seq, &chain),
        );
        let report = Report {
            epoch,
            seq,
            chain,
            certificate,
            share,
        };
        let message = self.envelope(Message::Report(report));
        step.broadcast(message);
        // Hand the pending requests to the recovery: what the leader left out gets ordered.
        let requests: Vec<Vec<u8>> = self
            .pending
            .requests()
            .map(|request| {
                let mut tagged = Vec::with_capacity(request.len() + 1);
                tagged.push(ABC_REQUEST);
                tagged.extend_from_slice(request);
                tagged
            })
            .collect();
        for request in requests {
            match self.abc.submit(party, request) {
                Ok(child) => {
                    let delivered = step.absorb(child);
                    self.on_abc_delivered(party, delivered, step);
                }
                // The rest stays pending here and goes to the next recovery.
                Err(_) => break,
            }
        }
    }

    /// Leader: orders pending requests while the pipeline has room.
    fn order(&mut self, party: &Party, step: &mut Step<Delivered>) {
        let epoch = self.epoch;
        if leader_of(epoch, party.servers()) != Some(party.id)
            || !self.closed.is_empty()
            || self.draining
        {
            return;
        }
        let config = self.config;
        let time_ms = self.time_ms;
        let mut orders = Vec::new();
        if let Some(state) = self.epochs.get_mut(&epoch) {
            while !state.stopped
                && state.next_seq <= state.delivered + config.pipeline_max
                && self.pending.has_after(state.cursor)
            {
                let paced = state
                    .partial_at
                    .is_some_and(|at| time_ms < at.saturating_add(config.batch_interval_ms));
                if paced
                    && !self.pending.fills_batch(
                        state.cursor,
                        config.abc.batch_requests_max,
                        config.abc.batch_bytes_max,
                    )
                {
                    break;
                }
                let (batch, cursor) = self.pending.batch_after(
                    state.cursor,
                    config.abc.batch_requests_max,
                    config.abc.batch_bytes_max,
                    time_ms.max(state.ordered_time),
                );
                if batch.requests.is_empty() {
                    break;
                }
                state.ordered_time = batch.time_ms;
                state.cursor = cursor;
                // Not full: fewer than the limit, and it took everything that was pending.
                if batch.requests.len() < config.abc.batch_requests_max
                    && !self.pending.has_after(cursor)
                {
                    state.partial_at = Some(time_ms);
                }
                orders.push(Message::Order {
                    epoch,
                    seq: state.next_seq,
                    batch: batch.to_bytes(),
                });
                state.next_seq += 1;
            }
        }
        for order in orders {
            let message = self.envelope(order);
            step.broadcast(message);
        }
    }

    /// Signs `prepare` for the batches that extend this server's chain, in order.
    fn prepare(&mut self, party: &Party, step: &mut Step<Delivered>) {
        let epoch = self.epoch;
        let config = self.config;
        let time_ms = self.time_ms;
        let mut messages = Vec::new();
        let mut bad_time = false;
        if let Some(state) = self.epochs.get_mut(&epoch) {
            loop {
                let seq = state.signed + 1;
                let (Some(batch), Some(previous)) =
                    (state.batches.get(&seq), state.chain.get(&state.signed))
                else {
                    break;
                };
                if batch.time_ms < state.last_time
                    || batch.time_ms.abs_diff(time_ms) > config.time_skew_ms
                {
                    bad_time = true;
                    break;
                }
                let chain = link(previous, &batch_digest(&self.instance, &batch.bytes));
                state.last_time = batch.time_ms;
                state.chain.insert(seq, chain);
                state.signed = seq;
                let share = party.keys.agreement.sign(
                    &Context::new(PREPARE_PURPOSE, self.instance.as_bytes()),
                    &statement(epoch, seq, &chain),
                );
                messages.push(Message::Prepare {
                    epoch,
                    seq,
                    chain,
                    share,
                });
            }
        }
        for body in messages {
            let message = self.envelope(body);
            step.broadcast(message);
        }
        if bad_time {
            self.complain(step);
        }
    }

    /// Combines `n - t` prepare shares on this server's own chain into a certificate and
    /// announces it with a COMMIT (highest sequence number first; lower ones are implied).
    fn certify(&mut self, party: &mut Party, step: &mut Step<Delivered>) {
        let epoch = self.epoch;
        let quorum = party.quorum();
        let instance = self.instance.clone();
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return;
        };
        let certified = state.certified.as_ref().map_or(0, |(s, ..)| *s);
        if certified >= state.signed {
            return;
        }
        let candidates: Vec<u64> = state
            .shares
            .range(certified + 1..=state.signed)
            .rev()
            .map(|(seq, _)| *seq)
            .collect();
        for seq in candidates {
            let Some(chain) = state.chain.get(&seq).copied() else {
                continue;
            };
            let Some(shares) = state.shares.get(&seq) else {
                continue;
            };
            let matching: Vec<SignatureShare> = shares
                .values()
                .filter(|(c, _)| *c == chain)
                .map(|(_, share)| *share)
                .collect();
            if matching.len() < quorum {
                continue;
            }
            let payload = statement(epoch, seq, &chain);
            let context = Context::new(PREPARE_PURPOSE, instance.as_bytes());
            match party.group.agreement.combine(&context, &payload, &matching) {
                Ok(combined) => {
                    for server in &combined.faulty {
                        step.fault(*server, &instance, FaultKind::InvalidShare);
                        if let Some(shares) = state.shares.get_mut(&seq) {
                            shares.remove(server);
                        }
                    }
                    let bytes = combined.value.to_bytes();
                    party.cache.check(
                        &[
                            PREPARE_PURPOSE.as_bytes(),
                            instance.as_bytes(),
                            &payload,
                            &bytes,
                        ],
                        || true,
                    );
                    state.certified = Some((seq, chain, combined.value));
                    let share = party
                        .keys
                        .agreement
                        .sign(&Context::new(COMMIT_PURPOSE, instance.as_bytes()), &payload);
                    let message = crate::Message {
                        instance: instance.clone(),
                        body: Body::Oabc(Message::Commit {
                            epoch,
                            seq,
                            chain,
                            share,
                        }),
                    };
                    step.broadcast(message);
                    break;
                }
                Err(_) => {
                    // Too few valid shares: drop the bad ones and wait for more.
                    let bad = party
                        .group
                        .agreement
                        .find_invalid_shares(&context, &payload, &matching);
                    for server in bad {
                        step.fault(server, &instance, FaultKind::InvalidShare);
                        if let Some(shares) = state.shares.get_mut(&seq) {
                            shares.remove(&server);
                        }
                    }
                }
            }
        }
    }

    /// Delivers the batches of `epoch` up to `seq`, whose chain value is the trusted `chain`,
    /// fetching what is missing. True when everything up to `seq` is delivered.
    fn complete_to(
        &mut self,
        party: &mut Party,
        epoch: u64,
        seq: u64,
        chain: Digest,
        step: &mut Step<Delivered>,
    ) -> bool {
        let instance = self.instance.clone();
        let Some(state) = self.epochs.get_mut(&epoch) else {
            return false;
        };
        if seq <= state.delivered {
            return true;
        }
        // Walk down from the trusted top until this server's own chain agrees.
        let mut trusted = chain;
        let mut collected: Vec<(u64, Digest, Vec<u8>)> = Vec::new();
        let mut at = seq;
        let mut missing = false;
        while at > state.delivered {
            if state.chain.get(&at) == Some(&trusted)
                && let Some(batch) = state.batches.get(&at)
                && let Some(previous) = state.chain.get(&(at - 1))
            {
                collected.push((at, trusted, batch.bytes.clone()));
                trusted = *previous;
                at -= 1;
                continue;
            }
            let digest_check = |previous: &Digest, bytes: &[u8]| {
                link(previous, &batch_digest(&instance, bytes)) == trusted
            };
            let mut found = None;
            let mut wrong = Vec::new();
            if let Some(replies) = state.fetched.get(&at) {
                for (server, (previous, bytes)) in replies {
                    if digest_check(previous, bytes) {
                        found = Some((*previous, bytes.clone()));
                        break;
                    }
                    wrong.push(*server);
                }
            }
            for server in wrong {
                step.fault(server, &instance, FaultKind::WrongBody);
                if let Some(replies) = state.fetched.get_mut(&at) {
                    replies.remove(&server);
                }
            }
            match found {
                Some((previous, bytes)) => {
                    collected.push((at, trusted, bytes));
                    trusted = previous;
                    at -= 1;
                }
                None => {
                    missing = true;
                    break;
                }
            }
        }
        if missing {
            if state.fetch_asked.insert(seq) {
                let message = crate::Message {
                    instance: instance.clone(),
                    body: Body::Oabc(Message::Fetch { epoch, seq, chain }),
                };
                for server in ServerId::all(party.servers()).filter(|s| *s != party.id) {
                    step.send(server, message.clone());
                }
            }
            return false;
        }
        // `trusted` is now the chain value at the last delivered batch: it matches ours.
        collected.reverse();
        // Each batch is decoded once, here; its bytes stay only where this server adopts them.
        let mut batches = Vec::with_capacity(collected.len());
        let mut adopted = false;
        for (at, value, bytes) in collected {
            let batch = Batch::from_bytes(&bytes).ok();
            let time_ms = batch.as_ref().map_or(0, |b| b.time_ms);
            if state.chain.get(&at) != Some(&value) {
                // Adopt the certified chain (this server's own was missing there, or another
                // branch of a faulty leader).
                adopted |= state.chain.contains_key(&at);
                state.chain.insert(at, value);
                state.batches.insert(at, Ordered { bytes, time_ms });
            }
            state.last_time = state.last_time.max(time_ms);
            batches.push((at, time_ms, batch));
        }
        if adopted {
            // What this server chained beyond `seq` hangs off another branch. It never signs
            // again at or below what it signed before (`signed` stays), so it prepares again only
            // once a later trusted value reaches past that.
            state.chain.retain(|s, _| *s <= seq);
        }
        state.signed = state.signed.max(seq);
        state.delivered = seq;
        state.prune();
        for (at, time_ms, batch) in batches {
            for request in batch.map(|b| b.requests).unwrap_or_default() {
                self.deliver(epoch, Some(at), time_ms, request, step);
            }
        }
        true
    }

    fn deliver(
        &mut self,
        epoch: u64,
        seq: Option<u64>,
        time_ms: u64,
        request: Vec<u8>,
        step: &mut Step<Delivered>,
    ) {
        let digest = abc::request_digest(&self.instance, &request);
        if self.window.contains(&digest) {
            return;
        }
        self.window.insert(digest);
        self.pending.remove(&digest);
        step.outputs.push(Delivered {
            position: self.positions,
            epoch,
            seq,
            time_ms,
            request,
        });
        self.positions += 1;
    }

    /// The current epoch is delivered: retire it and enter the next.
    fn next_epoch(&mut self) {
        if let Some(mut state) = self.epochs.remove(&self.epoch) {
            state.shares.clear();
            state.commits.clear();
            state.fetched.clear();
            // Nothing beyond the delivered prefix is on the certified chain.
            state.batches.retain(|seq, _| *seq <= state.delivered);
            state.chain.retain(|seq, _| *seq <= state.delivered);
            state.certified = None;
            self.retired.insert(self.epoch, state);
        }
        while self.retired.len() as u64 > EPOCHS_RETAINED {
            self.retired.pop_first();
        }
        self.epoch += 1;
        self.ensure_epochs();
    }
}

/// The recovery broadcast's configuration: room in each request for the tag byte this instance
/// puts before everything it submits.
fn recovery_config(abc: &AbcConfig) -> AbcConfig {
    AbcConfig {
        request_bytes_max: abc.request_bytes_max.saturating_add(1),
        ..*abc
    }
    .clamped()
}

/// Server `(epoch mod n) + 1` (`None` only for an empty group).
fn leader_of(epoch: u64, servers: u16) -> Option<ServerId> {
    ServerId::new((epoch % u64::from(servers.max(1))) as u16 + 1)
}

/// The payload of `prepare` and `report` statements: `epoch ‖ seq ‖ chain`.
fn statement(epoch: u64, seq: u64, chain: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(chain);
    out
}

fn hash(fields: &[&[u8]]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sintra/v1");
    hasher.update(b"oabc");
    for field in fields {
        hasher.update(&(field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// The chain value before an epoch's first batch.
fn genesis(instance: &InstanceId, epoch: u64) -> Digest {
    hash(&[b"genesis", instance.as_bytes(), &epoch.to_be_bytes()])
}

fn batch_digest(instance: &InstanceId, batch: &[u8]) -> Digest {
    hash(&[b"batch", instance.as_bytes(), batch])
}

/// `h_s = H(link, h_{s-1}, H(batch_s))`.
fn link(previous: &Digest, batch: &Digest) -> Digest {
    hash(&[b"link", previous, batch])
}

/// Whether `report` is signed by its reporter and its certificate verifies (each checked once
/// per server through the verified cache; the result is the same at every server).
fn check_report(
    party: &mut Party,
    instance: &InstanceId,
    report: &Report,
) -> Result<(), FaultKind> {
    let reporter = report.reporter();
    if !reporter.is_member_of(party.servers()) {
        return Err(FaultKind::InvalidShare);
    }
    let payload = statement(report.epoch, report.seq, &report.chain);
    if report.seq == 0 && report.chain != genesis(instance, report.epoch) {
        return Err(FaultKind::InvalidValue);
    }
    let share_bytes = report.share.to_bytes();
    let group = party.group.clone();
    let share_ok = party.cache.check(
        &[
            REPORT_PURPOSE.as_bytes(),
            instance.as_bytes(),
            &payload,
            &share_bytes,
        ],
        || {
            group
                .agreement
                .verify_share(
                    &Context::new(REPORT_PURPOSE, instance.as_bytes()),
                    &payload,
                    &report.share,
                )
                .is_ok()
        },
    );
    if !share_ok {
        return Err(FaultKind::InvalidShare);
    }
    if let Some(certificate) = &report.certificate
        && !check_certificate(
            party,
            instance,
            PREPARE_PURPOSE,
            report.epoch,
            report.seq,
            &report.chain,
            certificate,
        )
    {
        return Err(FaultKind::InvalidProof);
    }
    Ok(())
}

/// Whether `certificate` is the `n - t` signature on `purpose(epoch, seq, chain)` (checked once
/// per server through the verified cache).
fn check_certificate(
    party: &mut Party,
    instance: &InstanceId,
    purpose: &str,
    epoch: u64,
    seq: u64,
    chain: &Digest,
    certificate: &Signature,
) -> bool {
    let payload = statement(epoch, seq, chain);
    let bytes = certificate.to_bytes();
    let group = party.group.clone();
    party.cache.check(
        &[purpose.as_bytes(), instance.as_bytes(), &payload, &bytes],
        || {
            group
                .agreement
                .verify(
                    &Context::new(purpose, instance.as_bytes()),
                    &payload,
                    certificate,
                )
                .is_ok()
        },
    )
}
