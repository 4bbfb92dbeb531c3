//! The peer: Graphile Worker (npm `graphile-worker`, pinned in `bench/bench-peer/`) on the
//! same server, fed the same way livesync is: a trigger on `xpert.appointment_participants`
//! calls `graphile_worker.add_job` once per change, and a no-op task runs each job.
//! `bench/bench-peer/peer.js` runs the Graphile Worker runner and is driven over stdin and
//! stdout; its modules are installed with npm into `bench/bench-peer/node_modules` when
//! missing.
//!
//! Variants: `batched` (a local queue of 500 jobs and batched completion, as Graphile
//! Worker's own performance test configures it) and `unbatched` (its defaults). Both run
//! the task with the same concurrency as livesync's worker delivers users (8).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::latency::{self, LatencyResult};
use super::seed;
use super::server::BenchServer;
use super::storm::{self, POLL_MS, StormResult};
use super::worker_proc::memory_of;

/// Jobs the peer runs at once (livesync's default `LIVESYNC_CONCURRENCY`).
pub const CONCURRENCY: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Batching {
    Batched,
    Unbatched,
}

impl Batching {
    pub fn name(self) -> &'static str {
        match self {
            Batching::Batched => "batched",
            Batching::Unbatched => "unbatched",
        }
    }
}

/// Where `peer.js` lives: `$LIVESYNC_BENCH_PEER_DIR` or `bench/bench-peer` of this source tree.
pub fn peer_dir() -> PathBuf {
    std::env::var_os("LIVESYNC_BENCH_PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-peer"))
}

fn node() -> PathBuf {
    std::env::var_os("LIVESYNC_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"))
}

/// `node --version` and the installed graphile-worker version (installing it when missing).
pub async fn ensure_installed() -> anyhow::Result<(String, String)> {
    let dir = peer_dir();
    let node_version = tokio::process::Command::new(node())
        .arg("--version")
        .output()
        .await
        .context("run `node --version` (Node.js is needed for the peer)")?;
    let node_version = String::from_utf8_lossy(&node_version.stdout)
        .trim()
        .to_string();
    let package = dir.join("node_modules/graphile-worker/package.json");
    if !package.exists() {
        eprintln!(
            "peer: installing graphile-worker with npm into {}",
            dir.display()
        );
        let lock = dir.join("package-lock.json").exists();
        let status = tokio::process::Command::new("npm")
            .arg(if lock { "ci" } else { "install" })
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .status()
            .await
            .context("run npm")?;
        if !status.success() {
            bail!("npm failed in {} ({status})", dir.display());
        }
    }
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(&package)
            .with_context(|| format!("read {}", package.display()))?,
    )?;
    let version = meta["version"].as_str().unwrap_or("unknown").to_string();
    Ok((node_version, version))
}

/// An Xpert database with Graphile Worker installed and the trigger that adds one job per
/// participant change.
pub async fn peer_database(server: &BenchServer, name: &str, users: u32) -> anyhow::Result<String> {
    let url = seed::xpert_database(server, name, users).await?;
    let out = tokio::process::Command::new(node())
        .arg(peer_dir().join("peer.js"))
        .arg("install")
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run peer.js install")?;
    if !out.status.success() {
        bail!(
            "peer.js install failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::raw_sql(
        "create function public.peer_enqueue() returns trigger language plpgsql as $$
         begin
           if tg_op in ('DELETE', 'UPDATE') then
             perform graphile_worker.add_job('noop',
               json_build_object('a', old.appointment_id, 'u', old.user_id, 'op', 'delete'));
           end if;
           if tg_op in ('INSERT', 'UPDATE') then
             perform graphile_worker.add_job('noop',
               json_build_object('a', new.appointment_id, 'u', new.user_id, 'op', 'upsert'));
           end if;
           return null;
         end $$;
         create trigger peer_enqueue after insert or update or delete
           on xpert.appointment_participants
           for each row execute function public.peer_enqueue();",
    )
    .execute(&mut conn)
    .await
    .context("install the peer's trigger")?;
    conn.close().await.ok();
    Ok(url)
}

/// A running `peer.js run`.
pub struct PeerProc {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
}

/// What `peer.js` reported at the end.
#[derive(Debug, Clone)]
pub struct PeerDone {
    pub tasks: u64,
    pub last_task: Option<DateTime<Utc>>,
    /// Times by which 0 %, 10 %, … 100 % of the tasks had run.
    pub deciles: Vec<DateTime<Utc>>,
    /// Appointment id and task time, with `record`.
    pub recorded: Vec<(i64, DateTime<Utc>)>,
}

fn from_epoch_ms(ms: f64) -> DateTime<Utc> {
    Utc.timestamp_micros((ms * 1000.0).round() as i64)
        .single()
        .unwrap_or_default()
}

impl PeerProc {
    /// Start the runner process; it loads its modules and waits for [`PeerProc::go`].
    pub async fn spawn(
        url: &str,
        batching: Batching,
        record: bool,
        log: &Path,
    ) -> anyhow::Result<PeerProc> {
        let mut cmd = tokio::process::Command::new(node());
        cmd.arg(peer_dir().join("peer.js"))
            .arg("run")
            .arg(url)
            .arg("--concurrency")
            .arg(CONCURRENCY.to_string());
        if batching == Batching::Batched {
            cmd.arg("--batched");
        }
        if record {
            cmd.arg("--record");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()
            .context("spawn node peer.js")?;
        let pid = child.id().context("peer pid")?;
        let stdin = child.stdin.take().context("peer stdin")?;
        let lines = BufReader::new(child.stdout.take().context("peer stdout")?).lines();
        let mut peer = PeerProc {
            child,
            stdin,
            lines,
            pid,
        };
        peer.expect("loaded", Duration::from_secs(30)).await?;
        Ok(peer)
    }

    async fn expect(&mut self, event: &str, timeout: Duration) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .with_context(|| format!("peer.js: no '{event}' within {timeout:?}"))??
            .with_context(|| format!("peer.js ended before '{event}'"))?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("peer.js said {line}"))?;
        if v["event"] != event {
            bail!("peer.js: expected '{event}', got {line}");
        }
        Ok(v)
    }

    /// Start the runner; returns once it is running.
    pub async fn go(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"go\n").await?;
        self.stdin.flush().await?;
        self.expect("started", Duration::from_secs(30)).await?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stop gracefully and read the final report.
    pub async fn stop(mut self) -> anyhow::Result<PeerDone> {
        self.stdin.write_all(b"stop\n").await?;
        self.stdin.flush().await?;
        let done = self.expect("done", Duration::from_secs(60)).await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let recorded = done["recorded"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some((p[0].as_i64()?, from_epoch_ms(p[1].as_f64()?))))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PeerDone {
            tasks: done["tasks"].as_u64().unwrap_or(0),
            last_task: done["last_task_ms"].as_f64().map(from_epoch_ms),
            deciles: done["deciles_ms"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_f64().map(from_epoch_ms))
                        .collect()
                })
                .unwrap_or_default(),
            recorded,
        })
    }
}

/// Live latency with the peer: the same writes as livesync's scenario; latency = from the
/// client's COMMIT returning to the no-op task starting (its wall clock, read in Node).
pub async fn run_latency(
    server: &BenchServer,
    batching: Batching,
    config: &latency::Config,
    work_dir: &Path,
) -> anyhow::Result<LatencyResult> {
    let name = format!("livesync_bench_peer_latency_{}", batching.name());
    eprintln!("latency: graphile-worker, {}", batching.name());
    let url = peer_database(server, &name, config.users).await?;
    let result = async {
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::raw_sql("vacuum analyze").execute(&mut conn).await?;
        let log = work_dir.join(format!("peer-latency-{}.log", batching.name()));
        let mut peer = PeerProc::spawn(&url, batching, true, &log).await?;
        peer.go().await?;
        let warm = latency::write_paced(&mut conn, 1, config.rate, config.warmup).await?;
        let writes =
            latency::write_paced(&mut conn, 1, config.rate, config.rate * config.seconds).await?;
        seed::wait_until(
            &mut conn,
            "select not exists (select 1 from graphile_worker._private_jobs)",
            Duration::from_millis(20),
            Duration::from_secs(10),
        )
        .await?;
        let done = peer.stop().await?;
        let ran: std::collections::HashMap<i64, DateTime<Utc>> =
            done.recorded.into_iter().collect();
        let _ = warm;
        let ms: Vec<f64> = writes
            .iter()
            .filter_map(|(id, committed)| {
                ran.get(id).map(|at| latency::ms_between(*committed, *at))
            })
            .collect();
        let missing = writes.len() - ms.len();
        conn.close().await.ok();
        anyhow::Ok(LatencyResult::from_samples(
            "graphile-worker",
            batching.name().to_string(),
            ms,
            missing,
        ))
    }
    .await;
    server.drop_database(&name).await;
    result
}

/// A peer database with `users` × `per_user` jobs added by the trigger while no runner runs,
/// vacuumed and analysed: the template both peer variants copy.
pub async fn seed_storm(
    server: &BenchServer,
    users: u32,
    per_user: u32,
) -> anyhow::Result<seed::Template> {
    let name = format!("livesync_bench_peer_seed_{users}x{per_user}");
    eprintln!("storm: seeding graphile-worker, {users} users × {per_user} changes");
    let url = peer_database(server, &name, users).await?;
    let mut conn = PgConnection::connect(&url).await?;
    let seeded = seed::write_appointments(&mut conn, users, per_user).await?;
    sqlx::raw_sql("vacuum analyze").execute(&mut conn).await?;
    conn.close().await?;
    Ok(seed::Template {
        name,
        users,
        per_user,
        seeded,
    })
}

/// The storm with the peer on a copy of `template`: the runner starts and the clock runs
/// until the jobs table is empty.
pub async fn run_storm(
    server: &BenchServer,
    template: &seed::Template,
    batching: Batching,
    timeout: Duration,
    work_dir: &Path,
) -> anyhow::Result<StormResult> {
    let name = format!("livesync_bench_peer_storm_{}", batching.name());
    let (users, per_user) = (template.users, template.per_user);
    eprintln!(
        "storm: graphile-worker, {}, {} × {}",
        batching.name(),
        users,
        per_user
    );
    let url = template.copy(server, &name).await?;
    let result = async {
        let mut conn = PgConnection::connect(&url).await?;
        let tables = ["graphile_worker._private_jobs"];
        let entries: i64 = sqlx::query_scalar("select count(*) from graphile_worker._private_jobs")
            .fetch_one(&mut conn)
            .await?;
        let before = seed::table_stats(&mut conn, &tables).await?;
        let log = work_dir.join(format!("peer-storm-{}.log", batching.name()));
        let mut peer = PeerProc::spawn(&url, batching, false, &log).await?;
        let idle = memory_of(peer.pid())?;
        let t0 = Utc::now();
        peer.go().await?;
        let drained = seed::wait_until(
            &mut conn,
            "select not exists (select 1 from graphile_worker._private_jobs)",
            Duration::from_millis(POLL_MS),
            timeout,
        )
        .await?;
        let seen_empty = Utc::now();
        let peak = memory_of(peer.pid())?;
        let done = peer.stop().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = seed::table_stats(&mut conn, &tables).await?;
        seed::vacuum(&mut conn, &tables).await?;
        let after_vacuum = seed::table_stats(&mut conn, &tables).await?;
        conn.close().await.ok();
        anyhow::Ok(
            StormResult {
                system: "graphile-worker",
                variant: batching.name().to_string(),
                users,
                per_user,
                entries: entries as u64,
                seed_seconds: template.seeded.seconds,
                logins_seconds: None,
                delivered: done.tasks,
                drained,
                to_last_delivery_s: done.last_task.map(|t| latency::ms_between(t0, t) / 1000.0),
                to_queue_empty_s: latency::ms_between(t0, seen_empty) / 1000.0,
                changes_per_s: None,
                steady_changes_per_s: None,
                deciles_s: storm::deciles_since(t0, &done.deciles),
                memory: Some(storm::StormMemory {
                    idle_rss: idle.rss,
                    peak_rss: peak.peak,
                    after_rss: peak.rss,
                }),
                tables_before: before,
                tables_after: after,
                tables_after_vacuum: after_vacuum,
            }
            .finish(),
        )
    }
    .await;
    server.drop_database(&name).await;
    result
}
