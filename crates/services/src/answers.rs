//! Signed answers: one threshold-RSA signature covers every answer of an atomic-broadcast round.
//!
//! The requests delivered in one round form an *answer batch* at positions
//! `first .. first + count`. Leaf `j` is
//! `SHA-256(0x00 ‖ position u64 ‖ SHA-256(request) ‖ SHA-256(answer))`, inner nodes are
//! `SHA-256(0x01 ‖ left ‖ right)`, and a node without a right sibling is promoted unchanged to
//! the next level. The servers sign, with the service key (PKCS#1 v1.5, SHA-256), the statement
//! `"sintra/answers/v1" ‖ 0x00 ‖ round u64 ‖ first u64 ‖ count u64 ‖ root 32` (big-endian).
//!
//! A client holding a [`SignedAnswer`] recomputes its leaf from *its own* request and the
//! received answer, walks the path to a root, and checks the signature over the statement: a
//! server can neither change the answer, nor move it to another request's position, nor reuse
//! another batch's signature. The different prefixes of leaves (`0x00`) and inner nodes
//! (`0x01`) keep an inner node from passing as a leaf.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sintra_crypto::rsa;

/// Leaves of one batch, at most (about a million: `n` servers × their batch size fit).
pub const ANSWER_BATCH_LEAVES_MAX: u64 = 1 << 20;
/// Hashes in a path, at most. A batch of [`ANSWER_BATCH_LEAVES_MAX`] leaves needs 20; the
/// bound only caps what a verifier reads.
pub const PATH_LEN_MAX: usize = 64;
/// Domain separator of the signed statement.
pub const STATEMENT_LABEL: &[u8] = b"sintra/answers/v1";

/// A SHA-256 digest.
pub type Hash = [u8; 32];

fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// The leaf of the request at `position` with its `answer`.
pub fn leaf(position: u64, request: &[u8], answer: &[u8]) -> Hash {
    leaf_hashed(position, &sha256(request), answer)
}

/// [`leaf`] for a request whose SHA-256 is known already.
pub fn leaf_hashed(position: u64, request_hash: &Hash, answer: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(position.to_be_bytes());
    hasher.update(request_hash);
    hasher.update(sha256(answer));
    hasher.finalize().into()
}

/// The parent of two nodes.
pub fn inner(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The bytes the servers sign for a batch (PKCS#1 v1.5 / SHA-256 is applied by the signer).
pub fn statement(round: u64, first: u64, count: u64, root: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATEMENT_LABEL.len() + 1 + 24 + 32);
    out.extend_from_slice(STATEMENT_LABEL);
    out.push(0x00);
    out.extend_from_slice(&round.to_be_bytes());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(root);
    out
}

/// The root reached from leaf `index` of a batch of `count` leaves through `path` (siblings from
/// the leaf up). At each level an odd index has its sibling on the left, an even one on the
/// right, and the last node of an odd-width level has no sibling (it is promoted). `None` if the
/// index is out of range or the path has the wrong length for `(index, count)`.
pub fn root_from_path(index: u64, count: u64, leaf: Hash, path: &[Hash]) -> Option<Hash> {
    if index >= count || path.len() > PATH_LEN_MAX {
        return None;
    }
    let mut siblings = path.iter();
    let mut node = leaf;
    let (mut index, mut width) = (index, count);
    while width > 1 {
        if index % 2 == 1 {
            node = inner(siblings.next()?, &node);
        } else if index + 1 < width {
            node = inner(&node, siblings.next()?);
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none().then_some(node)
}

/// Why an answer batch could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No leaves, or more than [`ANSWER_BATCH_LEAVES_MAX`].
    #[error("an answer batch holds 1 to {ANSWER_BATCH_LEAVES_MAX} leaves, not {0}")]
    LeafCount(usize),
    /// `first + count` overflows a position.
    #[error("positions {first} + {count} overflow")]
    PositionOverflow {
        /// The first position.
        first: u64,
        /// The leaf count.
        count: u64,
    },
}

/// The Merkle tree over the answers of one round, with every level kept so that any leaf's
/// path is read off directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerBatch {
    round: u64,
    first: u64,
    /// `levels[0]` are the leaves; the last level is the root alone.
    levels: Vec<Vec<Hash>>,
}

impl AnswerBatch {
    /// The tree over `leaves` (see [`leaf`]) of positions `first .. first + leaves.len()`,
    /// delivered in `round`.
    pub fn new(round: u64, first: u64, leaves: Vec<Hash>) -> Result<Self, BatchError> {
        let count = leaves.len();
        if count == 0 || count as u64 > ANSWER_BATCH_LEAVES_MAX {
            return Err(BatchError::LeafCount(count));
        }
        if first.checked_add(count as u64).is_none() {
            return Err(BatchError::PositionOverflow {
                first,
                count: count as u64,
            });
        }
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|level| level.len() > 1) {
            let next = level
                .chunks(2)
                // A chunk holds one or two nodes; a lone last node is promoted.
                .map(|pair| match pair {
                    [left, right, ..] => inner(left, right),
                    [single] => *single,
                    [] => Hash::default(),
                })
                .collect();
            levels.push(next);
        }
        Ok(Self {
            round,
            first,
            levels,
        })
    }

    /// The round that delivered the batch.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The position of the first leaf.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Leaves in the batch (at least 1).
    pub fn count(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The root.
    pub fn root(&self) -> Hash {
        // Every level is non-empty and the last holds exactly the root.
        self.levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or_default()
    }

    /// The statement the servers sign for this batch.
    pub fn statement(&self) -> Vec<u8> {
        statement(self.round, self.first, self.count(), &self.root())
    }

    /// The siblings from leaf `index` (0-based, position `first + index`) up to the root, as
    /// [`root_from_path`] consumes them; `None` if `index` is out of range.
    pub fn path(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.levels[0].len() {
            return None;
        }
        let mut path = Vec::new();
        let mut index = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = index ^ 1;
            if let Some(hash) = level.get(sibling) {
                path.push(*hash);
            }
            index /= 2;
        }
        Some(path)
    }

    /// The signed answer for leaf `index`, given its `answer` bytes and the combined `signature`
    /// over [`Self::statement`]; `None` if `index` is out of range.
    pub fn signed_answer(
        &self,
        index: usize,
        answer: Vec<u8>,
        signature: Vec<u8>,
    ) -> Option<SignedAnswer> {
        let path = self.path(index)?;
        Some(SignedAnswer {
            round: self.round,
            first: self.first,
            count: self.count(),
            position: self.first + index as u64,
            answer,
            path,
            signature,
        })
    }
}

/// Why a signed answer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `count` is 0 or above [`ANSWER_BATCH_LEAVES_MAX`].
    #[error("the batch claims {0} answers")]
    BadCount(u64),
    /// `position` is not in `first .. first + count`.
    #[error("position {position} is outside the batch {first} + {count}")]
    PositionOutOfRange {
        /// The claimed position.
        position: u64,
        /// The batch's first position.
        first: u64,
        /// The batch's size.
        count: u64,
    },
    /// The path does not have the length its position and count demand.
    #[error("the Merkle path has the wrong length")]
    BadPath,
    /// The signature does not verify over the statement under the service key (a changed
    /// answer, request, position or path also ends here: it changes the root).
    #[error("the service signature does not verify")]
    BadSignature,
}

/// A server's answer to one request, with what a client needs to check it under the service key
/// alone. The JSON form writes byte strings as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAnswer {
    /// The round that delivered the request.
    pub round: u64,
    /// The batch's first position.
    pub first: u64,
    /// The batch's size.
    pub count: u64,
    /// The request's position.
    pub position: u64,
    /// The service's answer.
    #[serde(with = "hex_bytes")]
    pub answer: Vec<u8>,
    /// Siblings from the leaf up (see [`root_from_path`]).
    #[serde(with = "hex_hashes")]
    pub path: Vec<Hash>,
    /// The service key's signature over the batch statement (modulus length, big-endian).
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl SignedAnswer {
    /// Checks that this answers `request`: the position lies in the batch, the path from the
    /// leaf of `(position, request, answer)` leads to a root, and `signature` is the service
    /// key's PKCS#1 v1.5 / SHA-256 signature over the statement of that root.
    pub fn verify(&self, service_key: &rsa::PublicKey, request: &[u8]) -> Result<(), VerifyError> {
        if self.count == 0 || self.count > ANSWER_BATCH_LEAVES_MAX {
            return Err(VerifyError::BadCount(self.count));
        }
        let index = self
            .position
            .checked_sub(self.first)
            .filter(|index| *index < self.count)
            .ok_or(VerifyError::PositionOutOfRange {
                position: self.position,
                first: self.first,
                count: self.count,
            })?;
        let leaf = leaf(self.position, request, &self.answer);
        let root =
            root_from_path(index, self.count, leaf, &self.path).ok_or(VerifyError::BadPath)?;
        let signature = rsa::Signature::from_raw_bytes(&self.signature)
            .map_err(|_| VerifyError::BadSignature)?;
        service_key
            .verify(
                &statement(self.round, self.first, self.count, &root),
                &signature,
            )
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// Lower-case hex, as `hex::encode` gives it, by table: every answer a gateway sends carries its
/// signature and path in hex, and `hex::encode`'s character iterator took about a tenth of a
/// replica's CPU at saturation (docs/bench.md).
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Serde as a lower-case hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::lower_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        hex::decode(text.as_ref()).map_err(serde::de::Error::custom)
    }
}

/// Serde as a list of 64-digit hex strings, at most [`super::PATH_LEN_MAX`].
mod hex_hashes {
    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    use super::{Hash, PATH_LEN_MAX};

    pub fn serialize<S: Serializer>(hashes: &[Hash], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(hashes.len()))?;
        for hash in hashes {
            seq.serialize_element(&super::lower_hex(hash))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Hash>, D::Error> {
        struct Hashes;
        impl<'de> Visitor<'de> for Hashes {
            type Value = Vec<Hash>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "at most {PATH_LEN_MAX} hex strings of 32 bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Hash>, A::Error> {
                let mut hashes = Vec::new();
                while let Some(text) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    if hashes.len() == PATH_LEN_MAX {
                        return Err(serde::de::Error::custom(format!(
                            "a path has at most {PATH_LEN_MAX} hashes"
                        )));
                    }
                    let mut hash = [0u8; 32];
                    hex::decode_to_slice(text.as_ref(), &mut hash)
                        .map_err(serde::de::Error::custom)?;
                    hashes.push(hash);
                }
                Ok(hashes)
            }
        }
        deserializer.deserialize_seq(Hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::lower_hex;

    #[test]
    fn lower_hex_is_what_hex_encode_gives() {
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&every_byte), hex::encode(&every_byte));
        assert_eq!(lower_hex(&[]), "");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in [1, 2, 31, 32, 33, 256, 1000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            assert_eq!(lower_hex(&bytes), hex::encode(&bytes), "{len} bytes");
        }
    }
}
