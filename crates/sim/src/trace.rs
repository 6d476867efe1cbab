//! The trace hash: a SHA-256 over every event of a run in order (each start, delivery, output
//! and fault, with the bytes of every delivered message), so two runs are the same run exactly
//! when their hashes are equal.

use sha2::{Digest, Sha256};
use sintra_crypto::ServerId;
use sintra_protocols::Fault;

/// Accumulates the trace of a run.
#[derive(Default)]
pub struct Trace {
    hasher: Sha256,
}

impl Trace {
    fn event(&mut self, tag: u8, parts: &[&[u8]]) {
        self.hasher.update([tag]);
        for part in parts {
            self.hasher.update((part.len() as u64).to_be_bytes());
            self.hasher.update(part);
        }
    }

    /// A server received its input.
    pub fn start(&mut self, server: ServerId, instance: usize) {
        self.event(
            1,
            &[
                &server.get().to_be_bytes(),
                &(instance as u64).to_be_bytes(),
            ],
        );
    }

    /// A server's patience timer ran out.
    pub fn timer(&mut self, server: ServerId, instance: usize) {
        self.event(
            5,
            &[
                &server.get().to_be_bytes(),
                &(instance as u64).to_be_bytes(),
            ],
        );
    }

    /// A message was delivered.
    pub fn deliver(&mut self, seq: u64, from: ServerId, to: ServerId, digest: &[u8; 32]) {
        self.event(
            2,
            &[
                &seq.to_be_bytes(),
                &from.get().to_be_bytes(),
                &to.get().to_be_bytes(),
                digest,
            ],
        );
    }

    /// An honest server output a value.
    pub fn output(&mut self, server: ServerId, instance: usize, value: &[u8]) {
        self.event(
            3,
            &[
                &server.get().to_be_bytes(),
                &(instance as u64).to_be_bytes(),
                value,
            ],
        );
    }

    /// An honest server recorded a fault.
    pub fn fault(&mut self, recorder: ServerId, fault: &Fault) {
        self.event(
            4,
            &[
                &recorder.get().to_be_bytes(),
                &fault.server.get().to_be_bytes(),
                fault.instance.as_bytes(),
                format!("{:?}", fault.kind).as_bytes(),
            ],
        );
    }

    /// The hash of everything so far.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}
