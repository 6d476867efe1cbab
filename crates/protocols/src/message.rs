//! The one message type on the wire: a flat envelope `{instance id, body}`. Parents route a
//! message to the child instance named by its id; nothing wraps another protocol's message.

use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader};

use crate::InstanceId;

/// The largest encoded message a server accepts (a batch plus its envelope).
pub const MESSAGE_BYTES_MAX: usize = 8 << 20;

/// A protocol message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The instance it belongs to.
    pub instance: InstanceId,
    /// What it says.
    pub body: Body,
}

/// The bodies of every protocol, one variant per protocol.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "bodies carry unboxed curve points (an aba coin share is ~600 bytes); checking a \
              message costs far more than moving it"
)]
pub enum Body {
    /// Reliable broadcast.
    Rbc(crate::rbc::Message),
    /// Verifiable consistent broadcast.
    Cbc(crate::cbc::Message),
    /// Binary agreement.
    Aba(crate::aba::Message),
    /// Multi-valued agreement.
    Mvba(crate::mvba::Message),
    /// Atomic broadcast (its own messages; its children's travel as theirs).
    Abc(crate::abc::Message),
    /// Secure causal atomic broadcast (decryption shares).
    Scabc(crate::scabc::Message),
    /// Optimistic atomic broadcast (its own messages; its recovery's travel as theirs).
    Oabc(crate::oabc::Message),
}

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.instance.encode_to(out);
        match &self.body {
            Body::Rbc(body) => {
                out.push(1);
                body.encode_to(out);
            }
            Body::Cbc(body) => {
                out.push(2);
                body.encode_to(out);
            }
            Body::Aba(body) => {
                out.push(3);
                body.encode_to(out);
            }
            Body::Mvba(body) => {
                out.push(4);
                body.encode_to(out);
            }
            Body::Abc(body) => {
                out.push(5);
                body.encode_to(out);
            }
            Body::Scabc(body) => {
                out.push(6);
                body.encode_to(out);
            }
            Body::Oabc(body) => {
                out.push(7);
                body.encode_to(out);
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if reader.remaining() > MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "message",
                len: reader.remaining(),
                max: MESSAGE_BYTES_MAX,
            });
        }
        let instance = InstanceId::decode_from(reader)?;
        let body = match reader.u8()? {
            1 => Body::Rbc(Decode::decode_from(reader)?),
            2 => Body::Cbc(Decode::decode_from(reader)?),
            3 => Body::Aba(Decode::decode_from(reader)?),
            4 => Body::Mvba(Decode::decode_from(reader)?),
            5 => Body::Abc(Decode::decode_from(reader)?),
            6 => Body::Scabc(Decode::decode_from(reader)?),
            7 => Body::Oabc(Decode::decode_from(reader)?),
            _ => {
                return Err(DecodeError::Invalid {
                    what: "message",
                    why: "unknown protocol tag",
                });
            }
        };
        Ok(Self { instance, body })
    }
}
