//! Deterministic services and the answers clients verify (docs/node.md §Requests, answers and
//! their signatures).
//!
//! A [`Service`] is a deterministic state machine: every server executes the same ordered
//! requests with the same [`ExecutionContext`] and must reach the same state and the same
//! answers, so a service never reads clocks, randomness or anything outside its arguments, and a
//! request it cannot parse gets a deterministic error answer rather than a panic. The services
//! are the key-value store of [`kv`], the RFC 3161 time-stamping authority of [`notary`], the
//! certification authority of [`ca`] (with the X.509 building blocks of [`x509`] it shares with
//! the dealer) and the owner-signed directory of [`directory`]; [`router`] runs them side by side.
//! The module [`answers`] turns the answers of one
//! atomic-broadcast round into a Merkle tree whose root the servers sign with the threshold RSA
//! service key, and lets a client check its [`answers::SignedAnswer`] with that key alone.
#![forbid(unsafe_code)]

pub mod answers;
pub mod ca;
pub mod directory;
pub mod kv;
pub mod notary;
pub mod router;
pub mod x509;

/// Where in the total order a request is executed. Identical at every server for a given
/// request, so a service may use it (e.g. to stamp entries) without diverging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecutionContext {
    /// The request's position in the ordered log (0-based).
    pub position: u64,
    /// The atomic-broadcast round that delivered it.
    pub round: u64,
    /// The round's agreed time, milliseconds since the Unix epoch: the median of the times
    /// the servers proposed with the batches the round delivered (so at most `t` faulty servers
    /// cannot move it outside the honest servers' clocks), `0` when no batch carried a time.
    /// It is not monotone by itself: a service that needs time never to go backwards keeps the
    /// largest time it used in its state and takes the maximum.
    pub time_ms: u64,
}

/// Why a service refused to restore a snapshot. Local misuse or a corrupt snapshot; the
/// service's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The snapshot is not a canonical snapshot of this service within its bounds.
    #[error("invalid {service} snapshot: {why}")]
    InvalidSnapshot {
        /// The service's [`Service::name`].
        service: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// A deterministic replicated service.
///
/// Every call must depend only on the service's state and the arguments: two services in the
/// same state given the same calls return the same answers and reach the same state.
pub trait Service: Send + Sync {
    /// A short stable name (`"kv"`), for logs and errors.
    fn name(&self) -> &'static str;

    /// Executes one ordered request and returns its answer. Never panics on any `request`; a
    /// request the service cannot parse or serve gets a deterministic error answer.
    fn execute(&mut self, context: &ExecutionContext, request: &[u8]) -> Vec<u8>;

    /// The whole state in a canonical encoding: equal states give equal bytes, so its SHA-256 is
    /// the state digest servers certify at checkpoints.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state by a snapshot's. On error the state is unchanged.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ServiceError>;

    /// The message the service key must sign (RSASSA-PKCS1-v1_5 with SHA-256, threshold RSA)
    /// before the `answer` to `request` can be handed out, or `None` when the answer is complete
    /// as it is (the Merkle-batch signature of [`answers`] covers every answer in any case). A
    /// pure function of its arguments: every server derives the same message, so their
    /// signature shares combine. Used by services whose output stock tools verify: a
    /// time-stamp token's signed attributes, a certificate's `TBSCertificate`, a CRL, a
    /// directory statement.
    fn signing_message(&self, request: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
        let _ = (request, answer);
        None
    }

    /// The answer handed to the client once `signature` (the service key's signature over
    /// [`Service::signing_message`], already verified by the caller) exists: e.g. the DER
    /// time-stamp response or the PEM certificate. A pure function of its arguments.
    fn complete(&self, request: &[u8], answer: &[u8], signature: &[u8]) -> Vec<u8> {
        let _ = (request, signature);
        answer.to_vec()
    }

    /// A Merkle tree over the state from which one server proves lookups without ordering,
    /// taken by the node right after executing a checkpoint round and signed once by the
    /// service key (only the directory has one: [`directory::StateTree`], its local lookups).
    /// `None`: the service serves no such lookups. A pure function of the state.
    fn state_tree(&self) -> Option<std::sync::Arc<directory::StateTree>> {
        None
    }
}

/// How a gateway hands a completed answer to an HTTP client: the services that speak a stock
/// protocol (RFC 3161, X.509, the directory's JSON) decide their status codes and media types
/// themselves, so the node's gateway stays one generic route per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// HTTP status code (200, or a 4xx with the reason in `body` when the service refused).
    pub status: u16,
    /// The `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

/// The length of the nonce every service request carries right after its one-byte tag. The
/// gateway draws it at random: atomic broadcast delivers a given request once (by digest), so
/// two clients sending the same query must still make two different requests.
pub const REQUEST_NONCE_BYTES: usize = 16;
