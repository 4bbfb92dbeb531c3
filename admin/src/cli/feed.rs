//! `livesync-admin feed url NAME | feed rotate NAME`: each person's calendar feed,
//! `<base>/feeds/<secret>.ics`, which Outlook ("Add calendar → From Internet"), Apple
//! Calendar, Thunderbird and phones subscribe to. The worker serves it (`LIVESYNC_FEED_ADDR`,
//! or the console's address); the console shows and rotates it too.
//!
//! The secret, its digest and the URL are `livesync_core::feeds`: `url` makes a secret on
//! first use and prints the same URL after; `rotate` replaces it, and the old URL answers
//! 404 from then on. The URL's base is `LIVESYNC_PUBLIC_URL` (the name people reach the
//! server by), else the address the feeds are served on.

use std::io::Write;

use clap::{Args, Subcommand};
use livesync_core::feeds::{base_url, feed_url, listen_addr, rotate, secret_for};
use serde::Serialize;

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
