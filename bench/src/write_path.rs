//! Scenario "write-path cost": what livesync's triggers cost Xpert's appointment writes.
//!
//! Each variant gets a database of its own on one server, seeded alike (users, existing
//! appointments with three participants each). pgbench then runs Xpert's write pattern —
//! one transaction inserting an appointment and its three participant rows — against the
//! variants in interleaved rounds (the order rotates every round, a checkpoint precedes
//! every measurement, and livesync's queue is emptied first), so drift of a shared machine
//! hits every variant alike. Variants:
//!
//! - `a`: the Xpert baseline, livesync not installed.
//! - `b`: livesync installed, sync active for every user, nothing consuming the queue.
//! - `b-drain`: as `b`, with one persistent connection draining the queue concurrently in
//!   batches of 500 (delete … returning into `livesync.delivered`): a stand-in for a worker.
//! - `b-worker`: as `b`, with the real `livesync-worker run` in push mode and the `null`
//!   sink; skipped when that binary is not available.
//! - `b-notify`: as `b`, with a registered worker that stays asleep, so every queued change
//!   sends a `pg_notify`: the per-row notification the design avoids.
//!
//! The figure is each variant's tps divided by `a`'s in the same round; the report gives
//! the median and range of that ratio over the rounds.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::pgbench;
use super::server::{BenchServer, ServerInfo};
use super::stats;
use super::verdict;

/// The issue's target for every livesync variant except `b-notify`.
pub const TARGET_RATIO: f64 = 0.90;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    A,
    B,
    BDrain,
    BWorker,
    BNotify,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::A => "A",
            Variant::B => "B",
            Variant::BDrain => "B-drain",
            Variant::BWorker => "B-worker",
            Variant::BNotify => "B-notify",
        }
    }

    fn database(self) -> &'static str {
        match self {
            Variant::A => "livesync_bench_a",
            Variant::B => "livesync_bench_b",
            Variant::BDrain => "livesync_bench_b_drain",
            Variant::BWorker => "livesync_bench_b_worker",
            Variant::BNotify => "livesync_bench_b_notify",
        }
    }

    fn installs_livesync(self) -> bool {
        self != Variant::A
    }

    /// Whether the ratio target applies (the notify variant shows what is avoided).
    fn has_target(self) -> bool {
        matches!(self, Variant::B | Variant::BDrain | Variant::BWorker)
    }

    fn describe(self) -> &'static str {
        match self {
            Variant::A => "Xpert baseline only, livesync not installed",
            Variant::B => "livesync installed, sync active for every user, queue not consumed",
            Variant::BDrain => {
                "as B, one connection drains the queue concurrently (batches of 500)"
            }
            Variant::BWorker => "as B, livesync-worker run in push mode with the null sink",
            Variant::BNotify => {
                "as B, a registered worker stays asleep: every change sends pg_notify"
            }
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub rounds: u32,
    pub seconds: u32,
    pub clients: u32,
    pub threads: u32,
    pub users: u32,
    pub seed_appointments: u32,
    pub protocol: String,
    pub variants: Vec<Variant>,
    /// The worker binary for `b-worker`, when one was given or found.
    pub worker_bin: Option<PathBuf>,
    /// Keep the databases after the run (for profiling).
    pub keep: bool,
}

impl Config {
    pub fn full() -> Config {
        Config {
            rounds: 6,
            seconds: 15,
            clients: 8,
            threads: 2,
            users: 1000,
            seed_appointments: 50_000,
            protocol: "prepared".into(),
            variants: vec![
                Variant::A,
                Variant::B,
                Variant::BDrain,
                Variant::BWorker,
                Variant::BNotify,
            ],
            worker_bin: None,
            keep: false,
        }
    }

    /// Short enough for a CI smoke run (well under two minutes).
    pub fn quick() -> Config {
        Config {
            rounds: 3,
            seconds: 4,
            seed_appointments: 10_000,
            ..Config::full()
        }
    }

    /// The part `livesync-bench all` runs: the issue's variants only (Xpert alone, with
    /// livesync, and with a worker delivering in push mode), in fewer rounds, so that the
    /// whole run stays under fifteen minutes (`--quick`: two). The separate `write-path`
    /// subcommand adds B-drain and B-notify and runs longer.
    pub fn in_all(quick: bool) -> Config {
        let variants = vec![Variant::A, Variant::B, Variant::BWorker];
        if quick {
            Config {
                rounds: 2,
                seconds: 3,
                variants,
                ..Config::quick()
            }
        } else {
            Config {
                rounds: 4,
                seconds: 10,
                variants,
                ..Config::full()
            }
        }
    }
}

/// The pgbench script: Xpert's write pattern, one appointment and its three participants
/// (distinct users) per transaction.
pub fn script(users: u32) -> String {
    let half = (users / 2).max(2);
    format!(
        r"\set u1 random(1, {users})
\set d2 random(1, {h1})
\set d3 random({half}, {last})
\set u2 (:u1 - 1 + :d2) % {users} + 1
\set u3 (:u1 - 1 + :d3) % {users} + 1
\set h random(-48, 2400)
BEGIN;
INSERT INTO xpert.appointments (subject, location, notes, starts_at, ends_at, created_by)
  VALUES ('Besprechung Verlassenschaft', 'Kanzlei, Besprechungszimmer 2',
          'Aktenzahl 4711/26; Unterlagen mitbringen',
          now() + make_interval(hours => :h::int), now() + make_interval(hours => :h::int + 1),
          :u1)
  RETURNING id \gset
INSERT INTO xpert.appointment_participants (appointment_id, user_id) VALUES (:id, :u1);
INSERT INTO xpert.appointment_participants (appointment_id, user_id) VALUES (:id, :u2);
INSERT INTO xpert.appointment_participants (appointment_id, user_id) VALUES (:id, :u3);
END;
",
        h1 = half - 1,
        last = users.saturating_sub(1).max(half),
    )
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub round: u32,
    pub variant: Variant,
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    pub latency_avg_ms: f64,
    /// tps / tps of `a` in the same round.
    pub ratio: Option<f64>,
    /// Queue entries left when pgbench ended (livesync variants).
    pub queue_left: Option<i64>,
    /// Entries the drainer or worker removed during the round.
    pub drained: Option<i64>,
    /// Notifications on `livesync_wake` a listener received during the round.
    pub wakeups: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub variant: Variant,
    pub description: &'static str,
    pub median_tps: Option<f64>,
    pub median_ratio: Option<f64>,
    pub min_ratio: Option<f64>,
    pub max_ratio: Option<f64>,
    /// `None` where no target applies or nothing was measured.
    pub target_met: Option<bool>,
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub started_at: String,
    pub machine: Machine,
    pub server_target: String,
    pub server: ServerInfo,
    pub config: Config,
    pub pgbench_command: String,
    pub measurements: Vec<Measurement>,
    pub summary: Vec<Summary>,
    pub target_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory: String,
}

impl Machine {
    fn detect() -> Machine {
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory,
        }
    }
}

/// Run the scenario on `server`.
pub async fn run(server: &BenchServer, config: Config) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let pgbench_bin = pgbench::find()?;
    let server_info = server.describe_settings().await?;

    let mut skipped: Vec<(Variant, String)> = Vec::new();
    let mut variants = config.variants.clone();
    if !variants.contains(&Variant::A) {
        variants.insert(0, Variant::A);
    }
    if variants.contains(&Variant::BWorker)
        && let Err(why) = check_worker(config.worker_bin.as_deref()).await
    {
        skipped.push((Variant::BWorker, why));
        variants.retain(|v| *v != Variant::BWorker);
    }

    let script_path = std::env::temp_dir().join(format!(
        "livesync-bench-write-path-{}.sql",
        std::process::id()
    ));
    std::fs::write(&script_path, script(config.users)).context("write the pgbench script")?;

    let mut urls = Vec::new();
    for v in &variants {
        eprintln!("preparing {} ({})", v.label(), v.database());
        let url = server.create_database(v.database()).await?;
        prepare(&url, *v, &config).await?;
        urls.push((*v, url));
    }

    let mut measurements = Vec::new();
    for round in 0..config.rounds {
        let n = urls.len();
        let mut a_tps = None;
        let mut this_round = Vec::new();
        for i in 0..n {
            let (variant, url) = &urls[(i + round as usize) % n];
            let run = pgbench::Run {
                pgbench: &pgbench_bin,
                script: &script_path,
                url,
                clients: config.clients,
                threads: config.threads,
                seconds: config.seconds,
                protocol: &config.protocol,
            };
            let m = measure(server, *variant, url, &run, round, &config).await?;
            eprintln!(
                "round {} {:<8} {:>8.0} tps{}",
                round + 1,
                variant.label(),
                m.tps,
                m.queue_left
                    .map(|q| format!("  (queue left {q})"))
                    .unwrap_or_default()
            );
            if *variant == Variant::A {
                a_tps = Some(m.tps);
            }
            this_round.push(m);
        }
        for m in &mut this_round {
            m.ratio = a_tps.filter(|a| *a > 0.0).map(|a| m.tps / a);
        }
        this_round.sort_by_key(|m| variants.iter().position(|v| *v == m.variant));
        measurements.extend(this_round);
    }

    let mut summary = Vec::new();
    for v in config.variants.iter().copied() {
        let tps: Vec<f64> = measurements
            .iter()
            .filter(|m| m.variant == v)
            .map(|m| m.tps)
            .collect();
        let ratios: Vec<f64> = measurements
            .iter()
            .filter(|m| m.variant == v)
            .filter_map(|m| m.ratio)
            .collect();
        let median_ratio = stats::median(&ratios);
        let range = stats::range(&ratios);
        summary.push(Summary {
            variant: v,
            description: v.describe(),
            median_tps: stats::median(&tps),
            median_ratio,
            min_ratio: range.map(|r| r.0),
            max_ratio: range.map(|r| r.1),
            target_met: median_ratio
                .filter(|_| v.has_target())
                .map(|r| r >= TARGET_RATIO),
            skipped: skipped
                .iter()
                .find(|(s, _)| *s == v)
                .map(|(_, w)| w.clone()),
        });
    }

    let pgbench_command = pgbench::Run {
        pgbench: &pgbench_bin,
        script: Path::new("write-path.sql"),
        url: "",
        clients: config.clients,
        threads: config.threads,
        seconds: config.seconds,
        protocol: &config.protocol,
    }
    .command_line();

    if !config.keep {
        for (v, _) in &urls {
            server.drop_database(v.database()).await;
        }
    }
    let _ = std::fs::remove_file(&script_path);

    Ok(Report {
        scenario: "write-path",
        started_at,
        machine: Machine::detect(),
        server_target: server.describe(),
        server: server_info,
        config,
        pgbench_command,
        measurements,
        summary,
        target_ratio: TARGET_RATIO,
    })
}

/// Load the baseline, seed, and (for livesync variants) install livesync with sync active
/// for every user.
async fn prepare(url: &str, variant: Variant, config: &Config) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql(include_str!("../../sql/xpert_baseline.sql"))
        .execute(&mut conn)
        .await
        .context("load sql/xpert_baseline.sql")?;
    sqlx::query(
        "insert into xpert.users (username, full_name) \
         select 'user' || g, 'User ' || g from generate_series(1, $1) g",
    )
    .bind(config.users as i32)
    .execute(&mut conn)
    .await?;
    // Existing appointments from about three months back to three months ahead.
    sqlx::query(
        "insert into xpert.appointments (subject, location, notes, starts_at, ends_at, created_by) \
         select 'Termin ' || g, 'Kanzlei', 'Aktenzahl ' || g || '/26', \
                date_trunc('hour', now()) + make_interval(hours => (g % 4400) - 2200), \
                date_trunc('hour', now()) + make_interval(hours => (g % 4400) - 2199), \
                1 + g % $1 \
         from generate_series(1, $2) g",
    )
    .bind(config.users as i32)
    .bind(config.seed_appointments as i32)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "insert into xpert.appointment_participants (appointment_id, user_id) \
         select a.id, 1 + (a.id + k * 337) % $1 \
         from xpert.appointments a cross join generate_series(0, 2) k \
         on conflict do nothing",
    )
    .bind(config.users as i64)
    .execute(&mut conn)
    .await?;

    if variant.installs_livesync() {
        crate::migrate::run(url, false)
            .await
            .context("install livesync (migrate)")?;
        super::seed::after_migrate(&mut conn).await?;
        sqlx::query(
            "insert into livesync.user_settings (user_id, live_sync_enabled) \
             select id, true from xpert.users",
        )
        .execute(&mut conn)
        .await?;
        let mode = if variant == Variant::BWorker {
            "push"
        } else {
            "live"
        };
        sqlx::query(
            "update livesync.settings set live_sync_enabled = true, cti_sync_licensed = true, \
             delivery_mode = $1",
        )
        .bind(mode)
        .execute(&mut conn)
        .await?;
        sqlx::query("truncate livesync.changes, livesync.queue")
            .execute(&mut conn)
            .await?;
        if variant == Variant::BNotify {
            sqlx::query(
                "insert into livesync.workers (id, host, pid, awake) \
                 values (gen_random_uuid(), 'livesync-bench (asleep)', 0, false)",
            )
            .execute(&mut conn)
            .await?;
        }
    }
    sqlx::raw_sql("vacuum analyze").execute(&mut conn).await?;
    conn.close().await.ok();
    Ok(())
}

async fn measure(
    server: &BenchServer,
    variant: Variant,
    url: &str,
    run: &pgbench::Run<'_>,
    round: u32,
    config: &Config,
) -> anyhow::Result<Measurement> {
    let mut conn = PgConnection::connect(url).await?;
    if variant.installs_livesync() {
        sqlx::query("truncate livesync.changes, livesync.queue")
            .execute(&mut conn)
            .await?;
    }
    if variant == Variant::BNotify {
        // A fresh heartbeat: the sleeping worker counts as registered for 30 s.
        sqlx::query("update livesync.workers set heartbeat_at = now() + interval '1 hour'")
            .execute(&mut conn)
            .await?;
    }
    // Every measurement starts right after a checkpoint (needs superuser; skipped otherwise).
    let mut admin = server.admin().await?;
    let _ = sqlx::query("checkpoint").execute(&mut admin).await;
    admin.close().await.ok();

    let wake_counter = if variant.installs_livesync() {
        Some(WakeCounter::start(url).await?)
    } else {
        None
    };
    let consumer = match variant {
        Variant::BDrain => Some(Consumer::drainer(url).await?),
        Variant::BWorker => Some(
            Consumer::worker(config.worker_bin.as_deref(), url, &mut conn)
                .await
                .context("start livesync-worker")?,
        ),
        _ => None,
    };

    let outcome = run.execute().await?;

    let queue_left = if variant.installs_livesync() {
        Some(
            sqlx::query_scalar::<_, i64>(
                "select (select count(*) from livesync.queue) \
                      + (select count(*) from livesync.changes)",
            )
            .fetch_one(&mut conn)
            .await?,
        )
    } else {
        None
    };
    let drained = match consumer {
        Some(c) => Some(c.stop(&mut conn).await?),
        None => None,
    };
    let wakeups = match wake_counter {
        Some(w) => Some(w.stop().await?),
        None => None,
    };
    conn.close().await.ok();
    Ok(Measurement {
        round: round + 1,
        variant,
        tps: outcome.tps,
        transactions: outcome.transactions,
        failed: outcome.failed,
        latency_avg_ms: outcome.latency_avg_ms,
        ratio: None,
        queue_left,
        drained,
        wakeups,
    })
}

/// Counts the wake-up notifications sent during a round, as a listening worker would
/// receive them.
struct WakeCounter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl WakeCounter {
    async fn start(url: &str) -> anyhow::Result<WakeCounter> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen("livesync_wake").await?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut count = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(received) =
                    tokio::time::timeout(Duration::from_millis(100), listener.try_recv()).await
                    && received?.is_some()
                {
                    count += 1;
                }
            }
            Ok(count)
        });
        Ok(WakeCounter { stop, task })
    }

    async fn stop(self) -> anyhow::Result<u64> {
        // Let notifications of the last commits arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("wake-up counter task")?
    }
}

/// What consumes the queue while pgbench writes.
enum Consumer {
    Drainer {
        stop: Arc<AtomicBool>,
        task: tokio::task::JoinHandle<anyhow::Result<i64>>,
    },
    Worker {
        child: tokio::process::Child,
        delivered_before: i64,
    },
}

/// One batch of the stand-in drainer: expand the change log into the queue, then claim up
/// to 500 entries, delete them and record them as delivered.
const DRAIN_BATCH: &str = "\
with batch as (
  delete from livesync.queue q
  where (q.user_id, q.appointment_id) in (
    select user_id, appointment_id from livesync.queue limit 500 for update skip locked)
  returning q.user_id, q.appointment_id, q.version)
insert into livesync.delivered as d (user_id, appointment_id, uid, version)
select user_id, appointment_id, 'xpert-' || appointment_id, version from batch
on conflict (user_id, appointment_id) do update
  set version = excluded.version, sequence = d.sequence + 1, delivered_at = now()";

impl Consumer {
    async fn drainer(url: &str) -> anyhow::Result<Consumer> {
        let mut conn = PgConnection::connect(url).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut total = 0i64;
            while !flag.load(Ordering::Relaxed) {
                sqlx::query("select * from livesync.expand_changes()")
                    .execute(&mut conn)
                    .await?;
                let n = sqlx::query(DRAIN_BATCH)
                    .execute(&mut conn)
                    .await?
                    .rows_affected() as i64;
                total += n;
                if n == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            conn.close().await.ok();
            Ok(total)
        });
        Ok(Consumer::Drainer { stop, task })
    }

    async fn worker(
        bin: Option<&Path>,
        url: &str,
        conn: &mut PgConnection,
    ) -> anyhow::Result<Consumer> {
        let bin = bin.context("no worker binary")?;
        let delivered_before: i64 = sqlx::query_scalar("select count(*) from livesync.delivered")
            .fetch_one(&mut *conn)
            .await?;
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("livesync-bench-worker-{}.log", std::process::id())),
        )?;
        let mut child = tokio::process::Command::new(bin)
            .arg("run")
            .env("DATABASE_URL", url)
            .env("LIVESYNC_SINK", "null")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live: i64 = sqlx::query_scalar(
                "select count(*) from livesync.workers \
                 where heartbeat_at > now() - interval '30 seconds'",
            )
            .fetch_one(&mut *conn)
            .await?;
            if live > 0 {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("livesync-worker exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!("livesync-worker did not register in livesync.workers within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Consumer::Worker {
            child,
            delivered_before,
        })
    }

    /// Stop consuming; returns how many entries were consumed.
    async fn stop(self, conn: &mut PgConnection) -> anyhow::Result<i64> {
        match self {
            Consumer::Drainer { stop, task } => {
                stop.store(true, Ordering::Relaxed);
                task.await.context("drainer task")?
            }
            Consumer::Worker {
                mut child,
                delivered_before,
            } => {
                let delivered: i64 = sqlx::query_scalar("select count(*) from livesync.delivered")
                    .fetch_one(&mut *conn)
                    .await?;
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .arg("-TERM")
                        .arg(pid.to_string())
                        .status()
                        .await;
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
                Ok(delivered - delivered_before)
            }
        }
    }
}

/// Ok when `bin` exists and offers a `run` subcommand; else why `b-worker` is skipped.
async fn check_worker(bin: Option<&Path>) -> Result<(), String> {
    const SKIP: &str = "skipped: worker binary not available";
    let Some(bin) = bin else {
        return Err(SKIP.into());
    };
    if !bin.exists() {
        return Err(format!("{SKIP} ({} does not exist)", bin.display()));
    }
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(bin)
            .arg("--help")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let Ok(Ok(out)) = out else {
        return Err(format!("{SKIP} ({} --help failed)", bin.display()));
    };
    let help = String::from_utf8_lossy(&out.stdout);
    let has_run = help.lines().any(|l| {
        let l = l.trim_start();
        l == "run" || l.starts_with("run ")
    });
    if has_run {
        Ok(())
    } else {
        Err(format!(
            "{SKIP} ({} has no `run` subcommand yet)",
            bin.display()
        ))
    }
}

/// `$LIVESYNC_WORKER_BIN`, else `livesync-worker` beside this executable, else
/// `target/release/livesync-worker`.
pub fn default_worker_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIVESYNC_WORKER_BIN") {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("livesync-worker")));
    beside
        .filter(|p| p.exists())
        .or_else(|| Some(PathBuf::from("target/release/livesync-worker")))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "write-path cost ({})", self.started_at)?;
        writeln!(
            f,
            "machine: {} CPUs, {}; server: {}",
            self.machine.cpus, self.machine.memory, self.server_target
        )?;
        writeln!(f, "{}", self.server.version)?;
        writeln!(f, "{}", self.server.settings)?;
        writeln!(
            f,
            "{}  ({} rounds, {} users, {} seeded appointments, 3 participants each)",
            self.pgbench_command,
            self.config.rounds,
            self.config.users,
            self.config.seed_appointments
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| round | variant | tps | ratio to A | queue left | consumed | wake-ups |"
        )?;
        writeln!(f, "| ---: | --- | ---: | ---: | ---: | ---: | ---: |")?;
        for m in &self.measurements {
            writeln!(
                f,
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                m.round,
                m.variant.label(),
                m.tps,
                opt(m.ratio, 3),
                m.queue_left
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "-".into()),
                m.drained
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "-".into()),
                m.wakeups
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "-".into()),
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "| variant | median tps | median ratio to A | range | target ≥ {:.2} |",
            self.target_ratio
        )?;
        writeln!(f, "| --- | ---: | ---: | --- | --- |")?;
        for s in &self.summary {
            if let Some(why) = &s.skipped {
                writeln!(f, "| {} | - | - | - | {} |", s.variant.label(), why)?;
                continue;
            }
            writeln!(
                f,
                "| {} | {} | {} | {}–{} | {} |",
                s.variant.label(),
                opt(s.median_tps, 0),
                opt(s.median_ratio, 3),
                opt(s.min_ratio, 3),
                opt(s.max_ratio, 3),
                verdict::met_if_known(s.target_met)
            )?;
        }
        writeln!(f)?;
        for s in &self.summary {
            writeln!(f, "{}: {}", s.variant.label(), s.description)?;
        }
        Ok(())
    }
}
