//! Key material for simulated groups.
//!
//! The dealer needs an RSA modulus, whose safe primes take about a second to find; the protocols
//! never use RSA. So one 1024-bit modulus is generated per process from a fixed seed
//! ([`primes`]) and every group is dealt around it.
//!
//! Dealing a group costs a few milliseconds at `n = 4` and tens of milliseconds at `n = 16`
//! (mostly the `n` RSA verification keys), a noticeable share of a short run. By default keys
//! are therefore dealt once per `(n, t)` and process ([`KeySource::Cached`]), from a generator
//! derived from `(n, t)` alone, and the seed varies everything else: the inputs, the Byzantine
//! servers, the network and every server's randomness. The instance ids contain the seed, so
//! coin values and signed statements still differ from seed to seed. [`KeySource::PerSeed`]
//! deals fresh keys from each seed instead.
//!
//! Reproducibility across processes: [`sintra_crypto::dealer::deal_with_primes`] draws exactly
//! 32 bytes from the caller's generator for the RSA key, whatever the primes are, so the BLS,
//! coin and TDH2 keys depend only on the seed — even though the multi-threaded prime search may
//! find different primes in different processes. Only the (unused) RSA key can differ.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::bls;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa::{Primes, generate_primes};
use sintra_protocols::mutation::{self, Mutation};

use crate::scenario::derive_rng;

/// Bits of the process-wide RSA modulus (the smallest the library accepts).
pub const RSA_MODULUS_BITS: u32 = 1024;

/// The seed of the process-wide RSA prime search.
const PRIMES_SEED: [u8; 32] = *b"sintra-sim process-wide RSA key!";

/// Where a run's keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySource {
    /// Dealt once per `(n, t)` and process (see the module documentation).
    #[default]
    Cached,
    /// Dealt from each run's seed.
    PerSeed,
}

/// A dealt group: the public keys and every server's shares.
#[derive(Debug)]
pub struct DealtKeys {
    /// The public keys.
    pub group: Arc<GroupKeys>,
    /// `servers[slot]`: server `slot + 1`'s shares.
    pub servers: Vec<Arc<ServerKeys>>,
}

/// The process-wide RSA primes, generated on first use.
pub fn primes() -> &'static Primes {
    static PRIMES: OnceLock<Primes> = OnceLock::new();
    PRIMES.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed(PRIMES_SEED);
        generate_primes(RSA_MODULUS_BITS, &mut rng, &mut |_| {})
            .expect("a 1024-bit modulus is a valid size")
    })
}

/// The keys of a group of `parameters` for the run of `seed`.
///
/// With the mutation [`Mutation::CbcQuorumTPlusOne`] on, the broadcast key is dealt `t + 1` of
/// `n` — the dealer's half of that deliberate bug (a threshold signature's quorum is its key's).
pub fn keys(parameters: GroupParameters, source: KeySource, seed: u64) -> Arc<DealtKeys> {
    let weak_broadcast = mutation::active(Mutation::CbcQuorumTPlusOne);
    match source {
        KeySource::PerSeed => Arc::new(deal(parameters, seed, "keys", weak_broadcast)),
        KeySource::Cached => {
            type Cache = Mutex<BTreeMap<(u16, u16, bool), Arc<DealtKeys>>>;
            static CACHE: OnceLock<Cache> = OnceLock::new();
            let key = (parameters.servers, parameters.faults, weak_broadcast);
            let cache = CACHE.get_or_init(Default::default);
            if let Some(keys) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
                return keys.clone();
            }
            // Dealt outside the lock so other sizes are not held up; two threads may deal the
            // same size at once, and both deal the same keys (the generator depends on (n, t)).
            let index = u64::from(parameters.servers) << 16 | u64::from(parameters.faults);
            let dealt = Arc::new(deal(parameters, index, "cached-keys", weak_broadcast));
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_insert(dealt)
                .clone()
        }
    }
}

fn deal(parameters: GroupParameters, seed: u64, purpose: &str, weak_broadcast: bool) -> DealtKeys {
    let mut rng = derive_rng(seed, purpose, 0);
    let (mut group, mut servers) = deal_with_primes(parameters, primes(), &mut rng, &mut |_| {})
        .expect("the simulator deals only valid group parameters");
    if weak_broadcast {
        let n = usize::from(parameters.servers);
        let (broadcast, shares) = bls::deal(parameters.honest_threshold(), n, &mut rng)
            .expect("t + 1 of n is a valid threshold");
        group.broadcast = broadcast;
        for (server, share) in servers.iter_mut().zip(shares) {
            server.broadcast = share;
        }
    }
    DealtKeys {
        group: Arc::new(group),
        servers: servers.into_iter().map(Arc::new).collect(),
    }
}
