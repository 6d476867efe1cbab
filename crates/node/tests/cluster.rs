//! A real group in one test process: replicas over real links on 127.0.0.1 (ports picked here),
//! real redb stores in temporary directories, real threshold cryptography (a 1024-bit service
//! modulus for speed). Checks that puts and gets through the gateway return signed answers that
//! verify under the service key alone; that all logs are identical; that a replica stopped and
//! restarted on the same data directory catches up and ends with the same log; and that garbage
//! from an authenticated peer, malformed HTTP requests and garbage on the streaming port are
//! refused with a clear error and crash nothing; and that a peer sending bad answer shares is
//! named while clients still get verified answers.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_config::OrderingMode;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa::{Primes, generate_primes};
use sintra_net::{LinkKeypair, LinkLimits, Links, LinksConfig, PeerConfig};
use sintra_node::{Node, NodeConfig, ServiceFiles, Tunables};
use sintra_services::answers::SignedAnswer;
use sintra_services::ca::CaPolicy;
use sintra_services::kv::{KvAnswer, KvRequest};
use sintra_services::{ca, directory, notary, x509};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const N: u16 = 4;
/// Every wait in these tests ends by this deadline (a failure, not a hang).
const WAIT: Duration = Duration::from_secs(40);

struct Keys {
    group: Arc<GroupKeys>,
    servers: Vec<Arc<ServerKeys>>,
    links: Vec<LinkKeypair>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let primes: Primes = generate_primes(1024, &mut rng, &mut |_| {}).expect("primes");
        let parameters = GroupParameters::new(N, None).expect("parameters");
        let (group, servers) =
            deal_with_primes(parameters, &primes, &mut rng, &mut |_| {}).expect("deal");
        Keys {
            group: Arc::new(group),
            servers: servers.into_iter().map(Arc::new).collect(),
            links: (0..N).map(|_| LinkKeypair::generate(&mut rng)).collect(),
        }
    })
}

/// Logs as `RUST_LOG` says (nothing by default), captured per test.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn id(i: u16) -> ServerId {
    ServerId::new(i).expect("id")
}

struct Cluster {
    links: Vec<SocketAddr>,
    dirs: Vec<TempDir>,
    nodes: Vec<Option<Node>>,
    services: ServiceFiles,
    /// The server that plays the test-only Byzantine replica, if any.
    byzantine: Option<u16>,
    /// How the group orders requests.
    ordering: OrderingMode,
}

impl Cluster {
    fn peers(&self) -> Vec<PeerConfig> {
        (1..=N)
            .map(|i| PeerConfig {
                id: id(i),
                addr: self.links[usize::from(i - 1)],
                static_public_key: keys().links[usize::from(i - 1)].public(),
            })
            .collect()
    }

    fn config(&self, i: u16) -> NodeConfig {
        let slot = usize::from(i - 1);
        NodeConfig {
            id: id(i),
            listen: self.links[slot],
            gateway_listen: "127.0.0.1:0".parse().expect("addr"),
            stream_listen: Some("127.0.0.1:0".parse().expect("addr")),
            peers: self.peers(),
            link_keypair: keys().links[slot].clone(),
            link_limits: LinkLimits {
                reconnect_delay_max: Duration::from_millis(500),
                ..LinkLimits::default()
            },
            group: keys().group.clone(),
            keys: keys().servers[slot].clone(),
            data_dir: self.dirs[slot].path().to_path_buf(),
            tunables: Tunables {
                checkpoint_rounds: 4,
                request_timeout: Duration::from_secs(20),
                byzantine: self.byzantine == Some(i),
                ordering: self.ordering,
                patience: Duration::from_millis(300),
                checkpoint_batches: 8,
                ..Tunables::default()
            },
            services: self.services.clone(),
        }
    }

    /// Starts servers `which` of a fresh group (kv and the directory only).
    async fn start(which: &[u16]) -> Self {
        Self::start_with(which, ServiceFiles::default(), None).await
    }

    /// Starts servers `which` of a fresh group serving `services`, `byzantine` misbehaving.
    async fn start_with(which: &[u16], services: ServiceFiles, byzantine: Option<u16>) -> Self {
        Self::start_ordered(which, services, byzantine, OrderingMode::Randomized).await
    }

    /// Starts servers `which` of a fresh group ordering requests by `ordering`.
    async fn start_ordered(
        which: &[u16],
        services: ServiceFiles,
        byzantine: Option<u16>,
        ordering: OrderingMode,
    ) -> Self {
        let mut cluster = Self {
            links: (0..N).map(|_| free_addr()).collect(),
            dirs: (0..N).map(|_| TempDir::new().expect("tempdir")).collect(),
            nodes: (0..N).map(|_| None).collect(),
            services,
            byzantine,
            ordering,
        };
        for &i in which {
            cluster.restart(i).await;
        }
        cluster
    }

    async fn restart(&mut self, i: u16) {
        let node = Node::start(self.config(i)).await.expect("node starts");
        self.nodes[usize::from(i - 1)] = Some(node);
    }

    async fn stop(&mut self, i: u16) {
        if let Some(node) = self.nodes[usize::from(i - 1)].take() {
            node.shutdown().await;
        }
    }

    fn node(&self, i: u16) -> &Node {
        self.nodes[usize::from(i - 1)].as_ref().expect("running")
    }

    fn height(&self, i: u16) -> u64 {
        self.node(i)
            .metrics()
            .height
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the running servers `which` have the same height, at least `min`.
    async fn settle(&self, which: &[u16], min: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let heights: Vec<u64> = which.iter().map(|&i| self.height(i)).collect();
            if heights.iter().all(|h| *h == heights[0]) && heights[0] >= min {
                return heights[0];
            }
            assert!(
                Instant::now() < deadline,
                "heights never settled: {heights:?} (want ≥ {min})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_same_logs(&self, which: &[u16], height: u64) {
        let reference = self.node(which[0]).log(0, height).expect("log");
        assert_eq!(reference.len() as u64, height);
        for &i in &which[1..] {
            assert_eq!(
                self.node(i).log(0, height).expect("log"),
                reference,
                "log of server {i}"
            );
        }
    }

    async fn shutdown(mut self) {
        for i in 1..=N {
            self.stop(i).await;
        }
    }
}

/// A minimal HTTP/1.1 exchange: returns (status, body).
async fn http(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    http_with(addr, method, target, "", body).await
}

/// `http` with extra header lines (each ending in `\r\n`).
async fn http_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // A body the server refuses may be cut short: ignore write errors.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => response[at + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

fn signed(body: &[u8]) -> SignedAnswer {
    serde_json::from_slice(body).unwrap_or_else(|error| {
        panic!(
            "not a SignedAnswer ({error}): {}",
            String::from_utf8_lossy(body)
        )
    })
}

/// Verifies `answer` against the request logged at its position (the gateway chose the nonce)
/// under the group's service key only.
fn verify_against_log(cluster: &Cluster, at: u16, answer: &SignedAnswer) -> Vec<u8> {
    let entry = cluster
        .node(at)
        .log(answer.position, answer.position + 1)
        .expect("log")
        .pop()
        .expect("the answered request is in the log");
    answer
        .verify(&keys().group.service, &entry.request)
        .expect("the signed answer verifies under the service key");
    entry.request
}

async fn put(cluster: &Cluster, at: u16, key: &str, value: &str) -> SignedAnswer {
    let (status, body) = http(
        cluster.node(at).gateway_addr(),
        "POST",
        &format!("/v1/kv/put?key={key}"),
        value.as_bytes(),
    )
    .await;
    assert_eq!(
        status,
        200,
        "put at {at}: {}",
        String::from_utf8_lossy(&body)
    );
    let answer = signed(&body);
    verify_against_log(cluster, at, &answer);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_answers_verify_and_every_log_is_the_same() {
    logs();
    let cluster = Cluster::start(&[1, 2, 3, 4]).await;
    let all = [1, 2, 3, 4];

    let first = put(&cluster, 1, "color", "blue").await;
    let KvAnswer::Ok { found, .. } = KvAnswer::decode(&first.answer).expect("kv answer") else {
        panic!("put failed");
    };
    assert!(!found, "a fresh key has no previous value");

    // A get at another server sees the value.
    let (status, body) = http(
        cluster.node(2).gateway_addr(),
        "GET",
        "/v1/kv/get?key=color",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = signed(&body);
    verify_against_log(&cluster, 2, &answer);
    assert_eq!(
        KvAnswer::decode(&answer.answer).expect("kv answer"),
        KvAnswer::Ok {
            found: true,
            value: b"blue".to_vec()
        }
    );

    // A client that gives its own nonce rebuilds its request and checks the answer alone.
    let (status, body) = http(
        cluster.node(4).gateway_addr(),
        "GET",
        "/v1/kv/get?key=color&nonce=000102030405060708090a0b0c0d0e0f",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let own = KvRequest::Get {
        nonce: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        key: b"color".to_vec(),
    }
    .encode()
    .expect("encode");
    signed(&body)
        .verify(&keys().group.service, &own)
        .expect("verifies against the request the client rebuilt");

    // A client-made request through /v1/submit is verified against the client's own bytes.
    let request = KvRequest::Put {
        nonce: [9; 16],
        key: b"shape".to_vec(),
        value: b"round".to_vec(),
    }
    .encode()
    .expect("encode");
    let (status, body) = http(
        cluster.node(3).gateway_addr(),
        "POST",
        "/v1/submit",
        &request,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    signed(&body)
        .verify(&keys().group.service, &request)
        .expect("verifies against the client's request");

    // Concurrent clients at every server.
    let mut clients = Vec::new();
    for c in 0..24u16 {
        let at = 1 + c % N;
        let addr = cluster.node(at).gateway_addr();
        clients.push(tokio::spawn(async move {
            http(
                addr,
                "POST",
                &format!("/v1/kv/put?key=k{c}"),
                format!("v{c}").as_bytes(),
            )
            .await
        }));
    }
    for client in clients {
        let (status, body) = client.await.expect("client");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        signed(&body);
    }
    let height = cluster.settle(&all, 28).await;
    cluster.assert_same_logs(&all, height);

    let (status, body) = http(cluster.node(1).gateway_addr(), "GET", "/health", b"").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).expect("health JSON");
    assert_eq!(health["server"], 1);
    assert_eq!(health["height"], height);
    assert_eq!(health["peers_connected"], 3);
    let (status, body) = http(cluster.node(1).gateway_addr(), "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics.contains(&format!("sintra_log_height{{server=\"1\"}} {height}")),
        "{metrics}"
    );
    for i in all {
        assert!(
            cluster.node(i).metrics().faults().is_empty(),
            "server {i} recorded faults"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_server_catches_up_to_the_same_log() {
    logs();
    let mut cluster = Cluster::start(&[1, 2, 3, 4]).await;
    for i in 0..4 {
        put(&cluster, 1 + i % N, &format!("before{i}"), "x").await;
    }
    cluster.settle(&[1, 2, 3, 4], 4).await;

    // A graceful stop drains and leaves the send fence below the round server 4 resumes at
    // (docs/node.md, "Stopping")...
    cluster.stop(4).await;
    let data = cluster.dirs[3].path().to_path_buf();
    let state = sintra_node::Store::open(&data)
        .expect("store")
        .state()
        .expect("state");
    assert!(
        state.fence.is_some_and(|fence| fence < state.next_round),
        "a drained server resumes unfenced: {state:?}"
    );
    // ... a crash in the middle of rounds does not: the fence a kill leaves behind (raised by
    // the stride beyond the rounds under way) is written here. Server 4 then resumes in the
    // round where it stopped, behind its send fence. It sends no vote for those rounds, yet its
    // client is served (the request is forwarded while it is silent) and it keeps the same log.
    sintra_node::Store::open(&data)
        .expect("store")
        .set_fence(state.next_round + 3)
        .expect("fence");
    cluster.restart(4).await;
    put(&cluster, 4, "while-fenced", "w").await;
    for i in 0..6 {
        put(&cluster, 1 + i % 3, &format!("fenced{i}"), "f").await;
    }
    let height = cluster.settle(&[1, 2, 3, 4], 11).await;
    cluster.assert_same_logs(&[1, 2, 3, 4], height);
    let fenced = cluster
        .node(4)
        .metrics()
        .fenced_messages
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        fenced > 0,
        "the restarted server withheld its messages of fenced rounds"
    );

    cluster.stop(4).await;
    // Many rounds without server 4: far more than atomic broadcast keeps for late servers, so
    // it needs the certified state transfer.
    for i in 0..24 {
        put(&cluster, 1 + i % 3, &format!("during{i}"), "y").await;
    }
    let height = cluster.settle(&[1, 2, 3], 35).await;
    cluster.restart(4).await;
    let caught_up = cluster.settle(&[1, 2, 3, 4], height).await;
    cluster.assert_same_logs(&[1, 2, 3, 4], caught_up);
    let metrics = cluster.node(4).metrics();
    let transferred = metrics
        .rounds_transferred
        .load(std::sync::atomic::Ordering::Relaxed);
    let rounds = cluster
        .node(1)
        .metrics()
        .next_round
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("server 4 caught up to round {rounds}: {transferred} rounds by certified transfer");
    assert!(
        transferred > 0,
        "the gap exceeded what atomic broadcast keeps, so a certified transfer was needed"
    );
    // And it serves clients again.
    put(&cluster, 4, "after", "z").await;
    let height = cluster.settle(&[1, 2, 3, 4], caught_up + 1).await;
    cluster.assert_same_logs(&[1, 2, 3, 4], height);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_malformed_input_are_refused_and_crash_nothing() {
    logs();
    // Server 4's identity is held by the test: an authenticated peer that sends garbage.
    let cluster = Cluster::start(&[1, 2, 3]).await;
    let (byzantine, _incoming) = Links::start(LinksConfig {
        me: id(4),
        listen_addr: cluster.links[3],
        peers: cluster.peers(),
        keypair: keys().links[3].clone(),
        limits: LinkLimits::default(),
    })
    .await
    .expect("links");
    for garbage in [
        &b""[..],
        b"\xff",
        b"\x00\x00\x01",
        b"\x01\x00\x00\x00\x00\x00\x00\x00\x05\xff\xff",
        &[7u8; 4096][..],
    ] {
        let _ = byzantine.broadcast(Bytes::copy_from_slice(garbage));
    }
    let deadline = Instant::now() + WAIT;
    while (1..=3).any(|i| cluster.node(i).metrics().faults_of(id(4)) < 5) {
        assert!(
            Instant::now() < deadline,
            "garbage was not recorded as faults"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let gateway = cluster.node(1).gateway_addr();
    let (status, body) = http(gateway, "POST", "/v1/kv/put", b"no key").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let long_key = "k".repeat(2000);
    let (status, body) = http(gateway, "POST", &format!("/v1/kv/put?key={long_key}"), b"v").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("error"));
    let (status, _) = http(
        gateway,
        "POST",
        "/v1/kv/put?key=big",
        &vec![b'v'; 200 << 10],
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = http(gateway, "POST", "/v1/submit", b"").await;
    assert_eq!(status, 400);
    let (status, _) = http(gateway, "GET", "/v1/kv/get?key=a&nonce=xyz", b"").await;
    assert_eq!(status, 400);
    // Bytes that are no TDH2 ciphertext: refused before anything is ordered.
    let (status, _) = http(gateway, "POST", "/v1/submit?encrypt", b"ciphertext").await;
    assert_eq!(status, 400);
    let (status, _) = http(gateway, "GET", "/nowhere", b"").await;
    assert_eq!(status, 404);

    // Garbage on the streaming port: an error frame and a closed connection.
    let mut stream = TcpStream::connect(cluster.node(2).stream_addr())
        .await
        .expect("connect");
    stream.write_all(&[0xff; 64]).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut reply)).await;
    assert!(
        reply.len() > 13 && reply[12] == 2,
        "an error frame: {reply:?}"
    );

    // A well-formed streaming request is answered, and the group still orders with one peer
    // sending garbage.
    let request = KvRequest::Put {
        nonce: [3; 16],
        key: b"stream".to_vec(),
        value: b"ok".to_vec(),
    }
    .encode()
    .expect("encode");
    let mut stream = TcpStream::connect(cluster.node(2).stream_addr())
        .await
        .expect("connect");
    let mut frame = ((8 + request.len()) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&42u64.to_be_bytes());
    frame.extend_from_slice(&request);
    stream.write_all(&frame).await.expect("write");
    let mut header = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut header))
        .await
        .expect("in time")
        .expect("read");
    let mut reply = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut reply).await.expect("read");
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().expect("id")), 42);
    assert_eq!(reply[8], 0, "{}", String::from_utf8_lossy(&reply[9..]));
    signed(&reply[9..])
        .verify(&keys().group.service, &request)
        .expect("verifies");

    put(&cluster, 3, "still", "working").await;
    let height = cluster.settle(&[1, 2, 3], 2).await;
    cluster.assert_same_logs(&[1, 2, 3], height);
    byzantine.shutdown().await;
    cluster.shutdown().await;
}

/// Server 1's identity is held by the test: it sends a wrong answer share for every early round
/// (first in line when the others combine: shares are tried in server order) and answers every
/// proof request with a wrong proof. The combiner's optimistic attempt fails, it asks for
/// proofs, names server 1 (`invalid_share`) and answers its clients with shares proven good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_answer_share_is_blamed_and_the_answer_still_comes() {
    use sintra_crypto::encoding::{Decode, Encode};
    use sintra_node::message::NodeMessage;

    logs();
    let cluster = Cluster::start(&[2, 3, 4]).await;
    let (byzantine, mut incoming) = Links::start(LinksConfig {
        me: id(1),
        listen_addr: cluster.links[0],
        peers: cluster.peers(),
        keypair: keys().links[0].clone(),
        limits: LinkLimits::default(),
    })
    .await
    .expect("links");
    let modulus_bytes = keys().group.service.modulus_bytes();
    let bad_share = move || {
        let mut value = vec![0x5a; modulus_bytes];
        value[0] = 1;
        sintra_crypto::rsa::SignatureShare::from_parts(id(1), value).expect("share")
    };
    for round in 0..64 {
        let message = NodeMessage::AnswerShare {
            round,
            item: 0,
            share: bad_share(),
        };
        let _ = byzantine.broadcast(Bytes::from(message.to_bytes()));
    }
    let mut proof_bytes = vec![0u8; 32];
    proof_bytes.extend_from_slice(&4u32.to_be_bytes());
    proof_bytes.extend_from_slice(&[1, 2, 3, 4]);
    let bad_proof = sintra_crypto::rsa::ShareProof::from_bytes(&proof_bytes).expect("proof");
    let liar = byzantine.clone();
    let answering = tokio::spawn(async move {
        while let Some(message) = incoming.recv().await {
            if let Ok(NodeMessage::ProofRequest { round, item }) =
                NodeMessage::from_bytes(&message.bytes)
            {
                let reply = NodeMessage::AnswerProof {
                    round,
                    item,
                    share: bad_share(),
                    proof: bad_proof.clone(),
                };
                let _ = liar.try_send(message.from, Bytes::from(reply.to_bytes()));
            }
        }
    });

    for i in 0..3u16 {
        put(&cluster, 2 + i, &format!("k{i}"), "v").await;
    }
    let blamed: u64 = (2..=4)
        .map(|i| {
            cluster
                .node(i)
                .metrics()
                .faults()
                .get(&(1, "invalid_share"))
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert!(blamed > 0, "server 1's bad shares were named");
    for i in 2..=4 {
        let faults = cluster.node(i).metrics().faults();
        assert!(
            faults.keys().all(|(peer, _)| *peer == 1),
            "server {i} blamed an honest server: {faults:?}"
        );
    }
    let height = cluster.settle(&[2, 3, 4], 3).await;
    cluster.assert_same_logs(&[2, 3, 4], height);
    answering.abort();
    byzantine.shutdown().await;
    cluster.shutdown().await;
}

/// A client whose server went silent after submitting retries the same request (same nonce,
/// same bytes) at another server. Atomic broadcast delivers it once; the second server answers
/// from its store, collecting the round's signature again, and a third retry at the first server
/// is answered the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_request_is_answered_again_from_the_store() {
    logs();
    let cluster = Cluster::start(&[1, 2, 3, 4]).await;
    let target = "/v1/kv/put?key=once&nonce=000102030405060708090a0b0c0d0e0f";
    let mut answers = Vec::new();
    for at in [1u16, 2, 1, 4] {
        let (status, body) = http(cluster.node(at).gateway_addr(), "POST", target, b"only").await;
        assert_eq!(
            status,
            200,
            "attempt at {at}: {}",
            String::from_utf8_lossy(&body)
        );
        let answer = signed(&body);
        verify_against_log(&cluster, at, &answer);
        answers.push(answer);
    }
    for answer in &answers[1..] {
        assert_eq!(answer.position, answers[0].position, "delivered once");
        assert_eq!(answer.answer, answers[0].answer);
        assert_eq!(answer.signature, answers[0].signature);
    }
    let height = cluster.settle(&[1, 2, 3, 4], 1).await;
    assert_eq!(height, 1, "the retries were not ordered again");
    cluster.assert_same_logs(&[1, 2, 3, 4], height);
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The trusted services, checked with stock tools.

const CA_TOKEN: &str = "services-test-token";

/// The dealer's work for a test group: a root and a notary certificate for the service key,
/// signed with two shares (t + 1), and a CA policy for names under `example.test`.
fn service_files() -> ServiceFiles {
    static FILES: OnceLock<ServiceFiles> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let group = &keys().group;
            let spki = group.service.to_public_key_der();
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let sign = |tbs: Vec<u8>| {
                let shares: Vec<_> = keys().servers[..2]
                    .iter()
                    .map(|server| server.service.sign(&group.service, &tbs))
                    .collect();
                let signature = group.service.combine(&tbs, &shares).expect("combine");
                x509::assemble(&tbs, signature.as_bytes()).expect("certificate")
            };
            let (from, to) = (now_s - 3600, now_s + 30 * 86_400);
            let root = sign(x509::root_tbs("services-test", &spki, from, to).expect("root"));
            let tsa = sign(x509::notary_tbs("services-test", &spki, from, to).expect("notary"));
            ServiceFiles {
                tsa_certificate: Some(tsa),
                ca: Some((
                    root,
                    CaPolicy::with_token("*.example.test", CA_TOKEN.as_bytes(), 30),
                )),
            }
        })
        .clone()
}

/// Runs `openssl` in `dir`; returns whether it succeeded and what it printed.
fn openssl(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn write_pem(dir: &std::path::Path, file: &str, der: &[u8]) {
    let pem = x509::to_pem("CERTIFICATE", der).expect("pem");
    std::fs::write(dir.join(file), pem).expect("write");
}

/// Server 4 is stopped and server 3 is the test-only Byzantine replica (wrong answer shares,
/// altered answers to its own clients). Through servers 1 and 2 every service still answers,
/// and stock tools verify what they say: `openssl ts -verify` a time-stamp, `openssl verify` a
/// certificate issued from an `openssl req` request, `openssl crl -verify` the CRL after a
/// revocation, and the directory's signed lookup verifies under the service key and fails after
/// one byte is changed. Server 3's shares are named as invalid by the others; what server 3
/// hands its own clients fails the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_answers_with_one_server_stopped_and_one_byzantine() {
    logs();
    let files = service_files();
    let (root_der, tsa_der) = (
        files.ca.as_ref().expect("ca").0.clone(),
        files.tsa_certificate.clone().expect("tsa"),
    );
    let cluster = Cluster::start_with(&[1, 2, 3], files, Some(3)).await;
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path();
    write_pem(path, "ca.pem", &root_der);
    // As the dealer writes it: the notary's certificate, then the root that issued it.
    let tsa_chain = [
        x509::to_pem("CERTIFICATE", &tsa_der).expect("pem"),
        x509::to_pem("CERTIFICATE", &root_der).expect("pem"),
    ]
    .concat();
    std::fs::write(path.join("tsa.pem"), &tsa_chain).expect("write");
    std::fs::write(path.join("data.txt"), b"sintra notarizes this").expect("write");

    // The notary.
    let (ok, text) = openssl(
        path,
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    assert!(ok, "{text}");
    let query = std::fs::read(path.join("q.tsq")).expect("query");
    for at in [1u16, 2, 3] {
        let (status, reply) = http_with(
            cluster.node(at).gateway_addr(),
            "POST",
            "/tsa",
            "Content-Type: application/timestamp-query\r\n",
            &query,
        )
        .await;
        assert_eq!(
            status,
            200,
            "tsa at {at}: {}",
            String::from_utf8_lossy(&reply)
        );
        let file = format!("reply{at}.tsr");
        std::fs::write(path.join(&file), &reply).expect("write");
        let (ok, text) = openssl(
            path,
            &[
                "ts",
                "-verify",
                "-in",
                &file,
                "-queryfile",
                "q.tsq",
                "-CAfile",
                "tsa.pem",
            ],
        );
        if at == 3 {
            assert!(
                !(ok && text.contains("Verification: OK")),
                "the altered reply verified"
            );
        } else {
            assert!(
                ok && text.contains("Verification: OK"),
                "server {at}: {text}"
            );
        }
    }
    let (status, pem) = http(
        cluster.node(1).gateway_addr(),
        "GET",
        "/tsa/certificate.pem",
        b"",
    )
    .await;
    assert_eq!((status, pem), (200, tsa_chain.into_bytes()));

    // The certification authority: a request made by openssl becomes a certificate openssl
    // accepts; a name outside the policy or a wrong token is refused with the reason.
    let (ok, text) = openssl(
        path,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "www.key",
            "-subj",
            "/CN=www.example.test",
            "-out",
            "www.csr",
        ],
    );
    assert!(ok, "{text}");
    let csr = std::fs::read(path.join("www.csr")).expect("csr");
    let bearer = format!("Authorization: Bearer {CA_TOKEN}\r\n");
    let (status, certificate) = http_with(
        cluster.node(2).gateway_addr(),
        "POST",
        "/ca/certificates",
        &bearer,
        &csr,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&certificate));
    std::fs::write(path.join("www.pem"), &certificate).expect("write");
    let (ok, text) = openssl(path, &["verify", "-CAfile", "ca.pem", "www.pem"]);
    assert!(ok && text.contains("www.pem: OK"), "{text}");
    let serial = x509::certificate_serial(&certificate).expect("serial");
    let (status, refusal) = http_with(
        cluster.node(1).gateway_addr(),
        "POST",
        "/ca/certificates",
        "Authorization: Bearer wrong-token\r\n",
        &csr,
    )
    .await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&refusal));
    let (status, _) = http(
        cluster.node(1).gateway_addr(),
        "POST",
        "/ca/certificates",
        b"junk",
    )
    .await;
    assert_eq!(status, 400);

    // Revocation, then a CRL that openssl verifies and that lists the serial.
    let revocation = format!(r#"{{"serial": {serial}, "reason": "keyCompromise"}}"#);
    let (status, body) = http_with(
        cluster.node(1).gateway_addr(),
        "POST",
        "/ca/revocations",
        &bearer,
        revocation.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, crl) = http(cluster.node(2).gateway_addr(), "GET", "/ca/crl", b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&crl));
    std::fs::write(path.join("crl.pem"), &crl).expect("write");
    let (ok, text) = openssl(
        path,
        &[
            "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-text",
        ],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(
        text.contains(&format!("{serial:02X}")),
        "the CRL lists serial {serial}: {text}"
    );
    let (ok, text) = openssl(
        path,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca.pem",
            "-CRLfile",
            "crl.pem",
            "www.pem",
        ],
    );
    assert!(!ok && text.contains("revoked"), "{text}");

    // The directory: an owner-signed entry, a lookup signed by the service key.
    let owner = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let message = directory::put_message("alice", b"alice@example.test", 1).expect("message");
    let put = serde_json::json!({
        "value": hex::encode(b"alice@example.test"),
        "version": 1,
        "owner": hex::encode(owner.verifying_key().as_bytes()),
        "signature": hex::encode(ed25519_dalek::Signer::sign(&owner, &message).to_bytes()),
    });
    let (status, body) = http(
        cluster.node(1).gateway_addr(),
        "PUT",
        "/dir/entries/alice",
        put.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, replay) = http(
        cluster.node(2).gateway_addr(),
        "PUT",
        "/dir/entries/alice",
        put.to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        status,
        409,
        "a replayed write: {}",
        String::from_utf8_lossy(&replay)
    );
    for at in [1u16, 2, 3] {
        let (status, lookup) = http(
            cluster.node(at).gateway_addr(),
            "GET",
            "/dir/entries/alice",
            b"",
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&lookup));
        let verified = directory::verify_lookup(&lookup, &keys().group.service);
        if at == 3 {
            assert!(verified.is_err(), "the altered lookup verified");
            continue;
        }
        let verified = verified.expect("the lookup verifies under the service key");
        assert_eq!(
            verified.entry.map(|entry| entry.value),
            Some(b"alice@example.test".to_vec())
        );
        let mut altered = lookup.clone();
        let at_byte = altered
            .iter()
            .position(|b| *b == b'6')
            .expect("a hex digit");
        altered[at_byte] = b'7';
        assert!(directory::verify_lookup(&altered, &keys().group.service).is_err());
    }

    // Server 3's shares were named as invalid (by whichever combiner met them first: a combiner
    // that got t + 1 good shares first never looks at them), and nobody else was named.
    let mut named = 0;
    for i in [1u16, 2] {
        let faults = cluster.node(i).metrics().faults();
        named += faults.get(&(3, "invalid_share")).copied().unwrap_or(0);
        assert!(faults.keys().all(|(peer, _)| *peer == 3), "{faults:?}");
    }
    assert!(named > 0, "server 3's wrong shares were never named");
    // Signing duty: items whose t + 1 servers on duty include the stopped server 4 or the
    // Byzantine server 3 were asked of every peer, and servers 1 and 2 signed them on demand.
    let escalations: u64 = [1u16, 2]
        .iter()
        .map(|i| {
            cluster
                .node(*i)
                .metrics()
                .share_escalations
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(
        escalations > 0,
        "no combiner ever asked beyond the servers on duty"
    );
    let height = cluster.settle(&[1, 2, 3], 1).await;
    cluster.assert_same_logs(&[1, 2, 3], height);
    cluster.shutdown().await;
}

/// A confidential request: the encoded request encrypted with TDH2 under the group's key and
/// the label of `sintra/scabc`, as `sintra client --encrypt` makes it.
fn encrypt(request: &[u8], seed: u64) -> Vec<u8> {
    let instance = sintra_protocols::InstanceId::root("sintra")
        .and_then(|root| root.child("scabc"))
        .expect("instance id");
    let label = sintra_protocols::scabc::request_label(&instance);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ciphertext = keys()
        .group
        .encryption
        .encrypt(&label, request, &mut rng)
        .expect("encrypt");
    sintra_crypto::encoding::Encode::to_bytes(&ciphertext)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confidential_requests_are_ordered_once_opened_and_answered() {
    logs();
    let cluster = Cluster::start(&[1, 2, 3, 4]).await;
    let all = [1, 2, 3, 4];
    let put_request = KvRequest::Put {
        nonce: [3; 16],
        key: b"secret".to_vec(),
        value: b"sealed".to_vec(),
    }
    .encode()
    .expect("encode");
    let ciphertext = encrypt(&put_request, 11);

    // The same ciphertext at two servers at once: ordered and executed once, both answered.
    let (first, second) = tokio::join!(
        http(
            cluster.node(1).gateway_addr(),
            "POST",
            "/v1/submit?encrypt",
            &ciphertext
        ),
        http(
            cluster.node(2).gateway_addr(),
            "POST",
            "/v1/submit?encrypt",
            &ciphertext
        ),
    );
    let mut answers = Vec::new();
    for (at, (status, body)) in [(1, first), (2, second)] {
        assert_eq!(
            status,
            200,
            "confidential put at {at}: {}",
            String::from_utf8_lossy(&body)
        );
        let answer = signed(&body);
        // Checked against the client's own plaintext, under the service key alone.
        answer
            .verify(&keys().group.service, &put_request)
            .expect("the signed answer verifies against the plaintext request");
        answers.push(answer);
    }
    assert_eq!(answers[0].position, answers[1].position);
    let position = answers[0].position;
    assert_eq!(
        KvAnswer::decode(&answers[0].answer).expect("kv answer"),
        KvAnswer::Ok {
            found: false,
            value: Vec::new()
        }
    );

    // A ciphertext with one byte changed, and bytes that are no ciphertext: 400, never ordered.
    let mut altered = encrypt(&put_request, 12);
    let last = altered.len() - 1;
    altered[last] ^= 1;
    for bad in [altered.as_slice(), b"not a ciphertext".as_slice()] {
        let (status, body) = http(
            cluster.node(3).gateway_addr(),
            "POST",
            "/v1/submit?encrypt",
            bad,
        )
        .await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(
            String::from_utf8_lossy(&body).contains("error"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    // The value is there for a confidential get at another server.
    let get_request = KvRequest::Get {
        nonce: [4; 16],
        key: b"secret".to_vec(),
    }
    .encode()
    .expect("encode");
    let (status, body) = http(
        cluster.node(3).gateway_addr(),
        "POST",
        "/v1/submit?encrypt",
        &encrypt(&get_request, 13),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let got = signed(&body);
    got.verify(&keys().group.service, &get_request)
        .expect("the get's answer verifies against its plaintext");
    assert_eq!(
        KvAnswer::decode(&got.answer).expect("kv answer"),
        KvAnswer::Ok {
            found: true,
            value: b"sealed".to_vec()
        }
    );

    // Every log holds the plaintexts, each once, at the answered positions: nothing else
    // (the altered ciphertext and the garbage were never ordered).
    let height = cluster.settle(&all, 2).await;
    assert_eq!(height, 2);
    cluster.assert_same_logs(&all, height);
    let log = cluster.node(4).log(0, height).expect("log");
    assert_eq!(log[position as usize].request, put_request);
    assert_eq!(log[got.position as usize].request, get_request);
    let metrics = cluster.node(1).metrics();
    assert!(metrics.opened.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    cluster.shutdown().await;
}

/// 1,000 requests from 16 concurrent clients spread over the four servers — time-stamps and
/// certificate requests mixed — get serial numbers that are unique across all servers and
/// services, are the requests' 1-based log positions (so they increase with the total order),
/// and whose time-stamps' times never go backwards along them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serial_numbers_are_unique_and_increase_with_the_order() {
    logs();
    let cluster = Arc::new(Cluster::start_with(&[1, 2, 3, 4], service_files(), None).await);
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path();
    std::fs::write(path.join("data.txt"), b"a document").expect("write");
    let (ok, text) = openssl(
        path,
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-out", "q.tsq",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        path,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k.pem",
            "-subj",
            "/CN=load.example.test",
            "-out",
            "r.csr",
        ],
    );
    assert!(ok, "{text}");
    let query = Arc::new(std::fs::read(path.join("q.tsq")).expect("query"));
    let csr = Arc::new(std::fs::read(path.join("r.csr")).expect("csr"));
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 1_000;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (cluster, query, csr) = (cluster.clone(), query.clone(), csr.clone());
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::new();
            for k in (client..REQUESTS).step_by(CLIENTS) {
                let at = cluster.node(1 + (k % 4) as u16).gateway_addr();
                if k % 5 == 4 {
                    let bearer = format!("Authorization: Bearer {CA_TOKEN}\r\n");
                    let (status, pem) =
                        http_with(at, "POST", "/ca/certificates", &bearer, &csr).await;
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&pem));
                    serials.push((x509::certificate_serial(&pem).expect("serial"), None));
                } else {
                    let (status, reply) = http(at, "POST", "/tsa", &query).await;
                    assert_eq!(status, 200);
                    let (serial, time) =
                        notary::granted_serial_and_time(&reply).expect("a granted time-stamp");
                    serials.push((serial, Some(time)));
                }
            }
            serials
        }));
    }
    let mut serials = Vec::new();
    for task in tasks {
        serials.extend(task.await.expect("client"));
    }
    assert_eq!(serials.len(), REQUESTS);
    serials.sort();
    let unique: std::collections::BTreeSet<u64> = serials.iter().map(|(s, _)| *s).collect();
    assert_eq!(unique.len(), REQUESTS, "a serial number was given twice");
    // genTime is `YYYYMMDDhhmmss[.f{1,3}]Z` (DER drops trailing zeros of the fraction): compare
    // (seconds, milliseconds), not the text.
    let instant = |text: &String| -> (u64, u64) {
        let text = text.strip_suffix('Z').expect("a UTC time");
        let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
        let millis = format!("{fraction:0<3}");
        (
            seconds.parse().expect("digits"),
            millis.parse().expect("digits"),
        )
    };
    let times: Vec<(u64, u64)> = serials
        .iter()
        .filter_map(|(_, t)| t.as_ref().map(instant))
        .collect();
    assert_eq!(times.len(), REQUESTS * 4 / 5);
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "a later serial carries an earlier time"
    );
    // Each serial is its request's position + 1 in every server's log.
    let height = cluster.settle(&[1, 2, 3, 4], REQUESTS as u64).await;
    cluster.assert_same_logs(&[1, 2, 3, 4], height);
    let log = cluster.node(1).log(0, height).expect("log");
    for (serial, time) in &serials {
        let request = &log[(*serial - 1) as usize].request;
        let expected = if time.is_some() {
            notary::TAG_QUERY
        } else {
            ca::TAG_ISSUE
        };
        assert_eq!(request[0], expected, "serial {serial}");
    }
    // Signing duty: with every server healthy each time-stamp and certificate costs t + 1 = 2
    // RSA shares, not n = 4 (plus one batch share per server per round and whatever was asked
    // on demand), so the four servers signed far fewer than 4 shares per answer.
    let counter =
        |i: u16, pick: fn(&sintra_node::metrics::Metrics) -> &std::sync::atomic::AtomicU64| {
            pick(cluster.node(i).metrics()).load(std::sync::atomic::Ordering::Relaxed)
        };
    let signed: u64 = (1..=4).map(|i| counter(i, |m| &m.shares_signed)).sum();
    let escalated: u64 = (1..=4).map(|i| counter(i, |m| &m.share_escalations)).sum();
    let rounds = counter(1, |m| &m.rounds_executed);
    let bound = 2 * REQUESTS as u64 + 4 * rounds + 4 * escalated;
    eprintln!(
        "signing duty: {signed} shares for {REQUESTS} answers, {rounds} rounds, {escalated} escalations"
    );
    assert!(
        signed <= bound,
        "{signed} shares signed for {REQUESTS} answers in {rounds} rounds ({escalated} escalations)"
    );
    assert!(
        signed < 3 * REQUESTS as u64,
        "{signed} shares for {REQUESTS} answers: every server signed every answer"
    );
    match Arc::try_unwrap(cluster) {
        Ok(cluster) => cluster.shutdown().await,
        Err(_) => panic!("the clients still hold the cluster"),
    }
}

/// Writes `value` under `key` in the directory at server `at` as the owner `owner` (version 1).
async fn dir_put(
    cluster: &Cluster,
    at: u16,
    owner: &ed25519_dalek::SigningKey,
    key: &str,
    value: &str,
) {
    let message = directory::put_message(key, value.as_bytes(), 1).expect("message");
    let body = serde_json::json!({
        "value": hex::encode(value.as_bytes()),
        "version": 1,
        "owner": hex::encode(owner.verifying_key().as_bytes()),
        "signature": hex::encode(ed25519_dalek::Signer::sign(owner, &message).to_bytes()),
    });
    let (status, reply) = http(
        cluster.node(at).gateway_addr(),
        "PUT",
        &format!("/dir/entries/{key}"),
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
}

/// A local lookup of `key` at server `at` whose signed state covers the log up to `height`,
/// verified under the service key; while the server has none, a kv put at it makes the group
/// run rounds (an idle group runs none) until a checkpoint passes.
async fn local_lookup(
    cluster: &Cluster,
    at: u16,
    key: &str,
    height: u64,
) -> (u16, Vec<u8>, directory::LocalLookup) {
    let deadline = Instant::now() + WAIT;
    let mut drives = 0;
    loop {
        let (status, body) = http(
            cluster.node(at).gateway_addr(),
            "GET",
            &format!("/dir/entries/{key}?local"),
            b"",
        )
        .await;
        if status == 200 || status == 404 {
            let verified = directory::verify_local_lookup(&body, &keys().group.service)
                .expect("the local lookup verifies under the service key");
            assert_eq!(verified.key, key);
            if verified.state.height >= height {
                return (status, body, verified);
            }
        } else {
            assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        }
        assert!(
            Instant::now() < deadline,
            "server {at} never served a local lookup covering height {height}"
        );
        put(cluster, at, &format!("drive-{drives}"), "x").await;
        drives += 1;
    }
}

/// Local directory lookups: before any checkpoint's state is signed a local lookup is refused
/// with 503; once entries are written and a checkpoint passes, every server answers local
/// lookups (an entry, an absence) that verify under the service key alone and state what the
/// ordered lookup at that server states, for the same signed root at every server; a changed
/// byte fails; a restarted server serves its stored signed state at once, before any round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_directory_lookups_verify_under_the_service_key() {
    logs();
    let mut cluster = Cluster::start(&[1, 2, 3, 4]).await;
    let (status, body) = http(
        cluster.node(1).gateway_addr(),
        "GET",
        "/dir/entries/alice?local",
        b"",
    )
    .await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));

    let owner = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    dir_put(&cluster, 1, &owner, "alice", "alice@example.test").await;
    dir_put(&cluster, 2, &owner, "carol", "carol@example.test").await;
    let written = cluster.settle(&[1, 2, 3, 4], 2).await;

    let mut roots = std::collections::BTreeMap::new();
    for at in 1..=4u16 {
        let (status, found, local) = local_lookup(&cluster, at, "alice", written).await;
        assert_eq!(status, 200);
        let entry = local.entry.clone().expect("alice's entry");
        assert_eq!(entry.value, b"alice@example.test");
        // The time of the last entry the state includes: set, and not in the future.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        assert!(
            local.state.time_ms > 0 && local.state.time_ms <= now_ms + 1000,
            "{:?}",
            local.state
        );
        assert_eq!(entry.owner, owner.verifying_key().to_bytes());
        // Every server that signed a round's state signed the same root.
        let root = roots.entry(local.state.round).or_insert(local.state);
        assert_eq!(*root, local.state, "server {at}");

        // The ordered lookup at the same server states the same entry (nothing was written
        // since), at a later position.
        let (status, ordered) = http(
            cluster.node(at).gateway_addr(),
            "GET",
            "/dir/entries/alice",
            b"",
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ordered));
        let ordered =
            directory::verify_lookup(&ordered, &keys().group.service).expect("ordered verifies");
        assert_eq!(ordered.entry, Some(entry));
        assert!(ordered.position >= local.state.height);

        // Absence, between alice and carol.
        let (status, absent, local) = local_lookup(&cluster, at, "bob", written).await;
        assert_eq!((status, local.entry), (404, None));
        let (status, ordered) = http(
            cluster.node(at).gateway_addr(),
            "GET",
            "/dir/entries/bob",
            b"",
        )
        .await;
        assert_eq!(status, 404);
        let ordered =
            directory::verify_lookup(&ordered, &keys().group.service).expect("ordered verifies");
        assert_eq!(ordered.entry, None);

        // One changed byte: a value digit, a path digit, the signature's last digit.
        let text = String::from_utf8(found.clone()).expect("JSON");
        let value_at = text.find("\"value\":\"").expect("value") + 9;
        let path_at = text.find("\"path\":[\"").expect("path") + 9;
        let signature_at = text.rfind('"').expect("end") - 1;
        for at_byte in [value_at, path_at, signature_at] {
            let mut changed = found.clone();
            changed[at_byte] = if changed[at_byte] == b'0' { b'1' } else { b'0' };
            assert!(
                directory::verify_local_lookup(&changed, &keys().group.service).is_err(),
                "byte {at_byte} changed"
            );
        }
        let mut changed = absent.clone();
        let last = changed.len() - 3;
        changed[last] = if changed[last] == b'0' { b'1' } else { b'0' };
        assert!(directory::verify_local_lookup(&changed, &keys().group.service).is_err());
    }

    // Server 4 stopped once its signed state is that of its last checkpoint (the group is idle,
    // so that is where it stays), then restarted: it answers from the stored state at once.
    let next_round = cluster
        .node(4)
        .metrics()
        .next_round
        .load(std::sync::atomic::Ordering::Relaxed);
    let last_checkpoint = next_round / 4 * 4 - 1;
    let deadline = Instant::now() + WAIT;
    let before = loop {
        let (_, _, local) = local_lookup(&cluster, 4, "alice", written).await;
        if local.state.round == last_checkpoint {
            break local;
        }
        assert!(
            Instant::now() < deadline,
            "server 4's state stayed at round {} (last checkpoint {last_checkpoint})",
            local.state.round
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.stop(4).await;
    cluster.restart(4).await;
    let (status, body) = http(
        cluster.node(4).gateway_addr(),
        "GET",
        "/dir/entries/alice?local",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let after = directory::verify_local_lookup(&body, &keys().group.service).expect("verifies");
    assert_eq!((after.state, after.entry), (before.state, before.entry));
    cluster.shutdown().await;
}

/// The optimistic ordering end to end: answers verify and logs agree; a server stopped and
/// restarted resumes from its stored point and catches up; with the epoch's leader stopped,
/// complaints close the epoch through the recovery and the next leader orders; the old leader,
/// restarted, catches up past the epoch that closed while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_optimistic_ordering_survives_restarts_and_a_stopped_leader() {
    logs();
    let mut cluster = Cluster::start_ordered(
        &[1, 2, 3, 4],
        ServiceFiles::default(),
        None,
        OrderingMode::Optimistic,
    )
    .await;
    for i in 0..8u16 {
        put(&cluster, 1 + i % N, &format!("first{i}"), "a").await;
    }
    let height = cluster.settle(&[1, 2, 3, 4], 8).await;
    cluster.assert_same_logs(&[1, 2, 3, 4], height);

    // Server 4 stops; the others go on without it; it restarts from its stored point and gets
    // the batches it missed from the others' commit certificates and fetches.
    cluster.stop(4).await;
    for i in 0..12u16 {
        put(&cluster, 1 + i % 3, &format!("without4-{i}"), "b").await;
    }
    let height = cluster.settle(&[1, 2, 3], 20).await;
    cluster.restart(4).await;
    // It serves clients at once: a gap the ordering's fetches close is not "catching up".
    put(&cluster, 4, "at4", "c").await;
    let height = cluster.settle(&[1, 2, 3, 4], height + 1).await;
    cluster.assert_same_logs(&[1, 2, 3, 4], height);

    // The epoch's leader ((epoch mod 4) + 1) stops: it orders nothing more. Its drain
    // complains, and so do the others when their patience runs out; the recovery closes the
    // epoch and the next leader orders.
    let epoch = |cluster: &Cluster, i: u16| {
        cluster
            .node(i)
            .metrics()
            .epoch
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = epoch(&cluster, 2);
    let leader = u16::try_from(before % u64::from(N)).expect("small") + 1;
    let others: Vec<u16> = (1..=N).filter(|i| *i != leader).collect();
    cluster.stop(leader).await;
    let started = Instant::now();
    for i in 0..6u16 {
        put(
            &cluster,
            others[usize::from(i % 3)],
            &format!("leaderless{i}"),
            "d",
        )
        .await;
    }
    let height = cluster.settle(&others, height + 6).await;
    cluster.assert_same_logs(&others, height);
    let suspicions: u64 = others
        .iter()
        .map(|&i| {
            cluster
                .node(i)
                .metrics()
                .suspicions
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    for &i in &others {
        assert!(
            epoch(&cluster, i) > before,
            "server {i} left epoch {before}"
        );
    }
    println!(
        "leader {leader} of epoch {before} stopped: 6 requests answered in {} ms ({suspicions} \
         patience complaints)",
        started.elapsed().as_millis()
    );
    // The old leader comes back: silent in the epochs it spoke in, it learns how its epoch
    // closed from the others' recovery decisions, and the group goes on with all four.
    cluster.restart(leader).await;
    put(&cluster, leader, "leader-back", "e").await;
    for i in 0..4u16 {
        put(&cluster, 1 + i % N, &format!("all{i}"), "e").await;
    }
    let height = cluster.settle(&[1, 2, 3, 4], height + 5).await;
    cluster.assert_same_logs(&[1, 2, 3, 4], height);
    assert!(
        epoch(&cluster, leader) > before,
        "the old leader left epoch {before}"
    );
    cluster.shutdown().await;
}
