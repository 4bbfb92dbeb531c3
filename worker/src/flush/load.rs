//! Loading a leased user's due entries, many users per statement (see `coalesce`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::coalesce::{Coalescer, LANES};
use crate::connections::retry_if_cut;

/// One due queue entry joined with the truth.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct DueRow {
    pub(super) user_id: i64,
    pub(super) appointment_id: i64,
    pub(super) version: i64,
    pub(super) attempts: i32,
    pub(super) present: bool,
    pub(super) subject: Option<String>,
    pub(super) location: Option<String>,
    pub(super) notes: Option<String>,
    pub(super) starts_at: Option<DateTime<Utc>>,
    pub(super) ends_at: Option<DateTime<Utc>>,
    pub(super) all_day: Option<bool>,
    pub(super) updated_at: Option<DateTime<Utc>>,
    pub(super) uid: Option<String>,
    pub(super) sequence: Option<i32>,
    pub(super) remote_id: Option<String>,
    pub(super) etag: Option<String>,
    /// The appointment row's version (xmin and position: both change on every update).
    pub(super) row_version: Option<String>,
    /// The row version the calendar was last given, when known.
    pub(super) delivered_row_version: Option<String>,
    pub(super) time_zone: String,
}

#[cfg(test)]
impl DueRow {
    /// A due change of appointment 42 for user 7, never delivered, at queue version `version`.
    pub(super) fn for_test(version: i64) -> DueRow {
        use chrono::TimeZone;
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).unwrap();
        DueRow {
            user_id: 7,
            appointment_id: 42,
            version,
            attempts: 0,
            present: true,
            subject: Some("Tagsatzung".into()),
            location: None,
            notes: None,
            starts_at: Some(at),
            ends_at: Some(at + chrono::Duration::hours(1)),
            all_day: Some(false),
            updated_at: Some(at),
            uid: None,
            sequence: None,
            remote_id: None,
            etag: None,
            row_version: Some("1001/(0,1)".into()),
            delivered_row_version: None,
            time_zone: "Europe/Vienna".into(),
        }
    }
}

/// Each user's due entries (up to `$2` each, in version order) joined with the truth, in
/// version order. The statement only reads: an entry handed to a sink whose outcome is never
/// recorded gets its "maybe delivered" mark afterwards, from whoever learns of it (the
/// completion for a failed write, the release after an error, the claim that takes over a
/// lease; see `claim`).
///
/// Its plan is fixed by its shape, not by the statistics of livesync's tables, which are
/// stale right after a backlog arrives: per user, the batch is taken from the queue first
/// (an index range on the primary key's first column); then each entry looks up its
/// appointment and what the calendar holds by full key, in lateral subqueries that
/// PostgreSQL cannot flatten (`offset 0`), so they stay one index probe per entry. (Before,
/// statistics taken while the queue held one user's entries made every user look like
/// the whole queue: the planner merge-joined a full scan of Xpert's participants and read
/// all of a user's `delivered` rows per entry; a load took 60 ms instead of 3.)
///
/// `$3` is the number of users in `$1`, so the `limit` drops nothing; it is there for the
/// planner: a parameter array is estimated at 10 rows, and a `limit` given as a parameter
/// at a tenth of its input, one user, as in most calls, so the generic plan is used after
/// the first five calls instead of planning anew each time.
const LOAD_DUE: &str = r#"
with due as (
  select u.id as user_id, x.*
    from (select unnest($1::bigint[]) as id limit $3) as u
    cross join lateral (
      select q.appointment_id, q.version, q.attempts,
             t.appointment_id is not null as present,
             t.subject, t.location, t.notes, t.starts_at, t.ends_at, t.all_day, t.updated_at,
             d.uid, d.sequence, d.remote_id, d.etag,
             t.row_version,
             d.row_version as delivered_row_version
        from (select q.appointment_id, q.version, q.attempts
                from livesync.queue q
               where q.user_id = u.id and q.not_before <= now()
               order by q.version
               limit $2) q
        left join lateral (
          select a.id as appointment_id, a.subject, a.location, a.notes, a.starts_at,
                 a.ends_at, a.all_day, a.updated_at,
                 a.xmin::text || '/' || a.ctid::text as row_version
            from xpert.appointment_participants p
            join xpert.appointments a on a.id = p.appointment_id
           where p.appointment_id = q.appointment_id and p.user_id = u.id
          offset 0
        ) t on true
        left join lateral (
          select d.uid, d.sequence, d.remote_id, d.etag, d.row_version
            from livesync.delivered d
           where d.user_id = u.id and d.appointment_id = q.appointment_id
          offset 0
        ) d on true
    ) x
)
select due.*, (select s.time_zone from livesync.settings s limit 1) as time_zone
  from due
 order by due.user_id, due.version
"#;

/// Loads for the deliveries running at the same time, one statement per round.
pub(super) type Loader = Coalescer<i64, Vec<DueRow>>;

/// Start the loading task: up to `max_users` users per statement, `batch_size` entries each.
pub(super) fn spawn_loader(pool: PgPool, batch_size: i64, max_users: usize) -> Loader {
    Coalescer::spawn(max_users, LANES, move |users: Vec<i64>| {
        let pool = pool.clone();
        async move {
            // It only reads: twice is harmless.
            let rows: Vec<DueRow> = retry_if_cut(&pool, || {
                sqlx::query_as(LOAD_DUE)
                    .bind(&users)
                    .bind(batch_size)
                    .bind(users.len() as i64)
                    .fetch_all(&pool)
            })
            .await?;
            let mut by_user: HashMap<i64, Vec<DueRow>> = HashMap::new();
            for row in rows {
                by_user.entry(row.user_id).or_default().push(row);
            }
            Ok(users
                .iter()
                .map(|u| by_user.remove(u).unwrap_or_default())
                .collect())
        }
    })
}
