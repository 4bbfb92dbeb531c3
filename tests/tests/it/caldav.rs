//! The CalDAV sink against real servers (Radicale with per-person passwords, Xandikos),
//! driven by the real worker on a real database, read back with an independent client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use livesync_worker::config::{CalDavSettings, Secret};
use livesync_worker::flush::uid_for;
use livesync_worker::sink::caldav::CalDavSink;
use livesync_worker::sink::{
    Applied, CalendarOwner, CalendarSink, Change, RemoteRef, RenderContext, SinkError,
};

use crate::helpers::{TestDb, eventually};
use crate::worker_support::{RunningWorker, test_settings};
use livesync_testkit::caldav_server::{CalDavServer, Kind, RemoteCalendar};
use livesync_testkit::ics;

const WAIT: Duration = Duration::from_secs(30);

/// A firm in push mode with these users switched on; returns their ids in order.
async fn firm(usernames: &[&str]) -> (TestDb, Vec<i64>) {
    let db = TestDb::migrated().await;
    let ids = db.firm_in_push_mode(usernames, false).await;
    (db, ids)
}

/// Wall-clock time in Vienna (the earlier one when the hour exists twice).
fn vienna(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Vienna
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .earliest()
        .expect("a time that exists in Vienna")
        .with_timezone(&Utc)
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 time")
}

struct Appt<'a> {
    subject: &'a str,
    location: Option<&'a str>,
    notes: Option<&'a str>,
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
    all_day: bool,
}

impl<'a> Appt<'a> {
    fn timed(subject: &'a str, starts: DateTime<Utc>, ends: DateTime<Utc>) -> Appt<'a> {
        Appt {
            subject,
            location: None,
            notes: None,
            starts,
            ends,
            all_day: false,
        }
    }
    fn all_day(subject: &'a str, starts: DateTime<Utc>, ends: DateTime<Utc>) -> Appt<'a> {
        Appt {
            all_day: true,
            ..Appt::timed(subject, starts, ends)
        }
    }
}

async fn insert(db: &TestDb, a: &Appt<'_>, participants: &[i64]) -> i64 {
    let mut tx = db.pool.begin().await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, location, notes, starts_at, ends_at, all_day)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(a.subject)
    .bind(a.location)
    .bind(a.notes)
    .bind(a.starts)
    .bind(a.ends)
    .bind(a.all_day)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    for user in participants {
        sqlx::query(
            "insert into xpert.appointment_participants (appointment_id, user_id) values ($1, $2)",
        )
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    id
}

async fn set_subject(db: &TestDb, id: i64, subject: &str) {
    sqlx::query("update xpert.appointments set subject = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(subject)
        .execute(&db.pool)
        .await
        .unwrap();
}

/// What `livesync.delivered` records for one appointment in one calendar.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Delivered {
    sequence: i32,
    remote_id: Option<String>,
    etag: Option<String>,
}

/// What livesync recorded as delivered (a "maybe delivered" marker, written when a write's
/// outcome is in doubt, is not a record of a delivery).
async fn delivered(db: &TestDb, user: i64, appointment: i64) -> Option<Delivered> {
    sqlx::query_as(
        "select sequence, remote_id, etag from livesync.delivered
          where user_id = $1 and appointment_id = $2 and sequence >= 0",
    )
    .bind(user)
    .bind(appointment)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

async fn queued(db: &TestDb) -> i64 {
    db.scalar(
        "select (select count(*) from livesync.queue) + (select count(*) from livesync.changes)",
    )
    .await
}

async fn dead_letters(db: &TestDb) -> i64 {
    db.scalar("select count(*) from livesync.dead_letters")
        .await
}

/// Wait until the appointment is recorded as delivered with `sequence` and nothing is queued.
async fn wait_delivered(db: &TestDb, user: i64, appointment: i64, sequence: i32) -> Delivered {
    eventually(
        WAIT,
        &format!("appointment {appointment} delivered with SEQUENCE {sequence}"),
        || async {
            let d = delivered(db, user, appointment).await?;
            (d.sequence == sequence && queued(db).await == 0).then_some(d)
        },
    )
    .await
}

async fn wait_drained(db: &TestDb) {
    eventually(WAIT, "the queue drained", || async {
        (queued(db).await == 0).then_some(())
    })
    .await;
}

fn caldav_sink(server: &CalDavServer) -> Arc<CalDavSink> {
    Arc::new(CalDavSink::new(&server.settings()).expect("a CalDAV sink"))
}

/// One VEVENT as the independent reader parsed it, and the object it came in.
#[derive(Debug)]
struct Event {
    href: String,
    event: ics::Event,
}

impl Event {
    fn get(&self, name: &str) -> Option<&str> {
        self.event.raw(name)
    }
    fn text(&self, name: &str) -> Option<String> {
        self.event.text(name)
    }
    fn is_date(&self, name: &str) -> bool {
        self.event.param(name, "VALUE") == Some("DATE")
    }
}

/// Every VEVENT of every object, with the object's href.
fn events(calendar: &RemoteCalendar) -> Vec<Event> {
    let mut out = Vec::new();
    for object in &calendar.objects {
        for event in ics::events(&object.data).expect("the object parses") {
            out.push(Event {
                href: object.href.clone(),
                event,
            });
        }
    }
    out
}

fn by_uid(events: &[Event], appointment: i64) -> &Event {
    let uid = uid_for(appointment);
    let matching: Vec<&Event> = events
        .iter()
        .filter(|e| e.get("UID") == Some(&uid))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "exactly one object with UID {uid}: {events:#?}"
    );
    matching[0]
}

async fn create_update_delete(kind: Kind) {
    let server = CalDavServer::start(kind).await;
    let (db, users) = firm(&["mmuster"]).await;
    let lawyer = users[0];
    let dir = tempfile::tempdir().unwrap();
    let sink = caldav_sink(&server);
    sink.check().await.expect("the server is reachable");
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink);

    let before = server.read_back("mmuster").await;
    assert!(!before.exists, "no calendar before the first delivery");

    let a = insert(
        &db,
        &Appt::timed(
            "Tagsatzung BG Innere Stadt",
            vienna(2026, 12, 1, 9, 0),
            vienna(2026, 12, 1, 10, 30),
        ),
        &[lawyer],
    )
    .await;
    let first = wait_delivered(&db, lawyer, a, 0).await;
    let href = first.remote_id.clone().expect("the href is recorded");
    assert!(href.ends_with(".ics"), "{href}");
    assert!(first.etag.is_some(), "the ETag is recorded");

    let calendar = server.read_back("mmuster").await;
    assert!(calendar.exists);
    assert_eq!(
        calendar.displayname.as_deref(),
        Some("notarXpert"),
        "the calendar was created with its display name"
    );
    let evs = events(&calendar);
    assert_eq!(evs.len(), 1);
    let e = by_uid(&evs, a);
    assert_eq!(
        e.text("SUMMARY").as_deref(),
        Some("Tagsatzung BG Innere Stadt")
    );
    assert_eq!(e.get("DTSTART"), Some("20261201T080000Z"));
    assert_eq!(e.get("DTEND"), Some("20261201T093000Z"));
    assert_eq!(e.get("SEQUENCE"), Some("0"));
    assert!(
        e.event
            .props
            .keys()
            .all(|k| k != "ATTENDEE" && k != "METHOD")
    );

    // Update: the same object, replaced.
    sqlx::query(
        "update xpert.appointments set subject = 'Tagsatzung verlegt', starts_at = $2,
                ends_at = $3, updated_at = now() where id = $1",
    )
    .bind(a)
    .bind(vienna(2026, 12, 2, 14, 0))
    .bind(vienna(2026, 12, 2, 15, 0))
    .execute(&db.pool)
    .await
    .unwrap();
    let second = wait_delivered(&db, lawyer, a, 1).await;
    assert_eq!(second.remote_id.as_deref(), Some(href.as_str()));
    assert_ne!(second.etag, first.etag, "a new ETag after the update");
    let evs = events(&server.read_back("mmuster").await);
    assert_eq!(evs.len(), 1, "updated in place, not duplicated");
    let e = by_uid(&evs, a);
    assert_eq!(e.text("SUMMARY").as_deref(), Some("Tagsatzung verlegt"));
    assert_eq!(e.get("DTSTART"), Some("20261202T130000Z"));
    assert_eq!(e.get("SEQUENCE"), Some("1"));

    // Delete: gone from the calendar and from the delivery state.
    db.exec_for("delete from xpert.appointments where id = $1", a)
        .await;
    eventually(WAIT, "the delete recorded", || async {
        (delivered(&db, lawyer, a).await.is_none() && queued(&db).await == 0).then_some(())
    })
    .await;
    let after = server.read_back("mmuster").await;
    assert!(after.exists && after.objects.is_empty(), "{after:?}");
    assert_eq!(dead_letters(&db).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn radicale_gets_appointments_created_updated_and_deleted() {
    create_update_delete(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_gets_appointments_created_updated_and_deleted() {
    create_update_delete(Kind::Xandikos).await;
}

#[tokio::test]
async fn vienna_dst_all_day_multi_day_umlauts_and_long_notes_read_back_exactly() {
    let server = CalDavServer::radicale().await;
    let (db, users) = firm(&["mmuster"]).await;
    let lawyer = users[0];
    let dir = tempfile::tempdir().unwrap();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), caldav_sink(&server));

    // 29 March 2026: 02:00 CET becomes 03:00 CEST. 01:30–03:30 local is one real hour.
    let spring = insert(
        &db,
        &Appt::timed(
            "Frühjahr: Zeitumstellung",
            vienna(2026, 3, 29, 1, 30),
            vienna(2026, 3, 29, 3, 30),
        ),
        &[lawyer],
    )
    .await;
    // 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice. From the first
    // 02:30 (CEST) to the second (CET).
    let autumn = insert(
        &db,
        &Appt::timed(
            "Herbst: doppelte Stunde",
            utc("2026-10-25T00:30:00Z"),
            utc("2026-10-25T01:30:00Z"),
        ),
        &[lawyer],
    )
    .await;
    let all_day = insert(
        &db,
        &Appt::all_day(
            "Ganztägig am Umstellungstag",
            vienna(2026, 3, 29, 0, 0),
            vienna(2026, 3, 30, 0, 0),
        ),
        &[lawyer],
    )
    .await;
    let multi_day = insert(
        &db,
        &Appt::all_day(
            "Klausur (drei Tage)",
            vienna(2026, 10, 24, 0, 0),
            vienna(2026, 10, 27, 0, 0),
        ),
        &[lawyer],
    )
    .await;
    let overnight = insert(
        &db,
        &Appt::timed(
            "Verlassenschaft: Inventur über das Wochenende",
            vienna(2026, 10, 24, 18, 0),
            vienna(2026, 10, 26, 9, 0),
        ),
        &[lawyer],
    )
    .await;
    let subject = "Übergabe: Größe & Maß; Ärger, „Grundbuch“ – ß";
    let location = "Wien, Stephansplatz 1/Tür 3";
    let notes: String = (1..=150)
        .map(|i| {
            format!(
                "Zeile {i}: Kaufvertrag – Käufer Jürgen Weiß; Verkäufer Zoë Ærø, \"Öffentliche\" Urkunde\\Beilage"
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(notes.len() > 10_000);
    let long = insert(
        &db,
        &Appt {
            subject,
            location: Some(location),
            notes: Some(&notes),
            starts: vienna(2026, 12, 3, 8, 0),
            ends: vienna(2026, 12, 3, 9, 0),
            all_day: false,
        },
        &[lawyer],
    )
    .await;
    wait_delivered(&db, lawyer, long, 0).await;
    wait_drained(&db).await;

    let evs = events(&server.read_back("mmuster").await);
    assert_eq!(evs.len(), 6);

    let e = by_uid(&evs, spring);
    assert_eq!(e.get("DTSTART"), Some("20260329T003000Z"));
    assert_eq!(e.get("DTEND"), Some("20260329T013000Z"));

    let e = by_uid(&evs, autumn);
    assert_eq!(e.get("DTSTART"), Some("20261025T003000Z"));
    assert_eq!(e.get("DTEND"), Some("20261025T013000Z"));

    let e = by_uid(&evs, all_day);
    assert!(e.is_date("DTSTART") && e.is_date("DTEND"), "{e:?}");
    assert_eq!(e.get("DTSTART"), Some("20260329"));
    assert_eq!(e.get("DTEND"), Some("20260330"), "DTEND is exclusive");

    let e = by_uid(&evs, multi_day);
    assert!(e.is_date("DTSTART") && e.is_date("DTEND"), "{e:?}");
    assert_eq!(e.get("DTSTART"), Some("20261024"));
    assert_eq!(e.get("DTEND"), Some("20261027"));

    let e = by_uid(&evs, overnight);
    assert_eq!(e.get("DTSTART"), Some("20261024T160000Z"));
    assert_eq!(
        e.get("DTEND"),
        Some("20261026T080000Z"),
        "CET after the switch"
    );

    let e = by_uid(&evs, long);
    assert_eq!(e.text("SUMMARY").as_deref(), Some(subject));
    assert_eq!(e.text("LOCATION").as_deref(), Some(location));
    assert_eq!(e.text("DESCRIPTION").as_deref(), Some(notes.as_str()));
    assert_eq!(dead_letters(&db).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_removed_participant_loses_the_event_and_nobody_writes_into_another_calendar() {
    let server = CalDavServer::radicale().await;
    let (db, users) = firm(&["mmuster", "hhuber"]).await;
    let (muster, huber) = (users[0], users[1]);
    let dir = tempfile::tempdir().unwrap();
    let sink = caldav_sink(&server);
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());

    let a = insert(
        &db,
        &Appt::timed(
            "Gemeinsame Beurkundung",
            vienna(2026, 12, 4, 10, 0),
            vienna(2026, 12, 4, 11, 0),
        ),
        &[muster, huber],
    )
    .await;
    wait_delivered(&db, muster, a, 0).await;
    wait_delivered(&db, huber, a, 0).await;
    assert_eq!(events(&server.read_back("mmuster").await).len(), 1);
    assert_eq!(events(&server.read_back("hhuber").await).len(), 1);

    sqlx::query(
        "delete from xpert.appointment_participants where appointment_id = $1 and user_id = $2",
    )
    .bind(a)
    .bind(huber)
    .execute(&db.pool)
    .await
    .unwrap();
    eventually(WAIT, "hhuber's copy removed", || async {
        (delivered(&db, huber, a).await.is_none() && queued(&db).await == 0).then_some(())
    })
    .await;
    assert!(events(&server.read_back("hhuber").await).is_empty());
    let evs = events(&server.read_back("mmuster").await);
    by_uid(&evs, a);
    worker.stop().await;

    // Rights are enforced: hhuber's credentials do not open mmuster's calendar.
    let intruder = CalendarOwner {
        user_id: huber,
        username: "hhuber".into(),
        calendar_address: Some(server.collection_url("mmuster")),
    };
    let change = Change::Delete {
        appointment_id: a,
        uid: uid_for(a),
        previous: Default::default(),
    };
    let ctx = RenderContext {
        time_zone: chrono_tz::Europe::Vienna,
    };
    let results = sink.apply(&intruder, &[change], &ctx).await;
    assert!(
        matches!(&results[0], Err(SinkError::Config { message }) if message.contains("403")),
        "{results:?}"
    );
    assert_eq!(events(&server.read_back("mmuster").await).len(), 1);
}

#[tokio::test]
async fn a_server_outage_in_the_middle_loses_nothing() {
    let mut server = CalDavServer::radicale().await;
    let (db, users) = firm(&["mmuster"]).await;
    let lawyer = users[0];
    let dir = tempfile::tempdir().unwrap();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), caldav_sink(&server));

    let first = insert(
        &db,
        &Appt::timed(
            "Vor dem Ausfall",
            vienna(2026, 12, 7, 9, 0),
            vienna(2026, 12, 7, 10, 0),
        ),
        &[lawyer],
    )
    .await;
    wait_delivered(&db, lawyer, first, 0).await;

    server.kill().await;
    set_subject(&db, first, "Vor dem Ausfall, geändert").await;
    let mut during = Vec::new();
    for i in 0..3 {
        during.push(
            insert(
                &db,
                &Appt::timed(
                    &format!("Während des Ausfalls {i}"),
                    vienna(2026, 12, 8, 9 + i, 0),
                    vienna(2026, 12, 8, 10 + i, 0),
                ),
                &[lawyer],
            )
            .await,
        );
    }
    eventually(WAIT, "failed attempts recorded while the server is down", || async {
        let failing: i64 = db
            .scalar("select count(*) from livesync.queue where attempts > 0 and last_error is not null")
            .await;
        (failing == 4).then_some(())
    })
    .await;

    server.resume().await.expect("Radicale starts again");
    wait_delivered(&db, lawyer, first, 1).await;
    for id in &during {
        wait_delivered(&db, lawyer, *id, 0).await;
    }
    let evs = events(&server.read_back("mmuster").await);
    assert_eq!(evs.len(), 4, "everything arrived once: {evs:#?}");
    assert_eq!(
        by_uid(&evs, first).text("SUMMARY").as_deref(),
        Some("Vor dem Ausfall, geändert")
    );
    for (i, id) in during.iter().enumerate() {
        assert_eq!(
            by_uid(&evs, *id).text("SUMMARY"),
            Some(format!("Während des Ausfalls {i}"))
        );
    }
    assert_eq!(dead_letters(&db).await, 0, "nothing dead-lettered");
    worker.stop().await;
}

/// Applies for real, then never returns: the worker dies after the PUT, before it records
/// the ETag.
struct HangAfterApply {
    inner: Arc<CalDavSink>,
    applied: AtomicUsize,
}

#[async_trait::async_trait]
impl CalendarSink for HangAfterApply {
    fn name(&self) -> &'static str {
        "hang-after-apply"
    }

    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>> {
        let results = self.inner.apply(owner, changes, ctx).await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        self.applied.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.inner.check().await
    }
}

/// Run a worker whose sink hangs after applying, until it applied once; then kill it.
async fn apply_then_die(db: &TestDb, server: &CalDavServer, dir: &std::path::Path) {
    let hang = Arc::new(HangAfterApply {
        inner: caldav_sink(server),
        applied: AtomicUsize::new(0),
    });
    let worker = RunningWorker::start(db, test_settings(db, dir), hang.clone());
    eventually(WAIT, "the PUT went through", || async {
        (hang.applied.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    worker.kill();
}

#[tokio::test]
async fn a_worker_killed_between_put_and_recording_leaves_one_object_per_uid() {
    let server = CalDavServer::radicale().await;
    let (db, users) = firm(&["mmuster"]).await;
    let lawyer = users[0];
    let dir = tempfile::tempdir().unwrap();

    // A create whose response is lost.
    let a = insert(
        &db,
        &Appt::timed(
            "Erstfassung",
            vienna(2026, 12, 9, 9, 0),
            vienna(2026, 12, 9, 10, 0),
        ),
        &[lawyer],
    )
    .await;
    apply_then_die(&db, &server, dir.path()).await;
    assert_eq!(events(&server.read_back("mmuster").await).len(), 1);
    assert!(
        delivered(&db, lawyer, a).await.is_none(),
        "nothing recorded"
    );

    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), caldav_sink(&server));
    let recorded = wait_delivered(&db, lawyer, a, 0).await;
    worker.stop().await;
    let evs = events(&server.read_back("mmuster").await);
    assert_eq!(evs.len(), 1, "no duplicate after the restart: {evs:#?}");
    let e = by_uid(&evs, a);
    let recorded_href = recorded.remote_id.clone().unwrap_or_default();
    assert!(
        e.href.replace("%40", "@").ends_with(&recorded_href),
        "the recorded href {recorded_href} is the object's ({})",
        e.href
    );

    // An update whose response is lost: the recorded ETag is stale afterwards.
    set_subject(&db, a, "Zweitfassung").await;
    apply_then_die(&db, &server, dir.path()).await;
    assert_eq!(delivered(&db, lawyer, a).await, Some(recorded.clone()));

    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), caldav_sink(&server));
    let updated = wait_delivered(&db, lawyer, a, 1).await;
    worker.stop().await;
    assert_ne!(updated.etag, recorded.etag);
    let evs = events(&server.read_back("mmuster").await);
    assert_eq!(evs.len(), 1, "still one object: {evs:#?}");
    let e = by_uid(&evs, a);
    assert_eq!(e.text("SUMMARY").as_deref(), Some("Zweitfassung"));
    assert_eq!(e.get("SEQUENCE"), Some("1"));
    assert_eq!(dead_letters(&db).await, 0);
}

#[tokio::test]
async fn a_wrong_password_is_a_configuration_error_and_entries_stay_queued() {
    let server = CalDavServer::radicale().await;
    let (db, users) = firm(&["mmuster"]).await;
    let lawyer = users[0];
    let dir = tempfile::tempdir().unwrap();
    let wrong = CalDavSettings {
        username: Some("mmuster".into()),
        password: Some(Secret::new("Falsch-Geheim-42")),
        ..server.settings()
    };
    let sink = Arc::new(CalDavSink::new(&wrong).unwrap());
    match sink.check().await {
        Err(SinkError::Config { message }) => {
            assert!(
                message.contains("credentials") && message.contains("mmuster"),
                "{message}"
            );
            assert!(!message.contains("Falsch-Geheim-42"), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }

    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink);
    let a = insert(
        &db,
        &Appt::timed(
            "Wartet auf Kennwort",
            vienna(2026, 12, 10, 9, 0),
            vienna(2026, 12, 10, 10, 0),
        ),
        &[lawyer],
    )
    .await;
    let error: String = eventually(WAIT, "the failure recorded", || async {
        sqlx::query_scalar::<_, Option<String>>(
            "select last_error from livesync.queue where appointment_id = $1",
        )
        .bind(a)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten()
    })
    .await;
    worker.stop().await;
    assert!(
        error.contains("configuration problem") && error.contains("401"),
        "{error}"
    );
    assert!(!error.contains("Falsch-Geheim-42"), "{error}");
    let attempts: i32 = db.scalar("select attempts from livesync.queue").await;
    assert_eq!(
        attempts, 0,
        "a configuration problem does not count against the entry"
    );
    assert_eq!(dead_letters(&db).await, 0);
    assert!(delivered(&db, lawyer, a).await.is_none());
    assert!(!server.read_back("mmuster").await.exists);

    // Once the password is fixed (and the admin retries now), the entry is delivered.
    sqlx::query("update livesync.queue set not_before = now()")
        .execute(&db.pool)
        .await
        .unwrap();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), caldav_sink(&server));
    wait_delivered(&db, lawyer, a, 0).await;
    worker.stop().await;
    assert_eq!(events(&server.read_back("mmuster").await).len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_named_with_the_refused_connection_and_no_password() {
    // A port nobody listens on: bound, then closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = CalDavSink::new(&CalDavSettings {
        url_template: format!("http://127.0.0.1:{port}/{{username}}/notarxpert/"),
        username: Some("mmuster".into()),
        password: Some(Secret::new("Kein-Server-Geheim-17")),
        max_concurrency: 2,
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let owner = CalendarOwner {
        user_id: 1,
        username: "mmuster".into(),
        calendar_address: None,
    };
    let ctx = RenderContext {
        time_zone: chrono_tz::Europe::Vienna,
    };
    let check = sink.check().await;
    let deliver = sink
        .apply(
            &owner,
            &[Change::Delete {
                appointment_id: 1,
                uid: uid_for(1),
                previous: RemoteRef {
                    remote_id: None,
                    etag: None,
                },
            }],
            &ctx,
        )
        .await;
    for result in [check.map(|_| ())]
        .into_iter()
        .chain(deliver.into_iter().map(|r| r.map(|_| ())))
    {
        let Err(SinkError::Retryable { message, .. }) = result else {
            panic!("expected a retryable failure, got {result:?}");
        };
        assert!(
            message.contains("Connection refused") && message.contains(&format!(":{port}")),
            "{message}"
        );
        assert!(!message.contains("Kein-Server-Geheim-17"), "{message}");
    }
}
