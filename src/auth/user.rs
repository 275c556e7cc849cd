//! A logged-in user: tokens from the token store, refreshed before they expire.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use oauth2::RefreshToken;
use tokio::sync::Mutex;

use super::oauth::{GlobusAuth, token_error, tokens_by_server};
use super::{Authorizer, TRANSFER_RS, TokenSet, TokenStore, now};
use crate::error::{Error, Result};

/// How long an unused refresh token lives at Globus (about six months).
pub(crate) const REFRESH_TOKEN_LIFETIME_DAYS: i64 = 180;

/// After this many days without use, logins are reported stale: well before Globus
/// forgets the refresh token, so there is time to log in again.
pub(crate) const STALE_AFTER_DAYS: i64 = 120;

/// The `Authorizer` of a user who ran `ps-globus login`: the access token for one
/// resource server from a [`TokenStore`], renewed with the refresh token
/// `min(60 s, lifetime / 2)` before it expires and once after a 401.
///
/// It never prompts: with no login, or a refresh token Globus no longer accepts, it
/// answers [`Error::PermissionDenied`](crate::Error::PermissionDenied) ("run `ps-globus login`"). Several processes may share
/// one store; each re-reads it before refreshing, so one refresh serves them all.
pub struct UserAuthorizer {
    store: Arc<dyn TokenStore>,
    auth_url: String,
    resource_server: String,
    identity: String,
    cached: Mutex<Option<(String, i64)>>,
}

impl UserAuthorizer {
    /// The Transfer authorizer of the login in `store`, refreshing at `auth_url`.
    pub fn transfer(store: Arc<dyn TokenStore>, auth_url: &str) -> Result<Self> {
        Self::new(store, auth_url, TRANSFER_RS)
    }

    /// The authorizer for `resource_server` of the login in `store`.
    pub fn new(store: Arc<dyn TokenStore>, auth_url: &str, resource_server: &str) -> Result<Self> {
        let set = store.load()?.unwrap_or_default();
        if !set.tokens.contains_key(resource_server) {
            return Err(Error::login_required(format!(
                "no {resource_server} token in {}",
                store.describe()
            )));
        }
        if let Some(warning) = stale_warning(&set, now()) {
            tracing::warn!("{warning}");
        }
        Ok(UserAuthorizer {
            identity: format!(
                "user:{}",
                set.identity.as_deref().unwrap_or("unknown-identity")
            ),
            store,
            auth_url: auth_url.to_owned(),
            resource_server: resource_server.to_owned(),
            cached: Mutex::new(None),
        })
    }

    /// Returns a fresh access token, refreshing (and saving) it if `force` or if it is
    /// due. Another process may already have refreshed: the store is read first.
    async fn token(&self, force: bool, stale_token: Option<&str>) -> Result<(String, i64)> {
        let set = self.store.load()?.unwrap_or_default();
        let Some(token) = set.tokens.get(&self.resource_server) else {
            return Err(Error::login_required(format!(
                "no {} token in {} (logged out?)",
                self.resource_server,
                self.store.describe()
            )));
        };
        let renewed_elsewhere = stale_token.is_some_and(|t| t != token.access_token);
        if (!force || renewed_elsewhere) && now() < token.renew_at() {
            return Ok((token.access_token.clone(), token.renew_at()));
        }
        let refresh = token
            .refresh_token
            .clone()
            .ok_or_else(|| Error::login_required("the stored login has no refresh token"))?;
        let client_id = set.client_id.clone().ok_or_else(|| {
            Error::login_required("the stored login does not name its native app")
        })?;
        let auth = GlobusAuth::new(&self.auth_url, &client_id)?;
        let client = auth.client(&auth.auth_code_page())?;
        let send = auth.oauth_http();
        tracing::debug!(resource_server = %self.resource_server, "refreshing access token");
        let refresh_token = RefreshToken::new(refresh);
        let response = client
            .exchange_refresh_token(&refresh_token)
            .request_async(&send)
            .await
            .map_err(|e| token_error(&auth.base, e))?;
        let issued = tokens_by_server(&response, now());
        let fresh = issued.get(&self.resource_server).cloned().ok_or_else(|| {
            Error::unauthorized(format!(
                "Globus Auth refreshed no {} token",
                self.resource_server
            ))
        })?;
        let rs = self.resource_server.clone();
        let mut keep = fresh.clone();
        self.store.update(&mut |set: &mut TokenSet| {
            // Globus does not rotate refresh tokens; keep the old one if none came back.
            if keep.refresh_token.is_none() {
                keep.refresh_token = set.tokens.get(&rs).and_then(|t| t.refresh_token.clone());
            }
            set.tokens.insert(rs.clone(), keep.clone());
        })?;
        Ok((fresh.access_token.clone(), fresh.renew_at()))
    }
}

/// A warning when the login has not been used for [`STALE_AFTER_DAYS`], or `None`.
pub(crate) fn stale_warning(set: &TokenSet, now: i64) -> Option<String> {
    let last_used = set
        .tokens
        .values()
        .filter(|t| t.refresh_token.is_some())
        .map(|t| t.issued_at)
        .max()?;
    let idle_days = (now - last_used) / 86_400;
    (idle_days >= STALE_AFTER_DAYS).then(|| {
        let left = REFRESH_TOKEN_LIFETIME_DAYS - idle_days;
        format!(
            "the Globus login was last used {idle_days} days ago; Globus forgets unused logins \
             after about {REFRESH_TOKEN_LIFETIME_DAYS} days ({} left): log in again to renew it",
            if left > 0 {
                format!("about {left} days")
            } else {
                "possibly none".into()
            }
        )
    })
}

impl fmt::Debug for UserAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserAuthorizer")
            .field("store", &self.store.describe())
            .field("auth_url", &self.auth_url)
            .field("resource_server", &self.resource_server)
            .field("identity", &self.identity)
            .finish()
    }
}

#[async_trait]
impl Authorizer for UserAuthorizer {
    async fn authorization(&self) -> Result<String> {
        let mut cached = self.cached.lock().await;
        match &*cached {
            Some((token, renew_at)) if now() < *renew_at => Ok(format!("Bearer {token}")),
            _ => {
                let fresh = self.token(false, None).await?;
                let header = format!("Bearer {}", fresh.0);
                *cached = Some(fresh);
                Ok(header)
            }
        }
    }

    async fn refresh(&self) -> Result<bool> {
        let mut cached = self.cached.lock().await;
        let stale = cached.take().map(|(token, _)| token);
        *cached = Some(self.token(true, stale.as_deref()).await?);
        Ok(true)
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }
}

/// The example that was its documentation, while it was public.
#[cfg(test)]
mod stale_warning_example {
    use crate::auth::{StoredToken, TokenSet, stale_warning};

    #[test]
    fn stale_warning_example() -> Result<(), Box<dyn std::error::Error>> {
        let mut set = TokenSet::default();
        set.tokens.insert(
            "transfer.api.globus.org".into(),
            StoredToken {
                access_token: "a".into(),
                refresh_token: Some("r".into()),
                expires_at: 0,
                scope: String::new(),
                issued_at: 0,
            },
        );
        assert!(stale_warning(&set, 10 * 86_400).is_none());
        assert!(
            stale_warning(&set, 150 * 86_400)
                .unwrap()
                .contains("log in again")
        );
        Ok(())
    }
}
