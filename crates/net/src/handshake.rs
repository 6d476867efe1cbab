//! The Noise IK handshake that opens every connection.
//!
//! The dialing server (initiator) knows the listener's pinned static key, so IK takes one round
//! trip: message 1 carries the initiator's static key (encrypted) and the payload
//! `[version u8][from u16][to u16]`; message 2 completes mutual authentication. The listener
//! (responder) accepts only if `to` is its own id and the proved static key is exactly the key
//! pinned for `from`. A listener with the wrong key cannot decrypt message 1, and an impostor
//! listener cannot produce message 2, so the initiator's check is the handshake itself.
//! Handshake messages travel as `[u16 length][message]`, at most `HANDSHAKE_MESSAGE_BYTES_MAX`.

use std::collections::HashMap;

use sintra_crypto::ServerId;
use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{LinkError, LinkKeypair, LinkPublicKey};

/// The Noise protocol name.
pub const NOISE_PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: a peer speaking another version fails the handshake.
const PROLOGUE: &[u8] = b"sintra-net link v1";
const VERSION: u8 = 1;
const PAYLOAD_BYTES: usize = 5;
/// Our handshake messages are about 100 bytes; anything much larger is not a sintra peer.
pub const HANDSHAKE_MESSAGE_BYTES_MAX: usize = 1024;

fn builder(keypair: &LinkKeypair) -> Result<snow::Builder<'_>, LinkError> {
    let params = NOISE_PATTERN.parse()?;
    Ok(snow::Builder::new(params)
        .prologue(PROLOGUE)?
        .local_private_key(keypair.secret_bytes())?)
}

async fn write_message<S: AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
) -> Result<(), LinkError> {
    let length =
        u16::try_from(message.len()).map_err(|_| LinkError::Protocol("handshake overflow"))?;
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(message);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, LinkError> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    let length = usize::from(u16::from_be_bytes(length));
    if length > HANDSHAKE_MESSAGE_BYTES_MAX {
        return Err(LinkError::HandshakeTooLarge {
            bytes: length,
            max: HANDSHAKE_MESSAGE_BYTES_MAX,
        });
    }
    let mut message = vec![0u8; length];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Runs the initiator side against `peer`, whose static key must be `peer_key`.
pub(crate) async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: ServerId,
    keypair: &LinkKeypair,
    peer: ServerId,
    peer_key: &LinkPublicKey,
) -> Result<StatelessTransportState, LinkError> {
    let mut state = builder(keypair)?
        .remote_public_key(peer_key.as_bytes())?
        .build_initiator()?;
    let mut payload = [0u8; PAYLOAD_BYTES];
    payload[0] = VERSION;
    payload[1..3].copy_from_slice(&me.get().to_be_bytes());
    payload[3..5].copy_from_slice(&peer.get().to_be_bytes());
    let mut buffer = vec![0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
    let length = state.write_message(&payload, &mut buffer)?;
    write_message(stream, &buffer[..length]).await?;
    let reply = read_message(stream).await?;
    state.read_message(&reply, &mut buffer)?;
    Ok(state.into_stateless_transport_mode()?)
}

/// What the responder learned about a peer whose handshake it refused.
pub(crate) struct Refusal {
    /// The id the peer claimed, once message 1 decrypted.
    pub(crate) claimed: Option<ServerId>,
    pub(crate) error: LinkError,
}

impl From<LinkError> for Refusal {
    fn from(error: LinkError) -> Self {
        Refusal {
            claimed: None,
            error,
        }
    }
}

impl From<snow::Error> for Refusal {
    fn from(error: snow::Error) -> Self {
        LinkError::from(error).into()
    }
}

/// Runs the responder side; returns the authenticated peer.
pub(crate) async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: ServerId,
    keypair: &LinkKeypair,
    pinned: &HashMap<ServerId, LinkPublicKey>,
) -> Result<(ServerId, StatelessTransportState), Refusal> {
    let mut state = builder(keypair)?.build_responder()?;
    let first = read_message(stream).await?;
    let mut payload = vec![0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
    let length = state.read_message(&first, &mut payload)?;
    if length != PAYLOAD_BYTES || payload[0] != VERSION {
        return Err(LinkError::Protocol("unexpected handshake payload").into());
    }
    let from = u16::from_be_bytes([payload[1], payload[2]]);
    let to = u16::from_be_bytes([payload[3], payload[4]]);
    let claimed = ServerId::new(from)
        .filter(|id| pinned.contains_key(id))
        .ok_or(LinkError::UnknownPeer(from))?;
    if to != me.get() {
        return Err(Refusal {
            claimed: Some(claimed),
            error: LinkError::Misdirected(to),
        });
    }
    let proved = state.get_remote_static();
    let expected = pinned.get(&claimed).map(|key| &key.as_bytes()[..]);
    if proved.is_none() || proved != expected {
        return Err(Refusal {
            claimed: Some(claimed),
            error: LinkError::WrongKey { claimed },
        });
    }
    let mut buffer = vec![0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
    let length = state.write_message(&[], &mut buffer)?;
    write_message(stream, &buffer[..length]).await?;
    Ok((claimed, state.into_stateless_transport_mode()?))
}
