//! `targeted`: every message sent by some chosen honest servers (the victims, 1 to `t` of them)
//! is delayed as long as possible — delivered only when nothing else is in flight. The other
//! servers proceed without the victims as far as the protocol lets them; a protocol that needs
//! a victim's message gets it, late.

use std::collections::BTreeSet;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;

use super::{Event, InFlight, random_among};

/// The `targeted` adversary's state.
#[derive(Debug)]
pub struct Targeted {
    victims: BTreeSet<ServerId>,
}

impl Targeted {
    /// Picks 1 to `max(t, 1)` victims among the honest servers.
    pub fn new(faults: u16, honest: &[ServerId], rng: &mut ChaCha20Rng) -> Self {
        let count = rng
            .gen_range(1..=usize::from(faults.max(1)))
            .min(honest.len());
        let victims = honest.choose_multiple(rng, count).copied().collect();
        Self { victims }
    }

    pub(super) fn pick<M>(&mut self, pool: &[InFlight<M>], rng: &mut ChaCha20Rng) -> usize {
        random_among(pool, rng, |e| {
            matches!(e.event, Event::Start { .. } | Event::Timer { .. })
                || !self.victims.contains(&e.from)
        })
        .unwrap_or_else(|| rng.gen_range(0..pool.len()))
    }

    pub(super) fn describe(&self) -> String {
        let victims: Vec<String> = self.victims.iter().map(|v| v.get().to_string()).collect();
        format!("victims [{}]", victims.join(", "))
    }
}
