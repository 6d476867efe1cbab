//! Protocol instance ids: hierarchical names such as `abc/r7/mvba/c3/aba`, bound into every
//! signature, coin name and ciphertext label, and used to route messages to their instance.

use std::fmt;
use std::sync::Arc;

use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader};

/// The longest instance id accepted (bytes), so a peer cannot make us hash or store huge names.
pub const INSTANCE_ID_BYTES_MAX: usize = 256;

/// A protocol instance id: `/`-separated labels of printable ASCII. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// A root instance (e.g. `"abc"`). `None` if the label is not a valid label.
    pub fn root(label: &str) -> Option<Self> {
        valid_label(label).then(|| Self(Arc::from(label)))
    }

    /// The child `self/label`. `None` if the label is invalid or the id would be too long.
    pub fn child(&self, label: &str) -> Option<Self> {
        if !valid_label(label) || self.0.len() + 1 + label.len() > INSTANCE_ID_BYTES_MAX {
            return None;
        }
        Some(Self(Arc::from(format!("{}/{label}", self.0))))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as the bytes bound into signatures ([`sintra_crypto::Context::instance`]).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether `self` is `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &InstanceId) -> bool {
        self.0.len() >= ancestor.0.len()
            && self.0.starts_with(&*ancestor.0)
            && (self.0.len() == ancestor.0.len() || self.0.as_bytes()[ancestor.0.len()] == b'/')
    }

    /// The label right below `ancestor` on the path to `self` (`abc/r7/mvba` below `abc` is
    /// `r7`), used by parents to route a message to the child instance it belongs to.
    pub fn label_below(&self, ancestor: &InstanceId) -> Option<&str> {
        if !self.is_within(ancestor) || self.0.len() == ancestor.0.len() {
            return None;
        }
        self.0[ancestor.0.len() + 1..].split('/').next()
    }
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= INSTANCE_ID_BYTES_MAX
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Encode for InstanceId {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u16).to_be_bytes());
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl Decode for InstanceId {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = usize::from(reader.u16()?);
        if len > INSTANCE_ID_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "instance id",
                len,
                max: INSTANCE_ID_BYTES_MAX,
            });
        }
        let invalid = DecodeError::Invalid {
            what: "instance id",
            why: "not /-separated labels of [A-Za-z0-9._-]",
        };
        let text = std::str::from_utf8(reader.take(len)?).map_err(|_| invalid.clone())?;
        if !text.split('/').all(valid_label) {
            return Err(invalid);
        }
        Ok(Self(Arc::from(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_route_by_label() {
        let abc = InstanceId::root("abc").unwrap();
        let mvba = abc.child("r7").unwrap().child("mvba").unwrap();
        assert_eq!(mvba.as_str(), "abc/r7/mvba");
        assert!(mvba.is_within(&abc));
        assert_eq!(mvba.label_below(&abc), Some("r7"));
        assert!(!InstanceId::root("abcd").unwrap().is_within(&abc));
        assert_eq!(abc.label_below(&abc), None);
        assert!(abc.child("a/b").is_none());
        assert!(abc.child("").is_none());
    }

    #[test]
    fn decoding_rejects_malformed_ids() {
        let id = InstanceId::root("abc").unwrap().child("r1").unwrap();
        assert_eq!(InstanceId::from_bytes(&id.to_bytes()).unwrap(), id);
        for bad in [
            &b"\x00\x03a//"[..],
            b"\x00\x01/",
            b"\x00\x00",
            b"\x00\x02a\xff",
            b"\x01\x01",
        ] {
            assert!(InstanceId::from_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
