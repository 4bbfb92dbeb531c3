//! livesync-bench: livesync's benchmarks, one subcommand per scenario.
//!
//!     livesync-bench write-path [--quick] [--json]
//!
//! Without DATABASE_URL each run starts a private PostgreSQL (fsync on) from the local
//! installation; with it, the run creates its databases on that server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use livesync_tools::bench::server::BenchServer;
use livesync_tools::bench::write_path::{self, Variant};

#[derive(Parser)]
#[command(name = "livesync-bench", about = "livesync's benchmarks")]
struct Cli {
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The short variant of the scenario (CI smoke run).
    #[arg(long, global = true)]
    quick: bool,
    /// Server to create the benchmark databases on; a private one when unset.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// What livesync's triggers cost Xpert's appointment inserts (pgbench, interleaved A/B).
    WritePath {
        /// Rounds (each runs every variant once).
        #[arg(long)]
        rounds: Option<u32>,
        /// Seconds per measurement.
        #[arg(long)]
        seconds: Option<u32>,
        /// pgbench clients.
        #[arg(long)]
        clients: Option<u32>,
        /// Xpert users to seed.
        #[arg(long)]
        users: Option<u32>,
        /// pgbench query protocol (simple, extended, prepared).
        #[arg(long)]
        protocol: Option<String>,
        /// Variants to run (A always runs: it is the reference).
        #[arg(long, value_enum, value_delimiter = ',')]
        variants: Option<Vec<Variant>>,
        /// The livesync-worker binary for variant b-worker
        /// (default: $LIVESYNC_WORKER_BIN, or target/release/livesync-worker).
        #[arg(long)]
        worker_bin: Option<PathBuf>,
        /// Keep the benchmark databases afterwards.
        #[arg(long)]
        keep: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let server = BenchServer::start(cli.database_url.clone())?;
    match cli.scenario {
        Scenario::WritePath {
            rounds,
            seconds,
            clients,
            users,
            protocol,
            variants,
            worker_bin,
            keep,
        } => {
            let mut config = if cli.quick {
                write_path::Config::quick()
            } else {
                write_path::Config::full()
            };
            config.rounds = rounds.unwrap_or(config.rounds);
            config.seconds = seconds.unwrap_or(config.seconds);
            config.clients = clients.unwrap_or(config.clients);
            config.users = users.unwrap_or(config.users);
            config.protocol = protocol.unwrap_or(config.protocol);
            config.variants = variants.unwrap_or(config.variants);
            config.worker_bin = worker_bin.or_else(write_path::default_worker_bin);
            config.keep = keep;
            let report = write_path::run(&server, config).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
    }
    Ok(())
}
