//! The EWS sink under Exchange's documented faults (`ews_fake::FaultProfile`): busy
//! mailboxes in both shapes, lost answers, failing requests, and a worker killed during a
//! storm. The rule under test: a change is charged an attempt only for its own failed
//! request; throttling and lost answers charge nobody, and every mailbox ends up holding
//! exactly what the database says.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use livesync_worker::config::{Settings, SinkKind};
use livesync_worker::sink::ews::EwsSink;
use livesync_worker::sink::{CalendarSink, run_budget};

use crate::charges::{assert_nobody_charged, queued, record_charges};
use crate::ews::settings;
use crate::helpers::{TestDb, assert_only_these_failed, eventually};
use crate::mailbox_support::{MAILBOX, batch, owner, uid, vienna};
use crate::worker_support::{RunningWorker, test_settings};
use livesync_testkit::ews_fake::{FakeEws, FaultProfile};

const WAIT: Duration = Duration::from_secs(90);

/// The UIDs of the items in `mailbox`, with how often each is there.
fn held(fake: &FakeEws, mailbox: &str) -> BTreeMap<String, usize> {
    let mut held = BTreeMap::new();
    for item in fake.items(mailbox) {
        let uid = item.uid.expect("every item carries its UID");
        *held.entry(uid).or_insert(0) += 1;
    }
    held
}

#[tokio::test]
async fn one_failed_request_fails_only_the_change_that_sent_it() {
    let fake = FakeEws::start().await;
    // The folder lookup (the first change's) loses its connection, and every creation of
    // appointment 3 fails before the item is stored.
    fake.drop_next(1);
    fake.fail_creations_of(&uid(3));
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let r = sink.apply(&owner(), &batch(1..=8), &vienna()).await;
    assert_only_these_failed(&r, &[0, 2]);
    let held = held(&fake, MAILBOX);
    let expected: Vec<String> = [2, 4, 5, 6, 7, 8].map(uid).to_vec();
    assert_eq!(held.keys().cloned().collect::<Vec<_>>(), {
        let mut e = expected.clone();
        e.sort();
        e
    });
    assert!(held.values().all(|n| *n == 1), "{held:?}");
    // Appointment 3: created, looked up when no answer came, created once more, given up.
    let posts: Vec<_> = fake
        .requests_of("CreateItem")
        .into_iter()
        .filter(|c| c.text("Value") == Some(uid(3)))
        .collect();
    assert_eq!(posts.len(), 2, "{posts:#?}");
    assert!(
        fake.requests_of("FindItem")
            .iter()
            .any(|f| f.attr("Constant", "Value") == Some(uid(3)) && f.at > posts[0].at)
    );
}

/// What the database says each mailbox must hold: for every enabled user, the UIDs of the
/// appointments they take part in, with the subject.
async fn expected_mailboxes(db: &TestDb) -> HashMap<String, BTreeMap<String, String>> {
    let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "select u.username, a.id, a.subject
           from xpert.appointments a
           join xpert.appointment_participants p on p.appointment_id = a.id
           join xpert.users u on u.id = p.user_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for (user, id, subject) in rows {
        out.entry(format!("{user}@kanzlei.at"))
            .or_default()
            .insert(uid(id), subject.unwrap_or_default());
    }
    out
}

/// Every mailbox holds exactly its appointments, once each, with the database's subject.
fn mailboxes_equal_the_database(
    fake: &FakeEws,
    expected: &HashMap<String, BTreeMap<String, String>>,
) -> Result<(), String> {
    for (mailbox, want) in expected {
        let mut got: BTreeMap<String, String> = BTreeMap::new();
        for item in fake.items(mailbox) {
            let uid = item.uid.clone().ok_or("an item without UID")?;
            if got
                .insert(
                    uid.clone(),
                    item.field("Subject").unwrap_or_default().to_string(),
                )
                .is_some()
            {
                return Err(format!("{mailbox}: {uid} twice"));
            }
        }
        if &got != want {
            return Err(format!(
                "{mailbox}: holds {got:?}, the database says {want:?}"
            ));
        }
    }
    Ok(())
}

/// Wait until every mailbox equals the database and the queue is drained.
async fn until_delivered(
    db: &TestDb,
    fake: &FakeEws,
    expected: &HashMap<String, BTreeMap<String, String>>,
    what: &str,
) {
    eventually(WAIT, what, || async {
        (mailboxes_equal_the_database(fake, expected).is_ok() && queued(db).await == 0)
            .then_some(())
    })
    .await;
}

fn worker_settings(
    db: &TestDb,
    fake: &FakeEws,
    dir: &std::path::Path,
    lease: Duration,
) -> (Settings, EwsSink) {
    let ews = settings(fake);
    let s = Settings {
        sink: SinkKind::Ews,
        ews: Some(ews.clone()),
        lease,
        ..test_settings(db, dir)
    };
    // Wired as the service wires it: the run budget follows the lease.
    let sink = EwsSink::new(&ews)
        .unwrap()
        .with_run_budget(run_budget(lease));
    (s, sink)
}

#[tokio::test]
async fn under_exchanges_documented_faults_everything_arrives_once_and_nobody_is_charged() {
    let fake = FakeEws::start().await;
    fake.set_profile(FaultProfile::documented(18));
    let db = TestDb::migrated().await;
    let users = db.firm_in_push_mode(&["mmuster", "hhuber"], false).await;
    record_charges(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let (s, sink) = worker_settings(&db, &fake, dir.path(), Duration::from_secs(60));
    let worker = RunningWorker::start(&db, s, Arc::new(sink));
    for i in 0..50 {
        let who = if i < 40 { users[0] } else { users[1] };
        db.appointment(&format!("Termin {i}"), 24 + i, &[who]).await;
    }
    let expected = expected_mailboxes(&db).await;
    until_delivered(
        &db,
        &fake,
        &expected,
        "all 50 appointments delivered and the queue drained",
    )
    .await;
    worker.stop().await;
    let requests = fake.requests();
    let count = |f: &dyn Fn(&livesync_testkit::ews_fake::Recorded) -> bool| {
        requests.iter().filter(|r| f(r)).count()
    };
    let busy_faults = count(&|r| r.code == "ErrorServerBusy" && r.status == 500);
    let busy_messages = count(&|r| r.code == "ErrorServerBusy" && r.status == 200);
    let lost = count(&|r| r.dropped);
    eprintln!(
        "ews fault profile: {} requests, {busy_faults} busy faults, {busy_messages} busy messages, {lost} answers lost",
        requests.len()
    );
    assert!(
        busy_faults > 0 && busy_messages > 0 && lost > 0,
        "the faults happened"
    );
    for mailbox in expected.keys() {
        assert!(fake.max_in_flight(mailbox) <= 3);
    }
    assert_nobody_charged(&db).await;
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.code == "ErrorSchemaValidation")
            .count(),
        0
    );
}

#[tokio::test]
async fn a_worker_killed_during_a_storm_leaves_every_mailbox_equal_to_the_database() {
    let fake = FakeEws::start().await;
    let mut profile = FaultProfile::documented(9);
    profile.load.latency = Some(Duration::from_millis(15));
    fake.set_profile(profile);
    let db = TestDb::migrated().await;
    let users = db
        .firm_in_push_mode(&["mmuster", "hhuber", "aberger"], false)
        .await;
    record_charges(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(5);

    // The storm: creations, changes and deletions for three people, while the worker runs.
    let (s, sink) = worker_settings(&db, &fake, dir.path(), lease);
    let worker = RunningWorker::start(&db, s, Arc::new(sink));
    let mut ids = Vec::new();
    for i in 0..60 {
        let who = users[i as usize % 3];
        let shared = if i % 10 == 0 {
            vec![who, users[(i as usize + 1) % 3]]
        } else {
            vec![who]
        };
        ids.push(
            db.appointment(&format!("Termin {i}"), 24 + i, &shared)
                .await,
        );
    }
    eventually(WAIT, "deliveries under way", || async {
        (fake.requests_of("CreateItem").len() >= 20).then_some(())
    })
    .await;
    for id in ids.iter().step_by(4) {
        sqlx::query(
            "update xpert.appointments set subject = subject || ' (verlegt)' where id = $1",
        )
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    for id in ids.iter().skip(1).step_by(7) {
        sqlx::query("delete from xpert.appointments where id = $1")
            .bind(id)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // kill -9 in the middle of it: nothing released, leases expire.
    worker.kill();
    let killed_at = fake.requests().len();
    for id in ids.iter().skip(2).step_by(9) {
        sqlx::query("update xpert.appointments set subject = subject || ' (nach dem Absturz)' where id = $1")
            .bind(id)
            .execute(&db.pool)
            .await
            .unwrap();
    }

    // A new worker (a new process: no memory of the old one's answers).
    let (s, sink) = worker_settings(&db, &fake, dir.path(), lease);
    let worker = RunningWorker::start(&db, s, Arc::new(sink));
    let expected = expected_mailboxes(&db).await;
    until_delivered(
        &db,
        &fake,
        &expected,
        "every mailbox equals the database and the queue drained",
    )
    .await;
    worker.stop().await;
    if let Err(e) = mailboxes_equal_the_database(&fake, &expected) {
        panic!("{e}");
    }
    assert!(
        fake.requests().len() > killed_at,
        "the second worker did the rest"
    );
    assert!(
        fake.requests().iter().any(|r| r.dropped),
        "answers were lost"
    );
    assert_nobody_charged(&db).await;
}
