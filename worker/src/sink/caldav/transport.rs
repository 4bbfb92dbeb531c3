//! HTTP for the CalDAV sink: one pooled HTTPS client (rustls with aws-lc-rs, the platform's
//! root certificates), libdav's typed requests sent through it with the person's
//! credentials, a bound on requests in flight per server, a timeout per request, and the
//! mapping of HTTP answers onto [`SinkError`].
//!
//! A server that throttles (429, or 503 with `Retry-After`) is paused for every caller of
//! the process: nothing is sent to it until the pause is over, and the throttled request
//! is sent again then (the server did not carry it out, so it is nobody's failure). A
//! request that would have to wait past its caller's deadline is not sent: it fails as
//! [`SinkError::Deferred`] with the pause as `retry_after`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::{HeaderValue, Method, StatusCode, Uri, header, response::Parts};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use libdav::dav::{RequestError, WebDavClient};
use libdav::requests::DavRequest;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::sink::SinkError;
use crate::sink::pause::{self, Pause};

type HttpsClient = Client<HttpsConnector<HttpConnector>, String>;

/// The pause after a 429 that names no Retry-After.
const DEFAULT_PAUSE: Duration = Duration::from_secs(5);

/// Longest Retry-After honoured as given (a larger one is capped).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Sends requests to CalDAV servers.
pub struct Transport {
    dav: WebDavClient<HttpsClient>,
    timeout: Duration,
    max_concurrency: usize,
    /// Per server (`scheme://authority`).
    servers: Mutex<HashMap<String, Arc<Server>>>,
}

/// What the transport remembers about one server.
struct Server {
    /// Requests in flight to it.
    permits: Semaphore,
    /// The server asked to be sent nothing for a while.
    pause: Pause,
}

/// A server's answer, whatever its status.
pub struct Reply {
    pub method: Method,
    pub url: String,
    pub parts: Parts,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn status(&self) -> StatusCode {
        self.parts.status
    }

    pub fn etag(&self) -> Option<String> {
        self.parts
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Does the body name this (CalDAV/WebDAV) precondition element?
    pub fn names_precondition(&self, element: &str) -> bool {
        String::from_utf8_lossy(&self.body).contains(element)
    }

    /// The first 200 characters of the body on one line (for messages).
    fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        line.chars().take(200).collect()
    }
}

impl Transport {
    pub fn new(timeout: Duration, max_concurrency: usize) -> Result<Transport, SinkError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error.message = %e, "no usable system root certificates; using the built-in ones");
                HttpsConnectorBuilder::new()
                    .with_provider_and_webpki_roots(provider)
                    .map_err(|e| SinkError::Config {
                        message: format!("cannot set up TLS for CalDAV: {e}"),
                    })?
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client: HttpsClient = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        // libdav's base URL is unused: every request is prepared against its own origin.
        let dav = WebDavClient::new(Uri::from_static("http://localhost/"), client);
        Ok(Transport {
            dav,
            timeout,
            max_concurrency: max_concurrency.max(1),
            servers: Mutex::new(HashMap::new()),
        })
    }

    /// Requests in flight per server, at most.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    fn server(&self, origin: &Uri) -> Arc<Server> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers
            .entry(origin.to_string())
            .or_insert_with(|| {
                Arc::new(Server {
                    permits: Semaphore::new(self.max_concurrency),
                    pause: Pause::default(),
                })
            })
            .clone()
    }

    /// How much longer the server at `origin` is paused; `None` when requests may go.
    pub fn pause_left(&self, origin: &Uri) -> Option<Duration> {
        self.server(origin).pause.left()
    }

    /// Send `request` to the server at `origin`, at most `max_concurrency` at a time per
    /// server. Any answer is a [`Reply`] (but a throttling one, see the module's note); no
    /// answer (network, timeout) is retryable.
    pub async fn send<R: DavRequest>(
        &self,
        origin: &Uri,
        auth: Option<&HeaderValue>,
        request: &R,
        deadline: Instant,
    ) -> Result<Reply, SinkError> {
        let server = self.server(origin);
        loop {
            server
                .pause
                .wait_out(deadline, |left| deferred(origin, left))
                .await?;
            let permit = server
                .permits
                .acquire()
                .await
                .map_err(|_| SinkError::Retryable {
                    message: "the CalDAV client is shutting down".into(),
                    retry_after: None,
                })?;
            if server.pause.left().is_some() {
                // Paused while this request waited for its permit.
                continue;
            }
            let reply = self.send_once(origin, auth, request).await;
            drop(permit);
            let reply = reply?;
            let status = reply.status().as_u16();
            let retry_after = retry_after(&reply.parts);
            if status == 429 || (status == 503 && retry_after.is_some()) {
                let wait = retry_after.unwrap_or(DEFAULT_PAUSE).min(MAX_RETRY_AFTER);
                tracing::debug!(method = %reply.method, url = %reply.url, status, pause_ms = wait.as_millis() as u64, "the CalDAV server throttles");
                server
                    .pause
                    .extend_or_defer(wait, deadline, |wait| deferred(origin, wait))?;
                continue;
            }
            return Ok(reply);
        }
    }

    /// One request, one answer.
    async fn send_once<R: DavRequest>(
        &self,
        origin: &Uri,
        auth: Option<&HeaderValue>,
        request: &R,
    ) -> Result<Reply, SinkError> {
        let mut http = request
            .prepare_request(origin.clone())
            .map_err(|e| SinkError::Config {
                message: format!("cannot build a CalDAV request for {origin}: {e}"),
            })?;
        if let Some(auth) = auth {
            http.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        http.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("livesync/", env!("CARGO_PKG_VERSION"))),
        );
        let method = http.method().clone();
        let url = http.uri().to_string();

        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, self.dav.request_raw(http)).await;
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!("livesync_caldav_request_seconds", "method" => method.to_string())
            .record(seconds);
        match result {
            Err(_) => Err(SinkError::Retryable {
                message: format!(
                    "{method} {url}: no answer within {} s",
                    self.timeout.as_secs()
                ),
                retry_after: None,
            }),
            Ok(Err(e)) => Err(SinkError::Retryable {
                message: format!("{method} {url}: {}", request_failure(&e)),
                retry_after: None,
            }),
            Ok(Ok((parts, body))) => {
                tracing::debug!(%method, %url, status = parts.status.as_u16(), seconds, "caldav request");
                Ok(Reply {
                    method,
                    url,
                    parts,
                    body: body.to_vec(),
                })
            }
        }
    }
}

/// Not sent because the server's pause of `left` outlasts the caller's deadline.
pub fn deferred(origin: &Uri, left: Duration) -> SinkError {
    let server = origin.to_string();
    let server = server.trim_end_matches('/');
    pause::deferred(&format!("the CalDAV server {server} throttles"), left)
}

/// Why a request got no answer, down to the root cause ("Connection refused"). libdav's
/// `RequestError::Client` shows the client's error but does not name it as its source, so
/// its chain is walked from the client's error. Neither the request's URL (no user info,
/// see [`super::target::Collection`]) nor its headers are part of these errors.
fn request_failure<E: std::error::Error>(e: &RequestError<E>) -> String {
    match e {
        RequestError::Client(client) => format!("request failed: {}", chain(client)),
        other => chain(other),
    }
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Preconditions with which a server refuses the object itself (RFC 4791 §5.3.2.1).
const OBJECT_PRECONDITIONS: &[&str] = &[
    "valid-calendar-data",
    "supported-calendar-data",
    "valid-calendar-object-resource",
    "supported-calendar-component",
    "max-resource-size",
    "min-date-time",
    "max-date-time",
    "max-attendees-per-instance",
];

/// What an unexpected answer means for the worker. `login` names the account (never the
/// password) in configuration messages.
pub fn failure(reply: &Reply, login: Option<&str>) -> SinkError {
    let status = reply.status();
    let what = format!("{} {} answered {}", reply.method, reply.url, status);
    let excerpt = reply.excerpt();
    let detail = if excerpt.is_empty() {
        String::new()
    } else {
        format!(" ({excerpt})")
    };
    let who = login
        .map(|l| format!(" for user {l:?}"))
        .unwrap_or_default();
    match status.as_u16() {
        401 | 407 => SinkError::Config {
            message: format!(
                "{what}: the server rejected the credentials{who}; check LIVESYNC_CALDAV_USERNAME and LIVESYNC_CALDAV_PASSWORD"
            ),
        },
        403 if OBJECT_PRECONDITIONS
            .iter()
            .any(|p| reply.names_precondition(p)) =>
        {
            SinkError::Permanent {
                message: format!("{what}: the server refused the calendar object{detail}"),
            }
        }
        403 => SinkError::Config {
            message: format!("{what}: no permission{who} for this calendar{detail}"),
        },
        404 => SinkError::Config {
            message: format!(
                "{what}: no such calendar; check LIVESYNC_CALDAV_URL or the person's calendar address"
            ),
        },
        400 | 413 | 415 | 422 => SinkError::Permanent {
            message: format!("{what}: the server refused the calendar object{detail}"),
        },
        _ => SinkError::Retryable {
            message: format!("{what}{detail}"),
            retry_after: retry_after(&reply.parts),
        },
    }
}

/// The server's `Retry-After` (seconds, possibly fractional, or an HTTP date).
pub fn retry_after(parts: &Parts) -> Option<Duration> {
    let value = parts
        .headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut b = ::http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        Reply {
            method: Method::PUT,
            url: "https://dav.example/u/cal/x.ics".into(),
            parts,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn throttling_honours_retry_after_in_seconds_and_dates() {
        match failure(&reply(429, &[("retry-after", "7")], ""), None) {
            SinkError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
        match failure(&reply(503, &[("retry-after", "1.5")], ""), None) {
            SinkError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_millis(1500)))
            }
            other => panic!("{other:?}"),
        }
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let later = later.replace("+0000", "GMT");
        let d = retry_after(&reply(503, &[("retry-after", &later)], "").parts).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        match failure(&reply(502, &[], "bad gateway"), None) {
            SinkError::Retryable { retry_after, .. } => assert_eq!(retry_after, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_map_onto_what_the_worker_does_next() {
        let config = |s| {
            matches!(
                failure(&reply(s, &[], ""), Some("mmuster")),
                SinkError::Config { .. }
            )
        };
        let permanent = |s| {
            matches!(
                failure(&reply(s, &[], ""), None),
                SinkError::Permanent { .. }
            )
        };
        assert!(config(401) && config(403) && config(404));
        assert!(permanent(400) && permanent(413) && permanent(415));
        let refused = reply(
            403,
            &[],
            r#"<error xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><C:valid-calendar-data/></error>"#,
        );
        assert!(matches!(
            failure(&refused, None),
            SinkError::Permanent { .. }
        ));
        let e = failure(&reply(401, &[], ""), Some("mmuster")).to_string();
        assert!(e.contains("mmuster") && e.contains("credentials"), "{e}");
    }
}
