//! Verification on a schedule (`LIVESYNC_VERIFY_EVERY`): the real worker finds an event
//! deleted behind livesync's back, records it as the person's last verification, exposes
//! the totals and the time of success on /metrics, and the console shows it; with
//! `LIVESYNC_VERIFY_REPAIR=true` the event comes back by itself; of two workers only one
//! runs a pass; the worker's and the admin's database roles may write the record.

use std::sync::Arc;
use std::time::Duration;

use livesync_worker::config::Settings;
use livesync_worker::flush::uid_for;
use livesync_worker::ical;
use livesync_worker::sink::CalendarSink;
use livesync_worker::sink::ics::IcsSink;
use livesync_worker::verify::Options;
use livesync_worker::verify::schedule::{Every, ScheduleSettings};

use crate::console_support::{Browser, Console, add_admin};
use crate::helpers::{TestDb, eventually};
use crate::roles::{ROLE_LOCK, ROLES, drop_role, login_role};
use crate::secrets::{WorkerProcess, binaries, free_port, http_get, worker_env};
use crate::verify::{drained, firm};
use crate::worker_support::{RunningWorker, test_settings};

const WAIT: Duration = Duration::from_secs(30);

/// The person's last verification: (by, missing, ok, queued).
async fn last_verification(db: &TestDb, user: i64) -> Option<(String, i32, i32, i32)> {
    sqlx::query_as(
        "select verified_by, items_missing, items_ok, queued \
           from livesync.verifications where user_id = $1",
    )
    .bind(user)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

/// The passes run so far, and whether the last one went through everyone.
async fn passes(db: &TestDb) -> (i64, bool) {
    sqlx::query_as("select passes, finished_at is not null from livesync.verify_pass")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Remove the event of `appointment` from the person's `.ics` file, behind livesync's back.
fn delete_event(path: &std::path::Path, appointment: i64) {
    let text = std::fs::read_to_string(path).unwrap();
    let kept: Vec<String> = ical::split_events(&text)
        .unwrap()
        .into_iter()
        .filter(|(uid, _)| *uid != uid_for(appointment))
        .map(|(_, block)| block)
        .collect();
    assert_eq!(kept.len(), 4, "one of five events removed");
    // Written next to it and renamed: a pass never reads half a file.
    let temporary = path.with_extension("tmp");
    std::fs::write(
        &temporary,
        ical::render_calendar(kept.iter().map(String::as_str)),
    )
    .unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A worker's settings that verify every `every`, without a pause between people.
fn verifying(db: &TestDb, dir: &std::path::Path, every: Duration, repair: bool) -> Settings {
    Settings {
        verify: ScheduleSettings {
            every: Every::Interval(every),
            pause: Duration::ZERO,
            repair,
        },
        ..test_settings(db, dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_pass_finds_a_deleted_event_records_it_and_shows_it() {
    binaries().await;
    let (db, user, ids) = firm().await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let port = free_port();
    let env = worker_env(
        &db.url,
        cwd,
        &[
            ("LIVESYNC_HTTP_ADDR", &port.to_string()),
            ("LIVESYNC_VERIFY_EVERY", "2s"),
            ("LIVESYNC_VERIFY_PAUSE_SECS", "0"),
        ],
    );
    let mut worker = WorkerProcess::start(&env, cwd, "077").await;
    drained(&db, user).await;
    let ics = IcsSink::new(cwd.join("ics"));
    eventually(WAIT, "a pass that finds the calendar complete", || async {
        let last = last_verification(&db, user).await?;
        (last == ("schedule".into(), 0, 5, 0)).then_some(())
    })
    .await;

    delete_event(&ics.path("mmuster"), ids[0]);
    eventually(WAIT, "a pass that finds the event missing", || async {
        let last = last_verification(&db, user).await?;
        (last == ("schedule".into(), 1, 4, 0)).then_some(())
    })
    .await;
    let (count, finished) = passes(&db).await;
    assert!(count >= 2 && finished, "{count} passes");
    let text = std::fs::read_to_string(ics.path("mmuster")).unwrap();
    assert!(
        !text.contains(&uid_for(ids[0])),
        "without LIVESYNC_VERIFY_REPAIR nothing is repaired"
    );

    let metrics = eventually(WAIT, "the totals on /metrics", || async {
        let (status, body) = http_get(port, "/metrics").await?;
        assert_eq!(status, 200, "{body}");
        body.contains("livesync_calendar_items{state=\"missing\"} 1")
            .then_some(body)
    })
    .await;
    for line in [
        "livesync_calendar_items{state=\"ok\"} 4",
        "livesync_calendar_items{state=\"orphan\"} 0",
        "livesync_calendar_items{state=\"drifted\"} 0",
        "livesync_calendar_items{state=\"duplicate\"} 0",
        "livesync_calendar_items{state=\"foreign\"} 0",
        "livesync_verify_passes_total",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let success = metrics
        .lines()
        .find_map(|l| l.strip_prefix("livesync_verify_last_success_timestamp_seconds "))
        .unwrap_or_else(|| panic!("the time of success in\n{metrics}"));
    let success: f64 = success.trim().parse().unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&success),
        "{success} is a moment ago"
    );
    worker.assert_running();

    // The console tells when the calendars were last verified and what was found.
    add_admin(&db).await;
    let console = Console::start(&db).await;
    let mut browser = Browser::new().with_header("accept-language", "en-GB,en;q=0.9");
    browser.sign_in_as_admin(&console).await;
    let overview = browser.get(&console.url("/")).await;
    assert!(
        overview.body.contains("id=\"verification\" class=\"bad\"")
            && overview.body.contains("1 problem in 1 calendar"),
        "{}",
        overview.body
    );
    let person = browser.get(&console.url(&format!("/users/{user}"))).await;
    assert!(
        person.body.contains("(scheduled): 1 problem"),
        "{}",
        person.body
    );
    let ran = worker.stop().await;
    assert!(
        ran.all().contains("verification pass finished"),
        "{}",
        ran.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_repair_on_a_scheduled_pass_brings_a_deleted_event_back() {
    let (db, user, ids) = firm().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = verifying(&db, dir.path(), Duration::from_secs(1), true);
    let ics = IcsSink::new(settings.ics_dir.clone());
    let sink: Arc<dyn CalendarSink> = Arc::new(IcsSink::new(settings.ics_dir.clone()));
    let worker = RunningWorker::start(&db, settings, sink);
    drained(&db, user).await;
    eventually(WAIT, "a pass over the delivered calendar", || async {
        let last = last_verification(&db, user).await?;
        (last.1 == 0 && last.2 == 5).then_some(())
    })
    .await;

    delete_event(&ics.path("mmuster"), ids[0]);
    eventually(WAIT, "the event back in the calendar", || async {
        let text = std::fs::read_to_string(ics.path("mmuster")).ok()?;
        text.contains(&uid_for(ids[0])).then_some(())
    })
    .await;
    // A later pass finds the calendar equal to Xpert again.
    eventually(WAIT, "a clean pass after the repair", || async {
        let last = last_verification(&db, user).await?;
        (last == ("schedule".into(), 0, 5, 0)).then_some(())
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_workers_only_one_runs_a_pass() {
    let (db, user, _) = firm().await;
    let dir = tempfile::tempdir().unwrap();
    // Due at once for both, then not for an hour.
    let settings = verifying(&db, dir.path(), Duration::from_secs(3600), false);
    let sink: Arc<dyn CalendarSink> = Arc::new(IcsSink::new(settings.ics_dir.clone()));
    let first = RunningWorker::start(&db, settings.clone(), sink.clone());
    let second = RunningWorker::start(&db, settings, sink);
    eventually(WAIT, "the first pass over", || async {
        let (_, finished) = passes(&db).await;
        finished.then_some(())
    })
    .await;
    // Time for a second pass, were the other worker to run one too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(passes(&db).await, (1, true), "one pass, by one worker");
    let by: Vec<(Option<i64>, String)> =
        sqlx::query_as("select pass, verified_by from livesync.verifications")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(by, [(Some(1), "schedule".to_string())]);
    let started_by: Option<uuid::Uuid> =
        sqlx::query_scalar("select started_by from livesync.verify_pass")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(started_by.is_some());
    drained(&db, user).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_and_admin_roles_verify_and_record() {
    let _turn = ROLE_LOCK.lock().await;
    let (db, user, _) = firm().await;
    sqlx::raw_sql(ROLES).execute(&db.pool).await.unwrap();
    for group in ["livesync_worker", "livesync_admin"] {
        let (name, pool) = login_role(&db, "lsverify", group).await;
        let dir = tempfile::tempdir().unwrap();
        let settings = verifying(&db, dir.path(), Duration::from_secs(1), true);
        let sink: Arc<dyn CalendarSink> = Arc::new(IcsSink::new(settings.ics_dir.clone()));

        // What livesync-admin verify --repair runs, with this role's connection.
        let options = Options {
            name: Some("mmuster".into()),
            repair: true,
            ..Options::default()
        };
        livesync_worker::verify::run(&pool, &*sink, &options, |_, _, _| {})
            .await
            .unwrap_or_else(|e| panic!("{group} verifies: {e}"));
        assert_eq!(
            last_verification(&db, user).await.map(|l| l.0).as_deref(),
            Some("admin")
        );

        // A scheduled pass, recorded to its end.
        let (before, _) = passes(&db).await;
        let worker = RunningWorker::start_with_pool(pool.clone(), settings, sink);
        eventually(WAIT, "a pass recorded under the role", || async {
            let (n, ended): (i64, bool) = sqlx::query_as(
                "select passes, coalesce(finished_at >= started_at, false) \
                   from livesync.verify_pass",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            (n > before && ended).then_some(())
        })
        .await;
        worker.stop().await;
        pool.close().await;
        drop_role(&db, &name).await;
    }
}
