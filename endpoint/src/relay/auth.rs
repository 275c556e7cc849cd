//! Who is registering: the relay checks an endpoint's Globus Auth token by introspection
//! (as ProxyStore's relay does), with the relay's own confidential client.
//!
//! A token must be active and carry the relay's audience (the resource server of its
//! scope). The identity is the token's `sub`: two endpoints are peers only when their
//! tokens have the same `sub`. The token's `exp` bounds the registration: the relay drops
//! it then, and the endpoint registers again with a fresh token.

use serde::Deserialize;

/// The resource server of ProxyStore's relay scope, the default audience.
pub const PROXYSTORE_RELAY_AUDIENCE: &str = "ebd5bbed-95e2-47cf-9c80-39e2064274bd";

/// The scope an endpoint asks for its relay token by default (ProxyStore's).
pub const PROXYSTORE_RELAY_SCOPE: &str =
    "https://auth.globus.org/scopes/ebd5bbed-95e2-47cf-9c80-39e2064274bd/relay_all";

/// An identity the relay accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Globus Auth's `sub` (everyone is `"anyone"` on a relay without auth).
    pub sub: String,
    /// When the token expires (Unix seconds).
    pub expires_at: Option<i64>,
}

/// How the relay checks tokens.
#[derive(Clone)]
pub enum RelayAuth {
    /// No check: every endpoint is one identity (a relay on a trusted network only).
    None,
    /// Globus Auth token introspection.
    Globus {
        /// The introspection URL.
        url: String,
        /// The relay's confidential client.
        client_id: String,
        /// Its secret.
        secret: String,
        /// The audience a token must carry.
        audience: String,
        /// The client that calls Auth.
        http: reqwest::Client,
    },
}

impl std::fmt::Debug for RelayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayAuth::None => f.write_str("RelayAuth::None"),
            RelayAuth::Globus {
                url,
                client_id,
                audience,
                ..
            } => f
                .debug_struct("RelayAuth::Globus")
                .field("url", url)
                .field("client_id", client_id)
                .field("audience", audience)
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Deserialize)]
struct Introspection {
    active: bool,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Vec<String>,
    #[serde(default)]
    exp: Option<i64>,
}

impl RelayAuth {
    /// Globus Auth at `auth_url` (its root), checked with this client.
    pub fn globus(
        auth_url: &str,
        client_id: &str,
        secret: &str,
        audience: &str,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed = reqwest::Url::parse(auth_url).map_err(|e| format!("{auth_url:?}: {e}"))?;
        let loopback = parsed.host_str().is_some_and(crate::is_loopback_host);
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
            return Err(format!(
                "{auth_url} is not https: the relay's client secret goes there"
            ));
        }
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
        if loopback {
            builder = builder.no_proxy();
        }
        Ok(RelayAuth::Globus {
            url: format!(
                "{}/v2/oauth2/token/introspect",
                auth_url.trim_end_matches('/')
            ),
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
            audience: audience.to_owned(),
            http: builder.build().map_err(|e| e.to_string())?,
        })
    }

    /// The identity of `token`, or why it is refused.
    pub async fn check(&self, token: Option<&str>) -> Result<User, String> {
        let RelayAuth::Globus {
            url,
            client_id,
            secret,
            audience,
            http,
        } = self
        else {
            return Ok(User {
                sub: "anyone".into(),
                expires_at: None,
            });
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err("this relay needs a Globus Auth token".into());
        };
        let answer: Introspection = http
            .post(url)
            .basic_auth(client_id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("Globus Auth did not answer the token check: {e}"))?
            .json()
            .await
            .map_err(|e| format!("Globus Auth's token check: {e}"))?;
        if !answer.active {
            return Err("the token is expired or has been revoked".into());
        }
        if !answer.aud.iter().any(|a| a == audience) {
            return Err(format!(
                "the token is not for this relay (audience {audience})"
            ));
        }
        let sub = answer
            .sub
            .ok_or_else(|| "the token has no identity (sub)".to_owned())?;
        Ok(User {
            sub,
            expires_at: answer.exp,
        })
    }
}
