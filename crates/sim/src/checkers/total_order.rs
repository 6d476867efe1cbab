//! Total order (atomic broadcast): any two honest servers deliver the same sequence, position by
//! position, as far as both got.

use super::show;
use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "total-order";

/// Checks every sequence instance.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    for instance in record.instances.iter().filter(|i| i.spec.sequence) {
        let servers: Vec<_> = instance.outputs.iter().collect();
        for (i, (a, outputs_a)) in servers.iter().enumerate() {
            for (b, outputs_b) in servers.iter().skip(i + 1) {
                let diverge = outputs_a
                    .iter()
                    .zip(outputs_b.iter())
                    .position(|(x, y)| x.value != y.value);
                if let Some(position) = diverge {
                    violations.push(Violation {
                        checker: NAME,
                        detail: format!(
                            "{}: at position {position} {a} delivered {} but {b} delivered {}",
                            instance.id,
                            show(&outputs_a[position].value),
                            show(&outputs_b[position].value)
                        ),
                    });
                }
            }
        }
    }
    violations
}
