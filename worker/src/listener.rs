//! Wake-ups: hints that there may be work. Never needed for correctness — the service loop
//! also watches `livesync.change_version` while awake and polls as a safety net — but they
//! let a sleeping worker answer within milliseconds without polling.
//!
//! The listener LISTENs on `livesync_wake` over its own connection and turns every
//! notification into a [`Notify`] permit. When the connection is lost (a server restart,
//! `pg_terminate_backend`), /healthz says so until a new connection LISTENs again;
//! whatever was sent in the gap is lost, so every (re)connect also wakes the loop for a
//! full catch-up scan. Failures to connect back off with jitter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, watch};

pub const CHANNEL: &str = "livesync_wake";

/// The last number handed out for a queued change (or a login), 0 before the first. It
/// moves as soon as a change is queued — before that transaction commits — which is what
/// lets an awake worker see new work coming without any notification. (A fresh sequence
/// shows its start value as `last_value` before and after the first `nextval`; only
/// `is_called` tells them apart.)
pub async fn change_version(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select case when is_called then last_value else last_value - 1 end
           from livesync.change_version",
    )
    .fetch_one(conn)
    .await
}

/// Listen until `stop` turns true. `healthy` tells /healthz whether LISTEN is in place.
pub async fn listen(
    pool: PgPool,
    wake: Arc<Notify>,
    healthy: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut lost = false; // a connection was lost: any later one is a reconnect
    loop {
        if *stop.borrow() {
            return;
        }
        match subscribe(&pool).await {
            Ok(mut listener) => {
                if failures > 0 || lost {
                    tracing::info!("listener connected again");
                }
                failures = 0;
                healthy.store(true, Ordering::Relaxed);
                wake.notify_one(); // catch up on whatever happened before
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        received = listener.try_recv() => match received {
                            Ok(Some(_)) => wake.notify_one(),
                            Ok(None) => {
                                // The connection was lost. Not LISTENing until a new one
                                // is subscribed (sqlx would reconnect inside `try_recv`,
                                // unseen by /healthz); the new one's start catches up.
                                healthy.store(false, Ordering::Relaxed);
                                lost = true;
                                metrics::counter!("livesync_listener_reconnects_total").increment(1);
                                tracing::warn!("listener connection lost; reconnecting");
                                break;
                            }
                            Err(e) => {
                                healthy.store(false, Ordering::Relaxed);
                                lost = true;
                                metrics::counter!("livesync_listener_reconnects_total").increment(1);
                                tracing::warn!(error.message = %e, "listener failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error.message = %e, failures, "cannot LISTEN; retrying");
                }
            }
        }
        let pause = reconnect_delay(failures);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends `try_recv` with `Ok(None)`; `listen` subscribes anew.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// 100 ms doubling to 5 s, with jitter, so a flapping server is not flooded.
pub fn reconnect_delay(failures: u32) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(5));
    let jitter = rand::rng().random_range(0..=base.as_millis() as u64 / 2);
    base / 2 + Duration::from_millis(jitter)
}
