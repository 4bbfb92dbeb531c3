//! `livesync-bench quiet`: what the worker sends to the database when there is little to do.
//!
//! The real worker (release binary, a child process, `ics` sink by default) runs against a
//! database of `users` users of whom one is online. Its statements are counted with
//! `pg_stat_statements` (see `pgss`): the worker logs in as a role of its own, the counters
//! are reset at the start of each window and the worker's role's `sum(calls)` in the
//! benchmark database is read at its end; the driver's own statements (its writes, the
//! reads that wait for the deliveries) run as the driver's role and are counted apart.
//!
//! Windows:
//! - idle: nothing changes for `idle_seconds`;
//! - one change per second: the driver writes one appointment of the online user per
//!   second (one transaction: the appointment and its participant), `change_seconds`
//!   of them, and waits until the last one is delivered; the window ends at that delivery
//!   (or after `change_seconds`, whichever is later), so the work of every change is
//!   counted.
//!
//! Targets: idle ≤ 1 statement/s; one change per second ≤ 10 statements/s, the work
//! included (and every change delivered).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use super::latency::write_paced;
use super::pgss;
use super::run_info::RunInfo;
use super::seed;
use super::server::BenchServer;
use super::verdict;
use super::worker_proc::{self, Sink, WorkerProc};

/// Idle: at most this many worker statements per second.
pub const IDLE_TARGET_PER_S: f64 = 1.0;
/// One change per second: at most this many worker statements per second.
pub const CHANGES_TARGET_PER_S: f64 = 10.0;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub quick: bool,
    pub users: u32,
    pub idle_seconds: u32,
    pub change_seconds: u32,
    pub sink: Sink,
    pub worker_bin: Option<PathBuf>,
}

impl Config {
    pub fn full() -> Config {
        Config {
            quick: false,
            users: 1000,
            idle_seconds: 30,
            change_seconds: 30,
            sink: Sink::Ics,
            worker_bin: None,
        }
    }
    pub fn quick() -> Config {
        Config {
            quick: true,
            idle_seconds: 10,
            change_seconds: 10,
            ..Config::full()
        }
    }
}

/// One measuring window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    pub what: &'static str,
    /// From the counters' reset to their reading.
    pub seconds: f64,
    /// Appointments the driver wrote in the window.
    pub changes: u32,
    /// Of those, delivered by the end of the window.
    pub delivered: u32,
    /// The worker's statements (`sum(calls)` of its role).
    pub worker_statements: i64,
    pub worker_per_s: f64,
    /// The driver's own statements in the same window (not part of the figure).
    pub driver_statements: i64,
    /// The worker's statements, most frequent first.
    pub top: Vec<(String, i64)>,
    pub target_per_s: f64,
    pub met: bool,
}

impl Window {
    /// The rate and the verdict from the counts.
    pub fn new(
        what: &'static str,
        seconds: f64,
        (changes, delivered): (u32, u32),
        worker: pgss::Counts,
        driver_statements: i64,
        target_per_s: f64,
    ) -> Window {
        let worker_per_s = rate(worker.calls, seconds);
        Window {
            what,
            seconds,
            changes,
            delivered,
            worker_statements: worker.calls,
            worker_per_s,
            driver_statements,
            top: worker.top,
            target_per_s,
            met: worker_per_s <= target_per_s && delivered == changes,
        }
    }
}

/// `count` per second over `seconds` (NaN without time).
pub fn rate(count: i64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        f64::NAN
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: RunInfo,
    pub config: Config,
    pub windows: Vec<Window>,
}

impl Report {
    pub fn met(&self) -> bool {
        !self.windows.is_empty() && self.windows.iter().all(|w| w.met)
    }
}

pub async fn run(server: &BenchServer, config: Config) -> anyhow::Result<Report> {
    let bin = worker_proc::find_bin(config.worker_bin.clone())?;
    let run = RunInfo::start(server, &bin);
    let loaded_here = pgss::load(server).await?;
    let name = "livesync_bench_quiet";
    let result = async {
        eprintln!("quiet: seeding {} users", config.users);
        let url = seed::livesync_database(server, name, config.users).await?;
        let work_dir = std::env::temp_dir().join(format!("livesync-quiet-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)?;
        let windows = measure(&url, &bin, &config, &work_dir).await;
        if windows.is_ok() {
            let _ = std::fs::remove_dir_all(&work_dir);
        }
        windows
    }
    .await;
    server.drop_database(name).await;
    pgss::unload(server, loaded_here).await?;
    Ok(Report {
        run: run.end(),
        windows: result?,
        config,
    })
}

async fn measure(
    url: &str,
    bin: &Path,
    config: &Config,
    work_dir: &Path,
) -> anyhow::Result<Vec<Window>> {
    let mut conn = PgConnection::connect(url).await?;
    pgss::prepare(&mut conn).await?;
    sqlx::raw_sql("vacuum analyze").execute(&mut conn).await?;
    let driver_role: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await?;
    let user_id = 1i64;
    let worker = WorkerProc::start(
        bin,
        &pgss::worker_url(url),
        config.sink,
        &work_dir.join("calendars"),
        work_dir.join("worker-quiet.log"),
        &mut conn,
        &[],
    )
    .await?;
    let outcome = async {
        seed::log_in_one_handled(&mut conn, user_id, Duration::from_millis(50)).await?;
        // One change delivered before the windows, then time to fall asleep.
        let warm = write_paced(&mut conn, user_id, 1, 1).await?;
        wait_delivered(&mut conn, &warm, Duration::from_secs(10)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;

        eprintln!("quiet: idle for {} s", config.idle_seconds);
        pgss::reset(&mut conn).await?;
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(config.idle_seconds as u64)).await;
        let worker_counts = pgss::counts(&mut conn, pgss::WORKER_ROLE).await?;
        let seconds = t.elapsed().as_secs_f64();
        let driver = pgss::counts(&mut conn, &driver_role).await?.calls;
        let idle = Window::new(
            "idle",
            seconds,
            (0, 0),
            worker_counts,
            driver,
            IDLE_TARGET_PER_S,
        );

        eprintln!(
            "quiet: one change per second for {} s",
            config.change_seconds
        );
        pgss::reset(&mut conn).await?;
        let t = Instant::now();
        let writes = write_paced(&mut conn, user_id, 1, config.change_seconds).await?;
        let delivered = wait_delivered(&mut conn, &writes, Duration::from_secs(10)).await?;
        // The writes start at once and come a second apart: the window lasts at least as
        // many seconds as there were changes.
        let window = Duration::from_secs(config.change_seconds as u64);
        if let Some(rest) = window.checked_sub(t.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let worker_counts = pgss::counts(&mut conn, pgss::WORKER_ROLE).await?;
        let seconds = t.elapsed().as_secs_f64();
        let driver = pgss::counts(&mut conn, &driver_role).await?.calls;
        let changes = Window::new(
            "one change per second",
            seconds,
            (writes.len() as u32, delivered),
            worker_counts,
            driver,
            CHANGES_TARGET_PER_S,
        );
        anyhow::Ok(vec![idle, changes])
    }
    .await;
    let windows = worker.stop_after(outcome).await?;
    conn.close().await.ok();
    Ok(windows)
}

/// Wait until each written appointment is delivered (polling every 20 ms, at most
/// `timeout`); returns how many are.
async fn wait_delivered(
    conn: &mut PgConnection,
    writes: &[(i64, chrono::DateTime<chrono::Utc>)],
    timeout: Duration,
) -> anyhow::Result<u32> {
    let ids: Vec<i64> = writes.iter().map(|(id, _)| *id).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from livesync.delivered where appointment_id = any($1)",
        )
        .bind(&ids)
        .fetch_one(&mut *conn)
        .await
        .context("count deliveries")?;
        if n as usize >= ids.len() || Instant::now() >= deadline {
            return Ok(n as u32);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "livesync-bench quiet ({}{})",
            self.run.started_at,
            if self.config.quick { ", --quick" } else { "" }
        )?;
        writeln!(f, "{}", self.run.load_and_server())?;
        writeln!(
            f,
            "{}, {} sink, one user online among {}; statements counted \
             with pg_stat_statements (calls of the worker's own role, utility statements \
             included)",
            self.run.worker(),
            self.config.sink.name(),
            self.config.users
        )?;
        writeln!(f)?;
        writeln!(f, "## Quiet: the worker's statements per second")?;
        writeln!(f)?;
        writeln!(
            f,
            "| window | seconds | changes | delivered | worker statements | per second | target | driver's statements (not counted) | met |"
        )?;
        writeln!(
            f,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        )?;
        for w in &self.windows {
            writeln!(
                f,
                "| {} | {:.1} | {} | {} | {} | {:.2} | ≤ {:.0} | {} | {} |",
                w.what,
                w.seconds,
                w.changes,
                w.delivered,
                w.worker_statements,
                w.worker_per_s,
                w.target_per_s,
                w.driver_statements,
                verdict::met(w.met)
            )?;
        }
        for w in &self.windows {
            writeln!(f)?;
            writeln!(
                f,
                "{}: the worker's statements, most frequent first",
                w.what
            )?;
            for (query, calls) in &w.top {
                writeln!(f, "  {calls:>6}  {query}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rates_and_verdicts() {
        let counts = |calls| pgss::Counts {
            calls,
            ..Default::default()
        };
        let idle = Window::new("idle", 30.0, (0, 0), counts(15), 3, 1.0);
        assert_eq!(idle.worker_per_s, 0.5);
        assert!(idle.met);
        let busy = Window::new("changes", 10.0, (10, 10), counts(101), 40, 10.0);
        assert!(!busy.met);
        let undelivered = Window::new("changes", 10.0, (10, 9), counts(50), 40, 10.0);
        assert!(!undelivered.met);
        assert!(rate(1, 0.0).is_nan());
    }
}
