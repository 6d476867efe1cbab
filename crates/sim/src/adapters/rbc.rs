//! Adapter for reliable broadcast (`sintra_protocols::rbc`), written against its API contract:
//!
//! ```text
//! Rbc::new(instance, sender, RbcConfig { erasure_coded }); rbc.broadcast(&mut party, body) -> Result<Step<Vec<u8>>, _>
//! rbc.handle_message(&mut party, from, &Message) -> Step<Vec<u8>>; rbc.delivered(); rbc.terminated()
//! rbc::Message { Send { body }, Echo { digest }, Ready { digest }, Request { digest }, Body { body }, fragments.. }
//! ```
//!
//! Each instance draws a sender and a body (1 to [`BODY_BYTES_MAX`] bytes) and, per instance, the
//! plain or the erasure-coded variant. Honest sender: every honest server delivers the body.
//! Byzantine sender: all honest servers deliver the same body, or none does.
//!
//! One message per slot: `Send`, `Echo`, `Ready` (a second, different one is a provable
//! equivocation). `Request`/`Body` and the fragment messages may repeat and carry no slot.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::GroupParameters;
use sintra_protocols::rbc::{self, Rbc, RbcConfig};
use sintra_protocols::{Body, InstanceId, Message, Party};

use super::{altered, random_body};
use crate::protocol::{Class, Effects, Output, Plan, Protocol, Spec, Termination};

/// The largest body an instance broadcasts (bytes).
pub const BODY_BYTES_MAX: usize = 1024;

/// The RBC adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct RbcAdapter;

/// Who sends, and which variant runs.
#[derive(Debug, Clone, Copy)]
pub struct RbcSetup {
    /// The broadcaster.
    pub sender: ServerId,
    /// The erasure-coded variant (fragments with Merkle proofs) instead of full echoes.
    pub erasure_coded: bool,
}

fn body(message: &Message) -> Option<&rbc::Message> {
    match &message.body {
        Body::Rbc(body) => Some(body),
        _ => None,
    }
}

fn body_mut(message: &mut Message) -> Option<&mut rbc::Message> {
    match &mut message.body {
        Body::Rbc(body) => Some(body),
        _ => None,
    }
}

impl Protocol for RbcAdapter {
    type Message = Message;
    type Node = Rbc;
    type Input = Vec<u8>;
    type Setup = RbcSetup;

    fn name(&self) -> &'static str {
        "rbc"
    }

    fn plan(
        &self,
        parameters: GroupParameters,
        byzantine: &[ServerId],
        rng: &mut ChaCha20Rng,
    ) -> Plan<Vec<u8>, RbcSetup> {
        let n = parameters.servers;
        let sender = ServerId::new(rng.gen_range(1..=n)).expect("1..=n are server ids");
        let erasure_coded = rng.gen_bool(0.5);
        let body = random_body(rng, BODY_BYTES_MAX);
        let mut inputs = vec![None; usize::from(n)];
        inputs[sender.slot()] = Some(body.clone());
        let honest_sender = !byzantine.contains(&sender);
        let note = format!(
            "sender {sender} ({}), {}-byte body, {}",
            if honest_sender { "honest" } else { "Byzantine" },
            body.len(),
            if erasure_coded {
                "erasure-coded"
            } else {
                "plain"
            }
        );
        let spec = if honest_sender {
            Spec {
                required: Some(body.clone()),
                allowed: Some(vec![body]),
                termination: Termination::All,
                sequence: false,
            }
        } else {
            Spec {
                required: None,
                allowed: None,
                termination: Termination::AllOrNone,
                sequence: false,
            }
        };
        Plan {
            setup: RbcSetup {
                sender,
                erasure_coded,
            },
            inputs,
            spec,
            note,
        }
    }

    fn create(&self, _party: &Party, instance: &InstanceId, plan: &Plan<Vec<u8>, RbcSetup>) -> Rbc {
        Rbc::new(
            instance.clone(),
            plan.setup.sender,
            RbcConfig {
                erasure_coded: plan.setup.erasure_coded,
            },
        )
    }

    fn start(
        &self,
        node: &mut Rbc,
        party: &mut Party,
        input: &Vec<u8>,
    ) -> Result<Effects<Message>, String> {
        node.broadcast(party, input.clone())
            .map(|step| Effects::from_step(step, Output::value))
            .map_err(|error| format!("{error:?}"))
    }

    fn handle(
        &self,
        node: &mut Rbc,
        party: &mut Party,
        from: ServerId,
        message: &Message,
    ) -> Effects<Message> {
        Effects::from_step(node.handle_message(party, from, message), Output::value)
    }

    fn terminated(&self, node: &Rbc) -> bool {
        node.terminated()
    }

    fn classify(&self, message: &Message) -> Class {
        let slot = match body(message) {
            Some(rbc::Message::Send { .. }) => Some((0, 0)),
            Some(rbc::Message::Echo { .. }) => Some((1, 0)),
            Some(rbc::Message::Ready { .. }) => Some((2, 0)),
            _ => None,
        };
        Class {
            slot,
            ..Class::default()
        }
    }

    fn twin_input(&self, input: &Vec<u8>, rng: &mut ChaCha20Rng) -> Option<Vec<u8>> {
        Some(altered(input, rng))
    }

    fn conflict(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        let mut out = message.clone();
        match body_mut(&mut out)? {
            rbc::Message::Send { body } => *body = altered(body, rng),
            rbc::Message::Echo { digest } | rbc::Message::Ready { digest } => {
                digest[rng.gen_range(0..digest.len())] ^= 1
            }
            _ => return None,
        }
        Some(out)
    }

    fn opposite(&self, message: &Message) -> Option<Message> {
        // An echo or ready for a body nobody sent: undetectable on its own (the receiver
        // cannot know what the sender sent this server), it only must not be counted with
        // the real ones.
        let mut out = message.clone();
        match body_mut(&mut out)? {
            rbc::Message::Echo { digest } | rbc::Message::Ready { digest } => digest[0] ^= 0x80,
            _ => return None,
        }
        Some(out)
    }
}
