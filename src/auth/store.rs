//! Where tokens rest between processes: the [`TokenStore`] trait and its file back end.
//!
//! [`FileTokenStore`] is the fallback for machines without a working keyring (compute
//! nodes, headless servers): a JSON file, mode 0600, written atomically (an exclusive
//! temporary file, then rename) and updated under an exclusive lock, so several
//! processes can refresh tokens at once without losing each other's writes. A file whose
//! mode lets anyone but its owner read it is refused, not used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::fsutil::{with_file_lock, write_atomic};

/// The newest token-file format this build writes and reads.
pub(crate) const TOKEN_FORMAT_VERSION: u16 = 1;

/// One resource server's tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// The bearer token.
    pub access_token: String,
    /// The refresh token, for logins with `access_type=offline`.
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds).
    pub expires_at: i64,
    /// The scopes granted (space-separated).
    pub scope: String,
    /// When the token was issued (Unix seconds); for a refresh token, when it was last
    /// used, which is what keeps it alive.
    #[serde(default)]
    pub issued_at: i64,
}

impl StoredToken {
    /// When to renew the access token: `min(60 s, lifetime / 2)` before it expires.
    ///
    /// ```
    /// use ps_globus::auth::StoredToken;
    /// let t = StoredToken { access_token: "a".into(), refresh_token: None,
    ///     expires_at: 1_000, scope: String::new(), issued_at: 900 };
    /// assert_eq!(t.renew_at(), 950);
    /// ```
    pub fn renew_at(&self) -> i64 {
        let lifetime = (self.expires_at - self.issued_at).max(0);
        self.expires_at - (lifetime / 2).min(60)
    }
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// Everything one login holds: tokens by resource server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TokenSet {
    /// Format version.
    #[serde(rename = "v")]
    pub version: u16,
    /// The identity the tokens belong to (Globus Auth's `sub`), if known.
    pub identity: Option<String>,
    /// The identity's user name, for display.
    pub username: Option<String>,
    /// The native app that obtained the tokens (refreshes must use the same one).
    pub client_id: Option<String>,
    /// Collections whose `data_access` consent the Transfer token carries.
    pub consents: BTreeSet<Uuid>,
    /// Collections whose HTTPS the login holds a token for (keyed by the collection id
    /// in `tokens`).
    #[serde(default)]
    pub https: BTreeSet<Uuid>,
    /// Tokens by resource server (`transfer.api.globus.org`, ...).
    pub tokens: BTreeMap<String, StoredToken>,
}

impl TokenSet {
    /// Parses a stored set; `origin` names where it came from, for errors.
    pub(crate) fn decode(text: &[u8], origin: &Path) -> Result<TokenSet> {
        let set: TokenSet = serde_json::from_slice(text).map_err(|e| {
            Error::state(
                origin,
                "this token file does not hold a token set (cut short, or not ours); \
                     delete it and log in again",
                e,
            )
        })?;
        if set.version > TOKEN_FORMAT_VERSION {
            return Err(Error::unsupported_version(
                "token set",
                set.version,
                TOKEN_FORMAT_VERSION,
            ));
        }
        Ok(set)
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::encode("json", e))
    }
}

/// A place to keep a [`TokenSet`].
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The stored set, if any.
    fn load(&self) -> Result<Option<TokenSet>>;

    /// Changes the stored set atomically with respect to other processes: `change` gets
    /// the current set (empty if none) and what it leaves is saved.
    fn update(&self, change: &mut dyn FnMut(&mut TokenSet)) -> Result<TokenSet>;

    /// Forgets everything stored.
    fn delete(&self) -> Result<()>;

    /// Where the tokens are, for messages (never the tokens).
    fn describe(&self) -> String;
}

/// Tokens in a 0600 JSON file.
///
/// ```
/// use ps_globus::auth::{FileTokenStore, StoredToken, TokenStore};
/// let dir = tempfile::tempdir()?;
/// let store = FileTokenStore::new(dir.path().join("tokens.json"));
/// store.update(&mut |set| {
///     set.tokens.insert("transfer.api.globus.org".into(), StoredToken {
///         access_token: "secret".into(), refresh_token: None, expires_at: 0, scope: "s".into(), issued_at: 0,
///     });
/// })?;
/// assert!(store.load()?.unwrap().tokens.contains_key("transfer.api.globus.org"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileTokenStore {
    path: PathBuf,
}

impl FileTokenStore {
    /// A store at `path` (created on first save, with its directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileTokenStore { path: path.into() }
    }

    /// `tokens.json` in the state directory the settings name.
    pub fn default_location(settings: &crate::settings::Settings) -> Self {
        Self::new(settings.home.join("tokens.json"))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Option<TokenSet>> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("inspect", &self.path, e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            // Not "Globus refused the credentials": nothing was asked of Globus.
            return Err(Error::state_message(
                self.path.clone(),
                format!(
                    "this token file has mode {mode:o}, readable by others; refusing to use it. \
                     Run `chmod 600 {}` if you trust its contents, or delete it and log in again",
                    self.path.display()
                ),
            ));
        }
        let text = fs::read(&self.path).map_err(|e| Error::io("read", &self.path, e))?;
        TokenSet::decode(&text, &self.path).map(Some)
    }

    fn write(&self, set: &TokenSet) -> Result<()> {
        write_atomic(&self.path, &set.encode()?, true)
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        with_file_lock(&self.path.with_extension("lock"), f)
    }
}

impl TokenStore for FileTokenStore {
    fn load(&self) -> Result<Option<TokenSet>> {
        self.read()
    }

    fn update(&self, change: &mut dyn FnMut(&mut TokenSet)) -> Result<TokenSet> {
        self.locked(|| {
            let mut set = self.read()?.unwrap_or_default();
            set.version = TOKEN_FORMAT_VERSION;
            change(&mut set);
            self.write(&set)?;
            Ok(set)
        })
    }

    fn delete(&self) -> Result<()> {
        self.locked(|| match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &self.path, e)),
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}
