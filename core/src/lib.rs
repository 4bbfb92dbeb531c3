//! livesync-core: what the worker, the admin CLI, the benchmarks and the tests share. It
//! knows nothing of calendars (sinks), of the command line or of benchmarks.
//!
//! - `migrate` — the schema migrations (`migrations/`, embedded at build), their runner
//!   (advisory lock, Xpert check, one transaction), the schema version a build expects, and
//!   how a database's history is judged (`installed`);
//! - `first_login` — the post-update first-login rule;
//! - the operations on livesync's tables that the admin CLI and the worker's console share:
//!   `users` (one line per user, switching live sync and the log file), `dead_letters`
//!   (list, requeue, drop), `settings` (the firm's switches), `feeds` (each person's feed
//!   secret and URL), `console_users` (the console's accounts, Argon2id passwords),
//!   `queue` (moving the change log into the queue);
//! - `session` — the settings every livesync session sets (no JIT, no sequential scans);
//! - `embedded_pg` — a private PostgreSQL from the local installation (the demo, the tests,
//!   the benchmarks);
//! - `refinery_sqlx` — refinery's driver over a sqlx connection.
pub mod console_users;
pub mod dead_letters;
pub mod embedded_pg;
pub mod feeds;
pub mod first_login;
pub mod migrate;
pub mod queue;
pub mod refinery_sqlx;
pub mod session;
pub mod settings;
pub mod users;
