//! `sintra bench cluster`: throughput and latency of a real replica group on this host.
//!
//! What it does, in order:
//! 1. **Keys.** Deals a group with `sintra keygen` (the dealer's own code path, RSA-2048 service
//!    key) into a temporary directory, or reuses `--data DIR` when it already holds a group (and
//!    deals into it when it does not, so that later runs can skip the prime search).
//! 2. **Cluster.** Writes a run directory (temporary; kept with `--keep`): a copy of the group file
//!    whose endpoints are free loopback ports picked for this run, and one `config.toml` per server
//!    naming the dealt `keys.toml` and a fresh, empty store. Starts `--servers` `sintra node`
//!    child processes (this very binary), each logging to `server-<i>/node.log`, and waits until
//!    every gateway answers `/health` with all its peers connected. A guard stops every child on
//!    every way out of this function (SIGTERM, [`STOP_GRACE`], then SIGKILL), also when this
//!    process gets SIGINT or SIGTERM during the run.
//! 3. **Load.** `--clients` persistent connections to the replicas' streaming ports (client `c`
//!    to server `c mod n + 1`), all driven from one thread of this process. Closed loop by
//!    default: each connection keeps `--window` requests in flight. With `--rate R`, open loop:
//!    `R` requests per second in total, evenly spread over the connections, each request's
//!    latency counted from the moment it was due (so a stalled cluster cannot hide its queueing).
//!    What a request is depends on `--service`; every one carries a 16-byte nonce (8 random
//!    bytes per connection, then the request id), so every request is distinct:
//!    * `kv` (default): a kv `put` of exactly `--payload` bytes: tag 1, the nonce, an 8-byte key
//!      out of `--keys` ([`KEYS_DEFAULT`]), and a value filling the rest ([`REQUEST_OVERHEAD`]
//!      bytes besides it). Its answer is covered by the round's batch signature (status 0).
//!    * `tsa`: a notary request (`POST /tsa`): an RFC 3161 `TimeStampReq` (DER, [`tsa_query`])
//!      for the SHA-256 imprint of a 32-byte document derived from the nonce, with a nonce of its
//!      own and `certReq` false. Every granted token carries its own threshold signature.
//!    * `ca`: a certification request (`POST /ca/certificates`): one ECDSA P-256 PKCS#10 request
//!      for `bench.<domain>` (the name the dealt `ca-policy.toml` allows), made once with
//!      `openssl req`, submitted with the dealt `ca-admin-token`; every submission is a new
//!      certificate, each with its own threshold signature.
//!
//!    The services answer with status 5 (the completed answer, as their HTTP routes return it).
//!    Before the cluster starts, the time of one RSA share exponentiation is measured on the
//!    dealt key (median of [`SHARE_TIMINGS`] runs on the thread's CPU clock): the notary and
//!    the CA need one per answer on
//!    every replica, so `cores / (servers × share time)` answers per second is the ceiling the
//!    issue states; under signing duty (docs/node.md) only `t + 1` servers sign an answer, and
//!    the report also gives `cores / ((t + 1) × share time)`, the ceiling of the work done.
//! 4. **Measure** over `--duration` seconds after `--warmup` seconds: answers with status 0
//!    (a `SignedAnswer`; 5 for the notary and the CA) received in the window and their latency from submission; every
//!    `--verify-every`-th answer of the whole run is kept and, after the run, checked: kv with
//!    [`SignedAnswer::verify`] against the group's service key and the request rebuilt from its
//!    id; a time-stamp must be granted (a serial, [`notary::granted_serial_and_time`]) and the
//!    first [`OPENSSL_CHECKS`] must pass `openssl ts -verify` against `tsa-certificate.pem` for
//!    their rebuilt documents; a certificate's signature is checked under the service key here
//!    and the first [`OPENSSL_CHECKS`] must pass `openssl verify` against `ca-certificate.pem`;
//!    refusals by status (`1` overloaded: the connection also backs off for
//!    [`OVERLOAD_BACKOFF`]); the CPU time (user + system) of every replica process from
//!    `/proc/<pid>/stat` at both ends of the window, and of their signer threads (the share
//!    exponentiations) from `/proc/<pid>/task/*/stat`; the replicas' `/health` height and round at
//!    both ends, so the rate at which requests are *delivered* (ordered, executed and stored,
//!    before signing) is shown beside the rate of signed answers; and, from heights polled every
//!    [`HEIGHT_POLL_INTERVAL`], each sampled request's latency to delivery.
//!
//! The result is one Markdown table row (or, with `--json`, one JSON object). The command exits
//! non-zero when a replica died before it was stopped, or a sampled answer did not verify.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use rand::{Rng as _, RngCore as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sintra_config::{GroupFile, ServerConfig, ServerEntry};
use sintra_crypto::ServerId;
use sintra_crypto::rsa;
use sintra_node::gateway::{
    STREAM_CONNECTIONS_MAX, STREAM_IN_FLIGHT_MAX, STREAM_STATUS_COMPLETED,
    STREAM_STATUS_SIGNED_ANSWER,
};
use sintra_services::answers::SignedAnswer;
use sintra_services::kv::{KvAnswer, NONCE_BYTES};
use sintra_services::{ca, notary, x509};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

/// Bytes of every key the load writes (`k` and seven digits).
pub const KEY_BYTES: usize = 8;
/// Default of `--keys`: distinct keys the load writes, so the replicas' kv state stays bounded
/// however long it runs (at most `keys` values of `--payload - REQUEST_OVERHEAD` bytes; the
/// replicas snapshot that state at every checkpoint).
pub const KEYS_DEFAULT: u64 = 10_000;
/// Largest `--keys` (the kv service's own limit, `sintra_services::kv::KEYS_MAX`).
pub const KEYS_MAX: u64 = sintra_services::kv::KEYS_MAX as u64;
/// Bytes of a kv put request besides its value: tag, nonce, key length, key, value length.
pub const REQUEST_OVERHEAD: usize = 1 + NONCE_BYTES + 2 + KEY_BYTES + 4;
/// Largest `--payload` (one request must fit a replica's default `request_bytes_max`).
pub const PAYLOAD_MAX: usize = 64 << 10;
/// Most connections (`--clients`).
pub const CLIENTS_MAX: usize = 1024;
/// Most verified samples kept (further sampled answers are not kept).
pub const SAMPLES_MAX: usize = 100_000;
/// Most latencies kept for the percentiles (16 Mi: 64 MiB); answers beyond are still counted.
pub const LATENCIES_MAX: usize = 1 << 24;
/// Largest answer frame accepted from a replica (a signed answer's JSON is a few KiB).
pub const ANSWER_FRAME_BYTES_MAX: usize = 1 << 20;
/// Share exponentiations timed (after [`SHARE_WARMUP`] untimed ones) to measure the share time.
pub const SHARE_TIMINGS: usize = 31;
/// Share exponentiations run before the timed ones.
const SHARE_WARMUP: usize = 3;
/// Sampled service answers also checked with the `openssl` command (time-stamps, certificates).
pub const OPENSSL_CHECKS: usize = 3;
/// Bytes of the document a time-stamp request's imprint hashes.
pub const DOCUMENT_BYTES: usize = 32;
/// Largest file read from the dealt group directory (token, policy).
const GROUP_FILE_BYTES_MAX: u64 = 1 << 20;
/// Requests written to one connection before it is flushed.
const WRITE_BATCH_MAX: usize = 64;
/// How long a connection pauses its submissions after an "overloaded" answer.
pub const OVERLOAD_BACKOFF: Duration = Duration::from_millis(2);
/// How long the replicas may take to start and connect to each other.
const READY_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long, after the window, outstanding answers are still awaited (not counted).
const DRAIN_MAX: Duration = Duration::from_secs(3);
/// How often the replicas' heights are polled (to time deliveries).
const HEIGHT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Most height polls kept per replica (an hour at [`HEIGHT_POLL_INTERVAL`]).
const HEIGHT_POLLS_MAX: usize = 180_000;
/// How long a replica has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// One `/health` request.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/health` response read.
const HEALTH_BYTES_MAX: u64 = 64 << 10;
/// The streaming port is the gateway port plus this (`sintra_node::STREAM_PORT_OFFSET`), the
/// gateway port is the links port plus this.
const PORT_STRIDE: u16 = sintra_node::STREAM_PORT_OFFSET;
/// Links ports are picked in `PORT_LOW..PORT_HIGH`, below Linux's ephemeral range (32768 and
/// up), so that outgoing connections do not take them between the pick and the bind; the
/// gateway and streaming ports are the next two strides up.
const PORT_LOW: u16 = 10_000;
const PORT_HIGH: u16 = 30_000;

/// Arguments of `sintra bench cluster`.
#[derive(Args, Debug, Clone)]
pub struct BenchClusterArgs {
    /// The service the load asks: kv puts, notary time-stamps, or CA certificates.
    #[arg(long, value_enum, default_value_t = Service::Kv)]
    service: Service,
    /// Replicas to start (`n`; `t` is the largest with `n > 3t`).
    #[arg(long, default_value_t = 4)]
    servers: u16,
    /// Persistent streaming connections (spread over the replicas).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Bytes of each request (a kv put: 31 bytes of header, key and nonce, the rest value).
    #[arg(long, default_value_t = 250)]
    payload: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Closed loop: requests each connection keeps in flight.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Open loop: requests per second in total (instead of the closed loop's window).
    #[arg(long)]
    rate: Option<f64>,
    /// A dealt group to reuse (`sintra keygen --out DIR`); dealt into DIR when it holds none.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Distinct keys written (the size of the replicated state, which every checkpoint
    /// snapshots).
    #[arg(long, default_value_t = KEYS_DEFAULT)]
    keys: u64,
    /// Verify every this many answers (by request id) against the service key.
    #[arg(long, default_value_t = 100)]
    verify_every: u64,
    /// Override the replicas' `tunables.batch_requests_max` (requests proposed per round).
    #[arg(long)]
    batch: Option<usize>,
    /// How the replicas order requests (`tunables.ordering`): `randomized` or `optimistic`
    /// (default: what the dealt configs say, `randomized` unless changed).
    #[arg(long)]
    ordering: Option<Ordering>,
    /// Keep the run directory (configs, stores, logs) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// How the replicas order requests (`--ordering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Ordering {
    /// The randomized atomic broadcast.
    Randomized,
    /// The optimistic atomic broadcast (a leader; the randomized one recovers).
    Optimistic,
}

impl From<Ordering> for sintra_config::OrderingMode {
    fn from(ordering: Ordering) -> Self {
        match ordering {
            Ordering::Randomized => Self::Randomized,
            Ordering::Optimistic => Self::Optimistic,
        }
    }
}

/// The service a run asks (`--service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Service {
    /// kv puts (answers covered by the batch signature).
    Kv,
    /// RFC 3161 time-stamps from the notary (one signature per answer).
    Tsa,
    /// Certificates from the CA (one signature per answer).
    Ca,
}

impl Service {
    /// The streaming status of a successful answer.
    fn answer_status(self) -> u8 {
        match self {
            Self::Kv => STREAM_STATUS_SIGNED_ANSWER,
            Self::Tsa | Self::Ca => STREAM_STATUS_COMPLETED,
        }
    }
}

/// How every request of a run is built.
#[derive(Debug)]
enum Workload {
    /// kv puts of `value` under one of `keys` keys.
    Kv { keys: u64, value: Vec<u8> },
    /// Time-stamp requests.
    Tsa,
    /// Issue requests of one PKCS#10 request (DER) with the registration `token`.
    Ca { token: Vec<u8>, csr: Vec<u8> },
}

impl Workload {
    /// Appends the request with id `id` of the connection whose nonce prefix is `prefix`.
    fn encode(&self, prefix: &[u8; 8], id: u64, out: &mut Vec<u8>) {
        match self {
            Self::Kv { keys, value } => request(prefix, id, *keys, value, out),
            Self::Tsa => {
                out.extend_from_slice(&notary::encode_request(
                    &nonce(prefix, id),
                    &tsa_query(prefix, id),
                ));
            }
            Self::Ca { token, csr } => {
                // Both lengths were checked when the workload was made (`ca_workload`).
                if let Ok(bytes) = ca::encode_issue(&nonce(prefix, id), token, csr) {
                    out.extend_from_slice(&bytes);
                }
            }
        }
    }
}

/// The request nonce: the connection's prefix, then the request id.
fn nonce(prefix: &[u8; 8], id: u64) -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    nonce[..8].copy_from_slice(prefix);
    nonce[8..].copy_from_slice(&id.to_be_bytes());
    nonce
}

/// The document time-stamp request `id` of connection `prefix` stands for: 32 bytes that look
/// random (a hash of the nonce), so that the sampled ones can be rebuilt and checked.
fn document(prefix: &[u8; 8], id: u64) -> [u8; DOCUMENT_BYTES] {
    let mut hash = Sha256::new();
    hash.update(b"sintra bench cluster document");
    hash.update(nonce(prefix, id));
    hash.finalize().into()
}

/// The DER `TimeStampReq` (RFC 3161 §2.4.1) of request `id`: version 1, the SHA-256 imprint of
/// [`document`], the nonce `0x01 || prefix || id` (17 bytes, positive, minimal), `certReq`
/// false (DER omits the default). A fixed layout, so written byte by byte.
fn tsa_query(prefix: &[u8; 8], id: u64) -> Vec<u8> {
    // id-sha256 (2.16.840.1.101.3.4.2.1) with NULL parameters.
    const SHA256_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    ];
    let imprint: [u8; 32] = Sha256::digest(document(prefix, id)).into();
    let mut out = Vec::with_capacity(75);
    // SEQUENCE of 73 bytes: version (3), messageImprint (2 + 49), nonce (2 + 17).
    out.extend_from_slice(&[0x30, 73, 0x02, 0x01, 0x01]);
    out.extend_from_slice(&[0x30, 49]);
    out.extend_from_slice(&SHA256_ALGORITHM);
    out.extend_from_slice(&[0x04, 32]);
    out.extend_from_slice(&imprint);
    out.extend_from_slice(&[0x02, 17, 0x01]);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// How the load is offered.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// Each connection keeps this many requests in flight.
    Closed { window: usize },
    /// Requests per second per connection.
    Open { per_connection: f64 },
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Refusals and anomalies, by kind.
#[derive(Debug, Default, Serialize)]
struct Errors {
    /// Status 1.
    overloaded: u64,
    /// Status 2.
    malformed: u64,
    /// Status 3.
    timeout: u64,
    /// Status 4.
    stopping: u64,
    /// Another status, or an answer for an id that was not outstanding.
    other: u64,
    /// Connections that failed (connect, read or write).
    connections: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.overloaded + self.malformed + self.timeout + self.stopping + self.other
    }

    fn add(&mut self, other: &Self) {
        self.overloaded += other.overloaded;
        self.malformed += other.malformed;
        self.timeout += other.timeout;
        self.stopping += other.stopping;
        self.other += other.other;
        self.connections += other.connections;
    }

    fn count_status(&mut self, status: u8) {
        match status {
            1 => self.overloaded += 1,
            2 => self.malformed += 1,
            3 => self.timeout += 1,
            4 => self.stopping += 1,
            _ => self.other += 1,
        }
    }
}

/// The result: what `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// `"kv"`, `"tsa"` or `"ca"`.
    service: Service,
    /// `"randomized"` or `"optimistic"`.
    ordering: sintra_config::OrderingMode,
    servers: u16,
    faults: u16,
    clients: usize,
    /// `"closed"` or `"open"`.
    load: &'static str,
    /// Closed loop: requests in flight per connection.
    window: Option<usize>,
    /// Open loop: offered requests per second in total.
    rate: Option<f64>,
    /// Bytes of each encoded request.
    request_bytes: usize,
    /// Bytes of its value (kv; 0 otherwise).
    value_bytes: usize,
    /// Distinct keys written (kv; 0 otherwise).
    keys: u64,
    duration_s: f64,
    warmup_s: f64,
    /// `"release"` or `"debug"`.
    build: &'static str,
    /// Successful answers (status 0 for kv, 5 for the notary and the CA) received in the window.
    ordered: u64,
    /// `ordered / duration`.
    ordered_per_s: f64,
    /// Requests delivered by atomic broadcast per second (mean over the replicas' heights).
    delivered_per_s: f64,
    /// Atomic-broadcast rounds per second (mean over the replicas).
    rounds_per_s: f64,
    /// From submission to signed answer, over the window's answers.
    latency_ms: Latency,
    /// Sampled answers of the window whose delivery time is known.
    delivery_samples: u64,
    /// From submission to delivery (the replica's `/health` height passing the request's
    /// position: ordered, executed and stored, not yet signed), over those samples; polled every
    /// [`HEIGHT_POLL_INTERVAL`], so late by up to that plus one `/health` round trip.
    delivery_latency_ms: Latency,
    /// Sampled answers (every `verify_every`-th id of the whole run, up to [`SAMPLES_MAX`]).
    sampled: u64,
    /// Of those, how many verified against the service key.
    verified: u64,
    /// Of the sampled, how many carried a service error answer (a kv error, a time-stamp
    /// rejection, a CA refusal).
    service_errors: u64,
    /// Sampled service answers also checked with `openssl` (at most [`OPENSSL_CHECKS`]).
    openssl_checked: u64,
    /// Of those, how many `openssl` accepted.
    openssl_verified: u64,
    /// One RSA-2048 signature share (`SecretKeyShare::sign_digest`) on this host before the
    /// run, median of [`SHARE_TIMINGS`] on the thread's CPU clock, ms.
    share_time_ms: f64,
    /// Cores of this host (`available_parallelism`).
    host_cores: usize,
    /// `host_cores / (servers × share time)`: answers per second when every core does nothing
    /// but one share per answer on every replica (the bound of the notary and the CA).
    ceiling_per_s: f64,
    /// `ordered_per_s / ceiling_per_s`, percent.
    ceiling_percent: f64,
    /// CPU seconds per second of the replicas' signer threads (RSA shares: one per answer and
    /// one per round's batch, per replica).
    signer_cpu_cores: f64,
    /// `signer_cpu_cores / cpu_cores`, percent: the part of the replicas' CPU that went into
    /// shares, measured (the rest: rounds, execution, I/O).
    signer_cpu_percent: f64,
    /// `servers × share time × ordered_per_s / cpu_cores`, percent: the part of the replicas'
    /// CPU that went into answer shares (the rest: rounds, batch signatures, I/O), whatever
    /// CPU other work on this host left them.
    share_cpu_percent: f64,
    errors: Errors,
    /// CPU seconds per second of every replica process together.
    cpu_cores: f64,
    /// Of that, per replica.
    cpu_cores_per_server: Vec<f64>,
    /// Replica CPU time per ordered request, µs.
    cpu_us_per_request: f64,
    /// CPU seconds per second of this load generator.
    client_cpu_cores: f64,
    /// Replicas that exited before they were stopped.
    nodes_crashed: Vec<u16>,
    /// Replicas that did not exit with status 0 after SIGTERM (killed, or failed).
    nodes_unclean_stop: Vec<u16>,
    /// The run directory when `--keep` was given.
    run_dir: Option<String>,
}

/// Runs the benchmark; prints the table or JSON on stdout, progress on stderr.
pub fn run(args: &BenchClusterArgs) -> anyhow::Result<ExitCode> {
    let load = check(args)?;
    let work = tempfile::Builder::new()
        .prefix("sintra-bench-cluster-")
        .tempdir()
        .context("creating a temporary directory")?;
    let keys_dir = match &args.data {
        Some(dir) if dir.join("group.toml").exists() => dir.clone(),
        Some(dir) => {
            deal(dir, args.servers)?;
            dir.clone()
        }
        None => {
            let dir = work.path().join("keys");
            deal(&dir, args.servers)?;
            dir
        }
    };
    let keys_dir = keys_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", keys_dir.display()))?;
    let group = GroupFile::load(&keys_dir.join("group.toml"))?;
    if group.keys.parameters.servers != args.servers {
        bail!(
            "{} holds a group of {} servers, not --servers {}",
            keys_dir.display(),
            group.keys.parameters.servers,
            args.servers
        );
    }
    let workload = Arc::new(make_workload(args, &keys_dir, &group, work.path())?);
    let share_time = share_time(&keys_dir, &group)?;
    let host_cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let ceiling_per_s = host_cores as f64 / (f64::from(args.servers) * share_time.as_secs_f64());
    eprintln!(
        "sintra bench cluster: one RSA share takes {:.2} ms here: ceiling {host_cores} cores / \
         ({} × share) = {ceiling_per_s:.0} signed answers/s",
        share_time.as_secs_f64() * 1e3,
        args.servers
    );
    let run_dir = work.path().join("run");
    let ports = pick_ports(args.servers)?;
    let ordering = write_run_dir(
        &run_dir,
        &keys_dir,
        &group,
        &ports,
        args.batch,
        args.ordering,
    )?;

    let exe = std::env::current_exe().context("locating the sintra binary")?;
    let mut cluster = Cluster::start(&exe, &run_dir, args.servers)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let gateways: Vec<SocketAddr> = ports
        .iter()
        .map(|port| loopback(port + PORT_STRIDE))
        .collect();
    let streams: Vec<SocketAddr> = ports
        .iter()
        .map(|port| loopback(port + 2 * PORT_STRIDE))
        .collect();
    // On SIGINT or SIGTERM the run is abandoned and the guard stops the replicas.
    runtime.block_on(until_interrupted(wait_ready(&mut cluster, &gateways)))?;
    eprintln!(
        "sintra bench cluster: {} replicas ready; {} s of load ({} s warm-up)",
        args.servers,
        args.duration + args.warmup,
        args.warmup
    );
    let pids = cluster.pids();
    let outcome = runtime.block_on(until_interrupted(drive(
        args,
        load,
        workload.clone(),
        &streams,
        &gateways,
        &pids,
    )))?;
    let crashed = cluster.crashed();
    let statuses = cluster.stop();
    let unclean: Vec<u16> = statuses
        .iter()
        .filter(|(_, status)| !status.is_some_and(|status| status.success()))
        .map(|(id, _)| id.get())
        .collect();

    let SampleCheck {
        sampled,
        verified,
        service_errors,
        openssl_checked,
        openssl_verified,
        delivery_us,
    } = check_samples(
        &group.keys.service,
        &outcome,
        &workload,
        &keys_dir,
        work.path(),
    );
    let window = args.duration;
    let node_cpu: Vec<f64> = outcome
        .cpu_before
        .iter()
        .zip(&outcome.cpu_after)
        .map(|(before, after)| (after - before) / window)
        .collect();
    let cpu_cores: f64 = node_cpu.iter().sum();
    let ordered = outcome.ordered;
    let mean_delta = |before: &[Option<(u64, u64)>],
                      after: &[Option<(u64, u64)>],
                      pick: fn(&(u64, u64)) -> u64| {
        let deltas: Vec<f64> = before
            .iter()
            .zip(after)
            .filter_map(|(b, a)| {
                Some((pick(a.as_ref()?) as f64 - pick(b.as_ref()?) as f64) / window)
            })
            .collect();
        if deltas.is_empty() {
            0.0
        } else {
            deltas.iter().sum::<f64>() / deltas.len() as f64
        }
    };
    let mut request_bytes = Vec::new();
    workload.encode(&[0; 8], 0, &mut request_bytes);
    let ordered_per_s = ordered as f64 / window;
    let report = Report {
        service: args.service,
        ordering,
        servers: args.servers,
        faults: group.keys.parameters.faults,
        clients: args.clients,
        load: match load {
            Load::Closed { .. } => "closed",
            Load::Open { .. } => "open",
        },
        window: match load {
            Load::Closed { window } => Some(window),
            Load::Open { .. } => None,
        },
        rate: args.rate,
        request_bytes: request_bytes.len(),
        value_bytes: match &*workload {
            Workload::Kv { value, .. } => value.len(),
            _ => 0,
        },
        keys: match &*workload {
            Workload::Kv { keys, .. } => *keys,
            _ => 0,
        },
        duration_s: args.duration,
        warmup_s: args.warmup,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        ordered,
        ordered_per_s,
        delivered_per_s: mean_delta(&outcome.health_before, &outcome.health_after, |h| h.0),
        rounds_per_s: mean_delta(&outcome.health_before, &outcome.health_after, |h| h.1),
        latency_ms: percentiles(outcome.latencies_us),
        delivery_samples: delivery_us.len() as u64,
        delivery_latency_ms: percentiles(delivery_us),
        sampled,
        verified,
        service_errors,
        openssl_checked,
        openssl_verified,
        share_time_ms: share_time.as_secs_f64() * 1e3,
        host_cores,
        ceiling_per_s,
        ceiling_percent: 100.0 * ordered_per_s / ceiling_per_s,
        signer_cpu_cores: (outcome.signer_cpu_after - outcome.signer_cpu_before) / window,
        signer_cpu_percent: if cpu_cores > 0.0 {
            100.0 * (outcome.signer_cpu_after - outcome.signer_cpu_before) / window / cpu_cores
        } else {
            0.0
        },
        share_cpu_percent: if cpu_cores > 0.0 {
            100.0 * f64::from(args.servers) * share_time.as_secs_f64() * ordered_per_s / cpu_cores
        } else {
            0.0
        },
        errors: outcome.errors,
        cpu_cores,
        cpu_cores_per_server: node_cpu,
        cpu_us_per_request: if ordered == 0 {
            0.0
        } else {
            cpu_cores * window * 1e6 / ordered as f64
        },
        client_cpu_cores: (outcome.client_cpu_after - outcome.client_cpu_before) / window,
        nodes_crashed: crashed.iter().map(|id| id.get()).collect(),
        nodes_unclean_stop: unclean,
        run_dir: args.keep.then(|| run_dir.display().to_string()),
    };
    if args.keep {
        // The directory outlives this process; its path is in the report.
        let _ = work.keep();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    let failed = !report.nodes_crashed.is_empty()
        || report.verified != report.sampled
        || report.openssl_verified != report.openssl_checked;
    if failed {
        eprintln!(
            "sintra bench cluster: FAILED ({} replicas crashed, {} of {} sampled answers verified, \
             {} of {} accepted by openssl)",
            report.nodes_crashed.len(),
            report.verified,
            report.sampled,
            report.openssl_verified,
            report.openssl_checked
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Checks the arguments' ranges; returns the load shape.
fn check(args: &BenchClusterArgs) -> anyhow::Result<Load> {
    sintra_crypto::dealer::GroupParameters::new(args.servers, None)
        .map_err(|error| anyhow::anyhow!("--servers {}: {error}", args.servers))?;
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        bail!("--clients must be 1 to {CLIENTS_MAX}");
    }
    if args.clients > STREAM_CONNECTIONS_MAX * usize::from(args.servers) {
        bail!(
            "--clients {}: each replica serves at most {STREAM_CONNECTIONS_MAX} streaming connections",
            args.clients
        );
    }
    if args.service == Service::Kv && !(REQUEST_OVERHEAD..=PAYLOAD_MAX).contains(&args.payload) {
        bail!(
            "--payload must be {REQUEST_OVERHEAD} to {PAYLOAD_MAX} bytes (a kv put of an {KEY_BYTES}-byte key)"
        );
    }
    if !(args.duration.is_finite() && args.duration >= 0.5 && args.duration <= 3600.0) {
        bail!("--duration must be 0.5 to 3600 seconds");
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0 && args.warmup <= 600.0) {
        bail!("--warmup must be 0 to 600 seconds");
    }
    if args.keys == 0 || args.keys > KEYS_MAX {
        bail!("--keys must be 1 to {KEYS_MAX}");
    }
    if args.verify_every == 0 {
        bail!("--verify-every must be at least 1");
    }
    if args.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    match args.rate {
        None => {
            if args.window == 0 || args.window > STREAM_IN_FLIGHT_MAX {
                bail!(
                    "--window must be 1 to {STREAM_IN_FLIGHT_MAX} (a replica's per-connection limit)"
                );
            }
            Ok(Load::Closed {
                window: args.window,
            })
        }
        Some(rate) => {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                bail!("--rate must be above 0 and at most 10,000,000 requests per second");
            }
            Ok(Load::Open {
                per_connection: rate / args.clients as f64,
            })
        }
    }
}

/// Deals a group of `servers` into `dir` with `sintra keygen` (this binary), its output kept
/// off stdout (shown only if it fails).
fn deal(dir: &Path, servers: u16) -> anyhow::Result<()> {
    eprintln!(
        "sintra bench cluster: dealing a group of {servers} (RSA-2048 service key) into {}",
        dir.display()
    );
    let exe = std::env::current_exe().context("locating the sintra binary")?;
    let output = Command::new(exe)
        .arg("keygen")
        .arg("--servers")
        .arg(servers.to_string())
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .context("running sintra keygen")?;
    if !output.status.success() {
        bail!(
            "sintra keygen failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// One links port per server such that it and the gateway and streaming ports above it are
/// free now and distinct from every other server's.
fn pick_ports(servers: u16) -> anyhow::Result<Vec<u16>> {
    let mut rng = rand::thread_rng();
    let mut picked: Vec<u16> = Vec::new();
    let mut attempts = 0;
    while picked.len() < usize::from(servers) {
        attempts += 1;
        if attempts > 10_000 {
            bail!("found no free loopback ports for {servers} replicas");
        }
        let port = rng.gen_range(PORT_LOW..PORT_HIGH);
        // Each server's three ports are `port + k * PORT_STRIDE`; none may be another's.
        let clashes = picked.iter().any(|other| {
            (0..3).any(|i| (0..3).any(|j| other + i * PORT_STRIDE == port + j * PORT_STRIDE))
        });
        if clashes {
            continue;
        }
        let free = (0..3).all(|k| StdListener::bind(loopback(port + k * PORT_STRIDE)).is_ok());
        if free {
            picked.push(port);
        }
    }
    Ok(picked)
}

/// Writes `run/group.toml` (the dealt group with this run's endpoints) and
/// `run/server-<i>/config.toml` (the dealt keys, a fresh store, the dealt tunables).
fn write_run_dir(
    run: &Path,
    keys_dir: &Path,
    group: &GroupFile,
    ports: &[u16],
    batch: Option<usize>,
    ordering: Option<Ordering>,
) -> anyhow::Result<sintra_config::OrderingMode> {
    fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let servers: Vec<ServerEntry> = group
        .servers
        .iter()
        .zip(ports)
        .map(|(entry, port)| ServerEntry {
            id: entry.id,
            endpoint: loopback(*port).to_string(),
            gateway: loopback(port + PORT_STRIDE).to_string(),
            link_key: entry.link_key.clone(),
        })
        .collect();
    // The service files stay where they were dealt: absolute paths, since the run's group file
    // lives elsewhere (a path given absolute is kept as it is by `join`).
    let mut run_group = GroupFile::new(servers, group.keys.clone());
    run_group.ca_certificate = group
        .ca_certificate
        .as_ref()
        .map(|path| keys_dir.join(path));
    run_group.tsa_certificate = group
        .tsa_certificate
        .as_ref()
        .map(|path| keys_dir.join(path));
    run_group.ca_policy = group.ca_policy.as_ref().map(|path| keys_dir.join(path));
    run_group
        .check()
        .map_err(|message| anyhow::anyhow!("the run's group file would be invalid: {message}"))?;
    let path = run.join("group.toml");
    fs::write(&path, toml::to_string(&run_group)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let mut mode = sintra_config::OrderingMode::default();
    for (entry, port) in group.servers.iter().zip(ports) {
        let name = format!("server-{}", entry.id.get());
        let dealt = ServerConfig::load(&keys_dir.join(&name).join("config.toml"))?;
        let mut tunables = dealt.tunables;
        if let Some(batch) = batch {
            tunables.batch_requests_max = batch;
        }
        if let Some(ordering) = ordering {
            tunables.ordering = ordering.into();
        }
        mode = tunables.ordering;
        let config = ServerConfig {
            id: entry.id,
            listen: loopback(*port),
            gateway_listen: loopback(port + PORT_STRIDE),
            group: PathBuf::from("../group.toml"),
            keys: dealt.keys,
            data_dir: PathBuf::from("data"),
            tunables,
        };
        let dir = run.join(&name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("config.toml");
        fs::write(&path, toml::to_string(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(mode)
}

/// The replica processes; dropping it stops them all.
struct Cluster {
    run_dir: PathBuf,
    children: Vec<(ServerId, Child)>,
}

impl Cluster {
    fn start(exe: &Path, run_dir: &Path, servers: u16) -> anyhow::Result<Self> {
        let mut cluster = Self {
            run_dir: run_dir.to_owned(),
            children: Vec::new(),
        };
        for id in ServerId::all(servers) {
            let dir = run_dir.join(format!("server-{}", id.get()));
            let log_path = dir.join("node.log");
            let log = fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let log_err = log.try_clone().context("duplicating the log file")?;
            // On an error here the guard stops the replicas already started.
            let child = Command::new(exe)
                .arg("node")
                .arg("--config")
                .arg(dir.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .env("NO_COLOR", "1")
                .spawn()
                .with_context(|| format!("starting replica {}", id.get()))?;
            cluster.children.push((id, child));
        }
        Ok(cluster)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, child)| child.id()).collect()
    }

    /// Replicas that have exited.
    fn crashed(&mut self) -> Vec<ServerId> {
        self.children
            .iter_mut()
            .filter_map(|(id, child)| {
                matches!(child.try_wait(), Ok(Some(_)) | Err(_)).then_some(*id)
            })
            .collect()
    }

    /// The last lines of replica `id`'s log.
    fn log_tail(&self, id: ServerId) -> String {
        let path = self
            .run_dir
            .join(format!("server-{}", id.get()))
            .join("node.log");
        let text = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM to every replica, [`STOP_GRACE`] for all of them to exit, SIGKILL to the rest;
    /// returns each replica's exit status (`None`: it had to be killed).
    fn stop(&mut self) -> Vec<(ServerId, Option<ExitStatus>)> {
        for (_, child) in &self.children {
            crate::up::terminate(child);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut statuses = Vec::new();
        for (id, mut child) in self.children.drain(..) {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            statuses.push((id, status));
        }
        statuses
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.stop();
        }
    }
}

/// Runs `work` unless SIGINT or SIGTERM comes first (then: an error, so the caller's guard stops
/// the replicas rather than leaving them running without their parent).
async fn until_interrupted<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("catching SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("catching SIGTERM")?;
        tokio::select! {
            result = work => result,
            _ = interrupt.recv() => bail!("interrupted (SIGINT); replicas stopped"),
            _ = terminate.recv() => bail!("terminated (SIGTERM); replicas stopped"),
        }
    }
    #[cfg(not(unix))]
    {
        work.await
    }
}

/// Waits until every replica's gateway answers `/health` with all its peers connected; fails
/// with the replica's log when one exits, or after [`READY_WAIT_MAX`].
async fn wait_ready(cluster: &mut Cluster, gateways: &[SocketAddr]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WAIT_MAX;
    let peers = gateways.len().saturating_sub(1) as u64;
    loop {
        if let Some(id) = cluster.crashed().first() {
            bail!(
                "replica {} exited while starting; its log ends:\n{}",
                id.get(),
                cluster.log_tail(*id)
            );
        }
        let mut ready = true;
        for gateway in gateways {
            let health = health(*gateway).await;
            let connected = health
                .as_ref()
                .and_then(|json| json.get("peers_connected"))
                .and_then(serde_json::Value::as_u64);
            if connected != Some(peers) {
                ready = false;
                break;
            }
        }
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the replicas were not all connected after {} s (logs in {})",
                READY_WAIT_MAX.as_secs(),
                cluster.run_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /health` of a gateway as JSON; `None` on any failure.
async fn health(gateway: SocketAddr) -> Option<serde_json::Value> {
    let fetch = async {
        let mut stream = TcpStream::connect(gateway).await.ok()?;
        let request =
            format!("GET /health HTTP/1.1\r\nHost: {gateway}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream
            .take(HEALTH_BYTES_MAX)
            .read_to_end(&mut response)
            .await
            .ok()?;
        let start = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        if !response.starts_with(b"HTTP/1.1 200") {
            return None;
        }
        serde_json::from_slice(&response[start..]).ok()
    };
    tokio::time::timeout(HEALTH_TIMEOUT, fetch)
        .await
        .ok()
        .flatten()
}

/// `(height, round)` of every replica (`None` where `/health` failed).
async fn heights(gateways: &[SocketAddr]) -> Vec<Option<(u64, u64)>> {
    let mut all = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        let json = health(*gateway).await;
        let field = |name: &str| json.as_ref()?.get(name)?.as_u64();
        all.push(field("height").zip(field("round")));
    }
    all
}

/// CPU seconds (user + system, every thread, since start) of process `pid`; 0 when unreadable.
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of process `pid`'s signer threads (named `signer-…`: the RSA share
/// exponentiations, `crates/node/src/signer.rs`); 0 when unreadable.
fn signer_cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("signer"))
        })
        .map(|task| stat_cpu_seconds(&task.path().join("stat").to_string_lossy()))
        .sum()
}

/// User + system CPU seconds from a `/proc` `stat` file; 0 when unreadable.
fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = fs::read_to_string(path) else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks_per_second()
}

/// The CPU time this thread has used (wall-clock time where no thread clock is available).
fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(
            u64::try_from(now.tv_sec).unwrap_or(0),
            u32::try_from(now.tv_nsec).unwrap_or(0),
        )
    }
    #[cfg(not(unix))]
    {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

fn clock_ticks_per_second() -> f64 {
    #[cfg(unix)]
    {
        rustix::param::clock_ticks_per_second() as f64
    }
    #[cfg(not(unix))]
    {
        100.0
    }
}

/// A sampled answer, verified after the run.
struct Sample {
    connection: usize,
    id: u64,
    submitted: Instant,
    answered: Instant,
    /// The answer's payload: `SignedAnswer` JSON (kv) or the completed answer.
    payload: Vec<u8>,
}

/// What the load produced.
struct Outcome {
    ordered: u64,
    latencies_us: Vec<u32>,
    errors: Errors,
    samples: Vec<Sample>,
    /// Nonce prefix of every connection (to rebuild sampled requests).
    prefixes: Vec<[u8; 8]>,
    cpu_before: Vec<f64>,
    cpu_after: Vec<f64>,
    /// CPU seconds of the replicas' signer threads (all replicas) at both ends of the window.
    signer_cpu_before: f64,
    signer_cpu_after: f64,
    client_cpu_before: f64,
    client_cpu_after: f64,
    health_before: Vec<Option<(u64, u64)>>,
    health_after: Vec<Option<(u64, u64)>>,
    /// `(when, height)` of every replica, polled through the run.
    height_polls: Vec<Vec<(Instant, u64)>>,
    window: Window,
}

/// The measurement window, fixed before the load starts.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}

/// Builds the request with id `id` of the connection whose nonce prefix is `prefix`.
fn request(prefix: &[u8; 8], id: u64, keys: u64, value: &[u8], out: &mut Vec<u8>) {
    out.push(1);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(KEY_BYTES as u16).to_be_bytes());
    let key = format!("k{:07}", (u64::from_be_bytes(*prefix) ^ id) % keys);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// The value every request of a run carries (a fixed, arbitrary pattern).
fn value(payload: usize) -> Vec<u8> {
    (0..payload - REQUEST_OVERHEAD)
        .map(|i| b'a' + (i % 26) as u8)
        .collect()
}

/// Runs the load for warm-up plus duration, measuring the window.
async fn drive(
    args: &BenchClusterArgs,
    load: Load,
    workload: Arc<Workload>,
    streams: &[SocketAddr],
    gateways: &[SocketAddr],
    pids: &[u32],
) -> anyhow::Result<Outcome> {
    let begin = Instant::now();
    let window = Window {
        start: begin + Duration::from_secs_f64(args.warmup),
        end: begin + Duration::from_secs_f64(args.warmup + args.duration),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut rng = rand::thread_rng();
    let prefixes: Vec<[u8; 8]> = (0..args.clients)
        .map(|_| {
            let mut prefix = [0; 8];
            rng.fill_bytes(&mut prefix);
            prefix
        })
        .collect();
    let plan = Plan {
        load,
        answer_status: args.service.answer_status(),
        verify_every: args.verify_every,
        begin,
        window,
    };
    let poller = tokio::spawn(poll_heights(gateways.to_vec(), stop_rx.clone()));
    let mut connections = Vec::with_capacity(args.clients);
    for (index, prefix) in prefixes.iter().enumerate() {
        let addr = streams[index % streams.len()];
        connections.push(tokio::spawn(connection(
            index,
            addr,
            *prefix,
            workload.clone(),
            plan,
            stop_rx.clone(),
        )));
    }

    tokio::time::sleep_until(window.start.into()).await;
    let cpu_before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    let signer_cpu_before: f64 = pids.iter().map(|pid| signer_cpu_seconds(*pid)).sum();
    let client_cpu_before = cpu_seconds(std::process::id());
    let health_before = heights(gateways).await;
    tokio::time::sleep_until(window.end.into()).await;
    let cpu_after: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    let signer_cpu_after: f64 = pids.iter().map(|pid| signer_cpu_seconds(*pid)).sum();
    let client_cpu_after = cpu_seconds(std::process::id());
    let health_after = heights(gateways).await;
    let _ = stop_tx.send(true);
    let height_polls = poller.await.context("the height poller panicked")?;

    let mut outcome = Outcome {
        ordered: 0,
        latencies_us: Vec::new(),
        errors: Errors::default(),
        samples: Vec::new(),
        prefixes,
        cpu_before,
        cpu_after,
        signer_cpu_before,
        signer_cpu_after,
        client_cpu_before,
        client_cpu_after,
        health_before,
        health_after,
        height_polls,
        window,
    };
    for handle in connections {
        let stats = handle.await.context("a load connection panicked")?;
        outcome.ordered += stats.ordered;
        let room = LATENCIES_MAX.saturating_sub(outcome.latencies_us.len());
        outcome
            .latencies_us
            .extend(stats.latencies_us.into_iter().take(room));
        outcome.errors.add(&stats.errors);
        let room = SAMPLES_MAX.saturating_sub(outcome.samples.len());
        outcome.samples.extend(stats.samples.into_iter().take(room));
    }
    Ok(outcome)
}

/// What every connection is told.
#[derive(Clone, Copy)]
struct Plan {
    load: Load,
    /// The status of a successful answer.
    answer_status: u8,
    verify_every: u64,
    /// When the load starts (the open loop's schedule counts from here).
    begin: Instant,
    window: Window,
}

/// One connection's counts.
#[derive(Default)]
struct Stats {
    ordered: u64,
    latencies_us: Vec<u32>,
    errors: Errors,
    samples: Vec<Sample>,
}

/// What a connection's writer and reader share.
struct Shared {
    /// Outstanding request id → when it was submitted (closed loop) or due (open loop).
    sent: HashMap<u64, Instant>,
    /// No submissions before this instant (after an "overloaded" answer).
    backoff_until: Option<Instant>,
}

/// One streaming connection: a writer task submitting, this task reading answers.
async fn connection(
    index: usize,
    addr: SocketAddr,
    prefix: [u8; 8],
    workload: Arc<Workload>,
    plan: Plan,
    stop: watch::Receiver<bool>,
) -> Stats {
    let Plan {
        load,
        answer_status,
        verify_every,
        window,
        ..
    } = plan;
    let mut stats = Stats::default();
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("sintra bench cluster: connecting to {addr}: {error}");
            stats.errors.connections += 1;
            return stats;
        }
    };
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let shared = Arc::new(Mutex::new(Shared {
        sent: HashMap::new(),
        backoff_until: None,
    }));
    let permits = Arc::new(Semaphore::new(match load {
        Load::Closed { window } => window,
        Load::Open { .. } => 0,
    }));
    let writer_task = tokio::spawn(write_requests(
        writer,
        prefix,
        workload,
        plan,
        shared.clone(),
        permits.clone(),
        stop.clone(),
    ));
    let mut reader = BufReader::with_capacity(256 << 10, reader);
    let mut frame = Vec::new();
    loop {
        let read = async {
            let mut header = [0u8; 4];
            reader.read_exact(&mut header).await?;
            let len = u32::from_be_bytes(header) as usize;
            if !(9..=ANSWER_FRAME_BYTES_MAX).contains(&len) {
                return Err(std::io::Error::other(format!(
                    "answer frame of {len} bytes"
                )));
            }
            frame.resize(len, 0);
            reader.read_exact(&mut frame).await?;
            Ok::<(), std::io::Error>(())
        };
        // A read is only ever cancelled to end the connection, so no frame is cut in two.
        let read = tokio::select! {
            read = read => read,
            () = drained(stop.clone(), &shared, window.end + DRAIN_MAX) => break,
        };
        if let Err(error) = read {
            if !*stop.borrow() {
                eprintln!("sintra bench cluster: connection {index} to {addr}: {error}");
                stats.errors.connections += 1;
            }
            break;
        }
        let now = Instant::now();
        let mut id = [0u8; 8];
        id.copy_from_slice(&frame[..8]);
        let id = u64::from_be_bytes(id);
        let status = frame[8];
        let submitted = {
            let mut shared = lock(&shared);
            if status == 1 {
                shared.backoff_until = Some(now + OVERLOAD_BACKOFF);
            }
            shared.sent.remove(&id)
        };
        if matches!(load, Load::Closed { .. }) {
            permits.add_permits(1);
        }
        let Some(submitted) = submitted else {
            stats.errors.other += 1;
            continue;
        };
        if window.contains(now) {
            if status == answer_status {
                stats.ordered += 1;
                if stats.latencies_us.len() < LATENCIES_MAX {
                    let micros = now.saturating_duration_since(submitted).as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
            } else {
                stats.errors.count_status(status);
            }
        }
        if status == answer_status && id % verify_every == 0 && stats.samples.len() < SAMPLES_MAX {
            stats.samples.push(Sample {
                connection: index,
                id,
                submitted,
                answered: now,
                payload: frame[9..].to_vec(),
            });
        }
    }
    writer_task.abort();
    if let Ok(Err(error)) = writer_task.await
        && !*stop.borrow()
    {
        eprintln!("sintra bench cluster: connection {index} to {addr}: {error}");
        stats.errors.connections += 1;
    }
    stats
}

/// Resolves once the load has stopped and no request is outstanding, or at `deadline`.
async fn drained(mut stop: watch::Receiver<bool>, shared: &Mutex<Shared>, deadline: Instant) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        return;
    }
    while !lock(shared).sent.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Submits requests until `stop`: in the closed loop whenever a permit (a free window slot) is
/// available, in the open loop as the schedule falls due.
async fn write_requests(
    writer: tokio::net::tcp::OwnedWriteHalf,
    prefix: [u8; 8],
    workload: Arc<Workload>,
    plan: Plan,
    shared: Arc<Mutex<Shared>>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Plan { load, begin, .. } = plan;
    let mut writer = BufWriter::with_capacity(64 << 10, writer);
    let mut next_id: u64 = 0;
    let mut buffer = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // How many to send now, and when each was due.
        let due: Vec<Instant> = match load {
            Load::Closed { .. } => {
                let permit = tokio::select! {
                    permit = permits.acquire() => permit,
                    _ = stop.changed() => return Ok(()),
                };
                let Ok(permit) = permit else { return Ok(()) };
                permit.forget();
                let mut count = 1;
                while count < WRITE_BATCH_MAX {
                    match permits.try_acquire() {
                        Ok(permit) => {
                            permit.forget();
                            count += 1;
                        }
                        Err(_) => break,
                    }
                }
                let now = Instant::now();
                vec![now; count]
            }
            Load::Open { per_connection } => {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return Ok(()),
                }
                // Request `k` is due at `k / per_connection`: those with `k <= elapsed * rate`.
                let elapsed = begin.elapsed().as_secs_f64();
                let target = (elapsed * per_connection) as u64 + 1;
                (next_id..target.max(next_id))
                    .map(|k| begin + Duration::from_secs_f64(k as f64 / per_connection))
                    .collect()
            }
        };
        if *stop.borrow() {
            return Ok(());
        }
        let backoff = lock(&shared).backoff_until.take();
        if let Some(until) = backoff {
            tokio::time::sleep_until(until.into()).await;
        }
        for at in due {
            let id = next_id;
            next_id += 1;
            buffer.clear();
            buffer.extend_from_slice(&[0; 4]);
            buffer.extend_from_slice(&id.to_be_bytes());
            workload.encode(&prefix, id, &mut buffer);
            let len = (buffer.len() - 4) as u32;
            buffer[..4].copy_from_slice(&len.to_be_bytes());
            lock(&shared).sent.insert(id, at);
            writer.write_all(&buffer).await?;
        }
        writer.flush().await?;
    }
}

/// Verifies the sampled answers (see the module doc, step 4) and times their deliveries.
fn check_samples(
    service: &rsa::PublicKey,
    outcome: &Outcome,
    workload: &Workload,
    keys_dir: &Path,
    scratch: &Path,
) -> SampleCheck {
    let mut check = SampleCheck {
        sampled: outcome.samples.len() as u64,
        verified: 0,
        service_errors: 0,
        openssl_checked: 0,
        openssl_verified: 0,
        delivery_us: Vec::new(),
    };
    let mut request_bytes = Vec::new();
    for sample in &outcome.samples {
        let prefix = &outcome.prefixes[sample.connection];
        // The answer's log position when it checks, and whether it carried a service error.
        let checked: Option<(u64, bool)> = match workload {
            Workload::Kv { .. } => {
                let Ok(answer) = serde_json::from_slice::<SignedAnswer>(&sample.payload) else {
                    continue;
                };
                request_bytes.clear();
                workload.encode(prefix, sample.id, &mut request_bytes);
                answer.verify(service, &request_bytes).is_ok().then(|| {
                    let failed =
                        !matches!(KvAnswer::decode(&answer.answer), Ok(KvAnswer::Ok { .. }));
                    (answer.position, failed)
                })
            }
            Workload::Tsa => match notary::granted_serial_and_time(&sample.payload) {
                // Serials are 1-based log positions.
                Some((serial, _)) if serial > 0 => Some((serial - 1, false)),
                _ => {
                    check.service_errors += 1;
                    None
                }
            },
            Workload::Ca { .. } => {
                if sample.payload.starts_with(b"-----BEGIN CERTIFICATE-----") {
                    x509::certificate_serial(&sample.payload)
                        .filter(|serial| *serial > 0)
                        .filter(|_| certificate_signed_by(service, &sample.payload))
                        .map(|serial| (serial - 1, false))
                } else {
                    check.service_errors += 1;
                    None
                }
            }
        };
        let Some((position, failed)) = checked else {
            continue;
        };
        check.verified += 1;
        if failed {
            check.service_errors += 1;
        }
        // Delivered (executed) at the connection's replica when its height first passed the
        // answer's position.
        let polls = &outcome.height_polls[sample.connection % outcome.height_polls.len()];
        let index = polls.partition_point(|(_, height)| *height <= position);
        if outcome.window.contains(sample.answered)
            && let Some((at, _)) = polls.get(index)
        {
            let micros = at.saturating_duration_since(sample.submitted).as_micros();
            check
                .delivery_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
    // A few answers also go through openssl, the verifier a client would use.
    let openssl_samples = outcome.samples.iter().take(OPENSSL_CHECKS);
    for (k, sample) in openssl_samples.enumerate() {
        let prefix = &outcome.prefixes[sample.connection];
        let accepted = match workload {
            Workload::Kv { .. } => continue,
            Workload::Tsa => openssl_ts_verify(
                scratch,
                k,
                &sample.payload,
                &document(prefix, sample.id),
                &keys_dir.join("tsa-certificate.pem"),
            ),
            Workload::Ca { .. } => openssl_verify(
                scratch,
                k,
                &sample.payload,
                &keys_dir.join("ca-certificate.pem"),
            ),
        };
        check.openssl_checked += 1;
        match accepted {
            Ok(()) => check.openssl_verified += 1,
            Err(error) => eprintln!("sintra bench cluster: sample {k} not accepted: {error:#}"),
        }
    }
    check
}

/// Whether the PEM certificate `pem` carries a valid signature of `service` over its
/// `TBSCertificate` (the DER walked by hand: `SEQUENCE { tbs, algorithm, BIT STRING }`).
fn certificate_signed_by(service: &rsa::PublicKey, pem: &[u8]) -> bool {
    let Ok(der) = x509::pem_to_der(pem, &[x509::PEM_LABEL_CERTIFICATE]) else {
        return false;
    };
    let signed = || -> Option<(Vec<u8>, Vec<u8>)> {
        let (0x30, certificate, _, _) = der_element(&der)? else {
            return None;
        };
        let (0x30, _, tbs, rest) = der_element(certificate)? else {
            return None;
        };
        let (0x30, _, _, rest) = der_element(rest)? else {
            return None;
        };
        let (0x03, [0, signature @ ..], _, []) = der_element(rest)? else {
            return None;
        };
        Some((tbs.to_vec(), signature.to_vec()))
    };
    let Some((tbs, signature)) = signed() else {
        return false;
    };
    rsa::Signature::from_raw_bytes(&signature)
        .is_ok_and(|signature| service.verify(&tbs, &signature).is_ok())
}

/// A DER element split off its input: `(tag, content, the whole element, what follows)`.
type DerElement<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The first DER element of `bytes`; `None` when it does not parse (lengths of up to four
/// bytes, single-byte tags).
fn der_element(bytes: &[u8]) -> Option<DerElement<'_>> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, byte| len << 8 | usize::from(*byte));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    let header = bytes.len() - rest.len();
    Some((tag, &rest[..len], &bytes[..header + len], &rest[len..]))
}

/// `openssl ts -verify` of the reply `reply` for `document` against the chain `ca_file` (the
/// notary's certificate, then the root).
fn openssl_ts_verify(
    scratch: &Path,
    k: usize,
    reply: &[u8],
    document: &[u8],
    ca_file: &Path,
) -> anyhow::Result<()> {
    let reply_path = scratch.join(format!("sample-{k}.tsr"));
    let document_path = scratch.join(format!("sample-{k}.doc"));
    fs::write(&reply_path, reply).with_context(|| format!("writing {}", reply_path.display()))?;
    fs::write(&document_path, document)
        .with_context(|| format!("writing {}", document_path.display()))?;
    openssl(&[
        "ts".as_ref(),
        "-verify".as_ref(),
        "-in".as_ref(),
        reply_path.as_os_str(),
        "-data".as_ref(),
        document_path.as_os_str(),
        "-CAfile".as_ref(),
        ca_file.as_os_str(),
        // The tokens carry no certificate (`certReq` false): the file's first one, the
        // notary's, is the signer.
        "-untrusted".as_ref(),
        ca_file.as_os_str(),
    ])
}

/// `openssl verify` of the PEM certificate `pem` against the root `ca_file`.
fn openssl_verify(scratch: &Path, k: usize, pem: &[u8], ca_file: &Path) -> anyhow::Result<()> {
    let path = scratch.join(format!("sample-{k}.pem"));
    fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
    openssl(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        ca_file.as_os_str(),
        path.as_os_str(),
    ])
}

/// Runs `openssl` with `args`; an error with its output unless it exits with status 0.
fn openssl(args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "openssl {:?} failed ({}): {}{}",
            args,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// What the sampled answers showed.
struct SampleCheck {
    sampled: u64,
    verified: u64,
    service_errors: u64,
    openssl_checked: u64,
    openssl_verified: u64,
    /// Submission to delivery of the sampled answers received in the window, µs.
    delivery_us: Vec<u32>,
}

/// The workload of `args.service`: for `ca`, the dealt token and a request made with
/// `openssl req` in `scratch` for the first name the dealt policy allows.
fn make_workload(
    args: &BenchClusterArgs,
    keys_dir: &Path,
    group: &GroupFile,
    scratch: &Path,
) -> anyhow::Result<Workload> {
    match args.service {
        Service::Kv => Ok(Workload::Kv {
            keys: args.keys,
            value: value(args.payload),
        }),
        Service::Tsa => {
            if group.tsa_certificate.is_none() {
                bail!(
                    "the group in {} names no tsa-certificate.pem (dealt by an older keygen): \
                     deal a new one",
                    keys_dir.display()
                );
            }
            Ok(Workload::Tsa)
        }
        Service::Ca => {
            if group.ca_certificate.is_none() || group.ca_policy.is_none() {
                bail!(
                    "the group in {} names no CA certificate and policy (dealt by an older \
                     keygen): deal a new one",
                    keys_dir.display()
                );
            }
            let token = read_small(&keys_dir.join("ca-admin-token"))?;
            let token = token.trim_ascii().to_vec();
            let policy_text = String::from_utf8(read_small(&keys_dir.join("ca-policy.toml"))?)
                .context("ca-policy.toml is not UTF-8")?;
            let policy = ca::CaPolicy::from_toml(&policy_text)?;
            let domain = policy
                .names
                .iter()
                .find_map(|rule| rule.pattern.strip_prefix("*."))
                .context("the CA policy has no `*.domain` rule to ask a name under")?;
            let name = format!("bench.{domain}");
            let csr_path = scratch.join("bench-csr.der");
            let key_path = scratch.join("bench-key.pem");
            openssl(&[
                "req".as_ref(),
                "-new".as_ref(),
                "-newkey".as_ref(),
                "ec".as_ref(),
                "-pkeyopt".as_ref(),
                "ec_paramgen_curve:P-256".as_ref(),
                "-nodes".as_ref(),
                "-keyout".as_ref(),
                key_path.as_os_str(),
                "-subj".as_ref(),
                format!("/CN={name}").as_ref(),
                "-outform".as_ref(),
                "DER".as_ref(),
                "-out".as_ref(),
                csr_path.as_os_str(),
            ])
            .context("making the certification request")?;
            let csr = read_small(&csr_path)?;
            // Checked once here, so that encoding every request cannot fail.
            ca::encode_issue(&[0; NONCE_BYTES], &token, &csr)?;
            eprintln!("sintra bench cluster: every request asks a certificate for {name}");
            Ok(Workload::Ca { token, csr })
        }
    }
}

/// A file of the dealt group directory, at most [`GROUP_FILE_BYTES_MAX`].
fn read_small(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(GROUP_FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// The CPU time of one service-key share exponentiation (`sign_digest`) with server 1's dealt
/// share: the median of [`SHARE_TIMINGS`] runs after [`SHARE_WARMUP`], on this thread's CPU
/// clock, so that time the thread spent preempted (the host may be shared) is not counted.
fn share_time(keys_dir: &Path, group: &GroupFile) -> anyhow::Result<Duration> {
    let first = ServerId::all(group.keys.parameters.servers)
        .next()
        .context("a group without servers")?;
    let name = format!("server-{}", first.get());
    let config = ServerConfig::load(&keys_dir.join(&name).join("config.toml"))?;
    let secrets = sintra_config::SecretsFile::load(&config.keys)?;
    let mut times = Vec::with_capacity(SHARE_TIMINGS);
    for k in 0..SHARE_WARMUP + SHARE_TIMINGS {
        let digest: [u8; 32] = Sha256::digest((k as u64).to_be_bytes()).into();
        let start = thread_cpu_time();
        let share = secrets
            .shares
            .service
            .sign_digest(&group.keys.service, &digest);
        let elapsed = thread_cpu_time().saturating_sub(start);
        std::hint::black_box(share);
        if k >= SHARE_WARMUP {
            times.push(elapsed);
        }
    }
    times.sort_unstable();
    times
        .get(times.len() / 2)
        .copied()
        .context("no share timed")
}

/// Polls every replica's `/health` height every [`HEIGHT_POLL_INTERVAL`] until `stop`:
/// `(when, height)` per replica, at most [`HEIGHT_POLLS_MAX`] each.
async fn poll_heights(
    gateways: Vec<SocketAddr>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Vec<(Instant, u64)>> {
    let mut polls = vec![Vec::new(); gateways.len()];
    let mut tick = tokio::time::interval(HEIGHT_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return polls,
        }
        for (gateway, polls) in gateways.iter().zip(&mut polls) {
            let height = health(*gateway)
                .await
                .and_then(|json| json.get("height")?.as_u64());
            if let Some(height) = height
                && polls.len() < HEIGHT_POLLS_MAX
            {
                polls.push((Instant::now(), height));
            }
        }
    }
}

fn percentiles(mut latencies_us: Vec<u32>) -> Latency {
    if latencies_us.is_empty() {
        return Latency::default();
    }
    latencies_us.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies_us.len() as f64 * q).ceil() as usize).clamp(1, latencies_us.len());
        f64::from(latencies_us[index - 1]) / 1000.0
    };
    let sum: u64 = latencies_us.iter().map(|&us| u64::from(us)).sum();
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
        mean: sum as f64 / latencies_us.len() as f64 / 1000.0,
    }
}

/// The report as a Markdown table (one header, one row) with a line of context above.
fn table(report: &Report) -> String {
    let mut out = String::new();
    let what = match report.service {
        Service::Kv => format!(
            "kv put of {} B ({} B value, {} keys)",
            report.request_bytes, report.value_bytes, report.keys
        ),
        Service::Tsa => format!(
            "RFC 3161 time-stamp request of {} B (SHA-256 imprint, nonce)",
            report.request_bytes
        ),
        Service::Ca => format!(
            "P-256 certification request of {} B (one CSR, a new certificate each)",
            report.request_bytes
        ),
    };
    let openssl = if report.openssl_checked > 0 {
        format!(
            ", {} of {} accepted by openssl",
            report.openssl_verified, report.openssl_checked
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "sintra bench cluster: {} replicas (t = {}), {:?} ordering, {} build, {} s measured after \
         {} s warm-up; {what}; {} of {} sampled answers verified{openssl}",
        report.servers,
        report.faults,
        report.ordering,
        report.build,
        report.duration_s,
        report.warmup_s,
        report.verified,
        report.sampled
    );
    let load = match (report.window, report.rate) {
        (Some(window), _) => format!("closed, window {window}"),
        (None, Some(rate)) => format!("open, {rate} req/s"),
        (None, None) => String::new(),
    };
    let _ = writeln!(
        out,
        "| service | servers | clients | load | ordered req/s | delivered req/s | rounds/s | p50 ms | p90 ms | p99 ms | max ms | to delivery p50 / p99 ms | node CPU cores | CPU µs/req | client CPU cores | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} | {:.2} | {:.1} | {:.2} | {} |",
        match report.service {
            Service::Kv => "kv",
            Service::Tsa => "tsa",
            Service::Ca => "ca",
        },
        report.servers,
        report.clients,
        load,
        report.ordered_per_s,
        report.delivered_per_s,
        report.rounds_per_s,
        report.latency_ms.p50,
        report.latency_ms.p90,
        report.latency_ms.p99,
        report.latency_ms.max,
        report.delivery_latency_ms.p50,
        report.delivery_latency_ms.p99,
        report.cpu_cores,
        report.cpu_us_per_request,
        report.client_cpu_cores,
        report.errors.total() + report.errors.connections
    );
    // kv answers share one signature per round: the per-answer ceiling does not bound them.
    if report.service != Service::Kv {
        let _ = writeln!(
            out,
            "ceiling = {} cores / ({} servers × {:.2} ms per RSA share) = {:.1} signed answers/s; \
             reached {:.0} %; the signer threads used {:.0} % of the replicas' {:.2} cores",
            report.host_cores,
            report.servers,
            report.share_time_ms,
            report.ceiling_per_s,
            report.ceiling_percent,
            report.signer_cpu_percent,
            report.cpu_cores
        );
        // Under signing duty (docs/node.md) an answer costs t + 1 shares, not one per server.
        let duty = u32::from(report.servers.saturating_sub(1) / 3 + 1);
        let duty_ceiling = report.ceiling_per_s * f64::from(report.servers) / f64::from(duty);
        let _ = writeln!(
            out,
            "signing duty: {duty} shares per answer (t + 1), so the work ceiling is {:.1} answers/s; \
             reached {:.0} % of it",
            duty_ceiling,
            report.ceiling_percent * report.ceiling_per_s / duty_ceiling.max(f64::MIN_POSITIVE)
        );
    }
    if !report.nodes_crashed.is_empty() {
        let _ = writeln!(out, "replicas that crashed: {:?}", report.nodes_crashed);
    }
    if let Some(dir) = &report.run_dir {
        let _ = writeln!(out, "run directory (configs, stores, logs): {dir}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_exactly_the_payload_and_decodes_as_a_put() {
        let value = value(250);
        let mut bytes = Vec::new();
        request(&[7; 8], 42, 10, &value, &mut bytes);
        assert_eq!(bytes.len(), 250);
        match sintra_services::kv::KvRequest::decode(&bytes).unwrap() {
            sintra_services::kv::KvRequest::Put { nonce, key, value } => {
                assert_eq!(&nonce[..8], &[7; 8]);
                assert_eq!(&nonce[8..], &42u64.to_be_bytes());
                assert_eq!(key.len(), KEY_BYTES);
                assert_eq!(value.len(), 250 - REQUEST_OVERHEAD);
            }
            other => panic!("not a put: {other:?}"),
        }
    }

    #[test]
    fn a_time_stamp_request_is_a_der_query_the_notary_accepts() {
        let query = tsa_query(&[0xff; 8], 7);
        assert_eq!(query.len(), 75);
        assert_eq!(notary::reject_malformed(&query), None);
        // Distinct requests hash distinct documents.
        assert_ne!(tsa_query(&[0xff; 8], 8)[24..56], query[24..56]);
        let mut bytes = Vec::new();
        Workload::Tsa.encode(&[0xff; 8], 7, &mut bytes);
        assert_eq!(bytes[0], notary::TAG_QUERY);
        assert_eq!(&bytes[1..1 + NONCE_BYTES], &nonce(&[0xff; 8], 7));
        assert_eq!(&bytes[1 + NONCE_BYTES..], &query[..]);
    }

    #[test]
    fn der_elements_split_and_truncations_are_refused() {
        let bytes = [0x30, 0x03, 0x02, 0x01, 0x05, 0xaa];
        let (tag, content, whole, rest) = der_element(&bytes).unwrap();
        assert_eq!(
            (tag, content, whole, rest),
            (0x30, &bytes[2..5], &bytes[..5], &bytes[5..])
        );
        let long = [0x04, 0x81, 0x01, 0x09];
        assert_eq!(der_element(&long).unwrap().1, &[0x09]);
        assert!(der_element(&[0x30, 0x05, 0x00]).is_none());
        assert!(der_element(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(der_element(&[0x30]).is_none());
    }

    #[test]
    fn picked_ports_and_their_strides_are_distinct() {
        let ports = pick_ports(16).unwrap();
        let mut all: Vec<u16> = ports
            .iter()
            .flat_map(|port| (0..3).map(move |k| port + k * PORT_STRIDE))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 48);
    }

    #[test]
    fn percentiles_pick_ranks() {
        let latency = percentiles((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(latency.p50, 50.0);
        assert_eq!(latency.p90, 90.0);
        assert_eq!(latency.p99, 99.0);
        assert_eq!(latency.max, 100.0);
    }
}
