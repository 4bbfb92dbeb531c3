//! NTLM over HTTP for EWS: NTLMv2 messages from the `sspi` crate, sent over reqwest.
//!
//! NTLM authenticates a *connection*: the NEGOTIATE message, the server's CHALLENGE (in a
//! 401) and the AUTHENTICATE message must travel on one TCP connection, and IIS then
//! treats later requests on it as signed in. reqwest pools connections freely, so each
//! pooled connection here is a reqwest client of its own that keeps at most one idle
//! connection, and is used by one request at a time. A connection that was replaced in
//! the meantime (the server closed it) answers 401 again and is signed in anew.
//!
//! Over HTTPS the AUTHENTICATE message carries a channel binding (`tls-server-end-point`,
//! RFC 5929: a hash of the server's certificate), which Exchange Server requires when
//! Extended Protection is on (the default from Exchange 2019 CU14 and in Subscription
//! Edition).

use std::sync::Mutex;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use sha2::Digest as _;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, DataRepresentation, Ntlm,
    SecurityBuffer, SecurityStatus, Sspi, SspiImpl, Username,
};

use super::client::{HttpReply, http_client, no_answer, read};
use crate::config::EwsSettings;
use crate::sink::SinkError;

/// One HTTP connection (a single-connection reqwest client) and whether it is signed in.
struct Connection {
    http: reqwest::Client,
    authenticated: bool,
}

/// The idle NTLM connections; at most as many exist as requests may be in flight.
pub struct NtlmPool {
    settings: EwsSettings,
    idle: Mutex<Vec<Connection>>,
}

impl NtlmPool {
    pub fn new(settings: &EwsSettings) -> Result<NtlmPool, SinkError> {
        Username::parse(&settings.username).map_err(|e| SinkError::Config {
            message: format!(
                "LIVESYNC_EWS_USERNAME {:?} is no account name NTLM can use ({e}): write \
                 DOMAIN\\name or name@domain",
                settings.username
            ),
        })?;
        // Fails early on a bad LIVESYNC_EWS_CA_FILE.
        let first = http_client(settings, true)?;
        Ok(NtlmPool {
            settings: settings.clone(),
            idle: Mutex::new(vec![Connection {
                http: first,
                authenticated: false,
            }]),
        })
    }

    fn take(&self) -> Result<Connection, SinkError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        Ok(Connection {
            http: http_client(&self.settings, true)?,
            authenticated: false,
        })
    }

    fn give_back(&self, c: Connection) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    /// POST `body` on a signed-in connection (signing one in first when needed).
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &str,
    ) -> Result<HttpReply, SinkError> {
        let mut c = self.take()?;
        let result = self.post_on(&mut c, url, &headers, body).await;
        // A connection that failed is dropped (the next one is new); one that answered,
        // even 401, can be used again.
        if result.is_ok() {
            self.give_back(c);
        }
        result
    }

    async fn post_on(
        &self,
        c: &mut Connection,
        url: &str,
        headers: &HeaderMap,
        body: &str,
    ) -> Result<HttpReply, SinkError> {
        if c.authenticated {
            let (reply, _) = send(c, url, headers, body, None).await?;
            if reply.status != StatusCode::UNAUTHORIZED {
                return Ok(reply);
            }
            // The server closed the signed-in connection; this one is new.
            c.authenticated = false;
        }
        let mut handshake = Handshake::new(&self.settings)?;
        let negotiate = handshake.negotiate()?;
        let (reply, challenge) = send(c, url, headers, body, Some(&negotiate)).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        let Some((challenge, certificate)) = challenge else {
            return Err(SinkError::Config {
                message: format!(
                    "the EWS endpoint does not offer NTLM to the service account {} (401 without \
                     an NTLM challenge): set LIVESYNC_EWS_AUTH=basic if a proxy in front of \
                     Exchange asks for Basic",
                    self.settings.username
                ),
            });
        };
        let authenticate = handshake.authenticate(&challenge, certificate.as_deref())?;
        let (reply, _) = send(c, url, headers, body, Some(&authenticate)).await?;
        c.authenticated = reply.status != StatusCode::UNAUTHORIZED;
        Ok(reply)
    }
}

/// The server's NTLM CHALLENGE and its TLS certificate (DER), from a 401.
type Challenge = (Vec<u8>, Option<Vec<u8>>);

/// One request on `c`, with an NTLM token when given; the challenge of a 401.
async fn send(
    c: &Connection,
    url: &str,
    headers: &HeaderMap,
    body: &str,
    token: Option<&[u8]>,
) -> Result<(HttpReply, Option<Challenge>), SinkError> {
    let mut request = c
        .http
        .post(url)
        .headers(headers.clone())
        .body(body.to_string());
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!(
            "NTLM {}",
            base64::engine::general_purpose::STANDARD.encode(token)
        ))
        .expect("base64 is a valid header value");
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    let response = request.send().await.map_err(|e| no_answer(&e))?;
    let certificate = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec);
    let challenge = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("NTLM") {
                return None;
            }
            base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .ok()
        });
    // Read to the end, so the connection is free for the next message.
    let reply = read(response).await?;
    Ok((reply, challenge.map(|c| (c, certificate))))
}

/// The client side of one NTLM handshake.
struct Handshake {
    ntlm: Ntlm,
    credentials: Option<sspi::AuthIdentityBuffers>,
}

fn sspi_error(e: sspi::Error) -> SinkError {
    SinkError::Config {
        message: format!("NTLM sign-in failed: {e}"),
    }
}

impl Handshake {
    fn new(settings: &EwsSettings) -> Result<Handshake, SinkError> {
        let mut ntlm = Ntlm::new();
        let identity = AuthIdentity {
            username: Username::parse(&settings.username).map_err(|e| SinkError::Config {
                message: format!("LIVESYNC_EWS_USERNAME: {e}"),
            })?,
            password: settings.password.expose().to_string().into(),
        };
        let credentials = ntlm
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity)
            .execute(&mut ntlm)
            .map_err(sspi_error)?
            .credentials_handle;
        Ok(Handshake { ntlm, credentials })
    }

    /// The NEGOTIATE message.
    fn negotiate(&mut self) -> Result<Vec<u8>, SinkError> {
        let (_, mut output) = self.initialize(None)?;
        Ok(std::mem::take(&mut output[0].buffer))
    }

    /// The AUTHENTICATE message for the server's `challenge`, bound to its TLS
    /// `certificate` when there is one.
    fn authenticate(
        &mut self,
        challenge: &[u8],
        certificate: Option<&[u8]>,
    ) -> Result<Vec<u8>, SinkError> {
        if let Some(der) = certificate {
            let mut token = b"tls-server-end-point:".to_vec();
            token.extend_from_slice(&end_point_hash(der));
            self.ntlm.set_channel_bindings(&token);
        }
        let (status, mut output) = self.initialize(Some(challenge))?;
        if matches!(
            status,
            SecurityStatus::CompleteAndContinue | SecurityStatus::CompleteNeeded
        ) {
            self.ntlm
                .complete_auth_token(&mut output)
                .map_err(sspi_error)?;
        }
        Ok(std::mem::take(&mut output[0].buffer))
    }

    /// One step of the handshake: NTLM given the server's `token` (none for the first
    /// message); its status and the buffers holding the message to send.
    fn initialize(
        &mut self,
        token: Option<&[u8]>,
    ) -> Result<(SecurityStatus, Vec<SecurityBuffer>), SinkError> {
        let mut input = token.map(|t| vec![SecurityBuffer::new(t.to_vec(), BufferType::Token)]);
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut builder = self
            .ntlm
            .initialize_security_context()
            .with_credentials_handle(&mut self.credentials)
            .with_context_requirements(ClientRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_output(&mut output);
        if let Some(input) = input.as_mut() {
            builder = builder.with_input(input);
        }
        let result = self
            .ntlm
            .initialize_security_context_impl(&mut builder)
            .map_err(sspi_error)?
            .resolve_to_result()
            .map_err(sspi_error)?;
        Ok((result.status, output))
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash
/// function, SHA-256 for MD5 and SHA-1.
pub fn end_point_hash(der: &[u8]) -> Vec<u8> {
    // The DER of the signature algorithms' OIDs that name a longer hash.
    const SHA384: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],       // ecdsa-with-SHA384
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],       // ecdsa-with-SHA512
    ];
    let names = |oids: &[&[u8]]| {
        oids.iter()
            .any(|oid| der.windows(oid.len()).any(|w| w == *oid))
    };
    if names(SHA512) {
        sha2::Sha512::digest(der).to_vec()
    } else if names(SHA384) {
        sha2::Sha384::digest(der).to_vec()
    } else {
        sha2::Sha256::digest(der).to_vec()
    }
}
