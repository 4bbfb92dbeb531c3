//! Bad input, as property tests: appointments with any Unicode (control characters, NUL,
//! lone CR and LF, emoji, combining marks, right-to-left text, Unicode blanks), missing
//! subject, location and notes, times from before year 1 to after 9999 (with fractions of a
//! second), negative and zero durations, all-day flags in every time zone, 1 MB notes; and
//! arbitrary user names for file names.
//!
//! What is checked, against a model of what README.md ("What ends up in the calendar")
//! promises, never against the code's own `repair`:
//! - every calendar parses with the independent `ical` crate and with a strict RFC 5545
//!   reader written here; lines end in CRLF, are at most 75 octets and hold no control
//!   character but TAB; UID, SEQUENCE, DTSTAMP, DTSTART, DTEND, SUMMARY, LOCATION and
//!   DESCRIPTION read back as documented; DTEND is after DTSTART; no ATTENDEE, METHOD or TZID;
//! - the public functions the worker calls never panic and give the same bytes twice;
//! - file names stay one component inside their directory, are deterministic, injective
//!   and fit a file system's 255-byte limit;
//! - end to end: generated hostile appointments and user names in a real database, the
//!   worker with the `ics` sink, every file read back.
//!
//! Cases that once failed are kept below as plain regression tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use livesync_worker::file_name::{MAX_STEM_BYTES, encode, safe_path, sha256_hex};
use livesync_worker::flush::uid_for;
use livesync_worker::ical::{
    MAX_TEXT_BYTES, NO_SUBJECT, TRUNCATION_MARKER, render_calendar, render_event, render_object,
    split_events,
};
use livesync_worker::sink::ics::IcsSink;
use livesync_worker::sink::{Appointment, CalendarOwner, CalendarSink, Change, RenderContext};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::helpers::{TestDb, eventually};
use crate::worker_support::{RunningWorker, test_settings};

/// Moderate case counts: the whole module runs in CI on two cores.
fn config(cases: u32) -> Config {
    Config {
        cases,
        // Failing cases are kept as regression tests in this file, not in side files.
        failure_persistence: None,
        // Shrinking a 1 MB case can take long; a failure is reported after this at most.
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Pieces of text Xpert users (and their copy and paste) produce.
const TOKENS: &[&str] = &[
    "Verhandlung",
    "Müller",
    "Ärztekammer",
    "e\u{301}",                                   // e + combining acute
    "\u{5e9}\u{5dc}\u{5d5}\u{5dd}",               // Hebrew
    "\u{627}\u{644}\u{633}\u{644}\u{627}\u{645}", // Arabic
    "\u{202e}gnirts\u{202c}",                     // right-to-left override
    "👩‍⚖️",
    "🇦🇹",
    "😀",
    "\u{feff}",
    "\u{200b}",
    "\u{fffd}",
    "\u{ffff}",
    "\u{10ffff}",
    "\r\n",
    "\r",
    "\n",
    "\n\r",
    "\t",
    "\0",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{9f}",
    "\u{2028}",
    "\u{2029}",
    "\u{a0}",
    "\u{3000}",
    "\u{2003}",
    "\u{1680}",
    " ",
    "   ",
    ",",
    ";",
    ":",
    "\\",
    "\\n",
    "\"",
    "BEGIN:VEVENT",
    "END:VCALENDAR",
    "\r\n END:VEVENT\r\n",
    "X-FOO;A=B:c",
];

/// Blank runs longer than half a line, so some folded pieces cannot avoid ending in one.
const LONG_BLANKS: &[&str] = &[" ", "\u{a0}", "\u{3000}", "\t", "\u{2028}"];

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        4 => prop::char::range('a', 'z'),
        2 => prop::char::range('\0', '\u{1f}'),
        1 => prop::char::range('\u{7f}', '\u{9f}'),
        2 => prop::sample::select(&[' ', ',', ';', ':', '\\', '"', '\t', '\r', '\n'][..]),
    ]
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => any_char().prop_map(String::from),
        4 => prop::sample::select(TOKENS).prop_map(str::to_owned),
        1 => (prop::sample::select(LONG_BLANKS), 20usize..120).prop_map(|(b, n)| b.repeat(n)),
    ]
}

fn text(max_pieces: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..max_pieces).prop_map(|p| p.concat())
}

/// Notes: usually short, now and then 1 MB.
fn notes() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        16 => text(300).prop_map(Some),
        1 => text(12).prop_map(|unit| {
            let unit = if unit.is_empty() { "ä".to_owned() } else { unit };
            Some(unit.repeat(1024 * 1024 / unit.len() + 1))
        }),
    ]
}

fn first_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap()
}

fn last_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
}

fn at(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, micros * 1000).unwrap()
}

/// Instants in `lo..=hi` (seconds), with microseconds as PostgreSQL stores them, and the
/// edges of the representable range.
fn instant_in(lo: i64, hi: i64) -> impl Strategy<Value = DateTime<Utc>> + Clone {
    let edges: Vec<i64> = [
        first_instant().timestamp(),
        last_instant().timestamp(),
        Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0)
            .unwrap()
            .timestamp(),
        Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0)
            .unwrap()
            .timestamp(),
        0,
    ]
    .into_iter()
    .flat_map(|t| [t - 86_400, t - 1, t, t + 1, t + 86_400])
    .filter(|t| (lo..=hi).contains(t))
    .collect();
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let (near_lo, near_hi) = (
        (now - 10 * 31_536_000).max(lo),
        (now + 10 * 31_536_000).min(hi),
    );
    prop_oneof![
        4 => (lo..=hi, 0u32..1_000_000).prop_map(|(s, us)| at(s, us)),
        4 => (near_lo..=near_hi).prop_map(|s| at(s - s.rem_euclid(900), 0)),
        2 => (prop::sample::select(edges), prop_oneof![Just(0u32), 0u32..1_000_000])
            .prop_map(|(s, us)| at(s, us)),
    ]
}

/// Any instant chrono can hold: years from about -262000 to +262000.
fn instant() -> impl Strategy<Value = DateTime<Utc>> + Clone {
    prop_oneof![
        8 => instant_in(first_instant().timestamp() - 86_400, last_instant().timestamp() + 86_400),
        1 => instant_in(DateTime::<Utc>::MIN_UTC.timestamp(), DateTime::<Utc>::MAX_UTC.timestamp()),
        1 => prop::sample::select(vec![DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC]),
    ]
}

/// Durations in microseconds: zero, a fraction of a second either way, hours, days, years.
fn duration_micros() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => Just(0i64),
        2 => -2_000_000i64..2_000_000,
        3 => (-48i64..96).prop_map(|q| q * 900_000_000),
        2 => (-400i64..400).prop_map(|d| d * 86_400_000_000),
        1 => any::<i64>(),
    ]
}

fn end_from(start: DateTime<Utc>, micros: i64) -> DateTime<Utc> {
    start
        .checked_add_signed(chrono::Duration::microseconds(micros))
        .unwrap_or(if micros > 0 {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
}

fn appointment_with(
    times: impl Strategy<Value = DateTime<Utc>> + Clone + 'static,
) -> impl Strategy<Value = Appointment> {
    (
        (
            any::<i64>(),
            prop::option::weighted(0.85, text(60)),
            prop::option::weighted(0.6, text(40)),
            notes(),
        ),
        (
            times.clone(),
            prop_oneof![
                8 => duration_micros().prop_map(Some),
                1 => Just(None),
            ],
            times.clone(),
            any::<bool>(),
            times,
        ),
    )
        .prop_map(
            |((id, subject, location, notes), (start, duration, other, all_day, updated))| {
                Appointment {
                    id,
                    subject,
                    location,
                    notes,
                    starts_at: start,
                    // An end unrelated to the start now and then.
                    ends_at: duration.map_or(other, |d| end_from(start, d)),
                    all_day,
                    updated_at: updated,
                }
            },
        )
}

fn appointment() -> impl Strategy<Value = Appointment> {
    appointment_with(instant())
}

/// Zones with their own oddities: the firm's usual one, UTC, +14:00, -11:00, half-hour
/// offsets, a half-hour DST shift.
fn odd_zones() -> impl Strategy<Value = chrono_tz::Tz> {
    prop::sample::select(vec![
        chrono_tz::Europe::Vienna,
        chrono_tz::UTC,
        chrono_tz::Pacific::Kiritimati,
        chrono_tz::Pacific::Pago_Pago,
        chrono_tz::America::St_Johns,
        chrono_tz::Australia::Lord_Howe,
    ])
}

fn time_zone() -> impl Strategy<Value = chrono_tz::Tz> {
    prop_oneof![
        1 => prop::sample::select(&chrono_tz::TZ_VARIANTS[..]),
        1 => odd_zones(),
    ]
}

// ---------------------------------------------------------------------------------------
// The model: what README.md promises, written independently of the code under test
// ---------------------------------------------------------------------------------------

/// A text value after the documented repairs, before any cut: CR LF and lone CR become a
/// line feed, control characters other than TAB and line feed are removed, surrounding
/// blanks are trimmed (only trailing ones of notes); blank is missing.
fn model_text(raw: Option<&str>, trim_start: bool) -> Option<String> {
    let normalised = raw?.replace("\r\n", "\n").replace('\r', "\n");
    let kept: String = normalised
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect();
    let trimmed = if trim_start {
        kept.trim()
    } else {
        kept.trim_end()
    };
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// `actual` is `expected`, or (over 64 KiB) a prefix of it cut at a character boundary
/// followed by the marker, 64 KiB in all.
fn assert_text(name: &str, actual: Option<&str>, expected: Option<&str>) {
    match (actual, expected) {
        (None, None) => {}
        (Some(a), Some(e)) if e.len() <= MAX_TEXT_BYTES => {
            assert!(a == e, "{name}: read back {a:?}, expected {e:?}")
        }
        (Some(a), Some(e)) => {
            assert!(a.len() <= MAX_TEXT_BYTES, "{name}: {} bytes", a.len());
            let kept = a
                .strip_suffix(TRUNCATION_MARKER)
                .unwrap_or_else(|| panic!("{name}: cut text ends in the marker"));
            assert!(e.starts_with(kept), "{name}: cut text is a prefix");
            assert!(
                kept.len() + TRUNCATION_MARKER.len() > MAX_TEXT_BYTES - 4,
                "{name}: cut at the last character boundary, kept {}",
                kept.len()
            );
        }
        (a, e) => panic!("{name}: read back {a:?}, expected {e:?}"),
    }
}

fn model_summary(a: &Appointment) -> String {
    model_text(a.subject.as_deref(), true).unwrap_or_else(|| NO_SUBJECT.to_owned())
}

/// Whole seconds (iCalendar has no fractions), moved into 0001-01-01 ..= 9999-12-31.
fn model_instant(t: DateTime<Utc>) -> DateTime<Utc> {
    at(t.timestamp(), 0).clamp(first_instant(), last_instant())
}

fn utc_text(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn date_text(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

#[derive(Debug, PartialEq, Eq)]
enum ModelWhen {
    /// DTSTART, DTEND (absent: ends when it starts).
    Timed(String, Option<String>),
    /// DTSTART;VALUE=DATE, DTEND;VALUE=DATE (exclusive).
    AllDay(String, String),
}

fn model_when(a: &Appointment, tz: chrono_tz::Tz) -> ModelWhen {
    let start = model_instant(a.starts_at);
    let end = model_instant(a.ends_at);
    if !a.all_day {
        return ModelWhen::Timed(utc_text(start), (end > start).then(|| utc_text(end)));
    }
    // Dates in the firm's zone; an end at local midnight is exclusive.
    let first = start.with_timezone(&tz).date_naive();
    let local_end = end.with_timezone(&tz);
    let mut last = local_end.date_naive();
    if local_end.time() != NaiveTime::MIN {
        last = last + Days::new(1);
    }
    let lo = NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
    let hi = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
    let first = first.clamp(lo, hi - Days::new(1));
    let mut last = last.clamp(lo, hi);
    if last <= first {
        last = first + Days::new(1);
    }
    ModelWhen::AllDay(date_text(first), date_text(last))
}

// ---------------------------------------------------------------------------------------
// Reading the output back
// ---------------------------------------------------------------------------------------

/// RFC 5545 TEXT unescaping, strict: only `\\ \; \, \n \N`, no bare `;` or `,`.
fn unescape_strict(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some('\\') => out.push('\\'),
                Some(';') => out.push(';'),
                Some(',') => out.push(','),
                Some('n' | 'N') => out.push('\n'),
                other => panic!("bad escape \\{other:?} in {v:?}"),
            },
            ';' | ',' => panic!("unescaped {c:?} in {v:?}"),
            c => out.push(c),
        }
    }
    out
}

/// One content line as a strict reader sees it.
#[derive(Debug)]
struct ContentLine {
    name: String,
    params: String,
    value: String,
    /// A folded piece of it ends in a blank (some readers, `ical` among them, drop those).
    blank_piece_end: bool,
}

/// Shape of every physical line, then unfolding (CRLF + one blank) into content lines.
fn read_strictly(text: &str) -> Vec<ContentLine> {
    assert!(text.ends_with("\r\n"), "ends with CRLF");
    let mut lines: Vec<ContentLine> = Vec::new();
    let mut pieces: Vec<&str> = Vec::new();
    for line in text.split_inclusive('\n') {
        let body = line
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("CRLF-terminated: {line:?}"));
        assert!(!body.is_empty(), "empty line");
        assert!(body.len() <= 75, "{} octets: {body:?}", body.len());
        assert!(
            !body.chars().any(|c| c.is_control() && c != '\t'),
            "control character in {body:?}"
        );
        pieces.push(body);
    }
    let mut logical: Vec<(String, bool)> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let continued = pieces.get(i + 1).is_some_and(|n| n.starts_with(' '));
        let blank_end = continued && piece.ends_with(char::is_whitespace);
        if blank_end {
            // Only when the text is blank for too long to cut elsewhere.
            let run: usize = piece
                .chars()
                .rev()
                .take_while(|c| c.is_whitespace())
                .map(char::len_utf8)
                .sum();
            assert!(run >= 30, "a folded piece ends in a blank: {piece:?}");
        }
        match piece.strip_prefix(' ') {
            Some(rest) => {
                let (last, blank) = logical.last_mut().expect("no continuation first");
                last.push_str(rest);
                *blank |= blank_end;
            }
            None => logical.push(((*piece).to_owned(), blank_end)),
        }
    }
    for (line, blank_piece_end) in logical {
        let colon = line
            .find(':')
            .unwrap_or_else(|| panic!("no ':' in {line:?}"));
        let (head, value) = (&line[..colon], &line[colon + 1..]);
        let (name, params) = head.split_once(';').unwrap_or((head, ""));
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "property name {name:?}"
        );
        lines.push(ContentLine {
            name: name.to_owned(),
            params: params.to_owned(),
            value: value.to_owned(),
            blank_piece_end,
        });
    }
    lines
}

/// Checks one calendar text against the appointments it should hold (in order), in the
/// firm's zone `tz`, with `sequences` per appointment.
fn check_calendar(text: &str, expected: &[(&Appointment, i32)], tz: chrono_tz::Tz) {
    let lines = read_strictly(text);
    for forbidden in ["ATTENDEE", "ORGANIZER", "METHOD"] {
        assert!(!lines.iter().any(|l| l.name == forbidden), "no {forbidden}");
    }
    assert!(!lines.iter().any(|l| l.params.contains("TZID")), "no TZID");
    assert!(
        !lines.iter().any(|l| l.value == "VTIMEZONE"),
        "no VTIMEZONE"
    );
    // The calendar's own properties.
    let header: Vec<(&str, &str)> = lines
        .iter()
        .take_while(|l| (l.name.as_str(), l.value.as_str()) != ("BEGIN", "VEVENT"))
        .take_while(|l| (l.name.as_str(), l.value.as_str()) != ("END", "VCALENDAR"))
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(
        header,
        [
            ("BEGIN", "VCALENDAR"),
            ("VERSION", "2.0"),
            ("PRODID", "-//notarXpert//livesync//DE"),
            ("CALSCALE", "GREGORIAN"),
            ("X-WR-CALNAME", "notarXpert"),
        ]
    );
    assert_eq!(lines.last().map(|l| l.value.as_str()), Some("VCALENDAR"));

    // Strictly: the events' content lines.
    let mut events: Vec<Vec<&ContentLine>> = Vec::new();
    for l in &lines {
        match (l.name.as_str(), l.value.as_str()) {
            ("BEGIN", "VEVENT") => events.push(Vec::new()),
            ("END", "VEVENT") | ("BEGIN" | "END", "VCALENDAR") => {}
            (n, v) => {
                assert!(n != "BEGIN" && n != "END", "unexpected {n}:{v}");
                if let Some(e) = events.last_mut() {
                    e.push(l);
                }
            }
        }
    }
    let parsed = livesync_testkit::ics::events(text).expect("ical parses it");
    assert_eq!(events.len(), expected.len(), "one VEVENT per appointment");
    assert_eq!(parsed.len(), expected.len(), "ical sees every VEVENT");

    for ((event, parsed), (a, sequence)) in events.iter().zip(&parsed).zip(expected) {
        let strict = |name: &str| {
            let found: Vec<&ContentLine> =
                event.iter().copied().filter(|l| l.name == name).collect();
            assert!(found.len() <= 1, "{name} at most once");
            found.first().copied()
        };
        let value = |name: &str| strict(name).map(|l| l.value.as_str());
        assert_eq!(value("UID"), Some(uid_for(a.id).as_str()));
        assert_eq!(
            value("SEQUENCE"),
            Some((*sequence).max(0).to_string().as_str())
        );
        assert_eq!(
            value("DTSTAMP"),
            Some(utc_text(model_instant(a.updated_at)).as_str())
        );

        // Text, strictly unescaped, against the model.
        let summary = model_summary(a);
        let texts = [
            ("SUMMARY", Some(summary)),
            ("LOCATION", model_text(a.location.as_deref(), true)),
            ("DESCRIPTION", model_text(a.notes.as_deref(), false)),
        ];
        for (name, model) in texts.iter().map(|(n, m)| (*n, m.as_deref())) {
            let line = strict(name);
            if let Some(l) = line {
                assert_eq!(l.params, "", "{name} has no parameters");
            }
            let read = line.map(|l| unescape_strict(&l.value));
            assert_text(name, read.as_deref(), model);

            // The same through `ical`, with its two known differences from RFC 5545: it
            // drops a value's leading colons, and trailing blanks of a folded piece.
            let by_ical = parsed.raw(name).map(unescape_strict);
            let blanks_lost = line.is_some_and(|l| l.blank_piece_end);
            let oracle = |v: &str| -> String {
                let v = v.trim_start_matches(':');
                if blanks_lost {
                    v.chars().filter(|c| !c.is_whitespace()).collect()
                } else {
                    v.to_owned()
                }
            };
            assert_eq!(
                by_ical.as_deref().map(oracle),
                read.as_deref().map(oracle),
                "{name} as ical reads it"
            );
        }

        // When.
        let dt = |name: &str| strict(name).map(|l| (l.params.as_str(), l.value.as_str()));
        match model_when(a, tz) {
            ModelWhen::Timed(start, end) => {
                assert_eq!(dt("DTSTART"), Some(("", start.as_str())), "{a:?}");
                assert_eq!(dt("DTEND"), end.as_deref().map(|e| ("", e)), "{a:?}");
            }
            ModelWhen::AllDay(start, end) => {
                assert_eq!(dt("DTSTART"), Some(("VALUE=DATE", start.as_str())), "{a:?}");
                assert_eq!(dt("DTEND"), Some(("VALUE=DATE", end.as_str())), "{a:?}");
            }
        }
        // Whatever the model says: DTEND (when present) is after DTSTART, years 1..=9999.
        let start = value("DTSTART").expect("DTSTART");
        if let Some(end) = value("DTEND") {
            assert!(end > start, "DTEND {end} after DTSTART {start}");
        }
        for v in [Some(start), value("DTEND"), value("DTSTAMP")]
            .into_iter()
            .flatten()
        {
            assert!(&v[..4] != "0000" && v[..4].bytes().all(|b| b.is_ascii_digit()));
        }
        let mut names: Vec<&str> = event.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), event.len(), "no property twice: {names:?}");
    }
}

fn ctx(tz: chrono_tz::Tz) -> RenderContext {
    RenderContext { time_zone: tz }
}

// ---------------------------------------------------------------------------------------
// Properties of the iCalendar output
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    /// One appointment as a CalDAV object and as an `.ics` file block.
    #[test]
    fn any_appointment_renders_as_documented(
        a in appointment(),
        sequence in any::<i32>(),
        tz in time_zone(),
    ) {
        let uid = uid_for(a.id);
        let object = render_object(&a, &uid, sequence, &ctx(tz));
        check_calendar(&object, &[(&a, sequence)], tz);
        // Pure: the same bytes again; the block is the object's body.
        let block = render_event(&a, &uid, sequence, &ctx(tz));
        prop_assert_eq!(&render_object(&a, &uid, sequence, &ctx(tz)), &object);
        prop_assert_eq!(render_calendar([block.as_str()]), object);
    }

}

proptest! {
    #![proptest_config(config(16))]
    /// The UID depends on the appointment's id only; changed content keeps it.
    #[test]
    fn the_uid_is_stable_per_appointment(
        a in appointment(),
        b in appointment(),
        sequence in 0..1000i32,
    ) {
        let b = Appointment { id: a.id, ..b };
        let uid = uid_for(a.id);
        let tz = chrono_tz::Europe::Vienna;
        let first = split_events(&render_object(&a, &uid, sequence, &ctx(tz))).unwrap();
        let later = split_events(&render_object(&b, &uid, sequence + 1, &ctx(tz))).unwrap();
        prop_assert_eq!(first.len(), 1);
        prop_assert_eq!(&first[0].0, &uid);
        prop_assert_eq!(&later[0].0, &uid);
    }

    /// A calendar of several events: every event reads back, and `split_events` (how the
    /// `ics` sink reads its own files) gives back exactly the blocks it was built from.
    #[test]
    fn calendars_of_many_events_read_back(
        appointments in prop::collection::vec(appointment(), 0..8),
        tz in time_zone(),
    ) {
        let mut seen = BTreeSet::new();
        let appointments: Vec<_> = appointments
            .into_iter()
            .filter(|a| seen.insert(a.id))
            .collect();
        let blocks: Vec<(String, String)> = appointments
            .iter()
            .map(|a| (uid_for(a.id), render_event(a, &uid_for(a.id), 3, &ctx(tz))))
            .collect();
        let calendar = render_calendar(blocks.iter().map(|(_, b)| b.as_str()));
        let expected: Vec<_> = appointments.iter().map(|a| (a, 3)).collect();
        check_calendar(&calendar, &expected, tz);
        prop_assert_eq!(split_events(&calendar).unwrap(), blocks);
    }
}

// ---------------------------------------------------------------------------------------
// Properties of file names
// ---------------------------------------------------------------------------------------

const NAME_PIECES: &[&str] = &[
    "../",
    "..",
    ".",
    "/",
    "//",
    "\\",
    "..\\",
    "\0",
    "%",
    "%2F",
    "%25",
    "~",
    "_",
    "-",
    " ",
    "a",
    "b",
    "Z",
    "0",
    "ä",
    "😀",
    "e\u{301}",
    "\u{202e}",
    "KANZLEI\\",
    "C:",
    ":",
    "*",
    "?",
    "\n",
    "\r",
    "name.ics",
];

fn username() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        4 => prop::collection::vec(prop::sample::select(NAME_PIECES), 0..40)
            .prop_map(|p| p.concat()),
        1 => (prop::sample::select(NAME_PIECES), 1usize..1001)
            .prop_map(|(p, n)| p.repeat(n).chars().take(1000).collect::<String>()),
        1 => prop::collection::vec(any_char(), 190..230).prop_map(String::from_iter),
    ]
}

/// The user name back from an encoded stem without hash (`%` alone is the empty name).
fn decode(stem: &str) -> Vec<u8> {
    if stem == "%" {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut bytes = stem.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            assert_eq!(hex.len(), 2, "a %XX triple in {stem}");
            assert_eq!(hex, hex.to_uppercase(), "upper-case hex in {stem}");
            out.push(u8::from_str_radix(&hex, 16).unwrap());
        } else {
            out.push(b);
        }
    }
    out
}

fn assert_one_component(dir: &Path, name: &str, ext: &str) {
    let path = safe_path(dir, name, ext);
    assert_eq!(path.parent(), Some(dir), "{name:?} -> {path:?}");
    let rest: Vec<_> = path.strip_prefix(dir).unwrap().components().collect();
    assert!(
        matches!(rest[..], [Component::Normal(_)]),
        "{name:?} -> {path:?}"
    );
    let file = path.file_name().unwrap().to_str().expect("ASCII");
    assert!(!file.starts_with('.'), "{name:?} -> hidden {file}");
    // The sink's hidden siblings (`.<file>.lock`, `.<file>.tmp`) and a rotated log
    // (`<file>.1`) fit a file system's 255-byte limit too.
    assert!(file.len() + 6 <= 255, "{name:?} -> {} bytes", file.len());
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn file_names_are_safe_deterministic_and_decodable(name in username()) {
        let stem = encode(&name);
        prop_assert_eq!(&stem, &encode(&name));
        prop_assert!(stem.len() <= MAX_STEM_BYTES);
        prop_assert!(stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.%~".contains(&b)));
        for ext in ["ics", "log"] {
            assert_one_component(Path::new("/srv/livesync/ics"), &name, ext);
        }
        // Injective: a stem without `~` decodes to the name; a long name keeps a
        // decodable prefix and the SHA-256 of the whole name.
        match stem.split_once('~') {
            None => prop_assert_eq!(decode(&stem), name.as_bytes()),
            Some((prefix, hash)) => {
                prop_assert!(name.len() > MAX_STEM_BYTES / 3);
                prop_assert!(name.as_bytes().starts_with(&decode(prefix)));
                prop_assert_eq!(hash, sha256_hex(name.as_bytes()));
            }
        }
    }

    #[test]
    fn distinct_names_get_distinct_files(
        name in username(),
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(&["_", "/", "%", "%2F", "\\", ".", "~", "a", "A", "", "\0", "ä"][..]),
    ) {
        // A near neighbour: one character replaced (or removed, or added).
        let chars: Vec<char> = name.chars().collect();
        let other: String = if chars.is_empty() {
            with.to_owned()
        } else {
            let i = at.index(chars.len());
            chars[..i].iter().collect::<String>() + with + &chars[i + 1..].iter().collect::<String>()
        };
        prop_assume!(other != name);
        prop_assert_ne!(encode(&name), encode(&other), "{:?} vs {:?}", name, other);
    }
}

/// Real files: each name creates exactly one file in the directory, nothing elsewhere.
#[test]
fn generated_names_make_one_file_each_on_a_real_file_system() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ics");
    std::fs::create_dir(&dir).unwrap();
    let mut runner = TestRunner::new(config(200));
    let mut names = BTreeSet::new();
    for _ in 0..200 {
        let name = username().new_tree(&mut runner).unwrap().current();
        names.insert(name);
    }
    for fixed in ["a/b", "a_b", "a%2Fb", "", ".", "..", "../x", "\\", "\0"] {
        names.insert(fixed.to_owned());
    }
    names.insert("/".repeat(1000));
    names.insert("/".repeat(999) + "\\");
    let mut files = BTreeMap::new();
    for name in &names {
        let path = safe_path(&dir, name, "ics");
        std::fs::write(&path, name.as_bytes())
            .unwrap_or_else(|e| panic!("{name:?} -> {path:?}: {e}"));
        files.insert(path.file_name().unwrap().to_owned(), name.clone());
    }
    assert_eq!(files.len(), names.len(), "distinct names, distinct files");
    let listed: BTreeSet<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, files.keys().cloned().collect());
    for (file, name) in &files {
        assert_eq!(std::fs::read(dir.join(file)).unwrap(), name.as_bytes());
    }
    let root_entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(root_entries.len(), 1, "nothing outside the directory");
}

// ---------------------------------------------------------------------------------------
// The `ics` sink, as the worker calls it
// ---------------------------------------------------------------------------------------

/// Batches of upserts (and deletes) of hostile appointments for a hostile user name, through
/// `IcsSink::apply`: every change succeeds, the one file parses and holds what is left,
/// applying the same batch again changes nothing.
#[test]
fn the_ics_sink_writes_hostile_batches_that_read_back() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let strategy = (
        username(),
        prop::collection::vec((appointment(), any::<bool>()), 1..6),
        time_zone(),
    );
    let mut runner = TestRunner::new(config(16));
    runner
        .run(&strategy, |(name, batch, tz)| {
            let root = tempfile::tempdir().unwrap();
            let sink = IcsSink::new(root.path().join("ics"));
            let owner = CalendarOwner {
                user_id: 7,
                username: name.clone(),
                calendar_address: None,
            };
            let mut left: BTreeMap<String, (Appointment, i32)> = BTreeMap::new();
            let changes: Vec<Change> = batch
                .iter()
                .enumerate()
                .map(|(i, (a, delete))| {
                    let uid = uid_for(a.id);
                    if *delete && left.contains_key(&uid) {
                        left.remove(&uid);
                        Change::Delete {
                            appointment_id: a.id,
                            uid,
                            previous: Default::default(),
                        }
                    } else {
                        let sequence = i as i32;
                        left.insert(uid.clone(), (a.clone(), sequence));
                        Change::Upsert {
                            appointment: a.clone(),
                            uid,
                            sequence,
                            previous: None,
                        }
                    }
                })
                .collect();
            let results = rt.block_on(sink.apply(&owner, &changes, &ctx(tz)));
            assert_eq!(results.len(), changes.len());
            for r in &results {
                assert!(r.is_ok(), "{r:?}");
            }
            let path = sink.path(&name);
            assert_eq!(path.parent(), Some(root.path().join("ics").as_path()));
            let text = std::fs::read_to_string(&path).unwrap();
            // The file is ordered by UID.
            let expected: Vec<_> = left.values().map(|(a, s)| (a, *s)).collect();
            check_calendar(&text, &expected, tz);
            let again = rt.block_on(sink.apply(&owner, &changes, &ctx(tz)));
            assert!(again.iter().all(Result::is_ok));
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "idempotent");
            let visible: Vec<_> = std::fs::read_dir(root.path().join("ics"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| !n.to_string_lossy().starts_with('.'))
                .collect();
            assert_eq!(visible, [path.file_name().unwrap().to_owned()]);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------

/// Appointments PostgreSQL can hold (no NUL in text; times in years -4000 ..= 20000).
fn storable_appointment() -> impl Strategy<Value = Appointment> {
    let lo = Utc
        .with_ymd_and_hms(-4000, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let hi = Utc
        .with_ymd_and_hms(20000, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let inside = move |t: DateTime<Utc>| {
        t.clamp(
            Utc.timestamp_opt(lo, 0).unwrap(),
            Utc.timestamp_opt(hi, 0).unwrap(),
        )
    };
    let no_nul = |t: Option<String>| t.map(|t| t.replace('\0', ""));
    appointment_with(instant_in(lo, hi)).prop_map(move |a| Appointment {
        subject: no_nul(a.subject),
        location: no_nul(a.location),
        notes: no_nul(a.notes),
        ends_at: inside(a.ends_at),
        ..a
    })
}

/// Storable user names: no NUL.
fn storable_username() -> impl Strategy<Value = String> {
    username().prop_map(|n| n.replace('\0', ""))
}

/// Seed of the end-to-end test: `ICAL_PROPS_SEED` (printed on failure) or the clock.
fn e2e_seed() -> u64 {
    std::env::var("ICAL_PROPS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

const E2E_USERS: usize = 10;
const E2E_APPOINTMENTS: usize = 40;
/// Participants of one appointment (participants never appear in the output: one entry
/// per participant's calendar, the same in each).
const E2E_CROWD: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_appointments_from_the_database_reach_every_calendar_readable() {
    let seed = e2e_seed();
    // Shown with the output of a failing run; `ICAL_PROPS_SEED=<seed>` repeats it.
    eprintln!("ICAL_PROPS_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        config(1),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );

    let db = TestDb::migrated().await;
    db.enable_globally("push").await;
    let tz = odd_zones().new_tree(&mut runner).unwrap().current();
    sqlx::query("update livesync.settings set time_zone = $1")
        .bind(tz.name())
        .execute(&db.pool)
        .await
        .unwrap();

    // Hostile user names, distinct, plus a crowd for one appointment.
    let mut names: BTreeSet<String> = ["a/b", "a_b", "../../etc/passwd", "KANZLEI\\mm", ""]
        .into_iter()
        .map(str::to_owned)
        .collect();
    while names.len() < E2E_USERS {
        names.insert(storable_username().new_tree(&mut runner).unwrap().current());
    }
    let mut users: Vec<(i64, String)> = Vec::new();
    for name in &names {
        let id = db.user(name).await;
        db.enable_user(id, true).await;
        users.push((id, name.clone()));
    }
    let crowd: Vec<(i64, String)> = sqlx::query_as(
        "insert into xpert.users (username)
         select 'Teilnehmer/' || i || '/ä😀' from generate_series(1, $1) i returning id, username",
    )
    .bind(E2E_CROWD as i32)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into livesync.user_settings (user_id, live_sync_enabled, keep_logfile)
         select unnest($1::bigint[]), true, false",
    )
    .bind(crowd.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .execute(&db.pool)
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&db, dir.path());
    let ics_dir = settings.ics_dir.clone();
    let sink: Arc<dyn CalendarSink> = Arc::new(IcsSink::new(ics_dir.clone()));
    let worker = RunningWorker::start(&db, settings, sink);

    // The appointments, each for a non-empty subset of the users; the last one for all of
    // them and the crowd.
    let mut calendars: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut generated: Vec<Appointment> = Vec::new();
    for i in 0..E2E_APPOINTMENTS {
        let a = storable_appointment()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mask = (0u64..1 << users.len())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut participants: Vec<&(i64, String)> = users
            .iter()
            .enumerate()
            .filter(|(j, _)| mask & (1 << j) != 0 || i == E2E_APPOINTMENTS - 1 || i == *j)
            .map(|(_, u)| u)
            .collect();
        if i == E2E_APPOINTMENTS - 1 {
            participants.extend(crowd.iter());
        }
        let mut tx = db.pool.begin().await.unwrap();
        let id: i64 = sqlx::query_scalar(
            "insert into xpert.appointments
               (subject, location, notes, starts_at, ends_at, all_day, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7) returning id",
        )
        .bind(&a.subject)
        .bind(&a.location)
        .bind(&a.notes)
        .bind(a.starts_at)
        .bind(a.ends_at)
        .bind(a.all_day)
        .bind(a.updated_at)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("Xpert accepts {a:?}: {e}"));
        sqlx::query(
            "insert into xpert.appointment_participants (appointment_id, user_id)
             select $1, unnest($2::bigint[])",
        )
        .bind(id)
        .bind(participants.iter().map(|(u, _)| *u).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        for (_, name) in participants {
            calendars.entry(name.clone()).or_default().push(id);
        }
        generated.push(Appointment { id, ..a });
    }

    eventually(
        Duration::from_secs(120),
        "every entry delivered",
        || async {
            let (queued, dead): (i64, i64) = sqlx::query_as(
                "select (select count(*) from livesync.queue),
                    (select count(*) from livesync.dead_letters)",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(dead, 0, "bad data is repaired, never dead-lettered");
            (queued == 0).then_some(())
        },
    )
    .await;
    worker.stop().await;

    // What Xpert stored (PostgreSQL keeps text and microseconds as given).
    let stored: BTreeMap<i64, Appointment> = generated.into_iter().map(|a| (a.id, a)).collect();
    let crowd_block = {
        let last = *stored.keys().last().unwrap();
        let uid = uid_for(last);
        move |text: &str| {
            split_events(text)
                .unwrap()
                .into_iter()
                .find(|(u, _)| *u == uid)
                .map(|(_, b)| b)
        }
    };
    let mut block_of_all: Option<String> = None;
    let mut expected_files = BTreeSet::new();
    for (name, ids) in &calendars {
        let path = safe_path(&ics_dir, name, "ics");
        expected_files.insert(path.file_name().unwrap().to_owned());
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("calendar of {name:?} at {path:?}: {e}"));
        // The file is ordered by UID; every entry's SEQUENCE is 0 (delivered once).
        let mut by_uid: Vec<(String, &Appointment)> =
            ids.iter().map(|id| (uid_for(*id), &stored[id])).collect();
        by_uid.sort_by(|x, y| x.0.cmp(&y.0));
        let expected: Vec<_> = by_uid.iter().map(|(_, a)| (*a, 0)).collect();
        eprintln!("checking the calendar of {name:?}");
        check_calendar(&text, &expected, tz);
        let block = crowd_block(&text).expect("the crowd's appointment");
        match &block_of_all {
            None => block_of_all = Some(block),
            Some(b) => assert_eq!(b, &block, "the same entry in every calendar"),
        }
    }
    assert_eq!(calendars.len(), E2E_USERS + E2E_CROWD);
    // Every file is a user's, directly in the directory; nothing was written elsewhere.
    let visible: BTreeSet<_> = std::fs::read_dir(&ics_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .inspect(|e| assert!(e.file_type().unwrap().is_file(), "{:?}", e.path()))
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(visible, expected_files);
    let mut top: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["ics", "logs"]);
    for (_, name) in &users {
        let log = safe_path(&dir.path().join("logs"), name, "log");
        assert!(log.is_file(), "log of {name:?} at {log:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: cases the properties once found
// ---------------------------------------------------------------------------------------

/// A fixed appointment with the given texts, in Vienna.
fn with_texts(subject: &str, location: &str, notes: &str) -> Appointment {
    Appointment {
        id: 42,
        subject: Some(subject.to_owned()),
        location: Some(location.to_owned()),
        notes: Some(notes.to_owned()),
        starts_at: Utc.with_ymd_and_hms(2026, 11, 29, 9, 15, 0).unwrap(),
        ends_at: Utc.with_ymd_and_hms(2026, 11, 29, 10, 45, 0).unwrap(),
        all_day: false,
        updated_at: Utc.with_ymd_and_hms(2026, 11, 28, 17, 3, 0).unwrap(),
    }
}

/// Found by `calendars_of_many_events_read_back`: the `icalendar` crate's own line folding
/// mixes character and byte positions; inside a long run of two-byte blanks (NO-BREAK
/// SPACE) its cut position ran back before the start of the piece, so rendering panicked
/// (`begin > end` when slicing) or, when it ran back exactly to the start, looped forever
/// while the output grew.
#[test]
fn long_runs_of_two_byte_blanks_render() {
    let tz = chrono_tz::Europe::Vienna;
    for n in [70, 150, 151, 300, 1000] {
        let text = format!("x{}y", "\u{a0}".repeat(n));
        for a in [
            with_texts(&text, "Ort", "Notiz"),
            with_texts("Termin", &text, "Notiz"),
            with_texts("Termin", "Ort", &text),
        ] {
            let object = render_object(&a, &uid_for(a.id), 1, &ctx(tz));
            check_calendar(&object, &[(&a, 1)], tz);
        }
    }
}

/// Found by `any_appointment_renders_as_documented`: folding avoided ending a piece in an
/// ASCII blank only; a piece ending in a Unicode blank (here IDEOGRAPHIC SPACE) loses it in
/// readers that trim line ends, `ical` among them.
#[test]
fn folded_pieces_do_not_end_in_unicode_blanks() {
    let tz = chrono_tz::Europe::Vienna;
    for blank in ["\u{3000}", "\u{a0}", "\u{2028}", "\u{2003}"] {
        for offset in 0..8 {
            let text = format!(
                "{}{}x{}y",
                "a".repeat(offset),
                blank.repeat(5),
                "b".repeat(70)
            );
            let a = with_texts(&text, "Ort", "Notiz");
            let object = render_object(&a, &uid_for(a.id), 1, &ctx(tz));
            check_calendar(&object, &[(&a, 1)], tz);
            let text = format!("{}{}{}z", "a".repeat(60 + offset), blank.repeat(4), "c");
            let a = with_texts("Termin", "Ort", &text);
            let object = render_object(&a, &uid_for(a.id), 1, &ctx(tz));
            check_calendar(&object, &[(&a, 1)], tz);
        }
    }
}

/// Times carry microseconds (PostgreSQL); iCalendar writes whole seconds. An end less than
/// a second after the start was written as a DTEND equal to DTSTART, which RFC 5545
/// forbids (DTEND must be later).
#[test]
fn an_end_within_the_same_second_is_no_dtend() {
    let tz = chrono_tz::Europe::Vienna;
    let start = Utc.with_ymd_and_hms(2026, 11, 29, 9, 15, 0).unwrap();
    for (start_us, end_us) in [(0, 1), (100, 999_999), (500_000, 700_000)] {
        let a = Appointment {
            starts_at: start + chrono::Duration::microseconds(start_us),
            ends_at: start + chrono::Duration::microseconds(end_us),
            ..with_texts("Termin", "Ort", "Notiz")
        };
        let object = render_object(&a, &uid_for(a.id), 1, &ctx(tz));
        check_calendar(&object, &[(&a, 1)], tz);
        assert!(!object.contains("DTEND"), "{object}");
    }
}
