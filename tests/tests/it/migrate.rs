//! `livesync-admin migrate`'s code path: idempotent, locked, refusing the wrong database,
//! all or nothing.
use livesync_core::migrate::{self, MigrateError};

use crate::helpers::TestDb;

async fn livesync_schema_exists(db: &TestDb) -> bool {
    db.scalar("select exists (select 1 from pg_namespace where nspname = 'livesync')")
        .await
}

/// Triggers livesync put on Xpert's tables (names start with "livesync").
async fn livesync_triggers_on_xpert(db: &TestDb) -> i64 {
    db.scalar(
        "select count(*) from pg_trigger t join pg_class c on c.oid = t.tgrelid \
         join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'xpert' and not t.tgisinternal",
    )
    .await
}

#[tokio::test]
async fn a_second_migration_run_is_a_no_op() {
    let db = TestDb::migrated().await;
    let again = migrate::run(&db.url, false).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, migrate::binary_version());
}

#[tokio::test]
async fn two_concurrent_runs_both_succeed_and_apply_once() {
    let db = TestDb::baseline().await;
    let (first, second) = tokio::join!(migrate::run(&db.url, false), migrate::run(&db.url, false));
    let (first, second) = (first.unwrap(), second.unwrap());
    let embedded = migrate::embedded_migrations().len();
    assert_eq!(first.applied.len() + second.applied.len(), embedded);
    assert!(first.applied.is_empty() || second.applied.is_empty());
    let history: i64 = db
        .scalar("select count(*) from livesync.refinery_schema_history")
        .await;
    assert_eq!(history as usize, embedded);
}

#[tokio::test]
async fn a_dry_run_lists_what_is_pending_and_changes_nothing() {
    let db = TestDb::baseline().await;
    let dry = migrate::run(&db.url, true).await.unwrap();
    assert!(dry.dry_run);
    let listed: Vec<i32> = dry.applied.iter().map(|m| m.version).collect();
    let embedded: Vec<i32> = migrate::embedded_migrations()
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(listed, embedded);
    assert_eq!(dry.version, 0);
    assert!(!livesync_schema_exists(&db).await);
    assert_eq!(livesync_triggers_on_xpert(&db).await, 0);
}

#[tokio::test]
async fn status_shows_applied_and_pending() {
    let db = TestDb::baseline().await;
    let before = migrate::status(&db.url).await.unwrap();
    assert_eq!(before.database_version, 0);
    assert_eq!(before.binary_version, migrate::binary_version());
    assert_eq!(before.pending().count(), before.migrations.len());
    assert!(!before.is_current());
    assert!(!livesync_schema_exists(&db).await, "status changes nothing");

    db.migrate().await;
    let after = migrate::status(&db.url).await.unwrap();
    assert!(after.is_current());
    assert_eq!(after.pending().count(), 0);
    assert!(after.migrations.iter().all(|m| m.applied));
}

#[tokio::test]
async fn a_database_without_xpert_tables_is_refused_and_left_alone() {
    let db = TestDb::empty().await;
    let err = migrate::run(&db.url, false).await.unwrap_err();
    match &err {
        MigrateError::NotXpert { missing } => assert_eq!(
            missing,
            &[
                "xpert.users",
                "xpert.appointments",
                "xpert.appointment_participants",
                "xpert.logins"
            ]
        ),
        other => panic!("expected NotXpert, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("xpert.appointment_participants"),
        "{message}"
    );
    assert!(!livesync_schema_exists(&db).await);
}

#[tokio::test]
async fn a_wrong_database_url_is_a_clear_connect_error() {
    let err = migrate::run("postgres://postgres@127.0.0.1:1/xpert", false)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1/xpert"), "{err}");
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let db = TestDb::migrated().await;
    let binary = migrate::binary_version();
    db.record_migration(binary + 1, "from_a_newer_release")
        .await;
    let err = migrate::run(&db.url, false).await.unwrap_err();
    match err {
        MigrateError::SchemaNewer {
            database,
            binary: b,
        } => {
            assert_eq!((database, b), (binary + 1, binary))
        }
        other => panic!("expected SchemaNewer, got {other:?}"),
    }
    let status = migrate::status(&db.url).await.unwrap();
    assert_eq!(status.database_version, binary + 1);
}

/// A realistic failure half-way: the DBA migrates with a role that may create schemas and
/// reference Xpert's tables but does not own them, so creating the triggers fails after
/// the first migrations of the run succeeded. Nothing of the run may stay behind.
#[tokio::test]
async fn a_failing_migration_leaves_nothing_behind() {
    let db = TestDb::baseline().await;
    let role = format!("livesync_nonowner_{}", uuid::Uuid::new_v4().simple());
    for sql in [
        format!("create role {role} login password 'nonowner'"),
        format!("grant create on database {} to {role}", db.name),
        format!("grant usage on schema xpert to {role}"),
        format!("grant select, references on all tables in schema xpert to {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let err = migrate::run(&db.url_as(&role, "nonowner"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Refinery(_)), "{err:?}");
    // It failed on the triggers on Xpert's tables (V3), after the tables and functions of
    // the run had been created.
    assert!(
        format!("{err:?}").contains("permission denied for table appointments"),
        "{err:?}"
    );
    assert!(!livesync_schema_exists(&db).await, "nothing half-applied");
    assert_eq!(livesync_triggers_on_xpert(&db).await, 0);

    // The owner can then migrate as usual.
    db.migrate().await;
    assert!(migrate::status(&db.url).await.unwrap().is_current());

    for sql in [format!("drop owned by {role}"), format!("drop role {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn users_existing_at_migration_time_get_a_first_login_row_and_later_ones_do_not() {
    let db = TestDb::baseline().await;
    let existing = db.user("mmuster").await;
    db.migrate().await;
    let later = db.user("neu").await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("select user_id, state from livesync.first_login order by user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(existing, "pending".to_string())]);
    assert_ne!(existing, later);
}
