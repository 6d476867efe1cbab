//! The messages of optimistic atomic broadcast and their canonical encodings: a tag byte, then
//! the fields (`u64` big-endian, digests as 32 raw bytes, batches `u32`-length-prefixed).

use sintra_crypto::ServerId;
use sintra_crypto::bls::{Signature, SignatureShare};
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};

use crate::cbc::{self, Digest};

/// A server's account of where the optimistic phase of an epoch got to: its highest prepared
/// certificate (or none), signed by the reporter (a share under the agreement key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The epoch.
    pub epoch: u64,
    /// The highest sequence number with a certificate here (0: none).
    pub seq: u64,
    /// The chain value at `seq` (the epoch's genesis for 0).
    pub chain: Digest,
    /// The certificate on `prepare(epoch, seq, chain)` (absent exactly when `seq` is 0).
    pub certificate: Option<Signature>,
    /// The reporter's share on `report(epoch, seq, chain)`; its id names the reporter.
    pub share: SignatureShare,
}

/// A message of one optimistic atomic-broadcast instance. Fields are public so that simulated
/// Byzantine servers can forge them; an honest instance checks everything it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The leader's batch number `seq` of `epoch` (an encoded [`crate::abc::Batch`]).
    Order {
        /// The epoch.
        epoch: u64,
        /// Its sequence number, from 1.
        seq: u64,
        /// The encoded batch.
        batch: Vec<u8>,
    },
    /// A share on `prepare(epoch, seq, chain)`.
    Prepare {
        /// The epoch.
        epoch: u64,
        /// The sequence number.
        seq: u64,
        /// The sender's chain value at `seq`.
        chain: Digest,
        /// The share (agreement key).
        share: SignatureShare,
    },
    /// "I hold a certificate on `prepare(epoch, seq, chain)`", with a share on
    /// `commit(epoch, seq, chain)`.
    Commit {
        /// The epoch.
        epoch: u64,
        /// The sequence number.
        seq: u64,
        /// The certified chain value.
        chain: Digest,
        /// The share (agreement key).
        share: SignatureShare,
    },
    /// A commit certificate (`n - t` commit shares combined): the batches up to `seq` are
    /// delivered. Sent to a server that complained, so that it catches up.
    Committed {
        /// The epoch.
        epoch: u64,
        /// The sequence number.
        seq: u64,
        /// The chain value.
        chain: Digest,
        /// The certificate on `commit(epoch, seq, chain)`.
        certificate: Signature,
    },
    /// "The optimistic phase of `epoch` does not progress for me."
    Complain {
        /// The epoch.
        epoch: u64,
    },
    /// A report, sent to all so that every server submits it to the recovery broadcast.
    Report(Report),
    /// "Send me the batches of `epoch` up to `seq`, whose chain value there is `chain`" (at
    /// most [`super::BATCHES_RETAINED`] of them, the last ones).
    Fetch {
        /// The epoch.
        epoch: u64,
        /// The last sequence number wanted.
        seq: u64,
        /// Its trusted chain value: a server answers only when its own chain agrees, so a
        /// reply that does not link is the replier's fault.
        chain: Digest,
    },
    /// The answer to [`Message::Fetch`]: the batch and the chain value before it.
    Batch {
        /// The epoch.
        epoch: u64,
        /// The sequence number.
        seq: u64,
        /// The chain value at `seq - 1`.
        previous: Digest,
        /// The encoded batch.
        batch: Vec<u8>,
    },
}

const TAG_ORDER: u8 = 0;
const TAG_PREPARE: u8 = 1;
const TAG_COMMIT: u8 = 2;
const TAG_COMPLAIN: u8 = 3;
const TAG_REPORT: u8 = 4;
const TAG_FETCH: u8 = 5;
const TAG_BATCH: u8 = 6;
const TAG_COMMITTED: u8 = 7;

impl Encode for Report {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.chain);
        match &self.certificate {
            None => out.push(0),
            Some(certificate) => {
                out.push(1);
                certificate.encode_to(out);
            }
        }
        self.share.encode_to(out);
    }
}

impl Decode for Report {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epoch = reader.u64()?;
        let seq = reader.u64()?;
        let chain = reader.array()?;
        let certificate = match reader.u8()? {
            0 => None,
            1 => Some(Signature::decode_from(reader)?),
            _ => {
                return Err(DecodeError::Invalid {
                    what: "oabc report",
                    why: "certificate flag is neither 0 nor 1",
                });
            }
        };
        if certificate.is_some() != (seq > 0) {
            return Err(DecodeError::Invalid {
                what: "oabc report",
                why: "a certificate comes with exactly the positive sequence numbers",
            });
        }
        Ok(Self {
            epoch,
            seq,
            chain,
            certificate,
            share: SignatureShare::decode_from(reader)?,
        })
    }
}

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::Order { epoch, seq, batch } => {
                out.push(TAG_ORDER);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                put_bytes(out, batch);
            }
            Message::Prepare {
                epoch,
                seq,
                chain,
                share,
            } => {
                out.push(TAG_PREPARE);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(chain);
                share.encode_to(out);
            }
            Message::Commit {
                epoch,
                seq,
                chain,
                share,
            } => {
                out.push(TAG_COMMIT);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(chain);
                share.encode_to(out);
            }
            Message::Committed {
                epoch,
                seq,
                chain,
                certificate,
            } => {
                out.push(TAG_COMMITTED);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(chain);
                certificate.encode_to(out);
            }
            Message::Complain { epoch } => {
                out.push(TAG_COMPLAIN);
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            Message::Report(report) => {
                out.push(TAG_REPORT);
                report.encode_to(out);
            }
            Message::Fetch { epoch, seq, chain } => {
                out.push(TAG_FETCH);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(chain);
            }
            Message::Batch {
                epoch,
                seq,
                previous,
                batch,
            } => {
                out.push(TAG_BATCH);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(previous);
                put_bytes(out, batch);
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match reader.u8()? {
            TAG_ORDER => Message::Order {
                epoch: reader.u64()?,
                seq: reader.u64()?,
                batch: reader.bytes("oabc batch", cbc::BODY_BYTES_MAX)?.to_vec(),
            },
            TAG_PREPARE => Message::Prepare {
                epoch: reader.u64()?,
                seq: reader.u64()?,
                chain: reader.array()?,
                share: SignatureShare::decode_from(reader)?,
            },
            TAG_COMMIT => Message::Commit {
                epoch: reader.u64()?,
                seq: reader.u64()?,
                chain: reader.array()?,
                share: SignatureShare::decode_from(reader)?,
            },
            TAG_COMMITTED => Message::Committed {
                epoch: reader.u64()?,
                seq: reader.u64()?,
                chain: reader.array()?,
                certificate: Signature::decode_from(reader)?,
            },
            TAG_COMPLAIN => Message::Complain {
                epoch: reader.u64()?,
            },
            TAG_REPORT => Message::Report(Report::decode_from(reader)?),
            TAG_FETCH => Message::Fetch {
                epoch: reader.u64()?,
                seq: reader.u64()?,
                chain: reader.array()?,
            },
            TAG_BATCH => Message::Batch {
                epoch: reader.u64()?,
                seq: reader.u64()?,
                previous: reader.array()?,
                batch: reader.bytes("oabc batch", cbc::BODY_BYTES_MAX)?.to_vec(),
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "oabc message",
                    why: "unknown tag",
                });
            }
        })
    }
}

impl Message {
    /// The epoch it is about.
    pub fn epoch(&self) -> u64 {
        match self {
            Self::Order { epoch, .. }
            | Self::Prepare { epoch, .. }
            | Self::Commit { epoch, .. }
            | Self::Committed { epoch, .. }
            | Self::Complain { epoch }
            | Self::Fetch { epoch, .. }
            | Self::Batch { epoch, .. } => *epoch,
            Self::Report(report) => report.epoch,
        }
    }
}

impl Report {
    /// The reporter.
    pub fn reporter(&self) -> ServerId {
        self.share.id()
    }
}

/// The highest prepare certificate a server holds in an epoch: what it reports. A runtime stores
/// it before a COMMIT of that epoch leaves, so that after a restart the server can still report
/// — at least as high as every COMMIT it sent ([`super::Oabc::certified`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    /// The epoch.
    pub epoch: u64,
    /// The certified sequence number (at least 1).
    pub seq: u64,
    /// The chain value at `seq`.
    pub chain: Digest,
    /// The certificate on `prepare(epoch, seq, chain)`.
    pub certificate: Signature,
}

impl Encode for Certified {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.chain);
        self.certificate.encode_to(out);
    }
}

impl Decode for Certified {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: reader.u64()?,
            seq: reader.u64()?,
            chain: reader.array()?,
            certificate: Signature::decode_from(reader)?,
        })
    }
}

/// Where one server's instance stands after a delivered request: what a restarted server
/// resumes from ([`super::Oabc::resume`]). Server-local progress, not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The epoch delivering next.
    pub epoch: u64,
    /// Batches of `epoch` delivered (0: none yet).
    pub seq: u64,
    /// The chain value at `seq` (the epoch's genesis for 0).
    pub chain: Digest,
    /// The time of batch `seq` (0 for none).
    pub time_ms: u64,
    /// Requests delivered.
    pub positions: u64,
    /// Where the recovery broadcast resumes: with `replay`, the round that holds the marker
    /// closing `epoch - 1`, run again from there; without, its next round (the recovery had
    /// nothing under way: no request held, no report in, no epoch closed and not delivered).
    pub recovery_round: u64,
    /// Whether the recovery broadcast runs again from the marker's round.
    pub replay: bool,
    /// The recovery broadcast's delivered count before that round.
    pub recovery_height: u64,
    /// The servers whose reports on `epoch - 1` the recovery broadcast delivered before that
    /// round (with the reports in the round, they make up the marker again).
    pub reporters_before: Vec<ServerId>,
}

/// Reporters a [`Point`] lists, at most (the group size limit).
const POINT_REPORTERS_MAX: usize = sintra_crypto::SERVERS_MAX as usize;

impl Encode for Point {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.chain);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.positions.to_be_bytes());
        out.extend_from_slice(&self.recovery_round.to_be_bytes());
        out.push(u8::from(self.replay));
        out.extend_from_slice(&self.recovery_height.to_be_bytes());
        out.extend_from_slice(&(self.reporters_before.len() as u16).to_be_bytes());
        for reporter in &self.reporters_before {
            out.extend_from_slice(&reporter.get().to_be_bytes());
        }
    }
}

impl Decode for Point {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: reader.u64()?,
            seq: reader.u64()?,
            chain: reader.array()?,
            time_ms: reader.u64()?,
            positions: reader.u64()?,
            recovery_round: reader.u64()?,
            replay: match reader.u8()? {
                0 => false,
                1 => true,
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "oabc point",
                        why: "replay flag is neither 0 nor 1",
                    });
                }
            },
            recovery_height: reader.u64()?,
            reporters_before: {
                let count = usize::from(reader.u16()?);
                if count > POINT_REPORTERS_MAX {
                    return Err(DecodeError::Invalid {
                        what: "oabc point",
                        why: "more reporters than servers",
                    });
                }
                let mut reporters = Vec::with_capacity(count);
                for _ in 0..count {
                    let id = ServerId::new(reader.u16()?).ok_or(DecodeError::Invalid {
                        what: "oabc point",
                        why: "server id 0",
                    })?;
                    reporters.push(id);
                }
                reporters
            },
        })
    }
}
