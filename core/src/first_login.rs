//! The post-update first-login migration.
//!
//! The users that exist when livesync is installed ("existing users", one row each in
//! `livesync.first_login`, filled by V1) are decided once, at their first login after the
//! update:
//!
//! ```text
//!             names match ──▶ enabled       (user switched on + one-time notice)
//!  pending ─┤ names differ ─▶ names_differ  (nothing switched on, no notice, no warning)
//!             admin acts ───▶ admin         (`livesync-admin user enable|disable`, V6)
//! ```
//!
//! Design note: the transition is one guarded `UPDATE … WHERE state = 'pending'` in the same
//! transaction as the switch and the notice. A concurrent second caller blocks on the row
//! lock, re-checks the guard after the first commits and finds nothing to do, so two workers,
//! concurrent logins, a crash in the middle (the transaction rolls back) or a re-run can
//! neither enable nor notify twice. Once decided, the state never returns to `pending`, so a
//! later login never undoes an admin switching the user off. Users created after the update
//! have no row and are never switched on automatically.
//!
//! The first login *after the update* decides: when the user has recorded login events
//! (`livesync.login_events`, written by the login trigger since the install) earlier than the
//! login passed in, the earliest of them is the one applied, whatever order callers use.

use serde::Serialize;
use sqlx::PgPool;

/// `livesync.notices.kind` of the one-time message.
pub const NOTICE_KIND: &str = "live_sync_enabled";
/// The one-time message Xpert shows at the next start (German, shown once).
pub const NOTICE_TEXT: &str = "Die Outlook Live-Synchronisation wurde für Sie aktiviert.";

/// What applying the rule for one login did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// Names matched: the user was switched on and notified (this call decided).
    Enabled,
    /// Names differ: nothing was switched on (this call decided).
    NamesDiffer,
    /// The user had been decided before (by a login or an admin): nothing changed.
    AlreadyDecided,
    /// The user did not exist at the update: never switched on automatically.
    NotExistingUser,
}

/// The state of one user in `livesync.first_login`, as the report shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum State {
    Pending,
    Enabled,
    NamesDiffer,
    /// An admin enabled or disabled the user before their first login.
    Admin,
    /// Created after the update (no `first_login` row).
    NotExistingUser,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Enabled => "enabled",
            State::NamesDiffer => "names differ",
            State::Admin => "decided by admin",
            State::NotExistingUser => "not an existing user",
        }
    }
}

/// Apply the first-login rule for the login `login_id` (a row of `xpert.logins` /
/// `livesync.login_events`).
///
/// Idempotent and safe under concurrency (two workers, concurrent logins, crash + re-run):
/// at most one decision per user, ever; the notice is created at most once. An unknown
/// `login_id` is `sqlx::Error::RowNotFound`.
pub async fn apply_for_login(pool: &PgPool, login_id: i64) -> Result<Decision, sqlx::Error> {
    let mut tx = pool.begin().await?;

    // The login as Xpert has it; the login event when Xpert's row is gone.
    let (user_id,): (i64,) = sqlx::query_as(
        "select user_id from xpert.logins where id = $1 \
         union all \
         select user_id from livesync.login_events where login_id = $1 \
         limit 1",
    )
    .bind(login_id)
    .fetch_one(&mut *tx)
    .await?;

    // The deciding login: the user's earliest login event after the update, if it is
    // earlier than this one; otherwise this login.
    let (deciding_login, matched): (i64, bool) = sqlx::query_as(
        "with candidate as ( \
           select coalesce( \
             (select min(e.login_id) from livesync.login_events e \
               where e.user_id = $2 and e.login_id < $1), $1) as login_id) \
         select c.login_id, coalesce(livesync.names_match( \
             coalesce(l.windows_username, e.windows_username), u.username), false) \
         from candidate c \
         left join xpert.logins l on l.id = c.login_id \
         left join livesync.login_events e on e.login_id = c.login_id \
         left join xpert.users u on u.id = $2",
    )
    .bind(login_id)
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;

    let new_state = if matched { "enabled" } else { "names_differ" };
    let decided = sqlx::query(
        "update livesync.first_login \
            set state = $2, login_id = $3, decided_at = now() \
          where user_id = $1 and state = 'pending'",
    )
    .bind(user_id)
    .bind(new_state)
    .bind(deciding_login)
    .execute(&mut *tx)
    .await?
    .rows_affected();

    if decided == 0 {
        let existing: Option<(String,)> =
            sqlx::query_as("select state from livesync.first_login where user_id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.rollback().await?;
        return Ok(match existing {
            Some(_) => Decision::AlreadyDecided,
            None => Decision::NotExistingUser,
        });
    }

    if !matched {
        tx.commit().await?;
        return Ok(Decision::NamesDiffer);
    }

    // Switching the user on queues their calendar from today (trigger on user_settings).
    // keep_logfile keeps what an admin set; a new row starts without a log file.
    sqlx::query(
        "insert into livesync.user_settings as us (user_id, live_sync_enabled) \
         values ($1, true) \
         on conflict (user_id) do update set live_sync_enabled = true \
         where not us.live_sync_enabled",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into livesync.notices (user_id, kind, message) values ($1, $2, $3) \
         on conflict (user_id, kind) do nothing",
    )
    .bind(user_id)
    .bind(NOTICE_KIND)
    .bind(NOTICE_TEXT)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Decision::Enabled)
}

/// Record that an admin decided for `user_id` before their first login after the update
/// (no-op for a decided or a new user). Runs inside the admin's transaction.
pub async fn record_admin_decision(
    conn: &mut sqlx::PgConnection,
    user_id: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "update livesync.first_login set state = 'admin', decided_at = now() \
         where user_id = $1 and state = 'pending'",
    )
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// One user in the first-login report.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReportRow {
    pub user_id: i64,
    pub username: String,
    pub state: State,
    pub login_id: Option<i64>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The latest login known for the user (any time), and whether its names match.
    pub last_login_id: Option<i64>,
    pub last_login_matched: Option<bool>,
}

/// Every Xpert user with their first-login state, by user name.
pub async fn report(pool: &PgPool) -> Result<Vec<ReportRow>, sqlx::Error> {
    sqlx::query_as(
        "select u.id as user_id, u.username, \
                coalesce(f.state, 'not_existing_user') as state, f.login_id, f.decided_at, \
                l.id as last_login_id, \
                case when l.id is not null \
                     then livesync.names_match(l.windows_username, u.username) end \
                  as last_login_matched \
         from xpert.users u \
         left join livesync.first_login f on f.user_id = u.id \
         left join lateral (select id, windows_username from xpert.logins \
                             where user_id = u.id order by id desc limit 1) l on true \
         order by u.username",
    )
    .fetch_all(pool)
    .await
}

/// What `run_pending` did for one user.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub user_id: i64,
    pub username: String,
    /// The login applied; `None` when no login of the user is known (still pending).
    pub login_id: Option<i64>,
    pub decision: Option<Decision>,
}

/// Apply the rule now for every pending user whose most recent login is known
/// (`livesync-admin first-login run`). Pending users without any login stay pending.
pub async fn run_pending(pool: &PgPool) -> Result<Vec<RunRow>, sqlx::Error> {
    let pending: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
        "select u.id, u.username, \
                (select max(l.id) from xpert.logins l where l.user_id = u.id) \
         from livesync.first_login f join xpert.users u on u.id = f.user_id \
         where f.state = 'pending' order by u.id",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(pending.len());
    for (user_id, username, login_id) in pending {
        let decision = match login_id {
            Some(id) => Some(apply_for_login(pool, id).await?),
            None => None,
        };
        out.push(RunRow {
            user_id,
            username,
            login_id,
            decision,
        });
    }
    Ok(out)
}
