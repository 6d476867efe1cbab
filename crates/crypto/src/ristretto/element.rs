//! Canonical encodings of ristretto255 elements and scalars.
//!
//! A ristretto255 element has exactly one 32-byte encoding; `decompress` rejects every other
//! 32-byte string, so two elements are equal exactly when their encodings are. Scalars are
//! accepted only in their canonical form (`< q`), so no value has two encodings either.

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::traits::IsIdentity;

use crate::encoding::{DecodeError, Encode, Reader};

/// A group element kept in both forms: the point for arithmetic and its canonical encoding for
/// hashing, comparing and sending. Keeping both saves a compression (an inverse square root)
/// every time an element is hashed into a challenge.
#[derive(Clone, Copy)]
pub(crate) struct Element {
    point: RistrettoPoint,
    encoding: CompressedRistretto,
}

impl Element {
    /// The element of `point`.
    pub(crate) fn new(point: RistrettoPoint) -> Self {
        Self {
            point,
            encoding: point.compress(),
        }
    }

    /// The point, for arithmetic.
    pub(crate) fn point(&self) -> &RistrettoPoint {
        &self.point
    }

    /// The canonical 32-byte encoding.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        self.encoding.as_bytes()
    }

    /// Whether this is the neutral element.
    pub(crate) fn is_identity(&self) -> bool {
        self.point.is_identity()
    }

    /// Reads a canonical encoding; the identity is accepted (proof commitments may be anything).
    pub(crate) fn decode(reader: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let encoding = CompressedRistretto(reader.array()?);
        let point = encoding.decompress().ok_or(DecodeError::Invalid {
            what,
            why: "not the canonical encoding of a ristretto255 element",
        })?;
        Ok(Self { point, encoding })
    }

    /// Reads a canonical encoding of an element other than the identity: public keys, shares
    /// and ciphertext components, which are the identity only for a zero secret.
    pub(crate) fn decode_non_identity(
        reader: &mut Reader<'_>,
        what: &'static str,
    ) -> Result<Self, DecodeError> {
        let element = Self::decode(reader, what)?;
        if element.is_identity() {
            return Err(DecodeError::Invalid {
                what,
                why: "the identity element is not allowed here",
            });
        }
        Ok(element)
    }
}

impl PartialEq for Element {
    fn eq(&self, other: &Self) -> bool {
        // Encodings are canonical, so equal bytes is equal points.
        self.encoding == other.encoding
    }
}

impl Eq for Element {}

impl std::fmt::Debug for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(self.as_bytes()))
    }
}

impl Encode for Element {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

/// Appends the canonical 32-byte encoding of a scalar.
pub(crate) fn encode_scalar(scalar: &Scalar, out: &mut Vec<u8>) {
    out.extend_from_slice(scalar.as_bytes());
}

/// Reads a scalar in canonical form (little-endian, below the group order).
pub(crate) fn decode_scalar(
    reader: &mut Reader<'_>,
    what: &'static str,
) -> Result<Scalar, DecodeError> {
    Option::from(Scalar::from_canonical_bytes(reader.array()?)).ok_or(DecodeError::Invalid {
        what,
        why: "not a canonical scalar (at least the group order)",
    })
}
