//! Test support: "echo-quorum", a minimal but correct signed echo broadcast used only to
//! exercise the simulator core while the real protocols land on other branches.
//!
//! The sender sends `SEND(v)`; every server echoes once `ECHO(H(v), σ_i)` with a signature share
//! on the digest (broadcast key, threshold `ceil((n + t + 1) / 2)`); a server delivers `v` once
//! it holds `v` and that many valid echoes on `H(v)`. Guarantees (`n > 3t`): with an honest
//! sender every honest server delivers `v`; two honest servers never deliver different values
//! (two echo quorums share an honest server, which echoes once). Faults, on proof only: a
//! `SEND` not from the sender, a second different `SEND` or `ECHO` (equivocation), a share that
//! does not verify or names another server, a message for another instance.
//!
//! [`Bugs`] switches on deliberate mistakes, to show that each checker notices them.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use sintra_crypto::bls::SignatureShare;
use sintra_crypto::dealer::GroupParameters;
use sintra_crypto::encoding::{Decode, DecodeError, Encode, Reader, put_bytes};
use sintra_crypto::{Context, ServerId};
use sintra_protocols::{Fault, FaultKind, InstanceId, Party, Target};
use sintra_sim::protocol::{Class, Effects, Envelope, Output, Plan, Protocol, Spec, Termination};

/// The largest value (bytes).
pub const VALUE_BYTES_MAX: usize = 4096;

/// Purpose tag of the echo signatures.
const ECHO_PURPOSE: &str = "echo-quorum/echo";

/// Deliberate mistakes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Deliver on the sender's `SEND`, without waiting for echoes (breaks agreement).
    pub deliver_on_send: bool,
    /// Never record equivocation (breaks "deviations recorded").
    pub ignore_equivocation: bool,
    /// Record a fault against every echo's sender (breaks "honest not faulty").
    pub blame_echoes: bool,
    /// Deliver only with `n` echoes (breaks termination when a server is silent).
    pub wait_for_all: bool,
    /// Deliver again on every further echo (breaks integrity).
    pub deliver_repeatedly: bool,
    /// Deliver the value with its first byte flipped (breaks validity).
    pub deliver_altered: bool,
}

/// A message: envelope and body.
#[derive(Debug, Clone, PartialEq)]
pub struct EqMessage {
    /// Its instance.
    pub instance: InstanceId,
    /// Its body.
    pub body: EqBody,
}

/// The two kinds of messages.
#[derive(Debug, Clone, PartialEq)]
pub enum EqBody {
    /// The sender's value.
    Send { value: Vec<u8> },
    /// An echo of the value's digest with a signature share on it.
    Echo {
        digest: [u8; 32],
        share: SignatureShare,
    },
}

impl Encode for EqMessage {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.instance.encode_to(out);
        match &self.body {
            EqBody::Send { value } => {
                out.push(1);
                put_bytes(out, value);
            }
            EqBody::Echo { digest, share } => {
                out.push(2);
                out.extend_from_slice(digest);
                share.encode_to(out);
            }
        }
    }
}

impl Decode for EqMessage {
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let instance = InstanceId::decode_from(reader)?;
        let body = match reader.u8()? {
            1 => EqBody::Send {
                value: reader.bytes("value", VALUE_BYTES_MAX)?.to_vec(),
            },
            2 => EqBody::Echo {
                digest: reader.array()?,
                share: SignatureShare::decode_from(reader)?,
            },
            _ => {
                return Err(DecodeError::Invalid {
                    what: "echo-quorum message",
                    why: "unknown tag",
                });
            }
        };
        Ok(Self { instance, body })
    }
}

impl Envelope for EqMessage {
    fn instance(&self) -> &InstanceId {
        &self.instance
    }

    fn set_instance(&mut self, instance: InstanceId) {
        self.instance = instance;
    }
}

/// One server's instance.
pub struct EqNode {
    instance: InstanceId,
    sender: ServerId,
    bugs: Bugs,
    value: Option<(Vec<u8>, [u8; 32])>,
    echoed: bool,
    echoes: BTreeMap<ServerId, [u8; 32]>,
    valid: BTreeMap<[u8; 32], BTreeSet<ServerId>>,
    delivered: bool,
}

type Step = Effects<EqMessage>;

impl EqNode {
    fn fault(&self, step: &mut Step, server: ServerId, kind: FaultKind) {
        step.faults.push(Fault {
            server,
            instance: self.instance.clone(),
            kind,
        });
    }

    fn deliver(&mut self, step: &mut Step, value: &[u8]) {
        let mut value = value.to_vec();
        if self.bugs.deliver_altered
            && let Some(first) = value.first_mut()
        {
            *first ^= 1;
        }
        step.outputs.push(Output::value(value));
        self.delivered = true;
    }

    fn try_deliver(&mut self, party: &Party, step: &mut Step) {
        if self.delivered && !self.bugs.deliver_repeatedly {
            return;
        }
        let Some((value, digest)) = self.value.clone() else {
            return;
        };
        let needed = if self.bugs.wait_for_all {
            usize::from(party.servers())
        } else {
            party.group.parameters.broadcast_threshold()
        };
        if self.valid.get(&digest).map_or(0, BTreeSet::len) >= needed {
            self.deliver(step, &value);
        }
    }

    fn on_send(&mut self, party: &mut Party, from: ServerId, value: &[u8]) -> Step {
        let mut step = Step::default();
        if from != self.sender {
            self.fault(&mut step, from, FaultKind::UnexpectedMessage);
            return step;
        }
        let digest: [u8; 32] = Sha256::digest(value).into();
        if let Some((_, known)) = &self.value {
            if *known != digest && !self.bugs.ignore_equivocation {
                self.fault(&mut step, from, FaultKind::Equivocation);
            }
            return step;
        }
        self.value = Some((value.to_vec(), digest));
        if self.bugs.deliver_on_send && !self.delivered {
            self.deliver(&mut step, value);
        }
        if !self.echoed {
            self.echoed = true;
            let context = Context::new(ECHO_PURPOSE, self.instance.as_bytes());
            let share = party.keys.broadcast.sign(&context, &digest);
            step.messages.push((
                Target::All,
                EqMessage {
                    instance: self.instance.clone(),
                    body: EqBody::Echo { digest, share },
                },
            ));
        }
        self.try_deliver(party, &mut step);
        step
    }

    fn on_echo(
        &mut self,
        party: &mut Party,
        from: ServerId,
        digest: [u8; 32],
        share: &SignatureShare,
    ) -> Step {
        let mut step = Step::default();
        if self.bugs.blame_echoes {
            self.fault(&mut step, from, FaultKind::InvalidShare);
        }
        if share.id() != from {
            self.fault(&mut step, from, FaultKind::UnexpectedMessage);
            return step;
        }
        if let Some(known) = self.echoes.get(&from) {
            if *known != digest && !self.bugs.ignore_equivocation {
                self.fault(&mut step, from, FaultKind::Equivocation);
            }
            return step;
        }
        let context = Context::new(ECHO_PURPOSE, self.instance.as_bytes());
        let group = party.group.clone();
        let share_bytes = share.to_bytes();
        let valid = party.cache.check(
            &[
                ECHO_PURPOSE.as_bytes(),
                self.instance.as_bytes(),
                &digest,
                &share_bytes,
            ],
            || {
                group
                    .broadcast
                    .verify_share(&context, &digest, share)
                    .is_ok()
            },
        );
        if !valid {
            self.fault(&mut step, from, FaultKind::InvalidShare);
            return step;
        }
        self.echoes.insert(from, digest);
        self.valid.entry(digest).or_default().insert(from);
        self.try_deliver(party, &mut step);
        step
    }
}

/// The echo-quorum adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoQuorum {
    /// Deliberate mistakes (none by default).
    pub bugs: Bugs,
}

impl Protocol for EchoQuorum {
    type Message = EqMessage;
    type Node = EqNode;
    type Input = Vec<u8>;
    type Setup = ServerId;

    fn name(&self) -> &'static str {
        "echo-quorum"
    }

    fn plan(
        &self,
        parameters: GroupParameters,
        byzantine: &[ServerId],
        rng: &mut ChaCha20Rng,
    ) -> Plan<Vec<u8>, ServerId> {
        let n = parameters.servers;
        let sender = ServerId::new(rng.gen_range(1..=n)).unwrap();
        let len = rng.gen_range(1..=256);
        let value: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let mut inputs = vec![None; usize::from(n)];
        inputs[sender.slot()] = Some(value.clone());
        let honest_sender = !byzantine.contains(&sender);
        Plan {
            setup: sender,
            inputs,
            spec: if honest_sender {
                Spec {
                    required: Some(value.clone()),
                    allowed: Some(vec![value]),
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
            },
            note: format!("sender {sender}"),
        }
    }

    fn create(
        &self,
        _party: &Party,
        instance: &InstanceId,
        plan: &Plan<Vec<u8>, ServerId>,
    ) -> EqNode {
        EqNode {
            instance: instance.clone(),
            sender: plan.setup,
            bugs: self.bugs,
            value: None,
            echoed: false,
            echoes: BTreeMap::new(),
            valid: BTreeMap::new(),
            delivered: false,
        }
    }

    fn start(
        &self,
        node: &mut EqNode,
        _party: &mut Party,
        input: &Vec<u8>,
    ) -> Result<Effects<EqMessage>, String> {
        let mut step = Step::default();
        step.messages.push((
            Target::All,
            EqMessage {
                instance: node.instance.clone(),
                body: EqBody::Send {
                    value: input.clone(),
                },
            },
        ));
        Ok(step)
    }

    fn handle(
        &self,
        node: &mut EqNode,
        party: &mut Party,
        from: ServerId,
        message: &EqMessage,
    ) -> Effects<EqMessage> {
        if message.instance != node.instance {
            let mut step = Step::default();
            node.fault(&mut step, from, FaultKind::UnexpectedMessage);
            return step;
        }
        match &message.body {
            EqBody::Send { value } => node.on_send(party, from, value),
            EqBody::Echo { digest, share } => node.on_echo(party, from, *digest, share),
        }
    }

    fn terminated(&self, node: &EqNode) -> bool {
        node.delivered
    }

    fn classify(&self, message: &EqMessage) -> Class {
        let slot = match message.body {
            EqBody::Send { .. } => (0, 0),
            EqBody::Echo { .. } => (1, 0),
        };
        Class {
            slot: Some(slot),
            ..Class::default()
        }
    }

    fn twin_input(&self, input: &Vec<u8>, rng: &mut ChaCha20Rng) -> Option<Vec<u8>> {
        let mut other = input.clone();
        let at = rng.gen_range(0..other.len());
        other[at] ^= 0xff;
        Some(other)
    }

    fn conflict(&self, message: &EqMessage, rng: &mut ChaCha20Rng) -> Option<EqMessage> {
        let mut out = message.clone();
        match &mut out.body {
            EqBody::Send { value } => {
                let at = rng.gen_range(0..value.len().max(1));
                match value.get_mut(at) {
                    Some(byte) => *byte ^= 0xff,
                    None => value.push(1),
                }
            }
            EqBody::Echo { digest, .. } => digest[rng.gen_range(0..32)] ^= 1,
        }
        Some(out)
    }

    fn opposite(&self, message: &EqMessage) -> Option<EqMessage> {
        let mut out = message.clone();
        match &mut out.body {
            EqBody::Echo { digest, .. } => digest[0] ^= 0x80,
            EqBody::Send { .. } => return None,
        }
        Some(out)
    }
}
