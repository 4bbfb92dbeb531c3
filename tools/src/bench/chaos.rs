//! `livesync-bench chaos`: faults during a storm of Xpert writes, then a comparison of every
//! user's calendar with the database's truth.
//!
//! A writer makes `changes` Xpert-like changes (new appointments with one to three
//! participants, subject changes, deletions, participants removed), one transaction each,
//! while the real `livesync-worker run` (push mode, `ics` sink, 5 s lease) delivers them
//! and a fault strikes `faults` times at random moments:
//! - `kill9`: the worker is killed with SIGKILL and started again;
//! - `sigterm`: the worker is stopped with SIGTERM and started again;
//! - `pg-restart`: PostgreSQL itself restarts (fast shutdown, start) under the running
//!   worker, which must reconnect, LISTEN again and catch up.
//!
//! Then everything must drain, and each user's `.ics` file must hold exactly the
//! appointments they take part in, once each, with the current subject: nothing lost,
//! duplicated, stale or resurrected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use sqlx::{Connection, PgConnection};

use super::server::BenchServer;
use super::worker_proc::{Sink, WorkerProc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill9,
    Sigterm,
    PgRestart,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::Sigterm => "sigterm",
            Fault::PgRestart => "pg-restart",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub users: u32,
    pub changes: u32,
    pub faults: u32,
}

impl Config {
    pub fn full() -> Config {
        Config {
            users: 50,
            changes: 10_000,
            faults: 20,
        }
    }
    pub fn quick() -> Config {
        Config {
            users: 20,
            changes: 1_500,
            faults: 4,
        }
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub fault: Fault,
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
}

impl Report {
    pub fn clean(&self) -> bool {
        self.lost + self.duplicated + self.stale + self.resurrected == 0 && self.dead_letters == 0
    }
}

/// Worker settings for chaos: a short lease, so a killed worker's users come back soon.
const WORKER_ENV: [(&str, &str); 2] = [
    ("LIVESYNC_LEASE_SECS", "5"),
    ("LIVESYNC_POLL_INTERVAL_MS", "200"),
];

pub async fn run(
    server: &BenchServer,
    worker_bin: &Path,
    fault: Fault,
    config: &Config,
    work_dir: &Path,
) -> anyhow::Result<Report> {
    if fault == Fault::PgRestart && !server.can_restart() {
        bail!("pg-restart needs the private server: unset DATABASE_URL");
    }
    let started = Instant::now();
    let name = format!("livesync_chaos_{}", fault.name().replace('-', "_"));
    let url = super::seed::livesync_database(server, &name, config.users).await?;
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::query("update livesync.settings set delivery_mode = 'push'")
        .execute(&mut conn)
        .await?;
    let ics_dir = work_dir.join(format!("chaos-{}", fault.name()));
    let _ = std::fs::remove_dir_all(&ics_dir);
    let log = |n: u32| work_dir.join(format!("chaos-{}-worker-{n}.log", fault.name()));

    let mut worker = start_worker(worker_bin, &url, &ics_dir, log(0), &mut conn).await?;
    let writer = tokio::spawn(write_storm(url.clone(), config.users, config.changes));

    let mut rng = rand::rng();
    for n in 1..=config.faults {
        let pause = Duration::from_millis(rng.random_range(200..1500));
        tokio::time::sleep(pause).await;
        match fault {
            Fault::Kill9 => {
                worker.kill9().await;
                worker = start_worker(worker_bin, &url, &ics_dir, log(n), &mut conn).await?;
            }
            Fault::Sigterm => {
                worker.stop().await?;
                worker = start_worker(worker_bin, &url, &ics_dir, log(n), &mut conn).await?;
            }
            Fault::PgRestart => {
                let _ = conn.close().await;
                server.restart()?;
                conn = PgConnection::connect(&url).await?;
            }
        }
    }
    let written = writer.await.context("writer task")??;
    drain(&mut conn, Duration::from_secs(180)).await?;
    worker.stop().await?;

    let mut report = compare(&mut conn, &ics_dir).await?;
    report.fault = fault;
    report.users = config.users;
    report.changes = written;
    report.faults = config.faults;
    report.seconds = started.elapsed().as_secs_f64();
    conn.close().await.ok();
    if report.clean() {
        server.drop_database(&name).await;
        let _ = std::fs::remove_dir_all(&ics_dir);
    }
    Ok(report)
}

async fn start_worker(
    bin: &Path,
    url: &str,
    ics_dir: &Path,
    log: PathBuf,
    conn: &mut PgConnection,
) -> anyhow::Result<WorkerProc> {
    WorkerProc::start_with_env(bin, url, Sink::Ics, ics_dir, log, conn, &WORKER_ENV).await
}

/// Xpert's writes, one transaction each; a connection lost to a server restart is opened
/// again and the change repeated. Returns how many changes were made.
async fn write_storm(url: String, users: u32, changes: u32) -> anyhow::Result<u32> {
    let mut done = 0;
    let mut conn: Option<PgConnection> = None;
    let mut failures = 0;
    while done < changes {
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
            }
            Err(_) => {
                conn = None; // reconnect and repeat
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(done)
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
            let id: i64 = sqlx::query_scalar(
                "insert into xpert.appointments (subject, starts_at, ends_at)
                 values ($1, now() + interval '2 days', now() + interval '2 days 1 hour')
                 returning id",
            )
            .bind(format!("Termin {n}"))
            .fetch_one(&mut *tx)
            .await?;
            let mut who: BTreeSet<i64> = BTreeSet::from([user_a]);
            if roll % 3 != 0 {
                who.insert(user_b);
            }
            if roll % 5 == 0 {
                who.insert(user_c);
            }
            for user in who {
                sqlx::query("insert into xpert.appointment_participants values ($1, $2)")
                    .bind(id)
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
            }
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

/// Wait until the queue is empty and no user is leased.
async fn drain(conn: &mut PgConnection, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (queued, leased): (i64, i64) = sqlx::query_as(
            "select (select count(*) from livesync.queue),
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

/// Every user's calendar against the database.
async fn compare(conn: &mut PgConnection, ics_dir: &Path) -> anyhow::Result<Report> {
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
    };
    for (user_id, username) in users {
        let path = ics_dir.join(format!("{username}.ics"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found = events(&text);
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

/// (UID, SUMMARY) of every VEVENT in an .ics file (unfolded; our own output).
fn events(text: &str) -> Vec<(String, String)> {
    let unfolded = text.replace("\r\n ", "").replace("\r\n\t", "");
    let mut out = Vec::new();
    let (mut uid, mut summary) = (None, None);
    for line in unfolded.split("\r\n") {
        if line == "BEGIN:VEVENT" {
            uid = None;
            summary = None;
        } else if let Some(v) = line.strip_prefix("UID:") {
            uid = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("SUMMARY:") {
            summary = Some(
                v.replace("\\,", ",")
                    .replace("\\;", ";")
                    .replace("\\\\", "\\"),
            );
        } else if line == "END:VEVENT"
            && let Some(u) = uid.take()
        {
            out.push((u, summary.take().unwrap_or_default()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::events;

    #[test]
    fn reads_uid_and_unfolded_summary() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a@x\r\nSUMMARY:Termin 1\\, ge\r\n ändert\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b@x\r\nSUMMARY:B\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            events(text),
            vec![
                ("a@x".to_string(), "Termin 1, geändert".to_string()),
                ("b@x".to_string(), "B".to_string())
            ]
        );
    }
}
