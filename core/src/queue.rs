//! The per-user queue (`livesync.queue`) as the admin tools see it.

use sqlx::PgPool;

/// Move Xpert's change log into the queue (what a running worker does within
/// milliseconds), so that what is shown includes changes no worker has seen yet.
pub async fn expand_pending(pool: &PgPool) -> Result<(), sqlx::Error> {
    const BATCH: i32 = 10_000;
    loop {
        let taken: i32 = sqlx::query_scalar("select taken from livesync.expand_changes($1)")
            .bind(BATCH)
            .fetch_one(pool)
            .await?;
        if taken < BATCH {
            return Ok(());
        }
    }
}
