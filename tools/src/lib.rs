//! livesync-tools
pub mod embedded_pg;
pub mod migrate;
