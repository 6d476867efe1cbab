//! Agreement: no two honest servers output different values in one instance (RBC, CBC
//! consistency, ABA, MVBA). Sequences (atomic broadcast) are checked by `total_order`.

use super::show;
use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "agreement";

/// Checks every single-output instance.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    for instance in record.instances.iter().filter(|i| !i.spec.sequence) {
        let mut first: Option<(sintra_crypto::ServerId, &[u8])> = None;
        for (server, outputs) in &instance.outputs {
            let Some(output) = outputs.first() else {
                continue;
            };
            match first {
                None => first = Some((*server, &output.value)),
                Some((other, value)) if value != output.value.as_slice() => {
                    violations.push(Violation {
                        checker: NAME,
                        detail: format!(
                            "{}: {other} output {} but {server} output {}",
                            instance.id,
                            show(value),
                            show(&output.value)
                        ),
                    });
                }
                Some(_) => {}
            }
        }
    }
    violations
}
