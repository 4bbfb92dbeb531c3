//! What a report says of the run it comes from: when it started, on which server, the
//! worker binary and the source it was built from, and the machine's load before and after.

use std::path::Path;

use super::server::BenchServer;
use super::worker_proc::{load_average, source_commit};

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunInfo {
    pub started_at: String,
    pub server: String,
    pub worker_bin: String,
    pub source_commit: String,
    pub load_at_start: String,
    pub load_at_end: String,
}

impl RunInfo {
    /// A run of the worker `bin` on `server`, starting now (its end still to come).
    pub fn start(server: &BenchServer, bin: &Path) -> RunInfo {
        RunInfo {
            started_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            server: server.describe(),
            worker_bin: bin.display().to_string(),
            source_commit: source_commit(),
            load_at_start: load_average(),
            load_at_end: String::new(),
        }
    }

    /// The run is over: the load now.
    pub fn end(mut self) -> RunInfo {
        self.load_at_end = load_average();
        self
    }

    /// "load average at start …, at end …; " and the server.
    pub fn load_and_server(&self) -> String {
        format!(
            "load average at start {}, at end {}; {}",
            self.load_at_start, self.load_at_end, self.server
        )
    }

    /// "worker … (source …)".
    pub fn worker(&self) -> String {
        format!("worker {} (source {})", self.worker_bin, self.source_commit)
    }
}
