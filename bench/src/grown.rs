//! `livesync-bench latency --grown`: live latency and the status reads on a grown database,
//! on a server with stock settings, with planner statistics as autovacuum leaves them.
//!
//! Growing: `users` users × `per_user` upcoming appointments written through the real
//! triggers and drained by a login storm (real worker, `null` sink), which fills
//! `livesync.queue` and then `livesync.delivered`. Then `livesync.delivered` is brought to
//! `delivered_rows` rows as years of use would have left it: past appointments of every
//! user (one participant, the user) with the delivery row a worker wrote for each (UID,
//! version from the queue's sequence, SEQUENCE 0, the row version of the appointment row,
//! delivered the day before it took place), written in bulk with the triggers off (they
//! were delivered long ago). Everyone logs out after the storm, so that live latency runs,
//! as on the small database, with one online user. Nobody runs ANALYZE or VACUUM:
//! autovacuum runs with PostgreSQL's defaults.
//!
//! Measured, with `pg_stat_statements` loaded (it does not change plans) and reset first:
//! - live latency (`ics`, `null` sink) as in `latency`, the worker logging in as a role of
//!   its own, twice: right after growing (information: autovacuum's first pass over the
//!   grown tables may run beside it), then, once autovacuum has analysed them, with the
//!   statistics it left: commit → calendar p99 ≤ 25 ms (ics), ≤ 10 ms (null);
//! - `select * from livesync.user_status where user_id = $1` (one user): ≤ 5 ms;
//! - the admin's all-user reads: `livesync-admin users`, `livesync-admin queue` (each run
//!   in-process as the admin runs it: connect, move the change log into the queue, read) and
//!   `select sum(queued) from livesync.user_status`: ≤ 200 ms each;
//! - JIT: the view reads' `EXPLAIN (ANALYZE, FORMAT JSON)` has no "JIT" entry, and
//!   `sum(jit_functions)` of the worker's statements is 0; every statement of the database
//!   that was JIT-compiled is listed.
//!
//! Timings are the median of `reads` runs (the first, cold, one is shown too).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use super::latency::{self, LatencyResult};
use super::pgss;
use super::run_info::RunInfo;
use super::seed;
use super::server::BenchServer;
use super::stats::median;
use super::storm;
use super::verdict;
use super::worker_proc::{self, Sink, WorkerProc};

pub const USER_STATUS_TARGET_MS: f64 = 5.0;
pub const ALL_USERS_TARGET_MS: f64 = 200.0;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub quick: bool,
    pub users: u32,
    pub per_user: u32,
    pub delivered_rows: u64,
    /// Runs of each read.
    pub reads: u32,
    pub latency: latency::Config,
    pub worker_bin: Option<PathBuf>,
}

impl Config {
    pub fn full() -> Config {
        Config {
            quick: false,
            users: 1000,
            per_user: 100,
            delivered_rows: 1_000_000,
            reads: 10,
            latency: latency::Config::full(),
            worker_bin: None,
        }
    }
    /// The same database (growing is most of the time), latency 5 s per sink.
    pub fn quick() -> Config {
        Config {
            quick: true,
            latency: latency::Config::quick(),
            ..Config::full()
        }
    }
}

/// One read, timed `reads` times.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Read {
    pub what: String,
    pub first_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
    pub target_ms: f64,
    /// Whether its plan (EXPLAIN ANALYZE) had a JIT entry (`None`: not explained).
    pub jit_in_plan: Option<bool>,
    pub met: bool,
}

impl Read {
    pub fn from_ms(
        what: String,
        ms: &[f64],
        target_ms: f64,
        jit_in_plan: Option<bool>,
    ) -> Option<Read> {
        let first_ms = *ms.first()?;
        let median_ms = median(ms)?;
        let max_ms = ms.iter().copied().fold(f64::MIN, f64::max);
        Some(Read {
            what,
            first_ms,
            median_ms,
            max_ms,
            target_ms,
            jit_in_plan,
            met: median_ms <= target_ms && jit_in_plan != Some(true),
        })
    }
}

/// A statement of the grown database that was JIT-compiled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Jitted {
    pub role: String,
    pub query: String,
    pub calls: i64,
    pub jit_functions: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: RunInfo,
    pub seconds: f64,
    pub config: Config,
    pub postgres: String,
    /// The settings that matter here, as in force.
    pub settings: Vec<(String, String)>,
    /// Settings not at their default (name=value (source)).
    pub non_default: Vec<String>,
    pub grow_seconds: f64,
    pub storm_changes_per_s: Option<f64>,
    pub pad_seconds: f64,
    /// Rows and statistics when the measurement started.
    pub tables: Vec<TableState>,
    /// Live latency right after growing (autovacuum's first pass may run beside it).
    pub latency_fresh: Vec<LatencyResult>,
    /// Seconds waited, after that, for autovacuum's first pass over the grown tables, and
    /// whether it came within the wait.
    pub autovacuum_wait_seconds: f64,
    pub autovacuum_done: bool,
    /// Rows and statistics once autovacuum had its pass.
    pub tables_settled: Vec<TableState>,
    /// Live latency with the statistics as autovacuum left them (the targets).
    pub latency: Vec<LatencyResult>,
    pub reads: Vec<Read>,
    /// `sum(calls)` / `sum(jit_functions)` of the worker's statements while measured.
    pub worker_statements: i64,
    pub worker_jit_functions: i64,
    pub jitted: Vec<Jitted>,
    pub targets: Vec<super::delivery::Target>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableState {
    pub table: String,
    pub rows: i64,
    pub reltuples: f64,
    pub last_autoanalyze: Option<String>,
    pub last_autovacuum: Option<String>,
}

const SETTINGS: [&str; 8] = [
    "jit",
    "jit_above_cost",
    "jit_optimize_above_cost",
    "autovacuum",
    "autovacuum_naptime",
    "autovacuum_analyze_scale_factor",
    "autovacuum_vacuum_scale_factor",
    "shared_preload_libraries",
];

pub async fn run(server: &BenchServer, config: Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let bin = worker_proc::find_bin(config.worker_bin.clone())?;
    let run = RunInfo::start(server, &bin);
    let loaded_here = pgss::load(server).await?;
    let name = "livesync_bench_grown";
    let work_dir = std::env::temp_dir().join(format!("livesync-grown-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let result = grow_and_measure(server, name, run, &bin, &config, &work_dir).await;
    server.drop_database(name).await;
    pgss::unload(server, loaded_here).await?;
    let mut report = result?;
    let _ = std::fs::remove_dir_all(&work_dir);
    report.run = report.run.end();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn grow_and_measure(
    server: &BenchServer,
    name: &str,
    run: RunInfo,
    bin: &std::path::Path,
    config: &Config,
    work_dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let (users, per_user) = (config.users, config.per_user);
    let t = Instant::now();
    eprintln!("latency --grown: {users} users × {per_user} appointments, then a storm");
    let url = seed::livesync_database(server, name, users).await?;
    let mut conn = PgConnection::connect(&url).await?;
    pgss::prepare(&mut conn).await?;
    seed::write_appointments(&mut conn, users, per_user).await?;
    let worker_url = pgss::worker_url(&url);
    let worker = WorkerProc::start(
        bin,
        &worker_url,
        Sink::Null,
        &work_dir.join("storm"),
        work_dir.join("worker-grown-storm.log"),
        &mut conn,
        &[],
    )
    .await?;
    let entries = users as u64 * per_user as u64;
    let drain = async {
        worker.settle().await;
        storm::log_in_and_drain(
            &mut conn,
            &url,
            users,
            Duration::from_secs(120 + entries / 2000),
        )
        .await
    }
    .await;
    let drain = worker.stop_after(drain).await?;
    anyhow::ensure!(drain.drained, "the storm did not drain the queue");
    let storm_secs = latency::ms_between(drain.t0, drain.seen_empty) / 1000.0;
    let grow_seconds = t.elapsed().as_secs_f64();

    // The day is over: everyone closes Xpert, so live latency runs with one online user
    // among 1,000, as on the small database. (What 1,000 online users cost a look is
    // measured apart: BENCHMARKS.md, "latency".)
    sqlx::query("update xpert.logins set logged_out_at = now() where logged_out_at is null")
        .execute(&mut conn)
        .await
        .context("log everyone out after the storm")?;
    let t = Instant::now();
    let delivered: i64 = sqlx::query_scalar("select count(*) from livesync.delivered")
        .fetch_one(&mut conn)
        .await?;
    let storm_changes_per_s = (storm_secs > 0.0).then(|| delivered as f64 / storm_secs);
    let missing = config.delivered_rows.saturating_sub(delivered as u64);
    eprintln!("latency --grown: {delivered} deliveries; adding {missing} past ones");
    pad_history(&mut conn, users, missing).await?;
    let pad_seconds = t.elapsed().as_secs_f64();

    let mut settings = Vec::new();
    for s in SETTINGS {
        let v: String = sqlx::query_scalar("select current_setting($1)")
            .bind(s)
            .fetch_one(&mut conn)
            .await?;
        settings.push((s.to_string(), v));
    }
    let non_default: Vec<String> = sqlx::query_scalar(
        "select name || '=' || setting || coalesce(' ' || unit, '') || ' (' || source || ')' \
           from pg_settings where source not in ('default', 'override', 'client', 'session') \
          order by name",
    )
    .fetch_all(&mut conn)
    .await?;
    let postgres: String = sqlx::query_scalar("select version()")
        .fetch_one(&mut conn)
        .await?;
    let tables = table_states(&mut conn).await?;

    // The measurement: counters from here on.
    pgss::reset(&mut conn).await?;
    let live = |when: &'static str| {
        let (url, worker_url) = (url.clone(), worker_url.clone());
        async move {
            let mut out = Vec::new();
            for sink in [Sink::Ics, Sink::Null] {
                eprintln!(
                    "latency --grown: live latency, {} sink, {when}",
                    sink.name()
                );
                out.push(
                    latency::measure_livesync(
                        &url,
                        &worker_url,
                        bin,
                        sink,
                        &config.latency,
                        work_dir,
                        false,
                    )
                    .await
                    .with_context(|| format!("latency, {} sink, {when}", sink.name()))?,
                );
            }
            anyhow::Ok(out)
        }
    };
    let latency_fresh = live("right after growing").await?;
    eprintln!("latency --grown: waiting for autovacuum's first pass over the grown tables");
    let t = Instant::now();
    let autovacuum_done = autovacuum_had_its_pass(&mut conn, AUTOVACUUM_WAIT).await?;
    let autovacuum_wait_seconds = t.elapsed().as_secs_f64();
    let tables_settled = table_states(&mut conn).await?;
    let latency = live("after autovacuum").await?;
    let worker_counts = pgss::counts(&mut conn, pgss::WORKER_ROLE).await?;

    eprintln!("latency --grown: status and admin reads");
    let mut reads = Vec::new();
    let user_id = users.div_ceil(2) as i64;
    let one = "select * from livesync.user_status where user_id = $1";
    let ms = time_sql(&mut conn, one, Some(user_id), config.reads).await?;
    let jit = plan_has_jit(&mut conn, one, Some(user_id)).await?;
    reads.extend(Read::from_ms(
        format!("`{one}` (one user)"),
        &ms,
        USER_STATUS_TARGET_MS,
        Some(jit),
    ));
    let all = "select sum(queued) from livesync.user_status";
    let ms = time_sql(&mut conn, all, None, config.reads).await?;
    let jit = plan_has_jit(&mut conn, all, None).await?;
    reads.extend(Read::from_ms(
        format!("`{all}` ({users} users)"),
        &ms,
        ALL_USERS_TARGET_MS,
        Some(jit),
    ));
    for command in ["users", "queue"] {
        let mut ms = Vec::new();
        for _ in 0..config.reads {
            let argv = [
                "livesync-admin",
                "--json",
                "--database-url",
                url.as_str(),
                command,
            ];
            let cli = crate::cli::parse(argv).context("parse the admin's arguments")?;
            let mut out = Vec::new();
            let t = Instant::now();
            crate::cli::run(cli, &mut out)
                .await
                .with_context(|| format!("livesync-admin {command}"))?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        reads.extend(Read::from_ms(
            format!("`livesync-admin {command}` ({users} users; connect included)"),
            &ms,
            ALL_USERS_TARGET_MS,
            None,
        ));
    }
    let jitted: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "select r.rolname::text, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 120), \
                s.calls, s.jit_functions \
           from pg_stat_statements s join pg_roles r on r.oid = s.userid \
          where s.dbid = (select oid from pg_database where datname = current_database()) \
            and s.jit_functions > 0 \
          order by s.jit_functions desc",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await.ok();

    let mut targets = super::delivery::latency_targets(&latency);
    for r in &reads {
        targets.push(super::delivery::Target {
            what: format!("{}: ≤ {:.0} ms (median)", r.what, r.target_ms),
            value: format!(
                "{:.2} ms (first {:.2}, max {:.2}){}",
                r.median_ms,
                r.first_ms,
                r.max_ms,
                match r.jit_in_plan {
                    Some(true) => "; JIT in the plan",
                    Some(false) => "; no JIT in the plan",
                    None => "",
                }
            ),
            met: Some(r.met),
        });
    }
    targets.push(super::delivery::Target {
        what: "no statement of the worker JIT-compiled (sum of jit_functions = 0)".into(),
        value: format!(
            "{} functions over {} statements",
            worker_counts.jit_functions, worker_counts.calls
        ),
        met: Some(worker_counts.jit_functions == 0),
    });
    Ok(Report {
        run,
        seconds: 0.0,
        config: config.clone(),
        postgres,
        settings,
        non_default,
        grow_seconds,
        storm_changes_per_s,
        pad_seconds,
        tables,
        latency_fresh,
        autovacuum_wait_seconds,
        autovacuum_done,
        tables_settled,
        latency,
        reads,
        worker_statements: worker_counts.calls,
        worker_jit_functions: worker_counts.jit_functions,
        jitted: jitted
            .into_iter()
            .map(|(role, query, calls, jit_functions)| Jitted {
                role,
                query,
                calls,
                jit_functions,
            })
            .collect(),
        targets,
    })
}

/// `missing` more rows in `livesync.delivered`: past appointments of users 1…`users` (an
/// even share each), their participant row and the delivery a worker recorded for each,
/// with the triggers off (history, not changes).
async fn pad_history(conn: &mut PgConnection, users: u32, missing: u64) -> anyhow::Result<()> {
    if missing == 0 {
        return Ok(());
    }
    let per_user = missing.div_ceil(users as u64) as i64;
    let users_per_chunk = (100_000 / per_user).max(1);
    let mut left = missing as i64;
    let mut first = 1i64;
    sqlx::query("set session_replication_role = replica")
        .execute(&mut *conn)
        .await?;
    while left > 0 && first <= users as i64 {
        let last = (first + users_per_chunk - 1).min(users as i64);
        let rows = ((last - first + 1) * per_user).min(left);
        sqlx::query(
            "with ins as ( \
               insert into xpert.appointments \
                 (subject, location, notes, starts_at, ends_at, created_by) \
               select 'Besprechung ' || u || '/' || k || ' (vergangen)', \
                      'Kanzlei, Besprechungszimmer 2', \
                      'Aktenzahl ' || u || '/' || k || '/25; Unterlagen mitbringen', \
                      date_trunc('hour', now()) - make_interval(hours => 9 * k), \
                      date_trunc('hour', now()) - make_interval(hours => 9 * k - 1), u \
                 from generate_series($1::bigint, $2::bigint) u, \
                      generate_series(1, $3::int) k \
                order by u, k \
                limit $4 \
               returning id, created_by, starts_at, xmin::text || '/' || ctid::text as row_version), \
             part as ( \
               insert into xpert.appointment_participants (appointment_id, user_id) \
               select id, created_by from ins) \
             insert into livesync.delivered \
               (user_id, appointment_id, uid, version, sequence, delivered_at, row_version) \
             select created_by, id, 'xpert-termin-' || id || '@livesync', \
                    nextval('livesync.change_version'), 0, starts_at - interval '1 day', \
                    row_version \
               from ins",
        )
        .bind(first)
        .bind(last)
        .bind(per_user as i32)
        .bind(rows)
        .execute(&mut *conn)
        .await
        .context("write past appointments and their deliveries")?;
        left -= rows;
        first = last + 1;
    }
    sqlx::query("reset session_replication_role")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How long to wait for autovacuum's first pass (its naptime is a minute by default).
const AUTOVACUUM_WAIT: Duration = Duration::from_secs(240);

/// The tables the grown database grew, whose first autovacuum pass is waited for.
const GROWN_TABLES: [&str; 3] = [
    "livesync.delivered",
    "xpert.appointments",
    "xpert.appointment_participants",
];

/// Wait until autovacuum has analysed every grown table and no autovacuum worker runs in
/// this database, or `timeout` passed. Returns whether it had.
async fn autovacuum_had_its_pass(
    conn: &mut PgConnection,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let done: bool = sqlx::query_scalar(
            "select (select bool_and(s.last_autoanalyze is not null) \
                       from pg_stat_user_tables s where s.relid = any($1::regclass[])) \
                and not exists (select from pg_stat_activity a \
                                 where a.backend_type = 'autovacuum worker' \
                                   and a.datname = current_database())",
        )
        .bind(GROWN_TABLES)
        .fetch_one(&mut *conn)
        .await?;
        if done || Instant::now() >= deadline {
            return Ok(done);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn table_states(conn: &mut PgConnection) -> anyhow::Result<Vec<TableState>> {
    let mut out = Vec::new();
    for table in [
        "livesync.delivered",
        "livesync.queue",
        "xpert.appointments",
        "xpert.appointment_participants",
    ] {
        let (rows, reltuples, last_autoanalyze, last_autovacuum): (
            i64,
            f32,
            Option<String>,
            Option<String>,
        ) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select (select count(*) from {table}), c.reltuples, \
                    to_char(s.last_autoanalyze, 'HH24:MI:SS'), \
                    to_char(s.last_autovacuum, 'HH24:MI:SS') \
               from pg_class c join pg_stat_user_tables s on s.relid = c.oid \
              where c.oid = '{table}'::regclass"
        )))
        .fetch_one(&mut *conn)
        .await?;
        out.push(TableState {
            table: table.to_string(),
            rows,
            reltuples: reltuples as f64,
            last_autoanalyze,
            last_autovacuum,
        });
    }
    Ok(out)
}

/// Run `sql` (with `$1` = `arg` when given) `n` times; milliseconds each, fetched in full.
async fn time_sql(
    conn: &mut PgConnection,
    sql: &'static str,
    arg: Option<i64>,
    n: u32,
) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let q = sqlx::query(sql);
        let q = match arg {
            Some(a) => q.bind(a),
            None => q,
        };
        q.fetch_all(&mut *conn).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(ms)
}

/// Whether `EXPLAIN (ANALYZE, FORMAT JSON)` of `sql` has a "JIT" entry.
async fn plan_has_jit(
    conn: &mut PgConnection,
    sql: &'static str,
    arg: Option<i64>,
) -> anyhow::Result<bool> {
    let explain = format!("explain (analyze, format json) {sql}");
    let q = sqlx::query_scalar::<_, serde_json::Value>(sqlx::AssertSqlSafe(explain));
    let plan = match arg {
        Some(a) => q.bind(a),
        None => q,
    }
    .fetch_one(&mut *conn)
    .await
    .context("EXPLAIN (ANALYZE, FORMAT JSON)")?;
    Ok(has_jit(&plan))
}

/// Whether an EXPLAIN JSON document has a "JIT" key anywhere.
pub fn has_jit(plan: &serde_json::Value) -> bool {
    match plan {
        serde_json::Value::Object(map) => map.contains_key("JIT") || map.values().any(has_jit),
        serde_json::Value::Array(items) => items.iter().any(has_jit),
        _ => false,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "livesync-bench latency --grown ({}, {:.0} s{})",
            self.run.started_at,
            self.seconds,
            if c.quick { ", --quick" } else { "" }
        )?;
        writeln!(f, "{}", self.run.load_and_server())?;
        writeln!(f, "{}", self.postgres)?;
        writeln!(
            f,
            "settings in force: {}",
            self.settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
        writeln!(f, "not at their default: {}", self.non_default.join(", "))?;
        writeln!(f, "{}", self.run.worker())?;
        writeln!(f)?;
        writeln!(
            f,
            "## Grown database: {} users × {} upcoming appointments stormed ({:.1} s, {} changes/s), delivered brought to {} rows ({:.1} s); no ANALYZE",
            c.users,
            c.per_user,
            self.grow_seconds,
            self.storm_changes_per_s
                .map_or("-".into(), |r| format!("{r:.0}")),
            c.delivered_rows,
            self.pad_seconds
        )?;
        writeln!(f)?;
        write_tables(f, &self.tables)?;
        writeln!(f)?;
        writeln!(
            f,
            "## Live latency on the grown database: {} writes/s for {} s, one online user (COMMIT returned → delivered)",
            c.latency.rate, c.latency.seconds
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Right after growing (autovacuum's first pass may run beside it; information):"
        )?;
        writeln!(f)?;
        write_latency(f, &self.latency_fresh)?;
        writeln!(f)?;
        writeln!(
            f,
            "Then autovacuum's first pass over the grown tables ({:.0} s waited{}):",
            self.autovacuum_wait_seconds,
            if self.autovacuum_done {
                ""
            } else {
                ", it had not finished"
            }
        )?;
        writeln!(f)?;
        write_tables(f, &self.tables_settled)?;
        writeln!(f)?;
        writeln!(f, "With the statistics autovacuum left (the targets):")?;
        writeln!(f)?;
        write_latency(f, &self.latency)?;
        writeln!(f)?;
        writeln!(f, "## Status and admin reads ({} runs each)", c.reads)?;
        writeln!(f)?;
        writeln!(
            f,
            "| read | first ms | median ms | max ms | target | JIT in plan | met |"
        )?;
        writeln!(f, "| --- | ---: | ---: | ---: | ---: | --- | --- |")?;
        for r in &self.reads {
            writeln!(
                f,
                "| {} | {:.2} | {:.2} | {:.2} | ≤ {:.0} ms | {} | {} |",
                r.what,
                r.first_ms,
                r.median_ms,
                r.max_ms,
                r.target_ms,
                match r.jit_in_plan {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "(see below)",
                },
                verdict::met(r.met)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "JIT: the worker ran {} statements while measured, {} functions JIT-compiled ({}); statements of this database JIT-compiled (any role, latency and reads): {}",
            self.worker_statements,
            self.worker_jit_functions,
            verdict::met(self.worker_jit_functions == 0),
            if self.jitted.is_empty() {
                "none".to_string()
            } else {
                self.jitted.len().to_string()
            }
        )?;
        for j in &self.jitted {
            writeln!(
                f,
                "  {} × {} ({} functions): {}",
                j.role, j.calls, j.jit_functions, j.query
            )?;
        }
        Ok(())
    }
}

fn write_tables(f: &mut fmt::Formatter<'_>, tables: &[TableState]) -> fmt::Result {
    writeln!(
        f,
        "| table | rows | planner's reltuples | last autoanalyze | last autovacuum |"
    )?;
    writeln!(f, "| --- | ---: | ---: | --- | --- |")?;
    for t in tables {
        writeln!(
            f,
            "| {} | {} | {:.0} | {} | {} |",
            t.table,
            t.rows,
            t.reltuples,
            t.last_autoanalyze.as_deref().unwrap_or("never"),
            t.last_autovacuum.as_deref().unwrap_or("never")
        )?;
    }
    Ok(())
}

fn write_latency(f: &mut fmt::Formatter<'_>, results: &[LatencyResult]) -> fmt::Result {
    writeln!(
        f,
        "| sink | samples | p50 ms | p90 ms | p99 ms | max ms | missing | p99 target | met |"
    )?;
    writeln!(
        f,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )?;
    for r in results {
        let sink = if r.variant.starts_with("ics") {
            Sink::Ics
        } else {
            Sink::Null
        };
        let limit = latency::p99_target_ms(sink).unwrap_or(f64::NAN);
        writeln!(
            f,
            "| {} | {} | {} | ≤ {limit:.0} ms | {} |",
            r.variant,
            r.sample_cells(),
            r.missing,
            verdict::met(r.p99_ms <= limit && r.missing == 0)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_jit_anywhere_in_a_plan() {
        let with: serde_json::Value = serde_json::json!([{
            "Plan": {"Node Type": "Aggregate"},
            "JIT": {"Functions": 12}
        }]);
        let without: serde_json::Value = serde_json::json!([{
            "Plan": {"Node Type": "Result", "Plans": [{"Node Type": "Seq Scan"}]},
            "Execution Time": 0.1
        }]);
        assert!(has_jit(&with));
        assert!(!has_jit(&without));
    }

    #[test]
    fn read_verdict_uses_the_median_and_jit() {
        let r = Read::from_ms("x".into(), &[50.0, 1.0, 2.0], 5.0, Some(false)).unwrap();
        assert_eq!(r.first_ms, 50.0);
        assert_eq!(r.median_ms, 2.0);
        assert_eq!(r.max_ms, 50.0);
        assert!(r.met);
        let jitted = Read::from_ms("x".into(), &[1.0], 5.0, Some(true)).unwrap();
        assert!(!jitted.met);
        assert!(Read::from_ms("x".into(), &[], 5.0, None).is_none());
    }
}
