//! `livesync-bench storm --stale`: the login storm on a queue whose planner statistics are
//! as the queuing left them, beside the same data after `ANALYZE livesync.queue`.
//!
//! Seeding (once, into a template database): `users` × `per_user` appointments, one
//! participant each (the user whose calendar it is), written and queued through the real
//! triggers as in the storm; then each appointment is touched once more after it was
//! queued: a second participant (the next user) is added in a second statement, and that
//! change is queued too. No VACUUM, no ANALYZE: the statistics are whatever autovacuum
//! (PostgreSQL's defaults) did meanwhile. A second template is a copy of the first, then
//! `ANALYZE livesync.queue`. Each round copies each template once and runs the storm (null
//! sink, everyone logs in) on the copy, alternating which goes first.
//!
//! Target: the stale drain rate within noise of the analysed one: median(stale) /
//! median(analysed) ≥ 0.8.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use super::run_info::RunInfo;
use super::seed::{self, Template};
use super::server::BenchServer;
use super::stats::{median, range};
use super::storm::{self, StormResult};
use super::verdict::met_if_known;
use super::worker_proc::{self, Sink};

/// The stale rate must be at least this share of the analysed one.
pub const MIN_RATIO: f64 = 0.8;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub quick: bool,
    pub users: u32,
    pub per_user: u32,
    pub rounds: u32,
    pub worker_bin: Option<PathBuf>,
}

impl Config {
    pub fn full() -> Config {
        Config {
            quick: false,
            users: 1000,
            per_user: 100,
            rounds: 2,
            worker_bin: None,
        }
    }
    pub fn quick() -> Config {
        Config {
            quick: true,
            users: 200,
            per_user: 50,
            ..Config::full()
        }
    }
}

/// What the planner knew about `livesync.queue` when a variant started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStats {
    /// Rows in the queue.
    pub rows: i64,
    /// `pg_class.reltuples` (-1: never vacuumed or analysed).
    pub reltuples: f64,
    /// Whether `pg_statistic` has column statistics for it.
    pub has_column_stats: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: RunInfo,
    pub config: Config,
    pub seed_seconds: f64,
    /// (auto)analyses of livesync.queue in the template while it was seeded.
    pub autoanalyzed_while_seeding: i64,
    pub stale_stats: QueueStats,
    pub analysed_stats: QueueStats,
    pub stale: Vec<StormResult>,
    pub analysed: Vec<StormResult>,
    /// median(stale changes/s) / median(analysed changes/s).
    pub ratio: Option<f64>,
    pub met: Option<bool>,
}

/// median(stale) / median(analysed), and whether it reaches [`MIN_RATIO`].
pub fn verdict(stale: &[f64], analysed: &[f64]) -> (Option<f64>, Option<bool>) {
    match (median(stale), median(analysed)) {
        (Some(s), Some(a)) if a > 0.0 => {
            let r = s / a;
            (Some(r), Some(r >= MIN_RATIO))
        }
        _ => (None, None),
    }
}

pub async fn run(server: &BenchServer, config: Config) -> anyhow::Result<Report> {
    let bin = worker_proc::find_bin(config.worker_bin.clone())?;
    let run = RunInfo::start(server, &bin);
    let work_dir = std::env::temp_dir().join(format!("livesync-stale-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let (users, per_user) = (config.users, config.per_user);
    eprintln!("storm --stale: seeding {users} users × {per_user} appointments, touched twice");
    let stale_t = seed_touched_twice(server, "livesync_bench_stale", users, per_user).await?;
    let result = async {
        let url = server.url(&stale_t.name)?;
        let mut conn = PgConnection::connect(&url).await?;
        let autoanalyzed: i64 = sqlx::query_scalar(
            "select autoanalyze_count + analyze_count from pg_stat_user_tables \
              where relid = 'livesync.queue'::regclass",
        )
        .fetch_one(&mut conn)
        .await?;
        let stale_stats = queue_stats(&mut conn).await?;
        conn.close().await.ok();
        let analysed_t = Template {
            name: "livesync_bench_analysed".into(),
            ..stale_t.clone()
        };
        let analysed_url = stale_t.copy(server, &analysed_t.name).await?;
        let mut conn = PgConnection::connect(&analysed_url).await?;
        sqlx::raw_sql("analyze livesync.queue")
            .execute(&mut conn)
            .await?;
        let analysed_stats = queue_stats(&mut conn).await?;
        conn.close().await.ok();

        let timeout = Duration::from_secs(60 + 2 * (users as u64 * per_user as u64) / 5000);
        let (mut stale, mut analysed) = (Vec::new(), Vec::new());
        for round in 0..config.rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_stale in order {
                let t = if is_stale { &stale_t } else { &analysed_t };
                eprintln!(
                    "storm --stale: round {}, {}",
                    round + 1,
                    if is_stale { "stale" } else { "analysed" }
                );
                let r =
                    storm::run_livesync(server, t, &bin, Sink::Null, timeout, &work_dir).await?;
                if is_stale {
                    stale.push(r);
                } else {
                    analysed.push(r);
                }
            }
        }
        analysed_t.drop(server).await;
        anyhow::Ok((autoanalyzed, stale_stats, analysed_stats, stale, analysed))
    }
    .await;
    stale_t.drop(server).await;
    server.drop_database("livesync_bench_analysed").await;
    let (autoanalyzed, stale_stats, analysed_stats, stale, analysed) = result?;
    let _ = std::fs::remove_dir_all(&work_dir);
    let rates = |rs: &[StormResult]| -> Vec<f64> {
        rs.iter()
            .filter(|r| r.drained)
            .filter_map(|r| r.changes_per_s)
            .collect()
    };
    let (ratio, mut met) = verdict(&rates(&stale), &rates(&analysed));
    if stale.iter().chain(&analysed).any(|r| !r.drained) {
        met = Some(false);
    }
    Ok(Report {
        run: run.end(),
        seed_seconds: stale_t.seeded.seconds,
        autoanalyzed_while_seeding: autoanalyzed,
        stale_stats,
        analysed_stats,
        stale,
        analysed,
        ratio,
        met,
        config,
    })
}

async fn queue_stats(conn: &mut PgConnection) -> anyhow::Result<QueueStats> {
    let (rows, reltuples, has_column_stats): (i64, f32, bool) = sqlx::query_as(
        "select (select count(*) from livesync.queue), \
                (select reltuples from pg_class where oid = 'livesync.queue'::regclass), \
                exists (select from pg_stats where schemaname = 'livesync' \
                         and tablename = 'queue')",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(QueueStats {
        rows,
        reltuples: reltuples as f64,
        has_column_stats,
    })
}

/// The template: appointments queued as in the storm, then a second participant added to
/// each in a second statement (its own transaction) and queued; nothing analysed.
async fn seed_touched_twice(
    server: &BenchServer,
    name: &str,
    users: u32,
    per_user: u32,
) -> anyhow::Result<Template> {
    let started = std::time::Instant::now();
    let url = seed::livesync_database(server, name, users).await?;
    let mut conn = PgConnection::connect(&url).await?;
    seed::write_appointments(&mut conn, users, per_user).await?;
    let users_per_chunk = (10_000 / per_user.max(1)).max(1);
    let mut first = 1u32;
    while first <= users {
        let last = (first + users_per_chunk - 1).min(users);
        sqlx::query(
            "insert into xpert.appointment_participants (appointment_id, user_id) \
             select a.id, a.created_by % $3 + 1 from xpert.appointments a \
              where a.created_by between $1 and $2 \
             on conflict do nothing",
        )
        .bind(first as i64)
        .bind(last as i64)
        .bind(users as i64)
        .execute(&mut conn)
        .await
        .context("add the second participants")?;
        first = last + 1;
    }
    loop {
        let taken: i32 = sqlx::query_scalar("select taken from livesync.expand_changes(100000)")
            .fetch_one(&mut conn)
            .await
            .context("expand the change log into the queue")?;
        if taken < 100_000 {
            break;
        }
    }
    conn.close().await.ok();
    Ok(Template {
        name: name.to_string(),
        users,
        per_user,
        seeded: seed::Seeded {
            appointments: users as u64 * per_user as u64,
            seconds: started.elapsed().as_secs_f64(),
        },
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "livesync-bench storm --stale ({}{})",
            self.run.started_at,
            if c.quick { ", --quick" } else { "" }
        )?;
        writeln!(f, "{}; {}", self.run.load_and_server(), self.run.worker())?;
        writeln!(f)?;
        writeln!(
            f,
            "## Storm on stale statistics: {} users × {} appointments, each touched twice (null sink), {} rounds",
            c.users, c.per_user, c.rounds
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "seeding {:.1} s; analyses of livesync.queue by autovacuum while seeding: {}",
            self.seed_seconds, self.autoanalyzed_while_seeding
        )?;
        for (what, s) in [
            ("stale", &self.stale_stats),
            ("analysed", &self.analysed_stats),
        ] {
            writeln!(
                f,
                "{what}: queue {} rows, planner's reltuples {:.0}, column statistics {}",
                s.rows,
                s.reltuples,
                if s.has_column_stats { "yes" } else { "none" }
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "| statistics | entries | changes/s per run | median changes/s | range |"
        )?;
        writeln!(f, "| --- | ---: | --- | ---: | --- |")?;
        for (what, rs) in [("stale", &self.stale), ("analysed", &self.analysed)] {
            let rates: Vec<f64> = rs.iter().filter_map(|r| r.changes_per_s).collect();
            writeln!(
                f,
                "| {what} | {} | {} | {} | {} |",
                rs.first().map_or(0, |r| r.entries),
                rs.iter()
                    .map(|r| format!(
                        "{}{}",
                        r.changes_per_s.map_or("-".into(), |x| format!("{x:.0}")),
                        if r.drained { "" } else { " (timeout)" }
                    ))
                    .collect::<Vec<_>>()
                    .join(" / "),
                median(&rates).map_or("-".into(), |m| format!("{m:.0}")),
                range(&rates).map_or("-".into(), |(lo, hi)| format!("{lo:.0}–{hi:.0}")),
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "target: stale ≥ {MIN_RATIO} × analysed: {} → {}",
            self.ratio.map_or("-".into(), |r| format!("{r:.2}×")),
            met_if_known(self.met)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn ratio_of_medians() {
        assert_eq!(
            verdict(&[80.0, 100.0, 90.0], &[100.0, 100.0]),
            (Some(0.9), Some(true))
        );
        assert_eq!(verdict(&[70.0], &[100.0]), (Some(0.7), Some(false)));
        assert_eq!(verdict(&[], &[100.0]), (None, None));
    }
}
