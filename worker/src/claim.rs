//! Claiming users, releasing them, and turning logins into flush requests.
//!
//! The unit of work is a *user* (one calendar), not a queue entry: a worker leases a user
//! in one statement (`FOR UPDATE SKIP LOCKED` on `livesync.user_state`, then an UPDATE that
//! stamps a fresh lease token), delivers that user's due entries in version order, and
//! completes every batch in a statement that first checks it still holds that token. So
//! per user there is one delivery at a time across any number of workers, and a worker
//! whose lease ran out cannot complete anything (see `flush`).
//!
//! "Maybe delivered". A sink may hold an appointment whose delivery was never recorded:
//! the worker died between the calendar write and the completion, the completion failed,
//! or the sink wrote and then reported an error (a lost response). A later deletion of
//! that appointment must still be sent, so such an entry gets a mark in
//! `livesync.delivered` (`sequence = -1`) before anyone can decide it was "never
//! delivered". Whoever learns of the doubt writes it, never the delivery that goes well:
//! - the completion, for every write that failed or was cut off at the lease deadline;
//! - [`release_after_error`], for all the user's queued entries, when a flush failed;
//! - the claim that takes over an expired lease (the previous holder died or lost it),
//!   for all the user's queued entries, in the same statement that takes it over.
//!
//! A sink is called only after the claim committed, and never after the worker's own lease
//! deadline, which lies before the database's expiry: so every entry a dead worker may have
//! handed to a sink is still queued when its lease is taken over. The claim therefore
//! commits synchronously (were it lost in a server crash, nothing would show that the user
//! was being delivered to).
//!
//! Commits that need not survive a crash of the database server: the expansion of the
//! change log and the handling of logins commit with `synchronous_commit = off` (set for
//! their own transaction only, in the statement itself, so it holds exactly when they
//! write): lost in a crash, they are simply done again, since a lost expansion leaves its
//! change-log rows in place. Any later synchronous commit makes them durable as well.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::connections::retry_if_cut;
use crate::flush::{MAYBE_DELIVERED, UID_PREFIX, UID_SUFFIX};

/// A user leased to this worker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claim {
    pub user_id: i64,
    pub username: String,
    pub keep_logfile: bool,
    pub calendar_address: Option<String>,
    pub token: Uuid,
}

/// Users with due work that may be delivered now: sync active, not leased by anyone, and
/// either push mode, or online (latest login matched, not logged out, younger than the
/// session limit), or with a flush request from a matching login not yet served. The
/// least recently synced go first. A user whose lease expired unreleased gets "maybe
/// delivered" marks for every queued entry the calendar has no record of (see above).
const CLAIM: &str = r#"
with cfg as (
  select delivery_mode = 'push' as push,
         live_sync_enabled and cti_sync_licensed as active
  from livesync.settings
),
picked as (
  select st.user_id, st.lease_token is not null as taken_over
  from livesync.user_state st
  join livesync.user_settings us on us.user_id = st.user_id and us.live_sync_enabled
  cross join cfg
  where cfg.active
    and (st.lease_expires_at is null or st.lease_expires_at < now())
    and (cfg.push
         or st.flush_requested_at is not null
         or (st.login_matched and st.logged_out_at is null
             and st.logged_in_at > now() - $2::interval))
    and exists (select 1 from livesync.queue q
                where q.user_id = st.user_id and q.not_before <= now())
  order by st.last_synced_at nulls first, st.user_id
  limit $1
  for update of st skip locked
),
marked as (
  insert into livesync.delivered (user_id, appointment_id, uid, version, sequence)
  select q.user_id, q.appointment_id, $5 || q.appointment_id || $6, 0, $7
    from picked p
    join livesync.queue q on q.user_id = p.user_id
   where p.taken_over
   order by q.user_id, q.appointment_id
  on conflict (user_id, appointment_id) do nothing
)
update livesync.user_state st
   set lease_owner = $3, lease_token = gen_random_uuid(),
       lease_expires_at = now() + $4::interval
  from picked
 where st.user_id = picked.user_id
returning st.user_id,
          coalesce((select u.username from xpert.users u where u.id = st.user_id),
                   'user-' || st.user_id) as username,
          coalesce((select us.keep_logfile from livesync.user_settings us
                    where us.user_id = st.user_id), false) as keep_logfile,
          (select us.calendar_address from livesync.user_settings us
            where us.user_id = st.user_id) as calendar_address,
          st.lease_token as token
"#;

pub fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// Lease up to `limit` users with deliverable work.
pub async fn claim_users(
    conn: &mut PgConnection,
    limit: usize,
    worker_id: Uuid,
    session_limit: Duration,
    lease: Duration,
) -> Result<Vec<Claim>, sqlx::Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    sqlx::query_as(CLAIM)
        .bind(limit as i64)
        .bind(interval(session_limit))
        .bind(worker_id.to_string())
        .bind(interval(lease))
        .bind(UID_PREFIX)
        .bind(UID_SUFFIX)
        .bind(MAYBE_DELIVERED)
        .fetch_all(conn)
        .await
}

/// Give a user back after a flush that ended well (every batch handed to the sink was
/// completed). A served flush request is cleared once nothing is left in the queue
/// (entries still backing off keep it, so they are retried even after a logout).
pub async fn release(pool: &PgPool, claim: &Claim) -> Result<(), sqlx::Error> {
    // Twice is harmless: the second finds the token gone.
    retry_if_cut(pool, || {
        sqlx::query(RELEASE)
            .bind(claim.user_id)
            .bind(claim.token)
            .execute(pool)
    })
    .await?;
    Ok(())
}

/// Give a user back after a flush that failed, as [`release`] does; a batch may have
/// reached the calendar without its completion, so every queued entry the calendar has no
/// record of is marked "maybe delivered" in the same statement.
pub async fn release_after_error(pool: &PgPool, claim: &Claim) -> Result<(), sqlx::Error> {
    // Twice is harmless: the second finds the token gone (and the marks are there).
    retry_if_cut(pool, || {
        sqlx::query(RELEASE_AFTER_ERROR)
            .bind(claim.user_id)
            .bind(claim.token)
            .bind(UID_PREFIX)
            .bind(UID_SUFFIX)
            .bind(MAYBE_DELIVERED)
            .execute(pool)
    })
    .await?;
    Ok(())
}

const RELEASE: &str = "
update livesync.user_state s
   set lease_owner = null, lease_token = null, lease_expires_at = null,
       flush_requested_at = case
         when exists (select 1 from livesync.queue q where q.user_id = s.user_id)
         then s.flush_requested_at end
 where s.user_id = $1 and s.lease_token = $2";

const RELEASE_AFTER_ERROR: &str = "
with released as (
  update livesync.user_state s
     set lease_owner = null, lease_token = null, lease_expires_at = null,
         flush_requested_at = case
           when exists (select 1 from livesync.queue q where q.user_id = s.user_id)
           then s.flush_requested_at end
   where s.user_id = $1 and s.lease_token = $2
  returning s.user_id
)
insert into livesync.delivered (user_id, appointment_id, uid, version, sequence)
select q.user_id, q.appointment_id, $3 || q.appointment_id || $4, 0, $5
  from released r
  join livesync.queue q on q.user_id = r.user_id
 order by q.user_id, q.appointment_id
on conflict (user_id, appointment_id) do nothing";

/// What one look at the database found before claiming.
#[derive(Debug, Clone, Copy, Default)]
pub struct Intake {
    /// Change-log rows moved into the queue.
    pub taken: i32,
    /// Whether logins wait to be handled.
    pub logins_pending: bool,
}

/// Move Xpert's change log into the per-user queue (`livesync.expand_changes`: up to
/// `limit` rows, one caller at a time) and see whether logins wait, in one round trip.
/// An empty log is seen without calling the function (a look at an empty table costs a
/// tenth of the call, and the loop looks often).
/// Xpert's triggers only append to the log; the fan-out to users happens here, outside
/// Xpert's transactions.
pub async fn intake(conn: &mut PgConnection, limit: i32) -> Result<Intake, sqlx::Error> {
    let (taken, logins_pending, _): (i32, bool, String) = sqlx::query_as(
        "select coalesce((select e.taken from livesync.expand_changes($1) e
                           where exists (select 1 from livesync.changes)), 0),
                exists (select 1 from livesync.login_events where processed_at is null),
                pg_catalog.set_config('synchronous_commit', 'off', true)",
    )
    .bind(limit)
    .fetch_one(conn)
    .await?;
    Ok(Intake {
        taken,
        logins_pending,
    })
}

/// Logins not yet handled, oldest first: run the first-login migration for each whose
/// user still waits for that decision, then turn the matching ones into flush requests and
/// mark all as handled in one statement. Safe to run in several workers at once (rows are
/// taken with SKIP LOCKED; every step is idempotent, so the commit need not be durable).
/// Returns how many were handled.
pub async fn process_logins(pool: &PgPool, limit: i64) -> Result<usize, LoginError> {
    let mut tx = pool.begin().await?;
    let events: Vec<(i64, i64, bool, bool, String)> = sqlx::query_as(
        "select e.login_id, e.user_id, e.matched,
                exists (select 1 from livesync.first_login f
                         where f.user_id = e.user_id and f.state = 'pending'),
                pg_catalog.set_config('synchronous_commit', 'off', true)
           from livesync.login_events e
          where e.processed_at is null
          order by e.login_id
          limit $1
          for update of e skip locked",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let mut login_ids = Vec::with_capacity(events.len());
    let mut matched_users = Vec::new();
    for (login_id, user_id, matched, first_login_pending, _) in &events {
        if *first_login_pending {
            let decision = livesync_tools::first_login::apply_for_login(pool, *login_id)
                .await
                .map_err(LoginError::FirstLogin)?;
            tracing::info!(login_id, user_id, matched, ?decision, "login");
        } else {
            tracing::info!(login_id, user_id, matched, "login");
        }
        login_ids.push(*login_id);
        if *matched {
            matched_users.push(*user_id);
        }
    }
    sqlx::query(
        "with requested as (
           insert into livesync.user_state (user_id, flush_requested_at)
           select distinct u, now() from unnest($2::bigint[]) as u
           on conflict (user_id) do update
             set flush_requested_at = coalesce(livesync.user_state.flush_requested_at, now())
         )
         update livesync.login_events set processed_at = now() where login_id = any($1)",
    )
    .bind(&login_ids)
    .bind(&matched_users)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(events.len())
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("reading login events: {0}")]
    Database(#[from] sqlx::Error),
    #[error("first-login migration: {0}")]
    FirstLogin(#[source] sqlx::Error),
}
