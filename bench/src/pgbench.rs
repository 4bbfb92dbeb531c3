//! Running PostgreSQL's `pgbench` with a custom script and reading what it reports.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::process::Command;

/// `$LIVESYNC_PGBENCH`, `pgbench` beside the server binaries, or `pgbench` on PATH.
pub fn find() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("LIVESYNC_PGBENCH") {
        return Ok(PathBuf::from(p));
    }
    if let Some(dir) = crate::embedded_pg::find_bin_dir() {
        let p = dir.join("pgbench");
        if p.exists() {
            return Ok(p);
        }
    }
    if let Some(paths) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&paths).find(|d| d.join("pgbench").exists())
    {
        return Ok(dir.join("pgbench"));
    }
    bail!("pgbench not found: install PostgreSQL's client tools or set LIVESYNC_PGBENCH")
}

/// One pgbench run.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub pgbench: &'a Path,
    pub script: &'a Path,
    pub url: &'a str,
    pub clients: u32,
    pub threads: u32,
    pub seconds: u32,
    /// `simple`, `extended` or `prepared`.
    pub protocol: &'a str,
}

/// What pgbench reported.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Outcome {
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    pub latency_avg_ms: f64,
}

impl Run<'_> {
    /// The command line, as a reader would type it (the URL is the last argument).
    pub fn command_line(&self) -> String {
        format!(
            "pgbench -n -c {} -j {} -T {} -M {} -f {} <database>",
            self.clients,
            self.threads,
            self.seconds,
            self.protocol,
            self.script.display()
        )
    }

    pub async fn execute(&self) -> anyhow::Result<Outcome> {
        let out = Command::new(self.pgbench)
            .arg("-n")
            .arg("-c")
            .arg(self.clients.to_string())
            .arg("-j")
            .arg(self.threads.to_string())
            .arg("-T")
            .arg(self.seconds.to_string())
            .arg("-M")
            .arg(self.protocol)
            .arg("-f")
            .arg(self.script)
            .arg(self.url)
            .output()
            .await
            .context("start pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed ({}): {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            );
        }
        parse(&stdout).with_context(|| format!("read pgbench's output:\n{stdout}"))
    }
}

fn number_after<T: std::str::FromStr>(text: &str, prefix: &str) -> Option<T> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Reads tps, transaction counts and average latency from pgbench's summary.
pub fn parse(stdout: &str) -> anyhow::Result<Outcome> {
    let tps = number_after(stdout, "tps = ").context("no 'tps = ' line")?;
    let transactions = number_after(stdout, "number of transactions actually processed: ")
        .context("no transaction count")?;
    let failed = number_after(stdout, "number of failed transactions: ").unwrap_or(0);
    let latency_avg_ms = number_after(stdout, "latency average = ").unwrap_or(f64::NAN);
    Ok(Outcome {
        tps,
        transactions,
        failed,
        latency_avg_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_15_summary() {
        let out = "transaction type: bench.sql\nscaling factor: 1\nquery mode: prepared\n\
                   number of clients: 8\nnumber of threads: 2\nmaximum number of tries: 1\n\
                   duration: 5 s\nnumber of transactions actually processed: 12345\n\
                   number of failed transactions: 0 (0.000%)\nlatency average = 3.241 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 2469.012345 (without initial connection time)\n";
        let o = parse(out).unwrap();
        assert_eq!(o.transactions, 12345);
        assert_eq!(o.failed, 0);
        assert!((o.tps - 2469.012345).abs() < 1e-9);
        assert!((o.latency_avg_ms - 3.241).abs() < 1e-9);
    }
}
