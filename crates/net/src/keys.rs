//! Static X25519 keys for the Noise handshake between servers.
//!
//! Each server has one [`LinkKeypair`]; the dealer writes every server's [`LinkPublicKey`] into the
//! group file, and every link pins the key of the server it talks to. Both types encode as 64 hex
//! digits (lower case) so they fit a TOML or JSON group file as plain strings.

use std::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes in an X25519 public or secret key.
pub const LINK_KEY_BYTES: usize = 32;

/// Why a key encoding was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    /// Not 64 hex digits.
    #[error("a link key is {LINK_KEY_BYTES} bytes written as {} hex digits", LINK_KEY_BYTES * 2)]
    BadHex,
}

fn decode_key_hex(text: &str) -> Result<[u8; LINK_KEY_BYTES], KeyDecodeError> {
    let mut bytes = [0u8; LINK_KEY_BYTES];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| KeyDecodeError::BadHex)?;
    Ok(bytes)
}

/// A server's static public key for links, pinned in the group configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkPublicKey([u8; LINK_KEY_BYTES]);

impl LinkPublicKey {
    /// Wraps the 32 bytes of an X25519 public key.
    pub fn from_bytes(bytes: [u8; LINK_KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; LINK_KEY_BYTES] {
        &self.0
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, KeyDecodeError> {
        decode_key_hex(text).map(Self)
    }
}

impl fmt::Debug for LinkPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkPublicKey({})", self.to_hex())
    }
}

impl fmt::Display for LinkPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for LinkPublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for LinkPublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// A server's static key pair for links. The secret never appears in `Debug` output and is wiped
/// on drop; it serializes (for the server's own key file only) as the hex of the secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LinkKeypair {
    secret: [u8; LINK_KEY_BYTES],
    #[zeroize(skip)]
    public: LinkPublicKey,
}

impl LinkKeypair {
    /// Draws a fresh key pair from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut secret = [0u8; LINK_KEY_BYTES];
        rng.fill_bytes(&mut secret);
        Self::from_secret_bytes(secret)
    }

    /// The key pair of a 32-byte X25519 secret (clamped as X25519 always does).
    pub fn from_secret_bytes(secret: [u8; LINK_KEY_BYTES]) -> Self {
        let public = LinkPublicKey(MontgomeryPoint::mul_base_clamped(secret).to_bytes());
        Self { secret, public }
    }

    /// Parses the hex of the secret.
    pub fn from_secret_hex(text: &str) -> Result<Self, KeyDecodeError> {
        decode_key_hex(text).map(Self::from_secret_bytes)
    }

    /// The hex of the secret, for the server's own key file.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.secret)
    }

    /// The public half, to pin in the group file.
    pub fn public(&self) -> LinkPublicKey {
        self.public
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; LINK_KEY_BYTES] {
        &self.secret
    }
}

impl fmt::Debug for LinkKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Serialize for LinkKeypair {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.secret_hex())
    }
}

impl<'de> Deserialize<'de> for LinkKeypair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut text = String::deserialize(deserializer)?;
        let result = Self::from_secret_hex(&text).map_err(serde::de::Error::custom);
        text.zeroize();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_public_matches_secret() {
        let keypair = LinkKeypair::generate(&mut rand_core::OsRng);
        let again = LinkKeypair::from_secret_hex(&keypair.secret_hex()).expect("valid hex");
        assert_eq!(again.public(), keypair.public());
        let public = LinkPublicKey::from_hex(&keypair.public().to_hex()).expect("valid hex");
        assert_eq!(public, keypair.public());
        assert_eq!(LinkPublicKey::from_hex("00"), Err(KeyDecodeError::BadHex));
        let json = serde_json::to_string(&keypair.public()).expect("serializes");
        let back: LinkPublicKey = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, keypair.public());
    }

    #[test]
    fn public_key_agrees_with_noise() {
        // The key we derive must be the one snow derives from the same secret, or pinning fails.
        let keypair = LinkKeypair::generate(&mut rand_core::OsRng);
        let params = crate::handshake::NOISE_PATTERN
            .parse()
            .expect("valid pattern");
        let mut initiator = snow::Builder::new(params)
            .local_private_key(keypair.secret_bytes())
            .expect("key")
            .remote_public_key(keypair.public().as_bytes())
            .expect("key")
            .build_initiator()
            .expect("builds");
        let params = crate::handshake::NOISE_PATTERN
            .parse()
            .expect("valid pattern");
        let mut responder = snow::Builder::new(params)
            .local_private_key(keypair.secret_bytes())
            .expect("key")
            .build_responder()
            .expect("builds");
        let mut message = [0u8; 256];
        let mut payload = [0u8; 256];
        let length = initiator.write_message(&[], &mut message).expect("writes");
        responder
            .read_message(&message[..length], &mut payload)
            .expect("responder decrypts with the derived key");
        assert_eq!(
            responder.get_remote_static(),
            Some(&keypair.public().as_bytes()[..])
        );
    }
}
