//! livesync-admin as a library: `cli::run(Cli, &mut dyn Write) -> Exit`, one module per
//! command group, `cli::output` for tables and `--json`. The binary (`main.rs`) loads
//! `.env`, parses the command line and maps errors to exit codes.
pub mod cli;
