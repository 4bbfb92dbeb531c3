//! `livesync-admin queue`: depth and oldest entry per user.

use std::io::Write;

use livesync_core::queue::expand_pending;
use serde::Serialize;

use super::output::{Table, age, json, short};
use super::{CliError, Ctx, Exit};

#[derive(Debug, Serialize, sqlx::FromRow)]
struct QueueRow {
    user_id: i64,
    username: Option<String>,
    queued: i64,
    upserts: i64,
    deletes: i64,
    oldest_queued_seconds: Option<i64>,
    /// Entries that failed at least once and wait for their next attempt.
    retrying: i64,
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct QueueView {
    total: i64,
    users: Vec<QueueRow>,
}

pub(crate) async fn run(ctx: &Ctx, out: &mut dyn Write) -> Result<Exit, CliError> {
    let pool = ctx.pool().await?;
    expand_pending(&pool).await?;
    let users: Vec<QueueRow> = sqlx::query_as(
        "select q.user_id, u.username, count(*) as queued, \
                count(*) filter (where q.op = 'upsert') as upserts, \
                count(*) filter (where q.op = 'delete') as deletes, \
                extract(epoch from now() - min(q.queued_at))::bigint as oldest_queued_seconds, \
                count(*) filter (where q.attempts > 0) as retrying, \
                (array_agg(q.last_error order by q.changed_at desc) \
                   filter (where q.last_error is not null))[1] as last_error \
         from livesync.queue q left join xpert.users u on u.id = q.user_id \
         group by q.user_id, u.username \
         order by min(q.queued_at), q.user_id",
    )
    .fetch_all(&pool)
    .await?;
    let view = QueueView {
        total: users.iter().map(|u| u.queued).sum(),
        users,
    };
    if ctx.json {
        json(out, &view)?;
        return Ok(Exit::Ok);
    }
    if view.users.is_empty() {
        writeln!(out, "the queue is empty")?;
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "user",
        "queued",
        "upserts",
        "deletes",
        "oldest",
        "retrying",
        "last error",
    ]);
    for r in &view.users {
        table.row(vec![
            r.username
                .clone()
                .unwrap_or_else(|| format!("(deleted user {})", r.user_id)),
            r.queued.to_string(),
            r.upserts.to_string(),
            r.deletes.to_string(),
            age(r.oldest_queued_seconds),
            r.retrying.to_string(),
            r.last_error
                .as_deref()
                .map(|e| short(e, 60))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table.write(out)?;
    writeln!(out, "{} entries queued in total", view.total)?;
    Ok(Exit::Ok)
}
