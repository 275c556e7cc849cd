//! The one public error type.
//!
//! Every variant is a kind a caller can act on, and carries what the user needs to act:
//! the store, the key, the path, what to run. Back-end detail (an `io::Error`, a codec
//! message) is kept as the source or as text, never a token or other secret.

use std::path::PathBuf;
use std::time::Duration;

use crate::connector::Key;

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ps-globus.
///
/// Match on the variant to decide what to do; [`Error::is_transient`] says whether the
/// same call may succeed if repeated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key (or a proxy's key) is not well-formed: bad id, bad fields, bad JSON.
    #[error("malformed key: {reason}")]
    MalformedKey {
        /// What is wrong with it.
        reason: String,
    },

    /// A serialized proxy is not well-formed.
    #[error("malformed proxy: {reason}")]
    MalformedProxy {
        /// What is wrong with it.
        reason: String,
    },

    /// A key made by one kind of connector was handed to another kind.
    #[error(
        "key {key} was made by a '{found}' connector and cannot be used with a '{expected}' connector: \
         use it with a store on the connector that made it"
    )]
    ForeignKey {
        /// The connector kind that was asked.
        expected: String,
        /// The connector kind named in the key.
        found: String,
        /// The key, as text.
        key: String,
    },

    /// Something written by a newer (or unknown) release: a key, a proxy, a config.
    #[error(
        "unsupported {what} format version {found} (this build reads version {supported}): \
         upgrade ps-globus on this machine to read it"
    )]
    UnsupportedVersion {
        /// What carried the version: "key", "proxy", "store config".
        what: &'static str,
        /// The version found.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },

    /// A file-system operation failed on a path.
    #[error("{op} {}: {source}{}", path.display(), io_hint(source))]
    Io {
        /// What was being done: "write", "read", "rename", "remove", "create directory".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// An object could not be encoded with the store's codec.
    #[error("could not encode a value with codec {codec}: {message}")]
    Encode {
        /// The codec's name.
        codec: &'static str,
        /// What the codec said.
        message: String,
    },

    /// Stored bytes could not be decoded into the requested type.
    #[error(
        "could not decode key {key} of store '{store}' with codec {codec}: {message} \
         (was it stored as a different type, or by a store with another codec?)"
    )]
    Decode {
        /// The store's name.
        store: String,
        /// The key, as text.
        key: String,
        /// The codec's name.
        codec: &'static str,
        /// What the codec said.
        message: String,
    },

    /// A proxy was resolved, but its object is not in the store.
    #[error(
        "object {key} is not in store '{store}': it was evicted (a proxy made with evict=true \
         resolves only once), or it was stored by a connector this process cannot reach{hint}"
    )]
    NotFound {
        /// The store's name.
        store: String,
        /// The key, as text.
        key: String,
        /// Extra advice from the connector, starting with "; " when present.
        hint: String,
    },

    /// Resolving a key took longer than the store's resolve timeout.
    #[error(
        "timed out after {after:?} resolving key {key} in store '{store}': raise the store's \
         resolve_timeout, or check that the object is on its way"
    )]
    Timeout {
        /// The store's name.
        store: String,
        /// The key, as text.
        key: String,
        /// The timeout that expired.
        after: Duration,
    },

    /// A store name is already registered with a different configuration.
    #[error(
        "store '{name}' is already registered in this process with a different configuration: \
         give the new store another name, or close the old one first"
    )]
    StoreConflict {
        /// The store's name.
        name: String,
    },

    /// A config names a connector kind this build does not know.
    #[error(
        "unknown connector kind '{kind}' (known: {}): register it with \
         connector::register_kind before resolving",
        known.join(", ")
    )]
    UnknownConnector {
        /// The kind asked for.
        kind: String,
        /// The kinds this process knows.
        known: Vec<String>,
    },

    /// A connector or store configuration is invalid.
    #[error("invalid {what} configuration: {message}")]
    InvalidConfig {
        /// What was being configured (a connector kind, "store", ...).
        what: String,
        /// What is wrong.
        message: String,
    },

    /// A proxy built from a closure was serialized; only store-backed proxies travel.
    #[error(
        "a proxy built from a closure cannot be serialized: make it with Store::proxy so it \
         travels as a store reference"
    )]
    NotSerializable,

    /// A closure proxy's factory already ran and panicked; it cannot run again.
    #[error("the proxy's factory panicked during an earlier resolve and cannot run again")]
    FactoryConsumed,

    /// A background resolve ended abnormally (its task panicked or was cancelled).
    #[error("background resolve failed: {0}")]
    Background(String),
}

impl Error {
    /// Whether repeating the same call may succeed (a timeout, an interrupted or busy I/O).
    ///
    /// ```
    /// use ps_globus::Error;
    /// let e = Error::NotSerializable;
    /// assert!(!e.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            Error::Timeout { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                Interrupted | WouldBlock | TimedOut | ResourceBusy
            ),
            _ => false,
        }
    }

    /// Builds an [`Error::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::MalformedKey`].
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Error::MalformedKey {
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::NotFound`] for `key` in `store`.
    pub(crate) fn not_found(store: &str, key: &Key, hint: &str) -> Self {
        Error::NotFound {
            store: store.to_owned(),
            key: key.to_string(),
            hint: if hint.is_empty() {
                String::new()
            } else {
                format!("; {hint}")
            },
        }
    }
}

/// Advice for the I/O failures a user can fix.
fn io_hint(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        StorageFull | QuotaExceeded => {
            " (the file system is full: free space, or point the store at another directory; \
             nothing was stored and existing objects are intact)"
        }
        PermissionDenied => " (check the directory's owner and permissions)",
        ReadOnlyFilesystem => " (the file system is read-only: point the store elsewhere)",
        _ => "",
    }
}
