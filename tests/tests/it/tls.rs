//! TLS to PostgreSQL: `sslmode=require` and `verify-full` (with a self-signed certificate
//! as `sslrootcert`) in `DATABASE_URL`, for the migrations and for the worker alike.

use livesync_core::embedded_pg::{EmbeddedPg, Options};
use sqlx::{Connection, PgConnection};

use crate::helpers::BASELINE;

async fn encrypted(url: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_and_the_worker_connect_over_verified_tls() {
    let pg = tokio::task::spawn_blocking(|| EmbeddedPg::start_tls(Options { ephemeral: true }))
        .await
        .unwrap()
        .expect("a private PostgreSQL with TLS");
    let cert = pg.tls_certificate().expect("the server's certificate");
    let mut admin = PgConnection::connect(&pg.url("postgres")).await.unwrap();
    sqlx::query("create database xpert")
        .execute(&mut admin)
        .await
        .unwrap();
    let mut xpert = PgConnection::connect(&pg.url("xpert")).await.unwrap();
    sqlx::raw_sql(BASELINE).execute(&mut xpert).await.unwrap();

    let require = format!("{}?sslmode=require", pg.url("xpert"));
    let verify = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url("xpert"),
        cert.display()
    );
    assert!(encrypted(&require).await);
    assert!(encrypted(&verify).await);

    let outcome = livesync_core::migrate::run(&require, false)
        .await
        .expect("migrate over TLS");
    assert!(!outcome.applied.is_empty());
    let status = livesync_core::migrate::status(&verify).await.unwrap();
    assert!(status.is_current());

    // The worker's own connection path, with the same URL.
    let settings = livesync_worker::config::RawSettings {
        database_url: Some(verify.clone()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let pool = livesync_worker::app::connect(&settings).await.unwrap();
    livesync_worker::schema::check(&pool).await.unwrap();
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the worker's connections are encrypted");
    pool.close().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_with_a_clear_message() {
    let pg = tokio::task::spawn_blocking(|| EmbeddedPg::start_tls(Options { ephemeral: true }))
        .await
        .unwrap()
        .expect("a private PostgreSQL with TLS");
    // A root the server's certificate was not issued by.
    let other = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=someone-else"])
        .arg("-keyout")
        .arg(other.path().join("k.pem"))
        .arg("-out")
        .arg(other.path().join("c.pem"))
        .output()
        .unwrap();
    assert!(status.status.success());
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url("postgres"),
        other.path().join("c.pem").display()
    );
    let err = livesync_core::migrate::run(&url, false).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cannot connect"), "{text}");
    assert!(text.contains("127.0.0.1"), "names the server: {text}");
}
