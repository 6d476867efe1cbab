//! Adapter for verifiable consistent broadcast (`sintra_protocols::cbc`), written against its
//! API contract:
//!
//! ```text
//! Cbc::new(instance, sender); cbc.broadcast(&mut party, body) -> Result<Step<CbcDelivery>, _>
//! cbc.handle_message(&mut party, from, &Message) -> Step<CbcDelivery>; cbc.terminated()
//! CbcDelivery { body: Vec<u8>, proof: CbcProof { instance, digest: [u8; 32], signature } }; proof.verify(&mut party) -> bool
//! ```
//!
//! Honest sender: every honest server delivers the body. Byzantine sender: honest servers that
//! deliver, deliver the same body (consistency); nobody has to. Every delivery's proof must
//! verify and name the instance.
//!
//! One message per slot: the sender's `Send` (a second, different one is recorded as
//! equivocation whenever it arrives). `Echo` has no slot: the sender stops looking at echoes
//! once it has sent `Final` (checking them would cost pairings for nothing), so a second echo
//! is provable only before that, which the simulator cannot see from outside.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::dealer::GroupParameters;
use sintra_protocols::cbc::{self, Cbc, CbcDelivery, body_digest};
use sintra_protocols::{Body, InstanceId, Message, Party};

use super::{altered, random_body};
use crate::protocol::{Class, Effects, Output, Plan, Protocol, Spec, Termination};

/// The largest body an instance broadcasts (bytes).
pub const BODY_BYTES_MAX: usize = 1024;

/// The CBC adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct CbcAdapter;

fn output(delivery: CbcDelivery, instance: &InstanceId, party: &mut Party) -> Output {
    let verifies = delivery.proof.verify(party);
    let names_instance = delivery.proof.instance == *instance;
    let names_body = delivery.proof.digest == body_digest(instance, &delivery.body);
    Output {
        value: delivery.body.to_vec(),
        round: None,
        checks: vec![
            ("the delivery proof verifies", verifies),
            ("the delivery proof names this instance", names_instance),
            ("the delivery proof names the delivered body", names_body),
        ],
    }
}

/// A CBC instance and its id (to check delivery proofs against).
pub struct CbcNode {
    cbc: Cbc,
    instance: InstanceId,
}

impl Protocol for CbcAdapter {
    type Message = Message;
    type Node = CbcNode;
    type Input = Vec<u8>;
    type Setup = ServerId;

    fn name(&self) -> &'static str {
        "cbc"
    }

    fn plan(
        &self,
        parameters: GroupParameters,
        byzantine: &[ServerId],
        rng: &mut ChaCha20Rng,
    ) -> Plan<Vec<u8>, ServerId> {
        let n = parameters.servers;
        let sender = ServerId::new(rng.gen_range(1..=n)).expect("1..=n are server ids");
        let body = random_body(rng, BODY_BYTES_MAX);
        let mut inputs = vec![None; usize::from(n)];
        inputs[sender.slot()] = Some(body.clone());
        let honest_sender = !byzantine.contains(&sender);
        let note = format!(
            "sender {sender} ({}), {}-byte body",
            if honest_sender { "honest" } else { "Byzantine" },
            body.len()
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
                termination: Termination::Optional,
                sequence: false,
            }
        };
        Plan {
            setup: sender,
            inputs,
            spec,
            note,
        }
    }

    fn create(
        &self,
        _party: &Party,
        instance: &InstanceId,
        plan: &Plan<Vec<u8>, ServerId>,
    ) -> CbcNode {
        CbcNode {
            cbc: Cbc::new(instance.clone(), plan.setup),
            instance: instance.clone(),
        }
    }

    fn start(
        &self,
        node: &mut CbcNode,
        party: &mut Party,
        input: &Vec<u8>,
    ) -> Result<Effects<Message>, String> {
        let step = node
            .cbc
            .broadcast(party, input.clone())
            .map_err(|error| format!("{error:?}"))?;
        let instance = node.instance.clone();
        Ok(Effects::from_step(step, |d| output(d, &instance, party)))
    }

    fn handle(
        &self,
        node: &mut CbcNode,
        party: &mut Party,
        from: ServerId,
        message: &Message,
    ) -> Effects<Message> {
        let step = node.cbc.handle_message(party, from, message);
        let instance = node.instance.clone();
        Effects::from_step(step, |d| output(d, &instance, party))
    }

    fn terminated(&self, node: &CbcNode) -> bool {
        node.cbc.terminated()
    }

    fn classify(&self, message: &Message) -> Class {
        match &message.body {
            Body::Cbc(cbc::Message::Send { .. }) => Class {
                slot: Some((0, 0)),
                ..Class::default()
            },
            _ => Class::default(),
        }
    }

    fn twin_input(&self, input: &Vec<u8>, rng: &mut ChaCha20Rng) -> Option<Vec<u8>> {
        Some(altered(input, rng))
    }

    fn conflict(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        let mut out = message.clone();
        match &mut out.body {
            Body::Cbc(cbc::Message::Send { body }) => *body = altered(body, rng),
            _ => return None,
        }
        Some(out)
    }
}
