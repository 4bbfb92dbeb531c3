//! Claiming users, releasing them, and turning logins into flush requests.
//!
//! The unit of work is a *user* (one calendar), not a queue entry: a worker leases a user
//! in one statement (`FOR UPDATE SKIP LOCKED` on `livesync.user_state`, then an UPDATE that
//! stamps a fresh lease token), delivers that user's due entries in version order, and
//! completes every batch in a statement that first checks it still holds that token. So
//! per user there is one delivery at a time across any number of workers, and a worker
//! whose lease ran out cannot complete anything (see `flush`).
//!
//! A lease ends when it is released, when it expires, or when its holder is known to be
//! gone: every worker holds a session-level advisory lock, its presence (`listener`), and
//! the lease records its key. A worker killed with SIGKILL loses that lock with its
//! session, so its users are taken over at the next look for work, not a lease later. A
//! worker that loses its presence stops every delivery at once, before anyone can take
//! its users over (it notices the lost connection as the server closes it).
//!
//! "Maybe delivered". A sink may hold an appointment whose delivery was never recorded:
//! the worker died between the calendar write and the completion, the completion failed,
//! or the sink wrote and then reported an error (a lost response). A later deletion of
//! that appointment must still be sent, so such an entry gets a mark in
//! `livesync.delivered` (`sequence = -1`) before anyone can decide it was "never
//! delivered". Whoever learns of the doubt writes it, never the delivery that goes well:
//! - the completion, for every write that failed or was cut off at the lease deadline;
//! - [`release_after_error`], for all the user's queued entries, when a flush failed;
//! - the claim that takes over a lease (expired, or its holder gone), for all the user's
//!   queued entries, in the same statement that takes it over.
//!
//! A sink is called only after the claim committed, never after the worker's own lease
//! deadline, which lies before the database's expiry, and never after its presence was
//! lost: so every entry a dead worker may have handed to a sink is still queued when its
//! lease is taken over. The claim therefore
//! commits synchronously (were it lost in a server crash, nothing would show that the user
//! was being delivered to).
//!
//! Commits that need not survive a crash of the database server: a look that only expanded
//! the change log, and the handling of logins, commit with `synchronous_commit = off` (set
//! for their own transaction only, in the statement itself, so it holds exactly when they
//! write): lost in a crash, they are simply done again, since a lost expansion leaves its
//! change-log rows in place. Any later synchronous commit makes them durable as well.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::connections::retry_if_cut;
use crate::flush::{MAYBE_DELIVERED, UID_PREFIX, UID_SUFFIX};

/// A user leased to this worker.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Claim {
    pub user_id: i64,
    pub username: String,
    pub keep_logfile: bool,
    pub calendar_address: Option<String>,
    pub token: Uuid,
}

/// What the worker says about itself with a look for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Nothing (the last heartbeat is recent).
    None,
    /// A heartbeat.
    Alive,
    /// A heartbeat, and "I watch for work by myself": the triggers stop sending NOTIFY.
    Awake,
}

impl Mark {
    fn as_sql(self) -> Option<&'static str> {
        match self {
            Mark::None => None,
            Mark::Alive => Some("alive"),
            Mark::Awake => Some("awake"),
        }
    }
}

/// Who looks for work, and how much it may take.
#[derive(Debug, Clone, Copy)]
pub struct Looker {
    pub worker_id: Uuid,
    /// The presence lock this worker holds (`None`: poll-only, leases expire only).
    pub lock_key: Option<i32>,
    /// Change-log rows moved into the queue per look.
    pub expand_limit: i32,
    /// A login without logout counts as online this long.
    pub session_limit: Duration,
    pub lease: Duration,
}

/// What one look found.
#[derive(Debug, Clone, Default)]
pub struct Look {
    /// False when the worker's row in `livesync.workers` is gone (it registers again).
    pub registered: bool,
    /// Change-log rows moved into the queue.
    pub taken: i32,
    /// Logins wait to be handled (nothing was claimed: logins come first).
    pub logins_pending: bool,
    /// Users leased to this worker.
    pub claims: Vec<Claim>,
}

/// One look for work in one statement (`livesync.next_work`): the heartbeat or the awake
/// mark, the change log expanded into the queue, whether logins wait, and up to
/// `claim_limit` users with deliverable work leased (sync active; push mode, online, or a
/// flush request from a matching login; entries due; the lease free, expired, or its
/// holder's presence gone). Taking over a lease marks that user's unrecorded entries
/// "maybe delivered" in the same statement (see above). It commits synchronously only
/// when it leased someone.
pub async fn next_work(
    conn: &mut PgConnection,
    looker: &Looker,
    mark: Mark,
    claim_limit: usize,
) -> Result<Look, sqlx::Error> {
    let (registered, taken, logins_pending, claims): (
        bool,
        i32,
        bool,
        sqlx::types::Json<Vec<Claim>>,
    ) = sqlx::query_as(
        "select registered, taken, logins_pending, claims
               from livesync.next_work($1, $2, $3, $4, $5, $6::interval, $7::interval)",
    )
    .bind(looker.worker_id)
    .bind(looker.lock_key)
    .bind(mark.as_sql())
    .bind(looker.expand_limit)
    .bind(claim_limit.min(i32::MAX as usize) as i32)
    .bind(interval(looker.session_limit))
    .bind(interval(looker.lease))
    .fetch_one(conn)
    .await?;
    Ok(Look {
        registered,
        taken,
        logins_pending,
        claims: claims.0,
    })
}

pub fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
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
   set lease_owner = null, lease_key = null, lease_token = null, lease_expires_at = null,
       flush_requested_at = case
         when exists (select 1 from livesync.queue q where q.user_id = s.user_id)
         then s.flush_requested_at end
 where s.user_id = $1 and s.lease_token = $2";

const RELEASE_AFTER_ERROR: &str = "
with released as (
  update livesync.user_state s
     set lease_owner = null, lease_key = null, lease_token = null, lease_expires_at = null,
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
            let decision = livesync_core::first_login::apply_for_login(pool, *login_id)
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
