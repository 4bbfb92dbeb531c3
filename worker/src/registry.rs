//! The worker's row in `livesync.workers`: who runs, whether it sleeps, its heartbeat and
//! its presence key. The triggers send a NOTIFY only while every live worker sleeps: every
//! change to this table recomputes `livesync.wake_until`, which they read. A worker starts
//! awake, says it sleeps when a look found nothing (`sleep`), and says it is awake again
//! only when hints arrive faster than it works (see `service`). The heartbeat rides on the
//! looks for work (`claim::next_work`); a worker is taken as gone 30 s after its last one.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// How often a heartbeat goes with a look for work.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Add this worker's row (awake), and remove the rows of workers that are gone: their
/// presence lock is free, or they stopped heartbeating long ago. (The presence key is
/// recorded by the listener once it holds the lock.)
pub async fn register(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with gone as (
           delete from livesync.workers w
            where w.id <> $1
              and (w.heartbeat_at < now() - interval '1 hour'
                   or (w.lock_key is not null and livesync.presence_gone(w.lock_key)))
         )
         insert into livesync.workers (id, host, pid, awake) values ($1, $2, $3, true)
         on conflict (id) do update set awake = true, heartbeat_at = now()",
    )
    .bind(id)
    .bind(hostname())
    .bind(std::process::id() as i32)
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

/// What a worker going to sleep learnt (`livesync.worker_sleeps`).
#[derive(Debug, Clone, Default)]
pub struct Asleep {
    /// False when the worker's row is gone (it registers again).
    pub registered: bool,
    /// Keys of the open transactions with changes, to wait for (`commit_watch`).
    pub in_flight: Vec<i32>,
    /// Work is visible already: look again at once.
    pub more: bool,
}

/// Say this worker sleeps: from now on the triggers send a NOTIFY with each transaction
/// that changes something.
pub async fn sleep(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Asleep, sqlx::Error> {
    let (registered, in_flight, more): (bool, Vec<i32>, bool) =
        sqlx::query_as("select registered, in_flight, more from livesync.worker_sleeps($1)")
            .bind(id)
            .fetch_one(conn)
            .await?;
    Ok(Asleep {
        registered,
        in_flight,
        more,
    })
}
