//! The Graph sink under Graph's documented faults (`graph_fake::FaultProfile`): throttled
//! mailboxes, lost answers, failing requests. The rule under test: a change is charged an
//! attempt only for its own failed request; throttling and lost answers charge nobody.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use livesync_worker::config::{Settings, SinkKind};
use livesync_worker::sink::graph::GraphSink;
use livesync_worker::sink::{CalendarSink, run_budget};

use crate::charges::{assert_nobody_charged, queued, record_charges};
use crate::graph::{firm_with_worker, settings};
use crate::helpers::{TestDb, assert_only_these_failed, eventually};
use crate::mailbox_support::{MAILBOX, batch, owner, vienna};
use crate::worker_support::{RunningWorker, test_settings};
use livesync_testkit::graph_fake::{FakeGraph, FaultProfile, Load};

const WAIT: Duration = Duration::from_secs(60);

/// The appointment ids of the events in `mailbox`, with how often each is there.
fn held(fake: &FakeGraph, mailbox: &str) -> BTreeMap<i64, usize> {
    let mut held = BTreeMap::new();
    for (_, e) in fake.events(mailbox) {
        let id = e.json["singleValueExtendedProperties"][0]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("every event carries its appointment id");
        *held.entry(id).or_insert(0) += 1;
    }
    held
}

/// Creations (POST of an event) the fake received for `appointment`, in order.
fn creations(fake: &FakeGraph, appointment: i64) -> Vec<livesync_testkit::graph_fake::Recorded> {
    fake.graph_requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .filter(|r| {
            r.body["singleValueExtendedProperties"][0]["value"]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                == Some(appointment)
        })
        .collect()
}

#[tokio::test]
async fn one_failed_request_fails_only_the_change_that_sent_it() {
    let fake = FakeGraph::start().await;
    // The calendar lookup (the first change's) loses its connection, and every creation
    // of appointment 3 fails before the event is stored.
    fake.drop_next(1);
    fake.fail_creations_of(3);
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let r = sink.apply(&owner(), &batch(1..=8), &vienna()).await;
    assert_only_these_failed(&r, &[0, 2]);
    let held = held(&fake, MAILBOX);
    assert_eq!(
        held.keys().copied().collect::<Vec<_>>(),
        vec![2, 4, 5, 6, 7, 8]
    );
    assert!(held.values().all(|n| *n == 1), "{held:?}");
    // Appointment 3: created, looked up when no answer came, created once more with the
    // same transaction id, then given up.
    let posts = creations(&fake, 3);
    assert_eq!(posts.len(), 2, "{posts:#?}");
    assert_eq!(
        posts[0].body["transactionId"],
        posts[1].body["transactionId"]
    );
    assert!(fake.graph_requests().iter().any(|r| {
        r.method == "GET"
            && r.query
                .get("$filter")
                .is_some_and(|f| f.contains("ep/value eq '3'"))
    }));
}

#[tokio::test]
async fn a_lost_answer_to_a_creation_is_resolved_in_the_same_batch_without_a_duplicate() {
    let fake = FakeGraph::start().await;
    fake.lose_answer_to_creation_of(2);
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let r = sink.apply(&owner(), &batch(1..=4), &vienna()).await;
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let held = held(&fake, MAILBOX);
    assert_eq!(held.len(), 4);
    assert!(held.values().all(|n| *n == 1), "no duplicate: {held:?}");
    let posts = creations(&fake, 2);
    assert_eq!(posts.len(), 1, "looked up, not created again: {posts:#?}");
    assert!(posts[0].dropped);
    let stored = fake
        .events(MAILBOX)
        .into_iter()
        .find(|(_, e)| e.json["singleValueExtendedProperties"][0]["value"] == "2")
        .unwrap();
    assert_eq!(
        r[1].as_ref().unwrap().remote_id.as_deref(),
        Some(stored.0.as_str())
    );
}

#[tokio::test]
async fn a_throttled_mailbox_pauses_and_the_batch_goes_on() {
    let fake = FakeGraph::start().await;
    fake.set_profile(FaultProfile {
        throttle_every: Some(3),
        retry_after: "0.3".into(),
        load: Load {
            latency: Some(Duration::from_millis(10)),
            concurrency_limit: Some(4),
            ..Load::default()
        },
    });
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let r = sink.apply(&owner(), &batch(1..=12), &vienna()).await;
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let held = held(&fake, MAILBOX);
    assert_eq!(held.len(), 12);
    assert!(held.values().all(|n| *n == 1), "{held:?}");
    let throttled = fake
        .graph_requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(throttled >= 4, "the fake throttled {throttled} requests");
    assert!(fake.max_in_flight(MAILBOX) <= 4);
}

#[tokio::test]
async fn a_pause_longer_than_the_batch_defers_every_change_with_the_pause() {
    let fake = FakeGraph::start().await;
    fake.throttle(1, "30");
    let sink = GraphSink::new(&settings(&fake))
        .unwrap()
        .with_run_budget(Duration::from_secs(2));
    let r = sink.apply(&owner(), &batch(1..=3), &vienna()).await;
    crate::helpers::assert_all_deferred_with_pause(&r, 30);
    assert_eq!(
        fake.graph_requests().len(),
        1,
        "nothing is sent to a paused mailbox"
    );
}

/// Issue 16's outside check, with the worker's lease (and so the sink's run budget) as
/// given; returns the time from the first appointment to the last delivery.
///
/// Reading of "two users, 50 appointments … one user's calendar holding 32 of 40": the 50
/// appointments are split, 40 for one lawyer and 10 for the other (so 50 deliveries; the
/// 10 missing then were the 7 queued and the 3 dead letters).
async fn deliver_under_the_documented_faults(lease: Duration, batch_size: i64) -> Duration {
    let fake = FakeGraph::start().await;
    fake.set_profile(FaultProfile::documented(16));
    let db = TestDb::migrated().await;
    let users = db.firm_in_push_mode(&["mmuster", "hhuber"], false).await;
    let (muster, huber) = (users[0], users[1]);
    record_charges(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let graph = settings(&fake);
    let s = Settings {
        sink: SinkKind::Graph,
        graph: Some(graph.clone()),
        batch_size,
        lease,
        ..test_settings(&db, dir.path())
    };
    // Wired as the service wires it: the run budget follows the lease.
    let sink = GraphSink::new(&graph)
        .unwrap()
        .with_run_budget(run_budget(lease));
    let worker = RunningWorker::start(&db, s, Arc::new(sink));

    let started = tokio::time::Instant::now();
    let mut expected: HashMap<&str, Vec<i64>> = HashMap::new();
    for i in 0..50 {
        let (who, mailbox) = if i < 40 {
            (muster, MAILBOX)
        } else {
            (huber, "hhuber@kanzlei.at")
        };
        let id = db.appointment(&format!("Termin {i}"), 24 + i, &[who]).await;
        expected.entry(mailbox).or_default().push(id);
    }
    eventually(
        WAIT,
        "all 50 appointments delivered and the queue drained",
        || async {
            let arrived = expected
                .iter()
                .all(|(mailbox, ids)| held(&fake, mailbox).len() == ids.len());
            (arrived && queued(&db).await == 0).then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    worker.stop().await;

    let requests = fake.graph_requests();
    let count = |f: &dyn Fn(&livesync_testkit::graph_fake::Recorded) -> bool| {
        requests.iter().filter(|r| f(r)).count()
    };
    eprintln!(
        "graph fault profile, lease {} s: 50 appointments delivered in {:.2} s ({} requests, {} throttled, {} answers lost)",
        lease.as_secs(),
        elapsed.as_secs_f64(),
        requests.len(),
        count(&|r| r.status == 429),
        count(&|r| r.dropped),
    );
    assert!(
        count(&|r| r.status == 429) > 0 && count(&|r| r.dropped) > 0,
        "the faults happened"
    );
    for (mailbox, ids) in &expected {
        let held = held(&fake, mailbox);
        assert_eq!(
            held.keys().copied().collect::<Vec<_>>(),
            *ids,
            "{mailbox} holds exactly its appointments"
        );
        assert!(
            held.values().all(|n| *n == 1),
            "duplicates in {mailbox}: {held:?}"
        );
        let max = fake.max_in_flight(mailbox);
        assert!(max <= 4, "{mailbox} saw {max} requests at once");
    }
    // An entry may be charged only for its own failed requests: the profile's lost
    // answers are all resolved by the lookup, so nobody is.
    assert_nobody_charged(&db).await;
    elapsed
}

#[tokio::test]
async fn under_graphs_documented_faults_everything_arrives_once_and_nobody_is_charged() {
    // As in production with Graph: batches of 50, a lease of 60 s.
    deliver_under_the_documented_faults(Duration::from_secs(60), 50).await;
}

#[tokio::test]
async fn under_graphs_documented_faults_a_short_lease_still_delivers_everything() {
    // The tests' lease of 5 s: the worker waits 3.3 s for a batch, the sink starts changes
    // for 1.7 s of it.
    deliver_under_the_documented_faults(Duration::from_secs(5), 500).await;
}

#[tokio::test]
async fn a_mailbox_paused_past_the_batch_postpones_its_entries_without_charging_them() {
    let fake = FakeGraph::start().await;
    fake.throttle(1, "30");
    let (db, lawyer, worker, _dir) = firm_with_worker(&fake).await;
    for i in 0..3 {
        db.appointment(&format!("Termin {i}"), 24 + i, &[lawyer])
            .await;
    }
    eventually(WAIT, "the entries postponed", || async {
        let waiting: i64 = db
            .scalar("select count(*) from livesync.queue where last_error like '%throttles%'")
            .await;
        (waiting == 3).then_some(())
    })
    .await;
    worker.stop().await;
    let rows: Vec<(i32, f64)> = sqlx::query_as(
        "select attempts, extract(epoch from not_before - now())::float8 from livesync.queue",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (attempts, wait) in rows {
        assert_eq!(attempts, 0, "throttling is not the entry's failure");
        assert!(wait > 20.0, "postponed for the pause: {wait} s left");
    }
    assert_eq!(fake.graph_requests().len(), 1, "sent nothing while paused");
    assert!(fake.events(MAILBOX).is_empty());
}
