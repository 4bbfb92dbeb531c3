//! Applying livesync's schema migrations (`migrations/V{n}__{what}.sql`, embedded at build).
//!
//! One code path for `livesync-admin migrate`, the tests and the demo: connect, take an
//! advisory lock (two concurrent runs are safe), check that this is an Xpert database and
//! that its livesync schema is not newer than this binary, then apply everything pending in
//! one transaction (refinery's grouped mode), so a failure leaves nothing half-applied.

use std::fmt;

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::refinery_sqlx::SqlxMigrator;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Where refinery keeps its history: inside livesync's own schema, so that uninstalling
/// (`drop schema livesync cascade`) removes it too.
pub const HISTORY_TABLE: &str = "livesync.refinery_schema_history";

/// The Xpert tables livesync reads and puts triggers on.
pub const XPERT_TABLES: [&str; 4] = [
    "xpert.users",
    "xpert.appointments",
    "xpert.appointment_participants",
    "xpert.logins",
];

/// Key of the advisory lock that serialises migration runs (any constant shared by all
/// runs; this one spells "livesync").
const LOCK_KEY: i64 = 0x6c69_7665_7379_6e63;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    #[error("cannot connect to the database ({target}): {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "this is not an Xpert database: missing {}. Point DATABASE_URL at the Xpert database \
         (for a test database, load sql/xpert_baseline.sql first)",
        missing.join(", ")
    )]
    NotXpert { missing: Vec<String> },
    #[error(
        "the database's livesync schema is at V{database} but this binary knows only up to \
         V{binary}: use the livesync-admin of the newer release"
    )]
    SchemaNewer { database: i32, binary: i32 },
    #[error("{}", pre_release_message(*version, name))]
    PreRelease { version: i32, name: String },
    #[error("migration failed, nothing was applied: {0}")]
    Refinery(#[from] refinery::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What to tell the admin of a database that carries a pre-release livesync schema.
pub fn pre_release_message(version: i32, name: &str) -> String {
    format!(
        "this database carries a pre-release livesync schema (its migration V{version} \
         \"{name}\" is not part of this release): remove it with sql/uninstall.sql (it drops \
         only schema livesync and livesync's triggers; Xpert's data stays), then run \
         `livesync-admin migrate`"
    )
}

/// The livesync schema a database carries, as its migration history says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// livesync is not installed.
    Nothing,
    /// Migrations of this release's line up to this version.
    Version(i32),
    /// A migration this release does not know under that version and name: the schema of
    /// a pre-release build (or of another line), which this release cannot migrate.
    PreRelease { version: i32, name: String },
}

/// Read the migration history of the database behind `conn`.
pub async fn installed(conn: &mut PgConnection) -> Result<Installed, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(HISTORY_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Installed::Nothing);
    }
    let applied: Vec<(i32, Option<String>)> = sqlx::query_as(
        "select version, name from livesync.refinery_schema_history order by version",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(judge(&applied, &embedded_migrations()))
}

/// The history `applied` against the migrations this release carries: a version this
/// release has under another name is a pre-release schema; a version above the newest it
/// has belongs to a newer release.
fn judge(applied: &[(i32, Option<String>)], known: &[(i32, String)]) -> Installed {
    let newest = known.iter().map(|(v, _)| *v).max().unwrap_or(0);
    for (version, name) in applied {
        let name = name.clone().unwrap_or_default();
        if *version <= newest && !known.iter().any(|(v, n)| v == version && *n == name) {
            return Installed::PreRelease {
                version: *version,
                name,
            };
        }
    }
    match applied.iter().map(|(v, _)| *v).max() {
        Some(v) => Installed::Version(v),
        None => Installed::Nothing,
    }
}

/// One migration as the CLI lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MigrationInfo {
    pub version: i32,
    pub name: String,
    pub applied: bool,
}

impl fmt::Display for MigrationInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}__{}", self.version, self.name)
    }
}

/// The state of a database's livesync schema relative to this binary.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub migrations: Vec<MigrationInfo>,
    /// Highest version applied in the database (0 when livesync is not installed).
    pub database_version: i32,
    /// Highest version this binary carries.
    pub binary_version: i32,
}

impl Status {
    pub fn pending(&self) -> impl Iterator<Item = &MigrationInfo> {
        self.migrations.iter().filter(|m| !m.applied)
    }
    pub fn is_current(&self) -> bool {
        self.database_version == self.binary_version
    }
}

/// The highest migration version embedded in this build: the schema version the worker
/// and the admin tools expect.
pub fn binary_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// The migrations embedded in this build, in order.
pub fn embedded_migrations() -> Vec<(i32, String)> {
    let mut all: Vec<(i32, String)> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| (m.version(), m.name().to_string()))
        .collect();
    all.sort();
    all
}

async fn connect(database_url: &str) -> Result<PgConnection, MigrateError> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|e: sqlx::Error| MigrateError::BadUrl(e.to_string()))?;
    let target = describe_target(database_url);
    PgConnection::connect_with(&options.application_name("livesync-admin"))
        .await
        .map_err(|source| MigrateError::Connect { target, source })
}

/// host:port/database of a URL, without user or password, for messages.
pub fn describe_target(database_url: &str) -> String {
    match database_url.parse::<PgConnectOptions>() {
        Ok(opts) => format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("(default)")
        ),
        Err(_) => "an unparsable DATABASE_URL".into(),
    }
}

/// `url` with its database replaced by `name`, everything else (credentials, parameters)
/// kept as written, so that both sqlx and tokio-postgres (migrations) and pgbench read it.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{}", &base[..path], name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

async fn missing_xpert_tables(conn: &mut PgConnection) -> Result<Vec<String>, MigrateError> {
    let mut missing = Vec::new();
    for table in XPERT_TABLES {
        let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(table)
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            missing.push(table.to_string());
        }
    }
    Ok(missing)
}

async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i32>, MigrateError> {
    let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(HISTORY_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("select version from livesync.refinery_schema_history order by version")
            .fetch_all(&mut *conn)
            .await?,
    )
}

async fn status_of(conn: &mut PgConnection) -> Result<Status, MigrateError> {
    let applied = applied_versions(conn).await?;
    let migrations = embedded_migrations()
        .into_iter()
        .map(|(version, name)| MigrationInfo {
            version,
            name,
            applied: applied.contains(&version),
        })
        .collect();
    Ok(Status {
        migrations,
        database_version: applied.iter().copied().max().unwrap_or(0),
        binary_version: binary_version(),
    })
}

/// Applied and pending migrations (`livesync-admin migrate status`). Changes nothing.
pub async fn status(database_url: &str) -> Result<Status, MigrateError> {
    let mut conn = connect(database_url).await?;
    if let Installed::PreRelease { version, name } = installed(&mut conn).await? {
        let _ = conn.close().await;
        return Err(MigrateError::PreRelease { version, name });
    }
    let status = status_of(&mut conn).await;
    let _ = conn.close().await;
    status
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub dry_run: bool,
    /// The migrations applied by this run (or pending, for a dry run).
    pub applied: Vec<MigrationInfo>,
    pub version: i32,
}

/// Apply every pending migration (`livesync-admin migrate`); a second run is a no-op.
pub async fn run(database_url: &str, dry_run: bool) -> Result<Outcome, MigrateError> {
    let mut conn = connect(database_url).await?;
    sqlx::query("select pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut conn)
        .await?;
    let result = run_locked(&mut conn, dry_run).await;
    // The lock dies with the session anyway; unlock explicitly all the same.
    let _ = sqlx::query("select pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result
}

async fn run_locked(conn: &mut PgConnection, dry_run: bool) -> Result<Outcome, MigrateError> {
    let missing = missing_xpert_tables(conn).await?;
    if !missing.is_empty() {
        return Err(MigrateError::NotXpert { missing });
    }
    if let Installed::PreRelease { version, name } = installed(conn).await? {
        return Err(MigrateError::PreRelease { version, name });
    }
    let before = status_of(conn).await?;
    if before.database_version > before.binary_version {
        return Err(MigrateError::SchemaNewer {
            database: before.database_version,
            binary: before.binary_version,
        });
    }
    let pending: Vec<MigrationInfo> = before.pending().cloned().collect();
    if dry_run || pending.is_empty() {
        return Ok(Outcome {
            dry_run,
            applied: pending,
            version: before.database_version,
        });
    }

    // refinery creates its history table before running the group, so the schema has to
    // exist first. Remember whether we created it, to leave nothing behind on failure.
    let schema_existed: bool =
        sqlx::query_scalar("select exists (select 1 from pg_namespace where nspname = 'livesync')")
            .fetch_one(&mut *conn)
            .await?;
    sqlx::raw_sql("create schema if not exists livesync")
        .execute(&mut *conn)
        .await?;

    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(&mut SqlxMigrator(conn))
        .await;
    match report {
        Ok(report) => {
            let applied = report
                .applied_migrations()
                .iter()
                .map(|m| MigrationInfo {
                    version: m.version(),
                    name: m.name().to_string(),
                    applied: true,
                })
                .collect();
            Ok(Outcome {
                dry_run: false,
                applied,
                version: binary_version(),
            })
        }
        Err(e) => {
            if !schema_existed {
                let _ = sqlx::raw_sql("drop schema if exists livesync cascade")
                    .execute(&mut *conn)
                    .await;
            }
            Err(MigrateError::Refinery(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Installed, judge, with_database};

    #[test]
    fn with_database_replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/xpert?sslmode=disable", "b"),
            "postgres://u:p@h:5432/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "b"), "postgres://h/b");
        assert_eq!(with_database("postgresql://h/", "b"), "postgresql://h/b");
    }

    fn known() -> Vec<(i32, String)> {
        vec![(1, "tables".into()), (2, "functions".into())]
    }

    #[test]
    fn a_history_of_this_release_gives_its_version() {
        assert_eq!(judge(&[], &known()), Installed::Nothing);
        assert_eq!(
            judge(&[(1, Some("tables".into()))], &known()),
            Installed::Version(1)
        );
    }

    #[test]
    fn a_version_above_the_newest_known_belongs_to_a_newer_release() {
        assert_eq!(
            judge(
                &[(1, Some("tables".into())), (3, Some("from_later".into()))],
                &known()
            ),
            Installed::Version(3)
        );
    }

    #[test]
    fn a_migration_this_release_does_not_know_is_a_pre_release_schema() {
        let old = [
            (1, Some("settings_and_users".into())),
            (14, Some("lean_insert_path".into())),
        ];
        assert_eq!(
            judge(&old, &known()),
            Installed::PreRelease {
                version: 1,
                name: "settings_and_users".into()
            }
        );
    }
}
