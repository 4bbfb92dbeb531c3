//! `livesync-admin migrate [--dry-run]` and `migrate status`.

use std::io::Write;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{Table, json, yes_no};
use super::{CliError, Ctx, Exit};
use livesync_core::migrate::{self, MigrateError};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MigrateArgs {
    /// List what would be applied, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(subcommand)]
    pub action: Option<MigrateAction>,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Show applied and pending migrations (exit 1 when some are pending).
    Status,
}

pub(crate) async fn run(
    ctx: &Ctx,
    args: MigrateArgs,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let url = ctx.url()?;
    match args.action {
        Some(MigrateAction::Status) => {
            let status = migrate::status(url).await.map_err(connect_error)?;
            if ctx.json {
                #[derive(Serialize)]
                struct View<'a> {
                    #[serde(flatten)]
                    status: &'a migrate::Status,
                    current: bool,
                }
                json(
                    out,
                    &View {
                        status: &status,
                        current: status.is_current(),
                    },
                )?;
            } else {
                let mut table = Table::new(&["migration", "applied"]);
                for m in &status.migrations {
                    table.row(vec![m.to_string(), yes_no(m.applied)]);
                }
                table.write(out)?;
                writeln!(
                    out,
                    "database at V{}, this binary at V{}: {}",
                    status.database_version,
                    status.binary_version,
                    if status.is_current() {
                        "up to date".to_string()
                    } else if status.database_version > status.binary_version {
                        "the database is newer than this binary".to_string()
                    } else {
                        format!(
                            "{} pending, run `livesync-admin migrate`",
                            status.pending().count()
                        )
                    }
                )?;
            }
            Ok(if status.is_current() {
                Exit::Ok
            } else {
                Exit::Problems
            })
        }
        None => {
            let outcome = migrate::run(url, args.dry_run)
                .await
                .map_err(connect_error)?;
            if ctx.json {
                json(out, &outcome)?;
            } else if outcome.applied.is_empty() {
                writeln!(out, "nothing to do: the schema is at V{}", outcome.version)?;
            } else {
                let verb = if outcome.dry_run {
                    "would apply"
                } else {
                    "applied"
                };
                for m in &outcome.applied {
                    writeln!(out, "{verb} {m}")?;
                }
                if !outcome.dry_run {
                    writeln!(out, "the schema is now at V{}", outcome.version)?;
                }
            }
            Ok(Exit::Ok)
        }
    }
}

/// A connection failure reads like every other command's.
fn connect_error(e: MigrateError) -> CliError {
    match e {
        MigrateError::Connect { target, source } => CliError::Unreachable {
            target,
            reason: match std::error::Error::source(&source) {
                Some(cause) => format!("{source}: {cause}"),
                None => source.to_string(),
            },
        },
        other => CliError::Migrate(other),
    }
}
