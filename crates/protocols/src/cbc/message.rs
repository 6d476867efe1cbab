//! The messages of consistent broadcast, the delivery proof, and their canonical encodings
//! (docs/protocols/cbc.md, "Messages"): a tag byte, then the fields; bodies are
//! `u32`-length-prefixed and bounded by [`BODY_BYTES_MAX`].

use sintra_crypto::bls::{Signature, SignatureShare};
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};

use super::BODY_BYTES_MAX;
use crate::InstanceId;

/// A SHA-256 digest of a body bound to its instance ([`super::body_digest`]).
pub type Digest = [u8; 32];

/// A message of one consistent-broadcast instance. Fields are public so that simulated Byzantine
/// servers can read and forge them; an honest instance checks everything it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The sender's body, sent to all.
    Send {
        /// The body (at most [`BODY_BYTES_MAX`] bytes).
        body: Vec<u8>,
    },
    /// A server's signature share on `(instance, digest of the SEND body)`, sent to the sender.
    Echo {
        /// The share, under the broadcast key set.
        share: SignatureShare,
    },
    /// The combined signature on the body's digest: the proof of delivery. It names the body
    /// by digest only — every receiver got (or will get) the body in the sender's SEND, so the
    /// batch crosses the network, is decoded and hashed once, not twice.
    Final {
        /// The body's digest ([`super::body_digest`]).
        digest: Digest,
        /// The threshold signature on the digest.
        signature: Signature,
    },
    /// "Send me the body with this digest": from a server that holds a proof but no body.
    Request {
        /// The digest named by the proof.
        digest: Digest,
    },
    /// The answer to a [`Message::Request`].
    Body {
        /// The body (at most [`BODY_BYTES_MAX`] bytes).
        body: Vec<u8>,
    },
}

/// The transferable proof that a body with `digest` was (or can be) delivered in `instance`:
/// a threshold signature of `ceil((n + t + 1) / 2)` servers. At most one digest per instance
/// has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbcProof {
    /// The instance.
    pub instance: InstanceId,
    /// The body's digest ([`super::body_digest`]).
    pub digest: Digest,
    /// The signature under the broadcast key set, purpose [`super::FINAL_PURPOSE`].
    pub signature: Signature,
}

const TAG_SEND: u8 = 0;
const TAG_ECHO: u8 = 1;
const TAG_FINAL: u8 = 2;
const TAG_REQUEST: u8 = 3;
const TAG_BODY: u8 = 4;

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::Send { body } => {
                out.push(TAG_SEND);
                put_bytes(out, body);
            }
            Message::Echo { share } => {
                out.push(TAG_ECHO);
                share.encode_to(out);
            }
            Message::Final { digest, signature } => {
                out.push(TAG_FINAL);
                out.extend_from_slice(digest);
                signature.encode_to(out);
            }
            Message::Request { digest } => {
                out.push(TAG_REQUEST);
                out.extend_from_slice(digest);
            }
            Message::Body { body } => {
                out.push(TAG_BODY);
                put_bytes(out, body);
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_SEND => Message::Send {
                body: reader.bytes("cbc body", BODY_BYTES_MAX)?.to_vec(),
            },
            TAG_ECHO => Message::Echo {
                share: SignatureShare::decode_from(reader)?,
            },
            TAG_FINAL => Message::Final {
                digest: reader.array()?,
                signature: Signature::decode_from(reader)?,
            },
            TAG_REQUEST => Message::Request {
                digest: reader.array()?,
            },
            TAG_BODY => Message::Body {
                body: reader.bytes("cbc body", BODY_BYTES_MAX)?.to_vec(),
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "cbc message",
                    why: "unknown tag",
                });
            }
        })
    }
}

impl Encode for CbcProof {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.instance.encode_to(out);
        out.extend_from_slice(&self.digest);
        self.signature.encode_to(out);
    }
}

impl Decode for CbcProof {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CbcProof {
            instance: InstanceId::decode_from(reader)?,
            digest: reader.array()?,
            signature: Signature::decode_from(reader)?,
        })
    }
}
