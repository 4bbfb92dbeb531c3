//! `livesync-admin dead-letters list | requeue [ID|--user NAME|--all] | drop [...]`. What
//! a requeue and a drop do is `livesync_core::dead_letters`.

use std::io::Write;

use clap::{Args, Subcommand};
use livesync_core::dead_letters::{Outcome, count, drop, requeue, rows};
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

async fn selection(pool: &PgPool, sel: &Selection) -> Result<(Option<i64>, Option<i64>), CliError> {
    let user_id = match &sel.user {
        Some(name) => Some(find_user(pool, name).await?.id),
        None => None,
    };
    Ok((sel.id, user_id))
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
