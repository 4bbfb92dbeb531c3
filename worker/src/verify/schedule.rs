//! Verification on a schedule (`LIVESYNC_VERIFY_EVERY`): every calendar compared with
//! Xpert by the running worker, nightly by default, one person at a time.
//!
//! Design note:
//!
//! ```text
//!   read the pass record ─▶ next_due() ─▶ sleep until then (no statement meanwhile)
//!        ▲                                        │
//!        └── lost the claim: another worker ◀── claim (one conditional update)
//!            runs this pass                       │ won
//!                                                 ▼
//!                          per person: list, compare, record (, queue the repair), pause
//! ```
//!
//! - **When.** [`next_due`] is a pure function of the setting, the start of the last pass,
//!   now and the firm's time zone (`livesync.settings.time_zone`): `nightly` (and `HH:MM`)
//!   once a day at that time of the firm's day, a duration counted from the last pass's
//!   start, `off` never. A daily pass that was missed (no worker ran at the time) is caught
//!   up within [`CATCH_UP`] of it, else it waits for the next night: a full pass during
//!   office hours would compete with the deliveries for the calendar services' budgets.
//! - **Quiet.** Between passes the task sends nothing to the database: it sleeps until the
//!   next due time, in steps of at most [`LONGEST_SLEEP`] re-computed from the clock alone.
//!   One statement claims a pass (or learns who did).
//! - **One worker per pass.** The pass record (`livesync.verify_pass`, one row) counts the
//!   passes; a worker claims pass n+1 with an update conditional on the count it read
//!   (`passes = n`). Every worker wakes at the due time; the first update wins, the others
//!   find the count moved on and compute the next due time from the new start.
//! - **Gently.** One person at a time, with `LIVESYNC_VERIFY_PAUSE` between people, so that
//!   a pass spends little of Graph's and EWS's throttling budgets (the sinks also honour the
//!   services' own pauses). A pass stops between two people when the worker stops; a pass
//!   cut short (stopped, crashed) counts as run, the next one comes at its time.
//! - **Record.** Each person's outcome goes to `livesync.verifications` ([`super::record`]),
//!   as `livesync-admin verify` writes it; the pass record notes when the pass ended and,
//!   when every calendar could be read, that it succeeded. `/metrics` reads both when
//!   scraped (`livesync_calendar_items{state}`,
//!   `livesync_verify_last_success_timestamp_seconds`).
//! - `LIVESYNC_VERIFY_REPAIR=true` queues the repair of what a pass finds, as
//!   `livesync-admin verify --repair` does.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::{Options, Pacing, Source, VerifyError};
use crate::sink::CalendarSink;

/// How often to verify (`LIVESYNC_VERIFY_EVERY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    Off,
    /// Once a day at this time of the firm's day (`nightly`: [`NIGHTLY_AT`]).
    Daily(NaiveTime),
    /// This long after the last pass started.
    Interval(Duration),
}

/// `nightly`: 03:00 in the firm's time zone, after backups and before anyone works.
pub const NIGHTLY_AT: NaiveTime = match NaiveTime::from_hms_opt(3, 0, 0) {
    Some(t) => t,
    None => unreachable!(),
};
/// A daily pass missed by at most this much is run at once.
pub const CATCH_UP: Duration = Duration::from_secs(3 * 3600);
/// The longest sleep between two looks at the clock.
pub const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// A worker that lost a claim waits at least this long before the next try.
const AFTER_A_LOST_CLAIM: Duration = Duration::from_secs(1);

impl Every {
    /// `off`, `nightly`, `HH:MM` (daily, in the firm's time zone) or a duration: a whole
    /// number with `s`, `m`, `h` or `d` (`6h`), from 1 s to 30 days.
    pub fn parse(s: &str) -> Result<Every, String> {
        const EXPECTED: &str = "expected off, nightly, a time of day (HH:MM, in the firm's time \
                                zone) or a duration such as 6h, 30m, 1d";
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "off" | "never" | "no" | "false" => return Ok(Every::Off),
            "nightly" | "daily" => return Ok(Every::Daily(NIGHTLY_AT)),
            _ => {}
        }
        if let Ok(at) = NaiveTime::parse_from_str(&s, "%H:%M") {
            return Ok(Every::Daily(at));
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number.parse().map_err(|_| EXPECTED.to_string())?;
        let seconds = match unit.trim() {
            "s" => n,
            "m" | "min" => n.saturating_mul(60),
            "h" => n.saturating_mul(3600),
            "d" => n.saturating_mul(86_400),
            _ => return Err(EXPECTED.into()),
        };
        if !(1..=30 * 86_400).contains(&seconds) {
            return Err("expected a duration from 1s to 30d".into());
        }
        Ok(Every::Interval(Duration::from_secs(seconds)))
    }
}

impl std::fmt::Display for Every {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Every::Off => f.write_str("off"),
            Every::Daily(at) => write!(f, "daily at {}", at.format("%H:%M")),
            Every::Interval(d) => write!(f, "every {}s", d.as_secs()),
        }
    }
}

/// The scheduled verification's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleSettings {
    /// `LIVESYNC_VERIFY_EVERY`.
    pub every: Every,
    /// `LIVESYNC_VERIFY_PAUSE`: between two people.
    pub pause: Duration,
    /// `LIVESYNC_VERIFY_REPAIR`: queue the repair of what a pass finds.
    pub repair: bool,
}

impl ScheduleSettings {
    /// What `LIVESYNC_VERIFY_*` default to.
    pub const DEFAULT: ScheduleSettings = ScheduleSettings {
        every: Every::Daily(NIGHTLY_AT),
        pause: Duration::from_secs(5),
        repair: false,
    };
    /// No scheduled verification (what tests start from).
    pub const OFF: ScheduleSettings = ScheduleSettings {
        every: Every::Off,
        ..ScheduleSettings::DEFAULT
    };
}

/// When the next pass is due, given when the last one started (`None`: never). `None`
/// when never. A time at or before `now` means at once.
pub fn next_due(
    every: Every,
    last_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    zone: chrono_tz::Tz,
) -> Option<DateTime<Utc>> {
    match every {
        Every::Off => None,
        Every::Interval(interval) => Some(match last_start {
            None => now,
            Some(last) => last + chrono::Duration::from_std(interval).ok()?,
        }),
        Every::Daily(at) => {
            let due = match last_start {
                Some(last) => first_after(at, last, zone),
                None => latest_until(at, now, zone),
            };
            let catch_up = chrono::Duration::from_std(CATCH_UP).ok()?;
            Some(if due + catch_up >= now {
                due
            } else {
                // Missed by more than the catch-up: this night's when it is still early
                // enough, else the next night's.
                let latest = latest_until(at, now, zone);
                if latest + catch_up >= now {
                    latest
                } else {
                    first_after(at, now, zone)
                }
            })
        }
    }
}

/// `at` on `date` in `zone`; a time the clocks skip (the spring change) is taken an hour
/// later, a time they pass twice (autumn) at its first occurrence.
fn occurrence(date: NaiveDate, at: NaiveTime, zone: chrono_tz::Tz) -> DateTime<Utc> {
    let local = date.and_time(at);
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&local))
}

/// The first `at` strictly after `t`.
fn first_after(at: NaiveTime, t: DateTime<Utc>, zone: chrono_tz::Tz) -> DateTime<Utc> {
    let mut date = t.with_timezone(&zone).date_naive();
    loop {
        let o = occurrence(date, at, zone);
        if o > t {
            return o;
        }
        date = date + Days::new(1);
    }
}

/// The last `at` at or before `t`.
fn latest_until(at: NaiveTime, t: DateTime<Utc>, zone: chrono_tz::Tz) -> DateTime<Utc> {
    let mut date = t.with_timezone(&zone).date_naive();
    loop {
        let o = occurrence(date, at, zone);
        if o <= t {
            return o;
        }
        date = date - Days::new(1);
    }
}

/// How long to sleep before looking at the clock again: until `due`, at most
/// [`LONGEST_SLEEP`] (a wall clock set forward or back is so noticed within the hour).
pub fn sleep_for(due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    match due {
        None => LONGEST_SLEEP,
        Some(due) => (due - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(LONGEST_SLEEP),
    }
}

/// The pass record as a worker last read it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct PassState {
    passes: i64,
    started_at: Option<DateTime<Utc>>,
    time_zone: String,
}

impl PassState {
    fn zone(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Europe::Vienna)
    }
}

async fn read_state(pool: &PgPool) -> Result<PassState, sqlx::Error> {
    sqlx::query_as(
        "select p.passes, p.started_at, s.time_zone \
           from livesync.verify_pass p cross join livesync.settings s",
    )
    .fetch_one(pool)
    .await
}

/// Claim pass `known.passes + 1`: `Ok(Some(n))` when this worker runs it, else `Ok(None)`
/// and `known` updated to what the record now says.
async fn claim(
    pool: &PgPool,
    worker_id: Uuid,
    known: &mut PassState,
) -> Result<Option<i64>, sqlx::Error> {
    let (claimed, state): (bool, PassState) = {
        let row: (bool, i64, Option<DateTime<Utc>>, String) = sqlx::query_as(
            "with claimed as ( \
               update livesync.verify_pass \
                  set passes = passes + 1, started_at = now(), started_by = $1 \
                where passes = $2 \
               returning passes, started_at) \
             select c.passes is not null, coalesce(c.passes, p.passes), \
                    coalesce(c.started_at, p.started_at), s.time_zone \
               from livesync.verify_pass p cross join livesync.settings s \
               left join claimed c on true",
        )
        .bind(worker_id)
        .bind(known.passes)
        .fetch_one(pool)
        .await?;
        (
            row.0,
            PassState {
                passes: row.1,
                started_at: row.2,
                time_zone: row.3,
            },
        )
    };
    *known = state;
    Ok(claimed.then_some(known.passes))
}

/// The end of pass `pass`: when, and whether every calendar could be read.
async fn finished(pool: &PgPool, pass: i64, succeeded: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update livesync.verify_pass \
            set finished_at = now(), \
                succeeded_at = case when $2 then now() else succeeded_at end \
          where passes = $1",
    )
    .bind(pass)
    .bind(succeeded)
    .execute(pool)
    .await?;
    Ok(())
}

/// Run scheduled passes until `stop` turns true (the worker's task; see the module doc).
pub async fn run(
    pool: PgPool,
    sink: Arc<dyn CalendarSink>,
    settings: ScheduleSettings,
    worker_id: Uuid,
    mut stop: watch::Receiver<bool>,
) {
    if settings.every == Every::Off {
        return;
    }
    tracing::info!(schedule = %settings.every, pause_s = settings.pause.as_secs_f64(), repair = settings.repair, "verifying the calendars on a schedule");
    let mut failures: u32 = 0;
    let mut known: Option<PassState> = None;
    while !*stop.borrow() {
        if known.is_none() {
            match read_state(&pool).await {
                Ok(state) => known = Some(state),
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error.message = %e, "reading the verification record failed; retrying");
                    if pause(&mut stop, crate::backoff::reconnect(failures)).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(state) = known.as_mut() else {
            continue;
        };
        let now = Utc::now();
        let due = next_due(settings.every, state.started_at, now, state.zone());
        if due.is_none_or(|due| due > now) {
            if pause(&mut stop, sleep_for(due, now)).await {
                return;
            }
            continue;
        }
        let pass = match claim(&pool, worker_id, state).await {
            Ok(Some(pass)) => pass,
            Ok(None) => {
                // Another worker runs this one; the next is due from its start.
                if pause(&mut stop, AFTER_A_LOST_CLAIM).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error.message = %e, "claiming a verification pass failed; retrying");
                known = None;
                if pause(&mut stop, crate::backoff::reconnect(failures)).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        run_pass(&pool, sink.as_ref(), settings, pass, &stop).await;
    }
}

/// One pass over everyone, recorded.
async fn run_pass(
    pool: &PgPool,
    sink: &dyn CalendarSink,
    settings: ScheduleSettings,
    pass: i64,
    stop: &watch::Receiver<bool>,
) {
    tracing::info!(pass, repair = settings.repair, "verification pass started");
    metrics::counter!("livesync_verify_passes_total").increment(1);
    let options = Options {
        repair: settings.repair,
        ..Options::default()
    };
    let pacing = Pacing {
        source: Source::Schedule(pass),
        pause: settings.pause,
        stop: Some(stop.clone()),
    };
    let outcome = super::run_paced(pool, sink, &options, &pacing, |_, _, _| {}).await;
    match outcome {
        Ok(report) if !*stop.borrow() => {
            let problems = report
                .totals
                .iter()
                .filter(|(s, _)| s.is_problem())
                .map(|(_, n)| n)
                .sum::<usize>();
            tracing::info!(
                pass,
                calendars = report.people.len(),
                problems,
                unreadable = report.errors,
                queued = report.queued,
                "verification pass finished"
            );
            if let Err(e) = finished(pool, pass, report.errors == 0).await {
                tracing::warn!(error.message = %e, pass, "could not record the end of the verification pass");
            }
        }
        Ok(_) => tracing::info!(pass, "verification pass stopped with the worker"),
        Err(VerifyError::Database(e)) => {
            tracing::warn!(error.message = %e, pass, "verification pass failed; the next one comes at its time")
        }
        Err(e) => tracing::warn!(error.message = %e, pass, "verification pass failed"),
    }
}

/// Sleep `d`, or less when `stop` turns true: `true` when stopped.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = async { stop.wait_for(|s| *s).await.is_ok() } => true,
        _ = tokio::time::sleep(d) => false,
    };
    stopped || *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Vienna;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn the_setting_reads_off_nightly_a_time_of_day_and_durations() {
        assert_eq!(Every::parse("off"), Ok(Every::Off));
        assert_eq!(Every::parse(" Nightly "), Ok(Every::Daily(at(3, 0))));
        assert_eq!(Every::parse("22:30"), Ok(Every::Daily(at(22, 30))));
        assert_eq!(
            Every::parse("6h"),
            Ok(Every::Interval(Duration::from_secs(6 * 3600)))
        );
        assert_eq!(
            Every::parse("2s"),
            Ok(Every::Interval(Duration::from_secs(2)))
        );
        assert_eq!(
            Every::parse("30m"),
            Ok(Every::Interval(Duration::from_secs(1800)))
        );
        assert_eq!(
            Every::parse("1d"),
            Ok(Every::Interval(Duration::from_secs(86_400)))
        );
        for bad in ["", "0s", "31d", "6 hours", "h", "25:00", "sometimes", "-1h"] {
            assert!(Every::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn off_is_never_due() {
        let now = utc("2026-12-03T12:00:00Z");
        assert_eq!(next_due(Every::Off, None, now, Vienna), None);
        assert_eq!(next_due(Every::Off, Some(now), now, Vienna), None);
    }

    #[test]
    fn an_interval_counts_from_the_last_start_and_runs_at_once_the_first_time() {
        let every = Every::Interval(Duration::from_secs(6 * 3600));
        let now = utc("2026-12-03T12:00:00Z");
        assert_eq!(next_due(every, None, now, Vienna), Some(now));
        assert_eq!(
            next_due(every, Some(utc("2026-12-03T10:00:00Z")), now, Vienna),
            Some(utc("2026-12-03T16:00:00Z"))
        );
        // Overdue (the workers were down): at once.
        let overdue = next_due(every, Some(utc("2026-12-01T10:00:00Z")), now, Vienna).unwrap();
        assert!(overdue <= now);
    }

    #[test]
    fn nightly_is_three_in_the_morning_in_the_firms_zone() {
        let every = Every::Daily(NIGHTLY_AT);
        // 03:00 in Vienna in winter is 02:00 UTC, in summer 01:00 UTC.
        let last = utc("2026-12-03T02:00:05Z");
        let now = utc("2026-12-03T12:00:00Z");
        assert_eq!(
            next_due(every, Some(last), now, Vienna),
            Some(utc("2026-12-04T02:00:00Z"))
        );
        assert_eq!(
            next_due(
                every,
                Some(utc("2026-07-01T01:00:05Z")),
                utc("2026-07-01T09:00:00Z"),
                Vienna
            ),
            Some(utc("2026-07-02T01:00:00Z"))
        );
        // Another zone, another hour: 03:00 in New York is 08:00 UTC.
        assert_eq!(
            next_due(
                every,
                Some(last),
                utc("2026-12-03T06:00:00Z"),
                chrono_tz::America::New_York
            ),
            Some(utc("2026-12-03T08:00:00Z"))
        );
    }

    #[test]
    fn a_first_nightly_pass_waits_for_the_night_unless_the_night_just_began() {
        let every = Every::Daily(NIGHTLY_AT);
        // Installed at noon: the coming night.
        assert_eq!(
            next_due(every, None, utc("2026-12-03T11:00:00Z"), Vienna),
            Some(utc("2026-12-04T02:00:00Z"))
        );
        // Started at 04:30 in Vienna: tonight's pass is still run, at once.
        let now = utc("2026-12-03T03:30:00Z");
        assert_eq!(
            next_due(every, None, now, Vienna),
            Some(utc("2026-12-03T02:00:00Z"))
        );
    }

    #[test]
    fn a_missed_night_is_caught_up_early_in_the_morning_else_the_next_night() {
        let every = Every::Daily(NIGHTLY_AT);
        let two_nights_ago = Some(utc("2026-12-01T02:00:01Z"));
        // 05:00 in Vienna: this night's pass, within the catch-up, at once.
        let now = utc("2026-12-03T04:00:00Z");
        assert_eq!(
            next_due(every, two_nights_ago, now, Vienna),
            Some(utc("2026-12-03T02:00:00Z"))
        );
        // 09:00 in Vienna: the next night.
        let now = utc("2026-12-03T08:00:00Z");
        assert_eq!(
            next_due(every, two_nights_ago, now, Vienna),
            Some(utc("2026-12-04T02:00:00Z"))
        );
    }

    #[test]
    fn the_clock_change_moves_a_skipped_hour_and_keeps_the_first_of_a_doubled_one() {
        // 2027-03-28 in Vienna: 02:00 → 03:00; 02:30 does not exist, taken as 03:30 CEST.
        let every = Every::Daily(at(2, 30));
        assert_eq!(
            next_due(
                every,
                Some(utc("2027-03-27T01:30:00Z")),
                utc("2027-03-27T12:00:00Z"),
                Vienna
            ),
            Some(utc("2027-03-28T01:30:00Z"))
        );
        // 2026-10-25: 03:00 → 02:00; 02:30 happens twice, the first (CEST) counts.
        assert_eq!(
            next_due(
                every,
                Some(utc("2026-10-24T00:30:00Z")),
                utc("2026-10-24T12:00:00Z"),
                Vienna
            ),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn a_worker_sleeps_until_due_but_looks_at_the_clock_every_hour() {
        let now = utc("2026-12-03T12:00:00Z");
        assert_eq!(
            sleep_for(Some(utc("2026-12-03T12:00:02Z")), now),
            Duration::from_secs(2)
        );
        assert_eq!(
            sleep_for(Some(utc("2026-12-04T02:00:00Z")), now),
            LONGEST_SLEEP
        );
        assert_eq!(
            sleep_for(Some(utc("2026-12-03T11:00:00Z")), now),
            Duration::ZERO
        );
        assert_eq!(sleep_for(None, now), LONGEST_SLEEP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_pause_at_once() {
        let (tx, mut rx) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(async move { pause(&mut rx, Duration::from_secs(3600)).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send(true).unwrap();
        assert!(waiting.await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(6));
    }
}
