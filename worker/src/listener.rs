//! The listening connection: the triggers' wake-ups, and the worker's presence.
//!
//! One connection of its own (never shared with the pool, never reused once given up)
//! does two things for as long as it lives:
//! - it holds the session-level advisory lock (27764, key), the worker's *presence*: a
//!   lease recorded with that key ends when the lock is free (see `claim`). A new key is
//!   drawn from `livesync.worker_lock_key` for every connection, so leases taken before a
//!   reconnect are free for anyone, this worker included, once it has stopped their
//!   deliveries.
//! - it LISTENs on `livesync_wake`, where the triggers send a hint while every worker
//!   sleeps. Hints are never needed for correctness (the service loop looks at least every
//!   poll interval), but they let a sleeping worker answer within milliseconds.
//!
//! The connection is read all the time, so its loss is noticed the moment the server
//! closes it: the presence goes to `None` (the service loop stops every delivery), /healthz
//! says so, and a new connection is made with back-off and jitter. Whatever was sent in the
//! gap is lost, so every (re)connect wakes the loop for a full look.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Pool, Postgres};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

pub const CHANNEL: &str = "livesync_wake";

/// The first key of the presence lock; the second is the worker's `lock_key`.
pub const PRESENCE_CLASS: i32 = 27764;

/// Why the service loop should look for work now: a hint from the triggers (counted, so
/// the loop can tell a busy database from a quiet one), or any other reason (a reconnect,
/// a transaction it waited for ended).
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    hints: AtomicU64,
}

impl Wake {
    /// A NOTIFY from a trigger arrived.
    pub fn hint(&self) {
        self.hints.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Look for work (not a trigger's hint).
    pub fn poke(&self) {
        self.notify.notify_one();
    }

    /// How many hints arrived so far.
    pub fn hints(&self) -> u64 {
        self.hints.load(Ordering::Relaxed)
    }

    /// Resolves at the next hint or poke (at once if one came since the last wait).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// The worker's side of its presence: `Some(key)` while the lock is held.
pub type Presence = watch::Receiver<Option<i32>>;

/// Listen and hold the presence until `stop` turns true. `healthy` tells /healthz whether
/// LISTEN is in place.
pub async fn run(
    options: PgConnectOptions,
    worker_id: Uuid,
    wake: Arc<Wake>,
    presence: watch::Sender<Option<i32>>,
    healthy: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut lost = false; // a connection was lost: any later one is a reconnect
    loop {
        if *stop.borrow() {
            return;
        }
        match subscribe(&options, worker_id).await {
            Ok((mut listener, key)) => {
                if failures > 0 || lost {
                    tracing::info!(lock_key = key, "listener connected again");
                }
                failures = 0;
                healthy.store(true, Ordering::Relaxed);
                presence.send_replace(Some(key));
                wake.poke(); // catch up on whatever happened before
                let reason = loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        received = listener.try_recv() => match received {
                            Ok(Some(_)) => wake.hint(),
                            Ok(None) => break "listener connection lost".to_string(),
                            Err(e) => break format!("listener failed: {e}"),
                        }
                    }
                };
                // Not present from here on: the loop stops every delivery now.
                presence.send_replace(None);
                healthy.store(false, Ordering::Relaxed);
                lost = true;
                metrics::counter!("livesync_listener_reconnects_total").increment(1);
                tracing::warn!(reason, "reconnecting the listener");
            }
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error.message = %e, failures, "cannot LISTEN; retrying");
                }
            }
        }
        let pause = crate::backoff::reconnect(failures);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// A new connection: presence lock taken, key recorded in the worker's row, LISTEN.
async fn subscribe(
    options: &PgConnectOptions,
    worker_id: Uuid,
) -> Result<(PgListener, i32), sqlx::Error> {
    let mut listener = PgListener::connect_with(&private_pool(options)).await?;
    // A lost connection ends `try_recv` with `Ok(None)`; `run` connects anew.
    listener.eager_reconnect(false);
    let key: i32 = sqlx::query_scalar(
        "select k from (select nextval('livesync.worker_lock_key')::integer as k) s,
                lateral pg_catalog.pg_advisory_lock($1, s.k)",
    )
    .bind(PRESENCE_CLASS)
    .fetch_one(&mut listener)
    .await?;
    sqlx::query("update livesync.workers set lock_key = $2 where id = $1")
        .bind(worker_id)
        .bind(key)
        .execute(&mut listener)
        .await?;
    // LISTEN last: tests find the listener's backend by its last statement.
    listener.listen(CHANNEL).await?;
    Ok((listener, key))
}

/// A pool of one connection that is closed, never reused, when given back: the presence
/// lock must end with the listener (sqlx's `PgListener` gives its connection back when
/// dropped).
fn private_pool(options: &PgConnectOptions) -> Pool<Postgres> {
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .after_release(|_, _| Box::pin(async { Ok(false) }))
        .connect_lazy_with(options.clone())
}

/// The connect options of `pool`, for connections of their own.
pub fn options_of(pool: &PgPool) -> PgConnectOptions {
    pool.connect_options().as_ref().clone()
}
