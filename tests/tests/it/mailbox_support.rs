//! What the tests of the remote mailbox sinks (Graph, EWS) share: one lawyer's mailbox,
//! the appointments and changes sent there, and a firm with a worker delivering to it.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use livesync_worker::config::{EwsSettings, GraphSettings, Settings, SinkKind};
use livesync_worker::sink::ews::EwsSink;
use livesync_worker::sink::graph::GraphSink;
use livesync_worker::sink::{
    Applied, Appointment, CalendarOwner, CalendarSink, Change, RemoteRef, RenderContext,
};

use crate::helpers::TestDb;
use crate::worker_support::{RunningWorker, test_settings};

/// The mailbox of [`owner`], from the template `{username}@kanzlei.at`.
pub(crate) const MAILBOX: &str = "mmuster@kanzlei.at";

/// The calendar address [`owner_at_own_address`] sets instead of the template's.
pub(crate) const OWN_ADDRESS: &str = "m.muster@notariat.at";

pub(crate) fn owner() -> CalendarOwner {
    CalendarOwner {
        user_id: 1,
        username: "mmuster".into(),
        calendar_address: None,
    }
}

/// [`owner`] with a calendar address of their own ([`OWN_ADDRESS`]).
pub(crate) fn owner_at_own_address() -> CalendarOwner {
    CalendarOwner {
        calendar_address: Some(OWN_ADDRESS.into()),
        ..owner()
    }
}

pub(crate) fn vienna() -> RenderContext {
    RenderContext {
        time_zone: chrono_tz::Europe::Vienna,
    }
}

pub(crate) fn uid(id: i64) -> String {
    format!("xpert-termin-{id}@livesync")
}

pub(crate) fn appointment(id: i64, subject: &str) -> Appointment {
    let start = Utc.with_ymd_and_hms(2026, 12, 3, 8, 0, 0).unwrap();
    Appointment {
        id,
        subject: Some(subject.into()),
        location: Some("Besprechungszimmer 2".into()),
        notes: Some("Akt 12/26 mitnehmen".into()),
        starts_at: start,
        ends_at: start + chrono::Duration::minutes(90),
        all_day: false,
        updated_at: start,
    }
}

/// An all-day appointment in Vienna from 28 to 30 March 2026, across the change to
/// summer time.
pub(crate) fn all_day_across_the_clock_change(id: i64, subject: &str) -> Appointment {
    let tz = chrono_tz::Europe::Vienna;
    let midnight = |day| {
        tz.with_ymd_and_hms(2026, 3, day, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    Appointment {
        starts_at: midnight(28),
        ends_at: midnight(30),
        all_day: true,
        ..appointment(id, subject)
    }
}

/// Create or update `a`; `previous` is what the calendar holds for it.
pub(crate) fn upsert(a: Appointment, previous: Option<RemoteRef>) -> Change {
    Change::Upsert {
        uid: uid(a.id),
        sequence: if previous.is_some() { 1 } else { 0 },
        previous,
        appointment: a,
    }
}

/// The creations of appointments `ids` ("Termin 1", …).
pub(crate) fn batch(ids: std::ops::RangeInclusive<i64>) -> Vec<Change> {
    ids.map(|i| upsert(appointment(i, &format!("Termin {i}")), None))
        .collect()
}

/// Delete appointment `id`, recorded as `remote`.
pub(crate) fn delete(id: i64, remote: String) -> Change {
    Change::Delete {
        appointment_id: id,
        uid: uid(id),
        previous: RemoteRef {
            remote_id: Some(remote),
            etag: None,
        },
    }
}

/// Apply one change alone to `who`'s calendar; the server must accept it.
pub(crate) async fn apply_alone(
    sink: &dyn CalendarSink,
    who: &CalendarOwner,
    change: Change,
) -> Applied {
    sink.apply(who, &[change], &vienna())
        .await
        .remove(0)
        .expect("the server accepts the change")
}

/// The person whose test mailbox a real server's contract test writes into.
pub(crate) fn test_mailbox_owner() -> CalendarOwner {
    CalendarOwner {
        user_id: 1,
        username: "livesync-test".into(),
        calendar_address: None,
    }
}

/// The sink a worker delivers through, with its settings.
pub(crate) enum Remote {
    Graph(GraphSettings),
    Ews(EwsSettings),
}

impl Remote {
    /// `settings` for this sink, and the sink.
    fn wire(self, mut settings: Settings) -> (Settings, Arc<dyn CalendarSink>) {
        let sink: Arc<dyn CalendarSink> = match self {
            Remote::Graph(graph) => {
                settings.sink = SinkKind::Graph;
                settings.graph = Some(graph.clone());
                Arc::new(GraphSink::new(&graph).unwrap())
            }
            Remote::Ews(ews) => {
                settings.sink = SinkKind::Ews;
                settings.ews = Some(ews.clone());
                Arc::new(EwsSink::new(&ews).unwrap())
            }
        };
        (settings, sink)
    }
}

/// A firm with one lawyer (`mmuster`) and a worker delivering through `remote`.
pub(crate) async fn firm_with_worker(
    remote: Remote,
) -> (TestDb, i64, RunningWorker, tempfile::TempDir) {
    let db = TestDb::migrated().await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let dir = tempfile::tempdir().unwrap();
    let (settings, sink) = remote.wire(test_settings(&db, dir.path()));
    let worker = RunningWorker::start(&db, settings, sink);
    (db, lawyer, worker, dir)
}
