//! The `sintra` binary: key generation, a replica (`node`), a whole local group (`up`), the
//! client, the simulator and its benchmark.
#![forbid(unsafe_code)]

mod bench_cluster;
mod client_cli;
mod keygen;
mod up;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// sintra: an intrusion-tolerant replicated service (SINTRA architecture).
#[derive(Parser)]
#[command(name = "sintra", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Act as the trusted dealer: generate every key share of a group and its configuration.
    Keygen(keygen::KeygenArgs),
    /// Run the deterministic Byzantine simulator over many seeds of one protocol; exits
    /// non-zero if any property was violated, printing the command that replays each failure.
    Sim(sintra_sim::cli::SimArgs),
    /// Measure; prints a table (or JSON).
    Bench(BenchArgs),
    /// Run one replica until SIGTERM or Ctrl-C (logs: RUST_LOG, default info).
    Node(NodeArgs),
    /// Run a whole group on this machine: keys on the first run, one replica process per
    /// server, until Ctrl-C.
    Up(up::UpArgs),
    /// Put or get a key; prints the answer once it verified under the group's service key.
    Client(client_cli::ClientArgs),
}

#[derive(Args)]
struct NodeArgs {
    /// The server's config file (server-<i>/config.toml from `sintra keygen`).
    #[arg(long)]
    config: std::path::PathBuf,
}

#[derive(Args)]
struct BenchArgs {
    #[command(subcommand)]
    which: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Atomic broadcast on a simulated group (one thread, FIFO network, no adversary): CPU time
    /// per ordered request, messages and bytes per request. Build with --release.
    Sim(sintra_sim::bench::BenchSimArgs),
    /// A real loopback cluster: deals a group, starts `--servers` replicas, drives kv puts over
    /// their streaming ports; ordered requests/s, latency to signed answer, CPU per request.
    /// Build with --release.
    Cluster(bench_cluster::BenchClusterArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen(args) => keygen::run(args).map(|()| ExitCode::SUCCESS),
        Command::Sim(args) => match sintra_sim::cli::run(args) {
            Ok(code) => Ok(code),
            // A usage error, not a failure of the program: one line, exit status 2.
            Err(error) => {
                eprintln!("sintra sim: {error}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Node(args) => Ok(node(&args)),
        Command::Up(args) => Ok(up::run(args).unwrap_or_else(|error| {
            eprintln!("sintra up: {error:#}");
            ExitCode::FAILURE
        })),
        Command::Client(args) => Ok(client_cli::run(args)),
        Command::Bench(BenchArgs {
            which: Bench::Sim(args),
        }) => {
            print!("{}", sintra_sim::bench::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchArgs {
            which: Bench::Cluster(args),
        }) => match bench_cluster::run(&args) {
            Ok(code) => Ok(code),
            Err(error) => {
                eprintln!("sintra bench cluster: {error:#}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// `sintra node`: exit 0 after a graceful stop, 1 when the replica could not start or failed.
fn node(args: &NodeArgs) -> ExitCode {
    sintra_node::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sintra node: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sintra_node::run(&args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sintra node: {error}");
            ExitCode::FAILURE
        }
    }
}
