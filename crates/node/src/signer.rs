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
    // The test-only Byzantine replica signs (and proves) another digest: well-formed shares
    // that do not combine, which the combiner must detect and name.
    let sign_digest = |digest: [u8; 32]| {
        let mut digest = digest;
        if byzantine {
            digest[0] ^= 0x80;
        }
        digest
    };
    while let Ok(job) = jobs.recv() {
        match job {
            SignJob::Sign {
                round,
                item,
                digest,
            } => {
                let share = keys
                    .service
                    .sign_digest(&group.service, &sign_digest(digest));
                let message = NodeMessage::AnswerShare {
                    round,
                    item,
                    share: share.clone(),
                };
                let _ = links.broadcast(Bytes::from(message.to_bytes()));
                if events
                    .blocking_send(Event::OwnShare { round, item, share })
                    .is_err()
                {
                    return;
                }
            }
            SignJob::Prove {
                round,
                item,
                digest,
                share,
                peer,
            } => {
                let context = Context::new(ANSWER_PROOF_PURPOSE, &instance);
                let proof = keys.service.prove_digest(
                    &group.service,
                    &context,
                    &sign_digest(digest),
                    &share,
                    &mut rng,
                );
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
