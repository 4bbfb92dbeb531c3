//! Corrections to what Xpert's UI reads and to the clean-up of deleted users.

use crate::helpers::TestDb;

#[tokio::test]
async fn the_one_time_notice_waits_until_live_sync_is_switched_on() {
    let db = TestDb::baseline().await;
    let lawyer = db.user("mmuster").await; // exists before the update
    db.migrate().await;
    let login = db.login(lawyer, "KANZLEI\\mmuster").await;
    livesync_tools::first_login::apply_for_login(&db.pool, login)
        .await
        .unwrap();
    let notice = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "select pending_notice from livesync.user_status where user_id = $1",
        )
        .bind(lawyer)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert_eq!(notice().await, None, "switched off: no message yet");
    db.enable_globally("live").await;
    assert_eq!(
        notice().await.as_deref(),
        Some(livesync_tools::first_login::NOTICE_TEXT)
    );
}

#[tokio::test]
async fn deleting_an_xpert_user_removes_their_dead_letters() {
    let db = TestDb::migrated().await;
    let user = db.user("weg").await;
    sqlx::query(
        "insert into livesync.dead_letters
           (user_id, appointment_id, op, version, attempts, last_error, first_queued_at)
         values ($1, 1, 'upsert', 1, 3, 'x', now())",
    )
    .bind(user)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("delete from xpert.users where id = $1")
        .bind(user)
        .execute(&db.pool)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("select count(*) from livesync.dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
