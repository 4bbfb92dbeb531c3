//! `livesync-admin users` and `user enable NAME [--logfile] | user disable NAME`.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;

use super::output::{Table, age, json, opt_yes_no, time, yes_no};
use super::{CliError, Ctx, Exit, expand_pending, find_user};
use livesync_core::first_login::record_admin_decision;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Switch a user's live sync on; queues their appointments from today on.
    Enable {
        /// The Xpert user name.
        name: String,
        /// Also keep the user's log file.
        #[arg(long, conflicts_with = "no_logfile")]
        logfile: bool,
        /// Stop keeping the user's log file.
        #[arg(long)]
        no_logfile: bool,
    },
    /// Switch a user's live sync off; drops what is queued for them.
    Disable {
        /// The Xpert user name.
        name: String,
    },
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct UserRow {
    user_id: i64,
    username: String,
    existing_user: bool,
    /// Did the Windows name of the latest login match? (`None`: never logged in.)
    names_match_at_last_login: Option<bool>,
    enabled: bool,
    logfile: bool,
    queued: i64,
    oldest_queued_seconds: Option<i64>,
    last_synced_at: Option<chrono::DateTime<chrono::Utc>>,
    dead_letters: i64,
}

pub(crate) async fn list(ctx: &Ctx, out: &mut dyn Write) -> Result<Exit, CliError> {
    let pool = ctx.pool().await?;
    expand_pending(&pool).await?;
    let rows: Vec<UserRow> = sqlx::query_as(
        "select u.id as user_id, u.username, f.user_id is not null as existing_user, \
                (select livesync.names_match(l.windows_username, u.username) \
                   from xpert.logins l where l.user_id = u.id \
                  order by l.id desc limit 1) as names_match_at_last_login, \
                coalesce(us.live_sync_enabled, false) as enabled, \
                coalesce(us.keep_logfile, false) as logfile, \
                coalesce(q.n, 0) as queued, \
                extract(epoch from now() - q.oldest)::bigint as oldest_queued_seconds, \
                st.last_synced_at, \
                coalesce(d.n, 0) as dead_letters \
         from xpert.users u \
         left join livesync.first_login f on f.user_id = u.id \
         left join livesync.user_settings us on us.user_id = u.id \
         left join livesync.user_state st on st.user_id = u.id \
         left join (select user_id, count(*) as n, min(queued_at) as oldest \
                      from livesync.queue group by user_id) q on q.user_id = u.id \
         left join (select user_id, count(*) as n from livesync.dead_letters \
                     group by user_id) d on d.user_id = u.id \
         order by u.username",
    )
    .fetch_all(&pool)
    .await?;
    if ctx.json {
        json(out, &rows)?;
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "user",
        "existing",
        "names match",
        "enabled",
        "log file",
        "queued",
        "oldest",
        "last synced",
        "dead letters",
    ]);
    for r in &rows {
        table.row(vec![
            r.username.clone(),
            yes_no(r.existing_user),
            opt_yes_no(r.names_match_at_last_login),
            yes_no(r.enabled),
            yes_no(r.logfile),
            r.queued.to_string(),
            age(r.oldest_queued_seconds),
            time(r.last_synced_at),
            r.dead_letters.to_string(),
        ]);
    }
    table.write(out)?;
    Ok(Exit::Ok)
}

#[derive(Debug, Serialize)]
struct Changed {
    user_id: i64,
    username: String,
    enabled: bool,
    logfile: bool,
    /// Entries queued (enable) or dropped from the queue (disable) by this command.
    queued: i64,
    dropped: i64,
    /// Is live sync switched on and licensed globally? Without it nothing is queued.
    sync_switched_on: bool,
}

pub(crate) async fn run(
    ctx: &Ctx,
    cmd: UserCommand,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let pool = ctx.pool().await?;
    let (name, enable, logfile) = match &cmd {
        UserCommand::Enable {
            name,
            logfile,
            no_logfile,
        } => {
            let logfile = if *logfile {
                Some(true)
            } else if *no_logfile {
                Some(false)
            } else {
                None
            };
            (name, true, logfile)
        }
        UserCommand::Disable { name } => (name, false, None),
    };
    let user = find_user(&pool, name).await?;
    let mut tx = pool.begin().await?;
    // An admin's decision ends the first-login rule for a user still pending. Taken first,
    // in the same lock order as `first_login::apply_for_login` (first_login, then
    // user_settings), so a concurrent first login waits instead of deadlocking.
    record_admin_decision(&mut tx, user.id).await?;
    let before: i64 = sqlx::query_scalar("select count(*) from livesync.queue where user_id = $1")
        .bind(user.id)
        .fetch_one(&mut *tx)
        .await?;
    // The trigger on user_settings queues the calendar from today (enable) or drops the
    // user's queue (disable).
    let (enabled, keep_logfile): (bool, bool) = sqlx::query_as(
        "insert into livesync.user_settings as us (user_id, live_sync_enabled, keep_logfile) \
         values ($1, $2, coalesce($3, false)) \
         on conflict (user_id) do update \
            set live_sync_enabled = excluded.live_sync_enabled, \
                keep_logfile = coalesce($3, us.keep_logfile) \
         returning live_sync_enabled, keep_logfile",
    )
    .bind(user.id)
    .bind(enable)
    .bind(logfile)
    .fetch_one(&mut *tx)
    .await?;
    // Entries written by this transaction carry its timestamp.
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from livesync.queue where user_id = $1 and changed_at = now()",
    )
    .bind(user.id)
    .fetch_one(&mut *tx)
    .await?;
    let after: i64 = sqlx::query_scalar("select count(*) from livesync.queue where user_id = $1")
        .bind(user.id)
        .fetch_one(&mut *tx)
        .await?;
    let sync_switched_on: bool =
        sqlx::query_scalar("select live_sync_enabled and cti_sync_licensed from livesync.settings")
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;

    let changed = Changed {
        user_id: user.id,
        username: user.username,
        enabled,
        logfile: keep_logfile,
        queued,
        dropped: (before - after).max(0),
        sync_switched_on,
    };
    if ctx.json {
        json(out, &changed)?;
        return Ok(Exit::Ok);
    }
    if enable {
        writeln!(
            out,
            "{}: live sync enabled, log file {}; {} entries queued",
            changed.username,
            if changed.logfile { "on" } else { "off" },
            changed.queued
        )?;
        if !sync_switched_on {
            writeln!(
                out,
                "note: live sync is switched off globally or not licensed, so nothing is queued \
                 yet (see `livesync-admin settings show`)"
            )?;
        }
    } else {
        writeln!(
            out,
            "{}: live sync disabled; {} queued entries dropped",
            changed.username, changed.dropped
        )?;
    }
    Ok(Exit::Ok)
}
