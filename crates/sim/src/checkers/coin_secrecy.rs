//! Coin secrecy: an honest server releases its share of a coin only once the coin may be known.
//! ABA: the round-`r` share only after the server's round-`r` main-vote (CKS00: the coin must be
//! unpredictable while votes of the round can still be steered) — checked on the honest
//! servers' sends, in order, as the adapter classifies them. MVBA: the permutation share only
//! after `n - t` commits were delivered (CKPS01 §4) — judged by the adapter from the server's
//! state when it sent the share ([`crate::Protocol::early_release`]).

use std::collections::BTreeSet;

use crate::protocol::VotePhase;
use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "coin-secrecy";

/// Checks every honest coin share.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    let mut main_voted = BTreeSet::new();
    let mut violations: Vec<Violation> = record
        .early_releases
        .iter()
        .filter(|release| release.checker == NAME)
        .map(|release| Violation {
            checker: NAME,
            detail: format!("honest {}: {}", release.server, release.detail),
        })
        .collect();
    for send in &record.honest_sends {
        if let Some(vote) = send.class.vote
            && vote.phase == VotePhase::Main
        {
            main_voted.insert((send.server, send.instance.clone(), vote.round));
        }
        if let Some(round) = send.class.coin_round
            && !main_voted.contains(&(send.server, send.instance.clone(), round))
        {
            violations.push(Violation {
                checker: NAME,
                detail: format!(
                    "{}: honest {} released its round-{round} coin share before its \
                     round-{round} main-vote",
                    send.instance, send.server
                ),
            });
        }
    }
    violations
}
