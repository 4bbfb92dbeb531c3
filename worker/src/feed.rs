//! Calendar feeds: `GET /feeds/<secret>.ics`, one per person, for Outlook ("Add calendar →
//! From Internet"), Apple Calendar, Thunderbird and phones, with no server and no add-in.
//! Served on `LIVESYNC_FEED_ADDR`, or with the console on `LIVESYNC_CONSOLE_ADDR`.
//!
//! **What a feed holds** is what the person's calendar should show now, read from the same
//! truth as the sinks when the request comes: their appointments in Xpert's tables that
//! end today or later (the day in the firm's zone, where an enabled calendar's backlog
//! starts), and older ones their calendar has been given; each rendered by
//! [`crate::ical`] exactly as the sinks write it (same UID, the SEQUENCE the calendar
//! holds, the same repairs), in UID order as the `ics` sink writes its files. A
//! subscription is pulled by the client, so live and push mode make no difference here.
//!
//! **Answers.** 200 with a strong `ETag` (SHA-256 of the body) and `Cache-Control:
//! private, no-cache`; 304 when `If-None-Match` names it. The calendar carries
//! `REFRESH-INTERVAL` and `X-PUBLISHED-TTL` ([`REFRESH`]). An unknown or replaced secret,
//! and a person without active live sync, get the same 404: the secret is looked up by its
//! SHA-256 and then compared in constant time, and no answer says whether a user exists.
//! Neither the secret nor the path is ever logged.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::file_name::sha256_hex;
use crate::ical;
use crate::sink::{Appointment, RenderContext};

/// How often a client should fetch the feed again.
pub const REFRESH: Duration = Duration::from_secs(15 * 60);

/// The feeds' routes.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/feeds/{file}", get(feed))
        .with_state(pool)
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    appointment: Appointment,
    sequence: i32,
}

/// The person's appointments the calendar should show now (see the module doc), with
/// the SEQUENCE it holds for each (0 for what it was never given, or may not have been).
const APPOINTMENTS: &str = "
select a.id, a.subject, a.location, a.notes, a.starts_at, a.ends_at, a.all_day, a.updated_at,
       greatest(coalesce(d.sequence, 0), 0) as sequence
  from xpert.appointment_participants p
  join xpert.appointments a on a.id = p.appointment_id
  left join livesync.delivered d on d.user_id = p.user_id and d.appointment_id = a.id
 where p.user_id = $1
   and (a.ends_at >= livesync.start_of_today() or d.appointment_id is not null)";

/// A person's calendar as the feed serves it: `None` when the secret opens nothing (it is
/// unknown, or its person's live sync is not active).
pub async fn calendar_for_secret(
    pool: &PgPool,
    secret: &str,
) -> Result<Option<String>, sqlx::Error> {
    let digest = livesync_core::feeds::digest(secret);
    let found: Option<(String, i64, bool)> = sqlx::query_as(
        "select f.secret, f.user_id, livesync.sync_active(f.user_id) \
           from livesync.feed_secrets f where f.secret_sha256 = $1",
    )
    .bind(digest.as_slice())
    .fetch_optional(pool)
    .await?;
    let Some((stored, user_id, active)) = found else {
        return Ok(None);
    };
    if !bool::from(stored.as_bytes().ct_eq(secret.as_bytes())) || !active {
        return Ok(None);
    }
    calendar(pool, user_id).await.map(Some)
}

/// What `user_id`'s calendar should show now, as one VCALENDAR.
pub async fn calendar(pool: &PgPool, user_id: i64) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One snapshot for the zone and the appointments.
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let zone: String = sqlx::query_scalar("select time_zone from livesync.settings")
        .fetch_one(&mut *tx)
        .await?;
    let rows: Vec<Row> = sqlx::query_as(APPOINTMENTS)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let ctx = RenderContext {
        time_zone: zone.parse().unwrap_or(chrono_tz::Europe::Vienna),
    };
    // In UID order, as the `ics` sink writes its files.
    let events: BTreeMap<String, String> = rows
        .into_iter()
        .map(
            |Row {
                 appointment,
                 sequence,
             }| {
                let uid = crate::flush::uid_for(appointment.id);
                let event = ical::render_event(&appointment, &uid, sequence, &ctx);
                (uid, event)
            },
        )
        .collect();
    Ok(ical::render_feed(
        events.values().map(String::as_str),
        REFRESH,
    ))
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        "not found\n",
    )
        .into_response()
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags match by their value.
fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

async fn feed(
    State(pool): State<PgPool>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(secret) = file.strip_suffix(".ics") else {
        return not_found();
    };
    let body = match calendar_for_secret(&pool, secret).await {
        Ok(Some(body)) => body,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error.message = %e, "calendar feed: reading the calendar failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "60")],
                "the database did not answer; try again later\n",
            )
                .into_response();
        }
    };
    let etag = format!("\"{}\"", sha256_hex(body.as_bytes()));
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (header::ETAG, etag_value),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        ),
    ];
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| matches(v, &etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        StatusCode::OK,
        common,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/calendar; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("inline; filename=\"notarXpert.ics\""),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let tag = "\"abc\"";
        assert!(matches("\"abc\"", tag));
        assert!(matches("\"x\", \"abc\"", tag));
        assert!(matches("W/\"abc\"", tag));
        assert!(matches("*", tag));
        assert!(!matches("\"abd\"", tag));
        assert!(!matches("abc", tag));
    }
}
