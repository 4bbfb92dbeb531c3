//! Verification and repair of the remote mailbox sinks (Graph, EWS) against their fakes: a
//! calendar changed behind livesync's back as a person does it in Outlook (an item
//! deleted, which moves it to Deleted Items; one edited; one copied; a foreign one added;
//! one of ours that Xpert does not know; the whole calendar deleted) is reported exactly
//! so; `--repair` fixes it through the queue with a worker running, bringing the deleted
//! item back into the calendar instead of updating the copy in Deleted Items; the foreign
//! item stays; a second verification is clean. Once more under each service's documented
//! faults (Graph's 429s and lost answers, EWS's `ErrorServerBusy`), with the same end.

use std::collections::BTreeMap;
use std::sync::Arc;

use livesync_testkit::ews_fake::{self, FakeEws};
use livesync_testkit::graph_fake::{self, FakeGraph};
use livesync_worker::sink::CalendarSink;
use livesync_worker::sink::ews::EwsSink;
use livesync_worker::sink::graph::GraphSink;
use livesync_worker::sink::graph::event::XPERT_ID_PROPERTY;
use livesync_worker::verify::compare::{State, our_appointment};
use serde_json::json;

use crate::mailbox_support::{MAILBOX, Remote, apply_alone, firm_with_worker, owner, upsert};
use crate::verify::{
    EDITED, appointments, drained, found, ok, reports_changed_behind_its_back, unknown_appointment,
    verify,
};

/// What a person does to their mailbox in Outlook, and what the test reads of it.
trait Outlook {
    /// The items of ours in livesync's calendar, by appointment.
    fn ours(&self) -> BTreeMap<i64, Vec<String>>;
    /// Delete an item: it moves to Deleted Items.
    fn delete(&self, item: &str);
    fn edit_subject(&self, item: &str, subject: &str);
    /// Copy an item into the same calendar.
    fn copy(&self, item: &str);
    /// Someone else's item in livesync's calendar; its id.
    fn add_foreign(&self) -> String;
    /// Whether livesync's calendar holds `item`.
    fn holds(&self, item: &str) -> bool;
    /// What Deleted Items holds: (appointment, subject) per item.
    fn deleted_items(&self) -> Vec<(Option<i64>, String)>;
    /// Delete livesync's whole calendar.
    fn wipe(&self);
}

/// The foreign item's subject and time (UTC).
const FOREIGN: (&str, &str, &str) = (
    "Mittagessen mit der Kollegin",
    "2030-06-03T10:00:00",
    "2030-06-03T11:00:00",
);

struct GraphOutlook(FakeGraph);

impl GraphOutlook {
    fn calendar(&self) -> String {
        self.0.calendars(MAILBOX)[0].0.clone()
    }

    fn appointment_of(json: &serde_json::Value) -> Option<i64> {
        json["singleValueExtendedProperties"]
            .as_array()?
            .iter()
            .find(|p| p["id"] == XPERT_ID_PROPERTY)?["value"]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Outlook for GraphOutlook {
    fn ours(&self) -> BTreeMap<i64, Vec<String>> {
        let mut ours: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (id, e) in self.0.events(MAILBOX) {
            if e.calendar != graph_fake::DELETED_ITEMS
                && let Some(appointment) = Self::appointment_of(&e.json)
            {
                ours.entry(appointment).or_default().push(id);
            }
        }
        ours
    }
    fn delete(&self, item: &str) {
        self.0.move_to_deleted_items(MAILBOX, item);
    }
    fn edit_subject(&self, item: &str, subject: &str) {
        self.0
            .edit_in_outlook(MAILBOX, item, "subject", json!(subject));
    }
    fn copy(&self, item: &str) {
        self.0.copy_in_outlook(MAILBOX, item);
    }
    fn add_foreign(&self) -> String {
        let (subject, start, end) = FOREIGN;
        self.0.add_in_outlook(
            MAILBOX,
            &self.calendar(),
            json!({
                "subject": subject,
                "body": { "contentType": "html", "content": "<p>Beim Italiener</p>" },
                "start": { "dateTime": start, "timeZone": "UTC" },
                "end": { "dateTime": end, "timeZone": "UTC" },
                "isAllDay": false,
            }),
        )
    }
    fn holds(&self, item: &str) -> bool {
        self.0
            .events(MAILBOX)
            .iter()
            .any(|(id, e)| id == item && e.calendar != graph_fake::DELETED_ITEMS)
    }
    fn deleted_items(&self) -> Vec<(Option<i64>, String)> {
        self.0
            .events(MAILBOX)
            .into_iter()
            .filter(|(_, e)| e.calendar == graph_fake::DELETED_ITEMS)
            .map(|(_, e)| {
                (
                    Self::appointment_of(&e.json),
                    e.json["subject"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
    fn wipe(&self) {
        self.0.delete_calendar_in_outlook(MAILBOX, &self.calendar());
    }
}

struct EwsOutlook(FakeEws);

impl EwsOutlook {
    fn folder(&self) -> String {
        self.0.folders(MAILBOX)[0].0.clone()
    }
}

impl Outlook for EwsOutlook {
    fn ours(&self) -> BTreeMap<i64, Vec<String>> {
        let mut ours: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for item in self.0.items(MAILBOX) {
            if item.folder != ews_fake::DELETED_ITEMS
                && let Some(appointment) = item.uid.as_deref().and_then(our_appointment)
            {
                ours.entry(appointment).or_default().push(item.id);
            }
        }
        ours
    }
    fn delete(&self, item: &str) {
        self.0.move_to_deleted_items(MAILBOX, item);
    }
    fn edit_subject(&self, item: &str, subject: &str) {
        self.0.edit_in_outlook(MAILBOX, item, "Subject", subject);
    }
    fn copy(&self, item: &str) {
        self.0.copy_in_outlook(MAILBOX, item);
    }
    fn add_foreign(&self) -> String {
        let (subject, start, end) = FOREIGN;
        let (start, end) = (format!("{start}Z"), format!("{end}Z"));
        self.0.add_in_outlook(
            MAILBOX,
            &self.folder(),
            &[
                ("Subject", subject),
                ("Body", "Beim Italiener"),
                ("Start", &start),
                ("End", &end),
                ("IsAllDayEvent", "false"),
            ],
        )
    }
    fn holds(&self, item: &str) -> bool {
        self.0
            .items(MAILBOX)
            .iter()
            .any(|i| i.id == item && i.folder != ews_fake::DELETED_ITEMS)
    }
    fn deleted_items(&self) -> Vec<(Option<i64>, String)> {
        self.0
            .items(MAILBOX)
            .into_iter()
            .filter(|i| i.folder == ews_fake::DELETED_ITEMS)
            .map(|i| {
                (
                    i.uid.as_deref().and_then(our_appointment),
                    i.field("Subject").unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
    fn wipe(&self) {
        self.0.delete_folder_in_outlook(MAILBOX, &self.folder());
    }
}

/// The scenario: a worker delivers through `remote`; `sink` (another one, as
/// `livesync-admin verify` has) verifies; `outlook` changes the mailbox.
async fn changed_behind_livesyncs_back(
    remote: Remote,
    sink: Arc<dyn CalendarSink>,
    outlook: &dyn Outlook,
) {
    let (db, user, worker, _dir) = firm_with_worker(remote).await;
    let ids = appointments(&db, user).await;
    drained(&db, user).await;
    assert_eq!(found(&verify(&db, &*sink, false).await), ok(&ids));

    // Behind livesync's back: the first deleted, the second edited, the third copied, one
    // of ours that Xpert does not know (written by another installation) and a foreign
    // one added.
    let before = outlook.ours();
    let item = |id: i64| before[&id][0].clone();
    outlook.delete(&item(ids[0]));
    outlook.edit_subject(&item(ids[1]), EDITED);
    outlook.copy(&item(ids[2]));
    apply_alone(&*sink, &owner(), upsert(unknown_appointment(), None)).await;
    let foreign = outlook.add_foreign();

    let report = verify(&db, &*sink, false).await;
    reports_changed_behind_its_back(&report, &ids);

    let repaired = verify(&db, &*sink, true).await;
    assert_eq!(repaired.queued, 4, "missing, drifted, duplicated, unknown");
    drained(&db, user).await;
    let mut clean = ok(&ids);
    clean.push((State::Foreign, None));
    assert_eq!(found(&verify(&db, &*sink, false).await), clean);
    assert!(outlook.holds(&foreign), "the foreign item is left alone");
    let after = outlook.ours();
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), ids);
    assert!(
        after.values().all(|items| items.len() == 1),
        "one item per appointment: {after:?}"
    );
    assert_ne!(
        after[&ids[0]], before[&ids[0]],
        "created anew in the calendar"
    );
    assert_eq!(
        outlook.deleted_items(),
        [(Some(ids[0]), "Termin 0".to_string())],
        "the item in Deleted Items is left as it was"
    );

    // The calendar deleted: every appointment missing, rebuilt by the repair.
    outlook.wipe();
    let missing: Vec<_> = ids.iter().map(|id| (State::Missing, Some(*id))).collect();
    assert_eq!(found(&verify(&db, &*sink, false).await), missing);
    assert_eq!(verify(&db, &*sink, true).await.queued, 5);
    drained(&db, user).await;
    assert_eq!(found(&verify(&db, &*sink, false).await), ok(&ids));
    worker.stop().await;
}

async fn graph_calendar_changed_behind_livesyncs_back(faults: bool) {
    let fake = FakeGraph::start().await;
    if faults {
        fake.set_profile(graph_fake::FaultProfile::documented(19));
    }
    let settings = crate::graph::settings(&fake);
    let sink = Arc::new(GraphSink::new(&settings).unwrap());
    changed_behind_livesyncs_back(Remote::Graph(settings), sink, &GraphOutlook(fake.clone())).await;
    if faults {
        let requests = fake.graph_requests();
        let throttled = requests.iter().filter(|r| r.status == 429).count();
        let lost = requests.iter().filter(|r| r.dropped).count();
        eprintln!("graph, documented faults: {throttled} throttled, {lost} answers lost");
        assert!(throttled > 0, "the faults happened");
    }
}

async fn ews_calendar_changed_behind_livesyncs_back(faults: bool) {
    let fake = FakeEws::start().await;
    if faults {
        fake.set_profile(ews_fake::FaultProfile::documented(19));
    }
    let settings = crate::ews::settings(&fake);
    let sink = Arc::new(EwsSink::new(&settings).unwrap());
    changed_behind_livesyncs_back(Remote::Ews(settings), sink, &EwsOutlook(fake.clone())).await;
    if faults {
        let requests = fake.requests();
        let busy = requests
            .iter()
            .filter(|r| r.code == "ErrorServerBusy")
            .count();
        let lost = requests.iter().filter(|r| r.dropped).count();
        eprintln!("ews, documented faults: {busy} busy, {lost} answers lost");
        assert!(busy > 0, "the faults happened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_calendar_changed_behind_livesyncs_back_is_reported_and_repaired() {
    graph_calendar_changed_behind_livesyncs_back(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_graphs_documented_faults_verify_and_repair_end_the_same() {
    graph_calendar_changed_behind_livesyncs_back(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ews_calendar_changed_behind_livesyncs_back_is_reported_and_repaired() {
    ews_calendar_changed_behind_livesyncs_back(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ews_documented_faults_verify_and_repair_end_the_same() {
    ews_calendar_changed_behind_livesyncs_back(true).await;
}
