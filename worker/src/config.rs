//! Configuration: environment, `.env` (loaded in `main`) and command-line flags, read once
//! into [`Settings`]. Every value is validated at start-up; a bad one is an error naming the
//! variable and what it accepts. Nothing below this module reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;

#[derive(Debug, Parser)]
#[command(
    name = "livesync-worker",
    version,
    about = "Delivers Xpert appointments into each person's calendar, live."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM/SIGINT.
    Run(RawSettings),
    /// Play the seed's story on a private database (or DATABASE_URL) and explain it.
    Demo(RawSettings),
    /// Check the configured calendar sink once and report (used by livesync-admin doctor).
    Check {
        #[command(flatten)]
        raw: RawSettings,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The flags and variables as given; [`RawSettings::validate`] turns them into [`Settings`].
#[derive(Debug, Clone, Default, Args)]
pub struct RawSettings {
    /// PostgreSQL URL of the Xpert database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where appointments go: ics | null | caldav | graph.
    #[arg(long, env = "LIVESYNC_SINK")]
    pub sink: Option<String>,
    /// Directory for the per-user .ics files (sink `ics`).
    #[arg(long, env = "LIVESYNC_ICS_DIR")]
    pub ics_dir: Option<PathBuf>,
    /// Directory for the per-user log files ("Logfile für Live Synchronisation führen").
    #[arg(long, env = "LIVESYNC_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Address for /healthz and /metrics, e.g. 127.0.0.1:9187 (off when unset).
    #[arg(long, env = "LIVESYNC_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Never LISTEN; rely on polling (PgBouncer in transaction-pooling mode).
    #[arg(long, env = "LIVESYNC_POLL_ONLY")]
    pub poll_only: Option<String>,
    /// Safety-net poll interval in milliseconds (100..=5000, default 2000).
    #[arg(long, env = "LIVESYNC_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<String>,
    /// A login counts as online for this many hours unless logged out (default 12).
    #[arg(long, env = "LIVESYNC_SESSION_HOURS")]
    pub session_hours: Option<String>,
    /// Failed attempts before an entry moves to the dead letters (default 10).
    #[arg(long, env = "LIVESYNC_MAX_ATTEMPTS")]
    pub max_attempts: Option<String>,
    /// Users delivered to at the same time by this worker (default 8).
    #[arg(long, env = "LIVESYNC_CONCURRENCY")]
    pub concurrency: Option<String>,
    /// Seconds a claimed user stays leased to this worker without renewal (default 60).
    #[arg(long, env = "LIVESYNC_LEASE_SECS")]
    pub lease_secs: Option<String>,
    /// Log format on stderr: text | json.
    #[arg(long, env = "LIVESYNC_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Size in bytes at which a per-user log file is rotated (default 1048576).
    #[arg(long, env = "LIVESYNC_USER_LOG_MAX_BYTES")]
    pub user_log_max_bytes: Option<String>,

    /// CalDAV collection URL with `{username}`, e.g. https://dav.kanzlei.at/{username}/notarxpert/
    #[arg(long, env = "LIVESYNC_CALDAV_URL")]
    pub caldav_url: Option<String>,
    /// CalDAV user (a service account, or a template with `{username}`).
    #[arg(long, env = "LIVESYNC_CALDAV_USERNAME")]
    pub caldav_username: Option<String>,
    /// CalDAV password (may contain `{username}`). Never logged.
    #[arg(long, env = "LIVESYNC_CALDAV_PASSWORD", hide_env_values = true)]
    pub caldav_password: Option<String>,
    /// Requests in flight to the CalDAV server at once (default 4).
    #[arg(long, env = "LIVESYNC_CALDAV_MAX_CONCURRENCY")]
    pub caldav_max_concurrency: Option<String>,

    /// Microsoft Entra tenant id (Graph sink).
    #[arg(long, env = "LIVESYNC_GRAPH_TENANT_ID")]
    pub graph_tenant_id: Option<String>,
    /// Application (client) id with Calendars.ReadWrite.
    #[arg(long, env = "LIVESYNC_GRAPH_CLIENT_ID")]
    pub graph_client_id: Option<String>,
    /// Client secret. Never logged.
    #[arg(long, env = "LIVESYNC_GRAPH_CLIENT_SECRET", hide_env_values = true)]
    pub graph_client_secret: Option<String>,
    /// Mailbox per user, e.g. {username}@kanzlei.at (overridden by user_settings.calendar_address).
    #[arg(long, env = "LIVESYNC_GRAPH_MAILBOX")]
    pub graph_mailbox: Option<String>,
    /// Graph API base (default https://graph.microsoft.com/v1.0).
    #[arg(long, env = "LIVESYNC_GRAPH_BASE_URL")]
    pub graph_base_url: Option<String>,
    /// Login endpoint base (default https://login.microsoftonline.com).
    #[arg(long, env = "LIVESYNC_GRAPH_LOGIN_URL")]
    pub graph_login_url: Option<String>,
}

/// A secret value: shown as `***` by Debug and Display, read only via [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The CalDAV sink's settings (`LIVESYNC_SINK=caldav`).
#[derive(Debug, Clone)]
pub struct CalDavSettings {
    /// Collection URL template; `{username}` is replaced by the Xpert user name.
    pub url_template: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub max_concurrency: usize,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
}

/// The Microsoft Graph sink's settings (`LIVESYNC_SINK=graph`).
#[derive(Debug, Clone)]
pub struct GraphSettings {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Mailbox template; `{username}` is replaced by the Xpert user name.
    pub mailbox_template: String,
    pub base_url: String,
    pub login_url: String,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Ics,
    Null,
    CalDav,
    Graph,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings. Tests build this directly.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<String>,
    pub sink: SinkKind,
    pub ics_dir: PathBuf,
    pub log_dir: PathBuf,
    pub http_addr: Option<SocketAddr>,
    pub poll_only: bool,
    pub poll_interval: Duration,
    pub session_limit: Duration,
    pub max_attempts: i32,
    pub concurrency: usize,
    pub lease: Duration,
    pub log_format: LogFormat,
    pub user_log_max_bytes: u64,
    /// Entries delivered per sink call for one user.
    pub batch_size: i64,
    /// How long an idle worker keeps watching for new work before it sleeps.
    pub linger: Duration,
    /// Set when `sink` is CalDav.
    pub caldav: Option<CalDavSettings>,
    /// Set when `sink` is Graph.
    pub graph: Option<GraphSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: None,
            sink: SinkKind::Ics,
            ics_dir: PathBuf::from("data/ics"),
            log_dir: PathBuf::from("data/logs"),
            http_addr: None,
            poll_only: false,
            poll_interval: Duration::from_millis(2000),
            session_limit: Duration::from_secs(12 * 3600),
            max_attempts: 10,
            concurrency: 8,
            lease: Duration::from_secs(60),
            log_format: LogFormat::Text,
            user_log_max_bytes: 1024 * 1024,
            batch_size: 500,
            linger: Duration::from_millis(250),
            caldav: None,
            graph: None,
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?}: {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
}

fn bad(variable: &'static str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn number<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    variable: &'static str,
    raw: &Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(s) => match s.parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(v),
            _ => Err(bad(
                variable,
                s,
                format!("expected a whole number from {min} to {max}"),
            )),
        },
    }
}

fn flag(variable: &'static str, raw: &Option<String>) -> Result<bool, ConfigError> {
    match raw.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(s) => match s.as_str() {
            "" | "0" | "false" | "no" | "off" => Ok(false),
            "1" | "true" | "yes" | "on" => Ok(true),
            _ => Err(bad(variable, &s, "expected true or false")),
        },
    }
}

impl RawSettings {
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let defaults = Settings::default();
        let database_url = match self.database_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                return Err(bad(
                    "DATABASE_URL",
                    "(hidden)",
                    "expected a postgres:// or postgresql:// URL",
                ));
            }
            Some(url) => {
                url.parse::<PgConnectOptions>().map_err(|e| {
                    // The URL may hold a password: never echo it.
                    bad(
                        "DATABASE_URL",
                        "(hidden)",
                        format!("not a PostgreSQL URL ({e})"),
                    )
                })?;
                Some(url.to_string())
            }
        };
        let sink = match self.sink.as_deref().map(str::trim) {
            None | Some("") | Some("ics") => SinkKind::Ics,
            Some("null") => SinkKind::Null,
            Some("caldav") => SinkKind::CalDav,
            Some("graph") => SinkKind::Graph,
            Some(other) => {
                return Err(bad(
                    "LIVESYNC_SINK",
                    other,
                    "expected one of ics, null, caldav, graph",
                ));
            }
        };
        let http_addr = match self.http_addr.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                bad(
                    "LIVESYNC_HTTP_ADDR",
                    s,
                    "expected an address with port, e.g. 127.0.0.1:9187",
                )
            })?),
        };
        let log_format = match self.log_format.as_deref().map(str::trim) {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(bad("LIVESYNC_LOG_FORMAT", other, "expected text or json")),
        };
        let dir = |variable: &'static str, raw: &Option<PathBuf>, default: &PathBuf| match raw {
            Some(p) if p.as_os_str().is_empty() => {
                Err(bad(variable, "", "expected a directory path"))
            }
            Some(p) => Ok(p.clone()),
            None => Ok(default.clone()),
        };
        let caldav = if sink == SinkKind::CalDav {
            Some(self.caldav_settings()?)
        } else {
            None
        };
        let graph = if sink == SinkKind::Graph {
            Some(self.graph_settings()?)
        } else {
            None
        };
        Ok(Settings {
            caldav,
            graph,
            database_url,
            sink,
            ics_dir: dir("LIVESYNC_ICS_DIR", &self.ics_dir, &defaults.ics_dir)?,
            log_dir: dir("LIVESYNC_LOG_DIR", &self.log_dir, &defaults.log_dir)?,
            http_addr,
            poll_only: flag("LIVESYNC_POLL_ONLY", &self.poll_only)?,
            poll_interval: Duration::from_millis(number(
                "LIVESYNC_POLL_INTERVAL_MS",
                &self.poll_interval_ms,
                2000u64,
                100,
                5000,
            )?),
            session_limit: Duration::from_secs(
                3600 * number("LIVESYNC_SESSION_HOURS", &self.session_hours, 12u64, 1, 168)?,
            ),
            max_attempts: number("LIVESYNC_MAX_ATTEMPTS", &self.max_attempts, 10i32, 1, 1000)?,
            concurrency: number("LIVESYNC_CONCURRENCY", &self.concurrency, 8usize, 1, 256)?,
            lease: Duration::from_secs(number(
                "LIVESYNC_LEASE_SECS",
                &self.lease_secs,
                60u64,
                5,
                3600,
            )?),
            log_format,
            user_log_max_bytes: number(
                "LIVESYNC_USER_LOG_MAX_BYTES",
                &self.user_log_max_bytes,
                1024 * 1024u64,
                4096,
                1 << 34,
            )?,
            // Remote calendars answer per request: smaller batches keep a batch well
            // inside the lease and make a retry cheap.
            batch_size: match sink {
                SinkKind::CalDav | SinkKind::Graph => 50,
                SinkKind::Ics | SinkKind::Null => defaults.batch_size,
            },
            ..defaults
        })
    }
}

fn required(variable: &'static str, raw: &Option<String>) -> Result<String, ConfigError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Err(bad(variable, "", "required for this sink")),
        Some(v) => Ok(v.to_string()),
    }
}

fn http_url(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let ok = (value.starts_with("https://") || value.starts_with("http://"))
        && value.len() > "https://".len()
        && !value.contains(char::is_whitespace);
    if ok {
        Ok(value.trim_end_matches('/').to_string())
    } else {
        Err(bad(variable, value, "expected an http:// or https:// URL"))
    }
}

impl RawSettings {
    fn caldav_settings(&self) -> Result<CalDavSettings, ConfigError> {
        let url = required("LIVESYNC_CALDAV_URL", &self.caldav_url)?;
        http_url("LIVESYNC_CALDAV_URL", &url)?;
        Ok(CalDavSettings {
            url_template: url,
            username: self
                .caldav_username
                .clone()
                .filter(|s| !s.trim().is_empty()),
            password: self
                .caldav_password
                .clone()
                .filter(|s| !s.is_empty())
                .map(Secret),
            max_concurrency: number(
                "LIVESYNC_CALDAV_MAX_CONCURRENCY",
                &self.caldav_max_concurrency,
                4usize,
                1,
                64,
            )?,
            request_timeout: Duration::from_secs(15),
        })
    }

    fn graph_settings(&self) -> Result<GraphSettings, ConfigError> {
        let base = self
            .graph_base_url
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "https://graph.microsoft.com/v1.0".into());
        let login = self
            .graph_login_url
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "https://login.microsoftonline.com".into());
        Ok(GraphSettings {
            tenant_id: required("LIVESYNC_GRAPH_TENANT_ID", &self.graph_tenant_id)?,
            client_id: required("LIVESYNC_GRAPH_CLIENT_ID", &self.graph_client_id)?,
            client_secret: Secret(required(
                "LIVESYNC_GRAPH_CLIENT_SECRET",
                &self.graph_client_secret,
            )?),
            mailbox_template: required("LIVESYNC_GRAPH_MAILBOX", &self.graph_mailbox)?,
            base_url: http_url("LIVESYNC_GRAPH_BASE_URL", &base)?,
            login_url: http_url("LIVESYNC_GRAPH_LOGIN_URL", &login)?,
            request_timeout: Duration::from_secs(15),
        })
    }
}

impl Settings {
    /// Connection options for the configured database (`None` without DATABASE_URL).
    pub fn connect_options(&self) -> Option<PgConnectOptions> {
        self.database_url
            .as_deref()
            .and_then(|u| u.parse::<PgConnectOptions>().ok())
            .map(|o| o.application_name("livesync-worker"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = RawSettings::default().validate().unwrap();
        assert_eq!(s.sink, SinkKind::Ics);
        assert_eq!(s.poll_interval, Duration::from_secs(2));
        assert!(!s.poll_only);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let raw = RawSettings {
            sink: Some("outlook".into()),
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("LIVESYNC_SINK") && e.contains("outlook"), "{e}");

        let raw = RawSettings {
            poll_interval_ms: Some("60000".into()),
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("LIVESYNC_POLL_INTERVAL_MS"), "{e}");

        let raw = RawSettings {
            http_addr: Some("localhost".into()),
            ..Default::default()
        };
        assert!(
            raw.validate()
                .unwrap_err()
                .to_string()
                .contains("LIVESYNC_HTTP_ADDR")
        );
    }

    #[test]
    fn a_bad_database_url_never_echoes_it() {
        let raw = RawSettings {
            database_url: Some("mysql://u:s3cret@h/db".into()),
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("DATABASE_URL") && !e.contains("s3cret"), "{e}");
    }
}
