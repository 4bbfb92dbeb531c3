//! A private PostgreSQL server started from the local installation: the embedded default
//! behind `livesync-worker demo`, the test harness and the benchmarks when no
//! `DATABASE_URL` is configured.
//!
//! The cluster lives in a fresh directory, listens on 127.0.0.1 on a free port and on a
//! socket in that directory, trusts local connections and is stopped (and its directory
//! removed) when the [`EmbeddedPg`] is dropped — or, should the process die first, by a
//! small watchdog that notices the owning process is gone. PostgreSQL refuses to run as
//! root, so as root every server command runs as the `postgres` user.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb in $LIVESYNC_PG_BIN, \
         /usr/lib/postgresql/*/bin and PATH): install PostgreSQL \
         (Debian: apt-get install postgresql) or set DATABASE_URL"
    )]
    NoBinaries,
    #[error("running as root needs a 'postgres' system user to own the private cluster: {0}")]
    NoPostgresUser(String),
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("I/O error preparing the private cluster: {0}")]
    Io(#[from] io::Error),
}

/// How the private server is tuned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Trade durability for speed (fsync off): for tests only, never for data kept.
    pub ephemeral: bool,
}

/// A running private PostgreSQL server. Dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct EmbeddedPg {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl EmbeddedPg {
    /// Initialise and start a cluster in a new directory below the system temp dir.
    pub fn start(options: Options) -> Result<Self, EmbeddedPgError> {
        Self::start_inner(options, false)
    }

    /// Like [`EmbeddedPg::start`], with TLS on: a private CA and a server certificate for
    /// `localhost` and `127.0.0.1` are made with `openssl`; [`EmbeddedPg::tls_certificate`]
    /// is the CA's certificate, for `sslrootcert=` in a client URL.
    pub fn start_tls(options: Options) -> Result<Self, EmbeddedPgError> {
        Self::start_inner(options, true)
    }

    /// The CA certificate (PEM) that signed the server's certificate, when started with TLS.
    pub fn tls_certificate(&self) -> Option<PathBuf> {
        let cert = self.dir.join("root.crt");
        cert.exists().then_some(cert)
    }

    fn start_inner(options: Options, tls: bool) -> Result<Self, EmbeddedPgError> {
        let bin = find_bin_dir().ok_or(EmbeddedPgError::NoBinaries)?;
        let as_postgres = running_as_root();
        let dir = std::env::temp_dir().join(format!(
            "livesync-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir)?;
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .output()?;
            if !out.status.success() {
                return Err(EmbeddedPgError::NoPostgresUser(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
        }
        let port = free_port()?;
        let pg = EmbeddedPg {
            dir,
            bin,
            port,
            as_postgres,
        };
        pg.init()?;
        if tls {
            pg.make_certificate()?;
        }
        pg.launch(options, tls)?;
        pg.spawn_watchdog();
        Ok(pg)
    }

    /// Connection URL for a database on this server (user `postgres`, trust auth).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, database)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory holding the cluster, its socket and `server.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.arg("-u").arg("postgres").arg("--").arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run(&self, step: &'static str, cmd: &mut Command) -> Result<(), EmbeddedPgError> {
        let out = cmd.stdin(Stdio::null()).output()?;
        if out.status.success() {
            Ok(())
        } else {
            let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if let Ok(log) = fs::read_to_string(self.dir.join("server.log")) {
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                detail.push_str("\nserver log: ");
                detail.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            Err(EmbeddedPgError::Step { step, detail })
        }
    }

    fn init(&self) -> Result<(), EmbeddedPgError> {
        self.run(
            "initdb",
            self.command("initdb").arg("-D").arg(self.data_dir()).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ]),
        )
    }

    /// A small CA (`root.crt`) and a server certificate it signed for `localhost` and
    /// `127.0.0.1` (`server.crt`, `server.key`), as a DBA would set up.
    fn make_certificate(&self) -> Result<(), EmbeddedPgError> {
        let d = &self.dir;
        fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        let steps: [(&'static str, Vec<&str>); 3] = [
            (
                "openssl: CA",
                vec![
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=livesync test CA",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "root.crt",
                ],
            ),
            (
                "openssl: server key",
                vec![
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                ],
            ),
            (
                "openssl: server certificate",
                vec![
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "root.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "server.ext",
                    "-out",
                    "server.crt",
                ],
            ),
        ];
        for (step, args) in steps {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()?;
            if !out.status.success() {
                return Err(EmbeddedPgError::Step {
                    step,
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join("server.key"), fs::Permissions::from_mode(0o600))?;
        if self.as_postgres {
            for f in ["server.crt", "server.key"] {
                let _ = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(d.join(f))
                    .status();
            }
        }
        Ok(())
    }

    fn launch(&self, options: Options, tls: bool) -> Result<(), EmbeddedPgError> {
        let mut server_opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=300",
            self.port,
            self.dir.display()
        );
        if tls {
            server_opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.dir.join("server.crt").display(),
                self.dir.join("server.key").display()
            ));
        }
        if options.ephemeral {
            server_opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        self.run(
            "pg_ctl start",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &server_opts, "start"]),
        )
    }

    /// Stops the server when this process is gone, however it ended.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} stop -m immediate",
                pg_ctl.display(),
                self.data_dir().display()
            )
        } else {
            format!(
                "{} -D {} stop -m immediate",
                pg_ctl.display(),
                self.data_dir().display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             [ -d {data} ] && {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            data = self.data_dir().display(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Restart the server in place (fast shutdown, then start): every connection is cut,
    /// the data stays, the port stays.
    pub fn restart(&self) -> Result<(), EmbeddedPgError> {
        self.run(
            "pg_ctl restart",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-m", "fast", "-w", "-t", "60", "restart"]),
        )
    }

    /// Stop now (fast shutdown) and remove the files.
    pub fn stop(&self) {
        if self.data_dir().exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        self.stop();
    }
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `$LIVESYNC_PG_BIN`, the newest `/usr/lib/postgresql/N/bin`, or a directory on PATH that
/// holds `initdb`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LIVESYNC_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}
