//! App-only access tokens (OAuth 2.0 client credentials) for Microsoft Graph, cached and
//! renewed before they expire.
//!
//! One token serves every mailbox. It is renewed when half its lifetime (at most five
//! minutes before expiry) has passed, and at once when Graph rejects it
//! ([`TokenCache::invalidate`]). Fetches are serialised, so a burst of requests asks the
//! login endpoint once. Neither the client secret nor a token ever reaches a log line,
//! an error message or `Debug` output.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::client::form_encode;
use crate::config::Secret;
use crate::sink::SinkError;

/// The scope of an app-only Graph token.
pub const SCOPE: &str = "https://graph.microsoft.com/.default";

/// A bearer token; `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Secret);

impl AccessToken {
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0.expose())
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

struct Cached {
    token: AccessToken,
    renew_at: Instant,
}

pub struct TokenCache {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: Secret,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenCache {
    pub fn new(
        http: reqwest::Client,
        login_url: &str,
        tenant_id: &str,
        client_id: &str,
        client_secret: Secret,
    ) -> TokenCache {
        TokenCache {
            http,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                login_url.trim_end_matches('/'),
                super::client::path_segment(tenant_id)
            ),
            client_id: client_id.to_string(),
            client_secret,
            cached: Mutex::new(None),
        }
    }

    /// A token that is valid for a while yet.
    pub async fn get(&self) -> Result<AccessToken, SinkError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        let margin = (lifetime / 2).min(Duration::from_secs(300));
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime - margin,
        });
        Ok(token)
    }

    /// Forget `stale` (Graph rejected it); a newer token fetched meanwhile is kept.
    pub async fn invalidate(&self, stale: &AccessToken) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == stale) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<(AccessToken, Duration), SinkError> {
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            form_encode(&self.client_id),
            form_encode(self.client_secret.expose()),
            form_encode(SCOPE)
        );
        let response = self
            .http
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| SinkError::Retryable {
                message: format!(
                    "the Microsoft login endpoint is not reachable: {}",
                    super::client::describe(&e)
                ),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = super::client::retry_after(response.headers());
        let bytes = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            let parsed: TokenResponse =
                serde_json::from_slice(&bytes).map_err(|_| SinkError::Retryable {
                    message: "the Microsoft login endpoint sent an unreadable token response"
                        .into(),
                    retry_after: None,
                })?;
            let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3599).clamp(1, 86_400));
            tracing::debug!(expires_in = lifetime.as_secs(), "Graph access token issued");
            return Ok((AccessToken(Secret::new(parsed.access_token)), lifetime));
        }
        let err: TokenError = serde_json::from_slice(&bytes).unwrap_or_default();
        let description: String = err
            .error_description
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let mut detail = format!("{status} {} {description}", err.error);
        if !self.client_secret.expose().is_empty() {
            detail = detail.replace(self.client_secret.expose(), "***");
        }
        let detail = detail.trim_end();
        if status.as_u16() == 429 {
            // Throttling is not the fault of the change that needed the token.
            let wait = retry_after.unwrap_or(Duration::from_secs(5));
            return Err(SinkError::Deferred {
                message: format!(
                    "the Microsoft login endpoint throttles this app ({detail}); retry after {:.1} s",
                    wait.as_secs_f64()
                ),
                retry_after: Some(wait),
            });
        }
        if status.is_server_error() {
            return Err(SinkError::Retryable {
                message: format!("the Microsoft login endpoint failed: {detail}"),
                retry_after,
            });
        }
        Err(SinkError::Config {
            message: format!(
                "Microsoft Entra refused an app-only token ({detail}): check \
                 LIVESYNC_GRAPH_TENANT_ID, LIVESYNC_GRAPH_CLIENT_ID and that \
                 LIVESYNC_GRAPH_CLIENT_SECRET is a current secret of that app registration"
            ),
        })
    }
}
