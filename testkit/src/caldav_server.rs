//! Real CalDAV servers for the tests and the benchmarks: Radicale (htpasswd auth, so each
//! person may touch only their own calendars) and Xandikos, run from `.venv/bin/` (made by
//! `scripts/caldav-venv.sh`), each on a free loopback port with its data in a temp dir (or,
//! for the benchmarks, a directory that stays), killed on drop. A server can be stopped
//! and started again on the same port and data (an outage), and calendars are read back
//! with an independent client (PyPI `caldav`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use livesync_worker::config::{CalDavSettings, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The Xpert users the Radicale fixture knows, each with a password of their own, made by
/// [`PASSWORD_TEMPLATE`] (as a firm might give `LIVESYNC_CALDAV_PASSWORD`).
pub const USERS: &[&str] = &["mmuster", "hhuber"];
pub const PASSWORD_TEMPLATE: &str = "Kennwort-{username}-7";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Radicale,
    Xandikos,
}

pub struct CalDavServer {
    pub kind: Kind,
    pub port: u16,
    dir: Storage,
    /// Radicale logs warnings only (a benchmark's server), not every request.
    quiet: bool,
    child: Option<Child>,
}

/// Where a server keeps its data, accounts and log.
enum Storage {
    /// Removed on drop.
    Temp(tempfile::TempDir),
    /// Kept, to be looked at after a failed run.
    Kept(PathBuf),
}

impl Storage {
    fn path(&self) -> &Path {
        match self {
            Storage::Temp(dir) => dir.path(),
            Storage::Kept(dir) => dir,
        }
    }
}

/// `.venv/bin` of the checkout.
pub fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".venv")
        .join("bin")
}

fn venv_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = venv().join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/caldav-venv.sh (it installs Radicale, Xandikos and the \
             Python caldav client into .venv) first",
            path.display()
        );
    }
    Ok(path)
}

/// A port nobody listens on now, on loopback.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

impl CalDavServer {
    /// A server with its data in a temp dir; Radicale knows the fixture's [`USERS`].
    pub async fn start(kind: Kind) -> CalDavServer {
        let dir = tempfile::tempdir().expect("temp dir for the server");
        let users: Vec<String> = USERS.iter().map(|u| u.to_string()).collect();
        CalDavServer::launch(kind, &users, Storage::Temp(dir), false)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn radicale() -> CalDavServer {
        CalDavServer::start(Kind::Radicale).await
    }

    /// A benchmark's Radicale: accounts for `users` (passwords by [`PASSWORD_TEMPLATE`]),
    /// its data, accounts and log in `dir` (emptied first, kept afterwards), logging
    /// warnings only.
    pub async fn radicale_in(dir: &Path, users: &[String]) -> anyhow::Result<CalDavServer> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        CalDavServer::launch(Kind::Radicale, users, Storage::Kept(dir.into()), true).await
    }

    async fn launch(
        kind: Kind,
        users: &[String],
        dir: Storage,
        quiet: bool,
    ) -> anyhow::Result<CalDavServer> {
        std::fs::create_dir_all(dir.path().join("data"))?;
        if kind == Kind::Radicale {
            let accounts: String = users
                .iter()
                .map(|u| format!("{u}:{}\n", password_of(u)))
                .collect();
            std::fs::write(dir.path().join("users"), accounts)?;
        }
        let mut server = CalDavServer {
            kind,
            port: free_port(),
            dir,
            quiet,
            child: None,
        };
        server.resume().await?;
        Ok(server)
    }

    /// Start the server process (again, on the same port and data) and wait until it
    /// answers HTTP.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the server is already running");
        }
        let dir = self.dir.path();
        let data = dir.join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))?;
        let mut command = match self.kind {
            Kind::Radicale => {
                let mut c = Command::new(venv_program("radicale")?);
                c.arg("--config")
                    .arg("")
                    .arg("--server-hosts")
                    .arg(format!("127.0.0.1:{}", self.port))
                    .arg("--auth-type")
                    .arg("htpasswd")
                    .arg("--auth-htpasswd-filename")
                    .arg(dir.join("users"))
                    .arg("--auth-htpasswd-encryption")
                    .arg("plain")
                    .arg("--rights-type")
                    .arg("owner_only")
                    .arg("--storage-filesystem-folder")
                    .arg(&data);
                if self.quiet {
                    c.arg("--logging-level").arg("warning");
                }
                c
            }
            Kind::Xandikos => {
                let mut c = Command::new(venv_program("xandikos")?);
                c.arg("serve")
                    .arg("-d")
                    .arg(&data)
                    .arg("--defaults")
                    .arg("-l")
                    .arg("127.0.0.1")
                    .arg("-p")
                    .arg(self.port.to_string())
                    .arg("--state-dir")
                    .arg(dir.join("state"));
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("start {:?}", self.kind))?;
        self.child = Some(child);

        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Listening is not enough: wait for an HTTP answer.
            if answers_http(self.port).await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "{:?} exited ({status}) at start:\n{}",
                    self.kind,
                    self.log()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{:?} did not answer on port {} within 30 s:\n{}",
                    self.kind,
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kill the server process (SIGKILL), as in an outage. Its data stays.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's version (`radicale.VERSION`, `xandikos.__version__`).
    pub fn version(&self) -> String {
        let (module, attribute) = match self.kind {
            Kind::Radicale => ("radicale", "VERSION"),
            Kind::Xandikos => ("xandikos", "__version__"),
        };
        venv_program("python")
            .ok()
            .and_then(|python| {
                std::process::Command::new(python)
                    .arg("-c")
                    .arg(format!("import {module}; print({module}.{attribute})"))
                    .output()
                    .ok()
            })
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `LIVESYNC_CALDAV_URL` for this server. Radicale: a calendar beside each person's
    /// principal; Xandikos (no users): one calendar per person in the default home.
    pub fn url_template(&self) -> String {
        self.collection_template("notarxpert")
    }

    /// Like [`CalDavServer::url_template`], for calendars named `collection`.
    pub fn collection_template(&self, collection: &str) -> String {
        match self.kind {
            Kind::Radicale => format!("{}/{{username}}/{collection}/", self.origin()),
            Kind::Xandikos => format!(
                "{}/user/calendars/{collection}-{{username}}/",
                self.origin()
            ),
        }
    }

    /// The worker's environment for calendars named `collection` on this server:
    /// `LIVESYNC_CALDAV_URL`, and on Radicale the per-person credentials.
    pub fn worker_env(&self, collection: &str) -> Vec<(String, String)> {
        let mut env = vec![(
            "LIVESYNC_CALDAV_URL".to_string(),
            self.collection_template(collection),
        )];
        if self.kind == Kind::Radicale {
            env.push(("LIVESYNC_CALDAV_USERNAME".into(), "{username}".into()));
            env.push(("LIVESYNC_CALDAV_PASSWORD".into(), PASSWORD_TEMPLATE.into()));
        }
        env
    }

    /// The collection URL of `username`'s calendar.
    pub fn collection_url(&self, username: &str) -> String {
        self.url_template().replace("{username}", username)
    }

    /// Sink settings: per-person credentials on Radicale (user name and password from
    /// templates), none on Xandikos.
    pub fn settings(&self) -> CalDavSettings {
        let (username, password) = match self.kind {
            Kind::Radicale => (
                Some("{username}".to_string()),
                Some(Secret::new(PASSWORD_TEMPLATE)),
            ),
            Kind::Xandikos => (None, None),
        };
        CalDavSettings {
            url_template: self.url_template(),
            username,
            password,
            max_concurrency: 4,
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Read `username`'s calendar with the Python `caldav` client.
    pub async fn read_back(&self, username: &str) -> RemoteCalendar {
        let password = password_of(username);
        let python = venv_program("python").unwrap_or_else(|e| panic!("{e:#}"));
        let output = Command::new(python)
            .arg("-c")
            .arg(READ_BACK)
            .arg(self.collection_url(username))
            .arg(if self.kind == Kind::Radicale {
                username
            } else {
                ""
            })
            .arg(if self.kind == Kind::Radicale {
                password.as_str()
            } else {
                ""
            })
            .output()
            .await
            .expect("run the Python caldav client");
        assert!(
            output.status.success(),
            "reading {username}'s calendar failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "unreadable read-back ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

impl Drop for CalDavServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Whether something on `port` answers an HTTP request.
async fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = b"OPTIONS / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut head = [0u8; 5];
    stream.write_all(request).await.is_ok()
        && tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
            .await
            .is_ok_and(|r| r.is_ok())
        && &head == b"HTTP/"
}

/// A fixture user's password.
pub fn password_of(username: &str) -> String {
    PASSWORD_TEMPLATE.replace("{username}", username)
}

/// What the independent client saw.
#[derive(Debug, serde::Deserialize)]
pub struct RemoteCalendar {
    /// False when the collection does not exist.
    pub exists: bool,
    pub displayname: Option<String>,
    pub objects: Vec<RemoteObject>,
}

#[derive(Debug, serde::Deserialize)]
pub struct RemoteObject {
    pub href: String,
    pub data: String,
}

const READ_BACK: &str = r#"
import json, sys
import caldav
from caldav.lib import error
url, user, password = sys.argv[1], sys.argv[2] or None, sys.argv[3] or None
client = caldav.DAVClient(url=url, username=user, password=password)
calendar = client.calendar(url=url)
try:
    name = calendar.get_display_name()
except error.NotFoundError:
    print(json.dumps({"exists": False, "displayname": None, "objects": []}))
    sys.exit(0)
objects = [{"href": str(e.url), "data": e.data} for e in calendar.events()]
print(json.dumps({"exists": True, "displayname": name, "objects": objects}))
"#;
