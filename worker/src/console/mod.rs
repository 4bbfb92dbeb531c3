//! The admin console in the browser, served at `/` of `LIVESYNC_CONSOLE_ADDR`.
//!
//! Pages are rendered on the server (askama templates in `worker/templates/console/`,
//! escaped by askama) and work without JavaScript: every action is a form that posts and is
//! answered with a redirect back to the page (post/redirect/get), which then says what was
//! done. German or English, from `Accept-Language` ([`i18n`]).
//!
//! ```text
//!   GET  /sign-in, POST /sign-in, POST /sign-out        (auth: sessions, CSRF, limit)
//!   GET  /                   overview: switch, licence, mode, workers, queue, dead letters
//!   GET  /users              one line per user
//!   GET  /users/{id}         one person: deliveries, errors, dead letters, feed
//!   POST /users/{id}/enable | disable | logfile | feed
//!   POST /users/{id}/dead-letters/{dl}/requeue | drop
//!   GET  /first-login        the first-login report
//!   GET  /feeds/{secret}.ics the calendar feeds (crate::feed), unless LIVESYNC_FEED_ADDR
//! ```
//!
//! What an action does is what `livesync-admin` does: both call the same functions of the
//! core (`livesync_core::{users, dead_letters, feeds, settings, console_users}`).
//!
//! Every answer carries a Content-Security-Policy without scripts, `no-store`, and
//! `Referrer-Policy: no-referrer` (a person's page shows their feed URL).

pub(crate) mod auth;
pub(crate) mod i18n;
mod pages;
mod posted;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::routing::{get, post};
use axum_extra::extract::cookie::Key;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::{ConsoleSettings, TlsFiles};
use crate::service::Health;

/// What every console request can reach.
#[derive(Clone)]
pub(crate) struct ConsoleState {
    pub pool: PgPool,
    pub key: Key,
    pub settings: Arc<ConsoleSettings>,
    /// The serving worker's own health (its listener), when it runs one.
    pub health: Option<Arc<Health>>,
    /// Cookies are marked `Secure` when the console is reached over HTTPS.
    pub secure_cookies: bool,
    /// The base of feed URLs (`LIVESYNC_PUBLIC_URL`, else the feeds' address).
    pub feed_base: Option<String>,
}

impl FromRef<ConsoleState> for Key {
    fn from_ref(state: &ConsoleState) -> Key {
        state.key.clone()
    }
}

/// The console's routes, with the feeds unless they have an address of their own. Reads
/// (or makes) the cookie signing key.
pub async fn router(
    pool: PgPool,
    settings: &ConsoleSettings,
    health: Option<Arc<Health>>,
) -> Result<Router, sqlx::Error> {
    let key = auth::signing_key(&pool).await?;
    // Made now, so that the first sign-in with an unknown name takes no longer than others.
    let _ = tokio::task::spawn_blocking(livesync_core::console_users::dummy_hash).await;
    let secure_cookies = settings.tls.is_some()
        || settings
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
    let state = ConsoleState {
        pool: pool.clone(),
        key,
        settings: Arc::new(settings.clone()),
        health,
        secure_cookies,
        feed_base: feed_base(settings),
    };
    let signed_in = Router::new()
        .route("/", get(pages::overview))
        .route("/users", get(pages::users))
        .route("/users/{id}", get(pages::person))
        .route("/users/{id}/enable", post(pages::enable))
        .route("/users/{id}/disable", post(pages::disable))
        .route("/users/{id}/logfile", post(pages::logfile))
        .route("/users/{id}/feed", post(pages::rotate_feed))
        .route(
            "/users/{id}/dead-letters/{dead_letter}/requeue",
            post(pages::requeue),
        )
        .route(
            "/users/{id}/dead-letters/{dead_letter}/drop",
            post(pages::drop_dead_letter),
        )
        .route("/first-login", get(pages::first_login))
        .route("/sign-out", post(pages::sign_out))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let mut console = Router::new()
        .merge(signed_in)
        .route("/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/console.css", get(pages::stylesheet))
        .fallback(pages::not_found)
        .with_state(state)
        .layer(middleware::map_response(security_headers));
    if settings.feed_addr.is_none() || settings.feed_addr == settings.addr {
        console = console.merge(crate::feed::router(pool));
    }
    Ok(console)
}

/// The base of feed URLs for these settings.
pub fn feed_base(settings: &ConsoleSettings) -> Option<String> {
    livesync_core::feeds::base_url(
        settings.public_url.as_deref(),
        settings.feed_addr.or(settings.addr),
        settings.tls.is_some(),
    )
}

async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The rustls configuration for the certificate and key files.
pub async fn tls_config(
    files: &TlsFiles,
) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key).await
}

/// Serve `router` on `listener` (HTTPS with `tls`) until `stop` turns true; requests in
/// flight then get 10 s to finish.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(config) => {
            axum_server::tls_rustls::from_tcp_rustls(listener, config)?
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(app)
                .await
        }
    }
}
