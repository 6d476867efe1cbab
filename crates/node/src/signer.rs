//! The signer thread: the RSA share exponentiations (a signature share per answer batch, and a
//! proof of correctness when a combiner asks for one) run here, never on the protocol task or
//! the executor. Shares go to every peer on the links and to the local coordinator.

use std::sync::Arc;

use bytes::Bytes;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys};
use sintra_crypto::encoding::Encode;
use sintra_crypto::{Context, ServerId, rsa};
use sintra_net::LinksHandle;
use tokio::sync::mpsc;
use tracing::debug;

use crate::coordinator::Event;
use crate::message::{Item, NodeMessage, STATE_ITEM};

/// Jobs waiting for the signer (beyond it the executor waits: signing is part of the pipeline).
pub(crate) const SIGN_QUEUE_MAX: usize = 256;

/// Purpose of the proofs of correctness of answer shares (bound with the instance id).
pub const ANSWER_PROOF_PURPOSE: &str = "node/answers";

/// Whether server `me` signs `item` of `round` as soon as it executes the round ("on duty"),
/// in a group of `parameters.servers` servers of which `parameters.faults` may be faulty.
///
/// Item 0 (a round's answer-batch statement, one per round) is signed by every server, and so
/// is [`STATE_ITEM`] (the directory's state statement, one per checkpoint, which every server
/// combines for its local lookups). An item
/// the service signs alone (a time-stamp, a certificate, a directory statement: one RSA share
/// exponentiation per server per answer, the cost that bounds those services) is signed at once
/// by `t + 1` servers only — `t + 1` shares are what combining needs — chosen by rotation so that
/// every server carries the same share of the work: servers `s, s + 1, …, s + t` (mod `n`) with
/// `s = (round + item) mod n`. The others sign it on demand, when a combiner asks
/// (`ShareRequest`) because a server on duty is silent, skipped the item, or sent a bad share
/// (docs/node.md, "Signing duty").
pub(crate) fn on_duty(parameters: GroupParameters, me: ServerId, round: u64, item: Item) -> bool {
    if item == 0 || item == STATE_ITEM {
        return true;
    }
    let n = u64::from(parameters.servers.max(1));
    let start = round.wrapping_add(u64::from(item)) % n;
    let index = u64::from(me.get().saturating_sub(1));
    (index + n - start) % n <= u64::from(parameters.faults)
}

/// Work for the signer.
#[derive(Debug)]
pub(crate) enum SignJob {
    /// Sign `item` of `round` (SHA-256 `digest` of the batch statement or of an answer's
    /// signing message) and send the share to everyone.
    Sign {
        round: u64,
        item: Item,
        digest: [u8; 32],
    },
    /// Prove this server's share of `item` of `round` to `peer`.
    Prove {
        round: u64,
        item: Item,
        digest: [u8; 32],
        share: rsa::SignatureShare,
        peer: ServerId,
    },
}

pub(crate) fn run(
    jobs: std::sync::mpsc::Receiver<SignJob>,
    group: Arc<GroupKeys>,
    keys: Arc<ServerKeys>,
    instance: Vec<u8>,
    links: LinksHandle,
    events: mpsc::Sender<Event>,
    byzantine: bool,
) {
    let mut rng = rand_core::OsRng;
    // The test-only Byzantine replica sends its peers (and proves, when asked) shares of another
    // digest: well-formed shares that do not combine, which the combiners must detect and name.
    // For its own combining it keeps the right share, so that it still has answers to alter.
    let wrong_digest = |digest: [u8; 32]| {
        let mut digest = digest;
        digest[0] ^= 0x80;
        digest
    };
    while let Ok(job) = jobs.recv() {
        match job {
            SignJob::Sign {
                round,
                item,
                digest,
            } => {
                let share = keys.service.sign_digest(&group.service, &digest);
                let sent = if byzantine {
                    keys.service
                        .sign_digest(&group.service, &wrong_digest(digest))
                } else {
                    share.clone()
                };
                let message = NodeMessage::AnswerShare {
                    round,
                    item,
                    share: sent,
                };
                // The coordinator learns its own share before any peer can see it: a peer's
                // proof request for it (after a failed combination) must find it there.
                if events
                    .blocking_send(Event::OwnShare { round, item, share })
                    .is_err()
                {
                    return;
                }
                let _ = links.broadcast(Bytes::from(message.to_bytes()));
            }
            SignJob::Prove {
                round,
                item,
                digest,
                share,
                peer,
            } => {
                let context = Context::new(ANSWER_PROOF_PURPOSE, &instance);
                let (digest, share) = if byzantine {
                    let wrong = wrong_digest(digest);
                    (wrong, keys.service.sign_digest(&group.service, &wrong))
                } else {
                    (digest, share)
                };
                let proof =
                    keys.service
                        .prove_digest(&group.service, &context, &digest, &share, &mut rng);
                let message = NodeMessage::AnswerProof {
                    round,
                    item,
                    share,
                    proof,
                };
                if let Err(error) = links.try_send(peer, Bytes::from(message.to_bytes())) {
                    debug!(%peer, %error, "proof not sent");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u16) -> ServerId {
        ServerId::new(index).expect("server id")
    }

    #[test]
    fn exactly_t_plus_one_servers_are_on_duty_for_every_answer_item_and_all_for_the_batch() {
        for (servers, faults) in [(1u16, 0u16), (4, 1), (7, 2), (10, 3), (16, 5)] {
            let parameters = GroupParameters::new(servers, Some(faults)).expect("parameters");
            let mut load = vec![0u64; usize::from(servers)];
            for round in 0..50u64 {
                let batch = (1..=servers).filter(|s| on_duty(parameters, id(*s), round, 0));
                assert_eq!(batch.count(), usize::from(servers));
                for item in 1..=40 {
                    let duty: Vec<u16> = (1..=servers)
                        .filter(|s| on_duty(parameters, id(*s), round, item))
                        .collect();
                    assert_eq!(
                        duty.len(),
                        usize::from(faults) + 1,
                        "n={servers} r={round} i={item}"
                    );
                    for server in duty {
                        load[usize::from(server - 1)] += 1;
                    }
                }
            }
            // The rotation spreads the exponentiations evenly.
            let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            assert!(max - min <= u64::from(servers), "n={servers}: {load:?}");
        }
    }
}
