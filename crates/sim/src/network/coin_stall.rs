//! `coin-stall`: a network adversary after MacBrough's attack on asynchronous binary agreement
//! (an adversary that learns a round's coin while votes of the round are still in flight can
//! keep the honest servers split).
//!
//! It reads every coin share in flight. It controls the Byzantine servers, so it adds their
//! shares itself; as soon as it holds `t + 1` valid shares of a round's coin it knows the coin
//! `c` — typically when the first honest server released its share, long before most honest
//! servers have it. From then on it delivers first the round's main-votes for `!c` and the
//! next round's pre-votes for `!c`, holds those for `c` and every coin share, and otherwise
//! picks at random. In CKS00 a server that saw a non-abstaining main-vote pre-votes its value
//! next round, one that saw only abstentions pre-votes the coin: rushing `!c` and holding `c`
//! is how the adversary tries to split them round after round. The protocol is safe if that
//! never works for long (the coin is unpredictable until an honest server has main-voted).
//!
//! No message is held forever: one older than [`HOLD_DELIVERIES_PER_SERVER_SQUARED`]` · n²`
//! deliveries goes first.
//!
//! The coin's name (purpose and bytes) is not part of the adapter contract; the adapter offers
//! candidates ([`Protocol::coin_names`]) and the adversary keeps the first under which an
//! observed share verifies. If none does, it degrades to random order and says so.

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha20Rng;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::{Context, ServerId};
use sintra_protocols::InstanceId;

use super::{InFlight, PickContext};
use crate::protocol::{Envelope, Protocol, VotePhase, coin_value};

/// How long (in deliveries, times `n²`) the adversary may hold a message.
pub const HOLD_DELIVERIES_PER_SERVER_SQUARED: u64 = 8;

/// The `coin-stall` adversary's state.
#[derive(Debug)]
pub struct CoinStall {
    hold_max: u64,
    /// Index into the adapter's coin-name candidates, once one verified.
    naming: Option<usize>,
    /// Whether a share was seen but no candidate name verified it.
    naming_failed: bool,
    /// Shares collected per coin, by server.
    shares: BTreeMap<(InstanceId, u32), BTreeMap<ServerId, CoinShare>>,
    /// Coins known to the adversary.
    coins: BTreeMap<(InstanceId, u32), bool>,
    /// Events already read (pool sequence numbers below this).
    scanned_below: u64,
    /// Coins whose Byzantine shares were added.
    byzantine_added: BTreeSet<(InstanceId, u32)>,
    /// How many deliveries the adversary rushed or held.
    steered: u64,
}

impl CoinStall {
    /// A fresh adversary for a group of `servers`.
    pub fn new(servers: u16) -> Self {
        let n = u64::from(servers);
        Self {
            hold_max: HOLD_DELIVERIES_PER_SERVER_SQUARED * n * n,
            naming: None,
            naming_failed: false,
            shares: BTreeMap::new(),
            coins: BTreeMap::new(),
            scanned_below: 0,
            byzantine_added: BTreeSet::new(),
            steered: 0,
        }
    }

    /// Reads the coin shares of events queued since the last call.
    fn scan<P: Protocol>(&mut self, pool: &[InFlight<P::Message>], cx: &mut PickContext<'_, P>) {
        let scanned_below = self.scanned_below;
        let mut highest = scanned_below;
        for event in pool.iter().filter(|e| e.seq >= scanned_below) {
            highest = highest.max(event.seq + 1);
            let Some(message) = event.message() else {
                continue;
            };
            let Some((round, share)) = cx.adapter.coin_share(message) else {
                continue;
            };
            let instance = message.instance().clone();
            let key = (instance.clone(), round);
            if self.coins.contains_key(&key) {
                continue;
            }
            let Some((purpose, name)) = self.name(cx.adapter, &instance, round, share, cx) else {
                continue;
            };
            let context = Context::new(purpose, &name);
            if cx.coin_keys.verify_share(&context, share).is_err() {
                continue;
            }
            let collected = self.shares.entry(key.clone()).or_default();
            collected.insert(share.id(), share.clone());
            if self.byzantine_added.insert(key.clone()) {
                for keys in cx.byzantine_keys {
                    collected.insert(keys.id, keys.coin.share(&context, cx.rng));
                }
            }
            if collected.len() >= cx.coin_keys.threshold() {
                let shares: Vec<CoinShare> = collected.values().cloned().collect();
                if let Some(bit) = coin_value(cx.coin_keys, purpose, &name, &shares) {
                    self.coins.insert(key.clone(), bit);
                    self.shares.remove(&key);
                }
            }
        }
        self.scanned_below = highest;
    }

    /// The coin's name, learning the naming scheme from the first share seen.
    fn name<P: Protocol>(
        &mut self,
        adapter: &P,
        instance: &InstanceId,
        round: u32,
        share: &CoinShare,
        cx: &PickContext<'_, P>,
    ) -> Option<(&'static str, Vec<u8>)> {
        let candidates = adapter.coin_names(instance, round);
        if let Some(index) = self.naming {
            return candidates.into_iter().nth(index);
        }
        if self.naming_failed {
            return None;
        }
        let found = candidates.iter().position(|(purpose, name)| {
            cx.coin_keys
                .verify_share(&Context::new(purpose, name), share)
                .is_ok()
        });
        match found {
            Some(index) => {
                self.naming = Some(index);
                candidates.into_iter().nth(index)
            }
            None => {
                self.naming_failed = true;
                None
            }
        }
    }

    /// Lower is delivered sooner: 0 rushed, 1 neutral, 2 held.
    fn score<P: Protocol>(&self, event: &InFlight<P::Message>, delivered: u64) -> u8 {
        if delivered.saturating_sub(event.sent_at) > self.hold_max {
            return 0;
        }
        let Some(message) = event.message() else {
            return 1;
        };
        let class = event.class();
        if class.coin_round.is_some() {
            return 2;
        }
        let Some(vote) = class.vote else {
            return 1;
        };
        // The coin that decides what this vote pushes towards: a main-vote of round r feeds
        // the pre-votes of r + 1, which fall back on coin(r); a pre-vote of r + 1 is judged
        // against coin(r) too.
        let coin_round = match vote.phase {
            VotePhase::Main => vote.round,
            VotePhase::Pre => vote.round.saturating_sub(1),
        };
        let Some(coin) = self.coins.get(&(message.instance().clone(), coin_round)) else {
            return 1;
        };
        match vote.value {
            Some(value) if value != *coin => 0,
            Some(_) => 2,
            None => 1,
        }
    }

    pub(super) fn pick<P: Protocol>(
        &mut self,
        pool: &[InFlight<P::Message>],
        cx: &mut PickContext<'_, P>,
    ) -> usize {
        self.scan(pool, cx);
        let scores: Vec<u8> = pool
            .iter()
            .map(|e| self.score::<P>(e, cx.delivered))
            .collect();
        let best = scores.iter().copied().min().unwrap_or(1);
        if best != 1 || scores.iter().any(|s| *s != 1) {
            self.steered += 1;
        }
        let candidates: Vec<usize> = (0..pool.len()).filter(|i| scores[*i] == best).collect();
        use rand::Rng;
        let rng: &mut ChaCha20Rng = cx.rng;
        candidates[rng.gen_range(0..candidates.len())]
    }

    pub(super) fn describe(&self) -> String {
        if self.naming_failed {
            return "coin naming unknown: fell back to random order".to_string();
        }
        format!(
            "knew {} coins early, steered {} deliveries",
            self.coins.len(),
            self.steered
        )
    }
}
