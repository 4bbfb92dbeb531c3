//! `livesync-bench all | latency | storm | growth`: the delivery scenarios (live latency,
//! login storm, growth, memory) with the real worker, and the same latency and storm with
//! the peer (Graphile Worker) on the same server in the same run; one report with the
//! environment, every figure, the ratios and the targets.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::latency::{self, LatencyResult};
use super::peer::{self, Batching};
use super::server::BenchServer;
use super::storm::{self, StormResult};
use super::verdict;
use super::worker_proc::{self, Sink, command_output, cpu_model, load_average, source_commit};

/// Which scenarios to run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Parts {
    pub latency: bool,
    pub storm: bool,
    pub growth: bool,
    /// Run the peer alongside latency and storm.
    pub peer: bool,
}

impl Parts {
    pub fn all() -> Parts {
        Parts {
            latency: true,
            storm: true,
            growth: true,
            peer: true,
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub quick: bool,
    pub latency: latency::Config,
    pub storm_users: u32,
    pub storm_per_user: u32,
    /// (users, changes per user) of each growth step; a step equal to the storm's reuses
    /// the storm's `null` run. The full run grows the queue at 1,000 users (10k, 100k, 1M
    /// entries) and adds 100k entries over 3,000 users, for the cost that grows with users.
    pub growth: Vec<(u32, u32)>,
    pub sinks: Vec<Sink>,
    pub worker_bin: Option<PathBuf>,
}

impl Config {
    pub fn full() -> Config {
        Config {
            quick: false,
            latency: latency::Config::full(),
            storm_users: 1000,
            storm_per_user: 100,
            growth: vec![(1000, 10), (1000, 100), (1000, 1000), (3000, 33)],
            sinks: vec![Sink::Null, Sink::Ics],
            worker_bin: None,
        }
    }

    /// Under two minutes: latency 5 s, storm and growth at 10,000 entries.
    pub fn quick() -> Config {
        Config {
            quick: true,
            latency: latency::Config::quick(),
            storm_users: 100,
            storm_per_user: 100,
            growth: vec![(100, 100)],
            ..Config::full()
        }
    }
}

/// Where and with what the figures were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub load_at_start: String,
    pub load_at_end: String,
    pub postgres: String,
    pub server_settings: String,
    pub server: String,
    pub rustc: String,
    pub node: Option<String>,
    pub graphile_worker: Option<String>,
    pub worker_bin: String,
    pub source_commit: String,
}

/// Ours against theirs.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub what: String,
    pub livesync: f64,
    pub peer: f64,
    /// livesync / peer.
    pub ratio: f64,
    /// Which direction is better.
    pub better: &'static str,
}

/// A target from the issue and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub value: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub started_at: String,
    pub seconds: f64,
    pub config: Config,
    pub environment: Environment,
    pub latency: Vec<LatencyResult>,
    pub storm: Vec<StormResult>,
    pub growth: Vec<StormResult>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
    /// Scenarios that failed; the others still ran.
    pub errors: Vec<String>,
    /// Worker and peer logs of this run.
    pub work_dir: String,
}

fn environment_now(server: &BenchServer, bin: &str) -> Environment {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpu_model(),
        memory,
        load_at_start: load_average(),
        load_at_end: String::new(),
        postgres: String::new(),
        server_settings: String::new(),
        server: server.describe(),
        rustc: command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        node: None,
        graphile_worker: None,
        worker_bin: bin.to_string(),
        source_commit: source_commit(),
    }
}

/// Run `parts` on `server`.
pub async fn run(server: &BenchServer, config: Config, parts: Parts) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let bin = worker_proc::find_bin(config.worker_bin.clone())?;
    let mut env = environment_now(server, &bin.display().to_string());
    let info = server.describe_settings().await?;
    env.postgres = info.version;
    env.server_settings = info.settings;
    let work_dir = std::env::temp_dir().join(format!("livesync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;

    let mut errors = Vec::new();
    let mut peer_ok = parts.peer;
    if parts.peer && (parts.latency || parts.storm) {
        match peer::ensure_installed().await {
            Ok((node, graphile)) => {
                env.node = Some(node);
                env.graphile_worker = Some(graphile);
            }
            Err(e) => {
                errors.push(format!("peer not run: {e:#}"));
                peer_ok = false;
            }
        }
    }

    let mut latency_results = Vec::new();
    if parts.latency {
        for sink in &config.sinks {
            match latency::run_livesync(server, &bin, *sink, &config.latency, &work_dir).await {
                Ok(r) => latency_results.push(r),
                Err(e) => errors.push(format!("latency, {} sink: {e:#}", sink.name())),
            }
        }
        if peer_ok {
            for b in [Batching::Batched, Batching::Unbatched] {
                match peer::run_latency(server, b, &config.latency, &work_dir).await {
                    Ok(r) => latency_results.push(r),
                    Err(e) => errors.push(format!("latency, graphile-worker {}: {e:#}", b.name())),
                }
            }
        }
    }

    let storm_timeout = |users: u32, per_user: u32| {
        Duration::from_secs(60 + (users as u64 * per_user as u64) / 5000)
    };
    let mut storm_results = Vec::new();
    if parts.storm {
        let (u, k) = (config.storm_users, config.storm_per_user);
        match storm::seed_livesync(server, u, k).await {
            Ok(template) => {
                for sink in &config.sinks {
                    match storm::run_livesync(
                        server,
                        &template,
                        &bin,
                        *sink,
                        storm_timeout(u, k),
                        &work_dir,
                    )
                    .await
                    {
                        Ok(r) => storm_results.push(r),
                        Err(e) => errors.push(format!("storm, {} sink: {e:#}", sink.name())),
                    }
                }
                template.drop(server).await;
            }
            Err(e) => errors.push(format!("storm: seeding livesync: {e:#}")),
        }
        if peer_ok {
            match peer::seed_storm(server, u, k).await {
                Ok(template) => {
                    for b in [Batching::Batched, Batching::Unbatched] {
                        match peer::run_storm(server, &template, b, storm_timeout(u, k), &work_dir)
                            .await
                        {
                            Ok(r) => storm_results.push(r),
                            Err(e) => {
                                errors.push(format!("storm, graphile-worker {}: {e:#}", b.name()))
                            }
                        }
                    }
                    template.drop(server).await;
                }
                Err(e) => errors.push(format!("storm: seeding graphile-worker: {e:#}")),
            }
        }
    }

    let mut growth = Vec::new();
    if parts.growth {
        for &(u, k) in &config.growth {
            let reuse = storm_results.iter().find(|r| {
                r.system == "livesync"
                    && r.variant == "null sink"
                    && r.users == u
                    && r.per_user == k
            });
            if let Some(r) = reuse {
                growth.push(r.clone());
                continue;
            }
            let run = async {
                let template = storm::seed_livesync(server, u, k).await?;
                let r = storm::run_livesync(
                    server,
                    &template,
                    &bin,
                    Sink::Null,
                    storm_timeout(u, k),
                    &work_dir,
                )
                .await;
                template.drop(server).await;
                r
            };
            match run.await {
                Ok(r) => growth.push(r),
                Err(e) => errors.push(format!("growth, {u} × {k}: {e:#}")),
            }
        }
    }

    env.load_at_end = load_average();
    let ratios = ratios(&latency_results, &storm_results);
    let targets = targets(&latency_results, &storm_results, &growth);
    if errors.is_empty() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(Report {
        scenario: "delivery",
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        config,
        environment: env,
        latency: latency_results,
        storm: storm_results,
        growth,
        ratios,
        targets,
        errors,
        work_dir: work_dir.display().to_string(),
    })
}

fn find<'a>(rs: &'a [LatencyResult], system: &str, variant: &str) -> Option<&'a LatencyResult> {
    rs.iter()
        .find(|r| r.system == system && r.variant == variant)
}

fn find_storm<'a>(rs: &'a [StormResult], system: &str, variant: &str) -> Option<&'a StormResult> {
    rs.iter()
        .find(|r| r.system == system && r.variant == variant)
}

fn ratios(latency: &[LatencyResult], storm: &[StormResult]) -> Vec<Ratio> {
    let mut out = Vec::new();
    if let Some(ours) = find(latency, "livesync", "null sink") {
        for b in ["batched", "unbatched"] {
            if let Some(theirs) = find(latency, "graphile-worker", b) {
                for (what, o, t) in [
                    ("p50", ours.p50_ms, theirs.p50_ms),
                    ("p99", ours.p99_ms, theirs.p99_ms),
                ] {
                    out.push(Ratio {
                        what: format!("latency {what} ms, null sink vs graphile-worker {b}"),
                        livesync: o,
                        peer: t,
                        ratio: o / t,
                        better: "lower",
                    });
                }
            }
        }
    }
    if let Some(ours) = find_storm(storm, "livesync", "null sink") {
        for b in ["batched", "unbatched"] {
            if let Some(theirs) = find_storm(storm, "graphile-worker", b) {
                if let (Some(o), Some(t)) = (ours.changes_per_s, theirs.changes_per_s) {
                    out.push(Ratio {
                        what: format!("storm changes/s, null sink vs graphile-worker {b}"),
                        livesync: o,
                        peer: t,
                        ratio: o / t,
                        better: "higher",
                    });
                }
                if let (Some(o), Some(t)) = (ours.memory, theirs.memory) {
                    out.push(Ratio {
                        what: format!("storm peak RSS MB, null sink vs graphile-worker {b}"),
                        livesync: mb(o.peak_rss),
                        peer: mb(t.peak_rss),
                        ratio: o.peak_rss as f64 / t.peak_rss as f64,
                        better: "lower",
                    });
                }
            }
        }
    }
    out
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

fn targets(
    latency: &[LatencyResult],
    storm: &[StormResult],
    growth: &[StormResult],
) -> Vec<Target> {
    let mut out = latency_targets(latency);
    if let (Some(o), Some(t)) = (
        find_storm(storm, "livesync", "null sink"),
        find_storm(storm, "graphile-worker", "batched"),
    ) && let (Some(ov), Some(tv)) = (o.changes_per_s, t.changes_per_s)
    {
        out.push(Target {
            what: format!(
                "storm ({} entries), null sink: ahead of graphile-worker batched",
                o.entries
            ),
            value: format!("{ov:.0} vs {tv:.0} changes/s = {:.2}×", ov / tv),
            met: Some(ov > tv && o.drained),
        });
    }
    for r in storm.iter().filter(|r| r.system == "livesync") {
        if let Some(m) = r.memory {
            out.push(Target {
                what: format!(
                    "worker peak RSS ≤ 50 MB, storm of {} entries, {}",
                    r.entries, r.variant
                ),
                value: format!("{:.1} MB (idle {:.1} MB)", mb(m.peak_rss), mb(m.idle_rss)),
                met: Some(m.peak_rss <= 50 * 1024 * 1024),
            });
        }
    }
    out.extend(super::growth::targets(growth));
    out
}

/// Commit → calendar p99 per sink (`latency::p99_target_ms`): ≤ 10 ms on `null`, ≤ 25 ms on
/// `ics`, every write delivered. The peer's figures are information only.
pub fn latency_targets(latency: &[LatencyResult]) -> Vec<Target> {
    let mut out = Vec::new();
    for sink in [Sink::Null, Sink::Ics] {
        let Some(limit) = latency::p99_target_ms(sink) else {
            continue;
        };
        if let Some(o) = find(latency, "livesync", &format!("{} sink", sink.name())) {
            out.push(Target {
                what: format!("latency, {} sink: p99 ≤ {limit:.0} ms", sink.name()),
                value: format!(
                    "{:.2} ms ({} samples, {} missing)",
                    o.p99_ms, o.samples, o.missing
                ),
                met: Some(o.p99_ms <= limit && o.missing == 0),
            });
        }
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn size(bytes: i64) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.0} MB", bytes as f64 / 1024.0 / 1024.0)
    } else {
        format!("{:.0} kB", bytes as f64 / 1024.0)
    }
}

/// Changes per second in each tenth of the deliveries.
pub fn tenth_rates(r: &StormResult) -> Vec<f64> {
    r.deciles_s
        .windows(2)
        .map(|w| {
            let span = w[1] - w[0];
            if span > 0.0 {
                0.1 * r.delivered as f64 / span
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.environment;
        writeln!(
            f,
            "livesync-bench {} ({}, {:.0} s{})",
            self.scenario,
            self.started_at,
            self.seconds,
            if self.config.quick { ", --quick" } else { "" }
        )?;
        writeln!(
            f,
            "machine: {} CPUs ({}), {}; load average at start {}, at end {}",
            e.cpus, e.cpu_model, e.memory, e.load_at_start, e.load_at_end
        )?;
        writeln!(f, "server: {}", e.server)?;
        writeln!(f, "{}", e.postgres)?;
        writeln!(f, "{}", e.server_settings)?;
        writeln!(
            f,
            "{}; worker {} (source {}); node {}, graphile-worker {}",
            e.rustc,
            e.worker_bin,
            e.source_commit,
            e.node.as_deref().unwrap_or("-"),
            e.graphile_worker.as_deref().unwrap_or("-")
        )?;

        if !self.latency.is_empty() {
            let c = &self.config.latency;
            writeln!(f)?;
            writeln!(
                f,
                "## Live latency: {} writes/s for {} s, one online user among {} (COMMIT returned → delivered)",
                c.rate, c.seconds, c.users
            )?;
            writeln!(f)?;
            writeln!(
                f,
                "| system | variant | samples | p50 ms | p90 ms | p99 ms | max ms | mean ms | missing |"
            )?;
            writeln!(
                f,
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            )?;
            for r in &self.latency {
                writeln!(
                    f,
                    "| {} | {} | {} | {:.2} | {} |",
                    r.system,
                    r.variant,
                    r.sample_cells(),
                    r.mean_ms,
                    r.missing
                )?;
            }
        }

        if !self.storm.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "## Login storm: {} users × {} queued changes, all log in at once",
                self.config.storm_users, self.config.storm_per_user
            )?;
            writeln!(f)?;
            storm_table(f, &self.storm)?;
            writeln!(f)?;
            writeln!(f, "## Memory of the delivering process (MB)")?;
            writeln!(f)?;
            writeln!(
                f,
                "| system | variant | entries | idle before | peak (VmHWM) | after the drain |"
            )?;
            writeln!(f, "| --- | --- | ---: | ---: | ---: | ---: |")?;
            let extra_growth = self.growth.iter().filter(|g| {
                !self.storm.iter().any(|s| {
                    s.system == g.system
                        && s.variant == g.variant
                        && s.users == g.users
                        && s.per_user == g.per_user
                })
            });
            for r in self.storm.iter().chain(extra_growth) {
                if let Some(m) = r.memory {
                    writeln!(
                        f,
                        "| {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                        r.system,
                        r.variant,
                        r.entries,
                        mb(m.idle_rss),
                        mb(m.peak_rss),
                        mb(m.after_rss)
                    )?;
                }
            }
        }

        if !self.growth.is_empty() {
            writeln!(f)?;
            writeln!(f, "## Growth: the storm at several sizes (null sink)")?;
            writeln!(f)?;
            storm_table(f, &self.growth)?;
            writeln!(f)?;
            writeln!(
                f,
                "| entries | table | size before | after the drain | after VACUUM | dead tuples after the drain | autovacuums during |"
            )?;
            writeln!(f, "| ---: | --- | ---: | ---: | ---: | ---: | ---: |")?;
            for r in &self.growth {
                for (i, b) in r.tables_before.iter().enumerate() {
                    let (Some(a), Some(v)) = (r.tables_after.get(i), r.tables_after_vacuum.get(i))
                    else {
                        continue;
                    };
                    writeln!(
                        f,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        r.entries,
                        b.table,
                        size(b.total_bytes),
                        size(a.total_bytes),
                        size(v.total_bytes),
                        a.dead_tuples,
                        a.autovacuums - b.autovacuums
                    )?;
                }
            }
        }

        if !self.ratios.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "## livesync vs graphile-worker (information, not a target)"
            )?;
            writeln!(f)?;
            writeln!(
                f,
                "| figure | livesync | graphile-worker | ratio | better |"
            )?;
            writeln!(f, "| --- | ---: | ---: | ---: | --- |")?;
            for r in &self.ratios {
                writeln!(
                    f,
                    "| {} | {:.2} | {:.2} | {:.2} | {} |",
                    r.what, r.livesync, r.peer, r.ratio, r.better
                )?;
            }
        }
        if !self.targets.is_empty() {
            writeln!(f)?;
            writeln!(f, "## Targets")?;
            writeln!(f)?;
            writeln!(f, "| target | this run | met |")?;
            writeln!(f, "| --- | --- | --- |")?;
            for t in &self.targets {
                writeln!(
                    f,
                    "| {} | {} | {} |",
                    t.what,
                    t.value,
                    verdict::met_if_known(t.met)
                )?;
            }
        }
        errors_section(f, &self.errors, &self.work_dir)
    }
}

/// The scenarios that failed, and where their logs are; nothing when none did.
pub fn errors_section(
    f: &mut fmt::Formatter<'_>,
    errors: &[String],
    work_dir: &str,
) -> fmt::Result {
    if !errors.is_empty() {
        writeln!(f)?;
        writeln!(f, "## Errors (logs in {work_dir})")?;
        for e in errors {
            writeln!(f, "- {e}")?;
        }
    }
    Ok(())
}

fn storm_table(f: &mut fmt::Formatter<'_>, rows: &[StormResult]) -> fmt::Result {
    writeln!(
        f,
        "| system | variant | entries | seeding s | logins s | to last delivery s | to queue empty s | changes/s | steady changes/s | tenths min–max changes/s | delivered |"
    )?;
    writeln!(
        f,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for r in rows {
        let tenths = tenth_rates(r);
        let lo = tenths.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = tenths
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max);
        writeln!(
            f,
            "| {} | {} | {} | {:.1} | {} | {} | {:.3}{} | {} | {} | {} | {} |",
            r.system,
            r.variant,
            r.entries,
            r.seed_seconds,
            opt(r.logins_seconds, 2),
            opt(r.to_last_delivery_s, 3),
            r.to_queue_empty_s,
            if r.drained { "" } else { " (timeout)" },
            opt(r.changes_per_s, 0),
            opt(r.steady_changes_per_s, 0),
            if tenths.is_empty() {
                "-".to_string()
            } else {
                format!("{lo:.0}–{hi:.0}")
            },
            r.delivered
        )?;
    }
    Ok(())
}
