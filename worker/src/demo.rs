//! `livesync-worker demo`: the seed's story, end to end, on a private database.
//!
//! Without `DATABASE_URL` a private PostgreSQL is started from the local installation and
//! removed afterwards; with it, that (empty) database is used. The .ics file and the
//! lawyer's log file are left in `./livesync-demo/` to look at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use livesync_core::embedded_pg::{EmbeddedPg, Options};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Settings, SinkKind};
use crate::file_name::safe_path;
use crate::service::Worker;

const BASELINE: &str = include_str!("../../sql/xpert_baseline.sql");
const LAWYER: &str = "mmuster";
const SECRETARY: &str = "ssekretaer";

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let out_dir = PathBuf::from("livesync-demo");
    settings.sink = SinkKind::Ics;
    settings.ics_dir = out_dir.join("ics");
    settings.log_dir = out_dir.join("logs");
    let _ = std::fs::remove_dir_all(&out_dir);

    let (_server, url) = match settings.database_url.clone() {
        Some(url) => {
            say(&format!(
                "Using the database from DATABASE_URL ({}).",
                livesync_core::migrate::describe_target(&url)
            ));
            (None, url)
        }
        None => {
            say("No DATABASE_URL: starting a private PostgreSQL from the local installation …");
            let pg = tokio::task::spawn_blocking(|| EmbeddedPg::start(Options::default()))
                .await?
                .context("starting the private PostgreSQL")?;
            let mut admin = PgConnection::connect(&pg.url("postgres")).await?;
            sqlx::query("create database livesync_demo")
                .execute(&mut admin)
                .await?;
            admin.close().await?;
            let url = pg.url("livesync_demo");
            say(&format!(
                "  private server on 127.0.0.1:{} (removed at the end)",
                pg.port()
            ));
            (Some(pg), url)
        }
    };
    settings.database_url = Some(url.clone());
    let options = livesync_core::session::configure(url.parse()?);
    let pool = crate::connections::pool_options(16)
        .connect_with(options)
        .await?;

    // Before the update: Xpert with a lawyer and her secretary.
    prepare_xpert(&pool).await?;
    let lawyer = user_id(&pool, LAWYER).await?;
    let secretary = user_id(&pool, SECRETARY).await?;
    sqlx::query(
        "insert into xpert.appointments (subject, location, starts_at, ends_at, created_by)
         values ('Tagsatzung LG Wien', 'Justizpalast, Saal 3', now() + interval '1 day', now() + interval '1 day 2 hours', $1),
                ('Mandantengespräch Huber', 'Kanzlei', now() + interval '2 days', now() + interval '2 days 1 hour', $1)",
    )
    .bind(secretary)
    .execute(&pool)
    .await?;
    sqlx::query(
        "insert into xpert.appointment_participants (appointment_id, user_id)
         select id, $1 from xpert.appointments",
    )
    .bind(lawyer)
    .execute(&pool)
    .await?;
    step(
        "Before the update: Xpert users mmuster (lawyer) and ssekretaer (secretary); 2 appointments for mmuster.",
    );

    // The update: migrations, global switch and licence.
    let outcome = livesync_core::migrate::run(&url, false).await?;
    sqlx::query(
        "update livesync.settings set live_sync_enabled = true, cti_sync_licensed = true, delivery_mode = 'live'",
    )
    .execute(&pool)
    .await?;
    step(&format!(
        "The update: livesync schema V{} applied; 'Live Synchronisation ein' and licence CTI/Synchronisierung on.",
        outcome.version
    ));

    let worker = Worker::build(
        settings.clone(),
        pool.clone(),
        crate::app::build_sink(&settings)?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker_task = tokio::spawn(worker.run_until_stopped(stop_rx));
    step("livesync-worker runs (sink: ics).");

    let ics = safe_path(&settings.ics_dir, LAWYER, "ics");

    // The secretary starts Xpert: her Windows name differs, so nothing is switched on and
    // she no longer gets the "live sync is not active" message.
    login(&pool, secretary, "KANZLEI\\sabine.s").await?;
    let (state, warn): (String, bool) = wait_for(Duration::from_secs(5), || async {
        sqlx::query_as::<_, (String, bool)>(
            "select f.state, s.warn_inactive from livesync.first_login f
               join livesync.user_status s using (user_id) where f.user_id = $1",
        )
        .bind(secretary)
        .fetch_one(&pool)
        .await
        .ok()
        .filter(|(state, _)| state != "pending")
    })
    .await
    .context("the secretary's first login was not handled")?;
    step(&format!(
        "ssekretaer logs in as KANZLEI\\sabine.s: first-login decision '{state}', warning shown: {warn}."
    ));

    // The lawyer's first login after the update: names match → switched on, one notice,
    // and what was entered for her arrives.
    let t = Instant::now();
    let login_id = login(&pool, lawyer, "KANZLEI\\MMuster").await?;
    wait_for_file(&ics, |s| s.matches("BEGIN:VEVENT").count() == 2).await?;
    let notice: Option<String> =
        sqlx::query_scalar("select pending_notice from livesync.user_status where user_id = $1")
            .bind(lawyer)
            .fetch_one(&pool)
            .await?;
    step(&format!(
        "mmuster logs in as KANZLEI\\MMuster (first login after the update): live sync switched on, \
         both appointments in her calendar after {} ms.\n     One-time message: {:?}",
        t.elapsed().as_millis(),
        notice.unwrap_or_default()
    ));
    sqlx::query("select livesync.notice_shown($1)")
        .bind(lawyer)
        .execute(&pool)
        .await?;
    sqlx::query("update livesync.user_settings set keep_logfile = true where user_id = $1")
        .bind(lawyer)
        .execute(&pool)
        .await?;

    // She goes home; the secretary enters an appointment for her.
    sqlx::query("update xpert.logins set logged_out_at = now() where id = $1")
        .bind(login_id)
        .execute(&pool)
        .await?;
    let appt = appointment(&pool, "Besprechung Kanzleirunde", lawyer, secretary).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued: i64 =
        sqlx::query_scalar("select queued from livesync.user_status where user_id = $1")
            .bind(lawyer)
            .fetch_one(&pool)
            .await?;
    let in_calendar = std::fs::read_to_string(&ics)
        .unwrap_or_default()
        .contains("Kanzleirunde");
    step(&format!(
        "mmuster is offline; ssekretaer enters 'Besprechung Kanzleirunde' for her: queued {queued}, \
         in her calendar: {in_calendar} (it waits for her next login)."
    ));

    let t = Instant::now();
    login(&pool, lawyer, "mmuster@kanzlei.at").await?;
    wait_for_file(&ics, |s| s.contains("Kanzleirunde")).await?;
    step(&format!(
        "mmuster logs in again: delivered {} ms after the login.",
        t.elapsed().as_millis()
    ));

    let t = Instant::now();
    sqlx::query("update xpert.appointments set subject = 'Besprechung Kanzleirunde (verschoben)', starts_at = starts_at + interval '1 hour', ends_at = ends_at + interval '1 hour' where id = $1")
        .bind(appt)
        .execute(&pool)
        .await?;
    wait_for_file(&ics, |s| s.contains("(verschoben)")).await?;
    step(&format!(
        "While she is online the appointment is moved: in her calendar {:.1} ms after the commit.",
        t.elapsed().as_secs_f64() * 1000.0
    ));

    let t = Instant::now();
    sqlx::query("delete from xpert.appointments where id = $1")
        .bind(appt)
        .execute(&pool)
        .await?;
    wait_for_file(&ics, |s| !s.contains("Kanzleirunde")).await?;
    step(&format!(
        "It is deleted: gone from her calendar {:.1} ms after the commit.",
        t.elapsed().as_secs_f64() * 1000.0
    ));

    let _ = stop_tx.send(true);
    worker_task.await??;
    pool.close().await;
    let log = safe_path(&settings.log_dir, LAWYER, "log");
    say("");
    say(&format!("Calendar file: {}", absolute(&ics).display()));
    say(&format!("Her log file:  {}", absolute(&log).display()));
    Ok(())
}

async fn prepare_xpert(pool: &PgPool) -> anyhow::Result<()> {
    let has_xpert: bool = sqlx::query_scalar("select to_regclass('xpert.users') is not null")
        .fetch_one(pool)
        .await?;
    if has_xpert {
        let users: i64 = sqlx::query_scalar("select count(*) from xpert.users")
            .fetch_one(pool)
            .await?;
        if users > 0 {
            bail!(
                "the demo writes sample users and appointments: point DATABASE_URL at an empty \
                 database, not at one with Xpert data ({users} users found)"
            );
        }
    } else {
        sqlx::raw_sql(BASELINE).execute(pool).await?;
    }
    sqlx::query(
        "insert into xpert.users (username, full_name) values
           ('mmuster', 'Dr. Maria Muster'), ('ssekretaer', 'Sabine Sekretär')",
    )
    .execute(pool)
    .await?;
    Ok(())
}

async fn user_id(pool: &PgPool, username: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select id from xpert.users where username = $1")
            .bind(username)
            .fetch_one(pool)
            .await?,
    )
}

async fn login(pool: &PgPool, user_id: i64, windows: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "insert into xpert.logins (user_id, windows_username, workstation) values ($1, $2, 'PC-DEMO') returning id",
    )
    .bind(user_id)
    .bind(windows)
    .fetch_one(pool)
    .await?)
}

async fn appointment(pool: &PgPool, subject: &str, for_user: i64, by: i64) -> anyhow::Result<i64> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, starts_at, ends_at, created_by)
         values ($1, now() + interval '3 days', now() + interval '3 days 1 hour', $2) returning id",
    )
    .bind(subject)
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "insert into xpert.appointment_participants (appointment_id, user_id) values ($1, $2)",
    )
    .bind(id)
    .bind(for_user)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

async fn wait_for_file(path: &Path, done: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let found = wait_for(Duration::from_secs(10), || async {
        std::fs::read_to_string(path)
            .ok()
            .filter(|s| done(s))
            .map(|_| ())
    })
    .await;
    found.with_context(|| {
        format!(
            "{} did not reach the expected state in 10 s",
            path.display()
        )
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

fn say(line: &str) {
    println!("{line}");
}

fn step(line: &str) {
    println!("  • {line}");
}
