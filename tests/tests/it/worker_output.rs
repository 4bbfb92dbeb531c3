//! What the worker writes and shows: repaired bad rows in a real `.ics` file, and the
//! `/healthz` and `/metrics` endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use livesync_worker::service::Worker;
use livesync_worker::sink::CalendarSink;
use livesync_worker::sink::ics::IcsSink;
use tower::ServiceExt;

use crate::helpers::{TestDb, eventually};
use crate::worker_support::{RecordingSink, RunningWorker, test_settings};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn bad_rows_are_delivered_repaired_and_never_block_the_rest() {
    let db = TestDb::migrated().await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&db, dir.path());
    let ics_dir = settings.ics_dir.clone();
    let sink: Arc<dyn CalendarSink> = Arc::new(IcsSink::new(ics_dir.clone()));
    let worker = RunningWorker::start(&db, settings, sink);

    let huge = "Ä".repeat(600_000); // 1.2 MB of notes
    sqlx::query(
        "with a as (
           insert into xpert.appointments (subject, notes, starts_at, ends_at, all_day) values
             (null, null, now() + interval '1 day', now() + interval '1 day 1 hour', false),
             ('Ende vor Beginn', null, now() + interval '2 days', now() + interval '1 day', false),
             ('Riesige Notizen', $2, now() + interval '3 days', now() + interval '3 days 1 hour', false),
             (E'Steuer\\x01zeichen\\x07 und\\r\\nZeilen', E'a\\x1bb', now() + interval '4 days', now() + interval '4 days 1 hour', false),
             ('Ganztägig, rückwärts', null, now() + interval '5 days', now() + interval '4 days', true),
             ('normal', 'Notiz', now() + interval '6 days', now() + interval '6 days 1 hour', false)
           returning id)
         insert into xpert.appointment_participants (appointment_id, user_id) select id, $1 from a",
    )
    .bind(lawyer)
    .bind(&huge)
    .execute(&db.pool)
    .await
    .expect("Xpert accepts such rows");

    let path = livesync_worker::file_name::safe_path(&ics_dir, "mmuster", "ics");
    let text = eventually(WAIT, "all six in the calendar", || async {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|s| s.matches("BEGIN:VEVENT").count() == 6)
    })
    .await;

    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(line.len() <= 75, "line longer than 75 octets: {line:?}");
        assert!(!line.contains('\r') && !line.contains('\n'));
    }
    assert!(text.contains("SUMMARY:(ohne Betreff)"));
    assert!(text.contains("(gekürzt)"));
    assert!(
        text.len() < 200_000,
        "huge notes are cut: {} bytes",
        text.len()
    );

    // An independent parser reads it back.
    let events = livesync_testkit::ics::events(&text).expect("it parses");
    assert_eq!(events.len(), 6);
    for event in &events {
        // As written: a line break is escaped, no control character is left.
        let summary = event.raw("SUMMARY").expect("every event has a SUMMARY");
        assert!(
            !summary.chars().any(|c| c.is_control() && c != '\t'),
            "{summary:?}"
        );
    }
    // The queue empties once the delivery is recorded, a moment after the file is written.
    eventually(WAIT, "queue empty, nothing dead-lettered", || async {
        let (queued, dead): (i64, i64) = sqlx::query_as(
            "select (select count(*) from livesync.queue) + (select count(*) from livesync.changes), \
             (select count(*) from livesync.dead_letters)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(dead, 0, "a repaired row is delivered, not dead-lettered");
        (queued == 0).then_some(())
    })
    .await;
    worker.stop().await;
}

#[tokio::test]
async fn healthz_reports_the_database_and_metrics_count_deliveries() {
    let db = TestDb::migrated().await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let dir = tempfile::tempdir().unwrap();
    let handle = livesync_worker::telemetry::init_metrics();
    let sink = RecordingSink::new();
    let worker = Worker::build(
        test_settings(&db, dir.path()),
        db.pool.clone(),
        sink.clone(),
    );
    let router = livesync_worker::http::router(db.pool.clone(), worker.health.clone(), handle);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run_until_stopped(rx));

    db.appointment("Termin", 24, &[lawyer]).await;
    eventually(WAIT, "delivered", || async {
        (sink.seen().len() == 1).then_some(())
    })
    .await;

    let healthy = eventually(WAIT, "healthy once the listener is up", || async {
        let r = router
            .clone()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await;
    let body = axum::body::to_bytes(healthy.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["database"], "ok");
    assert_eq!(json["listener"], "ok");

    // The counter moves after the delivery is recorded, a moment after the sink saw it.
    let text = eventually(WAIT, "the delivery counted in /metrics", || async {
        let r = router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            // Another test of this process installed the global recorder first.
            return Some(String::new());
        }
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        text.contains("livesync_delivered_total").then_some(text)
    })
    .await;
    if !text.is_empty() {
        assert!(text.contains("livesync_queue_depth") || text.contains("livesync_flush_seconds"));
    }

    // The database goes away: unhealthy.
    db.pool.close().await;
    let r = router
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), running).await;
}
