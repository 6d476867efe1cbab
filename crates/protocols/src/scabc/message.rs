//! The one message of secure causal atomic broadcast itself — a decryption share — and its
//! canonical encoding (docs/protocols/abc.md, "Encodings"). The ordering travels as atomic
//! broadcast's messages in `<id>/abc/...`.

use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader};
use sintra_crypto::tdh2::DecryptionShare;

/// A message of one decryption instance `<id>/d<position>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The sender's decryption share of the ciphertext ordered at the instance's position.
    Share {
        /// The share with its proof (TDH2, label [`super::request_label`]); boxed, as it is
        /// much larger than other protocols' message bodies.
        share: Box<DecryptionShare>,
        /// The sender dropped shares of this position or a later one as too early, so it may
        /// lack some: servers that already opened the position answer with their own share.
        wants_reply: bool,
    },
}

const TAG_SHARE: u8 = 0;

impl Encode for Message {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::Share { share, wants_reply } => {
                out.push(TAG_SHARE);
                out.push(u8::from(*wants_reply));
                share.encode_to(out);
            }
        }
    }
}

impl Decode for Message {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.u8()? {
            TAG_SHARE => {
                let wants_reply = match reader.u8()? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(DecodeError::Invalid {
                            what: "scabc share",
                            why: "reply flag not 0 or 1",
                        });
                    }
                };
                Ok(Message::Share {
                    share: Box::new(DecryptionShare::decode_from(reader)?),
                    wants_reply,
                })
            }
            _ => Err(DecodeError::Invalid {
                what: "scabc message",
                why: "unknown tag",
            }),
        }
    }
}
