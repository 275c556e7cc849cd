//! Globus Auth: who the library acts as.
//!
//! [`Authorizer`] is what the Transfer client asks for an `Authorization` header, and for
//! one refresh after a 401. Three kinds:
//! - [`UserAuthorizer`]: a user who ran `ps-globus login` ([`login`]); tokens from a
//!   [`TokenStore`], refreshed before expiry;
//! - [`ClientCredentialsAuthorizer`]: a service identity (`PS_GLOBUS_CLIENT_ID` +
//!   `PS_GLOBUS_CLIENT_SECRET`), for compute nodes and batch jobs;
//! - [`StaticTokenAuthorizer`]: a bearer token obtained elsewhere (or the emulator's
//!   `--static-token`).
//!
//! [`default_authorizer`] picks the first two from the environment. Tokens live in the
//! OS keyring where it works, else in a 0600 file ([`open_token_store`]). Tokens,
//! authorization codes, PKCE verifiers and client secrets never appear in `Debug`
//! output, errors or logs.

mod client_credentials;
mod keyring_store;
mod login;
mod oauth;
mod store;
mod user;

pub use client_credentials::{ClientCredentialsAuthorizer, DEFAULT_AUTH_URL, TRANSFER_SCOPE};
pub use keyring_store::{
    KeyringTokenStore, TokenStoreChoice, choose_token_store, open_token_store,
};

pub use login::{
    CodeDelivery, CollectionLookup, LoginOptions, LoginOutcome, LoginPrompt, LoginStatus,
    LogoutOutcome, ResourceServerStatus, login, logout, status,
};
pub(crate) use store::TOKEN_FORMAT_VERSION;
pub use store::{FileTokenStore, StoredToken, TokenSet, TokenStore};
pub use user::UserAuthorizer;
pub(crate) use user::stale_warning;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::settings::Settings;

/// Globus Auth's own resource server.
#[doc(hidden)]
pub const AUTH_RS: &str = "auth.globus.org";

/// Globus Transfer's resource server.
#[doc(hidden)]
pub const TRANSFER_RS: &str = "transfer.api.globus.org";

/// The scopes every login asks for besides Transfer.
pub(crate) const LOGIN_BASE_SCOPES: &[&str] = &["openid", "profile", "email"];

/// The `data_access` scope of a GCSv5 collection.
///
/// ```
/// let id = uuid::Uuid::nil();
/// assert_eq!(ps_globus::auth::data_access_scope(&id),
///     "https://auth.globus.org/scopes/00000000-0000-0000-0000-000000000000/data_access");
/// ```
pub fn data_access_scope(collection: &Uuid) -> String {
    format!("https://auth.globus.org/scopes/{collection}/data_access")
}

/// The Transfer scope with the `data_access` consents of `collections` as (optional)
/// dependencies, as globus-sdk writes it.
pub(crate) fn transfer_scope(collections: &BTreeSet<Uuid>) -> String {
    if collections.is_empty() {
        return TRANSFER_SCOPE.to_owned();
    }
    let deps: Vec<String> = collections
        .iter()
        .map(|c| format!("*{}", data_access_scope(c)))
        .collect();
    format!("{TRANSFER_SCOPE}[{}]", deps.join(" "))
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The authorizer for `collection`'s HTTPS, chosen as [`default_authorizer`] chooses
/// Transfer's: a token in `PS_GLOBUS_ACCESS_TOKEN` as it is; a service identity asking
/// for `scopes` (the collection's, from its endpoint document); else the login's token
/// for the collection. A login without one is a typed
/// [`ConsentRequired`](crate::error::ConsentRequired) naming `scopes`, whose remedy is a
/// login with the collection (exit code 4 at the command line).
pub fn https_authorizer(
    settings: &Settings,
    collection: &Uuid,
    scopes: &[String],
) -> Result<Arc<dyn Authorizer>> {
    if let Some(token) = &settings.access_token {
        return Ok(Arc::new(StaticTokenAuthorizer::new(token.clone())));
    }
    if let (Some(id), Some(secret)) = (&settings.client_id, &settings.client_secret) {
        let scope = scopes.join(" ");
        return Ok(Arc::new(ClientCredentialsAuthorizer::new(
            &settings.auth_url,
            id.clone(),
            secret.clone(),
            scope,
        )?));
    }
    let choice = open_token_store(settings)?;
    let held = choice.store.load()?.unwrap_or_default();
    if !held.tokens.contains_key(&collection.to_string()) {
        return Err(crate::error::ConsentRequired::new(
            scopes.to_vec(),
            vec![collection.to_string()],
        )
        .into());
    }
    Ok(Arc::new(UserAuthorizer::new(
        choice.store,
        &settings.auth_url,
        &collection.to_string(),
    )?))
}

/// The Transfer authorizer this process should use: a bearer token in
/// `PS_GLOBUS_ACCESS_TOKEN` (obtained elsewhere, or the emulator's static token); else a
/// service identity when `PS_GLOBUS_CLIENT_ID` and `PS_GLOBUS_CLIENT_SECRET` are both
/// set; else the login in the token store ([`open_token_store`]);
/// [`Error::PermissionDenied`](crate::Error::PermissionDenied) when there is none.
pub fn default_authorizer(settings: &Settings) -> Result<Arc<dyn Authorizer>> {
    if let Some(token) = &settings.access_token {
        return Ok(Arc::new(StaticTokenAuthorizer::new(token.clone())));
    }
    if settings.has_service_identity() {
        return Ok(Arc::new(ClientCredentialsAuthorizer::from_settings(
            settings,
        )?));
    }
    let choice = open_token_store(settings)?;
    Ok(Arc::new(UserAuthorizer::transfer(
        choice.store,
        &settings.auth_url,
    )?))
}

/// Supplies credentials for Globus requests.
#[async_trait]
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// The `Authorization` header value (`Bearer ...`).
    async fn authorization(&self) -> Result<String>;

    /// Called once after a 401: renew the credentials if possible. `Ok(true)` means a
    /// retry may succeed.
    async fn refresh(&self) -> Result<bool> {
        Ok(false)
    }

    /// Called once after Transfer answers `ConsentRequired` for these collections'
    /// `data_access`: get credentials that carry it without a person, if this authorizer
    /// can (a service identity asks for the dependent scopes in its token request).
    /// `Ok(true)` means a retry may succeed; a user login needs `ps-globus login`.
    async fn add_data_access(&self, _collections: &[Uuid]) -> Result<bool> {
        Ok(false)
    }

    /// A stable identifier of the identity, safe to store and log (never the token):
    /// tasks, leases and batches in the state database are scoped by it.
    fn identity(&self) -> String;
}

/// A fixed bearer token.
///
/// ```
/// use ps_globus::auth::{Authorizer, StaticTokenAuthorizer};
/// let auth = StaticTokenAuthorizer::new("secret-token");
/// assert!(!format!("{auth:?}").contains("secret"));
/// assert!(auth.identity().starts_with("token:"));
/// ```
pub struct StaticTokenAuthorizer {
    token: String,
    identity: String,
}

impl StaticTokenAuthorizer {
    /// An authorizer for `token`; its identity is a hash of the token.
    pub fn new(token: impl Into<String>) -> Self {
        let token = token.into();
        let digest = Sha256::digest(token.as_bytes());
        let identity = format!(
            "token:{}",
            digest[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        StaticTokenAuthorizer { token, identity }
    }
}

impl fmt::Debug for StaticTokenAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokenAuthorizer")
            .field("token", &"[redacted]")
            .field("identity", &self.identity)
            .finish()
    }
}

#[async_trait]
impl Authorizer for StaticTokenAuthorizer {
    async fn authorization(&self) -> Result<String> {
        Ok(format!("Bearer {}", self.token))
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }
}

/// The example that was its documentation, while it was public.
#[cfg(test)]
mod transfer_scope_example {
    use std::collections::BTreeSet;

    #[test]
    fn transfer_scope_example() -> Result<(), Box<dyn std::error::Error>> {
        let none = BTreeSet::new();
        assert_eq!(
            crate::auth::transfer_scope(&none),
            crate::auth::TRANSFER_SCOPE
        );
        let one = BTreeSet::from([uuid::Uuid::nil()]);
        assert!(crate::auth::transfer_scope(&one).ends_with("/data_access]"));
        Ok(())
    }
}
