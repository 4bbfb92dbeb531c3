//! The worker's row in `livesync.workers`: heartbeat, and whether it is awake. The
//! appointment triggers send a NOTIFY only while every live worker sleeps: every change to
//! this table recomputes `livesync.wake_until`, which they read (V14). So a worker marks
//! itself asleep just before it waits and awake as soon as it works.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub async fn register(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    // Forget workers that stopped heartbeating long ago (crashed without deregistering).
    sqlx::query("delete from livesync.workers where heartbeat_at < now() - interval '1 hour'")
        .execute(pool)
        .await?;
    set_awake(pool, id, true).await
}

/// Mark this worker awake or asleep (and alive). Re-creates its row should it be gone.
pub async fn set_awake(pool: &PgPool, id: Uuid, awake: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into livesync.workers (id, host, pid, awake) values ($1, $2, $3, $4)
         on conflict (id) do update set awake = excluded.awake, heartbeat_at = now()",
    )
    .bind(id)
    .bind(hostname())
    .bind(std::process::id() as i32)
    .bind(awake)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn heartbeat(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update livesync.workers set heartbeat_at = now() where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn deregister(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from livesync.workers where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// How often the heartbeat is written; a worker is taken as gone 30 s after its last one
/// (`livesync.wake_until`).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
