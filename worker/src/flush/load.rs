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

/// Each user's due entries (up to `$2` each) joined with the truth, in version order. The
/// statement only reads: an entry handed to a sink whose outcome is never recorded gets its
/// "maybe delivered" mark afterwards, from whoever learns of it (the completion for a failed
/// write, the release after an error, the claim that takes over an expired lease; see
/// `claim`).
///
/// `$3` is the number of users in `$1`, so the `limit` drops nothing; it is there for the
/// planner. A parameter array is estimated at 10 rows, a constant one at its length, so
/// the generic plan looked 10× dearer than the custom ones and the statement was planned
/// anew at every call (0.46 ms of planning for 0.13 ms of execution). A `limit` given as a
/// parameter is estimated at a tenth of its input: one user, as in most calls. Now the
/// generic plan (the same shape: index lookups per user) is chosen after the first five
/// calls, and PostgreSQL still replaces it when the statistics change. Measured with
/// pgbench on the statement alone: 0.97–1.03 ms per call before, 0.32–0.37 ms after
/// (BENCHMARKS.md). What the calendar holds is looked up entry by entry (the lateral
/// subquery on the primary key): a plan made for all users alike would otherwise read all
/// of a user's `delivered` rows into a hash at every load, and a lawyer's calendar grows
/// to thousands.
const LOAD_DUE: &str = r#"
with due as (
  select u.id as user_id, x.*
    from (select unnest($1::bigint[]) as id limit $3) as u
    cross join lateral (
      select q.appointment_id, q.version, q.attempts,
             (p.user_id is not null and a.id is not null) as present,
             a.subject, a.location, a.notes, a.starts_at, a.ends_at, a.all_day, a.updated_at,
             d.uid, d.sequence, d.remote_id, d.etag,
             a.xmin::text || '/' || a.ctid::text as row_version,
             d.row_version as delivered_row_version
        from livesync.queue q
        left join xpert.appointment_participants p
               on p.appointment_id = q.appointment_id and p.user_id = q.user_id
        left join xpert.appointments a on a.id = p.appointment_id
        left join lateral (
          select d.uid, d.sequence, d.remote_id, d.etag, d.row_version
            from livesync.delivered d
           where d.user_id = q.user_id and d.appointment_id = q.appointment_id
        ) d on true
       where q.user_id = u.id and q.not_before <= now()
       order by q.version
       limit $2
    ) x
)
select due.*, (select s.time_zone from livesync.settings s) as time_zone
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
