//! The protocol task: owns the [`Party`] and the [`Abc`] and [`Scabc`] state machines, and never
//! blocks on IO or on RSA. It decodes what the links deliver, routes protocol messages by instance
//! (within `sintra/abc` to atomic broadcast, within `sintra/scabc` to secure causal atomic
//! broadcast), feeds client submissions to them, loops its own broadcasts back, hands outgoing
//! messages to the sender task, delivered rounds to the executor, and every other node message to
//! the coordinator.
//!
//! **Confidential requests.** A ciphertext is ordered by [`Scabc`]; once it is opened, *every*
//! server submits the plaintext to the plain atomic broadcast (deduplication by digest delivers
//! it once), so the service executes it in the one plain order, and the client that waits for it
//! here is handed to the coordinator under the plaintext's digest (docs/node.md, "Confidential
//! requests").
//!
//! **The send fence.** Before a message of round `r` leaves, the sender task durably records a
//! fence `≥ r`. After a restart (or when the instance is rebuilt after a state transfer) the task
//! is *silent* for every round up to the fence: it neither sends nor loops back its own messages
//! of those rounds, so it can never contradict a vote it sent before it stopped. It still sends
//! what cannot contradict anything — a request for a certified batch body, a body it holds, and
//! atomic broadcast's own CATCH-UP/DECIDED — and it still delivers those rounds from the others'
//! decisions. The rounds of secure causal atomic broadcast's ordering (`sintra/scabc/abc`) have a
//! fence of their own. Decryption shares are not fenced: a share's value is deterministic (only
//! its proof is randomised), so a share made again after a restart contradicts nothing, and it
//! is made only once its position is ordered.
//!
//! **Stopping.** A fence is what keeps a restarted server honest, and it is also what can keep a
//! restarted *group* silent: if more than `t` servers are fenced in a round nobody finished, the
//! round never finishes. So a stopping server first *drains* (docs/node.md, "Stopping"): it takes
//! no new requests, starts no round of its own ([`Abc::set_draining`]), finishes the rounds it or
//! a peer started, and reports that it is done once every round it sent a message in is delivered
//! and no message of an unfinished round came for [`DRAIN_QUIET`]. The sender task then lowers the
//! stored fence to the last round it really sent in (also whenever it has been idle for
//! [`FENCE_IDLE`]), so a group stopped together — or crashed while idle — resumes where it was.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_crypto::tdh2::Ciphertext;
use sintra_net::{Incoming, LinksHandle, SendError};
use sintra_protocols::abc::{Abc, AbcConfig, AbcError, Delivered};
use sintra_protocols::oabc::{self, Oabc};
use sintra_protocols::scabc::{self, Scabc, ScabcError};
use sintra_protocols::{
    Body, Fault, FaultKind, InstanceId, Message, Outgoing, Party, Step, Target, cbc,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::coordinator::{Answered, Register};
use crate::executor::ExecInput;
use crate::message::NodeMessage;
use crate::metrics::Metrics;
use crate::store::{FenceSpace, OrderingRecord, ScabcPoint, Store};

/// A client request on its way to atomic broadcast.
#[derive(Debug)]
pub(crate) struct Submission {
    /// The request.
    pub request: Request,
    /// Whether atomic broadcast took it.
    pub reply: oneshot::Sender<Result<(), SubmitError>>,
}

/// What a client submits.
#[derive(Debug)]
pub(crate) enum Request {
    /// An encoded service request, ordered by the plain atomic broadcast.
    Plain(Vec<u8>),
    /// A TDH2 ciphertext of an encoded service request, for secure causal atomic broadcast.
    Confidential {
        ciphertext: Box<Ciphertext>,
        /// SHA-256 of `ciphertext.to_bytes()`.
        digest: [u8; 32],
        /// The client, waiting for the signed answer to the plaintext.
        waiter: oneshot::Sender<Answered>,
    },
}

/// Clients waiting here for their ciphertext to be opened (then they wait at the coordinator
/// under the plaintext's digest); beyond it confidential requests are refused (`503`).
pub(crate) const CONFIDENTIAL_WAITERS_MAX: usize = 4096;
/// Opened plaintexts waiting for room in the plain atomic broadcast's pending queue; beyond it
/// a plaintext is dropped here (counted) and ordered from the other servers' copies.
pub(crate) const OPENED_QUEUE_MAX: usize = 4096;

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Back-pressure: the pending queue (or the channel to it) is full.
    #[error("the server is overloaded: {0}")]
    Overloaded(String),
    /// The ciphertext is not valid for the group's secure causal atomic broadcast.
    #[error("{0}")]
    Invalid(String),
    /// The request exceeds the size atomic broadcast accepts.
    #[error("request of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node is stopping.
    #[error("the server is shutting down")]
    Stopping,
}

/// Where to rebuild atomic broadcast after a state transfer.
#[derive(Debug, Clone)]
pub(crate) struct ResumePoint {
    pub next_round: u64,
    pub height: u64,
    pub recent: Vec<(u64, [u8; 32])>,
}

/// One message for the sender task.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub to: Target,
    pub bytes: Bytes,
    /// The fence space and round (or position) the fence must cover before it leaves (`None`:
    /// exempt from the fence).
    pub fenced: Option<(FenceSpace, u64)>,
    /// An optimistic-ordering COMMIT: the prepare certificate to store before it leaves
    /// (`(epoch, seq)` and the encoded `oabc::Certified`), so that a restarted server reports at
    /// least as high as every COMMIT it sent.
    pub certified: Option<((u64, u64), Vec<u8>)>,
}

/// Outgoing messages the sender task may hold (each a batch from one step).
pub(crate) const OUTBOUND_QUEUE_MAX: usize = 1024;

/// Rounds the durable fence is raised beyond the round that needs it, so that a store write is
/// needed once every few rounds rather than for every round.
pub(crate) const FENCE_STRIDE: u64 = 8;

/// After this long without anything to send, the sender task lowers the stored fences to the last
/// rounds it sent in (one store write per idle spell), so that a group crashed while idle is not
/// fenced in rounds nobody ran.
pub(crate) const FENCE_IDLE: Duration = Duration::from_secs(1);

/// A draining server is done only once no message of a round it has not delivered came for this
/// long (a peer may have started a round whose first messages are still on their way).
pub(crate) const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// How often a draining protocol task looks whether it is done.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// How this group orders requests.
#[allow(clippy::large_enum_variant)] // one per node, never moved after start
pub(crate) enum Orderer {
    /// Atomic broadcast (`sintra/abc`): every delivered round is one round of the log.
    Randomized(Abc),
    /// Optimistic atomic broadcast (`sintra/oabc`): every delivered batch (or closed epoch's
    /// recovery segment) is one round of the log.
    Optimistic(Box<Optimistic>),
}

/// The optimistic ordering and what the task knows of its own part in it.
pub(crate) struct Optimistic {
    pub oabc: Oabc,
    /// Silent (ORDER, PREPARE, COMMIT, REPORT) in epochs up to this one: the stored epoch fence.
    pub silent_through: Option<u64>,
    /// How long requests may wait here without a delivery before this server complains.
    pub patience: Duration,
    /// Since when requests have been waiting without a delivery.
    pub waiting_since: Option<Instant>,
    /// Epochs whose close is reported as a round of the log (a round of its own, empty, the
    /// same at every server; stored with every round, so that a restart never reports a close
    /// twice).
    pub closed_epochs: u64,
}

pub(crate) struct ProtocolTask {
    pub party: Party,
    pub orderer: Orderer,
    pub config: AbcConfig,
    pub instance: InstanceId,
    /// Secure causal atomic broadcast (`sintra/scabc`).
    pub scabc: Scabc,
    /// Its instance id.
    pub scabc_instance: InstanceId,
    /// Silent (see the module documentation) for rounds up to this one.
    pub silent_through: Option<u64>,
    /// Silent for the rounds of secure causal atomic broadcast's ordering up to this one.
    pub scabc_silent_through: Option<u64>,
    /// Clients waiting for their ciphertext (by SHA-256 of its encoding) to be opened.
    pub confidential: HashMap<[u8; 32], Vec<oneshot::Sender<Answered>>>,
    /// Clients in `confidential`.
    pub confidential_count: usize,
    /// Opened plaintexts waiting for room in the plain atomic broadcast.
    pub opened: VecDeque<Vec<u8>>,
    /// Where waiting clients are handed over to the coordinator.
    pub registrations: mpsc::Sender<Register>,
    /// The highest round of a fenced message handed to the sender.
    pub max_round_emitted: Option<u64>,
    /// The same for the ordering rounds of secure causal atomic broadcast.
    pub scabc_max_round_emitted: Option<u64>,
    /// Set when the node starts stopping: drain (see the module documentation).
    pub drain: watch::Receiver<bool>,
    /// Set once drained.
    pub drained: watch::Sender<bool>,
    /// Draining now.
    pub draining: bool,
    /// When a message of a round not delivered here last came.
    pub open_round_seen: Option<Instant>,
    /// The next round to report to the executor (rounds are reported even when empty).
    pub reported_round: u64,
    /// The next position (the log height atomic broadcast reached).
    pub positions: u64,
    pub incoming: mpsc::Receiver<Incoming>,
    pub submissions: mpsc::Receiver<Submission>,
    pub resume: watch::Receiver<Option<ResumePoint>>,
    pub catch_up: watch::Receiver<u64>,
    pub shutdown: watch::Receiver<bool>,
    pub outbound: mpsc::Sender<Vec<Outbound>>,
    pub execution: mpsc::Sender<ExecInput>,
    pub coordinator: mpsc::Sender<(ServerId, NodeMessage)>,
    pub metrics: Arc<Metrics>,
    pub loopback: VecDeque<Message>,
    /// Peers each client request is forwarded to (besides every peer while silent).
    pub forward_peers: usize,
}

/// One atomic broadcast whose rounds are fenced, with what the task knows of its own part in it.
struct RoundSpace<'a> {
    space: FenceSpace,
    abc: &'a Abc,
    /// Silent for rounds up to this one.
    silent_through: Option<u64>,
    /// The last round this server sent a message in.
    sent: Option<u64>,
}

/// A step of one of the protocols.
enum Stepped {
    Plain(Step<Delivered>),
    Optimistic(Step<oabc::Delivered>),
    Confidential(Step<scabc::Delivered>),
}

impl ProtocolTask {
    pub(crate) async fn run(mut self) {
        info!(
            server = %self.party.id,
            round = self.reported_round,
            height = self.positions,
            scabc_round = self.scabc.abc().round(),
            scabc_height = self.scabc.abc().delivered_count(),
            silent_through = ?self.silent_through,
            scabc_silent_through = ?self.scabc_silent_through,
            "protocol task started"
        );
        loop {
            // The clock this server proposes with its next batch; the round's time is the
            // median over the round's batches, so a wrong clock here cannot decide it.
            let now = unix_time_ms();
            match &mut self.orderer {
                Orderer::Randomized(abc) => abc.set_time(now),
                Orderer::Optimistic(optimistic) => optimistic.oabc.set_time(now),
            }
            self.scabc.set_time(now);
            if !self.opened.is_empty() && !self.submit_opened().await {
                break;
            }
            let patience_out = self.patience_deadline();
            let order_due = self.order_deadline(now);
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                changed = self.drain.changed(), if !self.draining => {
                    if changed.is_err() || *self.drain.borrow() {
                        self.start_draining();
                    }
                }
                () = tokio::time::sleep(DRAIN_POLL), if self.draining => {}
                () = sleep_until(patience_out), if patience_out.is_some() => {
                    if !self.suspect().await {
                        break;
                    }
                }
                () = sleep_until(order_due), if order_due.is_some() => {
                    if !self.poll_ordering().await {
                        break;
                    }
                }
                changed = self.resume.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let point = self.resume.borrow_and_update().clone();
                    if let Some(point) = point
                        && !self.rebuild(point).await
                    {
                        break;
                    }
                }
                changed = self.catch_up.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let round = *self.catch_up.borrow_and_update();
                    let step = match &mut self.orderer {
                        Orderer::Randomized(abc) => {
                            Stepped::Plain(abc.catch_up_to(&mut self.party, round))
                        }
                        // Rounds of the log are not the optimistic ordering's: it only learns
                        // that it is behind.
                        Orderer::Optimistic(optimistic) if round >= self.reported_round => {
                            Stepped::Optimistic(optimistic.oabc.lagging(&mut self.party))
                        }
                        Orderer::Optimistic(_) => Stepped::Optimistic(Step::new()),
                    };
                    if !self.handle_step(step).await {
                        break;
                    }
                }
                incoming = self.incoming.recv() => {
                    let Some(incoming) = incoming else { break };
                    self.metrics
                        .incoming_queue
                        .store(self.incoming.len() as u64, Ordering::Relaxed);
                    if !self.on_incoming(incoming).await {
                        break;
                    }
                }
                submission = self.submissions.recv() => {
                    let Some(submission) = submission else { break };
                    if !self.on_submission(submission).await {
                        break;
                    }
                }
            }
            self.metrics
                .protocol_round
                .store(self.reported_round, Ordering::Relaxed);
            self.metrics
                .pending_requests
                .store(self.pending() as u64, Ordering::Relaxed);
            if let Orderer::Optimistic(optimistic) = &self.orderer {
                self.metrics
                    .epoch
                    .store(optimistic.oabc.epoch(), Ordering::Relaxed);
            }
            if self.draining && !*self.drained.borrow() && self.is_drained() {
                info!(
                    server = %self.party.id,
                    round = self.reported_round,
                    last_round_sent = ?self.max_round_emitted,
                    "drained: every round this server sent in is delivered"
                );
                let _ = self.drained.send(true);
            }
        }
        debug!(server = %self.party.id, "protocol task stopped");
    }

    fn start_draining(&mut self) {
        self.draining = true;
        self.scabc.set_draining(true);
        info!(
            server = %self.party.id,
            round = self.reported_round,
            last_round_sent = ?self.max_round_emitted,
            pending = self.pending(),
            "draining: no new requests or rounds; finishing the rounds under way"
        );
        match &mut self.orderer {
            Orderer::Randomized(abc) => abc.set_draining(true),
            // No new batch as leader. An epoch it spoke in may stay open: after a restart it is
            // silent there but reports from its stored certificate, so the others (or the
            // whole group, restarted) can still close it.
            Orderer::Optimistic(optimistic) => optimistic.oabc.set_draining(true),
        }
    }

    /// The atomic broadcast whose rounds the `Abc` fence space covers: the ordering itself, or
    /// the optimistic ordering's recovery broadcast.
    fn plain(&self) -> &Abc {
        match &self.orderer {
            Orderer::Randomized(abc) => abc,
            Orderer::Optimistic(optimistic) => optimistic.oabc.recovery(),
        }
    }

    /// Requests pending in the ordering.
    fn pending(&self) -> usize {
        match &self.orderer {
            Orderer::Randomized(abc) => abc.pending(),
            Orderer::Optimistic(optimistic) => optimistic.oabc.pending(),
        }
    }

    /// Hands a request to the ordering.
    fn submit(&mut self, request: Vec<u8>) -> Result<Stepped, AbcError> {
        match &mut self.orderer {
            Orderer::Randomized(abc) => abc.submit(&mut self.party, request).map(Stepped::Plain),
            Orderer::Optimistic(optimistic) => optimistic
                .oabc
                .submit(&mut self.party, request)
                .map(Stepped::Optimistic),
        }
    }

    /// When this server's patience runs out: requests have waited here that long without a
    /// delivery (optimistic ordering only).
    fn patience_deadline(&mut self) -> Option<Instant> {
        let Orderer::Optimistic(optimistic) = &mut self.orderer else {
            return None;
        };
        if !optimistic.oabc.waiting() {
            optimistic.waiting_since = None;
            return None;
        }
        let since = *optimistic.waiting_since.get_or_insert_with(Instant::now);
        Some(since + optimistic.patience)
    }

    /// When the batch the leader's pacing holds back may go (optimistic ordering only); `now`
    /// is the clock the ordering was last given.
    fn order_deadline(&self, now: u64) -> Option<Instant> {
        let Orderer::Optimistic(optimistic) = &self.orderer else {
            return None;
        };
        let due = optimistic.oabc.next_order_at(&self.party)?;
        Some(Instant::now() + Duration::from_millis(due.saturating_sub(now)))
    }

    /// The pacing's time is up: the held-back batch goes.
    async fn poll_ordering(&mut self) -> bool {
        let Orderer::Optimistic(optimistic) = &mut self.orderer else {
            return true;
        };
        optimistic.oabc.set_time(unix_time_ms());
        let step = optimistic.oabc.poll(&mut self.party);
        self.handle_step(Stepped::Optimistic(step)).await
    }

    /// The patience ran out: complain about the leader.
    async fn suspect(&mut self) -> bool {
        let Orderer::Optimistic(optimistic) = &mut self.orderer else {
            return true;
        };
        optimistic.waiting_since = None;
        self.metrics.suspicions.fetch_add(1, Ordering::Relaxed);
        info!(
            server = %self.party.id,
            epoch = optimistic.oabc.epoch(),
            pending = optimistic.oabc.pending(),
            "patience ran out: complaining about the epoch's leader"
        );
        let step = optimistic.oabc.suspect(&mut self.party);
        self.handle_step(Stepped::Optimistic(step)).await
    }

    /// Every round this server sent a message in is delivered here, in both atomic broadcasts,
    /// and no message of an unfinished round came for [`DRAIN_QUIET`].
    fn is_drained(&self) -> bool {
        self.round_spaces()
            .iter()
            .all(|space| space.sent.is_none_or(|round| round < space.abc.round()))
            && self
                .open_round_seen
                .is_none_or(|seen| seen.elapsed() >= DRAIN_QUIET)
    }

    /// The two atomic broadcasts whose rounds are fenced: the plain one and secure causal atomic
    /// broadcast's ordering.
    fn round_spaces(&self) -> [RoundSpace<'_>; 2] {
        [
            RoundSpace {
                space: FenceSpace::Abc,
                abc: self.plain(),
                silent_through: self.silent_through,
                sent: self.max_round_emitted,
            },
            RoundSpace {
                space: FenceSpace::ScabcRounds,
                abc: self.scabc.abc(),
                silent_through: self.scabc_silent_through,
                sent: self.scabc_max_round_emitted,
            },
        ]
    }

    /// Notes when a message of a round not delivered here arrives (see [`Self::is_drained`]); while
    /// draining, only rounds this server may still join count.
    fn note_open_round(&mut self, message: &Message) {
        let open = self.round_spaces().iter().any(|space| {
            round_of(space.abc.instance(), message).is_some_and(|round| {
                round >= space.abc.round()
                    && space.abc.drain_through().is_none_or(|last| round <= last)
            })
        });
        if open {
            self.open_round_seen = Some(Instant::now());
        }
    }

    /// Moves atomic broadcast forward to a later round after a state transfer
    /// ([`Abc::advance_to`]: what it knows of that round and later ones stays, so replies to
    /// its earlier requests are not taken for faults). Never goes back.
    /// (Secure causal atomic broadcast is not moved: its outcome reaches the service through
    /// the plain log, which the transfer brought.)
    async fn rebuild(&mut self, point: ResumePoint) -> bool {
        if point.next_round <= self.reported_round {
            return true;
        }
        info!(
            server = %self.party.id,
            from = self.reported_round,
            to = point.next_round,
            "the ordering resumes after a state transfer"
        );
        let abc = match &mut self.orderer {
            Orderer::Randomized(abc) => abc,
            Orderer::Optimistic(_) => {
                // The optimistic ordering stays where it is and delivers the transferred
                // positions again from the others' certificates and fetches; the rounds reported
                // from here skip them (see `report_batches`). (A server further behind than
                // the batches its peers retain does not get there: docs/node.md.)
                self.reported_round = point.next_round;
                self.positions = point.height;
                return true;
            }
        };
        // Whatever it may have sent stays fenced, as the send fence rules say for a rebuilt
        // instance (conservative: the kept rounds remember their own messages; the cost is
        // silence in at most the few rounds the old position had reached).
        self.silent_through = self.silent_through.max(self.max_round_emitted);
        self.reported_round = point.next_round;
        self.positions = point.height;
        let step = abc.advance_to(
            &mut self.party,
            point.next_round,
            point.height,
            point.recent,
        );
        self.handle_step(Stepped::Plain(step)).await
    }

    /// The step of the protocol a message is for, or `None` (a fault) when it is for neither.
    fn route(&mut self, from: ServerId, message: &Message) -> Option<Stepped> {
        if message.instance.is_within(&self.instance) {
            Some(match &mut self.orderer {
                Orderer::Randomized(abc) => {
                    Stepped::Plain(abc.handle_message(&mut self.party, from, message))
                }
                Orderer::Optimistic(optimistic) => Stepped::Optimistic(
                    optimistic
                        .oabc
                        .handle_message(&mut self.party, from, message),
                ),
            })
        } else if message.instance.is_within(&self.scabc_instance) {
            Some(Stepped::Confidential(self.scabc.handle_message(
                &mut self.party,
                from,
                message,
            )))
        } else {
            None
        }
    }

    async fn on_incoming(&mut self, incoming: Incoming) -> bool {
        let from = incoming.from;
        let message = match NodeMessage::from_bytes(&incoming.bytes) {
            Ok(message) => message,
            Err(error) => {
                self.metrics.fault(from, "malformed");
                warn!(peer = %from, %error, bytes = incoming.bytes.len(), "undecodable message from a peer");
                return true;
            }
        };
        match message {
            NodeMessage::Protocol(message) => {
                self.note_open_round(&message);
                match self.route(from, &message) {
                    Some(step) => self.handle_step(step).await,
                    None => {
                        self.metrics
                            .fault(from, fault_name(FaultKind::UnexpectedMessage));
                        warn!(peer = %from, instance = %message.instance, "message for an unknown instance");
                        true
                    }
                }
            }
            // A draining server starts nothing new; the peer keeps the request.
            NodeMessage::Forward { .. } if self.draining => true,
            NodeMessage::Forward { request } => {
                match self.submit(request) {
                    Ok(step) => self.handle_step(step).await,
                    Err(AbcError::TooLarge { .. }) => {
                        self.metrics.fault(from, "invalid_value");
                        warn!(peer = %from, "forwarded request beyond the size limit");
                        true
                    }
                    // Back-pressure: the request stays pending at the sender.
                    Err(_) => {
                        self.metrics.refused_full.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                }
            }
            other => self.coordinator.send((from, other)).await.is_ok(),
        }
    }

    /// Sends a client's request to other servers too: to every peer while this server is
    /// silent behind its fence (it cannot propose it itself, and an idle group would never
    /// start the rounds that take it past the fence), else to `forward_peers` peers.
    /// With the optimistic ordering, always to every peer: the leader must get it, and every
    /// honest server must wait for it so that a leader who leaves it out is complained about
    /// by all of them.
    async fn forward(&mut self, request: &[u8]) -> bool {
        let to_all = match &self.orderer {
            Orderer::Randomized(abc) => self
                .silent_through
                .is_some_and(|fence| abc.round() <= fence),
            Orderer::Optimistic(_) => true,
        };
        let n = self.party.servers();
        let me = self.party.id.get();
        let targets: Vec<Target> = if to_all {
            vec![Target::All]
        } else {
            (1..n)
                .take(self.forward_peers)
                .filter_map(|offset| ServerId::new((me - 1 + offset) % n + 1))
                .map(Target::Server)
                .collect()
        };
        if targets.is_empty() {
            return true;
        }
        let bytes = Bytes::from(
            NodeMessage::Forward {
                request: request.to_vec(),
            }
            .to_bytes(),
        );
        let outbound = targets
            .into_iter()
            .map(|to| Outbound {
                to,
                bytes: bytes.clone(),
                fenced: None,
                certified: None,
            })
            .collect();
        self.outbound.send(outbound).await.is_ok()
    }

    async fn on_submission(&mut self, submission: Submission) -> bool {
        let Submission { request, reply } = submission;
        if self.draining {
            let _ = reply.send(Err(SubmitError::Stopping));
            return true;
        }
        match request {
            Request::Plain(request) => self.on_plain(request, reply).await,
            Request::Confidential {
                ciphertext,
                digest,
                waiter,
            } => {
                self.on_confidential(*ciphertext, digest, waiter, reply)
                    .await
            }
        }
    }

    async fn on_plain(
        &mut self,
        request: Vec<u8>,
        reply: oneshot::Sender<Result<(), SubmitError>>,
    ) -> bool {
        let copy = request.clone();
        match self.submit(request) {
            Ok(step) => {
                self.metrics.submitted.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Ok(()));
                self.forward(&copy).await && self.handle_step(step).await
            }
            Err(error) => self.refused(error, reply),
        }
    }

    /// Answers a submission atomic broadcast refused; false when the node cannot go on.
    fn refused(&self, error: AbcError, reply: oneshot::Sender<Result<(), SubmitError>>) -> bool {
        match error {
            AbcError::QueueFull { max } => {
                self.metrics.refused_full.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(SubmitError::Overloaded(format!(
                    "{max} requests are pending"
                ))));
                true
            }
            AbcError::TooLarge { len, max } => {
                let _ = reply.send(Err(SubmitError::TooLarge { len, max }));
                true
            }
            AbcError::InstanceIdTooLong => {
                error!("the atomic-broadcast instance id is too long");
                let _ = reply.send(Err(SubmitError::Stopping));
                false
            }
        }
    }

    /// A client's ciphertext: checked and ordered by secure causal atomic broadcast; the
    /// client waits here until it is opened.
    async fn on_confidential(
        &mut self,
        ciphertext: Ciphertext,
        digest: [u8; 32],
        waiter: oneshot::Sender<Answered>,
        reply: oneshot::Sender<Result<(), SubmitError>>,
    ) -> bool {
        if self.confidential_count >= CONFIDENTIAL_WAITERS_MAX {
            // Clients that gave up leave closed channels behind.
            self.confidential.retain(|_, waiting| {
                waiting.retain(|waiter| !waiter.is_closed());
                !waiting.is_empty()
            });
            self.confidential_count = self.confidential.values().map(Vec::len).sum();
            if self.confidential_count >= CONFIDENTIAL_WAITERS_MAX {
                self.metrics.refused_full.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(SubmitError::Overloaded(format!(
                    "{CONFIDENTIAL_WAITERS_MAX} confidential requests are waiting"
                ))));
                return true;
            }
        }
        match self.scabc.submit(&mut self.party, ciphertext) {
            Ok(step) => {
                self.metrics.submitted.fetch_add(1, Ordering::Relaxed);
                self.confidential.entry(digest).or_default().push(waiter);
                self.confidential_count += 1;
                let _ = reply.send(Ok(()));
                self.handle_step(Stepped::Confidential(step)).await
            }
            Err(ScabcError::InvalidCiphertext) => {
                let _ = reply.send(Err(SubmitError::Invalid(
                    "the ciphertext is not valid for this group's confidential requests".into(),
                )));
                true
            }
            Err(ScabcError::Abc(error)) => self.refused(error, reply),
        }
    }

    /// Secure causal atomic broadcast opened a ciphertext: its waiting clients move to the
    /// coordinator under the plaintext's digest — before the plaintext is submitted, so that
    /// the registration precedes the round that executes it — and the plaintext goes to the
    /// plain atomic broadcast.
    fn on_opened(&mut self, delivered: scabc::Delivered) {
        self.metrics.opened.fetch_add(1, Ordering::Relaxed);
        if let Some(waiting) = self.confidential.remove(&delivered.ciphertext_digest) {
            self.confidential_count = self.confidential_count.saturating_sub(waiting.len());
            let digest: [u8; 32] = Sha256::digest(&delivered.plaintext).into();
            for reply in waiting {
                if reply.is_closed() {
                    continue;
                }
                // A full channel drops the client (the gateway answers 503).
                let _ = self.registrations.try_send(Register { digest, reply });
            }
        }
        if self.opened.len() >= OPENED_QUEUE_MAX {
            self.metrics.refused_full.fetch_add(1, Ordering::Relaxed);
            warn!(
                position = delivered.position,
                "opened plaintext dropped here: the queue to atomic broadcast is full"
            );
            return;
        }
        self.opened.push_back(delivered.plaintext);
    }

    /// Submits opened plaintexts to the plain atomic broadcast while its pending queue has
    /// room.
    async fn submit_opened(&mut self) -> bool {
        while self.pending() < self.config.pending_requests_max {
            let Some(plaintext) = self.opened.pop_front() else {
                break;
            };
            match self.submit(plaintext) {
                Ok(step) => {
                    if !self.handle_step(step).await {
                        return false;
                    }
                }
                Err(AbcError::QueueFull { .. }) => break,
                // Every server finds the same: the plaintext is never ordered.
                Err(error) => {
                    warn!(%error, "an opened plaintext cannot be ordered");
                }
            }
        }
        true
    }

    /// Acts on a step and on everything it loops back, until nothing is left. Returns false when
    /// a downstream task is gone (the node is stopping).
    async fn handle_step(&mut self, step: Stepped) -> bool {
        let mut step = step;
        loop {
            match step {
                Stepped::Plain(step) => {
                    if !self.send_messages(step.messages, &step.faults).await
                        || !self.report_rounds(step.outputs).await
                    {
                        return false;
                    }
                }
                Stepped::Optimistic(step) => {
                    if !self.send_messages(step.messages, &step.faults).await
                        || !self.report_batches(step.outputs).await
                    {
                        return false;
                    }
                }
                Stepped::Confidential(step) => {
                    if !self.send_messages(step.messages, &step.faults).await {
                        return false;
                    }
                    for delivered in step.outputs {
                        self.on_opened(delivered);
                    }
                }
            }
            let Some(message) = self.loopback.pop_front() else {
                return true;
            };
            let me = self.party.id;
            // Own messages are always for one of the two instances.
            step = match self.route(me, &message) {
                Some(next) => next,
                None => Stepped::Plain(Step::new()),
            };
        }
    }

    /// The fence space and round (or position) a message belongs to, `None` when exempt.
    fn fence_of(&self, message: &Message) -> Option<(FenceSpace, u64)> {
        if exempt_from_fence(message) {
            return None;
        }
        if message.instance == self.instance
            && let Body::Oabc(body) = &message.body
        {
            return oabc_epoch(body).map(|epoch| (FenceSpace::OabcEpochs, epoch));
        }
        if let Some(round) = round_of(self.plain().instance(), message) {
            return Some((FenceSpace::Abc, round));
        }
        round_of(self.scabc.abc().instance(), message).map(|round| (FenceSpace::ScabcRounds, round))
    }

    /// Whether a message of `round` (an epoch for [`FenceSpace::OabcEpochs`]) in `space` stays
    /// here: behind the restart fence, or, while draining, beyond the last round this server
    /// may still join.
    fn withheld(&self, space: FenceSpace, round: u64) -> bool {
        if space == FenceSpace::OabcEpochs {
            return matches!(&self.orderer, Orderer::Optimistic(optimistic)
                if optimistic.silent_through.is_some_and(|fence| round <= fence));
        }
        self.round_spaces().iter().any(|fenced| {
            fenced.space == space
                && (fenced.silent_through.is_some_and(|fence| round <= fence)
                    || fenced.abc.drain_through().is_some_and(|last| round > last))
        })
    }

    /// For a COMMIT of the optimistic ordering: the certificate to store before it leaves
    /// (the highest held, which covers it).
    fn certified_for(&self, message: &Message) -> Option<((u64, u64), Vec<u8>)> {
        let Body::Oabc(oabc::Message::Commit { epoch, .. }) = &message.body else {
            return None;
        };
        let Orderer::Optimistic(optimistic) = &self.orderer else {
            return None;
        };
        let certified = optimistic.oabc.certified()?;
        (certified.epoch == *epoch)
            .then(|| ((certified.epoch, certified.seq), certified.to_bytes()))
    }

    async fn send_messages(&mut self, messages: Vec<Outgoing>, faults: &[Fault]) -> bool {
        for fault in faults {
            self.metrics.fault(fault.server, fault_name(fault.kind));
            warn!(peer = %fault.server, instance = %fault.instance, kind = ?fault.kind, "fault");
        }
        let mut outbound = Vec::with_capacity(messages.len());
        for outgoing in messages {
            let fenced = self.fence_of(&outgoing.message);
            // Silent behind the fence; and while draining, beyond the last round this server
            // may still join (what it would say there — an echo, a vote — is not needed to
            // finish the rounds under way, and saying nothing there leaves it unfenced there).
            if fenced.is_some_and(|(space, round)| self.withheld(space, round)) {
                self.metrics.fenced_messages.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match fenced {
                Some((FenceSpace::Abc, round)) => {
                    self.max_round_emitted = self.max_round_emitted.max(Some(round));
                }
                Some((FenceSpace::ScabcRounds, round)) => {
                    self.scabc_max_round_emitted = self.scabc_max_round_emitted.max(Some(round));
                }
                _ => {}
            }
            // A decryption share raises the share fence (not a silence: see the module
            // documentation), which tells this server after a restart which positions to ask
            // replies for.
            let fenced = fenced.or_else(|| {
                share_position(&self.scabc_instance, &outgoing.message)
                    .map(|position| (FenceSpace::ScabcShares, position))
            });
            match outgoing.to {
                Target::All => self.loopback.push_back(outgoing.message.clone()),
                Target::Server(to) if to == self.party.id => {
                    self.loopback.push_back(outgoing.message);
                    continue;
                }
                Target::Server(_) => {}
            }
            let certified = self.certified_for(&outgoing.message);
            let bytes = Bytes::from(NodeMessage::Protocol(outgoing.message).to_bytes());
            outbound.push(Outbound {
                to: outgoing.to,
                bytes,
                fenced,
                certified,
            });
        }
        outbound.is_empty() || self.outbound.send(outbound).await.is_ok()
    }

    /// Hands every round atomic broadcast completed to the executor, empty ones included.
    async fn report_rounds(&mut self, outputs: Vec<Delivered>) -> bool {
        let now = self.plain().round();
        if now <= self.reported_round {
            return true;
        }
        let scabc = ScabcPoint {
            next_round: self.scabc.abc().round(),
            height: self.scabc.abc().delivered_count(),
        };
        let mut outputs = outputs.into_iter().peekable();
        for round in self.reported_round..now {
            let first = self.positions;
            let mut requests = Vec::new();
            // Every request of a round carries the round's time; an empty round needs none.
            let mut time_ms = 0;
            while let Some(delivered) = outputs.next_if(|d| d.round <= round) {
                if delivered.round == round {
                    time_ms = delivered.time_ms;
                    requests.push(delivered.request);
                }
            }
            self.positions += requests.len() as u64;
            let input = ExecInput::Round {
                round,
                first,
                time_ms,
                requests,
                scabc,
                ordering: None,
            };
            if self.execution.send(input).await.is_err() {
                return false;
            }
            self.metrics.execution_queue.store(
                (self.execution.max_capacity() - self.execution.capacity()) as u64,
                Ordering::Relaxed,
            );
        }
        self.reported_round = now;
        true
    }

    /// Hands what the optimistic ordering delivered to the executor, one round of the log per
    /// batch (or per closed epoch's recovery segment and time), and one empty round when an
    /// epoch closes: the same cut at every server. Positions already in the log (delivered
    /// again after a restart or a state transfer) are skipped. The last round carries the
    /// ordering's point, stored with it (where a restart resumes).
    async fn report_batches(&mut self, outputs: Vec<oabc::Delivered>) -> bool {
        let Orderer::Optimistic(optimistic) = &mut self.orderer else {
            return true;
        };
        let epoch_now = optimistic.oabc.epoch();
        let mut closed = optimistic.closed_epochs;
        // (time, requests) per round; `None` for an epoch's close.
        let mut rounds: Vec<Option<(u64, Vec<Vec<u8>>)>> = Vec::new();
        let mut last_key = None;
        for delivered in outputs {
            if delivered.position < self.positions {
                continue;
            }
            while closed < delivered.epoch {
                rounds.push(None);
                closed += 1;
            }
            let key = (delivered.epoch, delivered.seq, delivered.time_ms);
            match rounds.last_mut() {
                Some(Some((_, requests))) if last_key == Some(key) => {
                    requests.push(delivered.request)
                }
                _ => rounds.push(Some((delivered.time_ms, vec![delivered.request]))),
            }
            last_key = Some(key);
        }
        while closed < epoch_now {
            rounds.push(None);
            closed += 1;
        }
        if rounds.is_empty() {
            return true;
        }
        // Something was delivered: patience starts over.
        optimistic.waiting_since = None;
        let point = optimistic.oabc.point().to_bytes();
        let scabc = ScabcPoint {
            next_round: self.scabc.abc().round(),
            height: self.scabc.abc().delivered_count(),
        };
        let count = rounds.len();
        for (index, round) in rounds.into_iter().enumerate() {
            let (time_ms, requests) = match round {
                Some(round) => round,
                None => {
                    optimistic.closed_epochs += 1;
                    (0, Vec::new())
                }
            };
            let first = self.positions;
            self.positions += requests.len() as u64;
            let input = ExecInput::Round {
                round: self.reported_round,
                first,
                time_ms,
                requests,
                scabc,
                ordering: Some(OrderingRecord {
                    epoch: optimistic.closed_epochs,
                    point: (index + 1 == count).then(|| point.clone()),
                }),
            };
            self.reported_round += 1;
            if self.execution.send(input).await.is_err() {
                return false;
            }
        }
        self.metrics.execution_queue.store(
            (self.execution.max_capacity() - self.execution.capacity()) as u64,
            Ordering::Relaxed,
        );
        true
    }
}

/// Waits until `deadline` (forever for `None`; the branch is disabled then anyway).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The epoch of an optimistic-ordering message the epoch fence covers (ORDER, PREPARE,
/// COMMIT); `None` for the others: complaints, fetches, batches and commit certificates cannot
/// contradict anything, and a REPORT after a restart comes from the stored certificate, at
/// least as high as every COMMIT sent before.
fn oabc_epoch(message: &oabc::Message) -> Option<u64> {
    match message {
        oabc::Message::Order { epoch, .. }
        | oabc::Message::Prepare { epoch, .. }
        | oabc::Message::Commit { epoch, .. } => Some(*epoch),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch by the system clock (`0` if it is set before 1970).
fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The atomic-broadcast round a message belongs to (`<id>/r<round>/...`); `None` for the
/// instance's own messages (CATCH-UP, DECIDED).
pub(crate) fn round_of(instance: &InstanceId, message: &Message) -> Option<u64> {
    let label = message.instance.label_below(instance)?;
    canonical_decimal(label.strip_prefix('r')?)
}

/// The position of a decryption share (`<scabc>/d<position>`), `None` for other messages.
fn share_position(scabc: &InstanceId, message: &Message) -> Option<u64> {
    if !matches!(message.body, Body::Scabc(_)) {
        return None;
    }
    let digits = message.instance.label_below(scabc)?.strip_prefix('d')?;
    canonical_decimal(digits)
}

/// A decimal number without leading zeros (the form instance labels use).
fn canonical_decimal(digits: &str) -> Option<u64> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Messages that cannot contradict anything sent before: a fetch of a certified batch body, the
/// body itself (its digest is certified), and atomic broadcast's CATCH-UP / DECIDED (a decision
/// is the same at every honest server).
fn exempt_from_fence(message: &Message) -> bool {
    matches!(
        message.body,
        Body::Cbc(cbc::Message::Request { .. })
            | Body::Cbc(cbc::Message::Body { .. })
            | Body::Abc(_)
    )
}

/// The metrics label of a fault kind.
pub(crate) fn fault_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::InvalidShare => "invalid_share",
        FaultKind::InvalidProof => "invalid_proof",
        FaultKind::Equivocation => "equivocation",
        FaultKind::UnexpectedMessage => "unexpected_message",
        FaultKind::WrongBody => "wrong_body",
        FaultKind::OutOfWindow => "out_of_window",
        FaultKind::Malformed => "malformed",
        FaultKind::InvalidValue => "invalid_value",
    }
}

/// The sender task: raises the durable fence before a message of a new round leaves, then queues
/// messages on the links without ever waiting for a peer (a full peer queue drops the message
/// for that peer and counts it: up to `t` peers may be faulty forever). After [`FENCE_IDLE`]
/// without anything to send, and when it stops, it lowers the stored round fences to the last
/// rounds it really sent in (see the module documentation).
pub(crate) async fn sender_loop(
    mut outbound: mpsc::Receiver<Vec<Outbound>>,
    links: LinksHandle,
    store: Arc<Store>,
    fences: BTreeMap<FenceSpace, u64>,
    metrics: Arc<Metrics>,
    fence_value: Arc<AtomicU64>,
) {
    let mut fences = Fences {
        stored: fences,
        sent: BTreeMap::new(),
        store,
        metrics,
        fence_value,
        certified: None,
    };
    loop {
        let batch = match tokio::time::timeout(FENCE_IDLE, outbound.recv()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(_idle) => {
                if !fences.lower().await {
                    return;
                }
                // Idle until the next batch: nothing more to lower.
                match outbound.recv().await {
                    Some(batch) => batch,
                    None => break,
                }
            }
        };
        for message in batch {
            if let Some((space, round)) = message.fenced
                && !fences.cover(space, round).await
            {
                return;
            }
            if let Some((at, certified)) = message.certified
                && !fences.store_certified(at, certified).await
            {
                return;
            }
            let refused = match message.to {
                Target::All => links.broadcast(message.bytes),
                Target::Server(to) => links
                    .try_send(to, message.bytes)
                    .err()
                    .into_iter()
                    .collect(),
            };
            for error in refused {
                match error {
                    SendError::Full(peer) => {
                        fences
                            .metrics
                            .link_queue_full
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "peer queue full; message dropped for it");
                    }
                    SendError::Shutdown => {
                        fences.lower().await;
                        return;
                    }
                    other => debug!(error = %other, "message not sent"),
                }
            }
        }
    }
    fences.lower().await;
}

/// The sender task's durable fences: what is stored, and the rounds really sent in.
struct Fences {
    /// Per fence space, the stored fence.
    stored: BTreeMap<FenceSpace, u64>,
    /// Per fence space, the highest round (or position) of a message this process sent.
    sent: BTreeMap<FenceSpace, u64>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    fence_value: Arc<AtomicU64>,
    /// `(epoch, seq)` of the optimistic ordering's stored prepare certificate.
    certified: Option<(u64, u64)>,
}

impl Fences {
    /// Stores the optimistic ordering's prepare certificate at `at = (epoch, seq)` unless one at
    /// least as high is stored. False when the store cannot record it: sending stops.
    async fn store_certified(&mut self, at: (u64, u64), certified: Vec<u8>) -> bool {
        if self.certified.is_some_and(|stored| stored >= at) {
            return true;
        }
        let writer = self.store.clone();
        match tokio::task::spawn_blocking(move || writer.set_oabc_certified(&certified)).await {
            Ok(Ok(())) => {
                self.certified = Some(at);
                true
            }
            Ok(Err(error)) => {
                error!(%error, "cannot record the prepare certificate; sending stops");
                false
            }
            Err(error) => {
                error!(%error, "the certificate writer failed; sending stops");
                false
            }
        }
    }

    /// Makes the stored fence of `space` cover `round` before a message of it leaves (raised by
    /// [`FENCE_STRIDE`] beyond it). False when the store cannot record it: sending stops.
    async fn cover(&mut self, space: FenceSpace, round: u64) -> bool {
        self.sent
            .entry(space)
            .and_modify(|sent| *sent = (*sent).max(round))
            .or_insert(round);
        if self.stored.get(&space).is_some_and(|fence| round <= *fence) {
            return true;
        }
        // Epochs change rarely and a restarted server is silent in the whole fenced epoch:
        // no stride there.
        let stride = if space == FenceSpace::OabcEpochs {
            0
        } else {
            FENCE_STRIDE
        };
        self.write(space, round.saturating_add(stride)).await
    }

    /// Lowers the stored round fences to the last rounds this process sent in (never below a
    /// round sent: the fence still covers every message that left). The share fence is not a
    /// silence and stays. False when the store cannot record it.
    async fn lower(&mut self) -> bool {
        for space in [FenceSpace::Abc, FenceSpace::ScabcRounds] {
            let (Some(&sent), Some(&stored)) = (self.sent.get(&space), self.stored.get(&space))
            else {
                continue;
            };
            if sent < stored && !self.write(space, sent).await {
                return false;
            }
        }
        true
    }

    async fn write(&mut self, space: FenceSpace, fence: u64) -> bool {
        let writer = self.store.clone();
        match tokio::task::spawn_blocking(move || writer.set_fence_of(space, fence)).await {
            Ok(Ok(())) => {
                self.stored.insert(space, fence);
                if space == FenceSpace::Abc {
                    self.fence_value.store(fence, Ordering::Relaxed);
                    self.metrics.fence.store(fence, Ordering::Relaxed);
                }
                true
            }
            Ok(Err(error)) => {
                error!(%error, "cannot record the send fence; sending stops");
                false
            }
            Err(error) => {
                error!(%error, "the fence writer failed; sending stops");
                false
            }
        }
    }
}
