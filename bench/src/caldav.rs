//! `livesync-bench caldav`: the real worker delivering into a local Radicale with the CalDAV
//! sink, beside the best a plain sequential PUT loop reaches against the same server.
//!
//! Also the pieces the chaos driver needs for CalDAV: a private Radicale (from `.venv`,
//! htpasswd auth with one account per Xpert user, `owner_only` rights) that can be killed and
//! started again on the same port and data, a small HTTP/1.1 client, and reading a calendar
//! back over CalDAV (`REPORT calendar-query` with the calendar data).
//!
//! Method. One Radicale per run. Each round (rounds interleave, the order alternating):
//! - *worker*: a copy of a seeded database (`users` × `per_user` appointments queued while
//!   everyone was offline, one participant each), the real `livesync-worker run` with
//!   `LIVESYNC_SINK=caldav` into fresh collections `/<user>/notarxpert-r<round>/` (per-person
//!   credentials); once it idles, every user logs in, and the clock runs from just before the
//!   first login to the last delivery (`max(delivered_at)`, stamped after the sink call). The
//!   worker creates each calendar itself (PROPFIND, MKCALENDAR), as on a first delivery.
//! - *PUT loop*: one task, one request at a time, the same number of events with bodies like
//!   the worker's, `If-None-Match: *`, into fresh collections `/<user>/put-r<round>/` made
//!   beforehand with MKCALENDAR (timed apart). Radicale's built-in server speaks HTTP/1.0 and
//!   closes every connection after one answer, so the loop (like the worker) opens one
//!   connection per request; the client keeps a connection when a server allows it.
//!
//! Both go into one calendar per user with the same number of objects, because Radicale
//! looks through a collection's objects for a UID conflict on every PUT: the layout has to
//! match for the rates to compare.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::delivery::errors_section;
use super::latency::ms_between;
use super::seed::Template;
use super::server::BenchServer;
use super::stats::{median, range};
use super::storm;
use super::worker_proc::{
    self, Sink, WorkerProc, command_output, cpu_model, load_average, source_commit,
};

/// Passwords of the Radicale accounts, `{username}` replaced (as a firm might set
/// `LIVESYNC_CALDAV_PASSWORD`).
pub const PASSWORD_TEMPLATE: &str = "Kennwort-{username}-7";

pub fn password_of(username: &str) -> String {
    PASSWORD_TEMPLATE.replace("{username}", username)
}

/// `.venv/bin` of the checkout (made by `scripts/caldav-venv.sh`).
fn venv_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join(".venv")
        .join("bin")
}

pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A private Radicale: loopback port, data and log under `dir`, htpasswd (plain) accounts
/// `user1`…, each allowed only its own calendars.
pub struct Radicale {
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    pub version: String,
}

impl Radicale {
    /// Start Radicale with accounts for Xpert users 1…`users`.
    pub async fn start(dir: &Path, users: u32) -> anyhow::Result<Radicale> {
        let bin = venv_bin().join("radicale");
        if !bin.exists() {
            bail!(
                "{} is missing: run scripts/caldav-venv.sh (it installs Radicale into .venv)",
                bin.display()
            );
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let accounts: String = (1..=users)
            .map(|u| format!("user{u}:{}\n", password_of(&format!("user{u}"))))
            .collect();
        std::fs::write(dir.join("users"), accounts)?;
        let python = venv_bin().join("python");
        let version = command_output(
            &python.to_string_lossy(),
            &["-c", "import radicale; print(radicale.VERSION)"],
        )
        .unwrap_or_else(|| "unknown".into());
        let mut r = Radicale {
            port: free_port()?,
            dir: dir.to_path_buf(),
            child: None,
            version,
        };
        r.resume().await?;
        Ok(r)
    }

    /// Start the server process (again, on the same port and data); wait until it answers.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("Radicale is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("radicale.log"))?;
        let child = tokio::process::Command::new(venv_bin().join("radicale"))
            .arg("--config")
            .arg("")
            .arg("--server-hosts")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--auth-type")
            .arg("htpasswd")
            .arg("--auth-htpasswd-filename")
            .arg(self.dir.join("users"))
            .arg("--auth-htpasswd-encryption")
            .arg("plain")
            .arg("--rights-type")
            .arg("owner_only")
            .arg("--storage-filesystem-folder")
            .arg(self.dir.join("data"))
            .arg("--logging-level")
            .arg("warning")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start Radicale")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Listening is not enough: wait for an HTTP answer.
            if let Ok(r) = Http::new(self.port).request("OPTIONS", "/", &[], b"").await
                && r.status > 0
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "Radicale exited at start ({status}); see {}",
                    self.dir.join("radicale.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("Radicale did not answer on port {} within 30 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as in an outage; the data stays.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points the worker's CalDAV sink at `/<user>/<collection>/`.
    pub fn worker_env(&self, collection: &str) -> Vec<(String, String)> {
        vec![
            (
                "LIVESYNC_CALDAV_URL".into(),
                format!("{}/{{username}}/{collection}/", self.origin()),
            ),
            ("LIVESYNC_CALDAV_USERNAME".into(), "{username}".into()),
            ("LIVESYNC_CALDAV_PASSWORD".into(), PASSWORD_TEMPLATE.into()),
        ]
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("radicale.log")
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client for a loopback server: one request at a time, the connection
/// kept while the server allows it.
pub struct Http {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far.
    pub connects: u64,
}

impl Http {
    pub fn new(port: u16) -> Http {
        Http {
            port,
            conn: None,
            connects: 0,
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Response> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut reused = self.conn.is_some();
        loop {
            if self.conn.is_none() {
                let stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
                stream.set_nodelay(true)?;
                self.conn = Some(BufReader::new(stream));
                self.connects += 1;
            }
            let Some(conn) = self.conn.as_mut() else {
                unreachable!()
            };
            let sent = async {
                let s = conn.get_mut();
                s.write_all(head.as_bytes()).await?;
                s.write_all(body).await?;
                s.flush().await?;
                read_response(conn, method == "HEAD").await
            }
            .await;
            match sent {
                Ok((response, keep)) => {
                    if !keep {
                        self.conn = None;
                    }
                    return Ok(response);
                }
                // A kept connection the server has closed meanwhile: once more on a new one.
                Err(_) if reused => {
                    self.conn = None;
                    reused = false;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
    }
}

async fn read_response(
    conn: &mut BufReader<TcpStream>,
    head_only: bool,
) -> anyhow::Result<(Response, bool)> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        bail!("connection closed before an answer");
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            bail!("connection closed in the headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let connection = get("connection").unwrap_or_default();
    let mut keep = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let mut body = Vec::new();
    let no_body = head_only || status < 200 || status == 204 || status == 304;
    if no_body {
        // Nothing follows the headers.
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await?;
            line.clear();
            conn.read_line(&mut line).await?;
        }
    } else if let Some(n) = get("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body.resize(n, 0);
        conn.read_exact(&mut body).await?;
    } else {
        conn.read_to_end(&mut body).await?;
        keep = false;
    }
    Ok((
        Response {
            status,
            headers,
            body,
        },
        keep,
    ))
}

/// `Basic …` for a user and password.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | (b[2] as u32);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const MKCALENDAR_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
    r#"<D:set><D:prop><D:displayname>notarXpert</D:displayname>"#,
    r#"<C:supported-calendar-component-set><C:comp name="VEVENT"/>"#,
    r#"</C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#
);

const PROPFIND_ETAGS_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>"#
);

const CALENDAR_QUERY_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
    r#"<D:prop><D:getetag/><C:calendar-data/></D:prop>"#,
    r#"<C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>"#
);

/// `method` on the calendar `/<user>/<collection>/` as `user`, with an XML body and, for
/// all but MKCALENDAR, `Depth: 1`. Returns the path (for messages) and the answer.
async fn on_collection(
    http: &mut Http,
    method: &str,
    user: &str,
    collection: &str,
    body: &str,
) -> anyhow::Result<(String, Response)> {
    let auth = basic_auth(user, &password_of(user));
    let path = format!("/{user}/{collection}/");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/xml; charset=utf-8"),
    ];
    if method != "MKCALENDAR" {
        headers.push(("Depth", "1"));
    }
    let r = http
        .request(method, &path, &headers, body.as_bytes())
        .await?;
    Ok((path, r))
}

/// Create the calendar `/<user>/<collection>/`.
pub async fn mkcalendar(http: &mut Http, user: &str, collection: &str) -> anyhow::Result<()> {
    let (path, r) = on_collection(http, "MKCALENDAR", user, collection, MKCALENDAR_BODY).await?;
    if !(200..300).contains(&r.status) {
        bail!(
            "MKCALENDAR {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}

/// Every object of `/<user>/<collection>/`, read over CalDAV: (href, its iCalendar text).
/// A calendar that does not exist (never delivered to) is empty.
pub async fn read_calendar(
    http: &mut Http,
    user: &str,
    collection: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let (path, r) = on_collection(http, "REPORT", user, collection, CALENDAR_QUERY_BODY).await?;
    if r.status == 404 {
        return Ok(Vec::new());
    }
    if r.status != 207 {
        bail!("REPORT {path}: {}", r.status);
    }
    let xml = String::from_utf8_lossy(&r.body);
    let mut out = Vec::new();
    for response in elements(&xml, "response") {
        let href = elements(response, "href")
            .first()
            .map(|h| unescape(h.trim()))
            .unwrap_or_default();
        if let Some(data) = elements(response, "calendar-data").first() {
            out.push((href, unescape(data)));
        }
    }
    Ok(out)
}

/// The contents of every element with local name `name` (any namespace prefix), not nested.
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        let tag = &rest[i + 1..];
        let end_of_name = tag
            .find(|c: char| c == '>' || c == '/' || c.is_whitespace())
            .unwrap_or(tag.len());
        let full = &tag[..end_of_name];
        let local = full.rsplit(':').next().unwrap_or(full);
        if local == name && !full.starts_with('/') {
            let Some(gt) = tag.find('>') else { break };
            if tag[..gt].ends_with('/') {
                out.push("");
                rest = &tag[gt + 1..];
                continue;
            }
            let content = &tag[gt + 1..];
            let close = format!("</{full}>");
            let Some(j) = content.find(&close) else { break };
            out.push(&content[..j]);
            rest = &content[j + close.len()..];
        } else {
            rest = tag;
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let c = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=semi]),
        }
        rest = &tail[semi + 1..];
    }
    out.push_str(rest);
    out
}

/// How many `.ics` objects `/<user>/<collection>/` holds (PROPFIND, depth 1).
pub async fn count_objects(http: &mut Http, user: &str, collection: &str) -> anyhow::Result<usize> {
    let (_, r) = on_collection(http, "PROPFIND", user, collection, PROPFIND_ETAGS_BODY).await?;
    if r.status == 404 {
        return Ok(0);
    }
    let xml = String::from_utf8_lossy(&r.body);
    Ok(elements(&xml, "href")
        .iter()
        .filter(|h| h.trim().ends_with(".ics"))
        .count())
}

/// A calendar object like the worker's for the seeded appointment `k` of user `u`.
fn event_body(u: u32, k: u32, round: u32) -> String {
    let start = Utc::now() + chrono::Duration::hours(24 + k as i64);
    let end = start + chrono::Duration::hours(1);
    let f = |t: DateTime<Utc>| t.format("%Y%m%dT%H0000Z").to_string();
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//notarXpert//livesync//DE\r\nCALSCALE:GREGORIAN\r\n\
         X-WR-CALNAME:notarXpert\r\nBEGIN:VEVENT\r\nUID:bench-r{round}-{u}-{k}@livesync\r\n\
         DTSTAMP:{}\r\nSEQUENCE:0\r\nSUMMARY:Besprechung {u}/{k}\r\n\
         LOCATION:Kanzlei\\, Besprechungszimmer 2\r\n\
         DESCRIPTION:Aktenzahl {u}/{k}/26\\; Unterlagen mitbringen\r\n\
         DTSTART:{}\r\nDTEND:{}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        f(Utc::now()),
        f(start),
        f(end)
    )
}

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub quick: bool,
    pub users: u32,
    pub per_user: u32,
    pub rounds: u32,
    pub worker_bin: Option<PathBuf>,
    /// Extra `KEY=VALUE` settings for the worker (experiments, e.g.
    /// `LIVESYNC_CALDAV_MAX_CONCURRENCY=8`).
    pub worker_env: Vec<(String, String)>,
}

impl Config {
    pub fn full() -> Config {
        Config {
            quick: false,
            users: 50,
            per_user: 20,
            rounds: 5,
            worker_bin: None,
            worker_env: Vec::new(),
        }
    }
    /// About half a minute: 10 users × 10 changes, 3 rounds.
    pub fn quick() -> Config {
        Config {
            quick: true,
            users: 10,
            per_user: 10,
            rounds: 3,
            ..Config::full()
        }
    }
}

/// The worker in one round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerRound {
    pub round: u32,
    pub entries: u64,
    pub delivered: u64,
    /// Objects found in the calendars afterwards.
    pub objects: u64,
    pub dead_letters: i64,
    pub drained: bool,
    /// From just before the first login to the last delivery.
    pub seconds: f64,
    pub changes_per_s: f64,
    /// The worker's CalDAV requests by method: (count, mean seconds), from `/metrics`.
    pub requests: BTreeMap<String, (f64, f64)>,
}

/// The PUT loop in one round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PutRound {
    pub round: u32,
    pub events: u64,
    pub failed: u64,
    /// MKCALENDAR of the fresh collections, before the clock.
    pub mkcalendar_seconds: f64,
    pub seconds: f64,
    pub changes_per_s: f64,
    /// Counting the MKCALENDARs too (the worker's clock includes its own).
    pub changes_per_s_with_mkcalendar: f64,
    pub mean_put_ms: f64,
    /// TCP connections the loop opened.
    pub connections: u64,
}

/// Median and range of one figure over the rounds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn summary(values: &[f64]) -> Option<Summary> {
    let m = median(values)?;
    let (min, max) = range(values)?;
    Some(Summary {
        median: m,
        min,
        max,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub started_at: String,
    pub seconds: f64,
    pub config: Config,
    pub machine: String,
    pub load_at_start: String,
    pub load_at_end: String,
    pub postgres: String,
    pub radicale: String,
    pub worker_bin: String,
    pub source_commit: String,
    pub worker: Vec<WorkerRound>,
    pub put_loop: Vec<PutRound>,
    pub worker_changes_per_s: Option<Summary>,
    pub put_loop_changes_per_s: Option<Summary>,
    /// worker ÷ PUT loop, per round.
    pub ratio: Option<Summary>,
    pub errors: Vec<String>,
    pub work_dir: String,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpus} CPUs ({})", cpu_model())
}

/// Run the scenario.
pub async fn run(server: &BenchServer, config: Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_at = Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let load_at_start = load_average();
    let bin = worker_proc::find_bin(config.worker_bin.clone())?;
    let postgres = server.describe_settings().await?.version;
    let work_dir =
        std::env::temp_dir().join(format!("livesync-bench-caldav-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let mut radicale = Radicale::start(&work_dir.join("radicale"), config.users).await?;
    eprintln!(
        "caldav: Radicale {} on port {}, {} users × {} changes, {} rounds",
        radicale.version, radicale.port, config.users, config.per_user, config.rounds
    );

    let (users, per_user) = (config.users, config.per_user);
    let template = storm::seed_template(
        server,
        format!("livesync_bench_caldav_seed_{users}x{per_user}"),
        users,
        per_user,
    )
    .await?;
    let mut worker_rounds = Vec::new();
    let mut put_rounds = Vec::new();
    let mut errors = Vec::new();
    for round in 1..=config.rounds {
        let worker_first = round % 2 == 1;
        for part in 0..2 {
            if (part == 0) == worker_first {
                match worker_round(
                    server, &template, &bin, &radicale, &config, round, &work_dir,
                )
                .await
                {
                    Ok(r) => {
                        eprintln!(
                            "caldav: round {round}, worker: {:.2} s, {:.0} changes/s",
                            r.seconds, r.changes_per_s
                        );
                        worker_rounds.push(r)
                    }
                    Err(e) => errors.push(format!("round {round}, worker: {e:#}")),
                }
            } else {
                match put_round(&radicale, &config, round).await {
                    Ok(r) => {
                        eprintln!(
                            "caldav: round {round}, PUT loop: {:.2} s, {:.0} changes/s",
                            r.seconds, r.changes_per_s
                        );
                        put_rounds.push(r)
                    }
                    Err(e) => errors.push(format!("round {round}, PUT loop: {e:#}")),
                }
            }
        }
    }
    template.drop(server).await;
    radicale.kill().await;

    let w: Vec<f64> = worker_rounds.iter().map(|r| r.changes_per_s).collect();
    let p: Vec<f64> = put_rounds.iter().map(|r| r.changes_per_s).collect();
    let ratios: Vec<f64> = worker_rounds
        .iter()
        .filter_map(|wr| {
            put_rounds
                .iter()
                .find(|pr| pr.round == wr.round)
                .map(|pr| wr.changes_per_s / pr.changes_per_s)
        })
        .collect();
    if errors.is_empty() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(Report {
        scenario: "caldav",
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        machine: machine(),
        load_at_start,
        load_at_end: load_average(),
        postgres,
        radicale: radicale.version.clone(),
        worker_bin: bin.display().to_string(),
        source_commit: source_commit(),
        worker_changes_per_s: summary(&w),
        put_loop_changes_per_s: summary(&p),
        ratio: summary(&ratios),
        worker: worker_rounds,
        put_loop: put_rounds,
        config,
        errors,
        work_dir: work_dir.display().to_string(),
    })
}

/// `GET /metrics` of a worker.
pub async fn scrape_metrics(port: u16) -> anyhow::Result<String> {
    let r = Http::new(port).request("GET", "/metrics", &[], b"").await?;
    if r.status != 200 {
        bail!("GET /metrics: {}", r.status);
    }
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

/// The value of every sample of `metric` whose labels contain `label` (or all when empty),
/// summed.
pub fn metric_sum(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let (base, labels) = match name.split_once('{') {
                Some((b, rest)) => (b, rest),
                None => (name, ""),
            };
            (base == metric && labels.contains(label))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

async fn worker_round(
    server: &BenchServer,
    template: &Template,
    bin: &Path,
    radicale: &Radicale,
    config: &Config,
    round: u32,
    work_dir: &Path,
) -> anyhow::Result<WorkerRound> {
    let name = format!("livesync_bench_caldav_r{round}");
    let url = template.copy(server, &name).await?;
    let result = worker_round_on(&url, template, bin, radicale, config, round, work_dir).await;
    if result.is_ok() {
        server.drop_database(&name).await;
    }
    result
}

async fn worker_round_on(
    url: &str,
    template: &Template,
    bin: &Path,
    radicale: &Radicale,
    config: &Config,
    round: u32,
    work_dir: &Path,
) -> anyhow::Result<WorkerRound> {
    let collection = format!("notarxpert-r{round}");
    let mut conn = PgConnection::connect(url).await?;
    let entries: i64 = sqlx::query_scalar("select count(*) from livesync.queue")
        .fetch_one(&mut conn)
        .await?;
    let metrics_port = free_port()?;
    let mut env = radicale.worker_env(&collection);
    env.push((
        "LIVESYNC_HTTP_ADDR".into(),
        format!("127.0.0.1:{metrics_port}"),
    ));
    env.extend(config.worker_env.iter().cloned());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let files = work_dir.join(format!("worker-r{round}"));
    let worker = WorkerProc::start_with_env(
        bin,
        url,
        Sink::CalDav,
        &files,
        work_dir.join(format!("worker-r{round}.log")),
        &mut conn,
        &env_refs,
    )
    .await?;
    let outcome = async {
        worker.settle().await;
        let timeout = Duration::from_secs(120 + entries as u64 / 5);
        let drain = storm::log_in_and_drain(&mut conn, url, template.users, timeout).await?;
        let metrics = scrape_metrics(metrics_port).await.unwrap_or_default();
        anyhow::Ok((drain, metrics))
    }
    .await;
    let (storm::Drain { t0, drained, .. }, metrics) = worker.stop_after(outcome).await?;
    let (delivered, last, dead): (i64, Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "select count(*), max(delivered_at), (select count(*) from livesync.dead_letters) \
           from livesync.delivered where sequence >= 0",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await.ok();
    let mut http = Http::new(radicale.port);
    let mut objects = 0;
    for u in 1..=template.users {
        objects += count_objects(&mut http, &format!("user{u}"), &collection).await? as u64;
    }
    let seconds = last.map_or(f64::NAN, |l| ms_between(t0, l) / 1000.0);
    let mut requests = BTreeMap::new();
    for method in ["PROPFIND", "MKCALENDAR", "PUT", "GET", "REPORT", "DELETE"] {
        let label = format!("method=\"{method}\"");
        let count = metric_sum(&metrics, "livesync_caldav_request_seconds_count", &label);
        let sum = metric_sum(&metrics, "livesync_caldav_request_seconds_sum", &label);
        if count > 0.0 {
            requests.insert(method.to_string(), (count, sum / count));
        }
    }
    if !drained || delivered != entries || objects != entries as u64 || dead != 0 {
        bail!(
            "not everything arrived: {entries} queued, {delivered} delivered, {objects} objects \
             in the calendars, {dead} dead letters (drained: {drained})"
        );
    }
    Ok(WorkerRound {
        round,
        entries: entries as u64,
        delivered: delivered as u64,
        objects,
        dead_letters: dead,
        drained,
        seconds,
        changes_per_s: delivered as f64 / seconds,
        requests,
    })
}

async fn put_round(radicale: &Radicale, config: &Config, round: u32) -> anyhow::Result<PutRound> {
    let collection = format!("put-r{round}");
    let mut http = Http::new(radicale.port);
    let started = Instant::now();
    for u in 1..=config.users {
        mkcalendar(&mut http, &format!("user{u}"), &collection).await?;
    }
    let mkcalendar_seconds = started.elapsed().as_secs_f64();
    // Bodies and headers made before the clock starts: the loop only sends.
    let mut requests = Vec::new();
    for u in 1..=config.users {
        let user = format!("user{u}");
        let auth = basic_auth(&user, &password_of(&user));
        for k in 1..=config.per_user {
            let path = format!("/{user}/{collection}/bench-r{round}-{u}-{k}@livesync.ics");
            requests.push((path, auth.clone(), event_body(u, k, round)));
        }
    }
    let connects_before = http.connects;
    let mut failed = 0;
    let started = Instant::now();
    for (path, auth, body) in &requests {
        let r = http
            .request(
                "PUT",
                path,
                &[
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "text/calendar; charset=utf-8"),
                    ("If-None-Match", "*"),
                ],
                body.as_bytes(),
            )
            .await?;
        if !(200..300).contains(&r.status) {
            failed += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let events = requests.len() as u64;
    if failed > 0 {
        bail!("{failed} of {events} PUTs failed");
    }
    Ok(PutRound {
        round,
        events,
        failed,
        mkcalendar_seconds,
        seconds,
        changes_per_s: events as f64 / seconds,
        changes_per_s_with_mkcalendar: events as f64 / (seconds + mkcalendar_seconds),
        mean_put_ms: seconds * 1000.0 / events as f64,
        connections: http.connects - connects_before,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "livesync-bench caldav ({}, {:.0} s{})",
            self.started_at,
            self.seconds,
            if self.config.quick { ", --quick" } else { "" }
        )?;
        writeln!(
            f,
            "machine: {}; load average at start {}, at end {}",
            self.machine, self.load_at_start, self.load_at_end
        )?;
        writeln!(f, "{}", self.postgres)?;
        writeln!(
            f,
            "Radicale {} (built-in server, htpasswd plain, owner_only, filesystem storage); worker {} (source {})",
            self.radicale, self.worker_bin, self.source_commit
        )?;
        if !self.config.worker_env.is_empty() {
            let env: Vec<String> = self
                .config
                .worker_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "worker settings: {}", env.join(" "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "## CalDAV: {} users × {} changes into Radicale, {} rounds (interleaved)",
            self.config.users, self.config.per_user, self.config.rounds
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| round | worker s | worker changes/s | PUT loop s | PUT loop changes/s | ratio | loop MKCALENDAR s | loop with MKCALENDAR changes/s | loop ms/PUT |"
        )?;
        writeln!(
            f,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )?;
        for round in 1..=self.config.rounds {
            let w = self.worker.iter().find(|r| r.round == round);
            let p = self.put_loop.iter().find(|r| r.round == round);
            let cell = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |x| format!("{x:.d$}"));
            writeln!(
                f,
                "| {round} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(w.map(|w| w.seconds), 2),
                cell(w.map(|w| w.changes_per_s), 0),
                cell(p.map(|p| p.seconds), 2),
                cell(p.map(|p| p.changes_per_s), 0),
                cell(w.zip(p).map(|(w, p)| w.changes_per_s / p.changes_per_s), 2),
                cell(p.map(|p| p.mkcalendar_seconds), 2),
                cell(p.map(|p| p.changes_per_s_with_mkcalendar), 0),
                cell(p.map(|p| p.mean_put_ms), 2),
            )?;
        }
        writeln!(f)?;
        writeln!(f, "| figure | median | range |")?;
        writeln!(f, "| --- | ---: | --- |")?;
        for (what, s, d) in [
            ("worker changes/s", self.worker_changes_per_s, 0),
            ("PUT loop changes/s", self.put_loop_changes_per_s, 0),
            ("worker ÷ PUT loop", self.ratio, 2),
        ] {
            if let Some(s) = s {
                writeln!(
                    f,
                    "| {what} | {:.d$} | {:.d$}–{:.d$} |",
                    s.median, s.min, s.max
                )?;
            }
        }
        if let Some(w) = self.worker.first() {
            writeln!(f)?;
            writeln!(
                f,
                "Worker's CalDAV requests in round {} (from its /metrics; count, mean ms):",
                w.round
            )?;
            for (method, (count, mean)) in &w.requests {
                writeln!(f, "- {method}: {count:.0}, {:.2} ms", mean * 1000.0)?;
            }
            if let Some(p) = self.put_loop.first() {
                writeln!(
                    f,
                    "- (PUT loop: {} PUTs over {} connections, {:.2} ms each)",
                    p.events, p.connections, p.mean_put_ms
                )?;
            }
        }
        errors_section(f, &self.errors, &self.work_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", "b"), "Basic YTpi");
    }

    #[test]
    fn reads_calendar_data_out_of_a_multistatus() {
        let xml = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/u/c/a.ics</href><propstat><prop><getetag>"1"</getetag><C:calendar-data>BEGIN:VCALENDAR&#13;
UID:a &amp; b&#13;
END:VCALENDAR&#13;
</C:calendar-data></prop></propstat></response><response><href>/u/c/</href><propstat><prop><C:calendar-data /></prop></propstat></response></multistatus>"#;
        let responses = elements(xml, "response");
        assert_eq!(responses.len(), 2);
        assert_eq!(elements(responses[0], "href"), vec!["/u/c/a.ics"]);
        let data = unescape(elements(responses[0], "calendar-data")[0]);
        assert_eq!(data, "BEGIN:VCALENDAR\r\nUID:a & b\r\nEND:VCALENDAR\r\n");
        assert_eq!(elements(responses[1], "calendar-data"), vec![""]);
    }

    #[test]
    fn sums_prometheus_samples() {
        let text = "# TYPE x summary\nx_count{method=\"PUT\"} 3\nx_count{method=\"GET\"} 2\nx_sum{method=\"PUT\"} 0.5\ny 7\n";
        assert_eq!(metric_sum(text, "x_count", "method=\"PUT\""), 3.0);
        assert_eq!(metric_sum(text, "x_count", ""), 5.0);
        assert_eq!(metric_sum(text, "y", ""), 7.0);
    }
}
