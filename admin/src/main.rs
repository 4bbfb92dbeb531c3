//! `livesync-admin`: the admin CLI (see `livesync_admin::cli`). Loads `.env`, parses the
//! command line, runs the command and exits 0 (ok), 1 (problems found, or the command
//! failed) or 2 (bad usage, unknown user). Errors are one line naming the problem.

use std::io::Write;
use std::process::ExitCode;

use livesync_admin::cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let args = match cli::parse(std::env::args_os()) {
        Ok(args) => args,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    match cli::run(args, &mut stdout).await {
        Ok(exit) => ExitCode::from(exit.code()),
        // `livesync-admin … | head`: the reader is gone, nothing left to say.
        Err(cli::CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = e.exit_code();
            if json {
                let _ = writeln!(
                    stdout,
                    "{}",
                    serde_json::json!({ "error": e.to_string(), "exit_code": code })
                );
            }
            eprintln!("livesync-admin: error: {e}");
            ExitCode::from(code)
        }
    }
}
