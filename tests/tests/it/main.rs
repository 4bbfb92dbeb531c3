//! livesync's integration tests: one binary, one module per area, fixtures in `helpers`.
mod admin_cli;
mod first_login;
mod helpers;
mod migrate;
mod queue;
mod uninstall;
mod worker;
mod worker_support;
mod worker_output;
mod roles;
