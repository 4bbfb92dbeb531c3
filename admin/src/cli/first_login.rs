//! `livesync-admin first-login report | run`: the post-update first-login migration.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;

use super::output::{Table, json, opt_yes_no, time};
use super::{CliError, Ctx, Exit};
use livesync_core::first_login::{self, Decision, State};

#[derive(Debug, Subcommand)]
pub enum FirstLoginCommand {
    /// Every user with their state: pending, enabled, names differ, not an existing user.
    Report,
    /// Apply the rule now for every pending user whose most recent login is known.
    Run,
}

#[derive(Debug, Serialize)]
struct Summary {
    pending: usize,
    enabled: usize,
    names_differ: usize,
    admin: usize,
    not_existing_user: usize,
}

pub(crate) async fn run(
    ctx: &Ctx,
    cmd: FirstLoginCommand,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let pool = ctx.pool().await?;
    match cmd {
        FirstLoginCommand::Report => {
            let rows = first_login::report(&pool).await?;
            let count = |s: State| rows.iter().filter(|r| r.state == s).count();
            let summary = Summary {
                pending: count(State::Pending),
                enabled: count(State::Enabled),
                names_differ: count(State::NamesDiffer),
                admin: count(State::Admin),
                not_existing_user: count(State::NotExistingUser),
            };
            if ctx.json {
                #[derive(Serialize)]
                struct View<'a> {
                    users: &'a [first_login::ReportRow],
                    summary: &'a Summary,
                }
                json(
                    out,
                    &View {
                        users: &rows,
                        summary: &summary,
                    },
                )?;
                return Ok(Exit::Ok);
            }
            let mut table = Table::new(&[
                "user",
                "state",
                "decided by login",
                "decided at",
                "last login matches",
            ]);
            for r in &rows {
                table.row(vec![
                    r.username.clone(),
                    r.state.label().to_string(),
                    r.login_id
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "-".into()),
                    time(r.decided_at),
                    opt_yes_no(r.last_login_matched),
                ]);
            }
            table.write(out)?;
            writeln!(
                out,
                "{} pending, {} enabled, {} names differ, {} decided by admin, {} not existing users",
                summary.pending,
                summary.enabled,
                summary.names_differ,
                summary.admin,
                summary.not_existing_user
            )?;
            Ok(Exit::Ok)
        }
        FirstLoginCommand::Run => {
            let rows = first_login::run_pending(&pool).await?;
            if ctx.json {
                json(out, &rows)?;
                return Ok(Exit::Ok);
            }
            if rows.is_empty() {
                writeln!(
                    out,
                    "no pending users: every existing user has been decided"
                )?;
                return Ok(Exit::Ok);
            }
            let mut table = Table::new(&["user", "login", "result"]);
            for r in &rows {
                let result = match r.decision {
                    None => "no login known: still pending",
                    Some(Decision::Enabled) => "enabled (notice created)",
                    Some(Decision::NamesDiffer) => "names differ: not enabled",
                    Some(Decision::AlreadyDecided) => "already decided",
                    Some(Decision::NotExistingUser) => "not an existing user",
                };
                table.row(vec![
                    r.username.clone(),
                    r.login_id
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "-".into()),
                    result.to_string(),
                ]);
            }
            table.write(out)?;
            Ok(Exit::Ok)
        }
    }
}
