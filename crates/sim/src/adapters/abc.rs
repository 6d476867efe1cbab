//! Adapter for atomic broadcast (`sintra_protocols::abc`).
//!
//! Each instance draws 1 to [`REQUESTS_MAX`] requests (1 to [`REQUEST_BYTES_MAX`] bytes) and
//! submits each to a random set of servers (one to all); a server submits its requests when it
//! gets its input. Checked: total order (the checker), each request at most once at every honest
//! server (integrity: no item twice), positions without gaps, and every request submitted to at
//! least `t + 1` honest servers delivered by every honest server (termination). Requests that
//! Byzantine batches carry are legitimate input (a Byzantine server is a client too), so nothing
//! restricts what may be delivered beyond that.
//!
//! The rounds' children — batch broadcasts `<id>/r<r>/b<j>` and the agreement `<id>/r<r>/mvba`
//! with its own children — are exposed to the adversaries through the mvba adapter.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::dealer::GroupParameters;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_protocols::abc::{self, Abc, AbcConfig, Batch};
use sintra_protocols::{Body, InstanceId, Message, Party, cbc};

use super::mvba::{self as mvba_adapter, MvbaAdapter};
use crate::protocol::{Class, Effects, Output, Plan, Protocol, Spec, Termination};
use crate::scenario::{NetworkKind, Strategy};

/// The most requests one instance gets.
pub const REQUESTS_MAX: usize = 6;

/// The largest request (bytes).
pub const REQUEST_BYTES_MAX: usize = 64;

/// The atomic broadcast adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct AbcAdapter;

/// One server's atomic-broadcast instance and how many requests it delivered.
pub struct AbcNode {
    abc: Abc,
    delivered: u64,
}

/// The requests of one instance and which servers get them: `inputs[slot]` lists the
/// requests submitted to server `slot + 1`, and the items every honest server must deliver.
pub(crate) struct Requests {
    /// Per server, its requests in submission order.
    pub(crate) inputs: Vec<Vec<Vec<u8>>>,
    /// Every request.
    pub(crate) all: Vec<Vec<u8>>,
    /// The requests submitted to at least `t + 1` honest servers.
    pub(crate) required: Vec<Vec<u8>>,
}

/// Draws the requests of one instance: distinct (each begins with its index), each submitted
/// to a random non-empty set of servers.
pub(crate) fn draw_requests(
    parameters: GroupParameters,
    byzantine: &[ServerId],
    rng: &mut ChaCha20Rng,
    bytes_max: usize,
) -> Requests {
    let n = usize::from(parameters.servers);
    let count = rng.gen_range(1..=REQUESTS_MAX);
    let mut inputs = vec![Vec::new(); n];
    let mut all = Vec::new();
    let mut required = Vec::new();
    let everyone: Vec<ServerId> = ServerId::all(parameters.servers).collect();
    for index in 0..count {
        let len = rng.gen_range(2..=bytes_max.max(2));
        let mut request: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        request[0] = index as u8;
        let recipients = rng.gen_range(1..=n);
        let chosen: Vec<ServerId> = everyone.choose_multiple(rng, recipients).copied().collect();
        for server in &chosen {
            inputs[server.slot()].push(request.clone());
        }
        let honest = chosen.iter().filter(|s| !byzantine.contains(s)).count();
        if honest > usize::from(parameters.faults) {
            required.push(request.clone());
        }
        all.push(request);
    }
    Requests {
        inputs,
        all,
        required,
    }
}

/// The plan of an atomic-broadcast instance ([`draw_requests`] of at most `bytes_max` bytes,
/// called `what` in the note): every request submitted to `t + 1` honest servers must be
/// delivered, in one sequence; with `only_submitted`, nothing else may be delivered.
pub(crate) fn plan_requests(
    parameters: GroupParameters,
    byzantine: &[ServerId],
    rng: &mut ChaCha20Rng,
    (bytes_max, what, only_submitted): (usize, &str, bool),
) -> Plan<Vec<Vec<u8>>, ()> {
    let requests = draw_requests(parameters, byzantine, rng, bytes_max);
    let note = format!(
        "{} {what}, {} of them submitted to t + 1 honest servers",
        requests.all.len(),
        requests.required.len()
    );
    Plan {
        setup: (),
        inputs: requests
            .inputs
            .into_iter()
            .map(|list| (!list.is_empty()).then_some(list))
            .collect(),
        spec: Spec {
            required: None,
            allowed: only_submitted.then_some(requests.all),
            termination: Termination::Items(requests.required),
            sequence: true,
        },
        note,
    }
}

/// Submits every request of `input` with `submit`, gathering what the submissions produced.
pub(crate) fn submit_all(
    input: &[Vec<u8>],
    mut submit: impl FnMut(Vec<u8>) -> Result<Effects<Message>, String>,
) -> Result<Effects<Message>, String> {
    let mut effects = Effects::default();
    for request in input {
        let more = submit(request.clone())?;
        effects.messages.extend(more.messages);
        effects.outputs.extend(more.outputs);
        effects.faults.extend(more.faults);
    }
    Ok(effects)
}

/// The requests of an equivocating server's twin: the same ones in reverse order (its batches
/// then differ from the real ones while carrying nothing new).
pub(crate) fn twin_requests<T: Clone>(input: &[T]) -> Option<Vec<T>> {
    (input.len() > 1).then(|| input.iter().rev().cloned().collect())
}

/// Whether `abc` still checks what arrives for `instance` (a round's child or below) on `slot`
/// ([`Protocol::still_checks`]).
pub fn still_checks(abc: &Abc, instance: &InstanceId, slot: Option<(u8, u32)>) -> bool {
    let Some(round) = instance
        .label_below(abc.instance())
        .and_then(|label| label.strip_prefix('r'))
        .and_then(|round| round.parse::<u64>().ok())
    else {
        // The instance's own catch-up messages, or an unknown child (always a fault).
        return true;
    };
    if !abc.keeps_round(round) {
        return false;
    }
    let Some(round_id) = abc.instance().child(&format!("r{round}")) else {
        return true;
    };
    match instance.label_below(&round_id) {
        Some("mvba") => abc
            .agreement_of(round)
            .is_none_or(|mvba| mvba_adapter::still_checks(mvba, instance, slot)),
        // A batch SEND of a delivered round is no longer looked at.
        _ => slot.is_none() || round >= abc.round(),
    }
}

/// A batch broadcast's SEND with one request dropped, or one added if it carries none: another
/// valid batch.
pub(crate) fn conflicting_batch(message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
    let mut out = message.clone();
    let Body::Cbc(cbc::Message::Send { body }) = &mut out.body else {
        return None;
    };
    let mut batch = Batch::from_bytes(body).ok()?;
    if batch.requests.pop().is_none() {
        batch.requests.push(vec![rng.r#gen(), rng.r#gen()]);
    }
    *body = batch.to_bytes();
    Some(out)
}

/// Whether `message` is a batch broadcast's message (`.../r<r>/b<j>`).
pub(crate) fn is_batch(message: &Message) -> bool {
    message
        .instance
        .as_str()
        .rsplit('/')
        .next()
        .is_some_and(|label| label.starts_with('b'))
}

fn output(delivered: abc::Delivered, count: &mut u64) -> Output {
    let consecutive = delivered.position == *count;
    *count += 1;
    Output {
        value: delivered.request,
        round: u32::try_from(delivered.round).ok(),
        checks: vec![("positions follow each other without gaps", consecutive)],
    }
}

impl Protocol for AbcAdapter {
    type Message = Message;
    type Node = AbcNode;
    type Input = Vec<Vec<u8>>;
    type Setup = ();

    fn name(&self) -> &'static str {
        "abc"
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
        plan_requests(
            parameters,
            byzantine,
            rng,
            (REQUEST_BYTES_MAX, "requests", false),
        )
    }

    fn create(
        &self,
        _party: &Party,
        instance: &InstanceId,
        _plan: &Plan<Vec<Vec<u8>>, ()>,
    ) -> AbcNode {
        AbcNode {
            abc: Abc::new(instance.clone(), AbcConfig::default()),
            delivered: 0,
        }
    }

    fn start(
        &self,
        node: &mut AbcNode,
        party: &mut Party,
        input: &Vec<Vec<u8>>,
    ) -> Result<Effects<Message>, String> {
        submit_all(input, |request| {
            let step = node
                .abc
                .submit(party, request)
                .map_err(|error| format!("{error:?}"))?;
            Ok(Effects::from_step(step, |d| output(d, &mut node.delivered)))
        })
    }

    fn handle(
        &self,
        node: &mut AbcNode,
        party: &mut Party,
        from: ServerId,
        message: &Message,
    ) -> Effects<Message> {
        let step = node.abc.handle_message(party, from, message);
        Effects::from_step(step, |d| output(d, &mut node.delivered))
    }

    /// Atomic broadcast never finishes: an idle group just sends nothing.
    fn terminated(&self, _node: &AbcNode) -> bool {
        false
    }

    fn still_checks(&self, node: &AbcNode, instance: &InstanceId, slot: Option<(u8, u32)>) -> bool {
        still_checks(&node.abc, instance, slot)
    }

    fn classify(&self, message: &Message) -> Class {
        MvbaAdapter.classify(message)
    }

    fn twin_input(&self, input: &Vec<Vec<u8>>, _rng: &mut ChaCha20Rng) -> Option<Vec<Vec<u8>>> {
        twin_requests(input)
    }

    fn conflict(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        if is_batch(message) {
            return conflicting_batch(message, rng);
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
