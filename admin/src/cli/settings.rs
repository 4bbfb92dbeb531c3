//! `livesync-admin settings show | set KEY VALUE`: the global flags in `livesync.settings`.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;
use sqlx::PgPool;

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

/// The global flags (`livesync.settings`).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Settings {
    pub live_sync_enabled: bool,
    pub cti_sync_licensed: bool,
    pub exchange_server: bool,
    pub delivery_mode: String,
    pub time_zone: String,
    pub installed_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) const PUSH_RECOMMENDATION: &str = "this firm runs an Exchange Server: push mode is \
     recommended, so that changes reach Outlook without waiting for the next login \
     (`livesync-admin settings set delivery_mode push`)";

/// The global flags as they are now.
pub async fn load(pool: &PgPool) -> Result<Settings, sqlx::Error> {
    sqlx::query_as(
        "select live_sync_enabled, cti_sync_licensed, exchange_server, delivery_mode, \
                time_zone, installed_at from livesync.settings",
    )
    .fetch_one(pool)
    .await
}

impl Settings {
    pub fn recommendations(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.exchange_server && self.delivery_mode == "live" {
            r.push(PUSH_RECOMMENDATION);
        }
        r
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
struct QueueEffect {
    queued: i64,
    dropped: i64,
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
    let change = Change::parse(&key, &value)?;
    let pool = ctx.pool().await?;
    let mut tx = pool.begin().await?;
    let current: Settings = sqlx::query_as(
        "select live_sync_enabled, cti_sync_licensed, exchange_server, delivery_mode, \
                time_zone, installed_at from livesync.settings for update",
    )
    .fetch_one(&mut *tx)
    .await?;
    let before: i64 = sqlx::query_scalar("select count(*) from livesync.queue")
        .fetch_one(&mut *tx)
        .await?;
    match &change {
        Change::Flag(column, true)
            if *column == "live_sync_enabled" && !current.cti_sync_licensed =>
        {
            return Err(CliError::Refused(
                "refused: live sync cannot be switched on without the licence module \
                 CTI/Synchronisierung (cti_sync_licensed is false); license it first, then \
                 `livesync-admin settings set cti_sync_licensed true`"
                    .into(),
            ));
        }
        _ => {}
    }
    let result = match &change {
        Change::Flag(column, on) => {
            let sql = match *column {
                "live_sync_enabled" => "update livesync.settings set live_sync_enabled = $1",
                "cti_sync_licensed" => "update livesync.settings set cti_sync_licensed = $1",
                _ => "update livesync.settings set exchange_server = $1",
            };
            sqlx::query(sql).bind(*on).execute(&mut *tx).await
        }
        Change::DeliveryMode(mode) => {
            sqlx::query("update livesync.settings set delivery_mode = $1")
                .bind(*mode)
                .execute(&mut *tx)
                .await
        }
        Change::TimeZone(zone) => {
            sqlx::query("update livesync.settings set time_zone = $1")
                .bind(zone.as_str())
                .execute(&mut *tx)
                .await
        }
    };
    if let Err(e) = result {
        // The settings trigger rejects an unknown time zone with a readable message.
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("P0001")
        {
            return Err(CliError::Usage(db.message().to_string()));
        }
        return Err(e.into());
    }
    // Switching live sync on queues every enabled user's calendar; off empties the queue.
    let (queued, after): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where changed_at = now()), count(*) from livesync.queue",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let effect = QueueEffect {
        queued,
        dropped: (before - after).max(0),
    };
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
    let recommendations = settings.recommendations();
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

enum Change {
    Flag(&'static str, bool),
    DeliveryMode(&'static str),
    TimeZone(String),
}

impl Change {
    fn parse(key: &str, value: &str) -> Result<Change, CliError> {
        let v = value.trim();
        match key {
            "live_sync_enabled" | "cti_sync_licensed" | "exchange_server" => {
                let column = match key {
                    "live_sync_enabled" => "live_sync_enabled",
                    "cti_sync_licensed" => "cti_sync_licensed",
                    _ => "exchange_server",
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
                Ok(Change::Flag(column, on))
            }
            "delivery_mode" => match v.to_lowercase().as_str() {
                "live" => Ok(Change::DeliveryMode("live")),
                "push" => Ok(Change::DeliveryMode("push")),
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
}
