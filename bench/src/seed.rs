//! Databases for the delivery scenarios: the Xpert baseline, livesync installed through the
//! same migration code as `livesync-admin migrate`, users, queued changes made by Xpert-like
//! writes through the real triggers, logins, and the table statistics the reports show.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::server::BenchServer;

/// The Windows name a user logs in with: matches the Xpert name under the login rule.
pub fn windows_name(user_id: i64) -> String {
    format!("KANZLEI\\user{user_id}")
}

/// A fresh database with the Xpert baseline and `users` users (`user1`…, ids 1…`users`).
pub async fn xpert_database(
    server: &BenchServer,
    name: &str,
    users: u32,
) -> anyhow::Result<String> {
    let (url, mut conn) = baseline_database(server, name).await?;
    insert_users(&mut conn, users).await?;
    conn.close().await.ok();
    Ok(url)
}

/// A fresh database `name` with the Xpert baseline and no users; its URL and a connection.
async fn baseline_database(
    server: &BenchServer,
    name: &str,
) -> anyhow::Result<(String, PgConnection)> {
    let url = server.create_database(name).await?;
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::raw_sql(include_str!("../../sql/xpert_baseline.sql"))
        .execute(&mut conn)
        .await
        .context("load sql/xpert_baseline.sql")?;
    Ok((url, conn))
}

/// Xpert users `user1`…`user<users>`.
async fn insert_users(conn: &mut PgConnection, users: u32) -> anyhow::Result<()> {
    sqlx::query(
        "insert into xpert.users (username, full_name) \
         select 'user' || g, 'User ' || g from generate_series(1, $1) g",
    )
    .bind(users as i32)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Run the SQL file `LIVESYNC_BENCH_AFTER_MIGRATE` names, if set: for trying a schema
/// change (an index, a cheaper trigger) in a benchmark before it becomes a migration.
pub async fn after_migrate(conn: &mut PgConnection) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os("LIVESYNC_BENCH_AFTER_MIGRATE") {
        let sql = std::fs::read_to_string(&path)
            .with_context(|| format!("read LIVESYNC_BENCH_AFTER_MIGRATE {path:?}"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .context("run LIVESYNC_BENCH_AFTER_MIGRATE")?;
    }
    Ok(())
}

/// An Xpert database with livesync installed, switched on and licensed, live mode, sync
/// active for every user. The users are created after the install, so the post-update
/// first-login rule does not apply to them (an ordinary morning, not the day of the update).
/// `LIVESYNC_BENCH_AFTER_MIGRATE` names an SQL file run right after the migrations.
pub async fn livesync_database(
    server: &BenchServer,
    name: &str,
    users: u32,
) -> anyhow::Result<String> {
    let (url, mut conn) = baseline_database(server, name).await?;
    crate::migrate::run(&url, false)
        .await
        .context("install livesync (migrate)")?;
    after_migrate(&mut conn).await?;
    sqlx::query(
        "update livesync.settings set live_sync_enabled = true, cti_sync_licensed = true, \
         delivery_mode = 'live'",
    )
    .execute(&mut conn)
    .await?;
    insert_users(&mut conn, users).await?;
    sqlx::query(
        "insert into livesync.user_settings (user_id, live_sync_enabled) \
         select id, true from xpert.users",
    )
    .execute(&mut conn)
    .await?;
    conn.close().await.ok();
    Ok(url)
}

/// A seeded database that scenario runs copy (`create database … template …`), so that
/// several variants start from identical data without writing it again.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub users: u32,
    pub per_user: u32,
    pub seeded: Seeded,
}

impl Template {
    /// A fresh copy named `name`; returns its URL. No session may be connected to the
    /// template meanwhile.
    pub async fn copy(&self, server: &BenchServer, name: &str) -> anyhow::Result<String> {
        let mut admin = server.admin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {name} with (force)"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create database {name} template {}",
            self.name
        )))
        .execute(&mut admin)
        .await
        .with_context(|| format!("copy database {} to {name}", self.name))?;
        admin.close().await.ok();
        server.url(name)
    }

    pub async fn drop(&self, server: &BenchServer) {
        server.drop_database(&self.name).await;
    }
}

/// What seeding queued.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Seeded {
    /// Appointments written (one participant each: the user whose calendar it is).
    pub appointments: u64,
    pub seconds: f64,
}

/// Rows written per statement while seeding: large statements make the peer's per-row
/// `add_job` (one NOTIFY each, kept until commit) slower than linear.
const CHUNK_ROWS: u32 = 10_000;

/// Xpert writes `per_user` appointments for each of users 1…`users` (one participant each),
/// in chunks of about [`CHUNK_ROWS`] rows, each chunk one statement (one transaction). The triggers
/// installed on `xpert.appointment_participants` (livesync's, or the peer's) queue them.
pub async fn write_appointments(
    conn: &mut PgConnection,
    users: u32,
    per_user: u32,
) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let users_per_chunk = (CHUNK_ROWS / per_user.max(1)).max(1);
    let mut first = 1u32;
    while first <= users {
        let last = (first + users_per_chunk - 1).min(users);
        sqlx::query(
            "with ins as ( \
               insert into xpert.appointments \
                 (subject, location, notes, starts_at, ends_at, created_by) \
               select 'Besprechung ' || u || '/' || k, 'Kanzlei, Besprechungszimmer 2', \
                      'Aktenzahl ' || u || '/' || k || '/26; Unterlagen mitbringen', \
                      date_trunc('hour', now()) + make_interval(hours => 24 + k), \
                      date_trunc('hour', now()) + make_interval(hours => 25 + k), u \
                 from generate_series($1::int, $2::int) u, generate_series(1, $3::int) k \
                order by u, k \
               returning id, created_by) \
             insert into xpert.appointment_participants (appointment_id, user_id) \
             select id, created_by from ins",
        )
        .bind(first as i32)
        .bind(last as i32)
        .bind(per_user as i32)
        .execute(&mut *conn)
        .await
        .context("write appointments and participants")?;
        first = last + 1;
    }
    // livesync's triggers append to its change log; a worker moves the log into the
    // per-user queue before it claims. Do that here, so the scenarios start from queued
    // entries, as the issue defines them.
    let livesync: bool = sqlx::query_scalar("select to_regclass('livesync.changes') is not null")
        .fetch_one(&mut *conn)
        .await?;
    if livesync {
        loop {
            let taken: i32 =
                sqlx::query_scalar("select taken from livesync.expand_changes(100000)")
                    .fetch_one(&mut *conn)
                    .await
                    .context("expand the change log into the queue")?;
            if taken < 100_000 {
                break;
            }
        }
    }
    Ok(Seeded {
        appointments: users as u64 * per_user as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Log users 1…`users` in (one transaction per login, as Xpert does at program start) from
/// `connections` connections at once; returns the commit time of the last one.
pub async fn log_in(url: &str, users: u32, connections: u32) -> anyhow::Result<DateTime<Utc>> {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..connections.max(1) {
        let url = url.to_string();
        tasks.spawn(async move {
            let mut conn = PgConnection::connect(&url).await?;
            let mut u = 1 + k;
            while u <= users {
                log_in_one(&mut conn, u as i64).await?;
                u += connections.max(1);
            }
            conn.close().await.ok();
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("login task")??;
    }
    Ok(Utc::now())
}

/// One login of `user_id` with a Windows name that matches.
pub async fn log_in_one(conn: &mut PgConnection, user_id: i64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into xpert.logins (user_id, windows_username, workstation) \
         values ($1, $2, 'PC-' || $1)",
    )
    .bind(user_id)
    .bind(windows_name(user_id))
    .execute(conn)
    .await
    .context("insert a login")?;
    Ok(())
}

/// One login of `user_id`, then a wait (polling every `every`) until the worker handled it;
/// an error after 10 s.
pub async fn log_in_one_handled(
    conn: &mut PgConnection,
    user_id: i64,
    every: Duration,
) -> anyhow::Result<()> {
    log_in_one(conn, user_id).await?;
    if !wait_until(
        conn,
        "select coalesce(bool_and(processed_at is not null), false) from livesync.login_events",
        every,
        Duration::from_secs(10),
    )
    .await?
    {
        anyhow::bail!("the worker did not handle the login within 10 s");
    }
    Ok(())
}

/// Wait until `sql` (a boolean query) returns true, polling every `every`, for at most
/// `timeout`. Returns whether it did.
pub async fn wait_until(
    conn: &mut PgConnection,
    sql: &'static str,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let done: bool = sqlx::query_scalar(sql).fetch_one(&mut *conn).await?;
        if done {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(every).await;
    }
}

/// Size and tuple counts of one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStat {
    pub table: String,
    /// Heap, indexes and TOAST, in bytes.
    pub total_bytes: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
    pub autovacuums: i64,
}

/// Statistics of the tables `tables` (schema-qualified names).
pub async fn table_stats(
    conn: &mut PgConnection,
    tables: &[&str],
) -> anyhow::Result<Vec<TableStat>> {
    let mut out = Vec::new();
    for t in tables {
        let row: (i64, i64, i64, i64) = sqlx::query_as(
            "select pg_total_relation_size(c.oid), coalesce(s.n_live_tup, 0), \
                    coalesce(s.n_dead_tup, 0), coalesce(s.autovacuum_count, 0) \
               from pg_class c left join pg_stat_user_tables s on s.relid = c.oid \
              where c.oid = $1::regclass",
        )
        .bind(*t)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("statistics of {t}"))?;
        out.push(TableStat {
            table: t.to_string(),
            total_bytes: row.0,
            live_tuples: row.1,
            dead_tuples: row.2,
            autovacuums: row.3,
        });
    }
    Ok(out)
}

/// `vacuum` the given tables (plain, not full: what autovacuum would do).
pub async fn vacuum(conn: &mut PgConnection, tables: &[&str]) -> anyhow::Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("vacuum {}", tables.join(", "))))
        .execute(conn)
        .await?;
    Ok(())
}
