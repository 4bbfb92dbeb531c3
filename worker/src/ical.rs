//! Appointments as iCalendar (RFC 5545): one VEVENT per appointment, one VCALENDAR per
//! calendar object or file.
//!
//! Pure functions: the same appointment, UID and SEQUENCE always give the same bytes
//! (DTSTAMP is the appointment's `updated_at`, never "now"). Every content line is written
//! here (TEXT values escaped, a VEVENT's properties in name order, the bytes the
//! `icalendar` crate wrote when it was used), then folded by [`fold`] so that every content
//! line is at most 75 octets, ends in CRLF, is never cut inside a UTF-8 character and,
//! where the text allows, never ends a folded piece with a blank, ASCII or not (some
//! readers trim those). No iCalendar crate writes here: the `icalendar` crate's folding
//! mixes character and byte positions and panics, or loops forever, on long runs of
//! two-byte blanks.
//!
//! Output shape:
//! - timed appointments in UTC (`DTSTART:20261129T091500Z`), no TZID, so no VTIMEZONE is
//!   needed;
//! - all-day appointments as `DTSTART;VALUE=DATE` / `DTEND;VALUE=DATE`, the dates taken in
//!   the firm's time zone ([`RenderContext::time_zone`]), DTEND exclusive;
//! - UID, DTSTAMP, SEQUENCE, SUMMARY, LOCATION and DESCRIPTION when present; no ATTENDEE
//!   (it would send invitations), no METHOD (CalDAV forbids it in stored objects);
//! - the stamp [`HASH_PROPERTY`] (`X-LIVESYNC-HASH`): the [`content_hash`] of what the
//!   event says (subject, place, notes, times, all day), so that verification
//!   (`crate::verify`) sees whether an item still shows what livesync wrote;
//! - the calendar carries `VERSION:2.0`, [`PRODID`], `CALSCALE:GREGORIAN` and
//!   `X-WR-CALNAME:notarXpert`.
//!
//! # Repairs of bad Xpert data
//! Xpert validates little. Every appointment is delivered; what cannot be written as it is
//! gets repaired ([`repair`] reports which [`Repair`]s it made):
//! - a missing or blank subject becomes `(ohne Betreff)`; blank location or notes are left
//!   out; surrounding blanks of subject and location (trailing blanks of notes) are trimmed;
//! - control characters other than TAB and line feed are removed; CR LF and lone CR become
//!   a line feed;
//! - notes (and any other text) longer than 64 KiB are cut at a character boundary and end
//!   in `… (gekürzt)`, 64 KiB in all;
//! - a timed appointment that ends before it starts ends when it starts (written without
//!   DTEND, which RFC 5545 reads as "ends when it starts");
//! - an all-day appointment lasts from its start date to the day of its end (an end at
//!   local midnight is exclusive); one that ends before it starts lasts one day;
//! - times outside the years 1–9999 are moved to the nearest representable instant
//!   (iCalendar has four-digit years); a negative SEQUENCE is written as 0;
//! - fractions of a second are dropped (iCalendar and Graph write whole seconds) before
//!   anything is compared, so an end less than a second after the start is "ends when it
//!   starts", never a DTEND equal to DTSTART.

use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveTime, SubsecRound, TimeZone, Timelike, Utc,
};

use crate::sink::{Appointment, RenderContext};

/// The calendar's display name (`X-WR-CALNAME`).
pub const CALENDAR_NAME: &str = "notarXpert";
/// Product identifier of everything we write.
pub const PRODID: &str = "-//notarXpert//livesync//DE";
/// Subject written for appointments without one.
pub const NO_SUBJECT: &str = "(ohne Betreff)";
/// Marker at the end of cut text.
pub const TRUNCATION_MARKER: &str = "… (gekürzt)";
/// Longest text value written, in bytes (marker included).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The stamp on every event livesync writes: the [`content_hash`] of its content.
pub const HASH_PROPERTY: &str = "X-LIVESYNC-HASH";

/// Longest content line in octets, CRLF excluded (RFC 5545 §3.1).
const MAX_LINE_OCTETS: usize = 75;

/// When an appointment takes place, after repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `end == start` means "ends when it starts" (written without DTEND).
    Timed {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Dates in the firm's zone; `end` is exclusive and always after `start`.
    AllDay { start: NaiveDate, end: NaiveDate },
}

/// One repair made to an appointment's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    MissingSubject,
    ControlCharacters,
    TextTruncated,
    EndBeforeStart,
    OutOfRange,
}

/// An appointment's content as it is written, whichever sink writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub summary: String,
    pub location: Option<String>,
    pub description: Option<String>,
    pub when: When,
    pub repairs: Vec<Repair>,
}

/// Apply the documented repairs (see the module doc) to an appointment.
pub fn repair(appointment: &Appointment, time_zone: chrono_tz::Tz) -> Repaired {
    let mut repairs = Vec::new();
    let summary = match clean_text(appointment.subject.as_deref(), Trim::Both, &mut repairs) {
        Some(s) => s,
        None => {
            repairs.push(Repair::MissingSubject);
            NO_SUBJECT.to_owned()
        }
    };
    let location = clean_text(appointment.location.as_deref(), Trim::Both, &mut repairs);
    let description = clean_text(appointment.notes.as_deref(), Trim::End, &mut repairs);

    let start = clamp_instant(appointment.starts_at, &mut repairs);
    let end = clamp_instant(appointment.ends_at, &mut repairs);
    if end < start {
        repairs.push(Repair::EndBeforeStart);
    }
    let when = if appointment.all_day {
        let first = local_date(start, time_zone);
        let local_end = time_zone.from_utc_datetime(&end.naive_utc());
        let mut last = local_end.date_naive();
        if local_end.time() != NaiveTime::MIN {
            last = last.succ_opt().unwrap_or(last);
        }
        let (first, mut last) = clamp_dates(first, last, &mut repairs);
        if last <= first {
            last = first + Days::new(1);
        }
        When::AllDay {
            start: first,
            end: last,
        }
    } else {
        When::Timed {
            start,
            end: end.max(start),
        }
    };
    repairs.sort_by_key(|r| *r as u8);
    repairs.dedup();
    Repaired {
        summary,
        location,
        description,
        when,
        repairs,
    }
}

/// One VEVENT (`BEGIN:VEVENT` … `END:VEVENT`, CRLF-terminated, folded).
pub fn render_event(
    appointment: &Appointment,
    uid: &str,
    sequence: i32,
    ctx: &RenderContext,
) -> String {
    let r = repair(appointment, ctx.time_zone);
    let mut dtstamp_repairs = Vec::new();
    let dtstamp = clamp_instant(appointment.updated_at, &mut dtstamp_repairs);

    let (dtstart, dtend) = match r.when {
        When::Timed { start, end } => (
            format!(":{}", format_utc(start)),
            (end > start).then(|| format!(":{}", format_utc(end))),
        ),
        When::AllDay { start, end } => (
            format!(";VALUE=DATE:{}", format_date(start)),
            Some(format!(";VALUE=DATE:{}", format_date(end))),
        ),
    };

    // Properties in name order (the bytes of unchanged appointments stay the same).
    let mut out = String::with_capacity(256 + r.description.as_ref().map_or(0, String::len));
    out.push_str("BEGIN:VEVENT\r\n");
    if let Some(description) = &r.description {
        text_line(&mut out, "DESCRIPTION", description);
    }
    if let Some(dtend) = dtend {
        raw_line(&mut out, "DTEND", &dtend);
    }
    raw_line(&mut out, "DTSTAMP", &format!(":{}", format_utc(dtstamp)));
    raw_line(&mut out, "DTSTART", &dtstart);
    if let Some(location) = &r.location {
        text_line(&mut out, "LOCATION", location);
    }
    raw_line(&mut out, "SEQUENCE", &format!(":{}", sequence.max(0)));
    text_line(&mut out, "SUMMARY", &r.summary);
    text_line(&mut out, "UID", uid);
    raw_line(
        &mut out,
        HASH_PROPERTY,
        &format!(
            ":{}",
            content_hash(
                &r.summary,
                r.location.as_deref(),
                r.description.as_deref(),
                &r.when
            )
        ),
    );
    out.push_str("END:VEVENT\r\n");
    fold(&out)
}

/// The hash of what an event says, as livesync writes it and as it is read back from a
/// calendar: the subject, the place, the notes (after the repairs of [`repair`]) and when
/// it takes place (UTC instants, or the all-day dates). 32 hex digits of a SHA-256.
/// UID, SEQUENCE and DTSTAMP are not content: a calendar may hold an older SEQUENCE of the
/// same content.
pub fn content_hash(
    summary: &str,
    location: Option<&str>,
    description: Option<&str>,
    when: &When,
) -> String {
    let when = match when {
        When::Timed { start, end } => format!("T{}/{}", format_utc(*start), format_utc(*end)),
        When::AllDay { start, end } => format!("D{}/{}", format_date(*start), format_date(*end)),
    };
    // Unit separators: no text value written contains one (control characters are
    // removed by the repairs).
    let canonical = format!(
        "{summary}\u{1f}{}\u{1f}{}\u{1f}{when}",
        location.unwrap_or(""),
        description.unwrap_or("")
    );
    let mut hash = crate::file_name::sha256_hex(canonical.as_bytes());
    hash.truncate(32);
    hash
}

/// `NAME` followed by `rest` (parameters, `:` and the value), unfolded.
fn raw_line(out: &mut String, name: &str, rest: &str) {
    out.push_str(name);
    out.push_str(rest);
    out.push_str("\r\n");
}

/// `NAME:value` with the value escaped as RFC 5545 TEXT (`\\`, `\,`, `\;`, `\n`), unfolded.
fn text_line(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\r\n");
}

/// A VCALENDAR holding the given VEVENT blocks (as [`render_event`] returns them).
pub fn render_calendar<'a>(events: impl IntoIterator<Item = &'a str>) -> String {
    calendar_with(calendar_header(), events)
}

/// A VCALENDAR for a subscription (a calendar feed): [`render_calendar`]'s, telling
/// clients to fetch it again after `refresh` (`REFRESH-INTERVAL`, RFC 7986, and
/// `X-PUBLISHED-TTL`, which Outlook reads), in whole minutes, at least one.
pub fn render_feed<'a>(
    events: impl IntoIterator<Item = &'a str>,
    refresh: std::time::Duration,
) -> String {
    let minutes = (refresh.as_secs() / 60).max(1);
    let mut header = calendar_header();
    raw_line(
        &mut header,
        "REFRESH-INTERVAL",
        &format!(";VALUE=DURATION:PT{minutes}M"),
    );
    raw_line(&mut header, "X-PUBLISHED-TTL", &format!(":PT{minutes}M"));
    calendar_with(header, events)
}

/// The calendar's own properties, unfolded.
fn calendar_header() -> String {
    let mut header = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n");
    text_line(&mut header, "PRODID", PRODID);
    header.push_str("CALSCALE:GREGORIAN\r\n");
    text_line(&mut header, "X-WR-CALNAME", CALENDAR_NAME);
    header
}

fn calendar_with<'a>(header: String, events: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = fold(&header);
    for event in events {
        out.push_str(event);
    }
    out.push_str("END:VCALENDAR\r\n");
    out
}

/// A VCALENDAR with exactly one VEVENT: a CalDAV calendar object resource.
pub fn render_object(
    appointment: &Appointment,
    uid: &str,
    sequence: i32,
    ctx: &RenderContext,
) -> String {
    render_calendar([render_event(appointment, uid, sequence, ctx).as_str()])
}

/// A calendar file we wrote, taken apart again: each VEVENT block, raw, with its UID.
///
/// Only our own output is expected; anything outside VEVENT blocks (the calendar header)
/// is dropped, a VEVENT without UID is dropped, a VEVENT that never ends is an error.
pub fn split_events(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut events = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        match &mut current {
            None if bare.eq_ignore_ascii_case("BEGIN:VEVENT") => {
                current = Some(String::from("BEGIN:VEVENT\r\n"));
            }
            None => {}
            Some(block) => {
                block.push_str(bare);
                block.push_str("\r\n");
                if bare.eq_ignore_ascii_case("END:VEVENT") {
                    let block = current.take().unwrap_or_default();
                    if let Some(uid) = event_uid(&block) {
                        events.push((uid, block));
                    }
                }
            }
        }
    }
    if current.is_some() {
        return Err("a VEVENT is not terminated by END:VEVENT".to_owned());
    }
    Ok(events)
}

/// The UID of one VEVENT block (unfolded and unescaped).
fn event_uid(block: &str) -> Option<String> {
    let unfolded = block.replace("\r\n ", "").replace("\r\n\t", "");
    unfolded.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.split(';').next()?;
        name.eq_ignore_ascii_case("UID").then(|| unescape(value))
    })
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// An event read back from a calendar: what verification compares with Xpert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRead {
    pub uid: Option<String>,
    pub summary: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    /// `None` when DTSTART is missing or not understood (then the content cannot match).
    pub when: Option<When>,
    /// The stamp ([`HASH_PROPERTY`]) when the event carries one.
    pub stamp: Option<String>,
}

impl EventRead {
    /// The [`content_hash`] of what the event says now; `None` when its times were not
    /// understood.
    pub fn content_hash(&self) -> Option<String> {
        let when = self.when.as_ref()?;
        Some(content_hash(
            self.summary.as_deref().unwrap_or(""),
            self.location.as_deref(),
            self.description.as_deref(),
            when,
        ))
    }
}

/// Read the first VEVENT of `text` (a calendar object, or one VEVENT block) as a calendar
/// holds it, whoever wrote it: folding with CRLF or LF, properties in any order, times in
/// UTC, with a TZID, floating (taken in `time_zone`) or as dates. Alarms inside the event
/// are skipped. `None` when there is no VEVENT.
pub fn read_event(text: &str, time_zone: chrono_tz::Tz) -> Option<EventRead> {
    let unfolded = text
        .replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "")
        .replace("\n\t", "");
    let mut event: Option<EventRead> = None;
    let mut nested = 0usize;
    let (mut dtstart, mut dtend): (Option<Moment>, Option<Moment>) = (None, None);
    let mut has_duration = false;
    for line in unfolded.lines() {
        let line = line.trim_end_matches('\r');
        let Some(e) = event.as_mut() else {
            if line.eq_ignore_ascii_case("BEGIN:VEVENT") {
                event = Some(EventRead::default());
            }
            continue;
        };
        let upper = line.to_ascii_uppercase();
        if upper == "END:VEVENT" && nested == 0 {
            break;
        }
        if upper.starts_with("BEGIN:") {
            nested += 1;
            continue;
        }
        if upper.starts_with("END:") {
            nested = nested.saturating_sub(1);
            continue;
        }
        if nested > 0 {
            continue;
        }
        let Some((name, params, value)) = split_property(line) else {
            continue;
        };
        let text = || Some(unescape(value)).filter(|v| !v.is_empty());
        match name.as_str() {
            "UID" => e.uid = Some(unescape(value)),
            "SUMMARY" => e.summary = text(),
            "LOCATION" => e.location = text(),
            "DESCRIPTION" => e.description = text(),
            "DTSTART" => dtstart = moment(&params, value, time_zone),
            "DTEND" => dtend = moment(&params, value, time_zone),
            "DURATION" => has_duration = true,
            n if n == HASH_PROPERTY => e.stamp = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut event = event?;
    event.when = match (dtstart, dtend) {
        (Some(Moment::Date(start)), None) if !has_duration => Some(When::AllDay {
            start,
            end: start + Days::new(1),
        }),
        (Some(Moment::Date(start)), Some(Moment::Date(end))) => Some(When::AllDay { start, end }),
        (Some(Moment::Instant(start)), None) if !has_duration => {
            Some(When::Timed { start, end: start })
        }
        (Some(Moment::Instant(start)), Some(Moment::Instant(end))) => {
            Some(When::Timed { start, end })
        }
        _ => None,
    };
    Some(event)
}

/// A DTSTART or DTEND read back.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

/// A property's parameters: (upper-case name, value without quotes).
type Params = Vec<(String, String)>;

/// `NAME;PARAM=x;…:value` → (upper-case name, parameters, value). A colon inside a quoted
/// parameter value is not the separator.
fn split_property(line: &str) -> Option<(String, Params, &str)> {
    let mut quoted = false;
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon?;
    let (head, value) = (&line[..colon], &line[colon + 1..]);
    let mut parts = head.split(';');
    let name = parts.next()?.trim().to_ascii_uppercase();
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_uppercase(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect();
    Some((name, params, value))
}

fn moment(params: &[(String, String)], value: &str, time_zone: chrono_tz::Tz) -> Option<Moment> {
    let value = value.trim();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if param("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("DATE")) || value.len() == 8 {
        return NaiveDate::parse_from_str(value, "%Y%m%d")
            .ok()
            .map(Moment::Date);
    }
    if let Some(utc) = value.strip_suffix(['Z', 'z']) {
        let local = chrono::NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").ok()?;
        return Some(Moment::Instant(Utc.from_utc_datetime(&local)));
    }
    let local = chrono::NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S").ok()?;
    let zone = match param("TZID") {
        Some(id) => id.trim_start_matches('/').parse::<chrono_tz::Tz>().ok()?,
        None => time_zone,
    };
    zone.from_local_datetime(&local)
        .earliest()
        .map(|t| Moment::Instant(t.with_timezone(&Utc)))
}

/// Unfold, then fold every content line again at [`MAX_LINE_OCTETS`], on character
/// boundaries, preferring cuts that do not leave a blank at the end of a piece.
pub fn fold(text: &str) -> String {
    let unfolded = text.replace("\r\n ", "");
    let mut out = String::with_capacity(unfolded.len() + unfolded.len() / 64 * 3 + 2);
    for line in unfolded.split("\r\n").filter(|l| !l.is_empty()) {
        fold_line(line, &mut out);
    }
    out
}

fn fold_line(line: &str, out: &mut String) {
    let mut rest = line;
    let mut limit = MAX_LINE_OCTETS;
    loop {
        if rest.len() <= limit {
            out.push_str(rest);
            out.push_str("\r\n");
            return;
        }
        let mut cut = limit;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        // Avoid a piece ending in a blank (any Unicode White_Space, as `str::trim_end`
        // sees it), unless the text is blank for too long.
        let mut nice = cut;
        while nice > limit / 2 {
            match rest[..nice].chars().next_back() {
                Some(c) if c.is_whitespace() => nice -= c.len_utf8(),
                _ => break,
            }
        }
        if nice > limit / 2 {
            cut = nice;
        }
        out.push_str(&rest[..cut]);
        out.push_str("\r\n ");
        rest = &rest[cut..];
        limit = MAX_LINE_OCTETS - 1;
    }
}

#[derive(Clone, Copy)]
enum Trim {
    Both,
    End,
}

/// Normalise line ends, drop control characters, trim, cut to [`MAX_TEXT_BYTES`].
/// `None` for missing or blank text.
fn clean_text(text: Option<&str>, trim: Trim, repairs: &mut Vec<Repair>) -> Option<String> {
    let text = text?;
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_BYTES));
    let mut chars = text.chars().peekable();
    let mut removed = false;
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => removed = true,
            c => out.push(c),
        }
    }
    if removed {
        repairs.push(Repair::ControlCharacters);
    }
    let trimmed = match trim {
        Trim::Both => out.trim(),
        Trim::End => out.trim_end(),
    };
    if trimmed.is_empty() {
        return None;
    }
    let mut value = trimmed.to_owned();
    if value.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES - TRUNCATION_MARKER.len();
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        value.push_str(TRUNCATION_MARKER);
        repairs.push(Repair::TextTruncated);
    }
    Some(value)
}

fn min_instant() -> DateTime<Utc> {
    let date = NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or(NaiveDate::MIN);
    Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))
}

fn max_instant() -> DateTime<Utc> {
    let date = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX);
    let time = NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN);
    Utc.from_utc_datetime(&date.and_time(time))
}

/// Whole seconds, within the years 1–9999.
fn clamp_instant(t: DateTime<Utc>, repairs: &mut Vec<Repair>) -> DateTime<Utc> {
    let t = t.trunc_subsecs(0);
    let clamped = t.clamp(min_instant(), max_instant());
    if clamped != t {
        repairs.push(Repair::OutOfRange);
    }
    clamped
}

fn local_date(t: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDate {
    tz.from_utc_datetime(&t.naive_utc()).date_naive()
}

/// Keep all-day dates within 0001-01-01 ..= 9999-12-31, with room for the exclusive end.
fn clamp_dates(
    first: NaiveDate,
    last: NaiveDate,
    repairs: &mut Vec<Repair>,
) -> (NaiveDate, NaiveDate) {
    let lo = NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or(NaiveDate::MIN);
    let hi = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX);
    let hi_first = hi.pred_opt().unwrap_or(hi);
    let new_first = first.clamp(lo, hi_first);
    let new_last = last.clamp(lo, hi);
    if new_first != first || new_last != last {
        repairs.push(Repair::OutOfRange);
    }
    (new_first, new_last)
}

/// `YYYYMMDDTHHMMSSZ`; the caller keeps the year within 1..=9999.
fn format_utc(t: DateTime<Utc>) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `YYYYMMDD`; the caller keeps the year within 1..=9999.
fn format_date(date: NaiveDate) -> String {
    format!("{:04}{:02}{:02}", date.year(), date.month(), date.day())
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use chrono::TimeZone;
    use chrono_tz::Tz;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn vienna(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Vienna
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ctx() -> RenderContext {
        RenderContext {
            time_zone: chrono_tz::Europe::Vienna,
        }
    }

    fn appointment() -> Appointment {
        Appointment {
            id: 42,
            subject: Some("Verhandlung".into()),
            location: Some("Bezirksgericht Innere Stadt, Saal 3".into()),
            notes: Some("Akt 12/2026; Zeugen: Müller\nBitte pünktlich".into()),
            starts_at: utc(2026, 11, 29, 9, 15),
            ends_at: utc(2026, 11, 29, 10, 45),
            all_day: false,
            updated_at: utc(2026, 11, 28, 17, 3),
        }
    }

    /// Strict RFC 5545 TEXT unescaping, written independently of the code under test.
    fn unescape_strict(v: &str) -> String {
        let mut out = String::new();
        let mut it = v.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('\\') => out.push('\\'),
                    Some(';') => out.push(';'),
                    Some(',') => out.push(','),
                    Some('n' | 'N') => out.push('\n'),
                    other => panic!("bad escape \\{other:?} in {v:?}"),
                }
            } else {
                assert!(c != ';' && c != ',', "unescaped {c:?} in {v:?}");
                out.push(c);
            }
        }
        out
    }

    /// Checks line shape, parses with the independent `ical` crate, returns each event's
    /// properties as (name, params, unescaped-or-raw value).
    type Props = Vec<(String, Vec<(String, Vec<String>)>, String)>;
    fn parse(text: &str) -> (Props, Vec<Props>) {
        assert!(text.ends_with("\r\n"), "ends with CRLF");
        for line in text.split_inclusive('\n') {
            assert!(line.ends_with("\r\n"), "CRLF-terminated: {line:?}");
            let body = &line[..line.len() - 2];
            assert!(!body.contains('\r'), "stray CR in {line:?}");
            assert!(body.len() <= 75, "{} octets: {body:?}", body.len());
            assert!(!body.is_empty(), "empty line");
        }
        let mut parser = ical::IcalParser::new(BufReader::new(text.as_bytes()));
        let calendar = parser.next().expect("one calendar").expect("parses");
        assert!(parser.next().is_none(), "exactly one calendar");
        let conv = |props: &[ical::property::Property]| -> Props {
            props
                .iter()
                .map(|p| {
                    let raw = p.value.clone().unwrap_or_default();
                    let value = match p.name.as_str() {
                        "SUMMARY" | "LOCATION" | "DESCRIPTION" | "UID" | "X-WR-CALNAME" => {
                            unescape_strict(&raw)
                        }
                        _ => raw,
                    };
                    (p.name.clone(), p.params.clone().unwrap_or_default(), value)
                })
                .collect()
        };
        let events = calendar
            .events
            .iter()
            .map(|e| conv(&e.properties))
            .collect();
        (conv(&calendar.properties), events)
    }

    fn get<'a>(props: &'a Props, name: &str) -> Option<&'a str> {
        props
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.as_str())
    }

    fn count(props: &Props, name: &str) -> usize {
        props.iter().filter(|(n, _, _)| n == name).count()
    }

    fn one_event(a: &Appointment) -> Props {
        let text = render_object(a, "xpert-termin-42@livesync", 2, &ctx());
        let (_, mut events) = parse(&text);
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    #[test]
    fn timed_appointment_renders_in_utc_with_all_fields() {
        let a = appointment();
        let text = render_object(&a, "xpert-termin-42@livesync", 2, &ctx());
        let (cal, events) = parse(&text);
        assert_eq!(get(&cal, "VERSION"), Some("2.0"));
        assert_eq!(get(&cal, "PRODID"), Some(PRODID));
        assert_eq!(get(&cal, "CALSCALE"), Some("GREGORIAN"));
        assert_eq!(get(&cal, "X-WR-CALNAME"), Some("notarXpert"));
        assert_eq!(get(&cal, "METHOD"), None);
        let e = &events[0];
        assert_eq!(get(e, "UID"), Some("xpert-termin-42@livesync"));
        assert_eq!(get(e, "DTSTAMP"), Some("20261128T170300Z"));
        assert_eq!(get(e, "SEQUENCE"), Some("2"));
        assert_eq!(get(e, "DTSTART"), Some("20261129T091500Z"));
        assert_eq!(get(e, "DTEND"), Some("20261129T104500Z"));
        assert_eq!(get(e, "SUMMARY"), Some("Verhandlung"));
        assert_eq!(
            get(e, "LOCATION"),
            Some("Bezirksgericht Innere Stadt, Saal 3")
        );
        assert_eq!(
            get(e, "DESCRIPTION"),
            Some("Akt 12/2026; Zeugen: Müller\nBitte pünktlich")
        );
        assert!(!text.contains("ATTENDEE"));
        assert!(!text.contains("TZID"));
        for name in ["UID", "DTSTAMP", "SEQUENCE", "DTSTART", "SUMMARY"] {
            assert_eq!(count(e, name), 1, "{name}");
        }
        assert!(text.contains("LOCATION:Bezirksgericht Innere Stadt\\, Saal 3\r\n"));
    }

    #[test]
    fn output_is_stable_bytes() {
        let a = appointment();
        let one = render_event(&a, "u", 0, &ctx());
        let two = render_event(&a, "u", 0, &ctx());
        assert_eq!(one, two);
        assert!(one.starts_with("BEGIN:VEVENT\r\n") && one.ends_with("END:VEVENT\r\n"));
        let mut later = a.clone();
        later.updated_at = utc(2026, 11, 29, 8, 0);
        assert_ne!(one, render_event(&later, "u", 1, &ctx()));
    }

    fn all_day(start: DateTime<Utc>, end: DateTime<Utc>) -> Appointment {
        Appointment {
            all_day: true,
            starts_at: start,
            ends_at: end,
            ..appointment()
        }
    }

    fn dates(e: &Props) -> (String, String) {
        for name in ["DTSTART", "DTEND"] {
            let (_, params, _) = e.iter().find(|(n, _, _)| n == name).unwrap();
            assert_eq!(
                params,
                &vec![("VALUE".into(), vec!["DATE".into()])],
                "{name}"
            );
        }
        (
            get(e, "DTSTART").unwrap().to_owned(),
            get(e, "DTEND").unwrap().to_owned(),
        )
    }

    #[test]
    fn all_day_dates_are_taken_in_the_firms_zone_across_dst_switches() {
        // Spring forward: Sunday 29 March 2026 has 23 hours in Vienna.
        let a = all_day(vienna(2026, 3, 29, 0, 0), vienna(2026, 3, 30, 0, 0));
        assert_eq!(a.starts_at, utc(2026, 3, 28, 23, 0));
        assert_eq!(a.ends_at, utc(2026, 3, 29, 22, 0));
        assert_eq!(
            dates(&one_event(&a)),
            ("20260329".into(), "20260330".into())
        );
        // Fall back: Sunday 25 October 2026 has 25 hours.
        let a = all_day(vienna(2026, 10, 25, 0, 0), vienna(2026, 10, 26, 0, 0));
        assert_eq!(a.ends_at, utc(2026, 10, 25, 23, 0));
        assert_eq!(
            dates(&one_event(&a)),
            ("20261025".into(), "20261026".into())
        );
        // The day before and after each switch.
        let a = all_day(vienna(2026, 3, 28, 0, 0), vienna(2026, 3, 28, 0, 0));
        assert_eq!(
            dates(&one_event(&a)),
            ("20260328".into(), "20260329".into())
        );
        let a = all_day(vienna(2026, 10, 26, 0, 0), vienna(2026, 10, 26, 23, 59));
        assert_eq!(
            dates(&one_event(&a)),
            ("20261026".into(), "20261027".into())
        );
        // Three days over the spring switch, end stored as the last day's evening.
        let a = all_day(vienna(2026, 3, 28, 0, 0), vienna(2026, 3, 30, 18, 0));
        assert_eq!(
            dates(&one_event(&a)),
            ("20260328".into(), "20260331".into())
        );
    }

    #[test]
    fn all_day_end_forms_give_at_least_one_day() {
        let day = |end| dates(&one_event(&all_day(vienna(2026, 11, 30, 0, 0), end)));
        let one = ("20261130".to_owned(), "20261201".to_owned());
        assert_eq!(day(vienna(2026, 11, 30, 0, 0)), one, "end = start");
        assert_eq!(day(vienna(2026, 11, 30, 23, 59)), one, "end late that day");
        assert_eq!(day(vienna(2026, 12, 1, 0, 0)), one, "exclusive end");
        assert_eq!(day(vienna(2026, 11, 20, 0, 0)), one, "end before start");
        let r = repair(
            &all_day(vienna(2026, 11, 30, 0, 0), vienna(2026, 11, 20, 0, 0)),
            chrono_tz::Europe::Vienna,
        );
        assert_eq!(r.repairs, vec![Repair::EndBeforeStart]);
    }

    #[test]
    fn all_day_dates_depend_on_the_zone() {
        let a = all_day(utc(2026, 6, 30, 23, 30), utc(2026, 7, 1, 23, 30));
        let r = repair(&a, chrono_tz::Europe::Vienna);
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            r.when,
            When::AllDay {
                start: d("2026-07-01"),
                end: d("2026-07-03")
            }
        );
        let r = repair(&a, chrono_tz::UTC);
        assert_eq!(
            r.when,
            When::AllDay {
                start: d("2026-06-30"),
                end: d("2026-07-02")
            }
        );
    }

    #[test]
    fn missing_or_blank_subject_gets_a_placeholder() {
        for subject in [
            None,
            Some(""),
            Some("   "),
            Some("\u{1}\u{2}"),
            Some(" \r\n\t"),
        ] {
            let a = Appointment {
                subject: subject.map(String::from),
                ..appointment()
            };
            let e = one_event(&a);
            assert_eq!(get(&e, "SUMMARY"), Some(NO_SUBJECT), "{subject:?}");
            assert!(
                repair(&a, ctx().time_zone)
                    .repairs
                    .contains(&Repair::MissingSubject)
            );
        }
        let a = Appointment {
            location: Some(" ".into()),
            notes: None,
            ..appointment()
        };
        let e = one_event(&a);
        assert_eq!(get(&e, "LOCATION"), None);
        assert_eq!(get(&e, "DESCRIPTION"), None);
    }

    #[test]
    fn timed_end_before_start_ends_at_start() {
        let a = Appointment {
            ends_at: utc(2026, 11, 29, 8, 0),
            ..appointment()
        };
        let r = repair(&a, ctx().time_zone);
        assert_eq!(r.repairs, vec![Repair::EndBeforeStart]);
        assert_eq!(
            r.when,
            When::Timed {
                start: a.starts_at,
                end: a.starts_at
            }
        );
        let e = one_event(&a);
        assert_eq!(get(&e, "DTSTART"), Some("20261129T091500Z"));
        assert_eq!(get(&e, "DTEND"), None);
    }

    #[test]
    fn control_characters_are_removed_and_line_ends_normalised() {
        let a = Appointment {
            subject: Some("Ver\u{0}hand\u{7}lung\u{1b}[31m".into()),
            notes: Some("eins\r\nzwei\rdrei\n\tvier\u{7f}\u{85}fünf\u{c}".into()),
            ..appointment()
        };
        let r = repair(&a, ctx().time_zone);
        assert_eq!(r.summary, "Verhandlung[31m");
        assert_eq!(
            r.description.as_deref(),
            Some("eins\nzwei\ndrei\n\tvierfünf")
        );
        assert_eq!(r.repairs, vec![Repair::ControlCharacters]);
        let e = one_event(&a);
        assert_eq!(get(&e, "DESCRIPTION"), r.description.as_deref());
    }

    #[test]
    fn special_characters_and_umlauts_survive_a_round_trip() {
        let subject = "Übergabe; Öffnung, Straße \\ Maß: 100 € — 👩‍⚖️ \"Zitat\"";
        let a = Appointment {
            subject: Some(subject.into()),
            location: Some("Graben 1, 1010 Wien; 2. Stock".into()),
            notes: Some("Zeile 1\nZeile 2,\\n kein Umbruch; ä".repeat(20)),
            ..appointment()
        };
        let e = one_event(&a);
        assert_eq!(get(&e, "SUMMARY"), Some(subject));
        assert_eq!(get(&e, "LOCATION"), a.location.as_deref());
        assert_eq!(get(&e, "DESCRIPTION"), a.notes.as_deref());
        let a = Appointment {
            subject: Some(":Beginn".into()),
            ..appointment()
        };
        assert!(render_event(&a, "u", 0, &ctx()).contains("\r\nSUMMARY::Beginn\r\n"));
    }

    #[test]
    fn huge_notes_are_cut_at_a_char_boundary_with_a_marker() {
        for filler in ["a", "ä", "€", "😀"] {
            let notes = format!("x{}", filler.repeat(1024 * 1024 / filler.len()));
            let a = Appointment {
                notes: Some(notes.clone()),
                ..appointment()
            };
            let r = repair(&a, ctx().time_zone);
            let d = r.description.as_deref().unwrap();
            assert!(d.len() <= MAX_TEXT_BYTES, "{}", d.len());
            assert!(d.len() > MAX_TEXT_BYTES - 8);
            assert!(d.ends_with(TRUNCATION_MARKER));
            assert!(notes.starts_with(d.strip_suffix(TRUNCATION_MARKER).unwrap()));
            assert_eq!(r.repairs, vec![Repair::TextTruncated]);
            assert_eq!(get(&one_event(&a), "DESCRIPTION"), Some(d));
        }
        let exact = "b".repeat(MAX_TEXT_BYTES);
        let r = repair(
            &Appointment {
                notes: Some(exact.clone()),
                ..appointment()
            },
            ctx().time_zone,
        );
        assert_eq!(r.description, Some(exact), "64 KiB exactly is kept");
    }

    #[test]
    fn far_out_of_range_dates_do_not_panic() {
        let extremes = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            utc(0, 1, 1, 0, 0),
            utc(1, 1, 1, 0, 30),
            utc(9999, 12, 31, 23, 30),
            utc(10000, 1, 1, 0, 0),
            utc(-5000, 6, 1, 0, 0),
        ];
        let zones: [Tz; 4] = [
            chrono_tz::Europe::Vienna,
            chrono_tz::America::New_York,
            chrono_tz::Pacific::Kiritimati,
            chrono_tz::UTC,
        ];
        for &start in &extremes {
            for &end in &extremes {
                for all_day in [false, true] {
                    for tz in zones {
                        let a = Appointment {
                            starts_at: start,
                            ends_at: end,
                            updated_at: end,
                            all_day,
                            ..appointment()
                        };
                        let text = render_object(&a, "u", -3, &RenderContext { time_zone: tz });
                        let (_, events) = parse(&text);
                        let e = &events[0];
                        assert_eq!(get(e, "SEQUENCE"), Some("0"));
                        for name in ["DTSTART", "DTEND", "DTSTAMP"] {
                            if let Some(v) = get(e, name) {
                                assert!(v.len() == 8 || v.len() == 16, "{name}:{v}");
                                assert!(v[..4].bytes().all(|b| b.is_ascii_digit()), "{v}");
                                assert!(&v[..4] != "0000", "{v}");
                            }
                        }
                        if all_day {
                            let (s, e) = dates(e);
                            assert!(s < e, "{s} < {e}");
                        }
                    }
                }
            }
        }
        let r = repair(
            &Appointment {
                starts_at: DateTime::<Utc>::MIN_UTC,
                ..appointment()
            },
            chrono_tz::UTC,
        );
        assert!(r.repairs.contains(&Repair::OutOfRange));
    }

    /// A small deterministic generator (xorshift).
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn text(&mut self, max: u64) -> String {
            const PIECES: &[&str] = &[
                "a",
                "Z",
                "ä",
                "ß",
                "€",
                "😀",
                "👩‍⚖️",
                " ",
                "  ",
                ",",
                ";",
                ":",
                "\\",
                "\n",
                "\t",
                "\r\n",
                "\u{0}",
                "\u{1b}",
                "\"",
                "Verhandlung ",
                "Müller",
                "x",
            ];
            let n = self.next() % max;
            (0..n)
                .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn generated_appointments_parse_back_with_an_independent_parser() {
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        let mut blocks = Vec::new();
        for i in 0..300 {
            let start =
                utc(2026, 1, 1, 0, 0) + chrono::Duration::minutes((g.next() % 600_000) as i64);
            let a = Appointment {
                id: i,
                subject: (!g.next().is_multiple_of(5)).then(|| g.text(40)),
                location: g.next().is_multiple_of(2).then(|| g.text(30)),
                notes: g.next().is_multiple_of(2).then(|| g.text(400)),
                starts_at: start,
                ends_at: start + chrono::Duration::minutes((g.next() % 3000) as i64 - 500),
                all_day: g.next().is_multiple_of(4),
                updated_at: start,
            };
            let uid = format!("xpert-{i}@livesync");
            let block = render_event(&a, &uid, (i % 7) as i32, &ctx());
            let (_, events) = parse(&render_calendar([block.as_str()]));
            let e = &events[0];
            let r = repair(&a, ctx().time_zone);
            // The oracle drops leading colons of a value (RFC 5545 keeps them).
            let oracle = |v: Option<&str>| v.map(|v| v.trim_start_matches(':').to_owned());
            assert_eq!(get(e, "UID"), Some(uid.as_str()));
            let summary = oracle(Some(&r.summary));
            assert_eq!(get(e, "SUMMARY").map(str::to_owned), summary, "{a:?}");
            let location = oracle(r.location.as_deref());
            assert_eq!(get(e, "LOCATION").map(str::to_owned), location, "{a:?}");
            let description = oracle(r.description.as_deref());
            assert_eq!(
                get(e, "DESCRIPTION").map(str::to_owned),
                description,
                "{a:?}"
            );
            blocks.push((uid, block));
        }
        let calendar = render_calendar(blocks.iter().map(|(_, b)| b.as_str()));
        let (_, events) = parse(&calendar);
        assert_eq!(events.len(), blocks.len());
        assert_eq!(split_events(&calendar).unwrap(), blocks);
    }

    #[test]
    fn a_calendar_object_keeps_the_bytes_the_icalendar_crate_wrote() {
        // Written by the `icalendar` crate (header) and this module (event) before the crate
        // was dropped, then with the stamp added; a change here changes every stored
        // object's ETag.
        let expected = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//notarXpert//livesync//DE\r\n\
            CALSCALE:GREGORIAN\r\nX-WR-CALNAME:notarXpert\r\nBEGIN:VEVENT\r\n\
            DESCRIPTION:Akt 12/2026\\; Zeugen: Müller\\nBitte pünktlich\r\n\
            DTEND:20261129T104500Z\r\nDTSTAMP:20261128T170300Z\r\nDTSTART:20261129T091500Z\r\n\
            LOCATION:Bezirksgericht Innere Stadt\\, Saal 3\r\nSEQUENCE:2\r\n\
            SUMMARY:Verhandlung\r\nUID:xpert-termin-7@livesync\r\n\
            X-LIVESYNC-HASH:0456f702c32f8cca20ee61dff4942df8\r\nEND:VEVENT\r\n\
            END:VCALENDAR\r\n";
        assert_eq!(
            render_object(&appointment(), "xpert-termin-7@livesync", 2, &ctx()),
            expected
        );
    }

    #[test]
    fn folding_never_splits_characters_and_prefers_non_blank_ends() {
        for filler in ["a", "ä", "€", "😀", "a ", "ä ", " "] {
            let line = format!("DESCRIPTION:{}x", filler.repeat(500));
            let folded = fold(&format!("{line}\r\n"));
            for piece in folded.split("\r\n").filter(|p| !p.is_empty()) {
                assert!(piece.len() <= 75);
            }
            assert_eq!(folded.replace("\r\n ", ""), format!("{line}\r\n"));
            if filler != " " {
                assert!(!folded.contains(" \r\n"), "{filler:?}");
            }
        }
        assert_eq!(fold("A:b\r\n"), "A:b\r\n");
    }

    #[test]
    fn split_events_reads_our_own_files() {
        let a = appointment();
        let one = render_event(&a, "one", 0, &ctx());
        let two = render_event(&a, "tw,o;\\", 1, &ctx());
        let long_uid = "u".repeat(200);
        let three = render_event(&a, &long_uid, 1, &ctx());
        let cal = render_calendar([one.as_str(), two.as_str(), three.as_str()]);
        let split = split_events(&cal).unwrap();
        let uids: Vec<_> = split.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(uids, ["one", "tw,o;\\", long_uid.as_str()]);
        assert_eq!(split[1].1, two);
        assert_eq!(split_events(&render_calendar([])).unwrap(), vec![]);
        assert!(split_events("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n").is_err());
    }

    #[test]
    fn every_event_carries_the_hash_of_its_content_and_reads_back_to_it() {
        let mut all_day = appointment();
        all_day.all_day = true;
        let mut instant = appointment();
        instant.ends_at = instant.starts_at;
        instant.location = None;
        instant.notes = Some("  ".into());
        for a in [appointment(), all_day, instant] {
            let event = render_event(&a, "u-1", 3, &ctx());
            let read = read_event(&event, ctx().time_zone).expect("an event");
            assert_eq!(read.uid.as_deref(), Some("u-1"));
            let stamp = read.stamp.clone().expect("a stamp");
            assert_eq!(stamp.len(), 32);
            assert_eq!(read.content_hash(), Some(stamp), "{a:?}");
            // The sequence is not content.
            let later = read_event(&render_event(&a, "u-1", 4, &ctx()), ctx().time_zone);
            assert_eq!(later.unwrap().content_hash(), read.content_hash());
        }
    }

    #[test]
    fn any_change_of_content_changes_the_hash() {
        let base = read_event(
            &render_event(&appointment(), "u", 0, &ctx()),
            ctx().time_zone,
        )
        .unwrap()
        .content_hash();
        let mut changes = Vec::new();
        let mut a = appointment();
        a.subject = Some("Verhandlung (verlegt)".into());
        changes.push(a);
        let mut a = appointment();
        a.location = None;
        changes.push(a);
        let mut a = appointment();
        a.notes = Some("anders".into());
        changes.push(a);
        let mut a = appointment();
        a.ends_at += chrono::Duration::minutes(15);
        changes.push(a);
        let mut a = appointment();
        a.all_day = true;
        changes.push(a);
        for a in changes {
            let read = read_event(&render_event(&a, "u", 0, &ctx()), ctx().time_zone).unwrap();
            assert_ne!(read.content_hash(), base, "{a:?}");
        }
    }

    #[test]
    fn events_written_by_others_are_read_in_their_own_forms() {
        // LF line ends, tab folding, a TZID, an alarm with its own DESCRIPTION, no stamp.
        let text = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:abc@example.com\nSUMMARY:Mit\n\ttagessen\n\
                    DTSTART;TZID=Europe/Vienna:20261129T101500\nDTEND;TZID=\"Europe/Vienna\":20261129T114500\n\
                    LOCATION:\nBEGIN:VALARM\nDESCRIPTION:Erinnerung\nEND:VALARM\nEND:VEVENT\nEND:VCALENDAR\n";
        let read = read_event(text, chrono_tz::UTC).unwrap();
        assert_eq!(read.uid.as_deref(), Some("abc@example.com"));
        assert_eq!(read.summary.as_deref(), Some("Mittagessen"));
        assert_eq!(read.location, None);
        assert_eq!(read.description, None, "the alarm's is not the event's");
        assert_eq!(read.stamp, None);
        assert_eq!(
            read.when,
            Some(When::Timed {
                start: utc(2026, 11, 29, 9, 15),
                end: utc(2026, 11, 29, 10, 45)
            })
        );
        // A date without DTEND lasts one day; a DURATION is not understood.
        let day = read_event(
            "BEGIN:VEVENT\r\nUID:d\r\nDTSTART;VALUE=DATE:20261129\r\nEND:VEVENT\r\n",
            chrono_tz::UTC,
        )
        .unwrap();
        assert_eq!(
            day.when,
            Some(When::AllDay {
                start: NaiveDate::from_ymd_opt(2026, 11, 29).unwrap(),
                end: NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
            })
        );
        let duration = read_event(
            "BEGIN:VEVENT\r\nDTSTART:20261129T091500Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n",
            chrono_tz::UTC,
        )
        .unwrap();
        assert_eq!(duration.when, None);
        assert_eq!(duration.content_hash(), None);
        assert_eq!(
            read_event("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", chrono_tz::UTC),
            None
        );
    }
}
