//! What one run is: protocol, group size, seed, network adversary and Byzantine strategy — and
//! every random choice of the run derived from the seed.

use std::fmt;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// A Byzantine server's behaviour. Every strategy but `silent` runs the honest protocol
/// underneath and changes what it sends, so the server stays active and plausible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// Crashed from the start: sends nothing.
    Silent,
    /// Different messages to different peers (a twin instance with a conflicting input, or a
    /// conflicting copy of a message), and sometimes both versions to one peer.
    Equivocate,
    /// Corrupts signature shares, coin shares and signatures in its messages: they still
    /// decode, but do not verify.
    InvalidCrypto,
    /// Replays messages it saw (its own and others') into other instances of the run.
    Replay,
    /// Proposes the other bit and flips the votes it sends.
    Opposite,
    /// Proposes values failing the external predicate (biased ABA, MVBA).
    BadPredicate,
    /// Adds messages for far-future rounds and unknown instances (bounded per run).
    Flood,
    /// Replaces messages by random bytes, random bodies behind a valid header, or fuzzed
    /// encodings, all through the receiver's decoder.
    RandomBytes,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 8] = [
        Strategy::Silent,
        Strategy::Equivocate,
        Strategy::InvalidCrypto,
        Strategy::Replay,
        Strategy::Opposite,
        Strategy::BadPredicate,
        Strategy::Flood,
        Strategy::RandomBytes,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Silent => "silent",
            Strategy::Equivocate => "equivocate",
            Strategy::InvalidCrypto => "invalid-crypto",
            Strategy::Replay => "replay",
            Strategy::Opposite => "opposite",
            Strategy::BadPredicate => "bad-predicate",
            Strategy::Flood => "flood",
            Strategy::RandomBytes => "random-bytes",
        }
    }

    /// The strategy with this command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The network adversary: which in-flight message is delivered next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetworkKind {
    /// Uniformly random choice among in-flight messages (random delays and reordering).
    Random,
    /// First sent, first delivered.
    Fifo,
    /// Delays every message of some honest servers as long as anything else can be delivered.
    Targeted,
    /// Splits the honest servers in two groups and holds cross-group messages until a heal step.
    Partition,
    /// Reads ABA coin shares in flight and, once it knows a round's coin, orders votes to push
    /// honest servers towards the opposite value.
    CoinStall,
}

impl NetworkKind {
    /// Every network adversary.
    pub const ALL: [NetworkKind; 5] = [
        NetworkKind::Random,
        NetworkKind::Fifo,
        NetworkKind::Targeted,
        NetworkKind::Partition,
        NetworkKind::CoinStall,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::Random => "random",
            NetworkKind::Fifo => "fifo",
            NetworkKind::Targeted => "targeted",
            NetworkKind::Partition => "partition",
            NetworkKind::CoinStall => "coin-stall",
        }
    }

    /// The adversary with this command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }
}

/// The adversary of one run: a network adversary and, optionally, a Byzantine strategy for up
/// to `t` servers. Named `NETWORK`, `STRATEGY` (network `random`) or `STRATEGY+NETWORK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Adversary {
    /// The Byzantine servers' strategy; `None`: every server is honest.
    pub strategy: Option<Strategy>,
    /// The network adversary.
    pub network: NetworkKind,
}

impl Adversary {
    /// Parses `NETWORK`, `STRATEGY` or `STRATEGY+NETWORK`.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some((strategy, network)) = name.split_once('+') {
            return Some(Self {
                strategy: Some(Strategy::from_name(strategy)?),
                network: NetworkKind::from_name(network)?,
            });
        }
        if let Some(network) = NetworkKind::from_name(name) {
            return Some(Self {
                strategy: None,
                network,
            });
        }
        Some(Self {
            strategy: Some(Strategy::from_name(name)?),
            network: NetworkKind::Random,
        })
    }

    /// Every combination of the given strategies (and none) with the given networks, in a fixed
    /// order: what `--adversary all` spreads the seeds over.
    pub fn all(strategies: &[Strategy], networks: &[NetworkKind]) -> Vec<Self> {
        let mut all = Vec::new();
        for strategy in std::iter::once(None).chain(strategies.iter().copied().map(Some)) {
            for network in networks {
                all.push(Self {
                    strategy,
                    network: *network,
                });
            }
        }
        all
    }
}

impl fmt::Display for Adversary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.strategy {
            None => f.write_str(self.network.name()),
            Some(strategy) => write!(f, "{}+{}", strategy.name(), self.network.name()),
        }
    }
}

/// A generator for one purpose of one run, derived from the seed: the runs of one seed draw
/// exactly the same numbers whatever else changes, and different purposes never share a
/// stream.
pub fn derive_rng(seed: u64, purpose: &str, index: u64) -> ChaCha20Rng {
    let mut hasher = Sha256::new();
    hasher.update(b"sintra-sim/v1");
    hasher.update(seed.to_be_bytes());
    hasher.update((purpose.len() as u64).to_be_bytes());
    hasher.update(purpose.as_bytes());
    hasher.update(index.to_be_bytes());
    ChaCha20Rng::from_seed(hasher.finalize().into())
}

/// A 32-byte seed derived like [`derive_rng`] (for [`sintra_protocols::Party::new`]).
pub fn derive_seed(seed: u64, purpose: &str, index: u64) -> [u8; 32] {
    use rand::RngCore;
    let mut out = [0u8; 32];
    derive_rng(seed, purpose, index).fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adversary_names_round_trip() {
        for adversary in Adversary::all(&Strategy::ALL, &NetworkKind::ALL) {
            assert_eq!(
                Adversary::parse(&adversary.to_string()),
                Some(adversary),
                "{adversary}"
            );
        }
        assert_eq!(
            Adversary::parse("flood"),
            Some(Adversary {
                strategy: Some(Strategy::Flood),
                network: NetworkKind::Random
            })
        );
        assert_eq!(Adversary::parse("nonsense"), None);
        assert_eq!(Adversary::parse("flood+nonsense"), None);
    }
}
