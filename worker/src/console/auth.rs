//! Who is signed in: sessions, the CSRF tokens of forms, the sign-in limit and the trusted
//! reverse proxy.
//!
//! - **Sessions.** Signing in makes a random token; the browser keeps it in a signed
//!   (HMAC-SHA256, the key in `livesync.console_key`), HttpOnly, `SameSite=Strict` cookie,
//!   and the database keeps only its SHA-256 (`livesync.console_sessions`). Every request
//!   of a session moves its `last_seen_at`; one idle for longer than
//!   `LIVESYNC_CONSOLE_SESSION_HOURS` is over.
//! - **CSRF.** Every form carries a token that an attacker's page cannot read: a session's
//!   own `csrf_token`, or, on the sign-in form, the token of the signed sign-in cookie.
//!   Tokens are compared in constant time.
//! - **Sign-in limit.** Failed sign-ins are recorded per client address; from the 10th
//!   within 15 minutes on, the address gets 429 with `Retry-After` without its password
//!   being looked at. A wrong password and an unknown name get the same answer, after the
//!   same work (an unknown name is checked against a hash nobody knows).
//! - **Client address and proxy.** The peer's address, unless the peer is one of
//!   `LIVESYNC_CONSOLE_TRUSTED_PROXIES`: then the rightmost address in `X-Forwarded-For`
//!   that is no trusted proxy. Only such a peer's `LIVESYNC_CONSOLE_PROXY_USER_HEADER` is
//!   believed, and only when that setting is made.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, Key, SameSite};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use livesync_core::console_users;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::ConsoleState;

/// The session cookie: the session's token, signed.
pub(crate) const SESSION_COOKIE: &str = "livesync_session";
/// The sign-in form's cookie: its CSRF token, signed.
pub(crate) const SIGN_IN_COOKIE: &str = "livesync_sign_in";
/// Failed sign-ins from one address within [`FAILURE_WINDOW`] before it gets 429.
pub(crate) const MAX_FAILURES: usize = 10;
/// The window the failed sign-ins are counted in.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A signed-in admin, as the pages see them.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub name: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// 32 random bytes, base64url.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether two secrets are equal, in time that depends on their lengths only.
pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The key that signs the cookies: made by the first worker serving the console, kept in
/// the database for every other one and every later start.
pub(crate) async fn signing_key(pool: &PgPool) -> Result<Key, sqlx::Error> {
    let mut fresh = [0u8; 64];
    rand::rng().fill_bytes(&mut fresh);
    sqlx::query(
        "insert into livesync.console_key (signing_key) values ($1) on conflict (id) do nothing",
    )
    .bind(fresh.as_slice())
    .execute(pool)
    .await?;
    let key: Vec<u8> = sqlx::query_scalar("select signing_key from livesync.console_key")
        .fetch_one(pool)
        .await?;
    // The table's check keeps it at 64 bytes, what `Key::from` needs.
    Ok(Key::from(&key))
}

/// The address a request comes from (see the module doc).
pub(crate) fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !trusted.contains(&peer_ip) {
        return peer_ip;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip.to_canonical()) => continue,
            Ok(ip) => return ip.to_canonical(),
            Err(_) => return peer_ip,
        }
    }
    peer_ip
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// How many seconds `address` must wait before it may try again, when it has failed
/// [`MAX_FAILURES`] times within [`FAILURE_WINDOW`]; `None` while it may try.
pub(crate) async fn retry_after(
    pool: &PgPool,
    address: IpAddr,
) -> Result<Option<u64>, sqlx::Error> {
    // When each failure in the window leaves it, oldest first.
    let leaves_in: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from f.failed_at + $2 * interval '1 second' - now())::float8 \
           from livesync.console_sign_in_failures f \
          where f.address = $1::inet and f.failed_at > now() - $2 * interval '1 second' \
          order by f.failed_at",
    )
    .bind(address.to_string())
    .bind(seconds(FAILURE_WINDOW))
    .fetch_all(pool)
    .await?;
    if leaves_in.len() < MAX_FAILURES {
        return Ok(None);
    }
    // Below the limit again once all but MAX_FAILURES - 1 of them have left.
    let wait = leaves_in[leaves_in.len() - MAX_FAILURES];
    Ok(Some(wait.ceil().max(1.0) as u64))
}

/// Record a failed sign-in from `address` (and forget failures older than the window).
pub(crate) async fn record_failure(pool: &PgPool, address: IpAddr) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with old as (delete from livesync.console_sign_in_failures \
                       where failed_at < now() - $2 * interval '1 second') \
         insert into livesync.console_sign_in_failures (address) values ($1::inet)",
    )
    .bind(address.to_string())
    .bind(seconds(FAILURE_WINDOW))
    .execute(pool)
    .await?;
    Ok(())
}

/// The console user `name` when `password` is theirs. An unknown name costs the same
/// hash check as a wrong password.
pub(crate) async fn check_password(
    pool: &PgPool,
    name: &str,
    password: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let account: Option<(i64, String)> =
        sqlx::query_as("select id, password_hash from livesync.console_users where name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    let hash = account.as_ref().map_or_else(
        || console_users::dummy_hash().to_string(),
        |(_, hash)| hash.clone(),
    );
    let password = password.to_string();
    let matches =
        tokio::task::spawn_blocking(move || console_users::verify_password(&hash, &password))
            .await
            .unwrap_or(false);
    match account {
        Some((id, _)) if matches => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// Start a session for `name` (a console user, or a name a trusted proxy vouched for);
/// returns its token. Sessions idle for longer than `idle` are removed on the way, and a
/// console user's sign-in time recorded, and the address's failures forgotten.
pub(crate) async fn start_session(
    pool: &PgPool,
    console_user_id: Option<i64>,
    name: &str,
    idle: Duration,
    address: IpAddr,
) -> Result<(String, Admin), sqlx::Error> {
    let token = random_token();
    let csrf = random_token();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "delete from livesync.console_sessions where last_seen_at < now() - $1 * interval '1 second'",
    )
    .bind(seconds(idle))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into livesync.console_sessions (token_sha256, console_user_id, name, csrf_token) \
         values ($1, $2, $3, $4)",
    )
    .bind(token_digest(&token))
    .bind(console_user_id)
    .bind(name)
    .bind(&csrf)
    .execute(&mut *tx)
    .await?;
    if let Some(id) = console_user_id {
        sqlx::query("update livesync.console_users set last_sign_in_at = now() where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("delete from livesync.console_sign_in_failures where address = $1::inet")
            .bind(address.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((
        token,
        Admin {
            name: name.to_string(),
            csrf,
        },
    ))
}

/// The session of `token` if it is still live (and mark it seen now).
async fn touch_session(
    pool: &PgPool,
    token: &str,
    idle: Duration,
) -> Result<Option<(Admin, Option<i64>)>, sqlx::Error> {
    let row: Option<(String, String, Option<i64>)> = sqlx::query_as(
        "update livesync.console_sessions set last_seen_at = now() \
          where token_sha256 = $1 and last_seen_at >= now() - $2 * interval '1 second' \
         returning name, csrf_token, console_user_id",
    )
    .bind(token_digest(token))
    .bind(seconds(idle))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(name, csrf, id)| (Admin { name, csrf }, id)))
}

/// End the session of `token`.
pub(crate) async fn end_session(pool: &PgPool, token: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from livesync.console_sessions where token_sha256 = $1")
        .bind(token_digest(token))
        .execute(pool)
        .await?;
    Ok(())
}

/// A cookie of the console: HttpOnly, `SameSite=Strict`, for the whole console, `Secure`
/// when the console is reached over HTTPS.
pub(crate) fn cookie(state: &ConsoleState, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(state.secure_cookies)
        .build()
}

/// A cookie that removes `name`.
pub(crate) fn removal(name: &'static str) -> Cookie<'static> {
    Cookie::build((name, "")).path("/").build()
}

/// The name a trusted reverse proxy says it authenticated, if it is configured to and
/// this request comes from one.
fn proxy_user(state: &ConsoleState, peer: SocketAddr, headers: &HeaderMap) -> Option<String> {
    let header = state.settings.proxy_user_header.as_deref()?;
    if !state
        .settings
        .trusted_proxies
        .contains(&peer.ip().to_canonical())
    {
        return None;
    }
    let value = headers.get(header)?;
    let name = String::from_utf8(value.as_bytes().to_vec()).ok()?;
    let name = name.trim();
    (!name.is_empty()
        && name.chars().count() <= console_users::MAX_NAME_CHARS
        && !name.chars().any(char::is_control))
    .then(|| name.to_string())
}

/// In front of every page that needs a signed-in admin: finds the session (or starts one
/// for a name a trusted proxy vouches for) and hands the page an [`Admin`]; without one,
/// the browser is sent to the sign-in page and nothing else happens.
pub(crate) async fn require_admin(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: SignedCookieJar,
    mut request: Request,
    next: Next,
) -> Response {
    let idle = state.settings.session_idle;
    let token = jar.get(SESSION_COOKIE).map(|c| c.value().to_string());
    let session = match &token {
        Some(token) => match touch_session(&state.pool, token, idle).await {
            Ok(session) => session,
            Err(e) => return super::pages::database_error(&e, request.headers()),
        },
        None => None,
    };
    let mut new_cookie = None;
    let admin = match (proxy_user(&state, peer, request.headers()), session) {
        // The proxy's name rules: a session of another name is not this admin's.
        (Some(name), Some((admin, None))) if admin.name == name => Some(admin),
        (Some(name), _) => {
            let address = client_ip(peer, request.headers(), &state.settings.trusted_proxies);
            match start_session(&state.pool, None, &name, idle, address).await {
                Ok((token, admin)) => {
                    tracing::info!(admin = %name, "console session started for a name the reverse proxy vouched for");
                    new_cookie = Some(cookie(&state, SESSION_COOKIE, token));
                    Some(admin)
                }
                Err(e) => return super::pages::database_error(&e, request.headers()),
            }
        }
        (None, session) => session.map(|(admin, _)| admin),
    };
    let Some(admin) = admin else {
        let to_sign_in = Redirect::to("/sign-in");
        return if token.is_some() {
            (jar.remove(removal(SESSION_COOKIE)), to_sign_in).into_response()
        } else {
            to_sign_in.into_response()
        };
    };
    request.extensions_mut().insert(admin);
    let response = next.run(request).await;
    match new_cookie {
        Some(c) => (jar.add(c), response).into_response(),
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let h = forwarded(&["198.51.100.9, 203.0.113.5"]);
        // Not trusted: the peer, whatever the header says.
        assert_eq!(
            client_ip(addr("192.0.2.1:4000"), &h, &[]),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // Trusted: the rightmost address that is no trusted proxy.
        assert_eq!(
            client_ip(addr("10.0.0.1:4000"), &h, &[proxy]),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        let h = forwarded(&["198.51.100.9", "203.0.113.5, 10.0.0.1"]);
        assert_eq!(
            client_ip(addr("10.0.0.1:4000"), &h, &[proxy]),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        // Garbage from the client's side is never reached past a good entry; garbage as
        // the nearest entry counts as the proxy itself.
        let h = forwarded(&["nonsense, 203.0.113.5"]);
        assert_eq!(
            client_ip(addr("10.0.0.1:4000"), &h, &[proxy]),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        let h = forwarded(&["203.0.113.5, nonsense"]);
        assert_eq!(client_ip(addr("10.0.0.1:4000"), &h, &[proxy]), proxy);
        assert_eq!(
            client_ip(addr("[::ffff:10.0.0.1]:4000"), &HeaderMap::new(), &[proxy]),
            proxy
        );
    }

    #[test]
    fn secrets_compare_by_content() {
        let t = random_token();
        assert_eq!(t.len(), 43);
        assert!(same_secret(&t, &t.clone()));
        assert!(!same_secret(&t, &random_token()));
        assert!(!same_secret("", &t));
        assert!(!same_secret(&t[..42], &t));
    }
}
