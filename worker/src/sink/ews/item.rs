//! Appointments as EWS calendar items.
//!
//! The content is the one [`crate::ical::repair`] produces for every other sink (repaired
//! subject, location, notes and times). Times are written as UTC instants (`…Z`); the
//! item's `StartTimeZone`/`EndTimeZone` carry the firm's zone under its Windows name
//! (`W. Europe Standard Time` for `Europe/Vienna`, the table of
//! [`crate::sink::graph::event::windows_zone`]; a zone missing there is written as `UTC`).
//! All-day items start and end at midnight of that zone, so Outlook shows them on the
//! right days.
//!
//! Every item carries livesync's stamp in its own property set, written with each
//! creation and each update: the UID ([`PROPERTY_NAME`]) and the content hash of what
//! livesync wrote ([`HASH_PROPERTY_NAME`], [`crate::ical::content_hash`]). [`read`] reads
//! an item of a listing back for verification; an item written before the hash existed is
//! known by its UID alone.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};

use super::soap::ItemRead;
use crate::ical::{EventRead, When, content_hash, repair};
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
/// The stamp, in the same property set: the content hash of what livesync wrote.
pub const HASH_PROPERTY_NAME: &str = "LivesyncHash";

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
    /// The stamp: [`crate::ical::content_hash`] of this content.
    pub hash: String,
}

pub fn fields(appointment: &Appointment, tz: chrono_tz::Tz) -> ItemFields {
    let r = repair(appointment, tz);
    let hash = content_hash(
        &r.summary,
        r.location.as_deref(),
        r.description.as_deref(),
        &r.when,
    );
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
        hash,
    }
}

/// An item of a listing as verification reads it. Times are UTC instants; an all-day
/// item's are midnights of the firm's zone `tz` (of UTC when the zone has no Windows name,
/// as [`fields`] writes them), read back as the dates they begin.
pub fn read(item: &ItemRead, tz: chrono_tz::Tz) -> EventRead {
    let instant = |text: Option<&str>| {
        DateTime::parse_from_rfc3339(text?.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let (start, end) = (instant(item.start.as_deref()), instant(item.end.as_deref()));
    let when = match (start, end) {
        (Some(start), Some(end)) if item.all_day => {
            let date = |t: DateTime<Utc>| match windows_zone(tz) {
                Some(_) => t.with_timezone(&tz).date_naive(),
                None => t.date_naive(),
            };
            Some(When::AllDay {
                start: date(start),
                end: date(end),
            })
        }
        (Some(start), Some(end)) => Some(When::Timed { start, end }),
        _ => None,
    };
    let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    EventRead {
        uid: text(&item.uid),
        summary: text(&item.subject),
        location: text(&item.location),
        description: text(&item.body),
        when,
        stamp: text(&item.stamp),
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

    #[test]
    fn a_listed_item_reads_back_as_written() {
        let tz = chrono_tz::Europe::Vienna;
        for a in [
            all_day_across_the_clock_change(),
            appointment(
                Utc.with_ymd_and_hms(2026, 7, 1, 7, 30, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 7, 1, 8, 30, 0).unwrap(),
                false,
            ),
        ] {
            let f = fields(&a, tz);
            let listed = ItemRead {
                id: "AAMkItem-1=".into(),
                uid: Some("xpert-termin-42@livesync".into()),
                stamp: Some(f.hash.clone()),
                subject: Some(f.subject.clone()),
                body: Some(f.body.clone()),
                location: f.location.clone(),
                start: Some(f.start.clone()),
                end: Some(f.end.clone()),
                all_day: f.all_day,
            };
            let read = read(&listed, tz);
            assert_eq!(
                read.content_hash().as_deref(),
                Some(f.hash.as_str()),
                "{a:?}"
            );
            assert_eq!(read.stamp, Some(f.hash));
        }
        // Without a Windows name the all-day midnights are UTC ones.
        let tz = chrono_tz::America::La_Paz;
        let f = fields(&all_day_across_the_clock_change(), tz);
        let listed = ItemRead {
            subject: Some(f.subject.clone()),
            body: Some(f.body.clone()),
            start: Some(f.start.clone()),
            end: Some(f.end.clone()),
            all_day: true,
            ..ItemRead::default()
        };
        assert_eq!(read(&listed, tz).content_hash(), Some(f.hash));
        // Unreadable times cannot match.
        let broken = ItemRead {
            start: Some("gestern".into()),
            ..listed
        };
        assert_eq!(read(&broken, tz).when, None);
    }
}
