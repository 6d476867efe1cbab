//! The replica's durable state: one `redb` file, `data_dir/sintra.redb`.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | `format` (file tag), `next_round`, `height`, `log_digest`, `fence`, `directory_state` (round ‖ statement length u32 ‖ the directory's signed state statement ‖ its signature) |
//! | `log_rounds` | round `u64` (rounds with requests) | time `u64` ‖ count `u32` ‖ (length `u32` ‖ request)* |
//! | `answer_rounds` | round `u64` (rounds with requests) | count `u32` ‖ (length `u32` ‖ answer)* |
//! | `round_starts` | first position `u64` (rounds with requests) | round `u64` |
//! | `rounds` | round `u64` | first position `u64` ‖ count `u64` ‖ answer-batch root (32) ‖ time `u64` |
//! | `checkpoints` | round `u64` | checkpoint certificate (encoded) |
//! | `snapshot` | 0 | round `u64` ‖ height `u64` ‖ service snapshot at the last own checkpoint |
//!
//! Every delivered round is one write transaction (its requests and answers as one row each, its
//! boundary, the new height and log digest, and at a checkpoint the snapshot), durable before the
//! round's answers are released. Empty rounds are recorded too (in `rounds`), so the round to
//! resume at is always known. A round's requests are one row, not one row per request: at
//! saturation a B-tree insert per request took a seventh of a replica's CPU (docs/bench.md);
//! `round_starts` finds the round that holds a position.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};
use thiserror::Error;

use crate::checkpoint::{CheckpointCertificate, LOG_DIGEST_START};

/// The store file inside the data directory.
pub const STORE_FILE: &str = "sintra.redb";

/// The value of `meta.format`: a file without it (or with another) is not ours.
const FORMAT: &[u8] = b"sintra-node store v3";

/// The largest request a round record may carry when decoded from a peer (a request never
/// exceeds a batch, and a batch never exceeds a consistent-broadcast body).
pub const RECORD_REQUEST_BYTES_MAX: usize = sintra_protocols::cbc::BODY_BYTES_MAX;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log_rounds");
/// First position of a round with requests → the round.
const STARTS: TableDefinition<u64, u64> = TableDefinition::new("round_starts");
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");
/// Round → the service's answers: a client that retries an executed request (at this server
/// or another) is answered from here, with the round's signature collected again.
const ANSWERS: TableDefinition<u64, &[u8]> = TableDefinition::new("answer_rounds");
/// The `meta` key of the latest signed directory state (local lookups after a restart).
const DIRECTORY_STATE: &str = "directory_state";

/// A store that cannot be opened, read or written. Every variant names the file.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The file exists but is not a sintra store (another program's, or damaged).
    #[error(
        "{path}: not a sintra store or damaged ({reason}); move it away or point data_dir elsewhere"
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The database error.
        source: Box<redb::Error>,
    },
    /// A stored value does not decode (the file was damaged after it was written).
    #[error("{path}: damaged entry in table {table}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The requests one round delivered, in order (possibly none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRecord {
    /// The round.
    pub round: u64,
    /// Its agreed time (milliseconds since the Unix epoch), which the service executes with.
    pub time_ms: u64,
    /// Its requests, in delivery order.
    pub requests: Vec<Vec<u8>>,
}

impl RoundRecord {
    /// Encoded size, to fill a message up to a byte limit.
    pub fn encoded_len(&self) -> usize {
        20 + self.requests.iter().map(|r| 4 + r.len()).sum::<usize>()
    }
}

impl Encode for RoundRecord {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        crate::message::put_requests(out, &self.requests);
    }
}

impl Decode for RoundRecord {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let round = reader.u64()?;
        let time_ms = reader.u64()?;
        let count = reader.u32()? as usize;
        // Every request takes at least its 4-byte length: checked before allocating.
        if count > reader.remaining() / 4 {
            return Err(DecodeError::Truncated {
                needed: count * 4 - reader.remaining(),
            });
        }
        let mut requests = Vec::with_capacity(count);
        for _ in 0..count {
            requests.push(reader.bytes("request", RECORD_REQUEST_BYTES_MAX)?.to_vec());
        }
        Ok(Self {
            round,
            time_ms,
            requests,
        })
    }
}

/// What a round commits.
#[derive(Debug, Clone)]
pub struct RoundCommit<'a> {
    /// The round.
    pub round: u64,
    /// The position of its first request (the height before it).
    pub first: u64,
    /// Its agreed time.
    pub time_ms: u64,
    /// Its requests.
    pub requests: &'a [Vec<u8>],
    /// The service's answers to them, one per request.
    pub answers: &'a [Vec<u8>],
    /// The root of its answer batch.
    pub root: [u8; 32],
    /// The chained log digest after it.
    pub log_digest: [u8; 32],
    /// At a checkpoint: the service snapshot after the round.
    pub snapshot: Option<&'a [u8]>,
    /// Where secure causal atomic broadcast stood when the round was reported (`None`: leave
    /// the stored point as it is).
    pub scabc: Option<ScabcPoint>,
    /// Optimistic ordering: what it records with the round (`None`: leave the stored record
    /// as it is).
    pub ordering: Option<&'a OrderingRecord>,
}

/// What the optimistic ordering records with a round of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderingRecord {
    /// Epochs whose close is in the log up to this round (each close is a round of its own).
    pub epoch: u64,
    /// The encoded point its instance resumes from, recorded with the last round of each step
    /// (`None`: the stored one stays).
    pub point: Option<Vec<u8>>,
}

/// Where this server's secure causal atomic broadcast stands: the round of its atomic broadcast
/// to deliver next, at position `height` (server-local progress, not part of the log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScabcPoint {
    /// The ordering round delivered next.
    pub next_round: u64,
    /// Ciphertexts ordered so far.
    pub height: u64,
}

/// The independent spaces the send fence covers, each with its own durable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FenceSpace {
    /// Rounds of the plain atomic broadcast `sintra/abc`.
    Abc,
    /// Rounds of the ordering atomic broadcast `sintra/scabc/abc`.
    ScabcRounds,
    /// Positions whose decryption share (`sintra/scabc/d<p>`) was sent.
    ScabcShares,
    /// Epochs of the optimistic ordering (`sintra/oabc`) whose ORDER, PREPARE, COMMIT or
    /// REPORT was sent.
    OabcEpochs,
}

impl FenceSpace {
    fn key(self) -> &'static str {
        match self {
            Self::Abc => "fence",
            Self::ScabcRounds => "scabc_fence",
            Self::ScabcShares => "scabc_share_fence",
            Self::OabcEpochs => "oabc_epoch_fence",
        }
    }
}

/// What the store holds about the log as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    /// The round to execute next (0 for an empty store).
    pub next_round: u64,
    /// Requests in the log.
    pub height: u64,
    /// The chained log digest.
    pub log_digest: [u8; 32],
    /// The send fence: the highest round this server may have sent a message of.
    pub fence: Option<u64>,
    /// The same for the rounds of secure causal atomic broadcast's ordering.
    pub scabc_fence: Option<u64>,
    /// The highest position this server may have sent a decryption share for.
    pub scabc_share_fence: Option<u64>,
    /// Where secure causal atomic broadcast resumes (recorded with the plain rounds).
    pub scabc: ScabcPoint,
    /// The highest epoch of the optimistic ordering this server may have spoken in.
    pub oabc_fence: Option<u64>,
    /// The encoded point the optimistic ordering resumes from (recorded with the rounds).
    pub ordering: Option<Vec<u8>>,
    /// Epochs of the optimistic ordering whose close is in the log.
    pub ordering_epoch: u64,
    /// The optimistic ordering's last stored prepare certificate (an encoded `oabc::Certified`).
    pub oabc_certified: Option<Vec<u8>>,
}

/// A stored snapshot of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last round it includes.
    pub round: u64,
    /// Requests it includes.
    pub height: u64,
    /// The service's snapshot bytes.
    pub bytes: Vec<u8>,
}

/// The directory's signed state statement as stored (docs/services/directory.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDirectoryState {
    /// The statement's encoding (`StateStatement::encode`).
    pub statement: Vec<u8>,
    /// The service key's signature over it.
    pub signature: Vec<u8>,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its position.
    pub position: u64,
    /// The round that delivered it.
    pub round: u64,
    /// That round's agreed time.
    pub time_ms: u64,
    /// The request.
    pub request: Vec<u8>,
}

/// The replica's store. `redb` serializes write transactions, so one `Store` may be shared by
/// the executor (rounds), the sender (fence) and the coordinator (certificates).
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

impl Store {
    /// Opens (or creates) `data_dir/sintra.redb`. A file that is not a sintra store, or is
    /// damaged, is refused with [`StoreError::Foreign`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(STORE_FILE);
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError::Io {
            path: path.clone(),
            source: Box::new(redb::Error::Io(error)),
        })?;
        let db = Database::create(&path).map_err(|error| StoreError::Foreign {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        let store = Self { db, path };
        store.init()?;
        Ok(store)
    }

    fn io(&self, error: impl Into<redb::Error>) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source: Box::new(error.into()),
        }
    }

    fn damaged(&self, table: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            table,
            reason: reason.into(),
        }
    }

    /// Creates the tables of a new store and checks the format tag of an existing one.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.foreign(e))?;
            let format = meta
                .get("format")
                .map_err(|e| self.io(e))?
                .map(|value| value.value().to_vec());
            match format {
                Some(format) if format == FORMAT => {}
                Some(other) => {
                    let tag = String::from_utf8_lossy(&other);
                    let reason = if tag.starts_with("sintra-node store") {
                        format!(
                            "a store of another format ({tag:?}; this build reads {:?}): start \
                             this server from an empty data_dir and let it catch up from its peers",
                            String::from_utf8_lossy(FORMAT)
                        )
                    } else {
                        format!("format tag {tag:?}")
                    };
                    return Err(StoreError::Foreign {
                        path: self.path.clone(),
                        reason,
                    });
                }
                None => {
                    if !meta.is_empty().map_err(|e| self.io(e))? {
                        return Err(StoreError::Foreign {
                            path: self.path.clone(),
                            reason: "a meta table without a format tag".into(),
                        });
                    }
                    meta.insert("format", FORMAT).map_err(|e| self.io(e))?;
                }
            }
            txn.open_table(LOG).map_err(|e| self.foreign(e))?;
            txn.open_table(STARTS).map_err(|e| self.foreign(e))?;
            txn.open_table(ROUNDS).map_err(|e| self.foreign(e))?;
            txn.open_table(CHECKPOINTS).map_err(|e| self.foreign(e))?;
            txn.open_table(SNAPSHOT).map_err(|e| self.foreign(e))?;
            txn.open_table(ANSWERS).map_err(|e| self.foreign(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// A table of another type under one of our names: not our file.
    fn foreign(&self, error: redb::TableError) -> StoreError {
        StoreError::Foreign {
            path: self.path.clone(),
            reason: error.to_string(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the log stands.
    pub fn state(&self) -> Result<StoredState, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let get_u64 = |name: &str| -> Result<Option<u64>, StoreError> {
            match meta.get(name).map_err(|e| self.io(e))? {
                None => Ok(None),
                Some(value) => u64_at(value.value(), 0)
                    .map(Some)
                    .ok_or_else(|| self.damaged("meta", format!("{name} is not a u64"))),
            }
        };
        let log_digest = match meta.get("log_digest").map_err(|e| self.io(e))? {
            None => LOG_DIGEST_START,
            Some(value) => value
                .value()
                .try_into()
                .map_err(|_| self.damaged("meta", "log_digest is not 32 bytes"))?,
        };
        Ok(StoredState {
            next_round: get_u64("next_round")?.unwrap_or(0),
            height: get_u64("height")?.unwrap_or(0),
            log_digest,
            fence: get_u64(FenceSpace::Abc.key())?,
            scabc_fence: get_u64(FenceSpace::ScabcRounds.key())?,
            scabc_share_fence: get_u64(FenceSpace::ScabcShares.key())?,
            scabc: ScabcPoint {
                next_round: get_u64("scabc_next_round")?.unwrap_or(0),
                height: get_u64("scabc_height")?.unwrap_or(0),
            },
            oabc_fence: get_u64(FenceSpace::OabcEpochs.key())?,
            ordering: meta
                .get("ordering_point")
                .map_err(|e| self.io(e))?
                .map(|value| value.value().to_vec()),
            ordering_epoch: get_u64("ordering_epoch")?.unwrap_or(0),
            oabc_certified: meta
                .get("oabc_certified")
                .map_err(|e| self.io(e))?
                .map(|value| value.value().to_vec()),
        })
    }

    /// Commits one delivered round in one durable transaction.
    pub fn commit_round(&self, commit: &RoundCommit<'_>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            if !commit.requests.is_empty() {
                let mut log = txn.open_table(LOG).map_err(|e| self.io(e))?;
                let mut row = Vec::with_capacity(
                    12 + commit.requests.iter().map(|r| 4 + r.len()).sum::<usize>(),
                );
                row.extend_from_slice(&commit.time_ms.to_be_bytes());
                crate::message::put_requests(&mut row, commit.requests);
                log.insert(commit.round, row.as_slice())
                    .map_err(|e| self.io(e))?;
                let mut answers = txn.open_table(ANSWERS).map_err(|e| self.io(e))?;
                row.clear();
                crate::message::put_requests(&mut row, commit.answers);
                answers
                    .insert(commit.round, row.as_slice())
                    .map_err(|e| self.io(e))?;
                let mut starts = txn.open_table(STARTS).map_err(|e| self.io(e))?;
                starts
                    .insert(commit.first, commit.round)
                    .map_err(|e| self.io(e))?;
            }
            let mut rounds = txn.open_table(ROUNDS).map_err(|e| self.io(e))?;
            let mut boundary = Vec::with_capacity(56);
            boundary.extend_from_slice(&commit.first.to_be_bytes());
            boundary.extend_from_slice(&(commit.requests.len() as u64).to_be_bytes());
            boundary.extend_from_slice(&commit.root);
            boundary.extend_from_slice(&commit.time_ms.to_be_bytes());
            rounds
                .insert(commit.round, boundary.as_slice())
                .map_err(|e| self.io(e))?;
            let height = commit.first + commit.requests.len() as u64;
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            meta.insert("next_round", (commit.round + 1).to_be_bytes().as_slice())
                .map_err(|e| self.io(e))?;
            meta.insert("height", height.to_be_bytes().as_slice())
                .map_err(|e| self.io(e))?;
            meta.insert("log_digest", commit.log_digest.as_slice())
                .map_err(|e| self.io(e))?;
            if let Some(point) = commit.scabc {
                meta.insert(
                    "scabc_next_round",
                    point.next_round.to_be_bytes().as_slice(),
                )
                .map_err(|e| self.io(e))?;
                meta.insert("scabc_height", point.height.to_be_bytes().as_slice())
                    .map_err(|e| self.io(e))?;
            }
            if let Some(record) = commit.ordering {
                meta.insert("ordering_epoch", record.epoch.to_be_bytes().as_slice())
                    .map_err(|e| self.io(e))?;
                if let Some(point) = &record.point {
                    meta.insert("ordering_point", point.as_slice())
                        .map_err(|e| self.io(e))?;
                }
            }
            if let Some(snapshot) = commit.snapshot {
                let mut value = Vec::with_capacity(16 + snapshot.len());
                value.extend_from_slice(&commit.round.to_be_bytes());
                value.extend_from_slice(&height.to_be_bytes());
                value.extend_from_slice(snapshot);
                let mut table = txn.open_table(SNAPSHOT).map_err(|e| self.io(e))?;
                table.insert(0, value.as_slice()).map_err(|e| self.io(e))?;
            }
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Durably records the send fence of atomic broadcast's rounds.
    pub fn set_fence(&self, fence: u64) -> Result<(), StoreError> {
        self.set_fence_of(FenceSpace::Abc, fence)
    }

    /// Durably records the send fence of one space.
    pub fn set_fence_of(&self, space: FenceSpace, fence: u64) -> Result<(), StoreError> {
        self.set_meta(space.key(), &fence.to_be_bytes())
    }

    /// Durably records the optimistic ordering's highest prepare certificate (an encoded
    /// `oabc::Certified`), before a COMMIT it covers leaves.
    pub fn set_oabc_certified(&self, certified: &[u8]) -> Result<(), StoreError> {
        self.set_meta("oabc_certified", certified)
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            meta.insert(key, value).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Stores a checkpoint certificate.
    pub fn save_certificate(&self, certificate: &CheckpointCertificate) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut table = txn.open_table(CHECKPOINTS).map_err(|e| self.io(e))?;
            table
                .insert(
                    certificate.statement.round,
                    certificate.to_bytes().as_slice(),
                )
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Stores the directory's state statement of checkpoint `round` (its encoding) with the
    /// service key's signature, unless a later round's is stored already.
    pub fn save_directory_state(
        &self,
        round: u64,
        statement: &[u8],
        signature: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            let stored = meta
                .get(DIRECTORY_STATE)
                .map_err(|e| self.io(e))?
                .and_then(|value| u64_at(value.value(), 0));
            if stored.is_some_and(|stored| stored >= round) {
                return Ok(());
            }
            let mut value = Vec::with_capacity(12 + statement.len() + signature.len());
            value.extend_from_slice(&round.to_be_bytes());
            value.extend_from_slice(&(statement.len() as u32).to_be_bytes());
            value.extend_from_slice(statement);
            value.extend_from_slice(signature);
            meta.insert(DIRECTORY_STATE, value.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// The latest stored directory state statement and its signature.
    pub fn directory_state(&self) -> Result<Option<StoredDirectoryState>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let Some(value) = meta.get(DIRECTORY_STATE).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        let value = value.value();
        let damaged = || self.damaged("meta", "directory_state is shorter than it says");
        let len = value
            .get(8..12)
            .and_then(|len| len.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(damaged)? as usize;
        let statement = value.get(12..12 + len).ok_or_else(damaged)?;
        Ok(Some(StoredDirectoryState {
            statement: statement.to_vec(),
            signature: value[12 + len..].to_vec(),
        }))
    }

    /// A stored certificate, decoded (a damaged one is an error naming the table).
    fn certificate(&self, bytes: &[u8]) -> Result<CheckpointCertificate, StoreError> {
        CheckpointCertificate::from_bytes(bytes)
            .map_err(|e| self.damaged("checkpoints", e.to_string()))
    }

    /// The certificate of the first checkpoint at or after `round`.
    pub fn certificate_from(
        &self,
        round: u64,
    ) -> Result<Option<CheckpointCertificate>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(CHECKPOINTS).map_err(|e| self.io(e))?;
        let mut range = table.range(round..).map_err(|e| self.io(e))?;
        match range.next() {
            None => Ok(None),
            Some(entry) => {
                let (_, value) = entry.map_err(|e| self.io(e))?;
                self.certificate(value.value()).map(Some)
            }
        }
    }

    /// The certificate of the last checkpoint at or before `round`.
    pub fn certificate_through(
        &self,
        round: u64,
    ) -> Result<Option<CheckpointCertificate>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(CHECKPOINTS).map_err(|e| self.io(e))?;
        let mut range = table.range(..=round).map_err(|e| self.io(e))?;
        match range.next_back() {
            None => Ok(None),
            Some(entry) => {
                let (_, value) = entry.map_err(|e| self.io(e))?;
                self.certificate(value.value()).map(Some)
            }
        }
    }

    /// The latest certificate.
    pub fn latest_certificate(&self) -> Result<Option<CheckpointCertificate>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(CHECKPOINTS).map_err(|e| self.io(e))?;
        match table.last().map_err(|e| self.io(e))? {
            None => Ok(None),
            Some((_, value)) => self.certificate(value.value()).map(Some),
        }
    }

    /// The snapshot of the last own checkpoint.
    pub fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = txn.open_table(SNAPSHOT).map_err(|e| self.io(e))?;
        let Some(value) = table.get(0).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        let value = value.value();
        match (u64_at(value, 0), u64_at(value, 8)) {
            (Some(round), Some(height)) => Ok(Some(Snapshot {
                round,
                height,
                bytes: value[16..].to_vec(),
            })),
            _ => Err(self.damaged("snapshot", "shorter than its header")),
        }
    }

    /// The rounds `from ..= to` as records, stopping before the encoded records would exceed
    /// `bytes_max` (at least one round is returned if any exists).
    pub fn rounds(
        &self,
        from: u64,
        to: u64,
        bytes_max: usize,
    ) -> Result<Vec<RoundRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let rounds = txn.open_table(ROUNDS).map_err(|e| self.io(e))?;
        let log = txn.open_table(LOG).map_err(|e| self.io(e))?;
        let mut records = Vec::new();
        let mut bytes = 0;
        for entry in rounds.range(from..=to).map_err(|e| self.io(e))? {
            let (round, boundary) = entry.map_err(|e| self.io(e))?;
            let round = round.value();
            let boundary = boundary.value();
            let (Some(count), Some(time_ms)) = (u64_at(boundary, 8), u64_at(boundary, 48)) else {
                return Err(self.damaged("rounds", format!("round {round}")));
            };
            let requests = if count == 0 {
                Vec::new()
            } else {
                let row = log
                    .get(round)
                    .map_err(|e| self.io(e))?
                    .ok_or_else(|| self.damaged("log_rounds", format!("round {round} missing")))?;
                let (_, requests) = self.log_row(round, row.value(), count)?;
                requests
            };
            let record = RoundRecord {
                round,
                time_ms,
                requests,
            };
            bytes += record.encoded_len();
            if bytes > bytes_max && !records.is_empty() {
                break;
            }
            records.push(record);
        }
        Ok(records)
    }

    /// The log entries at positions `from .. to`.
    pub fn log(&self, from: u64, to: u64) -> Result<Vec<LogEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let log = txn.open_table(LOG).map_err(|e| self.io(e))?;
        let mut entries = Vec::new();
        for (first, round) in self.rounds_holding(&txn, from, to)? {
            let row = log
                .get(round)
                .map_err(|e| self.io(e))?
                .ok_or_else(|| self.damaged("log_rounds", format!("round {round} missing")))?;
            let (time_ms, requests) = self.log_row(round, row.value(), None)?;
            entries.extend(
                requests
                    .into_iter()
                    .enumerate()
                    .map(|(offset, request)| LogEntry {
                        position: first + offset as u64,
                        round,
                        time_ms,
                        request,
                    })
                    .filter(|entry| (from..to).contains(&entry.position)),
            );
        }
        Ok(entries)
    }

    /// The answers stored for positions `from .. to`.
    pub fn answers(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let answers = txn.open_table(ANSWERS).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for (first, round) in self.rounds_holding(&txn, from, to)? {
            let Some(row) = answers.get(round).map_err(|e| self.io(e))? else {
                continue;
            };
            let list = decode_list(row.value())
                .ok_or_else(|| self.damaged("answer_rounds", format!("round {round}")))?;
            out.extend(
                list.into_iter()
                    .enumerate()
                    .filter(|(offset, _)| (from..to).contains(&(first + *offset as u64)))
                    .map(|(_, answer)| answer),
            );
        }
        Ok(out)
    }

    /// The rounds with requests at positions `from .. to`, as (first position, round),
    /// ascending.
    fn rounds_holding(
        &self,
        txn: &redb::ReadTransaction,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let starts = txn.open_table(STARTS).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        if let Some(entry) = starts.range(..=from).map_err(|e| self.io(e))?.next_back() {
            let (first, round) = entry.map_err(|e| self.io(e))?;
            out.push((first.value(), round.value()));
        }
        for entry in starts.range(from + 1..to).map_err(|e| self.io(e))? {
            let (first, round) = entry.map_err(|e| self.io(e))?;
            out.push((first.value(), round.value()));
        }
        Ok(out)
    }

    /// A `log_rounds` row: its time and requests (as many as `count` says, when given).
    fn log_row(
        &self,
        round: u64,
        row: &[u8],
        count: impl Into<Option<u64>>,
    ) -> Result<(u64, Vec<Vec<u8>>), StoreError> {
        let damaged = || self.damaged("log_rounds", format!("round {round}"));
        let time_ms = u64_at(row, 0).ok_or_else(damaged)?;
        let requests = decode_list(row.get(8..).unwrap_or_default()).ok_or_else(damaged)?;
        if count
            .into()
            .is_some_and(|count| count != requests.len() as u64)
        {
            return Err(damaged());
        }
        Ok((time_ms, requests))
    }

    /// The answer-batch root recorded for `round`, with its first position and count.
    pub fn round_boundary(&self, round: u64) -> Result<Option<(u64, u64, [u8; 32])>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let rounds = txn.open_table(ROUNDS).map_err(|e| self.io(e))?;
        let Some(value) = rounds.get(round).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        let value = value.value();
        match (u64_at(value, 0), u64_at(value, 8), value.get(16..48)) {
            (Some(first), Some(count), Some(root)) => {
                let mut out = [0; 32];
                out.copy_from_slice(root);
                Ok(Some((first, count, out)))
            }
            _ => Err(self.damaged("rounds", format!("round {round}"))),
        }
    }
}

/// A count `u32` and that many length-prefixed byte strings, nothing after (`None` otherwise).
fn decode_list(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut reader = Reader::new(bytes);
    let count = reader.u32().ok()? as usize;
    // Every item takes at least its 4-byte length: checked before allocating.
    if count > reader.remaining() / 4 {
        return None;
    }
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(reader.bytes("item", usize::MAX).ok()?.to_vec());
    }
    reader.finish().ok()?;
    Some(items)
}

/// Encodes a list of requests (for tests that compare logs).
pub fn encode_requests(requests: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for request in requests {
        put_bytes(&mut out, request);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_commit_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.state().unwrap().next_round, 0);
            let requests = vec![b"a".to_vec(), b"bc".to_vec()];
            store
                .commit_round(&RoundCommit {
                    round: 0,
                    first: 0,
                    time_ms: 1_700_000_000_000,
                    requests: &requests,
                    answers: &[b"A".to_vec(), b"BC".to_vec()],
                    root: [7; 32],
                    log_digest: [9; 32],
                    snapshot: None,
                    scabc: None,
                    ordering: Some(&OrderingRecord {
                        epoch: 1,
                        point: Some(b"point one".to_vec()),
                    }),
                })
                .unwrap();
            store
                .commit_round(&RoundCommit {
                    round: 1,
                    first: 2,
                    time_ms: 1_700_000_000_500,
                    requests: &[],
                    answers: &[],
                    root: [0; 32],
                    log_digest: [9; 32],
                    snapshot: Some(b"snap"),
                    scabc: Some(ScabcPoint {
                        next_round: 3,
                        height: 4,
                    }),
                    ordering: Some(&OrderingRecord {
                        epoch: 2,
                        point: None,
                    }),
                })
                .unwrap();
            store.set_fence(5).unwrap();
            store.set_fence_of(FenceSpace::ScabcShares, 12).unwrap();
            store.set_fence_of(FenceSpace::OabcEpochs, 3).unwrap();
            store.set_oabc_certified(b"certified").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let state = store.state().unwrap();
        assert_eq!(
            state,
            StoredState {
                next_round: 2,
                height: 2,
                log_digest: [9; 32],
                fence: Some(5),
                scabc_fence: None,
                scabc_share_fence: Some(12),
                scabc: ScabcPoint {
                    next_round: 3,
                    height: 4,
                },
                oabc_fence: Some(3),
                ordering: Some(b"point one".to_vec()),
                ordering_epoch: 2,
                oabc_certified: Some(b"certified".to_vec()),
            }
        );
        let records = store.rounds(0, 10, usize::MAX).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].requests, vec![b"a".to_vec(), b"bc".to_vec()]);
        assert!(records[1].requests.is_empty());
        assert_eq!(
            (records[0].time_ms, records[1].time_ms),
            (1_700_000_000_000, 1_700_000_000_500)
        );
        assert_eq!(store.snapshot().unwrap().unwrap().bytes, b"snap");
        assert_eq!(store.answers(1, 10).unwrap(), [b"BC".to_vec()]);
        let log = store.log(0, 10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(
            (log[1].request.as_slice(), log[1].time_ms),
            (b"bc".as_slice(), 1_700_000_000_000)
        );
        assert_eq!(store.round_boundary(0).unwrap(), Some((0, 2, [7; 32])));
    }

    /// Rounds of 0 to 4 requests (one row each): every range of positions reads back exactly the
    /// entries and answers at those positions, with their rounds and times, across round
    /// boundaries and empty rounds.
    #[test]
    fn any_range_of_positions_reads_across_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sizes = [3usize, 0, 1, 4, 0, 0, 2, 1];
        let mut expected = Vec::new();
        let mut first = 0u64;
        for (round, size) in sizes.iter().enumerate() {
            let round = round as u64;
            let requests: Vec<Vec<u8>> = (0..*size)
                .map(|i| format!("r{round} q{i}").into_bytes())
                .collect();
            let answers: Vec<Vec<u8>> = (0..*size)
                .map(|i| format!("r{round} a{i}").into_bytes())
                .collect();
            store
                .commit_round(&RoundCommit {
                    round,
                    first,
                    time_ms: 1000 + round,
                    requests: &requests,
                    answers: &answers,
                    root: [round as u8; 32],
                    log_digest: [0; 32],
                    snapshot: None,
                    scabc: None,
                    ordering: None,
                })
                .unwrap();
            for (request, answer) in requests.into_iter().zip(answers) {
                expected.push((round, request, answer));
            }
            first += *size as u64;
        }
        let height = expected.len() as u64;
        for from in 0..=height + 1 {
            for to in from..=height + 2 {
                let log = store.log(from, to).unwrap();
                let answers = store.answers(from, to).unwrap();
                let want: Vec<_> = (from..to.min(height)).collect();
                assert_eq!(
                    log.iter().map(|e| e.position).collect::<Vec<_>>(),
                    want,
                    "log {from}..{to}"
                );
                for entry in &log {
                    let (round, request, _) = &expected[entry.position as usize];
                    assert_eq!((entry.round, &entry.request), (*round, request));
                    assert_eq!(entry.time_ms, 1000 + round);
                }
                let want_answers: Vec<_> = want
                    .iter()
                    .map(|p| expected[*p as usize].2.clone())
                    .collect();
                assert_eq!(answers, want_answers, "answers {from}..{to}");
            }
        }
        let records = store.rounds(0, 100, usize::MAX).unwrap();
        assert_eq!(
            records.iter().map(|r| r.requests.len()).collect::<Vec<_>>(),
            sizes
        );
    }

    #[test]
    fn only_a_later_directory_state_replaces_the_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.directory_state().unwrap(), None);
        store
            .save_directory_state(7, b"statement 7", b"sig 7")
            .unwrap();
        store
            .save_directory_state(3, b"statement 3", b"sig 3")
            .unwrap();
        store.save_directory_state(7, b"other 7", b"other").unwrap();
        let expected = StoredDirectoryState {
            statement: b"statement 7".to_vec(),
            signature: b"sig 7".to_vec(),
        };
        assert_eq!(store.directory_state().unwrap(), Some(expected));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.save_directory_state(11, b"s", b"").unwrap();
        let stored = store.directory_state().unwrap().unwrap();
        assert_eq!(
            (stored.statement, stored.signature),
            (b"s".to_vec(), Vec::new())
        );
    }

    #[test]
    fn a_foreign_file_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), vec![0x5a; 8192]).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Foreign { .. }), "{error}");
        assert!(error.to_string().contains("not a sintra store"), "{error}");
    }

    #[test]
    fn round_records_decode_strictly() {
        let record = RoundRecord {
            round: 3,
            time_ms: 77,
            requests: vec![b"x".to_vec(), Vec::new()],
        };
        let bytes = record.to_bytes();
        assert_eq!(RoundRecord::from_bytes(&bytes).unwrap(), record);
        assert!(RoundRecord::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        // A count far beyond the bytes present is refused before allocating.
        let mut huge = 3u64.to_be_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(RoundRecord::from_bytes(&huge).is_err());
    }
}
