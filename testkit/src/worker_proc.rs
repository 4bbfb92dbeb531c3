//! The real `livesync-worker run` as a child process, for the tests and the benchmarks:
//! started with its configuration in the environment (the caller's, or a cleared one with
//! only `PATH` and a umask of its own), its output going to files, ready once it has
//! registered in `livesync.workers`, stopped with SIGTERM or killed with SIGKILL. Its
//! memory is read from `/proc/<pid>/status` (`VmRSS` now, `VmHWM` the peak so far).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgConnection;

/// How long a worker gets to end after SIGTERM (its own grace period is 10 s).
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Which sink the worker delivers to (`LIVESYNC_SINK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    Null,
    Ics,
    /// `LIVESYNC_SINK=caldav`; the `LIVESYNC_CALDAV_*` settings come with the extra
    /// environment of [`WorkerProc::start`].
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

/// How to start a worker: its environment, working directory, umask and output files.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Settings (`DATABASE_URL`, `LIVESYNC_*`, …).
    pub env: Vec<(String, String)>,
    /// Start from an empty environment (only `PATH` kept), so that no variable or `.env` of
    /// the caller leaks in; otherwise the caller's environment less `LIVESYNC_HTTP_ADDR`.
    pub clear_env: bool,
    pub cwd: Option<PathBuf>,
    /// Run under this umask (through `sh`, which then `exec`s the worker).
    pub umask: Option<String>,
    /// Where standard output goes, and standard error too unless `stderr` is given.
    pub stdout: PathBuf,
    pub stderr: Option<PathBuf>,
}

/// What a finished process printed, and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    pub fn failed(&self) -> bool {
        self.code != Some(0)
    }
}

/// A running worker process, killed when dropped.
pub struct WorkerProc {
    child: tokio::process::Child,
    pid: u32,
    /// Its standard output (and standard error, unless apart).
    pub log: PathBuf,
    stderr: PathBuf,
}

impl WorkerProc {
    /// Start `bin run` as `launch` says; returns at once (see [`WorkerProc::registered`]).
    pub fn spawn(bin: &Path, launch: &Launch) -> anyhow::Result<WorkerProc> {
        let out = std::fs::File::create(&launch.stdout)
            .with_context(|| format!("create {}", launch.stdout.display()))?;
        let err = match &launch.stderr {
            Some(path) => {
                std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?
            }
            None => out.try_clone()?,
        };
        let mut command = match &launch.umask {
            Some(umask) => {
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("umask {umask} && exec \"$0\" run"))
                    .arg(bin);
                c
            }
            None => {
                let mut c = tokio::process::Command::new(bin);
                c.arg("run");
                c
            }
        };
        if launch.clear_env {
            command
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        } else {
            command.env_remove("LIVESYNC_HTTP_ADDR");
        }
        if let Some(cwd) = &launch.cwd {
            command.current_dir(cwd);
        }
        let child = command
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {} run", bin.display()))?;
        Ok(WorkerProc {
            pid: child.id().context("the worker's pid")?,
            child,
            stderr: launch
                .stderr
                .clone()
                .unwrap_or_else(|| launch.stdout.clone()),
            log: launch.stdout.clone(),
        })
    }

    /// Start `bin run` against `url` with `sink` (files under `ics_dir` for `ics`, its
    /// output into `log`) and more `LIVESYNC_*` settings `env` in the environment, and wait
    /// until it has registered.
    pub async fn start(
        bin: &Path,
        url: &str,
        sink: Sink,
        ics_dir: &Path,
        log: PathBuf,
        conn: &mut PgConnection,
        env: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProc> {
        let log_dir = ics_dir.join("logs");
        std::fs::create_dir_all(&log_dir)?;
        let mut settings = vec![
            ("DATABASE_URL".to_string(), url.to_string()),
            ("LIVESYNC_SINK".to_string(), sink.name().to_string()),
            ("LIVESYNC_ICS_DIR".to_string(), path_text(ics_dir)),
            ("LIVESYNC_LOG_DIR".to_string(), path_text(&log_dir)),
        ];
        settings.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let launch = Launch {
            env: settings,
            stdout: log,
            ..Launch::default()
        };
        let mut worker = Self::spawn(bin, &launch)?;
        worker.registered(conn, Duration::from_secs(30)).await?;
        Ok(worker)
    }

    /// Wait (at most `within`) until the worker has registered in `livesync.workers` with a
    /// fresh heartbeat; an error with its output when it exits or does not register.
    pub async fn registered(
        &mut self,
        conn: &mut PgConnection,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let live: i64 = sqlx::query_scalar(
                "select count(*) from livesync.workers where pid = $1 \
                 and heartbeat_at > now() - interval '30 seconds'",
            )
            .bind(self.pid as i32)
            .fetch_one(&mut *conn)
            .await?;
            if live > 0 {
                return Ok(());
            }
            self.running()?;
            if Instant::now() > deadline {
                bail!(
                    "livesync-worker did not register within {within:?}; see {}",
                    self.stderr.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid)
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// An error with the worker's standard error if it has exited.
    pub fn running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("livesync-worker exited ({status}):\n{}", self.stderr()),
            None => Ok(()),
        }
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

    /// SIGTERM, then wait (at most 30 s; the worker's grace period is 10 s) for the end; an
    /// error, the worker killed, when it does not end.
    pub async fn stop(mut self) -> anyhow::Result<Ran> {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(STOP_WITHIN, self.child.wait()).await {
            Ok(status) => Ok(self.finished(status?.code())),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "livesync-worker did not stop within {STOP_WITHIN:?} of SIGTERM; see {}",
                    self.stderr.display()
                )
            }
        }
    }

    /// Wait (at most `within`) for a worker that ends by itself.
    pub async fn wait(mut self, within: Duration) -> anyhow::Result<Ran> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("livesync-worker did not end within {within:?}"))??;
        Ok(self.finished(status.code()))
    }

    fn finished(&self, code: Option<i32>) -> Ran {
        Ran {
            what: "livesync-worker run".into(),
            code,
            stdout: std::fs::read_to_string(&self.log).unwrap_or_default(),
            stderr: if self.stderr == self.log {
                String::new()
            } else {
                self.stderr()
            },
        }
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
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
