//! The benchmark driver behind `livesync-bench`: each scenario creates its own databases on
//! a real PostgreSQL server, seeds them, measures and returns a report that prints as a
//! table or as JSON.
//!
//! Layout:
//! - [`server`]: the server the benchmark runs on (a private, durable one by default, or
//!   the server `DATABASE_URL` points at) and the databases created on it.
//! - [`pgbench`]: running PostgreSQL's `pgbench` with a custom script and reading its result.
//! - [`stats`]: the few statistics the reports use (median, range).
//! - [`write_path`]: scenario "write-path cost": Xpert's appointment inserts with and
//!   without livesync, interleaved.
//! - [`chaos`]: faults (SIGKILL, SIGTERM, PostgreSQL restart) during a storm, then every
//!   calendar compared with the database.

pub mod chaos;
pub mod delivery;
pub mod latency;
pub mod peer;
pub mod pgbench;
pub mod seed;
pub mod server;
pub mod stats;
pub mod storm;
pub mod worker_proc;
pub mod write_path;
