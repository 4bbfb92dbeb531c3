//! The record of the last verification of each person's calendar
//! (`livesync.verifications`), written by the scheduled passes and by `livesync-admin
//! verify` alike, and read by the console and `/metrics`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::PersonReport;
use super::compare::State;

/// Who verified: a scheduled pass (its number) or an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Schedule(i64),
    Admin,
}

/// Record `report` as the person's last verification.
pub async fn write(
    pool: &PgPool,
    report: &PersonReport,
    source: Source,
) -> Result<(), sqlx::Error> {
    let n = |state: State| {
        i32::try_from(report.totals.get(&state).copied().unwrap_or(0)).unwrap_or(i32::MAX)
    };
    let (by, pass) = match source {
        Source::Schedule(pass) => ("schedule", Some(pass)),
        Source::Admin => ("admin", None),
    };
    sqlx::query(
        "insert into livesync.verifications as v \
           (user_id, verified_at, verified_by, pass, error, items_ok, items_missing, \
            items_orphan, items_drifted, items_duplicate, items_foreign, queued) \
         values ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         on conflict (user_id) do update set \
           verified_at = excluded.verified_at, verified_by = excluded.verified_by, \
           pass = excluded.pass, error = excluded.error, items_ok = excluded.items_ok, \
           items_missing = excluded.items_missing, items_orphan = excluded.items_orphan, \
           items_drifted = excluded.items_drifted, items_duplicate = excluded.items_duplicate, \
           items_foreign = excluded.items_foreign, queued = excluded.queued",
    )
    .bind(report.user_id)
    .bind(by)
    .bind(pass)
    .bind(report.error.as_deref())
    .bind(n(State::Ok))
    .bind(n(State::Missing))
    .bind(n(State::Orphan))
    .bind(n(State::Drifted))
    .bind(n(State::Duplicate))
    .bind(n(State::Foreign))
    .bind(i32::try_from(report.queued).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// A person's last verification, as the console shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Last {
    pub verified_at: DateTime<Utc>,
    pub verified_by: String,
    pub error: Option<String>,
    /// Items neither `ok` nor `foreign`.
    pub problems: i64,
    pub queued: i32,
}

/// The last verification of `user_id`'s calendar, if any.
pub async fn of_person(pool: &PgPool, user_id: i64) -> Result<Option<Last>, sqlx::Error> {
    sqlx::query_as(
        "select verified_at, verified_by, error, \
                (items_missing + items_orphan + items_drifted + items_duplicate)::bigint as problems, \
                queued \
           from livesync.verifications where user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// Everyone's last verifications together (of the people whose live sync is active).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Summary {
    /// The latest verification of anyone's calendar.
    pub last: Option<DateTime<Utc>>,
    /// Calendars verified.
    pub calendars: i64,
    /// Items neither `ok` nor `foreign`, summed.
    pub problems: i64,
    /// Calendars that could not be read.
    pub unreadable: i64,
    /// The end of the last scheduled pass that read every calendar.
    pub succeeded_at: Option<DateTime<Utc>>,
}

pub async fn summary(pool: &PgPool) -> Result<Summary, sqlx::Error> {
    sqlx::query_as(
        "select max(v.verified_at) as last, count(v.user_id) as calendars, \
                coalesce(sum(v.items_missing + v.items_orphan + v.items_drifted \
                             + v.items_duplicate), 0)::bigint as problems, \
                count(v.error) as unreadable, \
                (select succeeded_at from livesync.verify_pass) as succeeded_at \
           from livesync.verifications v where livesync.sync_active(v.user_id)",
    )
    .fetch_one(pool)
    .await
}
