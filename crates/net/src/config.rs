//! What a server needs to open its links: who it is, where it listens, its peers and their pinned keys.

use std::net::SocketAddr;
use std::time::Duration;

use sintra_crypto::ServerId;

use crate::{LinkKeypair, LinkPublicKey};

/// One peer of the group, as the dealer's group file describes it.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's id.
    pub id: ServerId,
    /// Where the peer listens.
    pub addr: SocketAddr,
    /// The peer's pinned static key.
    pub static_public_key: LinkPublicKey,
}

/// Every bound of the links layer. Memory per peer is at most
/// `(queue_frames_max + control_frames_max + unacked_frames_max)` messages and about
/// `unacked_bytes_max + MESSAGE_BYTES_MAX` bytes in the resend buffer.
#[derive(Debug, Clone)]
pub struct LinkLimits {
    /// Messages waiting per peer before `send` waits and `try_send`/`broadcast` report `Full`.
    pub queue_frames_max: usize,
    /// Messages waiting per peer in the control lane (sent before the queued bulk messages;
    /// see [`crate::LinksHandle::try_send_control`]).
    pub control_frames_max: usize,
    /// Messages sent but not yet acknowledged, per peer.
    pub unacked_frames_max: usize,
    /// Bytes of messages sent but not yet acknowledged, per peer (one message may overshoot it).
    pub unacked_bytes_max: usize,
    /// Largest frame accepted from the wire.
    pub frame_bytes_max: usize,
    /// Capacity of the channel of received messages to the replica.
    pub incoming_frames_max: usize,
    /// Connections being handshaken or served at once on the listening port.
    pub inbound_connections_max: usize,
    /// Time for the TCP connect.
    pub connect_timeout: Duration,
    /// Time for the handshake and the first frame (against peers that open and stay silent).
    pub handshake_timeout: Duration,
    /// First reconnect delay; doubles after each failure up to `reconnect_delay_max`.
    pub reconnect_delay_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_delay_max: Duration,
}

impl Default for LinkLimits {
    fn default() -> Self {
        Self {
            queue_frames_max: 1024,
            control_frames_max: 256,
            unacked_frames_max: crate::UNACKED_FRAMES_MAX,
            unacked_bytes_max: crate::UNACKED_BYTES_MAX,
            frame_bytes_max: crate::FRAME_BYTES_MAX,
            incoming_frames_max: 4096,
            inbound_connections_max: 256,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            reconnect_delay_min: Duration::from_millis(50),
            reconnect_delay_max: Duration::from_secs(5),
        }
    }
}

/// Configuration of [`crate::Links::start`].
#[derive(Debug, Clone)]
pub struct LinksConfig {
    /// This server.
    pub me: ServerId,
    /// Where to listen (port 0 picks a free port; see [`crate::LinksHandle::local_addr`]).
    pub listen_addr: SocketAddr,
    /// The other servers. An entry for `me` is ignored, so the whole group list may be passed.
    pub peers: Vec<PeerConfig>,
    /// This server's static key pair.
    pub keypair: LinkKeypair,
    /// Bounds.
    pub limits: LinkLimits,
}
