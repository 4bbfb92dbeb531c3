//! livesync's integration tests: one binary, one module per area, fixtures in `helpers`.
mod helpers;
mod migrate;
mod queue;
