//! What every livesync session sets for itself, whether the worker's or the admin's.
//!
//! livesync's statements are key lookups on small sets (one user's queue, one
//! appointment's participants) that run in well under a millisecond. Two planner defaults
//! can turn them into seconds on a stock server, and both were seen right after a large
//! backlog, when the statistics of livesync's tables describe a queue that looked nothing
//! like the one now drained (ARCHITECTURE.md, "What livesync's sessions set"):
//! - `jit = off`: PostgreSQL compiles a statement when its *estimated* cost passes
//!   `jit_above_cost`; a stale estimate made it spend 100–400 ms compiling statements that
//!   then ran in 0.1 ms;
//! - `enable_seqscan = off`: statistics taken while the queue held one user's entries
//!   make "this user's entries" look like the whole table, and a sequential scan of it
//!   cheaper than the index; every table a statement reads has an index for the way it
//!   is read, so the plans stay index lookups whatever the statistics say.

use sqlx::postgres::PgConnectOptions;

/// The settings, as `(name, value)`.
pub const SETTINGS: [(&str, &str); 2] = [("jit", "off"), ("enable_seqscan", "off")];

/// `options` with livesync's session settings.
pub fn configure(options: PgConnectOptions) -> PgConnectOptions {
    options.options(SETTINGS)
}
