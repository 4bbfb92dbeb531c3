//! The real `livesync-worker run` as a child process: started with its configuration in the
//! environment, ready once it has registered in `livesync.workers`, stopped with SIGTERM.
//! Its memory is read from `/proc/<pid>/status` (`VmRSS` now, `VmHWM` the peak so far).
//! Also the machine and source a measurement was taken on, for the reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgConnection;

/// Which sink the worker delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    Null,
    Ics,
    /// `LIVESYNC_SINK=caldav`; the `LIVESYNC_CALDAV_*` settings come with the extra
    /// environment of [`WorkerProc::start_with_env`].
    CalDav,
}

impl Sink {
    pub fn name(self) -> &'static str {
        match self {
            Sink::Null => "null",
            Sink::Ics => "ics",
            Sink::CalDav => "caldav",
        }
    }
}

/// The worker binary: `$LIVESYNC_WORKER_BIN`, `livesync-worker` beside this executable, or
/// `target/release/livesync-worker`; an error saying how to build it when none exists.
pub fn find_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = given
        .or_else(super::write_path::default_worker_bin)
        .unwrap_or_else(|| PathBuf::from("target/release/livesync-worker"));
    if !bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p livesync-worker` \
             or set LIVESYNC_WORKER_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the peak resident size since the process started.
    pub peak: u64,
}

/// Read `VmRSS` and `VmHWM` of `pid`.
pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Ok(Memory {
        rss: kb("VmRSS:").context("no VmRSS")? * 1024,
        peak: kb("VmHWM:").context("no VmHWM")? * 1024,
    })
}

/// A running worker process.
pub struct WorkerProc {
    child: tokio::process::Child,
    pid: u32,
    pub log: PathBuf,
}

impl WorkerProc {
    /// Start `bin run` against `url` with `sink` (files under `ics_dir` for `ics`), and wait
    /// until it has registered.
    pub async fn start(
        bin: &Path,
        url: &str,
        sink: Sink,
        ics_dir: &Path,
        log: PathBuf,
        conn: &mut PgConnection,
    ) -> anyhow::Result<WorkerProc> {
        Self::start_with_env(bin, url, sink, ics_dir, log, conn, &[]).await
    }

    /// Like [`WorkerProc::start`], with more `LIVESYNC_*` settings in the environment.
    pub async fn start_with_env(
        bin: &Path,
        url: &str,
        sink: Sink,
        ics_dir: &Path,
        log: PathBuf,
        conn: &mut PgConnection,
        env: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProc> {
        std::fs::create_dir_all(ics_dir)?;
        let log_dir = ics_dir.join("logs");
        std::fs::create_dir_all(&log_dir)?;
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut child = tokio::process::Command::new(bin)
            .arg("run")
            .env("DATABASE_URL", url)
            .env("LIVESYNC_SINK", sink.name())
            .env("LIVESYNC_ICS_DIR", ics_dir)
            .env("LIVESYNC_LOG_DIR", &log_dir)
            .env_remove("LIVESYNC_HTTP_ADDR")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let pid = child.id().context("worker pid")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live: i64 = sqlx::query_scalar(
                "select count(*) from livesync.workers where pid = $1 \
                 and heartbeat_at > now() - interval '30 seconds'",
            )
            .bind(pid as i32)
            .fetch_one(&mut *conn)
            .await?;
            if live > 0 {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "livesync-worker exited at start ({status}); see {}",
                    log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "livesync-worker did not register within 30 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(WorkerProc { child, pid, log })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid)
    }

    /// Give the worker time to catch up at start, find nothing deliverable and fall asleep.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    /// Stop the worker once the work it ran for has `outcome`, and return that: an error of
    /// the work comes before one of stopping.
    pub async fn stop_after<T>(self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        let stopped = self.stop().await;
        let value = outcome?;
        stopped?;
        Ok(value)
    }

    /// SIGKILL, as a crash would: nothing is released, leases expire.
    pub async fn kill9(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then wait up to 15 s (the worker's grace period is 10 s) before killing it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "livesync-worker did not stop within 15 s of SIGTERM; see {}",
                    self.log.display()
                );
            }
        }
        Ok(())
    }
}

/// The output of `program args`, trimmed, when it succeeds.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The CPU's model name.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The checkout's commit, marked when `worker/` has uncommitted changes (the binary measured
/// may then differ from the commit).
pub fn source_commit() -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_string_lossy()
        .to_string();
    let commit = command_output("git", &["-C", &source, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let dirty = command_output(
        "git",
        &["-C", &source, "status", "--porcelain", "--", "worker"],
    )
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit} (worker/ has uncommitted changes)")
    } else {
        commit
    }
}
