//! `livesync-admin users` and `user enable NAME [--logfile] | user disable NAME`.

use std::io::Write;

use clap::Subcommand;
use livesync_core::users::{rows, set_enabled};

use super::output::{Table, age, json, opt_yes_no, time, yes_no};
use super::{CliError, Ctx, Exit, find_user};

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

pub(crate) async fn list(ctx: &Ctx, out: &mut dyn Write) -> Result<Exit, CliError> {
    let pool = ctx.pool().await?;
    let rows = rows(&pool).await?;
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
        "verified",
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
            verified(r),
        ]);
    }
    table.write(out)?;
    Ok(Exit::Ok)
}

/// The calendar's last verification: when, and what it found.
fn verified(r: &livesync_core::users::UserRow) -> String {
    let Some(at) = r.verified_at else {
        return "-".into();
    };
    let found = match r.verification_problems {
        _ if r.verification_unreadable => "unreadable".to_string(),
        Some(0) | None => "ok".to_string(),
        Some(1) => "1 problem".to_string(),
        Some(n) => format!("{n} problems"),
    };
    format!("{}, {found}", time(Some(at)))
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
    let changed = set_enabled(&pool, user, enable, logfile).await?;
    let sync_switched_on = changed.sync_switched_on;
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
