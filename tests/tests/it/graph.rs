//! The Microsoft Graph sink against an in-process fake of Graph and its token endpoint
//! (`graph_fake`): the exact requests sent, and the worker delivering through it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use livesync_worker::config::{GraphSettings, Secret};
use livesync_worker::sink::graph::GraphSink;
use livesync_worker::sink::graph::event::{HASH_PROPERTY, UID_PROPERTY, XPERT_ID_PROPERTY};
use livesync_worker::sink::{
    Appointment, CalendarOwner, CalendarSink, Change, RemoteRef, RenderContext, SinkError,
};
use serde_json::json;

use crate::helpers::{TestDb, eventually};
use crate::mailbox_support::{
    self, MAILBOX, OWN_ADDRESS, Remote, all_day_across_the_clock_change, apply_alone, appointment,
    batch, delete, owner, owner_at_own_address, test_mailbox_owner, vienna,
};
use crate::worker_support::RunningWorker;
use livesync_testkit::graph_fake::{CLIENT_ID, FakeGraph, SECRET, TENANT};

const WAIT: Duration = Duration::from_secs(15);

pub(crate) fn settings(fake: &FakeGraph) -> GraphSettings {
    captured_logs();
    GraphSettings {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(SECRET),
        mailbox_template: "{username}@kanzlei.at".into(),
        base_url: fake.base_url.clone(),
        login_url: fake.login_url.clone(),
        request_timeout: Duration::from_secs(2),
    }
}

/// Create or update `a`; `previous` is the id of the event the calendar holds for it.
pub(crate) fn upsert(a: Appointment, previous: Option<&str>) -> Change {
    mailbox_support::upsert(
        a,
        previous.map(|id| RemoteRef {
            remote_id: Some(id.into()),
            etag: None,
        }),
    )
}

/// A firm in push mode with one lawyer (`mmuster`) and a worker delivering through Graph.
pub(crate) async fn firm_with_worker(
    fake: &FakeGraph,
) -> (TestDb, i64, RunningWorker, tempfile::TempDir) {
    mailbox_support::firm_with_worker(Remote::Graph(settings(fake))).await
}

async fn remote_id(db: &TestDb, user: i64, appointment: i64) -> Option<String> {
    sqlx::query_scalar(
        "select remote_id from livesync.delivered where user_id = $1 and appointment_id = $2",
    )
    .bind(user)
    .bind(appointment)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
    .flatten()
}

async fn queued(db: &TestDb, user: i64) -> i64 {
    sqlx::query_scalar("select queued from livesync.user_status where user_id = $1")
        .bind(user)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_worker_creates_updates_and_deletes_events_with_the_documented_requests() {
    let fake = FakeGraph::start().await;
    let (db, lawyer, worker, _dir) = firm_with_worker(&fake).await;

    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let id = eventually(WAIT, "the event is created and recorded", || async {
        remote_id(&db, lawyer, a).await
    })
    .await;

    // Token: client credentials with the Graph scope.
    let tokens = fake.token_requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].path, format!("/login/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(tokens[0].body["grant_type"], "client_credentials");
    assert_eq!(tokens[0].body["client_id"], CLIENT_ID);
    assert_eq!(
        tokens[0].body["scope"],
        "https://graph.microsoft.com/.default"
    );

    // Calendar looked up by name, then created.
    let reqs = fake.graph_requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, format!("/users/{MAILBOX}/calendars"));
    assert_eq!(reqs[0].query["$filter"], "name eq 'notarXpert'");
    assert_eq!(reqs[1].method, "POST");
    assert_eq!(reqs[1].path, format!("/users/{MAILBOX}/calendars"));
    assert_eq!(reqs[1].body, json!({"name": "notarXpert"}));
    let calendar = fake.calendars(MAILBOX)[0].0.clone();

    // The event.
    let create = &reqs[2];
    assert_eq!(create.method, "POST");
    assert_eq!(
        create.path,
        format!("/users/{MAILBOX}/calendars/{calendar}/events")
    );
    for r in &reqs {
        assert_eq!(r.header("prefer"), Some("IdType=\"ImmutableId\""), "{r:?}");
        assert!(r.header("authorization").unwrap().starts_with("Bearer "));
    }
    let body = &create.body;
    assert_eq!(body["subject"], "Tagsatzung");
    assert_eq!(body["body"]["contentType"], "text");
    assert_eq!(body["start"]["timeZone"], "W. Europe Standard Time");
    assert_eq!(body["end"]["timeZone"], "W. Europe Standard Time");
    assert_eq!(body["isAllDay"], false);
    assert!(body.get("attendees").is_none());
    assert_eq!(body["transactionId"].as_str().unwrap().len(), 36);
    // The appointment id, the UID and the stamp (the content hash).
    let properties = &body["singleValueExtendedProperties"];
    assert_eq!(
        properties[0],
        json!({"id": XPERT_ID_PROPERTY, "value": a.to_string()})
    );
    assert_eq!(
        properties[1],
        json!({"id": UID_PROPERTY, "value": format!("xpert-termin-{a}@livesync")})
    );
    assert_eq!(properties[2]["id"], HASH_PROPERTY);
    assert_eq!(properties[2]["value"].as_str().unwrap().len(), 32);
    assert_eq!(properties.as_array().unwrap().len(), 3);
    assert_eq!(fake.events(MAILBOX).len(), 1);
    assert_eq!(fake.events(MAILBOX)[0].0, id);

    // Update: PATCH of the recorded id.
    sqlx::query("update xpert.appointments set subject = 'Tagsatzung verlegt' where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "the event is updated", || async {
        (fake.events(MAILBOX)[0].1.json["subject"] == "Tagsatzung verlegt").then_some(())
    })
    .await;
    let patch = fake.graph_requests().last().cloned().unwrap();
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, format!("/users/{MAILBOX}/events/{id}"));
    assert!(patch.body.get("transactionId").is_none());

    // Delete.
    sqlx::query("delete from xpert.appointments where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "the event is deleted", || async {
        fake.events(MAILBOX).is_empty().then_some(())
    })
    .await;
    let delete = fake.graph_requests().last().cloned().unwrap();
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.path, format!("/users/{MAILBOX}/events/{id}"));
    eventually(WAIT, "the queue drained", || async {
        (queued(&db, lawyer).await == 0).then_some(())
    })
    .await;
    assert_eq!(fake.token_requests().len(), 1, "the token is cached");
    assert_eq!(fake.calendars(MAILBOX).len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn a_throttled_create_is_retried_no_sooner_than_retry_after() {
    let fake = FakeGraph::start().await;
    // The first Graph request (the calendar lookup) is throttled.
    fake.throttle(1, "1.5");
    let (db, lawyer, worker, _dir) = firm_with_worker(&fake).await;
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(WAIT, "delivered after the throttling", || async {
        remote_id(&db, lawyer, a).await
    })
    .await;
    let reqs = fake.graph_requests();
    assert_eq!(reqs[0].status, 429);
    assert!(
        reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(1500),
        "retried after {:?}",
        reqs[1].at.duration_since(reqs[0].at)
    );
    assert_eq!(fake.events(MAILBOX).len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn a_lost_answer_to_a_create_makes_no_duplicate() {
    let fake = FakeGraph::start().await;
    // The event is created, but the answer comes after the client gave up (2 s).
    fake.hold_next_create(Duration::from_secs(4));
    let (db, lawyer, worker, _dir) = firm_with_worker(&fake).await;
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let id = eventually(WAIT, "delivered after the lost answer", || async {
        remote_id(&db, lawyer, a).await
    })
    .await;
    let events = fake.events(MAILBOX);
    assert_eq!(events.len(), 1, "no duplicate");
    assert_eq!(events[0].0, id, "the first event was adopted");
    let reqs = fake.graph_requests();
    let creates = reqs
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .count();
    assert_eq!(creates, 1, "looked up, not created again: {reqs:#?}");
    let lookup = reqs
        .iter()
        .find(|r| r.method == "GET" && r.path.ends_with("/events"))
        .expect("a lookup by the extended property");
    assert_eq!(
        lookup.query["$filter"],
        format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq '{XPERT_ID_PROPERTY}' and ep/value eq '{a}')"
        )
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_repeated_create_after_a_restart_adopts_the_event_by_transaction_id() {
    let fake = FakeGraph::start().await;
    let change = upsert(appointment(42, "Beurkundung"), None);
    let first = GraphSink::new(&settings(&fake)).unwrap();
    let r1 = first
        .apply(&owner(), std::slice::from_ref(&change), &vienna())
        .await;
    // A new process that never heard the answer sends the same creation again.
    let second = GraphSink::new(&settings(&fake)).unwrap();
    let r2 = second.apply(&owner(), &[change], &vienna()).await;
    assert_eq!(
        r1[0].as_ref().unwrap().remote_id,
        r2[0].as_ref().unwrap().remote_id
    );
    assert_eq!(fake.events(MAILBOX).len(), 1);

    // Changed meanwhile: Graph refuses the transaction id, the sink finds and updates it.
    let third = GraphSink::new(&settings(&fake)).unwrap();
    let changed = upsert(appointment(42, "Beurkundung (verlegt)"), None);
    let r3 = third.apply(&owner(), &[changed], &vienna()).await;
    assert_eq!(
        r1[0].as_ref().unwrap().remote_id,
        r3[0].as_ref().unwrap().remote_id
    );
    let events = fake.events(MAILBOX);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.json["subject"], "Beurkundung (verlegt)");
    let statuses: Vec<(String, u16)> = fake
        .graph_requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert!(statuses.contains(&("POST".into(), 400)), "{statuses:?}");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_delivery_succeeds() {
    let fake = FakeGraph::start().await;
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let r = sink
        .apply(
            &owner(),
            &[upsert(appointment(1, "Erster"), None)],
            &vienna(),
        )
        .await;
    assert!(r[0].is_ok());
    fake.expire_tokens();
    let r = sink
        .apply(
            &owner(),
            &[upsert(appointment(2, "Zweiter"), None)],
            &vienna(),
        )
        .await;
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(fake.token_requests().len(), 2);
    let statuses: Vec<u16> = fake.graph_requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&401), "{statuses:?}");
    assert_eq!(fake.events(MAILBOX).len(), 2);
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let fake = FakeGraph::start().await;
    fake.set_expires_in(2);
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    sink.apply(
        &owner(),
        &[upsert(appointment(1, "Erster"), None)],
        &vienna(),
    )
    .await[0]
        .as_ref()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sink.apply(
        &owner(),
        &[upsert(appointment(2, "Zweiter"), None)],
        &vienna(),
    )
    .await[0]
        .as_ref()
        .unwrap();
    assert_eq!(fake.token_requests().len(), 2);
    assert!(fake.graph_requests().iter().all(|r| r.status != 401));
}

#[tokio::test]
async fn deleting_a_missing_event_succeeds_and_a_missing_event_is_recreated_on_update() {
    let fake = FakeGraph::start().await;
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let r = sink
        .apply(&owner(), &[delete(5, "AAMkImm-gone=".into())], &vienna())
        .await;
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(fake.graph_requests()[0].status, 404);

    let created = sink
        .apply(
            &owner(),
            &[upsert(appointment(6, "Mandant"), None)],
            &vienna(),
        )
        .await[0]
        .clone()
        .unwrap();
    let id = created.remote_id.unwrap();
    fake.delete_event(MAILBOX, &id); // deleted in Outlook
    let r = sink
        .apply(
            &owner(),
            &[upsert(appointment(6, "Mandant neu"), Some(&id))],
            &vienna(),
        )
        .await;
    let new_id = r[0].as_ref().unwrap().remote_id.clone().unwrap();
    assert_ne!(new_id, id);
    let events = fake.events(MAILBOX);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.json["subject"], "Mandant neu");
}

#[tokio::test]
async fn all_day_events_and_the_per_user_mailbox() {
    let fake = FakeGraph::start().await;
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let a = all_day_across_the_clock_change(9, "Urlaub");
    let who = owner_at_own_address();
    let r = sink.apply(&who, &[upsert(a, None)], &vienna()).await;
    assert!(r[0].is_ok(), "{r:?}");
    let events = fake.events(OWN_ADDRESS);
    assert_eq!(events.len(), 1);
    let e = &events[0].1.json;
    assert_eq!(e["isAllDay"], true);
    assert_eq!(
        e["start"],
        json!({"dateTime": "2026-03-28T00:00:00", "timeZone": "W. Europe Standard Time"})
    );
    assert_eq!(
        e["end"],
        json!({"dateTime": "2026-03-30T00:00:00", "timeZone": "W. Europe Standard Time"})
    );
    assert!(fake.events(MAILBOX).is_empty());

    // A timed appointment in summer time: local wall-clock time with the Windows name.
    let london = RenderContext {
        time_zone: chrono_tz::Europe::London,
    };
    let mut b = appointment(10, "London");
    b.starts_at = Utc.with_ymd_and_hms(2026, 7, 1, 9, 0, 0).unwrap();
    b.ends_at = b.starts_at + chrono::Duration::hours(1);
    sink.apply(&who, &[upsert(b, None)], &london).await[0]
        .as_ref()
        .unwrap();
    let posted = fake.graph_requests().last().cloned().unwrap();
    assert_eq!(
        posted.body["start"],
        json!({"dateTime": "2026-07-01T10:00:00", "timeZone": "GMT Standard Time"})
    );
}

#[tokio::test]
async fn never_more_than_four_requests_per_mailbox_at_once() {
    let fake = FakeGraph::start().await;
    fake.delay_each(Duration::from_millis(40));
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let changes = batch(1..=20);
    let other = CalendarOwner {
        user_id: 2,
        username: "hhuber".into(),
        calendar_address: None,
    };
    let others = batch(21..=28);
    let (me, ctx) = (owner(), vienna());
    let (r, r2) = tokio::join!(
        sink.apply(&me, &changes, &ctx),
        sink.apply(&other, &others, &ctx)
    );
    assert!(r.iter().chain(r2.iter()).all(Result::is_ok));
    assert_eq!(fake.events(MAILBOX).len(), 20);
    assert_eq!(fake.events("hhuber@kanzlei.at").len(), 8);
    assert_eq!(fake.max_in_flight(MAILBOX), 4, "at most 4, and 4 used");
    assert!(fake.max_in_flight("hhuber@kanzlei.at") <= 4);
}

#[tokio::test]
async fn a_long_batch_hands_back_what_it_could_not_start_in_time() {
    let fake = FakeGraph::start().await;
    fake.delay_each(Duration::from_millis(200));
    let sink = GraphSink::new(&settings(&fake))
        .unwrap()
        .with_run_budget(Duration::from_millis(700));
    let changes = batch(1..=40);
    let r = sink.apply(&owner(), &changes, &vienna()).await;
    let done = r.iter().filter(|r| r.is_ok()).count();
    assert!((4..40).contains(&done), "{done} delivered");
    for result in &r[done..] {
        assert!(
            matches!(result, Err(SinkError::Deferred { .. })),
            "{result:?}"
        );
    }
    assert_eq!(fake.events(MAILBOX).len(), done);
}

#[tokio::test]
async fn refused_permissions_are_configuration_errors_that_name_the_permission() {
    let fake = FakeGraph::start().await;
    fake.forbid(MAILBOX);
    let sink = GraphSink::new(&settings(&fake)).unwrap();
    let r = sink
        .apply(
            &owner(),
            &[
                upsert(appointment(1, "A"), None),
                upsert(appointment(2, "B"), None),
            ],
            &vienna(),
        )
        .await;
    for result in &r {
        match result {
            Err(SinkError::Config { message }) => {
                assert!(message.contains("Calendars.ReadWrite"), "{message}");
                assert!(message.contains(MAILBOX), "{message}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    assert_eq!(
        fake.graph_requests().len(),
        1,
        "the second change is not sent"
    );
}

/// A `tracing` writer into memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything the worker logs while this test binary runs (from the first Graph test
/// on), at every level. A process-wide subscriber: a thread-local one misses events
/// when tests run in parallel.
fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("livesync_worker=trace"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        captured
    })
}

#[tokio::test]
async fn the_secret_and_tokens_appear_in_no_log_line_error_or_debug_output() {
    let fake = FakeGraph::start().await;
    let captured = captured_logs();

    let (db, lawyer, worker, _dir) = firm_with_worker(&fake).await;
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(WAIT, "delivered", || async {
        remote_id(&db, lawyer, a).await
    })
    .await;
    fake.expire_tokens();
    sqlx::query("update xpert.appointments set subject = 'Neu' where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "updated", || async {
        (fake.events(MAILBOX)[0].1.json["subject"] == "Neu").then_some(())
    })
    .await;
    worker.stop().await;

    // A wrong secret: a configuration error that does not echo it.
    let wrong = "Falsch~Secret_4711";
    let mut bad = settings(&fake);
    bad.client_secret = Secret::new(wrong);
    let sink = GraphSink::new(&bad).unwrap();
    let e = sink.check().await.unwrap_err();
    assert!(matches!(e, SinkError::Config { .. }), "{e:?}");
    let r = sink
        .apply(&owner(), &[upsert(appointment(3, "C"), None)], &vienna())
        .await;
    let errors = format!("{e} {e:?} {r:?} {sink:?}");
    assert!(!errors.contains(wrong), "{errors}");
    assert!(errors.contains("LIVESYNC_GRAPH_CLIENT_SECRET"), "{errors}");

    let good = GraphSink::new(&settings(&fake)).unwrap();
    good.check().await.unwrap();
    let debug = format!("{good:?}");
    assert!(
        !debug.contains(SECRET) && !debug.contains("fake-token"),
        "{debug}"
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("Graph request"), "the capture works: {logs}");
    for secret in [SECRET, wrong, "fake-token"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

/// Opt-in: the sink's contract against a real Microsoft 365 tenant. Needs
/// `LIVESYNC_GRAPH_TEST_TENANT_ID`, `…_CLIENT_ID`, `…_CLIENT_SECRET` and `…_MAILBOX` (a test
/// mailbox: it gets a "notarXpert" calendar and short-lived events) and runs only when asked
/// for: `cargo test -p livesync-tests --test it -- --ignored real_tenant`.
#[tokio::test]
#[ignore = "needs a real Microsoft 365 tenant (LIVESYNC_GRAPH_TEST_*); run with --ignored"]
async fn the_contract_holds_against_a_real_tenant_when_configured() {
    let var = |name: &str| std::env::var(format!("LIVESYNC_GRAPH_TEST_{name}")).ok();
    let (Some(tenant), Some(client), Some(secret), Some(mailbox)) = (
        var("TENANT_ID"),
        var("CLIENT_ID"),
        var("CLIENT_SECRET"),
        var("MAILBOX"),
    ) else {
        panic!("set LIVESYNC_GRAPH_TEST_TENANT_ID, _CLIENT_ID, _CLIENT_SECRET and _MAILBOX");
    };
    let settings = GraphSettings {
        tenant_id: tenant,
        client_id: client,
        client_secret: Secret::new(secret),
        mailbox_template: mailbox,
        base_url: "https://graph.microsoft.com/v1.0".into(),
        login_url: "https://login.microsoftonline.com".into(),
        request_timeout: Duration::from_secs(30),
    };
    let sink = GraphSink::new(&settings).unwrap();
    sink.check().await.expect("a token");
    let who = test_mailbox_owner();
    let id = 9_000_000_000 + i64::from(std::process::id());
    let apply = |change: Change| apply_alone(&sink, &who, change);
    let first = apply(upsert(appointment(id, "livesync Test"), None)).await;
    let event = first.remote_id.clone().unwrap();
    // The same creation again (as after a lost answer in another process).
    let again = GraphSink::new(&settings).unwrap();
    let repeated = apply_alone(&again, &who, upsert(appointment(id, "livesync Test"), None)).await;
    assert_eq!(repeated.remote_id, first.remote_id, "no duplicate");
    let updated = apply(upsert(
        appointment(id, "livesync Test geändert"),
        Some(&event),
    ))
    .await;
    assert_eq!(updated.remote_id, first.remote_id);
    apply(delete(id, event.clone())).await;
    apply(delete(id, event.clone())).await; // already gone
    let recreated = apply(upsert(appointment(id, "livesync Test neu"), Some(&event))).await;
    assert_ne!(recreated.remote_id.as_deref(), Some(event.as_str()));
    apply(delete(id, recreated.remote_id.unwrap())).await;
}
