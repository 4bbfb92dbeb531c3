//! Secrets never show: the database password, the CalDAV password, the Graph client secret
//! and the access tokens Graph's login issues appear in no output of the real binaries —
//! the worker's stdout and stderr (text and JSON logs, at debug and trace level), the
//! per-user log files and calendar files, `/healthz` and `/metrics`, `livesync-worker
//! check`, and every `livesync-admin` command in table and `--json` form, on the good
//! paths and on the failing ones (wrong password, unreachable server, malformed URLs
//! holding a password). Also here: the files the worker creates are private, and its HTTP
//! endpoint listens on loopback unless configured otherwise.
//!
//! The binaries are built once per test process (`cargo build`, a no-op when they are
//! current) next to this test binary and run with a cleared environment in a temporary
//! working directory, so that no `.env` or variable of the caller leaks in.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestDb, eventually};
pub(crate) use livesync_testkit::caldav_server::free_port;
use livesync_testkit::caldav_server::{CalDavServer, password_of};
use livesync_testkit::graph_fake::{CLIENT_ID, FakeGraph, SECRET, TENANT};
pub(crate) use livesync_testkit::worker_proc::Ran;
use livesync_testkit::worker_proc::{Launch, WorkerProc};

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Running the real binaries.

/// The directory holding `livesync-worker` and `livesync-admin`, built (once per test
/// process) with the profile of this test binary.
pub(crate) fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/it-… → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .arg("build")
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["-p", "livesync-worker", "--bin", "livesync-worker"])
            .args(["-p", "livesync-admin", "--bin", "livesync-admin"])
            .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "building livesync-worker and livesync-admin failed"
        );
        profile_dir
    })
}

pub(crate) fn worker_bin() -> PathBuf {
    bin_dir().join("livesync-worker")
}

pub(crate) fn admin_bin() -> PathBuf {
    bin_dir().join("livesync-admin")
}

/// A command with a cleared environment (only `PATH` kept), `env` set, run in `cwd`.
fn command(
    program: &Path,
    args: &[&str],
    env: &[(&str, String)],
    cwd: &Path,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Run a program to its end (at most two minutes).
pub(crate) async fn run(program: &Path, args: &[&str], env: &[(&str, String)], cwd: &Path) -> Ran {
    let what = format!(
        "{} {}",
        program.file_name().unwrap().to_string_lossy(),
        args.join(" ")
    );
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        command(program, args, env, cwd).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not end within two minutes"))
    .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Ran {
        what,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `livesync-worker run` as a child process (the test kit's), in a cleared environment,
/// its output going to files in its working directory.
pub(crate) struct WorkerProcess(WorkerProc);

impl WorkerProcess {
    /// Start `livesync-worker run` under `umask` (so that the worker's own file modes are
    /// what is tested, not the caller's umask).
    pub async fn start(env: &[(&str, String)], cwd: &Path, umask: &str) -> WorkerProcess {
        let n = std::fs::read_dir(cwd).map_or(0, |d| d.count());
        let launch = Launch {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            clear_env: true,
            cwd: Some(cwd.to_path_buf()),
            umask: Some(umask.to_string()),
            stdout: cwd.join(format!("worker-{n}.stdout")),
            stderr: Some(cwd.join(format!("worker-{n}.stderr"))),
        };
        WorkerProcess(WorkerProc::spawn(&worker_bin(), &launch).expect("start livesync-worker run"))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Panics with the worker's output if it has exited.
    pub fn assert_running(&mut self) {
        if let Err(e) = self.0.running() {
            panic!("{e:#}");
        }
    }

    /// SIGTERM, then wait (at most 30 s) for the end.
    pub async fn stop(self) -> Ran {
        self.0
            .stop()
            .await
            .expect("livesync-worker stops after SIGTERM")
    }

    /// Wait for a worker that ends by itself.
    pub async fn wait(self) -> Ran {
        self.0
            .wait(Duration::from_secs(60))
            .await
            .expect("livesync-worker ends by itself")
    }
}

/// `GET path` over HTTP/1.0 on 127.0.0.1:port: the status and the body, `None` when
/// nothing answers.
pub(crate) async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

// ---------------------------------------------------------------------------------------
// Looking for secrets.

/// Everything something printed or wrote, by where it came from.
#[derive(Default)]
pub(crate) struct Transcript(Vec<(String, String)>);

impl Transcript {
    pub fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        self.0.push((source.into(), text.into()));
    }

    pub fn ran(&mut self, ran: &Ran) {
        self.add(format!("{} (stdout)", ran.what), ran.stdout.clone());
        self.add(format!("{} (stderr)", ran.what), ran.stderr.clone());
    }

    /// Every file below `dir` (names and contents).
    pub fn files(&mut self, dir: &Path) {
        for path in files_below(dir) {
            let bytes = std::fs::read(&path).unwrap_or_default();
            self.add(
                path.display().to_string(),
                format!("{}\n{}", path.display(), String::from_utf8_lossy(&bytes)),
            );
        }
    }

    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub(crate) fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Secret values and every form in which they could slip out.
#[derive(Default)]
pub(crate) struct Secrets(Vec<(String, String)>);

fn percent_encode(s: &str, lower: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Secrets {
    /// `secret` as given, percent-encoded (upper and lower case), form-encoded, in base64,
    /// and `core` (a distinctive part that survives any encoding) on its own.
    pub fn add(&mut self, label: &str, secret: &str, core: &str) {
        assert!(secret.contains(core));
        let forms = [
            secret.to_string(),
            percent_encode(secret, false),
            percent_encode(secret, true),
            percent_encode(secret, false).replace("%20", "+"),
            base64(secret.as_bytes()),
            base64(secret.as_bytes()).trim_end_matches('=').to_string(),
            core.to_string(),
        ];
        for form in forms {
            self.0.push((label.to_string(), form));
        }
    }

    /// HTTP Basic credentials as they go into an `Authorization` header.
    pub fn add_basic(&mut self, label: &str, user: &str, password: &str) {
        self.0.push((
            format!("{label} (Basic)"),
            base64(format!("{user}:{password}").as_bytes()),
        ));
    }

    /// A value recognisable as it is (a token prefix).
    pub fn add_plain(&mut self, label: &str, needle: &str) {
        self.0.push((label.to_string(), needle.to_string()));
    }

    /// Panics listing every place a secret shows up.
    pub fn assert_absent(&self, transcript: &Transcript) {
        let mut leaks = BTreeSet::new();
        for (source, text) in &transcript.0 {
            for (label, needle) in &self.0 {
                if let Some(at) = text.find(needle.as_str()) {
                    let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
                    leaks.insert(format!(
                        "{label} ({needle:?}) in {source}: {}",
                        &text[from..to]
                    ));
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "secrets leaked:\n{}",
            leaks.into_iter().collect::<Vec<_>>().join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// A database role with a password, checked by the server.

/// Edits of the server's pg_hba.conf take turns.
static HBA_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A login role with a password, which the test server checks (SCRAM) for this role only:
/// its line goes first into pg_hba.conf (every other role keeps the test server's rules)
/// and is removed again, with the role, by [`PasswordRole::drop_role`].
pub(crate) struct PasswordRole {
    pub name: String,
    hba_line: String,
}

async fn hba_file(db: &TestDb) -> (String, String) {
    let path: String =
        sqlx::query_scalar("select setting from pg_settings where name = 'hba_file'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let text: String = sqlx::query_scalar("select pg_read_file($1)")
        .bind(&path)
        .fetch_one(&db.pool)
        .await
        .expect("read pg_hba.conf (the test server's superuser)");
    (path, text)
}

async fn write_hba(db: &TestDb, path: &str, text: &str) {
    // lo_export writes the bytes as they are, as the server's own user.
    let oid: sqlx::postgres::types::Oid =
        sqlx::query_scalar("select lo_from_bytea(0, convert_to($1, 'UTF8'))")
            .bind(text)
            .fetch_one(&db.pool)
            .await
            .expect("a large object with pg_hba.conf");
    sqlx::query("select lo_export($1, $2)")
        .bind(oid)
        .bind(path)
        .execute(&db.pool)
        .await
        .expect("write pg_hba.conf");
    sqlx::query("select lo_unlink($1)")
        .bind(oid)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("select pg_reload_conf()")
        .execute(&db.pool)
        .await
        .unwrap();
}

impl PasswordRole {
    pub async fn create(db: &TestDb, password: &str) -> PasswordRole {
        let _turn = HBA_LOCK.lock().await;
        let name = format!("ls_pw_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create role {name} login superuser password '{}'",
            password.replace('\'', "''")
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        let hba_line = format!(
            "host all {name} 0.0.0.0/0 scram-sha-256\nhost all {name} ::/0 scram-sha-256\n"
        );
        let (path, text) = hba_file(db).await;
        write_hba(db, &path, &format!("{hba_line}{text}")).await;
        let role = PasswordRole { name, hba_line };
        // The reload is asynchronous: wait until the server asks this role for a password.
        let wrong = db.url_as(&role.name, "not-the-password");
        eventually(WAIT, "the server checks the role's password", || async {
            <sqlx::PgConnection as sqlx::Connection>::connect(&wrong)
                .await
                .is_err()
                .then_some(())
        })
        .await;
        role
    }

    pub async fn drop_role(self, db: &TestDb) {
        let _turn = HBA_LOCK.lock().await;
        let (path, text) = hba_file(db).await;
        write_hba(db, &path, &text.replace(&self.hba_line, "")).await;
        // Connections of the binaries are gone; ones in the server's pools may linger.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = '{}'",
            self.name
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop owned by {0}; drop role {0}",
            self.name
        )))
        .execute(&db.pool)
        .await
        .ok();
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures.

/// Build the binaries before a test starts anything else (the build may take a while).
pub(crate) async fn binaries() {
    tokio::task::spawn_blocking(bin_dir).await.unwrap();
}

/// A firm in push mode whose users keep a log file; returns their ids.
async fn firm(db: &TestDb, users: &[&str]) -> Vec<i64> {
    db.firm_in_push_mode(users, true).await
}

/// The worker's environment: `DATABASE_URL`, files in `dir`, debug logs, fast polling,
/// and `extra` on top.
pub(crate) fn worker_env(
    database_url: &str,
    dir: &Path,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("LIVESYNC_ICS_DIR", dir.join("ics").display().to_string()),
        ("LIVESYNC_LOG_DIR", dir.join("logs").display().to_string()),
        ("LIVESYNC_POLL_INTERVAL_MS", "200".into()),
        ("LIVESYNC_LEASE_SECS", "5".into()),
        ("RUST_LOG", "debug".into()),
    ];
    for &(key, value) in extra {
        env.retain(|(existing, _)| *existing != key);
        env.push((key, value.to_string()));
    }
    env
}

/// Every read-only admin command, as a table and as `--json`, with this environment; a
/// doctor that runs `livesync-worker check` with it too.
async fn every_admin_view(t: &mut Transcript, env: &[(&str, String)], cwd: &Path) -> Vec<Ran> {
    let worker = worker_bin();
    let worker = worker.to_str().unwrap();
    let mut ran = Vec::new();
    for args in [
        &["users"][..],
        &["queue"],
        &["settings", "show"],
        &["migrate", "status"],
        &["first-login", "report"],
        &["dead-letters", "list"],
        &["doctor", "--worker-bin", worker],
        &["settings", "set", "delivery_mode", "fast"],
    ] {
        for json in [false, true] {
            let mut all: Vec<&str> = if json { vec!["--json"] } else { vec![] };
            all.extend_from_slice(args);
            let r = run(&admin_bin(), &all, env, cwd).await;
            t.ran(&r);
            ran.push(r);
        }
    }
    ran
}

/// `livesync-worker check` and `check --json` with this environment.
async fn worker_checks(t: &mut Transcript, env: &[(&str, String)], cwd: &Path) -> Vec<Ran> {
    let mut ran = Vec::new();
    for args in [&["check"][..], &["check", "--json"]] {
        let r = run(&worker_bin(), args, env, cwd).await;
        t.ran(&r);
        ran.push(r);
    }
    ran
}

/// `/healthz` and `/metrics` of a running worker.
async fn endpoints(t: &mut Transcript, port: u16) {
    let (status, body) = eventually(WAIT, "the worker's /healthz answers", || async {
        http_get(port, "/healthz").await
    })
    .await;
    assert!(body.contains("database"), "{status} {body}");
    t.add("/healthz", body);
    let (_, metrics) = http_get(port, "/metrics").await.expect("/metrics answers");
    assert!(metrics.contains("livesync_"), "{metrics}");
    t.add("/metrics", metrics);
}

async fn queued_for(db: &TestDb, user_id: i64) -> i64 {
    sqlx::query_scalar("select count(*) from livesync.queue where user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn dead_letters_for(db: &TestDb, user_id: i64) -> i64 {
    sqlx::query_scalar("select count(*) from livesync.dead_letters where user_id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The per-user log file of `username` once it holds `needle`.
async fn user_log_with(dir: &Path, username: &str, needle: &str) -> String {
    let path = livesync_worker::file_name::safe_path(&dir.join("logs"), username, "log");
    eventually(
        WAIT,
        &format!("{username}'s log file mentions {needle:?}"),
        || async {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|text| text.contains(needle))
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn the_database_password_shows_in_no_output() {
    binaries().await;
    let db = TestDb::migrated().await;
    let ids = firm(&db, &["mmuster"]).await;
    db.appointment("Tagsatzung", 24, &ids).await;

    const PASSWORD: &str = "pg!Pw#Kx93Lq/v@:";
    const WRONG: &str = "Wr0ng!Zt58Vb?";
    let role = PasswordRole::create(&db, PASSWORD).await;
    let name = role.name.clone();
    let good = db.url_as(&name, &percent_encode(PASSWORD, false));
    let wrong = db.url_as(&name, &percent_encode(WRONG, false));
    let mut secrets = Secrets::default();
    secrets.add("database password", PASSWORD, "Kx93Lq");
    secrets.add("wrong database password", WRONG, "Zt58Vb");

    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mut t = Transcript::default();
    let encoded = percent_encode(PASSWORD, false);
    let (_, host_and_db) = good.rsplit_once('@').unwrap();
    let bad_urls = [
        // The server says no.
        wrong.clone(),
        // Nobody listens.
        format!("postgres://{name}:{encoded}@127.0.0.1:1/xpert"),
        // Malformed, each still holding the password.
        format!("postgres://{name}:{encoded}@127.0.0.1:port/xpert"),
        format!("mysql://{name}:{encoded}@{host_and_db}"),
        format!("postgres://{name}:{PASSWORD}@{host_and_db}"),
        format!("{good}?sslmode=sometimes"),
        format!("postgres://{host_and_db}?user={name}&password={encoded}&sslmode=bogus"),
        format!("host=127.0.0.1 user={name} password={PASSWORD} dbname=xpert"),
    ];
    for url in &bad_urls {
        let env = worker_env(url, cwd, &[]);
        let started = WorkerProcess::start(&env, cwd, "077").await;
        let ran = started.wait().await;
        assert!(ran.failed(), "the worker cannot run with {url}: {ran:?}");
        t.ran(&ran);
        worker_checks(&mut t, &env, cwd).await;
        let views = every_admin_view(&mut t, &env, cwd).await;
        for r in views {
            assert!(r.failed(), "{} cannot succeed with {url}: {r:?}", r.what);
        }
    }
    let transcript = t.text();
    assert!(
        transcript.contains("password authentication failed"),
        "the wrong password reached the server: {transcript}"
    );
    assert!(transcript.contains("DATABASE_URL"), "{transcript}");

    // The right password: everything works and prints what it has.
    let port = free_port();
    let env = worker_env(
        &good,
        cwd,
        &[
            ("LIVESYNC_HTTP_ADDR", &port.to_string()),
            ("LIVESYNC_LOG_FORMAT", "json"),
            ("RUST_LOG", "trace"),
        ],
    );
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(!r.failed(), "{r:?}");
    }
    let mut worker = WorkerProcess::start(&env, cwd, "077").await;
    eventually(WAIT, "delivered", || async {
        (queued_for(&db, ids[0]).await == 0).then_some(())
    })
    .await;
    user_log_with(cwd, "mmuster", "Tagsatzung").await;
    worker.assert_running();
    endpoints(&mut t, port).await;
    every_admin_view(&mut t, &env, cwd).await;
    let ran = worker.stop().await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stderr.contains("\"level\""),
        "JSON logs: {}",
        ran.stderr
    );
    t.ran(&ran);
    // The same in text logs.
    let env = worker_env(&good, cwd, &[]);
    let worker = WorkerProcess::start(&env, cwd, "077").await;
    registered(&db, worker.pid()).await;
    t.ran(&worker.stop().await);
    t.files(cwd);

    assert!(
        t.text().contains("Tagsatzung"),
        "the calendar and log are read"
    );
    secrets.assert_absent(&t);
    role.drop_role(&db).await;
}

#[tokio::test]
async fn the_caldav_password_shows_in_no_output() {
    binaries().await;
    let server = CalDavServer::radicale().await;
    let db = TestDb::migrated().await;
    let ids = firm(&db, &["mmuster", "hhuber"]).await;
    let (mmuster, hhuber) = (ids[0], ids[1]);

    const WRONG: &str = "Dav!Wr0ng#Qm47Hy";
    const WRONG_TEMPLATE: &str = "Falsch-{username}-Xq39Rt";
    const UNREACHABLE: &str = "Weg?Pf82Lk&";
    let template = livesync_testkit::caldav_server::PASSWORD_TEMPLATE;
    let mut secrets = Secrets::default();
    secrets.add("caldav password template", template, "Kennwort");
    for user in ["mmuster", "hhuber"] {
        secrets.add("caldav password", &password_of(user), &password_of(user));
        secrets.add_basic("caldav password", user, &password_of(user));
        let wrong = WRONG_TEMPLATE.replace("{username}", user);
        secrets.add("wrong caldav password", &wrong, "Xq39Rt");
        secrets.add_basic("wrong caldav password", user, &wrong);
        secrets.add_basic("unreachable caldav password", user, UNREACHABLE);
    }
    secrets.add("wrong caldav password", WRONG, "Qm47Hy");
    secrets.add_basic("wrong caldav password", "mmuster", WRONG);
    secrets.add("unreachable caldav password", UNREACHABLE, "Pf82Lk");

    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mut t = Transcript::default();
    let url = server.url_template();
    let port = free_port();
    let caldav = |url: &str, user: &str, password: &str, extra: &[(&'static str, &str)]| {
        let mut all = vec![
            ("LIVESYNC_SINK", "caldav"),
            ("LIVESYNC_CALDAV_URL", url),
            ("LIVESYNC_CALDAV_USERNAME", user),
            ("LIVESYNC_CALDAV_PASSWORD", password),
        ];
        all.extend_from_slice(extra);
        worker_env(&db.url, cwd, &all)
    };

    // A service account with a wrong password: the check fails, the worker does not start.
    let env = caldav(&url, "mmuster", WRONG, &[]);
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(r.failed() && r.stdout.contains("401"), "{r:?}");
    }
    let ran = WorkerProcess::start(&env, cwd, "077").await.wait().await;
    assert!(ran.failed(), "{ran:?}");
    t.ran(&ran);
    every_admin_view(&mut t, &env, cwd).await;

    // Per-person passwords, wrong: the server refuses each delivery (logged, kept).
    let refused = db.appointment("abgelehnt", 24, &[hhuber]).await;
    let port_s = port.to_string();
    let http = [("LIVESYNC_HTTP_ADDR", port_s.as_str())];
    let env = caldav(&url, "{username}", WRONG_TEMPLATE, &http);
    let mut worker = WorkerProcess::start(&env, cwd, "077").await;
    let log = user_log_with(cwd, "hhuber", "retrying").await;
    assert!(log.contains(&format!("appointment {refused}")), "{log}");
    worker.assert_running();
    endpoints(&mut t, port).await;
    every_admin_view(&mut t, &env, cwd).await;
    t.ran(&worker.stop().await);

    // The right passwords: delivered.
    let delivered = db.appointment("zugestellt", 48, &[mmuster]).await;
    let env = caldav(&url, "{username}", template, &http);
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(!r.failed(), "{r:?}");
    }
    let mut worker = WorkerProcess::start(&env, cwd, "077").await;
    eventually(WAIT, "delivered to Radicale", || async {
        (queued_for(&db, mmuster).await == 0).then_some(())
    })
    .await;
    user_log_with(cwd, "mmuster", &format!("appointment {delivered}")).await;
    worker.assert_running();
    endpoints(&mut t, port).await;
    every_admin_view(&mut t, &env, cwd).await;
    t.ran(&worker.stop().await);
    let remote = server.read_back("mmuster").await;
    assert_eq!(remote.objects.len(), 1, "{remote:?}");

    // An unreachable server: retried, then (one attempt allowed) dead-lettered.
    let unreachable = format!("http://127.0.0.1:{}/{{username}}/notarxpert/", free_port());
    db.appointment("unerreichbar", 72, &[mmuster]).await;
    let env = caldav(
        &unreachable,
        "{username}",
        UNREACHABLE,
        &[http[0], ("LIVESYNC_MAX_ATTEMPTS", "1")],
    );
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(r.failed(), "{r:?}");
    }
    let mut worker = WorkerProcess::start(&env, cwd, "077").await;
    eventually(WAIT, "dead-lettered", || async {
        (dead_letters_for(&db, mmuster).await == 1).then_some(())
    })
    .await;
    user_log_with(cwd, "mmuster", "dead-lettered").await;
    worker.assert_running();
    endpoints(&mut t, port).await;
    every_admin_view(&mut t, &env, cwd).await;
    t.ran(&worker.stop().await);

    // Credentials in the URL: refused, and not echoed.
    let with_credentials = format!(
        "http://mmuster:{}@127.0.0.1:{}/{{username}}/notarxpert/",
        percent_encode(WRONG, false),
        server.port
    );
    let env = caldav(&with_credentials, "", "", &[]);
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(
            r.failed() && r.stderr.contains("LIVESYNC_CALDAV_URL"),
            "{r:?}"
        );
    }
    let ran = WorkerProcess::start(&env, cwd, "077").await.wait().await;
    assert!(
        ran.failed() && ran.stderr.contains("LIVESYNC_CALDAV_URL"),
        "{ran:?}"
    );
    t.ran(&ran);

    t.files(cwd);
    let text = t.text();
    for expected in ["401", "(Connect)", "dead-lettered", "zugestellt"] {
        assert!(text.contains(expected), "{expected:?} is in the output");
    }
    secrets.assert_absent(&t);
}

#[tokio::test]
async fn the_graph_client_secret_and_tokens_show_in_no_output() {
    binaries().await;
    let fake = FakeGraph::start().await;
    let db = TestDb::migrated().await;
    let ids = firm(&db, &["mmuster", "hhuber"]).await;
    let (mmuster, hhuber) = (ids[0], ids[1]);
    fake.forbid("hhuber@kanzlei.at");

    const WRONG: &str = "Falsch~Graph.Secret_Vp62Nc";
    let mut secrets = Secrets::default();
    secrets.add("client secret", SECRET, "Secret_0815");
    secrets.add("wrong client secret", WRONG, "Vp62Nc");
    secrets.add_plain("access token", "fake-token");
    secrets.add_plain("access token", "eyJ0eXAi");

    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mut t = Transcript::default();
    let port = free_port();
    let port_s = port.to_string();
    let graph = |secret: &str, login_url: &str, extra: &[(&'static str, &str)]| {
        let mut all = vec![
            ("LIVESYNC_SINK", "graph"),
            ("LIVESYNC_GRAPH_TENANT_ID", TENANT),
            ("LIVESYNC_GRAPH_CLIENT_ID", CLIENT_ID),
            ("LIVESYNC_GRAPH_CLIENT_SECRET", secret),
            ("LIVESYNC_GRAPH_MAILBOX", "{username}@kanzlei.at"),
            ("LIVESYNC_GRAPH_BASE_URL", &fake.base_url),
            ("LIVESYNC_GRAPH_LOGIN_URL", login_url),
            ("LIVESYNC_HTTP_ADDR", &port_s),
            ("RUST_LOG", "trace"),
        ];
        all.extend_from_slice(extra);
        worker_env(&db.url, cwd, &all)
    };

    // The right secret: tokens issued, renewed after they expire; one mailbox forbidden.
    let env = graph(SECRET, &fake.login_url, &[]);
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(!r.failed(), "{r:?}");
    }
    db.appointment("Tagsatzung", 24, &[mmuster, hhuber]).await;
    let mut worker = WorkerProcess::start(&env, cwd, "077").await;
    eventually(WAIT, "delivered to mmuster", || async {
        (queued_for(&db, mmuster).await == 0).then_some(())
    })
    .await;
    user_log_with(cwd, "hhuber", "retrying").await;
    fake.expire_tokens();
    db.appointment("Neuer Termin", 48, &[mmuster]).await;
    eventually(WAIT, "delivered with a new token", || async {
        (fake.events("mmuster@kanzlei.at").len() == 2).then_some(())
    })
    .await;
    worker.assert_running();
    endpoints(&mut t, port).await;
    every_admin_view(&mut t, &env, cwd).await;
    t.ran(&worker.stop().await);
    assert!(fake.token_requests().len() >= 2, "a token was renewed");

    // A wrong secret: the check fails and the worker does not start.
    let env = graph(WRONG, &fake.login_url, &[]);
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(
            r.failed() && r.stdout.contains("LIVESYNC_GRAPH_CLIENT_SECRET"),
            "{r:?}"
        );
    }
    let ran = WorkerProcess::start(&env, cwd, "077").await.wait().await;
    assert!(ran.failed(), "{ran:?}");
    t.ran(&ran);
    every_admin_view(&mut t, &env, cwd).await;

    // The login endpoint unreachable: deliveries fail and (one attempt) are dead-lettered.
    let nowhere = format!("http://127.0.0.1:{}/login", free_port());
    let env = graph(SECRET, &nowhere, &[("LIVESYNC_MAX_ATTEMPTS", "1")]);
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(r.failed(), "{r:?}");
    }
    db.appointment("unerreichbar", 72, &[mmuster]).await;
    let mut worker = WorkerProcess::start(&env, cwd, "077").await;
    eventually(WAIT, "dead-lettered", || async {
        (dead_letters_for(&db, mmuster).await == 1).then_some(())
    })
    .await;
    worker.assert_running();
    endpoints(&mut t, port).await;
    every_admin_view(&mut t, &env, cwd).await;
    t.ran(&worker.stop().await);

    // The secret as the login URL's user info: refused, not echoed.
    let with_secret = format!(
        "http://{CLIENT_ID}:{}@{}",
        percent_encode(SECRET, false),
        fake.login_url.trim_start_matches("http://")
    );
    let env = graph(SECRET, &with_secret, &[]);
    for r in worker_checks(&mut t, &env, cwd).await {
        assert!(
            r.failed() && r.stderr.contains("LIVESYNC_GRAPH_LOGIN_URL"),
            "{r:?}"
        );
    }

    t.files(cwd);
    let text = t.text();
    for expected in [
        "ErrorAccessDenied",
        "invalid_client",
        "dead-lettered",
        "Tagsatzung",
    ] {
        assert!(text.contains(expected), "{expected:?} is in the output");
    }
    let _ = hhuber;
    secrets.assert_absent(&t);
}

/// The listening TCP sockets of process `pid`, from `/proc`.
fn listening_sockets(pid: u32) -> Vec<std::net::SocketAddr> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the worker's open files")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() < 10 || fields[3] != "0A" || !inodes.contains(fields[9]) {
                continue;
            }
            let (ip, port) = fields[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            // The address is in 32-bit words, each in the host's (little-endian) order.
            let words: Vec<[u8; 4]> = (0..ip.len() / 8)
                .map(|w| u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).unwrap())
                .map(|w| w.swap_bytes().to_be_bytes())
                .collect();
            let addr: std::net::IpAddr = match words.as_slice() {
                [a] => (*a).into(),
                many => {
                    let bytes: Vec<u8> = many.iter().flatten().copied().collect();
                    let bytes: [u8; 16] = bytes.try_into().unwrap();
                    std::net::Ipv6Addr::from(bytes).into()
                }
            };
            out.push(std::net::SocketAddr::new(addr, port));
        }
    }
    out
}

/// Wait until the worker process `pid` has registered in `livesync.workers`.
async fn registered(db: &TestDb, pid: u32) {
    eventually(WAIT, "the worker registered", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from livesync.workers where pid = $1")
            .bind(pid as i32)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (n > 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn files_are_private_and_the_endpoint_listens_on_loopback_unless_configured() {
    binaries().await;
    let db = TestDb::migrated().await;
    let ids = firm(&db, &["mmuster", "Sekretariat Süd"]).await;
    db.appointment("Tagsatzung", 24, &ids).await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();

    // A port alone: loopback. The worker runs with umask 000: its modes are its own.
    let port = free_port();
    let env = worker_env(&db.url, cwd, &[("LIVESYNC_HTTP_ADDR", &port.to_string())]);
    let mut worker = WorkerProcess::start(&env, cwd, "000").await;
    eventually(WAIT, "delivered", || async {
        (db.queue().await.is_empty()).then_some(())
    })
    .await;
    user_log_with(cwd, "mmuster", "Tagsatzung").await;
    user_log_with(cwd, "Sekretariat Süd", "Tagsatzung").await;
    http_get(port, "/healthz")
        .await
        .expect("the endpoint answers");
    worker.assert_running();
    let listening = listening_sockets(worker.pid());
    assert!(
        !listening.is_empty()
            && listening
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == port),
        "only 127.0.0.1:{port}: {listening:?}"
    );
    let ran = worker.stop().await;
    assert_eq!(ran.code, Some(0), "{ran:?}");

    let calendars = files_below(&cwd.join("ics"));
    let logs = files_below(&cwd.join("logs"));
    assert_eq!(
        calendars
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "ics"))
            .count(),
        2,
        "{calendars:?}"
    );
    assert_eq!(logs.len(), 2, "{logs:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for path in &calendars {
        if path.extension().is_some_and(|e| e == "ics") {
            assert_eq!(mode(path), 0o640, "{}", path.display());
        } else {
            assert_eq!(
                mode(path) & 0o137,
                0,
                "{} is {:o}",
                path.display(),
                mode(path)
            );
        }
    }
    for path in &logs {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    let log_dir = mode(&cwd.join("logs"));
    assert_eq!(
        log_dir & 0o077,
        0,
        "the log directory is private: {log_dir:o}"
    );
    let ics_dir = mode(&cwd.join("ics"));
    assert_eq!(
        ics_dir & 0o027,
        0,
        "nobody else may replace a calendar: {ics_dir:o}"
    );

    // Without LIVESYNC_HTTP_ADDR nothing listens.
    let env = worker_env(&db.url, cwd, &[]);
    let mut worker = WorkerProcess::start(&env, cwd, "022").await;
    registered(&db, worker.pid()).await;
    worker.assert_running();
    assert_eq!(listening_sockets(worker.pid()), vec![]);
    worker.stop().await;

    // An address that is not loopback is used when configured, with a warning.
    let port = free_port();
    let env = worker_env(
        &db.url,
        cwd,
        &[("LIVESYNC_HTTP_ADDR", &format!("0.0.0.0:{port}"))],
    );
    let mut worker = WorkerProcess::start(&env, cwd, "022").await;
    eventually(WAIT, "the endpoint answers", || async {
        http_get(port, "/healthz").await
    })
    .await;
    worker.assert_running();
    let listening = listening_sockets(worker.pid());
    assert!(
        listening
            .iter()
            .any(|a| a.ip().is_unspecified() && a.port() == port),
        "{listening:?}"
    );
    let ran = worker.stop().await;
    assert!(ran.stderr.contains("non-loopback"), "{}", ran.stderr);
}
