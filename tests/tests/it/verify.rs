//! Verification and repair: a calendar changed behind livesync's back (an item deleted,
//! one modified, one duplicated, a foreign one added, one of ours that Xpert does not
//! have, the whole calendar wiped) is reported exactly so; `--repair` fixes it through the
//! queue with a worker running; the foreign item stays; a second verification is clean.
//! With the ics sink (files in a temp dir, also through `livesync-admin verify`, the
//! real binaries) and the CalDAV sink against real Radicale and Xandikos.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use livesync_worker::flush::uid_for;
use livesync_worker::ical;
use livesync_worker::sink::caldav::CalDavSink;
use livesync_worker::sink::ics::IcsSink;
use livesync_worker::sink::{Appointment, CalendarSink, RenderContext};
use livesync_worker::verify::compare::State;
use livesync_worker::verify::{Options, Report};
use serde_json::Value;

use crate::helpers::TestDb;
use crate::secrets::{admin_bin, run};
use crate::worker_support::{RunningWorker, test_settings};
use livesync_testkit::caldav_server::{CalDavServer, Kind, password_of};

const WAIT: Duration = Duration::from_secs(30);
/// An appointment id no Xpert row has: an item of ours that Xpert does not know.
const UNKNOWN: i64 = 999_999;
const FOREIGN_UID: &str = "040000008200E00074C5B7101A82E008@kollegin.example";

/// Verify mmuster's calendar (and queue its repair when `repair`).
pub(crate) async fn verify(db: &TestDb, sink: &dyn CalendarSink, repair: bool) -> Report {
    let options = Options {
        name: Some("mmuster".into()),
        repair,
        ..Options::default()
    };
    livesync_worker::verify::run(&db.pool, sink, &options, |_, _, _| {})
        .await
        .expect("verify")
}

/// Every finding as (state, appointment), sorted.
pub(crate) fn found(report: &Report) -> Vec<(State, Option<i64>)> {
    let mut all: Vec<_> = report
        .people
        .iter()
        .flat_map(|p| {
            assert_eq!(p.error, None, "{} could not be read", p.username);
            p.findings.iter().map(|f| (f.state, f.appointment_id))
        })
        .collect();
    all.sort();
    all
}

/// A verification (no repair) of a calendar changed behind livesync's back, as
/// [`changed_behind_its_back`] describes it: it reports exactly that and changes nothing.
pub(crate) fn reports_changed_behind_its_back(report: &Report, ids: &[i64]) {
    assert_eq!(found(report), changed_behind_its_back(ids));
    assert!(report.has_problems());
    let drifted = report.people[0]
        .findings
        .iter()
        .find(|f| f.state == State::Drifted)
        .unwrap();
    assert_eq!(drifted.detail, Some("changed in the calendar"));
    assert_eq!(report.queued, 0, "a verification alone changes nothing");
}

/// What a calendar changed behind livesync's back reports: the first appointment
/// deleted, the second edited, the third duplicated, an unknown one of ours and a foreign
/// one added.
pub(crate) fn changed_behind_its_back(ids: &[i64]) -> Vec<(State, Option<i64>)> {
    vec![
        (State::Ok, Some(ids[2])),
        (State::Ok, Some(ids[3])),
        (State::Ok, Some(ids[4])),
        (State::Missing, Some(ids[0])),
        (State::Orphan, Some(UNKNOWN)),
        (State::Drifted, Some(ids[1])),
        (State::Duplicate, Some(ids[2])),
        (State::Foreign, None),
    ]
}

pub(crate) fn ok(ids: &[i64]) -> Vec<(State, Option<i64>)> {
    ids.iter().map(|id| (State::Ok, Some(*id))).collect()
}

/// Wait until the change log and the person's queue are empty: every change and repair
/// delivered (a dead letter fails the test, and so does a queue that does not drain, with
/// its entries' last errors).
pub(crate) async fn drained(db: &TestDb, user: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (left, dead): (i64, i64) = sqlx::query_as(
            "select (select count(*) from livesync.changes) \
                  + (select count(*) from livesync.queue where user_id = $1), \
                    (select count(*) from livesync.dead_letters)",
        )
        .bind(user)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(dead, 0, "a repair failed for good");
        if left == 0 {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let entries: Vec<(i64, String, i32, Option<String>)> = sqlx::query_as(
                "select appointment_id, op, attempts, last_error from livesync.queue \
                  where user_id = $1 order by appointment_id",
            )
            .bind(user)
            .fetch_all(&db.pool)
            .await
            .unwrap();
            panic!("the queue did not drain within {WAIT:?}: {entries:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A firm in push mode with "mmuster" and five appointments of theirs from tomorrow on.
pub(crate) async fn firm() -> (TestDb, i64, Vec<i64>) {
    let db = TestDb::migrated().await;
    let user = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let ids = appointments(&db, user).await;
    (db, user, ids)
}

/// Five appointments of `user` from tomorrow on ("Termin 0" to "Termin 4").
pub(crate) async fn appointments(db: &TestDb, user: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            db.appointment(&format!("Termin {i}"), 24 + 2 * i, &[user])
                .await,
        );
    }
    ids
}

/// An appointment Xpert does not have ([`UNKNOWN`]), in three days.
pub(crate) fn unknown_appointment() -> Appointment {
    let at = Utc::now() + chrono::Duration::days(3);
    Appointment {
        id: UNKNOWN,
        subject: Some("Längst abgesagt".into()),
        location: None,
        notes: None,
        starts_at: at,
        ends_at: at + chrono::Duration::hours(1),
        all_day: false,
        updated_at: at,
    }
}

/// An event of ours for an appointment Xpert does not have (restored from a backup).
fn unknown_event() -> String {
    let ctx = RenderContext {
        time_zone: chrono_tz::Europe::Vienna,
    };
    ical::render_event(&unknown_appointment(), &uid_for(UNKNOWN), 0, &ctx)
}

/// An event someone else wrote into the calendar.
fn foreign_event() -> String {
    let at = Utc.with_ymd_and_hms(2030, 6, 3, 10, 0, 0).unwrap();
    format!(
        "BEGIN:VEVENT\r\nUID:{FOREIGN_UID}\r\nDTSTAMP:20261201T080000Z\r\n\
         DTSTART:{}\r\nDTEND:{}\r\nSUMMARY:Mittagessen mit der Kollegin\r\nEND:VEVENT\r\n",
        at.format("%Y%m%dT%H%M%SZ"),
        (at + chrono::Duration::hours(1)).format("%Y%m%dT%H%M%SZ")
    )
}

fn calendar(event: &str) -> String {
    ical::render_calendar([event])
}

/// The subject the drift gives "Termin 1".
pub(crate) const EDITED: &str = "Termin 1 (in Outlook verschoben)";

/// The drift every sink gets: `SUMMARY:Termin 1` edited in the calendar.
fn edit(text: &str) -> String {
    assert!(text.contains("SUMMARY:Termin 1"), "{text}");
    text.replace("SUMMARY:Termin 1", &format!("SUMMARY:{EDITED}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ics_calendar_changed_behind_livesyncs_back_is_reported_and_repaired() {
    let (db, user, ids) = firm().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&db, dir.path());
    let ics = Arc::new(IcsSink::new(settings.ics_dir.clone()));
    let sink: Arc<dyn CalendarSink> = ics.clone();
    let worker = RunningWorker::start(&db, settings, sink.clone());
    drained(&db, user).await;
    assert_eq!(found(&verify(&db, &*sink, false).await), ok(&ids));

    // Behind livesync's back: the first deleted, the second edited, the third twice, an
    // unknown one of ours and a foreign one added.
    let path = ics.path("mmuster");
    let text = std::fs::read_to_string(&path).unwrap();
    let blocks = ical::split_events(&text).unwrap();
    assert_eq!(blocks.len(), 5);
    let mut changed: Vec<String> = Vec::new();
    for (uid, block) in &blocks {
        if *uid == uid_for(ids[0]) {
            continue;
        } else if *uid == uid_for(ids[1]) {
            changed.push(edit(block));
        } else if *uid == uid_for(ids[2]) {
            changed.push(block.clone());
            changed.push(block.clone());
        } else {
            changed.push(block.clone());
        }
    }
    changed.push(unknown_event());
    changed.push(foreign_event());
    std::fs::write(
        &path,
        ical::render_calendar(changed.iter().map(String::as_str)),
    )
    .unwrap();

    let report = verify(&db, &*sink, false).await;
    reports_changed_behind_its_back(&report, &ids);
    assert_eq!(
        std::fs::read_to_string(&path)
            .unwrap()
            .matches("BEGIN:VEVENT")
            .count(),
        7
    );

    let repaired = verify(&db, &*sink, true).await;
    assert_eq!(repaired.queued, 4, "missing, drifted, duplicated, unknown");
    drained(&db, user).await;
    let mut clean = ok(&ids);
    clean.push((State::Foreign, None));
    assert_eq!(found(&verify(&db, &*sink, false).await), clean);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(FOREIGN_UID), "the foreign item is left alone");
    assert_eq!(text.matches("BEGIN:VEVENT").count(), 6);
    assert!(!text.contains(&uid_for(UNKNOWN)));

    // The calendar wiped: every appointment missing, rebuilt by the repair.
    std::fs::remove_file(&path).unwrap();
    let report = verify(&db, &*sink, false).await;
    let missing: Vec<_> = ids.iter().map(|id| (State::Missing, Some(*id))).collect();
    assert_eq!(found(&report), missing);
    assert_eq!(verify(&db, &*sink, true).await.queued, 5);
    drained(&db, user).await;
    assert_eq!(found(&verify(&db, &*sink, false).await), ok(&ids));
    worker.stop().await;
}

/// A CalDAV client of someone else's, writing into the person's collection.
struct Other {
    http: reqwest::Client,
    kind: Kind,
    origin: String,
    collection: String,
}

impl Other {
    fn new(server: &CalDavServer) -> Other {
        Other {
            http: reqwest::Client::new(),
            kind: server.kind,
            origin: server.origin(),
            collection: server.collection_url("mmuster"),
        }
    }

    fn request(&self, method: &str, url: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        match self.kind {
            Kind::Radicale => request.basic_auth("mmuster", Some(password_of("mmuster"))),
            Kind::Xandikos => request,
        }
    }

    /// The URL of the object livesync recorded for an appointment.
    async fn url_of(&self, db: &TestDb, user: i64, appointment: i64) -> String {
        let href: String = sqlx::query_scalar(
            "select remote_id from livesync.delivered where user_id = $1 and appointment_id = $2",
        )
        .bind(user)
        .bind(appointment)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        format!("{}{href}", self.origin)
    }

    async fn get(&self, url: &str) -> (u16, String) {
        let reply = self.request("GET", url).send().await.unwrap();
        (reply.status().as_u16(), reply.text().await.unwrap())
    }

    /// PUT a new object (`If-None-Match: *`); the status.
    async fn create(&self, name: &str, data: String) -> u16 {
        self.request("PUT", &format!("{}{name}", self.collection))
            .header("If-None-Match", "*")
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(data)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn put(&self, url: &str, data: String) {
        let reply = self
            .request("PUT", url)
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(data)
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success(), "PUT {url}: {}", reply.status());
    }

    async fn delete(&self, url: &str) {
        let reply = self.request("DELETE", url).send().await.unwrap();
        assert!(
            reply.status().is_success(),
            "DELETE {url}: {}",
            reply.status()
        );
    }
}

async fn a_caldav_calendar_changed_behind_livesyncs_back(kind: Kind) {
    let server = CalDavServer::start(kind).await;
    let (db, user, ids) = firm().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&db, dir.path());
    let sink: Arc<dyn CalendarSink> = Arc::new(CalDavSink::new(&server.settings()).unwrap());
    let worker = RunningWorker::start(&db, settings, sink.clone());
    drained(&db, user).await;
    assert_eq!(found(&verify(&db, &*sink, false).await), ok(&ids));

    let other = Other::new(&server);
    // Deleted, edited.
    other.delete(&other.url_of(&db, user, ids[0]).await).await;
    let second = other.url_of(&db, user, ids[1]).await;
    let (status, data) = other.get(&second).await;
    assert_eq!(status, 200);
    other.put(&second, edit(&data)).await;
    // Duplicated: the server refuses a second object with the same UID (RFC 4791
    // no-uid-conflict), so a CalDAV calendar cannot hold a duplicate of ours.
    let (_, third) = other.get(&other.url_of(&db, user, ids[2]).await).await;
    let copy = other.create("kopie.ics", third).await;
    assert!(
        (400..500).contains(&copy),
        "{kind:?} took a second object with one UID: {copy}"
    );
    // One of ours that Xpert does not know, and a foreign one.
    assert_eq!(
        other
            .create(
                &format!("{}.ics", uid_for(UNKNOWN)),
                calendar(&unknown_event())
            )
            .await,
        201
    );
    assert_eq!(
        other.create("fremd.ics", calendar(&foreign_event())).await,
        201
    );

    let report = verify(&db, &*sink, false).await;
    assert_eq!(
        found(&report),
        changed_behind_its_back(&ids)
            .into_iter()
            .filter(|(state, _)| *state != State::Duplicate)
            .collect::<Vec<_>>(),
        "{kind:?}: the server refuses a second object with one UID"
    );

    let repaired = verify(&db, &*sink, true).await;
    assert_eq!(repaired.queued, 3, "missing, drifted, unknown");
    drained(&db, user).await;
    let mut clean = ok(&ids);
    clean.push((State::Foreign, None));
    assert_eq!(found(&verify(&db, &*sink, false).await), clean, "{kind:?}");
    let foreign = format!("{}fremd.ics", other.collection);
    let (status, data) = other.get(&foreign).await;
    assert_eq!(status, 200, "the foreign item is left alone");
    assert!(data.contains(FOREIGN_UID));

    // The calendar wiped (the collection deleted): rebuilt by the repair.
    other.delete(&other.collection).await;
    let missing: Vec<_> = ids.iter().map(|id| (State::Missing, Some(*id))).collect();
    assert_eq!(
        found(&verify(&db, &*sink, false).await),
        missing,
        "{kind:?}"
    );
    assert_eq!(verify(&db, &*sink, true).await.queued, 5);
    drained(&db, user).await;
    assert_eq!(
        found(&verify(&db, &*sink, false).await),
        ok(&ids),
        "{kind:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_radicale_calendar_changed_behind_livesyncs_back_is_reported_and_repaired() {
    a_caldav_calendar_changed_behind_livesyncs_back(Kind::Radicale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_xandikos_calendar_changed_behind_livesyncs_back_is_reported_and_repaired() {
    a_caldav_calendar_changed_behind_livesyncs_back(Kind::Xandikos).await;
}

/// `livesync-admin verify`, the real binaries, with the worker's configuration in the
/// environment: exit 1 on a problem, `--repair` exits 0 and says how to watch, then 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livesync_admin_verify_runs_the_worker_with_its_configuration() {
    let (db, user, ids) = firm().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&db, dir.path());
    let ics_dir = settings.ics_dir.clone();
    let ics = Arc::new(IcsSink::new(ics_dir.clone()));
    let worker = RunningWorker::start(&db, settings, ics.clone());
    drained(&db, user).await;
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("LIVESYNC_SINK", "ics".to_string()),
        ("LIVESYNC_ICS_DIR", ics_dir.display().to_string()),
    ];
    let admin = |args: &'static [&'static str]| {
        let env = env.clone();
        let cwd = dir.path().to_path_buf();
        async move { run(&admin_bin(), args, &env, &cwd).await }
    };
    let clean = admin(&["verify", "mmuster"]).await;
    assert_eq!(clean.code, Some(0), "{}", clean.all());
    assert!(
        clean.stdout.contains("mmuster: 5 ok, 0 missing"),
        "{}",
        clean.all()
    );

    std::fs::remove_file(ics.path("mmuster")).unwrap();
    let broken = admin(&["verify", "--all"]).await;
    assert_eq!(broken.code, Some(1), "{}", broken.all());
    assert!(
        broken.stdout.contains("0 ok, 5 missing"),
        "{}",
        broken.all()
    );
    assert!(broken.stdout.contains("--repair"), "{}", broken.all());
    // Recorded as the calendar's last verification: `users` shows it.
    let users = admin(&["users"]).await;
    assert!(users.stdout.contains("5 problems"), "{}", users.all());

    let repair = admin(&[
        "--json",
        "verify",
        "--all",
        "--repair",
        "--from",
        "2020-01-01",
    ])
    .await;
    assert_eq!(repair.code, Some(0), "{}", repair.all());
    let report: Value = serde_json::from_str(&repair.stdout).expect("one JSON document");
    assert_eq!(report["totals"]["missing"], 5);
    assert_eq!(report["queued"], 5);
    assert_eq!(report["people"][0]["findings"][0]["state"], "missing");
    drained(&db, user).await;
    let again = admin(&["verify", "--all"]).await;
    assert_eq!(again.code, Some(0), "{}", again.all());
    assert!(
        again.stdout.contains(&format!("{} ok", ids.len())),
        "{}",
        again.all()
    );
    worker.stop().await;
}
