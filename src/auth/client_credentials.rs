//! A service identity: Globus Auth's client-credentials grant, renewed before expiry.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::Authorizer;
use crate::error::{Error, Result};

/// The real Globus Auth service root.
pub use crate::settings::DEFAULT_AUTH_URL;

/// The Transfer scope.
pub const TRANSFER_SCOPE: &str = "urn:globus:auth:scope:transfer.api.globus.org:all";

/// Acts as a confidential client (a service identity): no interactive login, which is
/// what compute nodes and batch jobs need.
///
/// The access token is fetched on first use and renewed `min(60 s, lifetime / 2)` before
/// it expires, and once after a 401. The secret and the tokens never appear in `Debug`
/// output or errors.
///
/// ```
/// use ps_globus::auth::ClientCredentialsAuthorizer;
/// let auth = ClientCredentialsAuthorizer::new("http://127.0.0.1:9/", "my-client-id", "my-secret", ps_globus::auth::TRANSFER_SCOPE)?;
/// assert!(!format!("{auth:?}").contains("my-secret"));
/// # Ok::<(), ps_globus::Error>(())
/// ```
pub struct ClientCredentialsAuthorizer {
    token_url: String,
    client_id: String,
    secret: String,
    scope: String,
    /// Collections whose `data_access` the Transfer scope asks for as dependent scopes
    /// (a standard GCSv5 mapped collection has no consent screen for a service
    /// identity: the scope must be in the token request itself).
    data_access: std::sync::Mutex<std::collections::BTreeSet<uuid::Uuid>>,
    http: reqwest::Client,
    token: Mutex<Option<Token>>,
}

struct Token {
    access: String,
    renew_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl ClientCredentialsAuthorizer {
    /// A service identity `client_id`/`secret` at the Auth service rooted at `auth_url`,
    /// asking for `scope` (space-separated scopes, e.g. [`TRANSFER_SCOPE`]).
    pub fn new(
        auth_url: &str,
        client_id: impl Into<String>,
        secret: impl Into<String>,
        scope: impl Into<String>,
    ) -> Result<Self> {
        let (http, base) =
            crate::http::client("Globus Auth URL", auth_url, reqwest::Client::builder())?;
        Ok(ClientCredentialsAuthorizer {
            token_url: format!("{base}v2/oauth2/token"),
            client_id: client_id.into(),
            secret: secret.into(),
            scope: scope.into(),
            data_access: std::sync::Mutex::default(),
            http,
            token: Mutex::new(None),
        })
    }

    /// The service identity in the settings (`PS_GLOBUS_CLIENT_ID` and
    /// `PS_GLOBUS_CLIENT_SECRET`, at `PS_GLOBUS_AUTH_URL`), for Transfer.
    pub fn from_settings(settings: &crate::settings::Settings) -> Result<Self> {
        match (&settings.client_id, &settings.client_secret) {
            (Some(id), Some(secret)) => Self::new(
                &settings.auth_url,
                id.clone(),
                secret.clone(),
                TRANSFER_SCOPE,
            ),
            _ => Err(Error::unauthorized(
                "PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET must both be set for a service identity",
            )),
        }
    }

    /// Asks for the `data_access` scopes of these collections too, from the next token
    /// on (for standard mapped collections the identity is configured to use).
    pub fn with_data_access(self, collections: impl IntoIterator<Item = uuid::Uuid>) -> Self {
        self.data_access
            .lock()
            .expect("data_access lock")
            .extend(collections);
        self
    }

    /// The scope string of the next token request: the configured scope, with the
    /// Transfer scope carrying the `data_access` dependent scopes asked for so far.
    fn requested_scope(&self) -> String {
        let collections = self.data_access.lock().expect("data_access lock").clone();
        if collections.is_empty() {
            return self.scope.clone();
        }
        let transfer = super::transfer_scope(&collections);
        self.scope
            .split_whitespace()
            .map(|s| {
                if s == TRANSFER_SCOPE {
                    transfer.as_str()
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Fetches a new access token.
    async fn fetch(&self) -> Result<Token> {
        let response = self
            .http
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(&self.secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", self.requested_scope().as_str()),
            ])
            .send()
            .await
            .map_err(|e| {
                Error::unreachable(&self.token_url.clone(), Box::new(e.without_url()), 0)
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            Error::unreachable(&self.token_url.clone(), Box::new(e.without_url()), 0)
        })?;
        if !status.is_success() {
            // OAuth error documents carry `error` and maybe `error_description`; never a secret.
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let what = doc["error_description"]
                .as_str()
                .or(doc["error"].as_str())
                .unwrap_or("no reason given");
            return Err(Error::unauthorized(format!(
                "Globus Auth refused client {} ({status}: {what}); check PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET",
                self.client_id
            )));
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Error::unauthorized(format!("unexpected token response from Globus Auth: {e}"))
        })?;
        let lifetime = Duration::from_secs(token.expires_in);
        let margin = Duration::from_secs(60).min(lifetime / 2);
        Ok(Token {
            access: token.access_token,
            renew_at: crate::runtime::deadline_after(lifetime - margin),
        })
    }
}

impl fmt::Debug for ClientCredentialsAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsAuthorizer")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("secret", &"[redacted]")
            .field("scope", &self.scope)
            .finish()
    }
}

#[async_trait]
impl Authorizer for ClientCredentialsAuthorizer {
    async fn authorization(&self) -> Result<String> {
        let mut token = self.token.lock().await;
        if token.as_ref().is_none_or(|t| Instant::now() >= t.renew_at) {
            *token = Some(self.fetch().await?);
        }
        Ok(format!(
            "Bearer {}",
            token.as_ref().expect("set above").access
        ))
    }

    async fn refresh(&self) -> Result<bool> {
        *self.token.lock().await = Some(self.fetch().await?);
        Ok(true)
    }

    /// A service identity has no consent screen: it asks for the collections'
    /// `data_access` scopes in a new token request, and the request may be repeated.
    async fn add_data_access(&self, collections: &[uuid::Uuid]) -> Result<bool> {
        if !self.scope.split_whitespace().any(|s| s == TRANSFER_SCOPE) {
            return Ok(false);
        }
        let added = {
            let mut known = self.data_access.lock().expect("data_access lock");
            collections
                .iter()
                .fold(false, |any, c| known.insert(*c) | any)
        };
        if added {
            self.refresh().await
        } else {
            // A concurrent request asked for them already: its new token may carry them.
            Ok(true)
        }
    }

    fn identity(&self) -> String {
        format!("client:{}", self.client_id)
    }
}
