//! What servers sign in binary agreement, and the checks of those signatures.
//!
//! Every statement is signed under the `agreement` key set (BLS, threshold `n - t`) in the
//! context `{purpose tag, instance id}`; the round and value are the signed payload. So a share
//! or signature of one instance, purpose, round or value verifies in no other.

use sintra_crypto::bls::{Signature, SignatureShare};
use sintra_crypto::encoding::Encode;
use sintra_crypto::{CombineError, Combined, Context, ServerId};

use super::message::Vote;
use crate::mutation::{self, Mutation};
use crate::{InstanceId, Party};

/// Purpose tag of pre-process votes.
pub(super) const PURPOSE_PRE_PROCESS: &str = "aba/pre-process";
/// Purpose tag of pre-votes.
pub(super) const PURPOSE_PRE_VOTE: &str = "aba/pre-vote";
/// Purpose tag of main-votes.
pub(super) const PURPOSE_MAIN_VOTE: &str = "aba/main-vote";
/// Purpose tag of the coin; its instance bytes are `ID ‖ round` (round as `u32`, big-endian).
pub(super) const PURPOSE_COIN: &str = "aba/coin";

/// Cache label of agreement-key signatures (the cache is shared by every protocol of a server).
const CACHE_SIGNATURE: &[u8] = b"aba/agreement-signature";
/// Cache label of a round-1 justification made of `t + 1` pre-process shares.
const CACHE_PRE_PROCESS_SHARES: &[u8] = b"aba/pre-process-shares";

/// A statement signed under the agreement key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Statement {
    /// `pre-process(b)`.
    PreProcess(bool),
    /// `pre-vote(r, b)`.
    PreVote(u32, bool),
    /// `main-vote(r, v)`.
    MainVote(u32, Vote),
}

impl Statement {
    fn purpose(self) -> &'static str {
        match self {
            Statement::PreProcess(_) => PURPOSE_PRE_PROCESS,
            Statement::PreVote(..) => PURPOSE_PRE_VOTE,
            Statement::MainVote(..) => PURPOSE_MAIN_VOTE,
        }
    }

    /// The signed payload: `b` (one byte), or `r` (`u32`, big-endian) then `b`/`v` (one byte).
    fn payload(self) -> Vec<u8> {
        match self {
            Statement::PreProcess(value) => vec![u8::from(value)],
            Statement::PreVote(round, value) => {
                let mut out = round.to_be_bytes().to_vec();
                out.push(u8::from(value));
                out
            }
            Statement::MainVote(round, vote) => {
                let mut out = round.to_be_bytes().to_vec();
                vote.encode_to(&mut out);
                out
            }
        }
    }

    fn context(self, instance: &InstanceId) -> Context<'_> {
        if mutation::active(Mutation::ForgetInstanceBinding) {
            // The deliberate bug: a statement of one instance verifies in every other.
            return Context::new(self.purpose(), mutation::FORGOTTEN_INSTANCE);
        }
        Context::new(self.purpose(), instance.as_bytes())
    }
}

/// This server's share on `statement`.
pub(super) fn sign(party: &Party, instance: &InstanceId, statement: Statement) -> SignatureShare {
    party
        .keys
        .agreement
        .sign(&statement.context(instance), &statement.payload())
}

fn signature_cache_parts<'a>(
    instance: &'a InstanceId,
    statement: Statement,
    payload: &'a [u8],
    signature: &'a [u8],
) -> [&'a [u8]; 5] {
    [
        CACHE_SIGNATURE,
        statement.purpose().as_bytes(),
        instance.as_bytes(),
        payload,
        signature,
    ]
}

/// Whether `signature` is the `n - t` signature on `statement` (verified once per server).
pub(super) fn verify_signature(
    party: &mut Party,
    instance: &InstanceId,
    statement: Statement,
    signature: &Signature,
) -> bool {
    let payload = statement.payload();
    let bytes = signature.to_bytes();
    let parts = signature_cache_parts(instance, statement, &payload, &bytes);
    let group = &party.group;
    party.cache.check(&parts, || {
        group
            .agreement
            .verify(&statement.context(instance), &payload, signature)
            .is_ok()
    })
}

/// Combines shares on `statement` optimistically; a signature that comes out is remembered as
/// verified (the combination checked it), so this server's own justifications are not checked
/// again when they come back.
pub(super) fn combine(
    party: &mut Party,
    instance: &InstanceId,
    statement: Statement,
    shares: &[SignatureShare],
) -> Result<Combined<Signature>, CombineError> {
    let payload = statement.payload();
    let combined = party
        .group
        .agreement
        .combine(&statement.context(instance), &payload, shares)?;
    let bytes = combined.value.to_bytes();
    let parts = signature_cache_parts(instance, statement, &payload, &bytes);
    party.cache.check(&parts, || true);
    Ok(combined)
}

/// The senders of invalid shares among `shares`, all on `statement` (one batch check).
pub(super) fn invalid_shares(
    party: &Party,
    instance: &InstanceId,
    statement: Statement,
    shares: &[SignatureShare],
) -> Vec<ServerId> {
    if shares.is_empty() {
        return Vec::new();
    }
    party.group.agreement.find_invalid_shares(
        &statement.context(instance),
        &statement.payload(),
        shares,
    )
}

/// Whether `shares` is a round-1 justification of `pre-vote(1, value)` in plain mode: exactly
/// `t + 1` valid shares on `pre-process(value)` in ascending order of distinct servers.
pub(super) fn verify_pre_process_shares(
    party: &mut Party,
    instance: &InstanceId,
    value: bool,
    shares: &[SignatureShare],
) -> bool {
    check_pre_process_shares(party, instance, value, shares, false)
}

/// Records in the cache that `shares` (this server's own justification, made of shares it
/// checked) is valid, so its loop-back copy is not checked again.
pub(super) fn remember_pre_process_shares(
    party: &mut Party,
    instance: &InstanceId,
    value: bool,
    shares: &[SignatureShare],
) {
    check_pre_process_shares(party, instance, value, shares, true);
}

fn check_pre_process_shares(
    party: &mut Party,
    instance: &InstanceId,
    value: bool,
    shares: &[SignatureShare],
    trusted: bool,
) -> bool {
    let needed = usize::from(party.faults()) + 1;
    let ascending = shares.windows(2).all(|pair| match pair {
        [a, b] => a.id() < b.id(),
        _ => true,
    });
    if shares.len() != needed || !ascending {
        return false;
    }
    let statement = Statement::PreProcess(value);
    let payload = statement.payload();
    let mut encoded = Vec::with_capacity(shares.len() * 50);
    for share in shares {
        share.encode_to(&mut encoded);
    }
    let parts: [&[u8]; 4] = [
        CACHE_PRE_PROCESS_SHARES,
        instance.as_bytes(),
        &payload,
        &encoded,
    ];
    if trusted {
        return party.cache.check(&parts, || true);
    }
    let group = &party.group;
    party.cache.check(&parts, || {
        group
            .agreement
            .find_invalid_shares(&statement.context(instance), &payload, shares)
            .is_empty()
    })
}

/// The instance bytes of the coin of `round`: `ID ‖ round` (`u32`, big-endian). The id is
/// length-prefixed inside [`Context::bind`] and the round has a fixed width, so distinct
/// `(ID, round)` pairs name distinct coins.
pub(super) fn coin_name(instance: &InstanceId, round: u32) -> Vec<u8> {
    let mut name = instance.as_bytes().to_vec();
    name.extend_from_slice(&round.to_be_bytes());
    name
}
