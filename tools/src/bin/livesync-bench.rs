//! livesync-bench: livesync's benchmarks, one subcommand per scenario.
//!
//!     livesync-bench write-path [--quick] [--json]
//!     livesync-bench all | latency | storm | growth [--quick] [--json]
//!
//! Without DATABASE_URL each run starts a private PostgreSQL (fsync on) from the local
//! installation; with it, the run creates its databases on that server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use livesync_tools::bench::chaos;
use livesync_tools::bench::delivery;
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
    /// The delivery scenarios in one run: live latency, login storm, growth, memory, and
    /// the peer (Graphile Worker) beside them.
    All {
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// Live latency: one online user, one appointment per transaction at 50/s.
    Latency {
        #[command(flatten)]
        delivery: DeliveryArgs,
        /// Seconds of writes per variant.
        #[arg(long)]
        seconds: Option<u32>,
    },
    /// Login storm and memory: users × queued changes, everyone logs in at once.
    Storm {
        #[command(flatten)]
        delivery: DeliveryArgs,
        /// Users (each logs in once).
        #[arg(long)]
        users: Option<u32>,
        /// Queued changes per user.
        #[arg(long)]
        per_user: Option<u32>,
    },
    /// Growth: the storm (null sink) at several sizes, e.g. --sizes 1000x10,1000x100.
    Growth {
        #[command(flatten)]
        delivery: DeliveryArgs,
        /// Sizes as USERSxPER_USER, comma-separated.
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<String>>,
    },
    /// Faults during a storm (SIGKILL / SIGTERM of the worker, PostgreSQL restarts), then
    /// every calendar compared with the database. Exits 1 if anything was lost or doubled.
    Chaos {
        /// Faults to run (default: all three).
        #[arg(long, value_enum, value_delimiter = ',')]
        faults: Option<Vec<chaos::Fault>>,
        /// How often each fault strikes during the storm.
        #[arg(long)]
        times: Option<u32>,
        /// Xpert changes in the storm.
        #[arg(long)]
        changes: Option<u32>,
        /// The livesync-worker binary (default: $LIVESYNC_WORKER_BIN, or
        /// target/release/livesync-worker).
        #[arg(long)]
        worker_bin: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct DeliveryArgs {
    /// The livesync-worker binary (default: $LIVESYNC_WORKER_BIN, or
    /// target/release/livesync-worker).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Leave out the peer (Graphile Worker).
    #[arg(long)]
    no_peer: bool,
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
        Scenario::All { delivery } => {
            let parts = delivery::Parts {
                peer: !delivery.no_peer,
                ..delivery::Parts::all()
            };
            run_delivery(&server, (cli.quick, cli.json), delivery, parts, |_| {}).await?;
        }
        Scenario::Latency { delivery, seconds } => {
            let parts = delivery::Parts {
                storm: false,
                growth: false,
                peer: !delivery.no_peer,
                latency: true,
            };
            run_delivery(&server, (cli.quick, cli.json), delivery, parts, |c| {
                c.latency.seconds = seconds.unwrap_or(c.latency.seconds);
            })
            .await?;
        }
        Scenario::Storm {
            delivery,
            users,
            per_user,
        } => {
            let parts = delivery::Parts {
                latency: false,
                growth: false,
                peer: !delivery.no_peer,
                storm: true,
            };
            run_delivery(&server, (cli.quick, cli.json), delivery, parts, |c| {
                c.storm_users = users.unwrap_or(c.storm_users);
                c.storm_per_user = per_user.unwrap_or(c.storm_per_user);
            })
            .await?;
        }
        Scenario::Growth { delivery, sizes } => {
            let parts = delivery::Parts {
                latency: false,
                storm: false,
                peer: false,
                growth: true,
            };
            let sizes = sizes
                .map(|s| {
                    s.iter()
                        .map(|x| parse_size(x))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .transpose()?;
            run_delivery(&server, (cli.quick, cli.json), delivery, parts, |c| {
                if let Some(sizes) = sizes {
                    c.growth = sizes;
                }
            })
            .await?;
        }
        Scenario::Chaos {
            faults,
            times,
            changes,
            worker_bin,
        } => {
            let bin = livesync_tools::bench::worker_proc::find_bin(worker_bin)?;
            let mut config = if cli.quick {
                chaos::Config::quick()
            } else {
                chaos::Config::full()
            };
            config.faults = times.unwrap_or(config.faults);
            config.changes = changes.unwrap_or(config.changes);
            let work_dir = std::env::temp_dir().join("livesync-chaos");
            std::fs::create_dir_all(&work_dir)?;
            let mut reports = Vec::new();
            for fault in faults.unwrap_or_else(|| {
                vec![
                    chaos::Fault::Kill9,
                    chaos::Fault::Sigterm,
                    chaos::Fault::PgRestart,
                ]
            }) {
                let report = chaos::run(&server, &bin, fault, &config, &work_dir).await?;
                if !cli.json {
                    println!(
                        "{:<10} {:>3} faults  {:>6} changes  {:>6} expected  lost {}  duplicated {}  stale {}  resurrected {}  dead letters {}  ({:.0} s){}",
                        fault.name(),
                        report.faults,
                        report.changes,
                        report.appointments_expected,
                        report.lost,
                        report.duplicated,
                        report.stale,
                        report.resurrected,
                        report.dead_letters,
                        report.seconds,
                        if report.clean() {
                            ""
                        } else {
                            "  <-- NOT CLEAN (data kept in the work dir)"
                        }
                    );
                }
                reports.push(report);
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            }
            if reports.iter().any(|r| !r.clean()) {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// `1000x100` → (1000, 100).
fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (u, k) = s
        .split_once(['x', 'X', '*'])
        .ok_or_else(|| anyhow::anyhow!("size {s:?}: expected USERSxPER_USER, e.g. 1000x100"))?;
    Ok((u.trim().parse()?, k.trim().parse()?))
}

async fn run_delivery(
    server: &BenchServer,
    (quick, json): (bool, bool),
    args: DeliveryArgs,
    parts: delivery::Parts,
    adjust: impl FnOnce(&mut delivery::Config),
) -> anyhow::Result<()> {
    let mut config = if quick {
        delivery::Config::quick()
    } else {
        delivery::Config::full()
    };
    config.worker_bin = args.worker_bin;
    adjust(&mut config);
    let report = delivery::run(server, config, parts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
