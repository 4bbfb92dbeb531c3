//! Configuration: environment, `.env` (loaded in `main`) and command-line flags, read once
//! into [`Settings`]. Every value is validated at start-up; a bad one is an error naming the
//! variable and what it accepts. Nothing below this module reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;

use crate::verify::schedule::{Every, ScheduleSettings};

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
    /// Compare each person's calendar with Xpert (exit 1 when anything is neither ok nor
    /// foreign); `--repair` queues the repairs (used by livesync-admin verify).
    Verify {
        #[command(flatten)]
        raw: RawSettings,
        #[command(flatten)]
        args: VerifyArgs,
    },
}

/// What `livesync-worker verify` looks at.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The Xpert user name whose calendar to verify.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every person whose live sync is active.
    #[arg(long)]
    pub all: bool,
    /// Queue the repair of everything that is neither ok nor foreign.
    #[arg(long)]
    pub repair: bool,
    /// First day (YYYY-MM-DD, in the firm's time zone); default today.
    #[arg(long, value_parser = parse_date)]
    pub from: Option<chrono::NaiveDate>,
    /// Last day, included (YYYY-MM-DD); default open.
    #[arg(long, value_parser = parse_date)]
    pub to: Option<chrono::NaiveDate>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("\"{s}\" is not a date: use YYYY-MM-DD, e.g. 2026-01-31"))
}

/// The flags and variables as given; [`RawSettings::validate`] turns them into [`Settings`].
/// `Debug` hides the secrets (passwords in `DATABASE_URL`, the CalDAV password, the Graph
/// client secret).
#[derive(Clone, Default, Args)]
pub struct RawSettings {
    /// PostgreSQL URL of the Xpert database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where appointments go: ics | null | caldav | graph | ews.
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

    /// EWS endpoint of Exchange Server, e.g. https://mail.kanzlei.at/EWS/Exchange.asmx.
    #[arg(long, env = "LIVESYNC_EWS_URL")]
    pub ews_url: Option<String>,
    /// The service account (KANZLEI\svc-livesync or a UPN) with ApplicationImpersonation.
    #[arg(long, env = "LIVESYNC_EWS_USERNAME")]
    pub ews_username: Option<String>,
    /// The service account's password. Never logged.
    #[arg(long, env = "LIVESYNC_EWS_PASSWORD", hide_env_values = true)]
    pub ews_password: Option<String>,
    /// Mailbox per user, e.g. {username}@kanzlei.at (overridden by user_settings.calendar_address).
    #[arg(long, env = "LIVESYNC_EWS_MAILBOX")]
    pub ews_mailbox: Option<String>,
    /// ntlm (default) | basic.
    #[arg(long, env = "LIVESYNC_EWS_AUTH")]
    pub ews_auth: Option<String>,
    /// RequestServerVersion (default Exchange2016, also for Exchange 2019 and SE).
    #[arg(long, env = "LIVESYNC_EWS_VERSION")]
    pub ews_version: Option<String>,
    /// PEM file with the firm's internal CA, trusted besides the system's roots.
    #[arg(long, env = "LIVESYNC_EWS_CA_FILE")]
    pub ews_ca_file: Option<PathBuf>,
    /// Requests in flight to the Exchange server at once, all mailboxes together (default 8).
    #[arg(long, env = "LIVESYNC_EWS_MAX_CONCURRENCY")]
    pub ews_max_concurrency: Option<String>,
    /// Requests in flight per mailbox (default 3).
    #[arg(long, env = "LIVESYNC_EWS_MAX_PER_MAILBOX")]
    pub ews_max_per_mailbox: Option<String>,
    /// Address of the admin console in the browser, e.g. 127.0.0.1:9188 (off when unset);
    /// it serves the calendar feeds too unless LIVESYNC_FEED_ADDR is set.
    #[arg(long, env = "LIVESYNC_CONSOLE_ADDR")]
    pub console_addr: Option<String>,
    /// A console session ends after this many idle hours (default 8).
    #[arg(long, env = "LIVESYNC_CONSOLE_SESSION_HOURS")]
    pub console_session_hours: Option<String>,
    /// PEM certificate chain: the console and the feeds are served over HTTPS (rustls).
    #[arg(long, env = "LIVESYNC_CONSOLE_TLS_CERT")]
    pub console_tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long, env = "LIVESYNC_CONSOLE_TLS_KEY")]
    pub console_tls_key: Option<PathBuf>,
    /// Addresses of reverse proxies in front of the console and the feeds (comma-separated
    /// IPs): only their X-Forwarded-For, and the user header, are believed.
    #[arg(long, env = "LIVESYNC_CONSOLE_TRUSTED_PROXIES")]
    pub console_trusted_proxies: Option<String>,
    /// Header in which a trusted reverse proxy names the admin it authenticated (e.g.
    /// X-Remote-User); off when unset.
    #[arg(long, env = "LIVESYNC_CONSOLE_PROXY_USER_HEADER")]
    pub console_proxy_user_header: Option<String>,
    /// Address for the calendar feeds alone, e.g. 0.0.0.0:8443 (default: the console's).
    #[arg(long, env = "LIVESYNC_FEED_ADDR")]
    pub feed_addr: Option<String>,
    /// The address people reach the server by, e.g. https://kalender.kanzlei.at: the base
    /// of feed URLs (default: the address the feeds are served on).
    #[arg(long, env = "LIVESYNC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Scheduled verification (`LIVESYNC_VERIFY_*`), below.
    #[command(flatten)]
    pub verify: RawVerifySettings,
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

/// How the EWS sink signs in (`LIVESYNC_EWS_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EwsAuth {
    /// NTLM (NTLMv2, with channel binding over HTTPS): what an on-premises EWS directory
    /// offers by default.
    Ntlm,
    /// Basic, behind reverse proxies that terminate it.
    Basic,
}

/// The EWS sink's settings (`LIVESYNC_SINK=ews`).
#[derive(Debug, Clone)]
pub struct EwsSettings {
    /// `https://mail.kanzlei.at/EWS/Exchange.asmx`.
    pub url: String,
    /// The service account, as given (`KANZLEI\svc-livesync` or a UPN).
    pub username: String,
    pub password: Secret,
    /// Mailbox template; `{username}` is replaced by the Xpert user name.
    pub mailbox_template: String,
    pub auth: EwsAuth,
    /// `RequestServerVersion`, e.g. `Exchange2016`.
    pub version: String,
    /// Extra trusted root certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Requests in flight to the server at once.
    pub max_concurrency: usize,
    /// Requests in flight per mailbox at once.
    pub max_per_mailbox: usize,
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

/// The admin console's and the feeds' settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// `LIVESYNC_CONSOLE_ADDR`: the console (and the feeds, without `feed_addr`).
    pub addr: Option<SocketAddr>,
    /// `LIVESYNC_FEED_ADDR`: the feeds on an address of their own.
    pub feed_addr: Option<SocketAddr>,
    /// `LIVESYNC_PUBLIC_URL`, without a trailing `/`.
    pub public_url: Option<String>,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// HTTPS with this certificate and key (PEM files), else plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Reverse proxies whose X-Forwarded-For (and user header) are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The header a trusted proxy names its authenticated admin in (lower case).
    pub proxy_user_header: Option<String>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            addr: None,
            feed_addr: None,
            public_url: None,
            session_idle: Duration::from_secs(8 * 3600),
            tls: None,
            trusted_proxies: Vec::new(),
            proxy_user_header: None,
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Ics,
    Null,
    CalDav,
    Graph,
    Ews,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings. Tests build this directly. `Debug` hides the password in
/// `database_url`.
#[derive(Clone)]
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
    /// Entries of the first sink call of a delivery (see `flush`): small for remote
    /// calendars, so the first delivery after a claim is recorded within a second.
    pub first_batch: i64,
    /// Set when `sink` is CalDav.
    pub caldav: Option<CalDavSettings>,
    /// Set when `sink` is Graph.
    pub graph: Option<GraphSettings>,
    /// Set when `sink` is Ews.
    pub ews: Option<EwsSettings>,
    /// The admin console and the calendar feeds.
    pub console: ConsoleSettings,
    /// Scheduled verification. Off in `Settings::default()` (tests ask for it); the
    /// environment's default is nightly.
    pub verify: ScheduleSettings,
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
            first_batch: 500,
            caldav: None,
            graph: None,
            ews: None,
            console: ConsoleSettings::default(),
            verify: ScheduleSettings::OFF,
        }
    }
}

fn hidden(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

impl std::fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSettings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("sink", &self.sink)
            .field("ics_dir", &self.ics_dir)
            .field("log_dir", &self.log_dir)
            .field("http_addr", &self.http_addr)
            .field("poll_only", &self.poll_only)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("session_hours", &self.session_hours)
            .field("max_attempts", &self.max_attempts)
            .field("concurrency", &self.concurrency)
            .field("lease_secs", &self.lease_secs)
            .field("log_format", &self.log_format)
            .field("user_log_max_bytes", &self.user_log_max_bytes)
            .field("caldav_url", &self.caldav_url.as_deref().map(redact_url))
            .field("caldav_username", &self.caldav_username)
            .field("caldav_password", &hidden(&self.caldav_password))
            .field("caldav_max_concurrency", &self.caldav_max_concurrency)
            .field("graph_tenant_id", &self.graph_tenant_id)
            .field("graph_client_id", &self.graph_client_id)
            .field("graph_client_secret", &hidden(&self.graph_client_secret))
            .field("graph_mailbox", &self.graph_mailbox)
            .field(
                "graph_base_url",
                &self.graph_base_url.as_deref().map(redact_url),
            )
            .field(
                "graph_login_url",
                &self.graph_login_url.as_deref().map(redact_url),
            )
            .field("ews_url", &self.ews_url.as_deref().map(redact_url))
            .field("ews_username", &self.ews_username)
            .field("ews_password", &hidden(&self.ews_password))
            .field("ews_mailbox", &self.ews_mailbox)
            .field("ews_auth", &self.ews_auth)
            .field("ews_version", &self.ews_version)
            .field("ews_ca_file", &self.ews_ca_file)
            .field("ews_max_concurrency", &self.ews_max_concurrency)
            .field("ews_max_per_mailbox", &self.ews_max_per_mailbox)
            .field("console_addr", &self.console_addr)
            .field("console_session_hours", &self.console_session_hours)
            .field("console_tls_cert", &self.console_tls_cert)
            .field("console_tls_key", &self.console_tls_key)
            .field("console_trusted_proxies", &self.console_trusted_proxies)
            .field("console_proxy_user_header", &self.console_proxy_user_header)
            .field("feed_addr", &self.feed_addr)
            .field("public_url", &self.public_url.as_deref().map(redact_url))
            .finish()
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("sink", &self.sink)
            .field("ics_dir", &self.ics_dir)
            .field("log_dir", &self.log_dir)
            .field("http_addr", &self.http_addr)
            .field("poll_only", &self.poll_only)
            .field("poll_interval", &self.poll_interval)
            .field("session_limit", &self.session_limit)
            .field("max_attempts", &self.max_attempts)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("log_format", &self.log_format)
            .field("user_log_max_bytes", &self.user_log_max_bytes)
            .field("batch_size", &self.batch_size)
            .field("first_batch", &self.first_batch)
            .field("caldav", &self.caldav)
            .field("graph", &self.graph)
            .field("ews", &self.ews)
            .field("console", &self.console)
            .field("verify", &self.verify)
            .finish()
    }
}

/// `url` for messages and logs: the password of its user info and any `password=`
/// parameter replaced by `***`. Works on text that does not parse as a URL, too; in doubt
/// it hides more than the password.
pub fn redact_url(url: &str) -> String {
    // `password=` parameters first: their values may hold `@`.
    let text = redact_password_parameters(url);
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text.as_str()),
    };
    // A password may hold `/`, `?`, `#` or `@` unencoded: everything before the last `@`
    // is taken for the user info.
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// `password=VALUE` (any case, in a query or a `key=value` connection string) → `password=***`.
fn redact_password_parameters(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let value_start = from + found + KEY.len();
        out.push_str(&text[from..value_start]);
        out.push_str("***");
        let value = &text[value_start..];
        let end = match value.strip_prefix('\'') {
            Some(quoted) => quoted.find('\'').map_or(value.len(), |i| i + 2),
            None => value
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(value.len()),
        };
        from = value_start + end;
    }
    out.push_str(&text[from..]);
    out
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

/// An optional setting: unset or blank gives `default`; otherwise the trimmed value goes to
/// `parse`, whose `Err` says what was expected and is reported with the variable and value.
fn setting<T>(
    variable: &'static str,
    raw: &Option<String>,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(s) => parse(s).map_err(|expected| bad(variable, s, expected)),
    }
}

fn number<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    variable: &'static str,
    raw: &Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    setting(variable, raw, default, |s| match s.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    })
}

fn flag(variable: &'static str, raw: &Option<String>) -> Result<bool, ConfigError> {
    setting(variable, raw, false, |s| {
        match s.to_ascii_lowercase().as_str() {
            "0" | "false" | "no" | "off" => Ok(false),
            "1" | "true" | "yes" | "on" => Ok(true),
            _ => Err("expected true or false".into()),
        }
    })
}

impl RawSettings {
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let defaults = Settings::default();
        let database_url = match self.database_url.as_deref().map(str::trim) {
            None | Some("") => None,
            // The URL may hold a password: it is only ever echoed without it.
            Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                return Err(bad(
                    "DATABASE_URL",
                    &redact_url(url),
                    "expected a postgres:// or postgresql:// URL, e.g. \
                     postgres://livesync_worker@dbhost/xpert",
                ));
            }
            Some(url) => {
                url.parse::<PgConnectOptions>().map_err(|e| {
                    bad(
                        "DATABASE_URL",
                        &redact_url(url),
                        format!("not a usable PostgreSQL URL ({e})"),
                    )
                })?;
                Some(url.to_string())
            }
        };
        let sink = setting("LIVESYNC_SINK", &self.sink, SinkKind::Ics, |s| match s {
            "ics" => Ok(SinkKind::Ics),
            "null" => Ok(SinkKind::Null),
            "caldav" => Ok(SinkKind::CalDav),
            "graph" => Ok(SinkKind::Graph),
            "ews" => Ok(SinkKind::Ews),
            _ => Err("expected one of ics, null, caldav, graph, ews".into()),
        })?;
        let http_addr = setting("LIVESYNC_HTTP_ADDR", &self.http_addr, None, |s| {
            http_addr(s).map(Some)
        })?;
        let log_format = setting(
            "LIVESYNC_LOG_FORMAT",
            &self.log_format,
            LogFormat::Text,
            |s| match s {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            },
        )?;
        let dir = |variable: &'static str, raw: &Option<PathBuf>, default: &PathBuf| match raw {
            Some(p) if p.as_os_str().is_empty() => {
                Err(bad(variable, "", "expected a directory path"))
            }
            Some(p) => Ok(p.clone()),
            None => Ok(default.clone()),
        };
        let ics_dir = dir("LIVESYNC_ICS_DIR", &self.ics_dir, &defaults.ics_dir)?;
        if sink == SinkKind::Ics {
            not_a_file("LIVESYNC_ICS_DIR", &ics_dir)?;
        }
        let log_dir = dir("LIVESYNC_LOG_DIR", &self.log_dir, &defaults.log_dir)?;
        not_a_file("LIVESYNC_LOG_DIR", &log_dir)?;
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
        let ews = if sink == SinkKind::Ews {
            Some(self.ews_settings()?)
        } else {
            None
        };
        let console = self.console_settings()?;
        let verify = self.verify.validate()?;
        Ok(Settings {
            verify,
            caldav,
            graph,
            ews,
            console,
            database_url,
            sink,
            ics_dir,
            log_dir,
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
                SinkKind::CalDav | SinkKind::Graph | SinkKind::Ews => 50,
                SinkKind::Ics | SinkKind::Null => defaults.batch_size,
            },
            // About one round of requests side by side (each sink sends up to 8 at once).
            first_batch: match sink {
                SinkKind::CalDav | SinkKind::Graph | SinkKind::Ews => 8,
                SinkKind::Ics | SinkKind::Null => defaults.first_batch,
            },
        })
    }
}

fn required(
    variable: &'static str,
    raw: &Option<String>,
    sink: &str,
) -> Result<String, ConfigError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Err(bad(
            variable,
            "",
            format!("required with LIVESYNC_SINK={sink} (see .env.example)"),
        )),
        Some(v) => Ok(v.to_string()),
    }
}

/// A directory setting must not name something that exists and is no directory (a file
/// there would make every write fail later). Whether it can be written is the sink's check.
fn not_a_file(variable: &'static str, path: &std::path::Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Err(bad(
            variable,
            &path.display().to_string(),
            "expected a directory, but this is a file",
        )),
        _ => Ok(()),
    }
}

/// `LIVESYNC_HTTP_ADDR`: `host:port`, or a port alone (or `:port`) for loopback. `Err`
/// says what was expected.
fn http_addr(value: &str) -> Result<SocketAddr, String> {
    let port = value.strip_prefix(':').unwrap_or(value);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
            _ => Err("expected a port from 1 to 65535".into()),
        };
    }
    value.parse::<SocketAddr>().map_err(|_| {
        "expected an address with port, e.g. 127.0.0.1:9187 (or a port alone for loopback)".into()
    })
}

/// An absolute `http(s)://` URL with a server, without credentials, query or fragment;
/// `{username}` may stand anywhere in it. Returned without a trailing `/`. Messages show
/// the URL without any password.
fn http_url(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let fail = |expected: String| Err(bad(variable, &redact_url(value), expected));
    if !(value.starts_with("https://") || value.starts_with("http://")) {
        return fail("expected an http:// or https:// URL".into());
    }
    if value.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return fail("expected a URL without spaces (write a space in a path as %20)".into());
    }
    let sample = value.replace(PLACEHOLDER, "x");
    let parsed = match reqwest::Url::parse(&sample) {
        Ok(url) => url,
        Err(e) => return fail(format!("not a valid URL ({e})")),
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return fail("expected a URL naming a server".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return fail(
            "credentials do not belong in the URL: give them in the sink's USERNAME and \
             PASSWORD or CLIENT_SECRET settings"
                .into(),
        );
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return fail("expected a URL without ?query or #fragment".into());
    }
    // The CalDAV transport builds its requests with `http::Uri`: it must take it too.
    if let Err(e) = sample.parse::<http::Uri>() {
        return fail(format!("not a valid URL ({e})"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// The `{username}` placeholder of URL and mailbox templates.
const PLACEHOLDER: &str = "{username}";

/// A GUID as Entra shows it: `11111111-2222-3333-4444-555555555555`.
fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A DNS name such as `kanzlei.onmicrosoft.com`.
fn is_domain(value: &str) -> bool {
    value.len() <= 253
        && value.contains('.')
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl RawSettings {
    fn caldav_settings(&self) -> Result<CalDavSettings, ConfigError> {
        let url = required("LIVESYNC_CALDAV_URL", &self.caldav_url, "caldav")?;
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
        let tenant_id = required("LIVESYNC_GRAPH_TENANT_ID", &self.graph_tenant_id, "graph")?;
        if !(is_guid(&tenant_id) || is_domain(&tenant_id)) {
            return Err(bad(
                "LIVESYNC_GRAPH_TENANT_ID",
                &tenant_id,
                "expected the Directory (tenant) ID, a GUID such as \
                 11111111-2222-3333-4444-555555555555, or the tenant's domain such as \
                 kanzlei.onmicrosoft.com",
            ));
        }
        let client_id = required("LIVESYNC_GRAPH_CLIENT_ID", &self.graph_client_id, "graph")?;
        if !is_guid(&client_id) {
            return Err(bad(
                "LIVESYNC_GRAPH_CLIENT_ID",
                &client_id,
                "expected the Application (client) ID, a GUID such as \
                 aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            ));
        }
        let mailbox_template = required("LIVESYNC_GRAPH_MAILBOX", &self.graph_mailbox, "graph")?;
        if mailbox_template.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '\\')
        }) {
            return Err(bad(
                "LIVESYNC_GRAPH_MAILBOX",
                &mailbox_template,
                "expected a mailbox address such as {username}@kanzlei.at",
            ));
        }
        Ok(GraphSettings {
            tenant_id,
            client_id,
            client_secret: Secret(required(
                "LIVESYNC_GRAPH_CLIENT_SECRET",
                &self.graph_client_secret,
                "graph",
            )?),
            mailbox_template,
            base_url: http_url("LIVESYNC_GRAPH_BASE_URL", &base)?,
            login_url: http_url("LIVESYNC_GRAPH_LOGIN_URL", &login)?,
            request_timeout: Duration::from_secs(15),
        })
    }

    fn ews_settings(&self) -> Result<EwsSettings, ConfigError> {
        let url = required("LIVESYNC_EWS_URL", &self.ews_url, "ews")?;
        if url.contains(PLACEHOLDER) {
            return Err(bad(
                "LIVESYNC_EWS_URL",
                &redact_url(&url),
                "expected the one EWS endpoint of the server, e.g. \
                 https://mail.kanzlei.at/EWS/Exchange.asmx ({username} belongs in \
                 LIVESYNC_EWS_MAILBOX)",
            ));
        }
        let url = http_url("LIVESYNC_EWS_URL", &url)?;
        let username = required("LIVESYNC_EWS_USERNAME", &self.ews_username, "ews")?;
        if username.contains(|c: char| c.is_control() || c == ':') {
            return Err(bad(
                "LIVESYNC_EWS_USERNAME",
                &username,
                "expected the service account as DOMAIN\\name or name@domain",
            ));
        }
        let password = match self.ews_password.as_deref() {
            None | Some("") => {
                return Err(bad(
                    "LIVESYNC_EWS_PASSWORD",
                    "",
                    "required with LIVESYNC_SINK=ews (see .env.example)",
                ));
            }
            Some(p) => Secret(p.to_string()),
        };
        let mailbox_template = required("LIVESYNC_EWS_MAILBOX", &self.ews_mailbox, "ews")?;
        if mailbox_template.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '\\' | '<' | '>')
        }) || !mailbox_template.contains('@')
        {
            return Err(bad(
                "LIVESYNC_EWS_MAILBOX",
                &mailbox_template,
                "expected an SMTP address such as {username}@kanzlei.at",
            ));
        }
        let auth = setting(
            "LIVESYNC_EWS_AUTH",
            &self.ews_auth,
            EwsAuth::Ntlm,
            |s| match s.to_ascii_lowercase().as_str() {
                "ntlm" => Ok(EwsAuth::Ntlm),
                "basic" => Ok(EwsAuth::Basic),
                _ => Err("expected ntlm or basic".into()),
            },
        )?;
        let version = setting(
            "LIVESYNC_EWS_VERSION",
            &self.ews_version,
            "Exchange2016".to_string(),
            ews_version,
        )?;
        let ca_file = match &self.ews_ca_file {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => match std::fs::metadata(p) {
                Ok(meta) if meta.is_file() => Some(p.clone()),
                Ok(_) => {
                    return Err(bad(
                        "LIVESYNC_EWS_CA_FILE",
                        &p.display().to_string(),
                        "expected a PEM file with the firm's CA certificate, but this is no file",
                    ));
                }
                Err(e) => {
                    return Err(bad(
                        "LIVESYNC_EWS_CA_FILE",
                        &p.display().to_string(),
                        format!("expected a readable PEM file ({e})"),
                    ));
                }
            },
            None => None,
        };
        let max_concurrency = number(
            "LIVESYNC_EWS_MAX_CONCURRENCY",
            &self.ews_max_concurrency,
            8usize,
            1,
            64,
        )?;
        let max_per_mailbox = number(
            "LIVESYNC_EWS_MAX_PER_MAILBOX",
            &self.ews_max_per_mailbox,
            3usize,
            1,
            16,
        )?;
        Ok(EwsSettings {
            url,
            username,
            password,
            mailbox_template,
            auth,
            version,
            ca_file,
            max_concurrency,
            max_per_mailbox: max_per_mailbox.min(max_concurrency),
            request_timeout: Duration::from_secs(15),
        })
    }
}

/// `LIVESYNC_EWS_VERSION`: a `RequestServerVersion` that knows `StartTimeZone` (Exchange
/// 2010 on). Exchange 2019 and Subscription Edition speak `Exchange2016`.
fn ews_version(value: &str) -> Result<String, String> {
    const NAMED: &[&str] = &[
        "Exchange2010",
        "Exchange2010_SP1",
        "Exchange2010_SP2",
        "Exchange2013",
        "Exchange2013_SP1",
        "Exchange2016",
    ];
    if let Some(v) = NAMED.iter().find(|v| v.eq_ignore_ascii_case(value)) {
        return Ok((*v).to_string());
    }
    // The dated versions Exchange names after 2016 (V2017_04_14 …).
    let dated = value.len() == 11
        && value.starts_with('V')
        && value[1..].bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'_'
            } else {
                b.is_ascii_digit()
            }
        });
    if dated {
        return Ok(value.to_string());
    }
    Err(format!(
        "expected one of {} (Exchange 2019 and Subscription Edition: Exchange2016)",
        NAMED.join(", ")
    ))
}

impl RawSettings {
    fn console_settings(&self) -> Result<ConsoleSettings, ConfigError> {
        let address = |variable: &'static str, raw: &Option<String>| {
            setting(variable, raw, None, |s| http_addr(s).map(Some))
        };
        let tls = match (&self.console_tls_cert, &self.console_tls_key) {
            (None, None) => None,
            (Some(cert), Some(key))
                if !cert.as_os_str().is_empty() && !key.as_os_str().is_empty() =>
            {
                for (variable, path) in [
                    ("LIVESYNC_CONSOLE_TLS_CERT", cert),
                    ("LIVESYNC_CONSOLE_TLS_KEY", key),
                ] {
                    if !path.is_file() {
                        return Err(bad(
                            variable,
                            &path.display().to_string(),
                            "expected a PEM file the worker can read",
                        ));
                    }
                }
                Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
            }
            (cert, _) => {
                let (variable, given) = match cert {
                    Some(c) if !c.as_os_str().is_empty() => {
                        ("LIVESYNC_CONSOLE_TLS_KEY", String::new())
                    }
                    _ => ("LIVESYNC_CONSOLE_TLS_CERT", String::new()),
                };
                return Err(bad(
                    variable,
                    &given,
                    "LIVESYNC_CONSOLE_TLS_CERT and LIVESYNC_CONSOLE_TLS_KEY go together: give both \
                     PEM files, or neither (plain HTTP, e.g. behind a reverse proxy)",
                ));
            }
        };
        let trusted_proxies = setting(
            "LIVESYNC_CONSOLE_TRUSTED_PROXIES",
            &self.console_trusted_proxies,
            Vec::new(),
            |s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.parse::<std::net::IpAddr>().map_err(|_| {
                            format!("expected IP addresses separated by commas, not {p:?}")
                        })
                    })
                    .collect()
            },
        )?;
        let proxy_user_header = setting(
            "LIVESYNC_CONSOLE_PROXY_USER_HEADER",
            &self.console_proxy_user_header,
            None,
            |s| match http::HeaderName::from_bytes(s.as_bytes()) {
                Ok(name) => Ok(Some(name.as_str().to_string())),
                Err(_) => Err("expected an HTTP header name such as X-Remote-User".into()),
            },
        )?;
        if proxy_user_header.is_some() && trusted_proxies.is_empty() {
            return Err(bad(
                "LIVESYNC_CONSOLE_PROXY_USER_HEADER",
                self.console_proxy_user_header
                    .as_deref()
                    .unwrap_or_default(),
                "the header is believed only from the reverse proxies named in \
                 LIVESYNC_CONSOLE_TRUSTED_PROXIES: set that too",
            ));
        }
        let public_url = match self.public_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(http_url("LIVESYNC_PUBLIC_URL", url)?),
        };
        Ok(ConsoleSettings {
            addr: address("LIVESYNC_CONSOLE_ADDR", &self.console_addr)?,
            feed_addr: address("LIVESYNC_FEED_ADDR", &self.feed_addr)?,
            public_url,
            session_idle: Duration::from_secs(
                3600 * number(
                    "LIVESYNC_CONSOLE_SESSION_HOURS",
                    &self.console_session_hours,
                    8u64,
                    1,
                    720,
                )?,
            ),
            tls,
            trusted_proxies,
            proxy_user_header,
        })
    }
}

// ── Scheduled verification (`LIVESYNC_VERIFY_*`) ─────────────────────────────────────────

/// How the worker verifies every calendar on a schedule (`crate::verify::schedule`).
#[derive(Clone, Debug, Default, Args)]
pub struct RawVerifySettings {
    /// When to verify every calendar against Xpert: nightly (03:00 in the firm's time zone,
    /// the default), a time of day (HH:MM), a duration (6h, 30m, 1d), or off.
    #[arg(long, env = "LIVESYNC_VERIFY_EVERY")]
    pub verify_every: Option<String>,
    /// Pause between two people during a scheduled verification, in seconds (default 5):
    /// keeps Graph's and EWS's throttling budgets.
    #[arg(long, env = "LIVESYNC_VERIFY_PAUSE_SECS")]
    pub verify_pause_secs: Option<String>,
    /// Queue the repair of what a scheduled verification finds (default false).
    #[arg(long, env = "LIVESYNC_VERIFY_REPAIR")]
    pub verify_repair: Option<String>,
}

impl RawVerifySettings {
    fn validate(&self) -> Result<ScheduleSettings, ConfigError> {
        let defaults = ScheduleSettings::DEFAULT;
        Ok(ScheduleSettings {
            every: setting(
                "LIVESYNC_VERIFY_EVERY",
                &self.verify_every,
                defaults.every,
                Every::parse,
            )?,
            pause: Duration::from_secs(number(
                "LIVESYNC_VERIFY_PAUSE_SECS",
                &self.verify_pause_secs,
                defaults.pause.as_secs(),
                0,
                3600,
            )?),
            repair: flag("LIVESYNC_VERIFY_REPAIR", &self.verify_repair)?,
        })
    }
}

#[cfg(test)]
mod verify_settings_tests {
    use super::*;

    #[test]
    fn verification_is_nightly_with_a_pause_and_without_repair_by_default() {
        let s = RawSettings::default().validate().unwrap();
        assert_eq!(s.verify, ScheduleSettings::DEFAULT);
        assert_eq!(
            s.verify.every,
            Every::Daily(crate::verify::schedule::NIGHTLY_AT)
        );
        assert_eq!(s.verify.pause, Duration::from_secs(5));
        assert!(!s.verify.repair);
    }

    #[test]
    fn verification_settings_are_read_and_a_bad_one_is_named() {
        let raw = RawSettings {
            verify: RawVerifySettings {
                verify_every: Some("6h".into()),
                verify_pause_secs: Some("0".into()),
                verify_repair: Some("true".into()),
            },
            ..Default::default()
        };
        let s = raw.validate().unwrap().verify;
        assert_eq!(s.every, Every::Interval(Duration::from_secs(6 * 3600)));
        assert_eq!(s.pause, Duration::ZERO);
        assert!(s.repair);
        let raw = RawSettings {
            verify: RawVerifySettings {
                verify_every: Some("weekly".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(
            e.contains("LIVESYNC_VERIFY_EVERY") && e.contains("nightly"),
            "{e}"
        );
    }
}

// ── end of scheduled verification ───────────────────────────────────────────────────────

impl Settings {
    /// Connection options for the configured database (`None` without DATABASE_URL).
    pub fn connect_options(&self) -> Option<PgConnectOptions> {
        self.database_url
            .as_deref()
            .and_then(|u| u.parse::<PgConnectOptions>().ok())
            .map(|o| livesync_core::session::configure(o.application_name("livesync-worker")))
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
    fn urls_are_shown_without_passwords() {
        for (url, shown) in [
            (
                "postgres://worker:s3cret@db:5432/xpert",
                "postgres://worker:***@db:5432/xpert",
            ),
            (
                "postgres://worker:s3/c?r#e@t@db/xpert?sslmode=require",
                "postgres://worker:***@db/xpert?sslmode=require",
            ),
            (
                "postgres://db/xpert?user=w&password=s3cret&sslmode=require",
                "postgres://db/xpert?user=w&password=***&sslmode=require",
            ),
            (
                "host=db password='s3 cret' dbname=xpert",
                "host=db password=*** dbname=xpert",
            ),
            (
                "host=db password=s3#c@r:et/ dbname=xpert",
                "host=db password=*** dbname=xpert",
            ),
            ("worker:s3cret@db/xpert", "worker:***@db/xpert"),
            (
                "https://dav.kanzlei.at/{username}/",
                "https://dav.kanzlei.at/{username}/",
            ),
            ("https://svc@dav.kanzlei.at/", "https://svc@dav.kanzlei.at/"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn debug_output_hides_every_secret() {
        let raw = RawSettings {
            database_url: Some("postgres://w:pg-s3cret@db/xpert".into()),
            sink: Some("graph".into()),
            caldav_password: Some("dav-s3cret".into()),
            graph_tenant_id: Some("kanzlei.onmicrosoft.com".into()),
            graph_client_id: Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
            graph_client_secret: Some("graph-s3cret".into()),
            graph_mailbox: Some("{username}@kanzlei.at".into()),
            ..Default::default()
        };
        let settings = raw.validate().unwrap();
        let shown = format!("{raw:?} {settings:?}");
        for secret in ["pg-s3cret", "dav-s3cret", "graph-s3cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("kanzlei.onmicrosoft.com"), "{shown}");
    }

    #[test]
    fn a_port_alone_listens_on_loopback() {
        for given in ["9187", ":9187"] {
            let raw = RawSettings {
                http_addr: Some(given.into()),
                ..Default::default()
            };
            let addr = raw.validate().unwrap().http_addr.unwrap();
            assert!(
                addr.ip().is_loopback() && addr.port() == 9187,
                "{given}: {addr}"
            );
        }
        let raw = RawSettings {
            http_addr: Some("0.0.0.0:9187".into()),
            ..Default::default()
        };
        assert!(
            !raw.validate()
                .unwrap()
                .http_addr
                .unwrap()
                .ip()
                .is_loopback()
        );
        let raw = RawSettings {
            http_addr: Some("99999".into()),
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(
            e.contains("LIVESYNC_HTTP_ADDR") && e.contains("99999"),
            "{e}"
        );
    }

    #[test]
    fn calendar_urls_and_ids_are_checked_and_named() {
        let caldav = |url: &str| RawSettings {
            sink: Some("caldav".into()),
            caldav_url: Some(url.into()),
            ..Default::default()
        };
        assert!(
            caldav("https://dav.kanzlei.at/{username}/notarxpert/")
                .validate()
                .is_ok()
        );
        for (url, needle) in [
            ("dav.kanzlei.at/{username}/", "http:// or https://"),
            ("https://dav kanzlei.at/{username}/", "without spaces"),
            (
                "https://dav.kanzlei.at:99999/{username}/",
                "not a valid URL",
            ),
            ("https:///{username}/", "not a valid URL"),
            ("https://dav.kanzlei.at/{username}/?x=1", "?query"),
        ] {
            let e = caldav(url).validate().unwrap_err().to_string();
            assert!(
                e.contains("LIVESYNC_CALDAV_URL") && e.contains(needle),
                "{url}: {e}"
            );
        }
        let e = caldav("https://svc:dav-s3cret@dav.kanzlei.at/{username}/")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("credentials") && !e.contains("dav-s3cret"),
            "{e}"
        );
        assert!(
            e.contains("https://svc:***@dav.kanzlei.at/{username}/"),
            "{e}"
        );

        let graph = |tenant: &str, client: &str, base: &str| RawSettings {
            sink: Some("graph".into()),
            graph_tenant_id: Some(tenant.into()),
            graph_client_id: Some(client.into()),
            graph_client_secret: Some("graph-s3cret".into()),
            graph_mailbox: Some("{username}@kanzlei.at".into()),
            graph_base_url: Some(base.into()),
            ..Default::default()
        };
        let guid = "11111111-2222-3333-4444-555555555555";
        let base = "https://graph.microsoft.com/v1.0";
        assert!(graph(guid, guid, base).validate().is_ok());
        assert!(
            graph("kanzlei.onmicrosoft.com", guid, base)
                .validate()
                .is_ok()
        );
        for (settings, variable, value) in [
            (
                graph("kanzlei tenant", guid, base),
                "LIVESYNC_GRAPH_TENANT_ID",
                "kanzlei tenant",
            ),
            (
                graph("../../evil", guid, base),
                "LIVESYNC_GRAPH_TENANT_ID",
                "../../evil",
            ),
            (
                graph(guid, "livesync-app", base),
                "LIVESYNC_GRAPH_CLIENT_ID",
                "livesync-app",
            ),
            (
                graph(guid, guid, "graph.microsoft.com"),
                "LIVESYNC_GRAPH_BASE_URL",
                "graph.microsoft.com",
            ),
        ] {
            let e = settings.validate().unwrap_err().to_string();
            assert!(e.contains(variable) && e.contains(value), "{e}");
            assert!(!e.contains("graph-s3cret"), "{e}");
        }
    }

    #[test]
    fn ews_settings_are_checked_named_and_never_show_the_password() {
        let ews = |url: &str, mailbox: &str, auth: &str, version: &str| RawSettings {
            sink: Some("ews".into()),
            ews_url: Some(url.into()),
            ews_username: Some("KANZLEI\\svc-livesync".into()),
            ews_password: Some("ews-s3cret".into()),
            ews_mailbox: Some(mailbox.into()),
            ews_auth: Some(auth.into()),
            ews_version: Some(version.into()),
            ..Default::default()
        };
        let url = "https://mail.kanzlei.at/EWS/Exchange.asmx";
        let mailbox = "{username}@kanzlei.at";
        let s = ews(url, mailbox, "", "").validate().unwrap();
        let e = s.ews.as_ref().unwrap();
        assert_eq!(s.sink, SinkKind::Ews);
        assert_eq!(e.auth, EwsAuth::Ntlm);
        assert_eq!(e.version, "Exchange2016");
        assert_eq!((e.max_concurrency, e.max_per_mailbox), (8, 3));
        assert_eq!((s.batch_size, s.first_batch), (50, 8));
        let shown = format!("{s:?} {:?}", ews(url, mailbox, "", ""));
        assert!(!shown.contains("ews-s3cret"), "{shown}");
        assert_eq!(
            ews(url, mailbox, "BASIC", "V2017_04_14")
                .validate()
                .unwrap()
                .ews
                .unwrap()
                .auth,
            EwsAuth::Basic
        );
        for (raw, variable, needle) in [
            (
                ews("mail.kanzlei.at", mailbox, "", ""),
                "LIVESYNC_EWS_URL",
                "https://",
            ),
            (
                ews("https://mail.kanzlei.at/{username}/EWS", mailbox, "", ""),
                "LIVESYNC_EWS_URL",
                "LIVESYNC_EWS_MAILBOX",
            ),
            (
                ews(url, "{username}", "", ""),
                "LIVESYNC_EWS_MAILBOX",
                "SMTP",
            ),
            (
                ews(url, mailbox, "kerberos", ""),
                "LIVESYNC_EWS_AUTH",
                "ntlm or basic",
            ),
            (
                ews(url, mailbox, "", "Exchange2019"),
                "LIVESYNC_EWS_VERSION",
                "Exchange2016",
            ),
        ] {
            let e = raw.validate().unwrap_err().to_string();
            assert!(e.contains(variable) && e.contains(needle), "{e}");
            assert!(!e.contains("ews-s3cret"), "{e}");
        }
        let mut missing = ews(url, mailbox, "", "");
        missing.ews_password = None;
        let e = missing.validate().unwrap_err().to_string();
        assert!(e.contains("LIVESYNC_EWS_PASSWORD"), "{e}");
        let mut ca = ews(url, mailbox, "", "");
        ca.ews_ca_file = Some("/nonexistent/kanzlei-ca.pem".into());
        let e = ca.validate().unwrap_err().to_string();
        assert!(e.contains("LIVESYNC_EWS_CA_FILE"), "{e}");
    }

    #[test]
    fn console_settings_are_checked_and_named() {
        let s = RawSettings::default().validate().unwrap();
        assert_eq!(s.console.addr, None);
        assert_eq!(s.console.session_idle, Duration::from_secs(8 * 3600));
        let raw = RawSettings {
            console_addr: Some("9188".into()),
            feed_addr: Some("0.0.0.0:8443".into()),
            console_session_hours: Some("2".into()),
            console_trusted_proxies: Some("127.0.0.1, ::1".into()),
            console_proxy_user_header: Some("X-Remote-User".into()),
            public_url: Some("https://kalender.kanzlei.at/".into()),
            ..Default::default()
        };
        let c = raw.validate().unwrap().console;
        assert!(c.addr.unwrap().ip().is_loopback());
        assert_eq!(c.feed_addr.unwrap().port(), 8443);
        assert_eq!(c.session_idle, Duration::from_secs(7200));
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.proxy_user_header.as_deref(), Some("x-remote-user"));
        assert_eq!(c.public_url.as_deref(), Some("https://kalender.kanzlei.at"));
        for (raw, variable) in [
            (
                RawSettings {
                    console_proxy_user_header: Some("X-Remote-User".into()),
                    ..Default::default()
                },
                "LIVESYNC_CONSOLE_PROXY_USER_HEADER",
            ),
            (
                RawSettings {
                    console_trusted_proxies: Some("proxy.kanzlei.at".into()),
                    ..Default::default()
                },
                "LIVESYNC_CONSOLE_TRUSTED_PROXIES",
            ),
            (
                RawSettings {
                    console_tls_cert: Some("/etc/livesync/console.crt".into()),
                    ..Default::default()
                },
                "LIVESYNC_CONSOLE_TLS_KEY",
            ),
            (
                RawSettings {
                    console_tls_cert: Some("/nonexistent/console.crt".into()),
                    console_tls_key: Some("/nonexistent/console.key".into()),
                    ..Default::default()
                },
                "LIVESYNC_CONSOLE_TLS_CERT",
            ),
            (
                RawSettings {
                    console_session_hours: Some("0".into()),
                    ..Default::default()
                },
                "LIVESYNC_CONSOLE_SESSION_HOURS",
            ),
            (
                RawSettings {
                    public_url: Some("kalender.kanzlei.at".into()),
                    ..Default::default()
                },
                "LIVESYNC_PUBLIC_URL",
            ),
            (
                RawSettings {
                    feed_addr: Some("localhost".into()),
                    ..Default::default()
                },
                "LIVESYNC_FEED_ADDR",
            ),
        ] {
            let e = raw.validate().unwrap_err().to_string();
            assert!(e.contains(variable), "{variable}: {e}");
        }
    }

    #[test]
    fn a_flag_is_named_as_given() {
        let raw = RawSettings {
            poll_only: Some("Vielleicht".into()),
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("LIVESYNC_POLL_ONLY=\"Vielleicht\""), "{e}");
    }

    #[test]
    fn a_bad_database_url_never_echoes_it() {
        let raw = RawSettings {
            database_url: Some("mysql://u:s3cret@h/db".into()),
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("DATABASE_URL") && !e.contains("s3cret"), "{e}");
        assert!(e.contains("mysql://u:***@h/db"), "names the value: {e}");

        let raw = RawSettings {
            database_url: Some("postgres://u:s3cret@h:port/db".into()),
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("DATABASE_URL") && !e.contains("s3cret"), "{e}");
        assert!(e.contains("postgres://u:***@h:port/db"), "{e}");
    }
}
