//! The typed details an [`Error`](super::Error) may carry, for callers that act on more
//! than its category: reach them with [`Error::downcast_ref`](super::Error::downcast_ref).
//! Each knows its category (`From<Detail> for Error`) and prints the message the error
//! shows.

use std::path::PathBuf;

use super::{Error, ErrorKind, Remedy};

/// Implements `From<$detail> for Error`, putting the detail in `$kind` with `$remedy`.
macro_rules! detail_of {
    ($detail:ty, $kind:ident, |$d:ident| $remedy:expr) => {
        impl From<$detail> for Error {
            fn from($d: $detail) -> Self {
                let remedy: Option<Remedy> = $remedy;
                Error::from_detail(ErrorKind::$kind, $d, remedy)
            }
        }
    };
}

/// A Transfer item failed at Globus for good.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "transfer of {source_path} to {destination_path} failed with {code}: {description}{}",
    task_id.as_ref().map(|t| format!(" (Globus task {t})")).unwrap_or_default()
)]
#[non_exhaustive]
pub struct TransferFailure {
    /// The Globus task, if one was created.
    pub task_id: Option<String>,
    /// The Globus code, e.g. `FILE_NOT_FOUND`, `CANCELED`, `EXPIRED`.
    pub code: String,
    /// The event description or fatal error text.
    pub description: String,
    /// Source path (collection path).
    pub source_path: String,
    /// Destination path (collection path).
    pub destination_path: String,
}

impl TransferFailure {
    /// A failure of the item from `source_path` to `destination_path` with `code`.
    pub fn new(
        task_id: Option<String>,
        code: impl Into<String>,
        description: impl Into<String>,
        (source_path, destination_path): (impl Into<String>, impl Into<String>),
    ) -> Self {
        TransferFailure {
            task_id,
            code: code.into(),
            description: description.into(),
            source_path: source_path.into(),
            destination_path: destination_path.into(),
        }
    }
}
detail_of!(TransferFailure, TransferFailed, |_d| None);

/// A Globus task is paused (INACTIVE) until someone acts: a new login, or access granted
/// to a path.
#[derive(Clone, Debug, thiserror::Error)]
#[error("Globus task {task_id} needs attention: {reason}")]
#[non_exhaustive]
pub struct NeedsAttention {
    /// The task.
    pub task_id: String,
    /// Why it is paused.
    pub reason: String,
    /// Whether a new login (with the consents involved) resumes it; else this identity
    /// needs access to a path at the collection (or the task a cancel).
    pub resumes_on_login: bool,
}

impl NeedsAttention {
    /// Task `task_id` waits, for `reason`, until a new login: its credentials or a
    /// `data_access` consent expired.
    pub fn login(task_id: impl Into<String>, reason: impl Into<String>) -> Self {
        NeedsAttention {
            task_id: task_id.into(),
            reason: reason.into(),
            resumes_on_login: true,
        }
    }

    /// Task `task_id` waits, for `reason`, until this identity may reach its path.
    pub fn access(task_id: impl Into<String>, reason: impl Into<String>) -> Self {
        NeedsAttention {
            resumes_on_login: false,
            ..Self::login(task_id, reason)
        }
    }
}
detail_of!(NeedsAttention, TransferFailed, |d| Some(
    if d.resumes_on_login {
        Remedy::ResumeTaskByLogin
    } else {
        Remedy::GrantAccessOrCancelTask {
            task_id: d.task_id.clone(),
        }
    }
));

/// Bytes at a site do not match the size or sha256 their key promises.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "integrity check failed for {}: expected {expected}, found {found}; the file was \
     changed or corrupted after transfer: evict the object and put it again",
    path.display()
)]
#[non_exhaustive]
pub struct IntegrityMismatch {
    /// The local file.
    pub path: PathBuf,
    /// What the key says (size and sha256).
    pub expected: String,
    /// What is there.
    pub found: String,
}

impl IntegrityMismatch {
    /// The bytes at `path` are `found`, not the `expected` their key promises.
    pub fn new(
        path: impl Into<PathBuf>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        IntegrityMismatch {
            path: path.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}
detail_of!(IntegrityMismatch, Integrity, |_d| None);

/// Globus needs a `data_access` consent that the current login lacks.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "Globus requires a data_access consent for collection {} that the current login lacks",
    collections.join(", ")
)]
#[non_exhaustive]
pub struct ConsentRequired {
    /// The scopes to ask for, as Globus listed them.
    pub required_scopes: Vec<String>,
    /// The collections named in them.
    pub collections: Vec<String>,
}

impl ConsentRequired {
    /// Consent for `collections`, as Globus asked for it in `required_scopes`.
    pub fn new(required_scopes: Vec<String>, collections: Vec<String>) -> Self {
        ConsentRequired {
            required_scopes,
            collections,
        }
    }
}
detail_of!(ConsentRequired, PermissionDenied, |d| Some(Remedy::Login {
    collections: d.collections.clone(),
}));

/// A server other than Globus (Redis) answered a command with an error of its own: out of
/// memory, a wrong password, a read-only replica.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{service} at {url} answered {operation} with {code}: {message}")]
#[non_exhaustive]
pub struct ServerError {
    /// The kind of server, e.g. `Redis`.
    pub service: &'static str,
    /// Where it is (without credentials).
    pub url: String,
    /// The command, e.g. `SET`.
    pub operation: String,
    /// The server's error code, e.g. `OOM`, `WRONGPASS`.
    pub code: String,
    /// The server's message.
    pub message: String,
}

impl ServerError {
    /// Whether the same command may succeed later (the server is loading, busy, failing
    /// over).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN"
        )
    }

    /// Whether the code says the credentials are missing or refused.
    pub fn is_refusal(&self) -> bool {
        matches!(self.code.as_str(), "NOAUTH" | "WRONGPASS" | "NOPERM")
    }

    /// What to do about it, where that is known.
    fn advice(&self) -> Option<&'static str> {
        if self.message.contains("invalid bulk length") {
            return Some(
                "the object is larger than the server's proto-max-bulk-len (512 MiB by \
                 default): raise it, or send objects this large elsewhere with a \
                 MultiConnector size policy",
            );
        }
        Some(match self.code.as_str() {
            "NOAUTH" | "WRONGPASS" => {
                "put the server's password in the environment variable the connector's \
                 password_env names (and its user in username), in every process that uses it"
            }
            "NOPERM" => "grant this Redis user GET, SET, EXISTS, UNLINK and SCAN on its key prefix",
            "OOM" => {
                "the Redis server is full: raise its maxmemory, give objects a ttl, or send \
                 large objects elsewhere with a MultiConnector size policy"
            }
            "READONLY" => "this server is a read-only replica: connect to the primary",
            _ => return None,
        })
    }
}

impl From<ServerError> for Error {
    fn from(d: ServerError) -> Self {
        let kind = if d.is_refusal() {
            ErrorKind::PermissionDenied
        } else {
            ErrorKind::Service
        };
        let remedy = d.advice().map(|a| Remedy::Advice(a.into()));
        Error::from_detail(kind, d, remedy)
    }
}

/// No child of a multi connector accepts this put.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "no child connector accepts a put of {size} bytes with tags {tags:?}: {}",
    refusals.iter().map(|(child, why)| format!("{child}: {why}")).collect::<Vec<_>>().join("; ")
)]
#[non_exhaustive]
pub struct NoRoute {
    /// The object's size.
    pub size: u64,
    /// The put's tags.
    pub tags: Vec<String>,
    /// Each child and why its policy refused.
    pub refusals: Vec<(String, String)>,
}
detail_of!(NoRoute, InvalidInput, |_d| Some(Remedy::Advice(
    "give the multi connector a child whose policy accepts it (a last child with no policy \
     takes every put), or change the put's tags"
        .into()
)));

/// A lease lifetime has expired or was ended: its objects are evicted (or being evicted),
/// so nothing joins it and it cannot be extended.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "lease {lease} has expired or was ended, and its objects are evicted: start a new \
     lease, and extend a lease before it expires"
)]
#[non_exhaustive]
pub struct LeaseEnded {
    /// The lease's id.
    pub lease: String,
}

impl LeaseEnded {
    /// Lease `lease` is over.
    pub fn new(lease: impl Into<String>) -> Self {
        LeaseEnded {
            lease: lease.into(),
        }
    }
}
detail_of!(LeaseEnded, NotFound, |_d| None);

/// A future's value will never be set: its producer gave it up or is gone.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{what} will never be set: {reason}")]
#[non_exhaustive]
pub struct ProducerGone {
    /// The future (naming its store and key).
    pub what: String,
    /// Why: dropped unset, or the producing process is no longer running.
    pub reason: String,
}

impl ProducerGone {
    /// The future `what` will never be set, for `reason`.
    pub fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ProducerGone {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
detail_of!(ProducerGone, NotFound, |_d| None);

/// A future's outcome is already settled: a second value (a retried setter) or an abandon
/// after a value changes nothing.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{what} is already set: the first settlement wins, and this one changed nothing")]
#[non_exhaustive]
pub struct AlreadySet {
    /// The future (naming its store and key).
    pub what: String,
}

impl AlreadySet {
    /// The future `what` is settled already.
    pub fn new(what: impl Into<String>) -> Self {
        AlreadySet { what: what.into() }
    }
}
detail_of!(AlreadySet, Conflict, |_d| None);

/// Data from elsewhere (a proxy, a stream event, a lease row, a serialized setter) names a
/// service, server, credential source or object that this process's own configuration
/// does not trust; nothing was sent or changed (`docs/THREAT-MODEL.md`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{what} {named} is not trusted here: {advice}")]
#[non_exhaustive]
pub struct Untrusted {
    /// What the data named: "Transfer service URL", "Redis server", "store directory".
    pub what: &'static str,
    /// The URL, server or path it named (without credentials).
    pub named: String,
    /// What was skipped, and the configuration line that would trust it.
    pub advice: String,
}

impl Untrusted {
    /// `named` (a `what`) is not trusted here; `advice` says what would trust it.
    pub fn new(what: &'static str, named: impl Into<String>, advice: impl Into<String>) -> Self {
        Untrusted {
            what,
            named: named.into(),
            advice: advice.into(),
        }
    }
}
detail_of!(Untrusted, PermissionDenied, |_d| None);
