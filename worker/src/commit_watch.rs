//! Learning of a commit the moment it happens, without a NOTIFY.
//!
//! The change counter moves at a transaction's first change, before it commits, and that
//! transaction holds the advisory lock (`LOCK_CLASS`, its number mod 2^31) until it ends
//! (`livesync.note_change`, V13). When the service loop sees a new number it hands it
//! here; this task asks for the same lock in shared mode, over its own connection, and is
//! granted it when the transaction commits (or at once, if it has ended already). Then it
//! wakes the loop, which scans right away instead of on its next tick.
//!
//! Only ever a hint: if the wait fails, the loop's own rescans and polls find the change as
//! before. A transaction left open is waited for in short steps, until a newer number
//! comes (which is then waited for instead). Xpert's transactions never wait for this task:
//! each holds its own key, and a shared request only waits, it holds nothing anybody needs.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use crate::connections::OwnConnection;

/// The first key of the two-key advisory lock a transaction holds from its first change.
pub const LOCK_CLASS: i32 = 27763;

/// How long one wait for a transaction lasts before looking for a newer number.
const SET_WAIT_LIMIT: &str = "set lock_timeout = '50ms'";

/// The second key for a change number.
pub fn lock_key(version: i64) -> i32 {
    (version.rem_euclid(1 << 31)) as i32
}

/// Wait for the transactions behind the numbers sent on `versions` (only the newest counts)
/// and wake the loop after each; until `stop` turns true.
pub async fn watch_commits(
    pool: PgPool,
    mut versions: watch::Receiver<i64>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut db = OwnConnection::new(&pool, Some(SET_WAIT_LIMIT));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = versions.changed() => if changed.is_err() { return },
        }
        let mut version = *versions.borrow_and_update();
        let c = match db.get().await {
            Ok(c) => c,
            Err(e) => {
                // No connection now: the rescans cover it; try again next time.
                tracing::debug!(error.message = %e, "no connection to wait for commits");
                continue;
            }
        };
        // Short waits, so that a newer number (a transaction that may end sooner) takes
        // over from one left open.
        loop {
            let waited = tokio::select! {
                _ = stop.changed() => return,
                r = sqlx::query("select pg_catalog.pg_advisory_xact_lock_shared($1, $2)")
                    .bind(LOCK_CLASS)
                    .bind(lock_key(version))
                    .execute(&mut *c) => r,
            };
            match waited {
                Ok(_) => {
                    wake.notify_one();
                    break;
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                    if versions.has_changed().unwrap_or(false) {
                        version = *versions.borrow_and_update();
                    }
                }
                Err(e) => {
                    tracing::debug!(error.message = %e, "waiting for a commit failed; reconnecting");
                    db.reset();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn keys_wrap_into_the_positive_int4_range() {
        assert_eq!(lock_key(1), 1);
        assert_eq!(lock_key((1 << 31) - 1), i32::MAX);
        assert_eq!(lock_key(1 << 31), 0);
        assert_eq!(lock_key((1 << 31) + 5), 5);
    }
}
