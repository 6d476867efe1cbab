//! What atomic broadcast puts on the wire besides its children's messages, and the two values it
//! hands to its children: the batch a server consistent-broadcasts and the proposal the servers
//! agree on. Canonical encodings (docs/protocols/abc.md, "Encodings"): a tag byte where there are
//! several kinds, big-endian integers, `u32` length or count prefixes checked before allocating.

use sintra_crypto::bls::Signature;
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes, put_vec};
use sintra_crypto::{SERVERS_MAX, ServerId};

use crate::cbc::{self, CbcProof, Digest};
use crate::{InstanceId, Party};

/// Bytes of an encoded [`BatchCertificate`]: proposer (2) ‖ digest (32) ‖ signature (48).
pub const CERTIFICATE_BYTES: usize = 2 + 32 + 48;

/// The most certificates a [`Proposal`] carries: one per server of the largest group.
pub const CERTIFICATES_MAX: usize = SERVERS_MAX as usize;

/// The most requests a [`Batch`] decodes to whatever the configuration: every request takes at
/// least its 4-byte length prefix, and a batch is a consistent-broadcast body.
pub const BATCH_REQUESTS_LIMIT: usize = cbc::BODY_BYTES_MAX / 4;

/// A message of atomic broadcast itself (envelope instance: the atomic-broadcast instance). Both
/// serve servers that fell behind: a round's agreement and batches are dropped two rounds after
/// it was delivered, so a late server learns the decision from `t + 1` matching
/// [`Message::Decided`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "I am stuck in this round: tell me its decision." Sent to all by a server that dropped
    /// messages of its current round or a later one (they were beyond its window).
    CatchUp {
        /// The round.
        round: u64,
    },
    /// "This round decided these certificates." Sent only by a server that decided the round:
    /// to a peer that asked ([`Message::CatchUp`]) or that sent a message for a round this server
    /// already dropped.
    Decided {
        /// The round.
        round: u64,
        /// The decided proposal.
        proposal: Proposal,
    },
}

/// The delivery certificate of one batch: the consistent-broadcast proof of instance
/// `<abc>/r<round>/b<proposer>`, without the instance id, which the round and proposer imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCertificate {
    /// The server that broadcast the batch.
    pub proposer: ServerId,
    /// The batch's digest ([`cbc::body_digest`] in the batch instance).
    pub digest: Digest,
    /// The broadcast key set's signature on it.
    pub signature: Signature,
}

/// What the servers agree on in a round: batch certificates of distinct proposers, in
/// increasing proposer order (the encoding admits no other order, so a proposal has one
/// encoding). Valid in round `r` when it holds between `n - t` and `n` certificates of members,
/// each verifying for its batch instance of round `r` ([`Proposal::is_valid`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proposal {
    /// The certificates, strictly increasing by proposer.
    pub certificates: Vec<BatchCertificate>,
}

/// A batch of requests: the body of a batch's consistent broadcast. Requests are opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// The proposer's clock when it made the batch, milliseconds since the Unix epoch (`0` if
    /// it has none): the round's agreed time is the median of its batches' times.
    pub time_ms: u64,
    /// The requests, oldest first.
    pub requests: Vec<Vec<u8>>,
}

/// The label of proposer `j`'s batch instance below a round: `b<j>`.
pub(crate) fn batch_label(proposer: ServerId) -> String {
    format!("b{}", proposer.get())
}

impl BatchCertificate {
    /// The full consistent-broadcast proof in `round` (the round's instance id,
    /// `<abc>/r<round>`). `None` only if the id has no room for the batch label.
    pub fn proof(&self, round: &InstanceId) -> Option<CbcProof> {
        Some(CbcProof {
            instance: round.child(&batch_label(self.proposer))?,
            digest: self.digest,
            signature: self.signature,
        })
    }

    /// The certificate of a batch delivery.
    pub fn from_proof(proposer: ServerId, proof: &CbcProof) -> Self {
        Self {
            proposer,
            digest: proof.digest,
            signature: proof.signature,
        }
    }
}

impl Proposal {
    /// The external predicate of a round's agreement: between `n - t` and `n` certificates of
    /// members (distinct and ordered by construction), each a valid proof for its batch instance
    /// in `round`. Signatures go through the party's verified cache, so a certificate that
    /// travels in many proposals and votes is checked once per server.
    pub fn is_valid(&self, party: &mut Party, round: &InstanceId) -> bool {
        let count = self.certificates.len();
        if count < party.quorum() || count > usize::from(party.servers()) {
            return false;
        }
        self.certificates.iter().all(|certificate| {
            certificate.proposer.is_member_of(party.servers())
                && certificate
                    .proof(round)
                    .is_some_and(|proof| proof.verify(party))
        })
    }
}

/// A batch's fixed part: its time (8 bytes) and its request count (4 bytes).
pub(crate) const BATCH_HEADER_BYTES: usize = 12;

impl Batch {
    /// Whether the batch respects the configured limits, checked on an encoded body of
    /// `encoded_len` bytes: at most `requests_max` requests of at most `request_bytes_max` bytes
    /// each, at most `bytes_max` bytes in all.
    pub(crate) fn fits(
        &self,
        encoded_len: usize,
        requests_max: usize,
        request_bytes_max: usize,
        bytes_max: usize,
    ) -> bool {
        encoded_len <= bytes_max
            && self.requests.len() <= requests_max
            && self
                .requests
                .iter()
                .all(|request| request.len() <= request_bytes_max)
    }

    /// The encoded length of a batch holding requests of these lengths.
    pub(crate) fn encoded_len(lengths: impl IntoIterator<Item = usize>) -> usize {
        BATCH_HEADER_BYTES + lengths.into_iter().map(|len| 4 + len).sum::<usize>()
    }
}

const TAG_CATCH_UP: u8 = 0;
const TAG_DECIDED: u8 = 1;

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::CatchUp { round } => {
                out.push(TAG_CATCH_UP);
                out.extend_from_slice(&round.to_be_bytes());
            }
            Message::Decided { round, proposal } => {
                out.push(TAG_DECIDED);
                out.extend_from_slice(&round.to_be_bytes());
                proposal.encode_to(out);
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_CATCH_UP => Message::CatchUp {
                round: reader.u64()?,
            },
            TAG_DECIDED => Message::Decided {
                round: reader.u64()?,
                proposal: Proposal::decode_from(reader)?,
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "abc message",
                    why: "unknown tag",
                });
            }
        })
    }
}

impl Encode for BatchCertificate {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.proposer.encode_to(out);
        out.extend_from_slice(&self.digest);
        self.signature.encode_to(out);
    }
}

impl Decode for BatchCertificate {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            proposer: ServerId::decode_from(reader)?,
            digest: reader.array()?,
            signature: Signature::decode_from(reader)?,
        })
    }
}

impl Encode for Proposal {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_vec(out, &self.certificates);
    }
}

impl Decode for Proposal {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let certificates: Vec<BatchCertificate> = reader.vec("certificates", CERTIFICATES_MAX)?;
        if certificates
            .windows(2)
            .any(|pair| pair[0].proposer >= pair[1].proposer)
        {
            return Err(DecodeError::Invalid {
                what: "proposal",
                why: "proposers not strictly increasing",
            });
        }
        Ok(Self { certificates })
    }
}

impl Encode for Batch {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&(self.requests.len() as u32).to_be_bytes());
        for request in &self.requests {
            put_bytes(out, request);
        }
    }
}

impl Decode for Batch {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let time_ms = reader.u64()?;
        let count = reader.u32()? as usize;
        if count > BATCH_REQUESTS_LIMIT {
            return Err(DecodeError::TooLong {
                what: "batch",
                len: count,
                max: BATCH_REQUESTS_LIMIT,
            });
        }
        // Every request takes its 4-byte prefix: refuse counts the input cannot hold before
        // allocating for them.
        if count.saturating_mul(4) > reader.remaining() {
            return Err(DecodeError::Truncated {
                needed: count.saturating_mul(4) - reader.remaining(),
            });
        }
        let mut requests = Vec::with_capacity(count);
        for _ in 0..count {
            requests.push(reader.bytes("request", cbc::BODY_BYTES_MAX)?.to_vec());
        }
        Ok(Self { time_ms, requests })
    }
}
