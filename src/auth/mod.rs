//! Globus Auth: who the library acts as.
//!
//! [`Authorizer`] is what the Transfer client asks for an `Authorization` header, and for
//! one refresh after a 401. [`StaticTokenAuthorizer`] wraps a bearer token obtained
//! elsewhere (or the emulator's `--static-token`); [`ClientCredentialsAuthorizer`] is a
//! service identity (`PS_GLOBUS_CLIENT_ID` + `PS_GLOBUS_CLIENT_SECRET`). Tokens and
//! secrets never appear in `Debug` output, errors or logs.

mod client_credentials;
mod store;

pub use client_credentials::{ClientCredentialsAuthorizer, DEFAULT_AUTH_URL, TRANSFER_SCOPE};
pub use store::{FileTokenStore, StoredToken, TOKEN_FORMAT_VERSION, TokenSet, TokenStore};

use std::fmt;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::Result;

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
