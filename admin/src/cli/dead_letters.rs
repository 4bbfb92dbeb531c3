//! `livesync-admin dead-letters list | requeue [ID|--user NAME|--all] | drop [...]`.
//!
//! Re-queueing derives the operation from the truth now, not from the dead entry: an
//! upsert while the appointment exists and the user still participates, else a delete. It
//! coalesces with what is already queued exactly like `livesync.enqueue`, and removes the
//! dead letter in the same statement, so an entry is never both dead and queued, nor lost.

use std::io::Write;

use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::PgPool;

use super::output::{Table, json, short, time};
use super::{CliError, Ctx, Exit, find_user};

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Show the dead letters with their last error.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Send entries again (their queue entry is rebuilt from the current appointment).
    Requeue(Selection),
    /// Remove entries for good.
    Drop(Selection),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// One dead letter, by id.
    pub id: Option<i64>,
    /// All of one user's dead letters.
    #[arg(long)]
    pub user: Option<String>,
    /// All dead letters.
    #[arg(long)]
    pub all: bool,
}

/// One dead letter, with its user's name and its appointment's subject when they exist.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub user_id: i64,
    pub username: Option<String>,
    pub appointment_id: i64,
    pub subject: Option<String>,
    pub op: String,
    pub attempts: i32,
    pub last_error: String,
    pub first_queued_at: chrono::DateTime<chrono::Utc>,
    pub failed_at: chrono::DateTime<chrono::Utc>,
}

/// What a requeue or a drop did.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Dead letters the selection matched.
    pub matched: i64,
    /// Requeued (or dropped).
    pub done: i64,
    /// Left alone: the user's sync is not active, so nothing would be delivered.
    pub skipped: i64,
}

pub(crate) async fn run(
    ctx: &Ctx,
    cmd: DeadLettersCommand,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let pool = ctx.pool().await?;
    match cmd {
        DeadLettersCommand::List { user } => list(ctx, &pool, user.as_deref(), out).await,
        DeadLettersCommand::Requeue(sel) => {
            let (id, user_id) = selection(&pool, &sel).await?;
            if let Some(id) = id
                && count(&pool, Some(id), user_id).await? == 0
            {
                return Err(CliError::Usage(format!("no dead letter with id {id}")));
            }
            let outcome = requeue(&pool, id, user_id).await?;
            report(ctx, "requeued", outcome, out)
        }
        DeadLettersCommand::Drop(sel) => {
            let (id, user_id) = selection(&pool, &sel).await?;
            let done = drop(&pool, id, user_id).await?;
            if let Some(id) = id
                && done == 0
            {
                return Err(CliError::Usage(format!("no dead letter with id {id}")));
            }
            report(
                ctx,
                "dropped",
                Outcome {
                    matched: done,
                    done,
                    skipped: 0,
                },
                out,
            )
        }
    }
}

/// Send the selected dead letters again (`id` and `user_id` narrow the selection; both
/// `None`: all). Only entries of users whose sync is active are taken (the others are
/// `skipped`); each is queued with the operation the truth gives now and leaves the dead
/// letters in the same statement.
pub async fn requeue(
    pool: &PgPool,
    id: Option<i64>,
    user_id: Option<i64>,
) -> Result<Outcome, sqlx::Error> {
    let matched = count(pool, id, user_id).await?;
    let (done, users): (i64, Vec<i64>) = sqlx::query_as(
        "with dead as ( \
           delete from livesync.dead_letters d \
            where ($1::bigint is null or d.id = $1) \
              and ($2::bigint is null or d.user_id = $2) \
              and livesync.sync_active(d.user_id) \
           returning d.id, d.user_id, d.appointment_id, d.first_queued_at), \
         latest as ( \
           select distinct on (user_id, appointment_id) user_id, appointment_id, \
                  first_queued_at \
             from dead order by user_id, appointment_id, id desc), \
         requeued as ( \
           insert into livesync.queue as q (user_id, appointment_id, op, queued_at) \
           select l.user_id, l.appointment_id, \
                  case when exists (select 1 from xpert.appointment_participants p \
                                     where p.user_id = l.user_id \
                                       and p.appointment_id = l.appointment_id) \
                       then 'upsert' else 'delete' end, \
                  l.first_queued_at \
             from latest l order by l.user_id, l.appointment_id \
           on conflict (user_id, appointment_id) do update \
             set op = excluded.op, version = excluded.version, changed_at = now(), \
                 attempts = 0, not_before = '-infinity', last_error = null \
           returning q.user_id) \
         select (select count(*) from dead), \
                array(select distinct user_id from requeued order by user_id)",
    )
    .bind(id)
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    // A hint for a sleeping worker; the queue is the truth either way.
    sqlx::query("select livesync.wake(u::text) from unnest($1::bigint[]) as u")
        .bind(&users)
        .execute(pool)
        .await?;
    Ok(Outcome {
        matched,
        done,
        skipped: matched - done,
    })
}

/// Remove the selected dead letters for good; returns how many.
pub async fn drop(
    pool: &PgPool,
    id: Option<i64>,
    user_id: Option<i64>,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(
        "delete from livesync.dead_letters \
          where ($1::bigint is null or id = $1) and ($2::bigint is null or user_id = $2)",
    )
    .bind(id)
    .bind(user_id)
    .execute(pool)
    .await?
    .rows_affected() as i64;
    Ok(done)
}

async fn selection(pool: &PgPool, sel: &Selection) -> Result<(Option<i64>, Option<i64>), CliError> {
    let user_id = match &sel.user {
        Some(name) => Some(find_user(pool, name).await?.id),
        None => None,
    };
    Ok((sel.id, user_id))
}

async fn count(pool: &PgPool, id: Option<i64>, user_id: Option<i64>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from livesync.dead_letters \
          where ($1::bigint is null or id = $1) and ($2::bigint is null or user_id = $2)",
    )
    .bind(id)
    .bind(user_id)
    .fetch_one(pool)
    .await
}

fn report(ctx: &Ctx, verb: &str, outcome: Outcome, out: &mut dyn Write) -> Result<Exit, CliError> {
    if ctx.json {
        json(out, &outcome)?;
    } else {
        writeln!(out, "{} dead letters {verb}", outcome.done)?;
        if outcome.skipped > 0 {
            writeln!(
                out,
                "{} left as they are: their user's live sync is not active \
                 (`livesync-admin user enable NAME`, `settings show`)",
                outcome.skipped
            )?;
        }
    }
    Ok(if outcome.skipped > 0 {
        Exit::Problems
    } else {
        Exit::Ok
    })
}

async fn list(
    ctx: &Ctx,
    pool: &PgPool,
    user: Option<&str>,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let user_id = match user {
        Some(name) => Some(find_user(pool, name).await?.id),
        None => None,
    };
    let rows = rows(pool, user_id).await?;
    if ctx.json {
        json(out, &rows)?;
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        writeln!(out, "no dead letters")?;
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "id",
        "user",
        "appointment",
        "subject",
        "op",
        "attempts",
        "failed at",
        "last error",
    ]);
    for r in &rows {
        table.row(vec![
            r.id.to_string(),
            r.username
                .clone()
                .unwrap_or_else(|| format!("(deleted user {})", r.user_id)),
            r.appointment_id.to_string(),
            r.subject
                .as_deref()
                .map(|s| short(s, 30))
                .unwrap_or_else(|| "-".into()),
            r.op.clone(),
            r.attempts.to_string(),
            time(Some(r.failed_at)),
            short(&r.last_error, 60),
        ]);
    }
    table.write(out)?;
    writeln!(
        out,
        "send again: `livesync-admin dead-letters requeue ID|--user NAME|--all`"
    )?;
    Ok(Exit::Ok)
}

/// The dead letters, of one user or of all, oldest first.
pub async fn rows(pool: &PgPool, user_id: Option<i64>) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "select d.id, d.user_id, u.username, d.appointment_id, a.subject, d.op, d.attempts, \
                d.last_error, d.first_queued_at, d.failed_at \
         from livesync.dead_letters d \
         left join xpert.users u on u.id = d.user_id \
         left join xpert.appointments a on a.id = d.appointment_id \
         where ($1::bigint is null or d.user_id = $1) \
         order by d.id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}
