//! The coordinator task: everything between replicas that is not ordering.
//!
//! * **Answers.** Clients wait here (by request digest) until their request is executed; the
//!   server that holds a waiting client collects the others' RSA shares of the round's
//!   answer-batch statement and combines `t + 1` optimistically. If the result does not verify,
//!   it asks every sharer for a proof of correctness, names the senders of invalid shares
//!   (faults), and combines proven shares. Combining verifies the signature once per batch;
//!   each `SignedAnswer`'s path is checked against the batch root before it is handed out.
//! * **Checkpoints.** `n - t` matching BLS shares of a checkpoint statement combine into a
//!   certificate, stored and handed to peers that ask.
//! * **Directory state.** At a checkpoint round every server also combines (as an answer item,
//!   [`STATE_ITEM`], without a waiting client) the service key's signature over the directory's
//!   state statement, and publishes the signed state for the gateway's local lookups.
//! * **Catch-up.** A (re)started server says `Hello`; peers answer with where they stand and
//!   their latest certificate. If a peer's certificate covers rounds this server lacks, it asks
//!   peers *one at a time* for the log up to a certificate and hands what it gets to the
//!   executor, which checks it against the certificate before executing anything; a wrong log
//!   is blamed on its sender and the next peer is asked. A peer serves, per request, the rounds
//!   up to its latest certificate, or — beyond [`TRANSFER_ROUNDS_BYTES_MAX`] of records — up to
//!   the next certificate. Rounds after the last certificate come from atomic broadcast's own
//!   catch-up, which this task sets going ([`sintra_protocols::abc::Abc::catch_up_to`]).
//!   Every peer's checkpoint share also tells where it stands; while `t + 1` peers are ahead,
//!   or fewer than `t + 1` answered its `Hello`, a server asks again every [`HELLO_RETRY`]. `Hello`, `Status`, `FetchRounds` and `Rounds` travel in the links'
//!   control lane, ahead of any backlog of protocol messages to a peer that was down.
//!   While a certificate shows this server at least `rounds_retained` rounds behind (what the
//!   ordering keeps for late servers), it is
//!   *catching up* ([`Metrics::catching_up`]): its gateway refuses clients at once (`503`), so
//!   that they ask another server instead of waiting for an answer it cannot give yet.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use sintra_crypto::dealer::GroupKeys;
use sintra_crypto::encoding::Encode;
use sintra_crypto::{CombineError, Context, CryptoError, ServerId, bls, rsa};
use sintra_net::LinksHandle;
use sintra_protocols::InstanceId;
use sintra_services::answers::{self, AnswerBatch, SignedAnswer};
use sintra_services::directory::{SignedState, StateStatement, StateTree};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::checkpoint::{CHECKPOINT_PURPOSE, CheckpointCertificate, CheckpointStatement};
use crate::executor::{ExecInput, Executed};
use crate::message::{Item, NodeMessage, STATE_ITEM};
use crate::metrics::Metrics;
use crate::signer::{ANSWER_PROOF_PURPOSE, SignJob, on_duty};
use crate::store::{RoundRecord, Store};

/// Clients waiting for an answer at once; beyond it new requests are refused (HTTP 503).
pub const WAITING_CLIENTS_MAX: usize = 1 << 16;
/// Registrations waiting for the coordinator (gateway → coordinator channel).
pub(crate) const REGISTER_QUEUE_MAX: usize = 4096;
/// Node messages from the protocol task waiting for the coordinator.
pub(crate) const PEER_QUEUE_MAX: usize = 4096;
/// Executor events waiting for the coordinator.
pub(crate) const EVENT_QUEUE_MAX: usize = 1024;
/// Rounds with waiting clients whose signature is still being collected; older ones are given
/// up (their clients get a timeout).
pub const ANSWER_ROUNDS_MAX: usize = 1024;
/// Rounds beyond the last executed one for which peers' answer shares are kept (one per peer).
pub const EARLY_SHARE_ROUNDS_MAX: u64 = 256;
/// Own answer shares kept (items of rounds), to prove them to a combiner that asks.
pub const OWN_SHARES_MAX: usize = 16 * 1024;
/// Peers' shares kept for items not executed here yet, all peers and items together.
pub const EARLY_SHARES_MAX: usize = 64 * 1024;
/// Executed requests remembered by digest, to answer a client that retries one: the requests of
/// the most recent rounds, up to this many (older retries get 503 and should resubmit).
pub const RECENT_REQUESTS_MAX: usize = 64 * 1024;
/// Checkpoint rounds for which peers' shares are collected at once (one statement per peer).
pub const CHECKPOINT_ROUNDS_PENDING_MAX: usize = 64;
/// Bytes of round records one reply part carries (a link message is at most 8 MiB).
pub const TRANSFER_REPLY_BYTES_MAX: usize = 4 << 20;
/// Bytes of round records one transfer carries before it ends at the next certificate: a peer
/// serves a `FetchRounds` up to its latest certificate when the rounds up to it stay below this,
/// else up to the first certificate after this many bytes (at most `checkpoint_rounds` rounds and
/// one reply part more).
pub const TRANSFER_ROUNDS_BYTES_MAX: usize = 32 << 20;
/// Bytes of round records a transfer buffers before they can be checked against the certificate.
pub const TRANSFER_BUFFER_BYTES_MAX: usize = 256 << 20;
/// A peer that sends nothing for this long during a transfer is given up for the next one.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// Peers served a transfer at once.
pub const TRANSFERS_SERVED_MAX: usize = 4;
/// How often the coordinator looks at timeouts and stale waiters.
const TICK: Duration = Duration::from_millis(500);
/// A peer on signing duty that sent no share for this long counts as silent: the items it owes
/// are asked of every peer.
pub const SHARE_SILENCE: Duration = Duration::from_secs(2);
/// How often a combiner still missing shares asks every peer again.
pub const SHARE_REQUEST_REPEAT: Duration = Duration::from_secs(5);
/// Items waiting to be signed on demand (beyond it the oldest request is forgotten; the
/// combiner asks again).
pub const ON_DEMAND_MAX: usize = 4096;
/// A server that knows it is behind and is not fetching asks where the group stands again after
/// this long (its `Hello` or the answers may have been lost: a full link queue, a peer that was
/// still reconnecting).
pub const HELLO_RETRY: Duration = Duration::from_secs(2);

/// What a waiting client is handed.
#[derive(Debug, Clone)]
pub(crate) enum Answered {
    /// The answer with its path in the round's answer batch and the batch signature.
    Batch(SignedAnswer),
    /// An answer the service key signed on its own (its `signing_message`), with that
    /// signature, verified: the gateway completes it with the service's `complete`. The
    /// request is the executed one (for a confidential request, the decrypted plaintext).
    Signed {
        request: Vec<u8>,
        answer: Vec<u8>,
        signature: rsa::Signature,
    },
}

/// A client waiting for the signed answer to a request.
#[derive(Debug)]
pub(crate) struct Register {
    /// SHA-256 of the request.
    pub digest: [u8; 32],
    pub reply: oneshot::Sender<Answered>,
}

/// A round's signing item: `(round, item)`; item 0 is the answer batch, item `i + 1` the
/// service's own signature of answer `i`.
type Key = (u64, Item);

/// What the executor and the signer tell the coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    Executed(Box<Executed>),
    OwnShare {
        round: u64,
        item: Item,
        share: rsa::SignatureShare,
    },
    OwnCheckpoint {
        statement: CheckpointStatement,
        share: bls::SignatureShare,
    },
    TransferDone {
        peer: ServerId,
        accepted: bool,
        next_round: u64,
        /// The certificate the applied rounds were checked against (`None` if nothing was
        /// applied).
        certificate: Option<Box<CheckpointCertificate>>,
    },
    Fatal(String),
}

/// A signing item with waiting clients (or the directory's state statement), collecting
/// signature shares.
struct AnswerRound {
    /// `None` for the state statement.
    batch: Option<Arc<AnswerBatch>>,
    digest: [u8; 32],
    requests: Arc<Vec<Vec<u8>>>,
    answers: Arc<Vec<Vec<u8>>>,
    waiting: Vec<(usize, oneshot::Sender<Answered>)>,
    shares: BTreeMap<ServerId, rsa::SignatureShare>,
    /// Senders whose share was found invalid.
    bad: BTreeSet<ServerId>,
    /// An optimistic combination failed: only proven shares count from now on.
    proofs_needed: bool,
    proven: BTreeSet<ServerId>,
    asked: BTreeSet<ServerId>,
    /// When collecting began, and when every peer was last asked for its share.
    started: Instant,
    escalated: Option<Instant>,
    /// For item [`STATE_ITEM`]: the statement and the tree it commits to.
    state: Option<(StateStatement, Arc<StateTree>)>,
}

/// A round read back from the store to answer a retry.
struct StoredRound {
    batch: AnswerBatch,
    requests: Vec<Vec<u8>>,
    answers: Vec<Vec<u8>>,
}

/// A state transfer under way.
struct Transfer {
    peer: ServerId,
    target: CheckpointCertificate,
    from_round: u64,
    records: Vec<RoundRecord>,
    bytes: usize,
    last_progress: Instant,
    tried: BTreeSet<ServerId>,
}

pub(crate) struct Coordinator {
    pub me: ServerId,
    pub group: Arc<GroupKeys>,
    pub instance: InstanceId,
    pub links: LinksHandle,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub peers: mpsc::Receiver<(ServerId, NodeMessage)>,
    pub events: mpsc::Receiver<Event>,
    pub registrations: mpsc::Receiver<Register>,
    pub execution: mpsc::Sender<ExecInput>,
    pub catch_up: watch::Sender<u64>,
    pub signer: std::sync::mpsc::SyncSender<SignJob>,
    pub shutdown: watch::Receiver<bool>,
    pub executed_next: u64,
    /// Rounds of the log the ordering itself brings back to a late server (atomic broadcast's
    /// `ROUNDS_RETAINED`; the optimistic ordering's `BATCHES_RETAINED`): a server further
    /// behind needs a state transfer and is *catching up*.
    pub rounds_retained: u64,
    pub certificate: Option<CheckpointCertificate>,
    /// The latest signed directory state, read by the gateway's local lookups.
    pub directory_state: watch::Sender<Option<Arc<SignedState>>>,
}

struct State {
    waiters: HashMap<[u8; 32], Vec<oneshot::Sender<Answered>>>,
    waiter_count: usize,
    rounds: BTreeMap<Key, AnswerRound>,
    early: BTreeMap<Key, BTreeMap<ServerId, rsa::SignatureShare>>,
    /// Shares kept in `early`, all items together (bounded by [`EARLY_SHARES_MAX`]).
    early_count: usize,
    /// This server's answer shares, to prove them to a combiner that asks.
    own: BTreeMap<Key, rsa::SignatureShare>,
    /// Digests signed by the items of the rounds executed here.
    digests: BTreeMap<Key, [u8; 32]>,
    /// Items off duty that a combiner asked this server to sign, not yet handed to the signer.
    on_demand: BTreeSet<Key>,
    /// Items handed to the signer on demand (each is signed once).
    signing: BTreeSet<Key>,
    /// Per peer: the highest item it sent a share of, and when its last share arrived.
    peer_shares: BTreeMap<ServerId, (Key, Instant)>,
    /// Recently executed requests: SHA-256 of the request → (round, index in the round, item).
    recent: HashMap<[u8; 32], (u64, usize, Item)>,
    /// The digests in `recent`, oldest round first, to forget them in order.
    recent_order: std::collections::VecDeque<[u8; 32]>,
    checkpoint_shares:
        BTreeMap<u64, BTreeMap<ServerId, (CheckpointStatement, bls::SignatureShare)>>,
    own_statements: BTreeMap<u64, CheckpointStatement>,
    transfer: Option<Transfer>,
    /// A verified transfer the executor had no room for yet.
    pending_input: Option<ExecInput>,
    peer_rounds: BTreeMap<ServerId, u64>,
    /// The highest verified certificate seen from a peer.
    best_certificate: Option<CheckpointCertificate>,
    serving: HashSet<ServerId>,
    hello_round: Option<u64>,
    last_hello: Instant,
    /// Peers that answered (`Status`) since the last `Hello`.
    answered_hello: BTreeSet<ServerId>,
}

impl Coordinator {
    pub(crate) async fn run(mut self) {
        let mut state = State {
            waiters: HashMap::new(),
            waiter_count: 0,
            rounds: BTreeMap::new(),
            early: BTreeMap::new(),
            early_count: 0,
            own: BTreeMap::new(),
            digests: BTreeMap::new(),
            on_demand: BTreeSet::new(),
            signing: BTreeSet::new(),
            peer_shares: BTreeMap::new(),
            recent: HashMap::new(),
            recent_order: std::collections::VecDeque::new(),
            checkpoint_shares: BTreeMap::new(),
            own_statements: BTreeMap::new(),
            transfer: None,
            pending_input: None,
            peer_rounds: BTreeMap::new(),
            best_certificate: None,
            serving: HashSet::new(),
            hello_round: None,
            last_hello: Instant::now(),
            answered_hello: BTreeSet::new(),
        };
        let (served_tx, mut served_rx) = mpsc::channel::<ServerId>(TRANSFERS_SERVED_MAX);
        self.say_hello(&mut state);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Registrations first: a client registers before it submits, so its registration
            // is always handled before the executed round that answers it.
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                registration = self.registrations.recv() => {
                    let Some(registration) = registration else { break };
                    self.on_register(&mut state, registration);
                }
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    if !self.on_event(&mut state, event) {
                        break;
                    }
                }
                message = self.peers.recv() => {
                    let Some((from, message)) = message else { break };
                    self.on_peer(&mut state, from, message, &served_tx);
                }
                Some(peer) = served_rx.recv() => {
                    state.serving.remove(&peer);
                }
                _ = tick.tick() => self.on_tick(&mut state),
            }
        }
        debug!(server = %self.me, "coordinator stopped");
    }

    fn threshold(&self) -> usize {
        self.group.parameters.honest_threshold()
    }

    fn send(&self, to: ServerId, message: &NodeMessage) {
        if let Err(error) = self.links.try_send(to, Bytes::from(message.to_bytes())) {
            debug!(peer = %to, %error, "node message not sent");
        }
    }

    /// Sends a catch-up message (`Hello`, `Status`, `FetchRounds`) in the control lane.
    fn send_control(&self, to: ServerId, message: &NodeMessage) {
        if let Err(error) = self
            .links
            .try_send_control(to, Bytes::from(message.to_bytes()))
        {
            debug!(peer = %to, %error, "catch-up message not sent");
        }
    }

    fn fault(&self, peer: ServerId, kind: &'static str, what: &str) {
        self.metrics.fault(peer, kind);
        warn!(%peer, kind, what, "fault");
    }

    fn say_hello(&self, state: &mut State) {
        if state.hello_round == Some(self.executed_next) {
            return;
        }
        state.hello_round = Some(self.executed_next);
        state.last_hello = Instant::now();
        state.answered_hello.clear();
        let hello = NodeMessage::Hello {
            next_round: self.executed_next,
        };
        let _ = self.links.broadcast_control(Bytes::from(hello.to_bytes()));
    }

    /// The next round that at least `t + 1` peers said (`Hello`, `Status`, checkpoint shares)
    /// they had reached: at least one honest peer is there.
    fn peers_reached(&self, state: &State) -> Option<u64> {
        let mut rounds: Vec<u64> = state.peer_rounds.values().copied().collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds.get(self.threshold() - 1).copied()
    }

    /// Whether a verified certificate shows this server so far behind that atomic broadcast's
    /// own catch-up cannot bring it back (a state transfer is needed), published for the
    /// gateway ([`Metrics::catching_up`]).
    fn update_catching_up(&self, state: &State) {
        let behind = state.best_certificate.as_ref().is_some_and(|best| {
            best.statement.round + 1 >= self.executed_next.saturating_add(self.rounds_retained)
        });
        let was = self.metrics.catching_up.swap(behind, Ordering::Relaxed);
        if was != behind {
            info!(
                server = %self.me,
                next_round = self.executed_next,
                best = state.best_certificate.as_ref().map(|best| best.statement.round),
                "{}",
                if behind { "catching up: clients are sent elsewhere" } else { "caught up" }
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Clients.

    fn on_register(&self, state: &mut State, registration: Register) {
        if state.waiter_count >= WAITING_CLIENTS_MAX {
            // Dropping the sender tells the gateway (it answers 503).
            return;
        }
        if let Some(&(round, index, item)) = state.recent.get(&registration.digest) {
            // A retry of a request executed already: atomic broadcast will not deliver it
            // again, so it is answered from the store.
            self.answer_again(state, (round, item), index, registration.reply);
            return;
        }
        state.waiter_count += 1;
        state
            .waiters
            .entry(registration.digest)
            .or_default()
            .push(registration.reply);
        self.metrics
            .waiting_clients
            .store(state.waiter_count as u64, Ordering::Relaxed);
    }

    fn on_tick(&mut self, state: &mut State) {
        // Clients that gave up (timeout) leave closed channels behind.
        state.waiters.retain(|_, waiting| {
            waiting.retain(|reply| !reply.is_closed());
            !waiting.is_empty()
        });
        state.waiter_count = state.waiters.values().map(Vec::len).sum::<usize>()
            + state
                .rounds
                .values()
                .map(|r| r.waiting.len())
                .sum::<usize>();
        self.metrics
            .waiting_clients
            .store(state.waiter_count as u64, Ordering::Relaxed);
        if let Some(input) = state.pending_input.take() {
            self.hand_to_executor(state, input);
        }
        self.escalate_missing_shares(state);
        self.sign_on_demand(state);
        let stalled = state
            .transfer
            .as_ref()
            .is_some_and(|transfer| transfer.last_progress.elapsed() > TRANSFER_TIMEOUT);
        if stalled && let Some(transfer) = state.transfer.take() {
            info!(peer = %transfer.peer, "state transfer peer is silent; asking another");
            self.start_transfer(state, transfer.target, transfer.tried);
        }
        // Behind when `t + 1` peers (at least one honest) say they are beyond the rounds atomic
        // broadcast keeps in its window here: their messages are being dropped as too early.
        let behind = self.peers_reached(state).is_some_and(|round| {
            round >= self.executed_next.saturating_add(self.rounds_retained / 2)
        });
        // Or not told yet: fewer than `t + 1` peers answered the last `Hello` (a peer that was
        // reconnecting, or restarting itself, may have lost it or its answer).
        let untold = state.answered_hello.len() < self.threshold();
        if (behind || untold)
            && state.transfer.is_none()
            && state.last_hello.elapsed() > HELLO_RETRY
        {
            state.hello_round = None;
            self.say_hello(state);
            // A certificate known already whose transfer found no peer to ask, or gave up.
            if let Some(best) = state.best_certificate.clone() {
                self.consider_certificate(state, best);
            }
        }
        self.update_catching_up(state);
    }

    // -----------------------------------------------------------------------------------------
    // Executor events.

    fn on_event(&mut self, state: &mut State, event: Event) -> bool {
        match event {
            Event::Executed(executed) => self.on_executed(state, *executed),
            Event::OwnShare { round, item, share } => {
                self.metrics.shares_signed.fetch_add(1, Ordering::Relaxed);
                state.own.insert((round, item), share.clone());
                self.add_share(state, self.me, (round, item), share);
                while state.own.len() > OWN_SHARES_MAX {
                    state.own.pop_first();
                }
            }
            Event::OwnCheckpoint { statement, share } => {
                state.own_statements.insert(statement.round, statement);
                while state.own_statements.len() > CHECKPOINT_ROUNDS_PENDING_MAX {
                    state.own_statements.pop_first();
                }
                self.on_checkpoint_share(state, self.me, statement, share);
            }
            Event::TransferDone {
                peer,
                accepted,
                next_round,
                certificate,
            } => self.on_transfer_done(state, peer, accepted, next_round, certificate),
            Event::Fatal(error) => {
                error!(server = %self.me, %error, "the replica cannot continue");
                return false;
            }
        }
        true
    }

    /// Answers a client whose request was executed in `round` (answer `index`) before it
    /// registered: joins the item's collection if one is under way, or starts one from the
    /// stored answers with this server's own share and asks the peers for theirs again.
    fn answer_again(
        &self,
        state: &mut State,
        key: Key,
        index: usize,
        reply: oneshot::Sender<Answered>,
    ) {
        if let Some(answer_round) = state.rounds.get_mut(&key) {
            state.waiter_count += 1;
            answer_round.waiting.push((index, reply));
            return;
        }
        let (round, item) = key;
        let Some(digest) = state.digests.get(&key).copied() else {
            debug!(round, item, "retried request too old to be signed again");
            return;
        };
        let own = state.own.get(&key).cloned();
        let rebuilt = self.stored_round(round);
        let (batch, requests, answers) = match rebuilt {
            Ok(Some(stored)) => (stored.batch, stored.requests, stored.answers),
            Ok(None) => {
                error!(round, "the stored round does not rebuild its answer batch");
                return;
            }
            Err(error) => {
                error!(round, %error, "the stored round cannot be read");
                return;
            }
        };
        let mut shares = BTreeMap::new();
        if let Some(own) = own {
            shares.insert(self.me, own);
        }
        state.waiter_count += 1;
        state.rounds.insert(
            key,
            AnswerRound {
                batch: Some(Arc::new(batch)),
                digest,
                requests: Arc::new(requests),
                answers: Arc::new(answers),
                waiting: vec![(index, reply)],
                shares,
                bad: BTreeSet::new(),
                proofs_needed: false,
                proven: BTreeSet::new(),
                asked: BTreeSet::new(),
                started: Instant::now(),
                escalated: None,
                state: None,
            },
        );
        // Shares were sent once already (or, off duty, never): ask everyone, sign here too.
        self.escalate(state, key);
        self.try_combine(state, key);
    }

    /// A round's answer batch rebuilt from the store, `None` if the store lacks it or it does
    /// not lead to the stored root.
    fn stored_round(&self, round: u64) -> Result<Option<StoredRound>, String> {
        let Some((first, count, root)) = self
            .store
            .round_boundary(round)
            .map_err(|error| error.to_string())?
        else {
            return Ok(None);
        };
        let end = first + count;
        let requests: Vec<Vec<u8>> = self
            .store
            .log(first, end)
            .map_err(|error| error.to_string())?
            .into_iter()
            .map(|entry| entry.request)
            .collect();
        let answers = self
            .store
            .answers(first, end)
            .map_err(|error| error.to_string())?;
        if requests.len() as u64 != count || answers.len() as u64 != count {
            return Ok(None);
        }
        let leaves = requests
            .iter()
            .zip(&answers)
            .enumerate()
            .map(|(offset, (request, answer))| {
                answers::leaf(first + offset as u64, request, answer)
            })
            .collect();
        let batch = AnswerBatch::new(round, first, leaves).map_err(|e| e.to_string())?;
        Ok((batch.root() == root).then_some(StoredRound {
            batch,
            requests,
            answers,
        }))
    }

    /// Remembers the requests of an executed round by digest (for retries), forgetting the
    /// oldest beyond [`RECENT_REQUESTS_MAX`].
    fn remember(&self, state: &mut State, round: u64, hashes: &[[u8; 32]], item_of: &[Item]) {
        for (index, digest) in hashes.iter().copied().enumerate() {
            let item = item_of.get(index).copied().unwrap_or(0);
            if state.recent.insert(digest, (round, index, item)).is_none() {
                state.recent_order.push_back(digest);
            }
        }
        while state.recent_order.len() > RECENT_REQUESTS_MAX {
            if let Some(old) = state.recent_order.pop_front() {
                state.recent.remove(&old);
            }
        }
    }

    fn on_executed(&mut self, state: &mut State, executed: Executed) {
        let Executed {
            round,
            batch,
            requests,
            answers,
            request_hashes,
            signed,
            state: committed,
        } = executed;
        self.executed_next = self.executed_next.max(round + 1);
        // Early shares of rounds executed now or before are used below or never.
        let later = state.early.split_off(&(round + 1, 0));
        let mut early = std::mem::replace(&mut state.early, later).split_off(&(round, 0));
        state.early_count = state.early.values().map(BTreeMap::len).sum();
        if let Some((statement, tree)) = committed {
            self.collect_state(state, round, statement, tree, &mut early);
        }
        let Some(batch) = batch else {
            return;
        };
        let batch_digest: [u8; 32] = Sha256::digest(batch.statement()).into();
        // Which item signs each answer: the batch (0) unless the service signs it alone.
        let mut item_of = vec![0 as Item; requests.len()];
        let mut digests: Vec<(Item, [u8; 32])> = vec![(0, batch_digest)];
        for (index, digest) in &signed {
            if let Some(slot) = item_of.get_mut(*index) {
                *slot = *index as Item + 1;
                digests.push((*index as Item + 1, *digest));
            }
        }
        for (item, digest) in &digests {
            state.digests.insert((round, *item), *digest);
        }
        while state.digests.len() > OWN_SHARES_MAX {
            state.digests.pop_first();
        }
        while state.signing.len() > OWN_SHARES_MAX {
            state.signing.pop_first();
        }
        self.remember(state, round, &request_hashes, &item_of);
        let mut waiting: BTreeMap<Item, Vec<(usize, oneshot::Sender<Answered>)>> = BTreeMap::new();
        if !state.waiters.is_empty() {
            for (index, request_digest) in request_hashes.iter().enumerate() {
                if let Some(replies) = state.waiters.remove(request_digest) {
                    let slot = waiting.entry(item_of[index]).or_default();
                    slot.extend(replies.into_iter().map(|reply| (index, reply)));
                }
            }
        }
        if waiting.is_empty() {
            return;
        }
        let requests = Arc::new(requests);
        let answers = Arc::new(answers);
        let digest_of: BTreeMap<Item, [u8; 32]> = digests.into_iter().collect();
        for (item, waiting) in waiting {
            let Some(digest) = digest_of.get(&item) else {
                continue;
            };
            let key = (round, item);
            let mut answer_round = AnswerRound {
                batch: Some(batch.clone()),
                digest: *digest,
                requests: requests.clone(),
                answers: answers.clone(),
                waiting,
                shares: early.remove(&key).unwrap_or_default(),
                bad: BTreeSet::new(),
                proofs_needed: false,
                proven: BTreeSet::new(),
                asked: BTreeSet::new(),
                started: Instant::now(),
                escalated: None,
                state: None,
            };
            if let Some(share) = state.own.get(&key) {
                answer_round.shares.insert(self.me, share.clone());
            }
            state.rounds.insert(key, answer_round);
            while state.rounds.len() > ANSWER_ROUNDS_MAX {
                if let Some(((old, old_item), dropped)) = state.rounds.pop_first() {
                    warn!(
                        round = old,
                        item = old_item,
                        clients = dropped.waiting.len(),
                        "gave up collecting answer shares"
                    );
                }
            }
            self.try_combine(state, key);
        }
    }

    /// Starts combining the directory's state statement of checkpoint `round`. Every server
    /// does (not only one with a waiting client): each serves local lookups from its own
    /// signed state.
    fn collect_state(
        &self,
        state: &mut State,
        round: u64,
        statement: StateStatement,
        tree: Arc<StateTree>,
        early: &mut BTreeMap<Key, BTreeMap<ServerId, rsa::SignatureShare>>,
    ) {
        let key = (round, STATE_ITEM);
        let digest: [u8; 32] = Sha256::digest(statement.encode()).into();
        // Kept for peers' proof requests, like every item's digest.
        state.digests.insert(key, digest);
        let mut shares = early.remove(&key).unwrap_or_default();
        if let Some(own) = state.own.get(&key) {
            shares.insert(self.me, own.clone());
        }
        state.rounds.insert(
            key,
            AnswerRound {
                batch: None,
                digest,
                requests: Arc::default(),
                answers: Arc::default(),
                waiting: Vec::new(),
                shares,
                bad: BTreeSet::new(),
                proofs_needed: false,
                proven: BTreeSet::new(),
                asked: BTreeSet::new(),
                started: Instant::now(),
                escalated: None,
                state: Some((statement, tree)),
            },
        );
        self.try_combine(state, key);
    }

    /// A state statement's signature combined (and verified by `combine_digest`): local
    /// lookups are served from it if it is newer than the one they use, and it is stored so
    /// that a restart can serve it again. Older statements still collecting are given up.
    fn publish_state(
        &self,
        state: &mut State,
        statement: StateStatement,
        tree: Arc<StateTree>,
        signature: rsa::Signature,
    ) {
        state
            .rounds
            .retain(|(round, item), _| *item != STATE_ITEM || *round > statement.round);
        let newer = self
            .directory_state
            .borrow()
            .as_ref()
            .is_none_or(|current| current.statement().round < statement.round);
        if !newer {
            return;
        }
        let signature = signature.as_bytes().to_vec();
        match SignedState::new(statement, signature.clone(), tree) {
            Ok(signed) => {
                self.directory_state.send_replace(Some(Arc::new(signed)));
                debug!(
                    round = statement.round,
                    height = statement.height,
                    entries = statement.count,
                    "directory state signed"
                );
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || {
                    let saved = store.save_directory_state(
                        statement.round,
                        &statement.encode(),
                        &signature,
                    );
                    if let Err(error) = saved {
                        error!(%error, "cannot store the signed directory state");
                    }
                });
            }
            Err(error) => error!(%error, "a signed directory state that is not its tree's"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Answer shares.

    fn add_share(&self, state: &mut State, from: ServerId, key: Key, share: rsa::SignatureShare) {
        if let Some(answer_round) = state.rounds.get_mut(&key) {
            match answer_round.shares.get(&from) {
                Some(kept) if *kept == share => return,
                Some(_) => {
                    self.fault(from, "equivocation", "two answer shares for one item");
                    return;
                }
                None => {
                    answer_round.shares.insert(from, share);
                }
            }
            if answer_round.proofs_needed && from != self.me && answer_round.asked.insert(from) {
                self.send(
                    from,
                    &NodeMessage::ProofRequest {
                        round: key.0,
                        item: key.1,
                    },
                );
            }
            self.try_combine(state, key);
            return;
        }
        let round = key.0;
        if round >= self.executed_next
            && round < self.executed_next + EARLY_SHARE_ROUNDS_MAX
            && state.early_count < EARLY_SHARES_MAX
        {
            let slot = state.early.entry(key).or_default();
            match slot.get(&from) {
                Some(kept) if *kept != share => {
                    self.fault(from, "equivocation", "two answer shares for one item");
                }
                Some(_) => {}
                None => {
                    slot.insert(from, share);
                    state.early_count += 1;
                }
            }
        }
    }

    fn try_combine(&self, state: &mut State, item_key: Key) {
        let (round, item) = item_key;
        let threshold = self.threshold();
        let key = &self.group.service;
        loop {
            let Some(answer_round) = state.rounds.get_mut(&item_key) else {
                return;
            };
            // Own share first: it is known good.
            let mut candidates: Vec<rsa::SignatureShare> = Vec::new();
            if let Some(own) = answer_round.shares.get(&self.me) {
                candidates.push(own.clone());
            }
            for (server, share) in &answer_round.shares {
                if *server == self.me || answer_round.bad.contains(server) {
                    continue;
                }
                if answer_round.proofs_needed && !answer_round.proven.contains(server) {
                    continue;
                }
                candidates.push(share.clone());
            }
            if candidates.len() < threshold {
                return;
            }
            candidates.truncate(threshold);
            match key.combine_digest(&answer_round.digest, &candidates) {
                Ok(signature) => {
                    let Some(answer_round) = state.rounds.remove(&item_key) else {
                        return;
                    };
                    self.metrics
                        .signatures_combined
                        .fetch_add(1, Ordering::Relaxed);
                    self.release(state, item_key, answer_round, signature);
                    return;
                }
                Err(CombineError::Crypto(CryptoError::InvalidShare(culprit))) => {
                    // Out of range: the sender is named without a proof.
                    answer_round.bad.insert(culprit);
                    answer_round.shares.remove(&culprit);
                    self.fault(culprit, "invalid_share", "answer share out of range");
                    self.escalate(state, item_key);
                }
                Err(error) => {
                    if answer_round.proofs_needed {
                        // Proven shares that do not combine: cannot happen with a consistent
                        // key; wait for more rather than loop.
                        error!(round, item, %error, "proven answer shares do not combine");
                        return;
                    }
                    debug!(round, item, %error, "optimistic combination failed; asking for proofs");
                    answer_round.proofs_needed = true;
                    let peers: Vec<ServerId> = answer_round
                        .shares
                        .keys()
                        .copied()
                        .filter(|server| *server != self.me)
                        .collect();
                    for peer in peers {
                        if answer_round.asked.insert(peer) {
                            self.send(peer, &NodeMessage::ProofRequest { round, item });
                        }
                    }
                    // A bad share among the `t + 1` on duty: the others must sign too.
                    self.escalate(state, item_key);
                }
            }
        }
    }

    /// Queues this server's share of `key` for the signer unless it exists or is under way;
    /// nothing when the item's digest is unknown here (not executed yet, or long forgotten: the
    /// combiner asks again).
    fn ask_own_share(&self, state: &mut State, key: Key) {
        if state.own.contains_key(&key)
            || !state.digests.contains_key(&key)
            || !state.signing.insert(key)
        {
            return;
        }
        state.on_demand.insert(key);
        while state.on_demand.len() > ON_DEMAND_MAX {
            if let Some(dropped) = state.on_demand.pop_first() {
                state.signing.remove(&dropped);
            }
        }
        self.sign_on_demand(state);
    }

    /// Hands queued on-demand items to the signer while its queue has room (the rest wait for
    /// the next tick: on-demand signing never blocks the coordinator).
    fn sign_on_demand(&self, state: &mut State) {
        while let Some(key) = state.on_demand.first().copied() {
            let Some(digest) = state.digests.get(&key).copied() else {
                state.on_demand.pop_first();
                continue;
            };
            let job = SignJob::Sign {
                round: key.0,
                item: key.1,
                digest,
            };
            match self.signer.try_send(job) {
                Ok(()) => {
                    state.on_demand.pop_first();
                }
                Err(std::sync::mpsc::TrySendError::Full(_)) => return,
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                    state.on_demand.clear();
                    return;
                }
            }
        }
    }

    /// Asks every peer for its share of `key` (peers off duty sign it then) and signs it here
    /// if this server has not: the combiner cannot count on the servers on duty any more.
    fn escalate(&self, state: &mut State, key: Key) {
        let Some(answer_round) = state.rounds.get_mut(&key) else {
            return;
        };
        if answer_round
            .escalated
            .is_some_and(|at| at.elapsed() < SHARE_REQUEST_REPEAT)
        {
            return;
        }
        answer_round.escalated = Some(Instant::now());
        self.metrics
            .share_escalations
            .fetch_add(1, Ordering::Relaxed);
        let ask = NodeMessage::ShareRequest {
            round: key.0,
            item: key.1,
        };
        let _ = self.links.broadcast(Bytes::from(ask.to_bytes()));
        self.ask_own_share(state, key);
    }

    /// Finds the items that cannot gather `t + 1` shares from the servers on duty — one of them
    /// is silent (no share for [`SHARE_SILENCE`]), has moved past the item without its share, or
    /// sent a bad one — and asks every peer for them (again every [`SHARE_REQUEST_REPEAT`]).
    fn escalate_missing_shares(&self, state: &mut State) {
        let threshold = self.threshold();
        let parameters = self.group.parameters;
        let mut stuck = Vec::new();
        for (key, answer_round) in &state.rounds {
            if answer_round
                .escalated
                .is_some_and(|at| at.elapsed() < SHARE_REQUEST_REPEAT)
            {
                continue;
            }
            if answer_round.escalated.is_some() {
                stuck.push(*key);
                continue;
            }
            let good = answer_round
                .shares
                .keys()
                .filter(|server| !answer_round.bad.contains(server))
                .count();
            let waited = answer_round.started.elapsed() >= SHARE_SILENCE;
            let coming = (1..=parameters.servers)
                .filter_map(ServerId::new)
                .filter(|server| {
                    on_duty(parameters, *server, key.0, key.1)
                        && !answer_round.shares.contains_key(server)
                        && !answer_round.bad.contains(server)
                })
                .filter(|server| {
                    if *server == self.me {
                        return true;
                    }
                    match state.peer_shares.get(server) {
                        Some((latest, at)) => *latest <= *key && at.elapsed() < SHARE_SILENCE,
                        None => !waited,
                    }
                })
                .count();
            if good + coming < threshold {
                stuck.push(*key);
            }
        }
        for key in stuck {
            self.escalate(state, key);
        }
    }

    fn on_answer_proof(
        &self,
        state: &mut State,
        from: ServerId,
        key: Key,
        share: rsa::SignatureShare,
        proof: rsa::ShareProof,
    ) {
        let Some(answer_round) = state.rounds.get_mut(&key) else {
            return;
        };
        if !answer_round.asked.contains(&from) || answer_round.proven.contains(&from) {
            return;
        }
        let context = Context::new(ANSWER_PROOF_PURPOSE, self.instance.as_bytes());
        let valid = self
            .group
            .service
            .verify_share_digest(&context, &answer_round.digest, &share, &proof)
            .is_ok()
            && answer_round
                .shares
                .get(&from)
                .is_none_or(|kept| *kept == share);
        if valid {
            answer_round.shares.insert(from, share);
            answer_round.proven.insert(from);
        } else {
            answer_round.bad.insert(from);
            answer_round.shares.remove(&from);
            self.fault(from, "invalid_share", "answer share that fails its proof");
        }
        self.try_combine(state, key);
    }

    /// Hands every waiting client of the round its signed answer.
    ///
    /// The signature needs no second check here: `combine_digest` returns only a signature it
    /// verified over this batch's statement (`y^e = x`). Verifying it again per answer cost a full
    /// RSA-2048 operation per request (a third of the replica's CPU at saturation, docs/bench.md);
    /// what differs per answer is only its Merkle path, taken from this server's own tree.
    fn release(
        &self,
        state: &mut State,
        (round, item): Key,
        answer_round: AnswerRound,
        signature: rsa::Signature,
    ) {
        let AnswerRound {
            batch,
            requests,
            answers,
            waiting,
            state: committed,
            ..
        } = answer_round;
        if let Some((statement, tree)) = committed {
            self.publish_state(state, statement, tree, signature);
            return;
        }
        let Some(batch) = batch else {
            return;
        };
        for (index, reply) in waiting {
            state.waiter_count = state.waiter_count.saturating_sub(1);
            let (Some(request), Some(answer)) = (requests.get(index), answers.get(index)) else {
                continue;
            };
            if item != 0 {
                // The service key signed this answer's own message; `combine_digest` verified it.
                self.metrics.answers_signed.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Answered::Signed {
                    request: request.clone(),
                    answer: answer.clone(),
                    signature: signature.clone(),
                });
                continue;
            }
            let Some(signed) =
                batch.signed_answer(index, answer.clone(), signature.as_bytes().to_vec())
            else {
                continue;
            };
            // The path comes from this server's own tree over the batch (its construction is
            // tested for every batch size, services/tests/answers.rs); rechecking it per answer
            // cost 12 hashes per request at saturation, so only debug builds (the tests) do.
            debug_assert_eq!(
                answers::root_from_path(
                    index as u64,
                    batch.count(),
                    answers::leaf(signed.position, request, answer),
                    &signed.path
                ),
                Some(batch.root()),
                "round {round}: an answer's path does not lead to the batch root"
            );
            self.metrics.answers_signed.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(Answered::Batch(signed));
        }
        self.metrics
            .waiting_clients
            .store(state.waiter_count as u64, Ordering::Relaxed);
    }

    // -----------------------------------------------------------------------------------------
    // Peers.

    fn on_peer(
        &mut self,
        state: &mut State,
        from: ServerId,
        message: NodeMessage,
        served: &mpsc::Sender<ServerId>,
    ) {
        match message {
            // The protocol task keeps these.
            NodeMessage::Protocol(_) | NodeMessage::Forward { .. } => {}
            NodeMessage::AnswerShare { round, item, share } => {
                if share.id() != from {
                    self.fault(from, "unexpected_message", "answer share of another server");
                    return;
                }
                let latest = state
                    .peer_shares
                    .get(&from)
                    .map_or((round, item), |(key, _)| (*key).max((round, item)));
                state.peer_shares.insert(from, (latest, Instant::now()));
                self.add_share(state, from, (round, item), share);
            }
            NodeMessage::ShareRequest { round, item } => {
                // A share sent once already costs no exponentiation to send again; an item off
                // duty is signed now (once: the signer broadcasts the share to every peer).
                if let Some(share) = state.own.get(&(round, item)) {
                    let again = NodeMessage::AnswerShare {
                        round,
                        item,
                        share: share.clone(),
                    };
                    self.send(from, &again);
                } else {
                    self.ask_own_share(state, (round, item));
                }
            }
            NodeMessage::ProofRequest { round, item } => {
                if let (Some(share), Some(digest)) = (
                    state.own.get(&(round, item)),
                    state.digests.get(&(round, item)),
                ) {
                    let job = SignJob::Prove {
                        round,
                        item,
                        digest: *digest,
                        share: share.clone(),
                        peer: from,
                    };
                    if self.signer.try_send(job).is_err() {
                        debug!(peer = %from, round, "signer busy; proof request dropped");
                    }
                }
            }
            NodeMessage::AnswerProof {
                round,
                item,
                share,
                proof,
            } => {
                if share.id() != from {
                    self.fault(from, "unexpected_message", "answer proof of another server");
                    return;
                }
                self.on_answer_proof(state, from, (round, item), share, proof);
            }
            NodeMessage::CheckpointShare { statement, share } => {
                if share.id() != from {
                    self.fault(
                        from,
                        "unexpected_message",
                        "checkpoint share of another server",
                    );
                    return;
                }
                // The peer executed the statement's round: where it stands at least (a share
                // proves nothing about the group, only that this peer claims it; a false claim
                // costs a `Hello` every `HELLO_RETRY` and a transfer request that times out).
                let claimed = statement.round.saturating_add(1);
                let known = state.peer_rounds.entry(from).or_insert(claimed);
                *known = (*known).max(claimed);
                if statement.round >= self.executed_next.saturating_add(self.rounds_retained) {
                    // The peer is far ahead: find out where the group stands.
                    self.say_hello(state);
                }
                self.on_checkpoint_share(state, from, statement, share);
            }
            NodeMessage::Hello { next_round } => {
                state.peer_rounds.insert(from, next_round);
                let status = NodeMessage::Status {
                    next_round: self.executed_next,
                    certificate: self.certificate.clone(),
                };
                self.send_control(from, &status);
            }
            NodeMessage::Status {
                next_round,
                certificate,
            } => self.on_status(state, from, next_round, certificate),
            NodeMessage::FetchRounds { from_round } => {
                self.serve_rounds(state, from, from_round, served)
            }
            NodeMessage::Rounds {
                records,
                certificate,
            } => self.on_rounds(state, from, records, certificate),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Checkpoints.

    fn on_checkpoint_share(
        &mut self,
        state: &mut State,
        from: ServerId,
        statement: CheckpointStatement,
        share: bls::SignatureShare,
    ) {
        let latest = self.certificate.as_ref().map(|c| c.statement.round);
        if latest.is_some_and(|latest| statement.round <= latest) {
            return;
        }
        if !state.checkpoint_shares.contains_key(&statement.round)
            && state.checkpoint_shares.len() >= CHECKPOINT_ROUNDS_PENDING_MAX
        {
            // Keep the lowest rounds: they complete first.
            match state.checkpoint_shares.last_key_value() {
                Some((highest, _)) if *highest > statement.round => {
                    state.checkpoint_shares.pop_last();
                }
                _ => return,
            }
        }
        let slot = state.checkpoint_shares.entry(statement.round).or_default();
        match slot.get(&from) {
            Some((kept, _)) if *kept != statement => {
                self.fault(
                    from,
                    "equivocation",
                    "two checkpoint statements for one round",
                );
                return;
            }
            Some(_) => return,
            None => {
                slot.insert(from, (statement, share));
            }
        }
        let matching: Vec<bls::SignatureShare> = slot
            .values()
            .filter(|(kept, _)| *kept == statement)
            .map(|(_, share)| *share)
            .collect();
        if matching.len() < self.group.parameters.agreement_threshold() {
            return;
        }
        let context = Context::new(CHECKPOINT_PURPOSE, self.instance.as_bytes());
        let combined = self
            .group
            .agreement
            .combine(&context, &statement.signed_bytes(), &matching);
        let signature = match combined {
            Ok(combined) => {
                for culprit in combined.faulty {
                    self.fault(culprit, "invalid_share", "checkpoint share");
                    if let Some(slot) = state.checkpoint_shares.get_mut(&statement.round) {
                        slot.remove(&culprit);
                    }
                }
                combined.value
            }
            Err(CombineError::NotEnoughValidShares { faulty, .. }) => {
                for culprit in faulty {
                    self.fault(culprit, "invalid_share", "checkpoint share");
                    if let Some(slot) = state.checkpoint_shares.get_mut(&statement.round) {
                        slot.remove(&culprit);
                    }
                }
                return;
            }
            Err(error) => {
                debug!(%error, "checkpoint shares do not combine");
                return;
            }
        };
        let certificate = CheckpointCertificate {
            statement,
            signature,
        };
        if let Some(own) = state.own_statements.get(&statement.round)
            && *own != statement
        {
            error!(
                round = statement.round,
                "the group certified a checkpoint that differs from this server's state"
            );
        }
        state.checkpoint_shares = state.checkpoint_shares.split_off(&(statement.round + 1));
        self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        debug!(
            round = statement.round,
            height = statement.height,
            "checkpoint certified"
        );
        let store = self.store.clone();
        let stored = certificate.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.save_certificate(&stored) {
                error!(%error, "cannot store a checkpoint certificate");
            }
        });
        self.certificate = Some(certificate.clone());
        self.consider_certificate(state, certificate);
    }

    // -----------------------------------------------------------------------------------------
    // Catch-up.

    fn on_status(
        &mut self,
        state: &mut State,
        from: ServerId,
        next_round: u64,
        certificate: Option<CheckpointCertificate>,
    ) {
        state.peer_rounds.insert(from, next_round);
        state.answered_hello.insert(from);
        if let Some(certificate) = certificate
            && certificate.statement.round >= self.executed_next
        {
            if certificate
                .verify(&self.group, self.instance.as_bytes())
                .is_err()
            {
                self.fault(from, "invalid_proof", "checkpoint certificate");
                return;
            }
            self.consider_certificate(state, certificate);
        }
        if next_round > self.executed_next {
            // Atomic broadcast's own catch-up brings the rounds no certificate covers.
            let _ = self.catch_up.send(next_round - 1);
        }
        self.update_catching_up(state);
    }

    /// A verified certificate: if it covers rounds this server has not executed, fetch them.
    fn consider_certificate(&mut self, state: &mut State, certificate: CheckpointCertificate) {
        if certificate.statement.round < self.executed_next {
            return;
        }
        if state
            .best_certificate
            .as_ref()
            .is_none_or(|best| best.statement.round < certificate.statement.round)
        {
            state.best_certificate = Some(certificate.clone());
        }
        // A certificate only `rounds_retained / 2` rounds ahead is left to the ordering's own
        // catch-up, which is cheaper; further ones need the log.
        let gap = certificate.statement.round + 1 - self.executed_next;
        if state.transfer.is_none() && gap >= self.rounds_retained / 2 {
            self.start_transfer(state, certificate, BTreeSet::new());
        }
    }

    fn start_transfer(
        &mut self,
        state: &mut State,
        target: CheckpointCertificate,
        mut tried: BTreeSet<ServerId>,
    ) {
        if target.statement.round < self.executed_next {
            return;
        }
        let round = target.statement.round;
        let candidates: Vec<ServerId> = state
            .peer_rounds
            .iter()
            .filter(|(peer, next)| **next > round && **peer != self.me)
            .map(|(peer, _)| *peer)
            .collect();
        if candidates.is_empty() {
            return;
        }
        if candidates.iter().all(|peer| tried.contains(peer)) {
            // Everyone was asked once: start over (a silent peer may have come back).
            tried.clear();
        }
        let Some(peer) = candidates.into_iter().find(|peer| !tried.contains(peer)) else {
            return;
        };
        tried.insert(peer);
        info!(%peer, from_round = self.executed_next, certified = round, "state transfer");
        self.send_control(
            peer,
            &NodeMessage::FetchRounds {
                from_round: self.executed_next,
            },
        );
        state.transfer = Some(Transfer {
            peer,
            target,
            from_round: self.executed_next,
            records: Vec::new(),
            bytes: 0,
            last_progress: Instant::now(),
            tried,
        });
    }

    fn on_rounds(
        &mut self,
        state: &mut State,
        from: ServerId,
        records: Vec<RoundRecord>,
        certificate: Option<CheckpointCertificate>,
    ) {
        let Some(transfer) = state.transfer.as_mut() else {
            return;
        };
        if transfer.peer != from {
            return;
        }
        transfer.last_progress = Instant::now();
        let expected = transfer.from_round + transfer.records.len() as u64;
        let contiguous = records
            .iter()
            .enumerate()
            .all(|(offset, record)| record.round == expected + offset as u64);
        if !contiguous {
            self.fault(from, "invalid_value", "transferred rounds out of order");
            self.ask_next_transfer_peer(state);
            return;
        }
        transfer.bytes += records.iter().map(RoundRecord::encoded_len).sum::<usize>();
        transfer.records.extend(records);
        if transfer.bytes > TRANSFER_BUFFER_BYTES_MAX {
            warn!(peer = %from, "state transfer exceeds the buffer; giving up on this peer");
            self.ask_next_transfer_peer(state);
            return;
        }
        let Some(certificate) = certificate else {
            if transfer.records.is_empty() {
                // Nothing to serve (the peer holds no certificate at or after the round asked
                // for): the next peer.
                debug!(peer = %from, "state transfer peer has nothing to serve");
                self.ask_next_transfer_peer(state);
            }
            return;
        };
        // The last part: its certificate must verify and cover the rounds sent (an honest peer
        // ends every transfer at a certificate at or after the round asked for); the executor
        // checks the log against it.
        let covers =
            certificate.statement.round + 1 == transfer.from_round + transfer.records.len() as u64;
        if !covers {
            self.fault(
                from,
                "invalid_value",
                "a transfer that does not end at its certificate",
            );
            self.ask_next_transfer_peer(state);
            return;
        }
        if certificate
            .verify(&self.group, self.instance.as_bytes())
            .is_err()
        {
            self.fault(
                from,
                "invalid_proof",
                "checkpoint certificate of a transfer",
            );
            self.ask_next_transfer_peer(state);
            return;
        }
        let records = std::mem::take(&mut transfer.records);
        transfer.bytes = 0;
        let input = ExecInput::Transfer {
            peer: from,
            records,
            certificate,
        };
        self.hand_to_executor(state, input);
    }

    /// Gives up on the transfer's current peer and asks the next one for the same target.
    fn ask_next_transfer_peer(&mut self, state: &mut State) {
        if let Some(transfer) = state.transfer.take() {
            self.start_transfer(state, transfer.target, transfer.tried);
        }
    }

    fn hand_to_executor(&self, state: &mut State, input: ExecInput) {
        match self.execution.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(input)) => state.pending_input = Some(input),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_transfer_done(
        &mut self,
        state: &mut State,
        peer: ServerId,
        accepted: bool,
        next_round: u64,
        applied: Option<Box<CheckpointCertificate>>,
    ) {
        self.executed_next = self.executed_next.max(next_round);
        let Some(transfer) = state.transfer.take() else {
            return;
        };
        if !accepted {
            self.fault(
                peer,
                "invalid_value",
                "a log that does not match its checkpoint certificate",
            );
            self.start_transfer(state, transfer.target, transfer.tried);
            return;
        }
        if let Some(applied) = applied
            && self
                .certificate
                .as_ref()
                .is_none_or(|latest| latest.statement.round < applied.statement.round)
        {
            self.certificate = Some(*applied);
        }
        // More certified rounds may be out there; the tail comes from atomic broadcast.
        if let Some(best) = state.best_certificate.clone()
            && best.statement.round >= self.executed_next
        {
            self.start_transfer(state, best, BTreeSet::new());
        } else if let Some(highest) = state.peer_rounds.values().max().copied()
            && highest > self.executed_next
        {
            let _ = self.catch_up.send(highest - 1);
        }
        self.say_hello(state);
        self.update_catching_up(state);
    }

    /// Sends `peer` the rounds from `from_round` up to a stored certificate (see [`serve`]), in
    /// parts of at most [`TRANSFER_REPLY_BYTES_MAX`], the certificate on the last part.
    fn serve_rounds(
        &self,
        state: &mut State,
        peer: ServerId,
        from_round: u64,
        served: &mpsc::Sender<ServerId>,
    ) {
        if state.serving.len() >= TRANSFERS_SERVED_MAX || !state.serving.insert(peer) {
            return;
        }
        let store = self.store.clone();
        let links = self.links.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let outcome = serve(store, links, peer, from_round).await;
            if let Err(error) = outcome {
                debug!(%peer, %error, "state transfer not served");
            }
            let _ = served.send(peer).await;
        });
    }
}

/// Serves one `FetchRounds`: the rounds from `from_round` on, ending at a certificate this
/// server holds the log for — its latest one while the records sent stay below
/// [`TRANSFER_ROUNDS_BYTES_MAX`], else the first one after that many bytes. An empty reply
/// without a certificate when it has none at or after `from_round`.
async fn serve(
    store: Arc<Store>,
    links: LinksHandle,
    peer: ServerId,
    from_round: u64,
) -> Result<(), String> {
    let reader = store.clone();
    let latest = tokio::task::spawn_blocking(move || {
        // Certificates may be formed from peers' shares before this server executed their
        // round: only those within its own log can be served.
        let executed = reader.state()?.next_round;
        match executed.checked_sub(1) {
            Some(last_executed) => reader.certificate_through(last_executed),
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let Some(latest) = latest.filter(|latest| latest.statement.round >= from_round) else {
        let empty = NodeMessage::Rounds {
            records: Vec::new(),
            certificate: None,
        };
        return links
            .send_control(peer, Bytes::from(empty.to_bytes()))
            .await
            .map_err(|e| e.to_string());
    };
    let mut certificate = latest;
    let mut next = from_round;
    let mut sent = 0;
    loop {
        if sent >= TRANSFER_ROUNDS_BYTES_MAX {
            // Enough for one transfer: end at the first certificate from here (there is one:
            // the latest lies at or after `next`).
            let reader = store.clone();
            let first = tokio::task::spawn_blocking(move || reader.certificate_from(next))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if let Some(first) = first
                && first.statement.round < certificate.statement.round
            {
                certificate = first;
            }
        }
        let last = certificate.statement.round;
        let reader = store.clone();
        let records = tokio::task::spawn_blocking(move || {
            reader.rounds(next, last, TRANSFER_REPLY_BYTES_MAX)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let Some(end) = records.last().map(|record| record.round) else {
            return Err(format!("round {next} missing from the log"));
        };
        sent += records.iter().map(RoundRecord::encoded_len).sum::<usize>();
        let done = end >= last;
        let message = NodeMessage::Rounds {
            records,
            certificate: done.then(|| certificate.clone()),
        };
        links
            .send_control(peer, Bytes::from(message.to_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        if done {
            return Ok(());
        }
        next = end + 1;
    }
}
