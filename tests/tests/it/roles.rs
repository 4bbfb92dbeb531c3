//! `sql/roles.sql`: the worker runs with least privilege, and Xpert needs no rights on
//! livesync's tables because the triggers run with their owner's rights.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::helpers::{TestDb, eventually};
use crate::worker_support::{RecordingSink, RunningWorker, test_settings};

pub(crate) const ROLES: &str = include_str!("../../../sql/roles.sql");

/// Roles are global to the server: tests that create them take turns.
pub(crate) static ROLE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) async fn login_role(db: &TestDb, prefix: &str, member_of: &str) -> (String, PgPool) {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    db.pool
        .execute(sqlx::AssertSqlSafe(format!(
            "create role {name} login in role {member_of}"
        )))
        .await
        .unwrap();
    let options: PgConnectOptions = db.url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.username(&name))
        .await
        .unwrap();
    (name, pool)
}

pub(crate) async fn drop_role(db: &TestDb, name: &str) {
    db.pool
        .execute(sqlx::AssertSqlSafe(format!(
            "drop owned by {name}; drop role {name}"
        )))
        .await
        .unwrap();
}

fn permission_denied(r: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> bool {
    matches!(r, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501"))
}

#[tokio::test]
async fn the_worker_role_delivers_but_cannot_modify_xpert_tables() {
    let _turn = ROLE_LOCK.lock().await;
    let db = TestDb::migrated().await;
    sqlx::raw_sql(ROLES).execute(&db.pool).await.unwrap();
    sqlx::raw_sql(ROLES)
        .execute(&db.pool)
        .await
        .expect("re-running roles.sql is safe");
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];

    let (name, worker_pool) = login_role(&db, "lsworker", "livesync_worker").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start_with_pool(
        worker_pool.clone(),
        test_settings(&db, dir.path()),
        sink.clone(),
    );
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    db.login(lawyer, "mmuster").await;
    eventually(
        Duration::from_secs(10),
        "delivered under the worker role",
        || async { (sink.seen().len() == 1).then_some(()) },
    )
    .await;
    worker.stop().await;

    for statement in [
        "insert into xpert.users (username) values ('eindringling')",
        "update xpert.appointments set subject = 'geändert'",
        "delete from xpert.logins",
        "delete from xpert.appointment_participants",
        "update livesync.settings set live_sync_enabled = false",
    ] {
        let r = sqlx::query(statement).execute(&worker_pool).await;
        assert!(
            permission_denied(r),
            "the worker role may not run: {statement}"
        );
    }
    worker_pool.close().await;
    drop_role(&db, &name).await;
}

#[tokio::test]
async fn xpert_needs_no_rights_on_livesync_tables() {
    let _turn = ROLE_LOCK.lock().await;
    let db = TestDb::migrated().await;
    sqlx::raw_sql(ROLES).execute(&db.pool).await.unwrap();
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;

    let (name, xpert) = login_role(&db, "xpertapp", "livesync_xpert_app").await;
    db.pool
        .execute(sqlx::AssertSqlSafe(format!(
            "grant usage on schema xpert to {name};
             grant select, insert, update, delete on all tables in schema xpert to {name};
             grant usage on all sequences in schema xpert to {name};"
        )))
        .await
        .unwrap();

    // Xpert writes as it always did; the triggers fill the queue with their owner's rights.
    let id: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, starts_at, ends_at)
         values ('Tagsatzung', now() + interval '1 day', now() + interval '1 day 1 hour') returning id",
    )
    .fetch_one(&xpert)
    .await
    .unwrap();
    sqlx::query("insert into xpert.appointment_participants values ($1, $2)")
        .bind(id)
        .bind(lawyer)
        .execute(&xpert)
        .await
        .expect("Xpert's insert is not refused by livesync's trigger");
    sqlx::query("insert into xpert.logins (user_id, windows_username) values ($1, 'mmuster')")
        .bind(lawyer)
        .execute(&xpert)
        .await
        .expect("Xpert's login insert works");
    assert_eq!(db.queue().await, vec![(lawyer, id, "upsert".to_string())]);

    let queued: i64 =
        sqlx::query_scalar("select queued from livesync.user_status where user_id = $1")
            .bind(lawyer)
            .fetch_one(&xpert)
            .await
            .expect("Xpert reads user_status");
    assert_eq!(queued, 1);
    let r = sqlx::query("delete from livesync.queue")
        .execute(&xpert)
        .await;
    assert!(
        permission_denied(r),
        "Xpert cannot write livesync's tables directly"
    );
    xpert.close().await;
    drop_role(&db, &name).await;
}
