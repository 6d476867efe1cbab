//! Many seeds: runs them on a few threads and gathers what each found. Results come back in
//! seed order whatever the threads did, so a batch's output is as deterministic as its runs.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{BatchMetrics, RunMetrics};
use crate::protocol::Protocol;
use crate::record::Violation;
use crate::run::{RunConfig, RunError, run};
use crate::scenario::Adversary;

/// Which adversary each seed gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdversaryChoice {
    /// The same for every seed.
    One(Adversary),
    /// Seed `s` gets `list[s % list.len()]`: consecutive seeds cover every combination, and a
    /// seed's adversary does not depend on where the batch started.
    Spread(Vec<Adversary>),
}

impl AdversaryChoice {
    /// The adversary of `seed`.
    pub fn for_seed(&self, seed: u64) -> Adversary {
        match self {
            AdversaryChoice::One(adversary) => *adversary,
            AdversaryChoice::Spread(list) => list[(seed % list.len() as u64) as usize],
        }
    }
}

/// What one seed found (the run's record is dropped to keep batches small).
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    /// The configuration it ran.
    pub config: RunConfig,
    /// What the checkers found.
    pub violations: Vec<Violation>,
    /// Its numbers.
    pub metrics: RunMetrics,
    /// Its trace hash.
    pub trace_hash: [u8; 32],
    /// Its description.
    pub notes: Vec<String>,
    /// Wall-clock time the run took (reported, never part of a run).
    pub elapsed: Duration,
}

/// Runs `template` with each seed of `seeds` (the template's seed and adversary are replaced),
/// on `threads` threads.
pub fn run_seeds<P: Protocol>(
    adapter: &P,
    template: &RunConfig,
    seeds: Range<u64>,
    adversaries: &AdversaryChoice,
    threads: usize,
) -> Result<Vec<SeedOutcome>, RunError> {
    let next = AtomicU64::new(seeds.start);
    let results: Mutex<Vec<Result<SeedOutcome, RunError>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let mut config = template.clone();
                    config.seed = seed;
                    config.adversary = adversaries.for_seed(seed);
                    let started = Instant::now();
                    let outcome = run(adapter, &config).map(|report| SeedOutcome {
                        config,
                        violations: report.violations,
                        metrics: report.metrics,
                        trace_hash: report.trace_hash,
                        notes: report.notes,
                        elapsed: started.elapsed(),
                    });
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    let mut outcomes = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    outcomes.sort_by_key(|o| o.config.seed);
    Ok(outcomes)
}

/// Summarises outcomes.
pub fn summarise<'a>(outcomes: impl IntoIterator<Item = &'a SeedOutcome>) -> BatchMetrics {
    BatchMetrics::from_runs(
        outcomes
            .into_iter()
            .map(|o| (&o.metrics, !o.violations.is_empty())),
    )
}
