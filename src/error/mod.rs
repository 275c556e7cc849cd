//! The one public error type.
//!
//! Every variant is a case a caller can act on, and carries what the user needs to act:
//! the store, the key, the path. The failure underneath (an `io::Error`, a database or
//! HTTP error, a codec's complaint) is kept as the [`source`](std::error::Error::source),
//! never flattened into text, and never holds a token or other secret.
//! [`Error::kind`] sorts the variants into a few [`ErrorKind`]s for code that only needs
//! to know *what sort* of failure it is (as OpenDAL's `ErrorKind`), and [`Error::hint`]
//! gives the remedy where one is known (`ps-globus` prints it under the error).

mod advice;

pub use advice::ErrorKind;

use std::path::PathBuf;
use std::time::Duration;

/// Any underlying failure kept as an error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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

    /// A value could not be encoded (with a store's codec, or as JSON or TOML).
    #[error("could not encode a value with codec {codec}: {source}")]
    Encode {
        /// The codec's name.
        codec: &'static str,
        /// What the codec said.
        #[source]
        source: BoxError,
    },

    /// Stored bytes could not be decoded into the requested type.
    #[error(
        "could not decode key {key} of store '{store}' with codec {codec}: {source} \
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
        #[source]
        source: BoxError,
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

    /// Waiting for something took longer than allowed: a resolve past the store's
    /// resolve timeout, a transfer past its wait limit.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited (naming the store and key, or the transfer).
        what: String,
        /// The limit that expired.
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

    /// A connector or store configuration is invalid (or an address or batch file typed
    /// by a user: then the message alone says what is wrong with it).
    #[error("{}", invalid_config(what, message))]
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

    /// Globus answered a request with an error document.
    #[error(
        "Globus answered {status} {code} to {method} {path}: {message} (request id {request_id}; \
         {})", after_retries(*retries)
    )]
    Api {
        /// HTTP status.
        status: u16,
        /// The Globus error code, e.g. `ClientError.NotFound`.
        code: String,
        /// The service's message.
        message: String,
        /// The service's request id, for a support ticket.
        request_id: String,
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
        /// How many times the request was retried.
        retries: u32,
    },

    /// Globus needs a `data_access` consent that the current login lacks.
    #[error(
        "Globus requires a data_access consent for collection {} that the current login lacks",
        collections.join(", ")
    )]
    ConsentRequired {
        /// The scopes to ask for, as Globus listed them.
        required_scopes: Vec<String>,
        /// The collections named in them.
        collections: Vec<String>,
    },

    /// The credentials were refused or are missing.
    #[error("Globus refused the credentials ({message})")]
    Unauthorized {
        /// What the service said.
        message: String,
    },

    /// Bytes at a site do not match the size or sha256 their key promises.
    #[error(
        "integrity check failed for {}: expected {expected}, found {found}; the file was \
         changed or corrupted after transfer: evict the object and put it again",
        path.display()
    )]
    Integrity {
        /// The local file.
        path: PathBuf,
        /// What the key says (size and sha256).
        expected: String,
        /// What is there.
        found: String,
    },

    /// The object was not sent to this site.
    #[error(
        "object {key} is not staged at site {site} (it was sent to: {}); put it with this \
         site among its destinations, or enable pull_on_demand on the store",
        destinations.join(", ")
    )]
    NotStaged {
        /// The object id.
        key: String,
        /// This site.
        site: String,
        /// The sites it was sent to.
        destinations: Vec<String>,
    },

    /// No configured site matches, or a name is not a site.
    #[error("{message}; configured sites: {}", known.join(", "))]
    UnknownSite {
        /// What went wrong.
        message: String,
        /// The configured sites with their host regexes.
        known: Vec<String>,
    },

    /// There is no usable login: none stored, or Globus no longer accepts it.
    #[error("not logged in to Globus ({reason})")]
    LoginRequired {
        /// Why.
        reason: String,
    },

    /// A service could not be reached.
    #[error(
        "could not reach {url}: {source} ({}); check the network and the service URL",
        after_retries(*retries)
    )]
    Network {
        /// The URL (without query or credentials).
        url: String,
        /// What the HTTP client said.
        #[source]
        source: BoxError,
        /// How many times the request was retried.
        retries: u32,
    },

    /// A file of stored state failed: the state database, or the token file. The message
    /// says which.
    #[error("{}: {message}{}", path.display(), caused_by(source))]
    State {
        /// The database file.
        path: PathBuf,
        /// What was being done, or what is wrong, and what to do.
        message: String,
        /// The database's (or parser's) error, where there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// A transfer item failed at Globus.
    #[error(
        "transfer of {source_path} to {destination_path} failed with {code}: {description}{}",
        task_id.as_ref().map(|t| format!(" (Globus task {t})")).unwrap_or_default()
    )]
    TransferFailed {
        /// The Globus task, if one was created.
        task_id: Option<String>,
        /// The Globus code, e.g. `FILE_NOT_FOUND`, `CANCELED`, `EXPIRED`.
        code: String,
        /// The event description or fatal error text.
        description: String,
        /// Source path (collection path).
        source_path: String,
        /// Destination path (collection path).
        destination_path: String,
    },

    /// A Globus task is paused (INACTIVE) until someone acts; [`Error::hint`] says how.
    #[error("Globus task {task_id} needs attention: {reason}")]
    NeedsAttention {
        /// The task.
        task_id: String,
        /// Why it is paused.
        reason: String,
        /// What to run or do.
        fix: String,
    },

    /// Background work ended abnormally (its task panicked, was cancelled, or stopped).
    #[error("{what} failed{}", caused_by(source))]
    Background {
        /// What was running in the background.
        what: String,
        /// Why it ended, where known.
        #[source]
        source: Option<BoxError>,
    },

    /// A server other than Globus (Redis) answered a command with an error of its own:
    /// out of memory, a wrong password, a read-only replica.
    #[error("{service} at {url} answered {operation} with {code}: {message}")]
    Server {
        /// The kind of server, e.g. `Redis`.
        service: &'static str,
        /// Where it is (without credentials).
        url: String,
        /// The command, e.g. `SET`.
        operation: String,
        /// The server's error code, e.g. `OOM`, `WRONGPASS`.
        code: String,
        /// The server's message.
        message: String,
    },

    /// No child of a multi connector accepts this put.
    #[error(
        "no child connector accepts a put of {size} bytes with tags {tags:?}: {}",
        refusals.iter().map(|(child, why)| format!("{child}: {why}")).collect::<Vec<_>>().join("; ")
    )]
    NoRoute {
        /// The object's size.
        size: u64,
        /// The put's tags.
        tags: Vec<String>,
        /// Each child and why its policy refused.
        refusals: Vec<(String, String)>,
    },

    /// A lease lifetime has expired or was ended: its objects are evicted (or being
    /// evicted), so nothing joins it and it cannot be extended.
    #[error(
        "lease {lease} has expired or was ended, and its objects are evicted: start a new \
         lease, and extend a lease before it expires"
    )]
    LeaseEnded {
        /// The lease's id.
        lease: String,
    },

    /// A future's value will never be set: its producer gave it up or is gone.
    #[error("{what} will never be set: {reason}")]
    ProducerGone {
        /// The future (naming its store and key).
        what: String,
        /// Why: dropped unset, or the producing process is no longer running.
        reason: String,
    },

    /// Data from elsewhere (a proxy, a stream event, a lease row, a serialized setter)
    /// names a service, server, credential source or object that this process's own
    /// configuration does not trust; nothing was sent or changed
    /// (`docs/THREAT-MODEL.md`).
    #[error("{what} {named} is not trusted here: {advice}")]
    Untrusted {
        /// What the data named: "Transfer service URL", "Redis server", "store directory".
        what: &'static str,
        /// The URL, server or path it named (without credentials).
        named: String,
        /// What was skipped, and the configuration line that would trust it.
        advice: String,
    },

    /// A future's outcome is already settled: a second value (a retried setter) or an
    /// abandon after a value changes nothing.
    #[error("{what} is already set: the first settlement wins, and this one changed nothing")]
    AlreadySet {
        /// The future (naming its store and key).
        what: String,
    },

    /// The connector cannot do this operation (see
    /// [`Capabilities`](crate::connector::Capabilities)).
    #[error("{operation} is not available on a '{connector}' connector: {advice}")]
    Unsupported {
        /// The operation asked for, e.g. `resolve_path`.
        operation: &'static str,
        /// The connector kind.
        connector: String,
        /// What to do instead.
        advice: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::State`] for the database (or state file) at `path`.
    pub(crate) fn state(
        path: impl Into<PathBuf>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::State {
            path: path.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Builds an [`Error::Background`]: `what` ended abnormally, for `source` if known.
    pub(crate) fn background(what: impl Into<String>, source: Option<BoxError>) -> Self {
        Error::Background {
            what: what.into(),
            source,
        }
    }

    /// Builds an [`Error::Encode`] for a value `codec` could not encode.
    pub fn encode(codec: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Encode {
            codec,
            source: source.into(),
        }
    }

    /// Builds an [`Error::MalformedKey`].
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Error::MalformedKey {
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::NotFound`] for `key` (as text) in `store`.
    pub(crate) fn not_found(store: &str, key: &impl std::fmt::Display, hint: &str) -> Self {
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

/// `": <source>"`, or nothing.
/// `after 1 retry`, `after 5 retries`, `not retried`.
fn after_retries(retries: u32) -> String {
    match retries {
        0 => "not retried".into(),
        1 => "after 1 retry".into(),
        n => format!("after {n} retries"),
    }
}

fn invalid_config(what: &str, message: &str) -> String {
    // What a user typed (an address, a batch file's line): the message says what is wrong.
    if what == "address" || what == "batch file" {
        message.to_owned()
    } else {
        format!("invalid {what} configuration: {message}")
    }
}

fn caused_by(source: &Option<BoxError>) -> String {
    source
        .as_ref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn wrapped_failures_keep_their_cause_as_the_source() {
        let json = serde_json::from_str::<u8>("nope").unwrap_err();
        let e = Error::state("/x/state.db", "reference \"r\" is unreadable", json);
        let source = e.source().expect("the parser's error is kept");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        assert!(e.to_string().contains("/x/state.db"), "{e}");
        let e = Error::encode("json", "bad value");
        assert_eq!(e.source().unwrap().to_string(), "bad value");
        let e = Error::background("the delete batcher", None);
        assert!(e.source().is_none());
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    #[test]
    fn remedies_are_hints_and_messages_name_no_command() {
        let consent = Error::ConsentRequired {
            required_scopes: vec![],
            collections: vec!["c1".into(), "c2".into()],
        };
        let login = Error::LoginRequired {
            reason: "no stored login".into(),
        };
        let refused = Error::Unauthorized {
            message: "token expired".into(),
        };
        for e in [&consent, &login, &refused] {
            assert!(!e.to_string().contains("ps-globus"), "{e}");
            assert!(e.hint().unwrap().contains("ps-globus login"), "{e}");
            assert_eq!(e.kind(), ErrorKind::PermissionDenied);
            assert!(e.needs_login());
        }
        assert_eq!(
            consent.hint().unwrap(),
            "run `ps-globus login --collection c1 --collection c2`"
        );
        let attention = Error::NeedsAttention {
            task_id: "t".into(),
            reason: "paused".into(),
            fix: "log in again".into(),
        };
        assert_eq!(attention.hint().as_deref(), Some("log in again"));
        assert!(!attention.to_string().contains("log in again"));
    }

    #[test]
    fn kinds_sort_the_variants_a_caller_acts_on() {
        let timeout = Error::Timeout {
            what: "a transfer".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
        assert!(timeout.is_transient());
        let unsupported = Error::Unsupported {
            operation: "resolve_path",
            connector: "local".into(),
            advice: "read it with get".into(),
        };
        assert_eq!(unsupported.kind(), ErrorKind::Unsupported);
        assert!(!unsupported.is_transient());
        assert_eq!(Error::malformed("x").kind(), ErrorKind::InvalidInput);
        let io = Error::io(
            "write",
            "/full",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert_eq!(io.kind(), ErrorKind::Storage);
        assert!(io.to_string().contains("free space"), "{io}");
    }
}
