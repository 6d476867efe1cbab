//! Errors (local misuse or invalid input) as opposed to faults (a peer misbehaved), which are
//! reported in [`crate::Combined::faulty`] or [`CombineError::NotEnoughValidShares`].

use thiserror::Error;

use crate::ServerId;
use crate::encoding::DecodeError;

/// Errors of key generation, signing, verification and decryption.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// Bytes that did not decode.
    #[error("decoding failed: {0}")]
    Decode(#[from] DecodeError),
    /// Group parameters the schemes cannot serve (e.g. `k > n`, `n > 1024`, `n <= 3t`).
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A signature or coin value that does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// A share that does not verify against its sender's verification key.
    #[error("invalid share from {0}")]
    InvalidShare(ServerId),
    /// A ciphertext that fails the public validity check, or was presented under another label.
    #[error("invalid ciphertext")]
    InvalidCiphertext,
    /// A share from a server outside the group.
    #[error("{0} is not a member of the group")]
    UnknownServer(ServerId),
}

/// Why shares could not be combined. Culprits are named.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CombineError {
    /// Fewer than `needed` shares were given at all.
    #[error("{needed} shares needed, {given} given")]
    NotEnoughShares {
        /// The threshold `k`.
        needed: usize,
        /// Shares given.
        given: usize,
    },
    /// Two shares carry the same server id.
    #[error("two shares from {0}")]
    DuplicateShare(ServerId),
    /// A share from a server outside the group.
    #[error("share from {0}, which is not a member of the group")]
    UnknownServer(ServerId),
    /// After leaving out the invalid shares, fewer than `needed` remain.
    #[error("only {valid} valid shares of {needed} needed; invalid shares from {faulty:?}")]
    NotEnoughValidShares {
        /// The threshold `k`.
        needed: usize,
        /// Valid shares found.
        valid: usize,
        /// Senders of invalid shares.
        faulty: Vec<ServerId>,
    },
    /// The shares are of a different context or message than asked for.
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}
