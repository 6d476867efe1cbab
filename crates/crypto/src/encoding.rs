//! The stable binary encoding of every key, share, signature and ciphertext.
//!
//! Rules: big-endian integers; fixed-size fields without prefix; variable-size fields with a
//! `u32` length prefix checked against a stated maximum *before* anything is allocated.
//! Decoding is canonical: [`Decode::from_bytes`] rejects trailing bytes, wrong lengths, points
//! off the curve or outside the prime-order subgroup, the identity where it is not allowed, and
//! integers out of range — always with a [`DecodeError`], never a panic.
//!
//! The serde form of a type is its binary encoding as lowercase hex in human-readable formats
//! (TOML, JSON) and raw bytes otherwise (`impl_serde_via_encoding!`).

use thiserror::Error;

/// The largest variable-length field any decoder accepts (16 MiB).
pub const FIELD_BYTES_MAX: usize = 16 << 20;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("input ended early: {needed} more bytes needed")]
    Truncated {
        /// How many more bytes the decoder wanted.
        needed: usize,
    },
    /// Bytes were left after a complete value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// A length prefix above the stated maximum.
    #[error("{what}: length {len} exceeds the maximum {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field that is well-formed bytes but not a valid value.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A cursor over untrusted input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated {
                needed: len - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `u32`-length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max.min(FIELD_BYTES_MAX) {
            return Err(DecodeError::TooLong {
                what,
                len,
                max: max.min(FIELD_BYTES_MAX),
            });
        }
        self.take(len)
    }

    /// A `u32`-count-prefixed sequence of at most `max` items. The count is checked against
    /// both `max` and the bytes left (every item takes at least one byte) before allocating.
    pub fn vec<T: Decode>(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.u32()? as usize;
        if count > max {
            return Err(DecodeError::TooLong {
                what,
                len: count,
                max,
            });
        }
        if count > self.remaining() {
            return Err(DecodeError::Truncated {
                needed: count - self.remaining(),
            });
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::decode_from(self)?);
        }
        Ok(items)
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}

/// A value with a stable binary encoding.
pub trait Encode {
    /// Appends the encoding to `out`.
    fn encode_to(&self, out: &mut Vec<u8>);

    /// The encoding as a fresh vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }
}

/// A value that decodes canonically from untrusted bytes.
pub trait Decode: Sized {
    /// Reads one value from `reader`.
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes exactly one value; trailing bytes are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(value)
    }
}

/// Writes a `u32` length prefix and the bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Writes a `u32` count prefix and every item.
pub fn put_vec<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for item in items {
        item.encode_to(out);
    }
}

/// Implements `serde::Serialize` and `serde::Deserialize` for a type through its [`Encode`] and
/// [`Decode`] implementations: lowercase hex in human-readable formats, bytes otherwise.
#[macro_export]
macro_rules! impl_serde_via_encoding {
    ($($ty:ty),+ $(,)?) => {$(
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $crate::encoding::serialize_encoded(self, serializer)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::encoding::deserialize_encoded(deserializer)
            }
        }
    )+};
}

#[doc(hidden)]
pub fn serialize_encoded<T: Encode, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let bytes = value.to_bytes();
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex::encode(bytes))
    } else {
        serializer.serialize_bytes(&bytes)
    }
}

#[doc(hidden)]
pub fn deserialize_encoded<'de, T: Decode, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    use serde::de::Error;
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a hex string or bytes")
        }
        fn visit_str<E: Error>(self, text: &str) -> Result<Vec<u8>, E> {
            hex::decode(text).map_err(E::custom)
        }
        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(byte) = seq.next_element::<u8>()? {
                if out.len() >= FIELD_BYTES_MAX {
                    return Err(A::Error::custom("byte sequence too long"));
                }
                out.push(byte);
            }
            Ok(out)
        }
    }
    let bytes = if deserializer.is_human_readable() {
        deserializer.deserialize_str(Visitor)?
    } else {
        deserializer.deserialize_bytes(Visitor)?
    };
    T::from_bytes(&bytes).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_lengths_beyond_the_maximum_without_allocating() {
        let mut input = Vec::new();
        input.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut reader = Reader::new(&input);
        assert!(matches!(
            reader.bytes("field", 64),
            Err(DecodeError::TooLong { len, .. }) if len == u32::MAX as usize
        ));
        let mut reader = Reader::new(&input);
        assert!(matches!(
            reader.vec::<crate::ServerId>("ids", usize::MAX),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn finish_reports_trailing_bytes() {
        assert_eq!(
            crate::ServerId::from_bytes(&[0, 1, 9]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(crate::ServerId::from_bytes(&[0, 0]).is_err());
        assert!(crate::ServerId::from_bytes(&[4, 1]).is_err());
    }
}
