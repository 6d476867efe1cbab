//! The trusted dealer (DESIGN.md §1, "Setup by a trusted dealer"): generates every key of a group
//! of `n` servers tolerating `t` faults and hands each server its shares.
//!
//! | key set | scheme | threshold `k` | used for |
//! |---|---|---|---|
//! | `agreement` | BLS12-381 | `n - t` | binary agreement justifications, certificates of `n - t` servers |
//! | `broadcast` | BLS12-381 | `ceil((n + t + 1) / 2)` | verifiable consistent broadcast |
//! | `coin` | CKS coin | `t + 1` | common coin |
//! | `encryption` | TDH2 | `t + 1` | confidential requests (secure causal atomic broadcast) |
//! | `service` | Shoup RSA | `t + 1` | the service's answers |
//!
//! The dealer is a function, not a process: it returns the public [`GroupKeys`] and one
//! [`ServerKeys`] per server; writing them to disk (and forgetting them) is the caller's job.
//! Every secret it created is zeroized when the returned values are dropped.

use serde::{Deserialize, Serialize};

use crate::{CryptoError, SERVERS_MAX, ServerId, bls, coin, rsa, tdh2};

/// The parameters of a group: `n` servers of which at most `t` may be Byzantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupParameters {
    /// `n`, the number of servers.
    pub servers: u16,
    /// `t`, the number of servers that may be faulty; `n > 3t`.
    pub faults: u16,
}

impl GroupParameters {
    /// Checks `1 <= n <= 1024` and `n > 3t`; `faults = None` picks the largest `t` with `n > 3t`.
    pub fn new(servers: u16, faults: Option<u16>) -> Result<Self, CryptoError> {
        if servers == 0 || servers > SERVERS_MAX {
            return Err(CryptoError::InvalidParameters(format!(
                "{servers} servers: a group has 1 to {SERVERS_MAX} servers"
            )));
        }
        let faults = faults.unwrap_or((servers - 1) / 3);
        if u32::from(servers) <= 3 * u32::from(faults) {
            return Err(CryptoError::InvalidParameters(format!(
                "{servers} servers cannot tolerate {faults} faults: n > 3t is required, so at most {} \
                 faults with {servers} servers, or at least {} servers for {faults} faults",
                (servers - 1) / 3,
                3 * u32::from(faults) + 1
            )));
        }
        Ok(Self { servers, faults })
    }

    /// `n - t`: the agreement quorum.
    pub fn agreement_threshold(&self) -> usize {
        usize::from(self.servers - self.faults)
    }

    /// `ceil((n + t + 1) / 2)`: the consistent-broadcast quorum (any two such quorums share an
    /// honest server).
    pub fn broadcast_threshold(&self) -> usize {
        (usize::from(self.servers) + usize::from(self.faults) + 2) / 2
    }

    /// `t + 1`: enough shares that at least one comes from an honest server.
    pub fn honest_threshold(&self) -> usize {
        usize::from(self.faults) + 1
    }
}

/// Every public key of the group: what clients and servers load from `group.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupKeys {
    /// `n` and `t`.
    pub parameters: GroupParameters,
    /// BLS, `n - t` of `n`.
    pub agreement: bls::PublicKeySet,
    /// BLS, `ceil((n + t + 1) / 2)` of `n`.
    pub broadcast: bls::PublicKeySet,
    /// Coin, `t + 1` of `n`.
    pub coin: coin::PublicKeySet,
    /// TDH2, `t + 1` of `n`.
    pub encryption: tdh2::PublicKey,
    /// Threshold RSA, `t + 1` of `n`: the service key clients know.
    pub service: rsa::PublicKey,
}

impl GroupKeys {
    /// Checks that every key set has the group's size and the threshold its role demands, so a
    /// hand-edited or mismatched group file is refused at load time rather than misbehaving later.
    pub fn check(&self) -> Result<(), CryptoError> {
        let p = self.parameters;
        GroupParameters::new(p.servers, Some(p.faults))?;
        let sets = [
            (
                "agreement",
                self.agreement.servers(),
                self.agreement.threshold(),
                p.agreement_threshold(),
            ),
            (
                "broadcast",
                self.broadcast.servers(),
                self.broadcast.threshold(),
                p.broadcast_threshold(),
            ),
            (
                "coin",
                self.coin.servers(),
                self.coin.threshold(),
                p.honest_threshold(),
            ),
            (
                "encryption",
                self.encryption.servers(),
                self.encryption.threshold(),
                p.honest_threshold(),
            ),
            (
                "service",
                self.service.servers(),
                self.service.threshold(),
                p.honest_threshold(),
            ),
        ];
        for (name, servers, threshold, expected) in sets {
            if servers != p.servers || threshold != expected {
                return Err(CryptoError::InvalidParameters(format!(
                    "{name} keys are {threshold} of {servers}, the group needs {expected} of {}",
                    p.servers
                )));
            }
        }
        Ok(())
    }
}

/// One server's secret key shares. Written to a file only that server can read.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerKeys {
    /// Which server these shares belong to.
    pub id: ServerId,
    /// Share of the `agreement` BLS key.
    pub agreement: bls::SecretKeyShare,
    /// Share of the `broadcast` BLS key.
    pub broadcast: bls::SecretKeyShare,
    /// Share of the coin key.
    pub coin: coin::SecretKeyShare,
    /// Share of the TDH2 decryption key.
    pub encryption: tdh2::SecretKeyShare,
    /// Share of the service's RSA key.
    pub service: rsa::SecretKeyShare,
}

impl ServerKeys {
    /// Checks that every share belongs to this server and that the group has such a server.
    pub fn check(&self, group: &GroupKeys) -> Result<(), CryptoError> {
        let ids = [
            self.agreement.id(),
            self.broadcast.id(),
            self.coin.id(),
            self.encryption.id(),
            self.service.id(),
        ];
        if !self.id.is_member_of(group.parameters.servers) {
            return Err(CryptoError::UnknownServer(self.id));
        }
        if ids.iter().any(|id| *id != self.id) {
            return Err(CryptoError::InvalidParameters(format!(
                "the key file of {} holds shares of other servers",
                self.id
            )));
        }
        Ok(())
    }
}

/// Deals all keys of a group. `progress` receives one line per step (the safe-prime search
/// for the RSA modulus takes seconds).
pub fn deal(
    parameters: GroupParameters,
    rsa_modulus_bits: u32,
    rng: &mut (impl rand_core::CryptoRngCore + ?Sized),
    progress: &mut dyn FnMut(&str),
) -> Result<(GroupKeys, Vec<ServerKeys>), CryptoError> {
    let primes = rsa::generate_primes(rsa_modulus_bits, rng, progress)?;
    deal_with_primes(parameters, &primes, rng, progress)
}

/// Deals all keys of a group around an RSA modulus already generated (tests reuse one).
pub fn deal_with_primes(
    parameters: GroupParameters,
    primes: &rsa::Primes,
    rng: &mut (impl rand_core::CryptoRngCore + ?Sized),
    progress: &mut dyn FnMut(&str),
) -> Result<(GroupKeys, Vec<ServerKeys>), CryptoError> {
    let p = GroupParameters::new(parameters.servers, Some(parameters.faults))?;
    let n = usize::from(p.servers);
    progress(&format!(
        "sharing the service RSA key {} of {n}",
        p.honest_threshold()
    ));
    let (service, service_shares) = rsa::deal(primes, p.honest_threshold(), n, rng)?;
    progress(&format!(
        "sharing BLS keys {} of {n} (agreement) and {} of {n} (broadcast)",
        p.agreement_threshold(),
        p.broadcast_threshold()
    ));
    let (agreement, agreement_shares) = bls::deal(p.agreement_threshold(), n, rng)?;
    let (broadcast, broadcast_shares) = bls::deal(p.broadcast_threshold(), n, rng)?;
    progress(&format!(
        "sharing the coin and TDH2 keys {} of {n}",
        p.honest_threshold()
    ));
    let (coin, coin_shares) = coin::deal(p.honest_threshold(), n, rng)?;
    let (encryption, encryption_shares) = tdh2::deal(p.honest_threshold(), n, rng)?;

    let servers = agreement_shares
        .into_iter()
        .zip(broadcast_shares)
        .zip(coin_shares)
        .zip(encryption_shares)
        .zip(service_shares)
        .map(
            |((((agreement, broadcast), coin), encryption), service)| ServerKeys {
                id: agreement.id(),
                agreement,
                broadcast,
                coin,
                encryption,
                service,
            },
        )
        .collect();
    let group = GroupKeys {
        parameters: p,
        agreement,
        broadcast,
        coin,
        encryption,
        service,
    };
    Ok((group, servers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_bound_is_enforced_with_a_clear_message() {
        assert_eq!(GroupParameters::new(4, None).unwrap().faults, 1);
        assert_eq!(GroupParameters::new(3, None).unwrap().faults, 0);
        assert_eq!(GroupParameters::new(10, None).unwrap().faults, 3);
        let err = GroupParameters::new(6, Some(2)).unwrap_err().to_string();
        assert!(err.contains("n > 3t"), "{err}");
        assert!(GroupParameters::new(0, None).is_err());
        assert!(GroupParameters::new(1025, None).is_err());
    }

    #[test]
    fn thresholds_follow_the_design() {
        let p = GroupParameters::new(4, None).unwrap();
        assert_eq!(
            (
                p.agreement_threshold(),
                p.broadcast_threshold(),
                p.honest_threshold()
            ),
            (3, 3, 2)
        );
        let p = GroupParameters::new(10, None).unwrap();
        // ceil((10 + 3 + 1) / 2) = 7
        assert_eq!((p.agreement_threshold(), p.broadcast_threshold()), (7, 7));
        let p = GroupParameters::new(7, Some(1)).unwrap();
        // ceil((7 + 1 + 1) / 2) = 5
        assert_eq!(p.broadcast_threshold(), 5);
    }
}
