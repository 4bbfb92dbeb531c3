//! `livesync-admin feed url NAME | feed rotate NAME`: each person's calendar feed,
//! `<base>/feeds/<secret>.ics`, which Outlook ("Add calendar → From Internet"), Apple
//! Calendar, Thunderbird and phones subscribe to. The worker serves it (`LIVESYNC_FEED_ADDR`,
//! or the console's address); the console shows and rotates it too.
//!
//! The secret is 32 random bytes, base64url: the URL is the only key to the calendar, so
//! whoever has it can read it. `url` makes one on first use and prints the same URL after;
//! `rotate` replaces it, and the old URL answers 404 from then on. The URL's base is
//! `LIVESYNC_PUBLIC_URL` (the name people reach the server by), else the address the
//! feeds are served on.

use std::io::Write;
use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::output::json;
use super::{CliError, Ctx, Exit, find_user};

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Print a person's feed URL (the secret is made on first use).
    Url(FeedArgs),
    /// Give a person a new feed secret: the old URL answers 404 from now on.
    Rotate(FeedArgs),
}

#[derive(Debug, Args)]
pub struct FeedArgs {
    /// The Xpert user name.
    pub name: String,
    /// The address people reach the server by, e.g. https://kalender.kanzlei.at
    #[arg(long, env = "LIVESYNC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where the worker serves the feeds (the URL's base without a public URL).
    #[arg(long, env = "LIVESYNC_FEED_ADDR", hide = true)]
    pub feed_addr: Option<String>,
    /// Where the worker serves the console (and the feeds, without LIVESYNC_FEED_ADDR).
    #[arg(long, env = "LIVESYNC_CONSOLE_ADDR", hide = true)]
    pub console_addr: Option<String>,
    /// With a certificate the worker serves HTTPS.
    #[arg(long, env = "LIVESYNC_CONSOLE_TLS_CERT", hide = true)]
    pub console_tls_cert: Option<String>,
}

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

#[derive(Debug, Serialize)]
struct Shown {
    username: String,
    url: String,
    /// Without active live sync the feed answers 404.
    sync_active: bool,
    rotated: bool,
}

pub(crate) async fn run(
    ctx: &Ctx,
    cmd: FeedCommand,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let (args, rotating) = match cmd {
        FeedCommand::Url(args) => (args, false),
        FeedCommand::Rotate(args) => (args, true),
    };
    let served_on = match (&args.feed_addr, &args.console_addr) {
        (Some(a), _) if !a.trim().is_empty() => listen_addr(a),
        (_, Some(a)) if !a.trim().is_empty() => listen_addr(a),
        _ => None,
    };
    let tls = args
        .console_tls_cert
        .as_deref()
        .is_some_and(|c| !c.trim().is_empty());
    let Some(base) = base_url(args.public_url.as_deref(), served_on, tls) else {
        return Err(CliError::Usage(
            "no address for the feed URL: set LIVESYNC_PUBLIC_URL (or --public-url) to the \
             address people reach the server by, e.g. https://kalender.kanzlei.at, or \
             LIVESYNC_FEED_ADDR as the worker has it"
                .into(),
        ));
    };
    let pool = ctx.pool().await?;
    let user = find_user(&pool, &args.name).await?;
    let secret = if rotating {
        rotate(&pool, user.id).await?
    } else {
        secret_for(&pool, user.id).await?
    };
    let sync_active: bool = sqlx::query_scalar("select livesync.sync_active($1)")
        .bind(user.id)
        .fetch_one(&pool)
        .await?;
    let shown = Shown {
        username: user.username,
        url: feed_url(&base, &secret),
        sync_active,
        rotated: rotating,
    };
    if ctx.json {
        json(out, &shown)?;
        return Ok(Exit::Ok);
    }
    if rotating {
        writeln!(
            out,
            "{}: new feed URL (the old one answers 404 from now on):",
            shown.username
        )?;
    }
    writeln!(out, "{}", shown.url)?;
    writeln!(
        out,
        "whoever has this URL can read the calendar: give it to {} only",
        shown.username
    )?;
    if !sync_active {
        writeln!(
            out,
            "note: live sync is not active for {}, so the feed answers 404 until it is \
             (`livesync-admin user enable NAME`, `settings show`)",
            shown.username
        )?;
    }
    Ok(Exit::Ok)
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
