//! The post-update first-login migration (issue 4), against a real PostgreSQL.
//!
//! "Existing users" exist before `migrate` runs, so these tests create them on a baseline
//! database and migrate afterwards.
use std::time::Duration;

use livesync_admin::cli::Exit;
use livesync_core::first_login::{Decision, NOTICE_TEXT, apply_for_login};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

use crate::admin_cli::admin;
use crate::helpers::{TestDb, eventually};

/// A database whose users `names` existed when livesync was installed; switched on and
/// licensed in live mode.
async fn installed_with(names: &[&str]) -> (TestDb, Vec<i64>) {
    let db = TestDb::baseline().await;
    let mut ids = Vec::new();
    for name in names {
        ids.push(db.user(name).await);
    }
    db.migrate().await;
    db.enable_globally("live").await;
    (db, ids)
}

async fn enabled(db: &TestDb, user_id: i64) -> bool {
    sqlx::query_scalar("select live_sync_enabled from livesync.user_status where user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn notices(db: &TestDb, user_id: i64) -> i64 {
    sqlx::query_scalar("select count(*) from livesync.notices where user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn pending_notice(db: &TestDb, user_id: i64) -> Option<String> {
    sqlx::query_scalar("select pending_notice from livesync.user_status where user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn state(db: &TestDb, user_id: i64) -> String {
    sqlx::query_scalar("select state from livesync.first_login where user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn existing_matching_user_is_enabled_and_notified_once_at_first_login() {
    let (db, ids) = installed_with(&["mmuster"]).await;
    let lawyer = ids[0];
    let appt = db.appointment("Verhandlung", 24, &[lawyer]).await;
    assert!(
        db.queue().await.is_empty(),
        "not enabled before the first login"
    );

    let first = db.login(lawyer, "KANZLEI\\MMuster").await;
    assert_eq!(
        apply_for_login(&db.pool, first).await.unwrap(),
        Decision::Enabled
    );
    assert!(enabled(&db, lawyer).await);
    assert_eq!(
        db.queue().await,
        vec![(lawyer, appt, "upsert".to_string())],
        "enabling queued the calendar from today"
    );
    assert_eq!(notices(&db, lawyer).await, 1);
    assert_eq!(
        pending_notice(&db, lawyer).await.as_deref(),
        Some(NOTICE_TEXT)
    );
    // A re-run of the same login (crash before the worker marked it processed).
    assert_eq!(
        apply_for_login(&db.pool, first).await.unwrap(),
        Decision::AlreadyDecided
    );

    let second = db.login(lawyer, " mmuster@kanzlei.at ").await;
    assert_eq!(
        apply_for_login(&db.pool, second).await.unwrap(),
        Decision::AlreadyDecided
    );
    assert_eq!(notices(&db, lawyer).await, 1, "no second notice");

    let marked: i32 = sqlx::query_scalar("select livesync.notice_shown($1)")
        .bind(lawyer)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(marked, 1);
    assert_eq!(pending_notice(&db, lawyer).await, None);

    let third = db.login(lawyer, "mmuster").await;
    apply_for_login(&db.pool, third).await.unwrap();
    assert_eq!(pending_notice(&db, lawyer).await, None, "never returns");
    assert_eq!(notices(&db, lawyer).await, 1);
}

#[tokio::test]
async fn secretary_whose_names_differ_gets_nothing_and_no_warning() {
    let (db, ids) = installed_with(&["mmuster"]).await;
    let lawyer = ids[0];
    // The secretary starts Xpert as the lawyer under her own Windows account.
    let login = db.login(lawyer, "KANZLEI\\ssekretaer").await;
    assert_eq!(
        apply_for_login(&db.pool, login).await.unwrap(),
        Decision::NamesDiffer
    );
    assert!(!enabled(&db, lawyer).await);
    assert_eq!(notices(&db, lawyer).await, 0);
    let (warn, pending): (bool, Option<String>) = sqlx::query_as(
        "select warn_inactive, pending_notice from livesync.user_status where user_id = $1",
    )
    .bind(lawyer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!warn, "no \"live sync is not active\" warning");
    assert_eq!(pending, None);
    assert_eq!(state(&db, lawyer).await, "names_differ");

    // The decision is made once: a later matching login does not switch anything on.
    let later = db.login(lawyer, "mmuster").await;
    assert_eq!(
        apply_for_login(&db.pool, later).await.unwrap(),
        Decision::AlreadyDecided
    );
    assert!(!enabled(&db, lawyer).await);
}

#[tokio::test]
async fn user_created_after_the_update_is_never_enabled_automatically() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let newcomer = db.user("nneu").await;
    let login = db.login(newcomer, "KANZLEI\\nneu").await;
    assert_eq!(
        apply_for_login(&db.pool, login).await.unwrap(),
        Decision::NotExistingUser
    );
    assert!(!enabled(&db, newcomer).await);
    assert_eq!(notices(&db, newcomer).await, 0);
}

#[tokio::test]
async fn concurrent_first_logins_of_one_user_create_one_notice() {
    let (db, ids) = installed_with(&["mmuster"]).await;
    let lawyer = ids[0];
    let a = db.login(lawyer, "mmuster").await;
    let b = db.login(lawyer, "KANZLEI\\mmuster").await;
    // A second pool stands for a second worker process.
    let other = PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .unwrap();
    let (r1, r2, r3, r4) = tokio::join!(
        apply_for_login(&db.pool, a),
        apply_for_login(&other, a),
        apply_for_login(&db.pool, b),
        apply_for_login(&other, b),
    );
    let decisions = [r1.unwrap(), r2.unwrap(), r3.unwrap(), r4.unwrap()];
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == Decision::Enabled)
            .count(),
        1,
        "{decisions:?}"
    );
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == Decision::AlreadyDecided)
            .count(),
        3
    );
    assert_eq!(notices(&db, lawyer).await, 1);
    assert!(enabled(&db, lawyer).await);
    other.close().await;
}

#[tokio::test]
async fn the_first_login_after_the_update_decides_even_when_applied_out_of_order() {
    let (db, ids) = installed_with(&["mmuster"]).await;
    let lawyer = ids[0];
    let secretary_first = db.login(lawyer, "ssekretaer").await;
    let lawyer_later = db.login(lawyer, "mmuster").await;
    assert_eq!(
        apply_for_login(&db.pool, lawyer_later).await.unwrap(),
        Decision::NamesDiffer
    );
    let decided_by: Option<i64> =
        sqlx::query_scalar("select login_id from livesync.first_login where user_id = $1")
            .bind(lawyer)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(decided_by, Some(secretary_first));
    assert!(!enabled(&db, lawyer).await);
}

#[tokio::test]
async fn a_user_the_admin_disabled_stays_disabled_after_later_logins() {
    let (db, ids) = installed_with(&["mmuster", "hhuber"]).await;
    let (lawyer, partner) = (ids[0], ids[1]);

    // Enabled by the first login, then switched off by the admin.
    let first = db.login(lawyer, "mmuster").await;
    assert_eq!(
        apply_for_login(&db.pool, first).await.unwrap(),
        Decision::Enabled
    );
    let (exit, _) = admin(&db, &["user", "disable", "mmuster"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    for name in ["mmuster", "KANZLEI\\MMUSTER"] {
        let login = db.login(lawyer, name).await;
        assert_eq!(
            apply_for_login(&db.pool, login).await.unwrap(),
            Decision::AlreadyDecided
        );
    }
    assert!(!enabled(&db, lawyer).await);
    assert_eq!(notices(&db, lawyer).await, 1);

    // Switched off by the admin before their first login: the login does not override it.
    let (exit, _) = admin(&db, &["user", "disable", "hhuber"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert_eq!(state(&db, partner).await, "admin");
    let login = db.login(partner, "hhuber").await;
    assert_eq!(
        apply_for_login(&db.pool, login).await.unwrap(),
        Decision::AlreadyDecided
    );
    assert!(!enabled(&db, partner).await);
    assert_eq!(notices(&db, partner).await, 0);
}

#[tokio::test]
async fn enabling_at_first_login_keeps_the_log_file_setting() {
    let (db, ids) = installed_with(&["mmuster"]).await;
    let lawyer = ids[0];
    // Xpert's own settings page wrote a row (log file on, sync off) before the login.
    sqlx::query(
        "insert into livesync.user_settings (user_id, live_sync_enabled, keep_logfile) \
         values ($1, false, true)",
    )
    .bind(lawyer)
    .execute(&db.pool)
    .await
    .unwrap();
    let login = db.login(lawyer, "mmuster").await;
    assert_eq!(
        apply_for_login(&db.pool, login).await.unwrap(),
        Decision::Enabled
    );
    let (on, logfile) = db.user_switches(lawyer).await;
    assert!(on && logfile);
}

#[tokio::test]
async fn report_and_run_decide_every_pending_user_with_a_known_login() {
    let db = TestDb::baseline().await;
    let lawyer = db.user("mmuster").await;
    let partner = db.user("hhuber").await;
    db.user("kkeinlogin").await;
    // Logins from before the update: the most recent one is what `run` applies.
    db.login(lawyer, "ssekretaer").await;
    db.login(lawyer, "KANZLEI\\mmuster").await;
    db.login(partner, "ssekretaer").await;
    db.migrate().await;
    db.enable_globally("live").await;
    db.user("nneu").await;

    let states = |v: &Value| -> Vec<(String, String)> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["username"].as_str().unwrap().to_string(),
                    u["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (exit, out) = admin(&db, &["--json", "first-login", "report"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        states(&report),
        vec![
            ("hhuber".into(), "pending".into()),
            ("kkeinlogin".into(), "pending".into()),
            ("mmuster".into(), "pending".into()),
            ("nneu".into(), "not_existing_user".into()),
        ]
    );
    assert_eq!(report["summary"]["pending"], 3);

    let (exit, out) = admin(&db, &["first-login", "run", "--json"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    let run: Value = serde_json::from_str(&out).unwrap();
    let decisions: Vec<(String, Value)> = run
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["username"].as_str().unwrap().to_string(),
                r["decision"].clone(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("mmuster".into(), Value::from("Enabled")),
            ("hhuber".into(), Value::from("NamesDiffer")),
            ("kkeinlogin".into(), Value::Null),
        ]
    );
    assert!(enabled(&db, lawyer).await);
    assert!(!enabled(&db, partner).await);
    assert_eq!(notices(&db, lawyer).await, 1);

    let (_, out) = admin(&db, &["--json", "first-login", "report"]).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        states(&report),
        vec![
            ("hhuber".into(), "names_differ".into()),
            ("kkeinlogin".into(), "pending".into()),
            ("mmuster".into(), "enabled".into()),
            ("nneu".into(), "not_existing_user".into()),
        ]
    );

    // A second run only looks at who is still pending, and changes nothing.
    let (exit, out) = admin(&db, &["first-login", "run"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("kkeinlogin"), "{out}");
    assert!(!out.contains("mmuster"), "{out}");
    assert_eq!(notices(&db, lawyer).await, 1);
    let (exit, out) = admin(&db, &["first-login", "report"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(
        out.contains("names differ") && out.contains("not an existing user"),
        "{out}"
    );
}

#[tokio::test]
async fn a_decision_interrupted_by_a_crash_is_made_by_the_next_attempt() {
    let (db, ids) = installed_with(&["mmuster"]).await;
    let lawyer = ids[0];
    let login = db.login(lawyer, "mmuster").await;

    // A worker decided inside its transaction, then died before committing.
    let mut crashed = db.pool.begin().await.unwrap();
    sqlx::query(
        "update livesync.first_login set state = 'enabled', login_id = $2, decided_at = now() \
         where user_id = $1 and state = 'pending'",
    )
    .bind(lawyer)
    .bind(login)
    .execute(&mut *crashed)
    .await
    .unwrap();
    sqlx::query("insert into livesync.notices (user_id, kind, message) values ($1, 'live_sync_enabled', 'x')")
        .bind(lawyer)
        .execute(&mut *crashed)
        .await
        .unwrap();

    // Another worker takes the same login meanwhile: it waits for the first one's outcome.
    let pool = db.pool.clone();
    let next = tokio::spawn(async move { apply_for_login(&pool, login).await });
    let probe = db.pool.clone();
    eventually(
        Duration::from_secs(10),
        "the second attempt waits on the row lock",
        || {
            let probe = probe.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "select count(*) from pg_stat_activity \
                  where datname = current_database() and wait_event_type = 'Lock'",
                )
                .fetch_one(&probe)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    assert!(!next.is_finished());
    crashed.rollback().await.unwrap();

    assert_eq!(next.await.unwrap().unwrap(), Decision::Enabled);
    assert_eq!(notices(&db, lawyer).await, 1);
    assert_eq!(
        pending_notice(&db, lawyer).await.as_deref(),
        Some(NOTICE_TEXT)
    );
    assert!(enabled(&db, lawyer).await);
}
