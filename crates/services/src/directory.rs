//! The secure directory: a key-value database whose entries belong to Ed25519 keys, updated
//! through atomic broadcast, and whose lookups are statements the servers sign with the
//! threshold service key, absence included (docs/services/directory.md).
//!
//! Guarantees: an entry is created at version 1 by the key that signs it and afterwards changed
//! only by a put that same key signed for exactly the next version, so a replayed or stale put is
//! refused; every lookup answer states the key, the entry (or its absence) and the log position
//! at which that was true, signed so a client needs only the service public key
//! ([`verify_lookup`]).
//!
//! Lookups come in two kinds. An *ordered* lookup (the request below) goes through atomic
//! broadcast and gets its own signature: it is current as of its log position (linearizable),
//! and costs one threshold-RSA signature. A *local* lookup ([`SignedState::lookup`],
//! [`verify_local_lookup`]) is answered by one server, without ordering and without RSA work,
//! from the state of the last checkpoint: a Merkle root over every entry is signed once per
//! checkpoint ([`StateStatement`]) and the answer carries the entry's path (or its neighbours',
//! for absence) to that root. It is true as of the statement's log height, which a faulty
//! server can make older but not false.
//!
//! Encodings (big-endian lengths):
//! - request: put `[0x30][nonce 16][key_len u16][key][value_len u32][value][version u64]
//!   [owner 32][signature 64]`, get `[0x31][nonce 16][key_len u16][key]`. Keys are 1 to
//!   [`KEY_BYTES_MAX`] bytes of UTF-8, values at most [`VALUE_BYTES_MAX`] bytes.
//! - the owner signs ([`put_message`]) `"sintra/directory/v1/put" ‖ key_len u16 ‖ key ‖
//!   value_len u32 ‖ value ‖ version u64` with Ed25519 (verified strictly).
//! - answer (what `execute` returns and the log keeps): `[0x00][statement]` for a lookup or an
//!   accepted put, where the statement ([`Lookup::statement`], what the service key signs) is
//!   `"sintra/directory/v1" ‖ found u8 ‖ position u64 ‖ key_len u16 ‖ key`, followed when
//!   found by `version u64 ‖ owner 32 ‖ owner_signature 64 ‖ value_len u32 ‖ value`; or, for a
//!   refused request, the final JSON `{"status":4xx,"error":"..."}` (starts with `{`, unsigned).
//! - completed answer: JSON `{"found","key","value","version","owner","owner_signature",
//!   "position","signature"}` with `value`, `owner`, `owner_signature` and `signature` in
//!   lowercase hex; the four entry fields are absent when `found` is false.
//! - snapshot: `"sintra/directory/snapshot/v1" ‖ count u64 ‖ count × (key_len u16 ‖ key ‖
//!   version u64 ‖ owner 32 ‖ owner_signature 64 ‖ value_len u32 ‖ value)`, keys strictly
//!   increasing.

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::{Signature as Ed25519Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sintra_crypto::rsa;

use crate::{ExecutionContext, HttpReply, REQUEST_NONCE_BYTES, Service, ServiceError};

mod state;

pub use state::{
    LOCAL_LOOKUP_JSON_BYTES_MAX, LocalLookup, STATE_DOMAIN, STATE_TREE_LEAVES_MAX, SignedState,
    StateStatement, StateTree, entry_digest, state_leaf, verify_local_lookup,
};

/// The request tag of a put.
pub const TAG_PUT: u8 = 0x30;
/// The request tag of a get.
pub const TAG_GET: u8 = 0x31;
/// Bytes of a key, at most.
pub const KEY_BYTES_MAX: usize = 256;
/// Bytes of a value, at most (16 KiB).
pub const VALUE_BYTES_MAX: usize = 16 << 10;
/// Default of [`Directory::entries_max`] (about a million).
pub const ENTRIES_MAX: usize = 1 << 20;
/// Default of [`Directory::bytes_max`]: key and value bytes held, summed (1 GiB).
pub const BYTES_MAX: usize = 1 << 30;
/// Bytes of an Ed25519 public key.
pub const OWNER_BYTES: usize = 32;
/// Bytes of an Ed25519 signature.
pub const OWNER_SIGNATURE_BYTES: usize = 64;
/// Bytes of an encoded request, at most: a put of the longest key and value.
pub const REQUEST_BYTES_MAX: usize = 1
    + REQUEST_NONCE_BYTES
    + 2
    + KEY_BYTES_MAX
    + 4
    + VALUE_BYTES_MAX
    + 8
    + OWNER_BYTES
    + OWNER_SIGNATURE_BYTES;
/// Bytes of JSON that [`verify_lookup`] and [`encode_put_json`] read, at most: hex doubles the
/// value, and 8 KiB covers the key (escaped), the other fields and an RSA signature of up to
/// 16384 bits in hex.
pub const LOOKUP_JSON_BYTES_MAX: usize = 2 * VALUE_BYTES_MAX + (8 << 10);
/// The prefix of every signed statement.
pub const STATEMENT_DOMAIN: &[u8] = b"sintra/directory/v1";
/// The prefix of every message an owner signs.
pub const PUT_DOMAIN: &[u8] = b"sintra/directory/v1/put";
/// The media type of every answer.
pub const CONTENT_TYPE: &str = "application/json";

const ANSWER_STATEMENT: u8 = 0x00;
const SNAPSHOT_MAGIC: &[u8] = b"sintra/directory/snapshot/v1";

/// Why bytes or JSON did not decode, or a lookup did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The input ended inside `what`.
    #[error("truncated {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A field longer than its maximum.
    #[error("{what} of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Its maximum.
        max: usize,
    },
    /// A tag byte that names no request.
    #[error("unknown request tag {0:#04x}")]
    UnknownTag(u8),
    /// Bytes after a complete encoding.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// A field whose value is not allowed.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why.
        why: &'static str,
    },
    /// JSON that is not the documented object.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The service key's signature over the statement does not verify.
    #[error("the service signature does not verify")]
    ServiceSignature,
    /// The owner's signature over the entry does not verify.
    #[error("the owner signature does not verify")]
    OwnerSignature,
}

/// Reads an encoding front to back; every read checks the remaining length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DirectoryError> {
        if self.bytes.len() < len {
            return Err(DirectoryError::Truncated { what });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DirectoryError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DirectoryError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn key(&mut self) -> Result<String, DirectoryError> {
        let len = usize::from(u16::from_be_bytes(self.array("key")?));
        check_key_len(len)?;
        let key = self.take(len, "key")?;
        String::from_utf8(key.to_vec()).map_err(|_| DirectoryError::Invalid {
            what: "key",
            why: "not UTF-8",
        })
    }

    fn value(&mut self) -> Result<Vec<u8>, DirectoryError> {
        let len = u32::from_be_bytes(self.array("value")?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        check_len("value", len, VALUE_BYTES_MAX)?;
        Ok(self.take(len, "value")?.to_vec())
    }

    fn finish(self) -> Result<(), DirectoryError> {
        match self.bytes.len() {
            0 => Ok(()),
            count => Err(DirectoryError::TrailingBytes(count)),
        }
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), DirectoryError> {
    if len > max {
        return Err(DirectoryError::TooLong { what, len, max });
    }
    Ok(())
}

fn check_key_len(len: usize) -> Result<(), DirectoryError> {
    if len == 0 {
        return Err(DirectoryError::Invalid {
            what: "key",
            why: "empty",
        });
    }
    check_len("key", len, KEY_BYTES_MAX)
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    // Callers checked `key.len() <= KEY_BYTES_MAX`, far below `u16::MAX`.
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    // Callers checked `value.len() <= VALUE_BYTES_MAX`, far below `u32::MAX`.
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

fn check_key_value(key: &str, value: &[u8]) -> Result<(), DirectoryError> {
    check_key_len(key.len())?;
    check_len("value", value.len(), VALUE_BYTES_MAX)
}

/// The message an owner signs with Ed25519 to put `value` under `key` at `version`:
/// `"sintra/directory/v1/put" ‖ key_len u16 ‖ key ‖ value_len u32 ‖ value ‖ version u64`.
pub fn put_message(key: &str, value: &[u8], version: u64) -> Result<Vec<u8>, DirectoryError> {
    check_key_value(key, value)?;
    let mut out = Vec::with_capacity(PUT_DOMAIN.len() + 2 + key.len() + 4 + value.len() + 8);
    out.extend_from_slice(PUT_DOMAIN);
    put_key(&mut out, key);
    put_value(&mut out, value);
    out.extend_from_slice(&version.to_be_bytes());
    Ok(out)
}

/// A put: the entry its owner signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The entry's key.
    pub key: String,
    /// The new value.
    pub value: Vec<u8>,
    /// 1 to create, the current version + 1 to update.
    pub version: u64,
    /// The owner's Ed25519 public key.
    pub owner: [u8; OWNER_BYTES],
    /// The owner's Ed25519 signature over [`put_message`]`(key, value, version)`.
    pub signature: [u8; OWNER_SIGNATURE_BYTES],
}

/// The request bytes of a put.
pub fn encode_put(nonce: &[u8; REQUEST_NONCE_BYTES], put: &Put) -> Result<Vec<u8>, DirectoryError> {
    check_key_value(&put.key, &put.value)?;
    let mut out = Vec::with_capacity(REQUEST_BYTES_MAX);
    out.push(TAG_PUT);
    out.extend_from_slice(nonce);
    put_key(&mut out, &put.key);
    put_value(&mut out, &put.value);
    out.extend_from_slice(&put.version.to_be_bytes());
    out.extend_from_slice(&put.owner);
    out.extend_from_slice(&put.signature);
    Ok(out)
}

/// The request bytes of a get.
pub fn encode_get(nonce: &[u8; REQUEST_NONCE_BYTES], key: &str) -> Result<Vec<u8>, DirectoryError> {
    check_key_len(key.len())?;
    let mut out = Vec::with_capacity(1 + REQUEST_NONCE_BYTES + 2 + key.len());
    out.push(TAG_GET);
    out.extend_from_slice(nonce);
    put_key(&mut out, key);
    Ok(out)
}

/// The JSON body of `PUT /dir/entries/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The value, lowercase hex.
    pub value: String,
    /// 1 to create, the current version + 1 to update.
    pub version: u64,
    /// The owner's Ed25519 public key, lowercase hex.
    pub owner: String,
    /// The owner's signature over [`put_message`], lowercase hex.
    pub signature: String,
}

/// For a gateway: the put request for `key` (the path segment, percent-decoded) and the JSON
/// body of `PUT /dir/entries/{key}`. An error means a 400 reply without ordering.
pub fn encode_put_json(
    nonce: &[u8; REQUEST_NONCE_BYTES],
    key: &str,
    body: &[u8],
) -> Result<Vec<u8>, DirectoryError> {
    check_len("put body", body.len(), LOOKUP_JSON_BYTES_MAX)?;
    let body: PutBody =
        serde_json::from_slice(body).map_err(|error| DirectoryError::Json(error.to_string()))?;
    let put = Put {
        key: key.to_owned(),
        value: decode_hex("value", &body.value, VALUE_BYTES_MAX)?,
        version: body.version,
        owner: decode_hex_array("owner", &body.owner)?,
        signature: decode_hex_array("signature", &body.signature)?,
    };
    encode_put(nonce, &put)
}

/// Lowercase hex only, so every byte string has exactly one JSON form.
fn decode_hex(what: &'static str, text: &str, max: usize) -> Result<Vec<u8>, DirectoryError> {
    check_len(what, text.len() / 2, max)?;
    if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return Err(DirectoryError::Invalid {
            what,
            why: "hex must be lowercase",
        });
    }
    hex::decode(text).map_err(|_| DirectoryError::Invalid {
        what,
        why: "not hex",
    })
}

fn decode_hex_array<const N: usize>(
    what: &'static str,
    text: &str,
) -> Result<[u8; N], DirectoryError> {
    decode_hex(what, text, N)?
        .try_into()
        .map_err(|_| DirectoryError::Invalid {
            what,
            why: "wrong length",
        })
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Put(Put),
    Get { key: String },
}

impl Request {
    fn decode(bytes: &[u8]) -> Result<Self, DirectoryError> {
        let mut reader = Reader { bytes };
        let tag = reader.array::<1>("request tag")?[0];
        if tag != TAG_PUT && tag != TAG_GET {
            return Err(DirectoryError::UnknownTag(tag));
        }
        reader.take(REQUEST_NONCE_BYTES, "nonce")?;
        let key = reader.key()?;
        let request = if tag == TAG_PUT {
            Self::Put(Put {
                key,
                value: reader.value()?,
                version: reader.u64("version")?,
                owner: reader.array("owner")?,
                signature: reader.array("signature")?,
            })
        } else {
            Self::Get { key }
        };
        reader.finish()?;
        Ok(request)
    }
}

/// An entry as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value (at most [`VALUE_BYTES_MAX`] bytes).
    pub value: Vec<u8>,
    /// 1 at creation, one more at each update.
    pub version: u64,
    /// The Ed25519 public key that owns the entry.
    pub owner: [u8; OWNER_BYTES],
    /// The owner's signature over [`put_message`]`(key, value, version)`.
    pub owner_signature: [u8; OWNER_SIGNATURE_BYTES],
}

/// What a signed lookup states: at log position `position`, `key` held `entry` (or nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The key looked up.
    pub key: String,
    /// The position in the ordered log of the request this answers.
    pub position: u64,
    /// The entry, `None` when the key had none.
    pub entry: Option<Entry>,
}

impl Lookup {
    /// The canonical encoding the service key signs: `"sintra/directory/v1" ‖ found u8 ‖
    /// position u64 ‖ key_len u16 ‖ key`, and when found `‖ version u64 ‖ owner 32 ‖
    /// owner_signature 64 ‖ value_len u32 ‖ value`.
    pub fn statement(&self) -> Vec<u8> {
        let value_len = self.entry.as_ref().map_or(0, |entry| entry.value.len());
        let mut out = Vec::with_capacity(STATEMENT_DOMAIN.len() + 160 + self.key.len() + value_len);
        out.extend_from_slice(STATEMENT_DOMAIN);
        out.push(u8::from(self.entry.is_some()));
        out.extend_from_slice(&self.position.to_be_bytes());
        put_key(&mut out, &self.key);
        if let Some(entry) = &self.entry {
            out.extend_from_slice(&entry.version.to_be_bytes());
            out.extend_from_slice(&entry.owner);
            out.extend_from_slice(&entry.owner_signature);
            put_value(&mut out, &entry.value);
        }
        out
    }

    /// Decodes exactly one statement.
    fn decode_statement(bytes: &[u8]) -> Result<Self, DirectoryError> {
        let mut reader = Reader { bytes };
        if reader.take(STATEMENT_DOMAIN.len(), "statement domain")? != STATEMENT_DOMAIN {
            return Err(DirectoryError::Invalid {
                what: "statement",
                why: "not a directory statement",
            });
        }
        let found = reader.array::<1>("found")?[0];
        let position = reader.u64("position")?;
        let key = reader.key()?;
        let entry = match found {
            0 => None,
            1 => Some(Entry {
                version: reader.u64("version")?,
                owner: reader.array("owner")?,
                owner_signature: reader.array("owner signature")?,
                value: reader.value()?,
            }),
            _ => {
                return Err(DirectoryError::Invalid {
                    what: "found",
                    why: "neither 0 nor 1",
                });
            }
        };
        reader.finish()?;
        Ok(Self {
            key,
            position,
            entry,
        })
    }

    /// The completed JSON answer.
    fn to_json(&self, signature: &[u8]) -> LookupJson {
        LookupJson {
            found: self.entry.is_some(),
            key: self.key.clone(),
            value: self.entry.as_ref().map(|entry| hex::encode(&entry.value)),
            version: self.entry.as_ref().map(|entry| entry.version),
            owner: self.entry.as_ref().map(|entry| hex::encode(entry.owner)),
            owner_signature: self
                .entry
                .as_ref()
                .map(|entry| hex::encode(entry.owner_signature)),
            position: self.position,
            signature: hex::encode(signature),
        }
    }
}

/// The completed answer of a lookup or an accepted put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupJson {
    found: bool,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner_signature: Option<String>,
    position: u64,
    signature: String,
}

/// A refused request's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ErrorJson {
    status: u16,
    error: String,
}

/// For clients: checks a completed lookup (or put receipt) JSON against the service public
/// key — recomputes the statement, checks the service signature and, for an entry, its owner's
/// signature — and returns what it states.
pub fn verify_lookup(json: &[u8], service_key: &rsa::PublicKey) -> Result<Lookup, DirectoryError> {
    check_len("lookup JSON", json.len(), LOOKUP_JSON_BYTES_MAX)?;
    let parsed: LookupJson =
        serde_json::from_slice(json).map_err(|error| DirectoryError::Json(error.to_string()))?;
    check_key_len(parsed.key.len())?;
    let entry = match (
        parsed.found,
        parsed.value,
        parsed.version,
        parsed.owner,
        parsed.owner_signature,
    ) {
        (false, None, None, None, None) => None,
        (true, Some(value), Some(version), Some(owner), Some(owner_signature)) => Some(Entry {
            value: decode_hex("value", &value, VALUE_BYTES_MAX)?,
            version,
            owner: decode_hex_array("owner", &owner)?,
            owner_signature: decode_hex_array("owner_signature", &owner_signature)?,
        }),
        _ => {
            return Err(DirectoryError::Invalid {
                what: "lookup",
                why: "entry fields must all be present exactly when found",
            });
        }
    };
    let lookup = Lookup {
        key: parsed.key,
        position: parsed.position,
        entry,
    };
    let signature = decode_hex("signature", &parsed.signature, 1 << 10)?;
    let signature =
        rsa::Signature::from_raw_bytes(&signature).map_err(|_| DirectoryError::ServiceSignature)?;
    service_key
        .verify(&lookup.statement(), &signature)
        .map_err(|_| DirectoryError::ServiceSignature)?;
    if let Some(entry) = &lookup.entry {
        verify_owner(&lookup.key, entry)?;
    }
    Ok(lookup)
}

/// Checks the owner's Ed25519 signature over the entry (strict: no small-order keys, canonical
/// signatures).
fn verify_owner(key: &str, entry: &Entry) -> Result<(), DirectoryError> {
    let message = put_message(key, &entry.value, entry.version)?;
    let owner =
        VerifyingKey::from_bytes(&entry.owner).map_err(|_| DirectoryError::OwnerSignature)?;
    owner
        .verify_strict(
            &message,
            &Ed25519Signature::from_bytes(&entry.owner_signature),
        )
        .map_err(|_| DirectoryError::OwnerSignature)
}

/// The HTTP reply for a completed answer: 200 for an entry, 404 with the signed statement of
/// absence, the refusal's own status otherwise.
pub fn http_reply(completed: Vec<u8>) -> HttpReply {
    let status = if let Ok(error) = serde_json::from_slice::<ErrorJson>(&completed) {
        error.status
    } else if let Ok(lookup) = serde_json::from_slice::<LookupJson>(&completed) {
        if lookup.found { 200 } else { 404 }
    } else {
        500
    };
    HttpReply {
        status,
        content_type: CONTENT_TYPE,
        body: completed,
    }
}

/// A refusal: HTTP status and message.
struct Refusal {
    status: u16,
    message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorJson {
            status: self.status,
            error: self.message.clone(),
        })
        .unwrap_or_else(|_| br#"{"status":500,"error":"encoding failed"}"#.to_vec())
    }
}

/// The directory, bounded by [`Self::entries_max`] entries and [`Self::bytes_max`] key and
/// value bytes; a put beyond either is refused and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// Entries are shared with the [`StateTree`]s taken at checkpoints (no copy of the values),
    /// each with its leaf in that tree, computed once when the entry is written.
    entries: BTreeMap<Arc<str>, Held>,
    /// Sum of key and value lengths over `entries`.
    bytes: usize,
    entries_max: usize,
    bytes_max: usize,
}

/// An entry as the directory keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    entry: Arc<Entry>,
    /// [`state_leaf`] of the key and the entry.
    leaf: state::Hash,
}

impl Held {
    fn new(key: &str, entry: Entry) -> Self {
        let leaf = state_leaf(key, &entry_digest(&entry));
        Self {
            entry: Arc::new(entry),
            leaf,
        }
    }
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    /// An empty directory with the default bounds [`ENTRIES_MAX`] and [`BYTES_MAX`].
    pub fn new() -> Self {
        Self::with_limits(ENTRIES_MAX, BYTES_MAX)
    }

    /// An empty directory with other bounds. Every server of a group must use the same bounds,
    /// or the servers diverge when the directory fills up. `entries_max` is capped at
    /// [`STATE_TREE_LEAVES_MAX`], the most entries a state tree holds.
    pub fn with_limits(entries_max: usize, bytes_max: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            bytes: 0,
            entries_max: entries_max.min(STATE_TREE_LEAVES_MAX),
            bytes_max,
        }
    }

    /// Entries held at most.
    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    /// Key and value bytes, summed, held at most.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the directory is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry under `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).map(|held| held.entry.as_ref())
    }

    /// The Merkle tree over every entry as it stands now, for lookups served without ordering
    /// (docs/services/directory.md, "Local lookups"). Shares the entries (no value is copied);
    /// costs one SHA-256 of 65 bytes per entry for the inner nodes, the leaves being kept.
    pub fn state_tree(&self) -> StateTree {
        StateTree::build(
            self.entries
                .iter()
                .map(|(key, held)| (key.clone(), held.entry.clone(), held.leaf))
                .collect(),
        )
    }

    fn lookup(&self, key: String, position: u64) -> Lookup {
        let entry = self.get(&key).cloned();
        Lookup {
            key,
            position,
            entry,
        }
    }

    fn put(&mut self, put: Put, position: u64) -> Result<Lookup, Refusal> {
        let entry = Entry {
            value: put.value,
            version: put.version,
            owner: put.owner,
            owner_signature: put.signature,
        };
        verify_owner(&put.key, &entry).map_err(|_| {
            Refusal::new(
                403,
                "the signature is not the owner's over this key, value and version",
            )
        })?;
        let previous = self.get(&put.key);
        match previous {
            None if entry.version != 1 => {
                return Err(Refusal::new(409, "a new entry has version 1"));
            }
            None if self.entries.len() >= self.entries_max => {
                return Err(Refusal::new(
                    507,
                    format!("the directory is full ({} entries)", self.entries_max),
                ));
            }
            Some(previous) if previous.owner != entry.owner => {
                return Err(Refusal::new(403, "the entry belongs to another key"));
            }
            Some(previous) if previous.version.checked_add(1) != Some(entry.version) => {
                return Err(Refusal::new(
                    409,
                    format!(
                        "stale or replayed version {}: the current version is {}",
                        entry.version, previous.version
                    ),
                ));
            }
            _ => {}
        }
        let freed = previous.map_or(0, |previous| put.key.len() + previous.value.len());
        let bytes = self.bytes - freed + put.key.len() + entry.value.len();
        if bytes > self.bytes_max {
            return Err(Refusal::new(
                507,
                format!("the directory is full ({} bytes)", self.bytes_max),
            ));
        }
        self.bytes = bytes;
        self.entries.insert(
            Arc::from(put.key.as_str()),
            Held::new(&put.key, entry.clone()),
        );
        Ok(Lookup {
            key: put.key,
            position,
            entry: Some(entry),
        })
    }

    fn decode_snapshot(&self, snapshot: &[u8]) -> Result<Self, DirectoryError> {
        let mut reader = Reader { bytes: snapshot };
        if reader.take(SNAPSHOT_MAGIC.len(), "snapshot header")? != SNAPSHOT_MAGIC {
            return Err(DirectoryError::Invalid {
                what: "snapshot header",
                why: "not a directory snapshot",
            });
        }
        let count = usize::try_from(reader.u64("entry count")?).unwrap_or(usize::MAX);
        check_len("entry count", count, self.entries_max)?;
        let mut entries = BTreeMap::new();
        let mut bytes = 0usize;
        let mut last: Option<String> = None;
        for _ in 0..count {
            let key = reader.key()?;
            let version = reader.u64("version")?;
            if version == 0 {
                return Err(DirectoryError::Invalid {
                    what: "version",
                    why: "versions start at 1",
                });
            }
            let entry = Entry {
                version,
                owner: reader.array("owner")?,
                owner_signature: reader.array("owner signature")?,
                value: reader.value()?,
            };
            if last.as_ref().is_some_and(|last| *last >= key) {
                return Err(DirectoryError::Invalid {
                    what: "snapshot",
                    why: "keys not strictly increasing",
                });
            }
            bytes += key.len() + entry.value.len();
            check_len("directory", bytes, self.bytes_max)?;
            entries.insert(Arc::from(key.as_str()), Held::new(&key, entry));
            last = Some(key);
        }
        reader.finish()?;
        Ok(Self {
            entries,
            bytes,
            entries_max: self.entries_max,
            bytes_max: self.bytes_max,
        })
    }
}

impl Service for Directory {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn execute(&mut self, context: &ExecutionContext, request: &[u8]) -> Vec<u8> {
        let lookup = match Request::decode(request) {
            Ok(Request::Get { key }) => Ok(self.lookup(key, context.position)),
            Ok(Request::Put(put)) => self.put(put, context.position),
            Err(error @ DirectoryError::TooLong { .. }) => {
                Err(Refusal::new(413, format!("bad request: {error}")))
            }
            Err(error) => Err(Refusal::new(400, format!("bad request: {error}"))),
        };
        match lookup {
            Ok(lookup) => {
                let statement = lookup.statement();
                let mut answer = Vec::with_capacity(1 + statement.len());
                answer.push(ANSWER_STATEMENT);
                answer.extend_from_slice(&statement);
                answer
            }
            Err(refusal) => refusal.encode(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(SNAPSHOT_MAGIC.len() + 8 + self.bytes + 110 * self.entries.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for (key, held) in &self.entries {
            let entry = &held.entry;
            put_key(&mut out, key);
            out.extend_from_slice(&entry.version.to_be_bytes());
            out.extend_from_slice(&entry.owner);
            out.extend_from_slice(&entry.owner_signature);
            put_value(&mut out, &entry.value);
        }
        out
    }

    /// Owner signatures are not re-verified: a snapshot is only installed when its SHA-256 is
    /// the digest `t + 1` servers certified, which makes it as trustworthy as the log that
    /// produced it, and a million Ed25519 checks would stall the restore.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ServiceError> {
        *self = self
            .decode_snapshot(snapshot)
            .map_err(|error| ServiceError::InvalidSnapshot {
                service: "directory",
                why: error.to_string(),
            })?;
        Ok(())
    }

    fn signing_message(&self, _request: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
        let statement = answer.strip_prefix(&[ANSWER_STATEMENT])?;
        Lookup::decode_statement(statement).ok()?;
        Some(statement.to_vec())
    }

    fn state_tree(&self) -> Option<Arc<StateTree>> {
        Some(Arc::new(Directory::state_tree(self)))
    }

    fn complete(&self, _request: &[u8], answer: &[u8], signature: &[u8]) -> Vec<u8> {
        let Some(statement) = answer.strip_prefix(&[ANSWER_STATEMENT]) else {
            // Refusals are complete as they are.
            return answer.to_vec();
        };
        match Lookup::decode_statement(statement) {
            Ok(lookup) => serde_json::to_vec(&lookup.to_json(signature))
                .unwrap_or_else(|_| Refusal::new(500, "encoding failed").encode()),
            Err(_) => Refusal::new(500, "not a directory answer").encode(),
        }
    }
}
