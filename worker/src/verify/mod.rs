//! Verification: does each person's calendar hold exactly what Xpert says it should, and,
//! when asked, the repair of what it does not (`livesync-worker verify`, which
//! `livesync-admin verify` runs).
//!
//! For each person whose live sync is active:
//! 1. **list** the calendar through the sink ([`CalendarSink::list`]) for the window
//!    (from the start of `--from`, default today, in the firm's time zone, to the end of
//!    `--to`, default open): the ics file, CalDAV's `calendar-query`, the "notarXpert"
//!    calendar of Graph (`calendarView`) or folder of EWS (`CalendarView`, then
//!    `GetItem`), each item with livesync's stamp (UID and content hash, in iCalendar
//!    properties or in Graph's and EWS's extended properties). Graph and EWS read only
//!    that calendar: an item deleted in Outlook lies in Deleted Items and is `missing`;
//! 2. **read what it should hold** from the same truth the sinks and the feeds use: the
//!    person's appointments in the window that end today or later, or that the calendar
//!    has been given (`livesync.delivered`), as [`crate::feed`] serves them; and every
//!    appointment of the person an item of ours names, wherever it lies now;
//! 3. **compare** ([`compare`]): each item `ok`, `missing`, `orphan`, `drifted`,
//!    `duplicate` or `foreign`.
//!
//! A change on its way (queued, not yet delivered) shows as `drifted` or `missing` until
//! it arrives; a second verification after the queue drained tells.
//!
//! # Repair
//! Only through the normal delivery path: a repair is a queue entry, delivered by a worker
//! under the user's lease with the sink's idempotency (CalDAV's conditional requests, the
//! ics file's one block per UID, Graph's and EWS's lookup by the appointment's id). It
//! never writes to a calendar itself, and never touches a foreign item.
//! - `missing`, `drifted`: an entry for the appointment, and its `livesync.delivered` row
//!   forgets the row version it holds (as a backfill does), so the worker writes it again
//!   instead of finding it "unchanged". A `missing` one also forgets where the item was
//!   (its href or id): the calendar does not hold it there, and a Graph event deleted in
//!   Outlook still answers to its id from Deleted Items. The sink reconciles by UID:
//!   CalDAV creates the object at the UID's href (adopting one found there), Graph and EWS
//!   look it up by their extended property in the calendar alone (never in Deleted
//!   Items) and create it when it is not there; a drifted item is updated where it is. A
//!   wiped calendar (every item missing) is so rebuilt, its collection, calendar or folder
//!   created again.
//! - `orphan`: an entry for the appointment; the worker finds it gone (or no longer this
//!   person's) and deletes it. When `livesync.delivered` holds no row for it (an item of
//!   ours restored from a backup, or written by another installation), the item as listed
//!   is recorded first (its UID, and its href or id where the sink has one), so that the
//!   worker's plan has something to delete ("gone and never delivered" would send
//!   nothing) and deletes it where it is.
//! - `duplicate`: an entry for its appointment, as for the copy that counts, which
//!   forgets where the item was. The ics sink keeps one block per UID when it rewrites the
//!   file, so the extra copy goes with that write. Graph and EWS look the appointment up
//!   by their extended property, update the first copy and delete the others. CalDAV servers refuse a second object with one UID (`no-uid-conflict`,
//!   RFC 4791 §5.3.2.1; Radicale and Xandikos do), so there a duplicate can only come from
//!   a server that does not; it is reported, and the entry rewrites the object at
//!   livesync's own href.
//!
//! A repair is queued in one transaction per person, then the workers are woken; it
//! arrives as any change does (at once in push mode, at the person's next login in live
//! mode).
//!
//! # Record and schedule
//! Each person's outcome is recorded as their calendar's last verification
//! (`livesync.verifications`, [`record`]), whoever ran it: `livesync-admin verify` or the
//! worker's scheduled passes ([`schedule`], `LIVESYNC_VERIFY_EVERY`). The console shows it;
//! `/metrics` sums it.

pub mod compare;
pub mod record;
pub mod schedule;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

use self::compare::{Expected, Finding, Held, State};
pub use self::record::Source;
use crate::ical;
use crate::sink::{Appointment, CalendarOwner, CalendarSink, RenderContext, SinkError, Span};

/// Whose calendars, which window, and whether to repair.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// One Xpert user name, or `None` for everyone whose live sync is active.
    pub name: Option<String>,
    /// First day (in the firm's time zone); default today.
    pub from: Option<NaiveDate>,
    /// Last day, included; default open.
    pub to: Option<NaiveDate>,
    pub repair: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unknown user \"{0}\": no Xpert user has this name")]
    UnknownUser(String),
    #[error("live sync is not active for {0}: there is no calendar to verify")]
    NotActive(String),
}

/// A person whose calendar is verified.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Person {
    pub user_id: i64,
    pub username: String,
    pub calendar_address: Option<String>,
}

/// One person's calendar, verified.
#[derive(Debug, Clone, Serialize)]
pub struct PersonReport {
    pub user_id: i64,
    pub username: String,
    /// Why the calendar could not be read; then there are no findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub totals: BTreeMap<State, usize>,
    pub findings: Vec<Finding>,
    /// Queue entries written for the repair.
    pub queued: usize,
}

impl PersonReport {
    /// Anything neither `ok` nor `foreign`, or a calendar that could not be read.
    pub fn has_problems(&self) -> bool {
        self.error.is_some() || self.findings.iter().any(|f| f.state.is_problem())
    }
}

/// A whole verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sink: &'static str,
    pub from: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    pub repair: bool,
    pub people: Vec<PersonReport>,
    pub totals: BTreeMap<State, usize>,
    /// People whose calendar could not be read.
    pub errors: usize,
    pub queued: usize,
}

impl Report {
    pub fn has_problems(&self) -> bool {
        self.people.iter().any(PersonReport::has_problems)
    }
}

/// The people to verify: one by name (exact, else as Xpert's login compares names), or
/// everyone whose live sync is active.
pub async fn people(pool: &PgPool, name: Option<&str>) -> Result<Vec<Person>, VerifyError> {
    let Some(name) = name else {
        return Ok(sqlx::query_as(
            "select u.id as user_id, u.username, s.calendar_address \
               from xpert.users u left join livesync.user_settings s on s.user_id = u.id \
              where livesync.sync_active(u.id) order by u.username, u.id",
        )
        .fetch_all(pool)
        .await?);
    };
    let mut found: Vec<Person> = sqlx::query_as(
        "select u.id as user_id, u.username, s.calendar_address \
           from xpert.users u left join livesync.user_settings s on s.user_id = u.id \
          where u.username = $1",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    if found.is_empty() {
        found = sqlx::query_as(
            "select u.id as user_id, u.username, s.calendar_address \
               from xpert.users u left join livesync.user_settings s on s.user_id = u.id \
              where livesync.names_match($1, u.username) order by u.id limit 2",
        )
        .bind(name)
        .fetch_all(pool)
        .await?;
    }
    let [person] =
        <[Person; 1]>::try_from(found).map_err(|_| VerifyError::UnknownUser(name.to_string()))?;
    let active: bool = sqlx::query_scalar("select livesync.sync_active($1)")
        .bind(person.user_id)
        .fetch_one(pool)
        .await?;
    if !active {
        return Err(VerifyError::NotActive(person.username));
    }
    Ok(vec![person])
}

/// The window in UTC and the firm's time zone.
pub async fn window(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<(Span, chrono_tz::Tz), VerifyError> {
    let (from, to, zone): (DateTime<Utc>, Option<DateTime<Utc>>, String) = sqlx::query_as(
        "select coalesce(($1::date)::timestamp at time zone s.time_zone, \
                         livesync.start_of_today()), \
                (($2::date + 1)::timestamp at time zone s.time_zone), s.time_zone \
           from livesync.settings s",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    Ok((
        Span { from, to },
        zone.parse().unwrap_or(chrono_tz::Europe::Vienna),
    ))
}

/// What the person's calendar should hold in the window (see the module doc), plus the
/// person's appointments in `named` wherever they lie.
const EXPECTED: &str = "
select a.id, a.subject, a.location, a.notes, a.starts_at, a.ends_at, a.all_day, a.updated_at
  from xpert.appointment_participants p
  join xpert.appointments a on a.id = p.appointment_id
  left join livesync.delivered d on d.user_id = p.user_id and d.appointment_id = a.id
 where p.user_id = $1
   and ((    (a.ends_at > $2 or a.starts_at >= $2)
         and ($3::timestamptz is null or a.starts_at < $3)
         and (a.ends_at >= livesync.start_of_today() or d.appointment_id is not null))
        or a.id = any($4))";

/// What Xpert says the calendar should hold: one [`Expected`] per appointment.
pub async fn expected(
    pool: &PgPool,
    user_id: i64,
    span: &Span,
    named: &[i64],
    ctx: &RenderContext,
) -> Result<Vec<Expected>, sqlx::Error> {
    let rows: Vec<Appointment> = sqlx::query_as(EXPECTED)
        .bind(user_id)
        .bind(span.from)
        .bind(span.to)
        .bind(named)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|appointment| {
            let repaired = ical::repair(&appointment, ctx.time_zone);
            Expected {
                appointment_id: appointment.id,
                hash: ical::content_hash(
                    &repaired.summary,
                    repaired.location.as_deref(),
                    repaired.description.as_deref(),
                    &repaired.when,
                ),
                summary: repaired.summary,
            }
        })
        .collect())
}

/// Verify one person's calendar (and queue its repair when `repair`).
pub async fn verify_person(
    pool: &PgPool,
    sink: &dyn CalendarSink,
    person: &Person,
    span: &Span,
    ctx: &RenderContext,
    repair: bool,
) -> Result<PersonReport, VerifyError> {
    let owner = CalendarOwner {
        user_id: person.user_id,
        username: person.username.clone(),
        calendar_address: person.calendar_address.clone(),
    };
    let mut report = PersonReport {
        user_id: person.user_id,
        username: person.username.clone(),
        error: None,
        totals: compare::totals([]),
        findings: Vec::new(),
        queued: 0,
    };
    let listed = match sink.list(&owner, span, ctx).await {
        Ok(listed) => listed,
        Err(e) => {
            report.error = Some(describe(&e));
            return Ok(report);
        }
    };
    let held: Vec<Held> = listed
        .into_iter()
        .map(|item| Held {
            hash: item.event.content_hash(),
            uid: item.event.uid,
            remote_id: item.remote_id,
            stamp: item.event.stamp,
            summary: item.event.summary,
        })
        .collect();
    let mut named: Vec<i64> = held
        .iter()
        .filter_map(|h| h.uid.as_deref().and_then(compare::our_appointment))
        .collect();
    named.sort_unstable();
    named.dedup();
    let expected = expected(pool, person.user_id, span, &named, ctx).await?;
    report.findings = compare::compare(&expected, &held);
    report.totals = compare::totals(&report.findings);
    if repair {
        report.queued = queue_repairs(pool, person.user_id, &report.findings).await?;
    }
    Ok(report)
}

fn describe(e: &SinkError) -> String {
    e.to_string()
}

/// What a repair queues for each appointment with a problem: `upsert` or `delete`.
pub fn repairs(findings: &[Finding]) -> BTreeMap<i64, &'static str> {
    // The copy that counts decides for its duplicates.
    let mut decided: HashMap<i64, &'static str> = HashMap::new();
    for f in findings {
        let op = match f.state {
            State::Missing | State::Drifted | State::Ok => "upsert",
            State::Orphan => "delete",
            State::Duplicate | State::Foreign => continue,
        };
        if let Some(id) = f.appointment_id {
            decided.insert(id, op);
        }
    }
    let mut out = BTreeMap::new();
    for f in findings.iter().filter(|f| f.state.is_problem()) {
        if let Some(id) = f.appointment_id {
            out.insert(id, decided.get(&id).copied().unwrap_or("delete"));
        }
    }
    out
}

/// Queue the repair of `findings` for `user_id` (see the module doc); returns the entries
/// written.
pub async fn queue_repairs(
    pool: &PgPool,
    user_id: i64,
    findings: &[Finding],
) -> Result<usize, sqlx::Error> {
    let repairs = repairs(findings);
    if repairs.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = repairs.keys().copied().collect();
    let ops: Vec<&str> = repairs.values().copied().collect();
    // Orphans livesync has no record of: recorded as what the calendar holds (listed
    // just now, at this href), so that the worker deletes them there.
    let unrecorded: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.state == State::Orphan && f.appointment_id.is_some())
        .collect();
    let orphan_ids: Vec<i64> = unrecorded.iter().filter_map(|f| f.appointment_id).collect();
    let orphan_uids: Vec<String> = unrecorded
        .iter()
        .map(|f| f.uid.clone().unwrap_or_default())
        .collect();
    let relocate = compare::not_where_recorded(findings);
    // (An orphan found more than once is recorded without a place: every copy is looked
    // up and deleted.)
    let orphan_hrefs: Vec<Option<String>> = unrecorded
        .iter()
        .map(|f| {
            f.remote_id
                .clone()
                .filter(|_| f.appointment_id.is_none_or(|id| !relocate.contains(&id)))
        })
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update livesync.delivered set row_version = null, \
                remote_id = case when appointment_id = any($3) then null else remote_id end, \
                etag = case when appointment_id = any($3) then null else etag end \
          where user_id = $1 and appointment_id = any($2) \
            and (row_version is not null or appointment_id = any($3))",
    )
    .bind(user_id)
    .bind(&ids)
    .bind(&relocate)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into livesync.delivered (user_id, appointment_id, uid, version, sequence, remote_id) \
         select $1, t.id, t.uid, 0, 0, t.href \
           from unnest($2::bigint[], $3::text[], $4::text[]) as t(id, uid, href) \
         on conflict (user_id, appointment_id) do nothing",
    )
    .bind(user_id)
    .bind(&orphan_ids)
    .bind(&orphan_uids)
    .bind(&orphan_hrefs)
    .execute(&mut *tx)
    .await?;
    let queued = sqlx::query(
        "insert into livesync.queue as q (user_id, appointment_id, op) \
         select $1, t.id, t.op from unnest($2::bigint[], $3::text[]) as t(id, op) order by t.id \
         on conflict (user_id, appointment_id) do update \
           set op = excluded.op, version = excluded.version, changed_at = now(), \
               attempts = 0, not_before = '-infinity', last_error = null",
    )
    .bind(user_id)
    .bind(&ids)
    .bind(&ops)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("select livesync.wake($1::text)")
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(usize::try_from(queued).unwrap_or(usize::MAX))
}

/// Verify every selected calendar, recording each as an admin's verification; `progress`
/// is told before each person (index, count, name).
pub async fn run(
    pool: &PgPool,
    sink: &dyn CalendarSink,
    options: &Options,
    progress: impl FnMut(usize, usize, &str),
) -> Result<Report, VerifyError> {
    let pacing = Pacing {
        source: Source::Admin,
        pause: std::time::Duration::ZERO,
        stop: None,
    };
    run_paced(pool, sink, options, &pacing, progress).await
}

/// Who runs a verification, and how gently.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// What the record of each person says.
    pub source: Source,
    /// Between two people.
    pub pause: std::time::Duration,
    /// Stop between two people when this turns true (the report then holds those done).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// [`run`] with a pause between people and a stop signal; each person's outcome is
/// recorded ([`record::write`]) as soon as it is known.
pub async fn run_paced(
    pool: &PgPool,
    sink: &dyn CalendarSink,
    options: &Options,
    pacing: &Pacing,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Report, VerifyError> {
    let people = people(pool, options.name.as_deref()).await?;
    let (span, time_zone) = window(pool, options.from, options.to).await?;
    let ctx = RenderContext { time_zone };
    let mut report = Report {
        sink: sink.name(),
        from: span.from,
        to: span.to,
        repair: options.repair,
        people: Vec::with_capacity(people.len()),
        totals: compare::totals([]),
        errors: 0,
        queued: 0,
    };
    let mut stop = pacing.stop.clone();
    let stopped = |stop: &Option<tokio::sync::watch::Receiver<bool>>| {
        stop.as_ref().is_some_and(|s| *s.borrow())
    };
    let count = people.len();
    for (i, person) in people.iter().enumerate() {
        if i > 0 && !pacing.pause.is_zero() {
            match &mut stop {
                Some(stop) => {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => {}
                        _ = tokio::time::sleep(pacing.pause) => {}
                    }
                }
                None => tokio::time::sleep(pacing.pause).await,
            }
        }
        if stopped(&stop) {
            break;
        }
        progress(i, count, &person.username);
        let one = verify_person(pool, sink, person, &span, &ctx, options.repair).await?;
        record::write(pool, &one, pacing.source).await?;
        for (state, n) in &one.totals {
            *report.totals.entry(*state).or_default() += n;
        }
        report.errors += usize::from(one.error.is_some());
        report.queued += one.queued;
        report.people.push(one);
    }
    progress(count, count, "");
    Ok(report)
}

/// The report for people: per person a line of totals and the items that are not `ok`,
/// then the totals and what to do.
pub fn render_text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let counts = |totals: &BTreeMap<State, usize>| {
        State::ALL
            .iter()
            .map(|s| format!("{} {}", totals.get(s).copied().unwrap_or(0), s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "sink {}, from {}{}",
        report.sink,
        report.from.to_rfc3339(),
        report
            .to
            .map(|t| format!(" to {}", t.to_rfc3339()))
            .unwrap_or_default()
    );
    for p in &report.people {
        match &p.error {
            Some(e) => {
                let _ = writeln!(out, "\n{}: cannot be read: {e}", p.username);
            }
            None => {
                let _ = writeln!(out, "\n{}: {}", p.username, counts(&p.totals));
            }
        }
        for f in p.findings.iter().filter(|f| f.state != State::Ok) {
            let _ = writeln!(
                out,
                "  {:<9}  {:>10}  {}{}",
                f.state.as_str(),
                f.appointment_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                if f.summary.is_empty() {
                    f.uid.clone().unwrap_or_default()
                } else {
                    f.summary.clone()
                },
                f.detail.map(|d| format!(" ({d})")).unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        out,
        "\ntotal: {} calendars, {}{}",
        report.people.len(),
        counts(&report.totals),
        if report.errors > 0 {
            format!(", {} could not be read", report.errors)
        } else {
            String::new()
        }
    );
    if report.repair {
        let _ = writeln!(
            out,
            "repair: {} queue entries written; the workers deliver them like any change \
             (in live mode at the person's next login). Watch them arrive with \
             `livesync-admin queue`, then verify again.",
            report.queued
        );
    } else if report.has_problems() {
        let _ = writeln!(
            out,
            "not every calendar equals Xpert: `verify --repair` queues the repairs"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(state: State, id: Option<i64>) -> Finding {
        Finding {
            state,
            appointment_id: id,
            uid: id.map(crate::flush::uid_for),
            remote_id: None,
            summary: String::new(),
            detail: None,
        }
    }

    #[test]
    fn a_repair_upserts_what_xpert_has_and_deletes_what_it_has_not() {
        let findings = [
            finding(State::Ok, Some(1)),
            finding(State::Duplicate, Some(1)),
            finding(State::Missing, Some(2)),
            finding(State::Drifted, Some(3)),
            finding(State::Orphan, Some(4)),
            finding(State::Duplicate, Some(4)),
            finding(State::Foreign, None),
            finding(State::Ok, Some(5)),
        ];
        let repairs = repairs(&findings);
        assert_eq!(
            repairs.into_iter().collect::<Vec<_>>(),
            [(1, "upsert"), (2, "upsert"), (3, "upsert"), (4, "delete")]
        );
    }
}
