//! `livesync-worker`: read the configuration, start logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use livesync_worker::config::{Cli, Command};

fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let (raw, json) = match &cli.command {
        Command::Run(raw) | Command::Demo(raw) => (raw, false),
        Command::Check { raw, json } => (raw, *json),
        Command::Verify { raw, args } => (raw, args.json),
    };
    let settings = match raw.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("livesync-worker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The demo tells its own story on stdout; only warnings and errors go to the log.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Verify { .. } => "warn",
        _ => "info",
    };
    livesync_worker::telemetry::init_tracing(settings.log_format, default_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("livesync-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(_) => livesync_worker::app::run(settings).await.map(|_| true),
            Command::Demo(_) => livesync_worker::demo::run(settings).await.map(|_| true),
            Command::Check { .. } => livesync_worker::app::check(settings, json).await,
            Command::Verify { args, .. } => livesync_worker::app::verify(settings, args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("livesync-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
