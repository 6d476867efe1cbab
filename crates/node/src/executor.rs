//! The executor thread: executes delivered rounds in the service, in order, commits each round
//! to the store in one transaction (durable before any answer is released), builds the round's
//! answer batch, hands the statement to the signer thread, and at every checkpoint round signs
//! the checkpoint statement with the agreement-key share and hands the directory's state
//! statement (the Merkle root of its entries, for local lookups) to the signer. It also applies
//! state transfers: it checks the transferred rounds against a checkpoint certificate's chained
//! log digest *before* executing anything, so a peer that sends a wrong log changes nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{GroupParameters, ServerKeys};
use sintra_crypto::encoding::Encode;
use sintra_net::LinksHandle;
use sintra_protocols::InstanceId;
use sintra_protocols::abc::{DEDUP_ROUNDS, request_digest};
use sintra_services::answers::{AnswerBatch, leaf_hashed};
use sintra_services::directory::{StateStatement, StateTree};
use sintra_services::{ExecutionContext, Service};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::checkpoint::{
    CheckpointCertificate, CheckpointStatement, chain_log_digest, chain_log_digest_hashed,
};
use crate::coordinator::Event;
use crate::message::{Item, NodeMessage, STATE_ITEM};
use crate::metrics::Metrics;
use crate::protocol::ResumePoint;
use crate::signer::{SignJob, on_duty};
use crate::store::{OrderingRecord, RoundCommit, RoundRecord, ScabcPoint, Store};

/// Delivered rounds (or transfers) waiting for the executor.
pub(crate) const EXECUTION_QUEUE_MAX: usize = 256;

/// What the executor is given.
#[derive(Debug)]
pub(crate) enum ExecInput {
    /// A round atomic broadcast delivered (possibly empty).
    Round {
        round: u64,
        first: u64,
        time_ms: u64,
        requests: Vec<Vec<u8>>,
        /// Where secure causal atomic broadcast stood when the round was reported (stored
        /// with the round: where it resumes after a restart).
        scabc: ScabcPoint,
        /// Optimistic ordering: what it records with the round.
        ordering: Option<OrderingRecord>,
    },
    /// Rounds fetched from `peer`, to be checked against `certificate` and applied.
    Transfer {
        peer: ServerId,
        records: Vec<RoundRecord>,
        certificate: CheckpointCertificate,
    },
}

/// A round executed here, for the coordinator (answers to waiting clients).
#[derive(Debug)]
pub(crate) struct Executed {
    pub round: u64,
    /// `None` for an empty round.
    pub batch: Option<Arc<AnswerBatch>>,
    pub requests: Vec<Vec<u8>>,
    pub answers: Vec<Vec<u8>>,
    /// SHA-256 of each request (what waiting clients are registered by).
    pub request_hashes: Vec<[u8; 32]>,
    /// The answers the service key signs one by one: `(index in the round, SHA-256 of the
    /// signing message)`; answer `index` is item `index + 1` of the round.
    pub signed: Vec<(usize, [u8; 32])>,
    /// At a checkpoint round this server signs: the directory's state statement (item
    /// [`STATE_ITEM`]) and the tree it commits to, for local lookups once it is signed.
    pub state: Option<(StateStatement, Arc<StateTree>)>,
}

pub(crate) struct Executor {
    pub me: ServerId,
    /// `n` and `t`: which answer items this server signs without being asked.
    pub parameters: GroupParameters,
    pub store: Arc<Store>,
    pub service: Box<dyn Service>,
    pub next_round: u64,
    pub height: u64,
    pub log_digest: [u8; 32],
    /// The agreed time of the round that delivered the last log entry (0 for an empty log): the
    /// time of the directory's state statements (empty rounds have none of their own).
    pub last_entry_time_ms: u64,
    pub checkpoint_rounds: u64,
    pub instance: InstanceId,
    pub keys: Arc<ServerKeys>,
    pub links: LinksHandle,
    pub signer: std::sync::mpsc::SyncSender<SignJob>,
    pub events: mpsc::Sender<Event>,
    pub resume: watch::Sender<Option<ResumePoint>>,
    pub metrics: Arc<Metrics>,
}

impl Executor {
    /// Runs until the input channel closes (the protocol task stopped).
    pub(crate) fn run(mut self, mut input: mpsc::Receiver<ExecInput>) {
        while let Some(next) = input.blocking_recv() {
            self.metrics
                .execution_queue
                .store(input.len() as u64, Ordering::Relaxed);
            let result = match next {
                ExecInput::Round {
                    round,
                    first,
                    time_ms,
                    requests,
                    scabc,
                    ordering,
                } => self.execute_delivered(round, first, time_ms, requests, scabc, ordering),
                ExecInput::Transfer {
                    peer,
                    records,
                    certificate,
                } => self.apply_transfer(peer, records, certificate),
            };
            if let Err(error) = result {
                error!(server = %self.me, %error, "the executor stops: the store cannot be written");
                let _ = self.events.blocking_send(Event::Fatal(error));
                return;
            }
        }
    }

    fn execute_delivered(
        &mut self,
        round: u64,
        first: u64,
        time_ms: u64,
        requests: Vec<Vec<u8>>,
        scabc: ScabcPoint,
        ordering: Option<OrderingRecord>,
    ) -> Result<(), String> {
        if round < self.next_round {
            // Applied already by a state transfer.
            return Ok(());
        }
        if round > self.next_round {
            // Atomic broadcast is rebuilt only at the executor's own next round, so this is a
            // bug, never a peer's doing; stop rather than leave a gap in the log.
            return Err(format!(
                "round {round} delivered while round {} is next",
                self.next_round
            ));
        }
        if first != self.height {
            return Err(format!(
                "round {round} starts at position {first}, the log is at {}",
                self.height
            ));
        }
        self.execute(
            round,
            time_ms,
            requests,
            true,
            Some(scabc),
            ordering.as_ref(),
        )
        .map(|_| ())
    }

    /// Executes and commits one round; returns the state digest at a checkpoint round.
    fn execute(
        &mut self,
        round: u64,
        time_ms: u64,
        requests: Vec<Vec<u8>>,
        sign: bool,
        scabc: Option<ScabcPoint>,
        ordering: Option<&OrderingRecord>,
    ) -> Result<Option<[u8; 32]>, String> {
        let first = self.height;
        let mut answers = Vec::with_capacity(requests.len());
        let mut leaves = Vec::with_capacity(requests.len());
        let mut signed: Vec<(usize, [u8; 32])> = Vec::new();
        let mut request_hashes = Vec::with_capacity(requests.len());
        let mut log_digest = self.log_digest;
        for (offset, request) in requests.iter().enumerate() {
            let position = first + offset as u64;
            let answer = self.service.execute(
                &ExecutionContext {
                    position,
                    round,
                    time_ms,
                },
                request,
            );
            if let Some(message) = self.service.signing_message(request, &answer) {
                signed.push((offset, Sha256::digest(&message).into()));
            }
            let request_hash: [u8; 32] = Sha256::digest(request).into();
            leaves.push(leaf_hashed(position, &request_hash, &answer));
            log_digest =
                chain_log_digest_hashed(&log_digest, position, round, time_ms, &request_hash);
            request_hashes.push(request_hash);
            answers.push(answer);
        }
        let batch = if leaves.is_empty() {
            None
        } else {
            match AnswerBatch::new(round, first, leaves) {
                Ok(batch) => Some(Arc::new(batch)),
                Err(error) => {
                    // More answers than a batch holds: the round is executed and logged, but
                    // its answers cannot be signed (atomic broadcast's limits prevent this).
                    warn!(round, %error, "answers of the round cannot be batched");
                    None
                }
            }
        };
        let checkpoint =
            self.checkpoint_rounds > 0 && (round + 1).is_multiple_of(self.checkpoint_rounds);
        let snapshot = checkpoint.then(|| self.service.snapshot());
        // The state local lookups are served from: a Merkle tree over the directory, built only
        // at the checkpoint rounds this server signs (one hash per entry; the leaves are kept).
        let state_tree = if checkpoint && sign {
            self.service.state_tree()
        } else {
            None
        };
        let root = batch.as_ref().map_or([0; 32], |batch| batch.root());
        self.store
            .commit_round(&RoundCommit {
                round,
                first,
                time_ms,
                requests: &requests,
                answers: &answers,
                root,
                log_digest,
                snapshot: snapshot.as_deref(),
                scabc,
                ordering,
            })
            .map_err(|error| error.to_string())?;
        self.next_round = round + 1;
        self.height = first + requests.len() as u64;
        self.log_digest = log_digest;
        if !requests.is_empty() {
            self.last_entry_time_ms = time_ms;
        }
        self.metrics.set_log_head(self.height, self.log_digest);
        self.metrics
            .next_round
            .store(self.next_round, Ordering::Relaxed);
        self.metrics.rounds_executed.fetch_add(1, Ordering::Relaxed);

        if sign && let Some(batch) = &batch {
            let digest: [u8; 32] = Sha256::digest(batch.statement()).into();
            // The batch statement (item 0) serves the answers the service does not sign alone;
            // a round of time-stamps and certificates only needs no batch signature.
            let batch_item = (signed.len() < requests.len()).then_some((0, digest));
            let items = batch_item.into_iter().chain(
                signed
                    .iter()
                    .map(|(index, digest)| (*index as Item + 1, *digest)),
            );
            for (item, digest) in items {
                // Items off this server's duty are signed only when a combiner asks.
                if !on_duty(self.parameters, self.me, round, item) {
                    continue;
                }
                // The signer is a bounded queue: when it is behind, execution waits for it.
                if self
                    .signer
                    .send(SignJob::Sign {
                        round,
                        item,
                        digest,
                    })
                    .is_err()
                {
                    return Err("the signer thread stopped".into());
                }
            }
        }
        let state = state_tree.map(|tree| {
            let statement = tree.statement(round, self.height, self.last_entry_time_ms);
            (statement, tree)
        });
        if let Some((statement, _)) = &state {
            let digest: [u8; 32] = Sha256::digest(statement.encode()).into();
            let job = SignJob::Sign {
                round,
                item: STATE_ITEM,
                digest,
            };
            if self.signer.send(job).is_err() {
                return Err("the signer thread stopped".into());
            }
        }
        let state_digest = snapshot
            .as_ref()
            .map(|snapshot| -> [u8; 32] { Sha256::digest(snapshot).into() });
        if let Some(state_digest) = state_digest {
            let statement = CheckpointStatement {
                round,
                height: self.height,
                log_digest,
                state_digest,
            };
            let share = statement.sign(self.instance.as_bytes(), &self.keys.agreement);
            let message = NodeMessage::CheckpointShare { statement, share };
            let _ = self.links.broadcast(Bytes::from(message.to_bytes()));
            let _ = self
                .events
                .blocking_send(Event::OwnCheckpoint { statement, share });
        }
        let executed = Executed {
            round,
            batch,
            requests,
            answers,
            request_hashes,
            signed,
            state,
        };
        if self
            .events
            .blocking_send(Event::Executed(Box::new(executed)))
            .is_err()
        {
            return Err("the coordinator stopped".into());
        }
        Ok(state_digest)
    }

    /// Checks transferred rounds against the certificate (chained log digest and height, from
    /// this server's own log state), then executes them and rebuilds atomic broadcast after them.
    fn apply_transfer(
        &mut self,
        peer: ServerId,
        records: Vec<RoundRecord>,
        certificate: CheckpointCertificate,
    ) -> Result<(), String> {
        let target = certificate.statement;
        if target.round < self.next_round {
            let _ = self.events.blocking_send(Event::TransferDone {
                peer,
                accepted: true,
                next_round: self.next_round,
                certificate: None,
            });
            return Ok(());
        }
        let records: Vec<RoundRecord> = records
            .into_iter()
            .filter(|record| record.round >= self.next_round)
            .collect();
        let contiguous = records
            .iter()
            .enumerate()
            .all(|(offset, record)| record.round == self.next_round + offset as u64);
        let mut digest = self.log_digest;
        let mut position = self.height;
        for record in &records {
            for request in &record.requests {
                digest = chain_log_digest(&digest, position, record.round, record.time_ms, request);
                position += 1;
            }
        }
        let ends_at_target = records
            .last()
            .is_some_and(|last| last.round == target.round);
        if !contiguous
            || !ends_at_target
            || position != target.height
            || digest != target.log_digest
        {
            warn!(
                %peer,
                round = target.round,
                "transferred log does not match the checkpoint certificate; asking another peer"
            );
            let _ = self.events.blocking_send(Event::TransferDone {
                peer,
                accepted: false,
                next_round: self.next_round,
                certificate: None,
            });
            return Ok(());
        }
        let rounds = records.len() as u64;
        let mut state_digest = None;
        for record in records {
            state_digest = self.execute(
                record.round,
                record.time_ms,
                record.requests,
                false,
                None,
                None,
            )?;
            self.metrics
                .rounds_transferred
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(state_digest) = state_digest
            && state_digest != target.state_digest
        {
            error!(
                round = target.round,
                "the service state after the certified log differs from the certified state: \
                 this server's service is not deterministic or its state is damaged"
            );
        }
        self.store
            .save_certificate(&certificate)
            .map_err(|error| error.to_string())?;
        info!(%peer, rounds, next_round = self.next_round, height = self.height, "state transfer applied");
        let recent = self.recent_digests()?;
        let _ = self.resume.send(Some(ResumePoint {
            next_round: self.next_round,
            height: self.height,
            recent,
        }));
        let _ = self.events.blocking_send(Event::TransferDone {
            peer,
            accepted: true,
            next_round: self.next_round,
            certificate: Some(Box::new(certificate)),
        });
        Ok(())
    }

    /// The digests atomic broadcast remembers for deduplication, from the store.
    pub(crate) fn recent_digests(&self) -> Result<Vec<(u64, [u8; 32])>, String> {
        recent_digests(&self.store, &self.instance, self.next_round)
    }
}

/// `(round, request digest)` of the requests delivered in the deduplication window before
/// `next_round`.
pub(crate) fn recent_digests(
    store: &Store,
    instance: &InstanceId,
    next_round: u64,
) -> Result<Vec<(u64, [u8; 32])>, String> {
    if next_round == 0 {
        return Ok(Vec::new());
    }
    let from = next_round.saturating_sub(DEDUP_ROUNDS - 1);
    let records = store
        .rounds(from, next_round - 1, usize::MAX)
        .map_err(|error| error.to_string())?;
    Ok(records
        .iter()
        .flat_map(|record| {
            record
                .requests
                .iter()
                .map(|request| (record.round, request_digest(instance, request)))
        })
        .collect())
}
