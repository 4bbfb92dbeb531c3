//! Writing one batch's outcomes back: one statement, fenced by the lease.
//!
//! The statement first locks the user's state row if it still carries this worker's lease
//! token; every other part writes only when that row was found. So a worker whose lease
//! was taken over completes nothing. It records what the calendar now holds, removes the
//! finished entries (only in the version delivered: a change that arrived meanwhile stays
//! queued), postpones retries, moves dead letters, and renews the lease, or, after the
//! user's last batch, gives the user back. One round trip and one commit per batch.

use std::time::Duration;

use sqlx::PgPool;

use crate::claim::{Claim, interval};
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
    },
    Dead {
        appointment_id: i64,
        version: i64,
        error: String,
    },
}

const COMPLETE: &str = r#"
with lease as (
  select s.user_id from livesync.user_state s
   where s.user_id = $1 and s.lease_token = $2
   for update
),
recorded as (
  insert into livesync.delivered as d
    (user_id, appointment_id, uid, version, sequence, remote_id, etag, delivered_at, row_version)
  select $1, t.a, t.u, t.v, t.s, t.r, t.e, now(), t.x
    from unnest($6::bigint[], $7::text[], $8::bigint[], $9::int[], $10::text[], $11::text[],
                $12::text[]) as t(a, u, v, s, r, e, x)
   where exists (select from lease)
  on conflict (user_id, appointment_id) do update
    set uid = excluded.uid, version = excluded.version, sequence = excluded.sequence,
        remote_id = excluded.remote_id, etag = excluded.etag, delivered_at = now(),
        row_version = excluded.row_version
    where d.version < excluded.version
),
forgotten as (
  delete from livesync.delivered d
   using unnest($13::bigint[], $14::bigint[]) as t(a, v)
   where d.user_id = $1 and d.appointment_id = t.a and d.version < t.v
     and exists (select from lease)
),
finished as (
  delete from livesync.queue q
   using unnest($15::bigint[], $16::bigint[]) as t(a, v)
   where q.user_id = $1 and q.appointment_id = t.a and q.version = t.v
     and exists (select from lease)
  returning q.appointment_id
),
postponed as (
  update livesync.queue q
     set attempts = t.n, not_before = now() + t.d::interval, last_error = t.e
    from unnest($17::bigint[], $18::bigint[], $19::int[], $20::text[], $21::text[])
         as t(a, v, n, d, e)
   where q.user_id = $1 and q.appointment_id = t.a and q.version = t.v
     and exists (select from lease)
),
moved as (
  delete from livesync.queue q
   using unnest($22::bigint[], $23::bigint[], $24::text[]) as t(a, v, e)
   where q.user_id = $1 and q.appointment_id = t.a and q.version = t.v
     and exists (select from lease)
  returning q.user_id, q.appointment_id, q.op, q.version, q.attempts, q.queued_at, t.e
),
buried as (
  insert into livesync.dead_letters
    (user_id, appointment_id, op, version, attempts, last_error, first_queued_at)
  select m.user_id, m.appointment_id, m.op, m.version, m.attempts + 1, m.e, m.queued_at
    from moved m
),
state as (
  update livesync.user_state s
     set last_synced_at = now(),
         last_error = $4,
         lease_expires_at = case when $5 then null else now() + $3::interval end,
         lease_owner = case when $5 then null else s.lease_owner end,
         lease_token = case when $5 then null else s.lease_token end,
         -- A served flush request ends with the user's last batch, unless entries stay
         -- (backing off, or changed during the delivery).
         flush_requested_at = case
           when $5 and not exists (
             select 1 from livesync.queue q
              where q.user_id = s.user_id
                and q.appointment_id not in (select f.appointment_id from finished f)
                and q.appointment_id not in (select m.appointment_id from moved m))
           then null
           else s.flush_requested_at end
    from lease
   where s.user_id = lease.user_id
  returning 1
)
select count(*) from state
"#;

/// Write one batch's outcomes back; with `release`, give the user back in the same
/// statement. Returns false (and changes nothing) when the lease is no longer ours.
pub(super) async fn complete(
    pool: &PgPool,
    claim: &Claim,
    done: &[Done],
    lease: Duration,
    release: bool,
) -> Result<bool, sqlx::Error> {
    let mut up = UpsertCols::default();
    let mut forgotten = Pairs::default();
    let mut finished = Pairs::default();
    let mut retry = RetryCols::default();
    let mut dead = Pairs::default();
    let mut dead_errors = Vec::new();
    for d in done {
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
                up.row_versions.push(row_version.clone());
                up.ids.push(*appointment_id);
                up.versions.push(*version);
                up.uids.push(uid.clone());
                up.sequences.push(*sequence);
                up.remote_ids.push(applied.remote_id.clone());
                up.etags.push(applied.etag.clone());
                finished.push(*appointment_id, *version);
            }
            Done::Unchanged {
                appointment_id,
                version,
            } => finished.push(*appointment_id, *version),
            Done::Deleted {
                appointment_id,
                version,
            }
            | Done::Skipped {
                appointment_id,
                version,
            } => {
                forgotten.push(*appointment_id, *version);
                finished.push(*appointment_id, *version);
            }
            Done::Retry {
                appointment_id,
                version,
                attempts,
                delay,
                error,
            } => {
                retry.ids.push(*appointment_id);
                retry.versions.push(*version);
                retry.attempts.push(*attempts);
                retry.delays.push(interval(*delay));
                retry.errors.push(error.clone());
            }
            Done::Dead {
                appointment_id,
                version,
                error,
            } => {
                dead.push(*appointment_id, *version);
                dead_errors.push(error.clone());
            }
        }
    }
    let last_error = retry.errors.last().or(dead_errors.last());
    let ours: i64 = sqlx::query_scalar(COMPLETE)
        .bind(claim.user_id)
        .bind(claim.token)
        .bind(interval(lease))
        .bind(last_error)
        .bind(release)
        .bind(&up.ids)
        .bind(&up.uids)
        .bind(&up.versions)
        .bind(&up.sequences)
        .bind(&up.remote_ids)
        .bind(&up.etags)
        .bind(&up.row_versions)
        .bind(&forgotten.ids)
        .bind(&forgotten.versions)
        .bind(&finished.ids)
        .bind(&finished.versions)
        .bind(&retry.ids)
        .bind(&retry.versions)
        .bind(&retry.attempts)
        .bind(&retry.delays)
        .bind(&retry.errors)
        .bind(&dead.ids)
        .bind(&dead.versions)
        .bind(&dead_errors)
        .fetch_one(pool)
        .await?;
    Ok(ours == 1)
}

/// Queue entries by (appointment, version).
#[derive(Default)]
struct Pairs {
    ids: Vec<i64>,
    versions: Vec<i64>,
}

impl Pairs {
    fn push(&mut self, id: i64, version: i64) {
        self.ids.push(id);
        self.versions.push(version);
    }
}

#[derive(Default)]
struct UpsertCols {
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
    ids: Vec<i64>,
    versions: Vec<i64>,
    attempts: Vec<i32>,
    delays: Vec<String>,
    errors: Vec<String>,
}
