//! The firm's switches (`livesync.settings`, one row): shown and changed by
//! `livesync-admin settings`, shown by the console and `doctor`.

use serde::Serialize;
use sqlx::PgPool;

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

const SELECT: &str = "select live_sync_enabled, cti_sync_licensed, exchange_server, \
     delivery_mode, time_zone, installed_at from livesync.settings";
const SELECT_FOR_UPDATE: &str = "select live_sync_enabled, cti_sync_licensed, \
     exchange_server, delivery_mode, time_zone, installed_at from livesync.settings for update";

/// The global flags as they are now.
pub async fn load(pool: &PgPool) -> Result<Settings, sqlx::Error> {
    sqlx::query_as(SELECT).fetch_one(pool).await
}

impl Settings {
    /// A firm with an Exchange Server in live mode should deliver in push mode, so that
    /// changes reach Outlook without waiting for the next login.
    pub fn push_recommended(&self) -> bool {
        self.exchange_server && self.delivery_mode == "live"
    }
}

/// One of the switches that are on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `live_sync_enabled`: switching it on needs the licence.
    LiveSyncEnabled,
    /// `cti_sync_licensed`: the licence module CTI/Synchronisierung.
    CtiSyncLicensed,
    /// `exchange_server`: the firm runs an Exchange Server.
    ExchangeServer,
}

/// `delivery_mode`: deliver while a person is logged in, or at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Live,
    Push,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Live => "live",
            DeliveryMode::Push => "push",
        }
    }
}

/// A change of one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Flag(Flag, bool),
    DeliveryMode(DeliveryMode),
    /// An IANA name such as Europe/Vienna (the settings trigger rejects an unknown one).
    TimeZone(String),
}

/// What a change did to the queue: entries queued and dropped.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueEffect {
    pub queued: i64,
    pub dropped: i64,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(
        "live sync cannot be switched on without the licence module CTI/Synchronisierung \
         (cti_sync_licensed is false)"
    )]
    Unlicensed,
    /// The settings trigger refused the value (an unknown time zone), with its message.
    #[error("{0}")]
    Rejected(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Make `change`. Switching live sync on queues every enabled user's calendar (the
/// settings trigger); switching it off empties the queue.
pub async fn set(pool: &PgPool, change: &Change) -> Result<QueueEffect, SetError> {
    let mut tx = pool.begin().await?;
    let current: Settings = sqlx::query_as(SELECT_FOR_UPDATE)
        .fetch_one(&mut *tx)
        .await?;
    let before: i64 = sqlx::query_scalar("select count(*) from livesync.queue")
        .fetch_one(&mut *tx)
        .await?;
    if *change == Change::Flag(Flag::LiveSyncEnabled, true) && !current.cti_sync_licensed {
        return Err(SetError::Unlicensed);
    }
    let result = match change {
        Change::Flag(flag, on) => {
            let sql = match flag {
                Flag::LiveSyncEnabled => "update livesync.settings set live_sync_enabled = $1",
                Flag::CtiSyncLicensed => "update livesync.settings set cti_sync_licensed = $1",
                Flag::ExchangeServer => "update livesync.settings set exchange_server = $1",
            };
            sqlx::query(sql).bind(*on).execute(&mut *tx).await
        }
        Change::DeliveryMode(mode) => {
            sqlx::query("update livesync.settings set delivery_mode = $1")
                .bind(mode.as_str())
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
            return Err(SetError::Rejected(db.message().to_string()));
        }
        return Err(e.into());
    }
    // Entries written by this transaction carry its timestamp.
    let (queued, after): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where changed_at = now()), count(*) from livesync.queue",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(QueueEffect {
        queued,
        dropped: (before - after).max(0),
    })
}
