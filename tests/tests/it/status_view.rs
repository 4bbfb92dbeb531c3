//! Corrections to what Xpert's UI reads and to the clean-up of deleted users.

use crate::helpers::TestDb;

#[tokio::test]
async fn the_one_time_notice_waits_until_live_sync_is_switched_on() {
    let db = TestDb::baseline().await;
    let lawyer = db.user("mmuster").await; // exists before the update
    db.migrate().await;
    let login = db.login(lawyer, "KANZLEI\\mmuster").await;
    livesync_core::first_login::apply_for_login(&db.pool, login)
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
        Some(livesync_core::first_login::NOTICE_TEXT)
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

/// `queued` counts what will change in the person's calendar: an appointment created and
/// deleted before they logged in was never delivered, so its deletion changes nothing.
/// Before and after the change log is expanded into the queue.
#[tokio::test]
async fn queued_counts_only_what_will_change_in_the_calendar() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    let queued = || async {
        sqlx::query_scalar::<_, i64>("select queued from livesync.user_status where user_id = $1")
            .bind(lawyer)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let gone = db.appointment("abgesagt", 48, &[lawyer]).await;
    assert_eq!(queued().await, 2, "two new appointments, not expanded yet");
    sqlx::query("delete from xpert.appointments where id = $1")
        .bind(gone)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        queued().await,
        1,
        "in the log: only the one that will arrive"
    );
    db.expand_changes().await;
    let entries: i64 = db.scalar("select count(*) from livesync.queue").await;
    assert_eq!(entries, 2, "both are queued (the deletion as an intent)");
    assert_eq!(
        queued().await,
        1,
        "in the queue: only the one that will arrive"
    );

    // Once the calendar holds an appointment, its deletion is a change again.
    db.delivered(lawyer, gone, 0).await;
    assert_eq!(queued().await, 2);
}

/// Xpert reads its user's row at every program start; on a stock server (JIT on) with
/// never-analysed livesync tables the estimates stay small enough that PostgreSQL neither
/// JIT-compiles the one-user read nor the all-users read.
#[tokio::test]
async fn the_status_view_is_planned_cheaply_for_one_user_and_for_all() {
    let db = TestDb::migrated().await;
    for n in 0..50 {
        db.user(&format!("user{n}")).await;
    }
    for (sql, limit) in [
        (
            "explain (format json) select * from livesync.user_status where user_id = 5",
            1_000.0,
        ),
        (
            "explain (format json) select sum(queued) from livesync.user_status",
            50_000.0,
        ),
    ] {
        let plan: serde_json::Value = db.scalar(sql).await;
        let cost = plan[0]["Plan"]["Total Cost"].as_f64().unwrap();
        assert!(
            cost < limit,
            "{sql}: estimated cost {cost}, JIT starts at 100000"
        );
    }
}
