//! Xpert's users as livesync sees them: one line each (`livesync-admin users`, the
//! console's user list), and switching a user's live sync and log file on or off
//! (`livesync-admin user enable|disable`, the console's buttons).

use serde::Serialize;
use sqlx::PgPool;

use crate::first_login::record_admin_decision;
use crate::queue::expand_pending;

/// An Xpert user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
}

/// One user as `livesync-admin users` and the console's user list show them.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: i64,
    pub username: String,
    pub existing_user: bool,
    /// Did the Windows name of the latest login match? (`None`: never logged in.)
    pub names_match_at_last_login: Option<bool>,
    /// When the latest login was (`None`: never logged in).
    pub last_login_at: Option<chrono::DateTime<chrono::Utc>>,
    pub enabled: bool,
    pub logfile: bool,
    pub queued: i64,
    pub oldest_queued_seconds: Option<i64>,
    pub last_synced_at: Option<chrono::DateTime<chrono::Utc>>,
    pub dead_letters: i64,
    /// When the calendar was last verified against Xpert (`None`: never).
    pub verified_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What that verification found neither ok nor foreign (`None`: never verified).
    pub verification_problems: Option<i64>,
    /// The calendar could not be read at that verification.
    pub verification_unreadable: bool,
}

/// Every Xpert user, by name, after the change log was moved into the queue. The last login
/// is the latest one livesync recorded (`user_state.login_id`, kept by the login trigger):
/// Xpert's `logins` grows for years and has no index on `user_id`, so looking it up there
/// costs a scan of every login for every user.
pub async fn rows(pool: &PgPool) -> Result<Vec<UserRow>, sqlx::Error> {
    expand_pending(pool).await?;
    sqlx::query_as(
        "select u.id as user_id, u.username, f.user_id is not null as existing_user, \
                case when l.logged_in_at is not null \
                     then livesync.names_match(l.windows_username, u.username) end \
                  as names_match_at_last_login, \
                l.logged_in_at as last_login_at, \
                coalesce(us.live_sync_enabled, false) as enabled, \
                coalesce(us.keep_logfile, false) as logfile, \
                coalesce(q.n, 0) as queued, \
                extract(epoch from now() - q.oldest)::bigint as oldest_queued_seconds, \
                st.last_synced_at, \
                coalesce(d.n, 0) as dead_letters, \
                v.verified_at, \
                (v.items_missing + v.items_orphan + v.items_drifted \
                 + v.items_duplicate)::bigint as verification_problems, \
                v.error is not null as verification_unreadable \
         from xpert.users u \
         left join livesync.first_login f on f.user_id = u.id \
         left join livesync.user_settings us on us.user_id = u.id \
         left join livesync.user_state st on st.user_id = u.id \
         left join xpert.logins l on l.id = st.login_id \
         left join livesync.verifications v on v.user_id = u.id \
         left join (select user_id, count(*) as n, min(queued_at) as oldest \
                      from livesync.queue group by user_id) q on q.user_id = u.id \
         left join (select user_id, count(*) as n from livesync.dead_letters \
                     group by user_id) d on d.user_id = u.id \
         order by u.username",
    )
    .fetch_all(pool)
    .await
}

/// What switching a user on or off did.
#[derive(Debug, Serialize)]
pub struct Changed {
    pub user_id: i64,
    pub username: String,
    pub enabled: bool,
    pub logfile: bool,
    /// Entries queued (enable) or dropped from the queue (disable) by this command.
    pub queued: i64,
    pub dropped: i64,
    /// Is live sync switched on and licensed globally? Without it nothing is queued.
    pub sync_switched_on: bool,
}

/// Switch `user`'s live sync on (`enable`) or off, and the log file when `logfile` says
/// so. An admin's decision: it ends the first-login rule for the user.
pub async fn set_enabled(
    pool: &PgPool,
    user: User,
    enable: bool,
    logfile: Option<bool>,
) -> Result<Changed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // An admin's decision ends the first-login rule for a user still pending. Taken first,
    // in the same lock order as `first_login::apply_for_login` (first_login, then
    // user_settings), so a concurrent first login waits instead of deadlocking.
    record_admin_decision(&mut tx, user.id).await?;
    let before: i64 = sqlx::query_scalar("select count(*) from livesync.queue where user_id = $1")
        .bind(user.id)
        .fetch_one(&mut *tx)
        .await?;
    // The trigger on user_settings queues the calendar from today (enable) or drops the
    // user's queue (disable).
    let (enabled, keep_logfile): (bool, bool) = sqlx::query_as(
        "insert into livesync.user_settings as us (user_id, live_sync_enabled, keep_logfile) \
         values ($1, $2, coalesce($3, false)) \
         on conflict (user_id) do update \
            set live_sync_enabled = excluded.live_sync_enabled, \
                keep_logfile = coalesce($3, us.keep_logfile) \
         returning live_sync_enabled, keep_logfile",
    )
    .bind(user.id)
    .bind(enable)
    .bind(logfile)
    .fetch_one(&mut *tx)
    .await?;
    // Entries written by this transaction carry its timestamp.
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from livesync.queue where user_id = $1 and changed_at = now()",
    )
    .bind(user.id)
    .fetch_one(&mut *tx)
    .await?;
    let after: i64 = sqlx::query_scalar("select count(*) from livesync.queue where user_id = $1")
        .bind(user.id)
        .fetch_one(&mut *tx)
        .await?;
    let sync_switched_on: bool =
        sqlx::query_scalar("select live_sync_enabled and cti_sync_licensed from livesync.settings")
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Changed {
        user_id: user.id,
        username: user.username,
        enabled,
        logfile: keep_logfile,
        queued,
        dropped: (before - after).max(0),
        sync_switched_on,
    })
}

/// Keep a log file for the user, or stop keeping one, without touching their live sync.
pub async fn set_logfile(pool: &PgPool, user_id: i64, keep: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into livesync.user_settings as us (user_id, keep_logfile) values ($1, $2) \
         on conflict (user_id) do update set keep_logfile = excluded.keep_logfile",
    )
    .bind(user_id)
    .bind(keep)
    .execute(pool)
    .await?;
    Ok(())
}
