//! NTLM sign-in of the EWS sink against an acceptor written by others: pyspnego's NTLM
//! server (`spnego.server(protocol="ntlm")`, PyPI, installed into `.venv` by
//! `scripts/caldav-venv.sh`) behind a small HTTPS front that, like IIS in front of
//! Exchange, signs each connection in with NTLM (NEGOTIATE → 401 CHALLENGE →
//! AUTHENTICATE), requires the `tls-server-end-point` channel binding of its certificate
//! (Extended Protection) and pyspnego's MIC check, and passes signed-in requests on to the
//! EWS fake. The certificate is issued by a test CA that only `LIVESYNC_EWS_CA_FILE`
//! makes trusted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use livesync_worker::config::{EwsAuth, Secret};
use livesync_worker::sink::ews::EwsSink;
use livesync_worker::sink::{CalendarSink, SinkError};
use tokio::process::{Child, Command};

use crate::ews::settings;
use crate::mailbox_support::{MAILBOX, batch, owner, vienna};
use livesync_testkit::ews_fake::{FakeEws, PASSWORD, USER};

/// The HTTPS front: NTLM per connection with pyspnego's acceptor, then on to the fake.
const FRONT: &str = r#"
import base64, hashlib, http.server, os, ssl, sys, urllib.error, urllib.request
import spnego
from spnego.channel_bindings import GssChannelBindings

upstream, cert, key, port_file, log_path, basic = sys.argv[1:7]
der = ssl.PEM_cert_to_DER_cert(open(cert).read())
bindings = GssChannelBindings(application_data=b"tls-server-end-point:" + hashlib.sha256(der).digest())
log = open(log_path, "a", buffering=1)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.ctx = None
        self.user = None

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        auth = self.headers.get("Authorization", "")
        if auth.startswith("NTLM "):
            token = base64.b64decode(auth[5:])
            if token[8:12] == b"\x01\x00\x00\x00" or self.ctx is None:
                self.ctx = spnego.server(protocol="ntlm", channel_bindings=bindings)
                self.user = None
            try:
                out = self.ctx.step(token)
            except Exception as e:
                log.write(f"refused {type(e).__name__}\n")
                self.ctx = None
                return self.reply(401, headers=[("WWW-Authenticate", "NTLM")])
            if not self.ctx.complete:
                log.write("challenge\n")
                return self.reply(401, headers=[("WWW-Authenticate", "NTLM " + base64.b64encode(out).decode())])
            self.user = self.ctx.client_principal
            log.write(f"signed in {self.user}\n")
        elif auth:
            log.write("other scheme\n")
        if self.user is None:
            return self.reply(401, headers=[("WWW-Authenticate", "NTLM")])
        log.write("forwarded\n")
        request = urllib.request.Request(upstream, data=body, method="POST", headers={
            "Authorization": basic,
            "Content-Type": "text/xml; charset=utf-8",
            "X-AnchorMailbox": self.headers.get("X-AnchorMailbox", ""),
        })
        try:
            with urllib.request.urlopen(request) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        self.reply(status, data, [("Content-Type", "text/xml; charset=utf-8")])

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(cert, key)
server.socket = tls.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"#;

fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for localhost and 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Kanzlei Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "server.ext",
        ],
    );
}

struct Front {
    url: String,
    log: PathBuf,
    _child: Child,
    dir: tempfile::TempDir,
}

impl Front {
    async fn start(fake: &FakeEws) -> Front {
        let python = venv_python();
        let has_spnego = std::process::Command::new(&python)
            .args(["-c", "import spnego"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has_spnego,
            "{} with pyspnego is missing: run scripts/caldav-venv.sh (it installs the NTLM \
             acceptor with the CalDAV servers)",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let users = dir.path().join("ntlm-users");
        let (domain, account) = USER.split_once('\\').unwrap();
        std::fs::write(&users, format!("{domain}:{account}:{PASSWORD}\n")).unwrap();
        let script = dir.path().join("front.py");
        std::fs::write(&script, FRONT).unwrap();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        let port_file = dir.path().join("port");
        let log = dir.path().join("front.log");
        let child = Command::new(&python)
            .arg(&script)
            .arg(&fake.url)
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .arg(&port_file)
            .arg(&log)
            .arg(basic)
            .env("NTLM_USER_FILE", &users)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the NTLM front");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the NTLM front did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Front {
            url: format!("https://localhost:{port}/EWS/Exchange.asmx"),
            log,
            _child: child,
            dir,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn lines(&self, prefix: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

#[tokio::test]
async fn ntlm_with_channel_binding_signs_in_against_pyspnegos_acceptor() {
    let fake = FakeEws::start().await;
    let front = Front::start(&fake).await;
    let mut s = settings(&fake);
    s.url = front.url.clone();
    s.auth = EwsAuth::Ntlm;
    s.ca_file = Some(front.ca());
    s.max_concurrency = 3;
    let sink = EwsSink::new(&s).unwrap();
    sink.check().await.expect("signed in with NTLM");
    let r = sink.apply(&owner(), &batch(1..=9), &vienna()).await;
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    assert_eq!(fake.items(MAILBOX).len(), 9);
    assert_eq!(front.lines("refused"), 0);
    let signed_in = front.lines("signed in KANZLEI\\svc-livesync");
    let forwarded = front.lines("forwarded");
    assert_eq!(
        forwarded,
        fake.requests().len(),
        "every request went through NTLM"
    );
    assert!(
        (1..=3).contains(&signed_in),
        "one handshake per connection, not per request: {signed_in} for {forwarded} requests"
    );

    // A wrong password: the acceptor refuses the AUTHENTICATE message.
    let wrong = "Falsch~Kennwort_4711";
    s.password = Secret::new(wrong);
    let e = EwsSink::new(&s).unwrap().check().await.unwrap_err();
    match &e {
        SinkError::Config { message } => {
            assert!(
                message.contains(USER) && message.contains("401"),
                "{message}"
            );
            assert!(!message.contains(wrong));
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert_eq!(front.lines("refused"), 1);

    // Without the firm's CA the certificate is not trusted.
    s.password = Secret::new(PASSWORD);
    s.ca_file = None;
    let e = EwsSink::new(&s).unwrap().check().await.unwrap_err();
    assert!(
        matches!(&e, SinkError::Retryable { message, .. } if message.contains("certificate") || message.contains("UnknownIssuer")),
        "{e:?}"
    );
}
