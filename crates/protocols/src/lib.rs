//! The SINTRA protocol stack (DESIGN.md §3) as deterministic, sans-IO state machines.
//!
//! Every protocol instance is plain data driven by two kinds of calls — an input from the
//! local user (`handle_input`, or a constructor that starts it) and a message from a peer
//! (`handle_message`) — each returning a [`Step`]: messages to send, outputs, and faults observed
//! against peers. No sockets, no clocks, no threads; randomness comes from the [`Party`]. The
//! runtime (`crates/node`) and the simulator (`crates/sim`) are thin drivers around these calls.
//!
//! Messages are one flat envelope ([`Message`]: instance id + body). Every signature, coin name
//! and label binds the instance id ([`InstanceId`]), so a message of one instance is worthless in
//! any other.
//!
//! | module | protocol | paper |
//! |---|---|---|
//! | [`rbc`] | reliable broadcast (Bracha, hashed echoes) | Bracha 1987; CKPS01 §2 |
//! | [`cbc`] | verifiable consistent broadcast (echo broadcast + threshold signature) | CKPS01 §2.3 |
//! | [`aba`] | binary validated agreement, plain and biased | CKS00; CKPS01 §3 |
//! | [`mvba`] | multi-valued validated agreement (external predicate) | CKPS01 §4 |
//! | [`abc`] | atomic broadcast: batches certified once, agreement on certificates | CKPS01 §5; Dumbo-NG |
//! | [`oabc`] | optimistic atomic broadcast: a leader sequences, recovery through [`abc`] | Kursawe–Shoup |
//! | [`scabc`] | secure causal atomic broadcast: threshold-decrypt after ordering | CKPS01 §6 |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aba;
pub mod abc;
pub mod cbc;
mod instance;
mod message;
pub mod mutation;
pub mod mvba;
pub mod oabc;
mod party;
pub mod rbc;
pub mod scabc;
mod step;

pub use instance::{INSTANCE_ID_BYTES_MAX, InstanceId};
pub use message::{Body, MESSAGE_BYTES_MAX, Message};
pub use party::{Party, VERIFIED_CACHE_ENTRIES_MAX, VerifiedCache};
pub use step::{Fault, FaultKind, Outgoing, Step, Target};
