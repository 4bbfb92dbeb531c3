//! Scenarios "login storm", "growth" and "memory".
//!
//! Storm: `users` users with `per_user` changes each, queued through the real triggers
//! while everyone is offline (live mode, so nothing is deliverable); the real worker runs
//! and has gone idle. Then every user logs in — one transaction per login, from four
//! connections, as fast as the server takes them (within about a second at 1,000 users) —
//! and the clock runs from just before the first login until the last delivery
//! (`max(delivered.delivered_at)`, stamped right after the sink call; see `latency`). A
//! poll every 5 ms notices the queue is empty; that moment is reported too. Throughput is
//! entries / time to the last delivery; "steady" is the middle 80 % of the deliveries over
//! the time they took (from `delivered_at`), which leaves out the ramp while logins arrive.
//!
//! Growth: the storm at several sizes, for a throughput without a quadratic step and tables
//! that do not bloat (dead tuples right after the drain, with the worker stopped so its
//! backends have flushed their statistics; sizes before, after, and after a plain VACUUM).
//! The targets are in `growth`.
//!
//! Memory: the worker's resident size when idle before the storm (`VmRSS`), its peak
//! during the storm (`VmHWM`), and when idle again afterwards.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::latency::ms_between;
use super::seed::{self, TableStat, Template};
use super::server::BenchServer;
use super::worker_proc::{Sink, WorkerProc};

/// How often the driver looks whether the queue (the peer's jobs table) is empty.
pub const POLL_MS: u64 = 20;

/// The livesync tables whose size and dead tuples the reports show.
pub const LIVESYNC_TABLES: [&str; 4] = [
    "livesync.queue",
    "livesync.delivered",
    "livesync.user_state",
    "livesync.login_events",
];

/// Resident memory of the process that delivered, in bytes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StormMemory {
    /// Before the storm, idle (the peer: modules loaded, runner not started yet).
    pub idle_rss: u64,
    /// Peak resident size (`VmHWM`) up to the end of the drain.
    pub peak_rss: u64,
    /// Resident size after the drain.
    pub after_rss: u64,
}

/// One storm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StormResult {
    pub system: &'static str,
    pub variant: String,
    pub users: u32,
    pub per_user: u32,
    /// Queue entries (livesync) or jobs (peer) before the storm.
    pub entries: u64,
    /// Time the Xpert-like writes took, triggers included.
    pub seed_seconds: f64,
    /// From the first login to the last login's commit (livesync).
    pub logins_seconds: Option<f64>,
    /// Deliveries recorded (livesync) or tasks run (peer).
    pub delivered: u64,
    /// Whether the queue was seen empty before the timeout.
    pub drained: bool,
    /// From the start to the last delivery (livesync: `max(delivered_at)`; peer: last task).
    pub to_last_delivery_s: Option<f64>,
    /// From the start to the poll that saw the queue (jobs table) empty.
    pub to_queue_empty_s: f64,
    /// entries / to_last_delivery_s.
    pub changes_per_s: Option<f64>,
    /// The middle 80 % of deliveries over the time they took.
    pub steady_changes_per_s: Option<f64>,
    /// Seconds from the start at which 0 %, 10 %, … 100 % of the deliveries had happened.
    pub deciles_s: Vec<f64>,
    pub memory: Option<StormMemory>,
    pub tables_before: Vec<TableStat>,
    pub tables_after: Vec<TableStat>,
    pub tables_after_vacuum: Vec<TableStat>,
}

impl StormResult {
    /// Fill in the derived rates.
    pub fn finish(mut self) -> StormResult {
        let secs = self.to_last_delivery_s.unwrap_or(self.to_queue_empty_s);
        if self.changes_per_s.is_none() && secs > 0.0 && self.delivered > 0 {
            self.changes_per_s = Some(self.delivered as f64 / secs);
        }
        if self.steady_changes_per_s.is_none() && self.deciles_s.len() == 11 {
            let span = self.deciles_s[9] - self.deciles_s[1];
            if span > 0.0 {
                self.steady_changes_per_s = Some(0.8 * self.delivered as f64 / span);
            }
        }
        self
    }
}

/// Seconds from `t0` to each decile time.
pub fn deciles_since(t0: DateTime<Utc>, deciles: &[DateTime<Utc>]) -> Vec<f64> {
    deciles
        .iter()
        .map(|t| ms_between(t0, *t) / 1000.0)
        .collect()
}

/// A livesync database with `users` × `per_user` changes queued while everyone is offline,
/// vacuumed and analysed: the template every storm variant of that size copies.
pub async fn seed_livesync(
    server: &BenchServer,
    users: u32,
    per_user: u32,
) -> anyhow::Result<Template> {
    eprintln!("storm: seeding livesync, {users} users × {per_user} changes");
    seed_template(
        server,
        format!("livesync_bench_seed_{users}x{per_user}"),
        users,
        per_user,
    )
    .await
}

/// Like [`seed_livesync`], into the template database `name`.
pub async fn seed_template(
    server: &BenchServer,
    name: String,
    users: u32,
    per_user: u32,
) -> anyhow::Result<Template> {
    let url = seed::livesync_database(server, &name, users).await?;
    let mut conn = PgConnection::connect(&url).await?;
    let seeded = seed::write_appointments(&mut conn, users, per_user).await?;
    sqlx::raw_sql("vacuum analyze").execute(&mut conn).await?;
    conn.close().await?;
    Ok(Template {
        name,
        users,
        per_user,
        seeded,
    })
}

/// The livesync storm with the real worker and `sink`, on a copy of `template`.
pub async fn run_livesync(
    server: &BenchServer,
    template: &Template,
    bin: &Path,
    sink: Sink,
    timeout: Duration,
    work_dir: &Path,
) -> anyhow::Result<StormResult> {
    let name = format!("livesync_bench_storm_{}", sink.name());
    let (users, per_user) = (template.users, template.per_user);
    eprintln!(
        "storm: livesync, {} sink, {} × {}",
        sink.name(),
        users,
        per_user
    );
    let url = template.copy(server, &name).await?;
    let ics_dir = work_dir.join(format!("storm-{}-{}", sink.name(), users * per_user));
    let result = storm_livesync(&url, bin, sink, template, timeout, work_dir, &ics_dir).await;
    server.drop_database(&name).await;
    let _ = std::fs::remove_dir_all(&ics_dir);
    result
}

/// A login storm against a running worker, timed.
pub struct Drain {
    /// Just before the first login.
    pub t0: DateTime<Utc>,
    /// The last login's commit.
    pub logins_done: DateTime<Utc>,
    /// Whether the queue and the change log were seen empty before the timeout.
    pub drained: bool,
    /// The poll that saw them empty (or the timeout).
    pub seen_empty: DateTime<Utc>,
}

/// Every user logs in (one transaction each, from four connections), then wait until the
/// queue and the change log are empty, looking every [`POLL_MS`], at most `timeout`.
pub async fn log_in_and_drain(
    conn: &mut PgConnection,
    url: &str,
    users: u32,
    timeout: Duration,
) -> anyhow::Result<Drain> {
    let t0 = Utc::now();
    let logins_done = seed::log_in(url, users, 4).await?;
    let drained = seed::wait_until(
        conn,
        "select not exists (select 1 from livesync.queue) \
         and not exists (select 1 from livesync.changes)",
        Duration::from_millis(POLL_MS),
        timeout,
    )
    .await?;
    Ok(Drain {
        t0,
        logins_done,
        drained,
        seen_empty: Utc::now(),
    })
}

async fn storm_livesync(
    url: &str,
    bin: &Path,
    sink: Sink,
    template: &Template,
    timeout: Duration,
    work_dir: &Path,
    ics_dir: &Path,
) -> anyhow::Result<StormResult> {
    let (users, per_user) = (template.users, template.per_user);
    let mut conn = PgConnection::connect(url).await?;
    let entries: i64 = sqlx::query_scalar("select count(*) from livesync.queue")
        .fetch_one(&mut conn)
        .await?;
    let before = seed::table_stats(&mut conn, &LIVESYNC_TABLES).await?;

    let worker = WorkerProc::start(
        bin,
        url,
        sink,
        ics_dir,
        work_dir.join(format!(
            "worker-storm-{}-{}.log",
            sink.name(),
            users * per_user
        )),
        &mut conn,
        &[],
    )
    .await?;
    let outcome = async {
        worker.settle().await;
        let idle = worker.memory()?;
        let drain = log_in_and_drain(&mut conn, url, users, timeout).await?;
        let peak = worker.memory()?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let after = worker.memory()?;
        anyhow::Ok((idle, drain, peak, after))
    }
    .await;
    let (
        idle,
        Drain {
            t0,
            logins_done,
            drained,
            seen_empty,
        },
        peak,
        after_mem,
    ) = worker.stop_after(outcome).await?;

    let delivered: i64 = sqlx::query_scalar("select count(*) from livesync.delivered")
        .fetch_one(&mut conn)
        .await?;
    let deciles: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "select unnest(percentile_disc(array[0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1]) \
                within group (order by delivered_at)) from livesync.delivered",
    )
    .fetch_all(&mut conn)
    .await?;
    // The worker's backends have exited, so their table statistics are flushed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tables_after = seed::table_stats(&mut conn, &LIVESYNC_TABLES).await?;
    seed::vacuum(&mut conn, &LIVESYNC_TABLES).await?;
    let tables_after_vacuum = seed::table_stats(&mut conn, &LIVESYNC_TABLES).await?;
    conn.close().await.ok();

    Ok(StormResult {
        system: "livesync",
        variant: format!("{} sink", sink.name()),
        users,
        per_user,
        entries: entries as u64,
        seed_seconds: template.seeded.seconds,
        logins_seconds: Some(ms_between(t0, logins_done) / 1000.0),
        delivered: delivered as u64,
        drained,
        to_last_delivery_s: deciles.last().map(|t| ms_between(t0, *t) / 1000.0),
        to_queue_empty_s: ms_between(t0, seen_empty) / 1000.0,
        changes_per_s: None,
        steady_changes_per_s: None,
        deciles_s: deciles_since(t0, &deciles),
        memory: Some(StormMemory {
            idle_rss: idle.rss,
            peak_rss: peak.peak,
            after_rss: after_mem.rss,
        }),
        tables_before: before,
        tables_after,
        tables_after_vacuum,
    }
    .finish())
}
