//! `livesync-admin settings show | set KEY VALUE`: the global flags in `livesync.settings`
//! (`livesync_core::settings`).

use std::io::Write;

use clap::Subcommand;
use livesync_core::settings::{
    Change, DeliveryMode, Flag, QueueEffect, SetError, Settings, load, set,
};
use serde::Serialize;

use super::output::{Table, json, yes_no};
use super::{CliError, Ctx, Exit};

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the global flags.
    Show,
    /// Change one flag: live_sync_enabled, cti_sync_licensed, exchange_server (true|false),
    /// delivery_mode (live|push), time_zone (an IANA name such as Europe/Vienna).
    Set { key: String, value: String },
}

const PUSH_RECOMMENDATION: &str = "this firm runs an Exchange Server: push mode is \
     recommended, so that changes reach Outlook without waiting for the next login \
     (`livesync-admin settings set delivery_mode push`)";

/// What the settings suggest to change, in words.
fn recommendations(settings: &Settings) -> Vec<&'static str> {
    let mut r = Vec::new();
    if settings.push_recommended() {
        r.push(PUSH_RECOMMENDATION);
    }
    r
}

#[derive(Serialize)]
struct View<'a> {
    settings: &'a Settings,
    /// The key changed by `set`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<&'a str>,
    /// What the change did to the queue (`set` only): entries queued and dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<QueueEffect>,
    recommendations: Vec<&'static str>,
}

pub(crate) async fn run(
    ctx: &Ctx,
    cmd: SettingsCommand,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let (key, value) = match cmd {
        SettingsCommand::Show => {
            let pool = ctx.pool().await?;
            let settings = load(&pool).await?;
            show(ctx, &settings, None, out)?;
            return Ok(Exit::Ok);
        }
        SettingsCommand::Set { key, value } => (key, value),
    };
    // Validate before touching the database: bad usage is exit 2 wherever it is called.
    let change = parse_change(&key, &value)?;
    let pool = ctx.pool().await?;
    let effect = set(&pool, &change).await.map_err(|e| match e {
        SetError::Unlicensed => CliError::Refused(
            "refused: live sync cannot be switched on without the licence module \
             CTI/Synchronisierung (cti_sync_licensed is false); license it first, then \
             `livesync-admin settings set cti_sync_licensed true`"
                .into(),
        ),
        SetError::Rejected(message) => CliError::Usage(message),
        SetError::Database(e) => CliError::Database(e),
    })?;
    let settings = load(&pool).await?;
    show(ctx, &settings, Some((&key, effect)), out)?;
    Ok(Exit::Ok)
}

fn show(
    ctx: &Ctx,
    settings: &Settings,
    changed: Option<(&str, QueueEffect)>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let recommendations = recommendations(settings);
    if ctx.json {
        json(
            out,
            &View {
                settings,
                changed: changed.map(|(key, _)| key),
                queue: changed.map(|(_, effect)| effect),
                recommendations,
            },
        )?;
        return Ok(());
    }
    if let Some((key, effect)) = changed {
        writeln!(out, "{key} changed")?;
        if effect.queued > 0 {
            writeln!(
                out,
                "{} entries queued for the enabled users",
                effect.queued
            )?;
        }
        if effect.dropped > 0 {
            writeln!(
                out,
                "{} queued entries dropped: live sync is no longer active",
                effect.dropped
            )?;
        }
    }
    let mut table = Table::new(&["setting", "value"]);
    table.row(vec![
        "live_sync_enabled".into(),
        yes_no(settings.live_sync_enabled),
    ]);
    table.row(vec![
        "cti_sync_licensed".into(),
        yes_no(settings.cti_sync_licensed),
    ]);
    table.row(vec![
        "exchange_server".into(),
        yes_no(settings.exchange_server),
    ]);
    table.row(vec!["delivery_mode".into(), settings.delivery_mode.clone()]);
    table.row(vec!["time_zone".into(), settings.time_zone.clone()]);
    table.row(vec![
        "installed_at".into(),
        super::output::time(Some(settings.installed_at)),
    ]);
    table.write(out)?;
    for r in recommendations {
        writeln!(out, "recommendation: {r}")?;
    }
    Ok(())
}

/// The change `set KEY VALUE` asks for; bad usage names what is expected.
fn parse_change(key: &str, value: &str) -> Result<Change, CliError> {
    let v = value.trim();
    match key {
        "live_sync_enabled" | "cti_sync_licensed" | "exchange_server" => {
            let flag = match key {
                "live_sync_enabled" => Flag::LiveSyncEnabled,
                "cti_sync_licensed" => Flag::CtiSyncLicensed,
                _ => Flag::ExchangeServer,
            };
            let on = match v.to_lowercase().as_str() {
                "true" | "on" | "yes" | "1" | "ja" | "ein" => true,
                "false" | "off" | "no" | "0" | "nein" | "aus" => false,
                _ => {
                    return Err(CliError::Usage(format!(
                        "invalid value \"{value}\" for {key}: use true or false"
                    )));
                }
            };
            Ok(Change::Flag(flag, on))
        }
        "delivery_mode" => match v.to_lowercase().as_str() {
            "live" => Ok(Change::DeliveryMode(DeliveryMode::Live)),
            "push" => Ok(Change::DeliveryMode(DeliveryMode::Push)),
            _ => Err(CliError::Usage(format!(
                "invalid value \"{value}\" for delivery_mode: use live (deliver at login) \
                 or push (deliver at once, for firms with Exchange)"
            ))),
        },
        "time_zone" if !v.is_empty() => Ok(Change::TimeZone(v.to_string())),
        "time_zone" => Err(CliError::Usage(
            "invalid value for time_zone: use an IANA name such as Europe/Vienna".into(),
        )),
        _ => Err(CliError::Usage(format!(
            "unknown setting \"{key}\": use one of live_sync_enabled, cti_sync_licensed, \
             exchange_server, delivery_mode, time_zone"
        ))),
    }
}
