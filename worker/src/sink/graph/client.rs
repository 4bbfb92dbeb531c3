//! HTTP to Microsoft Graph: authentication, per-mailbox limits, throttling, and the
//! classification of failures into [`SinkError`]s.
//!
//! Every request to a mailbox holds one of that mailbox's [`MAX_CONCURRENT_PER_MAILBOX`]
//! permits (Graph allows 4 concurrent requests per app and mailbox). A 429 (or a 503 with
//! `Retry-After`) pauses the mailbox for every run of the process: no request is sent to it
//! until the pause is over, and the throttled request is sent again then. Graph did not
//! carry it out, so it is nobody's failure. A request that would have to wait past its
//! caller's deadline is not sent: it fails as [`SinkError::Deferred`] with the pause as
//! `retry_after`. A 401 drops the cached token and the request is sent once more with a
//! new one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::auth::TokenCache;
use crate::sink::SinkError;
use crate::sink::mailbox::{Mailboxes, RemoteMailbox};
use crate::sink::pause::Pause;

/// Graph's limit of concurrent requests per app and mailbox.
pub const MAX_CONCURRENT_PER_MAILBOX: usize = 4;

/// Longest Retry-After honoured as given (a larger one is capped).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The pause after a 429 that names no Retry-After.
const DEFAULT_PAUSE: Duration = Duration::from_secs(5);

/// What the client remembers about one mailbox.
#[derive(Debug)]
pub struct Mailbox {
    /// The mailbox (user principal name or id) as it appears in paths, encoded.
    pub path: String,
    /// As configured, for messages.
    pub address: String,
    permits: Semaphore,
    /// Graph asked to send nothing to this mailbox for a while.
    pub pause: Pause,
    /// The id of the "notarXpert" calendar, once known.
    pub calendar_id: tokio::sync::Mutex<Option<String>>,
    /// Appointments whose creation may have happened although no answer arrived: look
    /// them up by their extended property before creating them again.
    pub uncertain: Mutex<HashSet<i64>>,
}

impl RemoteMailbox for Mailbox {
    fn pause(&self) -> &Pause {
        &self.pause
    }

    fn throttled(&self) -> String {
        format!("Microsoft Graph throttles mailbox {}", self.address)
    }

    fn address(&self) -> &str {
        &self.address
    }
}

/// A Graph answer that the caller interprets (2xx, and 4xx other than 401/403/429).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// Graph's `error.code` (e.g. `ErrorItemNotFound`), or "".
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect()
    }

    /// This answer as a failure of `what`: 4xx → permanent, anything else → retryable.
    pub fn failure(&self, what: &str) -> SinkError {
        let message = format!(
            "{what}: Graph answered {} {} {}",
            self.status,
            self.code(),
            self.message()
        )
        .trim_end()
        .to_string();
        if self.status.is_client_error() && !matches!(self.status.as_u16(), 408 | 409 | 412 | 423) {
            SinkError::Permanent { message }
        } else {
            SinkError::Retryable {
                message,
                retry_after: None,
            }
        }
    }
}

pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    pub auth: TokenCache,
    mailboxes: Mailboxes<Mailbox>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    pub fn new(http: reqwest::Client, base_url: &str, auth: TokenCache) -> GraphClient {
        GraphClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            auth,
            mailboxes: Mailboxes::default(),
        }
    }

    /// A link Graph sent (`@odata.nextLink`) as the path and query [`GraphClient::send`]
    /// takes; `None` when it does not lead to this client's API base.
    pub fn relative(&self, link: &str) -> Option<(String, String)> {
        let rest = link.strip_prefix(&self.base_url)?;
        if !rest.starts_with('/') {
            return None;
        }
        Some(match rest.split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (rest.to_string(), String::new()),
        })
    }

    /// The state kept for `address` (created on first use).
    pub fn mailbox(&self, address: &str) -> Arc<Mailbox> {
        self.mailboxes.get(address, || Mailbox {
            path: format!("/users/{}", path_segment(address)),
            address: address.to_string(),
            permits: Semaphore::new(MAX_CONCURRENT_PER_MAILBOX),
            pause: Pause::default(),
            calendar_id: tokio::sync::Mutex::new(None),
            uncertain: Mutex::new(HashSet::new()),
        })
    }

    /// Send one request to `mailbox`. `path` starts with `/` and is relative to the
    /// API base; `query` is an encoded query string or "". While the mailbox is paused the
    /// request waits, and a throttled request is sent again after the pause, as long as
    /// that is before `deadline`; otherwise it fails as [`SinkError::Deferred`].
    pub async fn send(
        &self,
        mailbox: &Mailbox,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Reply, SinkError> {
        let mut refreshed = false;
        loop {
            mailbox
                .pause
                .wait_out(deadline, |left| mailbox.deferred(left))
                .await?;
            let token = self.auth.get().await?;
            let _permit = mailbox
                .permits
                .acquire()
                .await
                .map_err(|_| SinkError::Retryable {
                    message: "the Graph client is shutting down".into(),
                    retry_after: None,
                })?;
            if mailbox.pause.left().is_some() {
                // Paused while this request waited for its permit.
                continue;
            }
            let url = if query.is_empty() {
                format!("{}{path}", self.base_url)
            } else {
                format!("{}{path}?{query}", self.base_url)
            };
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::AUTHORIZATION, token.header_value())
                .header("Prefer", "IdType=\"ImmutableId\"")
                // Event bodies as livesync writes them (a listing reads them back).
                .header("Prefer", "outlook.body-content-type=\"text\"")
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let started = std::time::Instant::now();
            let result = request.send().await;
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%method, path, error.message = %describe(&e), "Graph request failed");
                    return Err(SinkError::Retryable {
                        message: format!(
                            "{method} {path}: Microsoft Graph did not answer: {}",
                            describe(&e)
                        ),
                        retry_after: None,
                    });
                }
            };
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let bytes = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    return Err(SinkError::Retryable {
                        message: format!(
                            "{method} {path}: the answer from Microsoft Graph broke off: {}",
                            describe(&e)
                        ),
                        retry_after: None,
                    });
                }
            };
            tracing::debug!(%method, path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "Graph request");
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let reply = Reply { status, body };
            match status.as_u16() {
                401 if !refreshed => {
                    // Expired or revoked early: one more try with a fresh token.
                    self.auth.invalidate(&token).await;
                    refreshed = true;
                    continue;
                }
                401 => {
                    return Err(SinkError::Config {
                        message: format!(
                            "Microsoft Graph rejects the app's token ({}) for mailbox {}: \
                             the app registration needs the application permission \
                             Calendars.ReadWrite with admin consent",
                            reply.code(),
                            mailbox.address
                        ),
                    });
                }
                403 => {
                    return Err(SinkError::Config {
                        message: format!(
                            "Microsoft Graph denies access to mailbox {} ({} {}): grant the \
                             application permission Calendars.ReadWrite with admin consent, \
                             and if RBAC for Applications scopes the app, include this mailbox",
                            mailbox.address,
                            reply.code(),
                            reply.message()
                        ),
                    });
                }
                429 | 503 if status.as_u16() == 429 || retry_after.is_some() => {
                    // Not carried out: pause the mailbox, then send it again.
                    let wait = retry_after.unwrap_or(DEFAULT_PAUSE);
                    tracing::debug!(%method, path, mailbox = %mailbox.address, status = status.as_u16(), code = reply.code(), pause_ms = wait.as_millis() as u64, "Microsoft Graph throttles the mailbox");
                    mailbox
                        .pause
                        .extend_or_defer(wait, deadline, |wait| mailbox.deferred(wait))?;
                    continue;
                }
                s if s >= 500 => {
                    return Err(SinkError::Retryable {
                        message: format!(
                            "{method} {path}: Microsoft Graph failed ({status} {})",
                            reply.code()
                        ),
                        retry_after,
                    });
                }
                _ => return Ok(reply),
            }
        }
    }
}

/// `Retry-After` in seconds (fractions allowed); an HTTP date is not used by Graph.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

/// A reqwest error in words, without its URL (which holds nothing secret, but is long).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    let mut chain = String::from(kind);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    chain
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One path segment (a mailbox, an event id), percent-encoded; `@` and `=` stay.
pub fn path_segment(s: &str) -> String {
    encode(s, |b| is_unreserved(b) || matches!(b, b'@' | b'=' | b':'))
}

/// A query or form value, percent-encoded (space as `%20`).
pub fn form_encode(s: &str) -> String {
    encode(s, is_unreserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_fractional_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "1.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn segments_and_values_are_encoded() {
        assert_eq!(path_segment("m.muster@kanzlei.at"), "m.muster@kanzlei.at");
        assert_eq!(path_segment("AAk/x+y=="), "AAk%2Fx%2By==");
        assert_eq!(form_encode("name eq 'a'"), "name%20eq%20%27a%27");
    }

    #[test]
    fn a_next_link_is_followed_only_below_the_api_base() {
        let http = reqwest::Client::new();
        let auth = TokenCache::new(
            http.clone(),
            "https://login.example",
            "tenant",
            "client",
            crate::config::Secret::new("secret"),
        );
        let client = GraphClient::new(http, "https://graph.example/v1.0/", auth);
        assert_eq!(
            client.relative("https://graph.example/v1.0/users/m@x/calendarView?$skip=100"),
            Some(("/users/m@x/calendarView".into(), "$skip=100".into()))
        );
        assert_eq!(
            client.relative("https://graph.example/v1.0/users/m@x/events"),
            Some(("/users/m@x/events".into(), String::new()))
        );
        assert_eq!(
            client.relative("https://elsewhere.example/v1.0/users"),
            None
        );
        assert_eq!(
            client.relative("https://graph.example/v1.0beta/users"),
            None
        );
    }
}
