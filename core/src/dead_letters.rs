//! The entries that failed for good (`livesync.dead_letters`): listed, sent again or
//! dropped, by `livesync-admin dead-letters` and by the console.
//!
//! Re-queueing derives the operation from the truth now, not from the dead entry: an
//! upsert while the appointment exists and the user still participates, else a delete. It
//! coalesces with what is already queued exactly like `livesync.enqueue`, and removes the
//! dead letter in the same statement, so an entry is never both dead and queued, nor lost.

use serde::Serialize;
use sqlx::PgPool;

/// One dead letter, with its user's name and its appointment's subject when they exist.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub user_id: i64,
    pub username: Option<String>,
    pub appointment_id: i64,
    pub subject: Option<String>,
    pub op: String,
    pub attempts: i32,
    pub last_error: String,
    pub first_queued_at: chrono::DateTime<chrono::Utc>,
    pub failed_at: chrono::DateTime<chrono::Utc>,
}

/// What a requeue or a drop did.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Dead letters the selection matched.
    pub matched: i64,
    /// Requeued (or dropped).
    pub done: i64,
    /// Left alone: the user's sync is not active, so nothing would be delivered.
    pub skipped: i64,
}

/// Send the selected dead letters again (`id` and `user_id` narrow the selection; both
/// `None`: all). Only entries of users whose sync is active are taken (the others are
/// `skipped`); each is queued with the operation the truth gives now and leaves the dead
/// letters in the same statement.
pub async fn requeue(
    pool: &PgPool,
    id: Option<i64>,
    user_id: Option<i64>,
) -> Result<Outcome, sqlx::Error> {
    let matched = count(pool, id, user_id).await?;
    let (done, users): (i64, Vec<i64>) = sqlx::query_as(
        "with dead as ( \
           delete from livesync.dead_letters d \
            where ($1::bigint is null or d.id = $1) \
              and ($2::bigint is null or d.user_id = $2) \
              and livesync.sync_active(d.user_id) \
           returning d.id, d.user_id, d.appointment_id, d.first_queued_at), \
         latest as ( \
           select distinct on (user_id, appointment_id) user_id, appointment_id, \
                  first_queued_at \
             from dead order by user_id, appointment_id, id desc), \
         requeued as ( \
           insert into livesync.queue as q (user_id, appointment_id, op, queued_at) \
           select l.user_id, l.appointment_id, \
                  case when exists (select 1 from xpert.appointment_participants p \
                                     where p.user_id = l.user_id \
                                       and p.appointment_id = l.appointment_id) \
                       then 'upsert' else 'delete' end, \
                  l.first_queued_at \
             from latest l order by l.user_id, l.appointment_id \
           on conflict (user_id, appointment_id) do update \
             set op = excluded.op, version = excluded.version, changed_at = now(), \
                 attempts = 0, not_before = '-infinity', last_error = null \
           returning q.user_id) \
         select (select count(*) from dead), \
                array(select distinct user_id from requeued order by user_id)",
    )
    .bind(id)
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    // A hint for a sleeping worker; the queue is the truth either way.
    sqlx::query("select livesync.wake(u::text) from unnest($1::bigint[]) as u")
        .bind(&users)
        .execute(pool)
        .await?;
    Ok(Outcome {
        matched,
        done,
        skipped: matched - done,
    })
}

/// Remove the selected dead letters for good; returns how many.
pub async fn drop(
    pool: &PgPool,
    id: Option<i64>,
    user_id: Option<i64>,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(
        "delete from livesync.dead_letters \
          where ($1::bigint is null or id = $1) and ($2::bigint is null or user_id = $2)",
    )
    .bind(id)
    .bind(user_id)
    .execute(pool)
    .await?
    .rows_affected() as i64;
    Ok(done)
}

/// How many dead letters the selection matches (`id` and `user_id` narrow it).
pub async fn count(
    pool: &PgPool,
    id: Option<i64>,
    user_id: Option<i64>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from livesync.dead_letters \
          where ($1::bigint is null or id = $1) and ($2::bigint is null or user_id = $2)",
    )
    .bind(id)
    .bind(user_id)
    .fetch_one(pool)
    .await
}

/// The dead letters, of one user or of all, oldest first.
pub async fn rows(pool: &PgPool, user_id: Option<i64>) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "select d.id, d.user_id, u.username, d.appointment_id, a.subject, d.op, d.attempts, \
                d.last_error, d.first_queued_at, d.failed_at \
         from livesync.dead_letters d \
         left join xpert.users u on u.id = d.user_id \
         left join xpert.appointments a on a.id = d.appointment_id \
         where ($1::bigint is null or d.user_id = $1) \
         order by d.id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}
