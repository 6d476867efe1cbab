//! The messages of binary agreement and their canonical encoding.
//!
//! Layout (big-endian, see `docs/protocols/aba.md` § Encoding): one tag byte per message kind,
//! then the fields in declaration order. A `bool` is one byte `0`/`1`; a [`Vote`] one byte
//! `0`/`1`/`2`; an optional external proof is `0`, or `1` followed by a `u32`-length-prefixed
//! byte string of at most [`EXTERNAL_PROOF_BYTES_MAX`]; rounds are `u32` and never `0`. Every
//! variable-length field is bounded before anything is allocated, and decoding is canonical
//! (one encoding per value), so the digest of an encoding identifies a message.

use sintra_crypto::bls::{Signature, SignatureShare};
use sintra_crypto::coin;
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes, put_vec};

use super::EXTERNAL_PROOF_BYTES_MAX;

/// The most signature shares a round-1 justification may carry on the wire. Honest servers send
/// exactly `t + 1`; handling refuses any other count, this bound only keeps decoding small.
pub const JUSTIFICATION_SHARES_MAX: usize = sintra_crypto::SERVERS_MAX as usize;

/// A main-vote: a value, or abstain (the server saw pre-votes for both values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vote {
    /// A vote for `0` (`false`) or `1` (`true`).
    Value(bool),
    /// Neither value: pre-votes for both were justified.
    Abstain,
}

/// Why a pre-vote `(r, b)` is allowed: a proof that some honest server could pre-vote `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreVoteJustification {
    /// Round 1, plain mode: exactly `t + 1` valid signature shares on `pre-process(b)` from
    /// distinct servers, so at least one honest server proposed `b`.
    PreProcessShares(Vec<SignatureShare>),
    /// Round 1, biased mode, `b = 0`: the `n - t` signature on `pre-process(0)`.
    PreProcessQuorum(Signature),
    /// Round 1, biased mode, `b = 1`: the external proof `π` attached to the same message.
    External,
    /// Round `r > 1`: the `n - t` signature on `pre-vote(r - 1, b)` (carried by a main-vote
    /// `(r - 1, b)`).
    PreVotes(Signature),
    /// Round `r > 1`: the `n - t` signature on `main-vote(r - 1, abstain)`; then `b` must be
    /// the coin of round `r - 1`.
    Abstain(Signature),
}

/// Why a main-vote `(r, v)` is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MainVoteJustification {
    /// `v = b`: the `n - t` signature on `pre-vote(r, b)`.
    Unanimous(Signature),
    /// `v = abstain`: a justification of `pre-vote(r, 0)` and one of `pre-vote(r, 1)`.
    Conflict {
        /// Justifies `pre-vote(r, 0)`.
        zero: PreVoteJustification,
        /// Justifies `pre-vote(r, 1)`.
        one: PreVoteJustification,
    },
}

/// A message of binary agreement (the body of [`crate::Message`] for an `aba` instance).
///
/// In biased mode every message that asserts the value `1` — a pre-process or pre-vote or
/// main-vote for `1`, a main-vote abstain (it justifies a pre-vote for `1`), a DECIDE for `1` —
/// carries an external proof `π` with `Q(π)`, and no other message carries one; in plain mode
/// no message carries one. A server that receives any `1`-vote therefore holds a `π` to attach
/// to its own `1`-votes, and a decision `1` always comes with one.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a coin share with its proof is ~600 bytes in memory; boxing it would change the \
              field type the simulator's adversaries build, and a message costs a pairing to \
              check, next to which moving 600 bytes is nothing"
)]
pub enum Message {
    /// The input `b_i`: a signature share on `pre-process(b_i)`.
    PreProcess {
        /// The proposed value.
        value: bool,
        /// Share under the agreement key on `pre-process(value)`.
        share: SignatureShare,
        /// `π` (biased mode, `value = 1`).
        external: Option<Vec<u8>>,
    },
    /// The pre-vote of a round.
    PreVote {
        /// The round, from 1.
        round: u32,
        /// The pre-voted value.
        value: bool,
        /// Why `value` may be pre-voted.
        justification: PreVoteJustification,
        /// Share under the agreement key on `pre-vote(round, value)`.
        share: SignatureShare,
        /// `π` (biased mode, `value = 1`).
        external: Option<Vec<u8>>,
    },
    /// The main-vote of a round.
    MainVote {
        /// The round, from 1.
        round: u32,
        /// The main-vote.
        vote: Vote,
        /// Why `vote` may be cast.
        justification: MainVoteJustification,
        /// Share under the agreement key on `main-vote(round, vote)`.
        share: SignatureShare,
        /// `π` (biased mode, `vote` is `1` or abstain).
        external: Option<Vec<u8>>,
    },
    /// The sender's share of the coin of a round, released after its main-vote of that round.
    CoinShare {
        /// The round whose coin this is.
        round: u32,
        /// The coin share with its proof.
        share: coin::CoinShare,
    },
    /// A decision with its proof: the `n - t` signature on `main-vote(round, value)`.
    Decide {
        /// The round in which `value` was decided.
        round: u32,
        /// The decided value.
        value: bool,
        /// The `n - t` signature on `main-vote(round, value)`.
        signature: Signature,
        /// `π` (biased mode, `value = 1`).
        external: Option<Vec<u8>>,
    },
}

impl Message {
    /// The round the message belongs to (`None` for pre-process).
    pub fn round(&self) -> Option<u32> {
        match self {
            Message::PreProcess { .. } => None,
            Message::PreVote { round, .. }
            | Message::MainVote { round, .. }
            | Message::CoinShare { round, .. }
            | Message::Decide { round, .. } => Some(*round),
        }
    }
}

const TAG_PRE_PROCESS: u8 = 1;
const TAG_PRE_VOTE: u8 = 2;
const TAG_MAIN_VOTE: u8 = 3;
const TAG_COIN_SHARE: u8 = 4;
const TAG_DECIDE: u8 = 5;

const TAG_PRE_PROCESS_SHARES: u8 = 1;
const TAG_PRE_PROCESS_QUORUM: u8 = 2;
const TAG_EXTERNAL: u8 = 3;
const TAG_PRE_VOTES: u8 = 4;
const TAG_ABSTAIN: u8 = 5;

const TAG_UNANIMOUS: u8 = 1;
const TAG_CONFLICT: u8 = 2;

fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

fn read_bool(reader: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid {
            what,
            why: "a boolean is 0 or 1",
        }),
    }
}

fn read_round(reader: &mut Reader<'_>) -> Result<u32, DecodeError> {
    match reader.u32()? {
        0 => Err(DecodeError::Invalid {
            what: "aba round",
            why: "rounds start at 1",
        }),
        round => Ok(round),
    }
}

fn put_external(out: &mut Vec<u8>, external: &Option<Vec<u8>>) {
    match external {
        None => out.push(0),
        Some(proof) => {
            out.push(1);
            put_bytes(out, proof);
        }
    }
}

fn read_external(reader: &mut Reader<'_>) -> Result<Option<Vec<u8>>, DecodeError> {
    match reader.u8()? {
        0 => Ok(None),
        1 => Ok(Some(
            reader
                .bytes("aba external proof", EXTERNAL_PROOF_BYTES_MAX)?
                .to_vec(),
        )),
        _ => Err(DecodeError::Invalid {
            what: "aba external proof",
            why: "presence flag is 0 or 1",
        }),
    }
}

impl Encode for Vote {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.push(match self {
            Vote::Value(false) => 0,
            Vote::Value(true) => 1,
            Vote::Abstain => 2,
        });
    }
}

impl Decode for Vote {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.u8()? {
            0 => Ok(Vote::Value(false)),
            1 => Ok(Vote::Value(true)),
            2 => Ok(Vote::Abstain),
            _ => Err(DecodeError::Invalid {
                what: "aba main-vote",
                why: "a vote is 0, 1 or 2 (abstain)",
            }),
        }
    }
}

impl Encode for PreVoteJustification {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            PreVoteJustification::PreProcessShares(shares) => {
                out.push(TAG_PRE_PROCESS_SHARES);
                put_vec(out, shares);
            }
            PreVoteJustification::PreProcessQuorum(signature) => {
                out.push(TAG_PRE_PROCESS_QUORUM);
                signature.encode_to(out);
            }
            PreVoteJustification::External => out.push(TAG_EXTERNAL),
            PreVoteJustification::PreVotes(signature) => {
                out.push(TAG_PRE_VOTES);
                signature.encode_to(out);
            }
            PreVoteJustification::Abstain(signature) => {
                out.push(TAG_ABSTAIN);
                signature.encode_to(out);
            }
        }
    }
}

impl Decode for PreVoteJustification {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_PRE_PROCESS_SHARES => PreVoteJustification::PreProcessShares(
                reader.vec("aba pre-process shares", JUSTIFICATION_SHARES_MAX)?,
            ),
            TAG_PRE_PROCESS_QUORUM => {
                PreVoteJustification::PreProcessQuorum(Signature::decode_from(reader)?)
            }
            TAG_EXTERNAL => PreVoteJustification::External,
            TAG_PRE_VOTES => PreVoteJustification::PreVotes(Signature::decode_from(reader)?),
            TAG_ABSTAIN => PreVoteJustification::Abstain(Signature::decode_from(reader)?),
            _ => {
                return Err(DecodeError::Invalid {
                    what: "aba pre-vote justification",
                    why: "unknown tag",
                });
            }
        })
    }
}

impl Encode for MainVoteJustification {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            MainVoteJustification::Unanimous(signature) => {
                out.push(TAG_UNANIMOUS);
                signature.encode_to(out);
            }
            MainVoteJustification::Conflict { zero, one } => {
                out.push(TAG_CONFLICT);
                zero.encode_to(out);
                one.encode_to(out);
            }
        }
    }
}

impl Decode for MainVoteJustification {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_UNANIMOUS => MainVoteJustification::Unanimous(Signature::decode_from(reader)?),
            TAG_CONFLICT => MainVoteJustification::Conflict {
                zero: PreVoteJustification::decode_from(reader)?,
                one: PreVoteJustification::decode_from(reader)?,
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "aba main-vote justification",
                    why: "unknown tag",
                });
            }
        })
    }
}

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::PreProcess {
                value,
                share,
                external,
            } => {
                out.push(TAG_PRE_PROCESS);
                put_bool(out, *value);
                share.encode_to(out);
                put_external(out, external);
            }
            Message::PreVote {
                round,
                value,
                justification,
                share,
                external,
            } => {
                out.push(TAG_PRE_VOTE);
                out.extend_from_slice(&round.to_be_bytes());
                put_bool(out, *value);
                justification.encode_to(out);
                share.encode_to(out);
                put_external(out, external);
            }
            Message::MainVote {
                round,
                vote,
                justification,
                share,
                external,
            } => {
                out.push(TAG_MAIN_VOTE);
                out.extend_from_slice(&round.to_be_bytes());
                vote.encode_to(out);
                justification.encode_to(out);
                share.encode_to(out);
                put_external(out, external);
            }
            Message::CoinShare { round, share } => {
                out.push(TAG_COIN_SHARE);
                out.extend_from_slice(&round.to_be_bytes());
                share.encode_to(out);
            }
            Message::Decide {
                round,
                value,
                signature,
                external,
            } => {
                out.push(TAG_DECIDE);
                out.extend_from_slice(&round.to_be_bytes());
                put_bool(out, *value);
                signature.encode_to(out);
                put_external(out, external);
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_PRE_PROCESS => Message::PreProcess {
                value: read_bool(reader, "aba pre-process value")?,
                share: SignatureShare::decode_from(reader)?,
                external: read_external(reader)?,
            },
            TAG_PRE_VOTE => Message::PreVote {
                round: read_round(reader)?,
                value: read_bool(reader, "aba pre-vote value")?,
                justification: PreVoteJustification::decode_from(reader)?,
                share: SignatureShare::decode_from(reader)?,
                external: read_external(reader)?,
            },
            TAG_MAIN_VOTE => Message::MainVote {
                round: read_round(reader)?,
                vote: Vote::decode_from(reader)?,
                justification: MainVoteJustification::decode_from(reader)?,
                share: SignatureShare::decode_from(reader)?,
                external: read_external(reader)?,
            },
            TAG_COIN_SHARE => Message::CoinShare {
                round: read_round(reader)?,
                share: coin::CoinShare::decode_from(reader)?,
            },
            TAG_DECIDE => Message::Decide {
                round: read_round(reader)?,
                value: read_bool(reader, "aba decide value")?,
                signature: Signature::decode_from(reader)?,
                external: read_external(reader)?,
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "aba message",
                    why: "unknown tag",
                });
            }
        })
    }
}
