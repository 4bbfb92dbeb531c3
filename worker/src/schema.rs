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
    #[error("cannot read the schema version: {0}")]
    Database(#[from] sqlx::Error),
}

pub async fn check(pool: &PgPool) -> Result<i32, SchemaError> {
    let expected = livesync_tools::migrate::binary_version();
    let installed: bool =
        sqlx::query_scalar("select to_regclass('livesync.refinery_schema_history') is not null")
            .fetch_one(pool)
            .await?;
    if !installed {
        return Err(SchemaError::NotInstalled);
    }
    let database: Option<i32> =
        sqlx::query_scalar("select max(version) from livesync.refinery_schema_history")
            .fetch_one(pool)
            .await?;
    match database {
        None => Err(SchemaError::NotInstalled),
        Some(v) if v < expected => Err(SchemaError::Older {
            database: v,
            expected,
        }),
        Some(v) if v > expected => Err(SchemaError::Newer {
            database: v,
            expected,
        }),
        Some(v) => Ok(v),
    }
}
