//! livesync-worker: delivers queued Xpert appointments into each person's calendar.
//!
//! Layout:
//! - `service` — the worker loop: wake-ups, claims, concurrent per-user flushes, shutdown.
//! - `claim` — leasing users with deliverable work; logins → first-login rule + flush requests.
//! - `flush` — one user's delivery: read the truth, call the sink, complete fenced by lease;
//!   loads and completions of concurrent deliveries grouped into one statement each.
//! - `wakeup` — LISTEN/NOTIFY hints and the change counter; `commit_watch` — waits for the
//!   commit behind a new change number; `registry` — awake/asleep, heartbeat;
//!   `connections` — pool settings, retry on a cut connection, connections of their own;
//!   `ticker` — the awake loop's millisecond tick.
//! - `sink` — the `CalendarSink` trait and its implementations (`ics`, `null`, `caldav`, `graph`).
//! - `ical` — appointments rendered as RFC 5545; `file_name` — safe per-user file names;
//!   `user_log` — the per-user log file.
//! - `config`, `telemetry`, `http`, `schema`, `backoff`, `app` (wiring), `demo`.
pub mod app;
pub mod backoff;
pub mod claim;
pub mod commit_watch;
pub mod config;
pub mod connections;
pub mod demo;
pub mod file_name;
pub mod flush;
pub mod http;
pub mod ical;
pub mod registry;
pub mod schema;
pub mod service;
pub mod sink;
pub mod telemetry;
pub mod ticker;
pub mod user_log;
pub mod wakeup;
