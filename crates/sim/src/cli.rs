//! `sintra sim`: runs a batch of seeds of one protocol and prints a table (or one JSON object),
//! the replay command of every failing seed, and exits non-zero on any violation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::batch::{AdversaryChoice, SeedOutcome, run_seeds, summarise};
use crate::keys::KeySource;
use crate::metrics::BatchMetrics;
use crate::protocol::Protocol;
use crate::run::{RunConfig, RunError};
use crate::scenario::Adversary;

/// Failing seeds printed in full (the rest are counted).
const FAILURES_SHOWN_MAX: usize = 20;

/// Arguments of `sintra sim`.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// The protocol: rbc, cbc, aba, mvba, abc, oabc or scabc.
    #[arg(long)]
    pub protocol: String,
    /// Number of servers `n`.
    #[arg(long, default_value_t = 4)]
    pub servers: u16,
    /// Faults tolerated `t`; default: the largest with `n > 3t`.
    #[arg(long)]
    pub faults: Option<u16>,
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// `NETWORK`, `STRATEGY`, `STRATEGY+NETWORK`, or `all` (every combination, spread over
    /// the seeds). Networks: random, fifo, targeted, partition, coin-stall. Strategies: silent,
    /// equivocate, invalid-crypto, replay, opposite, bad-predicate, flood, random-bytes.
    #[arg(long, default_value = "all")]
    pub adversary: String,
    /// Byzantine servers per run (with a strategy); default: 1 to `t`, drawn per seed.
    #[arg(long)]
    pub byzantine: Option<u16>,
    /// Deliveries per run before termination is called violated; default: 400·n² per instance.
    #[arg(long)]
    pub budget: Option<u64>,
    /// Deal fresh keys from every seed instead of once per group size.
    #[arg(long)]
    pub fresh_keys: bool,
    /// Worker threads; default: the available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Print the description and every violation of each failing seed.
    #[arg(long)]
    pub verbose: bool,
}

/// Why `sintra sim` could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No such protocol.
    #[error("unknown protocol `{0}`: use rbc, cbc, aba, mvba, abc, oabc or scabc")]
    UnknownProtocol(String),
    /// An unknown adversary name.
    #[error("unknown adversary `{0}`: use NETWORK, STRATEGY, STRATEGY+NETWORK or all (see --help)")]
    Adversary(String),
    /// The adversary makes no sense against this protocol.
    #[error("adversary `{adversary}` does not apply to {protocol}")]
    Irrelevant {
        /// The adversary.
        adversary: String,
        /// The protocol.
        protocol: String,
    },
    /// An invalid configuration.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs `sintra sim`; the exit code is non-zero if any seed violated a property.
pub fn run(args: SimArgs) -> Result<ExitCode, CliError> {
    match args.protocol.as_str() {
        "rbc" => run_protocol(&crate::adapters::rbc::RbcAdapter, &args),
        "cbc" => run_protocol(&crate::adapters::cbc::CbcAdapter, &args),
        "aba" => run_protocol(&crate::adapters::aba::AbaAdapter, &args),
        "mvba" => run_protocol(&crate::adapters::mvba::MvbaAdapter, &args),
        "abc" => run_protocol(&crate::adapters::abc::AbcAdapter, &args),
        "oabc" => run_protocol(&crate::adapters::oabc::OabcAdapter, &args),
        "scabc" => run_protocol(&crate::adapters::scabc::ScabcAdapter, &args),
        other => Err(CliError::UnknownProtocol(other.to_string())),
    }
}

/// The batch for `args` with `adapter`, as the command prints it.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The protocol.
    pub protocol: String,
    /// `n`.
    pub servers: u16,
    /// The adversary argument.
    pub adversary: String,
    /// The first seed.
    pub first_seed: u64,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with a violation.
    pub violations: u64,
    /// Totals.
    pub totals: BatchMetrics,
    /// One row per adversary.
    pub rows: BTreeMap<String, BatchMetrics>,
    /// The failing seeds.
    pub failures: Vec<Failure>,
    /// Wall-clock seconds, and per seed (per thread).
    pub seconds: f64,
    /// Mean wall-clock milliseconds one run took.
    pub ms_per_seed: f64,
}

/// A failing seed.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Its adversary.
    pub adversary: String,
    /// The command that replays it.
    pub replay: String,
    /// What the checkers found.
    pub violations: Vec<String>,
    /// The run's description.
    pub notes: Vec<String>,
}

/// Parses the adversary argument against what `adapter` supports.
pub fn adversaries<P: Protocol>(adapter: &P, name: &str) -> Result<AdversaryChoice, CliError> {
    let strategies = adapter.strategies();
    let networks = adapter.networks();
    if name == "all" {
        return Ok(AdversaryChoice::Spread(Adversary::all(
            &strategies,
            &networks,
        )));
    }
    let adversary = Adversary::parse(name).ok_or_else(|| CliError::Adversary(name.to_string()))?;
    if !networks.contains(&adversary.network)
        || adversary.strategy.is_some_and(|s| !strategies.contains(&s))
    {
        return Err(CliError::Irrelevant {
            adversary: name.to_string(),
            protocol: adapter.name().to_string(),
        });
    }
    Ok(AdversaryChoice::One(adversary))
}

/// Runs the batch of `args` with `adapter` and prints it.
pub fn run_protocol<P: Protocol>(adapter: &P, args: &SimArgs) -> Result<ExitCode, CliError> {
    let summary = summarise_batch(adapter, args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("summaries serialise")
        );
    } else {
        print!("{}", table(&summary, args.verbose));
    }
    Ok(if summary.violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the batch of `args` with `adapter`.
pub fn summarise_batch<P: Protocol>(adapter: &P, args: &SimArgs) -> Result<Summary, CliError> {
    let choice = adversaries(adapter, &args.adversary)?;
    let mut template = RunConfig::new(
        args.servers,
        args.first_seed,
        Adversary::parse("random").expect("a network"),
    );
    template.faults = args.faults;
    template.byzantine = args.byzantine;
    template.budget = args.budget;
    template.keys = if args.fresh_keys {
        KeySource::PerSeed
    } else {
        KeySource::Cached
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = Instant::now();
    let outcomes = run_seeds(
        adapter,
        &template,
        args.first_seed..args.first_seed.saturating_add(args.seeds),
        &choice,
        threads,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let mut by_adversary: BTreeMap<String, Vec<&SeedOutcome>> = BTreeMap::new();
    for outcome in &outcomes {
        by_adversary
            .entry(outcome.config.adversary.to_string())
            .or_default()
            .push(outcome);
    }
    let rows = by_adversary
        .iter()
        .map(|(name, runs)| (name.clone(), summarise(runs.iter().copied())))
        .collect();
    let totals = summarise(&outcomes);
    let failures = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .map(|o| Failure {
            seed: o.config.seed,
            adversary: o.config.adversary.to_string(),
            replay: replay_command(adapter.name(), args, &o.config),
            violations: o.violations.iter().map(|v| v.to_string()).collect(),
            notes: o.notes.clone(),
        })
        .collect();
    let total_ms: f64 = outcomes.iter().map(|o| o.elapsed.as_secs_f64() * 1e3).sum();
    Ok(Summary {
        protocol: adapter.name().to_string(),
        servers: args.servers,
        adversary: args.adversary.clone(),
        first_seed: args.first_seed,
        seeds: totals.seeds,
        violations: totals.violations,
        totals,
        rows,
        failures,
        seconds,
        ms_per_seed: if outcomes.is_empty() {
            0.0
        } else {
            total_ms / outcomes.len() as f64
        },
    })
}

/// The one command that replays a seed.
pub fn replay_command(protocol: &str, args: &SimArgs, config: &RunConfig) -> String {
    let mut command = format!(
        "sintra sim --protocol {protocol} --servers {} --seeds 1 --first-seed {} --adversary {}",
        config.servers, config.seed, config.adversary
    );
    if let Some(faults) = args.faults {
        let _ = write!(command, " --faults {faults}");
    }
    if let Some(byzantine) = args.byzantine {
        let _ = write!(command, " --byzantine {byzantine}");
    }
    if let Some(budget) = args.budget {
        let _ = write!(command, " --budget {budget}");
    }
    if args.fresh_keys {
        command.push_str(" --fresh-keys");
    }
    command
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.decimals$}"))
}

/// The table `sintra sim` prints.
pub fn table(summary: &Summary, verbose: bool) -> String {
    let mut out = String::new();
    let header = [
        "protocol",
        "servers",
        "adversary",
        "seeds",
        "violations",
        "mean rounds",
        "max rounds",
        "msgs/delivery",
        "bytes/delivery",
    ];
    let mut lines: Vec<[String; 9]> = Vec::new();
    let row = |name: &str, m: &BatchMetrics| -> [String; 9] {
        [
            summary.protocol.clone(),
            summary.servers.to_string(),
            name.to_string(),
            m.seeds.to_string(),
            m.violations.to_string(),
            number(m.mean_rounds, 2),
            m.max_rounds.map_or("-".to_string(), |r| r.to_string()),
            number(m.messages_per_delivery, 1),
            number(m.bytes_per_delivery, 0),
        ]
    };
    for (name, metrics) in &summary.rows {
        lines.push(row(name, metrics));
    }
    if summary.rows.len() > 1 {
        lines.push(row("total", &summary.totals));
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < 3 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    out.push_str(&render(&header.map(String::from)));
    for line in &lines {
        out.push_str(&render(line));
    }
    let t = &summary.totals;
    let _ = writeln!(
        out,
        "\n{} seeds in {:.1} s ({:.0} ms per seed); detectable deviations recorded {}/{}, \
         others recorded {}/{}",
        t.seeds,
        summary.seconds,
        summary.ms_per_seed,
        t.must_deviations.1,
        t.must_deviations.0,
        t.may_deviations.1,
        t.may_deviations.0
    );
    for failure in summary.failures.iter().take(FAILURES_SHOWN_MAX) {
        let _ = writeln!(
            out,
            "\nFAILED seed {} ({}): {}",
            failure.seed,
            failure.adversary,
            failure.violations.first().map_or("", String::as_str)
        );
        if verbose {
            for note in &failure.notes {
                let _ = writeln!(out, "  {note}");
            }
            for violation in failure.violations.iter().skip(1) {
                let _ = writeln!(out, "  also {violation}");
            }
        }
        let _ = writeln!(out, "  replay: {}", failure.replay);
    }
    if summary.failures.len() > FAILURES_SHOWN_MAX {
        let _ = writeln!(
            out,
            "\n... and {} more failing seeds (--json lists them all)",
            summary.failures.len() - FAILURES_SHOWN_MAX
        );
    }
    out
}
