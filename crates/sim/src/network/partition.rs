//! `partition`: the honest servers are split into two non-empty groups; messages between honest
//! servers of different groups are held until the heal step, then delivered like any other.
//! Byzantine servers talk to both sides (the strongest position for them). The heal step comes
//! at a random delivery count, or earlier when only held messages are left: the network is
//! asynchronous, never lossy.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;

use super::{InFlight, PickContext, random_among};
use crate::protocol::Protocol;

/// The `partition` adversary's state.
#[derive(Debug)]
pub struct Partition {
    /// `true`: first group; `false`: second. Byzantine servers are absent.
    side: BTreeMap<ServerId, bool>,
    /// Heal after this many deliveries at the latest.
    heal_at: u64,
    /// When it healed, if it did.
    healed_at: Option<u64>,
}

impl Partition {
    /// Splits `honest` (at least two servers) at random; picks the latest heal step.
    pub fn new(servers: u16, honest: &[ServerId], rng: &mut ChaCha20Rng) -> Self {
        let mut shuffled = honest.to_vec();
        shuffled.shuffle(rng);
        let cut = if shuffled.len() >= 2 {
            rng.gen_range(1..shuffled.len())
        } else {
            shuffled.len()
        };
        let side = shuffled
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, i < cut))
            .collect();
        let n = u64::from(servers);
        Self {
            side,
            heal_at: rng.gen_range(n * n..=40 * n * n),
            healed_at: None,
        }
    }

    fn held<M>(&self, event: &InFlight<M>) -> bool {
        match (self.side.get(&event.from), self.side.get(&event.to)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }

    pub(super) fn pick<P: Protocol>(
        &mut self,
        pool: &[InFlight<P::Message>],
        cx: &mut PickContext<'_, P>,
    ) -> usize {
        if self.healed_at.is_none() {
            if cx.delivered < self.heal_at
                && let Some(index) = random_among(pool, cx.rng, |e| !self.held(e))
            {
                return index;
            }
            self.healed_at = Some(cx.delivered);
        }
        cx.rng.gen_range(0..pool.len())
    }

    pub(super) fn describe(&self) -> String {
        let group = |flag: bool| -> String {
            let members: Vec<String> = self
                .side
                .iter()
                .filter(|(_, side)| **side == flag)
                .map(|(s, _)| s.get().to_string())
                .collect();
            members.join(", ")
        };
        let healed = match self.healed_at {
            Some(at) => format!("healed at delivery {at}"),
            None => "never needed to heal".to_string(),
        };
        format!("groups [{}] | [{}], {healed}", group(true), group(false))
    }
}
