//! Confidentiality before ordering (secure causal atomic broadcast, CKPS01 §6): no honest server
//! sends a decryption share for a ciphertext before that ciphertext's position is fixed at that
//! server — otherwise `t + 1` shares could reveal a request while the adversary can still
//! decide where (or whether) it is ordered. Judged by the adapter from the server's state when
//! it sent the share ([`crate::Protocol::early_release`]).

use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "confidentiality";

/// Checks every decryption share an honest server sent.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    record
        .early_releases
        .iter()
        .filter(|release| release.checker == NAME)
        .map(|release| Violation {
            checker: NAME,
            detail: format!("honest {}: {}", release.server, release.detail),
        })
        .collect()
}
