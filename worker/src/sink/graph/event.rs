//! Appointments as Microsoft Graph `event` JSON.
//!
//! The content is the one [`crate::ical::repair`] produces for the `.ics` and CalDAV
//! sinks, so every calendar shows the same repaired subject, location, notes and times.
//! Times are `dateTimeTimeZone` values in the firm's zone under its **Windows** name
//! (`W. Europe Standard Time` for `Europe/Vienna`); a zone missing from [`windows_zone`]
//! is written in UTC. All-day events start and end at midnight of that zone.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ical::{When, repair};
use crate::sink::{Appointment, CalendarOwner};

/// The calendar created in each mailbox.
pub const CALENDAR_NAME: &str = crate::ical::CALENDAR_NAME;

/// The single-value extended property holding the Xpert appointment id ("Termin-Id"),
/// so an event can be found again when the response to its creation was lost.
pub const XPERT_ID_PROPERTY: &str =
    "String {6b1f3a8e-2c47-4d95-b0e1-7a54c93d2f60} Name XpertTerminId";

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

/// The event's content (for PATCH and, with [`creation_fields`], for POST).
pub fn event_body(appointment: &Appointment, tz: chrono_tz::Tz) -> Value {
    let r = repair(appointment, tz);
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
    })
}

/// What only a creation carries: the idempotency key and the appointment id property.
pub fn creation_fields(body: &mut Value, transaction_id: &str, appointment_id: i64) {
    if let Value::Object(map) = body {
        map.insert("transactionId".into(), json!(transaction_id));
        map.insert(
            "singleValueExtendedProperties".into(),
            json!([{ "id": XPERT_ID_PROPERTY, "value": appointment_id.to_string() }]),
        );
    }
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
        let v = event_body(&appointment(start, end, false), chrono_tz::Europe::Vienna);
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
}
