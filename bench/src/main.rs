//! livesync-bench: livesync's benchmarks, one subcommand per scenario.
//!
//!     livesync-bench write-path [--quick] [--json]
//!     livesync-bench all [--no-caldav] [--no-write-path] [--grown] [--quick] [--json]
//!     livesync-bench latency [--grown] | storm [--stale] | growth [--quick] [--json]
//!     livesync-bench quiet [--quick] [--json] [--sink ics|null]
//!     livesync-bench caldav [--quick] [--json]
//!     livesync-bench chaos [--quick] [--json] [--faults …] [--sink ics|caldav]
//!
//! Without DATABASE_URL each run starts a private PostgreSQL (fsync on) from the local
//! installation; with it, the run creates its databases on that server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use livesync_bench::caldav;
use livesync_bench::chaos;
use livesync_bench::delivery;
use livesync_bench::grown;
use livesync_bench::quiet;
use livesync_bench::server::BenchServer;
use livesync_bench::stale;
use livesync_bench::verdict;
use livesync_bench::write_path::{self, Variant};

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
    /// Every scenario in one run: live latency, login storm, growth, memory, and the peer
    /// (Graphile Worker, information only) beside them; quiet; the storm on stale
    /// statistics; then CalDAV (Radicale beside a PUT loop); then the write-path cost
    /// (variants a, b, b-worker, 4 rounds × 10 s; `--quick`: 2 × 3 s).
    All {
        #[command(flatten)]
        delivery: DeliveryArgs,
        /// Also the grown-database latency (slow: grows a database to 1M deliveries).
        #[arg(long)]
        grown: bool,
        /// Leave out the CalDAV scenario.
        #[arg(long)]
        no_caldav: bool,
        /// Leave out the write-path scenario.
        #[arg(long)]
        no_write_path: bool,
    },
    /// CalDAV: the worker delivering users × changes into a local Radicale, beside a plain
    /// sequential PUT loop against the same server, in interleaved rounds.
    Caldav {
        /// Users (one calendar each).
        #[arg(long)]
        users: Option<u32>,
        /// Queued changes per user.
        #[arg(long)]
        per_user: Option<u32>,
        /// Rounds (each runs the worker and the PUT loop once).
        #[arg(long)]
        rounds: Option<u32>,
        /// The livesync-worker binary (default: $LIVESYNC_WORKER_BIN, or
        /// target/release/livesync-worker).
        #[arg(long)]
        worker_bin: Option<PathBuf>,
        /// More worker settings, KEY=VALUE (repeatable), e.g.
        /// LIVESYNC_CALDAV_MAX_CONCURRENCY=8.
        #[arg(long)]
        worker_env: Vec<String>,
    },
    /// Live latency: one online user, one appointment per transaction at 50/s; targets
    /// p99 ≤ 10 ms (null sink), ≤ 25 ms (ics sink).
    Latency {
        #[command(flatten)]
        delivery: DeliveryArgs,
        /// Seconds of writes per variant.
        #[arg(long)]
        seconds: Option<u32>,
        /// On a grown database (1,000 users × 100 stormed, 1M deliveries, no ANALYZE, stock
        /// settings), with the status view's and the admin's reads and a JIT check.
        #[arg(long)]
        grown: bool,
    },
    /// The worker's statements per second (pg_stat_statements): idle, and at one change
    /// per second. Exits 1 if a target is missed.
    Quiet {
        /// Seconds of each window (default 30; `--quick`: 10).
        #[arg(long)]
        seconds: Option<u32>,
        /// The worker's sink.
        #[arg(long, value_enum)]
        sink: Option<QuietSink>,
        /// The livesync-worker binary (default: $LIVESYNC_WORKER_BIN, or
        /// target/release/livesync-worker).
        #[arg(long)]
        worker_bin: Option<PathBuf>,
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
        /// On stale planner statistics: each appointment touched twice, drained right after
        /// queuing beside the same data after ANALYZE (null sink, interleaved rounds).
        #[arg(long)]
        stale: bool,
        /// Rounds of --stale (each runs both variants).
        #[arg(long)]
        rounds: Option<u32>,
    },
    /// Growth: the storm (null sink) at several sizes, e.g. --sizes 1000x10,1000x100.
    Growth {
        #[command(flatten)]
        delivery: DeliveryArgs,
        /// Sizes as USERSxPER_USER, comma-separated.
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<String>>,
    },
    /// Faults during a storm (SIGKILL / SIGTERM of the worker, PostgreSQL restarts, three
    /// workers, the calendar server down, a session idle in a transaction), then every
    /// calendar compared with the database; after each restart of a worker, the time until
    /// deliveries resume (target ≤ 5 s). Exits 1 if anything was lost or doubled, or a
    /// resume took longer.
    Chaos {
        /// Faults to run (default: every fault, kill9 also with the CalDAV sink; kill9-burst
        /// with the CalDAV sink).
        #[arg(long, value_enum, value_delimiter = ',')]
        faults: Option<Vec<chaos::Fault>>,
        /// Where the worker delivers: ics files, or a private Radicale over CalDAV (default:
        /// ics, and caldav for calendar-down).
        #[arg(long, value_enum)]
        sink: Option<chaos::ChaosSink>,
        /// How often each fault strikes during the storm (calendar-down: how many outages).
        #[arg(long)]
        times: Option<u32>,
        /// Seconds the calendar server stays down in each outage (calendar-down).
        #[arg(long)]
        outage_secs: Option<u64>,
        /// Xpert changes in the storm.
        #[arg(long)]
        changes: Option<u32>,
        /// The livesync-worker binary (default: $LIVESYNC_WORKER_BIN, or
        /// target/release/livesync-worker).
        #[arg(long)]
        worker_bin: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum QuietSink {
    Ics,
    Null,
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
        Scenario::All {
            delivery,
            grown,
            no_caldav,
            no_write_path,
        } => {
            let parts = delivery::Parts {
                peer: !delivery.no_peer,
                ..delivery::Parts::all()
            };
            let mut caldav_config = caldav_config(cli.quick);
            caldav_config.worker_bin = delivery.worker_bin.clone();
            let mut write_path_config = write_path::Config::in_all(cli.quick);
            write_path_config.worker_bin = delivery
                .worker_bin
                .clone()
                .or_else(write_path::default_worker_bin);
            let worker_bin = delivery.worker_bin.clone();
            let report = delivery_report(&server, cli.quick, delivery, parts, |_| {}).await?;
            let quiet = {
                let mut c = quiet_config(cli.quick);
                c.worker_bin = worker_bin.clone();
                quiet::run(&server, c).await.map_err(|e| format!("{e:#}"))
            };
            let stale = {
                let mut c = stale_config(cli.quick);
                c.worker_bin = worker_bin.clone();
                stale::run(&server, c).await.map_err(|e| format!("{e:#}"))
            };
            let grown = if grown {
                let mut c = grown_config(cli.quick);
                c.worker_bin = worker_bin.clone();
                Some(grown::run(&server, c).await.map_err(|e| format!("{e:#}")))
            } else {
                None
            };
            let caldav = if no_caldav {
                None
            } else {
                Some(match caldav::run(&server, caldav_config).await {
                    Ok(r) => Ok(r),
                    Err(e) => Err(format!("{e:#}")),
                })
            };
            let write_path = if no_write_path {
                None
            } else {
                Some(
                    write_path::run(&server, write_path_config)
                        .await
                        .map_err(|e| format!("{e:#}")),
                )
            };
            if cli.json {
                let mut doc = serde_json::to_value(&report)?;
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert("quiet".into(), part_json(&quiet)?);
                    obj.insert("storm_stale".into(), part_json(&stale)?);
                    if let Some(g) = &grown {
                        obj.insert("latency_grown".into(), part_json(g)?);
                    }
                    if let Some(c) = &caldav {
                        obj.insert("caldav".into(), part_json(c)?);
                    }
                    if let Some(w) = &write_path {
                        obj.insert("write_path".into(), part_json(w)?);
                    }
                }
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{report}");
                match &quiet {
                    Ok(r) => print!("\n{r}"),
                    Err(e) => println!("\n## Quiet: not run: {e}"),
                }
                match &stale {
                    Ok(r) => print!("\n{r}"),
                    Err(e) => println!("\n## Storm on stale statistics: not run: {e}"),
                }
                match &grown {
                    Some(Ok(r)) => print!("\n{r}"),
                    Some(Err(e)) => println!("\n## Latency on a grown database: not run: {e}"),
                    None => {}
                }
                match &caldav {
                    Some(Ok(r)) => print!("\n{r}"),
                    Some(Err(e)) => println!("\n## CalDAV: not run: {e}"),
                    None => {}
                }
                match &write_path {
                    Some(Ok(r)) => print!("\n{r}"),
                    Some(Err(e)) => println!("\n## Write-path cost: not run: {e}"),
                    None => {}
                }
            }
        }
        Scenario::Caldav {
            users,
            per_user,
            rounds,
            worker_bin,
            worker_env,
        } => {
            let mut config = caldav_config(cli.quick);
            config.users = users.unwrap_or(config.users);
            config.per_user = per_user.unwrap_or(config.per_user);
            config.rounds = rounds.unwrap_or(config.rounds);
            config.worker_bin = worker_bin;
            for kv in worker_env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--worker-env {kv:?}: expected KEY=VALUE"))?;
                config.worker_env.push((k.to_string(), v.to_string()));
            }
            let report = caldav::run(&server, config).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if !report.errors.is_empty() {
                std::process::exit(1);
            }
        }
        Scenario::Latency {
            delivery,
            seconds,
            grown: true,
        } => {
            let mut config = grown_config(cli.quick);
            config.worker_bin = delivery.worker_bin;
            config.latency.seconds = seconds.unwrap_or(config.latency.seconds);
            let report = grown::run(&server, config).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Scenario::Quiet {
            seconds,
            sink,
            worker_bin,
        } => {
            let mut config = quiet_config(cli.quick);
            config.idle_seconds = seconds.unwrap_or(config.idle_seconds);
            config.change_seconds = seconds.unwrap_or(config.change_seconds);
            config.sink = match sink {
                Some(QuietSink::Null) => livesync_bench::worker_proc::Sink::Null,
                Some(QuietSink::Ics) | None => config.sink,
            };
            config.worker_bin = worker_bin;
            let report = quiet::run(&server, config).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if !report.met() {
                std::process::exit(1);
            }
        }
        Scenario::Storm {
            delivery,
            users,
            per_user,
            stale: true,
            rounds,
        } => {
            let mut config = stale_config(cli.quick);
            config.users = users.unwrap_or(config.users);
            config.per_user = per_user.unwrap_or(config.per_user);
            config.rounds = rounds.unwrap_or(config.rounds);
            config.worker_bin = delivery.worker_bin;
            let report = stale::run(&server, config).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Scenario::Latency {
            delivery,
            seconds,
            grown: false,
        } => {
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
            stale: false,
            rounds: _,
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
            sink,
            times,
            outage_secs,
            changes,
            worker_bin,
        } => {
            let bin = livesync_bench::worker_proc::find_bin(worker_bin)?;
            let mut config = if cli.quick {
                chaos::Config::quick()
            } else {
                chaos::Config::full()
            };
            config.faults = times.unwrap_or(config.faults);
            config.outages = times.unwrap_or(config.outages);
            config.outage = outage_secs.map_or(config.outage, std::time::Duration::from_secs);
            config.changes = changes.unwrap_or(config.changes);
            let work_dir = std::env::temp_dir().join("livesync-chaos");
            std::fs::create_dir_all(&work_dir)?;
            let scenarios: Vec<(chaos::Fault, chaos::ChaosSink)> = match (faults, sink) {
                (None, None) => chaos::default_scenarios(),
                (faults, sink) => faults
                    .unwrap_or_else(|| {
                        chaos::default_scenarios().into_iter().map(|(f, _)| f).fold(
                            Vec::new(),
                            |mut v, f| {
                                if !v.contains(&f) {
                                    v.push(f);
                                }
                                v
                            },
                        )
                    })
                    .into_iter()
                    .map(|f| (f, sink.unwrap_or(f.default_sink())))
                    .collect(),
            };
            let mut reports = Vec::new();
            for (fault, sink) in scenarios {
                let report = chaos::run(&server, &bin, fault, sink, &config, &work_dir).await?;
                if !cli.json {
                    println!(
                        "{:<19} {:<6} {:>3} faults  {:>6} changes  {:>6} expected  lost {}  duplicated {}  stale {}  resurrected {}  dead letters {}  ({:.0} s){}",
                        fault.name(),
                        sink.name(),
                        report.faults,
                        report.changes,
                        report.appointments_expected,
                        report.lost,
                        report.duplicated,
                        report.stale,
                        report.resurrected,
                        report.dead_letters,
                        report.seconds,
                        if !report.clean() {
                            "  <-- NOT CLEAN (data kept in the work dir)"
                        } else if !report.passed() {
                            "  <-- RESUME TARGET MISSED (data kept in the work dir)"
                        } else {
                            ""
                        }
                    );
                    if fault == chaos::Fault::ThreeWorkers {
                        println!(
                            "{:<26} deliveries counted {} (per worker {:?}), logged {}, delivered twice {}, out of order {}",
                            "",
                            report.per_worker.iter().sum::<u64>(),
                            report.per_worker,
                            report.logged.unwrap_or(0),
                            report.duplicate_deliveries,
                            report.order_violations
                        );
                    }
                    if let Some(line) = report.resume_line() {
                        println!("{:<26} {line}", "");
                    }
                    for note in &report.notes {
                        println!("{:<26} {note}", "");
                    }
                }
                reports.push(report);
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            }
            if !cli.json && reports.iter().any(|r| !r.resumes.is_empty()) {
                let all: Vec<chaos::Resume> =
                    reports.iter().flat_map(|r| r.resumes.clone()).collect();
                let (n, _, max, met) = chaos::resume_summary(&all);
                println!(
                    "resume after a restart, all faults: {n} restarts with work pending, max {} (target ≤ {:.0} s) {}",
                    max.map_or("-".to_string(), |m| format!("{m:.0} ms")),
                    chaos::RESUME_TARGET_MS / 1000.0,
                    verdict::met(met)
                );
            }
            if reports.iter().any(|r| !r.passed()) {
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

/// A part of `all` as JSON: its report, or the error that stopped it.
fn part_json<T: serde::Serialize>(
    part: &Result<T, String>,
) -> serde_json::Result<serde_json::Value> {
    match part {
        Ok(r) => serde_json::to_value(r),
        Err(e) => Ok(serde_json::json!({ "error": e })),
    }
}

fn quiet_config(quick: bool) -> quiet::Config {
    if quick {
        quiet::Config::quick()
    } else {
        quiet::Config::full()
    }
}

fn stale_config(quick: bool) -> stale::Config {
    if quick {
        stale::Config::quick()
    } else {
        stale::Config::full()
    }
}

fn grown_config(quick: bool) -> grown::Config {
    if quick {
        grown::Config::quick()
    } else {
        grown::Config::full()
    }
}

fn caldav_config(quick: bool) -> caldav::Config {
    if quick {
        caldav::Config::quick()
    } else {
        caldav::Config::full()
    }
}

async fn delivery_report(
    server: &BenchServer,
    quick: bool,
    args: DeliveryArgs,
    parts: delivery::Parts,
    adjust: impl FnOnce(&mut delivery::Config),
) -> anyhow::Result<delivery::Report> {
    let mut config = if quick {
        delivery::Config::quick()
    } else {
        delivery::Config::full()
    };
    config.worker_bin = args.worker_bin;
    adjust(&mut config);
    delivery::run(server, config, parts).await
}

async fn run_delivery(
    server: &BenchServer,
    (quick, json): (bool, bool),
    args: DeliveryArgs,
    parts: delivery::Parts,
    adjust: impl FnOnce(&mut delivery::Config),
) -> anyhow::Result<()> {
    let report = delivery_report(server, quick, args, parts, adjust).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
