//! Garbage configuration: `livesync-worker check` and `run` and `livesync-admin` (the real
//! binaries) refuse it with a message naming the variable or setting and the value given
//! (never a secret), exit non-zero, and leave the queue as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::helpers::TestDb;
use crate::secrets::{admin_bin, binaries, files_below, run, worker_bin};

/// A password inside a bad `DATABASE_URL`: shown nowhere.
const DB_SECRET: &str = "Geheim-Db-77";

/// A firm in push mode with one lawyer and two queued appointments.
async fn firm_with_a_queue() -> TestDb {
    let db = TestDb::migrated().await;
    db.enable_globally("push").await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, true).await;
    db.appointment("Tagsatzung", 24, &[lawyer]).await;
    db.appointment("Besprechung", 48, &[lawyer]).await;
    assert_eq!(db.queue().await.len(), 2);
    db
}

/// What the worker must leave alone: the queue in full, and nothing delivered, dead-lettered
/// or registered.
async fn untouched(db: &TestDb) -> String {
    let (delivered, dead, workers): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from livesync.delivered), \
                (select count(*) from livesync.dead_letters), \
                (select count(*) from livesync.workers)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    format!(
        "{:?} delivered={delivered} dead={dead} workers={workers}",
        db.queue_entries().await
    )
}

/// A directory no file can be written into: a read-only one, or for root (whom
/// permissions do not stop) `/sys`.
fn unwritable_dir(cwd: &Path) -> PathBuf {
    let dir = cwd.join("schreibgeschuetzt");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(dir.join("probe"), b"x").is_err() {
        return dir;
    }
    std::fs::remove_file(dir.join("probe")).unwrap();
    let sys = PathBuf::from("/sys");
    assert!(
        std::fs::write(sys.join("livesync-probe"), b"x").is_err(),
        "this test needs a directory nobody can write into"
    );
    sys
}

/// Environment, the variable the message names, the value as the message shows it.
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[tokio::test]
async fn the_worker_refuses_garbage_naming_the_variable_and_the_value() {
    binaries().await;
    let db = firm_with_a_queue().await;
    let before = untouched(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let a_file = cwd.join("kalender");
    std::fs::write(&a_file, "kein Verzeichnis").unwrap();
    // A directory that cannot be created, whoever runs the test: its parent is a file.
    let below_a_file = a_file.join("logs").display().to_string();
    let a_file = a_file.display().to_string();
    let unwritable = unwritable_dir(cwd).display().to_string();
    let ics_dir = cwd.join("ics");

    fn caldav(url: &str) -> Vec<(&'static str, &str)> {
        vec![("LIVESYNC_SINK", "caldav"), ("LIVESYNC_CALDAV_URL", url)]
    }
    let graph = |key: &'static str, value: &'static str| {
        let mut env = vec![
            ("LIVESYNC_SINK", "graph"),
            (
                "LIVESYNC_GRAPH_TENANT_ID",
                "11111111-2222-3333-4444-555555555555",
            ),
            (
                "LIVESYNC_GRAPH_CLIENT_ID",
                "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            ),
            ("LIVESYNC_GRAPH_CLIENT_SECRET", "Geheim~Graph_Secret"),
            ("LIVESYNC_GRAPH_MAILBOX", "{username}@kanzlei.at"),
        ];
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
        env
    };
    let mysql = format!("mysql://livesync:{DB_SECRET}@dbhost/xpert");
    let bad_port = format!("postgres://livesync:{DB_SECRET}@dbhost:fuenf/xpert");
    let cases: Vec<Case> = vec![
        (
            vec![("LIVESYNC_SINK", "outlook")],
            "LIVESYNC_SINK",
            "outlook",
        ),
        (
            vec![("LIVESYNC_POLL_INTERVAL_MS", "zwei")],
            "LIVESYNC_POLL_INTERVAL_MS",
            "zwei",
        ),
        (
            vec![("LIVESYNC_CONCURRENCY", "8x")],
            "LIVESYNC_CONCURRENCY",
            "8x",
        ),
        (
            vec![("LIVESYNC_LEASE_SECS", "-5")],
            "LIVESYNC_LEASE_SECS",
            "-5",
        ),
        (
            vec![("LIVESYNC_SESSION_HOURS", "12.5")],
            "LIVESYNC_SESSION_HOURS",
            "12.5",
        ),
        (
            vec![("LIVESYNC_MAX_ATTEMPTS", "zehn")],
            "LIVESYNC_MAX_ATTEMPTS",
            "zehn",
        ),
        (
            vec![("LIVESYNC_USER_LOG_MAX_BYTES", "1MB")],
            "LIVESYNC_USER_LOG_MAX_BYTES",
            "1MB",
        ),
        (
            vec![("LIVESYNC_POLL_ONLY", "Vielleicht")],
            "LIVESYNC_POLL_ONLY",
            "Vielleicht",
        ),
        (
            vec![("LIVESYNC_HTTP_ADDR", "localhost")],
            "LIVESYNC_HTTP_ADDR",
            "localhost",
        ),
        (
            vec![("LIVESYNC_LOG_FORMAT", "xml")],
            "LIVESYNC_LOG_FORMAT",
            "xml",
        ),
        (
            caldav("dav.kanzlei.at/{username}/notarxpert/"),
            "LIVESYNC_CALDAV_URL",
            "dav.kanzlei.at/{username}/notarxpert/",
        ),
        (
            caldav("https://dav kanzlei.at/{username}/"),
            "LIVESYNC_CALDAV_URL",
            "https://dav kanzlei.at/{username}/",
        ),
        (
            caldav("https://dav.kanzlei.at:99999/{username}/"),
            "LIVESYNC_CALDAV_URL",
            "https://dav.kanzlei.at:99999/{username}/",
        ),
        (
            vec![("LIVESYNC_SINK", "caldav")],
            "LIVESYNC_CALDAV_URL",
            "required",
        ),
        (
            [
                caldav("https://dav.kanzlei.at/{username}/"),
                vec![("LIVESYNC_CALDAV_MAX_CONCURRENCY", "vier")],
            ]
            .concat(),
            "LIVESYNC_CALDAV_MAX_CONCURRENCY",
            "vier",
        ),
        (
            graph("LIVESYNC_GRAPH_TENANT_ID", "Kanzlei Muster"),
            "LIVESYNC_GRAPH_TENANT_ID",
            "Kanzlei Muster",
        ),
        (
            graph("LIVESYNC_GRAPH_CLIENT_ID", "livesync-app"),
            "LIVESYNC_GRAPH_CLIENT_ID",
            "livesync-app",
        ),
        (
            graph("LIVESYNC_GRAPH_BASE_URL", "graph.microsoft.com/v1.0"),
            "LIVESYNC_GRAPH_BASE_URL",
            "graph.microsoft.com/v1.0",
        ),
        (
            graph(
                "LIVESYNC_GRAPH_LOGIN_URL",
                "ftp://login.microsoftonline.com",
            ),
            "LIVESYNC_GRAPH_LOGIN_URL",
            "ftp://login.microsoftonline.com",
        ),
        (
            graph("LIVESYNC_GRAPH_MAILBOX", "{username} bei kanzlei.at"),
            "LIVESYNC_GRAPH_MAILBOX",
            "{username} bei kanzlei.at",
        ),
        (
            vec![("DATABASE_URL", &mysql)],
            "DATABASE_URL",
            "mysql://livesync:***@dbhost/xpert",
        ),
        (
            vec![("DATABASE_URL", &bad_port)],
            "DATABASE_URL",
            "postgres://livesync:***@dbhost:fuenf/xpert",
        ),
        (
            vec![("LIVESYNC_ICS_DIR", &a_file)],
            "LIVESYNC_ICS_DIR",
            &a_file,
        ),
        (
            vec![("LIVESYNC_ICS_DIR", &unwritable)],
            "LIVESYNC_ICS_DIR",
            &unwritable,
        ),
        (
            vec![("LIVESYNC_LOG_DIR", &a_file)],
            "LIVESYNC_LOG_DIR",
            &a_file,
        ),
        (
            vec![("LIVESYNC_LOG_DIR", &unwritable)],
            "LIVESYNC_LOG_DIR",
            &unwritable,
        ),
        (
            vec![("LIVESYNC_LOG_DIR", &below_a_file)],
            "LIVESYNC_LOG_DIR",
            &below_a_file,
        ),
    ];

    let mut failures = Vec::new();
    for (extra, variable, shown) in &cases {
        let mut env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", db.url.clone()),
            ("LIVESYNC_ICS_DIR", ics_dir.display().to_string()),
            ("LIVESYNC_LOG_DIR", cwd.join("logs").display().to_string()),
        ];
        for (k, v) in extra {
            env.retain(|(existing, _)| existing != k);
            env.push((k, v.to_string()));
        }
        for args in [&["check"][..], &["check", "--json"], &["run"]] {
            let ran = run(&worker_bin(), args, &env, cwd).await;
            let all = ran.all();
            let named = all.contains(variable) && all.contains(shown);
            if !ran.failed()
                || !named
                || all.contains(DB_SECRET)
                || all.contains("Geheim~Graph_Secret")
                || all.contains("panicked")
            {
                failures.push(format!(
                    "{extra:?} {args:?}: exit {:?}, expected {variable} and {shown:?}:\n{all}",
                    ran.code
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(untouched(&db).await, before, "the queue is as it was");
    assert!(files_below(&ics_dir).is_empty(), "no calendar was written");

    // An unusable log directory: the message also says what to do.
    let env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("LIVESYNC_ICS_DIR", ics_dir.display().to_string()),
        ("LIVESYNC_LOG_DIR", below_a_file.clone()),
    ];
    let ran = run(&worker_bin(), &["run"], &env, cwd).await;
    assert!(
        ran.failed() && ran.all().contains("point LIVESYNC_LOG_DIR elsewhere"),
        "{ran:?}"
    );
}

/// `livesync-admin --json settings show`.
async fn settings(env: &[(&str, String)], cwd: &Path) -> String {
    let ran = run(&admin_bin(), &["--json", "settings", "show"], env, cwd).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    ran.stdout
}

#[tokio::test]
async fn livesync_admin_refuses_garbage_naming_the_setting_and_the_value() {
    binaries().await;
    let db = firm_with_a_queue().await;
    let before = untouched(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let env = vec![("DATABASE_URL", db.url.clone())];
    let settings_before = settings(&env, cwd).await;

    // (arguments, exit code, what the message names)
    let cases: &[(&[&str], i32, &[&str])] = &[
        (
            &["settings", "set", "delivery_mode", "fast"],
            2,
            &["delivery_mode", "fast"],
        ),
        (
            &["settings", "set", "time_zone", "Mars/Olympus"],
            2,
            &["Mars/Olympus"],
        ),
        (&["settings", "set", "colour", "blue"], 2, &["colour"]),
        (
            &["settings", "set", "live_sync_enabled", "vielleicht"],
            2,
            &["live_sync_enabled", "vielleicht"],
        ),
        (
            &["backfill", "mmuster", "--from", "31.01.2026"],
            2,
            &["--from", "31.01.2026"],
        ),
        (&["user", "enable", "niemand"], 2, &["niemand"]),
        (&["dead-letters", "requeue", "elf"], 2, &["elf"]),
    ];
    let mut failures = Vec::new();
    for (args, code, needles) in cases {
        for json in [false, true] {
            let mut all_args = if json { vec!["--json"] } else { vec![] };
            all_args.extend_from_slice(args);
            let ran = run(&admin_bin(), &all_args, &env, cwd).await;
            let all = ran.all();
            if ran.code != Some(*code) || !needles.iter().all(|n| all.contains(n)) {
                failures.push(format!(
                    "{all_args:?}: exit {:?}, expected {code} naming {needles:?}:\n{all}",
                    ran.code
                ));
            }
            // Where the command itself refused, --json says so in one document.
            if json && ran.code == Some(*code) && !ran.stdout.is_empty() {
                let v: serde_json::Value = serde_json::from_str(&ran.stdout)
                    .unwrap_or_else(|e| panic!("{all_args:?}: {e}: {}", ran.stdout));
                assert_eq!(v["exit_code"], *code, "{v}");
            }
        }
    }

    // A malformed DATABASE_URL: named, its password not shown.
    for url in [
        format!("postgres://livesync:{DB_SECRET}@dbhost:fuenf/xpert"),
        format!("postgres://livesync:{DB_SECRET}@127.0.0.1/xpert?sslmode=sometimes"),
    ] {
        for args in [&["users"][..], &["--json", "settings", "show"], &["doctor"]] {
            let ran = run(&admin_bin(), args, &[("DATABASE_URL", url.clone())], cwd).await;
            let all = ran.all();
            if !ran.failed() || !all.contains("DATABASE_URL") || all.contains(DB_SECRET) {
                failures.push(format!(
                    "DATABASE_URL={url} {args:?}: exit {:?}, expected it named without its \
                     password:\n{all}",
                    ran.code
                ));
            }
        }
    }
    // Another database's URL: refused by its scheme, its password not shown.
    let mysql = format!("mysql://livesync:{DB_SECRET}@dbhost/xpert");
    for args in [&["users"][..], &["--json", "settings", "show"], &["doctor"]] {
        let ran = run(&admin_bin(), args, &[("DATABASE_URL", mysql.clone())], cwd).await;
        let all = ran.all();
        if !ran.failed()
            || !all.contains("DATABASE_URL")
            || !all.contains("mysql://")
            || all.contains(DB_SECRET)
        {
            failures.push(format!(
                "DATABASE_URL={mysql} {args:?}: exit {:?}, expected a refusal naming the \
                 variable and the scheme without the password:\n{all}",
                ran.code
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The database itself refuses an unknown delivery mode, so no worker ever meets one.
    let refused = sqlx::query("update livesync.settings set delivery_mode = 'fast'")
        .execute(&db.pool)
        .await
        .expect_err("the check constraint refuses it");
    assert!(
        matches!(&refused, sqlx::Error::Database(e) if e.code().as_deref() == Some("23514")),
        "{refused}"
    );
    assert_eq!(
        settings(&env, cwd).await,
        settings_before,
        "no setting changed"
    );
    assert_eq!(untouched(&db).await, before, "the queue is as it was");
}
