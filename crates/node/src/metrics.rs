//! Counters the node keeps for `/metrics` (Prometheus text format) and `/health`. All are plain
//! atomics or small maps behind a mutex, updated by whichever task observes the event.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sintra_crypto::ServerId;
use sintra_net::LinkMetrics;

/// Faults per peer are counted for at most this many distinct `(peer, kind)` pairs (kinds are a
/// small fixed set, peers at most `n`; the bound only guards against a bug).
pub const FAULT_SERIES_MAX: usize = 4096;

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests delivered and executed (the log height).
    pub height: AtomicU64,
    /// The next round to execute.
    pub next_round: AtomicU64,
    /// Rounds executed by this process (including empty ones).
    pub rounds_executed: AtomicU64,
    /// The round atomic broadcast delivers next.
    pub protocol_round: AtomicU64,
    /// Requests pending in atomic broadcast.
    pub pending_requests: AtomicU64,
    /// Client requests submitted to atomic broadcast.
    pub submitted: AtomicU64,
    /// Client requests refused because the queue was full.
    pub refused_full: AtomicU64,
    /// Confidential requests opened here (secure causal atomic broadcast delivered them).
    pub opened: AtomicU64,
    /// Signed answers handed to clients.
    pub answers_signed: AtomicU64,
    /// Answer batches whose signature was combined here.
    pub signatures_combined: AtomicU64,
    /// RSA shares this server signed (answer batches and items on duty or on demand).
    pub shares_signed: AtomicU64,
    /// Items for which a combiner here asked every peer for its share (a server on duty was
    /// silent, skipped the item or sent a bad share).
    pub share_escalations: AtomicU64,
    /// Checkpoint certificates formed or accepted.
    pub checkpoints: AtomicU64,
    /// Rounds applied by state transfer.
    pub rounds_transferred: AtomicU64,
    /// Messages not queued on a link because the peer's queue was full.
    pub link_queue_full: AtomicU64,
    /// Messages for rounds at or below the fence that were not sent after a restart.
    pub fenced_messages: AtomicU64,
    /// Optimistic ordering: complaints this server made because its patience ran out.
    pub suspicions: AtomicU64,
    /// Optimistic ordering: the epoch this server is in.
    pub epoch: AtomicU64,
    /// The durable send fence.
    pub fence: AtomicU64,
    /// Depth of the channel from the links to the protocol task (sampled).
    pub incoming_queue: AtomicU64,
    /// Depth of the channel from the protocol task to the executor (sampled).
    pub execution_queue: AtomicU64,
    /// Clients waiting for an answer.
    pub waiting_clients: AtomicU64,
    /// A verified checkpoint certificate shows this server at least `ROUNDS_RETAINED` rounds
    /// behind: it catches up by state transfer, and its gateway sends clients elsewhere (`503`).
    pub catching_up: AtomicBool,
    faults: Mutex<BTreeMap<(u16, &'static str), u64>>,
    /// The log height and the chained log digest at that height, read together so that `/health`
    /// never pairs a height with another height's digest.
    log_head: Mutex<(u64, [u8; 32])>,
}

impl Metrics {
    /// Publishes the log's height and chained digest (after each executed round).
    pub fn set_log_head(&self, height: u64, log_digest: [u8; 32]) {
        if let Ok(mut head) = self.log_head.lock() {
            *head = (height, log_digest);
        }
        self.height.store(height, Ordering::Relaxed);
    }

    /// The log's height and chained digest, as last published.
    pub fn log_head(&self) -> (u64, [u8; 32]) {
        self.log_head
            .lock()
            .map(|head| *head)
            .unwrap_or((self.height.load(Ordering::Relaxed), [0; 32]))
    }

    /// Records a fault of `peer`.
    pub fn fault(&self, peer: ServerId, kind: &'static str) {
        if let Ok(mut faults) = self.faults.lock() {
            let key = (peer.get(), kind);
            if faults.len() < FAULT_SERIES_MAX || faults.contains_key(&key) {
                *faults.entry(key).or_default() += 1;
            }
        }
    }

    /// Faults recorded against `peer`, all kinds.
    pub fn faults_of(&self, peer: ServerId) -> u64 {
        self.faults
            .lock()
            .map(|faults| {
                faults
                    .iter()
                    .filter(|((id, _), _)| *id == peer.get())
                    .map(|(_, count)| *count)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Faults recorded, per `(peer, kind)`.
    pub fn faults(&self) -> BTreeMap<(u16, &'static str), u64> {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, server: ServerId, links: &LinkMetrics) -> String {
        let mut out = String::new();
        let id = server.get();
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP sintra_{name} {help}");
            let _ = writeln!(out, "# TYPE sintra_{name} {kind}");
            let _ = writeln!(out, "sintra_{name}{{server=\"{id}\"}} {value}");
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        gauge(
            "log_height",
            "Requests in the log (delivered and executed).",
            "gauge",
            load(&self.height),
        );
        gauge(
            "delivered_requests_total",
            "Requests delivered and executed.",
            "counter",
            load(&self.height),
        );
        gauge(
            "next_round",
            "The next round to execute.",
            "gauge",
            load(&self.next_round),
        );
        gauge(
            "rounds_executed_total",
            "Rounds executed by this process.",
            "counter",
            load(&self.rounds_executed),
        );
        gauge(
            "protocol_round",
            "The round atomic broadcast delivers next.",
            "gauge",
            load(&self.protocol_round),
        );
        gauge(
            "pending_requests",
            "Requests pending in atomic broadcast.",
            "gauge",
            load(&self.pending_requests),
        );
        gauge(
            "submitted_total",
            "Client requests submitted.",
            "counter",
            load(&self.submitted),
        );
        gauge(
            "refused_queue_full_total",
            "Client requests refused: queue full.",
            "counter",
            load(&self.refused_full),
        );
        gauge(
            "confidential_opened_total",
            "Confidential requests ordered and opened.",
            "counter",
            load(&self.opened),
        );
        gauge(
            "answers_signed_total",
            "Signed answers handed to clients.",
            "counter",
            load(&self.answers_signed),
        );
        gauge(
            "signatures_combined_total",
            "Answer-batch signatures combined here.",
            "counter",
            load(&self.signatures_combined),
        );
        gauge(
            "answer_shares_signed_total",
            "RSA answer shares signed here (on duty or on demand).",
            "counter",
            load(&self.shares_signed),
        );
        gauge(
            "answer_share_escalations_total",
            "Items whose shares were asked from every peer (a server on duty failed to deliver).",
            "counter",
            load(&self.share_escalations),
        );
        gauge(
            "checkpoints_total",
            "Checkpoint certificates formed or accepted.",
            "counter",
            load(&self.checkpoints),
        );
        gauge(
            "rounds_transferred_total",
            "Rounds applied by state transfer.",
            "counter",
            load(&self.rounds_transferred),
        );
        gauge(
            "link_queue_full_total",
            "Messages dropped because a peer's queue was full.",
            "counter",
            load(&self.link_queue_full),
        );
        gauge(
            "ordering_epoch",
            "Optimistic ordering: the epoch this server is in.",
            "gauge",
            load(&self.epoch),
        );
        gauge(
            "suspicions_total",
            "Optimistic ordering: complaints about the leader after the patience ran out.",
            "counter",
            load(&self.suspicions),
        );
        gauge(
            "fenced_messages_total",
            "Messages withheld by the send fence after a restart.",
            "counter",
            load(&self.fenced_messages),
        );
        gauge(
            "send_fence",
            "The durable send fence (round).",
            "gauge",
            load(&self.fence),
        );
        gauge(
            "incoming_queue_depth",
            "Messages from the links waiting for the protocol task.",
            "gauge",
            load(&self.incoming_queue),
        );
        gauge(
            "execution_queue_depth",
            "Delivered rounds waiting for the executor.",
            "gauge",
            load(&self.execution_queue),
        );
        gauge(
            "waiting_clients",
            "Clients waiting for a signed answer.",
            "gauge",
            load(&self.waiting_clients),
        );
        gauge(
            "catching_up",
            "1 while a certificate shows this server too far behind to answer clients.",
            "gauge",
            u64::from(self.catching_up.load(Ordering::Relaxed)),
        );
        gauge(
            "link_frames_sent_total",
            "Link frames sent.",
            "counter",
            links.frames_sent,
        );
        gauge(
            "link_frames_resent_total",
            "Link frames resent after reconnects.",
            "counter",
            links.frames_resent,
        );
        gauge(
            "link_frames_received_total",
            "Link frames received.",
            "counter",
            links.frames_received,
        );
        gauge(
            "link_duplicates_dropped_total",
            "Duplicate link frames dropped.",
            "counter",
            links.duplicates_dropped,
        );
        gauge(
            "link_frames_dropped_stale_total",
            "Link messages for a peer's previous process, dropped when it restarted.",
            "counter",
            links.frames_dropped_stale,
        );
        gauge(
            "link_handshakes_refused_total",
            "Inbound handshakes refused.",
            "counter",
            links.handshakes_refused,
        );
        gauge(
            "link_connections_failed_total",
            "Link connections that ended with an error.",
            "counter",
            links.connections_failed,
        );
        let _ = writeln!(
            out,
            "# HELP sintra_faults_total Faults recorded against peers."
        );
        let _ = writeln!(out, "# TYPE sintra_faults_total counter");
        for ((peer, kind), count) in self.faults() {
            let _ = writeln!(
                out,
                "sintra_faults_total{{server=\"{id}\",peer=\"{peer}\",kind=\"{kind}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sintra_peer_connected Whether the outbound link to a peer is up."
        );
        let _ = writeln!(out, "# TYPE sintra_peer_connected gauge");
        for peer in &links.peers {
            let Some(peer_id) = peer.id.map(ServerId::get) else {
                continue;
            };
            let _ = writeln!(
                out,
                "sintra_peer_connected{{server=\"{id}\",peer=\"{peer_id}\"}} {}",
                u8::from(peer.connected)
            );
            let _ = writeln!(
                out,
                "sintra_peer_queue_depth{{server=\"{id}\",peer=\"{peer_id}\"}} {}",
                peer.queued
            );
            let _ = writeln!(
                out,
                "sintra_peer_control_queue_depth{{server=\"{id}\",peer=\"{peer_id}\"}} {}",
                peer.control_queued
            );
            let _ = writeln!(
                out,
                "sintra_peer_unacked_frames{{server=\"{id}\",peer=\"{peer_id}\"}} {}",
                peer.unacked_frames
            );
        }
        out
    }
}
