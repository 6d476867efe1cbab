//! Checkpoints: every `checkpoint_rounds` rounds each server signs, with its share of the
//! `agreement` BLS key (`n - t` of `n`), where its log stands — `(round, height, log_digest,
//! state_digest)` — and `n - t` matching shares combine into a certificate that any server checks
//! alone. A certificate names the whole log up to `height` through the chained digest, so a
//! server that fetches the log from a single peer can check every entry against it.

use sha2::{Digest as _, Sha256};
use sintra_crypto::dealer::GroupKeys;
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader};
use sintra_crypto::{Context, CryptoError, bls};

/// Purpose of the checkpoint signatures (bound with the atomic-broadcast instance id).
pub const CHECKPOINT_PURPOSE: &str = "node/checkpoint";

/// Domain tag of the signed checkpoint statement.
const STATEMENT_TAG: &[u8] = b"sintra/checkpoint/v1";

/// The chained log digest before any entry: 32 zero bytes.
pub const LOG_DIGEST_START: [u8; 32] = [0; 32];

/// Extends the chained log digest by the entry at `position`:
/// `d_p = SHA-256(d_{p-1} ‖ position ‖ round ‖ time_ms ‖ SHA-256(request))` — the round time
/// is chained too, so a checkpoint certificate also certifies the times the service ran with.
pub fn chain_log_digest(
    previous: &[u8; 32],
    position: u64,
    round: u64,
    time_ms: u64,
    request: &[u8],
) -> [u8; 32] {
    let request_hash: [u8; 32] = Sha256::digest(request).into();
    chain_log_digest_hashed(previous, position, round, time_ms, &request_hash)
}

/// [`chain_log_digest`] for a request whose SHA-256 is known already (the executor hashes each
/// request once, for the log digest, its answer's leaf and the waiting clients).
pub fn chain_log_digest_hashed(
    previous: &[u8; 32],
    position: u64,
    round: u64,
    time_ms: u64,
    request_hash: &[u8; 32],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(position.to_be_bytes());
    hasher.update(round.to_be_bytes());
    hasher.update(time_ms.to_be_bytes());
    hasher.update(request_hash);
    hasher.finalize().into()
}

/// Where a server's log stood after delivering `round`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointStatement {
    /// The last round included.
    pub round: u64,
    /// Requests delivered up to and including `round`.
    pub height: u64,
    /// The chained digest of those requests.
    pub log_digest: [u8; 32],
    /// SHA-256 of the service snapshot after executing them.
    pub state_digest: [u8; 32],
}

impl CheckpointStatement {
    /// The bytes signed: `"sintra/checkpoint/v1" ‖ 0x00 ‖ round ‖ height ‖ log_digest ‖
    /// state_digest`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATEMENT_TAG.len() + 1 + 16 + 64);
        out.extend_from_slice(STATEMENT_TAG);
        out.push(0);
        self.encode_to(&mut out);
        out
    }

    /// This server's share of the statement.
    pub fn sign(&self, instance: &[u8], key: &bls::SecretKeyShare) -> bls::SignatureShare {
        key.sign(
            &Context::new(CHECKPOINT_PURPOSE, instance),
            &self.signed_bytes(),
        )
    }
}

impl Encode for CheckpointStatement {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.log_digest);
        out.extend_from_slice(&self.state_digest);
    }
}

impl Decode for CheckpointStatement {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            round: reader.u64()?,
            height: reader.u64()?,
            log_digest: reader.array()?,
            state_digest: reader.array()?,
        })
    }
}

/// A checkpoint statement with the group's signature (`n - t` shares combined).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointCertificate {
    /// What is certified.
    pub statement: CheckpointStatement,
    /// The agreement key's signature on [`CheckpointStatement::signed_bytes`].
    pub signature: bls::Signature,
}

impl CheckpointCertificate {
    /// Checks the signature under the group's agreement key for the atomic-broadcast instance
    /// `instance`.
    pub fn verify(&self, group: &GroupKeys, instance: &[u8]) -> Result<(), CryptoError> {
        group.agreement.verify(
            &Context::new(CHECKPOINT_PURPOSE, instance),
            &self.statement.signed_bytes(),
            &self.signature,
        )
    }
}

impl Encode for CheckpointCertificate {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.statement.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for CheckpointCertificate {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            statement: CheckpointStatement::decode_from(reader)?,
            signature: bls::Signature::decode_from(reader)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_digest_chains_every_field() {
        let a = chain_log_digest(&LOG_DIGEST_START, 0, 0, 0, b"x");
        assert_ne!(a, chain_log_digest(&LOG_DIGEST_START, 1, 0, 0, b"x"));
        assert_ne!(a, chain_log_digest(&LOG_DIGEST_START, 0, 1, 0, b"x"));
        assert_ne!(a, chain_log_digest(&LOG_DIGEST_START, 0, 0, 1, b"x"));
        assert_ne!(a, chain_log_digest(&LOG_DIGEST_START, 0, 0, 0, b"y"));
        assert_ne!(a, chain_log_digest(&a, 0, 0, 0, b"x"));
    }

    #[test]
    fn statements_roundtrip_and_refuse_trailing_bytes() {
        let statement = CheckpointStatement {
            round: 7,
            height: 99,
            log_digest: [1; 32],
            state_digest: [2; 32],
        };
        let bytes = statement.to_bytes();
        assert_eq!(CheckpointStatement::from_bytes(&bytes).unwrap(), statement);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CheckpointStatement::from_bytes(&longer).is_err());
        assert!(CheckpointStatement::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
}
