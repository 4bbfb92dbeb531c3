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
    let notice = || {
        db.scalar_for::<Option<String>>(
            "select pending_notice from livesync.user_status where user_id = $1",
            lawyer,
        )
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
    db.exec_for(
        "insert into livesync.dead_letters
           (user_id, appointment_id, op, version, attempts, last_error, first_queued_at)
         values ($1, 1, 'upsert', 1, 3, 'x', now())",
        user,
    )
    .await;
    db.exec_for("delete from xpert.users where id = $1", user)
        .await;
    let left: i64 = db
        .scalar("select count(*) from livesync.dead_letters")
        .await;
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
    let queued = || {
        db.scalar_for::<i64>(
            "select queued from livesync.user_status where user_id = $1",
            lawyer,
        )
    };
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let gone = db.appointment("abgesagt", 48, &[lawyer]).await;
    assert_eq!(queued().await, 2, "two new appointments, not expanded yet");
    db.exec_for("delete from xpert.appointments where id = $1", gone)
        .await;
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

/// A change to an appointment is logged once for all its participants (no user in the log
/// row): before it is expanded, every participant's `queued` counts it, nobody else's.
#[tokio::test]
async fn a_change_logged_for_every_participant_counts_for_each_of_them() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    let partner = db.user("ppartner").await;
    let other = db.user("aandere").await;
    let off = db.user("ssekretaer").await;
    for user in [lawyer, partner, other] {
        db.enable_user(user, false).await;
    }
    let id = db
        .appointment("Tagsatzung", 24, &[lawyer, partner, off])
        .await;
    db.drain_queue().await;
    db.exec_for(
        "update xpert.appointments set subject = 'Tagsatzung (verlegt)' where id = $1",
        id,
    )
    .await;
    let logged_for_all: i64 = db
        .scalar("select count(*) from livesync.changes where user_id is null")
        .await;
    assert_eq!(logged_for_all, 1, "the update is logged once, for everyone");
    let queued: Vec<(i64, i64)> = sqlx::query_as(
        "select user_id, queued from livesync.user_status where user_id = any($1) order by user_id",
    )
    .bind([lawyer, partner, other, off])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        queued,
        vec![(lawyer, 1), (partner, 1), (other, 0), (off, 0)],
        "the participants with live sync count it; the other user and the one without do not"
    );
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
