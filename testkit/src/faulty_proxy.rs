//! A loopback HTTP proxy in front of a real server (a CalDAV server here) that fails the
//! requests a test picks: it drops their connection without an answer, or answers them
//! itself with a throttling status and `Retry-After`. Everything else is passed through,
//! one request per connection (`Connection: close` both ways). Every request is recorded.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to a picked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without passing the request on or answering.
    Drop,
    /// Answer `status` with this `Retry-After` without passing the request on.
    Throttle { status: u16, retry_after: String },
}

/// One request as the proxy saw it, and what it did.
#[derive(Debug, Clone)]
pub struct Passed {
    pub method: String,
    pub path: String,
    /// The status the client got; `None` for a dropped connection.
    pub status: Option<u16>,
}

struct Rule {
    method: String,
    path_contains: String,
    times: u32,
    fault: Fault,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    passed: Vec<Passed>,
}

pub struct FaultyProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl FaultyProxy {
    /// A proxy on a free loopback port in front of `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, shared.clone()));
            }
        });
        FaultyProxy { port, state }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Apply `fault` to the next `times` requests with this method whose path contains
    /// `path_contains` (rules are tried in the order given).
    pub fn fail(&self, method: &str, path_contains: &str, times: u32, fault: Fault) {
        self.state.lock().unwrap().rules.push(Rule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            times,
            fault,
        });
    }

    pub fn passed(&self) -> Vec<Passed> {
        self.state.lock().unwrap().passed.clone()
    }
}

/// The head (up to the blank line) and what was read beyond it.
async fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with its `Connection` header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut out: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n\r\n");
    out
}

async fn serve(mut client: TcpStream, upstream: u16, state: Arc<Mutex<State>>) {
    let Some((head, mut body)) = read_head(&mut client).await else {
        return;
    };
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let length: usize = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut chunk = [0u8; 8192];
    while body.len() < length {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let fault = {
        let mut s = state.lock().unwrap();
        let rule = s
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains));
        rule.map(|r| {
            r.times -= 1;
            r.fault.clone()
        })
    };
    let record = |status: Option<u16>| {
        state.lock().unwrap().passed.push(Passed {
            method: method.clone(),
            path: path.clone(),
            status,
        })
    };
    match fault {
        Some(Fault::Drop) => {
            record(None);
        }
        Some(Fault::Throttle {
            status,
            retry_after,
        }) => {
            record(Some(status));
            let answer = format!(
                "HTTP/1.1 {status} Throttled\r\nRetry-After: {retry_after}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.write_all(answer.as_bytes()).await;
        }
        None => {
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                record(None);
                return;
            };
            let mut request = closing(&head).into_bytes();
            request.extend_from_slice(&body);
            if server.write_all(&request).await.is_err() {
                record(None);
                return;
            }
            let mut answer = Vec::new();
            if server.read_to_end(&mut answer).await.is_err() {
                record(None);
                return;
            }
            let end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len(), |e| e + 4);
            let answer_head = String::from_utf8_lossy(&answer[..end]).into_owned();
            let status = answer_head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok());
            record(status);
            let mut out = closing(&answer_head).into_bytes();
            out.extend_from_slice(&answer[end..]);
            let _ = client.write_all(&out).await;
        }
    }
    let _ = client.shutdown().await;
}
