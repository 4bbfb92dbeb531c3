//! The EWS sink against an in-process fake of Exchange Web Services (`ews_fake`): the
//! exact requests sent, idempotency, the ChangeKey policy, throttling, error classes, NTLM
//! against an independent acceptor, and the worker delivering through it.

use std::time::Duration;

use livesync_worker::config::{EwsAuth, EwsSettings, Secret, Settings, SinkKind};
use livesync_worker::sink::ews::EwsSink;
use livesync_worker::sink::ews::item::{PROPERTY_NAME, PROPERTY_SET_ID};
use livesync_worker::sink::{
    Appointment, CalendarOwner, CalendarSink, Change, RemoteRef, SinkError,
};

use crate::helpers::{TestDb, eventually};
use crate::mailbox_support::{
    self, MAILBOX, OWN_ADDRESS, Remote, all_day_across_the_clock_change, apply_alone, appointment,
    batch, delete, owner, owner_at_own_address, test_mailbox_owner, uid, vienna,
};
use crate::worker_support::{RunningWorker, test_settings};
use livesync_testkit::ews_fake::{Busy, FakeEws, PASSWORD, USER};

const WAIT: Duration = Duration::from_secs(15);

pub(crate) fn settings(fake: &FakeEws) -> EwsSettings {
    EwsSettings {
        url: fake.url.clone(),
        username: USER.into(),
        password: Secret::new(PASSWORD),
        mailbox_template: "{username}@kanzlei.at".into(),
        auth: EwsAuth::Basic,
        version: "Exchange2016".into(),
        ca_file: None,
        max_concurrency: 8,
        max_per_mailbox: 3,
        request_timeout: Duration::from_secs(2),
    }
}

/// Create or update `a`; `previous` is the (ItemId, ChangeKey) the calendar holds for it.
pub(crate) fn upsert(a: Appointment, previous: Option<(&str, &str)>) -> Change {
    mailbox_support::upsert(
        a,
        previous.map(|(id, ck)| RemoteRef {
            remote_id: Some(id.into()),
            etag: Some(ck.into()),
        }),
    )
}

/// A firm in push mode with one lawyer (`mmuster`) and a worker delivering through EWS.
async fn firm_with_worker(fake: &FakeEws) -> (TestDb, i64, RunningWorker, tempfile::TempDir) {
    mailbox_support::firm_with_worker(Remote::Ews(settings(fake))).await
}

async fn delivered(db: &TestDb, user: i64, appointment: i64) -> Option<(String, String)> {
    sqlx::query_as::<_, (Option<String>, Option<String>)>(
        "select remote_id, etag from livesync.delivered where user_id = $1 and appointment_id = $2",
    )
    .bind(user)
    .bind(appointment)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
    .and_then(|(r, e)| Some((r?, e?)))
}

fn no_schema_errors(fake: &FakeEws) {
    let refused: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.code == "ErrorSchemaValidation")
        .collect();
    assert!(refused.is_empty(), "Exchange would refuse: {refused:#?}");
}

#[tokio::test]
async fn the_worker_creates_updates_and_deletes_items_with_the_documented_requests() {
    let fake = FakeEws::start().await;
    let (db, lawyer, worker, _dir) = firm_with_worker(&fake).await;

    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let (id, ck) = eventually(WAIT, "the item is created and recorded", || async {
        delivered(&db, lawyer, a).await
    })
    .await;

    let reqs = fake.requests();
    let ops: Vec<&str> = reqs.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        ops,
        ["FindFolder", "CreateFolder", "FindItem", "CreateItem"],
        "folder looked up by name and created, the UID looked up, then created"
    );
    for r in &reqs {
        assert!(r.header("authorization").unwrap().starts_with("Basic "));
        assert_eq!(r.header("x-anchormailbox"), Some(MAILBOX));
        assert_eq!(r.mailbox.as_deref(), Some(MAILBOX), "impersonated");
        assert_eq!(
            r.attr("RequestServerVersion", "Version").as_deref(),
            Some("Exchange2016")
        );
        assert!(r.header("content-type").unwrap().starts_with("text/xml"));
    }
    assert_eq!(
        reqs[0].attr("Constant", "Value").as_deref(),
        Some("notarXpert")
    );
    assert_eq!(
        reqs[0].attr("DistinguishedFolderId", "Id").as_deref(),
        Some("calendar")
    );
    assert_eq!(reqs[1].text("DisplayName").as_deref(), Some("notarXpert"));
    let folder = fake.folders(MAILBOX)[0].0.clone();
    assert_eq!(
        reqs[2].attr("FolderId", "Id").as_deref(),
        Some(folder.as_str())
    );
    assert_eq!(
        reqs[2].attr("ExtendedFieldURI", "PropertySetId").as_deref(),
        Some(PROPERTY_SET_ID)
    );
    assert_eq!(
        reqs[2].attr("Constant", "Value"),
        Some(format!("xpert-termin-{a}@livesync"))
    );

    let create = &reqs[3];
    assert_eq!(
        create
            .attr("CreateItem", "SendMeetingInvitations")
            .as_deref(),
        Some("SendToNone")
    );
    assert_eq!(
        create.attr("FolderId", "Id").as_deref(),
        Some(folder.as_str())
    );
    assert_eq!(
        create.children("CalendarItem"),
        [
            "Subject",
            "Body",
            "ExtendedProperty",
            "ExtendedProperty",
            "Start",
            "End",
            "IsAllDayEvent",
            "StartTimeZone",
            "EndTimeZone"
        ],
        "schema order (the UID and the stamp); no attendees"
    );
    let items = fake.items(MAILBOX);
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(
        (item.id.as_str(), item.change_key.as_str()),
        (id.as_str(), ck.as_str())
    );
    assert_eq!(item.uid, Some(format!("xpert-termin-{a}@livesync")));
    assert_eq!(item.field("Subject"), Some("Tagsatzung"));
    assert_eq!(item.field("StartTimeZone"), Some("W. Europe Standard Time"));
    assert_eq!(item.field("IsAllDayEvent"), Some("false"));
    assert_eq!(item.field("BodyType"), Some("Text"));
    assert!(item.field("Start").unwrap().ends_with('Z'));
    assert_eq!(item.folder, folder);

    // Update: the recorded ItemId and ChangeKey.
    sqlx::query("update xpert.appointments set subject = 'Tagsatzung verlegt' where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    let (id2, ck2) = eventually(WAIT, "the item is updated", || async {
        let d = delivered(&db, lawyer, a).await?;
        (d.1 != ck).then_some(d)
    })
    .await;
    assert_eq!(id2, id);
    let update = fake.requests_of("UpdateItem").last().cloned().unwrap();
    assert_eq!(update.attr("ItemId", "Id"), Some(id.clone()));
    assert_eq!(update.attr("ItemId", "ChangeKey"), Some(ck.clone()));
    assert_eq!(
        update.attr("UpdateItem", "ConflictResolution").as_deref(),
        Some("AlwaysOverwrite")
    );
    assert_eq!(
        update
            .attr("UpdateItem", "SendMeetingInvitationsOrCancellations")
            .as_deref(),
        Some("SendToNone")
    );
    let item = &fake.items(MAILBOX)[0];
    assert_eq!(item.field("Subject"), Some("Tagsatzung verlegt"));
    assert_eq!(item.change_key, ck2);

    // Delete.
    sqlx::query("delete from xpert.appointments where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "the item is deleted", || async {
        fake.items(MAILBOX).is_empty().then_some(())
    })
    .await;
    let delete = fake.requests_of("DeleteItem").last().cloned().unwrap();
    assert_eq!(delete.attr("ItemId", "Id"), Some(id));
    assert_eq!(
        delete.attr("DeleteItem", "DeleteType").as_deref(),
        Some("HardDelete")
    );
    assert_eq!(
        delete
            .attr("DeleteItem", "SendMeetingCancellations")
            .as_deref(),
        Some("SendToNone")
    );
    assert_eq!(fake.folders(MAILBOX).len(), 1);
    assert_eq!(
        fake.requests_of("FindFolder").len(),
        1,
        "the FolderId is remembered"
    );
    no_schema_errors(&fake);
    worker.stop().await;
}

#[tokio::test]
async fn an_item_changed_in_outlook_is_overwritten_because_xpert_is_the_source_of_truth() {
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let created = sink
        .apply(
            &owner(),
            &[upsert(appointment(7, "Beurkundung"), None)],
            &vienna(),
        )
        .await
        .remove(0)
        .unwrap();
    let (id, ck) = (created.remote_id.unwrap(), created.etag.unwrap());
    // The person moves it and renames it in Outlook: the recorded ChangeKey is stale.
    fake.edit_in_outlook(MAILBOX, &id, "Subject", "Privat umbenannt");
    fake.edit_in_outlook(MAILBOX, &id, "Categories", "Rot");
    let updated = sink
        .apply(
            &owner(),
            &[upsert(
                appointment(7, "Beurkundung (verlegt)"),
                Some((&id, &ck)),
            )],
            &vienna(),
        )
        .await
        .remove(0)
        .unwrap();
    assert_eq!(updated.remote_id.as_deref(), Some(id.as_str()));
    let item = fake.items(MAILBOX).remove(0);
    assert_eq!(
        item.field("Subject"),
        Some("Beurkundung (verlegt)"),
        "Xpert wins"
    );
    assert_eq!(
        item.field("Categories"),
        Some("Rot"),
        "what livesync does not write stays"
    );
    assert_eq!(updated.etag.as_deref(), Some(item.change_key.as_str()));
    let update = fake.requests_of("UpdateItem").remove(0);
    assert_eq!(
        update.attr("ItemId", "ChangeKey"),
        Some(ck),
        "sent with the stale ChangeKey"
    );
    assert_eq!(update.code, "NoError");
    assert_eq!(fake.requests_of("UpdateItem").len(), 1, "one request");
}

#[tokio::test]
async fn a_conflict_reported_anyway_is_resolved_by_refetching_the_change_key_once() {
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let created = sink
        .apply(
            &owner(),
            &[upsert(appointment(8, "Testament"), None)],
            &vienna(),
        )
        .await
        .remove(0)
        .unwrap();
    let (id, ck) = (created.remote_id.unwrap(), created.etag.unwrap());
    fake.edit_in_outlook(MAILBOX, &id, "Subject", "Outlook");
    fake.conflict_once();
    let r = sink
        .apply(
            &owner(),
            &[upsert(appointment(8, "Testament (neu)"), Some((&id, &ck)))],
            &vienna(),
        )
        .await;
    assert!(r[0].is_ok(), "{r:?}");
    let updates = fake.requests_of("UpdateItem");
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].code, "ErrorIrresolvableConflict");
    let current = fake.items(MAILBOX).remove(0);
    assert_eq!(current.field("Subject"), Some("Testament (neu)"));
    assert_ne!(
        updates[1].attr("ItemId", "ChangeKey"),
        Some(ck),
        "the refetched ChangeKey"
    );
    assert_eq!(
        r[0].as_ref().unwrap().etag.as_deref(),
        Some(current.change_key.as_str())
    );
}

#[tokio::test]
async fn a_lost_answer_to_a_creation_is_found_by_the_uid_property_without_a_duplicate() {
    let fake = FakeEws::start().await;
    fake.lose_answer_to_creation_of(&uid(2));
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let r = sink.apply(&owner(), &batch(1..=4), &vienna()).await;
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let items = fake.items(MAILBOX);
    assert_eq!(items.len(), 4, "no duplicate: {items:#?}");
    let creations: Vec<_> = fake
        .requests_of("CreateItem")
        .into_iter()
        .filter(|c| c.text("Value") == Some(uid(2)))
        .collect();
    assert_eq!(creations.len(), 1, "looked up, not created again");
    assert!(creations[0].dropped);
    let lookup = fake
        .requests_of("FindItem")
        .into_iter()
        .find(|f| f.at > creations[0].at)
        .expect("a lookup after the lost answer");
    assert_eq!(lookup.attr("Constant", "Value"), Some(uid(2)));
    let stored = items.iter().find(|i| i.uid == Some(uid(2))).unwrap();
    assert_eq!(
        r[1].as_ref().unwrap().remote_id.as_deref(),
        Some(stored.id.as_str())
    );
    no_schema_errors(&fake);
}

#[tokio::test]
async fn a_new_process_adopts_the_item_a_dead_one_created() {
    let fake = FakeEws::start().await;
    let first = EwsSink::new(&settings(&fake)).unwrap();
    let r1 = first
        .apply(
            &owner(),
            &[upsert(appointment(42, "Beurkundung"), None)],
            &vienna(),
        )
        .await;
    // The worker died before recording it: the entry comes back without a reference.
    let second = EwsSink::new(&settings(&fake)).unwrap();
    let r2 = second
        .apply(
            &owner(),
            &[upsert(appointment(42, "Beurkundung (neu)"), None)],
            &vienna(),
        )
        .await;
    assert_eq!(
        r1[0].as_ref().unwrap().remote_id,
        r2[0].as_ref().unwrap().remote_id
    );
    let items = fake.items(MAILBOX);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].field("Subject"), Some("Beurkundung (neu)"));
    assert_eq!(fake.requests_of("CreateItem").len(), 1);
    assert_eq!(
        fake.requests_of("FindFolder").len(),
        2,
        "each process finds the folder"
    );
    assert_eq!(fake.folders(MAILBOX).len(), 1);
}

#[tokio::test]
async fn server_busy_in_either_shape_pauses_the_mailbox_for_its_back_off() {
    for shape in [Busy::Fault, Busy::Message] {
        let fake = FakeEws::start().await;
        fake.busy(1, 1500, shape);
        let sink = EwsSink::new(&settings(&fake)).unwrap();
        let r = sink.apply(&owner(), &batch(1..=3), &vienna()).await;
        assert!(r.iter().all(Result::is_ok), "{shape:?}: {r:?}");
        let reqs = fake.requests();
        assert_eq!(reqs[0].code, "ErrorServerBusy");
        assert_eq!(reqs[0].status, if shape == Busy::Fault { 500 } else { 200 });
        let gap = reqs[1].at.duration_since(reqs[0].at);
        assert!(
            gap >= Duration::from_millis(1500),
            "{shape:?}: sent again after {gap:?}"
        );
        assert_eq!(fake.items(MAILBOX).len(), 3);
    }
}

#[tokio::test]
async fn a_back_off_longer_than_the_batch_defers_every_change_with_the_pause() {
    let fake = FakeEws::start().await;
    fake.busy(1, 30_000, Busy::Message);
    let sink = EwsSink::new(&settings(&fake))
        .unwrap()
        .with_run_budget(Duration::from_secs(2));
    let r = sink.apply(&owner(), &batch(1..=3), &vienna()).await;
    for result in &r {
        match result {
            Err(SinkError::Deferred {
                retry_after: Some(pause),
                message,
            }) => {
                assert!(
                    *pause > Duration::from_secs(25) && *pause <= Duration::from_secs(30),
                    "{pause:?}"
                );
                assert!(message.contains(MAILBOX), "{message}");
            }
            other => panic!("expected a deferral with the pause, got {other:?}"),
        }
    }
    assert_eq!(
        fake.requests().len(),
        1,
        "nothing is sent to a paused mailbox"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_configuration_error_that_names_the_service_account() {
    let fake = FakeEws::start().await;
    let wrong = "Falsch~Kennwort_4711";
    let mut bad = settings(&fake);
    bad.password = Secret::new(wrong);
    let sink = EwsSink::new(&bad).unwrap();
    let e = sink.check().await.unwrap_err();
    let r = sink.apply(&owner(), &batch(1..=3), &vienna()).await;
    for result in r.iter().map(|r| r.as_ref().unwrap_err()).chain([&e]) {
        match result {
            SinkError::Config { message } => {
                assert!(
                    message.contains(USER) && message.contains("401"),
                    "{message}"
                )
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    let shown = format!("{e} {e:?} {r:?} {sink:?}");
    assert!(
        !shown.contains(wrong) && !shown.contains(PASSWORD),
        "{shown}"
    );
    assert_eq!(
        fake.requests().len(),
        2,
        "check, then one change; the rest not sent"
    );
    assert!(fake.items(MAILBOX).is_empty());
}

#[tokio::test]
async fn missing_impersonation_rights_name_the_role_and_check_finds_them() {
    let fake = FakeEws::start().await;
    fake.deny_impersonation(MAILBOX);
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    sink.check().await.expect("the credentials are right");
    let e = sink.check_mailbox(&owner()).await.unwrap_err();
    let r = sink.apply(&owner(), &batch(1..=2), &vienna()).await;
    for result in r.iter().map(|r| r.as_ref().unwrap_err()).chain([&e]) {
        match result {
            SinkError::Config { message } => {
                assert!(message.contains("ApplicationImpersonation"), "{message}");
                assert!(
                    message.contains(MAILBOX) && message.contains(USER),
                    "{message}"
                );
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    let other = CalendarOwner {
        user_id: 2,
        username: "hhuber".into(),
        calendar_address: None,
    };
    assert_eq!(
        sink.check_mailbox(&other).await.unwrap(),
        "hhuber@kanzlei.at"
    );
    let get = fake.requests_of("GetFolder").pop().unwrap();
    assert_eq!(get.mailbox.as_deref(), Some("hhuber@kanzlei.at"));
}

#[tokio::test]
async fn an_unknown_mailbox_is_permanent_for_that_person_only() {
    let fake = FakeEws::start().await;
    fake.remove_mailbox("hhuber@kanzlei.at");
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let other = CalendarOwner {
        user_id: 2,
        username: "hhuber".into(),
        calendar_address: None,
    };
    let (me, ctx) = (owner(), vienna());
    let (first, second) = (batch(1..=3), batch(4..=6));
    let (mine, theirs) = tokio::join!(
        sink.apply(&me, &first, &ctx),
        sink.apply(&other, &second, &ctx)
    );
    assert!(mine.iter().all(Result::is_ok), "{mine:?}");
    for result in &theirs {
        match result {
            Err(SinkError::Permanent { message }) => {
                assert!(
                    message.contains("hhuber@kanzlei.at")
                        && message.contains("ErrorNonExistentMailbox"),
                    "{message}"
                )
            }
            other => panic!("expected a permanent failure, got {other:?}"),
        }
    }
    let sent: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.mailbox.as_deref() == Some("hhuber@kanzlei.at"))
        .collect();
    assert_eq!(sent.len(), 1, "the batch stops asking: {sent:#?}");
    assert_eq!(fake.items(MAILBOX).len(), 3);
}

#[tokio::test]
async fn deleting_a_missing_item_succeeds_and_one_deleted_in_outlook_is_created_again() {
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let created = sink
        .apply(
            &owner(),
            &[upsert(appointment(6, "Mandant"), None)],
            &vienna(),
        )
        .await
        .remove(0)
        .unwrap();
    let (id, ck) = (created.remote_id.unwrap(), created.etag.unwrap());
    fake.delete_in_outlook(MAILBOX, &id);
    let delete = Change::Delete {
        appointment_id: 6,
        uid: uid(6),
        previous: RemoteRef {
            remote_id: Some(id.clone()),
            etag: Some(ck.clone()),
        },
    };
    let r = sink.apply(&owner(), &[delete], &vienna()).await;
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(fake.requests_of("DeleteItem")[0].code, "ErrorItemNotFound");

    let r = sink
        .apply(
            &owner(),
            &[upsert(appointment(6, "Mandant neu"), Some((&id, &ck)))],
            &vienna(),
        )
        .await;
    let new_id = r[0].as_ref().unwrap().remote_id.clone().unwrap();
    assert_ne!(new_id, id);
    let items = fake.items(MAILBOX);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].field("Subject"), Some("Mandant neu"));
    assert_eq!(items[0].uid, Some(uid(6)));
}

#[tokio::test]
async fn a_folder_deleted_in_outlook_is_created_again_with_its_items() {
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let r = sink.apply(&owner(), &batch(1..=2), &vienna()).await;
    let (id, ck) = {
        let a = r[0].as_ref().unwrap();
        (a.remote_id.clone().unwrap(), a.etag.clone().unwrap())
    };
    let old = fake.folders(MAILBOX)[0].0.clone();
    fake.delete_folder_in_outlook(MAILBOX, &old);
    let change = upsert(appointment(1, "Termin 1 neu"), Some((&id, &ck)));
    let first = sink
        .apply(&owner(), std::slice::from_ref(&change), &vienna())
        .await;
    assert!(
        matches!(first[0], Err(SinkError::Retryable { .. })),
        "{first:?}"
    );
    let second = sink.apply(&owner(), &[change], &vienna()).await;
    assert!(second[0].is_ok(), "{second:?}");
    let folders = fake.folders(MAILBOX);
    assert_eq!(folders.len(), 1);
    assert_ne!(folders[0].0, old);
    let items = fake.items(MAILBOX);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].folder, folders[0].0);
    assert_eq!(items[0].field("Subject"), Some("Termin 1 neu"));
}

#[tokio::test]
async fn all_day_items_carry_the_firms_windows_zone_and_a_persons_own_address_is_used() {
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let mut a = all_day_across_the_clock_change(9, "Urlaub");
    a.location = None;
    let who = owner_at_own_address();
    let r = sink.apply(&who, &[upsert(a, None)], &vienna()).await;
    assert!(r[0].is_ok(), "{r:?}");
    let items = fake.items(OWN_ADDRESS);
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item.field("IsAllDayEvent"), Some("true"));
    assert_eq!(
        item.field("Start"),
        Some("2026-03-27T23:00:00Z"),
        "midnight in Vienna"
    );
    assert_eq!(
        item.field("End"),
        Some("2026-03-29T22:00:00Z"),
        "midnight in Vienna, summer time"
    );
    assert_eq!(item.field("StartTimeZone"), Some("W. Europe Standard Time"));
    assert_eq!(item.field("EndTimeZone"), Some("W. Europe Standard Time"));
    assert_eq!(item.field("Location"), None);
    assert!(fake.items(MAILBOX).is_empty());
}

#[tokio::test]
async fn requests_in_flight_are_bounded_per_mailbox_and_in_total() {
    let fake = FakeEws::start().await;
    fake.delay_each(Duration::from_millis(40));
    let mut s = settings(&fake);
    s.max_concurrency = 5;
    s.max_per_mailbox = 3;
    let sink = EwsSink::new(&s).unwrap();
    let owners: Vec<CalendarOwner> = ["mmuster", "hhuber", "aberger"]
        .iter()
        .enumerate()
        .map(|(n, name)| CalendarOwner {
            user_id: n as i64 + 1,
            username: (*name).into(),
            calendar_address: None,
        })
        .collect();
    let ctx = vienna();
    let results = futures_util::future::join_all(owners.iter().enumerate().map(|(n, o)| {
        let from = n as i64 * 100;
        let sink = &sink;
        let ctx = &ctx;
        async move { sink.apply(o, &batch(from + 1..=from + 12), ctx).await }
    }))
    .await;
    assert!(results.iter().flatten().all(Result::is_ok));
    for o in &owners {
        let mailbox = format!("{}@kanzlei.at", o.username);
        assert_eq!(fake.items(&mailbox).len(), 12);
        assert!(
            fake.max_in_flight(&mailbox) <= 3,
            "{mailbox}: {}",
            fake.max_in_flight(&mailbox)
        );
    }
    assert_eq!(fake.max_in_flight_total(), 5, "at most 5, and 5 used");
}

#[tokio::test]
async fn the_fake_refuses_what_exchange_refuses() {
    // The fake's contract itself: schema order, and the ChangeKey rule without
    // AlwaysOverwrite. (The sink's requests are checked against it in every test.)
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let created = sink
        .apply(&owner(), &[upsert(appointment(1, "A"), None)], &vienna())
        .await
        .remove(0)
        .unwrap();
    let id = created.remote_id.unwrap();
    let folder = fake.folders(MAILBOX)[0].0.clone();
    fake.edit_in_outlook(MAILBOX, &id, "Subject", "B");
    let envelope = |body: String| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><soap:Header><t:RequestServerVersion Version="Exchange2016"/><t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{MAILBOX}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation></soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#
        )
    };
    let post = |body: String| {
        let url = fake.url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .basic_auth(USER, Some(PASSWORD))
                .header("content-type", "text/xml; charset=utf-8")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Start before the extended property.
    let (status, text) = post(envelope(format!(
        r#"<m:CreateItem SendMeetingInvitations="SendToNone"><m:SavedItemFolderId><t:FolderId Id="{folder}"/></m:SavedItemFolderId><m:Items><t:CalendarItem><t:Subject>x</t:Subject><t:Start>2026-12-03T08:00:00Z</t:Start><t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="{PROPERTY_SET_ID}" PropertyName="{PROPERTY_NAME}" PropertyType="String"/><t:Value>u</t:Value></t:ExtendedProperty></t:CalendarItem></m:Items></m:CreateItem>"#
    )))
    .await;
    assert_eq!(status, 500);
    assert!(text.contains("ErrorSchemaValidation"), "{text}");
    // A stale ChangeKey without AlwaysOverwrite.
    let (status, text) = post(envelope(format!(
        r#"<m:UpdateItem ConflictResolution="AutoResolve" SendMeetingInvitationsOrCancellations="SendToNone"><m:ItemChanges><t:ItemChange><t:ItemId Id="{id}" ChangeKey="{}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="item:Subject"/><t:CalendarItem><t:Subject>C</t:Subject></t:CalendarItem></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#,
        created.etag.unwrap()
    )))
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("ErrorIrresolvableConflict"), "{text}");
    assert_eq!(fake.items(MAILBOX)[0].field("Subject"), Some("B"));
}

#[tokio::test]
async fn the_password_appears_in_no_debug_output() {
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    sink.check().await.unwrap();
    let debug = format!("{sink:?} {:?}", settings(&fake));
    assert!(debug.contains("svc-livesync"), "{debug}");
    assert!(!debug.contains(PASSWORD), "{debug}");
}

/// Opt-in: the sink's contract against a real Exchange Server. Needs
/// `LIVESYNC_EWS_TEST_URL`, `…_USERNAME`, `…_PASSWORD`, `…_MAILBOX` (a test mailbox the
/// service account may impersonate: it gets a "notarXpert" folder and short-lived items),
/// and optionally `…_AUTH` (ntlm, the default, or basic) and `…_CA_FILE`; runs only when
/// asked for: `cargo test -p livesync-tests --test it -- --ignored real_exchange`.
#[tokio::test]
#[ignore = "needs a real Exchange Server (LIVESYNC_EWS_TEST_*); run with --ignored"]
async fn the_contract_holds_against_a_real_exchange_when_configured() {
    let var = |name: &str| std::env::var(format!("LIVESYNC_EWS_TEST_{name}")).ok();
    let (Some(url), Some(username), Some(password), Some(mailbox)) =
        (var("URL"), var("USERNAME"), var("PASSWORD"), var("MAILBOX"))
    else {
        panic!("set LIVESYNC_EWS_TEST_URL, _USERNAME, _PASSWORD and _MAILBOX");
    };
    let settings = EwsSettings {
        url,
        username,
        password: Secret::new(password),
        mailbox_template: mailbox,
        auth: match var("AUTH").as_deref() {
            Some("basic") => EwsAuth::Basic,
            _ => EwsAuth::Ntlm,
        },
        version: var("VERSION").unwrap_or_else(|| "Exchange2016".into()),
        ca_file: var("CA_FILE").map(Into::into),
        max_concurrency: 4,
        max_per_mailbox: 2,
        request_timeout: Duration::from_secs(30),
    };
    let sink = EwsSink::new(&settings).unwrap();
    sink.check().await.expect("the service account signs in");
    let who = test_mailbox_owner();
    sink.check_mailbox(&who).await.expect("impersonation works");
    let id = 9_000_000_000 + i64::from(std::process::id());
    let apply = |change: Change| apply_alone(&sink, &who, change);
    let first = apply(upsert(appointment(id, "livesync Test"), None)).await;
    let (item, ck) = (
        first.remote_id.clone().unwrap(),
        first.etag.clone().unwrap(),
    );
    // The same creation again from a new process (a lost answer): adopted, not duplicated.
    let again = EwsSink::new(&settings).unwrap();
    let repeated = apply_alone(&again, &who, upsert(appointment(id, "livesync Test"), None)).await;
    assert_eq!(repeated.remote_id, first.remote_id, "no duplicate");
    // The stale ChangeKey of the first answer: overwritten.
    let updated = apply(upsert(
        appointment(id, "livesync Test geändert"),
        Some((&item, &ck)),
    ))
    .await;
    assert_eq!(updated.remote_id, first.remote_id);
    apply(delete(id, item.clone())).await;
    apply(delete(id, item.clone())).await; // already gone
}

#[tokio::test]
async fn check_tests_the_service_account_and_impersonation_of_the_first_person() {
    let fake = FakeEws::start().await;
    let db = TestDb::migrated().await;
    db.user("aaron").await; // live sync not switched on: not the one tested
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        sink: SinkKind::Ews,
        ews: Some(settings(&fake)),
        ..test_settings(&db, dir.path())
    };
    assert!(livesync_worker::app::check(s.clone(), true).await.unwrap());
    let ops: Vec<(String, Option<String>)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.operation, r.mailbox))
        .collect();
    assert_eq!(
        ops,
        [
            ("GetServerTimeZones".to_string(), None),
            ("GetFolder".to_string(), Some(MAILBOX.to_string()))
        ]
    );
    fake.deny_impersonation(MAILBOX);
    assert!(!livesync_worker::app::check(s, true).await.unwrap());
}

#[tokio::test]
async fn the_binary_reads_the_ews_variables_and_its_check_never_shows_the_password() {
    crate::secrets::binaries().await;
    let fake = FakeEws::start().await;
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    let dir = tempfile::tempdir().unwrap();
    let check = |password: &'static str, json: bool| {
        let mut c = tokio::process::Command::new(crate::secrets::worker_bin());
        c.arg("check")
            .args(json.then_some("--json"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("LIVESYNC_LOG_DIR", dir.path().join("logs"))
            .env("LIVESYNC_SINK", "ews")
            .env("LIVESYNC_EWS_URL", &fake.url)
            .env("LIVESYNC_EWS_USERNAME", USER)
            .env("LIVESYNC_EWS_PASSWORD", password)
            .env("LIVESYNC_EWS_MAILBOX", "{username}@kanzlei.at")
            .env("LIVESYNC_EWS_AUTH", "basic")
            .env("RUST_LOG", "trace")
            .current_dir(dir.path())
            .kill_on_drop(true);
        async move { c.output().await.expect("run livesync-worker check") }
    };
    for json in [false, true] {
        let out = check(PASSWORD, json).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("impersonates mmuster@kanzlei.at"), "{text}");
        assert!(!text.contains(PASSWORD), "{text}");
        let wrong = "Falsch~Kennwort_4711";
        let out = check(wrong, json).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("svc-livesync") && text.contains("401"),
            "{text}"
        );
        assert!(!text.contains(wrong), "{text}");
    }
    let get = fake.requests_of("GetFolder");
    assert_eq!(get.len(), 2);
    assert_eq!(get[0].mailbox.as_deref(), Some(MAILBOX));

    // `run` with every log line on: a delivery, and neither the password nor the Basic
    // token in what it prints.
    db.enable_globally("push").await;
    let env = [
        ("DATABASE_URL", db.url.clone()),
        (
            "LIVESYNC_LOG_DIR",
            dir.path().join("logs").display().to_string(),
        ),
        ("LIVESYNC_POLL_INTERVAL_MS", "200".to_string()),
        ("LIVESYNC_SINK", "ews".to_string()),
        ("LIVESYNC_EWS_URL", fake.url.clone()),
        ("LIVESYNC_EWS_USERNAME", USER.to_string()),
        ("LIVESYNC_EWS_PASSWORD", PASSWORD.to_string()),
        ("LIVESYNC_EWS_MAILBOX", "{username}@kanzlei.at".to_string()),
        ("LIVESYNC_EWS_AUTH", "basic".to_string()),
        ("RUST_LOG", "trace".to_string()),
    ];
    let worker = crate::secrets::WorkerProcess::start(&env, dir.path(), "077").await;
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(WAIT, "delivered by the binary", || async {
        (fake.items(MAILBOX).len() == 1).then_some(())
    })
    .await;
    let text = worker.stop().await.all();
    assert!(
        text.contains("EWS request"),
        "the debug lines are there: {text}"
    );
    let token = fake.requests_of("CreateItem")[0]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Basic ")
        .to_string();
    for secret in [PASSWORD, token.as_str()] {
        assert!(!text.contains(secret), "{secret} in the output");
    }
}
