//! Decoder harness shared by the cargo-fuzz targets (`fuzz/`) and the seeded random-bytes test
//! (`tests/decoders.rs`), so both exercise exactly the same decoders with the same checks.
//!
//! The check is stronger than "does not panic": when bytes decode, encoding the value again must
//! give back exactly those bytes. That is what *canonical* means — one value, one encoding — and
//! it is what lets a server use encodings as cache keys and compare them byte for byte.

use crate::encoding::{Decode, Encode};
use crate::{ServerId, bls, coin, rsa, tdh2};

/// The families of decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BLS keys, shares and signatures.
    Bls,
    /// Coin keys and shares.
    Coin,
    /// TDH2 keys, ciphertexts and shares.
    Tdh2,
    /// Threshold RSA keys, shares, proofs and signatures.
    Rsa,
}

/// Every family, for tests that sweep them all.
pub const FAMILIES: [Family; 4] = [Family::Bls, Family::Coin, Family::Tdh2, Family::Rsa];

/// Decodes `data[1..]` with the decoder of `family` chosen by `data[0]`. Returns whether it
/// decoded. Panics only if a decoded value does not re-encode to the same bytes (a bug).
pub fn decode(family: Family, data: &[u8]) -> bool {
    let Some((&selector, bytes)) = data.split_first() else {
        return false;
    };
    match family {
        Family::Bls => match selector % 4 {
            0 => canonical::<bls::PublicKeySet>(bytes),
            1 => canonical::<bls::SecretKeyShare>(bytes),
            2 => canonical::<bls::SignatureShare>(bytes),
            _ => canonical::<bls::Signature>(bytes),
        },
        Family::Coin => match selector % 3 {
            0 => canonical::<coin::PublicKeySet>(bytes),
            1 => canonical::<coin::SecretKeyShare>(bytes),
            _ => canonical::<coin::CoinShare>(bytes),
        },
        Family::Tdh2 => match selector % 4 {
            0 => canonical::<tdh2::PublicKey>(bytes),
            1 => canonical::<tdh2::SecretKeyShare>(bytes),
            2 => canonical::<tdh2::Ciphertext>(bytes),
            _ => canonical::<tdh2::DecryptionShare>(bytes),
        },
        Family::Rsa => match selector % 6 {
            0 => canonical::<rsa::PublicKey>(bytes),
            1 => canonical::<rsa::SecretKeyShare>(bytes),
            2 => canonical::<rsa::SignatureShare>(bytes),
            3 => canonical::<rsa::ShareProof>(bytes),
            4 => canonical::<rsa::Signature>(bytes),
            _ => canonical::<ServerId>(bytes),
        },
    }
}

fn canonical<T: Encode + Decode>(bytes: &[u8]) -> bool {
    match T::from_bytes(bytes) {
        Ok(value) => {
            assert_eq!(
                value.to_bytes(),
                bytes,
                "{} decoded from bytes it does not encode back to",
                std::any::type_name::<T>()
            );
            true
        }
        Err(_) => false,
    }
}
