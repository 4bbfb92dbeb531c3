//! `livesync-admin console-user add NAME --password-stdin | remove NAME | list`: the accounts
//! that may sign in to the admin console in the browser (`livesync.console_users`). The
//! accounts, their names and their Argon2id hashes are `livesync_core::console_users`; here
//! the password is read and the answers are written.

use std::io::{BufRead, Write};

use clap::Subcommand;
use livesync_core::console_users::{AddError, add, check_name, list, remove};

use super::output::{Table, json, time};
use super::{CliError, Ctx, Exit};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, Subcommand)]
pub enum ConsoleUserCommand {
    /// Add an account; the password is read from the first line of standard input.
    Add {
        /// The name to sign in with.
        name: String,
        /// Read the password from standard input (the only way: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove an account; its sessions end at once.
    Remove {
        /// The account's name.
        name: String,
    },
    /// List the accounts.
    List,
}

/// The password from the first line of `input` (its line end removed).
pub fn read_password(input: &mut dyn BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(|e| {
        CliError::Usage(format!("cannot read the password from standard input: {e}"))
    })?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password).to_string();
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CliError::Usage(format!(
            "the password (read from standard input) must have at least {MIN_PASSWORD_CHARS} \
             characters"
        )));
    }
    Ok(password)
}

impl From<AddError> for CliError {
    fn from(e: AddError) -> CliError {
        match e {
            AddError::BlankName | AddError::BadName => CliError::Usage(e.to_string()),
            AddError::Taken(name) => CliError::Usage(format!(
                "console user \"{name}\" exists already: `livesync-admin console-user remove \
                 {name}` first to give it a new password"
            )),
            AddError::Hashing(_) => CliError::Refused(e.to_string()),
            AddError::Database(e) => CliError::Database(e),
        }
    }
}

pub(crate) async fn run(
    ctx: &Ctx,
    cmd: ConsoleUserCommand,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    match cmd {
        ConsoleUserCommand::Add { name, .. } => {
            check_name(&name)?;
            let password = read_password(&mut std::io::stdin().lock())?;
            let pool = ctx.pool().await?;
            add(&pool, &name, &password).await?;
            if ctx.json {
                json(out, &serde_json::json!({ "added": name }))?;
            } else {
                writeln!(out, "console user \"{name}\" added")?;
            }
            Ok(Exit::Ok)
        }
        ConsoleUserCommand::Remove { name } => {
            let pool = ctx.pool().await?;
            if !remove(&pool, &name).await? {
                return Err(CliError::Usage(format!(
                    "no console user \"{name}\" (see `livesync-admin console-user list`)"
                )));
            }
            if ctx.json {
                json(out, &serde_json::json!({ "removed": name }))?;
            } else {
                writeln!(out, "console user \"{name}\" removed; its sessions ended")?;
            }
            Ok(Exit::Ok)
        }
        ConsoleUserCommand::List => {
            let pool = ctx.pool().await?;
            let users = list(&pool).await?;
            if ctx.json {
                json(out, &users)?;
                return Ok(Exit::Ok);
            }
            if users.is_empty() {
                writeln!(
                    out,
                    "no console users: add one with \
                     `livesync-admin console-user add NAME --password-stdin`"
                )?;
                return Ok(Exit::Ok);
            }
            let mut table = Table::new(&["name", "created", "last sign-in", "sessions"]);
            for u in &users {
                table.row(vec![
                    u.name.clone(),
                    time(Some(u.created_at)),
                    time(u.last_sign_in_at),
                    u.sessions.to_string(),
                ]);
            }
            table.write(out)?;
            Ok(Exit::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_first_line_without_its_end() {
        let read = |s: &str| read_password(&mut s.as_bytes());
        assert_eq!(read("zwölf Zeichen!\n").unwrap(), "zwölf Zeichen!");
        assert_eq!(read("zwölf Zeichen!\r\nmore").unwrap(), "zwölf Zeichen!");
        assert!(matches!(read("kurz\n"), Err(CliError::Usage(_))));
        assert!(matches!(read(""), Err(CliError::Usage(_))));
    }
}
