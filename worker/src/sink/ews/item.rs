//! Appointments as EWS calendar items.
//!
//! The content is the one [`crate::ical::repair`] produces for every other sink (repaired
//! subject, location, notes and times). Times are written as UTC instants (`…Z`); the
//! item's `StartTimeZone`/`EndTimeZone` carry the firm's zone under its Windows name
//! (`W. Europe Standard Time` for `Europe/Vienna`, the table of
//! [`crate::sink::graph::event::windows_zone`]; a zone missing there is written as `UTC`).
//! All-day items start and end at midnight of that zone, so Outlook shows them on the
//! right days.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};

use crate::ical::{When, repair};
use crate::sink::Appointment;
use crate::sink::graph::event::windows_zone;

/// The folder created under each mailbox's Calendar.
pub const FOLDER_NAME: &str = crate::ical::CALENDAR_NAME;

/// `DistinguishedFolderId` of the mailbox's calendar.
pub const CALENDAR_FOLDER: &str = "calendar";

/// livesync's own MAPI property set: every item carries the appointment's UID in it, so
/// an item can be found again when the answer to its creation was lost.
pub const PROPERTY_SET_ID: &str = "c2a8d1e4-5b7f-4e39-9a61-3f0d8b2e7c45";
pub const PROPERTY_NAME: &str = "XpertTerminUid";

/// What livesync writes into an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFields {
    pub subject: String,
    /// Plain text; empty when the appointment has no notes.
    pub body: String,
    pub location: Option<String>,
    /// `xs:dateTime` in UTC.
    pub start: String,
    pub end: String,
    pub all_day: bool,
    /// Windows time-zone id.
    pub zone: &'static str,
}

pub fn fields(appointment: &Appointment, tz: chrono_tz::Tz) -> ItemFields {
    let r = repair(appointment, tz);
    let zone = windows_zone(tz);
    let (start, end, all_day) = match r.when {
        When::Timed { start, end } => (start, end, false),
        When::AllDay { start, end } => (midnight(start, tz, zone), midnight(end, tz, zone), true),
    };
    ItemFields {
        subject: r.summary,
        body: r.description.unwrap_or_default(),
        location: r.location,
        start: utc(start),
        end: utc(end),
        all_day,
        zone: zone.unwrap_or("UTC"),
    }
}

/// Midnight at the start of `date` in the firm's zone (in UTC when the zone has no Windows
/// name, as the item then says `UTC`).
fn midnight(date: NaiveDate, tz: chrono_tz::Tz, zone: Option<&str>) -> DateTime<Utc> {
    let local = date.and_time(NaiveTime::MIN);
    if zone.is_none() {
        return local.and_utc();
    }
    match tz.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        // Midnight skipped by a clock change: the first instant of the day.
        None => tz
            .from_local_datetime(&(local + chrono::Duration::hours(1)))
            .earliest()
            .map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc)),
    }
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::fixtures::{all_day_across_the_clock_change, untidy as appointment};

    #[test]
    fn timed_items_are_utc_instants_with_the_windows_zone() {
        let start = Utc.with_ymd_and_hms(2026, 7, 1, 7, 30, 0).unwrap();
        let f = fields(
            &appointment(start, start + chrono::Duration::hours(1), false),
            chrono_tz::Europe::Vienna,
        );
        assert_eq!(f.start, "2026-07-01T07:30:00Z");
        assert_eq!(f.end, "2026-07-01T08:30:00Z");
        assert_eq!(f.zone, "W. Europe Standard Time");
        assert_eq!(f.subject, "Tagsatzung");
        assert_eq!(f.body, "Akt\nmitnehmen");
        assert_eq!(f.location, None);
        assert!(!f.all_day);
    }

    #[test]
    fn all_day_items_run_from_local_midnight_to_local_midnight() {
        // Across the change to summer time (29 March 2026).
        let f = fields(
            &all_day_across_the_clock_change(),
            chrono_tz::Europe::Vienna,
        );
        assert_eq!(f.start, "2026-03-27T23:00:00Z");
        assert_eq!(f.end, "2026-03-29T22:00:00Z");
        assert!(f.all_day);
        let f = fields(
            &all_day_across_the_clock_change(),
            chrono_tz::America::La_Paz,
        );
        assert_eq!(f.zone, "UTC");
    }
}
