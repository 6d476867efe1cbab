//! No honest server is ever recorded as faulty: faults are recorded only on proof of
//! misbehaviour, and an honest server never misbehaves — however the network orders, delays or
//! holds its messages.

use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "honest-not-faulty";

/// Checks every recorded fault.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    record
        .faults
        .iter()
        .filter(|f| record.is_honest(f.fault.server))
        .map(|f| Violation {
            checker: NAME,
            detail: format!(
                "{} recorded {:?} against honest {} in {} (delivery {})",
                f.recorder, f.fault.kind, f.fault.server, f.fault.instance, f.at
            ),
        })
        .collect()
}
