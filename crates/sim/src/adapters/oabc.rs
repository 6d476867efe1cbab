//! Adapter for optimistic atomic broadcast (`sintra_protocols::oabc`).
//!
//! Requests as for atomic broadcast ([`super::abc`]): 1 to 6 per instance, each submitted to a
//! random set of servers. Checked: total order, each request at most once, positions without
//! gaps, every request submitted to `t + 1` honest servers delivered everywhere. The patience
//! timer of an honest server runs while it has pending requests and has not complained about its
//! current epoch; the network fires it whenever it picks it (early timers are the adversary's
//! to use: safety must hold regardless). A Byzantine leader equivocates with conflicting
//! `ORDER`s; the recovery's children (`<id>/abc/…`) are exposed through the abc adapter.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use sintra_crypto::ServerId;
use sintra_crypto::coin::CoinShare;
use sintra_crypto::dealer::GroupParameters;
use sintra_crypto::encoding::{Decode, Encode};
use sintra_protocols::abc::Batch;
use sintra_protocols::oabc::{self, Oabc, OabcConfig};
use sintra_protocols::{Body, InstanceId, Message, Party};

use super::abc::{self as abc_adapter, twin_requests};
use super::mvba::MvbaAdapter;
use crate::protocol::{Class, Effects, Output, Plan, Protocol};
use crate::scenario::{NetworkKind, Strategy};

/// The optimistic atomic broadcast adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct OabcAdapter;

/// One server's instance and how many requests it delivered.
pub struct OabcNode {
    oabc: Oabc,
    delivered: u64,
}

fn output(delivered: oabc::Delivered, count: &mut u64) -> Output {
    let consecutive = delivered.position == *count;
    *count += 1;
    Output {
        value: delivered.request,
        // The epoch: the table's round columns then show how many leaders a run went through.
        round: u32::try_from(delivered.epoch).ok(),
        checks: vec![("positions follow each other without gaps", consecutive)],
    }
}

/// An ORDER with one request dropped, or one added if it carries none: another valid batch for
/// the same sequence number (a leader's equivocation).
fn conflicting_order(message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
    let mut out = message.clone();
    let Body::Oabc(oabc::Message::Order { batch, .. }) = &mut out.body else {
        return None;
    };
    let mut decoded = Batch::from_bytes(batch).ok()?;
    if decoded.requests.pop().is_none() {
        decoded.requests.push(vec![rng.r#gen(), rng.r#gen()]);
    }
    *batch = decoded.to_bytes();
    Some(out)
}

impl Protocol for OabcAdapter {
    type Message = Message;
    type Node = OabcNode;
    type Input = Vec<Vec<u8>>;
    type Setup = ();

    fn name(&self) -> &'static str {
        "oabc"
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
            (abc_adapter::REQUEST_BYTES_MAX, "requests", false),
        )
    }

    fn create(
        &self,
        _party: &Party,
        instance: &InstanceId,
        _plan: &Plan<Vec<Vec<u8>>, ()>,
    ) -> OabcNode {
        OabcNode {
            oabc: Oabc::new(instance.clone(), OabcConfig::default()),
            delivered: 0,
        }
    }

    fn start(
        &self,
        node: &mut OabcNode,
        party: &mut Party,
        input: &Vec<Vec<u8>>,
    ) -> Result<Effects<Message>, String> {
        abc_adapter::submit_all(input, |request| {
            let step = node
                .oabc
                .submit(party, request)
                .map_err(|error| format!("{error:?}"))?;
            Ok(Effects::from_step(step, |d| output(d, &mut node.delivered)))
        })
    }

    fn handle(
        &self,
        node: &mut OabcNode,
        party: &mut Party,
        from: ServerId,
        message: &Message,
    ) -> Effects<Message> {
        let step = node.oabc.handle_message(party, from, message);
        Effects::from_step(step, |d| output(d, &mut node.delivered))
    }

    fn patience_running(&self, node: &OabcNode) -> bool {
        node.oabc.waiting()
    }

    fn patience_out(&self, node: &mut OabcNode, party: &mut Party) -> Effects<Message> {
        let step = node.oabc.suspect(party);
        Effects::from_step(step, |d| output(d, &mut node.delivered))
    }

    /// Atomic broadcast never finishes: an idle group just sends nothing.
    fn terminated(&self, _node: &OabcNode) -> bool {
        false
    }

    /// The recovery's children as in atomic broadcast. OABC's own messages are not all checked
    /// on arrival: prepare shares are combined optimistically and checked one by one only when
    /// the combination fails, and shares for a batch certified already are never looked at.
    fn still_checks(
        &self,
        node: &OabcNode,
        instance: &InstanceId,
        slot: Option<(u8, u32)>,
    ) -> bool {
        if instance.is_within(node.oabc.recovery().instance()) {
            abc_adapter::still_checks(node.oabc.recovery(), instance, slot)
        } else {
            false
        }
    }

    fn classify(&self, message: &Message) -> Class {
        MvbaAdapter.classify(message)
    }

    fn twin_input(&self, input: &Vec<Vec<u8>>, _rng: &mut ChaCha20Rng) -> Option<Vec<Vec<u8>>> {
        twin_requests(input)
    }

    fn conflict(&self, message: &Message, rng: &mut ChaCha20Rng) -> Option<Message> {
        if let Some(order) = conflicting_order(message, rng) {
            return Some(order);
        }
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
