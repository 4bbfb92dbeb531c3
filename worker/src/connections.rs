//! How the worker holds its database connections.
//!
//! A statement through sqlx's pool costs up to three round trips by default: a ping when a
//! connection is handed out, the statement, and a ping when it is given back. The worker
//! cuts that down in two ways:
//! - [`pool_options`]: a connection in steady use is handed out without a ping (one idle
//!   for a while still gets one). If the server cut it meanwhile (a restart,
//!   `pg_terminate_backend`), the statement fails; [`retry_if_cut`] then drops the pool's
//!   dead connections and runs it once more.
//! - [`OwnConnection`]: the service loop, which reads the change counter every
//!   millisecond while awake, and the commit watch each hold a connection outside the
//!   pool: no pings at all, and their prepared statements stay cached. Any error drops
//!   it; the next use connects anew.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// How the worker's pools hand out connections: without a ping, unless the connection
/// has been idle for [`PING_WHEN_IDLE_FOR`].
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    pool_options_pinging_after(max_connections, PING_WHEN_IDLE_FOR)
}

/// [`pool_options`] with another idle time before a ping (for tests).
pub fn pool_options_pinging_after(max_connections: u32, idle: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= idle {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// An idle connection older than this is pinged before use.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Whether an error means the connection is gone (rather than the statement failing).
pub fn is_cut(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // 57P01–57P03: terminated, server shut down, cannot connect now; 08: connection.
            code.starts_with("57P") || code.starts_with("08")
        }),
        _ => false,
    }
}

/// Run a pooled statement; if its connection turns out to be cut, drop the pool's dead
/// connections and run it once more. Only for statements whose effect may happen twice
/// (a cut during the commit leaves its outcome unknown).
pub async fn retry_if_cut<T, F, Fut>(pool: &PgPool, mut statement: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    match statement().await {
        Err(e) if is_cut(&e) => {
            tracing::debug!(error.message = %e, "connection cut; running the statement again");
            drop_dead_connections(pool).await;
            statement().await
        }
        outcome => outcome,
    }
}

/// Ping every idle connection of the pool; those that fail are closed when given back.
async fn drop_dead_connections(pool: &PgPool) {
    let mut idle = Vec::new();
    while let Some(conn) = pool.try_acquire() {
        idle.push(conn);
    }
    for conn in &mut idle {
        let _ = conn.ping().await;
    }
}

/// A connection outside the pool, for one task.
pub struct OwnConnection {
    pool: PgPool,
    /// Run once on every new connection, e.g. a session setting.
    setup: Option<&'static str>,
    conn: Option<PgConnection>,
}

impl OwnConnection {
    /// Nothing is connected until the first [`get`](Self::get).
    pub fn new(pool: &PgPool, setup: Option<&'static str>) -> OwnConnection {
        OwnConnection {
            pool: pool.clone(),
            setup,
            conn: None,
        }
    }

    /// The connection, connecting (with the pool's options) when there is none.
    pub async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            let options = self.pool.connect_options().as_ref().clone();
            let mut conn = PgConnection::connect_with(&options).await?;
            if let Some(setup) = self.setup {
                sqlx::raw_sql(setup).execute(&mut conn).await?;
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Pass a statement's outcome through; on an error, drop the connection (its state is
    /// unknown: the server may be gone, or a statement half-read).
    pub fn check<T>(&mut self, outcome: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if outcome.is_err() {
            self.reset();
        }
        outcome
    }

    /// Drop the connection; the next [`get`](Self::get) connects anew.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}
