//! `livesync-admin doctor`: one screen that says what is wrong and what to do.
//!
//! Each check ends `ok`, `warning` (worth knowing, not wrong), `problem` (exit 1) or
//! `not_run` (could not be checked; the detail says why and what to do).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::output::{Table, json};
use super::{CliError, Ctx, Exit, installed_schema};
use livesync_core::migrate::Installed;
use livesync_core::migrate::binary_version;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The livesync-worker binary for the sink check (default: next to livesync-admin,
    /// then PATH).
    #[arg(long, env = "LIVESYNC_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
    /// Days without a matching login after which an enabled user is reported.
    #[arg(long, default_value_t = 30)]
    pub inactive_days: i32,
    /// Minutes a transaction may stay open before it is reported (it holds back VACUUM
    /// of the queue and the change log); ten times as long is a problem.
    #[arg(long, default_value_t = 5)]
    pub old_transaction_minutes: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Problem,
    NotRun,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    checks: Vec<Check>,
}

pub(crate) async fn run(
    ctx: &Ctx,
    args: DoctorArgs,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let url = ctx.url()?.to_string();
    let pool = ctx.connect().await?;
    let mut checks = Vec::new();
    let binary = binary_version();
    let current = match installed_schema(&pool).await? {
        Installed::Nothing => {
            checks.push(
                Check::new(
                    "migrations",
                    Status::Problem,
                    "livesync is not installed in this database",
                )
                .fix("run `livesync-admin migrate`"),
            );
            false
        }
        Installed::PreRelease { version, name } => {
            checks.push(
                Check::new(
                    "migrations",
                    Status::Problem,
                    format!("a pre-release livesync schema (migration V{version} \"{name}\")"),
                )
                .fix(
                    "remove it with sql/uninstall.sql (Xpert's data stays), then run \
                     `livesync-admin migrate`",
                ),
            );
            false
        }
        Installed::Version(v) if v < binary => {
            checks.push(
                Check::new(
                    "migrations",
                    Status::Problem,
                    format!("schema at V{v}, this release expects V{binary}"),
                )
                .fix("run `livesync-admin migrate`"),
            );
            false
        }
        Installed::Version(v) if v > binary => {
            checks.push(
                Check::new(
                    "migrations",
                    Status::Problem,
                    format!("schema at V{v}, newer than this release (V{binary})"),
                )
                .fix("use the livesync-admin and livesync-worker of the newer release"),
            );
            false
        }
        Installed::Version(v) => {
            checks.push(Check::new(
                "migrations",
                Status::Ok,
                format!("schema current (V{v})"),
            ));
            true
        }
    };
    if current {
        database_checks(&pool, &args, &mut checks).await?;
    } else {
        for name in [
            "licence and switch",
            "delivery mode",
            "inactive users",
            "leases",
            "dead letters",
            "workers",
        ] {
            checks.push(
                Check::new(name, Status::NotRun, "needs a current schema")
                    .fix("run `livesync-admin migrate` first"),
            );
        }
    }
    checks.push(notification_queue(&pool).await?);
    checks.push(sink_check(args.worker_bin.as_deref(), &url).await);

    let ok = !checks.iter().any(|c| c.status == Status::Problem);
    let report = Report { ok, checks };
    if ctx.json {
        json(out, &report)?;
    } else {
        let mut table = Table::new(&["check", "status", "detail", "what to do"]);
        for c in &report.checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Warning => "WARNING",
                Status::Problem => "PROBLEM",
                Status::NotRun => "not run",
            };
            table.row(vec![
                c.name.to_string(),
                status.into(),
                c.detail.clone(),
                c.fix.clone().unwrap_or_default(),
            ]);
        }
        table.write(out)?;
        writeln!(
            out,
            "{}",
            if ok {
                "no problems found"
            } else {
                "problems found"
            }
        )?;
    }
    Ok(if ok { Exit::Ok } else { Exit::Problems })
}

async fn database_checks(
    pool: &PgPool,
    args: &DoctorArgs,
    checks: &mut Vec<Check>,
) -> Result<(), CliError> {
    let s = livesync_core::settings::load(pool).await?;
    checks.push(match (s.live_sync_enabled, s.cti_sync_licensed) {
        (true, true) => Check::new("licence and switch", Status::Ok, "licensed and switched on"),
        (true, false) => Check::new("licence and switch", Status::Problem, "switched on but not licensed: nothing is synchronised")
            .fix("license the module CTI/Synchronisierung, then `livesync-admin settings set cti_sync_licensed true`"),
        (false, true) => Check::new("licence and switch", Status::Warning, "licensed but switched off: nothing is synchronised")
            .fix("`livesync-admin settings set live_sync_enabled true`"),
        (false, false) => Check::new("licence and switch", Status::Warning, "not licensed and switched off"),
    });
    checks.push(if s.push_recommended() {
        Check::new(
            "delivery mode",
            Status::Warning,
            "live mode while the firm runs an Exchange Server",
        )
        .fix("`livesync-admin settings set delivery_mode push`")
    } else {
        Check::new(
            "delivery mode",
            Status::Ok,
            format!(
                "{} (Exchange Server: {})",
                s.delivery_mode,
                if s.exchange_server { "yes" } else { "no" }
            ),
        )
    });

    let inactive: Vec<String> = sqlx::query_scalar(
        "select u.username from livesync.user_settings s join xpert.users u on u.id = s.user_id \
         where s.live_sync_enabled and not exists ( \
           select 1 from xpert.logins l where l.user_id = u.id \
              and l.logged_in_at > now() - make_interval(days => $1) \
              and livesync.names_match(l.windows_username, u.username)) \
         order by u.username",
    )
    .bind(args.inactive_days)
    .fetch_all(pool)
    .await?;
    checks.push(if inactive.is_empty() {
        Check::new("inactive users", Status::Ok, format!("every enabled user had a matching login in the last {} days", args.inactive_days))
    } else {
        Check::new(
            "inactive users",
            Status::Problem,
            format!("enabled without a matching login for {} days: {}", args.inactive_days, inactive.join(", ")),
        )
        .fix("check their Windows user name against the Xpert user name, or `livesync-admin user disable NAME`")
    });

    let (expired, oldest): (i64, Option<String>) = sqlx::query_as(
        "select count(*), min(lease_expires_at)::text from livesync.user_state \
          where lease_token is not null and lease_expires_at < now() - interval '1 minute'",
    )
    .fetch_one(pool)
    .await?;
    checks.push(if expired == 0 {
        Check::new("leases", Status::Ok, "no lease past its expiry")
    } else {
        Check::new(
            "leases",
            Status::Problem,
            format!(
                "{expired} users' delivery leases expired (oldest {}) and were not taken over",
                oldest.unwrap_or_default()
            ),
        )
        .fix("start a livesync-worker; it takes expired leases over")
    });

    let (dead, dead_users): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct user_id) from livesync.dead_letters")
            .fetch_one(pool)
            .await?;
    checks.push(if dead == 0 {
        Check::new("dead letters", Status::Ok, "none")
    } else {
        Check::new(
            "dead letters",
            Status::Problem,
            format!("{dead} entries of {dead_users} users failed too often"),
        )
        .fix("`livesync-admin dead-letters list`, then `dead-letters requeue ID|--user NAME|--all`")
    });

    checks.push(old_transaction(pool, args.old_transaction_minutes).await?);
    checks.push(change_log(pool).await?);

    let workers: i64 = sqlx::query_scalar(
        "select count(*) from livesync.workers where heartbeat_at > now() - interval '30 seconds'",
    )
    .fetch_one(pool)
    .await?;
    checks.push(if workers > 0 {
        Check::new("workers", Status::Ok, format!("{workers} running"))
    } else {
        Check::new(
            "workers",
            Status::Warning,
            "no livesync-worker is running: nothing is delivered",
        )
        .fix("start `livesync-worker run` (as a service)")
    });
    Ok(())
}

/// The oldest open transaction in this database (a session idle in a transaction, a
/// forgotten prepared transaction): while it runs, VACUUM cannot remove the rows the
/// workers delete from the queue and the change log, and they bloat.
async fn old_transaction(pool: &PgPool, minutes: i32) -> Result<Check, CliError> {
    const NAME: &str = "old transactions";
    let oldest: Option<(i32, String, String, String, i64)> = sqlx::query_as(
        "select pid, coalesce(usename::text, '?'), coalesce(nullif(application_name, ''), '-'), \
                coalesce(state, '?'), extract(epoch from now() - xact_start)::bigint \
           from pg_stat_activity \
          where datname = current_database() and xact_start is not null \
            and pid <> pg_backend_pid() and backend_type = 'client backend' \
          order by xact_start limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let prepared: Option<(String, i64)> = sqlx::query_as(
        "select gid, extract(epoch from now() - prepared)::bigint from pg_prepared_xacts \
          where database = current_database() order by prepared limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let limit = i64::from(minutes.max(0)) * 60;
    let mut found = Vec::new();
    let mut worst = 0;
    if let Some((pid, user, app, state, age)) = oldest
        && age >= limit
    {
        found.push(format!(
            "pid {pid} (user {user}, application {app}, {state}) has been in a transaction for {}",
            super::output::age(Some(age))
        ));
        worst = worst.max(age);
    }
    if let Some((gid, age)) = prepared
        && age >= limit
    {
        found.push(format!(
            "prepared transaction '{gid}' open for {}",
            super::output::age(Some(age))
        ));
        worst = worst.max(age);
    }
    Ok(if found.is_empty() {
        Check::new(
            NAME,
            Status::Ok,
            format!("none open longer than {minutes} minutes"),
        )
    } else {
        let status = if worst >= limit * 10 && limit > 0 {
            Status::Problem
        } else {
            Status::Warning
        };
        Check::new(NAME, status, found.join("; ")).fix(
            "end it in the application that holds it, or `select pg_terminate_backend(PID)`; \
             `idle_in_transaction_session_timeout` ends idle ones by itself (sessions of other \
             roles are visible only with pg_read_all_stats)",
        )
    })
}

/// Xpert's change log waits for a worker to move it into the queue within milliseconds;
/// rows that stay mean no worker is expanding it.
async fn change_log(pool: &PgPool) -> Result<Check, CliError> {
    const NAME: &str = "change log";
    let (rows, oldest): (i64, Option<i64>) = sqlx::query_as(
        "select count(*), extract(epoch from now() - min(changed_at))::bigint \
           from livesync.changes",
    )
    .fetch_one(pool)
    .await?;
    Ok(match oldest {
        Some(age) if age > 60 => Check::new(
            NAME,
            Status::Warning,
            format!(
                "{rows} changes from Xpert wait to be queued, the oldest for {}",
                super::output::age(Some(age))
            ),
        )
        .fix("start `livesync-worker run`; it queues them at once"),
        _ => Check::new(NAME, Status::Ok, format!("{rows} changes waiting")),
    })
}

async fn notification_queue(pool: &PgPool) -> Result<Check, CliError> {
    let usage: f64 = sqlx::query_scalar("select pg_notification_queue_usage()")
        .fetch_one(pool)
        .await?;
    let detail = format!("{:.1} % used", usage * 100.0);
    Ok(if usage >= 0.5 {
        Check::new("notification queue", Status::Problem, detail).fix(
            "a session that LISTENs holds a long transaction open: find it in pg_stat_activity",
        )
    } else if usage > 0.1 {
        Check::new("notification queue", Status::Warning, detail)
    } else {
        Check::new("notification queue", Status::Ok, detail)
    })
}

/// What `livesync-worker check --json` prints.
#[derive(Debug, Deserialize)]
struct SinkReport {
    ok: bool,
    #[serde(default)]
    sink: String,
    #[serde(default)]
    detail: String,
}

pub(crate) fn find_worker(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    let name = format!("livesync-worker{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
}

/// Run the worker's own sink check with the worker's configuration (its environment and
/// `.env`), against this database.
async fn sink_check(explicit: Option<&Path>, url: &str) -> Check {
    const NAME: &str = "sink reachable";
    let Some(bin) = find_worker(explicit) else {
        return Check::new(
            NAME,
            Status::NotRun,
            "livesync-worker not found next to livesync-admin or on PATH",
        )
        .fix("install livesync-worker beside livesync-admin, or pass --worker-bin PATH");
    };
    let child = tokio::process::Command::new(&bin)
        .args(["check", "--json"])
        .env("DATABASE_URL", url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(30), child).await {
        Err(_) => {
            return Check::new(
                NAME,
                Status::Problem,
                format!("{} check did not answer within 30 s", bin.display()),
            )
            .fix("run `livesync-worker check` by hand to see where it hangs");
        }
        Ok(Err(e)) => {
            return Check::new(
                NAME,
                Status::NotRun,
                format!("cannot run {}: {e}", bin.display()),
            )
            .fix("check the path and permissions of livesync-worker, or pass --worker-bin PATH");
        }
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match serde_json::from_str::<SinkReport>(stdout.trim()) {
        Ok(r) if r.ok => Check::new(NAME, Status::Ok, format!("{}: {}", r.sink, r.detail)),
        Ok(r) => Check::new(NAME, Status::Problem, format!("{}: {}", r.sink, r.detail))
            .fix("check the worker's sink configuration (LIVESYNC_SINK and its settings)"),
        Err(_) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr
                .lines()
                .chain(stdout.lines())
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            Check::new(
                NAME,
                Status::Problem,
                format!("`livesync-worker check` failed ({}): {said}", output.status),
            )
            .fix("run `livesync-worker check` by hand")
        }
    }
}
