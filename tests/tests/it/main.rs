//! livesync's integration tests: one binary, one module per area, fixtures in `helpers`.
mod admin_cli;
mod caldav;
mod caldav_servers;
mod first_login;
mod graph;
mod graph_fake;
mod helpers;
mod migrate;
mod queue;
mod roles;
mod status_view;
mod tls;
mod uninstall;
mod worker;
mod worker_output;
mod worker_support;
