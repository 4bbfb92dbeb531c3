//! livesync-bench: livesync's benchmarks, one module per scenario. Each scenario creates its
//! own databases on a real PostgreSQL server, seeds them, measures and returns a report that
//! prints as a table or as JSON; `main.rs` is the command line.
//!
//! Layout:
//! - [`server`]: the server the benchmark runs on (a private, durable one by default, or
//!   the server `DATABASE_URL` points at) and the databases created on it.
//! - [`pgbench`]: running PostgreSQL's `pgbench` with a custom script and reading its result.
//! - [`stats`]: the few statistics the reports use (median, range).
//! - [`run_info`]: what every report says of its run (start, server, worker, load).
//! - [`verdict`]: how the reports say whether a target was met.
//! - [`write_path`]: scenario "write-path cost": Xpert's appointment inserts with and
//!   without livesync, interleaved.
//! - [`caldav`]: scenario "CalDAV": the worker into a local Radicale beside a plain PUT
//!   loop; the private Radicale and the CalDAV reading the chaos driver uses.
//! - [`chaos`]: faults (SIGKILL, SIGTERM, PostgreSQL restart, three workers, the calendar
//!   server down, a session idle in a transaction) during a storm, then every calendar
//!   compared with the database.
//! - [`growth`]: the growth scenario's targets (no quadratic step, no bloat).
//! - [`quiet`]: scenario "quiet": the worker's statements per second when idle and at one
//!   change per second (counted with [`pgss`], `pg_stat_statements`).
//! - [`grown`]: `latency --grown`: live latency, the status view and the admin's reads on
//!   a grown database (1M deliveries, statistics as autovacuum left them, JIT on).
//! - [`stale`]: `storm --stale`: the storm right after queuing beside the same data
//!   analysed.

pub mod caldav;
pub mod chaos;
pub mod delivery;
pub mod grown;
pub mod growth;
pub mod healthz;
pub mod latency;
pub mod peer;
pub mod pgbench;
pub mod pgss;
pub mod quiet;
pub mod run_info;
pub mod seed;
pub mod server;
pub mod stale;
pub mod stats;
pub mod storm;
pub mod verdict;
pub mod worker_proc;
pub mod write_path;

// What the scenarios use of the other crates, under the names they use.
pub use livesync_admin::cli;
pub use livesync_core::{embedded_pg, migrate};
