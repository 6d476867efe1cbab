//! The node-level envelope on the links. Links carry bytes; every message between two replicas is
//! one [`NodeMessage`]: a tag byte, then the variant's fields (integers big-endian, lengths and
//! counts `u32`, checked against their maxima before anything is allocated). Decoding is strict:
//! an unknown tag, a field beyond its maximum or a trailing byte is an error, which the receiver
//! records as a `Malformed` fault against the (authenticated) sender.

use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};
use sintra_crypto::{bls, rsa};
use sintra_protocols::Message;

use crate::checkpoint::CheckpointCertificate;
use crate::store::RoundRecord;

/// Tag of [`NodeMessage::Protocol`].
const TAG_PROTOCOL: u8 = 0;
/// Tag of [`NodeMessage::AnswerShare`].
const TAG_ANSWER_SHARE: u8 = 1;
/// Tag of [`NodeMessage::ProofRequest`].
const TAG_PROOF_REQUEST: u8 = 2;
/// Tag of [`NodeMessage::AnswerProof`].
const TAG_ANSWER_PROOF: u8 = 3;
/// Tag of [`NodeMessage::CheckpointShare`].
const TAG_CHECKPOINT_SHARE: u8 = 4;
/// Tag of [`NodeMessage::Hello`].
const TAG_HELLO: u8 = 5;
/// Tag of [`NodeMessage::Status`].
const TAG_STATUS: u8 = 6;
/// Tag of [`NodeMessage::FetchRounds`].
const TAG_FETCH_ROUNDS: u8 = 7;
/// Tag of [`NodeMessage::Rounds`].
const TAG_ROUNDS: u8 = 8;
/// Tag of [`NodeMessage::Forward`].
const TAG_FORWARD: u8 = 9;
/// Tag of [`NodeMessage::ShareRequest`].
const TAG_SHARE_REQUEST: u8 = 10;

/// The most round records in one [`NodeMessage::Rounds`] (the byte limit of a link message
/// bounds it further; see [`crate::TRANSFER_REPLY_BYTES_MAX`]).
pub const ROUND_RECORDS_MAX: usize = 4096;

/// What a round's answer shares sign: item `0` is the round's answer-batch statement, item
/// `i + 1` the [`sintra_services::Service::signing_message`] of the round's answer `i` (for the
/// answers a stock tool verifies: time-stamps, certificates, directory statements), and at a
/// checkpoint round [`STATE_ITEM`] the directory's state statement.
pub type Item = u32;

/// The largest item number: one per answer of a signed answer batch, plus the batch itself,
/// plus [`STATE_ITEM`].
pub const ITEM_MAX: Item = sintra_services::answers::ANSWER_BATCH_LEAVES_MAX as Item + 1;

/// The item of a checkpoint round that signs the directory's state statement
/// (`sintra_services::directory::StateStatement`), which every server combines for its local
/// lookups; above every answer's item.
pub const STATE_ITEM: Item = ITEM_MAX;

/// One message between two replicas.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "protocol messages dominate the traffic; boxing them would cost an allocation each"
)]
pub enum NodeMessage {
    /// A message of the ordering protocols (atomic broadcast and its children).
    Protocol(Message),
    /// The sender's threshold-RSA share of `item` of `round` (without a proof: combining is
    /// optimistic).
    AnswerShare {
        /// The round whose answers it signs.
        round: u64,
        /// What of the round it signs.
        item: Item,
        /// The share.
        share: rsa::SignatureShare,
    },
    /// "Send me your share of `round` with its proof": an optimistic combination failed and
    /// the bad share must be named.
    ProofRequest {
        /// The round.
        round: u64,
        /// The item.
        item: Item,
    },
    /// A share with its proof of correctness, in answer to a [`NodeMessage::ProofRequest`].
    AnswerProof {
        /// The round.
        round: u64,
        /// The item.
        item: Item,
        /// The share.
        share: rsa::SignatureShare,
        /// Its proof.
        proof: rsa::ShareProof,
    },
    /// The sender's BLS agreement-key share of a checkpoint statement.
    CheckpointShare {
        /// The statement's fields.
        statement: crate::checkpoint::CheckpointStatement,
        /// The share.
        share: bls::SignatureShare,
    },
    /// "Where does the group stand?" — sent by a server that (re)started or fell behind.
    Hello {
        /// The next round the sender will execute.
        next_round: u64,
    },
    /// The answer to [`NodeMessage::Hello`].
    Status {
        /// The next round the sender will execute.
        next_round: u64,
        /// The sender's latest checkpoint certificate.
        certificate: Option<CheckpointCertificate>,
    },
    /// "Send me your log from round `from_round` up to a checkpoint certificate at or after
    /// it" (state transfer: the peer's latest one, or the first after 32 MiB of records).
    FetchRounds {
        /// The first round wanted.
        from_round: u64,
    },
    /// A part of the answer to [`NodeMessage::FetchRounds`]: consecutive rounds; the last part
    /// carries the certificate that covers them.
    Rounds {
        /// Consecutive rounds from the one asked for.
        records: Vec<RoundRecord>,
        /// The certificate of the last record's round, on the last part only.
        certificate: Option<CheckpointCertificate>,
    },
    /// A client request submitted at the sender, for this server to submit to atomic broadcast
    /// too (so that it is pending at more than one server).
    Forward {
        /// The encoded service request.
        request: Vec<u8>,
    },
    /// "Send me your share of `item` of `round` again": a client retried a request executed
    /// earlier, and the shares of its round were not kept (nobody was waiting then).
    ShareRequest {
        /// The round.
        round: u64,
        /// The item.
        item: Item,
    },
}

impl Encode for NodeMessage {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Protocol(message) => {
                out.push(TAG_PROTOCOL);
                message.encode_to(out);
            }
            Self::AnswerShare { round, item, share } => {
                out.push(TAG_ANSWER_SHARE);
                out.extend_from_slice(&round.to_be_bytes());
                out.extend_from_slice(&item.to_be_bytes());
                share.encode_to(out);
            }
            Self::ProofRequest { round, item } => {
                out.push(TAG_PROOF_REQUEST);
                out.extend_from_slice(&round.to_be_bytes());
                out.extend_from_slice(&item.to_be_bytes());
            }
            Self::AnswerProof {
                round,
                item,
                share,
                proof,
            } => {
                out.push(TAG_ANSWER_PROOF);
                out.extend_from_slice(&round.to_be_bytes());
                out.extend_from_slice(&item.to_be_bytes());
                share.encode_to(out);
                proof.encode_to(out);
            }
            Self::CheckpointShare { statement, share } => {
                out.push(TAG_CHECKPOINT_SHARE);
                statement.encode_to(out);
                share.encode_to(out);
            }
            Self::Hello { next_round } => {
                out.push(TAG_HELLO);
                out.extend_from_slice(&next_round.to_be_bytes());
            }
            Self::Status {
                next_round,
                certificate,
            } => {
                out.push(TAG_STATUS);
                out.extend_from_slice(&next_round.to_be_bytes());
                encode_option(out, certificate.as_ref());
            }
            Self::FetchRounds { from_round } => {
                out.push(TAG_FETCH_ROUNDS);
                out.extend_from_slice(&from_round.to_be_bytes());
            }
            Self::Rounds {
                records,
                certificate,
            } => {
                out.push(TAG_ROUNDS);
                out.extend_from_slice(&(records.len() as u32).to_be_bytes());
                for record in records {
                    record.encode_to(out);
                }
                encode_option(out, certificate.as_ref());
            }
            Self::Forward { request } => {
                out.push(TAG_FORWARD);
                put_bytes(out, request);
            }
            Self::ShareRequest { round, item } => {
                out.push(TAG_SHARE_REQUEST);
                out.extend_from_slice(&round.to_be_bytes());
                out.extend_from_slice(&item.to_be_bytes());
            }
        }
    }
}

fn encode_option<T: Encode>(out: &mut Vec<u8>, value: Option<&T>) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            value.encode_to(out);
        }
    }
}

fn decode_option<T: Decode>(reader: &mut Reader<'_>) -> Result<Option<T>, DecodeError> {
    match reader.u8()? {
        0 => Ok(None),
        1 => Ok(Some(T::decode_from(reader)?)),
        _ => Err(DecodeError::Invalid {
            what: "option",
            why: "presence byte is neither 0 nor 1",
        }),
    }
}

fn decode_item(reader: &mut Reader<'_>) -> Result<Item, DecodeError> {
    let item = reader.u32()?;
    if item > ITEM_MAX {
        return Err(DecodeError::Invalid {
            what: "answer item",
            why: "beyond the most answers a round has",
        });
    }
    Ok(item)
}

impl Decode for NodeMessage {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_PROTOCOL => Self::Protocol(Message::decode_from(reader)?),
            TAG_ANSWER_SHARE => Self::AnswerShare {
                round: reader.u64()?,
                item: decode_item(reader)?,
                share: rsa::SignatureShare::decode_from(reader)?,
            },
            TAG_PROOF_REQUEST => Self::ProofRequest {
                round: reader.u64()?,
                item: decode_item(reader)?,
            },
            TAG_ANSWER_PROOF => Self::AnswerProof {
                round: reader.u64()?,
                item: decode_item(reader)?,
                share: rsa::SignatureShare::decode_from(reader)?,
                proof: rsa::ShareProof::decode_from(reader)?,
            },
            TAG_CHECKPOINT_SHARE => Self::CheckpointShare {
                statement: Decode::decode_from(reader)?,
                share: bls::SignatureShare::decode_from(reader)?,
            },
            TAG_HELLO => Self::Hello {
                next_round: reader.u64()?,
            },
            TAG_STATUS => Self::Status {
                next_round: reader.u64()?,
                certificate: decode_option(reader)?,
            },
            TAG_FETCH_ROUNDS => Self::FetchRounds {
                from_round: reader.u64()?,
            },
            TAG_ROUNDS => Self::Rounds {
                records: reader.vec("round records", ROUND_RECORDS_MAX)?,
                certificate: decode_option(reader)?,
            },
            TAG_SHARE_REQUEST => Self::ShareRequest {
                round: reader.u64()?,
                item: decode_item(reader)?,
            },
            TAG_FORWARD => Self::Forward {
                request: reader
                    .bytes("forwarded request", crate::store::RECORD_REQUEST_BYTES_MAX)?
                    .to_vec(),
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "node message",
                    why: "unknown tag",
                });
            }
        })
    }
}

/// Encodes a request list as a round record does (exposed for the store).
pub(crate) fn put_requests(out: &mut Vec<u8>, requests: &[Vec<u8>]) {
    out.extend_from_slice(&(requests.len() as u32).to_be_bytes());
    for request in requests {
        put_bytes(out, request);
    }
}

#[cfg(test)]
mod tests {
    use sintra_crypto::ServerId;
    use sintra_protocols::abc;
    use sintra_protocols::{Body, InstanceId};

    use super::*;

    fn samples() -> Vec<NodeMessage> {
        let instance = InstanceId::root("sintra")
            .and_then(|r| r.child("abc"))
            .unwrap();
        vec![
            NodeMessage::Protocol(Message {
                instance,
                body: Body::Abc(abc::Message::CatchUp { round: 7 }),
            }),
            NodeMessage::AnswerShare {
                round: 5,
                item: 3,
                share: rsa::SignatureShare::from_parts(ServerId::new(2).unwrap(), vec![7; 128])
                    .unwrap(),
            },
            NodeMessage::ProofRequest { round: 9, item: 0 },
            NodeMessage::ShareRequest { round: 8, item: 2 },
            NodeMessage::ProofRequest {
                round: 9,
                item: ITEM_MAX,
            },
            NodeMessage::Hello { next_round: 4 },
            NodeMessage::Status {
                next_round: 4,
                certificate: None,
            },
            NodeMessage::FetchRounds { from_round: 2 },
            NodeMessage::Rounds {
                records: vec![
                    RoundRecord {
                        round: 2,
                        time_ms: 9,
                        requests: vec![b"a".to_vec()],
                    },
                    RoundRecord {
                        round: 3,
                        time_ms: 10,
                        requests: Vec::new(),
                    },
                ],
                certificate: None,
            },
            NodeMessage::Forward {
                request: b"put".to_vec(),
            },
        ]
    }

    #[test]
    fn node_messages_roundtrip_and_refuse_trailing_bytes() {
        for message in samples() {
            let bytes = message.to_bytes();
            assert_eq!(NodeMessage::from_bytes(&bytes).unwrap(), message);
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(NodeMessage::from_bytes(&longer).is_err());
            for cut in 0..bytes.len() {
                assert!(
                    NodeMessage::from_bytes(&bytes[..cut]).is_err(),
                    "{message:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..512usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = NodeMessage::from_bytes(&bytes);
            for tag in 0..=10u8 {
                let mut tagged = vec![tag];
                tagged.extend_from_slice(&bytes);
                let _ = NodeMessage::from_bytes(&tagged);
            }
        }
    }
}
