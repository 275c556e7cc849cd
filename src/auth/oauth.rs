//! Globus Auth through the `oauth2` crate: the native-app client, its token responses
//! (one token per resource server, the others in `other_tokens`), and the HTTP glue.
//!
//! `oauth2` 5 pins reqwest 0.12, so its default features are off and its requests go
//! through our reqwest 0.13 client with a small adapter ([`send`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthUrl, ClientId, EndpointNotSet, EndpointSet, ExtraTokenFields,
    HttpClientError, RedirectUrl, RequestTokenError, StandardRevocableToken, StandardTokenResponse,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::StoredToken;
use crate::error::{Error, Result};

/// The fields Globus adds to a token response.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct GlobusFields {
    /// The resource server of the leading token.
    #[serde(default)]
    pub resource_server: String,
    /// The tokens for the other resource servers.
    #[serde(default)]
    pub other_tokens: Vec<OtherToken>,
}

impl fmt::Debug for GlobusFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<&str> = self
            .other_tokens
            .iter()
            .map(|t| t.resource_server.as_str())
            .collect();
        f.debug_struct("GlobusFields")
            .field("resource_server", &self.resource_server)
            .field("other_tokens", &servers)
            .finish()
    }
}

impl ExtraTokenFields for GlobusFields {}

/// One entry of `other_tokens`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct OtherToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    resource_server: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

pub(crate) type GlobusTokenResponse = StandardTokenResponse<GlobusFields, BasicTokenType>;

/// The native-app client: authorize, token and revocation endpoints set.
pub(crate) type NativeClient = oauth2::Client<
    BasicErrorResponse,
    GlobusTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Globus Auth as one native app sees it.
#[derive(Clone)]
pub(crate) struct GlobusAuth {
    pub base: String,
    pub client_id: String,
    pub http: reqwest::Client,
}

impl fmt::Debug for GlobusAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobusAuth")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl GlobusAuth {
    /// The Auth service rooted at `auth_url`, for the native app `client_id`.
    pub(super) fn new(auth_url: &str, client_id: &str) -> Result<Self> {
        let (http, base) =
            crate::http::client("Globus Auth URL", auth_url, reqwest::Client::builder())?;
        Ok(GlobusAuth {
            base,
            client_id: client_id.to_owned(),
            http,
        })
    }

    /// The page that shows the code for copy-paste logins.
    pub(super) fn auth_code_page(&self) -> String {
        format!("{}v2/web/auth-code", self.base)
    }

    /// The `oauth2` client, redirecting to `redirect`.
    pub(super) fn client(&self, redirect: &str) -> Result<NativeClient> {
        let url = |what: &str, text: String| {
            Error::invalid_config("Globus Auth URL", format!("{what} {text} is not a URL"))
        };
        let auth = AuthUrl::new(format!("{}v2/oauth2/authorize", self.base))
            .map_err(|e| url("authorize", e.to_string()))?;
        let token = TokenUrl::new(format!("{}v2/oauth2/token", self.base))
            .map_err(|e| url("token", e.to_string()))?;
        let redirect =
            RedirectUrl::new(redirect.to_owned()).map_err(|e| url("redirect", e.to_string()))?;
        Ok(oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(redirect))
    }

    /// The HTTP client `oauth2` requests go through.
    pub(super) fn oauth_http(&self) -> OAuthHttp {
        OAuthHttp(self.http.clone())
    }

    /// Revokes one token (`POST /v2/oauth2/token/revoke`, RFC 7009). Plain HTTP rather
    /// than `oauth2`'s, which refuses a non-HTTPS endpoint such as the emulator's.
    pub(super) async fn revoke(&self, token: &str) -> Result<()> {
        let url = format!("{}v2/oauth2/token/revoke", self.base);
        let response = self
            .http
            .post(&url)
            .form(&[("token", token), ("client_id", self.client_id.as_str())])
            .send()
            .await
            .map_err(|e| network(&url, e))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(Error::unauthorized(format!(
                "Globus Auth refused to revoke a token ({status})"
            ))),
        }
    }

    /// `GET /v2/oauth2/userinfo` with an Auth access token: `(sub, preferred_username)`.
    pub(super) async fn userinfo(&self, auth_token: &str) -> Result<(String, Option<String>)> {
        let url = format!("{}v2/oauth2/userinfo", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(auth_token)
            .send()
            .await
            .map_err(|e| network(&url, e))?;
        let status = response.status();
        let doc: serde_json::Value = response.json().await.map_err(|e| network(&url, e))?;
        match doc["sub"].as_str() {
            Some(sub) if status.is_success() => Ok((
                sub.to_owned(),
                doc["preferred_username"].as_str().map(str::to_owned),
            )),
            _ => Err(Error::unauthorized(format!(
                "Globus Auth userinfo answered {status}"
            ))),
        }
    }
}

/// Sends `oauth2` requests through our reqwest 0.13 client. (A closure would do, but
/// its future is not `Send` for every lifetime, which `async_trait` needs.)
pub(crate) struct OAuthHttp(reqwest::Client);

type OAuthResult = std::result::Result<oauth2::HttpResponse, HttpClientError<reqwest::Error>>;

impl<'c> AsyncHttpClient<'c> for OAuthHttp {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = OAuthResult> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send(self.0.clone(), request))
    }
}

async fn send(http: reqwest::Client, request: oauth2::HttpRequest) -> OAuthResult {
    let (parts, body) = request.into_parts();
    tracing::debug!(method = %parts.method, path = parts.uri.path(), "Globus Auth request");
    let reqwest_error = |e: reqwest::Error| HttpClientError::Reqwest(Box::new(e));
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(reqwest_error)?;
    tracing::debug!(status = response.status().as_u16(), "Globus Auth response");
    let mut builder = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await.map_err(reqwest_error)?;
    Ok(builder.body(body.to_vec())?)
}

fn network(url: &str, e: reqwest::Error) -> Error {
    Error::unreachable(url, Box::new(e.without_url()), 0)
}

/// Turns an `oauth2` failure into our error: a refused grant means "log in again".
pub(crate) fn token_error(
    url: &str,
    e: RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> Error {
    match e {
        RequestTokenError::ServerResponse(response) => {
            let what = response
                .error_description()
                .cloned()
                .unwrap_or_else(|| response.error().to_string());
            match response.error() {
                BasicErrorResponseType::InvalidGrant => {
                    Error::login_required(format!("Globus Auth refused the grant ({what})"))
                }
                _ => Error::unauthorized(format!("Globus Auth: {what}")),
            }
        }
        RequestTokenError::Request(e) => {
            let source: crate::error::BoxError = match e {
                HttpClientError::Reqwest(e) => Box::new(e.without_url()),
                other => other.to_string().into(),
            };
            Error::unreachable(url, source, 0)
        }
        // Never echo the body: it may hold a token.
        RequestTokenError::Parse(e, _) => Error::unauthorized(format!(
            "unexpected token response from Globus Auth ({})",
            e.path()
        )),
        RequestTokenError::Other(what) => Error::unauthorized(what),
    }
}

/// The tokens in a response, by resource server. `issued_at` is now (Unix seconds).
pub(crate) fn tokens_by_server(
    response: &GlobusTokenResponse,
    issued_at: i64,
) -> BTreeMap<String, StoredToken> {
    let mut tokens = BTreeMap::new();
    let extra = response.extra_fields();
    let scope = response
        .scopes()
        .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let lifetime = response
        .expires_in()
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    tokens.insert(
        extra.resource_server.clone(),
        StoredToken {
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            expires_at: issued_at + lifetime,
            scope,
            issued_at,
        },
    );
    for other in &extra.other_tokens {
        tokens.insert(
            other.resource_server.clone(),
            StoredToken {
                access_token: other.access_token.clone(),
                refresh_token: other.refresh_token.clone(),
                expires_at: issued_at + other.expires_in.unwrap_or(0),
                scope: other.scope.clone(),
                issued_at,
            },
        );
    }
    tokens
}
