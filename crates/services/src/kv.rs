//! The key-value store: `put KEY VALUE` answers the previous value, `get KEY` the current one.
//!
//! Encodings (big-endian lengths; docs/node.md):
//! - request: `[tag u8: 1 put | 2 get][nonce 16][key_len u16][key][value_len u32][value]`, where
//!   `get` has no value part. The nonce makes two puts of the same pair distinct requests
//!   (atomic broadcast delivers a given request once); the store ignores it.
//! - answer: `[0][found u8][value_len u32][value]` for ok (`found` 0 or 1; not found has an
//!   empty value), `[1][message utf-8]` for an error.
//! - snapshot: `"sintra/kv/v1" ‖ count u64 ‖ count × ([key_len u16][key][value_len u32][value])`
//!   with keys strictly increasing, so equal stores have equal snapshots.
//!
//! Every decoder takes exactly one encoding: a truncated input, trailing bytes, an unknown tag
//! or an over-long field is refused.

use std::collections::BTreeMap;

use crate::{ExecutionContext, Service, ServiceError};

/// Bytes of a key, at most (1 KiB).
pub const KEY_BYTES_MAX: usize = 1 << 10;
/// Bytes of a value, at most (60 KiB).
pub const VALUE_BYTES_MAX: usize = 60 << 10;
/// Bytes of an error answer's message, at most.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1 << 10;
/// Bytes of a client nonce.
pub const NONCE_BYTES: usize = 16;
/// Default of [`KvService::keys_max`]: entries the store holds (about a million).
pub const KEYS_MAX: usize = 1 << 20;
/// Default of [`KvService::bytes_max`]: key and value bytes the store holds, summed (1 GiB).
pub const BYTES_MAX: usize = 1 << 30;
/// Bytes of an encoded request, at most: a put of the longest key and value.
pub const REQUEST_BYTES_MAX: usize = 1 + NONCE_BYTES + 2 + KEY_BYTES_MAX + 4 + VALUE_BYTES_MAX;

/// The request tags kv serves (put, get), for a [`crate::router::Router`].
pub const TAGS: std::ops::RangeInclusive<u8> = TAG_PUT..=TAG_GET;

const TAG_PUT: u8 = 1;
const TAG_GET: u8 = 2;
const TAG_OK: u8 = 0;
const TAG_ERROR: u8 = 1;
const SNAPSHOT_MAGIC: &[u8] = b"sintra/kv/v1";

/// Why bytes did not decode (or a value could not be encoded). The `Display` text is part of
/// the deterministic error answer, so it depends only on the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
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
    /// A tag byte that names no variant.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Request or answer.
        what: &'static str,
        /// The tag byte.
        tag: u8,
    },
    /// Bytes after a complete encoding.
    #[error("{count} trailing bytes")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A field whose value is not allowed (a `found` byte other than 0 and 1, an error message
    /// that is not UTF-8, unsorted snapshot keys, ...).
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why.
        why: &'static str,
    },
}

/// Reads an encoding front to back; every read checks the remaining length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], KvError> {
        if self.bytes.len() < len {
            return Err(KvError::Truncated { what });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, KvError> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], KvError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A field with a `u16` length prefix, at most `max` bytes.
    fn bytes_u16(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], KvError> {
        let len = usize::from(u16::from_be_bytes(self.array(what)?));
        check_len(what, len, max)?;
        self.take(len, what)
    }

    /// A field with a `u32` length prefix, at most `max` bytes.
    fn bytes_u32(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], KvError> {
        let len = u32::from_be_bytes(self.array(what)?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        check_len(what, len, max)?;
        self.take(len, what)
    }

    fn finish(self) -> Result<(), KvError> {
        match self.bytes.len() {
            0 => Ok(()),
            count => Err(KvError::TrailingBytes { count }),
        }
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), KvError> {
    if len > max {
        return Err(KvError::TooLong { what, len, max });
    }
    Ok(())
}

fn put_u16_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers checked `bytes.len() <= KEY_BYTES_MAX`, far below `u16::MAX`.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_u32_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers checked `bytes.len() <= VALUE_BYTES_MAX`, far below `u32::MAX`.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A request to the key-value store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRequest {
    /// Store `value` under `key`; the answer is the previous value.
    Put {
        /// The client's nonce (makes repeated puts distinct requests).
        nonce: [u8; NONCE_BYTES],
        /// At most [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
        /// At most [`VALUE_BYTES_MAX`] bytes.
        value: Vec<u8>,
    },
    /// Read the value under `key`.
    Get {
        /// The client's nonce.
        nonce: [u8; NONCE_BYTES],
        /// At most [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
    },
}

impl KvRequest {
    /// The encoding; refuses a key or value over its maximum.
    pub fn encode(&self) -> Result<Vec<u8>, KvError> {
        let (tag, nonce, key, value) = match self {
            Self::Put { nonce, key, value } => (TAG_PUT, nonce, key, Some(value)),
            Self::Get { nonce, key } => (TAG_GET, nonce, key, None),
        };
        check_len("key", key.len(), KEY_BYTES_MAX)?;
        if let Some(value) = value {
            check_len("value", value.len(), VALUE_BYTES_MAX)?;
        }
        let mut out = Vec::with_capacity(
            1 + NONCE_BYTES + 2 + key.len() + value.map_or(0, |value| 4 + value.len()),
        );
        out.push(tag);
        out.extend_from_slice(nonce);
        put_u16_bytes(&mut out, key);
        if let Some(value) = value {
            put_u32_bytes(&mut out, value);
        }
        Ok(out)
    }

    /// Decodes exactly one request.
    pub fn decode(bytes: &[u8]) -> Result<Self, KvError> {
        let mut reader = Reader { bytes };
        let tag = reader.u8("request tag")?;
        if tag != TAG_PUT && tag != TAG_GET {
            return Err(KvError::UnknownTag {
                what: "request",
                tag,
            });
        }
        let nonce = reader.array("nonce")?;
        let key = reader.bytes_u16("key", KEY_BYTES_MAX)?.to_vec();
        let request = if tag == TAG_PUT {
            let value = reader.bytes_u32("value", VALUE_BYTES_MAX)?.to_vec();
            Self::Put { nonce, key, value }
        } else {
            Self::Get { nonce, key }
        };
        reader.finish()?;
        Ok(request)
    }
}

/// The store's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvAnswer {
    /// Served: for a put the previous value, for a get the current one.
    Ok {
        /// Whether the key had a value (if not, `value` is empty).
        found: bool,
        /// The value (at most [`VALUE_BYTES_MAX`] bytes).
        value: Vec<u8>,
    },
    /// Not served: the request did not decode, or the store is full.
    Error {
        /// Why (at most [`ERROR_MESSAGE_BYTES_MAX`] bytes of UTF-8).
        message: String,
    },
}

impl KvAnswer {
    /// The encoding. An over-long error message is cut at a character boundary to
    /// [`ERROR_MESSAGE_BYTES_MAX`] bytes, so every encoding decodes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Ok { found, value } => {
                let mut out = Vec::with_capacity(6 + value.len());
                out.push(TAG_OK);
                out.push(u8::from(*found));
                put_u32_bytes(&mut out, value);
                out
            }
            Self::Error { message } => {
                let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let mut out = Vec::with_capacity(1 + end);
                out.push(TAG_ERROR);
                out.extend_from_slice(&message.as_bytes()[..end]);
                out
            }
        }
    }

    /// Decodes exactly one answer.
    pub fn decode(bytes: &[u8]) -> Result<Self, KvError> {
        let mut reader = Reader { bytes };
        match reader.u8("answer tag")? {
            TAG_OK => {
                let found = match reader.u8("found")? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(KvError::Invalid {
                            what: "found",
                            why: "neither 0 nor 1",
                        });
                    }
                };
                let value = reader.bytes_u32("value", VALUE_BYTES_MAX)?.to_vec();
                if !found && !value.is_empty() {
                    return Err(KvError::Invalid {
                        what: "value",
                        why: "a value for a key that was not found",
                    });
                }
                reader.finish()?;
                Ok(Self::Ok { found, value })
            }
            TAG_ERROR => {
                let rest = reader.bytes;
                check_len("error message", rest.len(), ERROR_MESSAGE_BYTES_MAX)?;
                let message = std::str::from_utf8(rest)
                    .map_err(|_| KvError::Invalid {
                        what: "error message",
                        why: "not UTF-8",
                    })?
                    .to_owned();
                Ok(Self::Error { message })
            }
            tag => Err(KvError::UnknownTag {
                what: "answer",
                tag,
            }),
        }
    }
}

/// The key-value store, bounded by [`Self::keys_max`] entries and [`Self::bytes_max`] key and
/// value bytes; a put beyond either gets an error answer and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvService {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Sum of key and value lengths over `entries`.
    bytes: usize,
    keys_max: usize,
    bytes_max: usize,
}

impl Default for KvService {
    fn default() -> Self {
        Self::new()
    }
}

impl KvService {
    /// An empty store with the default bounds [`KEYS_MAX`] and [`BYTES_MAX`].
    pub fn new() -> Self {
        Self::with_limits(KEYS_MAX, BYTES_MAX)
    }

    /// An empty store with other bounds. Every server of a group must use the same bounds, or
    /// the servers diverge when the store fills up.
    pub fn with_limits(keys_max: usize, bytes_max: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            bytes: 0,
            keys_max,
            bytes_max,
        }
    }

    /// Entries the store holds at most.
    pub fn keys_max(&self) -> usize {
        self.keys_max
    }

    /// Key and value bytes, summed, the store holds at most.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Executes a decoded request.
    pub fn apply(&mut self, request: KvRequest) -> KvAnswer {
        match request {
            KvRequest::Get { key, .. } => match self.entries.get(&key) {
                Some(value) => KvAnswer::Ok {
                    found: true,
                    value: value.clone(),
                },
                None => KvAnswer::Ok {
                    found: false,
                    value: Vec::new(),
                },
            },
            KvRequest::Put { key, value, .. } => {
                let previous = self.entries.get(&key).map(Vec::len);
                if previous.is_none() && self.entries.len() >= self.keys_max {
                    return KvAnswer::Error {
                        message: format!("the store is full ({} keys)", self.keys_max),
                    };
                }
                let freed = previous.map_or(0, |len| key.len() + len);
                let bytes = self.bytes - freed + key.len() + value.len();
                if bytes > self.bytes_max {
                    return KvAnswer::Error {
                        message: format!("the store is full ({} bytes)", self.bytes_max),
                    };
                }
                self.bytes = bytes;
                match self.entries.insert(key, value) {
                    Some(value) => KvAnswer::Ok { found: true, value },
                    None => KvAnswer::Ok {
                        found: false,
                        value: Vec::new(),
                    },
                }
            }
        }
    }

    /// A store with this one's limits holding a snapshot's entries.
    fn decode_snapshot(&self, snapshot: &[u8]) -> Result<Self, KvError> {
        let mut reader = Reader { bytes: snapshot };
        if reader.take(SNAPSHOT_MAGIC.len(), "snapshot header")? != SNAPSHOT_MAGIC {
            return Err(KvError::Invalid {
                what: "snapshot header",
                why: "not a kv snapshot",
            });
        }
        let count = u64::from_be_bytes(reader.array("entry count")?);
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        check_len("entry count", count, self.keys_max)?;
        let mut entries = BTreeMap::new();
        let mut bytes = 0usize;
        let mut last: Option<&[u8]> = None;
        for _ in 0..count {
            let key = reader.bytes_u16("key", KEY_BYTES_MAX)?;
            let value = reader.bytes_u32("value", VALUE_BYTES_MAX)?;
            if last.is_some_and(|last| last >= key) {
                return Err(KvError::Invalid {
                    what: "snapshot",
                    why: "keys not strictly increasing",
                });
            }
            last = Some(key);
            bytes += key.len() + value.len();
            check_len("store", bytes, self.bytes_max)?;
            entries.insert(key.to_vec(), value.to_vec());
        }
        reader.finish()?;
        Ok(Self {
            entries,
            bytes,
            keys_max: self.keys_max,
            bytes_max: self.bytes_max,
        })
    }
}

impl Service for KvService {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn execute(&mut self, _context: &ExecutionContext, request: &[u8]) -> Vec<u8> {
        let answer = match KvRequest::decode(request) {
            Ok(request) => self.apply(request),
            Err(error) => KvAnswer::Error {
                message: format!("bad request: {error}"),
            },
        };
        answer.encode()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(SNAPSHOT_MAGIC.len() + 8 + self.bytes + 6 * self.entries.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for (key, value) in &self.entries {
            put_u16_bytes(&mut out, key);
            put_u32_bytes(&mut out, value);
        }
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ServiceError> {
        *self = self
            .decode_snapshot(snapshot)
            .map_err(|error| ServiceError::InvalidSnapshot {
                service: "kv",
                why: error.to_string(),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_answers_the_previous_value_and_get_the_current_one() {
        let mut kv = KvService::new();
        let context = ExecutionContext::default();
        let put = |value: &[u8]| {
            KvRequest::Put {
                nonce: [7; NONCE_BYTES],
                key: b"k".to_vec(),
                value: value.to_vec(),
            }
            .encode()
            .unwrap()
        };
        let first = KvAnswer::decode(&kv.execute(&context, &put(b"a"))).unwrap();
        assert_eq!(
            first,
            KvAnswer::Ok {
                found: false,
                value: vec![]
            }
        );
        let second = KvAnswer::decode(&kv.execute(&context, &put(b"b"))).unwrap();
        assert_eq!(
            second,
            KvAnswer::Ok {
                found: true,
                value: b"a".to_vec()
            }
        );
        let get = KvRequest::Get {
            nonce: [0; NONCE_BYTES],
            key: b"k".to_vec(),
        };
        let current = KvAnswer::decode(&kv.execute(&context, &get.encode().unwrap())).unwrap();
        assert_eq!(
            current,
            KvAnswer::Ok {
                found: true,
                value: b"b".to_vec()
            }
        );
    }

    #[test]
    fn a_full_store_refuses_new_keys_but_replaces_old_ones() {
        let mut kv = KvService::with_limits(1, 10);
        let put = |key: &[u8], value: &[u8]| KvRequest::Put {
            nonce: [0; NONCE_BYTES],
            key: key.to_vec(),
            value: value.to_vec(),
        };
        assert!(matches!(kv.apply(put(b"a", b"1")), KvAnswer::Ok { .. }));
        assert!(matches!(kv.apply(put(b"b", b"1")), KvAnswer::Error { .. }));
        assert!(matches!(
            kv.apply(put(b"a", b"123456789")),
            KvAnswer::Ok { .. }
        ));
        assert!(matches!(
            kv.apply(put(b"a", b"1234567890")),
            KvAnswer::Error { .. }
        ));
        assert_eq!(kv.get(b"a"), Some(&b"123456789"[..]));
        assert_eq!(kv.len(), 1);
    }
}
