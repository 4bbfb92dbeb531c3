//! `livesync-admin`: every command's success and error paths, run in-process through
//! `livesync_admin::cli::run` against a real PostgreSQL, `--json` output parsed back.
use std::path::Path;

use livesync_admin::cli::{self, CliError, Exit};
use serde_json::Value;

use crate::helpers::TestDb;

/// Run `livesync-admin --database-url <db> ARGS…`; the result and what it printed.
pub async fn admin(db: &TestDb, args: &[&str]) -> (Result<Exit, CliError>, String) {
    admin_at(&db.url, args).await
}

pub async fn admin_at(url: &str, args: &[&str]) -> (Result<Exit, CliError>, String) {
    let mut argv = vec!["livesync-admin", "--database-url", url];
    argv.extend_from_slice(args);
    let parsed = cli::parse(argv).expect("arguments parse");
    let mut out = Vec::new();
    let result = cli::run(parsed, &mut out).await;
    (result, String::from_utf8(out).expect("utf-8 output"))
}

/// Run a command that must succeed with `--json`; its output parsed.
pub async fn admin_json(db: &TestDb, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (result, out) = admin(db, &all).await;
    match result {
        Ok(Exit::Ok) => serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
        other => panic!("{args:?} ended {other:?}: {out}"),
    }
}

fn expect_err(result: Result<Exit, CliError>, code: u8, needle: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.exit_code(), code, "{e}");
            assert!(
                e.to_string().contains(needle),
                "\"{e}\" should mention {needle}"
            );
        }
        Ok(exit) => panic!("expected an error mentioning {needle}, got {exit:?}"),
    }
}

#[tokio::test]
async fn migrate_dry_run_status_and_apply() {
    let db = TestDb::baseline().await;
    let dry = admin_json(&db, &["migrate", "--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert!(!dry["applied"].as_array().unwrap().is_empty());

    let (exit, out) = admin(&db, &["migrate", "status"]).await;
    assert_eq!(exit.unwrap(), Exit::Problems, "pending migrations: {out}");
    assert!(out.contains("pending"), "{out}");

    let applied = admin_json(&db, &["migrate"]).await;
    assert_eq!(
        applied["version"].as_i64().unwrap(),
        i64::from(livesync_core::migrate::binary_version())
    );
    let status = admin_json(&db, &["migrate", "status"]).await;
    assert_eq!(status["current"], true);
    let (exit, out) = admin(&db, &["migrate"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("nothing to do"), "{out}");
}

#[tokio::test]
async fn commands_on_a_database_without_livesync_say_to_migrate() {
    let db = TestDb::baseline().await;
    for args in [
        &["users"][..],
        &["settings", "show"],
        &["queue"],
        &["first-login", "report"],
    ] {
        let (result, _) = admin(&db, args).await;
        expect_err(result, 1, "livesync-admin migrate");
    }
    let (exit, out) = admin(&db, &["doctor"]).await;
    assert_eq!(exit.unwrap(), Exit::Problems);
    assert!(out.contains("not installed"), "{out}");
}

#[tokio::test]
async fn an_older_or_newer_schema_is_refused_with_what_to_do() {
    let db = TestDb::migrated().await;
    let latest = livesync_core::migrate::binary_version();
    sqlx::query("delete from livesync.refinery_schema_history where version = $1")
        .bind(latest)
        .execute(&db.pool)
        .await
        .unwrap();
    let (result, _) = admin(&db, &["users"]).await;
    expect_err(result, 1, "run `livesync-admin migrate`");
    db.record_migration(latest + 1, "from_the_future").await;
    let (result, _) = admin(&db, &["queue"]).await;
    expect_err(result, 1, "newer release");
    let (exit, out) = admin(&db, &["doctor"]).await;
    assert_eq!(exit.unwrap(), Exit::Problems);
    assert!(out.contains("newer than this release"), "{out}");
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_a_stack_trace() {
    let url = "postgres://postgres@127.0.0.1:1/xpert";
    for args in [&["users"][..], &["migrate", "status"], &["doctor"]] {
        let (result, out) = admin_at(url, args).await;
        expect_err(result, 1, "database unreachable (127.0.0.1:1/xpert)");
        assert!(out.is_empty());
    }
}

#[tokio::test]
async fn settings_show_and_set_validate_refuse_and_recommend() {
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    db.appointment("morgen", 24, &[lawyer]).await;
    let shown = admin_json(&db, &["settings", "show"]).await;
    assert_eq!(shown["settings"]["delivery_mode"], "live");
    assert_eq!(shown["settings"]["live_sync_enabled"], false);

    let (result, _) = admin(&db, &["settings", "set", "live_sync_enabled", "true"]).await;
    expect_err(result, 1, "licence");
    let licensed = admin_json(&db, &["settings", "set", "cti_sync_licensed", "true"]).await;
    assert_eq!(licensed["settings"]["cti_sync_licensed"], true);
    let on = admin_json(&db, &["settings", "set", "live_sync_enabled", "on"]).await;
    assert_eq!(on["settings"]["live_sync_enabled"], true);
    assert_eq!(
        on["queue"]["queued"], 1,
        "the enabled user's calendar: {on}"
    );

    let (exit, out) = admin(&db, &["settings", "set", "exchange_server", "true"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(
        out.contains("recommendation") && out.contains("push"),
        "{out}"
    );
    let push = admin_json(&db, &["settings", "set", "delivery_mode", "push"]).await;
    assert_eq!(push["settings"]["delivery_mode"], "push");
    assert_eq!(push["recommendations"], Value::Array(vec![]));

    let tz = admin_json(&db, &["settings", "set", "time_zone", "Europe/Berlin"]).await;
    assert_eq!(tz["settings"]["time_zone"], "Europe/Berlin");
    let (result, _) = admin(&db, &["settings", "set", "time_zone", "Mars/Olympus"]).await;
    expect_err(result, 2, "Mars/Olympus");
    let (result, _) = admin(&db, &["settings", "set", "delivery_mode", "fast"]).await;
    expect_err(result, 2, "delivery_mode");
    let (result, _) = admin(&db, &["settings", "set", "colour", "blue"]).await;
    expect_err(result, 2, "unknown setting \"colour\"");
    let (result, _) = admin(&db, &["settings", "set", "exchange_server", "maybe"]).await;
    expect_err(result, 2, "true or false");

    let (exit, out) = admin(&db, &["settings", "set", "cti_sync_licensed", "false"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("1 queued entries dropped"), "{out}");
}

#[tokio::test]
async fn users_lists_one_line_per_user() {
    let db = TestDb::baseline().await;
    let lawyer = db.user("mmuster").await;
    db.migrate().await;
    db.enable_globally("live").await;
    db.user("nneu").await;
    db.enable_user(lawyer, true).await;
    db.appointment("Verhandlung", 2, &[lawyer]).await;
    db.login(lawyer, "KANZLEI\\mmuster").await;
    let users = admin_json(&db, &["users"]).await;
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 2);
    let m = &users[0];
    assert_eq!(m["username"], "mmuster");
    assert_eq!(m["existing_user"], true);
    assert_eq!(m["names_match_at_last_login"], true);
    assert_eq!(m["enabled"], true);
    assert_eq!(m["logfile"], true);
    assert_eq!(m["queued"], 1);
    assert_eq!(m["dead_letters"], 0);
    assert_eq!(users[1]["username"], "nneu");
    assert_eq!(users[1]["existing_user"], false);
    assert_eq!(users[1]["names_match_at_last_login"], Value::Null);

    let (exit, out) = admin(&db, &["users"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.lines().next().unwrap().starts_with("user"), "{out}");
    assert!(out.contains("mmuster") && out.contains("nneu"), "{out}");
}

#[tokio::test]
async fn user_enable_queues_upcoming_appointments_and_disable_drops_them() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    db.appointment("morgen", 24, &[lawyer]).await;
    db.appointment("übermorgen", 48, &[lawyer]).await;
    db.appointment("letzte Woche", -24 * 7, &[lawyer]).await;

    // The login rule's name forms find the user too.
    let on = admin_json(&db, &["user", "enable", "KANZLEI\\MMuster", "--logfile"]).await;
    assert_eq!(on["username"], "mmuster");
    assert_eq!(on["queued"], 2, "from today on: {on}");
    assert_eq!(on["logfile"], true);
    assert_eq!(db.queue().await.len(), 2);

    let (exit, out) = admin(&db, &["user", "enable", "mmuster"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("0 entries queued"), "already enabled: {out}");

    let off = admin_json(&db, &["user", "disable", "mmuster"]).await;
    assert_eq!(off["enabled"], false);
    assert_eq!(off["dropped"], 2);
    assert_eq!(off["logfile"], true, "disable leaves the log file setting");
    assert!(db.queue().await.is_empty());

    let (exit, out) = admin(&db, &["user", "enable", "mmuster", "--no-logfile"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(
        out.contains("2 entries queued") && out.contains("log file off"),
        "{out}"
    );
}

#[tokio::test]
async fn user_enable_with_the_switch_off_says_nothing_is_queued_yet() {
    let db = TestDb::migrated().await;
    let lawyer = db.user("mmuster").await;
    db.appointment("morgen", 24, &[lawyer]).await;
    let (exit, out) = admin(&db, &["user", "enable", "mmuster"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("switched off globally"), "{out}");
}

#[tokio::test]
async fn an_unknown_user_is_exit_2_and_named() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    for args in [
        &["user", "enable", "nobody"][..],
        &["user", "disable", "nobody"],
        &["backfill", "nobody"],
        &["dead-letters", "requeue", "--user", "nobody"],
        &["dead-letters", "drop", "--user", "nobody"],
        &["dead-letters", "list", "--user", "nobody"],
    ] {
        let (result, _) = admin(&db, args).await;
        expect_err(result, 2, "unknown user \"nobody\"");
    }
}

#[tokio::test]
async fn bad_usage_is_rejected_by_the_parser() {
    for argv in [
        &["livesync-admin", "dead-letters", "requeue"][..],
        &["livesync-admin", "dead-letters", "drop", "3", "--all"],
        &["livesync-admin", "backfill"],
        &[
            "livesync-admin",
            "backfill",
            "mmuster",
            "--from",
            "31.01.2026",
        ],
        &["livesync-admin", "user", "enable"],
        &["livesync-admin", "frobnicate"],
    ] {
        let e = cli::parse(argv.iter().copied()).expect_err("a usage error");
        assert!(e.use_stderr(), "{argv:?}");
    }
}

#[tokio::test]
async fn queue_shows_depth_and_oldest_entry_per_user() {
    let (db, lawyer, partner) = TestDb::lawyer_and_partner().await;
    db.appointment("eins", 1, &[lawyer, partner]).await;
    db.appointment("zwei", 2, &[lawyer]).await;

    let queue = admin_json(&db, &["queue"]).await;
    assert_eq!(queue["total"], 3);
    let users = queue["users"].as_array().unwrap();
    let lawyer_row = users.iter().find(|u| u["username"] == "mmuster").unwrap();
    assert_eq!(lawyer_row["queued"], 2);
    assert_eq!(lawyer_row["upserts"], 2);
    assert!(lawyer_row["oldest_queued_seconds"].as_i64().unwrap() >= 0);

    let (exit, out) = admin(&db, &["queue"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("3 entries queued in total"), "{out}");

    db.drain_queue().await;
    let (_, out) = admin(&db, &["queue"]).await;
    assert!(out.contains("the queue is empty"), "{out}");
}

#[tokio::test]
async fn dead_letters_are_listed_requeued_from_the_truth_and_dropped() {
    let (db, lawyer, partner) = TestDb::lawyer_and_partner().await;
    let still_there = db.appointment("bleibt", 24, &[lawyer]).await;
    let gone = db.appointment("abgesagt", 48, &[lawyer]).await;
    let partners = db.appointment("Partner", 72, &[partner]).await;
    db.exec_for("delete from xpert.appointments where id = $1", gone)
        .await;
    db.drain_queue().await;
    let d1 = db.dead_letter(lawyer, still_there).await;
    db.dead_letter(lawyer, gone).await;
    let d3 = db.dead_letter(partner, partners).await;

    let list = admin_json(&db, &["dead-letters", "list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[0]["id"], d1);
    assert_eq!(list[0]["subject"], "bleibt");
    assert_eq!(list[0]["last_error"], "HTTP 503 from the calendar server");
    let (exit, out) = admin(&db, &["dead-letters", "list", "--user", "hhuber"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("Partner") && !out.contains("bleibt"), "{out}");

    // The partner's entry is queued already (a newer change): requeue coalesces with it.
    db.appointment("neu", 96, &[partner]).await;
    let requeued = admin_json(&db, &["dead-letters", "requeue", "--user", "mmuster"]).await;
    assert_eq!(requeued["done"], 2);
    assert_eq!(
        db.queue()
            .await
            .into_iter()
            .filter(|q| q.0 == lawyer)
            .collect::<Vec<_>>(),
        vec![
            (lawyer, still_there, "upsert".to_string()),
            (lawyer, gone, "delete".to_string()),
        ]
    );
    let requeued = admin_json(&db, &["dead-letters", "requeue", &d3.to_string()]).await;
    assert_eq!(requeued["done"], 1);
    let left: i64 = db
        .scalar("select count(*) from livesync.dead_letters")
        .await;
    assert_eq!(left, 0, "requeued entries leave the dead letters");

    let (result, _) = admin(&db, &["dead-letters", "requeue", "999999"]).await;
    expect_err(result, 2, "no dead letter with id 999999");
    let (result, _) = admin(&db, &["dead-letters", "drop", "999999"]).await;
    expect_err(result, 2, "no dead letter with id 999999");

    // A user whose sync is off keeps their dead letters on requeue (exit 1); drop removes.
    db.dead_letter(lawyer, still_there).await;
    db.exec_for(
        "update livesync.user_settings set live_sync_enabled = false where user_id = $1",
        lawyer,
    )
    .await;
    let (exit, out) = admin(&db, &["dead-letters", "requeue", "--all"]).await;
    assert_eq!(exit.unwrap(), Exit::Problems);
    assert!(out.contains("not active"), "{out}");
    let dropped = admin_json(&db, &["dead-letters", "drop", "--all"]).await;
    assert_eq!(dropped["done"], 1);
    let (_, out) = admin(&db, &["dead-letters", "list"]).await;
    assert!(out.contains("no dead letters"), "{out}");
}

#[tokio::test]
async fn backfill_requeues_from_a_date_for_one_or_all_users() {
    let (db, lawyer, partner) = TestDb::lawyer_and_partner().await;
    db.appointment("letzte Woche", -24 * 7, &[lawyer]).await;
    db.appointment("morgen", 24, &[lawyer, partner]).await;
    db.drain_queue().await;

    let one = admin_json(&db, &["backfill", "mmuster"]).await;
    assert_eq!(one["total"], 1, "from today: {one}");
    let past = admin_json(&db, &["backfill", "mmuster", "--from", "2000-01-01"]).await;
    assert_eq!(past["total"], 2);
    let all = admin_json(&db, &["backfill", "--all"]).await;
    assert_eq!(all["users"].as_array().unwrap().len(), 2);
    assert_eq!(all["total"], 2);
    assert_eq!(db.queue().await.len(), 3);

    let (exit, out) = admin(&db, &["backfill", "--all"]).await;
    assert_eq!(exit.unwrap(), Exit::Ok);
    assert!(out.contains("entries queued for 2 users"), "{out}");

    let newcomer = db.user("nneu").await;
    let _ = newcomer;
    let (result, _) = admin(&db, &["backfill", "nneu"]).await;
    expect_err(result, 1, "not enabled for nneu");
    db.exec("update livesync.settings set live_sync_enabled = false")
        .await;
    let (result, _) = admin(&db, &["backfill", "--all"]).await;
    expect_err(result, 1, "switched off globally");
}

/// A stand-in for `livesync-worker check --json`.
fn fake_worker(dir: &Path, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("livesync-worker");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

#[tokio::test]
async fn doctor_reports_what_is_wrong_and_what_to_do() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let dir = tempfile::tempdir().unwrap();
    let good = fake_worker(
        dir.path(),
        r#"echo '{"ok": true, "sink": "ics", "detail": "/var/lib/livesync/ics writable"}'"#,
    );
    let good = good.to_str().unwrap();

    let healthy = admin_json(&db, &["doctor", "--worker-bin", good]).await;
    assert_eq!(healthy["ok"], true);
    assert_eq!(check(&healthy, "migrations")["status"], "ok");
    assert_eq!(check(&healthy, "licence and switch")["status"], "ok");
    assert_eq!(check(&healthy, "sink reachable")["status"], "ok");
    assert_eq!(check(&healthy, "workers")["status"], "warning");
    assert_eq!(check(&healthy, "notification queue")["status"], "ok");

    // Problems: exchange in live mode (a warning), an enabled user who never logged in with
    // a matching name, a dead letter, an expired lease, a failing sink.
    db.exec("update livesync.settings set exchange_server = true")
        .await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    db.login(lawyer, "ssekretaer").await;
    let appt = db.appointment("eins", 1, &[lawyer]).await;
    db.dead_letter(lawyer, appt).await;
    db.exec_for(
        "insert into livesync.user_state (user_id, lease_owner, lease_token, lease_expires_at) \
         values ($1, 'dead-host', gen_random_uuid(), now() - interval '10 minutes') \
         on conflict (user_id) do update set lease_owner = excluded.lease_owner, \
           lease_token = excluded.lease_token, lease_expires_at = excluded.lease_expires_at",
        lawyer,
    )
    .await;
    let bad = fake_worker(
        dir.path(),
        r#"echo '{"ok": false, "sink": "ics", "detail": "/nope is not writable"}'; exit 1"#,
    );
    let bad = bad.to_str().unwrap();
    let (exit, out) = admin(&db, &["--json", "doctor", "--worker-bin", bad]).await;
    assert_eq!(exit.unwrap(), Exit::Problems);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(check(&report, "delivery mode")["status"], "warning");
    let inactive = check(&report, "inactive users");
    assert_eq!(inactive["status"], "problem");
    assert!(inactive["detail"].as_str().unwrap().contains("mmuster"));
    assert_eq!(check(&report, "dead letters")["status"], "problem");
    assert_eq!(check(&report, "leases")["status"], "problem");
    let sink = check(&report, "sink reachable");
    assert_eq!(sink["status"], "problem");
    assert!(sink["detail"].as_str().unwrap().contains("/nope"));

    // Human output: one screen with the fixes.
    let (exit, out) = admin(&db, &["doctor", "--worker-bin", bad]).await;
    assert_eq!(exit.unwrap(), Exit::Problems);
    assert!(
        out.contains("PROBLEM") && out.contains("dead-letters list"),
        "{out}"
    );
    assert!(out.contains("problems found"), "{out}");
}

#[tokio::test]
async fn doctor_without_a_worker_binary_says_the_sink_check_did_not_run() {
    let db = TestDb::migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-worker");
    let report = admin_json(&db, &["doctor", "--worker-bin", missing.to_str().unwrap()]).await;
    let sink = check(&report, "sink reachable");
    assert_eq!(sink["status"], "not_run");
    assert!(sink["fix"].as_str().unwrap().contains("--worker-bin"));

    let broken = fake_worker(dir.path(), "echo 'thread main panicked' >&2; exit 101");
    let report = {
        let (exit, out) = admin(
            &db,
            &["--json", "doctor", "--worker-bin", broken.to_str().unwrap()],
        )
        .await;
        assert_eq!(exit.unwrap(), Exit::Problems);
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let sink = check(&report, "sink reachable");
    assert_eq!(sink["status"], "problem");
    assert!(sink["detail"].as_str().unwrap().contains("panicked"));
}

#[tokio::test]
async fn requeue_of_several_dead_letters_for_one_appointment_queues_it_once() {
    let db = TestDb::migrated().await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let appt = db.appointment("zweimal gescheitert", 24, &[lawyer]).await;
    db.drain_queue().await;
    db.dead_letter(lawyer, appt).await;
    db.dead_letter(lawyer, appt).await;

    let requeued = admin_json(&db, &["dead-letters", "requeue", "--all"]).await;
    assert_eq!(requeued["done"], 2);
    assert_eq!(db.queue().await, vec![(lawyer, appt, "upsert".to_string())]);
    let left: i64 = db
        .scalar("select count(*) from livesync.dead_letters")
        .await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn doctor_names_a_session_idle_in_a_transaction() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let report = admin_json(&db, &["doctor", "--worker-bin", "/nonexistent"]).await;
    assert_eq!(check(&report, "old transactions")["status"], "ok");
    assert_eq!(check(&report, "change log")["status"], "ok");

    // A session that opened a transaction and went idle, holding back VACUUM.
    let mut idle = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql("set application_name = 'aktenexport'; begin; select txid_current()")
        .execute(&mut idle)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut idle)
        .await
        .unwrap();
    let report = admin_json(
        &db,
        &[
            "doctor",
            "--worker-bin",
            "/nonexistent",
            "--old-transaction-minutes",
            "0",
        ],
    )
    .await;
    let old = check(&report, "old transactions");
    assert_eq!(old["status"], "warning", "{old}");
    let detail = old["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("pid {pid}")) && detail.contains("aktenexport"),
        "{detail}"
    );
    assert!(
        old["fix"]
            .as_str()
            .unwrap()
            .contains("pg_terminate_backend")
    );
    sqlx::raw_sql("rollback").execute(&mut idle).await.unwrap();
}
