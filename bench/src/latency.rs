//! Scenario "live latency": one online user; a separate client writes one appointment per
//! transaction at a fixed rate; latency = from that client's COMMIT returning to the
//! delivery.
//!
//! Method. The client notes the wall clock right after COMMIT returns. The worker records
//! `livesync.delivered.delivered_at = now()` in the transaction that completes the batch;
//! `now()` is that transaction's start, taken when its BEGIN reached the server, which
//! happens right after the sink call returned. Both clocks are this host's realtime clock
//! (client and server run here), so the difference needs no synchronisation and nothing
//! polls while the measurement runs: the timestamps are read after the last delivery.
//! Errors: the figure includes one BEGIN round trip after the sink call (tens of µs on
//! loopback) and excludes the completion's own statements and commit; a delivery can be
//! stamped before the client has parsed COMMIT's reply (the commit is visible to others
//! a little before the reply arrives), so the smallest figures can read a few µs low.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::seed;
use super::server::BenchServer;
use super::worker_proc::{Sink, WorkerProc};

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub seconds: u32,
    /// Appointments per second.
    pub rate: u32,
    /// Users in the database (all with sync active, one online).
    pub users: u32,
    /// Appointments written and delivered before the measurement starts.
    pub warmup: u32,
}

impl Config {
    pub fn full() -> Config {
        Config {
            seconds: 20,
            rate: 50,
            users: 1000,
            warmup: 25,
        }
    }
    pub fn quick() -> Config {
        Config {
            seconds: 5,
            ..Config::full()
        }
    }
}

/// Latency percentiles of one system and variant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyResult {
    pub system: &'static str,
    pub variant: String,
    pub samples: usize,
    /// Writes whose delivery was not seen within the wait after the last write.
    pub missing: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencyResult {
    pub fn from_samples(
        system: &'static str,
        variant: String,
        mut ms: Vec<f64>,
        missing: usize,
    ) -> LatencyResult {
        ms.sort_by(f64::total_cmp);
        let mean = if ms.is_empty() {
            f64::NAN
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        };
        LatencyResult {
            system,
            variant,
            samples: ms.len(),
            missing,
            p50_ms: percentile(&ms, 50.0),
            p90_ms: percentile(&ms, 90.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
            mean_ms: mean,
        }
    }

    /// The cells `samples | p50 ms | p90 ms | p99 ms | max ms` of the latency tables.
    pub fn sample_cells(&self) -> String {
        format!(
            "{} | {:.2} | {:.2} | {:.2} | {:.2}",
            self.samples, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Nearest-rank percentile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Write one appointment for `user_id` per transaction at `rate` per second for `seconds`
/// (or `count` writes when given); returns each appointment id with the wall-clock time
/// at which its COMMIT returned.
pub async fn write_paced(
    conn: &mut PgConnection,
    user_id: i64,
    rate: u32,
    count: u32,
) -> anyhow::Result<Vec<(i64, DateTime<Utc>)>> {
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        every.tick().await;
        let mut tx = conn.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "insert into xpert.appointments (subject, location, notes, starts_at, ends_at, created_by) \
             values ('Besprechung Verlassenschaft', 'Kanzlei, Besprechungszimmer 2', \
                     'Aktenzahl 4711/26; Unterlagen mitbringen', \
                     date_trunc('hour', now()) + interval '26 hours', \
                     date_trunc('hour', now()) + interval '27 hours', $1) \
             returning id",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "insert into xpert.appointment_participants (appointment_id, user_id) values ($1, $2)",
        )
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        out.push((id, Utc::now()));
    }
    Ok(out)
}

/// Milliseconds from `from` to `to`.
pub fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from)
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}

/// livesync with the real worker and `sink`.
pub async fn run_livesync(
    server: &BenchServer,
    bin: &Path,
    sink: Sink,
    config: &Config,
    work_dir: &Path,
) -> anyhow::Result<LatencyResult> {
    let name = format!("livesync_bench_latency_{}", sink.name());
    eprintln!("latency: livesync, {} sink", sink.name());
    let url = seed::livesync_database(server, &name, config.users).await?;
    let result = measure_livesync(&url, &url, bin, sink, config, work_dir, true).await;
    server.drop_database(&name).await;
    result
}

/// The commit → calendar p99 target of a sink, in ms (`None`: no target for it).
pub fn p99_target_ms(sink: Sink) -> Option<f64> {
    match sink {
        Sink::Null => Some(10.0),
        Sink::Ics => Some(25.0),
        Sink::CalDav => None,
    }
}

/// The latency of `sink` on the database at `url` (users seeded, user 1 is the one that
/// logs in and gets the writes); the worker connects with `worker_url` (the same database,
/// perhaps as another role). With `analyze`, `VACUUM ANALYZE` first (a fresh database);
/// without, the statistics stay as they are (the grown database).
pub async fn measure_livesync(
    url: &str,
    worker_url: &str,
    bin: &Path,
    sink: Sink,
    config: &Config,
    work_dir: &Path,
    analyze: bool,
) -> anyhow::Result<LatencyResult> {
    let mut conn = PgConnection::connect(url).await?;
    if analyze {
        sqlx::raw_sql("vacuum analyze").execute(&mut conn).await?;
    }
    let user_id = 1i64;
    let ics_dir = work_dir.join(format!("latency-{}", sink.name()));
    let worker = WorkerProc::start(
        bin,
        worker_url,
        sink,
        &ics_dir,
        work_dir.join(format!("worker-latency-{}.log", sink.name())),
        &mut conn,
        &[],
    )
    .await?;
    let outcome = async {
        seed::log_in_one_handled(&mut conn, user_id, Duration::from_millis(10)).await?;
        let warm = write_paced(&mut conn, user_id, config.rate, config.warmup).await?;
        wait_delivered(&mut conn, user_id, &warm, Duration::from_secs(10)).await?;

        let writes = write_paced(
            &mut conn,
            user_id,
            config.rate,
            config.rate * config.seconds,
        )
        .await?;
        let delivered =
            wait_delivered(&mut conn, user_id, &writes, Duration::from_secs(10)).await?;
        let ms: Vec<f64> = writes
            .iter()
            .filter_map(|(id, committed)| delivered.get(id).map(|at| ms_between(*committed, *at)))
            .collect();
        let missing = writes.len() - ms.len();
        anyhow::Ok(LatencyResult::from_samples(
            "livesync",
            format!("{} sink", sink.name()),
            ms,
            missing,
        ))
    }
    .await;
    let stopped = worker.stop().await;
    let result = outcome?;
    stopped?;
    conn.close().await.ok();
    let _ = std::fs::remove_dir_all(&ics_dir);
    Ok(result)
}

/// Wait until every written appointment has a delivery record (or `timeout` passed);
/// returns `delivered_at` per appointment id.
async fn wait_delivered(
    conn: &mut PgConnection,
    user_id: i64,
    writes: &[(i64, DateTime<Utc>)],
    timeout: Duration,
) -> anyhow::Result<std::collections::HashMap<i64, DateTime<Utc>>> {
    let ids: Vec<i64> = writes.iter().map(|(id, _)| *id).collect();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
            "select appointment_id, delivered_at from livesync.delivered \
              where user_id = $1 and appointment_id = any($2)",
        )
        .bind(user_id)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .context("read delivered_at")?;
        if rows.len() == ids.len() || std::time::Instant::now() >= deadline {
            return Ok(rows.into_iter().collect());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_cells_show_count_and_percentiles() {
        let r = LatencyResult::from_samples("livesync", "ics".into(), vec![3.0, 1.0, 2.0], 0);
        assert_eq!(r.sample_cells(), "3 | 2.00 | 3.00 | 3.00 | 3.00");
    }
}
