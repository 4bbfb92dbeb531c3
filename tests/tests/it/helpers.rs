//! Fixtures shared by every integration test: a fresh database per test on a real
//! PostgreSQL, with the Xpert baseline loaded and livesync migrated through the same code
//! path as `livesync-admin migrate`, dropped again when the test ends.
//!
//! With `DATABASE_URL` set, test databases are created on that server (the URL must allow
//! `create database`). Otherwise one private server per test process is started from the
//! local PostgreSQL installation (see `livesync_core::embedded_pg`).

use std::sync::OnceLock;
use std::time::Duration;

use livesync_core::embedded_pg::{EmbeddedPg, Options};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

pub const BASELINE: &str = include_str!("../../../sql/xpert_baseline.sql");
pub const UNINSTALL: &str = include_str!("../../../sql/uninstall.sql");

enum Server {
    External(String),
    Embedded(EmbeddedPg),
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Server::External(url),
        _ => Server::Embedded(
            EmbeddedPg::start(Options { ephemeral: true })
                .expect("start a private PostgreSQL for the tests"),
        ),
    })
}

/// URL of database `name` on the test server.
fn url_for(name: &str) -> String {
    match server() {
        Server::Embedded(pg) => pg.url(name),
        // Rewritten as text: sqlx's own URL output adds options that tokio-postgres (the
        // migration runner) rejects.
        Server::External(url) => livesync_core::migrate::with_database(url, name),
    }
}

fn admin_url() -> String {
    match server() {
        Server::Embedded(pg) => pg.url("postgres"),
        Server::External(url) => url.clone(),
    }
}

/// One test's database. Dropped (with force) when this value goes out of scope.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// A new database with the Xpert baseline only (livesync not installed).
    pub async fn baseline() -> TestDb {
        let db = TestDb::empty().await;
        sqlx::raw_sql(BASELINE)
            .execute(&db.pool)
            .await
            .expect("load the Xpert baseline");
        db
    }

    /// A new, empty database: no Xpert tables, no livesync.
    pub async fn empty() -> TestDb {
        let name = format!("livesync_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let url = url_for(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .expect("connect to the test database");
        TestDb { name, url, pool }
    }

    /// A new database with the Xpert baseline and livesync migrated.
    pub async fn migrated() -> TestDb {
        let db = TestDb::baseline().await;
        db.migrate().await;
        db
    }

    pub async fn migrate(&self) {
        livesync_core::migrate::run(&self.url, false)
            .await
            .expect("migrate the test database");
    }

    /// Switch livesync on globally (licensed, switch on) in the given delivery mode.
    pub async fn enable_globally(&self, mode: &str) {
        sqlx::query(
            "update livesync.settings set live_sync_enabled = true, cti_sync_licensed = true, \
             delivery_mode = $1",
        )
        .bind(mode)
        .execute(&self.pool)
        .await
        .expect("switch livesync on");
    }

    /// Create an Xpert user; returns its id.
    pub async fn user(&self, username: &str) -> i64 {
        sqlx::query_scalar("insert into xpert.users (username) values ($1) returning id")
            .bind(username)
            .fetch_one(&self.pool)
            .await
            .expect("insert user")
    }

    /// Switch a user's live sync on (and optionally the log file).
    pub async fn enable_user(&self, user_id: i64, keep_logfile: bool) {
        sqlx::query(
            "insert into livesync.user_settings (user_id, live_sync_enabled, keep_logfile) \
             values ($1, true, $2) on conflict (user_id) do update \
             set live_sync_enabled = true, keep_logfile = excluded.keep_logfile",
        )
        .bind(user_id)
        .bind(keep_logfile)
        .execute(&self.pool)
        .await
        .expect("enable user");
    }

    /// Whether a user's live sync is on and their log file kept, as stored.
    pub async fn user_switches(&self, user_id: i64) -> (bool, bool) {
        sqlx::query_as(
            "select live_sync_enabled, keep_logfile from livesync.user_settings \
             where user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
        .expect("read user settings")
    }

    /// A dead letter of an upsert that failed 10 times; returns its id.
    pub async fn dead_letter(&self, user_id: i64, appointment_id: i64) -> i64 {
        sqlx::query_scalar(
            "insert into livesync.dead_letters \
               (user_id, appointment_id, op, version, attempts, last_error, first_queued_at) \
             values ($1, $2, 'upsert', 1, 10, 'HTTP 503 from the calendar server', now()) \
             returning id",
        )
        .bind(user_id)
        .bind(appointment_id)
        .fetch_one(&self.pool)
        .await
        .expect("insert dead letter")
    }

    /// Record `appointment_id` as delivered to `user_id`'s calendar (version 1, `sequence`).
    pub async fn delivered(&self, user_id: i64, appointment_id: i64, sequence: i32) {
        sqlx::query(
            "insert into livesync.delivered (user_id, appointment_id, uid, version, sequence) \
             values ($1, $2, 'xpert-termin-' || $2 || '@livesync', 1, $3)",
        )
        .bind(user_id)
        .bind(appointment_id)
        .bind(sequence)
        .execute(&self.pool)
        .await
        .expect("record a delivery");
    }

    /// A firm in push mode with these users, live sync switched on for each (with a log
    /// file when `keep_logfile`); their ids, in order.
    pub async fn firm_in_push_mode(&self, usernames: &[&str], keep_logfile: bool) -> Vec<i64> {
        self.enable_globally("push").await;
        let mut ids = Vec::new();
        for name in usernames {
            let id = self.user(name).await;
            self.enable_user(id, keep_logfile).await;
            ids.push(id);
        }
        ids
    }

    /// Insert an appointment starting `hours_from_now` hours from now, lasting one hour,
    /// with the given participants; returns its id.
    pub async fn appointment(
        &self,
        subject: &str,
        hours_from_now: i64,
        participants: &[i64],
    ) -> i64 {
        let mut tx = self.pool.begin().await.expect("begin");
        let id: i64 = sqlx::query_scalar(
            "insert into xpert.appointments (subject, starts_at, ends_at) \
             values ($1, now() + make_interval(hours => $2::int), \
                     now() + make_interval(hours => $2::int + 1)) returning id",
        )
        .bind(subject)
        .bind(hours_from_now as i32)
        .fetch_one(&mut *tx)
        .await
        .expect("insert appointment");
        for user_id in participants {
            sqlx::query(
                "insert into xpert.appointment_participants (appointment_id, user_id) values ($1, $2)",
            )
            .bind(id)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .expect("insert participant");
        }
        tx.commit().await.expect("commit");
        id
    }

    /// Record an Xpert program start for a user with the given Windows name.
    pub async fn login(&self, user_id: i64, windows_username: &str) -> i64 {
        sqlx::query_scalar(
            "insert into xpert.logins (user_id, windows_username, workstation) \
             values ($1, $2, 'PC-TEST') returning id",
        )
        .bind(user_id)
        .bind(windows_username)
        .fetch_one(&self.pool)
        .await
        .expect("insert login")
    }

    /// Move the change log into the queue, as a worker does before it claims.
    pub async fn expand_changes(&self) {
        sqlx::query("select * from livesync.expand_changes()")
            .execute(&self.pool)
            .await
            .expect("expand the change log");
    }

    /// The queue as (user_id, appointment_id, op), ordered, after the change log was
    /// expanded into it.
    pub async fn queue(&self) -> Vec<(i64, i64, String)> {
        self.expand_changes().await;
        sqlx::query_as(
            "select user_id, appointment_id, op from livesync.queue order by user_id, appointment_id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("read queue")
    }
}

impl TestDb {
    /// This database's URL, connecting as `role` with `password` instead.
    pub fn url_as(&self, role: &str, password: &str) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("URL has a scheme");
        let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{role}:{password}@{host_and_path}")
    }

    /// One value of a query (`select count(*) …` and the like).
    pub async fn scalar<T>(&self, sql: &'static str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Seconds from now until `livesync.wake_until` runs out: positive while the triggers
    /// would wake a sleeping worker, negative when there is nobody to wake.
    pub async fn wake_window(&self) -> f64 {
        self.scalar(
            "select coalesce(pg_sequence_last_value('livesync.wake_until'), 0) \
                    - extract(epoch from now())::float8",
        )
        .await
    }

    /// Run statements (no parameters).
    pub async fn exec(&self, sql: &'static str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Forget what is queued (as if a worker had delivered it).
    pub async fn drain_queue(&self) {
        self.exec("delete from livesync.changes; delete from livesync.queue")
            .await;
    }

    /// The queue in full: (user_id, appointment_id, op, version, queued_at), ordered,
    /// after the change log was expanded into it.
    pub async fn queue_entries(&self) -> Vec<QueueEntry> {
        self.expand_changes().await;
        sqlx::query_as(
            "select user_id, appointment_id, op, version, queued_at from livesync.queue \
             order by user_id, appointment_id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("read queue")
    }
}

/// One row of `livesync.queue`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueEntry {
    pub user_id: i64,
    pub appointment_id: i64,
    pub op: String,
    pub version: i64,
    pub queued_at: chrono::DateTime<chrono::Utc>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_url();
        // The test's runtime may be a current-thread one that this thread blocks, so the
        // pool is not closed here: `drop database … with (force)` ends its connections.
        // The cleanup runs on a thread of its own with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for cleanup");
            rt.block_on(async move {
                if let Ok(mut conn) = admin.parse::<PgConnectOptions>().unwrap().connect().await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Poll `check` until it returns `Some`, or panic after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every result is a deferral carrying the server's pause of `seconds` (minus what passed).
pub fn assert_all_deferred_with_pause(
    results: &[Result<livesync_worker::sink::Applied, livesync_worker::sink::SinkError>],
    seconds: u64,
) {
    use livesync_worker::sink::SinkError;
    for result in results {
        match result {
            Err(SinkError::Deferred {
                retry_after: Some(pause),
                ..
            }) => assert!(
                *pause > Duration::from_secs(seconds.saturating_sub(5))
                    && *pause <= Duration::from_secs(seconds),
                "{pause:?}"
            ),
            other => panic!("expected a deferral with the pause, got {other:?}"),
        }
    }
}

/// Of a batch's results, exactly those at the indexes `failed` are (retryable) failures:
/// no change is charged for another's request.
pub fn assert_only_these_failed(
    results: &[Result<livesync_worker::sink::Applied, livesync_worker::sink::SinkError>],
    failed: &[usize],
) {
    use livesync_worker::sink::SinkError;
    for (i, result) in results.iter().enumerate() {
        if failed.contains(&i) {
            assert!(
                matches!(result, Err(SinkError::Retryable { .. })),
                "change {i}: {result:?}"
            );
        } else {
            assert!(
                result.is_ok(),
                "change {i} is charged for another's request: {result:?}"
            );
        }
    }
}

/// Statements and reads with one parameter, and the set-ups several areas share.
impl TestDb {
    /// Run one statement with `id` as `$1`.
    pub async fn exec_for(&self, sql: &'static str, id: i64) {
        sqlx::query(sql)
            .bind(id)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// One value of a query with `id` as `$1`.
    pub async fn scalar_for<T>(&self, sql: &'static str, id: i64) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A migrated database, livesync switched on in live mode, with a lawyer (`mmuster`)
    /// and a partner (`hhuber`) whose live sync is on; their ids.
    pub async fn lawyer_and_partner() -> (TestDb, i64, i64) {
        let db = TestDb::migrated().await;
        db.enable_globally("live").await;
        let lawyer = db.user("mmuster").await;
        let partner = db.user("hhuber").await;
        db.enable_user(lawyer, false).await;
        db.enable_user(partner, false).await;
        (db, lawyer, partner)
    }

    /// Record migration `version` as applied under `name`, as a release that has it would
    /// (ahead of this binary's: the schema of a newer release).
    pub async fn record_migration(&self, version: i32, name: &str) {
        sqlx::query(
            "insert into livesync.refinery_schema_history (version, name, applied_on, checksum) \
             values ($1, $2, now()::text, '0')",
        )
        .bind(version)
        .bind(name)
        .execute(&self.pool)
        .await
        .expect("record a migration");
    }
}
