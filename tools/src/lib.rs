//! livesync-tools
pub mod bench;
pub mod embedded_pg;
pub mod migrate;
