//! The messages of reliable broadcast and their canonical encoding (docs/protocols/rbc.md,
//! "Messages"): a tag byte, then the fields; bodies and fragments are `u32`-length-prefixed and
//! bounded, a Merkle path is a `u8` count of 32-byte hashes.

use sintra_crypto::ServerId;
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};

use super::{BODY_BYTES_MAX, FRAGMENT_BYTES_MAX, MERKLE_PATH_LEN_MAX};

/// A SHA-256 digest: of a body bound to its instance (plain), or a Merkle root (erasure-coded).
pub type Digest = [u8; 32];

/// A message of one reliable-broadcast instance. Fields are public so that simulated Byzantine
/// servers can read and forge them; an honest instance checks everything it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Plain: the sender's body, sent to all.
    Send {
        /// The body (at most [`BODY_BYTES_MAX`] bytes).
        body: Vec<u8>,
    },
    /// Plain: "I received a body with this digest from the sender."
    Echo {
        /// The body's digest ([`super::body_digest`]).
        digest: Digest,
    },
    /// Both variants: "enough servers echoed this digest (or root) that I vouch for it."
    Ready {
        /// The body digest (plain) or the Merkle root (erasure-coded).
        digest: Digest,
    },
    /// Plain: "send me the body with this digest" — sent only to servers that echoed it.
    Request {
        /// The digest whose body is wanted.
        digest: Digest,
    },
    /// Plain: the answer to a [`Message::Request`].
    Body {
        /// The body (at most [`BODY_BYTES_MAX`] bytes).
        body: Vec<u8>,
    },
    /// Erasure-coded: the sender hands server `index` its fragment.
    Fragment(Fragment),
    /// Erasure-coded: server `index` forwards the fragment it received from the sender to all.
    EchoFragment(Fragment),
}

/// One Reed–Solomon fragment with its Merkle path to the root the sender committed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The Merkle root over all `n` fragments.
    pub root: Digest,
    /// The server this fragment belongs to (fragment `i` goes to server `i`).
    pub index: ServerId,
    /// The fragment bytes (at most [`FRAGMENT_BYTES_MAX`]).
    pub data: Vec<u8>,
    /// Sibling hashes from the leaf up to the root (exactly `⌈log₂ n⌉` of them).
    pub merkle_path: Vec<Digest>,
}

const TAG_SEND: u8 = 0;
const TAG_ECHO: u8 = 1;
const TAG_READY: u8 = 2;
const TAG_REQUEST: u8 = 3;
const TAG_BODY: u8 = 4;
const TAG_FRAGMENT: u8 = 5;
const TAG_ECHO_FRAGMENT: u8 = 6;

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::Send { body } => {
                out.push(TAG_SEND);
                put_bytes(out, body);
            }
            Message::Echo { digest } => {
                out.push(TAG_ECHO);
                out.extend_from_slice(digest);
            }
            Message::Ready { digest } => {
                out.push(TAG_READY);
                out.extend_from_slice(digest);
            }
            Message::Request { digest } => {
                out.push(TAG_REQUEST);
                out.extend_from_slice(digest);
            }
            Message::Body { body } => {
                out.push(TAG_BODY);
                put_bytes(out, body);
            }
            Message::Fragment(fragment) => {
                out.push(TAG_FRAGMENT);
                fragment.encode_to(out);
            }
            Message::EchoFragment(fragment) => {
                out.push(TAG_ECHO_FRAGMENT);
                fragment.encode_to(out);
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_SEND => Message::Send {
                body: reader.bytes("rbc body", BODY_BYTES_MAX)?.to_vec(),
            },
            TAG_ECHO => Message::Echo {
                digest: reader.array()?,
            },
            TAG_READY => Message::Ready {
                digest: reader.array()?,
            },
            TAG_REQUEST => Message::Request {
                digest: reader.array()?,
            },
            TAG_BODY => Message::Body {
                body: reader.bytes("rbc body", BODY_BYTES_MAX)?.to_vec(),
            },
            TAG_FRAGMENT => Message::Fragment(Fragment::decode_from(reader)?),
            TAG_ECHO_FRAGMENT => Message::EchoFragment(Fragment::decode_from(reader)?),
            _ => {
                return Err(DecodeError::Invalid {
                    what: "rbc message",
                    why: "unknown tag",
                });
            }
        })
    }
}

impl Encode for Fragment {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.root);
        self.index.encode_to(out);
        put_bytes(out, &self.data);
        // A path longer than any group needs is never built by us; encoding it anyway keeps
        // `encode` total, and the decoder refuses it.
        out.push(u8::try_from(self.merkle_path.len()).unwrap_or(u8::MAX));
        for sibling in &self.merkle_path {
            out.extend_from_slice(sibling);
        }
    }
}

impl Decode for Fragment {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let root = reader.array()?;
        let index = ServerId::decode_from(reader)?;
        let data = reader.bytes("rbc fragment", FRAGMENT_BYTES_MAX)?.to_vec();
        let len = usize::from(reader.u8()?);
        if len > MERKLE_PATH_LEN_MAX {
            return Err(DecodeError::TooLong {
                what: "merkle path",
                len,
                max: MERKLE_PATH_LEN_MAX,
            });
        }
        let mut merkle_path = Vec::with_capacity(len);
        for _ in 0..len {
            merkle_path.push(reader.array()?);
        }
        Ok(Fragment {
            root,
            index,
            data,
            merkle_path,
        })
    }
}
