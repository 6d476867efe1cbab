//! Integrity: an honest server outputs at most once per instance (per position in a sequence,
//! and no item twice), and nothing invented — only values the protocol could have been given.

use std::collections::BTreeSet;

use super::show;
use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "integrity";

/// Checks every honest server's outputs.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    for instance in &record.instances {
        for (server, outputs) in &instance.outputs {
            if !instance.spec.sequence && outputs.len() > 1 {
                violations.push(Violation {
                    checker: NAME,
                    detail: format!("{}: {server} output {} times", instance.id, outputs.len()),
                });
            }
            if instance.spec.sequence {
                let mut seen = BTreeSet::new();
                for output in outputs {
                    if !seen.insert(&output.value) {
                        violations.push(Violation {
                            checker: NAME,
                            detail: format!(
                                "{}: {server} delivered {} twice",
                                instance.id,
                                show(&output.value)
                            ),
                        });
                    }
                }
            }
            if let Some(allowed) = &instance.spec.allowed {
                for output in outputs {
                    if !allowed.contains(&output.value) {
                        violations.push(Violation {
                            checker: NAME,
                            detail: format!(
                                "{}: {server} output {}, which no server was given",
                                instance.id,
                                show(&output.value)
                            ),
                        });
                    }
                }
            }
        }
    }
    violations
}
