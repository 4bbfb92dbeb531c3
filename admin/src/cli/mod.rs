//! `livesync-admin`: what the admin of the app server needs, one module per command group.
//!
//! [`run`] is the whole CLI as a library function: it takes the parsed [`Cli`] and a writer
//! for the output, so tests parse argv with [`parse`], run against a test database and read
//! the `--json` output back. `src/bin/livesync-admin.rs` only loads `.env`, parses, calls
//! [`run`] and turns the result into an exit code ([`Exit`], [`CliError::exit_code`]).

mod backfill;
pub mod console_user;
pub mod dead_letters;
mod doctor;
pub mod feed;
mod first_login;
mod migrate;
pub mod output;
mod queue;
pub mod settings;
pub mod users;
mod verify;

use std::io::{self, Write};
use std::time::Duration;

use clap::{Parser, Subcommand};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

use livesync_core::migrate::{Installed, MigrateError, binary_version, describe_target};
use livesync_core::users::User;

/// livesync-admin: install, configure and inspect livesync (Outlook live sync for Xpert).
#[derive(Debug, Parser)]
#[command(
    name = "livesync-admin",
    version,
    after_help = "Exit codes: 0 ok, 1 problems found (or the command failed: database \
                  unreachable, schema not migrated), 2 bad usage or unknown user.\n\
                  DATABASE_URL is read from the environment, from .env, or --database-url."
)]
pub struct Cli {
    /// Print one JSON document instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    /// The Xpert database (postgres://user:password@host:port/database).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending schema migrations (`migrate status`: list applied and pending).
    Migrate(migrate::MigrateArgs),
    /// Show or change the global flags in livesync.settings.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// One line per user: existing user, names match, enabled, log file, queue, dead letters.
    Users,
    /// Switch one user's live sync on or off.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Queue depth and oldest entry per user.
    Queue,
    /// Entries that failed too often: list, send again, or drop them.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// Re-queue appointments (for example after a calendar was wiped).
    Backfill(backfill::BackfillArgs),
    /// The post-update first-login migration: report, or apply it now.
    #[command(subcommand)]
    FirstLogin(first_login::FirstLoginCommand),
    /// One screen that says what is wrong and what to do.
    Doctor(doctor::DoctorArgs),
    /// Accounts of the admin console in the browser: add, remove, list.
    #[command(subcommand)]
    ConsoleUser(console_user::ConsoleUserCommand),
    /// A person's calendar feed URL: print it, or replace its secret.
    #[command(subcommand)]
    Feed(feed::FeedCommand),
    /// Does each calendar hold exactly Xpert's appointments? `--repair` queues the fixes.
    Verify(verify::VerifyArgs),
}

/// Parse argv (the program name first), as the binary does.
pub fn parse<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(argv)
}

/// How a command that ran ended: the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done, nothing wrong.
    Ok,
    /// 1: the command ran and found problems (or a request was refused).
    Problems,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Problems => 1,
        }
    }
}

/// Why a command could not do its job. Messages name the problem and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("unknown user \"{0}\": no Xpert user has this name (see `livesync-admin users`)")]
    UnknownUser(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "no database configured: set DATABASE_URL (environment or .env) or pass --database-url"
    )]
    NoDatabaseUrl,
    #[error("database unreachable ({target}): {reason}")]
    Unreachable { target: String, reason: String },
    #[error(
        "livesync is not installed in this database (schema not migrated): \
         run `livesync-admin migrate`"
    )]
    NotMigrated,
    #[error(
        "the livesync schema is at V{database} but this livesync-admin expects V{binary}: \
         run `livesync-admin migrate`"
    )]
    SchemaOlder { database: i32, binary: i32 },
    #[error(
        "the livesync schema is at V{database}, newer than this livesync-admin (V{binary}): \
         use the livesync-admin of the newer release"
    )]
    SchemaNewer { database: i32, binary: i32 },
    #[error("{}", livesync_core::migrate::pre_release_message(*version, name))]
    PreRelease { version: i32, name: String },
    #[error("{0}")]
    Migrate(#[from] MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    /// 2 for bad usage and unknown users, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::UnknownUser(_) => 2,
            _ => 1,
        }
    }
}

/// Run one command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<Exit, CliError> {
    let ctx = Ctx {
        json: cli.json,
        database_url: cli.database_url,
    };
    match cli.command {
        Command::Migrate(args) => migrate::run(&ctx, args, out).await,
        Command::Settings(cmd) => settings::run(&ctx, cmd, out).await,
        Command::Users => users::list(&ctx, out).await,
        Command::User(cmd) => users::run(&ctx, cmd, out).await,
        Command::Queue => queue::run(&ctx, out).await,
        Command::DeadLetters(cmd) => dead_letters::run(&ctx, cmd, out).await,
        Command::Backfill(args) => backfill::run(&ctx, args, out).await,
        Command::FirstLogin(cmd) => first_login::run(&ctx, cmd, out).await,
        Command::Doctor(args) => doctor::run(&ctx, args, out).await,
        Command::ConsoleUser(cmd) => console_user::run(&ctx, cmd, out).await,
        Command::Feed(cmd) => feed::run(&ctx, cmd, out).await,
        Command::Verify(args) => verify::run(&ctx, args, out).await,
    }
}

/// What every command gets besides its own arguments.
pub(crate) struct Ctx {
    pub json: bool,
    pub database_url: Option<String>,
}

impl Ctx {
    /// The configured URL; another database's scheme is refused here, before anything
    /// connects (the message names the scheme only, never the URL and its password).
    pub fn url(&self) -> Result<&str, CliError> {
        let url = match self.database_url.as_deref() {
            Some(url) if !url.trim().is_empty() => url,
            _ => return Err(CliError::NoDatabaseUrl),
        };
        if let Some((scheme, _)) = url.split_once("://")
            && !matches!(
                scheme.to_ascii_lowercase().as_str(),
                "postgres" | "postgresql"
            )
        {
            return Err(CliError::Usage(format!(
                "DATABASE_URL must be a postgres:// or postgresql:// URL, not {scheme}://"
            )));
        }
        Ok(url)
    }

    /// A small pool on the configured database, without checking the schema. One direct
    /// connection attempt first, so that an unreachable server is reported at once instead
    /// of after the pool's retries.
    pub async fn connect(&self) -> Result<PgPool, CliError> {
        let url = self.url()?;
        let target = describe_target(url);
        let options: PgConnectOptions = url.parse().map_err(|e| {
            CliError::Usage(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
        })?;
        let unreachable = |reason: String| CliError::Unreachable {
            target: target.clone(),
            reason,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Err(_) => return Err(unreachable("timed out connecting".into())),
            Ok(Err(e)) => return Err(unreachable(unreachable_reason(&e))),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
        }
        Ok(PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(livesync_core::session::configure(options)))
    }

    /// A pool on a database whose livesync schema is exactly what this binary knows.
    pub async fn pool(&self) -> Result<PgPool, CliError> {
        let pool = self.connect().await?;
        let database = match installed_schema(&pool).await? {
            Installed::Nothing => return Err(CliError::NotMigrated),
            Installed::PreRelease { version, name } => {
                return Err(CliError::PreRelease { version, name });
            }
            Installed::Version(v) => v,
        };
        let binary = binary_version();
        if database < binary {
            return Err(CliError::SchemaOlder { database, binary });
        }
        if database > binary {
            return Err(CliError::SchemaNewer { database, binary });
        }
        Ok(pool)
    }
}

/// The highest applied migration, `None` when livesync is not installed.
pub(crate) async fn installed_schema(pool: &PgPool) -> Result<Installed, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    livesync_core::migrate::installed(&mut conn).await
}

fn unreachable_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::PoolTimedOut => "timed out connecting".into(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Find a user by Xpert name: exact first, then by the login rule (case, `DOMAIN\`,
/// `@domain` ignored), so `KANZLEI\MMuster` finds `mmuster`.
pub async fn find_user(pool: &PgPool, name: &str) -> Result<User, CliError> {
    let exact: Option<User> =
        sqlx::query_as("select id, username from xpert.users where username = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    if let Some(user) = exact {
        return Ok(user);
    }
    let similar: Vec<User> = sqlx::query_as(
        "select id, username from xpert.users \
         where livesync.names_match($1, username) order by id limit 2",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    match similar.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CliError::UnknownUser(name.to_string())),
        _ => Err(CliError::Usage(format!(
            "user name \"{name}\" is ambiguous: it matches several Xpert users; \
             give the exact Xpert user name"
        ))),
    }
}
