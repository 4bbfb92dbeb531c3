//! The worker against a real PostgreSQL: who gets what, when, exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use livesync_worker::sink::CalendarSink;
use livesync_worker::sink::ics::IcsSink;

use crate::helpers::{TestDb, eventually};
use crate::worker_support::{
    ApplyThen, RecordingSink, RunningWorker, SteppedWorker, test_settings,
};

const WAIT: Duration = Duration::from_secs(10);

/// A lawyer with live sync on, in a firm with live sync on in `mode`.
async fn firm(mode: &str) -> (TestDb, i64, i64) {
    let db = TestDb::migrated().await;
    db.enable_globally(mode).await;
    let lawyer = db.user("mmuster").await;
    let secretary = db.user("ssekretaer").await;
    db.enable_user(lawyer, false).await;
    (db, lawyer, secretary)
}

/// Wait until the user's queue is empty (a delivery is recorded a moment after the sink
/// saw it).
async fn drained(db: &TestDb, user_id: i64) {
    eventually(WAIT, "the queue drained", || async {
        (queued(db, user_id).await == 0).then_some(())
    })
    .await;
}

async fn queued(db: &TestDb, user_id: i64) -> i64 {
    sqlx::query_scalar("select queued from livesync.user_status where user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn offline_lawyer_gets_appointments_at_login() {
    let (db, lawyer, _) = firm("live").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let mut worker = SteppedWorker::new(&db, test_settings(&db, dir.path()), sink.clone());

    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let b = db.appointment("Mandant Huber", 48, &[lawyer]).await;
    let look = worker.step().await;
    assert_eq!(
        (look.expanded, look.claimed),
        (2, 0),
        "queued, nobody claimed"
    );
    assert!(
        sink.seen().is_empty(),
        "nothing is delivered while she is offline"
    );
    assert_eq!(queued(&db, lawyer).await, 2);

    db.login(lawyer, "KANZLEI\\MMuster").await;
    let settled = worker.settle().await;
    assert_eq!((settled.logins, settled.claimed), (1, 1));
    let mut ids: Vec<i64> = sink.seen().iter().map(|s| s.appointment_id).collect();
    ids.sort();
    assert_eq!(ids, vec![a, b], "both appointments delivered");
    drained(&db, lawyer).await;
}

/// A login's flush request outlives the session while an entry backs off (it is retried
/// after the logout), and ends with the last delivery: what comes later waits for the
/// next login.
#[tokio::test]
async fn a_flush_request_lasts_until_the_queue_is_empty_then_ends() {
    let (db, lawyer, _) = firm("live").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let b = db.appointment("Mandant Huber", 48, &[lawyer]).await;
    sink.fail_times.lock().unwrap().insert(a, 1);

    let login = db.login(lawyer, "KANZLEI\\MMuster").await;
    sqlx::query("update xpert.logins set logged_out_at = now() where id = $1")
        .bind(login)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(
        WAIT,
        "both delivered, the failed one after the logout",
        || async {
            let mut ids: Vec<i64> = sink
                .seen_for(lawyer)
                .iter()
                .map(|s| s.appointment_id)
                .collect();
            ids.sort();
            (ids == vec![a, b]).then_some(())
        },
    )
    .await;
    drained(&db, lawyer).await;
    let requested: Option<chrono::DateTime<chrono::Utc>> =
        eventually(WAIT, "the request ended", || async {
            let r: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                "select flush_requested_at from livesync.user_state where user_id = $1",
            )
            .bind(lawyer)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            r.is_none().then_some(r)
        })
        .await;
    assert_eq!(requested, None);

    worker.stop().await;
    let c = db.appointment("Besprechung", 72, &[lawyer]).await;
    let mut stepped = SteppedWorker::new(&db, test_settings(&db, dir.path()), sink.clone());
    let look = stepped.settle().await;
    assert_eq!((look.expanded, look.claimed), (1, 0));
    assert!(
        !sink.seen_for(lawyer).iter().any(|s| s.appointment_id == c),
        "after the logout a new appointment waits for the next login"
    );
}

#[tokio::test]
async fn a_mismatching_windows_name_gets_nothing() {
    let (db, lawyer, _) = firm("live").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let mut worker = SteppedWorker::new(&db, test_settings(&db, dir.path()), sink.clone());
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    db.login(lawyer, "KANZLEI\\mmuster2").await;
    let look = worker.settle().await;
    assert_eq!(
        (look.logins, look.claimed),
        (1, 0),
        "the login is handled, nobody claimed"
    );
    assert!(sink.seen().is_empty());
    assert_eq!(queued(&db, lawyer).await, 1, "the queue keeps waiting");
}

#[tokio::test]
async fn changes_reach_an_online_user_at_once_in_order() {
    let (db, lawyer, _) = firm("live").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    db.login(lawyer, "mmuster@kanzlei.at").await;

    let a = db.appointment("Erstfassung", 24, &[lawyer]).await;
    eventually(WAIT, "created", || async {
        (sink.seen().len() == 1).then_some(())
    })
    .await;
    sqlx::query("update xpert.appointments set subject = 'Zweitfassung' where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "updated", || async {
        (sink.seen().len() == 2).then_some(())
    })
    .await;
    sqlx::query("delete from xpert.appointments where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "deleted", || async {
        (sink.seen().len() == 3).then_some(())
    })
    .await;

    let seen = sink.seen();
    assert!(seen[0].upsert && seen[0].sequence == 0);
    assert!(seen[1].upsert && seen[1].sequence == 1);
    assert_eq!(seen[1].subject.as_deref(), Some("Zweitfassung"));
    assert!(!seen[2].upsert);
    drained(&db, lawyer).await;
    let delivered: i64 = sqlx::query_scalar("select count(*) from livesync.delivered")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        delivered, 0,
        "a deleted appointment leaves no delivery state"
    );
    worker.stop().await;
}

#[tokio::test]
async fn push_mode_delivers_without_a_login() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(WAIT, "delivered without a login", || async {
        (sink.seen_for(lawyer).len() == 1).then_some(())
    })
    .await;
    worker.stop().await;
}

#[tokio::test]
async fn participants_added_and_removed_get_their_own_copy() {
    let (db, lawyer, _) = firm("push").await;
    let partner = db.user("hhuber").await;
    db.enable_user(partner, false).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());

    let a = db.appointment("Teambesprechung", 24, &[lawyer]).await;
    eventually(WAIT, "lawyer's copy", || async {
        (sink.seen().len() == 1).then_some(())
    })
    .await;
    sqlx::query("insert into xpert.appointment_participants values ($1, $2)")
        .bind(a)
        .bind(partner)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "partner's copy", || async {
        (sink.seen_for(partner).len() == 1).then_some(())
    })
    .await;
    sqlx::query(
        "delete from xpert.appointment_participants where appointment_id = $1 and user_id = $2",
    )
    .bind(a)
    .bind(partner)
    .execute(&db.pool)
    .await
    .unwrap();
    eventually(WAIT, "partner's copy removed", || async {
        (sink.seen_for(partner).len() == 2).then_some(())
    })
    .await;
    assert!(!sink.seen_for(partner)[1].upsert);
    worker.stop().await;
    let look = SteppedWorker::new(&db, test_settings(&db, dir.path()), sink.clone())
        .settle()
        .await;
    assert_eq!(look.claimed, 0, "nothing left for anyone");
    assert_eq!(
        sink.seen_for(lawyer).len(),
        1,
        "the lawyer's copy is untouched"
    );
}

#[tokio::test]
async fn two_workers_deliver_each_change_exactly_once() {
    let db = TestDb::migrated().await;
    db.enable_globally("push").await;
    let mut users = Vec::new();
    for i in 0..12 {
        let u = db.user(&format!("anwalt{i}")).await;
        db.enable_user(u, false).await;
        users.push(u);
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let w1 = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    let w2 = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    let (a, b) = tokio::join!(
        async {
            for i in 0..30 {
                db.appointment(&format!("A{i}"), 24, &users[..6]).await;
            }
        },
        async {
            for i in 0..30 {
                db.appointment(&format!("B{i}"), 24, &users[6..]).await;
            }
        }
    );
    let _ = (a, b);
    eventually(WAIT, "every change delivered", || async {
        (sink.seen().len() >= 360).then_some(())
    })
    .await;
    w1.stop().await;
    w2.stop().await;
    let look = SteppedWorker::new(&db, test_settings(&db, dir.path()), sink.clone())
        .settle()
        .await;
    assert_eq!(look.claimed, 0, "nothing left to deliver again");
    let mut per_entry: HashMap<(i64, i64), usize> = HashMap::new();
    for s in sink.seen() {
        *per_entry.entry((s.user_id, s.appointment_id)).or_default() += 1;
    }
    assert_eq!(per_entry.len(), 360);
    assert!(
        per_entry.values().all(|&n| n == 1),
        "a change was delivered twice"
    );
}

#[tokio::test]
async fn a_killed_worker_loses_and_duplicates_nothing() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.lease = Duration::from_secs(2);
    // The first worker hangs inside its calendar call and is then killed.
    let stuck = RecordingSink::new();
    *stuck.delay.lock().unwrap() = Some(Duration::from_secs(3600));
    let w1 = RunningWorker::start(&db, settings.clone(), stuck.clone());
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(WAIT, "the first worker holds the lease", || async {
        let leased: Option<bool> = sqlx::query_scalar(
            "select lease_token is not null from livesync.user_state where user_id = $1",
        )
        .bind(lawyer)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        (leased == Some(true)).then_some(())
    })
    .await;
    w1.kill();

    let ics = Arc::new(IcsSink::new(dir.path().join("ics")));
    let w2 = RunningWorker::start(&db, settings, ics.clone() as Arc<dyn CalendarSink>);
    let path = livesync_worker::file_name::safe_path(&dir.path().join("ics"), "mmuster", "ics");
    eventually(WAIT, "delivered after the lease expired", || async {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|s| s.contains(&format!("xpert-termin-{a}@livesync")))
    })
    .await;
    // Deliver again (a change), and check there is still exactly one entry.
    sqlx::query("update xpert.appointments set subject = 'Tagsatzung neu' where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    let content = eventually(WAIT, "update delivered", || async {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|s| s.contains("Tagsatzung neu"))
    })
    .await;
    assert_eq!(content.matches("BEGIN:VEVENT").count(), 1);
    drained(&db, lawyer).await;
    w2.stop().await;
}

/// Write one appointment for `lawyer` and wait until it reached `sink` (nothing before) and
/// its delivery is recorded. (The sink sees a change before the worker records it: a
/// delivery cut off in between, as the tests after this one do, is rightly sent again.)
async fn deliver_one(db: &TestDb, lawyer: i64, sink: &RecordingSink) {
    let id = db.appointment("vorher", 24, &[lawyer]).await;
    eventually(WAIT, "first delivery", || async {
        (sink.seen().len() == 1).then_some(())
    })
    .await;
    eventually(WAIT, "first delivery recorded", || async {
        let recorded: bool = sqlx::query_scalar(
            "select exists (select from livesync.delivered
                             where user_id = $1 and appointment_id = $2 and sequence >= 0)
                and not exists (select from livesync.queue where user_id = $1)",
        )
        .bind(lawyer)
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        recorded.then_some(())
    })
    .await;
}

#[tokio::test]
async fn notifications_lost_while_the_listener_is_down_are_caught_up() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.poll_interval = Duration::from_secs(5);
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, settings, sink.clone());
    deliver_one(&db, lawyer, &sink).await;
    let killed: i64 = sqlx::query_scalar(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
          where datname = current_database() and query ilike 'listen%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        killed >= 1,
        "the listener's backend was found and terminated"
    );
    for i in 0..5 {
        db.appointment(&format!("währenddessen {i}"), 24, &[lawyer])
            .await;
    }
    eventually(WAIT, "caught up", || async {
        (sink.seen().len() >= 6).then_some(())
    })
    .await;
    let subjects: Vec<_> = sink.seen().into_iter().map(|s| s.subject).collect();
    assert_eq!(subjects.len(), 6, "each appointment once: {subjects:?}");
    worker.stop().await;
}

/// The worker's pool hands out a connection in steady use without a ping, so a statement
/// on one the server cut fails; `retry_if_cut` runs it again on a live one. A connection
/// idle for longer than the pool's limit is pinged (and replaced) first. (The limits are
/// set far apart so that a slow machine cannot blur the two cases.)
#[tokio::test]
async fn a_pooled_statement_whose_connection_was_cut_runs_again_on_a_live_one() {
    use livesync_worker::connections::{is_cut, pool_options_pinging_after, retry_if_cut};
    let db = TestDb::baseline().await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let connect = |name: &'static str, ping_after: Duration| {
        let options = options.clone().application_name(name);
        async move {
            pool_options_pinging_after(3, ping_after)
                .connect_with(options)
                .await
                .unwrap()
        }
    };
    let cut_all = |pool: sqlx::PgPool, name: &'static str| {
        let admin = db.pool.clone();
        async move {
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(pool.acquire().await.unwrap());
            }
            drop(held);
            // A connection goes back to the pool in a task of its own: cut them only once
            // all three are back, or one could be found dead on its way back and replaced.
            eventually(WAIT, "all three back in the pool", || async {
                (pool.num_idle() == 3).then_some(())
            })
            .await;
            sqlx::query(
                "select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1",
            )
            .bind(name)
            .execute(&admin)
            .await
            .unwrap();
            eventually(WAIT, "the cut backends are gone", || async {
                let left: i64 = sqlx::query_scalar(
                    "select count(*) from pg_stat_activity where application_name = $1",
                )
                .bind(name)
                .fetch_one(&admin)
                .await
                .unwrap();
                (left == 0).then_some(())
            })
            .await;
        }
    };

    let steady = connect("pool-steady", Duration::from_secs(600)).await;
    cut_all(steady.clone(), "pool-steady").await;
    let plain = sqlx::query_scalar::<_, i32>("select 1")
        .fetch_one(&steady)
        .await;
    assert!(
        plain.as_ref().is_err_and(is_cut),
        "a connection in steady use is not pinged: {plain:?}"
    );
    let again: i32 = retry_if_cut(&steady, || {
        sqlx::query_scalar("select 2").fetch_one(&steady)
    })
    .await
    .expect("run again on a live connection");
    assert_eq!(again, 2);

    let idle = connect("pool-idle", Duration::from_millis(50)).await;
    cut_all(idle.clone(), "pool-idle").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_idle: i32 = sqlx::query_scalar("select 3")
        .fetch_one(&idle)
        .await
        .expect("an idle connection is pinged and replaced before use");
    assert_eq!(after_idle, 3);
}

/// Every connection the worker holds is cut at once (a server restart looks the same to
/// it): the loop's and the commit watch's own connections, the listener and the pool. Its
/// pool hands out a connection in steady use without a ping first, so the first statement
/// on a cut one fails; the worker must connect anew and lose nothing.
#[tokio::test]
async fn the_worker_goes_on_after_all_its_connections_are_cut() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.poll_interval = Duration::from_secs(5);
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let pool = livesync_worker::connections::pool_options(12)
        .connect_with(options.application_name("worker-to-cut"))
        .await
        .unwrap();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start_with_pool(pool, settings, sink.clone());
    deliver_one(&db, lawyer, &sink).await;
    let cut: i64 = sqlx::query_scalar(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
          where datname = current_database() and application_name = 'worker-to-cut'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        cut >= 3,
        "the loop's, the listener's and a pooled connection were cut: {cut}"
    );
    for i in 0..5 {
        db.appointment(&format!("danach {i}"), 24, &[lawyer]).await;
    }
    eventually(WAIT, "everything after the cut delivered", || async {
        (sink.seen().len() >= 6).then_some(())
    })
    .await;
    let subjects: Vec<_> = sink.seen().into_iter().map(|s| s.subject).collect();
    assert_eq!(subjects.len(), 6, "each appointment once: {subjects:?}");
    let connected: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity
          where datname = current_database() and application_name = 'worker-to-cut'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(connected >= 2, "connected anew: {connected}");
    worker.stop().await;
}

#[tokio::test]
async fn poll_only_mode_delivers_without_listen() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.poll_only = true;
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, settings, sink.clone());
    db.appointment("ohne LISTEN", 24, &[lawyer]).await;
    eventually(WAIT, "delivered by polling", || async {
        (sink.seen().len() == 1).then_some(())
    })
    .await;
    let listeners: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() and query ilike 'listen%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(listeners, 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_rejected_appointment_is_dead_lettered_and_blocks_nothing() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let bad = db.appointment("kaputt", 24, &[]).await;
    sink.reject.lock().unwrap().insert(bad);
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("insert into xpert.appointment_participants values ($1, $2)")
        .bind(bad)
        .bind(lawyer)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let good = db.appointment("gut", 25, &[lawyer]).await;
    eventually(WAIT, "the good one delivered", || async {
        sink.seen()
            .iter()
            .any(|s| s.appointment_id == good)
            .then_some(())
    })
    .await;
    let reason: String = eventually(WAIT, "the bad one dead-lettered", || async {
        sqlx::query_scalar::<_, String>(
            "select last_error from livesync.dead_letters where appointment_id = $1",
        )
        .bind(bad)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(reason.contains("rejected"), "{reason}");
    drained(&db, lawyer).await;
    worker.stop().await;
}

#[tokio::test]
async fn temporary_failures_are_retried_then_dead_lettered() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.max_attempts = 3;
    let sink = RecordingSink::new();
    let flaky = db.appointment("wackelig", 24, &[]).await;
    let hopeless = db.appointment("hoffnungslos", 25, &[]).await;
    sink.fail_times.lock().unwrap().insert(flaky, 1);
    sink.fail_times.lock().unwrap().insert(hopeless, 100);
    let worker = RunningWorker::start(&db, settings, sink.clone());
    for a in [flaky, hopeless] {
        sqlx::query("insert into xpert.appointment_participants values ($1, $2)")
            .bind(a)
            .bind(lawyer)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    eventually(WAIT, "the flaky one delivered on retry", || async {
        sink.seen()
            .iter()
            .any(|s| s.appointment_id == flaky)
            .then_some(())
    })
    .await;
    let attempts: i32 = eventually(WAIT, "the hopeless one dead-lettered", || async {
        sqlx::query_scalar::<_, i32>(
            "select attempts from livesync.dead_letters where appointment_id = $1",
        )
        .bind(hopeless)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(attempts, 3);
    worker.stop().await;
}

#[tokio::test]
async fn a_log_file_for_a_hostile_username_stays_inside_the_log_dir() {
    let db = TestDb::migrated().await;
    db.enable_globally("push").await;
    let user = db.user("../../etc/evil").await;
    db.enable_user(user, true).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(&db, dir.path());
    let log_dir = settings.log_dir.clone();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, settings, sink.clone());
    db.appointment("Termin", 24, &[user]).await;
    eventually(WAIT, "delivered", || async {
        (sink.seen().len() == 1).then_some(())
    })
    .await;
    let files: Vec<_> = eventually(WAIT, "a log line written", || async {
        let files: Vec<_> = std::fs::read_dir(&log_dir).ok()?.flatten().collect();
        (!files.is_empty()).then_some(files)
    })
    .await;
    assert_eq!(files.len(), 1);
    let content = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(content.contains("Termin"), "{content}");
    assert!(!dir.path().join("etc").exists());
    worker.stop().await;
}

#[tokio::test]
async fn the_worker_refuses_a_schema_it_was_not_built_for() {
    let db = TestDb::baseline().await;
    let err = livesync_worker::schema::check(&db.pool).await.unwrap_err();
    assert!(err.to_string().contains("livesync-admin migrate"), "{err}");
    db.migrate().await;
    livesync_worker::schema::check(&db.pool).await.unwrap();
    sqlx::query("insert into livesync.refinery_schema_history (version, name, applied_on, checksum) values (999, 'future', '', '0')")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = livesync_worker::schema::check(&db.pool).await.unwrap_err();
    assert!(err.to_string().contains("V999"), "{err}");
}

/// The lawyer's `.ics` calendar in a test's directory.
struct LawyersIcs {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl LawyersIcs {
    fn in_dir(dir: &std::path::Path) -> LawyersIcs {
        let dir = dir.join("ics");
        let path = livesync_worker::file_name::safe_path(&dir, "mmuster", "ics");
        LawyersIcs { dir, path }
    }

    fn sink(&self) -> IcsSink {
        IcsSink::new(self.dir.clone())
    }

    fn holds(&self, appointment: i64) -> bool {
        std::fs::read_to_string(&self.path)
            .is_ok_and(|s| s.contains(&format!("xpert-termin-{appointment}@livesync")))
    }
}

/// Wait until the user's queued entry failed with an error containing `text`.
async fn waited_for_error(db: &TestDb, user_id: i64, text: &str, what: &str) {
    eventually(WAIT, what, || async {
        let error: Option<String> =
            sqlx::query_scalar("select last_error from livesync.queue where user_id = $1")
                .bind(user_id)
                .fetch_optional(&db.pool)
                .await
                .unwrap()
                .flatten();
        error.filter(|e| e.contains(text)).map(|_| ())
    })
    .await;
}

async fn delete_appointment(db: &TestDb, appointment: i64) {
    sqlx::query("delete from xpert.appointments where id = $1")
        .bind(appointment)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deletion_after_a_worker_died_between_write_and_record_is_not_lost() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.lease = Duration::from_secs(2);
    let calendar = LawyersIcs::in_dir(dir.path());

    // The first worker writes the appointment into the calendar and dies before recording it.
    let dying = Arc::new(ApplyThen::hang(calendar.sink()));
    let w1 = RunningWorker::start(&db, settings.clone(), dying);
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(WAIT, "written into the calendar", || async {
        calendar.holds(a).then_some(())
    })
    .await;
    w1.kill();

    // Xpert deletes it meanwhile; the next worker must take it out again.
    delete_appointment(&db, a).await;
    let w2 = RunningWorker::start(&db, settings, Arc::new(calendar.sink()));
    drained(&db, lawyer).await;
    assert!(
        !calendar.holds(a),
        "a deleted appointment stayed in the calendar"
    );
    w2.stop().await;
}

/// A worker killed in the middle of a delivery holds its user's lease for a minute; the
/// worker started in its place takes the user over at once, because the killed worker's
/// presence lock ended with its session. (Seen from outside: a restarted worker waited out
/// its dead predecessor's 60-s lease before delivering anything.)
#[tokio::test]
async fn a_restarted_worker_takes_over_a_killed_workers_user_without_waiting_for_the_lease() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.lease = Duration::from_secs(600); // far beyond WAIT: only presence can end it
    let calendar = LawyersIcs::in_dir(dir.path());
    let w1 = RunningWorker::start(
        &db,
        settings.clone(),
        Arc::new(ApplyThen::hang(calendar.sink())),
    );
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(
        WAIT,
        "the first worker is in the middle of a delivery",
        || async { calendar.holds(a).then_some(()) },
    )
    .await;
    w1.kill();
    let b = db.appointment("Besprechung", 48, &[lawyer]).await;
    let w2 = RunningWorker::start(&db, settings, Arc::new(calendar.sink()));
    eventually(
        WAIT,
        "delivered by the worker started in its place",
        || async { calendar.holds(b).then_some(()) },
    )
    .await;
    drained(&db, lawyer).await;
    let lease_left: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from lease_expires_at - now())::float8 \
           from livesync.user_state where user_id = $1",
    )
    .bind(lawyer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(lease_left.is_none(), "released: {lease_left:?}");
    w2.stop().await;
}

/// A calendar may hold an appointment whose write was reported as failed (the answer was
/// lost): when Xpert deletes it before a retry succeeds, the deletion is still sent.
#[tokio::test]
async fn a_deletion_after_a_write_reported_as_failed_is_not_lost() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let calendar = LawyersIcs::in_dir(dir.path());
    let sink = Arc::new(ApplyThen::fail(calendar.sink()));
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    waited_for_error(
        &db,
        lawyer,
        "answer was lost",
        "written, and reported as failed",
    )
    .await;
    assert!(calendar.holds(a));

    delete_appointment(&db, a).await;
    sink.recover();
    drained(&db, lawyer).await;
    assert!(
        !calendar.holds(a),
        "a deleted appointment stayed in the calendar"
    );
    worker.stop().await;
}

/// The marks that keep such a deletion from being skipped are written where the doubt
/// arises: by the release after a failed flush and by the claim that takes over a lease
/// (expired, or its holder gone), for every queued entry without a record. A flush that
/// went well and a claim of a free user write none.
#[tokio::test]
async fn maybe_delivered_marks_come_from_the_error_release_and_the_takeover_only() {
    use livesync_worker::claim::{release, release_after_error};
    let (db, lawyer, _) = firm("push").await;
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    db.appointment("Besprechung", 48, &[lawyer]).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let hour = Duration::from_secs(3600);
    let marks = || async {
        db.scalar::<i64>("select count(*) from livesync.delivered where sequence = -1")
            .await
    };

    let first = claim_for(&mut conn, None, hour).await;
    assert_eq!(first.len(), 1);
    release(&db.pool, &first[0]).await.unwrap();
    assert_eq!(
        marks().await,
        0,
        "a free user's claim and a clean release mark nothing"
    );

    let second = claim_for(&mut conn, None, hour).await;
    assert_eq!(second.len(), 1);
    release_after_error(&db.pool, &second[0]).await.unwrap();
    assert_eq!(
        marks().await,
        2,
        "the release after an error marks both entries"
    );
    let lease: Option<uuid::Uuid> =
        sqlx::query_scalar("select lease_token from livesync.user_state where user_id = $1")
            .bind(lawyer)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(lease, None, "and gives the user back");

    sqlx::query("delete from livesync.delivered")
        .execute(&db.pool)
        .await
        .unwrap();
    let short = Duration::from_millis(1);
    let third = claim_for(&mut conn, None, short).await;
    assert_eq!(third.len(), 1);
    assert_eq!(marks().await, 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fourth = claim_for(&mut conn, None, hour).await;
    assert_eq!(fourth.len(), 1, "an expired lease is taken over");
    assert_ne!(fourth[0].token, third[0].token);
    assert_eq!(marks().await, 2, "the takeover marks both entries");
}

/// Lease up to ten users for a made-up worker with presence key `lock_key`.
async fn claim_for(
    conn: &mut sqlx::PgConnection,
    lock_key: Option<i32>,
    lease: Duration,
) -> Vec<livesync_worker::claim::Claim> {
    use livesync_worker::claim::{Looker, Mark, next_work};
    let looker = Looker {
        worker_id: uuid::Uuid::new_v4(),
        lock_key,
        expand_limit: 1000,
        session_limit: Duration::from_secs(3600),
        lease,
    };
    next_work(conn, &looker, Mark::None, 10)
        .await
        .expect("look for work")
        .claims
}

/// A lease whose holder still holds its presence lock is not taken over before it
/// expires; once that lock is free (the holder's session ended), it is taken over at the
/// next look, long before the lease would expire.
#[tokio::test]
async fn a_lease_is_taken_over_as_soon_as_its_holders_presence_is_gone() {
    use sqlx::Connection;
    let (db, lawyer, _) = firm("push").await;
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let mut presence = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("select pg_advisory_lock(27764, 4711)")
        .execute(&mut presence)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let hour = Duration::from_secs(3600);
    let held = claim_for(&mut conn, Some(4711), hour).await;
    assert_eq!(held.len(), 1);
    assert!(
        claim_for(&mut conn, Some(4712), hour).await.is_empty(),
        "a live holder keeps its user"
    );
    presence.close().await.unwrap(); // its session ends: the lock is free
    eventually(WAIT, "the server ended the holder's session", || async {
        let held: i64 = db
            .scalar("select count(*) from pg_locks where locktype = 'advisory' and classid = 27764")
            .await;
        (held == 0).then_some(())
    })
    .await;
    let taken = claim_for(&mut conn, Some(4712), hour).await;
    assert_eq!(taken.len(), 1, "taken over without waiting for the lease");
    assert_ne!(taken[0].token, held[0].token);
    let key: Option<i32> = db
        .scalar("select lease_key from livesync.user_state where lease_token is not null")
        .await;
    assert_eq!(key, Some(4712));
}

/// A change can reach the queue after a delivery already read its result (the change log
/// is expanded after the flush loaded the row): the calendar is not written twice with
/// the same row. A backfill still sends everything again.
#[tokio::test]
async fn an_entry_for_a_row_the_calendar_already_holds_writes_nothing() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    let a = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(WAIT, "delivered", || async {
        (sink.seen_for(lawyer).len() == 1).then_some(())
    })
    .await;
    drained(&db, lawyer).await;

    // The late change-log row of the same, unchanged appointment.
    sqlx::query("insert into livesync.changes (appointment_id, user_id) values ($1, $2)")
        .bind(a)
        .bind(lawyer)
        .execute(&db.pool)
        .await
        .unwrap();
    // A real change after it, so that we know when the worker has been through both.
    sqlx::query("update xpert.appointments set subject = 'verlegt' where id = $1")
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap();
    eventually(WAIT, "the real change delivered", || async {
        (sink.seen_for(lawyer).len() >= 2).then_some(())
    })
    .await;
    drained(&db, lawyer).await;
    let late = db.appointment("Frist", 48, &[lawyer]).await;
    eventually(WAIT, "the next appointment delivered", || async {
        (sink.seen_for(lawyer).len() >= 3).then_some(())
    })
    .await;
    drained(&db, lawyer).await;
    sqlx::query("insert into livesync.changes (appointment_id, user_id) values ($1, $2)")
        .bind(late)
        .bind(lawyer)
        .execute(&db.pool)
        .await
        .unwrap();
    db.expand_changes().await;
    drained(&db, lawyer).await;
    assert_eq!(
        sink.seen_for(lawyer).len(),
        3,
        "the unchanged row was not written again: {:?}",
        sink.seen_for(lawyer)
    );

    // A backfill (the calendar may have been wiped) sends it all again.
    let queued: i32 =
        sqlx::query_scalar("select livesync.queue_user_backlog($1, now() - interval '1 day')")
            .bind(lawyer)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(queued, 2);
    eventually(WAIT, "the backfill delivered", || async {
        (sink.seen_for(lawyer).len() == 5).then_some(())
    })
    .await;
    worker.stop().await;
}

/// Deliveries that finish together are completed in one statement, each fenced by its own
/// lease: when another worker has taken one user over meanwhile, that user's result is
/// not recorded (their entry stays for the new holder) while the other user's is.
#[tokio::test]
async fn a_lease_lost_for_one_user_fences_only_that_users_result() {
    let (db, lawyer, _) = firm("push").await;
    let partner = db.user("hhuber").await;
    db.enable_user(partner, false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.lease = Duration::from_secs(3);
    let sink = RecordingSink::new();
    *sink.delay.lock().unwrap() = Some(Duration::from_millis(1500));
    let worker = RunningWorker::start(&db, settings, sink.clone());
    // One transaction: both users are claimed in the same scan and delivered side by side.
    let a = db.appointment("Tagsatzung", 24, &[lawyer, partner]).await;
    eventually(WAIT, "both users are in delivery", || async {
        let leased: i64 = sqlx::query_scalar(
            "select count(*) from livesync.user_state
              where user_id in ($1, $2) and lease_token is not null",
        )
        .bind(lawyer)
        .bind(partner)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (leased == 2).then_some(())
    })
    .await;
    // Another worker takes the lawyer over while the calendar calls are running.
    sqlx::query(
        "update livesync.user_state set lease_token = gen_random_uuid() where user_id = $1",
    )
    .bind(lawyer)
    .execute(&db.pool)
    .await
    .unwrap();
    drained(&db, partner).await;
    eventually(WAIT, "both calendar calls returned", || async {
        (sink.seen().len() >= 2).then_some(())
    })
    .await;
    *sink.delay.lock().unwrap() = None;
    let recorded = |user: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from livesync.delivered
                  where user_id = $1 and appointment_id = $2 and sequence >= 0",
            )
            .bind(user)
            .bind(a)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        recorded(partner).await,
        1,
        "the partner's result is recorded"
    );
    // Give the completion of the lawyer's batch time to have happened (and be fenced).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        recorded(lawyer).await,
        0,
        "a result under a lost lease is not recorded"
    );
    assert_eq!(
        queued(&db, lawyer).await,
        1,
        "the lawyer's entry stays queued"
    );
    // Once the usurper's lease runs out, the worker delivers the lawyer's entry itself.
    drained(&db, lawyer).await;
    assert_eq!(recorded(lawyer).await, 1);
    worker.stop().await;
}

/// A worker going to sleep learns of every open transaction that may have read "awake"
/// before (and so sends no NOTIFY): `livesync.worker_sleeps` lists the transaction's change
/// lock, and the commit watch, waiting for that lock, wakes the worker when it commits.
#[tokio::test]
async fn a_transaction_open_when_the_worker_falls_asleep_wakes_it_at_its_commit() {
    use livesync_worker::commit_watch;
    use livesync_worker::listener::Wake;
    let (db, lawyer, _) = firm("push").await;
    let mut tx = db.pool.begin().await.unwrap();
    let a: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, starts_at, ends_at) \
         values ('Tagsatzung', now() + interval '1 day', now() + interval '1 day 1 hour') \
         returning id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into xpert.appointment_participants (appointment_id, user_id) values ($1, $2)",
    )
    .bind(a)
    .bind(lawyer)
    .execute(&mut *tx)
    .await
    .unwrap();
    let key: i64 = sqlx::query_scalar("select currval('livesync.change_version')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();

    let (_, in_flight, more): (bool, Vec<i32>, bool) =
        sqlx::query_as("select * from livesync.worker_sleeps(gen_random_uuid())")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        in_flight.contains(&commit_watch::lock_key(key)),
        "the open transaction is listed: {in_flight:?} lacks {key}"
    );
    assert!(!more, "nothing is visible before the commit");

    let wake = std::sync::Arc::new(Wake::default());
    let (keys, rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let watch = tokio::spawn(commit_watch::run(
        db.pool.connect_options().as_ref().clone(),
        rx,
        wake.clone(),
        Duration::from_secs(60),
        stop,
    ));
    keys.send(in_flight).unwrap();
    eventually(
        WAIT,
        "the watch waits for the transaction's lock",
        || async {
            let waiting: i64 = db
                .scalar(
                    "select count(*) from pg_locks where locktype = 'advisory' and classid = 27763 \
                  and not granted",
                )
                .await;
            (waiting == 1).then_some(())
        },
    )
    .await;
    tx.commit().await.unwrap();
    tokio::time::timeout(WAIT, wake.wait())
        .await
        .expect("the commit wakes the worker");
    watch.abort();
}

/// A sleeping worker is woken by the NOTIFY of the appointment trigger, which sends it
/// because `livesync.wake_until` says a worker sleeps: the delivery comes at once,
/// not at the next poll.
#[tokio::test]
async fn a_sleeping_worker_is_woken_by_the_next_appointment() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.poll_interval = Duration::from_secs(600);
    let sink = RecordingSink::new();
    let worker = RunningWorker::start(&db, settings, sink.clone());
    eventually(WAIT, "the worker sleeps and says so", || async {
        let asleep: Option<bool> = db
            .scalar("select bool_and(not awake) from livesync.workers")
            .await;
        (asleep == Some(true) && db.wake_window().await > 0.0).then_some(())
    })
    .await;
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    eventually(
        Duration::from_secs(10),
        "delivered at once, long before the next poll (600 s)",
        || async { (sink.seen_for(lawyer).len() == 1).then_some(()) },
    )
    .await;
    worker.stop().await;
    let window = db.wake_window().await;
    assert!(window < 0.0, "a stopped worker is not woken: {window}");
}

/// A calendar that does not answer before the lease deadline gets the batch handed back
/// without using up the entries' attempts: a slow server must not dead-letter
/// appointments it accepts. (Found by `livesync-bench chaos --faults kill9 --sink caldav`,
/// where overrun batches counted up to 8 of 10 attempts.)
#[tokio::test]
async fn a_batch_cut_off_at_the_lease_deadline_does_not_count_as_an_attempt() {
    let (db, lawyer, _) = firm("push").await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, dir.path());
    settings.lease = Duration::from_secs(3); // the worker's own deadline: 2 s
    settings.max_attempts = 2;
    let sink = RecordingSink::new();
    *sink.delay.lock().unwrap() = Some(Duration::from_secs(4));
    let worker = RunningWorker::start(&db, settings, sink.clone());
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    // Three cut-offs: were each counted, the entry would be a dead letter after the second.
    waited_for_error(
        &db,
        lawyer,
        "lease deadline",
        "a batch cut off at the deadline",
    )
    .await;
    eventually(Duration::from_secs(30), "three calls cut off", || async {
        (sink.calls.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    let (attempts, dead): (i32, i64) = sqlx::query_as(
        "select (select attempts from livesync.queue where user_id = $1),
                (select count(*) from livesync.dead_letters)",
    )
    .bind(lawyer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (attempts, dead),
        (0, 0),
        "no attempt counted, nothing dead-lettered"
    );
    // Once the calendar answers in time, the entry is delivered.
    *sink.delay.lock().unwrap() = None;
    drained(&db, lawyer).await;
    assert!(!sink.seen_for(lawyer).is_empty());
    worker.stop().await;
}
