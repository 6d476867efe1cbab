//! A deterministic Byzantine simulator for the sintra protocols (DESIGN.md §1, §3).
//!
//! A run puts `n` servers of one protocol on a simulated asynchronous network: every message
//! in flight sits in a pool, and a network adversary picks which one is delivered next. Up to
//! `t` servers are Byzantine: they run the honest protocol and distort what they send. Real
//! threshold cryptography runs throughout. When nothing is left in flight (or the delivery
//! budget is spent), one checker per property reads the record of the run.
//!
//! Everything is derived from a seed: the same seed gives the same run, byte for byte (the
//! trace hash covers every delivered message). A failing seed is replayed with one command.
//!
//! | module | what |
//! |---|---|
//! | [`protocol`] | the adapter contract a protocol implements to plug in |
//! | [`adapters`] | the adapters: rbc, cbc, aba, mvba, abc, scabc |
//! | [`scenario`] | adversary names, seed derivation |
//! | [`network`] | the pool of in-flight events and the network adversaries |
//! | [`byzantine`] | the Byzantine strategies |
//! | [`checkers`] | one checker per property |
//! | [`run`] | one run; [`batch`]: many seeds on a few threads |
//! | [`cli`] | `sintra sim` |
//! | [`bench`] | `sintra bench sim`: the CPU cost of atomic broadcast on a simulated group |
//!
//! The design, the adversaries and how to replay a seed: `docs/sim.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapters;
pub mod batch;
pub mod bench;
pub mod byzantine;
pub mod checkers;
pub mod cli;
pub mod keys;
pub mod metrics;
pub mod network;
pub mod protocol;
pub mod record;
pub mod run;
pub mod scenario;
mod trace;

pub use batch::{AdversaryChoice, SeedOutcome, run_seeds};
pub use protocol::{Class, Effects, Envelope, Output, Plan, Protocol, Spec, Termination};
pub use record::{RunRecord, Violation};
pub use run::{RunConfig, RunReport, run};
pub use scenario::{Adversary, NetworkKind, Strategy};
