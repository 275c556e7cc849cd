//! Tokens in the OS keyring (Secret Service on Linux, Keychain on macOS, Credential
//! Manager on Windows), and the choice between it and the 0600 file.
//!
//! The keyring is used only where a write-then-read through a fresh entry works: on a
//! headless node without a D-Bus session the Secret Service is absent (and a keyring
//! that accepts writes it cannot read back is worse than none). Everywhere else, and
//! with `PS_GLOBUS_TOKEN_STORE=file`, tokens go to `tokens.json` in the state directory.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};

use super::{FileTokenStore, TokenSet, TokenStore};
use crate::error::{Error, ErrorKind, Remedy, Result};
use crate::fsutil::with_file_lock;

/// The keyring service name under which tokens are saved.
pub(crate) const KEYRING_SERVICE: &str = "ps-globus";

/// The keyring entry (user) that holds the token set.
const KEYRING_USER: &str = "globus-tokens";

/// A [`TokenSet`] in one keyring entry.
///
/// Read-modify-write cycles are serialized across processes with a lock file in the
/// state directory (the keyring itself has no compare-and-swap).
///
/// ```
/// use ps_globus::auth::{KeyringTokenStore, TokenStore};
/// let dir = tempfile::tempdir()?;
/// let store = KeyringTokenStore::in_store(keyring_core::mock::Store::new()?, dir.path().join("k.lock"));
/// store.probe()?;
/// store.update(&mut |set| set.username = Some("ada".into()))?;
/// assert_eq!(store.load()?.unwrap().username.as_deref(), Some("ada"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct KeyringTokenStore {
    store: Option<Arc<CredentialStore>>,
    lock_path: PathBuf,
}

impl fmt::Debug for KeyringTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringTokenStore")
            .field("service", &KEYRING_SERVICE)
            .field("lock_path", &self.lock_path)
            .finish()
    }
}

impl KeyringTokenStore {
    /// The platform keyring; `lock_path` serializes updates between processes.
    pub fn platform(lock_path: impl Into<PathBuf>) -> Self {
        KeyringTokenStore {
            store: None,
            lock_path: lock_path.into(),
        }
    }

    /// A given credential store (tests use `keyring_core::mock`).
    pub fn in_store(store: Arc<CredentialStore>, lock_path: impl Into<PathBuf>) -> Self {
        KeyringTokenStore {
            store: Some(store),
            lock_path: lock_path.into(),
        }
    }

    fn entry(&self, user: &str) -> Result<Entry> {
        let entry = match &self.store {
            Some(store) => Entry::new_in_store(store, KEYRING_SERVICE, user),
            None => keyring::Entry::new(KEYRING_SERVICE, user).map(|e| e.inner),
        };
        entry.map_err(keyring_error)
    }

    /// Checks that a secret written through one entry reads back through a fresh one.
    pub fn probe(&self) -> Result<()> {
        let user = format!("probe-{}", uuid::Uuid::new_v4().simple());
        let value = uuid::Uuid::new_v4().to_string();
        self.entry(&user)?
            .set_password(&value)
            .map_err(keyring_error)?;
        let back = self.entry(&user)?.get_password().map_err(keyring_error);
        let _ = self.entry(&user).map(|e| e.delete_credential());
        match back? {
            read if read == value => Ok(()),
            _ => Err(Error::unauthorized(PROBE_MISMATCH)),
        }
    }

    fn read(&self) -> Result<Option<TokenSet>> {
        match self.entry(KEYRING_USER)?.get_secret() {
            Ok(bytes) => TokenSet::decode(&bytes, &PathBuf::from("keyring:ps-globus")).map(Some),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(keyring_error(e)),
        }
    }
}

const PROBE_MISMATCH: &str = "the keyring returned a different secret than was stored";

fn keyring_error(e: keyring_core::Error) -> Error {
    let message = format!(
        "Globus refused the credentials (the OS keyring failed ({e}); set \
         PS_GLOBUS_TOKEN_STORE=file to keep tokens in a 0600 file)"
    );
    Error::with_source(ErrorKind::PermissionDenied, message, e).with_remedy(Remedy::LoginAgain)
}

impl TokenStore for KeyringTokenStore {
    fn load(&self) -> Result<Option<TokenSet>> {
        self.read()
    }

    fn update(&self, change: &mut dyn FnMut(&mut TokenSet)) -> Result<TokenSet> {
        with_file_lock(&self.lock_path, || {
            let mut set = self.read()?.unwrap_or_default();
            set.version = super::TOKEN_FORMAT_VERSION;
            change(&mut set);
            self.entry(KEYRING_USER)?
                .set_secret(&set.encode()?)
                .map_err(keyring_error)?;
            Ok(set)
        })
    }

    fn delete(&self) -> Result<()> {
        with_file_lock(&self.lock_path, || {
            match self.entry(KEYRING_USER)?.delete_credential() {
                Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
                Err(e) => Err(keyring_error(e)),
            }
        })
    }

    fn describe(&self) -> String {
        format!("the OS keyring (service {KEYRING_SERVICE})")
    }
}

/// The token store this process uses, and why.
#[derive(Clone, Debug)]
pub struct TokenStoreChoice {
    /// The store.
    pub store: Arc<dyn TokenStore>,
    /// Why the file store was chosen over the keyring, if it was a fallback.
    pub fallback_reason: Option<String>,
}

/// Chooses where tokens live, from `PS_GLOBUS_TOKEN_STORE` (`file`, `keyring`, or unset
/// for automatic) and what works here:
///
/// - `file`: `tokens.json` in the state directory;
/// - `keyring`: the OS keyring, or an error if it fails the write-then-read probe;
/// - automatic: the file if one already holds a login (a choice made before sticks),
///   else the keyring if it passes the probe, else the file, with the reason.
pub fn open_token_store(settings: &crate::settings::Settings) -> Result<TokenStoreChoice> {
    let file = FileTokenStore::default_location(settings);
    let keyring = KeyringTokenStore::platform(settings.home.join("keyring.lock"));
    choose_token_store(&settings.token_store, file, keyring)
}

/// [`open_token_store`] with the stores given (for tests).
pub fn choose_token_store(
    mode: &str,
    file: FileTokenStore,
    keyring: KeyringTokenStore,
) -> Result<TokenStoreChoice> {
    let file_choice = |reason: Option<String>| TokenStoreChoice {
        store: Arc::new(file.clone()),
        fallback_reason: reason,
    };
    match mode {
        "file" => Ok(file_choice(None)),
        "keyring" => {
            keyring.probe()?;
            Ok(TokenStoreChoice {
                store: Arc::new(keyring),
                fallback_reason: None,
            })
        }
        "" | "auto" => {
            if file.path().exists() {
                return Ok(file_choice(None));
            }
            match keyring.probe() {
                Ok(()) => Ok(TokenStoreChoice {
                    store: Arc::new(keyring),
                    fallback_reason: None,
                }),
                Err(e) => Ok(file_choice(Some(format!(
                    "no usable OS keyring here ({}); tokens go to {} (mode 0600)",
                    short_reason(&e),
                    file.path().display()
                )))),
            }
        }
        other => Err(Error::invalid_config(
            "PS_GLOBUS_TOKEN_STORE",
            format!("{other:?} is not one of file, keyring, auto"),
        )),
    }
}

/// Why the keyring is not usable, without the advice to use a file (that is what happens).
fn short_reason(e: &Error) -> String {
    match e.downcast_ref::<keyring_core::Error>() {
        Some(keyring) => format!("the OS keyring failed ({keyring})"),
        None if e.to_string().contains(PROBE_MISMATCH) => PROBE_MISMATCH.into(),
        None => e.to_string(),
    }
}
