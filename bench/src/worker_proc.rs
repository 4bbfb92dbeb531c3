//! The worker under measurement: the real `livesync-worker run` as a child process (the
//! test kit's [`WorkerProc`]), which binary that is, and the machine and source a
//! measurement was taken on, for the reports.

use std::path::{Path, PathBuf};

use anyhow::bail;

pub use livesync_testkit::worker_proc::{Memory, Sink, WorkerProc, memory_of};

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
