//! The sintra replica (docs/node.md): atomic broadcast over the authenticated links of
//! `sintra-net`, a deterministic service, a transactional store, and answers signed with one
//! threshold-RSA signature per round.
//!
//! Tasks and threads (each arrow a bounded channel):
//!
//! ```text
//! links ──▶ protocol task (Party, Abc) ──▶ sender task (fence, links)
//!   ▲              │ delivered rounds          
//!   │              ▼                            
//!   │         executor thread (service, store) ──▶ signer thread (RSA shares) ──▶ links
//!   │              │ executed rounds, own shares
//!   │              ▼
//!   └──────── coordinator task (answers, checkpoints, catch-up) ◀── gateway (HTTP, stream)
//! ```
//!
//! The protocol task never blocks on IO or RSA; every other task may wait only on tasks to its
//! right or below it, so the channels cannot deadlock. [`run`] is `sintra node --config FILE`;
//! [`Node::start`] starts a replica from a [`NodeConfig`] (what tests use).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod coordinator;
mod executor;
pub mod gateway;
pub mod message;
pub mod metrics;
pub mod protocol;
mod signer;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rand::RngCore;
use sintra_config::OrderingMode;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{GroupKeys, ServerKeys};
use sintra_crypto::encoding::Decode;
use sintra_net::{
    LinkKeypair, LinkLimits, LinkPublicKey, Links, LinksConfig, LinksHandle, PeerConfig,
};
use sintra_protocols::abc::{Abc, AbcConfig};
use sintra_protocols::oabc::{self, Oabc, OabcConfig};
use sintra_protocols::scabc::Scabc;
use sintra_protocols::{InstanceId, Party};
use sintra_services::ca::{self, Ca, CaPolicy};
use sintra_services::directory::{self, Directory, SignedState, StateStatement};
use sintra_services::kv::{self, KvService};
use sintra_services::notary::{self, Notary};
use sintra_services::router::Router;
use sintra_services::{ExecutionContext, Service};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use coordinator::{TRANSFER_REPLY_BYTES_MAX, WAITING_CLIENTS_MAX};
pub use metrics::Metrics;
use store::FenceSpace;
pub use store::{LogEntry, Store, StoreError};

/// The atomic-broadcast instance of a group (bound into every protocol signature and into the
/// checkpoint and answer-proof contexts).
pub const ABC_INSTANCE: &str = "sintra/abc";
/// The secure causal atomic broadcast instance of a group (confidential requests); its ordering
/// runs in `sintra/scabc/abc`.
pub const SCABC_INSTANCE: &str = "sintra/scabc";
/// Log entries replayed per read when the service is rebuilt at start-up.
const REPLAY_CHUNK: u64 = 4096;
/// Client submissions waiting for the protocol task (default of
/// [`Tunables::submit_queue_max`]).
pub const SUBMIT_QUEUE_MAX: usize = 4096;
/// Default of [`Tunables::request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Tunables::http_body_bytes_max`] (a kv put of a 60 KiB value fits).
pub const HTTP_BODY_BYTES_MAX: usize = 64 << 10;
/// The longest a stopping replica drains (finishes the rounds under way) before it stops anyway:
/// peers that are gone cannot help finish a round.
pub const DRAIN_MAX: Duration = Duration::from_secs(5);
/// The streaming port is the gateway port plus this when the configuration names none.
pub const STREAM_PORT_OFFSET: u16 = 1000;

/// Settings with defaults.
#[derive(Debug, Clone)]
pub struct Tunables {
    /// Rounds between checkpoints (at least 1; should stay below
    /// `sintra_protocols::abc::ROUNDS_RETAINED` so that the rounds after the last certificate
    /// can always be caught up inside atomic broadcast).
    pub checkpoint_rounds: u64,
    /// Atomic broadcast's limits (identical at every server).
    pub abc: AbcConfig,
    /// How long a client waits for its signed answer before `504`.
    pub request_timeout: Duration,
    /// Largest HTTP request body (`413` beyond).
    pub http_body_bytes_max: usize,
    /// Submissions queued for the protocol task (`503` beyond).
    pub submit_queue_max: usize,
    /// Peers every client request is also forwarded to (default 0: each request is proposed
    /// by the server the client chose; `t` makes it pending at `t + 1` servers, which atomic
    /// broadcast's validity needs against a Byzantine agreement, at `t + 1` times the bandwidth
    /// of requests). While a restarted server is silent behind its fence it forwards to all.
    pub forward_peers: usize,
    /// How the group orders requests (the same at every server).
    pub ordering: OrderingMode,
    /// Optimistic ordering: how long requests wait here without a delivery before this server
    /// complains about the leader.
    pub patience: Duration,
    /// Optimistic ordering: delivered batches between checkpoints (replaces
    /// `checkpoint_rounds`, since a batch is one round of the log).
    pub checkpoint_batches: u64,
    /// Optimistic ordering: the leader sends a batch that is not full at most once per this
    /// long.
    pub batch_interval: Duration,
    /// Test-only (feature `byzantine`): this server signs wrong answer shares (and proves them
    /// as such when asked) and hands its clients altered answers, so that tests can show the
    /// others detect and name it and clients reject what it says.
    #[cfg(feature = "byzantine")]
    pub byzantine: bool,
}

impl Tunables {
    /// Whether this server plays the Byzantine replica (always false without the feature).
    pub(crate) fn is_byzantine(&self) -> bool {
        #[cfg(feature = "byzantine")]
        {
            self.byzantine
        }
        #[cfg(not(feature = "byzantine"))]
        {
            false
        }
    }
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            checkpoint_rounds: 4,
            abc: AbcConfig::default(),
            request_timeout: REQUEST_TIMEOUT,
            http_body_bytes_max: HTTP_BODY_BYTES_MAX,
            submit_queue_max: SUBMIT_QUEUE_MAX,
            forward_peers: 0,
            ordering: OrderingMode::Randomized,
            patience: Duration::from_millis(1000),
            checkpoint_batches: 64,
            batch_interval: Duration::from_millis(50),
            #[cfg(feature = "byzantine")]
            byzantine: false,
        }
    }
}

/// What the services besides kv and the directory need (all public; every server of the group
/// must be given the same, or their services diverge and no checkpoint certifies).
#[derive(Debug, Clone, Default)]
pub struct ServiceFiles {
    /// The notary's certificate (DER), issued by the dealer to the service key; `None`: no notary.
    pub tsa_certificate: Option<Vec<u8>>,
    /// The CA's root certificate (DER) and its issuing policy; `None`: no CA.
    pub ca: Option<(Vec<u8>, CaPolicy)>,
}

impl ServiceFiles {
    /// The services of a replica, routed by request tag: kv (`0x01..=0x02`), the notary
    /// (`0x10..=0x1f`) if configured, the CA (`0x20..=0x2f`) if configured, the directory
    /// (`0x30..=0x3f`). Every server builds them in this order (the snapshot's order).
    pub fn router(&self, group: &GroupKeys) -> Result<Router, NodeError> {
        let service = |error: &dyn std::fmt::Display| NodeError::Service(error.to_string());
        let mut router = Router::new()
            .with(kv::TAGS, Box::new(KvService::new()))
            .map_err(|e| service(&e))?;
        if let Some(der) = &self.tsa_certificate {
            let notary = Notary::new(der).map_err(|e| service(&e))?;
            if !notary.certifies(&group.service) {
                return Err(NodeError::Config(
                    "the notary certificate is not for the group's service key".into(),
                ));
            }
            router = router
                .with(notary::TAG_QUERY..=0x1f, Box::new(notary))
                .map_err(|e| service(&e))?;
        }
        if let Some((root, policy)) = &self.ca {
            let authority = Ca::new(root, policy.clone()).map_err(|e| service(&e))?;
            router = router
                .with(ca::TAG_ISSUE..=0x2f, Box::new(authority))
                .map_err(|e| service(&e))?;
        }
        router
            .with(directory::TAG_PUT..=0x3f, Box::new(Directory::new()))
            .map_err(|e| service(&e))
    }
}

/// Everything a replica needs to start.
pub struct NodeConfig {
    /// This server.
    pub id: ServerId,
    /// Where the links listen.
    pub listen: SocketAddr,
    /// Where the HTTP gateway listens.
    pub gateway_listen: SocketAddr,
    /// Where the streaming interface listens (`None`: gateway port + [`STREAM_PORT_OFFSET`]).
    pub stream_listen: Option<SocketAddr>,
    /// Every server of the group with its links address and pinned key (this one is skipped).
    pub peers: Vec<PeerConfig>,
    /// This server's link key pair.
    pub link_keypair: LinkKeypair,
    /// Bounds of the links.
    pub link_limits: LinkLimits,
    /// The group's public keys.
    pub group: Arc<GroupKeys>,
    /// This server's key shares.
    pub keys: Arc<ServerKeys>,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Settings.
    pub tunables: Tunables,
    /// What the notary and the CA need.
    pub services: ServiceFiles,
}

/// Why a replica did not start or stopped.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The configuration files.
    #[error("configuration: {0}")]
    Config(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listening socket or the links.
    #[error("network: {0}")]
    Network(String),
    /// The service's state could not be rebuilt.
    #[error("service: {0}")]
    Service(String),
}

/// A running replica.
pub struct Node {
    id: ServerId,
    gateway_addr: SocketAddr,
    stream_addr: SocketAddr,
    links: LinksHandle,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    shutdown: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    drained: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Opens the store, rebuilds the service from its snapshot and log, resumes atomic
    /// broadcast where the log ends, opens the links and the gateway, and starts every task.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let NodeConfig {
            id,
            listen,
            gateway_listen,
            stream_listen,
            peers,
            link_keypair,
            link_limits,
            group,
            keys,
            data_dir,
            tunables,
            services,
        } = config;
        if keys.id != id {
            return Err(NodeError::Config(format!(
                "the key shares are server {}'s, not {id}'s",
                keys.id
            )));
        }
        let instance = InstanceId::root("sintra")
            .and_then(|root| root.child("abc"))
            .ok_or_else(|| NodeError::Config("invalid instance id".into()))?;
        let scabc_instance = InstanceId::root("sintra")
            .and_then(|root| root.child("scabc"))
            .ok_or_else(|| NodeError::Config("invalid instance id".into()))?;
        let store_dir = data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&store_dir))
            .await
            .map_err(|error| NodeError::Config(error.to_string()))??;
        let store = Arc::new(store);
        let stored = store.state()?;
        let certificate = store.latest_certificate()?;

        // The service: the last own snapshot, then the log after it.
        let mut service = services.router(&group)?;
        // A second instance for the gateway: completing an answer (`Service::complete`) is a
        // pure function, so it needs no state of the executor's.
        let completer: Arc<Router> = Arc::new(services.router(&group)?);
        let mut replayed_from = 0;
        let mut signed_state = None;
        if let Some(snapshot) = store.snapshot()? {
            service
                .restore(&snapshot.bytes)
                .map_err(|error| NodeError::Service(error.to_string()))?;
            replayed_from = snapshot.height;
            signed_state = restored_directory_state(&store, &group, &service, &snapshot);
        }
        // The time of the last log entry (the directory's state statements carry it).
        let last_entry_time_ms = match stored.height.checked_sub(1) {
            Some(last) => store
                .log(last, stored.height)?
                .first()
                .map_or(0, |e| e.time_ms),
            None => 0,
        };
        for_each_entry(&store, replayed_from, stored.height, |entry| {
            service.execute(
                &ExecutionContext {
                    position: entry.position,
                    round: entry.round,
                    time_ms: entry.time_ms,
                },
                &entry.request,
            );
        })?;
        let mut seed = [0; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let party = Party::new(group.clone(), keys.clone(), seed);
        let abc_config = tunables.abc.clamped();
        let oabc_instance = InstanceId::root("sintra")
            .and_then(|root| root.child("oabc"))
            .ok_or_else(|| NodeError::Config("invalid instance id".into()))?;
        let (orderer, ordering_instance) = match tunables.ordering {
            OrderingMode::Randomized => {
                let recent = executor::recent_digests(&store, &instance, stored.next_round)
                    .map_err(NodeError::Service)?;
                let abc = Abc::resume(
                    instance.clone(),
                    abc_config,
                    stored.next_round,
                    stored.height,
                    recent,
                );
                (protocol::Orderer::Randomized(abc), instance.clone())
            }
            OrderingMode::Optimistic => {
                let config = OabcConfig {
                    abc: abc_config,
                    batch_interval_ms: tunables.batch_interval.as_millis() as u64,
                    ..OabcConfig::default()
                };
                let oabc = resume_optimistic(&store, &oabc_instance, config, &stored, &party)?;
                let optimistic = protocol::Optimistic {
                    oabc,
                    silent_through: stored.oabc_fence,
                    patience: tunables.patience,
                    waiting_since: None,
                    closed_epochs: stored.ordering_epoch,
                };
                (
                    protocol::Orderer::Optimistic(Box::new(optimistic)),
                    oabc_instance,
                )
            }
        };
        // Secure causal atomic broadcast resumes where the last executed round found it; ordering
        // rounds after that are delivered again from the others' decisions (silent behind its
        // fence), and positions this server may have shared before ask peers for replies.
        let mut scabc = Scabc::resume(
            scabc_instance.clone(),
            abc_config,
            stored.scabc.next_round,
            stored.scabc.height,
            std::iter::empty(),
        );
        if let Some(shared) = stored.scabc_share_fence {
            scabc.expect_replies_through(shared);
        }

        let (links, incoming) = Links::start(LinksConfig {
            me: id,
            listen_addr: listen,
            peers,
            keypair: link_keypair,
            limits: link_limits,
        })
        .await
        .map_err(|error| NodeError::Network(format!("links on {listen}: {error}")))?;
        let gateway_listener = TcpListener::bind(gateway_listen)
            .await
            .map_err(|error| NodeError::Network(format!("gateway on {gateway_listen}: {error}")))?;
        let gateway_addr = gateway_listener
            .local_addr()
            .map_err(|error| NodeError::Network(error.to_string()))?;
        let stream_listen = stream_listen.unwrap_or_else(|| {
            let mut addr = gateway_listen;
            addr.set_port(gateway_listen.port().wrapping_add(STREAM_PORT_OFFSET));
            addr
        });
        let stream_listener = TcpListener::bind(stream_listen)
            .await
            .map_err(|error| NodeError::Network(format!("stream on {stream_listen}: {error}")))?;
        let stream_addr = stream_listener
            .local_addr()
            .map_err(|error| NodeError::Network(error.to_string()))?;

        let metrics = Arc::new(Metrics::default());
        metrics.set_log_head(stored.height, stored.log_digest);
        metrics
            .next_round
            .store(stored.next_round, std::sync::atomic::Ordering::Relaxed);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (drain, drain_rx) = watch::channel(false);
        let (drained_tx, drained) = watch::channel(false);
        let (outbound_tx, outbound_rx) = mpsc::channel(protocol::OUTBOUND_QUEUE_MAX);
        let (execution_tx, execution_rx) = mpsc::channel(executor::EXECUTION_QUEUE_MAX);
        let (peer_tx, peer_rx) = mpsc::channel(coordinator::PEER_QUEUE_MAX);
        let (event_tx, event_rx) = mpsc::channel(coordinator::EVENT_QUEUE_MAX);
        let (register_tx, register_rx) = mpsc::channel(coordinator::REGISTER_QUEUE_MAX);
        let (submit_tx, submit_rx) = mpsc::channel(tunables.submit_queue_max.max(1));
        let (resume_tx, resume_rx) = watch::channel(None);
        let (catch_up_tx, catch_up_rx) = watch::channel(0);
        let (sign_tx, sign_rx) = std::sync::mpsc::sync_channel(signer::SIGN_QUEUE_MAX);
        let (directory_state_tx, directory_state_rx) = watch::channel(signed_state);
        let fence_value = Arc::new(AtomicU64::new(stored.fence.unwrap_or(0)));
        metrics.fence.store(
            stored.fence.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );

        let mut tasks = Vec::new();
        let mut threads = Vec::new();
        tasks.push(tokio::spawn(protocol::sender_loop(
            outbound_rx,
            links.clone(),
            store.clone(),
            [
                (FenceSpace::Abc, stored.fence),
                (FenceSpace::ScabcRounds, stored.scabc_fence),
                (FenceSpace::ScabcShares, stored.scabc_share_fence),
                (FenceSpace::OabcEpochs, stored.oabc_fence),
            ]
            .into_iter()
            .filter_map(|(space, fence)| Some((space, fence?)))
            .collect(),
            metrics.clone(),
            fence_value,
        )));
        let protocol = protocol::ProtocolTask {
            party,
            orderer,
            config: abc_config,
            instance: ordering_instance,
            scabc,
            scabc_instance,
            silent_through: stored.fence,
            scabc_silent_through: stored.scabc_fence,
            confidential: HashMap::new(),
            confidential_count: 0,
            opened: VecDeque::new(),
            registrations: register_tx.clone(),
            max_round_emitted: None,
            scabc_max_round_emitted: None,
            drain: drain_rx,
            drained: drained_tx,
            draining: false,
            open_round_seen: None,
            reported_round: stored.next_round,
            positions: stored.height,
            incoming,
            submissions: submit_rx,
            resume: resume_rx,
            catch_up: catch_up_rx,
            shutdown: shutdown_rx.clone(),
            outbound: outbound_tx,
            execution: execution_tx.clone(),
            coordinator: peer_tx,
            metrics: metrics.clone(),
            loopback: VecDeque::new(),
            forward_peers: tunables.forward_peers,
        };
        tasks.push(tokio::spawn(protocol.run()));

        let signer_group = group.clone();
        let signer_keys = keys.clone();
        let signer_instance = instance.as_bytes().to_vec();
        let signer_links = links.clone();
        let byzantine = tunables.is_byzantine();
        let signer_events = event_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("signer-{id}"))
                .spawn(move || {
                    signer::run(
                        sign_rx,
                        signer_group,
                        signer_keys,
                        signer_instance,
                        signer_links,
                        signer_events,
                        byzantine,
                    )
                })
                .map_err(|error| NodeError::Config(error.to_string()))?,
        );
        let executor = executor::Executor {
            me: id,
            parameters: group.parameters,
            store: store.clone(),
            service: Box::new(service),
            next_round: stored.next_round,
            height: stored.height,
            log_digest: stored.log_digest,
            last_entry_time_ms,
            checkpoint_rounds: match tunables.ordering {
                OrderingMode::Randomized => tunables.checkpoint_rounds.max(1),
                OrderingMode::Optimistic => tunables.checkpoint_batches.max(1),
            },
            instance: instance.clone(),
            keys: keys.clone(),
            links: links.clone(),
            signer: sign_tx.clone(),
            events: event_tx,
            resume: resume_tx,
            metrics: metrics.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("executor-{id}"))
                .spawn(move || executor.run(execution_rx))
                .map_err(|error| NodeError::Config(error.to_string()))?,
        );
        let coordinator = coordinator::Coordinator {
            rounds_retained: match tunables.ordering {
                OrderingMode::Randomized => sintra_protocols::abc::ROUNDS_RETAINED,
                OrderingMode::Optimistic => oabc::BATCHES_RETAINED,
            },
            me: id,
            group: group.clone(),
            instance,
            links: links.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            peers: peer_rx,
            events: event_rx,
            registrations: register_rx,
            execution: execution_tx,
            catch_up: catch_up_tx,
            signer: sign_tx,
            shutdown: shutdown_rx.clone(),
            executed_next: stored.next_round,
            certificate,
            directory_state: directory_state_tx,
        };
        tasks.push(tokio::spawn(coordinator.run()));
        let gateway = gateway::Gateway {
            id,
            submissions: submit_tx,
            registrations: register_tx,
            metrics: metrics.clone(),
            links: links.clone(),
            timeout: tunables.request_timeout,
            request_bytes_max: abc_config.request_bytes_max,
            byzantine,
            services: completer,
            files: Arc::new(services),
            directory_state: directory_state_rx,
        };
        tasks.push(tokio::spawn(gateway::serve_http(
            gateway_listener,
            gateway.clone(),
            tunables.http_body_bytes_max,
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(gateway::serve_stream(
            stream_listener,
            gateway,
            shutdown_rx,
        )));
        info!(
            server = %id,
            links = %links.local_addr(),
            gateway = %gateway_addr,
            stream = %stream_addr,
            round = stored.next_round,
            height = stored.height,
            "replica started"
        );
        Ok(Self {
            id,
            gateway_addr,
            stream_addr,
            links,
            metrics,
            store,
            shutdown,
            drain,
            drained,
            tasks,
            threads,
        })
    }

    /// This server.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// Where the HTTP gateway listens.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// Where the streaming interface listens.
    pub fn stream_addr(&self) -> SocketAddr {
        self.stream_addr
    }

    /// Where the links listen.
    pub fn links_addr(&self) -> SocketAddr {
        self.links.local_addr()
    }

    /// The links (for tests and operators: metrics, events).
    pub fn links(&self) -> &LinksHandle {
        &self.links
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The log entries at positions `from .. to`, from the store.
    pub fn log(&self, from: u64, to: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.store.log(from, to)
    }

    /// Stops the replica: first drains — takes no new requests, starts no round, finishes the
    /// rounds under way (at most [`DRAIN_MAX`]; docs/node.md, "Stopping") — then stops the
    /// tasks, lets the executor finish the rounds it was given (each committed to the store),
    /// lowers the send fence to the last round sent in, closes the links and the store.
    pub async fn shutdown(self) {
        let Self {
            id,
            links,
            store,
            shutdown,
            drain,
            mut drained,
            tasks,
            threads,
            ..
        } = self;
        let _ = drain.send(true);
        let started = std::time::Instant::now();
        match tokio::time::timeout(DRAIN_MAX, drained.wait_for(|done| *done)).await {
            Ok(_) => info!(server = %id, ms = started.elapsed().as_millis() as u64, "drained"),
            Err(_) => warn!(
                server = %id,
                "not drained within {} s (peers gone?): stopping with rounds under way",
                DRAIN_MAX.as_secs()
            ),
        }
        let _ = shutdown.send(true);
        for task in tasks {
            // The tasks watch the shutdown flag; the gateway lets requests in progress finish
            // only briefly, then is stopped.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        links.shutdown().await;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        if joined.is_err() {
            warn!(server = %id, "a replica thread panicked");
        }
        // Store readers spawned by the coordinator finish quickly; the file closes with the
        // last reference.
        for _ in 0..100 {
            if Arc::strong_count(&store) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(store);
        info!(server = %id, "replica stopped");
    }
}

/// Reads the log's entries at positions `from..to`, in chunks of [`REPLAY_CHUNK`]; an error
/// when one is missing.
fn for_each_entry(
    store: &Store,
    from: u64,
    to: u64,
    mut each: impl FnMut(LogEntry),
) -> Result<(), NodeError> {
    let mut position = from;
    while position < to {
        let entries = store.log(position, (position + REPLAY_CHUNK).min(to))?;
        if entries.is_empty() {
            return Err(NodeError::Service(format!(
                "the log has no entry at position {position} below {to}"
            )));
        }
        for entry in entries {
            position = entry.position + 1;
            each(entry);
        }
    }
    Ok(())
}

/// The optimistic ordering where this server left it: at the stored point (an empty store: at
/// the start), with the deduplication window of the requests before the point.
fn resume_optimistic(
    store: &Store,
    instance: &InstanceId,
    config: OabcConfig,
    stored: &store::StoredState,
    party: &Party,
) -> Result<Oabc, NodeError> {
    let Some(bytes) = &stored.ordering else {
        if stored.height > 0 {
            return Err(NodeError::Service(
                "the log was written by the randomized ordering; this server is configured \
                 for the optimistic one (tunables.ordering)"
                    .into(),
            ));
        }
        return Ok(Oabc::new(instance.clone(), config));
    };
    let point = oabc::Point::from_bytes(bytes).map_err(|error| {
        NodeError::Service(format!("the stored optimistic ordering point: {error}"))
    })?;
    if point.positions > stored.height {
        return Err(NodeError::Service(format!(
            "the stored optimistic ordering point is at position {} beyond the log's height {}",
            point.positions, stored.height
        )));
    }
    // The point may lag the log (it is stored with the last round of a step): the requests
    // between them are delivered again and skipped; the window covers those before the point.
    let from = point.positions.saturating_sub(oabc::DEDUP_POSITIONS as u64);
    let mut recent = Vec::new();
    for_each_entry(store, from, point.positions, |entry| {
        recent.push(sintra_protocols::abc::request_digest(
            instance,
            &entry.request,
        ));
    })?;
    info!(
        epoch = point.epoch,
        seq = point.seq,
        position = point.positions,
        height = stored.height,
        "optimistic ordering resumes"
    );
    // The prepare certificate stored before its last COMMIT left: what it reports.
    let certified = match &stored.oabc_certified {
        Some(bytes) => Some(oabc::Certified::from_bytes(bytes).map_err(|error| {
            NodeError::Service(format!("the stored prepare certificate: {error}"))
        })?),
        None => None,
    };
    Ok(Oabc::resume(
        instance.clone(),
        config,
        &point,
        certified.as_ref(),
        party,
        recent,
    ))
}

/// The signed directory state stored at the last checkpoint, when it is the state of the
/// restored snapshot (`service` holds it, before the log after it is replayed), so that local
/// lookups are served again right after a restart. `None` (with a log line) otherwise: they are
/// then served from the next checkpoint this server signs.
fn restored_directory_state(
    store: &Store,
    group: &GroupKeys,
    service: &Router,
    snapshot: &store::Snapshot,
) -> Option<Arc<SignedState>> {
    let store::StoredDirectoryState {
        statement,
        signature,
    } = match store.directory_state() {
        Ok(Some(stored)) => stored,
        Ok(None) => return None,
        Err(error) => {
            warn!(%error, "the stored directory state cannot be read");
            return None;
        }
    };
    let statement = StateStatement::decode(&statement).ok()?;
    if (statement.round, statement.height) != (snapshot.round, snapshot.height) {
        info!(
            signed_round = statement.round,
            snapshot_round = snapshot.round,
            "the last signed directory state is not the snapshot's; local lookups wait for the \
             next checkpoint"
        );
        return None;
    }
    let verified = sintra_crypto::rsa::Signature::from_raw_bytes(&signature)
        .ok()
        .filter(|signature| group.service.verify(&statement.encode(), signature).is_ok());
    if verified.is_none() {
        warn!("the stored directory state signature does not verify; not served");
        return None;
    }
    let signed = SignedState::new(statement, signature, service.state_tree()?).ok();
    if signed.is_none() {
        warn!("the stored directory state is not the restored directory's; not served");
    }
    signed.map(Arc::new)
}

/// The [`NodeConfig`] of `sintra node --config FILE`: loads the config, group and key files
/// (crate `sintra-config`) and resolves the peers' endpoints.
pub fn load_config(config_path: &Path) -> Result<NodeConfig, NodeError> {
    let loaded = sintra_config::load_server(config_path)
        .map_err(|error| NodeError::Config(error.to_string()))?;
    let secret = loaded.secrets.link_secret_bytes().ok_or_else(|| {
        NodeError::Config(format!(
            "{}: link_secret is not 64 hex digits",
            loaded.config.keys.display()
        ))
    })?;
    let mut peers = Vec::new();
    for entry in &loaded.group.servers {
        let key = entry.link_key_bytes().ok_or_else(|| {
            NodeError::Config(format!(
                "server {}: link_key is not 64 hex digits",
                entry.id
            ))
        })?;
        let addr = entry
            .endpoint
            .to_socket_addrs()
            .map_err(|error| {
                NodeError::Config(format!(
                    "server {} endpoint {}: {error}",
                    entry.id, entry.endpoint
                ))
            })?
            .next()
            .ok_or_else(|| {
                NodeError::Config(format!(
                    "server {} endpoint {} resolves to nothing",
                    entry.id, entry.endpoint
                ))
            })?;
        peers.push(PeerConfig {
            id: entry.id,
            addr,
            static_public_key: LinkPublicKey::from_bytes(key),
        });
    }
    let tunables = &loaded.config.tunables;
    let abc = AbcConfig {
        batch_requests_max: tunables.batch_requests_max,
        pending_requests_max: tunables.pending_requests_max,
        request_bytes_max: tunables.request_bytes_max,
        ..AbcConfig::default()
    };
    let services = ServiceFiles {
        tsa_certificate: loaded
            .group
            .load_tsa_certificate(&loaded.config.group)
            .map_err(|error| NodeError::Config(error.to_string()))?,
        ca: match (
            loaded
                .group
                .load_ca_certificate(&loaded.config.group)
                .map_err(|error| NodeError::Config(error.to_string()))?,
            loaded
                .group
                .load_ca_policy(&loaded.config.group)
                .map_err(|error| NodeError::Config(error.to_string()))?,
        ) {
            (Some(root), Some(policy)) => Some((root, policy)),
            (None, None) => None,
            _ => {
                return Err(NodeError::Config(
                    "the group file names a CA certificate or a CA policy, not both".into(),
                ));
            }
        },
    };
    Ok(NodeConfig {
        id: loaded.config.id,
        listen: loaded.config.listen,
        gateway_listen: loaded.config.gateway_listen,
        stream_listen: None,
        peers,
        link_keypair: LinkKeypair::from_secret_bytes(secret),
        link_limits: LinkLimits::default(),
        group: Arc::new(loaded.group.keys),
        keys: Arc::new(loaded.secrets.shares),
        data_dir: loaded.config.data_dir,
        services,
        tunables: Tunables {
            checkpoint_rounds: tunables.checkpoint_rounds,
            abc,
            ordering: tunables.ordering,
            patience: Duration::from_millis(tunables.patience_ms),
            checkpoint_batches: tunables.checkpoint_batches,
            batch_interval: Duration::from_millis(tunables.batch_interval_ms),
            ..Tunables::default()
        },
    })
}

/// `sintra node --config FILE`: starts the replica and runs it until SIGTERM or SIGINT, then
/// shuts down gracefully.
pub async fn run(config_path: &Path) -> Result<(), NodeError> {
    let config = load_config(config_path)?;
    let node = Node::start(config).await?;
    wait_for_signal().await;
    info!("stopping on signal");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Installs the `tracing` subscriber: `RUST_LOG` filter, `info` by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .try_init();
}
