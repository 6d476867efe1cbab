//! The signer thread: the RSA share exponentiations (a signature share per answer batch, and a
//! proof of correctness when a combiner asks for one) run here, never on the protocol task or
//! the executor. Shares go to every peer on the links and to the local coordinator.

use std::sync::Arc;

use bytes::Bytes;
use sintra_crypto::dealer::{GroupKeys, ServerKeys};
use sintra_crypto::encoding::Encode;
use sintra_crypto::{Context, ServerId, rsa};
use sintra_net::LinksHandle;
use tokio::sync::mpsc;
use tracing::debug;

use crate::coordinator::Event;
use crate::message::{Item, NodeMessage};

/// Jobs waiting for the signer (beyond it the executor waits: signing is part of the pipeline).
pub(crate) const SIGN_QUEUE_MAX: usize = 256;

/// Purpose of the proofs of correctness of answer shares (bound with the instance id).
pub const ANSWER_PROOF_PURPOSE: &str = "node/answers";

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
