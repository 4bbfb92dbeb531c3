//! `livesync-admin backfill NAME|--all [--from DATE]`: queue a user's calendar again from a
//! date on (default: the start of today in the firm's time zone), for example after the
//! calendar was wiped. Uses `livesync.queue_user_backlog`, the same function that enabling
//! a user runs. A progress bar is drawn on stderr when it is a terminal.

use std::io::{IsTerminal, Write};

use chrono::NaiveDate;
use clap::Args;
use serde::Serialize;

use super::output::json;
use super::{CliError, Ctx, Exit, find_user};

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The Xpert user name.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every user with live sync enabled.
    #[arg(long)]
    pub all: bool,
    /// First day to queue (YYYY-MM-DD, in the firm's time zone); default today.
    #[arg(long, value_parser = parse_date)]
    pub from: Option<NaiveDate>,
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("\"{s}\" is not a date: use YYYY-MM-DD, e.g. 2026-01-31"))
}

#[derive(Debug, Serialize)]
struct UserOutcome {
    user_id: i64,
    username: String,
    queued: i64,
}

#[derive(Debug, Serialize)]
struct Outcome {
    from: chrono::DateTime<chrono::Utc>,
    /// `from` in the firm's time zone, for people.
    from_local: String,
    users: Vec<UserOutcome>,
    total: i64,
}

pub(crate) async fn run(
    ctx: &Ctx,
    args: BackfillArgs,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let pool = ctx.pool().await?;
    let switched_on: bool =
        sqlx::query_scalar("select live_sync_enabled and cti_sync_licensed from livesync.settings")
            .fetch_one(&pool)
            .await?;
    if !switched_on {
        return Err(CliError::Refused(
            "nothing to backfill: live sync is switched off globally or not licensed \
             (see `livesync-admin settings show`)"
                .into(),
        ));
    }
    let users: Vec<(i64, String)> = match &args.name {
        Some(name) => {
            let user = find_user(&pool, name).await?;
            let active: bool = sqlx::query_scalar("select livesync.sync_active($1)")
                .bind(user.id)
                .fetch_one(&pool)
                .await?;
            if !active {
                return Err(CliError::Refused(format!(
                    "nothing to backfill: live sync is not enabled for {} \
                     (`livesync-admin user enable {}`)",
                    user.username, user.username
                )));
            }
            vec![(user.id, user.username)]
        }
        None => {
            sqlx::query_as(
                "select u.id, u.username from livesync.user_settings s \
                 join xpert.users u on u.id = s.user_id \
                 where s.live_sync_enabled order by u.username",
            )
            .fetch_all(&pool)
            .await?
        }
    };
    let (from, from_local): (chrono::DateTime<chrono::Utc>, String) = sqlx::query_as(
        "select f.at, to_char(f.at at time zone s.time_zone, 'YYYY-MM-DD HH24:MI ') || s.time_zone \
         from livesync.settings s, lateral (select coalesce( \
           ($1::date)::timestamp at time zone s.time_zone, livesync.start_of_today()) as at) f",
    )
    .bind(args.from)
    .fetch_one(&pool)
    .await?;

    let progress = !ctx.json && std::io::stderr().is_terminal();
    let count = users.len();
    let mut outcome = Outcome {
        from,
        from_local,
        users: Vec::with_capacity(count),
        total: 0,
    };
    for (i, (user_id, username)) in users.into_iter().enumerate() {
        if progress {
            draw(i, count, &username);
        }
        let queued: i32 = sqlx::query_scalar("select livesync.queue_user_backlog($1, $2)")
            .bind(user_id)
            .bind(from)
            .fetch_one(&pool)
            .await?;
        outcome.total += i64::from(queued);
        outcome.users.push(UserOutcome {
            user_id,
            username,
            queued: i64::from(queued),
        });
    }
    if progress {
        draw(count, count, "");
        eprintln!();
    }
    if ctx.json {
        json(out, &outcome)?;
    } else {
        for u in &outcome.users {
            writeln!(out, "{}: {} entries queued", u.username, u.queued)?;
        }
        writeln!(
            out,
            "{} entries queued for {} users from {}",
            outcome.total,
            outcome.users.len(),
            outcome.from_local
        )?;
    }
    Ok(Exit::Ok)
}

/// `[#########           ] 9/20 mmuster` on one terminal line.
fn draw(done: usize, total: usize, current: &str) {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{}{}] {done}/{total} {current:<24}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    );
    let _ = err.flush();
}
