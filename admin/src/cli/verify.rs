//! `livesync-admin verify [NAME|--all] [--repair] [--from DATE] [--to DATE] [--json]`:
//! does each person's calendar hold exactly Xpert's appointments for them?
//!
//! Reading a calendar takes the sink and its configuration, which the worker owns, so
//! this runs `livesync-worker verify` (next to livesync-admin, on PATH, or
//! `--worker-bin`) with the same arguments, the worker's configuration (its environment and
//! `.env`) and this database, like `doctor` runs `livesync-worker check`. The worker's
//! report is printed as it is; its exit code is this command's: 0 every calendar equals
//! Xpert (or, with `--repair`, every problem is queued for repair), 1 not.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use chrono::NaiveDate;
use clap::Args;

use super::doctor::find_worker;
use super::{CliError, Ctx, Exit};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The Xpert user name whose calendar to verify.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every person whose live sync is active.
    #[arg(long)]
    pub all: bool,
    /// Queue the repair of everything that is neither ok nor foreign; exits 0 once queued.
    #[arg(long)]
    pub repair: bool,
    /// First day (YYYY-MM-DD, in the firm's time zone); default today.
    #[arg(long, value_parser = parse_date)]
    pub from: Option<NaiveDate>,
    /// Last day, included (YYYY-MM-DD); default open.
    #[arg(long, value_parser = parse_date)]
    pub to: Option<NaiveDate>,
    /// The livesync-worker binary (default: next to livesync-admin, then PATH).
    #[arg(long, env = "LIVESYNC_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("\"{s}\" is not a date: use YYYY-MM-DD, e.g. 2026-01-31"))
}

/// The worker's arguments for `args`.
fn worker_args(args: &VerifyArgs, json: bool) -> Vec<String> {
    let mut argv = vec!["verify".to_string()];
    match &args.name {
        Some(name) => {
            argv.push("--".to_string());
            argv.push(name.clone());
        }
        None => argv.push("--all".to_string()),
    }
    if args.repair {
        argv.push("--repair".to_string());
    }
    if let Some(from) = args.from {
        argv.push(format!("--from={from}"));
    }
    if let Some(to) = args.to {
        argv.push(format!("--to={to}"));
    }
    if json {
        argv.push("--json".to_string());
    }
    // The name last, after `--`: a name starting with a dash stays a name.
    if let Some(i) = argv.iter().position(|a| a == "--") {
        let tail: Vec<String> = argv.drain(i..i + 2).collect();
        argv.extend(tail);
    }
    argv
}

pub(crate) async fn run(
    ctx: &Ctx,
    args: VerifyArgs,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let url = ctx.url()?.to_string();
    let Some(bin) = find_worker(args.worker_bin.as_deref()) else {
        return Err(CliError::Refused(
            "livesync-worker not found next to livesync-admin or on PATH: install it beside \
             livesync-admin, or pass --worker-bin PATH"
                .into(),
        ));
    };
    let output = tokio::process::Command::new(&bin)
        .args(worker_args(&args, ctx.json))
        .env("DATABASE_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Progress and errors go straight to the terminal.
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| CliError::Refused(format!("cannot run {}: {e}", bin.display())))?;
    out.write_all(&output.stdout)?;
    match output.status.code() {
        Some(0) => Ok(Exit::Ok),
        Some(1) if !output.stdout.is_empty() => Ok(Exit::Problems),
        Some(2) => Err(CliError::Usage(format!(
            "`{} verify` refused its configuration (see above)",
            bin.display()
        ))),
        _ => Err(CliError::Refused(format!(
            "`{} verify` failed ({}); see above",
            bin.display(),
            output.status
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: Option<&str>) -> VerifyArgs {
        VerifyArgs {
            name: name.map(str::to_string),
            all: name.is_none(),
            repair: true,
            from: NaiveDate::from_ymd_opt(2026, 12, 1),
            to: None,
            worker_bin: None,
        }
    }

    #[test]
    fn the_worker_gets_the_same_question() {
        assert_eq!(
            worker_args(&args(None), true),
            ["verify", "--all", "--repair", "--from=2026-12-01", "--json"]
        );
        assert_eq!(
            worker_args(&args(Some("-odd")), false),
            ["verify", "--repair", "--from=2026-12-01", "--", "-odd"]
        );
    }
}
