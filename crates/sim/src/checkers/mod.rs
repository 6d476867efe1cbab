//! One checker per property (after openraft's `invariants/`). Each reads the [`RunRecord`] of a
//! finished run and returns the violations it finds, with enough detail to start debugging; the
//! replay command reproduces the run.

use sha2::Digest as _;

use crate::record::{RunRecord, Violation};

pub mod agreement;
pub mod coin_secrecy;
pub mod confidentiality;
pub mod deviations_recorded;
pub mod honest_not_faulty;
pub mod integrity;
pub mod termination;
pub mod total_order;
pub mod validity;

/// A checker: a name and a function from the record to its violations.
pub type Checker = (&'static str, fn(&RunRecord) -> Vec<Violation>);

/// Every checker, in the order reports list them.
pub const ALL: [Checker; 9] = [
    (agreement::NAME, agreement::check),
    (validity::NAME, validity::check),
    (integrity::NAME, integrity::check),
    (total_order::NAME, total_order::check),
    (termination::NAME, termination::check),
    (honest_not_faulty::NAME, honest_not_faulty::check),
    (deviations_recorded::NAME, deviations_recorded::check),
    (coin_secrecy::NAME, coin_secrecy::check),
    (confidentiality::NAME, confidentiality::check),
];

/// Runs every checker.
pub fn check_all(record: &RunRecord) -> Vec<Violation> {
    let mut violations: Vec<Violation> = record
        .start_errors
        .iter()
        .map(|error| Violation {
            checker: "start",
            detail: format!("a protocol refused its input: {error}"),
        })
        .collect();
    for (_, checker) in ALL {
        violations.extend(checker(record));
    }
    violations
}

/// A short, stable rendering of a value for violation messages.
pub(crate) fn show(value: &[u8]) -> String {
    if value.len() <= 8 {
        format!("0x{}", hex::encode(value))
    } else {
        // The prefix alone may hide the difference (a conflicting body differs in one byte).
        let digest = sha2::Sha256::digest(value);
        format!(
            "0x{}..({} bytes, sha256 {})",
            hex::encode(&value[..8]),
            value.len(),
            hex::encode(&digest[..4])
        )
    }
}
