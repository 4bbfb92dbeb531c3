//! What to do with one due entry, decided from the truth: the appointment's current row
//! (present, and the user takes part?) and what the calendar holds (`delivered`).
//!
//! | appointment | calendar holds                  | plan                                  |
//! | ----------- | ------------------------------- | ------------------------------------- |
//! | present     | this very row version           | nothing to send (`Unchanged`)         |
//! | present     | an older version, or nothing    | upsert (update with its reference)    |
//! | present     | maybe (`sequence = -1`)         | upsert without reference (reconcile)  |
//! | gone        | a record, or maybe              | delete                                |
//! | gone        | nothing                         | nothing to tell the calendar (`Skip`) |

use super::load::DueRow;
use super::{MAYBE_DELIVERED, uid_for};
use crate::sink::{Appointment, Change, RemoteRef};

/// What to do with one due entry, decided from the truth.
pub(super) enum Plan {
    Send(Change),
    /// The calendar already holds this very row version (a change to it was queued after
    /// an earlier delivery had already read it): nothing to send.
    Unchanged,
    /// Gone and never delivered: nothing to tell the calendar.
    Skip,
}

pub(super) fn plan(row: &DueRow) -> Plan {
    // What the calendar is known to hold; a "maybe" gives the sink no reference, so it
    // creates (reconciling with what a dead worker may have written) or deletes by UID.
    let maybe = row.sequence == Some(MAYBE_DELIVERED);
    let previous = (row.uid.is_some() && !maybe).then(|| RemoteRef {
        remote_id: row.remote_id.clone(),
        etag: row.etag.clone(),
    });
    if row.present {
        if previous.is_some()
            && row.delivered_row_version.is_some()
            && row.delivered_row_version == row.row_version
        {
            return Plan::Unchanged;
        }
        let (Some(starts_at), Some(ends_at), Some(all_day), Some(updated_at)) =
            (row.starts_at, row.ends_at, row.all_day, row.updated_at)
        else {
            return Plan::Skip;
        };
        Plan::Send(Change::Upsert {
            appointment: Appointment {
                id: row.appointment_id,
                subject: row.subject.clone(),
                location: row.location.clone(),
                notes: row.notes.clone(),
                starts_at,
                ends_at,
                all_day,
                updated_at,
            },
            uid: row
                .uid
                .clone()
                .unwrap_or_else(|| uid_for(row.appointment_id)),
            sequence: row.sequence.map(|s| s + 1).unwrap_or(0).max(0),
            previous,
        })
    } else {
        let previous = previous.or_else(|| maybe.then(RemoteRef::default));
        match previous {
            Some(previous) => Plan::Send(Change::Delete {
                appointment_id: row.appointment_id,
                uid: row
                    .uid
                    .clone()
                    .unwrap_or_else(|| uid_for(row.appointment_id)),
                previous,
            }),
            None => Plan::Skip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> DueRow {
        DueRow::for_test(9)
    }

    fn delivered(mut r: DueRow, sequence: i32, row_version: Option<&str>) -> DueRow {
        r.uid = Some(uid_for(r.appointment_id));
        r.sequence = Some(sequence);
        r.remote_id = Some("/cal/xpert-termin-42@livesync.ics".into());
        r.etag = Some("\"e1\"".into());
        r.delivered_row_version = row_version.map(str::to_string);
        r
    }

    #[test]
    fn a_new_appointment_is_created_with_sequence_zero_and_no_reference() {
        match plan(&row()) {
            Plan::Send(Change::Upsert {
                uid,
                sequence,
                previous,
                appointment,
            }) => {
                assert_eq!(uid, "xpert-termin-42@livesync");
                assert_eq!(sequence, 0);
                assert_eq!(previous, None);
                assert_eq!(appointment.subject.as_deref(), Some("Tagsatzung"));
            }
            _ => panic!("expected a create"),
        }
    }

    #[test]
    fn a_changed_appointment_is_updated_with_its_reference_and_the_next_sequence() {
        match plan(&delivered(row(), 3, Some("1000/(0,7)"))) {
            Plan::Send(Change::Upsert {
                sequence, previous, ..
            }) => {
                assert_eq!(sequence, 4);
                let previous = previous.expect("a reference");
                assert_eq!(previous.etag.as_deref(), Some("\"e1\""));
                assert!(previous.remote_id.is_some());
            }
            _ => panic!("expected an update"),
        }
    }

    #[test]
    fn the_row_version_the_calendar_holds_already_sends_nothing() {
        assert!(matches!(
            plan(&delivered(row(), 3, Some("1001/(0,1)"))),
            Plan::Unchanged
        ));
    }

    #[test]
    fn a_maybe_delivered_entry_is_sent_without_reference_so_the_sink_reconciles() {
        match plan(&delivered(row(), MAYBE_DELIVERED, Some("1001/(0,1)"))) {
            Plan::Send(Change::Upsert {
                sequence, previous, ..
            }) => {
                assert_eq!(sequence, 0, "a mark's -1 + 1");
                assert_eq!(previous, None);
            }
            _ => panic!("a maybe is never taken as holding this version"),
        }
    }

    #[test]
    fn a_gone_appointment_is_deleted_when_the_calendar_holds_it_or_may_hold_it() {
        let mut gone = delivered(row(), 2, None);
        gone.present = false;
        match plan(&gone) {
            Plan::Send(Change::Delete { previous, uid, .. }) => {
                assert_eq!(uid, "xpert-termin-42@livesync");
                assert!(previous.remote_id.is_some());
            }
            _ => panic!("expected a delete"),
        }
        let mut maybe = delivered(row(), MAYBE_DELIVERED, None);
        maybe.present = false;
        match plan(&maybe) {
            Plan::Send(Change::Delete { previous, .. }) => {
                assert_eq!(previous, RemoteRef::default(), "deleted by UID");
            }
            _ => panic!("a maybe-delivered appointment must be deleted"),
        }
    }

    #[test]
    fn a_gone_appointment_never_delivered_is_skipped() {
        let mut gone = row();
        gone.present = false;
        assert!(matches!(plan(&gone), Plan::Skip));
    }
}
