//! Adapter for secure causal atomic broadcast (`sintra_protocols::scabc`).
//!
//! Requests are drawn as for atomic broadcast (see [`super::abc`]); a server encrypts each of
//! its plaintexts under the instance's label when it gets its input, deterministically (the
//! encryption randomness derives from the plaintext), so a plaintext submitted to several
//! servers is one ciphertext — which must be delivered once.
//!
//! Checked, besides total order and termination as for atomic broadcast: only plaintexts some
//! server was given are delivered, each at most once (integrity), and **confidentiality**: an
//! honest server sends its decryption share for position `p` only once `p` is ordered at that
//! server ([`Protocol::early_release`]).
//!
//! Invalid ciphertexts are never delivered: a `bad-predicate` server runs only the ordering
//! (atomic broadcast in `<id>/abc`, never decrypting — [`Protocol::create_byzantine`]) and puts a
//! corrupted copy of each of its ciphertexts into its batches beside the real one; honest
//! servers order them and must skip them (integrity would see anything they delivered).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use sintra_crypto::ServerId;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::dealer::GroupParameters;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_protocols::abc::{Abc, AbcConfig};
use sintra_protocols::scabc::{self, Scabc, request_label};
use sintra_protocols::{Body, InstanceId, Message, Party};

use super::abc::{self as abc_adapter, twin_requests};
use super::mvba::MvbaAdapter;
use crate::checkers::confidentiality;
use crate::protocol::{Class, Effects, Output, Plan, Protocol};
use crate::scenario::{NetworkKind, Strategy};

/// The largest plaintext (bytes).
pub const PLAINTEXT_BYTES_MAX: usize = 64;

/// The secure causal atomic broadcast adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScabcAdapter;

/// One server's instance.
pub struct ScabcNode {
    role: Role,
    instance: InstanceId,
}

/// What a server runs.
enum Role {
    /// The protocol.
    Server(Box<Scabc>),
    /// A `bad-predicate` server: only the ordering underneath, fed raw (also invalid)
    /// ciphertexts, and never a decryption share.
    Orderer(Box<Abc>),
}

fn output(delivered: scabc::Delivered) -> Output {
    Output {
        value: delivered.plaintext,
        round: None,
        checks: Vec::new(),
    }
}

fn encrypt(party: &Party, instance: &InstanceId, plaintext: &[u8]) -> Result<Vec<u8>, String> {
    // The same plaintext gives the same ciphertext at every server that gets it.
    let mut rng = ChaCha20Rng::from_seed(Sha256::digest(plaintext).into());
    party
        .group
        .encryption
        .encrypt(&request_label(instance), plaintext, &mut rng)
        .map(|ciphertext| ciphertext.to_bytes())
        .map_err(|error| format!("{error:?}"))
}

/// The ciphertext bytes `request` with one byte changed: no longer valid under the label (its
/// proof or its sealed part fails), or not even decodable.
fn invalid_ciphertext(request: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut out = request.to_vec();
    if !out.is_empty() {
        let at = rng.gen_range(0..out.len());
        out[at] ^= rng.gen_range(1..=255u8);
    }
    out
}

impl Protocol for ScabcAdapter {
    type Message = Message;
    type Node = ScabcNode;
    type Input = Vec<Vec<u8>>;
    type Setup = ();

    fn name(&self) -> &'static str {
        "scabc"
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
    ) -> Plan<Vec<Vec<u8>>, ()> {
        abc_adapter::plan_requests(
            parameters,
            byzantine,
            rng,
            (PLAINTEXT_BYTES_MAX, "plaintexts", true),
        )
    }

    fn create(
        &self,
        _party: &Party,
        instance: &InstanceId,
        _plan: &Plan<Vec<Vec<u8>>, ()>,
    ) -> ScabcNode {
        ScabcNode {
            role: Role::Server(Box::new(Scabc::new(instance.clone(), AbcConfig::default()))),
            instance: instance.clone(),
        }
    }

    fn create_byzantine(
        &self,
        party: &Party,
        instance: &InstanceId,
        plan: &Plan<Vec<Vec<u8>>, ()>,
        strategy: Strategy,
    ) -> ScabcNode {
        let abc_instance = instance.child("abc");
        match abc_instance {
            Some(abc_instance) if strategy == Strategy::BadPredicate => ScabcNode {
                role: Role::Orderer(Box::new(Abc::new(abc_instance, AbcConfig::default()))),
                instance: instance.clone(),
            },
            _ => self.create(party, instance, plan),
        }
    }

    fn start(
        &self,
        node: &mut ScabcNode,
        party: &mut Party,
        input: &Vec<Vec<u8>>,
    ) -> Result<Effects<Message>, String> {
        let mut effects = Effects::default();
        for plaintext in input {
            let bytes = encrypt(party, &node.instance, plaintext)?;
            let more = match &mut node.role {
                Role::Server(scabc) => {
                    let ciphertext = sintra_crypto::tdh2::Ciphertext::from_bytes(&bytes)
                        .map_err(|error| format!("{error:?}"))?;
                    let step = scabc
                        .submit(party, ciphertext)
                        .map_err(|error| format!("{error:?}"))?;
                    Effects::from_step(step, output)
                }
                Role::Orderer(abc) => {
                    let mut rng = ChaCha20Rng::from_seed(Sha256::digest(&bytes).into());
                    let invalid = invalid_ciphertext(&bytes, &mut rng);
                    let mut step = abc
                        .submit(party, bytes)
                        .map_err(|error| format!("{error:?}"))?;
                    step.extend(
                        abc.submit(party, invalid)
                            .map_err(|error| format!("{error:?}"))?,
                    );
                    Effects::from_step(step, |_| Output::value(Vec::new()))
                }
            };
            effects.messages.extend(more.messages);
            effects.outputs.extend(more.outputs);
            effects.faults.extend(more.faults);
        }
        Ok(effects)
    }

    fn handle(
        &self,
        node: &mut ScabcNode,
        party: &mut Party,
        from: ServerId,
        message: &Message,
    ) -> Effects<Message> {
        match &mut node.role {
            Role::Server(scabc) => {
                Effects::from_step(scabc.handle_message(party, from, message), output)
            }
            Role::Orderer(abc) if message.instance.is_within(abc.instance()) => {
                let step = abc.handle_message(party, from, message);
                Effects::from_step(step, |_| Output::value(Vec::new()))
            }
            Role::Orderer(_) => Effects::default(),
        }
    }

    /// Never finishes: an idle group just sends nothing.
    fn terminated(&self, _node: &ScabcNode) -> bool {
        false
    }

    fn still_checks(
        &self,
        node: &ScabcNode,
        instance: &InstanceId,
        slot: Option<(u8, u32)>,
    ) -> bool {
        match &node.role {
            Role::Server(scabc) if instance.is_within(scabc.abc().instance()) => {
                abc_adapter::still_checks(scabc.abc(), instance, slot)
            }
            _ => true,
        }
    }

    fn early_release(&self, node: &ScabcNode, message: &Message) -> Option<(&'static str, String)> {
        let Role::Server(scabc) = &node.role else {
            return None;
        };
        let Body::Scabc(scabc::Message::Share { .. }) = &message.body else {
            return None;
        };
        let position = message
            .instance
            .label_below(&node.instance)
            .and_then(|label| label.strip_prefix('d'))
            .and_then(|position| position.parse::<u64>().ok())?;
        let ordered = scabc.abc().delivered_count();
        (position >= ordered).then(|| {
            (
                confidentiality::NAME,
                format!(
                    "{}: sent its decryption share for position {position} with only {ordered} \
                     positions ordered",
                    message.instance
                ),
            )
        })
    }

    fn classify(&self, message: &Message) -> Class {
        MvbaAdapter.classify(message)
    }

    fn twin_input(&self, input: &Vec<Vec<u8>>, _rng: &mut ChaCha20Rng) -> Option<Vec<Vec<u8>>> {
        twin_requests(input)
    }

    fn conflict(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        if abc_adapter::is_batch(message) {
            return abc_adapter::conflicting_batch(message, rng);
        }
        MvbaAdapter.conflict(message, rng)
    }

    fn opposite(&self, message: &Message) -> Option<Message> {
        MvbaAdapter.opposite(message)
    }

    fn bad_predicate(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        MvbaAdapter.bad_predicate(message, rng)
    }

    fn far_future(&self, message: &Message) -> Option<Message> {
        MvbaAdapter.far_future(message)
    }

    fn coin_share<'m>(&self, message: &'m Message) -> Option<(u32, &'m CoinShare)> {
        MvbaAdapter.coin_share(message)
    }

    fn coin_names(&self, instance: &InstanceId, round: u32) -> Vec<(&'static str, Vec<u8>)> {
        MvbaAdapter.coin_names(instance, round)
    }
}
