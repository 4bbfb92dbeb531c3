//! `livesync-bench caldav`: the real worker delivering into a local Radicale with the CalDAV
//! sink, beside the best a plain sequential PUT loop reaches against the same server.
//!
//! Also the pieces the chaos driver needs for CalDAV: a private Radicale (the test kit's,
//! from `.venv`, htpasswd auth with one account per Xpert user, `owner_only` rights) that
//! can be killed and started again on the same port and data, and reading a calendar back
//! over CalDAV (`REPORT calendar-query` with the calendar data) with reqwest and roxmltree.
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
//!   beforehand with MKCALENDAR (timed apart), the requests built before the clock starts.
//!   The client is reqwest, which keeps a connection when a server allows it; Radicale's
//!   built-in server speaks HTTP/1.0 and closes every connection after one answer, so the
//!   loop (like the worker) opens one connection per request.
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
use hyper_util::client::legacy::connect::HttpInfo;
pub use livesync_testkit::caldav_server::CalDavServer as Radicale;
use livesync_testkit::caldav_server::{free_port, password_of};
use sqlx::{Connection, PgConnection};

use super::delivery::errors_section;
use super::latency::ms_between;
use super::seed::Template;
use super::server::BenchServer;
use super::stats::{median, range};
use super::storm;
use super::worker_proc::{self, Sink, WorkerProc, cpu_model, load_average, source_commit};

/// The benchmark's Radicale: accounts `user1`…`user<users>` (the seeded Xpert users), its
/// data and log under `dir`.
pub async fn radicale(dir: &Path, users: u32) -> anyhow::Result<Radicale> {
    let accounts: Vec<String> = (1..=users).map(|u| format!("user{u}")).collect();
    Radicale::radicale_in(dir, &accounts).await
}

/// An HTTP client for loopback servers: connections kept while a server allows, no proxy.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("an HTTP client")
}

/// A CalDAV client for the Radicale on a loopback port, signing in as each user in turn.
pub struct Dav {
    client: reqwest::Client,
    origin: String,
}

impl Dav {
    pub fn new(port: u16) -> anyhow::Result<Dav> {
        Ok(Dav {
            client: http_client()?,
            origin: format!("http://127.0.0.1:{port}"),
        })
    }

    /// A request as `user` (Basic auth with the user's password).
    fn request(
        &self,
        method: &str,
        user: &str,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        Ok(self
            .client
            .request(method, format!("{}{path}", self.origin))
            .basic_auth(user, Some(password_of(user))))
    }
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
/// all but MKCALENDAR, `Depth: 1`. Returns the path (for messages), the status and the body.
async fn on_collection(
    dav: &Dav,
    method: &str,
    user: &str,
    collection: &str,
    body: &'static str,
) -> anyhow::Result<(String, u16, String)> {
    let path = format!("/{user}/{collection}/");
    let mut request = dav
        .request(method, user, &path)?
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(body);
    if method != "MKCALENDAR" {
        request = request.header("Depth", "1");
    }
    let r = request
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = r.status().as_u16();
    Ok((path, status, r.text().await?))
}

/// Create the calendar `/<user>/<collection>/`.
pub async fn mkcalendar(dav: &Dav, user: &str, collection: &str) -> anyhow::Result<()> {
    let (path, status, body) =
        on_collection(dav, "MKCALENDAR", user, collection, MKCALENDAR_BODY).await?;
    if !(200..300).contains(&status) {
        bail!("MKCALENDAR {path}: {status} {body}");
    }
    Ok(())
}

/// Every object of `/<user>/<collection>/`, read over CalDAV: (href, its iCalendar text).
/// A calendar that does not exist (never delivered to) is empty.
pub async fn read_calendar(
    dav: &Dav,
    user: &str,
    collection: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let (path, status, xml) =
        on_collection(dav, "REPORT", user, collection, CALENDAR_QUERY_BODY).await?;
    match status {
        404 => Ok(Vec::new()),
        207 => calendar_data(&xml).with_context(|| format!("REPORT {path}")),
        _ => bail!("REPORT {path}: {status}"),
    }
}

const DAV: &str = "DAV:";
const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";

/// (href, calendar data) of each response of a multistatus that carries calendar data.
fn calendar_data(xml: &str) -> anyhow::Result<Vec<(String, String)>> {
    let doc = roxmltree::Document::parse(xml).context("a multistatus")?;
    let text = |node: roxmltree::Node| -> String {
        node.descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect()
    };
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name((DAV, "response")))
        .filter_map(|response| {
            let href = response
                .descendants()
                .find(|n| n.has_tag_name((DAV, "href")))
                .map(|h| text(h).trim().to_string())
                .unwrap_or_default();
            let data = response
                .descendants()
                .find(|n| n.has_tag_name((CALDAV, "calendar-data")))?;
            Some((href, text(data)))
        })
        .collect())
}

/// How many `.ics` objects `/<user>/<collection>/` holds (PROPFIND, depth 1).
pub async fn count_objects(dav: &Dav, user: &str, collection: &str) -> anyhow::Result<usize> {
    let (path, status, xml) =
        on_collection(dav, "PROPFIND", user, collection, PROPFIND_ETAGS_BODY).await?;
    if status == 404 {
        return Ok(0);
    }
    let doc = roxmltree::Document::parse(&xml).with_context(|| format!("PROPFIND {path}"))?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name((DAV, "href")))
        .filter(|h| h.text().is_some_and(|t| t.trim().ends_with(".ics")))
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
    let mut radicale = radicale(&work_dir.join("radicale"), config.users).await?;
    let radicale_version = radicale.version();
    eprintln!(
        "caldav: Radicale {radicale_version} on port {}, {} users × {} changes, {} rounds",
        radicale.port, config.users, config.per_user, config.rounds
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
        radicale: radicale_version,
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
    let r = http_client()?
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::OK {
        bail!("GET /metrics: {}", r.status());
    }
    Ok(r.text().await?)
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

/// One round of the worker into Radicale, on a copy of the template (kept for a look when
/// the round failed).
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
    let result = async {
        let collection = format!("notarxpert-r{round}");
        let mut conn = PgConnection::connect(&url).await?;
        let entries: i64 = sqlx::query_scalar("select count(*) from livesync.queue")
            .fetch_one(&mut conn)
            .await?;
        let metrics_port = free_port();
        let mut env = radicale.worker_env(&collection);
        env.push((
            "LIVESYNC_HTTP_ADDR".into(),
            format!("127.0.0.1:{metrics_port}"),
        ));
        env.extend(config.worker_env.iter().cloned());
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let files = work_dir.join(format!("worker-r{round}"));
        let worker = WorkerProc::start(
            bin,
            &url,
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
            let drain = storm::log_in_and_drain(&mut conn, &url, template.users, timeout).await?;
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
        let dav = Dav::new(radicale.port)?;
        let mut objects = 0;
        for u in 1..=template.users {
            objects += count_objects(&dav, &format!("user{u}"), &collection).await? as u64;
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
        anyhow::Ok(WorkerRound {
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
    .await;
    if result.is_ok() {
        server.drop_database(&name).await;
    }
    result
}

async fn put_round(radicale: &Radicale, config: &Config, round: u32) -> anyhow::Result<PutRound> {
    let collection = format!("put-r{round}");
    let dav = Dav::new(radicale.port)?;
    let started = Instant::now();
    for u in 1..=config.users {
        mkcalendar(&dav, &format!("user{u}"), &collection).await?;
    }
    let mkcalendar_seconds = started.elapsed().as_secs_f64();
    // Requests (bodies, headers) built before the clock starts: the loop only sends.
    let mut requests = Vec::new();
    for u in 1..=config.users {
        let user = format!("user{u}");
        for k in 1..=config.per_user {
            let path = format!("/{user}/{collection}/bench-r{round}-{u}-{k}@livesync.ics");
            let request = dav
                .request("PUT", &user, &path)?
                .header("Content-Type", "text/calendar; charset=utf-8")
                .header("If-None-Match", "*")
                .body(event_body(u, k, round))
                .build()?;
            requests.push(request);
        }
    }
    let events = requests.len() as u64;
    let (mut failed, mut connections, mut local) = (0, 0, None);
    let started = Instant::now();
    for request in requests {
        let r = dav.client.execute(request).await?;
        if !r.status().is_success() {
            failed += 1;
        }
        // A new local address: the client opened a connection for this request.
        let here = r.extensions().get::<HttpInfo>().map(|i| i.local_addr());
        if here.is_none() || here != local {
            connections += 1;
        }
        local = here;
        // The body (empty on success) is read before the next request, as a client does.
        r.bytes().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
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
        connections,
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
    fn reads_calendar_data_out_of_a_multistatus() {
        let xml = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/u/c/a.ics</href><propstat><prop><getetag>"1"</getetag><C:calendar-data>BEGIN:VCALENDAR&#13;
UID:a &amp; b&#13;
END:VCALENDAR&#13;
</C:calendar-data></prop></propstat></response><response><href>/u/c/</href><propstat><prop><getetag>"2"</getetag></prop></propstat></response></multistatus>"#;
        assert_eq!(
            calendar_data(xml).unwrap(),
            vec![(
                "/u/c/a.ics".to_string(),
                "BEGIN:VCALENDAR\r\nUID:a & b\r\nEND:VCALENDAR\r\n".to_string()
            )]
        );
    }

    #[test]
    fn sums_prometheus_samples() {
        let text = "# TYPE x summary\nx_count{method=\"PUT\"} 3\nx_count{method=\"GET\"} 2\nx_sum{method=\"PUT\"} 0.5\ny 7\n";
        assert_eq!(metric_sum(text, "x_count", "method=\"PUT\""), 3.0);
        assert_eq!(metric_sum(text, "x_count", ""), 5.0);
        assert_eq!(metric_sum(text, "y", ""), 7.0);
    }
}
