//! The running links of one server: a listener for inbound connections (peers' messages to us) and
//! one dialing task per peer (our messages to it). Each direction of a server pair is its own TCP
//! connection, so a sender owns its sequence numbers and resend buffer and a receiver owns its
//! delivery counter, and no tie-break between simultaneous dials is needed.
//!
//! Each peer has two send lanes: the *bulk* queue and a small *control* lane. The dialing task
//! takes from the control lane first, so a few control messages (a replica's catch-up requests
//! and replies) are never stuck behind, or refused because of, a backlog of bulk messages.
//! Both lanes share the connection's sequence numbers and resend buffer: every message is still
//! delivered exactly once, and in sending order *within its lane*.
//!
//! A peer that restarted is a new process: both frames that open a connection name the process
//! that sends them (`Resume` from the sender, `Welcome` from the receiver; a random nonce per
//! start), so the first connection in either direction shows a new process. Then what was queued
//! or left unacknowledged for the previous process is dropped (counted in
//! [`LinkMetrics::frames_dropped_stale`]) and the link to it resumes with a new session, so the
//! new process gets only what was sent after we saw it come back — not a backlog of messages for
//! a past it no longer has. A reply to anything the new process sent is queued after that: its
//! connection to us shows it before it delivers anything. A peer that merely reconnects (same
//! process) loses nothing.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rand_core::RngCore;
use sintra_crypto::ServerId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::handshake::{self, Refusal};
use crate::wire::{Frame, FrameReader, FrameWriter, WRITER_FLUSH_BYTES};
use crate::{
    LinkError, LinkKeypair, LinkLimits, LinkPublicKey, LinksConfig, MESSAGE_BYTES_MAX, PeerConfig,
    SendError, StartError,
};

/// A message received from a peer, in the order the peer sent it, exactly once per sender incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The authenticated sender.
    pub from: ServerId,
    /// The message.
    pub bytes: Bytes,
}

/// Something that happened to a connection, for operators and tests. Events are broadcast on a
/// bounded channel; a slow subscriber loses the oldest ones, never blocks the links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A handshake with `peer` succeeded; `outbound` when we dialed.
    Connected {
        /// The peer.
        peer: ServerId,
        /// Whether we dialed.
        outbound: bool,
    },
    /// An inbound handshake was refused; the connection was closed.
    HandshakeRefused {
        /// Remote socket address.
        addr: SocketAddr,
        /// The id the remote claimed, if its first message decrypted.
        claimed: Option<ServerId>,
        /// Why.
        reason: String,
    },
    /// An established connection ended; it will be re-established (by the dialing side).
    Disconnected {
        /// The peer.
        peer: ServerId,
        /// Whether we dialed.
        outbound: bool,
        /// Why.
        reason: String,
    },
}

/// Counters over the life of the links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkMetrics {
    /// Data frames written for the first time.
    pub frames_sent: u64,
    /// Data frames written again after a reconnect.
    pub frames_resent: u64,
    /// Messages delivered to the replica.
    pub frames_received: u64,
    /// Data frames received again and dropped.
    pub duplicates_dropped: u64,
    /// Messages queued or unacknowledged for a peer's previous incarnation, dropped when the
    /// peer came back as a new process.
    pub frames_dropped_stale: u64,
    /// Inbound handshakes refused (bad key, unknown id, garbage, timeout).
    pub handshakes_refused: u64,
    /// Connections (either direction) that ended with an error.
    pub connections_failed: u64,
    /// Per peer: queue depth and resend buffer.
    pub peers: Vec<PeerMetrics>,
}

/// The state of the link to one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetrics {
    /// The peer.
    pub id: Option<ServerId>,
    /// Messages queued, not yet sent.
    pub queued: usize,
    /// Messages queued in the control lane, not yet sent.
    pub control_queued: usize,
    /// Messages sent, not yet acknowledged.
    pub unacked_frames: usize,
    /// Bytes sent, not yet acknowledged.
    pub unacked_bytes: usize,
    /// Whether the outbound connection is up.
    pub connected: bool,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    frames_resent: AtomicU64,
    frames_received: AtomicU64,
    duplicates_dropped: AtomicU64,
    frames_dropped_stale: AtomicU64,
    handshakes_refused: AtomicU64,
    connections_failed: AtomicU64,
}

#[derive(Default)]
struct PeerStats {
    unacked_frames: AtomicUsize,
    unacked_bytes: AtomicUsize,
    connected: AtomicBool,
}

/// What the receiver remembers about one sender: its incarnation and the last delivered sequence number.
#[derive(Default)]
struct ReceiveState {
    session: Option<u64>,
    delivered: u64,
}

impl ReceiveState {
    /// Starts serving a connection from a sender that still holds everything from `base` on.
    fn resume(&mut self, session: u64, base: u64) -> Result<u64, LinkError> {
        if base == 0 {
            return Err(LinkError::Protocol("sequence numbers start at 1"));
        }
        if self.session == Some(session) {
            if base > self.delivered + 1 {
                return Err(LinkError::Protocol("sender dropped undelivered frames"));
            }
        } else {
            // A new sender incarnation, we restarted, or the sender saw us restart and dropped
            // what it held for our previous process (it then resumes with a new session): take
            // up the sequence where the sender holds it.
            self.session = Some(session);
            self.delivered = base - 1;
        }
        Ok(self.delivered)
    }
}

/// A queued message with the incarnation of the peer it was queued for.
type Queued = (u64, Bytes);

struct Peer {
    config: PeerConfig,
    queue: mpsc::Sender<Queued>,
    /// The control lane, sent before `queue`.
    control: mpsc::Sender<Queued>,
    /// The peer's process nonce, as last seen in a `Resume` or `Welcome`.
    process: Mutex<Option<u64>>,
    /// Restarts of the peer seen (a new process nonce); messages queued for an older
    /// incarnation are dropped.
    incarnation: AtomicU64,
    /// Woken when the peer connects to us: it is up, so the dialing task stops waiting out its
    /// reconnect delay.
    reachable: Arc<Notify>,
    stats: Arc<PeerStats>,
    receive: Mutex<ReceiveState>,
    /// Bumped to end the current connections with this peer (a newer inbound one, or `disconnect`).
    inbound_generation: watch::Sender<u64>,
    outbound_generation: watch::Sender<u64>,
}

struct Shared {
    me: ServerId,
    session: u64,
    keypair: LinkKeypair,
    limits: LinkLimits,
    pinned: HashMap<ServerId, LinkPublicKey>,
    peers: HashMap<ServerId, Peer>,
    incoming: mpsc::Sender<Incoming>,
    counters: Counters,
    events: broadcast::Sender<LinkEvent>,
    local_addr: SocketAddr,
}

impl Shared {
    fn event(&self, event: LinkEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }
}

impl Peer {
    /// Records the peer's process nonce from a `Resume` or `Welcome`; a nonce other than the last
    /// one seen is a restart: the incarnation is counted up (once, whichever direction sees it
    /// first). Returns whether it was a restart.
    fn observe_process(&self, process: u64) -> bool {
        let mut known = self
            .process
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let restarted = known.is_some_and(|known| known != process);
        if restarted {
            self.incarnation.fetch_add(1, Ordering::AcqRel);
        }
        *known = Some(process);
        restarted
    }
}

/// Aborts the tasks when the last handle goes away, so links never outlive their owner.
struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Ok(tasks) = self.0.get_mut() {
            tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

/// Entry point of the links layer.
pub struct Links;

impl Links {
    /// Binds the listening socket, starts dialing every peer, and returns the handle and the
    /// channel of received messages. Must be called inside a tokio runtime.
    pub async fn start(
        config: LinksConfig,
    ) -> Result<(LinksHandle, mpsc::Receiver<Incoming>), StartError> {
        let LinksConfig {
            me,
            listen_addr,
            peers,
            keypair,
            limits,
        } = config;
        if limits.unacked_frames_max == 0
            || limits.queue_frames_max == 0
            || limits.control_frames_max == 0
            || limits.incoming_frames_max == 0
        {
            return Err(StartError::Config("queue limits must be positive".into()));
        }
        if limits.frame_bytes_max < MESSAGE_BYTES_MAX + crate::wire::DATA_HEADER_BYTES {
            return Err(StartError::Config(
                "frame_bytes_max is below the largest message".into(),
            ));
        }
        let listener = TcpListener::bind(listen_addr)
            .await
            .map_err(StartError::Bind)?;
        let local_addr = listener.local_addr().map_err(StartError::Bind)?;
        let (incoming_tx, incoming_rx) = mpsc::channel(limits.incoming_frames_max);
        let mut peer_map = HashMap::new();
        let mut queues = Vec::new();
        for peer in peers.into_iter().filter(|peer| peer.id != me) {
            let (queue, queue_rx) = mpsc::channel(limits.queue_frames_max);
            let (control, control_rx) = mpsc::channel(limits.control_frames_max);
            let id = peer.id;
            let entry = Peer {
                config: peer,
                queue,
                control,
                process: Mutex::new(None),
                incarnation: AtomicU64::new(0),
                reachable: Arc::new(Notify::new()),
                stats: Arc::default(),
                receive: Mutex::default(),
                inbound_generation: watch::channel(0).0,
                outbound_generation: watch::channel(0).0,
            };
            if peer_map.insert(id, entry).is_some() {
                return Err(StartError::Config(format!("{id} is listed twice")));
            }
            queues.push((
                id,
                Lanes {
                    control: control_rx,
                    bulk: queue_rx,
                },
            ));
        }
        let pinned = peer_map
            .iter()
            .map(|(id, peer)| (*id, peer.config.static_public_key))
            .collect();
        let shared = Arc::new(Shared {
            me,
            session: rand_core::OsRng.next_u64(),
            keypair,
            pinned,
            peers: peer_map,
            incoming: incoming_tx,
            counters: Counters::default(),
            events: broadcast::channel(256).0,
            local_addr,
            limits,
        });
        let mut tasks = vec![tokio::spawn(accept_loop(shared.clone(), listener))];
        for (id, lanes) in queues {
            tasks.push(tokio::spawn(outbound_loop(shared.clone(), id, lanes)));
        }
        info!(%me, %local_addr, "links started");
        let handle = LinksHandle {
            shared,
            tasks: Arc::new(Tasks(Mutex::new(tasks))),
        };
        Ok((handle, incoming_rx))
    }
}

/// Sends messages to peers and reads the links' state. Cheap to clone; the links stop when the last
/// clone is dropped or [`LinksHandle::shutdown`] is called.
///
/// Backpressure: [`send`](Self::send) waits while the peer's queue is full, which suits a reply to
/// one peer. [`try_send`](Self::try_send) and [`broadcast`](Self::broadcast) never wait and report
/// `Full` instead, because up to `t` peers may be faulty forever: a replica that waited on one of
/// them would stop serving the others. A peer reported `Full` is lagging; the replica brings it
/// back with a checkpoint rather than an unbounded queue. The `_control` variants use the peer's
/// control lane (sent first, its own bound), for the few messages that bring a lagging peer back.
#[derive(Clone)]
pub struct LinksHandle {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

impl LinksHandle {
    fn peer(&self, to: ServerId, message: &Bytes) -> Result<&Peer, SendError> {
        if to == self.shared.me {
            return Err(SendError::ToSelf);
        }
        if message.len() > MESSAGE_BYTES_MAX {
            return Err(SendError::TooLarge {
                bytes: message.len(),
                max: MESSAGE_BYTES_MAX,
            });
        }
        self.shared.peers.get(&to).ok_or(SendError::UnknownPeer(to))
    }

    /// Queues `message` for `to`, waiting while that peer's queue is full.
    pub async fn send(&self, to: ServerId, message: Bytes) -> Result<(), SendError> {
        let peer = self.peer(to, &message)?;
        let incarnation = peer.incarnation.load(Ordering::Acquire);
        peer.queue
            .send((incarnation, message))
            .await
            .map_err(|_| SendError::Shutdown)
    }

    /// Queues `message` for `to` if there is room now.
    pub fn try_send(&self, to: ServerId, message: Bytes) -> Result<(), SendError> {
        let peer = self.peer(to, &message)?;
        let incarnation = peer.incarnation.load(Ordering::Acquire);
        peer.queue
            .try_send((incarnation, message))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::Full(to),
                mpsc::error::TrySendError::Closed(_) => SendError::Shutdown,
            })
    }

    /// Queues `message` for every peer (not for ourselves) that has room; returns the errors of the
    /// others (`Full` for lagging peers). The payload is shared, not copied.
    pub fn broadcast(&self, message: Bytes) -> Vec<SendError> {
        let mut ids: Vec<ServerId> = self.shared.peers.keys().copied().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.try_send(id, message.clone()).err())
            .collect()
    }

    /// Queues `message` in `to`'s control lane, waiting while that lane is full. Control
    /// messages are sent before the bulk queue's (and may overtake bulk messages queued earlier).
    pub async fn send_control(&self, to: ServerId, message: Bytes) -> Result<(), SendError> {
        let peer = self.peer(to, &message)?;
        let incarnation = peer.incarnation.load(Ordering::Acquire);
        peer.control
            .send((incarnation, message))
            .await
            .map_err(|_| SendError::Shutdown)
    }

    /// Queues `message` in `to`'s control lane if there is room now.
    pub fn try_send_control(&self, to: ServerId, message: Bytes) -> Result<(), SendError> {
        let peer = self.peer(to, &message)?;
        let incarnation = peer.incarnation.load(Ordering::Acquire);
        peer.control
            .try_send((incarnation, message))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::Full(to),
                mpsc::error::TrySendError::Closed(_) => SendError::Shutdown,
            })
    }

    /// [`broadcast`](Self::broadcast) in the control lanes.
    pub fn broadcast_control(&self, message: Bytes) -> Vec<SendError> {
        let mut ids: Vec<ServerId> = self.shared.peers.keys().copied().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.try_send_control(id, message.clone()).err())
            .collect()
    }

    /// Ends the current connections with `peer` in both directions, as a network failure would;
    /// they are re-established with backoff and nothing is lost. For tests and operators.
    pub fn disconnect(&self, peer: ServerId) {
        if let Some(peer) = self.shared.peers.get(&peer) {
            peer.outbound_generation
                .send_modify(|generation| *generation += 1);
            peer.inbound_generation
                .send_modify(|generation| *generation += 1);
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The static public key this server proves in handshakes.
    pub fn public_key(&self) -> LinkPublicKey {
        self.shared.keypair.public()
    }

    /// Subscribes to connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<LinkEvent> {
        self.shared.events.subscribe()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> LinkMetrics {
        let counters = &self.shared.counters;
        let mut peers: Vec<PeerMetrics> = self
            .shared
            .peers
            .iter()
            .map(|(id, peer)| PeerMetrics {
                id: Some(*id),
                queued: peer.queue.max_capacity() - peer.queue.capacity(),
                control_queued: peer.control.max_capacity() - peer.control.capacity(),
                unacked_frames: peer.stats.unacked_frames.load(Ordering::Relaxed),
                unacked_bytes: peer.stats.unacked_bytes.load(Ordering::Relaxed),
                connected: peer.stats.connected.load(Ordering::Relaxed),
            })
            .collect();
        peers.sort_by_key(|peer| peer.id);
        LinkMetrics {
            frames_sent: counters.frames_sent.load(Ordering::Relaxed),
            frames_resent: counters.frames_resent.load(Ordering::Relaxed),
            frames_received: counters.frames_received.load(Ordering::Relaxed),
            duplicates_dropped: counters.duplicates_dropped.load(Ordering::Relaxed),
            frames_dropped_stale: counters.frames_dropped_stale.load(Ordering::Relaxed),
            handshakes_refused: counters.handshakes_refused.load(Ordering::Relaxed),
            connections_failed: counters.connections_failed.load(Ordering::Relaxed),
            peers,
        }
    }

    /// Stops listening and dialing and closes every connection. Messages not yet acknowledged are
    /// dropped: what a replica must not forget across a stop is the node's storage's business.
    pub async fn shutdown(self) {
        let tasks = match self.tasks.0.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(_) => return,
        };
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// A spawned task that is aborted when this guard is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound: one task per peer, owning the sequence numbers and the resend buffer.

/// The receiving ends of a peer's two send lanes.
struct Lanes {
    control: mpsc::Receiver<Queued>,
    bulk: mpsc::Receiver<Queued>,
}

impl Lanes {
    /// The next message already queued, control lane first.
    fn try_next(&mut self) -> Option<Queued> {
        self.control
            .try_recv()
            .ok()
            .or_else(|| self.bulk.try_recv().ok())
    }
}

struct OutboundLink {
    shared: Arc<Shared>,
    id: ServerId,
    stats: Arc<PeerStats>,
    /// The session this link resumes with: this process's, until the peer restarts; then a
    /// fresh one, so that the peer's new process takes up the sequence where we are now.
    session: u64,
    /// The incarnation of the peer this link serves (see [`Peer::incarnation`]).
    incarnation: u64,
    /// A message queued for a newer incarnation than this connection serves (the peer's new
    /// process was seen on its connection to us): sent first on the next connection.
    carried: Option<Bytes>,
    /// Sent and not acknowledged, oldest first, with consecutive sequence numbers.
    unacked: VecDeque<(u64, Bytes)>,
    unacked_bytes: usize,
    next_seq: u64,
}

impl OutboundLink {
    fn has_room(&self) -> bool {
        self.unacked.len() < self.shared.limits.unacked_frames_max
            && self.unacked_bytes < self.shared.limits.unacked_bytes_max
    }

    fn base(&self) -> u64 {
        self.unacked.front().map_or(self.next_seq, |(seq, _)| *seq)
    }

    fn publish_stats(&self) {
        self.stats
            .unacked_frames
            .store(self.unacked.len(), Ordering::Relaxed);
        self.stats
            .unacked_bytes
            .store(self.unacked_bytes, Ordering::Relaxed);
    }

    /// Follows the peer's incarnation: if it came back as a new process since, drops what was
    /// sent and not acknowledged for the previous one (messages queued for it are dropped when
    /// taken) and starts a new session. Returns whether it restarted.
    fn follow_incarnation(&mut self) -> bool {
        let current = self.shared.peers[&self.id]
            .incarnation
            .load(Ordering::Acquire);
        if current <= self.incarnation {
            return false;
        }
        info!(me = %self.shared.me, peer = %self.id, "peer restarted; dropping what was queued for it");
        self.incarnation = current;
        self.session = rand_core::OsRng.next_u64();
        self.shared
            .counters
            .frames_dropped_stale
            .fetch_add(self.unacked.len() as u64, Ordering::Relaxed);
        self.unacked.clear();
        self.unacked_bytes = 0;
        self.publish_stats();
        true
    }

    /// A queued message to send now: `Ok(None)` when it was queued for an older incarnation of
    /// the peer (dropped and counted), `Err` when for a newer one than this connection serves
    /// (kept in `carried`: the link follows the peer's new process on a new connection first).
    fn take(&mut self, (incarnation, message): Queued) -> Result<Option<Bytes>, LinkError> {
        if incarnation < self.incarnation {
            self.shared
                .counters
                .frames_dropped_stale
                .fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        if incarnation > self.incarnation {
            self.carried = Some(message);
            return Err(LinkError::Superseded);
        }
        Ok(Some(message))
    }

    fn acknowledge(&mut self, seq: u64) -> Result<(), LinkError> {
        if seq >= self.next_seq {
            return Err(LinkError::Protocol("acknowledgement of a frame never sent"));
        }
        while let Some((front, payload)) = self.unacked.front() {
            if *front > seq {
                break;
            }
            self.unacked_bytes -= payload.len();
            self.unacked.pop_front();
        }
        self.publish_stats();
        Ok(())
    }

    /// One connection: dial, handshake, resume, resend, then stream new messages until failure.
    /// Returns `Ok` only when the queue closed (the links are going away).
    async fn serve(
        &mut self,
        lanes: &mut Lanes,
        generation: &mut watch::Receiver<u64>,
        established: &mut bool,
    ) -> Result<(), LinkError> {
        self.follow_incarnation();
        if let Some(message) = self.carried.take() {
            // Taken from a lane for the incarnation followed now: first in the resend buffer.
            self.push_unsent(message);
            self.shared
                .counters
                .frames_sent
                .fetch_add(1, Ordering::Relaxed);
        }
        let limits = &self.shared.limits;
        let peer = &self.shared.peers[&self.id].config;
        let mut stream = timeout(limits.connect_timeout, TcpStream::connect(peer.addr))
            .await
            .map_err(|_| LinkError::Timeout)??;
        stream.set_nodelay(true)?;
        let transport = timeout(
            limits.handshake_timeout,
            handshake::initiate(
                &mut stream,
                self.shared.me,
                &self.shared.keypair,
                self.id,
                &peer.static_public_key,
            ),
        )
        .await
        .map_err(|_| LinkError::Timeout)??;
        let cipher = Arc::new(transport);
        let (read_half, write_half) = stream.into_split();
        let mut reader = FrameReader::new(read_half, cipher.clone(), limits.frame_bytes_max);
        let mut writer = FrameWriter::new(write_half, cipher);
        writer.push_resume(self.session, self.base(), self.shared.session);
        writer.flush().await?;
        match timeout(limits.handshake_timeout, reader.next_frame()).await {
            Err(_) => return Err(LinkError::Timeout),
            Ok(Ok(Some(Frame::Welcome { seq, process }))) => {
                self.shared.peers[&self.id].observe_process(process);
                if self.follow_incarnation() {
                    // A new process: what we held for the previous one is dropped. Resume on a
                    // new connection with the new session, from where we are now.
                    return Err(LinkError::Superseded);
                }
                // The receiver's counter may lag our base only if it adopted it just now.
                if seq + 1 < self.base() {
                    return Err(LinkError::Protocol("receiver resumed below our base"));
                }
                if seq >= self.base() {
                    self.acknowledge(seq)?;
                }
            }
            Ok(Ok(Some(_))) => return Err(LinkError::Protocol("expected a welcome")),
            Ok(Ok(None)) => return Err(LinkError::Closed),
            Ok(Err(error)) => return Err(error),
        }
        *established = true;
        self.stats.connected.store(true, Ordering::Relaxed);
        self.shared.event(LinkEvent::Connected {
            peer: self.id,
            outbound: true,
        });
        debug!(me = %self.shared.me, peer = %self.id, unacked = self.unacked.len(), "outbound link up");

        let (ack_tx, mut ack_rx) = watch::channel(0u64);
        let mut acks = AbortOnDrop(tokio::spawn(async move {
            loop {
                match reader.next_frame().await? {
                    Some(Frame::Ack { seq }) => {
                        if ack_tx.send(seq).is_err() {
                            return Ok(());
                        }
                    }
                    Some(_) => return Err(LinkError::Protocol("receiver sent a non-ack frame")),
                    None => return Err(LinkError::Closed),
                }
            }
        }));

        let counters = &self.shared.counters;
        for (seq, payload) in &self.unacked {
            writer.push_data(*seq, payload);
            counters.frames_resent.fetch_add(1, Ordering::Relaxed);
            if writer.pending_bytes() >= WRITER_FLUSH_BYTES {
                writer.flush().await?;
            }
        }
        writer.flush().await?;

        loop {
            let room = self.has_room();
            tokio::select! {
                biased;
                _ = generation.changed() => return Err(LinkError::Superseded),
                changed = ack_rx.changed() => {
                    if changed.is_err() {
                        return Err(match (&mut acks.0).await {
                            Ok(Err(error)) => error,
                            _ => LinkError::Closed,
                        });
                    }
                    let seq = *ack_rx.borrow_and_update();
                    self.acknowledge(seq)?;
                }
                message = lanes.control.recv(), if room => {
                    let Some(message) = message else { return Ok(()) };
                    self.push_and_flush(&mut writer, lanes, message).await?;
                }
                message = lanes.bulk.recv(), if room => {
                    let Some(message) = message else { return Ok(()) };
                    self.push_and_flush(&mut writer, lanes, message).await?;
                }
            }
        }
    }

    /// Writes `message` and whatever else is already queued (control lane first) into the same
    /// records, then flushes.
    async fn push_and_flush<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        writer: &mut FrameWriter<W>,
        lanes: &mut Lanes,
        message: Queued,
    ) -> Result<(), LinkError> {
        let mut next = Some(message);
        while let Some(message) = next {
            match self.take(message) {
                Ok(Some(message)) => self.push(writer, message),
                Ok(None) => {}
                Err(error) => {
                    writer.flush().await?;
                    return Err(error);
                }
            }
            if !self.has_room() || writer.pending_bytes() >= WRITER_FLUSH_BYTES {
                break;
            }
            next = lanes.try_next();
        }
        writer.flush().await
    }

    fn push<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        writer: &mut FrameWriter<W>,
        message: Bytes,
    ) {
        writer.push_data(self.next_seq, &message);
        self.push_unsent(message);
        self.shared
            .counters
            .frames_sent
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Numbers `message` and keeps it in the resend buffer.
    fn push_unsent(&mut self, message: Bytes) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked_bytes += message.len();
        self.unacked.push_back((seq, message));
        self.publish_stats();
    }
}

async fn outbound_loop(shared: Arc<Shared>, id: ServerId, mut lanes: Lanes) {
    let peer = &shared.peers[&id];
    let mut generation = peer.outbound_generation.subscribe();
    let mut link = OutboundLink {
        shared: shared.clone(),
        id,
        stats: peer.stats.clone(),
        session: shared.session,
        incarnation: 0,
        carried: None,
        unacked: VecDeque::new(),
        unacked_bytes: 0,
        next_seq: 1,
    };
    let mut delay = shared.limits.reconnect_delay_min;
    loop {
        generation.borrow_and_update();
        let mut established = false;
        let result = link
            .serve(&mut lanes, &mut generation, &mut established)
            .await;
        link.stats.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => return,
            Err(error) => {
                shared
                    .counters
                    .connections_failed
                    .fetch_add(1, Ordering::Relaxed);
                if established {
                    debug!(me = %shared.me, peer = %id, %error, "outbound link lost; reconnecting");
                    shared.event(LinkEvent::Disconnected {
                        peer: id,
                        outbound: true,
                        reason: error.to_string(),
                    });
                    delay = shared.limits.reconnect_delay_min;
                } else if matches!(error, LinkError::Superseded) {
                    // The peer answered (it restarted, see `follow_incarnation`): resume at once.
                    delay = shared.limits.reconnect_delay_min;
                } else {
                    debug!(me = %shared.me, peer = %id, %error, ?delay, "cannot reach peer; retrying");
                }
            }
        }
        // A peer that just connected to us is up: dial it now rather than after the delay (a
        // restarted peer would otherwise wait up to `reconnect_delay_max` for what we queued).
        tokio::select! {
            _ = tokio::time::sleep(delay) => {
                delay = (delay * 2).min(shared.limits.reconnect_delay_max);
            }
            _ = peer.reachable.notified() => {
                delay = shared.limits.reconnect_delay_min;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound: a listener and one task per connection, delivering in order and acknowledging.

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(shared.limits.inbound_connections_max));
    // Dropping the set (when this task is aborted) aborts every inbound connection.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically out of file descriptors: wait instead of spinning.
                warn!(me = %shared.me, %error, "accept failed");
                tokio::time::sleep(shared.limits.reconnect_delay_min).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(me = %shared.me, %addr, "too many inbound connections; closing");
            continue;
        };
        connections.spawn(inbound(shared.clone(), stream, addr, permit));
    }
}

async fn inbound(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let handshake = timeout(
        shared.limits.handshake_timeout,
        handshake::respond(&mut stream, shared.me, &shared.keypair, &shared.pinned),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Refusal {
            claimed: None,
            error: LinkError::Timeout,
        })
    });
    let (peer, transport) = match handshake {
        Ok(done) => done,
        Err(Refusal { claimed, error }) => {
            shared
                .counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            warn!(me = %shared.me, %addr, ?claimed, %error, "handshake refused");
            shared.event(LinkEvent::HandshakeRefused {
                addr,
                claimed,
                reason: error.to_string(),
            });
            return;
        }
    };
    shared.event(LinkEvent::Connected {
        peer,
        outbound: false,
    });
    if let Err(error) = serve_inbound(&shared, peer, stream, transport).await {
        shared
            .counters
            .connections_failed
            .fetch_add(1, Ordering::Relaxed);
        match error {
            LinkError::Closed | LinkError::Superseded | LinkError::Io(_) => {
                debug!(me = %shared.me, %peer, %error, "inbound link ended");
            }
            _ => warn!(me = %shared.me, %peer, %error, "inbound link closed on a fault"),
        }
        shared.event(LinkEvent::Disconnected {
            peer,
            outbound: false,
            reason: error.to_string(),
        });
    }
}

async fn serve_inbound(
    shared: &Shared,
    from: ServerId,
    stream: TcpStream,
    transport: snow::StatelessTransportState,
) -> Result<(), LinkError> {
    let peer = &shared.peers[&from];
    // Replace any older connection from the same peer: it is half-dead or a replay of the past.
    let mut my_generation = 0;
    peer.inbound_generation.send_modify(|generation| {
        *generation += 1;
        my_generation = *generation;
    });
    let mut generation = peer.inbound_generation.subscribe();
    let superseded = |generation: &watch::Receiver<u64>| *generation.borrow() != my_generation;

    let cipher = Arc::new(transport);
    let (read_half, write_half) = stream.into_split();
    let mut reader = FrameReader::new(read_half, cipher.clone(), shared.limits.frame_bytes_max);
    let mut writer = FrameWriter::new(write_half, cipher);
    let session = match timeout(shared.limits.handshake_timeout, reader.next_frame()).await {
        Err(_) => return Err(LinkError::Timeout),
        Ok(Ok(Some(Frame::Resume {
            session,
            base,
            process,
        }))) => {
            // Before anything of the new process is delivered: replies to it are queued for it.
            peer.observe_process(process);
            let delivered = lock(&peer.receive).resume(session, base)?;
            // The peer is up: our dialing task stops waiting out its reconnect delay.
            peer.reachable.notify_one();
            writer.push_welcome(delivered, shared.session);
            writer.flush().await?;
            session
        }
        Ok(Ok(Some(_))) => return Err(LinkError::Protocol("expected resume")),
        Ok(Ok(None)) => return Err(LinkError::Closed),
        Ok(Err(error)) => return Err(error),
    };
    let delivered = lock(&peer.receive).delivered;
    let (ack_tx, mut ack_rx) = watch::channel(delivered);
    let acker = AbortOnDrop(tokio::spawn(async move {
        // `changed` wakes once for any number of deliveries, so acknowledgements coalesce under load.
        while ack_rx.changed().await.is_ok() {
            let seq = *ack_rx.borrow_and_update();
            writer.push_ack(seq);
            writer.flush().await?;
        }
        Ok::<(), LinkError>(())
    }));

    loop {
        let frame = tokio::select! {
            biased;
            _ = generation.changed() => {
                if superseded(&generation) { return Err(LinkError::Superseded) }
                continue;
            }
            frame = reader.next_frame() => frame?,
        };
        let (seq, payload) = match frame {
            Some(Frame::Data { seq, payload }) => (seq, payload),
            Some(_) => return Err(LinkError::Protocol("sender sent a non-data frame")),
            None => return Err(LinkError::Closed),
        };
        if acker.0.is_finished() {
            return Err(LinkError::Closed);
        }
        let permit = tokio::select! {
            biased;
            _ = generation.changed() => return Err(LinkError::Superseded),
            permit = shared.incoming.reserve() => permit.map_err(|_| LinkError::Closed)?,
        };
        // Check, deliver and count under one lock with no await inside: a connection that is being
        // replaced can never deliver a frame its successor also delivers.
        let mut state = lock(&peer.receive);
        if state.session != Some(session) || superseded(&generation) {
            return Err(LinkError::Superseded);
        }
        if seq <= state.delivered {
            shared
                .counters
                .duplicates_dropped
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if seq != state.delivered + 1 {
            return Err(LinkError::Protocol("sequence gap"));
        }
        // Counted before the replica can see the message, so that a replica reading the metrics
        // after a delivery never finds the counter behind it.
        shared
            .counters
            .frames_received
            .fetch_add(1, Ordering::Relaxed);
        permit.send(Incoming {
            from,
            bytes: payload,
        });
        state.delivered = seq;
        drop(state);
        let _ = ack_tx.send(seq);
    }
}

/// The receive state is plain data; a panic elsewhere while holding it cannot leave it half-written.
fn lock(state: &Mutex<ReceiveState>) -> std::sync::MutexGuard<'_, ReceiveState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
