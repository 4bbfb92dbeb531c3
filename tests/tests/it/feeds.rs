//! Calendar feeds (`/feeds/<secret>.ics`): what a person's feed holds (the same events, byte
//! for byte, as the calendar the `ics` sink wrote from the same truth), ETag and 304, the
//! refresh hints, the same 404 for a guessed, a replaced and an inactive person's secret,
//! and `livesync-admin feed url|rotate`.

use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use livesync_worker::config::ConsoleSettings;
use livesync_worker::ical::split_events;
use livesync_worker::sink::ics::IcsSink;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;

use crate::admin_cli::{admin, admin_json};
use crate::console_support::{Browser, Console};
use crate::helpers::{TestDb, eventually};
use crate::worker_support::{RunningWorker, test_settings};

async fn secret(db: &TestDb, user_id: i64) -> String {
    livesync_core::feeds::secret_for(&db.pool, user_id)
        .await
        .expect("a feed secret")
}

fn feed_path(secret: &str) -> String {
    format!("/feeds/{secret}.ics")
}

/// (UID, SUMMARY, SEQUENCE) of each event, read with the independent `ical` parser.
fn events(text: &str) -> Vec<(String, String, String)> {
    let mut parser = ical::IcalParser::new(BufReader::new(text.as_bytes()));
    let calendar = parser.next().expect("one calendar").expect("it parses");
    let value = |props: &[ical::property::Property], name: &str| {
        props
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.value.clone())
            .unwrap_or_default()
    };
    calendar
        .events
        .iter()
        .map(|e| {
            (
                value(&e.properties, "UID"),
                value(&e.properties, "SUMMARY"),
                value(&e.properties, "SEQUENCE"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_feed_holds_the_persons_calendar_and_answers_304_while_it_is_unchanged() {
    let db = TestDb::migrated().await;
    db.enable_globally("push").await;
    let lawyer = db.user("mmuster").await;
    let colleague = db.user("kkollegin").await;
    db.enable_user(lawyer, false).await;
    let tomorrow = db.appointment("Verhandlung", 24, &[lawyer]).await;
    let hers = db.appointment("Ihr Termin", 30, &[colleague]).await;
    let last_week = db.appointment("Vorige Woche", -24 * 7, &[lawyer]).await;
    let given = db.appointment("Schon zugestellt", -24 * 6, &[lawyer]).await;
    // The calendar was given the older one (with SEQUENCE 3), not the one before.
    db.delivered(lawyer, given, 3).await;
    let secret = secret(&db, lawyer).await;
    let console = Console::start(&db).await;
    let mut client = Browser::new();

    let answer = client.get(&console.url(&feed_path(&secret))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("text/calendar; charset=utf-8")
    );
    assert_eq!(answer.header("cache-control"), Some("private, no-cache"));
    let uid = |id: i64| format!("xpert-termin-{id}@livesync");
    assert_eq!(
        events(&answer.body),
        vec![
            (uid(tomorrow), "Verhandlung".into(), "0".into()),
            (uid(given), "Schon zugestellt".into(), "3".into()),
        ]
    );
    assert!(!answer.body.contains(&uid(hers)) && !answer.body.contains(&uid(last_week)));
    assert!(
        answer
            .body
            .contains("\r\nREFRESH-INTERVAL;VALUE=DURATION:PT15M\r\n")
    );
    assert!(answer.body.contains("\r\nX-PUBLISHED-TTL:PT15M\r\n"));

    // Unchanged: 304 with the same ETag and no body; a weak or listed tag matches too.
    let etag = answer.header("etag").expect("an ETag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    for sent in [etag.clone(), format!("\"x\", W/{etag}"), "*".to_string()] {
        let again = client
            .get_with(&console.url(&feed_path(&secret)), "if-none-match", &sent)
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{sent}");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        assert!(again.body.is_empty());
    }
    // Changed in Xpert: the next fetch has it, under a new ETag.
    db.exec("update xpert.appointments set subject = 'Verhandlung verlegt' where subject = 'Verhandlung'")
        .await;
    let changed = client
        .get_with(&console.url(&feed_path(&secret)), "if-none-match", &etag)
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert!(changed.body.contains("SUMMARY:Verhandlung verlegt\r\n"));
    // HEAD answers like GET without the body.
    let head = reqwest::Client::new()
        .head(console.url(&feed_path(&secret)))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers().get("etag").and_then(|v| v.to_str().ok()),
        changed.header("etag")
    );
}

#[tokio::test]
async fn a_feed_shows_what_the_ics_sink_wrote_from_the_same_truth() {
    let db = TestDb::migrated().await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(IcsSink::new(dir.path().join("ics")));
    let worker = RunningWorker::start(&db, test_settings(&db, dir.path()), sink.clone());
    let kept = db.appointment("Tagsatzung", 2, &[lawyer]).await;
    let changed = db.appointment("Besprechung", 26, &[lawyer]).await;
    let deleted = db.appointment("Abgesagt", 50, &[lawyer]).await;
    let all_day = db.appointment("Urlaub", 72, &[lawyer]).await;
    sqlx::query("update xpert.appointments set all_day = true where id = $1")
        .bind(all_day)
        .execute(&db.pool)
        .await
        .unwrap();
    let wait_delivered = || async {
        eventually(Duration::from_secs(20), "the queue is delivered", || async {
            let left: i64 = db
                .scalar("select (select count(*) from livesync.queue) + (select count(*) from livesync.changes)")
                .await;
            (left == 0).then_some(())
        })
        .await
    };
    wait_delivered().await;
    db.exec("update xpert.appointments set subject = 'Besprechung (verlegt)', notes = 'Zeile 1\nZeile 2; mit Komma, Ende' where subject = 'Besprechung'")
        .await;
    db.exec("delete from xpert.appointments where subject = 'Abgesagt'")
        .await;
    wait_delivered().await;
    worker.stop().await;

    let file = std::fs::read_to_string(sink.path("mmuster")).expect("the ics file");
    let console = Console::start(&db).await;
    let secret = secret(&db, lawyer).await;
    let feed = Browser::new()
        .get(&console.url(&feed_path(&secret)))
        .await
        .body;
    let from_file = split_events(&file).unwrap();
    let from_feed = split_events(&feed).unwrap();
    assert_eq!(from_feed, from_file, "the same events, byte for byte");
    let uids: Vec<&str> = from_feed.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(uids.len(), 3, "{uids:?}");
    assert!(!uids.contains(&&*format!("xpert-termin-{deleted}@livesync")));
    let _ = (kept, changed);
    assert!(feed.contains("SEQUENCE:1\r\n"), "the update's SEQUENCE");
}

#[tokio::test]
async fn guessed_replaced_and_inactive_feeds_get_the_same_404() {
    let db = TestDb::migrated().await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    let never_enabled = db.user("nneu").await;
    db.enable_user(lawyer, false).await;
    db.appointment("Verhandlung", 24, &[lawyer, never_enabled])
        .await;
    let console = Console::start(&db).await;
    let mut client = Browser::new();
    let first = secret(&db, lawyer).await;
    assert_eq!(
        client.get(&console.url(&feed_path(&first))).await.status,
        StatusCode::OK
    );
    let not_found = client
        .get(&console.url(&feed_path(&livesync_core::feeds::new_secret())))
        .await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);

    // Guesses: another secret, one character off, a prefix, without or with another suffix.
    let mut off_by_one = first.clone().into_bytes();
    off_by_one[10] = if off_by_one[10] == b'A' { b'B' } else { b'A' };
    let off_by_one = String::from_utf8(off_by_one).unwrap();
    let replaced = first.clone();
    let rotated = livesync_core::feeds::rotate(&db.pool, lawyer)
        .await
        .unwrap();
    assert_ne!(rotated, replaced);
    let inactive = secret(&db, never_enabled).await;
    for path in [
        feed_path(&off_by_one),
        feed_path(&first[..20]),
        format!("/feeds/{rotated}"),
        format!("/feeds/{rotated}.ical"),
        feed_path(&replaced),
        feed_path(&inactive),
        feed_path(""),
    ] {
        let answer = client.get(&console.url(&path)).await;
        assert_eq!(answer.status, not_found.status, "{path}");
        assert_eq!(answer.body, not_found.body, "{path}");
        assert_eq!(answer.headers.get("etag"), None, "{path}");
    }
    assert_eq!(
        client.get(&console.url(&feed_path(&rotated))).await.status,
        StatusCode::OK
    );
    // Switched off (the person, or the firm): the same 404.
    db.exec("update livesync.user_settings set live_sync_enabled = false")
        .await;
    let answer = client.get(&console.url(&feed_path(&rotated))).await;
    assert_eq!(answer.status, not_found.status);
    assert_eq!(answer.body, not_found.body);
    db.exec("update livesync.user_settings set live_sync_enabled = true")
        .await;
    db.exec("update livesync.settings set cti_sync_licensed = false")
        .await;
    let answer = client.get(&console.url(&feed_path(&rotated))).await;
    assert_eq!(answer.status, not_found.status);
}

#[tokio::test]
async fn feeds_on_an_address_of_their_own_are_not_on_the_consoles() {
    let db = TestDb::migrated().await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let secret = secret(&db, lawyer).await;
    let feed_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let feed_addr = feed_listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(livesync_worker::console::serve(
        feed_listener,
        livesync_worker::feed::router(db.pool.clone()),
        None,
        rx,
    ));
    let console = Console::start_with(
        &db,
        ConsoleSettings {
            feed_addr: Some(feed_addr),
            ..ConsoleSettings::default()
        },
    )
    .await;
    let mut client = Browser::new();
    let on_console = client.get(&console.url(&feed_path(&secret))).await;
    assert_eq!(on_console.status, StatusCode::NOT_FOUND);
    let on_its_own = client
        .get(&format!("http://{feed_addr}{}", feed_path(&secret)))
        .await;
    assert_eq!(on_its_own.status, StatusCode::OK);
    assert!(on_its_own.body.starts_with("BEGIN:VCALENDAR\r\n"));
    // Nothing but feeds there.
    assert_eq!(
        client
            .get(&format!("http://{feed_addr}/sign-in"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let _ = stop.send(true);
}

#[tokio::test]
async fn feed_url_prints_the_same_url_and_rotate_replaces_it() {
    let db = TestDb::migrated().await;
    db.firm_in_push_mode(&["mmuster"], false).await;
    let base = ["--public-url", "https://kalender.kanzlei.at/"];
    let url = |v: &Value| v["url"].as_str().unwrap().to_string();
    let first = admin_json(
        &db,
        &[&["feed", "url", "KANZLEI\\MMuster"][..], &base].concat(),
    )
    .await;
    assert_eq!(first["username"], "mmuster");
    assert_eq!(first["sync_active"], true);
    let first = url(&first);
    assert!(
        first.starts_with("https://kalender.kanzlei.at/feeds/") && first.ends_with(".ics"),
        "{first}"
    );
    let again = admin_json(&db, &[&["feed", "url", "mmuster"][..], &base].concat()).await;
    assert_eq!(url(&again), first);
    let rotated = admin_json(&db, &[&["feed", "rotate", "mmuster"][..], &base].concat()).await;
    assert_ne!(url(&rotated), first);
    assert_eq!(rotated["rotated"], true);

    // The URL works; the old one does not.
    let console = Console::start(&db).await;
    let path = |u: &str| {
        u.trim_start_matches("https://kalender.kanzlei.at")
            .to_string()
    };
    let mut client = Browser::new();
    assert_eq!(
        client.get(&console.url(&path(&url(&rotated)))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.get(&console.url(&path(&first))).await.status,
        StatusCode::NOT_FOUND
    );

    // Without any address for the URL, it says what to set; an unknown name is exit 2.
    let (result, _) = admin(&db, &["feed", "url", "mmuster"]).await;
    if std::env::var_os("LIVESYNC_PUBLIC_URL").is_none()
        && std::env::var_os("LIVESYNC_FEED_ADDR").is_none()
        && std::env::var_os("LIVESYNC_CONSOLE_ADDR").is_none()
    {
        let e = result.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("LIVESYNC_PUBLIC_URL"), "{e}");
    }
    let (result, _) = admin(
        &db,
        &["feed", "url", "niemand", "--public-url", "https://h"],
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.exit_code(), 2);
}
