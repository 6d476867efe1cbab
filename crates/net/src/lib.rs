//! Links between sintra servers: the only crate that touches sockets and tokio.
//!
//! Guarantees, between two honest servers whose processes keep running: every message given to
//! [`LinksHandle::send`] (or accepted by `try_send`/`broadcast`) is delivered to the peer's replica
//! exactly once and in sending order, whatever happens to the TCP connections in between; the sender
//! of every delivered message is authenticated by the static key pinned for it in the group
//! configuration (Noise IK), and the content is encrypted. Memory is bounded by [`LinkLimits`].
//! Nothing here depends on timing for correctness: timeouts only reclaim resources from silent peers.
//!
//! See `docs/net.md` for the handshake, the framing, sequence/ack/resend and what each failure does.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
pub mod handshake;
mod keys;
mod links;
mod wire;

#[cfg(test)]
mod tests;

pub use config::{LinkLimits, LinksConfig, PeerConfig};
pub use error::{LinkError, SendError, StartError};
pub use keys::{KeyDecodeError, LINK_KEY_BYTES, LinkKeypair, LinkPublicKey};
pub use links::{Incoming, LinkEvent, LinkMetrics, Links, LinksHandle, PeerMetrics};

/// The largest message a replica may send (8 MiB: a generous batch of requests).
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The largest frame accepted from the wire: a message plus its header, with room to spare.
pub const FRAME_BYTES_MAX: usize = MESSAGE_BYTES_MAX + 64;
/// Default bound on messages sent to one peer and not yet acknowledged.
pub const UNACKED_FRAMES_MAX: usize = 16 * 1024;
/// Default bound on bytes sent to one peer and not yet acknowledged.
pub const UNACKED_BYTES_MAX: usize = 64 * 1024 * 1024;
