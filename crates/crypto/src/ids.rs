//! Server identities: the share index of every key share.

use serde::{Deserialize, Serialize};

use crate::encoding::{Decode, DecodeError, Encode, Reader};

/// The largest group the dealer and the schemes accept (`n <= 1024`).
pub const SERVERS_MAX: u16 = 1024;

/// A server of the group, numbered from 1 (the evaluation point of its Shamir share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct ServerId(u16);

impl ServerId {
    /// A server id in `1..=SERVERS_MAX`; `None` otherwise.
    pub fn new(index: u16) -> Option<Self> {
        (1..=SERVERS_MAX).contains(&index).then_some(Self(index))
    }

    /// The 1-based index.
    pub fn get(self) -> u16 {
        self.0
    }

    /// All servers of a group of `n`: `1..=n`.
    pub fn all(n: u16) -> impl Iterator<Item = ServerId> {
        (1..=n.min(SERVERS_MAX)).map(ServerId)
    }

    /// Position in a 0-based array of per-server values.
    pub fn slot(self) -> usize {
        usize::from(self.0) - 1
    }

    /// Whether this server belongs to a group of `n` servers.
    pub fn is_member_of(self, n: u16) -> bool {
        self.0 <= n
    }
}

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server {}", self.0)
    }
}

impl TryFrom<u16> for ServerId {
    type Error = String;
    fn try_from(value: u16) -> Result<Self, Self::Error> {
        ServerId::new(value)
            .ok_or_else(|| format!("server id {value} is outside 1..={SERVERS_MAX}"))
    }
}

impl From<ServerId> for u16 {
    fn from(id: ServerId) -> u16 {
        id.0
    }
}

impl Encode for ServerId {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}

impl Decode for ServerId {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let index = reader.u16()?;
        ServerId::new(index).ok_or(DecodeError::Invalid {
            what: "server id",
            why: "outside 1..=1024",
        })
    }
}
