//! Local lookups: the directory's state committed to a Merkle root at checkpoint rounds, the
//! root signed once by the service key, and lookups that one server answers from that state
//! without ordering and without RSA work, each with a proof a client checks under the service
//! key alone (docs/services/directory.md, "Local lookups").
//!
//! Guarantee: a verified local answer is true *as of the signed statement's log height*: the
//! group executed the log up to `height` (checkpoint round `round`; the last of those entries
//! was ordered at the agreed time `time_ms`), and then `key` held exactly this entry, or
//! nothing; it was so from `time_ms` at least until round `round`. Unlike an ordered lookup it
//! says nothing about later writes: a server serves the latest statement it holds, and a faulty
//! server can serve an older one; the client bounds that by `height` or `time_ms`.
//!
//! The tree. Leaves are the entries sorted by key (byte order), leaf `i` =
//! `SHA-256(0x00 ‖ key_len u16 ‖ key ‖ entry_digest)` with `entry_digest` = [`entry_digest`] =
//! `SHA-256(version u64 ‖ owner 32 ‖ owner_signature 64 ‖ value_len u32 ‖ value)`; inner nodes
//! `SHA-256(0x01 ‖ left ‖ right)`, a node without a right sibling promoted unchanged (the rule of
//! [`crate::answers`], whose [`crate::answers::root_from_path`] checks the paths). An empty
//! directory has the root of 32 zero bytes. The statement the service key signs (PKCS#1 v1.5,
//! SHA-256) is [`StateStatement::encode`]:
//! `"sintra/directory/state/v1" ‖ 0x00 ‖ round u64 ‖ height u64 ‖ time_ms u64 ‖ count u64 ‖
//! root 32` (big-endian).
//!
//! Absence of `key` is proven by its neighbours in the sorted leaves: the leaf just below it
//! (`left`, index `i - 1`, key < `key`) and the leaf just above it (`right`, index `i`, key >
//! `key`), each with its path; `left` is absent when `i = 0`, `right` when `i = count`. Adjacent
//! leaves of a sorted tree leave no room for `key` between them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sintra_crypto::rsa;

use super::{
    DirectoryError, Entry, LOOKUP_JSON_BYTES_MAX, VALUE_BYTES_MAX, check_key_len, check_len,
    decode_hex, decode_hex_array, put_key, verify_owner,
};
use crate::HttpReply;
use crate::answers::{self, root_from_path};

/// A SHA-256 digest.
pub(super) type Hash = [u8; 32];

/// The prefix of the signed state statement (it differs from every other statement the
/// service key signs: [`super::STATEMENT_DOMAIN`] differs at its 18th byte,
/// [`crate::answers::STATEMENT_LABEL`] earlier, DER structures at the first).
pub const STATE_DOMAIN: &[u8] = b"sintra/directory/state/v1";
/// Entries a state tree holds at most (16,777,216: 24 levels, so a path has at most 24
/// hashes). [`super::Directory::with_limits`] caps its bound here; the default
/// [`super::ENTRIES_MAX`] is 2^20.
pub const STATE_TREE_LEAVES_MAX: usize = 1 << 24;
/// Bytes of a local lookup's JSON, at most: an ordered lookup's bound plus 8 KiB for the paths
/// (two of at most 24 hashes in hex), the neighbours' keys and the statement's fields.
pub const LOCAL_LOOKUP_JSON_BYTES_MAX: usize = LOOKUP_JSON_BYTES_MAX + (8 << 10);
/// Bytes of an RSA signature read from JSON, at most (a 16384-bit modulus).
const SIGNATURE_BYTES_MAX: usize = 1 << 11;
/// Hashes in a path read from JSON, at most (the depth of a full tree).
const PATH_LEN_MAX: usize = 24;
/// Bytes of the encoded statement.
const STATEMENT_BYTES: usize = STATE_DOMAIN.len() + 1 + 4 * 8 + 32;

/// `SHA-256(version u64 ‖ owner 32 ‖ owner_signature 64 ‖ value_len u32 ‖ value)`: what a leaf
/// commits to of an entry, so that a neighbour in an absence proof need not carry its value.
pub fn entry_digest(entry: &Entry) -> Hash {
    let value_len = u32::try_from(entry.value.len()).unwrap_or(u32::MAX);
    let mut hasher = Sha256::new();
    hasher.update(entry.version.to_be_bytes());
    hasher.update(entry.owner);
    hasher.update(entry.owner_signature);
    hasher.update(value_len.to_be_bytes());
    hasher.update(&entry.value);
    hasher.finalize().into()
}

/// The leaf of `key` holding the entry whose [`entry_digest`] is `entry_digest`:
/// `SHA-256(0x00 ‖ key_len u16 ‖ key ‖ entry_digest)`. The caller checked the key's length.
pub fn state_leaf(key: &str, entry_digest: &Hash) -> Hash {
    let mut bytes = Vec::with_capacity(1 + 2 + key.len() + 32);
    bytes.push(0x00);
    put_key(&mut bytes, key);
    bytes.extend_from_slice(entry_digest);
    Sha256::digest(&bytes).into()
}

/// What the service key signs at a checkpoint: after the log up to `height` (checkpoint round
/// `round`, the last entry ordered at `time_ms`), the directory held `count` entries under the
/// Merkle root `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateStatement {
    /// The checkpoint round: the last round executed.
    pub round: u64,
    /// Log entries executed (positions `0 .. height`).
    pub height: u64,
    /// The agreed time of the round that ordered the last entry of the log up to `height`,
    /// milliseconds since the Unix epoch (0 for an empty log). The checkpoint round itself is
    /// often empty, and an empty round has no time of its own; this one never lies after the
    /// checkpoint, so an age computed from it never makes a state look fresher than it is.
    pub time_ms: u64,
    /// Entries in the directory.
    pub count: u64,
    /// The Merkle root over them (32 zero bytes when `count` is 0).
    pub root: Hash,
}

impl StateStatement {
    /// The signed bytes: `"sintra/directory/state/v1" ‖ 0x00 ‖ round u64 ‖ height u64 ‖
    /// time_ms u64 ‖ count u64 ‖ root 32`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATEMENT_BYTES);
        out.extend_from_slice(STATE_DOMAIN);
        out.push(0x00);
        for field in [self.round, self.height, self.time_ms, self.count] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(&self.root);
        out
    }

    /// Decodes exactly one [`Self::encode`]d statement.
    pub fn decode(bytes: &[u8]) -> Result<Self, DirectoryError> {
        if bytes.len() != STATEMENT_BYTES {
            return Err(DirectoryError::Invalid {
                what: "state statement",
                why: "wrong length",
            });
        }
        let (domain, rest) = bytes.split_at(STATE_DOMAIN.len() + 1);
        if &domain[..STATE_DOMAIN.len()] != STATE_DOMAIN || domain[STATE_DOMAIN.len()] != 0 {
            return Err(DirectoryError::Invalid {
                what: "state statement",
                why: "not a directory state statement",
            });
        }
        let field = |index: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&rest[8 * index..8 * index + 8]);
            u64::from_be_bytes(word)
        };
        let mut root = [0u8; 32];
        root.copy_from_slice(&rest[32..]);
        Ok(Self {
            round: field(0),
            height: field(1),
            time_ms: field(2),
            count: field(3),
            root,
        })
    }
}

/// The directory's entries at one point, sorted by key, with every level of their Merkle tree
/// (built by [`super::Directory::state_tree`]). Memory: two reference-counted pointers and 32 to
/// 64 bytes of hashes per entry; the keys and values are shared with the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTree {
    keys: Vec<Arc<str>>,
    entries: Vec<Arc<Entry>>,
    /// `levels[0]` are the leaves; the last level is the root alone (or empty for no entry).
    levels: Vec<Vec<Hash>>,
}

impl StateTree {
    /// The tree over `(key, entry, leaf)` in strictly increasing key order, at most
    /// [`STATE_TREE_LEAVES_MAX`] of them (the directory's bound).
    pub(super) fn build(items: Vec<(Arc<str>, Arc<Entry>, Hash)>) -> Self {
        let mut keys = Vec::with_capacity(items.len());
        let mut entries = Vec::with_capacity(items.len());
        let mut leaves = Vec::with_capacity(items.len());
        for (key, entry, leaf) in items {
            keys.push(key);
            entries.push(entry);
            leaves.push(leaf);
        }
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|level| level.len() > 1) {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right, ..] => answers::inner(left, right),
                    [single] => *single,
                    [] => Hash::default(),
                })
                .collect();
            levels.push(next);
        }
        Self {
            keys,
            entries,
            levels,
        }
    }

    /// Entries in the tree.
    pub fn count(&self) -> u64 {
        self.keys.len() as u64
    }

    /// The root (32 zero bytes for an empty directory).
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or_default()
    }

    /// The statement of this tree after the log up to `height` (checkpoint round `round`, the
    /// last entry ordered at `time_ms`).
    pub fn statement(&self, round: u64, height: u64, time_ms: u64) -> StateStatement {
        StateStatement {
            round,
            height,
            time_ms,
            count: self.count(),
            root: self.root(),
        }
    }

    /// The siblings from leaf `index` up to the root ([`root_from_path`]'s order); `index` is
    /// in range.
    fn path(&self, index: usize) -> Vec<String> {
        let mut path = Vec::new();
        let mut index = index;
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            if let Some(hash) = level.get(index ^ 1) {
                path.push(hex::encode(hash));
            }
            index /= 2;
        }
        path
    }

    fn neighbour(&self, index: usize) -> Option<NeighbourJson> {
        Some(NeighbourJson {
            index: index as u64,
            key: self.keys.get(index)?.to_string(),
            entry_digest: hex::encode(entry_digest(self.entries.get(index)?)),
            path: self.path(index),
        })
    }
}

/// A state tree with the service key's signature over its statement: what a server answers
/// local lookups from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedState {
    statement: StateStatement,
    signature: Vec<u8>,
    tree: Arc<StateTree>,
}

impl SignedState {
    /// Pairs a tree with the signature of its statement. The caller verified the signature
    /// (combining threshold shares verifies it); refused when the statement is not the tree's.
    pub fn new(
        statement: StateStatement,
        signature: Vec<u8>,
        tree: Arc<StateTree>,
    ) -> Result<Self, DirectoryError> {
        if statement.count != tree.count() || statement.root != tree.root() {
            return Err(DirectoryError::Invalid {
                what: "state statement",
                why: "not the statement of this tree",
            });
        }
        Ok(Self {
            statement,
            signature,
            tree,
        })
    }

    /// The signed statement.
    pub fn statement(&self) -> &StateStatement {
        &self.statement
    }

    /// The service key's signature over [`StateStatement::encode`].
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The local answer for `key` (JSON, docs/services/directory.md): the entry with its path,
    /// or the neighbours proving its absence, and the signed statement. `O(log count)`: a
    /// binary search and at most two paths; no signature is made.
    pub fn lookup(&self, key: &str) -> Result<Vec<u8>, DirectoryError> {
        self.answer(key).map(|(_, json)| json)
    }

    /// [`Self::lookup`], also saying whether the key has an entry.
    fn answer(&self, key: &str) -> Result<(bool, Vec<u8>), DirectoryError> {
        check_key_len(key.len())?;
        let tree = &self.tree;
        let state = StateJson {
            round: self.statement.round,
            height: self.statement.height,
            time_ms: self.statement.time_ms,
            count: self.statement.count,
            root: hex::encode(self.statement.root),
            signature: hex::encode(&self.signature),
        };
        let mut json = LocalJson {
            found: false,
            key: key.to_owned(),
            value: None,
            version: None,
            owner: None,
            owner_signature: None,
            index: None,
            path: None,
            left: None,
            right: None,
            state,
        };
        match tree.keys.binary_search_by(|held| held.as_ref().cmp(key)) {
            Ok(index) => {
                let entry = &tree.entries[index];
                json.found = true;
                json.value = Some(hex::encode(&entry.value));
                json.version = Some(entry.version);
                json.owner = Some(hex::encode(entry.owner));
                json.owner_signature = Some(hex::encode(entry.owner_signature));
                json.index = Some(index as u64);
                json.path = Some(tree.path(index));
            }
            Err(insert_at) => {
                json.left = insert_at
                    .checked_sub(1)
                    .and_then(|index| tree.neighbour(index));
                json.right = tree.neighbour(insert_at);
            }
        }
        let body =
            serde_json::to_vec(&json).map_err(|error| DirectoryError::Json(error.to_string()))?;
        Ok((json.found, body))
    }

    /// The HTTP reply of a local lookup: 200 with the entry, 404 with the proof of absence, 400
    /// for a key that is no directory key.
    pub fn http_reply(&self, key: &str) -> HttpReply {
        let (status, body) = match self.answer(key) {
            Ok((true, body)) => (200, body),
            Ok((false, body)) => (404, body),
            Err(error) => (
                400,
                serde_json::json!({ "error": format!("bad key: {error}") })
                    .to_string()
                    .into_bytes(),
            ),
        };
        HttpReply {
            status,
            content_type: super::CONTENT_TYPE,
            body,
        }
    }
}

/// What a verified local answer states: as of `state` (log height, round, time), `key` held
/// `entry`, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLookup {
    /// The key looked up.
    pub key: String,
    /// Its entry, `None` when it had none.
    pub entry: Option<Entry>,
    /// The signed statement the answer was proven against.
    pub state: StateStatement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateJson {
    round: u64,
    height: u64,
    time_ms: u64,
    count: u64,
    root: String,
    signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighbourJson {
    index: u64,
    key: String,
    entry_digest: String,
    path: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalJson {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    left: Option<NeighbourJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    right: Option<NeighbourJson>,
    state: StateJson,
}

fn invalid(why: &'static str) -> DirectoryError {
    DirectoryError::Invalid {
        what: "local lookup proof",
        why,
    }
}

fn decode_path(path: &[String]) -> Result<Vec<Hash>, DirectoryError> {
    check_len("path", path.len(), PATH_LEN_MAX)?;
    path.iter()
        .map(|hash| decode_hex_array("path", hash))
        .collect()
}

/// Checks that leaf `index` of `state`'s tree is `leaf`.
fn check_leaf(
    state: &StateStatement,
    index: u64,
    leaf: Hash,
    path: &[String],
) -> Result<(), DirectoryError> {
    let path = decode_path(path)?;
    match root_from_path(index, state.count, leaf, &path) {
        Some(root) if root == state.root => Ok(()),
        Some(_) => Err(invalid("the path does not lead to the signed root")),
        None => Err(invalid("index out of range or path of the wrong length")),
    }
}

/// Checks that a neighbour of an absence proof is the leaf its index names.
fn check_neighbour(
    state: &StateStatement,
    neighbour: &NeighbourJson,
) -> Result<(), DirectoryError> {
    check_key_len(neighbour.key.len())?;
    let digest = decode_hex_array("entry_digest", &neighbour.entry_digest)?;
    check_leaf(
        state,
        neighbour.index,
        state_leaf(&neighbour.key, &digest),
        &neighbour.path,
    )
}

/// For clients: checks a local lookup's JSON under the service public key alone — the path of
/// the entry (or of both neighbours around the key's place) to the statement's root, the
/// service signature over the statement and, for an entry, its owner's signature — and returns
/// what it states. Never panics, whatever the bytes.
pub fn verify_local_lookup(
    json: &[u8],
    service_key: &rsa::PublicKey,
) -> Result<LocalLookup, DirectoryError> {
    check_len("local lookup JSON", json.len(), LOCAL_LOOKUP_JSON_BYTES_MAX)?;
    let parsed: LocalJson =
        serde_json::from_slice(json).map_err(|error| DirectoryError::Json(error.to_string()))?;
    check_key_len(parsed.key.len())?;
    let state = StateStatement {
        round: parsed.state.round,
        height: parsed.state.height,
        time_ms: parsed.state.time_ms,
        count: parsed.state.count,
        root: decode_hex_array("root", &parsed.state.root)?,
    };
    check_len(
        "entry count",
        usize::try_from(state.count).unwrap_or(usize::MAX),
        STATE_TREE_LEAVES_MAX,
    )?;
    let entry = match parsed {
        LocalJson {
            found: true,
            value: Some(value),
            version: Some(version),
            owner: Some(owner),
            owner_signature: Some(owner_signature),
            index: Some(index),
            path: Some(path),
            left: None,
            right: None,
            ..
        } => {
            let entry = Entry {
                value: decode_hex("value", &value, VALUE_BYTES_MAX)?,
                version,
                owner: decode_hex_array("owner", &owner)?,
                owner_signature: decode_hex_array("owner_signature", &owner_signature)?,
            };
            let leaf = state_leaf(&parsed.key, &entry_digest(&entry));
            check_leaf(&state, index, leaf, &path)?;
            Some(entry)
        }
        LocalJson {
            found: false,
            value: None,
            version: None,
            owner: None,
            owner_signature: None,
            index: None,
            path: None,
            ref left,
            ref right,
            ..
        } => {
            // The key's place among the sorted leaves: right after `left`, at `right`.
            let place = match left {
                Some(left) => {
                    check_neighbour(&state, left)?;
                    if left.key.as_str() >= parsed.key.as_str() {
                        return Err(invalid("the left neighbour's key is not below the key"));
                    }
                    left.index + 1
                }
                None => 0,
            };
            match right {
                Some(right) => {
                    check_neighbour(&state, right)?;
                    if right.key.as_str() <= parsed.key.as_str() {
                        return Err(invalid("the right neighbour's key is not above the key"));
                    }
                    if right.index != place {
                        return Err(invalid("the neighbours are not adjacent leaves"));
                    }
                }
                None if place != state.count => {
                    return Err(invalid("no right neighbour, yet the key is not last"));
                }
                None => {}
            }
            None
        }
        _ => {
            return Err(invalid(
                "an entry with its index and path exactly when found, neighbours otherwise",
            ));
        }
    };
    let signature = decode_hex("signature", &parsed.state.signature, SIGNATURE_BYTES_MAX)?;
    let signature =
        rsa::Signature::from_raw_bytes(&signature).map_err(|_| DirectoryError::ServiceSignature)?;
    service_key
        .verify(&state.encode(), &signature)
        .map_err(|_| DirectoryError::ServiceSignature)?;
    if let Some(entry) = &entry {
        verify_owner(&parsed.key, entry)?;
    }
    Ok(LocalLookup {
        key: parsed.key,
        entry,
        state,
    })
}
