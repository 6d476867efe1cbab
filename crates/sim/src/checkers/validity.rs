//! Validity: an honest output is the value the protocol promises (an honest sender's body; the
//! honest servers' common input in agreement), and its evidence checks out (a CBC delivery
//! certificate verifies, a biased-ABA decision 1 carries a proof satisfying the predicate).

use super::show;
use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "validity";

/// Checks every honest output.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    for instance in &record.instances {
        for (server, outputs) in &instance.outputs {
            for output in outputs {
                if let Some(required) = &instance.spec.required
                    && !instance.spec.sequence
                    && &output.value != required
                {
                    violations.push(Violation {
                        checker: NAME,
                        detail: format!(
                            "{}: {server} output {}, validity requires {}",
                            instance.id,
                            show(&output.value),
                            show(required)
                        ),
                    });
                }
                for (what, holds) in &output.checks {
                    if !holds {
                        violations.push(Violation {
                            checker: NAME,
                            detail: format!(
                                "{}: {server} output {} whose evidence fails: {what}",
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
