//! `pg_stat_statements` for the scenarios that count what one process sends to the server
//! (`quiet`) or look for JIT compilation (`latency --grown`): loading the module, a role
//! of the worker's own (so that its statements are told apart from the driver's), and the
//! sums per role.
//!
//! The private server starts with PostgreSQL's defaults; the module is loaded with
//! `ALTER SYSTEM SET shared_preload_libraries` and a restart, and unloaded the same way
//! after the scenario, so that the other scenarios of a run measure a server without it.
//! A `DATABASE_URL` server must already have it in `shared_preload_libraries`.

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use super::server::BenchServer;

/// The role the worker logs in as where its statements are counted.
pub const WORKER_ROLE: &str = "livesync_bench_worker";
const WORKER_PASSWORD: &str = "livesync-bench";

/// Whether the server has `pg_stat_statements` in `shared_preload_libraries`.
pub async fn loaded(server: &BenchServer) -> anyhow::Result<bool> {
    let mut admin = server.admin().await?;
    let libs: String = sqlx::query_scalar("select current_setting('shared_preload_libraries')")
        .fetch_one(&mut admin)
        .await?;
    admin.close().await.ok();
    Ok(preloads(&libs, "pg_stat_statements"))
}

/// Whether the `shared_preload_libraries` value `libs` names `lib`.
pub fn preloads(libs: &str, lib: &str) -> bool {
    libs.split(',')
        .any(|l| l.trim().trim_matches('"').trim() == lib)
}

/// Load `pg_stat_statements`: on the private server by `ALTER SYSTEM` and a restart when it
/// is not loaded yet. Returns whether it was loaded here ([`unload`] undoes that).
pub async fn load(server: &BenchServer) -> anyhow::Result<bool> {
    if loaded(server).await? {
        return Ok(false);
    }
    if !server.can_restart() {
        bail!(
            "this scenario counts statements with pg_stat_statements: start the DATABASE_URL \
             server with shared_preload_libraries=pg_stat_statements, or unset DATABASE_URL"
        );
    }
    eprintln!("loading pg_stat_statements (restarting the private server)");
    let mut admin = server.admin().await?;
    sqlx::query("alter system set shared_preload_libraries = 'pg_stat_statements'")
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    tokio::task::block_in_place(|| server.restart())?;
    if !loaded(server).await? {
        bail!("pg_stat_statements is still not loaded after the restart");
    }
    Ok(true)
}

/// Undo [`load`] (when it loaded the module).
pub async fn unload(server: &BenchServer, loaded_here: bool) -> anyhow::Result<()> {
    if !loaded_here {
        return Ok(());
    }
    let mut admin = server.admin().await?;
    sqlx::query("alter system reset shared_preload_libraries")
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    tokio::task::block_in_place(|| server.restart())?;
    Ok(())
}

/// The extension in the current database (its view reads the server-wide counters), and the
/// worker's role (a superuser like the driver's, so the worker has the rights it has
/// elsewhere in the benchmarks).
pub async fn prepare(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::raw_sql("create extension if not exists pg_stat_statements")
        .execute(&mut *conn)
        .await
        .context("create extension pg_stat_statements")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "do $$ begin \
           if not exists (select from pg_roles where rolname = '{WORKER_ROLE}') then \
             create role {WORKER_ROLE} login superuser password '{WORKER_PASSWORD}'; \
           end if; \
         end $$"
    )))
    .execute(&mut *conn)
    .await
    .context("create the worker's role")?;
    Ok(())
}

/// `url` logging in as the worker's role.
pub fn worker_url(url: &str) -> String {
    with_user(url, WORKER_ROLE, WORKER_PASSWORD)
}

/// `url` with its user and password replaced.
pub fn with_user(url: &str, user: &str, password: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..host_start];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!(
        "{}{user}:{password}@{host}{}",
        &url[..scheme_end],
        &rest[host_start..]
    )
}

/// Forget every counter (server-wide).
pub async fn reset(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("select pg_stat_statements_reset()")
        .execute(&mut *conn)
        .await
        .context("pg_stat_statements_reset()")?;
    Ok(())
}

/// What one role ran in the current database since the last [`reset`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    /// Statements executed (`sum(calls)`), utility statements (BEGIN, COMMIT, LISTEN)
    /// included.
    pub calls: i64,
    /// Functions JIT-compiled for them (`sum(jit_functions)`).
    pub jit_functions: i64,
    /// The statements run most often: text (whitespace folded, cut at 90 characters), calls.
    pub top: Vec<(String, i64)>,
}

/// The counters of `role` in the current database.
pub async fn counts(conn: &mut PgConnection, role: &str) -> anyhow::Result<Counts> {
    let (calls, jit_functions): (i64, i64) = sqlx::query_as(
        "select coalesce(sum(calls), 0)::bigint, coalesce(sum(jit_functions), 0)::bigint \
           from pg_stat_statements \
          where dbid = (select oid from pg_database where datname = current_database()) \
            and userid = (select oid from pg_roles where rolname = $1)",
    )
    .bind(role)
    .fetch_one(&mut *conn)
    .await
    .context("read pg_stat_statements")?;
    let top: Vec<(String, i64)> = sqlx::query_as(
        "select left(regexp_replace(query, '\\s+', ' ', 'g'), 90), calls \
           from pg_stat_statements \
          where dbid = (select oid from pg_database where datname = current_database()) \
            and userid = (select oid from pg_roles where rolname = $1) \
          order by calls desc, query limit 8",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Counts {
        calls,
        jit_functions,
        top,
    })
}

#[cfg(test)]
mod tests {
    use super::{preloads, with_user};

    #[test]
    fn replaces_user_and_password_only() {
        assert_eq!(
            with_user("postgres://postgres@127.0.0.1:5432/db", "w", "p"),
            "postgres://w:p@127.0.0.1:5432/db"
        );
        assert_eq!(
            with_user("postgresql://a:b@h/db?sslmode=disable", "w", "p"),
            "postgresql://w:p@h/db?sslmode=disable"
        );
        assert_eq!(with_user("postgres://h:1", "w", "p"), "postgres://w:p@h:1");
    }

    #[test]
    fn reads_the_preload_list() {
        assert!(preloads("pg_stat_statements", "pg_stat_statements"));
        assert!(preloads(
            "auto_explain, \"pg_stat_statements\"",
            "pg_stat_statements"
        ));
        assert!(!preloads("", "pg_stat_statements"));
    }
}
