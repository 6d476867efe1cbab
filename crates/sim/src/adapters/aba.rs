//! Adapter for binary agreement (`sintra_protocols::aba`), plain and biased.
//!
//! Inputs: a third of the instances give every server the same bit (so validity pins the
//! decision), the others random bits; half the instances run the biased mode (CKPS01 §3, the
//! mode MVBA uses) with the simulation's [`predicate`]. Plain validity: the decision is some
//! honest server's input. Biased: a decision 1 carries an external proof satisfying the
//! predicate, and if `t + 1` honest servers propose 1 the decision is 1. Every decision's proof
//! must verify ([`aba::verify_decision`]).
//!
//! The coin of round `r` is named `ID ‖ r` (`u32`, big-endian) under `aba/coin`, which is what
//! [`Protocol::coin_names`] tells the coin-stall adversary.

use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::dealer::GroupParameters;
use sintra_protocols::aba::{self, Aba, AbaMode, Decision};
use sintra_protocols::{Body, InstanceId, Message, Party};

use crate::protocol::{Class, Effects, Output, Plan, Protocol, Spec, Termination, Vote, VotePhase};
use crate::scenario::{NetworkKind, Strategy};

/// How far beyond the current round the `flood` strategy sends votes: beyond any window.
pub const FAR_FUTURE_ROUNDS: u32 = 1_000_000;

/// An external proof the simulation's predicate accepts.
pub const VALID_PROOF: &[u8] = b"sintra-sim: valid external proof";

/// An external proof the predicate refuses (`bad-predicate`).
pub const INVALID_PROOF: &[u8] = b"sintra-sim: proof failing the predicate";

/// The simulation's external validity predicate: a proof is valid iff it is [`VALID_PROOF`].
pub fn predicate(proof: &[u8]) -> bool {
    proof == VALID_PROOF
}

/// [`predicate`] as the aba module's external validity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimPredicate;

impl aba::ExternalValidity for SimPredicate {
    fn is_valid(&self, _party: &mut Party, proof: &[u8]) -> bool {
        predicate(proof)
    }
}

/// The ABA adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct AbaAdapter;

/// A server's input: its bit and, in biased mode with bit 1, the external proof.
pub type AbaInput = (bool, Option<Vec<u8>>);

/// An ABA instance and its mode.
pub struct AbaNode {
    aba: Aba,
    mode: AbaMode,
}

fn body(message: &Message) -> Option<&aba::Message> {
    match &message.body {
        Body::Aba(body) => Some(body),
        _ => None,
    }
}

fn body_mut(message: &mut Message) -> Option<&mut aba::Message> {
    match &mut message.body {
        Body::Aba(body) => Some(body),
        _ => None,
    }
}

/// The value of a main-vote (`None`: abstain).
pub fn main_vote_value(vote: &aba::Vote) -> Option<bool> {
    match vote {
        aba::Vote::Value(value) => Some(*value),
        aba::Vote::Abstain => None,
    }
}

fn output(decision: Decision, instance: &InstanceId, mode: &AbaMode, party: &mut Party) -> Output {
    let mut checks = vec![(
        "the decision proof verifies",
        aba::verify_decision(party, instance, mode, &decision),
    )];
    if matches!(mode, AbaMode::Biased(_)) && decision.value {
        checks.push((
            "a decision 1 carries an external proof satisfying the predicate",
            decision.external.as_deref().is_some_and(predicate),
        ));
    }
    Output {
        value: vec![u8::from(decision.value)],
        round: Some(decision.round),
        checks,
    }
}

impl Protocol for AbaAdapter {
    type Message = Message;
    type Node = AbaNode;
    type Input = AbaInput;
    /// Biased mode.
    type Setup = bool;

    fn name(&self) -> &'static str {
        "aba"
    }

    fn strategies(&self) -> Vec<Strategy> {
        Strategy::ALL.to_vec()
    }

    fn networks(&self) -> Vec<NetworkKind> {
        NetworkKind::ALL.to_vec()
    }

    fn plan(
        &self,
        parameters: GroupParameters,
        byzantine: &[ServerId],
        rng: &mut ChaCha20Rng,
    ) -> Plan<AbaInput, bool> {
        let n = usize::from(parameters.servers);
        let biased = rng.gen_bool(0.5);
        let unanimous = rng.gen_ratio(1, 3).then(|| rng.r#gen::<bool>());
        let bits: Vec<bool> = (0..n)
            .map(|_| unanimous.unwrap_or_else(|| rng.r#gen()))
            .collect();
        let inputs: Vec<Option<AbaInput>> = bits
            .iter()
            .map(|bit| Some((*bit, (biased && *bit).then(|| VALID_PROOF.to_vec()))))
            .collect();
        let honest_bits: Vec<bool> = ServerId::all(parameters.servers)
            .filter(|s| !byzantine.contains(s))
            .map(|s| bits[s.slot()])
            .collect();
        let ones = honest_bits.iter().filter(|b| **b).count();
        let zeros = honest_bits.len() - ones;
        let (required, allowed) = if biased {
            let required = (ones > usize::from(parameters.faults)).then(|| vec![1u8]);
            (required, None)
        } else {
            let required = match (zeros, ones) {
                (0, _) => Some(vec![1u8]),
                (_, 0) => Some(vec![0u8]),
                _ => None,
            };
            let mut allowed = Vec::new();
            if zeros > 0 {
                allowed.push(vec![0u8]);
            }
            if ones > 0 {
                allowed.push(vec![1u8]);
            }
            (required, Some(allowed))
        };
        Plan {
            setup: biased,
            inputs,
            spec: Spec {
                required,
                allowed,
                termination: Termination::All,
                sequence: false,
            },
            note: format!(
                "{}, honest inputs {zeros}×0 {ones}×1",
                if biased { "biased" } else { "plain" }
            ),
        }
    }

    fn create(
        &self,
        _party: &Party,
        instance: &InstanceId,
        plan: &Plan<AbaInput, bool>,
    ) -> AbaNode {
        let mode = if plan.setup {
            AbaMode::Biased(Arc::new(SimPredicate))
        } else {
            AbaMode::Plain
        };
        AbaNode {
            aba: Aba::new(instance.clone(), mode.clone()),
            mode,
        }
    }

    fn start(
        &self,
        node: &mut AbaNode,
        party: &mut Party,
        input: &AbaInput,
    ) -> Result<Effects<Message>, String> {
        let step = node
            .aba
            .propose(party, input.0, input.1.clone())
            .map_err(|error| format!("{error:?}"))?;
        let instance = node.aba.instance().clone();
        Ok(Effects::from_step(step, |d| {
            output(d, &instance, &node.mode, party)
        }))
    }

    fn handle(
        &self,
        node: &mut AbaNode,
        party: &mut Party,
        from: ServerId,
        message: &Message,
    ) -> Effects<Message> {
        let step = node.aba.handle_message(party, from, message);
        let instance = node.aba.instance().clone();
        Effects::from_step(step, |d| output(d, &instance, &node.mode, party))
    }

    fn terminated(&self, node: &AbaNode) -> bool {
        node.aba.terminated()
    }

    fn still_checks(
        &self,
        node: &AbaNode,
        _instance: &InstanceId,
        slot: Option<(u8, u32)>,
    ) -> bool {
        still_checks(&node.aba, slot)
    }

    fn classify(&self, message: &Message) -> Class {
        match body(message) {
            Some(aba::Message::PreProcess { .. }) => Class {
                slot: Some((0, 0)),
                ..Class::default()
            },
            Some(aba::Message::PreVote { round, value, .. }) => Class {
                slot: Some((1, *round)),
                vote: Some(Vote {
                    phase: VotePhase::Pre,
                    round: *round,
                    value: Some(*value),
                }),
                coin_round: None,
            },
            Some(aba::Message::MainVote { round, vote, .. }) => Class {
                slot: Some((2, *round)),
                vote: Some(Vote {
                    phase: VotePhase::Main,
                    round: *round,
                    value: main_vote_value(vote),
                }),
                coin_round: None,
            },
            Some(aba::Message::CoinShare { round, .. }) => Class {
                slot: Some((3, *round)),
                vote: None,
                coin_round: Some(*round),
            },
            _ => Class::default(),
        }
    }

    fn byzantine_input(
        &self,
        strategy: Strategy,
        input: &AbaInput,
        _rng: &mut ChaCha20Rng,
    ) -> AbaInput {
        match strategy {
            Strategy::Opposite => {
                let bit = !input.0;
                (
                    bit,
                    (bit && input.1.is_some()).then(|| VALID_PROOF.to_vec()),
                )
            }
            _ => input.clone(),
        }
    }

    fn twin_input(&self, input: &AbaInput, _rng: &mut ChaCha20Rng) -> Option<AbaInput> {
        let bit = !input.0;
        Some((bit, bit.then(|| VALID_PROOF.to_vec())))
    }

    fn conflict(&self, message: &Message, _rng: &mut ChaCha20Rng) -> Option<Message> {
        self.opposite(message)
    }

    fn opposite(&self, message: &Message) -> Option<Message> {
        let mut out = message.clone();
        match body_mut(&mut out)? {
            aba::Message::PreVote { value, .. } => *value = !*value,
            _ => return None,
        }
        Some(out)
    }

    fn bad_predicate(&self, message: &Message, _rng: &mut ChaCha20Rng) -> Option<Message> {
        // Every proof the message carries fails the predicate; a pre-process 0 becomes a 1
        // "justified" by such a proof. (The honest core proposes its planned input: the aba
        // module refuses an invalid proof of its own.)
        let mut out = message.clone();
        let invalid = Some(INVALID_PROOF.to_vec());
        match body_mut(&mut out)? {
            aba::Message::PreProcess {
                value, external, ..
            } => {
                *value = true;
                *external = invalid;
            }
            aba::Message::PreVote { external, .. }
            | aba::Message::MainVote { external, .. }
            | aba::Message::Decide { external, .. } => {
                external.as_ref()?;
                *external = invalid;
            }
            aba::Message::CoinShare { .. } => return None,
        }
        Some(out)
    }

    fn far_future(&self, message: &Message) -> Option<Message> {
        let mut out = message.clone();
        match body_mut(&mut out)? {
            aba::Message::PreVote { round, .. }
            | aba::Message::MainVote { round, .. }
            | aba::Message::CoinShare { round, .. } => {
                *round = round.saturating_add(FAR_FUTURE_ROUNDS)
            }
            _ => return None,
        }
        Some(out)
    }

    fn coin_share<'m>(&self, message: &'m Message) -> Option<(u32, &'m CoinShare)> {
        match body(message) {
            Some(aba::Message::CoinShare { round, share }) => Some((*round, share)),
            _ => None,
        }
    }

    fn coin_names(&self, instance: &InstanceId, round: u32) -> Vec<(&'static str, Vec<u8>)> {
        vec![("aba/coin", coin_name(instance, round))]
    }
}

/// Whether `aba` still checks what arrives on `slot` ([`Protocol::still_checks`]): until it
/// decides, and only for the current round and the ones ahead (passed rounds are ignored).
pub fn still_checks(aba: &Aba, slot: Option<(u8, u32)>) -> bool {
    !aba.terminated() && slot.is_none_or(|(_, round)| round >= aba.round())
}

/// The name of the coin of `round` in `instance`: `ID ‖ round` (`u32`, big-endian), as the aba
/// module names it (`docs/protocols/aba.md`).
pub fn coin_name(instance: &InstanceId, round: u32) -> Vec<u8> {
    [instance.as_bytes(), &round.to_be_bytes()].concat()
}
