//! livesync-tools
pub mod embedded_pg;
pub mod migrate;
pub mod cli;
pub mod first_login;
