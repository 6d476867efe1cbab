//! Threshold cryptography for sintra (DESIGN.md §2).
//!
//! Four threshold schemes and the dealer that sets them up. Every scheme follows one pattern:
//! a dealer splits a secret among servers `1..=n`; each server produces a *share* with its key
//! share; any `k` distinct valid shares *combine* into the one result; every share can be checked
//! on its own against the server's public verification key, so a bad share is attributed to its
//! sender. Combining is optimistic: combine first and verify the result once; check shares one by
//! one only when that final check fails, and name the culprits.
//!
//! | module | scheme | used for |
//! |---|---|---|
//! | [`bls`] | BLS12-381 threshold signatures (signatures in G1) | agreement justifications, broadcast certificates |
//! | [`coin`] | Cachin–Kursawe–Shoup Diffie–Hellman coin on ristretto255 | the common coin |
//! | [`tdh2`] | Shoup–Gennaro TDH2 on ristretto255, hybrid with ChaCha20-Poly1305 | confidential requests |
//! | [`rsa`] | Shoup threshold RSA (EUROCRYPT 2000), PKCS#1 v1.5 / SHA-256 | the service's answers |
//! | [`dealer`] | trusted dealer for a whole group | `sintra keygen` |
//!
//! Domain separation: every signed message, coin name and ciphertext label is bound to a
//! [`Context`] (a purpose tag and the protocol instance id). No IO happens in this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bls;
pub mod coin;
mod context;
pub mod dealer;
pub mod encoding;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod ristretto;
pub mod rsa;
pub mod shamir;
pub mod tdh2;

pub use context::Context;
pub use encoding::{Decode, DecodeError, Encode};
pub use error::{CombineError, CryptoError};
pub use ids::{SERVERS_MAX, ServerId};

/// The outcome of an optimistic combination: the value, and the servers whose shares were found
/// invalid on the way (empty on the fast path). Callers record `faulty` as faults against those
/// peers; the value is correct regardless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined<T> {
    /// The combined result (a group signature, a coin value, a plaintext).
    pub value: T,
    /// Servers that contributed an invalid share; their shares were left out.
    pub faulty: Vec<ServerId>,
}
