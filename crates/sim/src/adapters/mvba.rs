//! Adapter for multi-valued validated agreement (`sintra_protocols::mvba`).
//!
//! Every server proposes a value of 1 to [`VALUE_BYTES_MAX`] bytes that satisfies the
//! simulation's predicate ([`predicate`]: the first byte is [`VALID_TAG`]). Checked on every
//! decision: agreement (the checker), external validity (the value satisfies the predicate), and
//! integrity — a value decided with an honest proposer is that proposer's input. Every honest
//! server must decide.
//!
//! Byzantine servers: `bad-predicate` servers run an instance whose predicate accepts anything
//! ([`Protocol::create_byzantine`]) and propose a value failing the real one, so honest servers
//! must refuse to echo it; their other messages carry proofs and values failing the predicate.
//! `equivocate` runs a twin proposing another valid value. The children — consistent broadcasts
//! `ID/p<j>`, `ID/c<j>` and biased agreements `ID/a<j>` — are exposed to the adversaries through
//! the cbc and aba adapters' knowledge of their messages (slots, votes, coin rounds), so the
//! coin-stall adversary works on the agreements inside.
//!
//! Coin secrecy: an honest server's permutation coin share is checked against its state when it
//! is sent — at least `n - t` commits delivered ([`Protocol::early_release`]).

use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::dealer::GroupParameters;
use sintra_protocols::mvba::{self, Mvba, MvbaDecision};
use sintra_protocols::{Body, InstanceId, Message, Party, cbc};

use super::aba::{self as aba_adapter, AbaAdapter};
use super::{altered, random_body};
use crate::checkers::coin_secrecy;
use crate::protocol::{Class, Effects, Output, Plan, Protocol, Spec, Termination};
use crate::scenario::{NetworkKind, Strategy};

/// The largest value a server proposes (bytes).
pub const VALUE_BYTES_MAX: usize = 256;

/// The first byte of every value the predicate accepts.
pub const VALID_TAG: u8 = b'V';

/// The first byte of the values `bad-predicate` servers propose.
pub const INVALID_TAG: u8 = b'X';

/// Slot kinds of the instance's own messages (0–3 are the aba adapter's, 0 also a CBC SEND's).
const SLOT_COIN_SHARE: u8 = 10;
const SLOT_VOTE: u8 = 11;

/// How far beyond any window the `flood` strategy moves votes (candidate positions).
const FAR_FUTURE_CANDIDATES: u32 = 1_000_000;

/// The simulation's external predicate: the value starts with [`VALID_TAG`].
pub fn predicate(value: &[u8]) -> bool {
    value.first() == Some(&VALID_TAG)
}

/// [`predicate`] as the mvba module's predicate.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimValues;

impl mvba::Predicate for SimValues {
    fn is_valid(&self, _party: &mut Party, value: &[u8]) -> bool {
        predicate(value)
    }
}

/// The predicate of a `bad-predicate` server's modified instance: anything goes.
#[derive(Debug, Clone, Copy, Default)]
struct AcceptAnything;

impl mvba::Predicate for AcceptAnything {
    fn is_valid(&self, _party: &mut Party, _value: &[u8]) -> bool {
        true
    }
}

/// The MVBA adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct MvbaAdapter;

/// What every server knows of a run's instance: the planned inputs and who is Byzantine (for
/// the integrity check of decisions with an honest proposer).
#[derive(Debug, Clone)]
pub struct MvbaSetup {
    /// `inputs[slot]`: server `slot + 1`'s planned value.
    pub inputs: Vec<Vec<u8>>,
    /// The Byzantine servers.
    pub byzantine: Vec<ServerId>,
}

/// One server's MVBA instance.
pub struct MvbaNode {
    mvba: Mvba,
    setup: Arc<MvbaSetup>,
    quorum: usize,
}

fn output(decision: MvbaDecision, setup: &MvbaSetup) -> Output {
    let mut checks = vec![(
        "the decision satisfies the external predicate",
        predicate(&decision.value),
    )];
    if !setup.byzantine.contains(&decision.proposer) {
        checks.push((
            "a value decided with an honest proposer is that proposer's input",
            setup.inputs.get(decision.proposer.slot()) == Some(&decision.value),
        ));
    }
    Output {
        value: decision.value,
        round: Some(decision.candidate),
        checks,
    }
}

/// A valid value: random bytes behind [`VALID_TAG`].
fn valid_value(rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut value = random_body(rng, VALUE_BYTES_MAX);
    value[0] = VALID_TAG;
    value
}

/// `value` with another byte than the first changed (or one appended): a conflicting value
/// that satisfies the predicate as much as `value` does.
fn conflicting(value: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut out = altered(value, rng);
    if let (Some(first), Some(original)) = (out.first_mut(), value.first()) {
        *first = *original;
    }
    if out == value {
        // A one-byte value: only its tag was changed, and is back.
        out.push(rng.r#gen());
    }
    out
}

/// Whether `mvba` still checks what arrives for `instance` (itself or a child) on `slot`
/// ([`Protocol::still_checks`]).
pub fn still_checks(mvba: &Mvba, instance: &InstanceId, slot: Option<(u8, u32)>) -> bool {
    if instance == mvba.instance() {
        // The instance's own coin shares and votes; ignored once decided.
        return !mvba.terminated()
            && match slot {
                Some((SLOT_COIN_SHARE, _)) => mvba.permutation().is_none(),
                Some((_, candidate)) => candidate >= mvba.candidate(),
                None => true,
            };
    }
    let label = instance.label_below(mvba.instance()).unwrap_or("");
    match label.strip_prefix('a').and_then(|j| j.parse::<u16>().ok()) {
        // An agreement listens until it decides; one not created yet is created by the message
        // unless the instance has decided.
        Some(j) => match ServerId::new(j).and_then(|j| mvba.agreement_on(j)) {
            Some(aba) => aba_adapter::still_checks(aba, slot),
            None => !mvba.terminated(),
        },
        // The broadcasts check their sender's SEND (and the instance its predicate) always.
        None => true,
    }
}

fn mvba_body(message: &Message) -> Option<&mvba::Message> {
    match &message.body {
        Body::Mvba(body) => Some(body),
        _ => None,
    }
}

impl Protocol for MvbaAdapter {
    type Message = Message;
    type Node = MvbaNode;
    type Input = Vec<u8>;
    type Setup = Arc<MvbaSetup>;

    fn name(&self) -> &'static str {
        "mvba"
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
    ) -> Plan<Vec<u8>, Arc<MvbaSetup>> {
        let inputs: Vec<Vec<u8>> = ServerId::all(parameters.servers)
            .map(|_| valid_value(rng))
            .collect();
        Plan {
            setup: Arc::new(MvbaSetup {
                inputs: inputs.clone(),
                byzantine: byzantine.to_vec(),
            }),
            inputs: inputs.into_iter().map(Some).collect(),
            spec: Spec {
                required: None,
                allowed: None,
                termination: Termination::All,
                sequence: false,
            },
            note: format!("{} proposals", parameters.servers),
        }
    }

    fn create(
        &self,
        party: &Party,
        instance: &InstanceId,
        plan: &Plan<Vec<u8>, Arc<MvbaSetup>>,
    ) -> MvbaNode {
        MvbaNode {
            mvba: Mvba::new(instance.clone(), Arc::new(SimValues)),
            setup: plan.setup.clone(),
            quorum: party.quorum(),
        }
    }

    fn create_byzantine(
        &self,
        party: &Party,
        instance: &InstanceId,
        plan: &Plan<Vec<u8>, Arc<MvbaSetup>>,
        strategy: Strategy,
    ) -> MvbaNode {
        let mut node = self.create(party, instance, plan);
        if strategy == Strategy::BadPredicate {
            node.mvba = Mvba::new(instance.clone(), Arc::new(AcceptAnything));
        }
        node
    }

    fn start(
        &self,
        node: &mut MvbaNode,
        party: &mut Party,
        input: &Vec<u8>,
    ) -> Result<Effects<Message>, String> {
        let step = node
            .mvba
            .propose(party, input.clone())
            .map_err(|error| format!("{error:?}"))?;
        let setup = node.setup.clone();
        Ok(Effects::from_step(step, |d| output(d, &setup)))
    }

    fn handle(
        &self,
        node: &mut MvbaNode,
        party: &mut Party,
        from: ServerId,
        message: &Message,
    ) -> Effects<Message> {
        let step = node.mvba.handle_message(party, from, message);
        let setup = node.setup.clone();
        Effects::from_step(step, |d| output(d, &setup))
    }

    fn terminated(&self, node: &MvbaNode) -> bool {
        node.mvba.terminated()
    }

    fn still_checks(
        &self,
        node: &MvbaNode,
        instance: &InstanceId,
        slot: Option<(u8, u32)>,
    ) -> bool {
        still_checks(&node.mvba, instance, slot)
    }

    fn early_release(&self, node: &MvbaNode, message: &Message) -> Option<(&'static str, String)> {
        let Some(mvba::Message::CoinShare { .. }) = mvba_body(message) else {
            return None;
        };
        let delivered = node.mvba.delivered_commits();
        (delivered < node.quorum).then(|| {
            (
                coin_secrecy::NAME,
                format!(
                    "{}: released its permutation coin share with {delivered} of the {} \
                     commits it must first deliver",
                    message.instance, node.quorum
                ),
            )
        })
    }

    fn classify(&self, message: &Message) -> Class {
        let slot = match &message.body {
            Body::Aba(_) => return AbaAdapter.classify(message),
            Body::Cbc(cbc::Message::Send { .. }) => Some((0, 0)),
            Body::Mvba(mvba::Message::CoinShare { .. }) => Some((SLOT_COIN_SHARE, 0)),
            Body::Mvba(mvba::Message::Vote { candidate, .. }) => Some((SLOT_VOTE, *candidate)),
            _ => None,
        };
        Class {
            slot,
            ..Class::default()
        }
    }

    fn byzantine_input(
        &self,
        strategy: Strategy,
        input: &Vec<u8>,
        rng: &mut ChaCha20Rng,
    ) -> Vec<u8> {
        match strategy {
            Strategy::BadPredicate => {
                let mut value = conflicting(input, rng);
                value[0] = INVALID_TAG;
                value
            }
            _ => input.clone(),
        }
    }

    fn twin_input(&self, input: &Vec<u8>, rng: &mut ChaCha20Rng) -> Option<Vec<u8>> {
        Some(conflicting(input, rng))
    }

    fn conflict(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        let mut out = message.clone();
        match &mut out.body {
            Body::Aba(_) => return AbaAdapter.conflict(message, rng),
            Body::Cbc(cbc::Message::Send { body }) => *body = conflicting(body, rng),
            Body::Mvba(mvba::Message::Vote { proposal, .. }) => {
                // A 1-vote becomes a 0-vote (a 1-vote cannot be made up: it needs a proof).
                proposal.take()?;
            }
            _ => return None,
        }
        Some(out)
    }

    fn opposite(&self, message: &Message) -> Option<Message> {
        let mut out = message.clone();
        match &mut out.body {
            Body::Aba(_) => return AbaAdapter.opposite(message),
            Body::Mvba(mvba::Message::Vote { proposal, .. }) => {
                proposal.take()?;
            }
            _ => return None,
        }
        Some(out)
    }

    fn bad_predicate(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        let mut out = message.clone();
        match &mut out.body {
            Body::Aba(_) => return AbaAdapter.bad_predicate(message, rng),
            Body::Mvba(mvba::Message::Vote {
                proposal: Some((value, _)),
                ..
            }) => {
                *value.first_mut()? = INVALID_TAG;
            }
            _ => return None,
        }
        Some(out)
    }

    fn far_future(&self, message: &Message) -> Option<Message> {
        let mut out = message.clone();
        match &mut out.body {
            Body::Aba(_) => return AbaAdapter.far_future(message),
            Body::Mvba(mvba::Message::Vote { candidate, .. }) => {
                *candidate = candidate.saturating_add(FAR_FUTURE_CANDIDATES)
            }
            _ => return None,
        }
        Some(out)
    }

    fn coin_share<'m>(&self, message: &'m Message) -> Option<(u32, &'m CoinShare)> {
        AbaAdapter.coin_share(message)
    }

    fn coin_names(&self, instance: &InstanceId, round: u32) -> Vec<(&'static str, Vec<u8>)> {
        AbaAdapter.coin_names(instance, round)
    }
}
