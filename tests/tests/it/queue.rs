//! The queue semantics of the foundation (issue rules 1–6), against a real PostgreSQL.
use std::time::Duration;

use sqlx::PgExecutor;
use sqlx::postgres::PgListener;

use crate::helpers::TestDb;

fn upsert(user: i64, appt: i64) -> (i64, i64, String) {
    (user, appt, "upsert".to_string())
}

fn delete(user: i64, appt: i64) -> (i64, i64, String) {
    (user, appt, "delete".to_string())
}

const ADD_PARTICIPANT: &str =
    "insert into xpert.appointment_participants (appointment_id, user_id) values ($1, $2)";
const REMOVE_PARTICIPANT: &str =
    "delete from xpert.appointment_participants where appointment_id = $1 and user_id = $2";

/// Run `sql` with `a` as `$1` and `b` as `$2`, on the pool or in a transaction.
async fn exec<'c>(conn: impl PgExecutor<'c>, sql: &'static str, a: i64, b: i64) {
    sqlx::query(sql)
        .bind(a)
        .bind(b)
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// What running `sql` (with `a` and `b`) queues, on an empty queue.
async fn queued_by(db: &TestDb, sql: &'static str, a: i64, b: i64) -> Vec<(i64, i64, String)> {
    db.drain_queue().await;
    exec(&db.pool, sql, a, b).await;
    db.queue().await
}

/// A database with livesync on, a lawyer and a partner with sync active and a secretary
/// without it.
async fn office() -> (TestDb, i64, i64, i64) {
    let (db, lawyer, partner) = TestDb::lawyer_and_partner().await;
    let secretary = db.user("ssekretaer").await;
    db.drain_queue().await;
    (db, lawyer, partner, secretary)
}

/// A user's latest login and whether its name matched, as `livesync.user_state` has them.
async fn user_state(db: &TestDb, user: i64) -> (Option<i64>, Option<bool>) {
    sqlx::query_as("select login_id, login_matched from livesync.user_state where user_id = $1")
        .bind(user)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Whether the login's Windows name matched its Xpert user's, as its login event says.
async fn login_matched(db: &TestDb, login: i64) -> bool {
    db.scalar_for(
        "select matched from livesync.login_events where login_id = $1",
        login,
    )
    .await
}

/// A settings row for `user` with live sync off.
async fn switch_off(db: &TestDb, user: i64) {
    db.exec_for(
        "insert into livesync.user_settings (user_id, live_sync_enabled) values ($1, false)",
        user,
    )
    .await;
}

#[tokio::test]
async fn inserting_an_appointment_queues_an_upsert_for_each_active_participant() {
    let (db, lawyer, partner, secretary) = office().await;
    let appt = db
        .appointment("Verhandlung", 48, &[lawyer, partner, secretary])
        .await;
    assert_eq!(
        db.queue().await,
        vec![upsert(lawyer, appt), upsert(partner, appt)]
    );
}

#[tokio::test]
async fn updating_an_appointment_queues_an_upsert_for_each_active_participant() {
    let (db, lawyer, partner, secretary) = office().await;
    let appt = db
        .appointment("Verhandlung", 48, &[lawyer, partner, secretary])
        .await;
    let moved = queued_by(
        &db,
        "update xpert.appointments set subject = 'Verhandlung (verlegt)', \
         starts_at = starts_at + make_interval(hours => $2::int) where id = $1",
        appt,
        2,
    )
    .await;
    assert_eq!(moved, vec![upsert(lawyer, appt), upsert(partner, appt)]);

    // An update that changes nothing queues nothing.
    let unchanged = queued_by(
        &db,
        "update xpert.appointments set subject = subject where id = $1 and $2 = $2",
        appt,
        0,
    )
    .await;
    assert!(unchanged.is_empty());
}

#[tokio::test]
async fn deleting_an_appointment_queues_deletes_for_its_participants() {
    let (db, lawyer, partner, secretary) = office().await;
    let appt = db
        .appointment("Verhandlung", 48, &[lawyer, partner, secretary])
        .await;
    let deleted = queued_by(
        &db,
        "delete from xpert.appointments where id = $1 and $2 = $2",
        appt,
        0,
    )
    .await;
    assert_eq!(deleted, vec![delete(lawyer, appt), delete(partner, appt)]);
}

#[tokio::test]
async fn removing_a_participant_queues_a_delete_for_that_participant_only() {
    let (db, lawyer, partner, _) = office().await;
    let appt = db.appointment("Verhandlung", 48, &[lawyer, partner]).await;
    assert_eq!(
        queued_by(&db, REMOVE_PARTICIPANT, appt, partner).await,
        vec![delete(partner, appt)]
    );
}

#[tokio::test]
async fn adding_a_participant_queues_an_upsert_for_them() {
    let (db, lawyer, partner, _) = office().await;
    let appt = db.appointment("Verhandlung", 48, &[lawyer]).await;
    assert_eq!(
        queued_by(&db, ADD_PARTICIPANT, appt, partner).await,
        vec![upsert(partner, appt)]
    );
}

#[tokio::test]
async fn moving_a_participant_row_to_another_user_queues_a_delete_and_an_upsert() {
    let (db, lawyer, partner, _) = office().await;
    let appt = db.appointment("Verhandlung", 48, &[lawyer]).await;
    let moved = queued_by(
        &db,
        "update xpert.appointment_participants set user_id = $2 where appointment_id = $1",
        appt,
        partner,
    )
    .await;
    assert_eq!(moved, vec![delete(lawyer, appt), upsert(partner, appt)]);
}

#[tokio::test]
async fn changes_to_one_appointment_coalesce_into_one_entry_with_the_final_intent() {
    let (db, lawyer, _, _) = office().await;
    let appt = db.appointment("Verhandlung", 48, &[lawyer]).await;
    let first = db.queue_entries().await;
    assert_eq!(first.len(), 1);

    tokio::time::sleep(Duration::from_millis(5)).await;
    exec(
        &db.pool,
        "update xpert.appointments set subject = 'geändert' where id = $1 and $2 = $2",
        appt,
        0,
    )
    .await;
    let updated = db.queue_entries().await;
    assert_eq!(updated.len(), 1, "one entry per (user, appointment)");
    assert_eq!(updated[0].op, "upsert");
    assert!(updated[0].version > first[0].version, "the version grows");
    assert_eq!(
        updated[0].queued_at, first[0].queued_at,
        "queued_at is kept"
    );

    exec(
        &db.pool,
        "delete from xpert.appointments where id = $1 and $2 = $2",
        appt,
        0,
    )
    .await;
    let deleted = db.queue_entries().await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].op, "delete", "the final intent wins");
    assert!(deleted[0].version > updated[0].version);
    assert_eq!(deleted[0].queued_at, first[0].queued_at);
}

#[tokio::test]
async fn users_without_active_sync_get_nothing_queued() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let never_enabled = db.user("nie").await;
    let switched_off = db.user("aus").await;
    switch_off(&db, switched_off).await;
    db.appointment("Termin", 1, &[never_enabled, switched_off])
        .await;
    assert!(db.queue().await.is_empty());
}

#[tokio::test]
async fn nothing_is_queued_while_the_switch_is_off_or_unlicensed() {
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    db.appointment("switch off", 1, &[lawyer]).await;
    db.exec("update livesync.settings set live_sync_enabled = true")
        .await;
    db.appointment("not licensed", 1, &[lawyer]).await;
    db.exec("update livesync.settings set live_sync_enabled = false, cti_sync_licensed = true")
        .await;
    db.appointment("licensed, switch off", 1, &[lawyer]).await;
    assert!(db.queue().await.is_empty());
}

#[tokio::test]
async fn a_login_is_recorded_in_xperts_own_transaction() {
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;

    let login = db.login(lawyer, "KANZLEI\\mmuster").await;
    let (user_id, matched, processed): (i64, bool, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(
            "select user_id, matched, processed_at from livesync.login_events where login_id = $1",
        )
        .bind(login)
        .fetch_one(&db.pool)
        .await
        .expect("a login event for the login");
    assert_eq!((user_id, matched, processed), (lawyer, true, None));
    assert_eq!(user_state(&db, lawyer).await, (Some(login), Some(true)));

    // A login whose transaction rolls back leaves no trace.
    let mut tx = db.pool.begin().await.unwrap();
    let rolled_back: i64 = sqlx::query_scalar(
        "insert into xpert.logins (user_id, windows_username) values ($1, 'KANZLEI\\mmuster') \
         returning id",
    )
    .bind(lawyer)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let events: i64 = db
        .scalar_for(
            "select count(*) from livesync.login_events where login_id = $1",
            rolled_back,
        )
        .await;
    assert_eq!(events, 0);
    let (latest, _) = user_state(&db, lawyer).await;
    assert_eq!(latest, Some(login));

    // The latest login decides presence: a later, differently named login does not match.
    let later = db.login(lawyer, "KANZLEI\\jemandanders").await;
    assert_eq!(user_state(&db, lawyer).await, (Some(later), Some(false)));
}

#[tokio::test]
async fn windows_names_match_xpert_names_by_the_login_rule() {
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;
    for (windows, expected) in [
        ("KANZLEI\\MMuster", true),
        (" mmuster@kanzlei.at ", true),
        ("mmuster", true),
        ("MMUSTER", true),
        ("mmuster2", false),
        ("KANZLEI\\mmuster2", false),
        ("", false),
    ] {
        let login = db.login(lawyer, windows).await;
        let matched = login_matched(&db, login).await;
        assert_eq!(matched, expected, "login event for {windows:?}");
        let (_, state) = user_state(&db, lawyer).await;
        assert_eq!(state, Some(expected), "user_state for {windows:?}");
    }

    // Full case folding needs ICU ("ß" upper-cases to "SS"); PostgreSQL packages ship it.
    let icu: bool = db
        .scalar("select exists (select 1 from pg_collation where collname = 'und-x-icu')")
        .await;
    if icu {
        let strauss = db.user("strauß").await;
        let login = db.login(strauss, "KANZLEI\\STRAUSS").await;
        assert!(login_matched(&db, login).await, "ß matches SS");
    } else {
        eprintln!("no ICU collation on this server: the ß/SS case is not checked");
    }
}

#[tokio::test]
async fn enabling_a_user_queues_their_appointments_from_the_start_of_today_in_the_firms_zone() {
    let db = TestDb::migrated().await;
    // UTC+14 all year: the firm's date is often not UTC's, which is the point.
    db.exec(
        "update livesync.settings set live_sync_enabled = true, cti_sync_licensed = true, \
         time_zone = 'Pacific/Kiritimati'",
    )
    .await;
    let lawyer = db.user("mmuster").await;
    let other = db.user("hhuber").await;
    let offset = chrono::Duration::hours(14);
    let local_now = chrono::Utc::now() + offset;
    let start_of_today = local_now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        - offset;
    let db_start: chrono::DateTime<chrono::Utc> =
        db.scalar("select livesync.start_of_today()").await;
    assert_eq!(db_start, start_of_today);

    let mut ids = Vec::new();
    for (subject, end) in [
        (
            "ended yesterday",
            start_of_today - chrono::Duration::minutes(1),
        ),
        ("ended today", start_of_today + chrono::Duration::minutes(1)),
        ("next week", start_of_today + chrono::Duration::days(7)),
    ] {
        let id: i64 = sqlx::query_scalar(
            "insert into xpert.appointments (subject, starts_at, ends_at) \
             values ($1, $2 - interval '1 hour', $2) returning id",
        )
        .bind(subject)
        .bind(end)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        for user in [lawyer, other] {
            exec(&db.pool, ADD_PARTICIPANT, id, user).await;
        }
        ids.push(id);
    }
    assert!(db.queue().await.is_empty());

    db.enable_user(lawyer, false).await;
    assert_eq!(
        db.queue().await,
        vec![upsert(lawyer, ids[1]), upsert(lawyer, ids[2])]
    );
}

/// Changes the log still holds when a user is enabled (no worker has expanded them) reach
/// the participants who synced already; the newly enabled user's calendar starts from
/// today all the same.
#[tokio::test]
async fn enabling_a_user_while_changes_wait_gives_them_their_calendar_from_today_only() {
    let (db, _, partner, secretary) = office().await;
    let past = db
        .appointment("letzte Woche", -24 * 7, &[partner, secretary])
        .await;
    let next = db.appointment("morgen", 24, &[partner, secretary]).await;
    db.enable_user(secretary, false).await;
    assert_eq!(
        db.queue().await,
        vec![
            upsert(partner, past),
            upsert(partner, next),
            upsert(secretary, next)
        ]
    );
}

#[tokio::test]
async fn disabling_a_user_drops_what_is_pending_for_them() {
    let (db, lawyer, partner, _) = office().await;
    let appt = db.appointment("Verhandlung", 48, &[lawyer, partner]).await;
    assert_eq!(db.queue().await.len(), 2);

    exec(
        &db.pool,
        "update livesync.user_settings set live_sync_enabled = false \
         where user_id = $1 and $2 = $2",
        lawyer,
        0,
    )
    .await;
    assert_eq!(db.queue().await, vec![upsert(partner, appt)]);
}

#[tokio::test]
async fn switching_livesync_on_queues_the_backlog_of_every_enabled_user() {
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;
    let partner = db.user("hhuber").await;
    let secretary = db.user("ssekretaer").await;
    db.enable_user(lawyer, false).await;
    db.enable_user(partner, false).await;
    let appt = db
        .appointment("Verhandlung", 48, &[lawyer, partner, secretary])
        .await;
    let old = db.appointment("vorige Woche", -24 * 7, &[lawyer]).await;
    assert!(db.queue().await.is_empty(), "switched off: nothing queued");
    let _ = old;

    db.enable_globally("live").await;
    assert_eq!(
        db.queue().await,
        vec![upsert(lawyer, appt), upsert(partner, appt)]
    );

    // Switching off again drops what waits.
    db.exec("update livesync.settings set live_sync_enabled = false")
        .await;
    assert!(db.queue().await.is_empty());
}

#[tokio::test]
async fn user_status_shows_what_xperts_ui_needs() {
    let db = TestDb::migrated().await;
    let matching = db.user("mmuster").await;
    let differing = db.user("hhuber").await;
    let not_enabled = db.user("ssekretaer").await;
    let no_settings = db.user("neu").await;
    db.enable_user(matching, true).await;
    db.enable_user(differing, false).await;
    switch_off(&db, not_enabled).await;
    db.login(matching, "KANZLEI\\mmuster").await;
    db.login(differing, "KANZLEI\\huber.h").await;
    db.login(not_enabled, "KANZLEI\\irgendwer").await;

    type Row = (i64, String, bool, bool, bool, bool, i64);
    let read = || async {
        sqlx::query_as::<_, Row>(
            "select user_id, username, show_sync_tab, live_sync_enabled, keep_logfile, \
             warn_inactive, queued from livesync.user_status order by user_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };

    // Switched off: no tab, no warning, nothing queued.
    let rows = read().await;
    assert_eq!(rows.len(), 4, "one row per Xpert user");
    assert!(rows.iter().all(|r| !r.2 && !r.5 && r.6 == 0));

    db.enable_globally("live").await;
    db.appointment(
        "Verhandlung",
        48,
        &[matching, differing, not_enabled, no_settings],
    )
    .await;
    let rows = read().await;
    assert_eq!(
        rows,
        vec![
            (matching, "mmuster".into(), true, true, true, false, 1),
            (differing, "hhuber".into(), true, true, false, true, 1),
            (
                not_enabled,
                "ssekretaer".into(),
                true,
                false,
                false,
                false,
                0
            ),
            (no_settings, "neu".into(), true, false, false, false, 0),
        ]
    );

    // The latest login decides the warning.
    db.login(differing, "hhuber").await;
    let warn: bool = db
        .scalar_for(
            "select warn_inactive from livesync.user_status where user_id = $1",
            differing,
        )
        .await;
    assert!(!warn);
}

/// Waits briefly for a notification on `livesync_wake`.
async fn wake_within(listener: &mut PgListener, wait: Duration) -> Option<String> {
    match tokio::time::timeout(wait, listener.try_recv()).await {
        Ok(Ok(Some(n))) => Some(n.payload().to_string()),
        Ok(Ok(None)) => panic!("listener connection lost"),
        Ok(Err(e)) => panic!("listener: {e}"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_wake_up_is_sent_only_while_every_live_worker_sleeps() {
    let (db, lawyer, _, _) = office().await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("livesync_wake").await.unwrap();
    let quiet = Duration::from_millis(300);
    let prompt = Duration::from_secs(5);

    // No worker registered: nobody listens, nothing is sent.
    db.appointment("no worker", 1, &[lawyer]).await;
    assert_eq!(wake_within(&mut listener, quiet).await, None);

    // A worker asleep: woken, with an id as payload.
    db.exec(
        "insert into livesync.workers (id, host, pid, awake) \
         values ('00000000-0000-0000-0000-000000000001', 'test', 1, false)",
    )
    .await;
    let appt = db.appointment("worker asleep", 1, &[lawyer]).await;
    assert_eq!(
        wake_within(&mut listener, prompt).await,
        Some(format!("appointment:{appt}"))
    );

    // Another worker awake: it watches the change counter, nobody is notified.
    db.exec(
        "insert into livesync.workers (id, host, pid, awake) \
         values ('00000000-0000-0000-0000-000000000002', 'test', 2, true)",
    )
    .await;
    let before: i64 = db
        .scalar("select last_value from livesync.change_version")
        .await;
    db.appointment("one awake", 1, &[lawyer]).await;
    assert_eq!(wake_within(&mut listener, quiet).await, None);
    let after: i64 = db
        .scalar("select last_value from livesync.change_version")
        .await;
    assert!(after > before, "the awake worker sees the counter move");

    // Only an awake worker: nothing.
    db.exec("delete from livesync.workers where not awake")
        .await;
    db.appointment("only awake", 1, &[lawyer]).await;
    assert_eq!(wake_within(&mut listener, quiet).await, None);

    // A sleeping worker whose heartbeat is stale counts as gone.
    db.exec(
        "update livesync.workers set awake = false, \
         heartbeat_at = now() - interval '1 minute'",
    )
    .await;
    db.appointment("stale worker", 1, &[lawyer]).await;
    assert_eq!(wake_within(&mut listener, quiet).await, None);

    // Live sync switched off for the firm: nothing logged, nothing sent, even to a
    // sleeping worker.
    db.exec("update livesync.workers set heartbeat_at = now()")
        .await;
    db.exec("update livesync.settings set live_sync_enabled = false")
        .await;
    db.appointment("switched off", 1, &[lawyer]).await;
    assert_eq!(wake_within(&mut listener, quiet).await, None);
    assert_eq!(
        db.scalar::<i64>("select count(*) from livesync.changes")
            .await,
        0
    );

    // One transaction with many participants wakes once.
    db.exec("update livesync.settings set live_sync_enabled = true")
        .await;
    // (Switching on queues the enabled users' calendars, which wakes the worker too.)
    assert!(wake_within(&mut listener, prompt).await.is_some());
    assert_eq!(wake_within(&mut listener, quiet).await, None);
    let others = [
        db.user("a1").await,
        db.user("a2").await,
        db.user("a3").await,
    ];
    db.appointment("many", 1, &[lawyer, others[0], others[1], others[2]])
        .await;
    assert!(wake_within(&mut listener, prompt).await.is_some());
    assert_eq!(
        wake_within(&mut listener, quiet).await,
        None,
        "one per transaction"
    );
}

#[tokio::test]
async fn wake_until_follows_every_change_of_the_workers_table() {
    let (db, _, _, _) = office().await;
    assert!(db.wake_window().await < 0.0, "no worker: nobody to wake");

    db.exec(
        "insert into livesync.workers (id, host, pid, awake) \
         values ('00000000-0000-0000-0000-000000000001', 'test', 1, false)",
    )
    .await;
    let window = db.wake_window().await;
    assert!(
        (25.0..=31.0).contains(&window),
        "a sleeping worker is woken for 30 s after its heartbeat: {window}"
    );

    // Its heartbeat 20 s old: 10 s left.
    db.exec("update livesync.workers set heartbeat_at = now() - interval '20 seconds'")
        .await;
    let window = db.wake_window().await;
    assert!((5.0..=11.0).contains(&window), "{window}");

    // A second worker awake: nobody is woken, whatever the sleeper's heartbeat.
    db.exec(
        "insert into livesync.workers (id, host, pid, awake) \
         values ('00000000-0000-0000-0000-000000000002', 'test', 2, true)",
    )
    .await;
    assert!(db.wake_window().await < 0.0);

    // The awake one stops; the sleeper's heartbeat comes in.
    db.exec("delete from livesync.workers where awake").await;
    db.exec("update livesync.workers set heartbeat_at = now()")
        .await;
    assert!(db.wake_window().await > 25.0);

    // Every worker gone (truncate too).
    db.exec("truncate livesync.workers").await;
    assert!(db.wake_window().await < 0.0);
}

/// The change counter as a worker reads it (a fresh sequence shows the same `last_value`
/// before and after its first `nextval`).
const COUNTER: &str = "select case when is_called then last_value else last_value - 1 end from livesync.change_version";

/// An import of many appointments in one transaction takes one commit-watch lock and
/// moves the counter once: the lock table (64 locks per connection by default) is not
/// exhausted, and every appointment is still logged and queued.
#[tokio::test]
async fn a_transaction_with_many_appointments_takes_one_lock() {
    let (db, lawyer, _, _) = office().await;
    let before: i64 = db.scalar(COUNTER).await;
    let mut tx = db.pool.begin().await.unwrap();
    for n in 0..200 {
        let id: i64 = sqlx::query_scalar(
            "insert into xpert.appointments (subject, starts_at, ends_at) \
             values ('Serie', now() + make_interval(days => $1), \
                     now() + make_interval(days => $1, hours => 1)) returning id",
        )
        .bind(n)
        .fetch_one(&mut *tx)
        .await
        .expect("Xpert's insert succeeds");
        exec(&mut *tx, ADD_PARTICIPANT, id, lawyer).await;
    }
    let locks: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks \
          where locktype = 'advisory' and classid = 27763 and pid = pg_backend_pid()",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(locks, 1);
    tx.commit().await.unwrap();
    let after: i64 = db.scalar(COUNTER).await;
    assert_eq!(after - before, 1, "the counter moves once per transaction");
    assert_eq!(db.queue().await.len(), 200);
}

#[tokio::test]
async fn xperts_bad_data_is_queued_without_error() {
    let (db, lawyer, _, _) = office().await;
    let notes = "x".repeat(1024 * 1024);
    let mut tx = db.pool.begin().await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, notes, starts_at, ends_at) \
         values (null, $1, now() + interval '2 hours', now() + interval '1 hour') returning id",
    )
    .bind(&notes)
    .fetch_one(&mut *tx)
    .await
    .expect("Xpert's insert succeeds");
    exec(&mut *tx, ADD_PARTICIPANT, id, lawyer).await;
    tx.commit().await.unwrap();
    assert_eq!(db.queue().await, vec![upsert(lawyer, id)]);
}

async fn change_log(db: &TestDb) -> Vec<(i64, Option<i64>)> {
    let mut rows: Vec<(i64, Option<i64>)> =
        sqlx::query_as("select appointment_id, user_id from livesync.changes")
            .fetch_all(&db.pool)
            .await
            .expect("read the change log");
    rows.sort();
    rows
}

/// Xpert's write pattern, an appointment and then its participants in one transaction,
/// costs one change-log row: the participant inserts are skipped, and expansion after the
/// commit finds every participant.
#[tokio::test]
async fn a_new_appointment_with_its_participants_is_logged_once() {
    let (db, lawyer, partner, secretary) = office().await;
    let appt = db
        .appointment("Verhandlung", 48, &[lawyer, partner, secretary])
        .await;
    assert_eq!(change_log(&db).await, vec![(appt, None)]);
    assert_eq!(
        db.queue().await,
        vec![upsert(lawyer, appt), upsert(partner, appt)]
    );
}

/// Only the participants of the appointment this transaction inserted last are skipped;
/// a participant added to an older appointment, or removed again, is logged per row.
#[tokio::test]
async fn participants_of_other_appointments_and_removals_are_logged_per_row() {
    let (db, lawyer, partner, secretary) = office().await;
    let old = db.appointment("Alt", 24, &[lawyer]).await;
    db.drain_queue().await;

    let mut tx = db.pool.begin().await.unwrap();
    let new: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, starts_at, ends_at) \
         values ('Neu', now() + interval '2 days', now() + interval '2 days 1 hour') returning id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    for (appt, user) in [
        (new, lawyer),
        (new, partner),
        (old, partner),
        (new, secretary),
    ] {
        exec(&mut *tx, ADD_PARTICIPANT, appt, user).await;
    }
    // The partner is taken off the new appointment again before the commit.
    exec(&mut *tx, REMOVE_PARTICIPANT, new, partner).await;
    tx.commit().await.unwrap();

    let mut expected = vec![(new, None), (new, Some(partner)), (old, Some(partner))];
    expected.sort();
    assert_eq!(change_log(&db).await, expected);
    assert_eq!(
        db.queue().await,
        vec![
            upsert(lawyer, new),
            upsert(partner, old),
            delete(partner, new)
        ]
    );
}

/// The note "this appointment is logged" is undone with the log row: an appointment
/// inserted in a savepoint that is rolled back leaves neither, and a second appointment
/// of the same transaction is logged on its own.
#[tokio::test]
async fn a_rolled_back_savepoint_takes_the_appointments_row_with_it() {
    let (db, lawyer, partner, secretary) = office().await;
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::raw_sql("savepoint s")
        .execute(&mut *tx)
        .await
        .unwrap();
    let gone: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, starts_at, ends_at) \
         values ('Verworfen', now(), now() + interval '1 hour') returning id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::raw_sql("rollback to savepoint s")
        .execute(&mut *tx)
        .await
        .unwrap();
    let noted: Option<String> =
        sqlx::query_scalar("select current_setting('livesync.new_appointment', true)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_ne!(
        noted,
        Some(gone.to_string()),
        "the note went with the savepoint"
    );
    let kept: i64 = sqlx::query_scalar(
        "insert into xpert.appointments (subject, starts_at, ends_at) \
         values ('Behalten', now(), now() + interval '1 hour') returning id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    for user in [lawyer, partner] {
        exec(&mut *tx, ADD_PARTICIPANT, kept, user).await;
    }
    tx.commit().await.unwrap();
    assert_eq!(change_log(&db).await, vec![(kept, None)]);
    assert_eq!(
        db.queue().await,
        vec![upsert(lawyer, kept), upsert(partner, kept)]
    );
    // The note ends with the transaction: a participant added later is logged again.
    db.drain_queue().await;
    exec(&db.pool, ADD_PARTICIPANT, kept, secretary).await;
    assert_eq!(change_log(&db).await, vec![(kept, Some(secretary))]);
}
