//! `livesync-admin console-user add NAME --password-stdin | remove NAME | list`: the accounts
//! that may sign in to the admin console in the browser (`livesync.console_users`).
//!
//! Passwords are stored as Argon2id hashes (PHC strings, the `argon2` crate's defaults:
//! 19 MiB, 2 passes, a random 16-byte salt). The worker that serves the console checks a
//! sign-in with [`verify_password`]; an unknown name is checked against [`dummy_hash`], so
//! that both take the same time.

use std::io::{BufRead, Write};
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use clap::Subcommand;
use serde::Serialize;
use sqlx::PgPool;

use super::output::{Table, json, time};
use super::{CliError, Ctx, Exit};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest console user name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

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

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ConsoleUser {
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_sign_in_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Sessions not signed out (some may have expired since).
    pub sessions: i64,
}

/// The Argon2id hash of `password`, as a PHC string.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    // 16 bytes always encode.
    let salt = SaltString::encode_b64(&salt_bytes).expect("a 16-byte salt encodes");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with its default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches `hash` (a PHC string). A malformed hash matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a password nobody knows, made once: checked for a name that has no account,
/// so that the answer takes as long as for a wrong password.
pub fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let unguessable: [u8; 32] = rand::random();
        hash_password(&String::from_utf8_lossy(&unguessable))
    })
}

/// A name's problem, if it has one: blank, too long, control characters.
fn check_name(name: &str) -> Result<(), CliError> {
    if name.trim().is_empty() || name.trim() != name {
        return Err(CliError::Usage(
            "a console user name must not be blank nor start or end with blanks".into(),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(CliError::Usage(format!(
            "a console user name has at most {MAX_NAME_CHARS} characters and no control characters"
        )));
    }
    Ok(())
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

/// Add an account with `password`. A name already taken is refused.
pub async fn add(pool: &PgPool, name: &str, password: &str) -> Result<(), CliError> {
    check_name(name)?;
    let hash = tokio::task::spawn_blocking({
        let password = password.to_string();
        move || hash_password(&password)
    })
    .await
    .map_err(|e| CliError::Refused(format!("hashing the password failed: {e}")))?;
    let added = sqlx::query(
        "insert into livesync.console_users (name, password_hash) values ($1, $2) \
         on conflict (name) do nothing",
    )
    .bind(name)
    .bind(hash)
    .execute(pool)
    .await?
    .rows_affected();
    if added == 0 {
        return Err(CliError::Usage(format!(
            "console user \"{name}\" exists already: `livesync-admin console-user remove {name}` \
             first to give it a new password"
        )));
    }
    Ok(())
}

/// Remove an account (and so its sessions). `false` when there was none.
pub async fn remove(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("delete from livesync.console_users where name = $1")
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Every account, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<ConsoleUser>, sqlx::Error> {
    sqlx::query_as(
        "select c.name, c.created_at, c.last_sign_in_at, \
                (select count(*) from livesync.console_sessions s \
                  where s.console_user_id = c.id) as sessions \
           from livesync.console_users c order by c.name",
    )
    .fetch_all(pool)
    .await
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
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("richtig-und-lang");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "richtig-und-lang"));
        assert!(!verify_password(&hash, "falsch-und-lang"));
        assert!(!verify_password("not a hash", "richtig-und-lang"));
        assert_ne!(hash, hash_password("richtig-und-lang"), "salted");
        assert!(!verify_password(dummy_hash(), ""));
    }

    #[test]
    fn the_password_is_the_first_line_without_its_end() {
        let read = |s: &str| read_password(&mut s.as_bytes());
        assert_eq!(read("zwölf Zeichen!\n").unwrap(), "zwölf Zeichen!");
        assert_eq!(read("zwölf Zeichen!\r\nmore").unwrap(), "zwölf Zeichen!");
        assert!(matches!(read("kurz\n"), Err(CliError::Usage(_))));
        assert!(matches!(read(""), Err(CliError::Usage(_))));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("admin").is_ok());
        assert!(check_name(" admin").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a\u{7}").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
