//! The real binaries: `livesync-admin console-user add|list|remove` (the password from
//! standard input, stored as an Argon2id hash), and `livesync-worker run` serving the
//! console and the feeds over HTTPS (rustls, a certificate file) without any password,
//! feed secret or session token in its logs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::admin_cli::{admin, admin_json};
use crate::console_support::{Browser, Console, form_body};
use crate::helpers::{TestDb, eventually};
use crate::secrets::{WorkerProcess, admin_bin, binaries, free_port};

const NEW_PASSWORD: &str = "Sehr geheim, 2026!";

/// `livesync-admin ARGS` with `stdin` as its input; exit code, stdout, stderr.
async fn admin_with_input(db: &TestDb, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = tokio::process::Command::new(admin_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run livesync-admin");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("livesync-admin ends")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn console_users_are_added_from_standard_input_listed_and_removed() {
    binaries().await;
    let db = TestDb::migrated().await;
    let add = ["console-user", "add", "chefin", "--password-stdin"];
    let (code, out, err) = admin_with_input(&db, &add, &format!("{NEW_PASSWORD}\n")).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("console user \"chefin\" added"), "{out}");
    assert!(!format!("{out}{err}").contains(NEW_PASSWORD));

    let (code, _, err) = admin_with_input(&db, &add, "anderes-langes-Kennwort\n").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = admin_with_input(
        &db,
        &["console-user", "add", "kurz", "--password-stdin"],
        "zu-kurz\n",
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("at least 12 characters"), "{err}");
    let (code, _, _) = admin_with_input(&db, &["console-user", "add", "ohne"], "").await;
    assert_eq!(code, 2, "the password only ever comes from standard input");

    let hash: String = db
        .scalar("select password_hash from livesync.console_users")
        .await;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(NEW_PASSWORD));
    let listed = admin_json(&db, &["console-user", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "chefin");
    assert_eq!(listed[0]["sessions"], 0);
    assert_eq!(listed[0]["last_sign_in_at"], Value::Null);

    // The password signs in; removing the account ends the session.
    let console = Console::start(&db).await;
    let mut browser = Browser::new();
    let answer = browser.sign_in(&console, "chefin", NEW_PASSWORD).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(browser.get(&console.url("/")).await.status, StatusCode::OK);
    let listed = admin_json(&db, &["console-user", "list"]).await;
    assert_eq!(listed[0]["sessions"], 1);
    assert_ne!(listed[0]["last_sign_in_at"], Value::Null);
    let removed = admin_json(&db, &["console-user", "remove", "chefin"]).await;
    assert_eq!(removed["removed"], "chefin");
    assert_eq!(
        browser.get(&console.url("/")).await.location(),
        Some("/sign-in")
    );
    let (result, _) = admin(&db, &["console-user", "remove", "chefin"]).await;
    let e = result.unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

/// A self-signed certificate for 127.0.0.1 (cert.pem, key.pem in `dir`), made by openssl;
/// the client trusts it as its root.
fn certificate(dir: &Path) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            // rustls takes no CA certificate as a server's own.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl made a certificate");
}

#[tokio::test]
async fn the_worker_serves_console_and_feeds_over_https_and_logs_no_secret() {
    binaries().await;
    let db = TestDb::migrated().await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    db.appointment("Verhandlung", 24, &[lawyer]).await;
    livesync_core::console_users::add(&db.pool, "chefin", NEW_PASSWORD)
        .await
        .unwrap();
    let feed_secret = livesync_core::feeds::secret_for(&db.pool, lawyer)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path());
    let port = free_port();
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", db.url.clone()),
        ("LIVESYNC_SINK", "null".into()),
        (
            "LIVESYNC_LOG_DIR",
            dir.path().join("logs").display().to_string(),
        ),
        ("LIVESYNC_POLL_INTERVAL_MS", "200".into()),
        ("LIVESYNC_CONSOLE_ADDR", port.to_string()),
        (
            "LIVESYNC_CONSOLE_TLS_CERT",
            dir.path().join("cert.pem").display().to_string(),
        ),
        (
            "LIVESYNC_CONSOLE_TLS_KEY",
            dir.path().join("key.pem").display().to_string(),
        ),
        ("RUST_LOG", "trace".into()),
    ];
    let mut worker = WorkerProcess::start(&env, dir.path(), "022").await;
    let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("cert.pem")).unwrap())
        .unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(cert)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let sign_in_page = eventually(
        Duration::from_secs(30),
        "the console answers over HTTPS",
        || {
            worker.assert_running();
            let request = https.get(format!("{base}/sign-in")).send();
            async move { request.await.ok() }
        },
    )
    .await;
    assert_eq!(sign_in_page.status(), StatusCode::OK);
    // Over plain HTTP nothing is served.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/sign-in"))
            .await
            .is_err()
    );
    let form_cookie = sign_in_page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        form_cookie.to_ascii_lowercase().contains("secure"),
        "{form_cookie}"
    );
    let pair = form_cookie.split(';').next().unwrap().to_string();
    let html = sign_in_page.text().await.unwrap();
    let start = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &html[start..start + html[start..].find('"').unwrap()];
    let signed_in = https
        .post(format!("{base}/sign-in"))
        .header("cookie", &pair)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("csrf", csrf),
            ("name", "chefin"),
            ("password", NEW_PASSWORD),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("livesync_session="))
        .unwrap();
    assert!(session.to_ascii_lowercase().contains("secure"), "{session}");
    let overview = https
        .get(format!("{base}/"))
        .header("cookie", session.split(';').next().unwrap())
        .header("accept-language", "de")
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    assert!(
        overview
            .text()
            .await
            .unwrap()
            .contains("<h1>Übersicht</h1>")
    );
    let feed = https
        .get(format!("{base}/feeds/{feed_secret}.ics"))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    assert!(
        feed.text()
            .await
            .unwrap()
            .contains("SUMMARY:Verhandlung\r\n")
    );

    let ran = worker.stop().await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let logs = ran.all();
    assert!(
        logs.contains("serving the admin console and the calendar feeds"),
        "{logs}"
    );
    let session_token = session
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("livesync_session=")
        .to_string();
    // The signed cookie's value ends in the token itself.
    let bare_token = &session_token[session_token.len() - 43..];
    for secret in [NEW_PASSWORD, &feed_secret, &session_token, bare_token, csrf] {
        assert!(
            !logs.contains(secret),
            "{secret} in the worker's output:\n{logs}"
        );
    }
}
