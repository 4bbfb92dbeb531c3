//! A refinery driver over a sqlx connection, so that migrations use the same connection
//! code as everything else — including TLS (`sslmode=require`, `verify-full`,
//! `sslrootcert=…` in `DATABASE_URL`) — instead of a second PostgreSQL client.

use refinery::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A PostgreSQL connection refinery can migrate through.
pub struct SqlxMigrator<'c>(pub &'c mut PgConnection);

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("unreadable migration history row: {0}")]
    History(String),
}

impl AsyncTransaction for SqlxMigrator<'_> {
    type Error = DriverError;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut tx = self.0.begin().await?;
        let mut count = 0;
        for query in queries {
            sqlx::raw_sql(AssertSqlSafe(query.to_string()))
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for SqlxMigrator<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let rows = sqlx::query(AssertSqlSafe(query.to_string()))
            .fetch_all(&mut *self.0)
            .await?;
        rows.iter()
            .map(|row| {
                let version: i32 = row.try_get(0)?;
                let name: String = row.try_get(1)?;
                let applied_on: String = row.try_get(2)?;
                let checksum: String = row.try_get(3)?;
                let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
                    .map_err(|e| DriverError::History(format!("V{version}: applied_on: {e}")))?;
                let checksum = checksum
                    .parse::<u64>()
                    .map_err(|e| DriverError::History(format!("V{version}: checksum: {e}")))?;
                Ok(Migration::applied(version, name, applied_on, checksum))
            })
            .collect()
    }
}

impl AsyncMigrate for SqlxMigrator<'_> {}
