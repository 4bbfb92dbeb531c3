//! livesync-bench: livesync's benchmarks, one module per scenario (`bench`).
pub mod bench;

// What the scenarios use of the other crates, under the names they use.
pub use livesync_admin::cli;
pub use livesync_core::{embedded_pg, migrate};
