//! The console's handlers: the pages, and the actions their forms post (each answered with
//! a redirect back to the page, which says what was done).

use std::net::SocketAddr;

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::SignedCookieJar;
use chrono::{DateTime, Utc};
use livesync_core::{dead_letters, feeds, settings, users};
use serde::Deserialize;
use sqlx::PgPool;

use super::ConsoleState;
use super::auth::{self, Admin, SESSION_COOKIE, SIGN_IN_COOKIE};
use super::i18n::{Lang, Texts};
use super::posted::{Posted, WithToken};
use super::views::*;

fn lang(headers: &HeaderMap) -> Lang {
    Lang::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

fn chrome(headers: &HeaderMap, admin: Option<&Admin>, current: &'static str) -> Chrome {
    Chrome {
        t: lang(headers).texts(),
        admin: admin.map(|a| a.name.clone()),
        csrf: admin.map(|a| a.csrf.clone()).unwrap_or_default(),
        current,
    }
}

/// A rendered page with its status; the language it is in is said in the headers.
fn render(status: StatusCode, t: &'static Texts, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_LANGUAGE, t.lang),
                (header::VARY, "Accept-Language, Cookie"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error.message = %e, "console: a page could not be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// One text of the console, in whichever language a request gets.
type Text = fn(&Texts) -> &'static str;

fn message(
    status: StatusCode,
    headers: &HeaderMap,
    admin: Option<&Admin>,
    title: Text,
    text: Text,
    link: Option<(&'static str, Text)>,
) -> Response {
    let chrome = chrome(headers, admin, "");
    let t = chrome.t;
    let page = MessagePage {
        title: title(t),
        message: text(t),
        link: link.map(|(href, label)| (href, label(t))),
        chrome,
    };
    render(status, t, &page)
}

/// 500 for a statement that failed (logged here, once).
pub(super) fn database_error(e: &dyn std::fmt::Display, headers: &HeaderMap) -> Response {
    tracing::error!(error.message = %e, "console: a database statement failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        headers,
        None,
        |t| t.console,
        |t| t.server_error,
        None,
    )
}

/// 403 for a form without its token (or with another session's).
fn form_expired(headers: &HeaderMap, admin: Option<&Admin>, back: &'static str) -> Response {
    message(
        StatusCode::FORBIDDEN,
        headers,
        admin,
        |t| t.console,
        |t| t.form_expired,
        Some((back, |t| t.reload)),
    )
}

pub(super) async fn not_found(headers: HeaderMap) -> Response {
    message(
        StatusCode::NOT_FOUND,
        &headers,
        None,
        |t| t.console,
        |t| t.not_found,
        Some(("/", |t| t.nav_overview)),
    )
}

pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/console/console.css"),
    )
        .into_response()
}

/// The firm's time zone (times on the pages are shown in it).
async fn zone(pool: &PgPool) -> Result<chrono_tz::Tz, sqlx::Error> {
    let zone: String = sqlx::query_scalar("select time_zone from livesync.settings")
        .fetch_one(pool)
        .await?;
    Ok(firm_zone(&zone))
}

/// The zone the settings name (Vienna when they name none that is known).
fn firm_zone(name: &str) -> chrono_tz::Tz {
    name.parse().unwrap_or(chrono_tz::Europe::Vienna)
}

// ── Signing in and out ──────────────────────────────────────────────────────────────────

pub(super) async fn sign_in_form(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
    headers: HeaderMap,
) -> Response {
    let token = auth::random_token();
    let chrome = chrome(&headers, None, "");
    let t = chrome.t;
    let page = SignInPage {
        chrome,
        csrf: token.clone(),
        error: None,
    };
    let jar = jar.add(auth::cookie(&state, SIGN_IN_COOKIE, token));
    (jar, render(StatusCode::OK, t, &page)).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    csrf: Option<String>,
    name: Option<String>,
    password: Option<String>,
}

/// A sign-in: the limit first, then the form's token, then the password. A wrong password
/// and an unknown name get the same page.
pub(super) async fn sign_in(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: SignedCookieJar,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let pool = &state.pool;
    let address = auth::client_ip(peer, &headers, &state.settings.trusted_proxies);
    match auth::retry_after(pool, address).await {
        Ok(None) => {}
        Ok(Some(seconds)) => {
            let mut response = message(
                StatusCode::TOO_MANY_REQUESTS,
                &headers,
                None,
                |t| t.sign_in_title,
                |t| t.too_many_attempts,
                None,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return response;
        }
        Err(e) => return database_error(&e, &headers),
    }
    let expected = jar.get(SIGN_IN_COOKIE).map(|c| c.value().to_string());
    let token_ok = match (&form.csrf, &expected) {
        (Some(given), Some(expected)) => auth::same_secret(given, expected),
        _ => false,
    };
    if !token_ok {
        return form_expired(&headers, None, "/sign-in");
    }
    let name = form.name.unwrap_or_default();
    let password = form.password.unwrap_or_default();
    let account = match auth::check_password(pool, &name, &password).await {
        Ok(account) => account,
        Err(e) => return database_error(&e, &headers),
    };
    let Some(id) = account else {
        if let Err(e) = auth::record_failure(pool, address).await {
            return database_error(&e, &headers);
        }
        tracing::info!(client = %address, "console sign-in failed");
        let chrome = chrome(&headers, None, "");
        let t = chrome.t;
        let page = SignInPage {
            chrome,
            csrf: expected.unwrap_or_default(),
            error: Some(t.wrong_credentials),
        };
        return render(StatusCode::FORBIDDEN, t, &page);
    };
    match auth::start_session(pool, Some(id), &name, state.settings.session_idle, address).await {
        Ok((token, _)) => {
            tracing::info!(admin = %name, client = %address, "console sign-in");
            let jar = jar.remove(auth::removal(SIGN_IN_COOKIE)).add(auth::cookie(
                &state,
                SESSION_COOKIE,
                token,
            ));
            (jar, Redirect::to("/")).into_response()
        }
        Err(e) => database_error(&e, &headers),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    csrf: Option<String>,
}

/// `None` when the form carries this session's token, else the 403 to answer.
pub(super) fn refuse_without_token(
    admin: &Admin,
    token: Option<&str>,
    headers: &HeaderMap,
    back: &'static str,
) -> Option<Response> {
    match token {
        Some(token) if auth::same_secret(token, &admin.csrf) => None,
        _ => Some(form_expired(headers, Some(admin), back)),
    }
}

pub(super) async fn sign_out(
    State(state): State<ConsoleState>,
    Extension(admin): Extension<Admin>,
    jar: SignedCookieJar,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = refuse_without_token(&admin, form.csrf.as_deref(), &headers, "/") {
        return refused;
    }
    if let Some(token) = jar.get(SESSION_COOKIE)
        && let Err(e) = auth::end_session(&state.pool, token.value()).await
    {
        return database_error(&e, &headers);
    }
    (
        jar.remove(auth::removal(SESSION_COOKIE)),
        Redirect::to("/sign-in"),
    )
        .into_response()
}

// ── Pages ───────────────────────────────────────────────────────────────────────────────

#[derive(sqlx::FromRow)]
struct WorkerRow {
    host: String,
    pid: i32,
    started_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    awake: bool,
    silent_seconds: i64,
}

/// A worker is taken as gone 30 s after its last heartbeat (see `registry`).
const SILENT_AFTER_SECONDS: i64 = 30;

pub(super) async fn overview(
    State(state): State<ConsoleState>,
    Extension(admin): Extension<Admin>,
    headers: HeaderMap,
) -> Response {
    let pool = &state.pool;
    let result = async {
        let settings = settings::load(pool).await?;
        let workers: Vec<WorkerRow> = sqlx::query_as(
            "select host, pid, started_at, heartbeat_at, awake, \
                    extract(epoch from now() - heartbeat_at)::bigint as silent_seconds \
               from livesync.workers order by host, pid",
        )
        .fetch_all(pool)
        .await?;
        // As /metrics counts it: queued entries and change-log rows not yet expanded.
        let (queue_depth, dead): (i64, i64) = sqlx::query_as(
            "select (select count(*) from livesync.queue) \
                    + (select count(*) from livesync.changes), \
                    (select count(*) from livesync.dead_letters)",
        )
        .fetch_one(pool)
        .await?;
        let dead_users: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
            "select d.user_id, u.username, count(*) from livesync.dead_letters d \
               left join xpert.users u on u.id = d.user_id \
              group by d.user_id, u.username order by count(*) desc, d.user_id limit 20",
        )
        .fetch_all(pool)
        .await?;
        let verified = crate::verify::record::summary(pool).await?;
        Ok::<_, sqlx::Error>((settings, workers, queue_depth, dead, dead_users, verified))
    }
    .await;
    let (settings, workers, queue_depth, dead, dead_users, verified) = match result {
        Ok(r) => r,
        Err(e) => return database_error(&e, &headers),
    };
    let chrome = chrome(&headers, Some(&admin), "overview");
    let t = chrome.t;
    let tz = firm_zone(&settings.time_zone);
    let this_worker = state.health.as_ref().map(|h| {
        if h.poll_only {
            t.poll_only
        } else if h.listener_healthy() {
            t.listener_ok
        } else {
            t.listener_down
        }
    });
    let page = OverviewPage {
        switch_on: settings.live_sync_enabled,
        licensed: settings.cti_sync_licensed,
        push: settings.delivery_mode == "push",
        exchange: settings.exchange_server,
        push_recommended: settings.push_recommended(),
        time_zone: settings.time_zone.clone(),
        installed_at: t.time(Some(settings.installed_at), tz),
        workers: workers
            .into_iter()
            .map(|w| WorkerView {
                host: w.host,
                pid: w.pid,
                started: t.time(Some(w.started_at), tz),
                heartbeat: format!(
                    "{} ({})",
                    t.time(Some(w.heartbeat_at), tz),
                    t.ago(w.silent_seconds)
                ),
                awake: w.awake,
                healthy: w.silent_seconds < SILENT_AFTER_SECONDS,
            })
            .collect(),
        this_worker,
        queue_depth,
        dead_letters: dead,
        verification: verified.last.map(|last| VerificationView {
            text: t.verified_calendars(
                t.time(Some(last), tz),
                verified.problems,
                verified.calendars,
                verified.unreadable,
            ),
            problems: verified.problems > 0 || verified.unreadable > 0,
        }),
        dead_letter_users: dead_users
            .into_iter()
            .map(|(id, name, count)| DeadLetterUser {
                id,
                name: name.unwrap_or_else(|| format!("#{id}")),
                count,
            })
            .collect(),
        chrome,
    };
    render(StatusCode::OK, t, &page)
}

pub(super) async fn users(
    State(state): State<ConsoleState>,
    Extension(admin): Extension<Admin>,
    headers: HeaderMap,
) -> Response {
    let pool = &state.pool;
    let (rows, settings) = match tokio::try_join!(users::rows(pool), settings::load(pool)) {
        Ok(r) => r,
        Err(e) => return database_error(&e, &headers),
    };
    let chrome = chrome(&headers, Some(&admin), "users");
    let t = chrome.t;
    let tz = firm_zone(&settings.time_zone);
    let globally_active = settings.live_sync_enabled && settings.cti_sync_licensed;
    let page = UsersPage {
        globally_active,
        users: rows
            .into_iter()
            .map(|r| UserView {
                id: r.user_id,
                name: r.username,
                sync_active: globally_active && r.enabled,
                names_match: t.opt_yes_no(r.names_match_at_last_login),
                last_login: t.time(r.last_login_at, tz),
                last_sync: t.time(r.last_synced_at, tz),
                queued: r.queued,
                dead_letters: r.dead_letters,
                logfile: r.logfile,
            })
            .collect(),
        chrome,
    };
    render(StatusCode::OK, t, &page)
}

#[derive(Debug, Deserialize)]
pub(super) struct Done {
    done: Option<String>,
}

fn done_message(t: &'static Texts, done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "requeued" => t.done_requeued,
        "requeue-skipped" => t.done_requeue_skipped,
        "dropped" => t.done_dropped,
        "enabled" => t.done_enabled,
        "enabled-not-active" => t.done_enabled_not_active,
        "disabled" => t.done_disabled,
        "logfile-on" => t.done_logfile_on,
        "logfile-off" => t.done_logfile_off,
        "feed" => t.done_feed,
        _ => return None,
    })
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    appointment_id: i64,
    subject: Option<String>,
    starts_at: Option<DateTime<Utc>>,
    delivered_at: DateTime<Utc>,
    sequence: i32,
}

#[derive(sqlx::FromRow)]
struct ErrorRow {
    appointment_id: i64,
    subject: Option<String>,
    op: String,
    attempts: i32,
    last_error: Option<String>,
    not_before: Option<DateTime<Utc>>,
}

/// How many recent deliveries and errors a person's page lists.
const RECENT: i64 = 20;

pub(super) async fn person(
    State(state): State<ConsoleState>,
    Extension(admin): Extension<Admin>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> Response {
    let pool = &state.pool;
    let result = async {
        let (rows, settings) = tokio::try_join!(users::rows(pool), settings::load(pool))?;
        let Some(row) = rows.into_iter().find(|r| r.user_id == id) else {
            return Ok(None);
        };
        let state_row: Option<(Option<String>, bool)> = sqlx::query_as(
            "select last_error, lease_token is not null and lease_expires_at > now() \
               from livesync.user_state where user_id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        let deliveries: Vec<DeliveryRow> = sqlx::query_as(
            "select d.appointment_id, a.subject, a.starts_at, d.delivered_at, d.sequence \
               from livesync.delivered d \
               left join xpert.appointments a on a.id = d.appointment_id \
              where d.user_id = $1 order by d.delivered_at desc, d.appointment_id desc \
              limit $2",
        )
        .bind(id)
        .bind(RECENT)
        .fetch_all(pool)
        .await?;
        let errors: Vec<ErrorRow> = sqlx::query_as(
            "select q.appointment_id, a.subject, q.op, q.attempts, q.last_error, \
                    nullif(q.not_before, '-infinity') as not_before \
               from livesync.queue q \
               left join xpert.appointments a on a.id = q.appointment_id \
              where q.user_id = $1 and q.attempts > 0 \
              order by q.changed_at desc limit $2",
        )
        .bind(id)
        .bind(RECENT)
        .fetch_all(pool)
        .await?;
        let dead = dead_letters::rows(pool, Some(id)).await?;
        let secret = feeds::existing_secret(pool, id).await?;
        let verified = crate::verify::record::of_person(pool, id).await?;
        Ok::<_, sqlx::Error>(Some((
            row, settings, state_row, deliveries, errors, dead, secret, verified,
        )))
    }
    .await;
    let (row, settings, state_row, deliveries, errors, dead, secret, verified) = match result {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(headers).await,
        Err(e) => return database_error(&e, &headers),
    };
    let chrome = chrome(&headers, Some(&admin), "users");
    let t = chrome.t;
    let tz = firm_zone(&settings.time_zone);
    let globally_active = settings.live_sync_enabled && settings.cti_sync_licensed;
    let (last_error, being_delivered) = state_row.unwrap_or((None, false));
    let subject = |s: Option<String>| s.unwrap_or_else(|| t.appointment_gone.to_string());
    let feed_view = match (secret, &state.feed_base) {
        (Some(secret), Some(base)) => FeedView {
            url: Some(feeds::feed_url(base, &secret)),
            path_only: false,
        },
        (Some(secret), None) => FeedView {
            url: Some(feeds::feed_url("", &secret)),
            path_only: true,
        },
        (None, _) => FeedView {
            url: None,
            path_only: false,
        },
    };
    let page = PersonPage {
        id,
        name: row.username,
        message: done_message(t, done.done.as_deref()),
        sync_active: globally_active && row.enabled,
        enabled: row.enabled,
        globally_active,
        logfile: row.logfile,
        existing_user: row.existing_user,
        names_match: t.opt_yes_no(row.names_match_at_last_login),
        last_login: t.time(row.last_login_at, tz),
        last_sync: t.time(row.last_synced_at, tz),
        last_error,
        being_delivered,
        queued: row.queued,
        verification: verified.map(|v| VerificationView {
            text: t.verified_calendar(
                t.time(Some(v.verified_at), tz),
                v.verified_by == "schedule",
                v.problems,
                v.error.as_deref(),
            ),
            problems: v.problems > 0 || v.error.is_some(),
        }),
        feed: feed_view,
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryView {
                appointment_id: d.appointment_id,
                starts: d.starts_at.map(|s| t.time(Some(s), tz)).unwrap_or_default(),
                subject: subject(d.subject),
                delivered_at: t.time(Some(d.delivered_at), tz),
                sequence: (d.sequence >= 0).then_some(d.sequence),
            })
            .collect(),
        errors: errors
            .into_iter()
            .map(|e| ErrorView {
                appointment_id: e.appointment_id,
                subject: subject(e.subject),
                operation: e.op,
                attempts: e.attempts,
                error: e.last_error.unwrap_or_default(),
                next_attempt: e
                    .not_before
                    .map(|n| t.time(Some(n), tz))
                    .unwrap_or_default(),
            })
            .collect(),
        dead_letters: dead
            .into_iter()
            .map(|d| DeadLetterView {
                id: d.id,
                appointment_id: d.appointment_id,
                subject: subject(d.subject),
                operation: d.op,
                attempts: d.attempts,
                error: d.last_error,
                failed_at: t.time(Some(d.failed_at), tz),
            })
            .collect(),
        chrome,
    };
    render(StatusCode::OK, t, &page)
}

pub(super) async fn first_login(
    State(state): State<ConsoleState>,
    Extension(admin): Extension<Admin>,
    headers: HeaderMap,
) -> Response {
    use livesync_core::first_login::State as S;
    let (report, tz) = match tokio::try_join!(
        livesync_core::first_login::report(&state.pool),
        zone(&state.pool)
    ) {
        Ok(r) => r,
        Err(e) => return database_error(&e, &headers),
    };
    let chrome = chrome(&headers, Some(&admin), "first-login");
    let t = chrome.t;
    let label = |s: S| match s {
        S::Pending => t.state_pending,
        S::Enabled => t.state_enabled,
        S::NamesDiffer => t.state_names_differ,
        S::Admin => t.state_admin,
        S::NotExistingUser => t.state_not_existing,
    };
    let states = [
        S::Pending,
        S::Enabled,
        S::NamesDiffer,
        S::Admin,
        S::NotExistingUser,
    ];
    let page = FirstLoginPage {
        counts: states
            .iter()
            .map(|s| (label(*s), report.iter().filter(|r| r.state == *s).count()))
            .filter(|(_, n)| *n > 0)
            .collect(),
        rows: report
            .into_iter()
            .map(|r| FirstLoginView {
                id: r.user_id,
                name: r.username,
                state: label(r.state),
                decided_at: r
                    .decided_at
                    .map(|d| t.time(Some(d), tz))
                    .unwrap_or_default(),
                last_login_matched: t.opt_yes_no(r.last_login_matched),
            })
            .collect(),
        chrome,
    };
    render(StatusCode::OK, t, &page)
}

// ── Actions ─────────────────────────────────────────────────────────────────────────────

impl WithToken for CsrfForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

fn back_to(id: i64, done: &str) -> Response {
    Redirect::to(&format!("/users/{id}?done={done}")).into_response()
}

async fn switch(posted: Posted<CsrfForm>, id: i64, on: bool) -> Result<Response, Response> {
    let user = posted.user(id).await?;
    let username = user.username.clone();
    let changed = posted
        .checked(users::set_enabled(&posted.state.pool, user, on, None))
        .await?;
    tracing::info!(admin = %posted.admin.name, user = %username, enabled = on, "console: live sync switched");
    Ok(back_to(
        id,
        match (on, changed.sync_switched_on) {
            (true, true) => "enabled",
            (true, false) => "enabled-not-active",
            (false, _) => "disabled",
        },
    ))
}

pub(super) async fn enable(
    Path(id): Path<i64>,
    posted: Posted<CsrfForm>,
) -> Result<Response, Response> {
    switch(posted, id, true).await
}

pub(super) async fn disable(
    Path(id): Path<i64>,
    posted: Posted<CsrfForm>,
) -> Result<Response, Response> {
    switch(posted, id, false).await
}

#[derive(Debug, Deserialize)]
pub(super) struct LogfileForm {
    csrf: Option<String>,
    keep: Option<String>,
}

impl WithToken for LogfileForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

pub(super) async fn logfile(
    Path(id): Path<i64>,
    posted: Posted<LogfileForm>,
) -> Result<Response, Response> {
    let keep = posted.form.keep.as_deref() == Some("true");
    posted.user(id).await?;
    posted
        .checked(users::set_logfile(&posted.state.pool, id, keep))
        .await?;
    Ok(back_to(id, if keep { "logfile-on" } else { "logfile-off" }))
}

pub(super) async fn rotate_feed(
    Path(id): Path<i64>,
    posted: Posted<CsrfForm>,
) -> Result<Response, Response> {
    posted.user(id).await?;
    posted
        .checked(feeds::rotate(&posted.state.pool, id))
        .await?;
    tracing::info!(admin = %posted.admin.name, user_id = id, "console: feed secret replaced");
    Ok(back_to(id, "feed"))
}

pub(super) async fn requeue(
    Path((id, dead_letter)): Path<(i64, i64)>,
    posted: Posted<CsrfForm>,
) -> Result<Response, Response> {
    let requeue = dead_letters::requeue(&posted.state.pool, Some(dead_letter), Some(id));
    let outcome = posted.checked(requeue).await?;
    if outcome.matched == 0 {
        return Err(posted.not_found().await);
    }
    Ok(back_to(
        id,
        if outcome.skipped > 0 {
            "requeue-skipped"
        } else {
            "requeued"
        },
    ))
}

pub(super) async fn drop_dead_letter(
    Path((id, dead_letter)): Path<(i64, i64)>,
    posted: Posted<CsrfForm>,
) -> Result<Response, Response> {
    let dropped = dead_letters::drop(&posted.state.pool, Some(dead_letter), Some(id));
    if posted.checked(dropped).await? == 0 {
        return Err(posted.not_found().await);
    }
    Ok(back_to(id, "dropped"))
}
