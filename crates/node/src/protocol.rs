//! The protocol task: owns the [`Party`] and the [`Abc`] state machine, and never blocks on IO or
//! on RSA. It decodes what the links deliver, feeds protocol messages and client submissions to
//! atomic broadcast, loops its own broadcasts back, hands outgoing messages to the sender task,
//! delivered rounds to the executor, and every other node message to the coordinator.
//!
//! **The send fence.** Before a message of round `r` leaves, the sender task durably records a
//! fence `≥ r`. After a restart (or when the instance is rebuilt after a state transfer) the task
//! is *silent* for every round up to the fence: it neither sends nor loops back its own messages
//! of those rounds, so it can never contradict a vote it sent before it stopped. It still sends
//! what cannot contradict anything — a request for a certified batch body, a body it holds, and
//! atomic broadcast's own CATCH-UP/DECIDED — and it still delivers those rounds from the others'
//! decisions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_net::{Incoming, LinksHandle, SendError};
use sintra_protocols::abc::{Abc, AbcConfig, AbcError, Delivered};
use sintra_protocols::{Body, FaultKind, InstanceId, Message, Party, Step, Target, cbc};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::executor::ExecInput;
use crate::message::NodeMessage;
use crate::metrics::Metrics;
use crate::store::Store;

/// A client request on its way to atomic broadcast.
#[derive(Debug)]
pub(crate) struct Submission {
    /// The encoded service request.
    pub request: Vec<u8>,
    /// Whether atomic broadcast took it.
    pub reply: oneshot::Sender<Result<(), SubmitError>>,
}

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Back-pressure: the pending queue (or the channel to it) is full.
    #[error("the server is overloaded: {0}")]
    Overloaded(String),
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
    /// The round whose fence must cover it (`None`: exempt from the fence).
    pub fenced_round: Option<u64>,
}

/// Outgoing messages the sender task may hold (each a batch from one step).
pub(crate) const OUTBOUND_QUEUE_MAX: usize = 1024;

/// Rounds the durable fence is raised beyond the round that needs it, so that a store write is
/// needed once every few rounds rather than for every round.
pub(crate) const FENCE_STRIDE: u64 = 8;

pub(crate) struct ProtocolTask {
    pub party: Party,
    pub abc: Abc,
    pub config: AbcConfig,
    pub instance: InstanceId,
    /// Silent (see the module documentation) for rounds up to this one.
    pub silent_through: Option<u64>,
    /// The highest round of a fenced message handed to the sender.
    pub max_round_emitted: Option<u64>,
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

impl ProtocolTask {
    pub(crate) async fn run(mut self) {
        info!(
            server = %self.party.id,
            round = self.abc.round(),
            height = self.positions,
            silent_through = ?self.silent_through,
            "protocol task started"
        );
        loop {
            // The clock this server proposes with its next batch; the round's time is the
            // median over the round's batches, so a wrong clock here cannot decide it.
            self.abc.set_time(unix_time_ms());
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
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
                    let step = self.abc.catch_up_to(&mut self.party, round);
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
                .store(self.abc.round(), Ordering::Relaxed);
            self.metrics
                .pending_requests
                .store(self.abc.pending() as u64, Ordering::Relaxed);
        }
        debug!(server = %self.party.id, "protocol task stopped");
    }

    /// Rebuilds atomic broadcast at a later round after a state transfer. Never goes back.
    async fn rebuild(&mut self, point: ResumePoint) -> bool {
        if point.next_round <= self.abc.round() {
            return true;
        }
        info!(
            server = %self.party.id,
            from = self.abc.round(),
            to = point.next_round,
            "atomic broadcast resumes after a state transfer"
        );
        // Whatever the old instance may have sent stays fenced for the new one.
        self.silent_through = self.silent_through.max(self.max_round_emitted);
        self.abc = Abc::resume(
            self.instance.clone(),
            self.config,
            point.next_round,
            point.height,
            point.recent,
        );
        self.reported_round = point.next_round;
        self.positions = point.height;
        self.loopback.clear();
        true
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
                if !message.instance.is_within(&self.instance) {
                    self.metrics
                        .fault(from, fault_name(FaultKind::UnexpectedMessage));
                    warn!(peer = %from, instance = %message.instance, "message for an unknown instance");
                    return true;
                }
                let step = self.abc.handle_message(&mut self.party, from, &message);
                self.handle_step(step).await
            }
            NodeMessage::Forward { request } => {
                match self.abc.submit(&mut self.party, request) {
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
    async fn forward(&mut self, request: &[u8]) -> bool {
        let silent = self
            .silent_through
            .is_some_and(|fence| self.abc.round() <= fence);
        let n = self.party.servers();
        let me = self.party.id.get();
        let targets: Vec<Target> = if silent {
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
                fenced_round: None,
            })
            .collect();
        self.outbound.send(outbound).await.is_ok()
    }

    async fn on_submission(&mut self, submission: Submission) -> bool {
        let Submission { request, reply } = submission;
        let copy = request.clone();
        match self.abc.submit(&mut self.party, request) {
            Ok(step) => {
                self.metrics.submitted.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Ok(()));
                self.forward(&copy).await && self.handle_step(step).await
            }
            Err(AbcError::QueueFull { max }) => {
                self.metrics.refused_full.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(SubmitError::Overloaded(format!(
                    "{max} requests are pending"
                ))));
                true
            }
            Err(AbcError::TooLarge { len, max }) => {
                let _ = reply.send(Err(SubmitError::TooLarge { len, max }));
                true
            }
            Err(AbcError::InstanceIdTooLong) => {
                error!("the atomic-broadcast instance id is too long");
                let _ = reply.send(Err(SubmitError::Stopping));
                false
            }
        }
    }

    /// Acts on a step and on everything it loops back, until nothing is left. Returns false when
    /// a downstream task is gone (the node is stopping).
    async fn handle_step(&mut self, step: Step<Delivered>) -> bool {
        let mut step = step;
        loop {
            if !self.apply(step).await {
                return false;
            }
            let Some(message) = self.loopback.pop_front() else {
                return true;
            };
            let me = self.party.id;
            step = self.abc.handle_message(&mut self.party, me, &message);
        }
    }

    async fn apply(&mut self, step: Step<Delivered>) -> bool {
        for fault in &step.faults {
            self.metrics.fault(fault.server, fault_name(fault.kind));
            warn!(peer = %fault.server, instance = %fault.instance, kind = ?fault.kind, "fault");
        }
        let mut outbound = Vec::with_capacity(step.messages.len());
        for outgoing in step.messages {
            let round = round_of(&self.instance, &outgoing.message);
            let exempt = exempt_from_fence(&outgoing.message);
            if let Some(round) = round
                && !exempt
                && self.silent_through.is_some_and(|fence| round <= fence)
            {
                self.metrics.fenced_messages.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let fenced_round = if exempt { None } else { round };
            if fenced_round.is_some() {
                self.max_round_emitted = self.max_round_emitted.max(fenced_round);
            }
            match outgoing.to {
                Target::All => self.loopback.push_back(outgoing.message.clone()),
                Target::Server(to) if to == self.party.id => {
                    self.loopback.push_back(outgoing.message);
                    continue;
                }
                Target::Server(_) => {}
            }
            let bytes = Bytes::from(NodeMessage::Protocol(outgoing.message).to_bytes());
            outbound.push(Outbound {
                to: outgoing.to,
                bytes,
                fenced_round,
            });
        }
        if !outbound.is_empty() && self.outbound.send(outbound).await.is_err() {
            return false;
        }
        self.report_rounds(step.outputs).await
    }

    /// Hands every round atomic broadcast completed to the executor, empty ones included.
    async fn report_rounds(&mut self, outputs: Vec<Delivered>) -> bool {
        let now = self.abc.round();
        if now <= self.reported_round {
            return true;
        }
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
    let digits = label.strip_prefix('r')?;
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
/// for that peer and counts it: up to `t` peers may be faulty forever).
pub(crate) async fn sender_loop(
    mut outbound: mpsc::Receiver<Vec<Outbound>>,
    links: LinksHandle,
    store: Arc<Store>,
    fence: Option<u64>,
    metrics: Arc<Metrics>,
    fence_value: Arc<AtomicU64>,
) {
    let mut fence = fence;
    while let Some(batch) = outbound.recv().await {
        for message in batch {
            if let Some(round) = message.fenced_round
                && fence.is_none_or(|fence| round > fence)
            {
                let raised = round.saturating_add(FENCE_STRIDE);
                let writer = store.clone();
                let written = tokio::task::spawn_blocking(move || writer.set_fence(raised)).await;
                match written {
                    Ok(Ok(())) => {
                        fence = Some(raised);
                        fence_value.store(raised, Ordering::Relaxed);
                        metrics.fence.store(raised, Ordering::Relaxed);
                    }
                    Ok(Err(error)) => {
                        error!(%error, "cannot record the send fence; sending stops");
                        return;
                    }
                    Err(error) => {
                        error!(%error, "the fence writer failed; sending stops");
                        return;
                    }
                }
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
                        metrics.link_queue_full.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "peer queue full; message dropped for it");
                    }
                    SendError::Shutdown => return,
                    other => debug!(error = %other, "message not sent"),
                }
            }
        }
    }
}
