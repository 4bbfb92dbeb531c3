//! The console in a real browser: headless Chromium from Debian's packages (`chromium`),
//! driven through ChromeDriver (`chromium-driver`) with fantoccini. An admin signs in,
//! gives a person a calendar feed, sends a dead letter again (and the worker delivers it),
//! and switches a user off; every check reads the rendered page. A screenshot of each step is kept in
//! `target/<profile>/console-screenshots/` (the test prints the directory).
//!
//! Without Chromium the test is skipped with a note, except in CI (`CI=true`), where it
//! fails: `scripts/test.sh` installs both packages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::console_support::{ADMIN, Console, PASSWORD, add_admin};
use crate::helpers::{TestDb, eventually};
use crate::worker_support::{RecordingSink, RunningWorker, test_settings};

const WAIT: Duration = Duration::from_secs(20);

/// `name` on the PATH.
fn program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// Chromium and ChromeDriver, or `None` (and a note) where they are missing outside CI.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    match (program("chromium"), program("chromedriver")) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "headless Chromium is missing (chromium and chromedriver are not on the PATH): \
             scripts/test.sh installs Debian's chromium and chromium-driver"
        ),
        _ => {
            eprintln!(
                "skipped: chromium or chromedriver is missing; scripts/test.sh installs \
                 Debian's chromium and chromium-driver"
            );
            None
        }
    }
}

/// A ChromeDriver of ours, ended when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start(program: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, port };
        let status = format!("http://127.0.0.1:{port}/status");
        eventually(WAIT, "chromedriver answers", || async {
            let ready = reqwest::get(&status)
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()?;
            (ready["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go: next to the test binary's profile directory.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-… → target/<profile>/console-screenshots
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The rendered text of the first element `css` selects, blanks collapsed.
async fn text(client: &Client, css: &str) -> String {
    let text = client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} on the page: {e}"))
        .text()
        .await
        .unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Click `css` and wait until the next page has replaced this one (the old page's root
/// element is gone), so that what is read next is read from the new page.
async fn click(client: &Client, css: &str) {
    let old = client.find(Locator::Css("html")).await.unwrap();
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} on the page: {e}"))
        .click()
        .await
        .unwrap();
    eventually(WAIT, "the next page", || async {
        old.tag_name().await.is_err().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_admin_signs_in_requeues_a_dead_letter_and_switches_a_user_off_in_chromium() {
    let Some((chromium, chromedriver)) = browser_programs() else {
        return;
    };
    let started = Instant::now();
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    db.enable_globally("push").await;
    let lawyer = db.user("mmuster").await;
    let colleague = db.user("kkollegin").await;
    db.user("sekretariat").await;
    db.enable_user(lawyer, true).await;
    db.enable_user(colleague, false).await;
    db.login(lawyer, "KANZLEI\\mmuster").await;
    for (subject, hours) in [
        ("Verlassenschaft Huber: Testamentseröffnung", 3),
        ("Kaufvertrag Wohnung Wien 7", 26),
        ("Beglaubigung Hauptversammlung", 50),
    ] {
        db.appointment(subject, hours, &[lawyer]).await;
    }
    db.appointment("Kanzleibesprechung", 28, &[lawyer, colleague])
        .await;
    let refused = db
        .appointment("Tagsatzung Bezirksgericht Innere Stadt", 30, &[lawyer])
        .await;
    // The calendar refuses one appointment for good: it ends in the dead letters.
    let sink = RecordingSink::new();
    sink.reject.lock().unwrap().insert(refused);
    let dir = tempfile::tempdir().unwrap();
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    eventually(WAIT, "the refused appointment is a dead letter", || async {
        let dead: i64 = db
            .scalar("select count(*) from livesync.dead_letters")
            .await;
        (dead == 1).then_some(())
    })
    .await;
    // As a CalDAV server words it.
    db.exec(
        "update livesync.dead_letters set last_error = \
         'rejected: HTTP 403 from https://dav.kanzlei.at/mmuster/notarxpert/: calendar is read-only'; \
         update livesync.user_state set last_error = null",
    )
    .await;
    sink.reject.lock().unwrap().clear();

    let console = Console::start(&db).await;
    let driver = Driver::start(&chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
                "--window-size=1200,1000", "--lang=en-US",
            ],
            "prefs": { "intl.accept_languages": "en-US,en" },
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver");
    let shots = screenshot_dir();
    println!("console screenshots: {}", shots.display());

    // Sign in.
    client.goto(&console.url("/")).await.unwrap();
    assert_eq!(text(&client, "h1").await, "Sign in");
    screenshot(&client, &shots, "1-sign-in").await;
    client
        .find(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    client
        .find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&client, "#sign-in").await;
    assert_eq!(text(&client, "h1").await, "Overview");
    assert_eq!(text(&client, "#dead-letters").await, "1");
    assert_eq!(text(&client, "#mode").await, "push (at once)");
    assert!(text(&client, "#workers").await.contains("healthy"));
    screenshot(&client, &shots, "2-overview").await;

    // The users; the lawyer's page with the dead letter.
    click(&client, "nav a[href='/users']").await;
    assert_eq!(text(&client, "h1").await, "Users");
    let row = text(&client, &format!("#user-{lawyer}")).await;
    assert!(row.starts_with("mmuster yes yes"), "{row}");
    screenshot(&client, &shots, "3-users").await;
    click(&client, &format!("#user-{lawyer} a")).await;
    assert_eq!(text(&client, "h1").await, "mmuster");
    let dead = text(&client, "#dead-letters tbody tr").await;
    assert!(
        dead.contains("Tagsatzung Bezirksgericht Innere Stadt") && dead.contains("read-only"),
        "{dead}"
    );
    // Give the lawyer a calendar feed; its URL answers with the calendar.
    assert_eq!(text(&client, "#feed-make").await, "Make the address");
    click(&client, "#feed-make").await;
    assert_eq!(
        text(&client, "#message").await,
        "The address works from now on; an earlier one no longer does."
    );
    let feed_url = text(&client, "#feed-url").await;
    assert!(feed_url.starts_with(&console.url("/feeds/")), "{feed_url}");
    let calendar = reqwest::get(&feed_url).await.unwrap().text().await.unwrap();
    assert!(
        calendar.contains("SUMMARY:Kaufvertrag Wohnung Wien 7\r\n"),
        "{calendar}"
    );
    screenshot(&client, &shots, "4-person-with-dead-letter").await;

    // Send it again: the page says so, the dead letter is gone, the calendar gets it.
    click(&client, "#dead-letters button.requeue").await;
    assert_eq!(
        text(&client, "#message").await,
        "The entry will be delivered again."
    );
    assert_eq!(text(&client, "#no-dead-letters").await, "No dead letters.");
    screenshot(&client, &shots, "5-requeued").await;
    eventually(WAIT, "the requeued appointment is delivered", || async {
        sink.seen_for(lawyer)
            .iter()
            .any(|s| s.appointment_id == refused && s.upsert)
            .then_some(())
    })
    .await;

    // Switch the lawyer off.
    assert_eq!(text(&client, "#sync-active").await, "yes");
    click(&client, "#disable").await;
    assert_eq!(
        text(&client, "#message").await,
        "Live sync is off; what was waiting was dropped."
    );
    assert_eq!(text(&client, "#sync-active").await, "no");
    assert_eq!(text(&client, "#enabled").await, "off");
    assert!(client.find(Locator::Css("#enable")).await.is_ok());
    screenshot(&client, &shots, "6-switched-off").await;
    let on: bool = sqlx::query_scalar(
        "select live_sync_enabled from livesync.user_settings where user_id = $1",
    )
    .bind(lawyer)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!on);
    click(&client, "nav a[href='/users']").await;
    let row = text(&client, &format!("#user-{lawyer}")).await;
    assert!(row.starts_with("mmuster no"), "{row}");

    client.close().await.unwrap();
    worker.stop().await;
    println!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}
