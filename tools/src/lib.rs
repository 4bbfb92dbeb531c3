//! livesync-tools
pub mod bench;
pub mod cli;
pub mod embedded_pg;
pub mod first_login;
pub mod migrate;
pub mod refinery_sqlx;
pub mod session;
