//! Termination within the message budget: every honest server outputs when the protocol
//! promises it (ABA and MVBA always; RBC and CBC with an honest sender), with a Byzantine RBC
//! sender all honest servers output or none does (totality), and in atomic broadcast every
//! honest server delivers every request submitted to `t + 1` honest servers. The run ends when
//! nothing is in flight or the delivery budget is spent, so "eventually" means "within the
//! budget".

use std::collections::BTreeSet;

use super::show;
use crate::protocol::Termination;
use crate::record::{RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "termination";

/// Checks every instance.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    let mut violations = Vec::new();
    let honest = record.honest();
    let why = if record.budget_exhausted {
        "the delivery budget ran out"
    } else {
        "no message was left in flight"
    };
    for instance in &record.instances {
        let missing: Vec<String> = honest
            .iter()
            .filter(|s| instance.outputs.get(s).is_none_or(|o| o.is_empty()))
            .map(|s| s.get().to_string())
            .collect();
        let violated = match &instance.spec.termination {
            Termination::All => !missing.is_empty(),
            Termination::AllOrNone => !missing.is_empty() && missing.len() < honest.len(),
            Termination::Optional => false,
            Termination::Items(items) => {
                for server in &honest {
                    let delivered: BTreeSet<&Vec<u8>> = instance
                        .outputs
                        .get(server)
                        .into_iter()
                        .flatten()
                        .map(|output| &output.value)
                        .collect();
                    let lacking = items
                        .iter()
                        .filter(|item| !delivered.contains(item))
                        .count();
                    if lacking > 0 {
                        violations.push(Violation {
                            checker: NAME,
                            detail: format!(
                                "{}: honest {server} lacks {lacking} of the {} requests it must \
                                 deliver (first: {}) when {why}",
                                instance.id,
                                items.len(),
                                items
                                    .iter()
                                    .find(|item| !delivered.contains(item))
                                    .map_or_else(String::new, |item| show(item))
                            ),
                        });
                    }
                }
                false
            }
        };
        if violated {
            violations.push(Violation {
                checker: NAME,
                detail: format!(
                    "{}: honest servers [{}] have no output when {why}",
                    instance.id,
                    missing.join(", ")
                ),
            });
        }
    }
    violations
}
