//! The CalDAV sink against real Radicale behind a proxy that fails chosen requests
//! (`faulty_proxy`). The rule under test: a change is charged only for its own failed
//! request; a throttling server is waited out, or the changes are deferred with its pause.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use livesync_worker::config::CalDavSettings;
use livesync_worker::flush::uid_for;
use livesync_worker::sink::caldav::CalDavSink;
use livesync_worker::sink::caldav::dav::object_uid;
use livesync_worker::sink::{Appointment, CalendarOwner, CalendarSink, Change, RenderContext};

use crate::helpers::assert_only_these_failed;
use livesync_testkit::caldav_server::CalDavServer;
use livesync_testkit::faulty_proxy::{Fault, FaultyProxy};

/// The sink, reaching Radicale through the proxy.
fn sink_via(proxy: &FaultyProxy, server: &CalDavServer) -> CalDavSink {
    CalDavSink::new(&CalDavSettings {
        url_template: format!("{}/{{username}}/notarxpert/", proxy.origin()),
        ..server.settings()
    })
    .unwrap()
}

fn owner() -> CalendarOwner {
    CalendarOwner {
        user_id: 1,
        username: "mmuster".into(),
        calendar_address: None,
    }
}

fn ctx() -> RenderContext {
    RenderContext {
        time_zone: chrono_tz::Europe::Vienna,
    }
}

fn upserts(ids: std::ops::RangeInclusive<i64>) -> Vec<Change> {
    ids.map(|id| {
        let start =
            Utc.with_ymd_and_hms(2026, 12, 3, 8, 0, 0).unwrap() + chrono::Duration::hours(id);
        Change::Upsert {
            appointment: Appointment {
                id,
                subject: Some(format!("Termin {id}")),
                location: None,
                notes: None,
                starts_at: start,
                ends_at: start + chrono::Duration::hours(1),
                all_day: false,
                updated_at: start,
            },
            uid: uid_for(id),
            sequence: 0,
            previous: None,
        }
    })
    .collect()
}

/// The UIDs in mmuster's calendar, sorted.
async fn uids(server: &CalDavServer) -> Vec<String> {
    let mut uids: Vec<String> = server
        .read_back("mmuster")
        .await
        .objects
        .iter()
        .filter_map(|o| object_uid(&o.data))
        .collect();
    uids.sort();
    uids
}

fn sorted_uids(ids: &[i64]) -> Vec<String> {
    let mut uids: Vec<String> = ids.iter().map(|id| uid_for(*id)).collect();
    uids.sort();
    uids
}

#[tokio::test]
async fn one_failed_request_fails_only_the_change_that_sent_it_on_radicale() {
    let server = CalDavServer::radicale().await;
    let proxy = FaultyProxy::start(server.port).await;
    // The collection lookup (done by the first change, the others wait for it) loses its
    // connection, and so does every PUT of appointment 3.
    proxy.fail("PROPFIND", "/mmuster/notarxpert/", 1, Fault::Drop);
    proxy.fail(
        "PUT",
        &format!("/{}.ics", uid_for(3)),
        u32::MAX,
        Fault::Drop,
    );
    let sink = sink_via(&proxy, &server);
    let r = sink.apply(&owner(), &upserts(1..=8), &ctx()).await;
    assert_only_these_failed(&r, &[0, 2]);
    assert_eq!(uids(&server).await, sorted_uids(&[2, 4, 5, 6, 7, 8]));
    let dropped: Vec<(String, String)> = proxy
        .passed()
        .into_iter()
        .filter(|p| p.status.is_none())
        .map(|p| (p.method, p.path))
        .collect();
    let own = |m: &str, p: String| (m.to_string(), p);
    assert_eq!(
        dropped,
        vec![
            own("PROPFIND", "/mmuster/notarxpert/".into()),
            own("PUT", format!("/mmuster/notarxpert/{}.ics", uid_for(3))),
        ]
    );
}

#[tokio::test]
async fn a_throttling_caldav_server_is_waited_out_and_the_batch_goes_on() {
    let server = CalDavServer::radicale().await;
    let proxy = FaultyProxy::start(server.port).await;
    let throttle = |status: u16, retry_after: &str| Fault::Throttle {
        status,
        retry_after: retry_after.into(),
    };
    proxy.fail("PUT", "xpert-termin-", 2, throttle(429, "0.3"));
    proxy.fail("PUT", "xpert-termin-", 1, throttle(503, "0.2"));
    let sink = sink_via(&proxy, &server);
    let r = sink.apply(&owner(), &upserts(1..=6), &ctx()).await;
    assert!(r.iter().all(Result::is_ok), "{r:#?}");
    assert_eq!(uids(&server).await, sorted_uids(&[1, 2, 3, 4, 5, 6]));
    let passed = proxy.passed();
    let throttled = passed
        .iter()
        .filter(|p| matches!(p.status, Some(429 | 503)))
        .count();
    assert_eq!(throttled, 3, "{passed:#?}");
    let puts = passed.iter().filter(|p| p.method == "PUT").count();
    assert_eq!(puts, 9, "each throttled PUT sent once more: {passed:#?}");
}

#[tokio::test]
async fn a_caldav_pause_longer_than_the_batch_defers_every_change_with_the_pause() {
    let server = CalDavServer::radicale().await;
    let proxy = FaultyProxy::start(server.port).await;
    proxy.fail(
        "PROPFIND",
        "/mmuster/notarxpert/",
        1,
        Fault::Throttle {
            status: 503,
            retry_after: "30".into(),
        },
    );
    let sink = sink_via(&proxy, &server).with_run_budget(Duration::from_secs(2));
    let r = sink.apply(&owner(), &upserts(1..=5), &ctx()).await;
    crate::helpers::assert_all_deferred_with_pause(&r, 30);
    assert_eq!(proxy.passed().len(), 1, "nothing sent to a paused server");
}
