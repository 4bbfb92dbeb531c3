//! livesync-testkit: what the integration tests and the benchmarks share.
//!
//! - `caldav_server` — real Radicale and Xandikos on loopback, stopped and started again at
//!   will, read back with an independent client;
//! - `graph_fake` — Microsoft Graph (and its token endpoint) in process, following the
//!   documented contract including its failures at their documented rates;
//! - `ews_fake` — Exchange Web Services (an on-premises Exchange Server) in process, with
//!   its documented errors and throttling;
//! - `faulty_proxy` — a proxy in front of a real server that drops or throttles chosen
//!   requests;
//! - `fake_service` — what the Graph and EWS fakes share (serving, faults at a rate);
//! - `ics` — reading iCalendar text back (events with their properties);
//! - `worker_proc` — the real `livesync-worker run` as a child process.
pub mod caldav_server;
pub mod ews_fake;
mod fake_service;
pub mod faulty_proxy;
pub mod graph_fake;
pub mod ics;
pub mod worker_proc;
