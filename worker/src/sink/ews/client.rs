//! HTTP to the EWS endpoint: authentication, limits per mailbox and in total, throttling,
//! and the classification of failures into [`SinkError`]s.
//!
//! Every request holds a permit of its mailbox (`LIVESYNC_EWS_MAX_PER_MAILBOX`) and one of
//! the whole server (`LIVESYNC_EWS_MAX_CONCURRENCY`), both well under Exchange's default
//! `EWSMaxConcurrency` of 27. `ErrorServerBusy` (as a SOAP fault or inside a response
//! message) and `ErrorExceededConnectionCount` mean Exchange did not carry the request
//! out: the mailbox is paused for at least `BackOffMilliseconds` for every run of the
//! process, and the request is sent again after the pause. It is nobody's failure. A
//! request that would have to wait past its caller's deadline is not sent: it fails as
//! [`SinkError::Deferred`] with the pause as `retry_after`.
//!
//! Classification: no answer, a broken answer, 5xx without an EWS fault, and transient
//! EWS codes → [`SinkError::Retryable`]; 401 → [`SinkError::Config`] naming the service
//! account; `ErrorImpersonateUserDenied` → [`SinkError::Config`] naming the
//! ApplicationImpersonation role; `ErrorNonExistentMailbox` → [`SinkError::Permanent`]
//! for that person; a request Exchange refuses as malformed → [`SinkError::Permanent`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::ntlm::NtlmPool;
use super::soap::{self, Answer, Header, ResponseMessage};
use crate::config::{EwsAuth, EwsSettings};
use crate::sink::SinkError;
use crate::sink::graph::client::describe;
use crate::sink::mailbox::{Mailboxes, RemoteMailbox};
use crate::sink::pause::Pause;

/// The pause after `ErrorServerBusy` without `BackOffMilliseconds`, and after
/// `ErrorExceededConnectionCount`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(5);

/// Longest pause honoured as given (a longer one is capped).
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// What the client remembers about one mailbox.
#[derive(Debug)]
pub struct Mailbox {
    /// The SMTP address written through `ExchangeImpersonation`.
    pub address: String,
    permits: Semaphore,
    /// Exchange asked to send nothing for this mailbox for a while.
    pub pause: Pause,
    /// The FolderId of the "notarXpert" folder, once found or created.
    pub folder_id: tokio::sync::Mutex<Option<String>>,
}

impl RemoteMailbox for Mailbox {
    fn pause(&self) -> &Pause {
        &self.pause
    }

    fn throttled(&self) -> String {
        format!(
            "Exchange is busy for mailbox {} (ErrorServerBusy)",
            self.address
        )
    }

    fn address(&self) -> &str {
        &self.address
    }
}

/// How requests are signed in.
enum Auth {
    Basic {
        http: reqwest::Client,
        header: HeaderValue,
    },
    Ntlm(NtlmPool),
}

/// An HTTP answer, before it is read as SOAP.
pub struct HttpReply {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: String,
}

pub struct EwsClient {
    url: String,
    version: String,
    /// The service account, for messages.
    pub account: String,
    auth: Auth,
    total: Semaphore,
    per_mailbox: usize,
    mailboxes: Mailboxes<Mailbox>,
}

impl std::fmt::Debug for EwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EwsClient")
            .field("url", &self.url)
            .field("version", &self.version)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The reqwest client of the sink: system roots plus the firm's CA, a timeout per
/// request. `single_connection` keeps at most one idle connection (an NTLM-authenticated
/// connection must be reused for the handshake and what follows it).
pub fn http_client(
    settings: &EwsSettings,
    single_connection: bool,
) -> Result<reqwest::Client, SinkError> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("livesync/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| SinkError::Config {
            message: format!(
                "LIVESYNC_EWS_CA_FILE {}: cannot read it: {e}",
                path.display()
            ),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SinkError::Config {
            message: format!(
                "LIVESYNC_EWS_CA_FILE {}: no PEM certificate in it: {e}",
                path.display()
            ),
        })?;
        if certs.is_empty() {
            return Err(SinkError::Config {
                message: format!(
                    "LIVESYNC_EWS_CA_FILE {}: no PEM certificate in it",
                    path.display()
                ),
            });
        }
        builder = builder.tls_certs_merge(certs);
    }
    if single_connection {
        builder = builder.pool_max_idle_per_host(1).tls_info(true);
    }
    builder.build().map_err(|e| SinkError::Config {
        message: format!("cannot set up the HTTP client for EWS: {}", describe(&e)),
    })
}

impl EwsClient {
    pub fn new(settings: &EwsSettings) -> Result<EwsClient, SinkError> {
        let auth = match settings.auth {
            EwsAuth::Basic => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    settings.username,
                    settings.password.expose()
                ));
                let mut header =
                    HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                        SinkError::Config {
                            message:
                                "LIVESYNC_EWS_USERNAME or LIVESYNC_EWS_PASSWORD holds characters \
                                  an HTTP header cannot carry"
                                    .into(),
                        }
                    })?;
                header.set_sensitive(true);
                Auth::Basic {
                    http: http_client(settings, false)?,
                    header,
                }
            }
            EwsAuth::Ntlm => Auth::Ntlm(NtlmPool::new(settings)?),
        };
        Ok(EwsClient {
            url: settings.url.clone(),
            version: settings.version.clone(),
            account: settings.username.clone(),
            auth,
            total: Semaphore::new(settings.max_concurrency),
            per_mailbox: settings.max_per_mailbox,
            mailboxes: Mailboxes::default(),
        })
    }

    /// The state kept for `address` (created on first use).
    pub fn mailbox(&self, address: &str) -> Arc<Mailbox> {
        self.mailboxes.get(address, || Mailbox {
            address: address.to_string(),
            permits: Semaphore::new(self.per_mailbox),
            pause: Pause::default(),
            folder_id: tokio::sync::Mutex::new(None),
        })
    }

    /// One POST, signed in; `Err` when no (complete) answer came.
    async fn post(&self, body: &str, anchor: Option<&str>) -> Result<HttpReply, SinkError> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        if let Some(address) = anchor
            && let Ok(v) = HeaderValue::from_str(address)
        {
            // Routes the request to the mailbox's server (recommended with impersonation).
            headers.insert("X-AnchorMailbox", v);
        }
        match &self.auth {
            Auth::Basic { http, header } => {
                let response = http
                    .post(&self.url)
                    .headers(headers)
                    .header(reqwest::header::AUTHORIZATION, header.clone())
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| no_answer(&e))?;
                read(response).await
            }
            Auth::Ntlm(pool) => pool.post(&self.url, headers, body).await,
        }
    }

    /// Send one operation for `mailbox` (impersonated), or for no mailbox, and return its
    /// response messages. Waits while the mailbox is paused, and sends a request Exchange
    /// was too busy for again after the pause, as long as that is before `deadline`;
    /// otherwise fails as [`SinkError::Deferred`].
    pub async fn call(
        &self,
        mailbox: Option<&Mailbox>,
        operation: &str,
        write: impl Fn(&mut soap::Xml),
        deadline: Instant,
    ) -> Result<Vec<ResponseMessage>, SinkError> {
        let header = Header {
            version: &self.version,
            impersonate: mailbox.map(|m| m.address.as_str()),
        };
        let body = soap::envelope(header, write);
        let shutting_down = |_| SinkError::Retryable {
            message: "the EWS client is shutting down".into(),
            retry_after: None,
        };
        loop {
            if let Some(m) = mailbox {
                m.pause.wait_out(deadline, |left| m.deferred(left)).await?;
            }
            let _mailbox_permit = match mailbox {
                Some(m) => Some(m.permits.acquire().await.map_err(shutting_down)?),
                None => None,
            };
            let _permit = self.total.acquire().await.map_err(shutting_down)?;
            if mailbox.is_some_and(|m| m.pause.left().is_some()) {
                // Paused while this request waited for its permits.
                continue;
            }
            let started = std::time::Instant::now();
            let reply = self.post(&body, header.impersonate).await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(operation, mailbox = header.impersonate, error.message = %e, "EWS request failed");
                    return Err(e);
                }
            };
            tracing::debug!(
                operation,
                mailbox = header.impersonate,
                status = reply.status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "EWS request"
            );
            let who = header.impersonate.unwrap_or("(none)");
            if reply.status == StatusCode::UNAUTHORIZED {
                return Err(SinkError::Config {
                    message: format!(
                        "Exchange rejects the service account {} (401): check \
                         LIVESYNC_EWS_USERNAME, LIVESYNC_EWS_PASSWORD and LIVESYNC_EWS_AUTH",
                        self.account
                    ),
                });
            }
            if reply.status == StatusCode::FORBIDDEN {
                return Err(SinkError::Config {
                    message: format!(
                        "the EWS endpoint refuses the service account {} (403): EWS may be \
                         switched off for it (Set-CASMailbox -EwsEnabled) or a proxy blocks it",
                        self.account
                    ),
                });
            }
            let (code, text, back_off) = match soap::parse(&reply.body) {
                Ok(Answer::Fault {
                    code,
                    text,
                    back_off_ms,
                }) => (code, text, back_off_ms),
                Ok(Answer::Messages(ms)) => match ms.first() {
                    Some(m) if is_busy(&m.code) => (m.code.clone(), m.text.clone(), m.back_off_ms),
                    _ if reply.status.is_success() => return Ok(ms),
                    _ => Default::default(),
                },
                Err(_) => Default::default(),
            };
            let code = code.as_str();
            if is_busy(code) {
                let wait = back_off
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_PAUSE)
                    .min(MAX_PAUSE);
                let Some(m) = mailbox else {
                    return Err(SinkError::Retryable {
                        message: format!("{operation}: Exchange is busy ({code})"),
                        retry_after: Some(wait),
                    });
                };
                tracing::debug!(operation, mailbox = %m.address, code, pause_ms = wait.as_millis() as u64, "Exchange throttles the mailbox");
                m.pause
                    .extend_or_defer(wait, deadline, |wait| m.deferred(wait))?;
                continue;
            }
            if !code.is_empty() {
                return Err(self.failure(operation, who, code, &text));
            }
            if matches!(reply.status.as_u16(), 429 | 503)
                && let (Some(m), Some(wait)) = (mailbox, reply.retry_after)
            {
                let wait = wait.min(MAX_PAUSE);
                m.pause
                    .extend_or_defer(wait, deadline, |wait| m.deferred(wait))?;
                continue;
            }
            let excerpt: String = reply
                .body
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(200)
                .collect();
            return Err(SinkError::Retryable {
                message: format!(
                    "{operation} for {who}: no EWS answer ({}{}{excerpt})",
                    reply.status,
                    if excerpt.is_empty() { "" } else { ": " }
                ),
                retry_after: reply.retry_after,
            });
        }
    }

    /// An EWS error code (of a fault, or of a response message the caller does not
    /// expect) as a [`SinkError`].
    pub fn failure(&self, operation: &str, mailbox: &str, code: &str, text: &str) -> SinkError {
        let text: String = text.chars().take(300).collect();
        match code {
            "ErrorImpersonateUserDenied"
            | "ErrorImpersonationDenied"
            | "ErrorImpersonationFailed" => SinkError::Config {
                message: format!(
                    "the service account {} may not impersonate mailbox {mailbox} ({code}): \
                         it needs the ApplicationImpersonation role with a management scope \
                         that includes this mailbox (see the README, Exchange Server on premises)",
                    self.account
                ),
            },
            "ErrorNonExistentMailbox" | "ErrorMailboxNotFound" | "ErrorInvalidSmtpAddress" => {
                SinkError::Permanent {
                    message: format!(
                        "mailbox {mailbox} {NO_SUCH_MAILBOX} ({code}): check \
                         LIVESYNC_EWS_MAILBOX or the user's calendar address"
                    ),
                }
            }
            "ErrorAccessDenied" => SinkError::Config {
                message: format!(
                    "{operation} for {mailbox}: Exchange denies access ({code} {text}); the \
                     service account {} needs ApplicationImpersonation for this mailbox",
                    self.account
                ),
            },
            "ErrorInvalidServerVersion"
            | "ErrorIncorrectSchemaVersion"
            | "ErrorInvalidRequestServerVersion" => SinkError::Config {
                message: format!(
                    "Exchange does not accept RequestServerVersion {} ({code}): set \
                         LIVESYNC_EWS_VERSION to the server's (Exchange2016 for 2016, 2019 \
                         and Subscription Edition)",
                    self.version
                ),
            },
            "ErrorSchemaValidation"
            | "ErrorInvalidRequest"
            | "ErrorInvalidPropertyRequest"
            | "ErrorInvalidPropertySet"
            | "ErrorInvalidExtendedPropertyValue"
            | "ErrorInvalidIdMalformed"
            | "ErrorCalendarEndDateIsEarlierThanStartDate"
            | "ErrorInvalidTimeZone"
            | "ErrorTimeZone"
            | "ErrorPropertyValidationFailure"
            | "ErrorCalendarInvalidTimeZone"
            | "ErrorInvalidPropertyForOperation" => SinkError::Permanent {
                message: format!("{operation} for {mailbox}: Exchange refuses it ({code} {text})")
                    .trim_end()
                    .to_string(),
            },
            _ => SinkError::Retryable {
                message: format!("{operation} for {mailbox}: Exchange failed ({code} {text})")
                    .trim_end()
                    .to_string(),
                retry_after: None,
            },
        }
    }
}

/// How a failure for a mailbox that does not exist reads.
const NO_SUCH_MAILBOX: &str = "does not exist in Exchange";

/// Is this the failure of a mailbox that does not exist (the person's, not the change's)?
pub fn is_missing_mailbox(e: &SinkError) -> bool {
    matches!(e, SinkError::Permanent { message } if message.contains(NO_SUCH_MAILBOX))
}

/// Codes that mean "not carried out, come back later" for the whole mailbox.
fn is_busy(code: &str) -> bool {
    matches!(code, "ErrorServerBusy" | "ErrorExceededConnectionCount")
}

pub fn no_answer(e: &reqwest::Error) -> SinkError {
    SinkError::Retryable {
        message: format!("Exchange did not answer: {}", describe(e)),
        retry_after: None,
    }
}

/// The whole answer, or `Err` when it broke off.
pub async fn read(response: reqwest::Response) -> Result<HttpReply, SinkError> {
    let status = response.status();
    let retry_after = crate::sink::graph::client::retry_after(response.headers());
    let bytes = response.bytes().await.map_err(|e| SinkError::Retryable {
        message: format!("the answer from Exchange broke off: {}", describe(&e)),
        retry_after: None,
    })?;
    Ok(HttpReply {
        status,
        retry_after,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
