//! Writing batches' outcomes back: one statement for the deliveries of many users that
//! finished at the same time (see `coalesce`), each fenced by its own lease.
//!
//! The statement first locks the state rows of the users whose lease token is still this
//! worker's; every other part writes only for those users. So a worker whose lease on a
//! user was taken over completes nothing for that user. It records what the calendar now holds, removes the
//! finished entries (only in the version delivered: a change that arrived meanwhile stays
//! queued), postpones retries, marks failed first writes "maybe delivered" (the calendar
//! may hold them: see `claim`), moves dead letters, and renews the lease, or, after the
//! user's last batch, gives the user back. One round trip and one commit per round.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::coalesce::{Coalescer, LANES};
use super::{MAYBE_DELIVERED, uid_for};
use crate::claim::interval;
use crate::connections::retry_if_cut;
use crate::sink::Applied;

/// The outcome of one entry, ready to be written back.
pub(super) enum Done {
    Upserted {
        appointment_id: i64,
        version: i64,
        uid: String,
        sequence: i32,
        applied: Applied,
        subject: String,
        row_version: Option<String>,
    },
    /// The calendar holds this row version already; only the queue entry is finished.
    Unchanged {
        appointment_id: i64,
        version: i64,
    },
    Deleted {
        appointment_id: i64,
        version: i64,
    },
    Skipped {
        appointment_id: i64,
        version: i64,
    },
    Retry {
        appointment_id: i64,
        version: i64,
        attempts: i32,
        delay: Duration,
        error: String,
        /// A write the calendar may hold although nothing records it: gets a mark.
        unrecorded: bool,
    },
    Dead {
        appointment_id: i64,
        version: i64,
        error: String,
        unrecorded: bool,
    },
}

const COMPLETE: &str = r#"
with claims as (
  select c.user_id, c.token, c.release, c.last_error
    from unnest($1::bigint[], $2::uuid[], $3::bool[], $4::text[])
         as c(user_id, token, release, last_error)
),
lease as (
  select s.user_id
    from livesync.user_state s
    join claims c on c.user_id = s.user_id and s.lease_token = c.token
   order by s.user_id
     for update of s
),
recorded as (
  insert into livesync.delivered as d
    (user_id, appointment_id, uid, version, sequence, remote_id, etag, delivered_at, row_version)
  select t.w, t.a, t.u, t.v, t.s, t.r, t.e, now(), t.x
    from unnest($6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::int[], $11::text[],
                $12::text[], $13::text[]) as t(w, a, u, v, s, r, e, x)
   where t.w in (select l.user_id from lease l)
   order by t.w, t.a
  on conflict (user_id, appointment_id) do update
    set uid = excluded.uid, version = excluded.version, sequence = excluded.sequence,
        remote_id = excluded.remote_id, etag = excluded.etag, delivered_at = now(),
        row_version = excluded.row_version
    where d.version < excluded.version
),
forgotten as (
  delete from livesync.delivered d
   using unnest($14::bigint[], $15::bigint[], $16::bigint[]) as t(w, a, v)
   where d.user_id = t.w and d.appointment_id = t.a and d.version < t.v
     and t.w in (select l.user_id from lease l)
),
finished as (
  delete from livesync.queue q
   using unnest($17::bigint[], $18::bigint[], $19::bigint[]) as t(w, a, v)
   where q.user_id = t.w and q.appointment_id = t.a and q.version = t.v
     and t.w in (select l.user_id from lease l)
  returning q.user_id, q.appointment_id
),
postponed as (
  update livesync.queue q
     set attempts = t.n, not_before = now() + t.d::interval, last_error = t.e
    from unnest($20::bigint[], $21::bigint[], $22::bigint[], $23::int[], $24::text[],
                $25::text[]) as t(w, a, v, n, d, e)
   where q.user_id = t.w and q.appointment_id = t.a and q.version = t.v
     and t.w in (select l.user_id from lease l)
),
moved as (
  delete from livesync.queue q
   using unnest($26::bigint[], $27::bigint[], $28::bigint[], $29::text[]) as t(w, a, v, e)
   where q.user_id = t.w and q.appointment_id = t.a and q.version = t.v
     and t.w in (select l.user_id from lease l)
  returning q.user_id, q.appointment_id, q.op, q.version, q.attempts, q.queued_at, t.e
),
doubted as (
  insert into livesync.delivered (user_id, appointment_id, uid, version, sequence)
  select t.w, t.a, t.u, 0, $33
    from unnest($30::bigint[], $31::bigint[], $32::text[]) as t(w, a, u)
   where t.w in (select l.user_id from lease l)
   order by t.w, t.a
  on conflict (user_id, appointment_id) do nothing
),
buried as (
  insert into livesync.dead_letters
    (user_id, appointment_id, op, version, attempts, last_error, first_queued_at)
  select m.user_id, m.appointment_id, m.op, m.version, m.attempts + 1, m.e, m.queued_at
    from moved m
),
gone as (
  select g.user_id, count(*) as n
    from (select f.user_id from finished f union all select m.user_id from moved m) g
   group by g.user_id
),
state as (
  update livesync.user_state s
     set last_synced_at = now(),
         last_error = c.last_error,
         lease_expires_at = case when c.release then null else now() + $5::interval end,
         lease_owner = case when c.release then null else s.lease_owner end,
         lease_key = case when c.release then null else s.lease_key end,
         lease_token = case when c.release then null else s.lease_token end,
         -- A served flush request ends with the user's last batch, unless entries stay
         -- (backing off, or changed during the delivery): the statement sees the queue
         -- as it was before its own deletes, so the user's entries are all gone when
         -- this statement removed as many as there were.
         flush_requested_at = case
           when c.release
            and (select count(*) from livesync.queue q where q.user_id = s.user_id)
                = coalesce((select g.n from gone g where g.user_id = s.user_id), 0)
           then null
           else s.flush_requested_at end
    from lease l
    join claims c on c.user_id = l.user_id
   where s.user_id = l.user_id
  returning s.user_id
)
select st.user_id from state st
"#;

/// One finished batch of one user.
pub(super) struct Completion {
    pub user_id: i64,
    pub token: Uuid,
    pub done: Arc<Vec<Done>>,
    /// The user's last batch: give the user back.
    pub release: bool,
}

/// Completions of the deliveries running at the same time, one statement per round; the
/// answer says whether the lease was still ours (if not, nothing was written for it).
pub(super) type Completer = Coalescer<Completion, bool>;

/// Start the completing task: up to `max_users` completions per statement.
pub(super) fn spawn_completer(pool: PgPool, lease: Duration, max_users: usize) -> Completer {
    Coalescer::spawn(max_users, LANES, move |batch: Vec<Completion>| {
        let pool = pool.clone();
        async move {
            let ours = complete(&pool, &batch, lease).await?;
            Ok(batch.iter().map(|c| ours.contains(&c.user_id)).collect())
        }
    })
}

/// Write the completions back; returns the users whose lease was still ours.
async fn complete(
    pool: &PgPool,
    batch: &[Completion],
    lease: Duration,
) -> Result<HashSet<i64>, sqlx::Error> {
    let mut claims = ClaimCols::default();
    let mut up = UpsertCols::default();
    let mut forgotten = Entries::default();
    let mut finished = Entries::default();
    let mut retry = RetryCols::default();
    let mut dead = Entries::default();
    let mut dead_errors = Vec::new();
    let mut doubted = Marks::default();
    for c in batch {
        let w = c.user_id;
        let (mut last_retry, mut last_dead) = (None, None);
        for d in c.done.iter() {
            match d {
                Done::Upserted {
                    appointment_id,
                    version,
                    uid,
                    sequence,
                    applied,
                    row_version,
                    ..
                } => {
                    up.users.push(w);
                    up.row_versions.push(row_version.clone());
                    up.ids.push(*appointment_id);
                    up.versions.push(*version);
                    up.uids.push(uid.clone());
                    up.sequences.push(*sequence);
                    up.remote_ids.push(applied.remote_id.clone());
                    up.etags.push(applied.etag.clone());
                    finished.push(w, *appointment_id, *version);
                }
                Done::Unchanged {
                    appointment_id,
                    version,
                } => finished.push(w, *appointment_id, *version),
                Done::Deleted {
                    appointment_id,
                    version,
                }
                | Done::Skipped {
                    appointment_id,
                    version,
                } => {
                    forgotten.push(w, *appointment_id, *version);
                    finished.push(w, *appointment_id, *version);
                }
                Done::Retry {
                    appointment_id,
                    version,
                    attempts,
                    delay,
                    error,
                    unrecorded,
                } => {
                    if *unrecorded {
                        doubted.push(w, *appointment_id);
                    }
                    retry.users.push(w);
                    retry.ids.push(*appointment_id);
                    retry.versions.push(*version);
                    retry.attempts.push(*attempts);
                    retry.delays.push(interval(*delay));
                    retry.errors.push(error.clone());
                    last_retry = Some(error.clone());
                }
                Done::Dead {
                    appointment_id,
                    version,
                    error,
                    unrecorded,
                } => {
                    if *unrecorded {
                        doubted.push(w, *appointment_id);
                    }
                    dead.push(w, *appointment_id, *version);
                    dead_errors.push(error.clone());
                    last_dead = Some(error.clone());
                }
            }
        }
        claims.users.push(w);
        claims.tokens.push(c.token);
        claims.release.push(c.release);
        claims.last_errors.push(last_retry.or(last_dead));
    }
    // Twice is harmless: every part checks the version it applies to, and a user given
    // back by the first run is not ours in the second (reported as a lost lease).
    let ours: Vec<i64> = retry_if_cut(pool, || {
        sqlx::query_scalar(COMPLETE)
            .bind(&claims.users)
            .bind(&claims.tokens)
            .bind(&claims.release)
            .bind(&claims.last_errors)
            .bind(interval(lease))
            .bind(&up.users)
            .bind(&up.ids)
            .bind(&up.uids)
            .bind(&up.versions)
            .bind(&up.sequences)
            .bind(&up.remote_ids)
            .bind(&up.etags)
            .bind(&up.row_versions)
            .bind(&forgotten.users)
            .bind(&forgotten.ids)
            .bind(&forgotten.versions)
            .bind(&finished.users)
            .bind(&finished.ids)
            .bind(&finished.versions)
            .bind(&retry.users)
            .bind(&retry.ids)
            .bind(&retry.versions)
            .bind(&retry.attempts)
            .bind(&retry.delays)
            .bind(&retry.errors)
            .bind(&dead.users)
            .bind(&dead.ids)
            .bind(&dead.versions)
            .bind(&dead_errors)
            .bind(&doubted.users)
            .bind(&doubted.ids)
            .bind(&doubted.uids)
            .bind(MAYBE_DELIVERED)
            .fetch_all(pool)
    })
    .await?;
    Ok(ours.into_iter().collect())
}

#[derive(Default)]
struct ClaimCols {
    users: Vec<i64>,
    tokens: Vec<Uuid>,
    release: Vec<bool>,
    last_errors: Vec<Option<String>>,
}

/// Queue entries by (user, appointment, version).
#[derive(Default)]
struct Entries {
    users: Vec<i64>,
    ids: Vec<i64>,
    versions: Vec<i64>,
}

impl Entries {
    fn push(&mut self, user: i64, id: i64, version: i64) {
        self.users.push(user);
        self.ids.push(id);
        self.versions.push(version);
    }
}

/// "Maybe delivered" marks by (user, appointment).
#[derive(Default)]
struct Marks {
    users: Vec<i64>,
    ids: Vec<i64>,
    uids: Vec<String>,
}

impl Marks {
    fn push(&mut self, user: i64, id: i64) {
        self.users.push(user);
        self.ids.push(id);
        self.uids.push(uid_for(id));
    }
}

#[derive(Default)]
struct UpsertCols {
    users: Vec<i64>,
    ids: Vec<i64>,
    versions: Vec<i64>,
    uids: Vec<String>,
    sequences: Vec<i32>,
    remote_ids: Vec<Option<String>>,
    etags: Vec<Option<String>>,
    row_versions: Vec<Option<String>>,
}

#[derive(Default)]
struct RetryCols {
    users: Vec<i64>,
    ids: Vec<i64>,
    versions: Vec<i64>,
    attempts: Vec<i32>,
    delays: Vec<String>,
    errors: Vec<String>,
}
