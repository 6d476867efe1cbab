//! `sintra bench sim`: the CPU cost of atomic broadcast itself, measured on a simulated group.
//!
//! `--protocol abc` (default) measures the randomized atomic broadcast; `--protocol oabc` the
//! optimistic one with an honest leader (every request is given to every server, as the
//! runtime's forwarding does, so that the leader holds them; "rounds" are then the leader's
//! batches).
//!
//! All `n` servers run on one thread over a FIFO network with no adversary; every server gets
//! `batch × rounds` distinct requests of `request_bytes` bytes at the start and broadcasts up to
//! `batch` of them per round (the batches of a round carry one of the two request classes, so a
//! request waits a round or two). Every message is encoded once when sent and decoded once by
//! every receiver, as on a real network; nothing else is simulated (no checkers, no trace), so
//! the CPU time is the protocol's and the cryptography's, summed over all servers. It is read
//! from the thread's own CPU clock (`/proc/thread-self/schedstat`, nanoseconds; the process's
//! `/proc/self/stat` ticks where that is missing), after the keys are dealt.
//!
//! Reported per group size: requests ordered, batch size, rounds, requests ordered per CPU
//! second and CPU µs per ordered request (all servers together), messages and bytes between
//! servers per ordered request, and the mean number of rounds from submission to delivery. The
//! servers' delivered sequences are compared at the end (a fingerprint per server).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::GroupParameters;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_protocols::abc::{Abc, AbcConfig};
use sintra_protocols::oabc::{Oabc, OabcConfig};
use sintra_protocols::{InstanceId, Message, Party, Step, Target, cbc};

use crate::keys::{KeySource, keys};
use crate::scenario::derive_seed;

/// Arguments of `sintra bench sim`.
#[derive(Args, Debug, Clone)]
pub struct BenchSimArgs {
    /// The protocol: `abc` (randomized atomic broadcast) or `oabc` (optimistic, honest leader).
    #[arg(long, default_value = "abc")]
    pub protocol: String,
    /// Group sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,7,16")]
    pub servers: Vec<u16>,
    /// Requests per server per round (the batch size).
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Rounds' worth of requests each server gets (`batch × rounds` requests per server).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Bytes per request.
    #[arg(long, default_value_t = 250)]
    pub request_bytes: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The result for one group size.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `abc` or `oabc`.
    pub protocol: &'static str,
    /// `n`.
    pub servers: u16,
    /// Requests ordered (each counted once, not once per server).
    pub requests: u64,
    /// Requests per server per round.
    pub batch: usize,
    /// Atomic-broadcast rounds delivered.
    pub rounds: u64,
    /// CPU seconds of the whole group.
    pub cpu_seconds: f64,
    /// Where the CPU time was read from.
    pub clock: &'static str,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Requests ordered per CPU second, all servers together.
    pub requests_per_cpu_second: f64,
    /// CPU microseconds per ordered request, all servers together.
    pub cpu_us_per_request: f64,
    /// Messages between distinct servers per ordered request.
    pub messages_per_request: f64,
    /// Bytes between distinct servers per ordered request.
    pub bytes_per_request: f64,
    /// Mean rounds from submission to delivery (1: delivered in the first round).
    pub rounds_per_delivery: f64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Invalid group size.
    #[error("invalid group: {0}")]
    Group(#[from] sintra_crypto::CryptoError),
    /// A batch that cannot be a consistent-broadcast body.
    #[error("a batch of {batch} requests of {bytes} bytes exceeds {max} bytes")]
    BatchTooLarge {
        /// Requests per batch.
        batch: usize,
        /// Bytes per request.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Neither `abc` nor `oabc`.
    #[error("unknown protocol `{0}`: use abc or oabc")]
    UnknownProtocol(String),
    /// The protocol refused a request (local misuse: a limit of the configuration).
    #[error("request refused: {0}")]
    Refused(String),
    /// The servers delivered different sequences (a bug: the simulator's checkers would say
    /// which property broke).
    #[error("servers delivered different sequences")]
    Disagreement,
}

/// Runs `sintra bench sim` and returns what it prints.
pub fn run(args: &BenchSimArgs) -> Result<String, BenchError> {
    let rows = args
        .servers
        .iter()
        .map(|n| measure(*n, args))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if args.json {
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    } else {
        table(&rows)
    })
}

/// The table of `rows`.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3} {:>9} {:>6} {:>6} {:>12} {:>10} {:>10} {:>11} {:>10} {:>8}",
        "n",
        "requests",
        "batch",
        "rounds",
        "req/cpu-s",
        "cpu µs/req",
        "msgs/req",
        "bytes/req",
        "rounds/dlv",
        "cpu s"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:>3} {:>9} {:>6} {:>6} {:>12.0} {:>10.1} {:>10.4} {:>11.1} {:>10.2} {:>8.2}",
            row.servers,
            row.requests,
            row.batch,
            row.rounds,
            row.requests_per_cpu_second,
            row.cpu_us_per_request,
            row.messages_per_request,
            row.bytes_per_request,
            row.rounds_per_delivery,
            row.cpu_seconds,
        );
    }
    let clock = rows.first().map_or("", |row| row.clock);
    let _ = writeln!(
        out,
        "\nAtomic broadcast ({}), FIFO network, no adversary, one thread for all servers; CPU time \
         from {clock}, summed over all servers; requests counted once.",
        rows.first().map_or("", |row| row.protocol)
    );
    out
}

/// The protocol a server runs.
enum Ordering {
    Abc(Box<Abc>),
    Oabc(Box<Oabc>),
}

/// A delivery, as the benchmark counts it: the request and its round (abc) or batch (oabc).
struct Counted {
    round: u64,
    request: Vec<u8>,
}

impl Ordering {
    fn submit(&mut self, party: &mut Party, request: Vec<u8>) -> Result<Step<Counted>, BenchError> {
        let refused =
            |error: sintra_protocols::abc::AbcError| BenchError::Refused(error.to_string());
        Ok(match self {
            Ordering::Abc(abc) => counted_abc(abc.submit(party, request).map_err(refused)?),
            Ordering::Oabc(oabc) => counted_oabc(oabc.submit(party, request).map_err(refused)?),
        })
    }

    fn handle(&mut self, party: &mut Party, from: ServerId, message: &Message) -> Step<Counted> {
        match self {
            Ordering::Abc(abc) => counted_abc(abc.handle_message(party, from, message)),
            Ordering::Oabc(oabc) => counted_oabc(oabc.handle_message(party, from, message)),
        }
    }
}

fn counted_abc(step: Step<sintra_protocols::abc::Delivered>) -> Step<Counted> {
    Step {
        messages: step.messages,
        faults: step.faults,
        outputs: step
            .outputs
            .into_iter()
            .map(|d| Counted {
                round: d.round,
                request: d.request,
            })
            .collect(),
    }
}

fn counted_oabc(step: Step<sintra_protocols::oabc::Delivered>) -> Step<Counted> {
    Step {
        messages: step.messages,
        faults: step.faults,
        outputs: step
            .outputs
            .into_iter()
            .map(|d| Counted {
                round: d.seq.unwrap_or(0).saturating_sub(1),
                request: d.request,
            })
            .collect(),
    }
}

/// One server of the benchmark.
struct Server {
    party: Party,
    abc: Ordering,
    /// Requests delivered, and the sum of their delivery rounds.
    delivered: u64,
    round_sum: u64,
    rounds: u64,
    /// The delivered requests' tags (their first 8 bytes, unique per request) folded in order:
    /// equal sequences give equal fingerprints. Cheap on purpose — the driver's own work must
    /// not count as the protocol's.
    fingerprint: u64,
}

/// Measures one group size.
pub fn measure(servers: u16, args: &BenchSimArgs) -> Result<BenchRow, BenchError> {
    let protocol = match args.protocol.as_str() {
        "abc" => "abc",
        "oabc" => "oabc",
        other => return Err(BenchError::UnknownProtocol(other.to_string())),
    };
    let parameters = GroupParameters::new(servers, None)?;
    let batch_bytes = args.batch * (args.request_bytes + 4) + 4;
    if batch_bytes > cbc::BODY_BYTES_MAX {
        return Err(BenchError::BatchTooLarge {
            batch: args.batch,
            bytes: args.request_bytes,
            max: cbc::BODY_BYTES_MAX,
        });
    }
    let instance = InstanceId::root("bench").expect("a valid label");
    let per_server = args.batch * args.rounds.max(1);
    let config = AbcConfig {
        batch_requests_max: args.batch,
        batch_bytes_max: batch_bytes,
        request_bytes_max: args.request_bytes.max(1),
        pending_requests_max: per_server * usize::from(servers),
        ..AbcConfig::default()
    };
    let make = || match protocol {
        "oabc" => Ordering::Oabc(Box::new(Oabc::new(
            instance.clone(),
            OabcConfig {
                abc: config,
                ..OabcConfig::default()
            },
        ))),
        _ => Ordering::Abc(Box::new(Abc::new(instance.clone(), config))),
    };
    let dealt = keys(parameters, KeySource::Cached, 0);
    let mut group: Vec<Server> = ServerId::all(servers)
        .map(|id| Server {
            party: Party::new(
                dealt.group.clone(),
                dealt.servers[id.slot()].clone(),
                derive_seed(0, "bench", u64::from(id.get())),
            ),
            abc: make(),
            delivered: 0,
            round_sum: 0,
            rounds: 0,
            fingerprint: 0,
        })
        .collect();
    // The requests, made before the clock starts: distinct, `request_bytes` each.
    let requests: Vec<Vec<Vec<u8>>> = (0..servers)
        .map(|server| {
            (0..per_server)
                .map(|index| {
                    let mut request = vec![0u8; args.request_bytes.max(1)];
                    let tag = (u64::from(server) << 32 | index as u64).to_be_bytes();
                    let len = tag.len().min(request.len());
                    request[..len].copy_from_slice(&tag[..len]);
                    request
                })
                .collect()
        })
        .collect();

    let cpu_before = cpu_time();
    let wall = Instant::now();
    let mut network = Network::default();
    if protocol == "oabc" {
        // Every server holds every request (the runtime forwards each to all).
        let all: Vec<Vec<u8>> = requests.into_iter().flatten().collect();
        for server in group.iter_mut() {
            for request in &all {
                let step = server.abc.submit(&mut server.party, request.clone())?;
                network.send(server.party.id, servers, step, server);
            }
        }
    } else {
        for (server, requests) in group.iter_mut().zip(requests) {
            for request in requests {
                let step = server.abc.submit(&mut server.party, request)?;
                network.send(server.party.id, servers, step, server);
            }
        }
    }
    while let Some((from, to, bytes)) = network.queue.pop_front() {
        // Every receiver decodes its own copy, as over a real link.
        let Ok(message) = Message::from_bytes(&bytes) else {
            continue;
        };
        let server = &mut group[to.slot()];
        let step = server.abc.handle(&mut server.party, from, &message);
        network.send(to, servers, step, server);
    }
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|((after, clock), (before, _))| (after - before, clock));
    let wall_seconds = wall.elapsed().as_secs_f64();
    let (cpu_seconds, clock) = cpu.unwrap_or((wall_seconds, "the wall clock (no CPU clock)"));

    let first = &group[0];
    if group
        .iter()
        .any(|s| s.delivered != first.delivered || s.fingerprint != first.fingerprint)
    {
        return Err(BenchError::Disagreement);
    }
    let requests = first.delivered.max(1) as f64;
    Ok(BenchRow {
        protocol,
        servers,
        requests: first.delivered,
        batch: args.batch,
        rounds: first.rounds,
        cpu_seconds,
        clock,
        wall_seconds,
        requests_per_cpu_second: first.delivered as f64 / cpu_seconds.max(f64::MIN_POSITIVE),
        cpu_us_per_request: cpu_seconds * 1e6 / requests,
        messages_per_request: network.messages as f64 / requests,
        bytes_per_request: network.bytes as f64 / requests,
        rounds_per_delivery: first.round_sum as f64 / requests,
    })
}

/// A FIFO network: what was sent first is delivered first.
#[derive(Default)]
struct Network {
    queue: VecDeque<(ServerId, ServerId, Arc<Vec<u8>>)>,
    /// Messages and bytes between distinct servers.
    messages: u64,
    bytes: u64,
}

impl Network {
    /// Sends `step`'s messages (each encoded once) and records `server`'s deliveries.
    fn send(&mut self, from: ServerId, servers: u16, step: Step<Counted>, server: &mut Server) {
        for delivered in step.outputs {
            server.delivered += 1;
            server.round_sum += delivered.round + 1;
            server.rounds = server.rounds.max(delivered.round + 1);
            let mut tag = [0u8; 8];
            let len = delivered.request.len().min(8);
            tag[..len].copy_from_slice(&delivered.request[..len]);
            server.fingerprint = server
                .fingerprint
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from_be_bytes(tag) ^ 0xA5A5_A5A5_A5A5_A5A5);
        }
        for outgoing in step.messages {
            let bytes = Arc::new(outgoing.message.to_bytes());
            let recipients: Vec<ServerId> = match outgoing.to {
                Target::All => ServerId::all(servers).collect(),
                Target::Server(to) => vec![to],
            };
            for to in recipients {
                if to != from {
                    self.messages += 1;
                    self.bytes += bytes.len() as u64;
                }
                self.queue.push_back((from, to, bytes.clone()));
            }
        }
    }
}

/// This thread's CPU time in seconds and where it was read, if the platform tells.
fn cpu_time() -> Option<(f64, &'static str)> {
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat")
        && let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
    {
        return Some((ns as f64 / 1e9, "/proc/thread-self/schedstat"));
    }
    // utime and stime, fields 14 and 15, in clock ticks (100 per second on Linux); the command
    // name (field 2) may hold spaces, so count from its closing parenthesis.
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ticks as f64 / 100.0, "/proc/self/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(protocol: &str) -> BenchSimArgs {
        BenchSimArgs {
            protocol: protocol.into(),
            servers: vec![4],
            batch: 16,
            rounds: 2,
            request_bytes: 32,
            json: false,
        }
    }

    #[test]
    fn a_small_group_orders_every_request_once_and_agrees() {
        let args = small("abc");
        let row = measure(4, &args).unwrap();
        // Every server's requests are ordered: 4 servers × 16 × 2.
        assert_eq!(row.requests, 128);
        assert!(row.rounds >= 2);
        assert!(row.messages_per_request > 0.0 && row.bytes_per_request > 32.0);
        assert!(row.rounds_per_delivery >= 1.0);
        let table = table(&[row]);
        assert!(table.contains("cpu µs/req"), "{table}");
    }

    #[test]
    fn the_optimistic_broadcast_orders_every_request_once_without_the_recovery() {
        let args = small("oabc");
        let row = measure(4, &args).unwrap();
        assert_eq!(row.requests, 128);
        // 128 requests in batches of at most 16.
        assert!(row.rounds >= 8, "{} batches", row.rounds);
        assert!(table(&[row]).contains("(oabc)"));
        let unknown = BenchSimArgs {
            protocol: "nope".into(),
            ..args
        };
        assert!(matches!(
            measure(4, &unknown),
            Err(BenchError::UnknownProtocol(_))
        ));
    }
}
