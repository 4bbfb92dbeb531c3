//! Waiting for the transactions a worker going to sleep must not miss.
//!
//! A transaction's first change takes a number from `livesync.change_version` and holds the
//! advisory lock (`LOCK_CLASS`, number mod 2^31) until it ends (`livesync.note_change`); then
//! it reads whether a worker sleeps and, if so, sends a NOTIFY with its commit. One that read
//! "awake" just before the worker said it sleeps sends none. `livesync.worker_sleeps`
//! returns the keys of every open transaction holding such a lock; this task asks for each
//! in shared mode, over a connection of its own, is granted it when that transaction ends
//! (committed changes are visible by then), and wakes the loop each time.
//!
//! A transaction left open is waited for up to `wait_limit` (the poll interval), then left
//! to the loop's poll. Xpert's transactions never wait for this task: a shared request only
//! waits; it holds nothing anybody needs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};

use crate::listener::Wake;

/// The first key of the two-key advisory lock a transaction holds from its first change.
pub const LOCK_CLASS: i32 = 27763;

/// Wait for the transactions whose keys arrive on `keys`, waking the loop after each, until
/// `stop` turns true.
pub async fn run(
    options: PgConnectOptions,
    mut keys: mpsc::UnboundedReceiver<Vec<i32>>,
    wake: Arc<Wake>,
    wait_limit: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: VecDeque<i32> = VecDeque::new();
    let mut conn: Option<PgConnection> = None;
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = stop.changed() => return,
                received = keys.recv() => match received {
                    Some(list) => add(&mut pending, list),
                    None => return,
                },
            }
        }
        while let Ok(list) = keys.try_recv() {
            add(&mut pending, list);
        }
        let Some(key) = pending.pop_front() else {
            continue;
        };
        if conn.is_none() {
            match connect(&options, wait_limit).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    // The loop's poll covers it; try again with the next keys.
                    tracing::debug!(error.message = %e, "no connection to wait for commits");
                    pending.clear();
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let waited = tokio::select! {
            _ = stop.changed() => return,
            r = sqlx::query("select pg_catalog.pg_advisory_xact_lock_shared($1, $2)")
                .bind(LOCK_CLASS)
                .bind(key)
                .execute(&mut *c) => r,
        };
        match waited {
            Ok(_) => wake.poke(),
            // Still open after the wait limit: the poll will find its changes.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {}
            Err(e) => {
                tracing::debug!(error.message = %e, "waiting for a commit failed; reconnecting");
                conn = None;
                wake.poke();
            }
        }
    }
}

fn add(pending: &mut VecDeque<i32>, list: Vec<i32>) {
    for key in list {
        if !pending.contains(&key) {
            pending.push_back(key);
        }
    }
}

async fn connect(
    options: &PgConnectOptions,
    wait_limit: Duration,
) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "set lock_timeout = '{}ms'",
        wait_limit.as_millis().max(1)
    )))
    .execute(&mut conn)
    .await?;
    Ok(conn)
}

/// The second key for a change number.
pub fn lock_key(version: i64) -> i32 {
    (version.rem_euclid(1 << 31)) as i32
}

#[cfg(test)]
mod tests {
    use super::{add, lock_key};
    use std::collections::VecDeque;

    #[test]
    fn keys_wrap_into_the_positive_int4_range() {
        assert_eq!(lock_key(1), 1);
        assert_eq!(lock_key((1 << 31) - 1), i32::MAX);
        assert_eq!(lock_key(1 << 31), 0);
        assert_eq!(lock_key((1 << 31) + 5), 5);
    }

    #[test]
    fn a_key_waited_for_already_is_not_added_twice() {
        let mut pending = VecDeque::new();
        add(&mut pending, vec![3, 5]);
        add(&mut pending, vec![5, 7]);
        assert_eq!(pending, VecDeque::from(vec![3, 5, 7]));
    }
}
