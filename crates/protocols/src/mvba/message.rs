//! The messages of multi-valued agreement, the COMMIT body and the external proof `π`, with their
//! canonical encodings (docs/protocols/mvba.md, "Messages"): a tag byte, then the fields in
//! declaration order; integers big-endian; values `u32`-length-prefixed and bounded by
//! [`VALUE_BYTES_MAX`]; proof lists `u32`-count-prefixed and bounded by [`COMMIT_PROOFS_MAX`].
//! Decoding is canonical (one encoding per value) and never panics.

use sintra_crypto::coin::CoinShare;
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes, put_vec};

use super::VALUE_BYTES_MAX;
use crate::cbc::CbcProof;

/// The most proofs a COMMIT may carry on the wire: one per server of the largest group. Honest
/// servers send between `n - t` and `n`; a SEND with another count is not echoed. This bound
/// only keeps decoding small.
pub const COMMIT_PROOFS_MAX: usize = sintra_crypto::SERVERS_MAX as usize;

/// A message of one multi-valued agreement instance itself. Its children speak their own
/// protocols: consistent broadcast in `ID/p<j>` (proposals) and `ID/c<j>` (commits), biased
/// binary agreement in `ID/a<j>`. Fields are public so that simulated Byzantine servers can read
/// and forge them; an honest instance checks everything it receives.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a coin share holds unboxed curve points (~600 bytes); checking one costs far more \
              than moving it, and the simulator's adversaries build these by hand"
)]
pub enum Message {
    /// The sender's share of the permutation coin (`Context { "mvba/permutation", ID }`).
    CoinShare {
        /// The share, with its proof of correctness.
        share: CoinShare,
    },
    /// The vote on the `candidate`-th proposer of the permutation: its value with the delivery
    /// proof (a 1-vote), or nothing (a 0-vote).
    Vote {
        /// The position in the permutation, from 1.
        candidate: u32,
        /// The candidate's value (at most [`VALUE_BYTES_MAX`] bytes) and the proof of its
        /// consistent broadcast, or `None`.
        proposal: Option<(Vec<u8>, CbcProof)>,
    },
}

/// The body of a server's commit broadcast `ID/c<j>`: delivery proofs of at least `n - t`
/// proposals `ID/p<k>`, proposers strictly increasing. Honest servers echo a commit only if it is
/// so, and release their permutation coin share only after `n - t` commits were delivered.
///
/// Encoding: `u32` count ‖ proofs ([`CbcProof`] encodings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The proofs, one per proposer, in increasing proposer order.
    pub proofs: Vec<CbcProof>,
}

const TAG_COIN_SHARE: u8 = 0;
const TAG_VOTE: u8 = 1;

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::CoinShare { share } => {
                out.push(TAG_COIN_SHARE);
                share.encode_to(out);
            }
            Message::Vote {
                candidate,
                proposal,
            } => {
                out.push(TAG_VOTE);
                out.extend_from_slice(&candidate.to_be_bytes());
                match proposal {
                    None => out.push(0),
                    Some((value, proof)) => {
                        out.push(1);
                        put_proposal(out, value, proof);
                    }
                }
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_COIN_SHARE => Message::CoinShare {
                share: CoinShare::decode_from(reader)?,
            },
            TAG_VOTE => {
                let candidate = reader.u32()?;
                let proposal = match reader.u8()? {
                    0 => None,
                    1 => {
                        let (value, proof) = read_proposal(reader)?;
                        Some((value.to_vec(), proof))
                    }
                    _ => {
                        return Err(DecodeError::Invalid {
                            what: "mvba vote",
                            why: "proposal flag is neither 0 nor 1",
                        });
                    }
                };
                Message::Vote {
                    candidate,
                    proposal,
                }
            }
            _ => {
                return Err(DecodeError::Invalid {
                    what: "mvba message",
                    why: "unknown tag",
                });
            }
        })
    }
}

impl Encode for Commit {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_vec(out, &self.proofs);
    }
}

impl Decode for Commit {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Commit {
            proofs: reader.vec("mvba commit proofs", COMMIT_PROOFS_MAX)?,
        })
    }
}

/// A value and its delivery proof: `u32` length ‖ value ‖ proof. The layout of a 1-vote's
/// proposal and of the external proof `π` given to binary agreement.
fn put_proposal(out: &mut Vec<u8>, value: &[u8], proof: &CbcProof) {
    put_bytes(out, value);
    proof.encode_to(out);
}

/// Reads what [`put_proposal`] wrote; the value is borrowed from the input.
fn read_proposal<'a>(reader: &mut Reader<'a>) -> Result<(&'a [u8], CbcProof), DecodeError> {
    let value = reader.bytes("mvba value", VALUE_BYTES_MAX)?;
    let proof = CbcProof::decode_from(reader)?;
    Ok((value, proof))
}

/// The external proof `π` of a 1-input to the binary agreement on a proposer: its value and
/// delivery proof, so that a decision 1 carries the value itself.
pub fn encode_justification(value: &[u8], proof: &CbcProof) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + value.len() + 2 + proof.instance.as_bytes().len() + 80);
    put_proposal(&mut out, value, proof);
    out
}

/// Decodes `π` exactly (trailing bytes are an error); the value is borrowed from `bytes`.
pub fn decode_justification(bytes: &[u8]) -> Result<(&[u8], CbcProof), DecodeError> {
    let mut reader = Reader::new(bytes);
    let decoded = read_proposal(&mut reader)?;
    reader.finish()?;
    Ok(decoded)
}
