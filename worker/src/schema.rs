//! The worker never runs DDL: it checks at start that the database's livesync schema is the
//! one it was built for, and says which command fixes a mismatch.

use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("livesync is not installed in this database: run `livesync-admin migrate` first")]
    NotInstalled,
    #[error(
        "the database's livesync schema is at V{database}, this worker needs V{expected}: \
         run `livesync-admin migrate` (of this release) first"
    )]
    Older { database: i32, expected: i32 },
    #[error(
        "the database's livesync schema is at V{database}, newer than this worker (V{expected}): \
         install the livesync-worker of the release that migrated it"
    )]
    Newer { database: i32, expected: i32 },
    #[error("{}", livesync_core::migrate::pre_release_message(*version, name))]
    PreRelease { version: i32, name: String },
    #[error("cannot read the schema version: {0}")]
    Database(#[from] sqlx::Error),
}

pub async fn check(pool: &PgPool) -> Result<i32, SchemaError> {
    use livesync_core::migrate::Installed;
    let expected = livesync_core::migrate::binary_version();
    let mut conn = pool.acquire().await?;
    match livesync_core::migrate::installed(&mut conn).await? {
        Installed::Nothing => Err(SchemaError::NotInstalled),
        Installed::PreRelease { version, name } => Err(SchemaError::PreRelease { version, name }),
        Installed::Version(v) if v < expected => Err(SchemaError::Older {
            database: v,
            expected,
        }),
        Installed::Version(v) if v > expected => Err(SchemaError::Newer {
            database: v,
            expected,
        }),
        Installed::Version(v) => Ok(v),
    }
}
