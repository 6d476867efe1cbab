//! Errors: local misuse (`SendError`, `StartError`) apart from what a connection suffered
//! (`LinkError`, which is logged and retried, never surfaced as a failure of the node).

use sintra_crypto::ServerId;

/// Why a connection ended or a handshake was refused. Connections recover by themselves; these are
/// reported in logs and [`crate::LinkEvent`]s.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The Noise handshake or a record's decryption failed (garbage, wrong key, tampering).
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// The peer proved a static key that is not the one pinned for the id it claims.
    #[error("{claimed} presented a static key that is not its pinned key")]
    WrongKey {
        /// The id the peer claimed.
        claimed: ServerId,
    },
    /// The peer claimed an id that is not in the group (or is ours).
    #[error("peer claimed id {0}, which is not a peer of this server")]
    UnknownPeer(u16),
    /// The peer's handshake was meant for another server.
    #[error("handshake addressed to id {0}, not to this server")]
    Misdirected(u16),
    /// A handshake message longer than allowed.
    #[error("handshake message of {bytes} bytes exceeds {max}")]
    HandshakeTooLarge {
        /// Announced size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A frame header announced more than `frame_bytes_max`; nothing was allocated for it.
    #[error("frame of {bytes} bytes exceeds {max}")]
    FrameTooLarge {
        /// Announced size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A well-encrypted frame that breaks the link protocol (bad kind, gap, ack of unsent data).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The handshake or the first frame did not arrive in time.
    #[error("timed out")]
    Timeout,
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A newer connection from the same peer replaced this one, or [`crate::LinksHandle::disconnect`] was called.
    #[error("connection replaced or dropped on request")]
    Superseded,
}

/// Why a message was not queued. These are local conditions the caller must handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Not a peer of this server.
    #[error("{0} is not a peer")]
    UnknownPeer(ServerId),
    /// Links carry messages between distinct servers; a node delivers its own messages locally.
    #[error("cannot send to ourselves")]
    ToSelf,
    /// The message exceeds [`crate::MESSAGE_BYTES_MAX`].
    #[error("message of {bytes} bytes exceeds {max}")]
    TooLarge {
        /// Message size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The peer's outgoing queue is full (only from [`crate::LinksHandle::try_send`] and broadcast).
    #[error("outgoing queue to {0} is full")]
    Full(ServerId),
    /// The links were shut down.
    #[error("links are shut down")]
    Shutdown,
}

/// Why [`crate::Links::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening socket could not be bound.
    #[error("cannot listen: {0}")]
    Bind(std::io::Error),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}
