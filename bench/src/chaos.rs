//! `livesync-bench chaos`: faults during a storm of Xpert writes, then a comparison of every
//! user's calendar with the database's truth.
//!
//! A writer makes `changes` Xpert-like changes (new appointments with one to three
//! participants, subject changes, deletions, participants removed), one transaction each,
//! while the real `livesync-worker run` (push mode, its default settings) delivers them with the `ics`
//! sink or the `caldav` sink into a private Radicale, and a fault strikes:
//! - `kill9`: the worker is killed with SIGKILL and started again (`faults` times);
//! - `sigterm`: the worker is stopped with SIGTERM and started again;
//! - `kill9-burst` (CalDAV sink by default): no storm; instead, `faults` times, an
//!   appointment with two participants gets a burst of 60 updates (one transaction each, as
//!   fast as they go) and the worker is killed with SIGKILL after the 30th and started again
//!   at once;
//! - `pg-restart`: PostgreSQL itself restarts (fast shutdown, start) under the running
//!   worker, which must reconnect, LISTEN again and catch up; its `/healthz`, polled all
//!   along, must say 200 before each restart, 503 during it and 200 again after it;
//! - `listener-killed`: the worker's LISTEN backend is terminated (`pg_terminate_backend`)
//!   `faults` times while a bursty storm goes on (pauses let the worker fall asleep and
//!   wait for a NOTIFY): each time a new LISTEN backend must appear;
//! - `three-workers`: three workers on the one database for the whole storm, each with
//!   its own `/metrics` and per-user log directory (every user keeps a log file): each
//!   change must be delivered once, and per appointment in the order of the changes;
//! - `calendar-down`: the calendar server (Radicale; CalDAV sink only) is killed and kept
//!   down for `outage` seconds while deliveries go on, then started again: everything must
//!   arrive without a dead letter;
//! - `idle-in-transaction`: a session opens a transaction (REPEATABLE READ, with an xid),
//!   holds its xmin through the whole storm and idles; `livesync-admin doctor` is asked
//!   during the storm whether it notices.
//!
//! With pg-restart and listener-killed the writer goes on (past `changes` if need be) until
//! the last strike is over, so every fault strikes during the storm. kill9 and sigterm
//! stop at `changes`: a strike after the storm still meets the backlog being delivered,
//! and with the CalDAV sink their strikes (a new worker each) would stretch the storm to
//! three times `changes`.
//!
//! After every restart of a killed or stopped worker (kill9, sigterm, kill9-burst) the
//! driver notes whether work was pending (queue or change log not empty) and, if so, the
//! time from starting the new worker until deliveries resume: the first `delivered_at`
//! after the new worker registered (for kill9-burst, of the burst's appointment; a
//! statement the dead worker had already sent may still stamp one just after the kill), or,
//! should the pending
//! work need no calendar write, the poll that saw the queue and the log empty. Target:
//! ≤ 5 s each. The worker runs with its defaults (a 60 s lease): a restarted worker must
//! take over its dead predecessor's users when that one's presence lock is gone, not when
//! its lease expires.
//!
//! Then everything must drain, and each user's calendar (the `.ics` file, or the CalDAV
//! collection read back with `REPORT calendar-query`) must hold exactly the appointments
//! they take part in, once each, with the current subject: nothing lost, duplicated, stale
//! or resurrected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use livesync_testkit::caldav_server::free_port;
use livesync_testkit::ics;
use rand::Rng;
use sqlx::{Connection, PgConnection};

use super::caldav::{self, Dav};
use super::healthz::{self, Probe};
use super::server::BenchServer;
use super::verdict;
use super::worker_proc::{Sink, WorkerProc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill9,
    Sigterm,
    Kill9Burst,
    PgRestart,
    ThreeWorkers,
    CalendarDown,
    IdleInTransaction,
    ListenerKilled,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::Sigterm => "sigterm",
            Fault::Kill9Burst => "kill9-burst",
            Fault::PgRestart => "pg-restart",
            Fault::ThreeWorkers => "three-workers",
            Fault::CalendarDown => "calendar-down",
            Fault::IdleInTransaction => "idle-in-transaction",
            Fault::ListenerKilled => "listener-killed",
        }
    }

    /// The sink a fault runs with unless one is asked for.
    pub fn default_sink(self) -> ChaosSink {
        match self {
            Fault::CalendarDown | Fault::Kill9Burst => ChaosSink::Caldav,
            _ => ChaosSink::Ics,
        }
    }
}

/// Where the worker delivers during chaos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChaosSink {
    /// One `.ics` file per user.
    Ics,
    /// A private Radicale (CalDAV), read back over CalDAV.
    Caldav,
}

impl ChaosSink {
    pub fn name(self) -> &'static str {
        match self {
            ChaosSink::Ics => "ics",
            ChaosSink::Caldav => "caldav",
        }
    }
}

/// The scenarios `livesync-bench chaos` runs without `--faults` and `--sink`.
pub fn default_scenarios() -> Vec<(Fault, ChaosSink)> {
    vec![
        (Fault::Kill9, ChaosSink::Ics),
        (Fault::Sigterm, ChaosSink::Ics),
        (Fault::PgRestart, ChaosSink::Ics),
        (Fault::Kill9, ChaosSink::Caldav),
        (Fault::Kill9Burst, ChaosSink::Caldav),
        (Fault::ThreeWorkers, ChaosSink::Ics),
        (Fault::CalendarDown, ChaosSink::Caldav),
        (Fault::IdleInTransaction, ChaosSink::Ics),
        (Fault::ListenerKilled, ChaosSink::Ics),
    ]
}

#[derive(Debug, Clone)]
pub struct Config {
    pub users: u32,
    pub changes: u32,
    /// How often kill9, sigterm, pg-restart and listener-killed strike.
    pub faults: u32,
    /// How often the calendar server goes down (`calendar-down`).
    pub outages: u32,
    /// How long each outage lasts.
    pub outage: Duration,
}

impl Config {
    pub fn full() -> Config {
        Config {
            users: 50,
            changes: 10_000,
            faults: 20,
            outages: 2,
            outage: Duration::from_secs(30),
        }
    }
    pub fn quick() -> Config {
        Config {
            users: 20,
            changes: 1_500,
            faults: 4,
            outages: 1,
            outage: Duration::from_secs(30),
        }
    }

    /// How often `fault` strikes in a run.
    pub fn strikes(&self, fault: Fault) -> u32 {
        match fault {
            Fault::Kill9
            | Fault::Sigterm
            | Fault::Kill9Burst
            | Fault::PgRestart
            | Fault::ListenerKilled => self.faults,
            Fault::CalendarDown => self.outages,
            Fault::ThreeWorkers | Fault::IdleInTransaction => 1,
        }
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub fault: Fault,
    pub sink: ChaosSink,
    pub users: u32,
    pub changes: u32,
    pub faults: u32,
    pub appointments_expected: usize,
    /// Appointments missing from a participant's calendar.
    pub lost: usize,
    /// UIDs present more than once in one calendar.
    pub duplicated: usize,
    /// Entries whose subject is not the current one.
    pub stale: usize,
    /// Entries for appointments deleted, or for people no longer taking part.
    pub resurrected: usize,
    pub dead_letters: i64,
    pub seconds: f64,
    /// `three-workers`: deliveries each worker counted (`livesync_delivered_total`).
    pub per_worker: Vec<u64>,
    /// `three-workers`: lines in the per-user logs (one per delivery or deletion).
    pub logged: Option<u64>,
    /// `three-workers`: the same content (or deletion) delivered again to one calendar.
    pub duplicate_deliveries: usize,
    /// `three-workers`: an older change of an appointment delivered after a newer one.
    pub order_violations: usize,
    /// `pg-restart`: what `/healthz` said around each restart (must be 200 → 503 → 200).
    pub healthz: Vec<healthz::Cycle>,
    /// `listener-killed`: each termination of the worker's LISTEN backend.
    pub listener_kills: Vec<ListenerKill>,
    /// kill9, sigterm, kill9-burst: each restart, and when deliveries resumed.
    pub resumes: Vec<Resume>,
    /// What else this run saw (outage effects, what doctor said, …).
    pub notes: Vec<String>,
}

/// One strike of `listener-killed`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerKill {
    pub strike: u32,
    /// The worker's LISTEN backends terminated (1, unless none was found).
    pub terminated: usize,
    /// Every worker was marked asleep (waiting for a NOTIFY) when it struck.
    pub worker_asleep: bool,
    /// A new LISTEN backend of the worker was there this many ms after the kill.
    pub back_after_ms: Option<u64>,
}

/// Deliveries must resume within this time of a restart.
pub const RESUME_TARGET_MS: f64 = 5000.0;

/// How long the driver waits for deliveries to resume after a restart: longer than the
/// worker's default lease (60 s), so that waiting one out would show as a figure.
const RESUME_WAIT: Duration = Duration::from_secs(90);

/// One restart of the worker after a kill (or SIGTERM).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Resume {
    pub strike: u32,
    /// Queue entries and change-log rows waiting when the new worker was started.
    pub pending: i64,
    /// From starting the new worker to the first delivery after it (`None`: nothing was
    /// pending, or nothing resumed within [`RESUME_WAIT`]).
    pub resume_ms: Option<f64>,
    /// How it was seen: "delivery", "drained" (the pending work needed no calendar write),
    /// "nothing pending" or "not within 90 s".
    pub seen: &'static str,
}

impl Resume {
    /// Met: nothing was pending, or deliveries resumed within [`RESUME_TARGET_MS`].
    pub fn met(&self) -> bool {
        self.pending == 0 || self.resume_ms.is_some_and(|ms| ms <= RESUME_TARGET_MS)
    }
}

/// The restarts with work pending: how many, their resume times in strike order, the
/// largest, and whether every one met the target.
pub fn resume_summary(resumes: &[Resume]) -> (usize, Vec<Option<f64>>, Option<f64>, bool) {
    let pending: Vec<&Resume> = resumes.iter().filter(|r| r.pending > 0).collect();
    let times: Vec<Option<f64>> = pending.iter().map(|r| r.resume_ms).collect();
    let max = times
        .iter()
        .flatten()
        .copied()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    (pending.len(), times, max, resumes.iter().all(Resume::met))
}

impl Report {
    /// Clean, and deliveries resumed in time after every restart.
    pub fn passed(&self) -> bool {
        self.clean() && self.resumes.iter().all(Resume::met)
    }

    /// One line on the resume times, when the fault restarts workers.
    pub fn resume_line(&self) -> Option<String> {
        if self.resumes.is_empty() {
            return None;
        }
        let (n, times, max, met) = resume_summary(&self.resumes);
        let list: Vec<String> = times
            .iter()
            .map(|t| t.map_or("none".to_string(), |ms| format!("{ms:.0}")))
            .collect();
        Some(format!(
            "resume after restart (ms; {n} of {} restarts had work pending): {}; max {} (target ≤ {:.0} s) {}",
            self.resumes.len(),
            if list.is_empty() {
                "-".to_string()
            } else {
                list.join(" / ")
            },
            max.map_or("-".to_string(), |m| format!("{m:.0} ms")),
            RESUME_TARGET_MS / 1000.0,
            verdict::met(met)
        ))
    }

    pub fn clean(&self) -> bool {
        let counted: u64 = self.per_worker.iter().sum();
        self.lost + self.duplicated + self.stale + self.resurrected == 0
            && self.dead_letters == 0
            && self.duplicate_deliveries + self.order_violations == 0
            && self.logged.is_none_or(|l| l == counted)
            && self.healthz.iter().all(|c| c.ok())
            && self
                .listener_kills
                .iter()
                .all(|k| k.terminated > 0 && k.back_after_ms.is_some())
    }
}

/// Worker settings for chaos beyond the defaults: none (the default 60 s lease: a killed
/// worker's users must come back when its presence ends, not when its lease expires).
const WORKER_ENV: [(&str, &str); 0] = [];

/// How the driver starts workers for one scenario.
struct Workers<'a> {
    bin: &'a Path,
    url: &'a str,
    sink: Sink,
    files: PathBuf,
    env: Vec<(String, String)>,
    work_dir: &'a Path,
    tag: String,
}

impl Workers<'_> {
    /// Start worker number `n` (its log `chaos-<tag>-worker-<n>.log`) with `more` settings.
    async fn start(
        &self,
        n: u32,
        more: &[(String, String)],
        conn: &mut PgConnection,
    ) -> anyhow::Result<WorkerProc> {
        let env: Vec<(&str, &str)> = WORKER_ENV
            .iter()
            .copied()
            .chain(
                self.env
                    .iter()
                    .chain(more)
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .collect();
        let log = self
            .work_dir
            .join(format!("chaos-{}-worker-{n}.log", self.tag));
        WorkerProc::start(self.bin, self.url, self.sink, &self.files, log, conn, &env).await
    }
}

/// One of the three workers of `three-workers`: its metrics port and log directory.
struct Peer {
    proc: WorkerProc,
    metrics_port: u16,
    log_dir: PathBuf,
}

pub async fn run(
    server: &BenchServer,
    worker_bin: &Path,
    fault: Fault,
    sink: ChaosSink,
    config: &Config,
    work_dir: &Path,
) -> anyhow::Result<Report> {
    if fault == Fault::PgRestart && !server.can_restart() {
        bail!("pg-restart needs the private server: unset DATABASE_URL");
    }
    if fault == Fault::CalendarDown && sink != ChaosSink::Caldav {
        bail!("calendar-down needs the CalDAV sink (--sink caldav)");
    }
    let started = Instant::now();
    let tag = format!("{}-{}", fault.name(), sink.name());
    let name = format!("livesync_chaos_{}", tag.replace('-', "_"));
    let url = super::seed::livesync_database(server, &name, config.users).await?;
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::query("update livesync.settings set delivery_mode = 'push'")
        .execute(&mut conn)
        .await?;
    if fault == Fault::ThreeWorkers {
        sqlx::query("update livesync.user_settings set keep_logfile = true")
            .execute(&mut conn)
            .await?;
    }
    let files = work_dir.join(format!("chaos-{tag}"));
    let _ = std::fs::remove_dir_all(&files);
    let mut radicale = match sink {
        ChaosSink::Caldav => Some(
            caldav::radicale(
                &work_dir.join(format!("chaos-{tag}-radicale")),
                config.users,
            )
            .await?,
        ),
        ChaosSink::Ics => None,
    };
    let workers = Workers {
        bin: worker_bin,
        url: &url,
        sink: match sink {
            ChaosSink::Ics => Sink::Ics,
            ChaosSink::Caldav => Sink::CalDav,
        },
        files: files.clone(),
        env: radicale
            .as_ref()
            .map(|r| r.worker_env("notarxpert"))
            .unwrap_or_default(),
        work_dir,
        tag: tag.clone(),
    };
    let mut notes = Vec::new();

    let mut worker = None;
    let mut peers = Vec::new();
    let mut http_port = None;
    if fault == Fault::ThreeWorkers {
        for n in 0..3 {
            let metrics_port = free_port();
            let log_dir = files.join(format!("logs-worker-{n}"));
            let more = vec![
                (
                    "LIVESYNC_HTTP_ADDR".to_string(),
                    format!("127.0.0.1:{metrics_port}"),
                ),
                (
                    "LIVESYNC_LOG_DIR".to_string(),
                    log_dir.display().to_string(),
                ),
            ];
            let proc = workers.start(n, &more, &mut conn).await?;
            peers.push(Peer {
                proc,
                metrics_port,
                log_dir,
            });
        }
    } else if matches!(fault, Fault::PgRestart | Fault::ListenerKilled) {
        // The worker serves /healthz and /metrics on a free loopback port.
        let port = free_port();
        let more = [(
            "LIVESYNC_HTTP_ADDR".to_string(),
            format!("127.0.0.1:{port}"),
        )];
        worker = Some(workers.start(0, &more, &mut conn).await?);
        http_port = Some(port);
    } else {
        worker = Some(workers.start(0, &[], &mut conn).await?);
    }
    // A monitor asks /healthz every 50 ms (one request at a time) all through the run.
    let mut probe =
        http_port.map(|port| Probe::start(port, Duration::from_millis(50), HEALTHZ_TIMEOUT));
    let mut idle_session = None;
    if fault == Fault::IdleInTransaction {
        let mut idle = PgConnection::connect(&url).await?;
        sqlx::raw_sql(
            "begin isolation level repeatable read; select txid_current(); \
             select count(*) from livesync.queue",
        )
        .execute(&mut idle)
        .await?;
        idle_session = Some(idle);
    }
    // pg-restart, listener-killed: the storm lasts until the last strike is over (set on
    // every way out).
    let storm_end = StormEnd(Arc::new(AtomicBool::new(!matches!(
        fault,
        Fault::PgRestart | Fault::ListenerKilled
    ))));
    // kill9-burst writes its bursts only.
    let storm_changes = if fault == Fault::Kill9Burst {
        0
    } else {
        config.changes
    };
    let writer = tokio::spawn(write_storm(
        url.clone(),
        config.users,
        storm_changes,
        storm_end.0.clone(),
        fault == Fault::ListenerKilled,
    ));

    let mut rng = rand::rng();
    let mut healthz_cycles = Vec::new();
    let mut listener_kills = Vec::new();
    let mut resumes = Vec::new();
    let mut burst_changes = 0u32;
    match fault {
        Fault::Kill9 | Fault::Sigterm => {
            for n in 1..=config.faults {
                let pause = Duration::from_millis(rng.random_range(200..1500));
                tokio::time::sleep(pause).await;
                if let Some(w) = worker.take() {
                    if fault == Fault::Kill9 {
                        w.kill9().await;
                    } else {
                        w.stop().await?;
                    }
                }
                let pending = pending_now(&mut conn).await?;
                let restart = chrono::Utc::now();
                let w = workers.start(n, &[], &mut conn).await?;
                let pid = w.pid();
                worker = Some(w);
                resumes.push(wait_resume(&mut conn, n, (restart, pid), pending, None).await?);
            }
        }
        Fault::Kill9Burst => {
            for n in 1..=config.faults {
                let pause = Duration::from_millis(rng.random_range(200..1500));
                tokio::time::sleep(pause).await;
                let (a, b) = {
                    let a = rng.random_range(1..=config.users as i64);
                    (a, a % config.users as i64 + 1)
                };
                let appointment = new_appointment(&mut conn, n, &[a, b]).await?;
                let progress = Arc::new(std::sync::atomic::AtomicU32::new(0));
                let burst = tokio::spawn(write_burst(
                    url.clone(),
                    appointment,
                    n,
                    BURST,
                    progress.clone(),
                ));
                while progress.load(Ordering::Relaxed) < BURST / 2 && !burst.is_finished() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if let Some(w) = worker.take() {
                    w.kill9().await;
                }
                let pending = pending_now(&mut conn).await?;
                let restart = chrono::Utc::now();
                let w = workers.start(n, &[], &mut conn).await?;
                let pid = w.pid();
                worker = Some(w);
                let resume =
                    wait_resume(&mut conn, n, (restart, pid), pending, Some(appointment)).await?;
                burst.await.context("burst task")??;
                burst_changes += BURST + 1;
                resumes.push(resume);
            }
        }
        Fault::PgRestart => {
            let Some(probe) = probe.as_ref() else {
                unreachable!("started above")
            };
            let mut strikes = Vec::new();
            for n in 1..=config.faults {
                // Each restart strikes a worker that says it is healthy (the last one may
                // still be recovering): wait for a 200, then the random pause.
                probe
                    .wait_for_200(probe.now_ms(), Duration::from_secs(60))
                    .await;
                let pause = Duration::from_millis(rng.random_range(200..1500));
                tokio::time::sleep(pause).await;
                let _ = conn.close().await;
                let begin = probe.now_ms();
                // pg_ctl waits; the probe and the writer go on on the other threads.
                tokio::task::block_in_place(|| server.restart())?;
                let end = probe.now_ms();
                strikes.push((n, begin, end));
                conn = PgConnection::connect(&url).await?;
            }
            probe
                .wait_for_200(probe.now_ms(), Duration::from_secs(60))
                .await;
            let samples = probe.samples();
            // Every answer and when each restart ran, beside the kept data.
            std::fs::write(
                files.join("healthz.json"),
                serde_json::to_vec_pretty(&serde_json::json!({
                    "restarts_ms": strikes,
                    "samples": samples,
                }))?,
            )?;
            for (n, begin, end) in strikes {
                let cycle = healthz::cycle(&samples, n, begin, end);
                notes.push(format!(
                    "healthz, restart {n}: {}",
                    cycle.describe("PostgreSQL was up")
                ));
                healthz_cycles.push(cycle);
            }
        }
        Fault::ListenerKilled => {
            for n in 1..=config.faults {
                let pause = Duration::from_millis(rng.random_range(200..1500));
                tokio::time::sleep(pause).await;
                // Every other strike waits for the worker to fall asleep: then a NOTIFY is
                // all that would wake it, and the ones sent before the new LISTEN are lost.
                listener_kills.push(kill_listener(&mut conn, n, n % 2 == 1).await?);
            }
        }
        Fault::CalendarDown => {
            let Some(r) = radicale.as_mut() else {
                unreachable!("checked above")
            };
            for n in 1..=config.outages {
                let pause = Duration::from_millis(rng.random_range(500..1500));
                tokio::time::sleep(pause).await;
                r.kill().await;
                tokio::time::sleep(config.outage).await;
                let (waiting, failed): (i64, i64) = sqlx::query_as(
                    "select count(*), count(*) filter (where attempts > 0) from livesync.queue",
                )
                .fetch_one(&mut conn)
                .await?;
                r.resume().await?;
                notes.push(format!(
                    "outage {n} ({} s): at its end {waiting} entries queued, {failed} of them had failed at least once",
                    config.outage.as_secs()
                ));
            }
        }
        Fault::IdleInTransaction => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            notes.push(doctor_says(&url).await);
        }
        Fault::ThreeWorkers => {}
    }
    storm_end.0.store(true, Ordering::Relaxed);
    let storm = writer.await.context("writer task")??;
    let written = storm.written;
    if storm.failed > 0 {
        notes.push(format!(
            "the writer repeated {} failed changes (first error: {})",
            storm.failed, storm.first_error
        ));
    }
    let drain_timeout = match sink {
        ChaosSink::Ics => Duration::from_secs(180),
        ChaosSink::Caldav => Duration::from_secs(900),
    };
    drain(&mut conn, drain_timeout).await?;
    if let Some(mut idle) = idle_session.take() {
        let (age, dead): (Option<i32>, i64) = sqlx::query_as(
            "select (select max(age(backend_xmin)) from pg_stat_activity \
                      where state = 'idle in transaction'), \
                    (select n_dead_tup from pg_stat_user_tables \
                      where relid = 'livesync.queue'::regclass)",
        )
        .fetch_one(&mut conn)
        .await?;
        notes.push(format!(
            "the idle transaction's xmin was {} transactions old when the queue had drained; livesync.queue had {dead} dead tuples, which VACUUM cannot remove while it is held",
            age.unwrap_or(0)
        ));
        sqlx::raw_sql("rollback").execute(&mut idle).await?;
        idle.close().await.ok();
    }

    let mut per_worker = Vec::new();
    for p in &peers {
        let text = caldav::scrape_metrics(p.metrics_port)
            .await
            .context("read a worker's /metrics")?;
        per_worker.push(caldav::metric_sum(&text, "livesync_delivered_total", "") as u64);
    }
    if let Some(probe) = probe.take() {
        let samples = probe.stop().await;
        let mut said: BTreeMap<String, usize> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.status != Some(200)) {
            let text = match s.status {
                Some(code) => format!("{code} {}", s.detail),
                None => "no answer".to_string(),
            };
            *said.entry(text).or_default() += 1;
        }
        let said: Vec<String> = said.iter().map(|(t, n)| format!("{n} × {t}")).collect();
        notes.push(format!(
            "healthz asked {} times during the run; answers other than 200: {}",
            samples.len(),
            if said.is_empty() {
                "none".to_string()
            } else {
                said.join(", ")
            }
        ));
    }
    if let (Some(port), Some(w)) = (http_port, worker.as_ref()) {
        let reconnects = match caldav::scrape_metrics(port).await {
            Ok(text) => {
                caldav::metric_sum(&text, "livesync_listener_reconnects_total", "").to_string()
            }
            Err(e) => format!("? ({e})"),
        };
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        notes.push(format!(
            "the worker counted {reconnects} listener reconnects; its log: {} × \"listener failed; reconnecting\", {} × \"listener connection lost; reconnecting\", {} × \"listener connected again\", {} × \"database unreachable\"",
            log.matches("listener failed; reconnecting").count(),
            log.matches("listener connection lost; reconnecting").count(),
            log.matches("listener connected again").count(),
            log.matches("database unreachable").count(),
        ));
    }
    if !listener_kills.is_empty() {
        let asleep = listener_kills.iter().filter(|k| k.worker_asleep).count();
        let mut back: Vec<u64> = listener_kills
            .iter()
            .filter_map(|k| k.back_after_ms)
            .collect();
        back.sort_unstable();
        notes.push(format!(
            "listener killed {} times ({} backends terminated; the worker was asleep at {asleep} of them); LISTENing again after {} ms (min / median / max){}",
            listener_kills.len(),
            listener_kills.iter().map(|k| k.terminated).sum::<usize>(),
            match (back.first(), back.get(back.len() / 2), back.last()) {
                (Some(a), Some(m), Some(z)) => format!("{a} / {m} / {z}"),
                _ => "–".to_string(),
            },
            match listener_kills
                .iter()
                .filter(|k| k.terminated == 0 || k.back_after_ms.is_none())
                .count()
            {
                0 => String::new(),
                bad => format!("; {bad} strikes found no listener or saw none come back"),
            }
        ));
    }
    let mut lease_lost = 0;
    for p in peers.iter() {
        lease_lost += std::fs::read_to_string(&p.proc.log)
            .unwrap_or_default()
            .matches("lease lost")
            .count();
    }
    let log_dirs: Vec<PathBuf> = peers.iter().map(|p| p.log_dir.clone()).collect();
    for p in peers {
        p.proc.stop().await?;
    }
    if let Some(w) = worker.take() {
        w.stop().await?;
    }

    let mut report = match &radicale {
        Some(r) => compare(&mut conn, Calendars::CalDav(r.port)).await?,
        None => compare(&mut conn, Calendars::Files(&files)).await?,
    };
    if fault == Fault::ThreeWorkers {
        let deliveries = read_user_logs(&log_dirs)?;
        report.logged = Some(deliveries.lines);
        report.duplicate_deliveries = deliveries.duplicates;
        report.order_violations = deliveries.order_violations;
        notes.push(format!(
            "{lease_lost} lease(s) lost (a write whose completion the lease fenced off would be counted by no worker)"
        ));
    }
    if let Some(r) = radicale.as_mut() {
        r.kill().await;
    }
    report.fault = fault;
    report.sink = sink;
    report.users = config.users;
    report.changes = written + burst_changes;
    report.faults = config.strikes(fault);
    report.per_worker = per_worker;
    report.healthz = healthz_cycles;
    report.listener_kills = listener_kills;
    report.resumes = resumes;
    report.notes = notes;
    report.seconds = started.elapsed().as_secs_f64();
    conn.close().await.ok();
    if report.passed() {
        server.drop_database(&name).await;
        let _ = std::fs::remove_dir_all(&files);
        let _ = std::fs::remove_dir_all(work_dir.join(format!("chaos-{tag}-radicale")));
    }
    Ok(report)
}

/// What `livesync-admin doctor` says about the database right now, in one line: the checks
/// that are not ok, and whether any of them points at a long transaction.
async fn doctor_says(url: &str) -> String {
    let argv = [
        "livesync-admin",
        "--json",
        "--database-url",
        url,
        "doctor",
        // The sink check needs the worker's configuration; it is not what is asked here.
        "--worker-bin",
        "/nonexistent/livesync-worker",
        // The storm lasts seconds, not the default five minutes.
        "--old-transaction-minutes",
        "0",
    ];
    let cli = match crate::cli::parse(argv) {
        Ok(c) => c,
        Err(e) => return format!("doctor: cannot parse its arguments: {e}"),
    };
    let mut out = Vec::new();
    if let Err(e) = crate::cli::run(cli, &mut out).await {
        return format!("doctor failed: {e}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
    let mut flagged = Vec::new();
    let mut sees_it = false;
    for check in doc["checks"].as_array().into_iter().flatten() {
        let status = check["status"].as_str().unwrap_or_default();
        if status == "ok" {
            continue;
        }
        let name = check["name"].as_str().unwrap_or_default();
        let text = format!("{} {}", check["detail"], check["fix"]).to_lowercase();
        if text.contains("transaction") || text.contains("xmin") {
            sees_it = true;
        }
        flagged.push(format!("{name}: {status}"));
    }
    format!(
        "livesync-admin doctor during the storm {} the idle transaction (checks not ok: {})",
        if sees_it {
            "reports"
        } else {
            "does NOT report"
        },
        if flagged.is_empty() {
            "none".to_string()
        } else {
            flagged.join(", ")
        }
    )
}

/// The per-user logs of several workers, taken together.
#[derive(Debug, Default)]
struct LoggedDeliveries {
    lines: u64,
    duplicates: usize,
    order_violations: usize,
}

/// One "delivered" line: SEQUENCE, the change number in the subject, the subject.
type Logged = (i64, u64, String);

/// Read every `<user>.log` in `dirs`: each "delivered" line (appointment, subject, SEQUENCE)
/// and "deleted" line. The same subject (every change writes a new one) or the same
/// SEQUENCE twice for one appointment in one calendar is a duplicate; ordered by SEQUENCE,
/// the change numbers in the subjects (`Termin <n>`) must grow.
fn read_user_logs(dirs: &[PathBuf]) -> anyhow::Result<LoggedDeliveries> {
    // (user file, appointment) → [(seq, change number, subject)], deletions.
    let mut delivered: BTreeMap<(String, i64), Vec<Logged>> = BTreeMap::new();
    let mut deleted: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mut out = LoggedDeliveries::default();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().to_string();
            let user = file
                .strip_suffix(".log")
                .or_else(|| file.strip_suffix(".log.1"))
                .unwrap_or(&file)
                .to_string();
            let text = std::fs::read_to_string(entry.path())?;
            for line in text.lines() {
                let Some((_, action)) = line.split_once(' ') else {
                    continue;
                };
                if let Some(rest) = action.strip_prefix("delivered appointment ") {
                    out.lines += 1;
                    let (id, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                    let id: i64 = id.parse().unwrap_or(-1);
                    let (subject, seq) = rest.rsplit_once(" (seq ").unwrap_or((rest, ""));
                    let seq: i64 = seq.trim_end_matches(')').parse().unwrap_or(-1);
                    let subject = subject.trim_matches('"').to_string();
                    let number = subject
                        .strip_prefix("Termin ")
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    delivered
                        .entry((user.clone(), id))
                        .or_default()
                        .push((seq, number, subject));
                } else if let Some(id) = action.strip_prefix("deleted appointment ") {
                    out.lines += 1;
                    *deleted
                        .entry((user.clone(), id.trim().parse().unwrap_or(-1)))
                        .or_default() += 1;
                }
            }
        }
    }
    for list in delivered.values_mut() {
        list.sort();
        let mut subjects = BTreeSet::new();
        for (i, (seq, number, subject)) in list.iter().enumerate() {
            if !subjects.insert(subject.clone()) {
                out.duplicates += 1;
            }
            if i > 0 {
                let (prev_seq, prev_number, _) = &list[i - 1];
                if prev_seq == seq {
                    out.duplicates += 1;
                } else if prev_number >= number {
                    out.order_violations += 1;
                }
            }
        }
    }
    out.duplicates += deleted.values().map(|n| n.saturating_sub(1)).sum::<usize>();
    Ok(out)
}

/// How long the monitor waits for one /healthz answer (the worker gives its database
/// check 2 s).
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells the writer the strikes are over; also when the driver leaves early with an error.
struct StormEnd(Arc<AtomicBool>);

impl Drop for StormEnd {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The worker's LISTEN backend(s): pid, and whether every worker is marked asleep.
async fn listen_backends(conn: &mut PgConnection) -> Result<Vec<(i32, bool)>, sqlx::Error> {
    sqlx::query_as(
        "select pid, coalesce((select bool_and(not awake) from livesync.workers), false)
           from pg_stat_activity
          where datname = current_database() and application_name = 'livesync-worker'
            and query ilike 'listen%' and pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *conn)
    .await
}

/// Terminate the worker's LISTEN backend (waiting up to 10 s for one to be there; with
/// `asleep`, up to 3 s more for the worker to be asleep, waiting for a NOTIFY), then wait
/// up to 30 s for a new one.
async fn kill_listener(
    conn: &mut PgConnection,
    strike: u32,
    asleep: bool,
) -> anyhow::Result<ListenerKill> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = listen_backends(conn).await?;
    while found.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        found = listen_backends(conn).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while asleep && !found.iter().all(|(_, a)| *a) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        found = listen_backends(conn).await?;
    }
    let worker_asleep = found.iter().all(|(_, asleep)| *asleep) && !found.is_empty();
    let mut killed = Vec::new();
    for (pid, _) in &found {
        let done: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut *conn)
            .await?;
        if done {
            killed.push(*pid);
        }
    }
    let struck = Instant::now();
    let mut back_after_ms = None;
    if !killed.is_empty() {
        let deadline = struck + Duration::from_secs(30);
        while Instant::now() < deadline {
            let now = listen_backends(conn).await?;
            if now.iter().any(|(pid, _)| !killed.contains(pid)) {
                back_after_ms = Some(struck.elapsed().as_millis() as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(ListenerKill {
        strike,
        terminated: killed.len(),
        worker_asleep,
        back_after_ms,
    })
}

/// Xpert's writes, one transaction each; a connection lost to a server restart is opened
/// again and the change repeated. At least `changes`, and on until `end` is set. `bursty`:
/// bursts of 1–200 changes with pauses of up to 1.5 s between them, long enough for the
/// worker to fall asleep.
async fn write_storm(
    url: String,
    users: u32,
    changes: u32,
    end: Arc<AtomicBool>,
    bursty: bool,
) -> anyhow::Result<Storm> {
    let mut done = 0;
    let mut conn: Option<PgConnection> = None;
    let mut failures = 0;
    let mut burst_left: u32 = 0;
    let (mut failed, mut first_error) = (0u32, String::new());
    while done < changes || !end.load(Ordering::Relaxed) {
        if bursty && burst_left == 0 {
            let (pause, burst) = {
                let mut rng = rand::rng();
                (rng.random_range(0..1500u64), rng.random_range(1..=200u32))
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            burst_left = burst;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match PgConnection::connect(&url).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    failures += 1;
                    if failures > 600 {
                        return Err(e).context("the writer cannot reach the database");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match one_change(c, users, done).await {
            Ok(()) => {
                done += 1;
                failures = 0;
                burst_left = burst_left.saturating_sub(1);
            }
            Err(e) => {
                if failed == 0 {
                    first_error = e.to_string();
                }
                failed += 1;
                conn = None; // reconnect and repeat
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(Storm {
        written: done,
        failed,
        first_error,
    })
}

/// What the writer did.
struct Storm {
    written: u32,
    /// Attempts that failed and were repeated (a restart, or a broken trigger).
    failed: u32,
    first_error: String,
}

async fn one_change(conn: &mut PgConnection, users: u32, n: u32) -> Result<(), sqlx::Error> {
    let (roll, user_a, user_b, user_c) = {
        let mut rng = rand::rng();
        (
            rng.random_range(0..100u32),
            rng.random_range(1..=users as i64),
            rng.random_range(1..=users as i64),
            rng.random_range(1..=users as i64),
        )
    };
    let mut tx = conn.begin().await?;
    match roll {
        0..70 => {
            let mut who: BTreeSet<i64> = BTreeSet::from([user_a]);
            if roll % 3 != 0 {
                who.insert(user_b);
            }
            if roll % 5 == 0 {
                who.insert(user_c);
            }
            insert_appointment(&mut tx, format!("Termin {n}"), who).await?;
        }
        70..85 => {
            sqlx::query(
                "update xpert.appointments set subject = $1, updated_at = now()
                  where id = (select id from xpert.appointments order by random() limit 1)",
            )
            .bind(format!("Termin {n} (geändert)"))
            .execute(&mut *tx)
            .await?;
        }
        85..95 => {
            sqlx::query(
                "delete from xpert.appointments
                  where id = (select id from xpert.appointments order by random() limit 1)",
            )
            .execute(&mut *tx)
            .await?;
        }
        _ => {
            sqlx::query(
                "delete from xpert.appointment_participants
                  where ctid = (select ctid from xpert.appointment_participants
                                order by random() limit 1)",
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}

/// Updates in one burst of `kill9-burst`.
const BURST: u32 = 60;

/// Queue entries and change-log rows waiting now.
async fn pending_now(conn: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select (select count(*) from livesync.queue) + (select count(*) from livesync.changes)",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// After a restart at `restart` of worker `pid` with `pending` entries waiting: poll every
/// 10 ms for the first delivery recorded after that worker registered (of `appointment`
/// when given), or for the queue and the log to be empty, at most [`RESUME_WAIT`]. (A
/// statement the killed worker had sent before it died can still run and stamp a delivery
/// after the kill; one stamped before the new worker registered is not the new worker's.)
async fn wait_resume(
    conn: &mut PgConnection,
    strike: u32,
    (restart, pid): (chrono::DateTime<chrono::Utc>, u32),
    pending: i64,
    appointment: Option<i64>,
) -> anyhow::Result<Resume> {
    if pending == 0 {
        return Ok(Resume {
            strike,
            pending,
            resume_ms: None,
            seen: "nothing pending",
        });
    }
    let deadline = Instant::now() + RESUME_WAIT;
    loop {
        let (first, waiting): (Option<chrono::DateTime<chrono::Utc>>, i64) = sqlx::query_as(
            "select (select min(delivered_at) from livesync.delivered \
                      where delivered_at > greatest($1, (select max(started_at) \
                                                           from livesync.workers where pid = $3)) \
                        and ($2::bigint is null or appointment_id = $2)), \
                    (select count(*) from livesync.queue) + (select count(*) from livesync.changes)",
        )
        .bind(restart)
        .bind(appointment)
        .bind(pid as i32)
        .fetch_one(&mut *conn)
        .await?;
        let now = chrono::Utc::now();
        let (at, seen) = match (first, waiting) {
            (Some(at), _) => (Some(at), "delivery"),
            (None, 0) => (Some(now), "drained"),
            _ => (None, ""),
        };
        if let Some(at) = at {
            return Ok(Resume {
                strike,
                pending,
                resume_ms: Some(super::latency::ms_between(restart, at)),
                seen,
            });
        }
        if Instant::now() > deadline {
            return Ok(Resume {
                strike,
                pending,
                resume_ms: None,
                seen: "not within 90 s",
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A new appointment `Termin burst <n>.0` for `users`; its id.
async fn new_appointment(conn: &mut PgConnection, n: u32, users: &[i64]) -> anyhow::Result<i64> {
    let mut tx = conn.begin().await?;
    let id = insert_appointment(
        &mut tx,
        format!("Termin burst {n}.0"),
        users.iter().copied().collect(),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Xpert's insert of an appointment in two days, for an hour, with these participants;
/// its id.
async fn insert_appointment(
    conn: &mut PgConnection,
    subject: String,
    participants: BTreeSet<i64>,
) -> Result<i64, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, starts_at, ends_at)
         values ($1, now() + interval '2 days', now() + interval '2 days 1 hour')
         returning id",
    )
    .bind(subject)
    .fetch_one(&mut *conn)
    .await?;
    for user in participants {
        sqlx::query("insert into xpert.appointment_participants values ($1, $2)")
            .bind(id)
            .bind(user)
            .execute(&mut *conn)
            .await?;
    }
    Ok(id)
}

/// `count` subject changes of `appointment`, one transaction each, as fast as they go;
/// `progress` counts the ones committed.
async fn write_burst(
    url: String,
    appointment: i64,
    n: u32,
    count: u32,
    progress: Arc<std::sync::atomic::AtomicU32>,
) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&url).await?;
    for i in 1..=count {
        sqlx::query("update xpert.appointments set subject = $1, updated_at = now() where id = $2")
            .bind(format!("Termin burst {n}.{i}"))
            .bind(appointment)
            .execute(&mut conn)
            .await?;
        progress.fetch_add(1, Ordering::Relaxed);
    }
    conn.close().await.ok();
    Ok(())
}

/// Wait until the change log and the queue are empty and no user is leased.
async fn drain(conn: &mut PgConnection, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (queued, leased): (i64, i64) = sqlx::query_as(
            "select (select count(*) from livesync.queue)
                      + (select count(*) from livesync.changes),
                    (select count(*) from livesync.user_state
                      where lease_expires_at > now())",
        )
        .fetch_one(&mut *conn)
        .await?;
        if queued == 0 && leased == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not drained after {timeout:?}: {queued} queued, {leased} users leased");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the calendars are read from.
enum Calendars<'a> {
    /// `<dir>/<username>.ics`
    Files(&'a Path),
    /// `/<username>/notarxpert/` on the Radicale at this port.
    CalDav(u16),
}

/// Every user's calendar against the database.
async fn compare(conn: &mut PgConnection, calendars: Calendars<'_>) -> anyhow::Result<Report> {
    let truth: Vec<(i64, String, i64, Option<String>)> = sqlx::query_as(
        "select u.id, u.username, a.id, a.subject
           from xpert.users u
           join xpert.appointment_participants p on p.user_id = u.id
           join xpert.appointments a on a.id = p.appointment_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let users: Vec<(i64, String)> = sqlx::query_as("select id, username from xpert.users")
        .fetch_all(&mut *conn)
        .await?;
    let mut expected: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
    for (user_id, _, appointment_id, subject) in &truth {
        expected.entry(*user_id).or_default().insert(
            format!("xpert-termin-{appointment_id}@livesync"),
            subject.clone().unwrap_or_default(),
        );
    }
    let dead_letters: i64 = sqlx::query_scalar("select count(*) from livesync.dead_letters")
        .fetch_one(&mut *conn)
        .await?;
    let mut report = Report {
        fault: Fault::Kill9,
        sink: ChaosSink::Ics,
        users: 0,
        changes: 0,
        faults: 0,
        appointments_expected: truth.len(),
        lost: 0,
        duplicated: 0,
        stale: 0,
        resurrected: 0,
        dead_letters,
        seconds: 0.0,
        per_worker: Vec::new(),
        logged: None,
        duplicate_deliveries: 0,
        order_violations: 0,
        healthz: Vec::new(),
        listener_kills: Vec::new(),
        resumes: Vec::new(),
        notes: Vec::new(),
    };
    let dav = match calendars {
        Calendars::CalDav(port) => Some(Dav::new(port)?),
        Calendars::Files(_) => None,
    };
    for (user_id, username) in users {
        let text = match (&calendars, &dav) {
            (Calendars::CalDav(_), Some(dav)) => {
                let objects = caldav::read_calendar(dav, &username, "notarxpert").await?;
                objects.into_iter().map(|(_, object)| object).collect()
            }
            (Calendars::Files(dir), _) => {
                let path = dir.join(format!("{username}.ics"));
                std::fs::read_to_string(&path).unwrap_or_default()
            }
            (Calendars::CalDav(_), None) => unreachable!(),
        };
        let found = events(&text).with_context(|| format!("{username}'s calendar"))?;
        let want = expected.remove(&user_id).unwrap_or_default();
        let mut seen = BTreeSet::new();
        for (uid, summary) in &found {
            if !seen.insert(uid.clone()) {
                report.duplicated += 1;
                continue;
            }
            match want.get(uid) {
                None => report.resurrected += 1,
                Some(subject) if subject != summary => report.stale += 1,
                Some(_) => {}
            }
        }
        report.lost += want.keys().filter(|uid| !seen.contains(*uid)).count();
    }
    Ok(report)
}

/// (UID, SUMMARY) of every VEVENT in iCalendar text (one or more VCALENDARs).
fn events(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(ics::events(text)
        .map_err(anyhow::Error::msg)?
        .iter()
        .filter_map(|e| Some((e.uid()?.to_string(), e.summary().unwrap_or_default())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{Resume, events, read_user_logs, resume_summary};

    #[test]
    fn resume_times_count_only_restarts_with_work_pending() {
        let r = |pending, resume_ms| Resume {
            strike: 1,
            pending,
            resume_ms,
            seen: "",
        };
        let (n, times, max, met) =
            resume_summary(&[r(10, Some(120.0)), r(0, None), r(3, Some(900.0))]);
        assert_eq!(
            (n, times, max, met),
            (2, vec![Some(120.0), Some(900.0)], Some(900.0), true)
        );
        let (n, _, max, met) = resume_summary(&[r(10, Some(120.0)), r(5, None)]);
        assert_eq!((n, max, met), (2, Some(120.0), false));
        let (_, _, max, met) = resume_summary(&[r(1, Some(61_000.0))]);
        assert_eq!((max, met), (Some(61_000.0), false));
        assert_eq!(resume_summary(&[]), (0, vec![], None, true));
    }

    #[test]
    fn user_logs_of_several_workers_show_duplicates_and_order() {
        let dir = std::env::temp_dir().join(format!("livesync-chaos-test-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            a.join("user1.log"),
            "2026-01-01T10:00:00+01:00 delivered appointment 7 \"Termin 3\" (seq 0)\n\
             2026-01-01T10:00:01+01:00 delivered appointment 8 \"Termin 9 (geändert)\" (seq 1)\n",
        )
        .unwrap();
        std::fs::write(
            b.join("user1.log"),
            "2026-01-01T10:00:02+01:00 delivered appointment 7 \"Termin 5 (geändert)\" (seq 1)\n\
             2026-01-01T10:00:02+01:00 delivered appointment 8 \"Termin 4 (geändert)\" (seq 2)\n\
             2026-01-01T10:00:03+01:00 deleted appointment 7\n",
        )
        .unwrap();
        let clean = read_user_logs(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(clean.lines, 5);
        assert_eq!(clean.duplicates, 0);
        // Appointment 8: change 4 delivered after change 9.
        assert_eq!(clean.order_violations, 1);
        std::fs::write(
            b.join("user1.log"),
            "2026-01-01T10:00:02+01:00 delivered appointment 7 \"Termin 3\" (seq 1)\n\
             2026-01-01T10:00:03+01:00 deleted appointment 8\n\
             2026-01-01T10:00:04+01:00 deleted appointment 8\n",
        )
        .unwrap();
        let doubled = read_user_logs(&[a, b]).unwrap();
        assert_eq!(doubled.duplicates, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_uid_and_unfolded_summary() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a@x\r\nSUMMARY:Termin 1\\, ge\r\n ändert\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b@x\r\nSUMMARY:B\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            events(text).unwrap(),
            vec![
                ("a@x".to_string(), "Termin 1, geändert".to_string()),
                ("b@x".to_string(), "B".to_string())
            ]
        );
    }
}
