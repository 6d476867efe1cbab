//! What a run and a batch of runs cost and produced.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::Detectability;

/// The numbers of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunMetrics {
    /// Events delivered (messages and inputs).
    pub deliveries: u64,
    /// Messages sent between distinct servers, by everyone.
    pub messages: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// Messages sent between distinct servers by honest servers: the protocol's cost.
    pub honest_messages: u64,
    /// Their encoded bytes.
    pub honest_bytes: u64,
    /// Items delivered: instances in which some honest server output (single-shot protocols),
    /// or distinct items delivered (sequences).
    pub items: u64,
    /// Honest outputs in total.
    pub outputs: u64,
    /// The highest round of an honest output (ABA).
    pub max_round: Option<u32>,
    /// Deviations that reached honest servers and must be recorded: (delivered, recorded).
    pub must_deviations: (u64, u64),
    /// Deviations that reached honest servers and may go unnoticed: (delivered, recorded).
    pub may_deviations: (u64, u64),
}

impl RunMetrics {
    pub(crate) fn set_deviations(&mut self, counts: &BTreeMap<Detectability, (usize, usize)>) {
        let get = |d| {
            counts
                .get(&d)
                .map_or((0, 0), |(a, b)| (*a as u64, *b as u64))
        };
        self.must_deviations = get(Detectability::Must);
        self.may_deviations = get(Detectability::May);
    }
}

/// The numbers of a batch of runs (one row of `sintra sim`'s table).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchMetrics {
    /// Runs.
    pub seeds: u64,
    /// Runs with at least one violation.
    pub violations: u64,
    /// Mean of the runs' highest rounds (runs with rounds only).
    pub mean_rounds: Option<f64>,
    /// Highest round of any run.
    pub max_rounds: Option<u32>,
    /// Honest messages per delivered item.
    pub messages_per_delivery: Option<f64>,
    /// Honest bytes per delivered item.
    pub bytes_per_delivery: Option<f64>,
    /// Must-deviations delivered and recorded.
    pub must_deviations: (u64, u64),
    /// May-deviations delivered and recorded.
    pub may_deviations: (u64, u64),
}

impl BatchMetrics {
    /// Summarises runs: `(metrics, violated)` each.
    pub fn from_runs<'a>(runs: impl IntoIterator<Item = (&'a RunMetrics, bool)>) -> Self {
        let mut out = Self::default();
        let (mut round_sum, mut round_runs) = (0u64, 0u64);
        let (mut messages, mut bytes, mut items) = (0u64, 0u64, 0u64);
        for (metrics, violated) in runs {
            out.seeds += 1;
            out.violations += u64::from(violated);
            if let Some(round) = metrics.max_round {
                round_sum += u64::from(round);
                round_runs += 1;
                out.max_rounds = Some(out.max_rounds.map_or(round, |m| m.max(round)));
            }
            messages += metrics.honest_messages;
            bytes += metrics.honest_bytes;
            items += metrics.items;
            out.must_deviations.0 += metrics.must_deviations.0;
            out.must_deviations.1 += metrics.must_deviations.1;
            out.may_deviations.0 += metrics.may_deviations.0;
            out.may_deviations.1 += metrics.may_deviations.1;
        }
        if round_runs > 0 {
            out.mean_rounds = Some(round_sum as f64 / round_runs as f64);
        }
        if items > 0 {
            out.messages_per_delivery = Some(messages as f64 / items as f64);
            out.bytes_per_delivery = Some(bytes as f64 / items as f64);
        }
        out
    }
}
