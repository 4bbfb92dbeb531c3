//! livesync-worker: delivers queued Xpert appointments into each person's calendar.
//!
//! Layout:
//! - `service` — the worker loop: one `select!` over every reason to look, `step()` (one
//!   look for work), concurrent per-user flushes, presence, shutdown; `schedule` — when to
//!   look again (pure functions).
//! - `claim` — one look for work (expand, logins pending, lease users); logins →
//!   first-login rule + flush requests; releases.
//! - `flush` — one user's delivery: read the truth, call the sink, complete fenced by lease;
//!   loads and completions of concurrent deliveries grouped into one statement each.
//! - `listener` — LISTEN/NOTIFY hints and the worker's presence lock, on one connection;
//!   `commit_watch` — waits for the transactions a worker going to sleep must not miss;
//!   `registry` — the worker's row (awake/asleep, heartbeat); `connections` — pool
//!   settings, retry on a cut connection, connections of their own.
//! - `sink` — the `CalendarSink` trait and its implementations (`ics`, `null`, `caldav`, `graph`).
//! - `ical` — appointments rendered as RFC 5545; `file_name` — safe per-user file names;
//!   `user_log` — the per-user log file.
//! - `console` — the admin console in the browser (sign-in, pages, actions); `feed` — each
//!   person's calendar feed (`/feeds/<secret>.ics`).
//! - `verify` — each calendar compared with Xpert, and its repair through the queue
//!   (`livesync-worker verify`); each person's last verification recorded; the worker's
//!   scheduled passes (`verify::schedule`).
//! - `config`, `telemetry`, `http`, `schema`, `backoff`, `app` (wiring), `demo`.
pub mod app;
pub mod backoff;
pub mod claim;
pub mod commit_watch;
pub mod config;
pub mod connections;
pub mod console;
pub mod demo;
pub mod feed;
pub mod file_name;
pub mod flush;
pub mod http;
pub mod ical;
pub mod listener;
pub mod registry;
pub mod schedule;
pub mod schema;
pub mod service;
pub mod sink;
pub mod telemetry;
pub mod user_log;
pub mod verify;
