//! The local server's view shared by all its protocol instances: who it is, the group's public
//! keys, its own key shares, its randomness, and the cache of verified signatures and proofs.

use std::collections::HashSet;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{GroupKeys, ServerKeys};

/// Entries the verified cache holds before it starts over (32 bytes each: 2 MiB at most).
pub const VERIFIED_CACHE_ENTRIES_MAX: usize = 1 << 16;

/// One server's local state, passed `&mut` into every protocol call. Protocols never keep a
/// reference to it, which keeps them plain data and the call order explicit.
pub struct Party {
    /// This server.
    pub id: ServerId,
    /// The group's public keys (and `n`, `t`).
    pub group: Arc<GroupKeys>,
    /// This server's key shares.
    pub keys: Arc<ServerKeys>,
    /// Randomness for proofs and batching coefficients; seeded from the OS in a server and from
    /// the seed in the simulator, so a simulated run is reproducible.
    pub rng: ChaCha20Rng,
    /// Signatures and proofs this server has already verified.
    pub cache: VerifiedCache,
}

impl Party {
    /// A party with its keys and a seed for its randomness.
    pub fn new(group: Arc<GroupKeys>, keys: Arc<ServerKeys>, seed: [u8; 32]) -> Self {
        Self {
            id: keys.id,
            group,
            keys,
            rng: ChaCha20Rng::from_seed(seed),
            cache: VerifiedCache::default(),
        }
    }

    /// `n`.
    pub fn servers(&self) -> u16 {
        self.group.parameters.servers
    }

    /// `t`.
    pub fn faults(&self) -> u16 {
        self.group.parameters.faults
    }

    /// `n - t`.
    pub fn quorum(&self) -> usize {
        self.group.parameters.agreement_threshold()
    }
}

/// Remembers which (kind, bytes) were verified successfully, so a server verifies a given
/// signature or proof once however many messages carry it (a certificate is typically
/// forwarded by many peers). Failures are not cached: a peer cannot poison the cache, and
/// a failure is attributed to the sender each time.
#[derive(Default)]
pub struct VerifiedCache {
    verified: HashSet<[u8; 32]>,
}

impl VerifiedCache {
    /// Returns whether the item described by `parts` verifies, running `verify` only on a miss.
    pub fn check(&mut self, parts: &[&[u8]], verify: impl FnOnce() -> bool) -> bool {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let key: [u8; 32] = hasher.finalize().into();
        if self.verified.contains(&key) {
            return true;
        }
        if !verify() {
            return false;
        }
        if self.verified.len() >= VERIFIED_CACHE_ENTRIES_MAX {
            self.verified.clear();
        }
        self.verified.insert(key);
        true
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.verified.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.verified.is_empty()
    }
}
