//! Every detectable Byzantine deviation is recorded against its sender: for each deviation the
//! receiver can prove ([`Detectability::Must`]), the receiver recorded at least one fault
//! against that sender. Deviations a receiver may legitimately never look at
//! ([`Detectability::May`]) are counted in the metrics, not checked; see `docs/sim.md`.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::{Detectability, RunRecord, Violation};

/// The checker's name.
pub const NAME: &str = "deviations-recorded";

/// Checks every `Must` deviation.
pub fn check(record: &RunRecord) -> Vec<Violation> {
    let accused: BTreeSet<_> = record
        .faults
        .iter()
        .map(|f| (f.recorder, f.fault.server))
        .collect();
    let mut missed = BTreeMap::new();
    for deviation in &record.deviations {
        if deviation.detectability == Detectability::Must
            && !accused.contains(&(deviation.receiver, deviation.sender))
        {
            let entry = missed
                .entry((deviation.sender, deviation.receiver, deviation.kind))
                .or_insert((0usize, deviation.at));
            entry.0 += 1;
        }
    }
    missed
        .into_iter()
        .map(|((sender, receiver, kind), (count, at))| Violation {
            checker: NAME,
            detail: format!(
                "{receiver} received {count} {kind:?} deviation(s) from Byzantine {sender} \
                 (first at delivery {at}) and recorded no fault against it"
            ),
        })
        .collect()
}

/// `(delivered, recorded)` counts of the deviations of each detectability: how many reached an
/// honest server, and how many of those the receiver recorded a fault for.
pub fn detection_counts(record: &RunRecord) -> BTreeMap<Detectability, (usize, usize)> {
    let accused: BTreeSet<_> = record
        .faults
        .iter()
        .map(|f| (f.recorder, f.fault.server))
        .collect();
    let mut counts = BTreeMap::new();
    for deviation in &record.deviations {
        let entry = counts.entry(deviation.detectability).or_insert((0, 0));
        entry.0 += 1;
        if accused.contains(&(deviation.receiver, deviation.sender)) {
            entry.1 += 1;
        }
    }
    counts
}
