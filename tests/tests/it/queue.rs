//! The queue semantics of the foundation, against a real PostgreSQL.
use crate::helpers::TestDb;

#[tokio::test]
async fn inserting_an_appointment_queues_an_upsert_for_each_active_participant() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    let partner = db.user("hhuber").await;
    let secretary = db.user("ssekretaer").await;
    db.enable_user(lawyer, false).await;
    db.enable_user(partner, false).await;

    let appt = db
        .appointment("Verhandlung", 48, &[lawyer, partner, secretary])
        .await;

    assert_eq!(
        db.queue().await,
        vec![
            (lawyer, appt, "upsert".to_string()),
            (partner, appt, "upsert".to_string())
        ]
    );
}

#[tokio::test]
async fn nothing_is_queued_while_the_switch_is_off_or_unlicensed() {
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    db.appointment("switch off", 1, &[lawyer]).await;
    sqlx::query("update livesync.settings set live_sync_enabled = true")
        .execute(&db.pool)
        .await
        .unwrap();
    db.appointment("not licensed", 1, &[lawyer]).await;
    assert!(db.queue().await.is_empty());
}
