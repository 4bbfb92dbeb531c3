//! Wiring for the binary: connect, check, build the sink, serve HTTP, run until a signal.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::{Settings, SinkKind};
use crate::service::Worker;
use crate::sink::{CalendarSink, SinkError};

/// The configured sink. CalDAV and Microsoft Graph are configuration errors until their
/// implementations ship.
pub fn build_sink(settings: &Settings) -> Result<Arc<dyn CalendarSink>, SinkError> {
    // A remote calendar's batch must end inside the worker's lease.
    let budget = crate::sink::run_budget(settings.lease);
    match settings.sink {
        SinkKind::Ics => Ok(Arc::new(crate::sink::ics::IcsSink::new(
            settings.ics_dir.clone(),
        ))),
        SinkKind::Null => Ok(Arc::new(crate::sink::null::NullSink::new())),
        SinkKind::CalDav => match &settings.caldav {
            Some(caldav) => Ok(Arc::new(
                crate::sink::caldav::CalDavSink::new(caldav)?.with_run_budget(budget),
            )),
            None => Err(not_in_this_build("caldav")),
        },
        SinkKind::Graph => match &settings.graph {
            Some(graph) => Ok(Arc::new(
                crate::sink::graph::GraphSink::new(graph)?.with_run_budget(budget),
            )),
            None => Err(SinkError::Config {
                message: "LIVESYNC_SINK=graph needs the LIVESYNC_GRAPH_* settings".into(),
            }),
        },
        SinkKind::Ews => match &settings.ews {
            Some(ews) => Ok(Arc::new(
                crate::sink::ews::EwsSink::new(ews)?.with_run_budget(budget),
            )),
            None => Err(SinkError::Config {
                message: "LIVESYNC_SINK=ews needs the LIVESYNC_EWS_* settings".into(),
            }),
        },
    }
}

fn not_in_this_build(name: &str) -> SinkError {
    SinkError::Config {
        message: format!(
            "LIVESYNC_SINK={name}: this sink is not part of this build; use ics or null"
        ),
    }
}

/// The per-user log directory exists (or is created, private like the logs in it) and
/// takes a new file. `Err` is the message for the admin: the directory, why, what to do.
fn check_log_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let problem = |what: &str, e: &std::io::Error| {
        format!(
            "per-user log directory {} (LIVESYNC_LOG_DIR) {what}: {e}; make it a directory \
             the worker's user can write into, or point LIVESYNC_LOG_DIR elsewhere",
            dir.display()
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| problem("cannot be created", &e))?;
    let probe = dir.join(format!(".livesync-check.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"ok"))
        .map_err(|e| problem("is not writable", &e));
    let _ = std::fs::remove_file(&probe);
    written
}

/// A pool for the worker: enough connections for every concurrent delivery plus the
/// listener, the loop and housekeeping.
pub async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let Some(options) = settings.connect_options() else {
        bail!(
            "DATABASE_URL is not set: point it at the Xpert database (or try `livesync-worker demo`)"
        );
    };
    let target = livesync_core::migrate::describe_target(
        settings.database_url.as_deref().unwrap_or_default(),
    );
    crate::connections::pool_options(settings.concurrency as u32 + 4)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at {target}"))
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `livesync-worker run`.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let pool = connect(&settings).await?;
    crate::schema::check(&pool).await?;
    let sink = build_sink(&settings)?;
    match sink.check().await {
        Ok(()) => {}
        Err(e @ SinkError::Config { .. }) => bail!("the {} sink is not usable: {e}", sink.name()),
        Err(e) => {
            tracing::warn!(error.message = %e, sink = sink.name(), "sink not reachable yet; deliveries will retry")
        }
    }
    if let Err(message) = check_log_dir(&settings.log_dir) {
        bail!("the {message}");
    }
    let metrics = crate::telemetry::init_metrics();
    let worker = Worker::build(settings.clone(), pool.clone(), sink);
    let (stop_tx, stop_rx) = watch::channel(false);

    let http = settings.http_addr.map(|addr| {
        let router = crate::http::router(pool.clone(), worker.health.clone(), metrics);
        tokio::spawn(crate::http::serve(addr, router, stop_rx.clone()))
    });
    let consoles = serve_console(&settings, &pool, worker.health.clone(), &stop_rx).await?;
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop signal received");
        let _ = stop_tx.send(true);
    });
    worker.run_until_stopped(stop_rx).await?;
    if let Some(http) = http {
        match http.await {
            Ok(Err(e)) => tracing::error!(error.message = %e, "HTTP endpoint failed"),
            Err(e) => tracing::error!(error.message = %e, "HTTP task failed"),
            Ok(Ok(())) => {}
        }
    }
    for console in consoles {
        match console.await {
            Ok(Err(e)) => tracing::error!(error.message = %e, "console or feed endpoint failed"),
            Err(e) => tracing::error!(error.message = %e, "console or feed task failed"),
            Ok(Ok(())) => {}
        }
    }
    pool.close().await;
    Ok(())
}

/// Start serving the console (with the feeds) on `LIVESYNC_CONSOLE_ADDR` and the feeds on
/// `LIVESYNC_FEED_ADDR`, as configured. The addresses are taken and the certificate read
/// before this returns, so that a problem stops the start with a message.
async fn serve_console(
    settings: &Settings,
    pool: &PgPool,
    health: Arc<crate::service::Health>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let console = &settings.console;
    let tls = match &console.tls {
        Some(files) => Some(crate::console::tls_config(files).await.with_context(|| {
            format!(
                "cannot use the certificate {} and key {} (LIVESYNC_CONSOLE_TLS_CERT, \
                 LIVESYNC_CONSOLE_TLS_KEY): give PEM files of a certificate chain and its key",
                files.cert.display(),
                files.key.display()
            )
        })?),
        None => None,
    };
    let bind = |addr: std::net::SocketAddr, variable: &str| {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} ({variable})"))
    };
    let announce = |addr: std::net::SocketAddr, what: &str| {
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "serving {what} over plain HTTP on a non-loopback address: passwords, cookies \
                 and calendars cross the network unencrypted; set LIVESYNC_CONSOLE_TLS_CERT and \
                 LIVESYNC_CONSOLE_TLS_KEY, or put a reverse proxy with TLS in front"
            );
        } else {
            tracing::info!(%addr, https = tls.is_some(), "serving {what}");
        }
    };
    let mut tasks = Vec::new();
    if let Some(addr) = console.addr {
        let listener = bind(addr, "LIVESYNC_CONSOLE_ADDR")?;
        let router = crate::console::router(pool.clone(), console, Some(health))
            .await
            .context("cannot prepare the console (its signing key in the database)")?;
        let feeds_here = console.feed_addr.is_none() || console.feed_addr == Some(addr);
        announce(
            addr,
            if feeds_here {
                "the admin console and the calendar feeds"
            } else {
                "the admin console"
            },
        );
        tasks.push(tokio::spawn(crate::console::serve(
            listener,
            router,
            tls.clone(),
            stop.clone(),
        )));
    }
    if let Some(addr) = console.feed_addr
        && console.addr != Some(addr)
    {
        let listener = bind(addr, "LIVESYNC_FEED_ADDR")?;
        announce(addr, "the calendar feeds");
        tasks.push(tokio::spawn(crate::console::serve(
            listener,
            crate::feed::router(pool.clone()),
            tls.clone(),
            stop.clone(),
        )));
    }
    Ok(tasks)
}

/// `livesync-worker check`: is the configured sink usable, and the per-user log directory
/// writable? Prints one line or one JSON object; the exit code says ok (0) or not (1).
pub async fn check(settings: Settings, json: bool) -> anyhow::Result<bool> {
    let (name, mut result) = match build_sink(&settings) {
        Ok(sink) => (sink.name(), sink.check().await),
        Err(e) => ("(none)", Err(e)),
    };
    let mut reachable = "reachable".to_string();
    if let (Some(ews), Ok(())) = (&settings.ews, &result) {
        match check_ews_impersonation(&settings, ews).await {
            Ok(note) => reachable = format!("reachable; {note}"),
            Err(e) => result = Err(e),
        }
    }
    let log_dir = check_log_dir(&settings.log_dir);
    let ok = result.is_ok() && log_dir.is_ok();
    let detail = match (result, log_dir) {
        (Ok(()), Ok(())) => reachable,
        (Ok(()), Err(log_dir)) => format!("{reachable}, but the {log_dir}"),
        (Err(e), Ok(())) => e.to_string(),
        (Err(e), Err(log_dir)) => format!("{e}; and the {log_dir}"),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": ok, "sink": name, "detail": detail})
        );
    } else {
        println!("sink {name}: {detail}");
    }
    Ok(ok)
}

/// `livesync-worker verify`: compare the selected calendars with Xpert through the
/// configured sink, print the report (progress on stderr when it is a terminal), queue the
/// repairs when asked. `Ok(true)`: every calendar equals Xpert, or every problem was
/// queued for repair.
pub async fn verify(settings: Settings, args: crate::config::VerifyArgs) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    let pool = connect(&settings).await?;
    crate::schema::check(&pool).await?;
    let sink = build_sink(&settings)?;
    let options = crate::verify::Options {
        name: if args.all { None } else { args.name.clone() },
        from: args.from,
        to: args.to,
        repair: args.repair,
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    let report = crate::verify::run(&pool, sink.as_ref(), &options, |done, count, name| {
        if progress {
            eprint!("\r\x1b[2Kverifying {done}/{count} {name}");
            if done == count {
                eprintln!();
            }
        }
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::verify::render_text(&report));
    }
    Ok(if args.repair {
        report.errors == 0
    } else {
        !report.has_problems()
    })
}

/// The EWS part of `check`: the service account impersonates one person's mailbox (the
/// first with live sync switched on, read from the database) and reads its Calendar.
async fn check_ews_impersonation(
    settings: &Settings,
    ews: &crate::config::EwsSettings,
) -> Result<String, SinkError> {
    let sink = crate::sink::ews::EwsSink::new(ews)?;
    let person = match settings.connect_options() {
        Some(options) => {
            let first: Result<Option<(i64, String, Option<String>)>, sqlx::Error> = async {
                let mut conn = sqlx::ConnectOptions::connect(&options).await?;
                sqlx::query_as(
                    "select u.id, u.username, s.calendar_address
                       from livesync.user_settings s join xpert.users u on u.id = s.user_id
                      where s.live_sync_enabled order by u.id limit 1",
                )
                .fetch_optional(&mut conn)
                .await
            }
            .await;
            first.map_err(|e| e.to_string())
        }
        None => Err("DATABASE_URL is not set".to_string()),
    };
    match person {
        Ok(Some((user_id, username, calendar_address))) => {
            let owner = crate::sink::CalendarOwner {
                user_id,
                username,
                calendar_address,
            };
            let address = sink.check_mailbox(&owner).await?;
            Ok(format!("impersonates {address}"))
        }
        Ok(None) => Ok("impersonation not tested: nobody has live sync switched on".into()),
        Err(why) => Ok(format!(
            "impersonation not tested: no person to test it with ({why})"
        )),
    }
}
