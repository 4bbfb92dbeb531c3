//! Each person's calendar feed, `<base>/feeds/<secret>.ics`: its secret, what the secret is
//! looked up by, and the URL. `livesync-admin feed url|rotate` and the console show and
//! replace it; the worker serves the feed.
//!
//! The secret is 32 random bytes, base64url: the URL is the only key to the calendar, so
//! whoever has it can read it. [`secret_for`] makes one on first use and gives the same one
//! after; [`rotate`] replaces it, and the old URL answers 404 from then on. The URL's base
//! is the public URL (the name people reach the server by), else the address the feeds are
//! served on ([`base_url`]).

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// A new secret: 32 random bytes, base64url without padding (43 characters).
pub fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What a secret is looked up by (`livesync.feed_secrets.secret_sha256`).
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The feed URL for `secret` under `base` (no trailing slash).
pub fn feed_url(base: &str, secret: &str) -> String {
    format!("{}/feeds/{secret}.ics", base.trim_end_matches('/'))
}

/// The base of feed URLs: `public_url` when given, else `http(s)://` and the address
/// the feeds are served on (this host's name for an unspecified address such as
/// 0.0.0.0). `None` when there is neither.
pub fn base_url(
    public_url: Option<&str>,
    served_on: Option<SocketAddr>,
    tls: bool,
) -> Option<String> {
    if let Some(url) = public_url.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(url.trim_end_matches('/').to_string());
    }
    let addr = served_on?;
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        return Some(format!("{scheme}://{host}:{}", addr.port()));
    }
    Some(format!("{scheme}://{addr}"))
}

/// A listening address as the worker reads it: `host:port`, or a port alone for loopback.
pub fn listen_addr(value: &str) -> Option<SocketAddr> {
    let value = value.trim();
    let port = value.strip_prefix(':').unwrap_or(value);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return match port.parse::<u16>() {
            Ok(port) if port > 0 => Some(SocketAddr::from(([127, 0, 0, 1], port))),
            _ => None,
        };
    }
    value.parse().ok()
}

/// The person's feed secret, made now if they have none.
pub async fn secret_for(pool: &PgPool, user_id: i64) -> Result<String, sqlx::Error> {
    let fresh = new_secret();
    sqlx::query(
        "insert into livesync.feed_secrets (user_id, secret, secret_sha256) values ($1, $2, $3) \
         on conflict (user_id) do nothing",
    )
    .bind(user_id)
    .bind(&fresh)
    .bind(digest(&fresh).as_slice())
    .execute(pool)
    .await?;
    sqlx::query_scalar("select secret from livesync.feed_secrets where user_id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await
}

/// The person's feed secret if they have one (nothing is made).
pub async fn existing_secret(pool: &PgPool, user_id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select secret from livesync.feed_secrets where user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// Give the person a new secret; the old one stops working with this statement.
pub async fn rotate(pool: &PgPool, user_id: i64) -> Result<String, sqlx::Error> {
    let fresh = new_secret();
    sqlx::query_scalar(
        "insert into livesync.feed_secrets (user_id, secret, secret_sha256) values ($1, $2, $3) \
         on conflict (user_id) do update \
           set secret = excluded.secret, secret_sha256 = excluded.secret_sha256, \
               created_at = now() \
         returning secret",
    )
    .bind(user_id)
    .bind(&fresh)
    .bind(digest(&fresh).as_slice())
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_url_safe_and_different() {
        let a = new_secret();
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, new_secret());
        assert_eq!(digest(&a).len(), 32);
    }

    #[test]
    fn the_base_is_the_public_url_else_the_address() {
        let addr = |s: &str| s.parse::<SocketAddr>().ok();
        assert_eq!(
            base_url(
                Some("https://kalender.kanzlei.at/"),
                addr("127.0.0.1:9188"),
                false
            )
            .as_deref(),
            Some("https://kalender.kanzlei.at")
        );
        assert_eq!(
            base_url(None, addr("192.0.2.7:9188"), true).as_deref(),
            Some("https://192.0.2.7:9188")
        );
        assert_eq!(
            base_url(Some(" "), addr("[::1]:80"), false).as_deref(),
            Some("http://[::1]:80")
        );
        assert!(
            base_url(None, addr("0.0.0.0:9188"), false).is_some_and(|b| !b.contains("0.0.0.0"))
        );
        assert_eq!(base_url(None, None, false), None);
        assert_eq!(
            feed_url("https://h/", "abc"),
            "https://h/feeds/abc.ics".to_string()
        );
        assert_eq!(listen_addr("9188"), addr("127.0.0.1:9188"));
        assert_eq!(listen_addr("0.0.0.0:443"), addr("0.0.0.0:443"));
        assert_eq!(listen_addr("localhost"), None);
    }
}
