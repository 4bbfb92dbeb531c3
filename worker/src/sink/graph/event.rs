//! Appointments as Microsoft Graph `event` JSON.
//!
//! The content is the one [`crate::ical::repair`] produces for the `.ics` and CalDAV
//! sinks, so every calendar shows the same repaired subject, location, notes and times.
//! Times are `dateTimeTimeZone` values in the firm's zone under its **Windows** name
//! (`W. Europe Standard Time` for `Europe/Vienna`); a zone missing from [`windows_zone`]
//! is written in UTC. All-day events start and end at midnight of that zone.
//!
//! Every event livesync writes carries its stamp in single-value extended properties,
//! written with each creation and each update: the appointment id ([`XPERT_ID_PROPERTY`],
//! by which the sink finds an event again), the UID ([`UID_PROPERTY`]) and the content
//! hash of what livesync wrote ([`HASH_PROPERTY`], [`crate::ical::content_hash`]).
//! [`read_event`] reads an event of a listing back for verification; an event written
//! before the UID and the hash existed is known by its appointment id alone.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ical::{EventRead, When, content_hash, repair};
use crate::sink::{Appointment, CalendarOwner};

/// The calendar created in each mailbox.
pub const CALENDAR_NAME: &str = crate::ical::CALENDAR_NAME;

/// The single-value extended property holding the Xpert appointment id ("Termin-Id"),
/// so an event can be found again when the response to its creation was lost.
pub const XPERT_ID_PROPERTY: &str =
    "String {6b1f3a8e-2c47-4d95-b0e1-7a54c93d2f60} Name XpertTerminId";

/// The single-value extended property holding the appointment's UID
/// (`xpert-termin-<id>@livesync`).
pub const UID_PROPERTY: &str = "String {6b1f3a8e-2c47-4d95-b0e1-7a54c93d2f60} Name XpertTerminUid";

/// The single-value extended property holding the stamp: the content hash of what
/// livesync wrote ([`crate::ical::content_hash`], as `X-LIVESYNC-HASH` in iCalendar).
pub const HASH_PROPERTY: &str = "String {6b1f3a8e-2c47-4d95-b0e1-7a54c93d2f60} Name LivesyncHash";

/// The fields a listing selects (`$select`).
pub const LISTED_FIELDS: &str = "id,iCalUId,subject,body,location,start,end,isAllDay";

/// The Windows time-zone name Graph expects for an IANA zone; `None` when the zone is not
/// in this table of the zones a firm in Europe is likely to use.
pub fn windows_zone(tz: chrono_tz::Tz) -> Option<&'static str> {
    use chrono_tz::{Etc, Europe, UTC};
    let name = match tz {
        Europe::Vienna
        | Europe::Berlin
        | Europe::Zurich
        | Europe::Amsterdam
        | Europe::Rome
        | Europe::Stockholm
        | Europe::Oslo
        | Europe::Luxembourg
        | Europe::Monaco
        | Europe::Vaduz
        | Europe::San_Marino
        | Europe::Vatican
        | Europe::Andorra
        | Europe::Malta
        | Europe::Gibraltar
        | Europe::Busingen => "W. Europe Standard Time",
        Europe::Budapest
        | Europe::Prague
        | Europe::Bratislava
        | Europe::Ljubljana
        | Europe::Belgrade
        | Europe::Podgorica
        | Europe::Tirane => "Central Europe Standard Time",
        Europe::Warsaw | Europe::Zagreb | Europe::Sarajevo | Europe::Skopje => {
            "Central European Standard Time"
        }
        Europe::Paris | Europe::Brussels | Europe::Copenhagen | Europe::Madrid => {
            "Romance Standard Time"
        }
        Europe::London | Europe::Dublin | Europe::Lisbon => "GMT Standard Time",
        Europe::Athens | Europe::Bucharest => "GTB Standard Time",
        Europe::Helsinki
        | Europe::Kiev
        | Europe::Kyiv
        | Europe::Riga
        | Europe::Sofia
        | Europe::Tallinn
        | Europe::Vilnius => "FLE Standard Time",
        Europe::Istanbul => "Turkey Standard Time",
        Europe::Moscow => "Russian Standard Time",
        UTC | Etc::UTC | Etc::GMT => "UTC",
        _ => return None,
    };
    Some(name)
}

/// An IANA zone for a Windows time-zone name of [`windows_zone`]'s table (the first
/// zone it gives that name), or one Graph may use anyway (`UTC`, an IANA name).
pub fn zone_of_windows_name(name: &str) -> Option<chrono_tz::Tz> {
    use chrono_tz::{Europe, UTC};
    let zone = match name {
        "W. Europe Standard Time" => Europe::Vienna,
        "Central Europe Standard Time" => Europe::Budapest,
        "Central European Standard Time" => Europe::Warsaw,
        "Romance Standard Time" => Europe::Paris,
        "GMT Standard Time" => Europe::London,
        "GTB Standard Time" => Europe::Athens,
        "FLE Standard Time" => Europe::Helsinki,
        "Turkey Standard Time" => Europe::Istanbul,
        "Russian Standard Time" => Europe::Moscow,
        "UTC" | "Etc/GMT" | "GMT" => UTC,
        other => return other.parse().ok(),
    };
    Some(zone)
}

/// A deterministic `transactionId` for creating this appointment in this person's
/// calendar: the same for every retry of one delivery, different for a re-creation after
/// the event was deleted in Outlook (the SEQUENCE differs then).
pub fn transaction_id(owner: &CalendarOwner, uid: &str, sequence: i32) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("livesync-graph\n{}\n{uid}\n{sequence}", owner.user_id).as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    // Shaped like a GUID, as Outlook clients send them.
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The `$filter` that finds the event(s) carrying an appointment id.
pub fn filter_by_appointment(appointment_id: i64) -> String {
    format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{XPERT_ID_PROPERTY}' and ep/value eq '{appointment_id}')"
    )
}

/// The `$filter` that finds our calendar by name.
pub fn filter_calendar() -> String {
    format!("name eq '{CALENDAR_NAME}'")
}

/// The event's content and stamp (for PATCH and, with [`creation_fields`], for POST).
pub fn event_body(appointment: &Appointment, uid: &str, tz: chrono_tz::Tz) -> Value {
    let r = repair(appointment, tz);
    let hash = content_hash(
        &r.summary,
        r.location.as_deref(),
        r.description.as_deref(),
        &r.when,
    );
    let zone = windows_zone(tz);
    let (start, end, all_day) = match r.when {
        When::Timed { start, end } => (local(start, tz, zone), local(end, tz, zone), false),
        When::AllDay { start, end } => (midnight(start, zone), midnight(end, zone), true),
    };
    json!({
        "subject": r.summary,
        "body": { "contentType": "text", "content": r.description.unwrap_or_default() },
        "location": { "displayName": r.location.unwrap_or_default() },
        "start": start,
        "end": end,
        "isAllDay": all_day,
        "singleValueExtendedProperties": [
            { "id": XPERT_ID_PROPERTY, "value": appointment.id.to_string() },
            { "id": UID_PROPERTY, "value": uid },
            { "id": HASH_PROPERTY, "value": hash },
        ],
    })
}

/// What only a creation carries: the idempotency key.
pub fn creation_fields(body: &mut Value, transaction_id: &str) {
    if let Value::Object(map) = body {
        map.insert("transactionId".into(), json!(transaction_id));
    }
}

/// The `$expand` of a listing: the extended properties livesync writes.
pub fn expand_properties() -> String {
    format!(
        "singleValueExtendedProperties($filter=id eq '{XPERT_ID_PROPERTY}' or id eq '{UID_PROPERTY}' or id eq '{HASH_PROPERTY}')"
    )
}

/// The value of the extended property `id` an event carries, if any.
fn property<'a>(event: &'a Value, id: &str) -> Option<&'a str> {
    event["singleValueExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_str().is_some_and(|p| p.eq_ignore_ascii_case(id)))?["value"]
        .as_str()
}

/// An event of a listing (`calendarView` with [`LISTED_FIELDS`] and
/// [`expand_properties`]) as verification reads it: the UID from livesync's property, else
/// from the appointment id (written before the UID property existed), else Exchange's
/// `iCalUId` (someone else's event); the stamp from livesync's property; times in the zone
/// Graph names (UTC unless asked otherwise), all-day events by their dates.
pub fn read_event(event: &Value) -> EventRead {
    let uid = property(event, UID_PROPERTY)
        .map(str::to_string)
        .or_else(|| {
            property(event, XPERT_ID_PROPERTY)
                .and_then(|id| id.trim().parse::<i64>().ok())
                .map(crate::flush::uid_for)
        })
        .or_else(|| event["iCalUId"].as_str().map(str::to_string));
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let when = if event["isAllDay"].as_bool().unwrap_or(false) {
        match (date_of(&event["start"]), date_of(&event["end"])) {
            (Some(start), Some(end)) => Some(When::AllDay { start, end }),
            _ => None,
        }
    } else {
        match (instant_of(&event["start"]), instant_of(&event["end"])) {
            (Some(start), Some(end)) => Some(When::Timed { start, end }),
            _ => None,
        }
    };
    EventRead {
        uid,
        summary: text(&event["subject"]),
        location: text(&event["location"]["displayName"]),
        description: text(&event["body"]["content"]),
        when,
        stamp: property(event, HASH_PROPERTY).map(str::to_string),
    }
}

/// The local time of a `dateTimeTimeZone` (fractions of a second allowed).
fn local_of(v: &Value) -> Option<NaiveDateTime> {
    let text = v["dateTime"].as_str()?;
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

fn instant_of(v: &Value) -> Option<DateTime<Utc>> {
    let local = local_of(v)?;
    let zone = zone_of_windows_name(v["timeZone"].as_str().unwrap_or("UTC"))?;
    zone.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

fn date_of(v: &Value) -> Option<NaiveDate> {
    local_of(v).map(|t| t.date())
}

fn local(t: DateTime<Utc>, tz: chrono_tz::Tz, zone: Option<&'static str>) -> Value {
    match zone {
        Some(name) => date_time_zone(tz.from_utc_datetime(&t.naive_utc()).naive_local(), name),
        None => date_time_zone(t.naive_utc(), "UTC"),
    }
}

fn midnight(date: NaiveDate, zone: Option<&'static str>) -> Value {
    date_time_zone(date.and_time(NaiveTime::MIN), zone.unwrap_or("UTC"))
}

fn date_time_zone(t: NaiveDateTime, zone: &str) -> Value {
    json!({ "dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": zone })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::fixtures::{all_day_across_the_clock_change, untidy as appointment};

    #[test]
    fn vienna_is_written_with_its_windows_name_in_local_time() {
        let start = Utc.with_ymd_and_hms(2026, 7, 1, 7, 30, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 7, 1, 8, 30, 0).unwrap();
        let v = event_body(
            &appointment(start, end, false),
            "xpert-termin-42@livesync",
            chrono_tz::Europe::Vienna,
        );
        assert_eq!(
            v["start"],
            json!({"dateTime": "2026-07-01T09:30:00", "timeZone": "W. Europe Standard Time"})
        );
        assert_eq!(v["end"]["dateTime"], "2026-07-01T10:30:00");
        assert_eq!(v["subject"], "Tagsatzung");
        assert_eq!(v["body"]["content"], "Akt\nmitnehmen");
        assert_eq!(v["location"]["displayName"], "");
        assert_eq!(v["isAllDay"], false);
        assert!(v.get("attendees").is_none());
    }

    #[test]
    fn all_day_runs_from_midnight_to_midnight() {
        let v = event_body(
            &all_day_across_the_clock_change(),
            "xpert-termin-42@livesync",
            chrono_tz::Europe::Vienna,
        );
        assert_eq!(v["start"]["dateTime"], "2026-03-28T00:00:00");
        assert_eq!(v["end"]["dateTime"], "2026-03-30T00:00:00");
        assert_eq!(v["isAllDay"], true);
    }

    #[test]
    fn an_unknown_zone_falls_back_to_utc() {
        let start = Utc.with_ymd_and_hms(2026, 7, 1, 7, 30, 0).unwrap();
        let v = event_body(
            &appointment(start, start, false),
            "xpert-termin-42@livesync",
            chrono_tz::America::La_Paz,
        );
        assert_eq!(
            v["start"],
            json!({"dateTime": "2026-07-01T07:30:00", "timeZone": "UTC"})
        );
        assert_eq!(
            windows_zone(chrono_tz::Europe::Paris),
            Some("Romance Standard Time")
        );
    }

    #[test]
    fn transaction_ids_are_stable_and_distinct() {
        let owner = CalendarOwner {
            user_id: 7,
            username: "mmuster".into(),
            calendar_address: None,
        };
        let a = transaction_id(&owner, "xpert-termin-1@livesync", 0);
        assert_eq!(a, transaction_id(&owner, "xpert-termin-1@livesync", 0));
        assert_ne!(a, transaction_id(&owner, "xpert-termin-1@livesync", 1));
        assert_ne!(a, transaction_id(&owner, "xpert-termin-2@livesync", 0));
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn every_write_carries_the_stamp() {
        let start = Utc.with_ymd_and_hms(2026, 7, 1, 7, 30, 0).unwrap();
        let a = appointment(start, start + chrono::Duration::hours(1), false);
        let tz = chrono_tz::Europe::Vienna;
        let v = event_body(&a, "xpert-termin-42@livesync", tz);
        let r = repair(&a, tz);
        let hash = content_hash(
            &r.summary,
            r.location.as_deref(),
            r.description.as_deref(),
            &r.when,
        );
        assert_eq!(property(&v, XPERT_ID_PROPERTY), Some("42"));
        assert_eq!(property(&v, UID_PROPERTY), Some("xpert-termin-42@livesync"));
        assert_eq!(property(&v, HASH_PROPERTY), Some(hash.as_str()));
        let mut create = v.clone();
        creation_fields(&mut create, "tx");
        assert_eq!(create["transactionId"], "tx");
        assert_eq!(
            create["singleValueExtendedProperties"],
            v["singleValueExtendedProperties"]
        );
    }

    #[test]
    fn a_listed_event_reads_back_as_written() {
        // As calendarView returns an event livesync wrote in Vienna: in UTC, with
        // fractions of a second, the expanded properties named in any case.
        let start = Utc.with_ymd_and_hms(2026, 7, 1, 7, 30, 0).unwrap();
        let a = appointment(start, start + chrono::Duration::hours(1), false);
        let written = event_body(&a, "xpert-termin-42@livesync", chrono_tz::Europe::Vienna);
        let hash = property(&written, HASH_PROPERTY).unwrap().to_string();
        let listed = json!({
            "id": "AAMkImm-1=",
            "iCalUId": "040000008200E00074C5B7101A82E00800000000",
            "subject": "Tagsatzung",
            "body": { "contentType": "text", "content": "Akt\nmitnehmen" },
            "location": { "displayName": "" },
            "start": { "dateTime": "2026-07-01T07:30:00.0000000", "timeZone": "UTC" },
            "end": { "dateTime": "2026-07-01T08:30:00.0000000", "timeZone": "UTC" },
            "isAllDay": false,
            "singleValueExtendedProperties": [
                { "id": XPERT_ID_PROPERTY.to_lowercase(), "value": "42" },
                { "id": UID_PROPERTY, "value": "xpert-termin-42@livesync" },
                { "id": HASH_PROPERTY, "value": hash.clone() },
            ],
        });
        let read = read_event(&listed);
        assert_eq!(read.uid.as_deref(), Some("xpert-termin-42@livesync"));
        assert_eq!(read.location, None);
        assert_eq!(read.stamp.as_deref(), Some(hash.as_str()));
        assert_eq!(read.content_hash().as_deref(), Some(hash.as_str()));

        // The same in the firm's zone (Prefer: outlook.timezone) reads the same.
        let mut local = listed.clone();
        local["start"] = written["start"].clone();
        local["end"] = written["end"].clone();
        assert_eq!(read_event(&local).content_hash(), Some(hash));
    }

    #[test]
    fn older_and_foreign_events_are_known_by_what_they_carry() {
        // Written before the UID and the stamp: known by the appointment id.
        let old = json!({
            "id": "AAMkImm-2=",
            "subject": "Termin",
            "start": { "dateTime": "2026-03-28T00:00:00.0000000", "timeZone": "UTC" },
            "end": { "dateTime": "2026-03-30T00:00:00.0000000", "timeZone": "UTC" },
            "isAllDay": true,
            "singleValueExtendedProperties": [{ "id": XPERT_ID_PROPERTY, "value": "7" }],
        });
        let read = read_event(&old);
        assert_eq!(read.uid.as_deref(), Some("xpert-termin-7@livesync"));
        assert_eq!(read.stamp, None);
        assert_eq!(
            read.when,
            Some(When::AllDay {
                start: NaiveDate::from_ymd_opt(2026, 3, 28).unwrap(),
                end: NaiveDate::from_ymd_opt(2026, 3, 30).unwrap(),
            })
        );
        // Someone else's: Exchange's UID, no stamp; unreadable times stay unknown.
        let foreign = json!({
            "id": "AAMkImm-3=",
            "iCalUId": "040000008200E00074C5B7101A82E008",
            "subject": "Mittagessen",
            "start": { "dateTime": "gestern", "timeZone": "UTC" },
            "end": { "dateTime": "2026-03-30T00:00:00", "timeZone": "Nowhere Standard Time" },
            "isAllDay": false,
        });
        let read = read_event(&foreign);
        assert_eq!(
            read.uid.as_deref(),
            Some("040000008200E00074C5B7101A82E008")
        );
        assert_eq!(read.when, None);
        assert_eq!(read.content_hash(), None);
    }
}
