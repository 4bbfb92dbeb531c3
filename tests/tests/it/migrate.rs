//! `livesync-admin migrate`'s code path: idempotent, locked, refusing the wrong database.
use crate::helpers::TestDb;

#[tokio::test]
async fn a_second_migration_run_is_a_no_op() {
    let db = TestDb::migrated().await;
    let again = livesync_tools::migrate::run(&db.url, false).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, livesync_tools::migrate::binary_version());
}
