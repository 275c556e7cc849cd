//! What sort of failure an [`Error`] is ([`ErrorKind`]), whether repeating the call may
//! help, and what a person can do about it ([`Remedy`]).

use super::{Error, GlobusApiError, NeedsAttention, ServerError};

/// What sort of failure an [`Error`] is: one kind per variant, for code that keeps the
/// sort apart from the error (a counter, a Python exception's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidInput`].
    InvalidInput,
    /// [`Error::Unsupported`].
    Unsupported,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::Conflict`].
    Conflict,
    /// [`Error::PermissionDenied`].
    PermissionDenied,
    /// [`Error::Integrity`].
    Integrity,
    /// [`Error::TransferFailed`].
    TransferFailed,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Unreachable`].
    Unreachable,
    /// [`Error::Service`].
    Service,
    /// [`Error::Storage`].
    Storage,
    /// [`Error::Codec`].
    Codec,
    /// [`Error::Internal`].
    Internal,
}

/// What a person can do about an error, in no front end's words: the command line and
/// the Python package each say it their way (a command to run, a setting to change).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// Log in to Globus; with `collections`, granting a `data_access` consent for each.
    /// On a compute node: a file token store on a shared directory, or a service
    /// identity.
    Login {
        /// The collections that need a consent (none: a plain login).
        collections: Vec<String>,
    },
    /// Globus refused the credentials in use: log in again (or, where a token came from
    /// the environment, set a valid one); on a compute node, a service identity.
    LoginAgain,
    /// Globus paused a task because a login or consent expired: a new login (with a
    /// consent for each collection involved) resumes it by itself.
    ResumeTaskByLogin,
    /// Globus keeps retrying a task on a path this identity may not reach: grant access
    /// there (the task resumes by itself), or cancel it.
    GrantAccessOrCancelTask {
        /// The task.
        task_id: String,
    },
    /// No site is configured: write a configuration with a site for each collection.
    ConfigureSites,
    /// Raise the time limit, or check that the awaited transfer is on its way.
    RaiseLimitOrCheckTransfers,
    /// A setting to change, said in full (it names no command).
    Advice(String),
}

impl std::fmt::Display for Remedy {
    /// The remedy in plain words, naming no command (a front end says it its own way).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remedy::Login { collections } if !collections.is_empty() => write!(
                f,
                "log in to Globus, granting a data_access consent for collection {}",
                collections.join(", ")
            ),
            Remedy::Login { .. } => f.write_str("log in to Globus"),
            Remedy::LoginAgain => f.write_str(
                "log in to Globus again (or give a valid token), or use a service identity",
            ),
            Remedy::ResumeTaskByLogin => f.write_str(
                "log in to Globus again, with a consent for each collection involved: the \
                 task resumes by itself",
            ),
            Remedy::GrantAccessOrCancelTask { task_id } => write!(
                f,
                "grant this identity access to the path at the collection (task {task_id} \
                 resumes by itself), or cancel the task"
            ),
            Remedy::ConfigureSites => {
                f.write_str("configure a site for each collection the store uses")
            }
            Remedy::RaiseLimitOrCheckTransfers => f.write_str(
                "raise the time limit, or check that the awaited transfer is on its way",
            ),
            Remedy::Advice(advice) => f.write_str(advice),
        }
    }
}

impl Error {
    /// What sort of failure this is (the variant, as a value).
    ///
    /// ```
    /// use ps_globus::{Error, ErrorKind};
    /// assert_eq!(Error::login_required("none stored").kind(), ErrorKind::PermissionDenied);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::Integrity(_) => ErrorKind::Integrity,
            Error::TransferFailed(_) => ErrorKind::TransferFailed,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Unreachable(_) => ErrorKind::Unreachable,
            Error::Service(_) => ErrorKind::Service,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Codec(_) => ErrorKind::Codec,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether repeating the same call may succeed (a timeout, a service out of reach or
    /// busy, an interrupted or busy I/O).
    ///
    /// ```
    /// use ps_globus::{Error, ErrorKind};
    /// assert!(!Error::new(ErrorKind::InvalidInput, "bad").is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            Error::Timeout(_) | Error::Unreachable(_) => true,
            Error::Service(_) | Error::PermissionDenied(_) => {
                self.downcast_ref::<ServerError>()
                    .is_some_and(ServerError::is_transient)
                    || self
                        .downcast_ref::<GlobusApiError>()
                        .is_some_and(GlobusApiError::is_transient)
            }
            Error::Storage(_) => self.downcast_ref::<std::io::Error>().is_some_and(|e| {
                matches!(e.kind(), Interrupted | WouldBlock | TimedOut | ResourceBusy)
            }),
            _ => false,
        }
    }

    /// Whether a (new) login or consent would fix this: `ps-globus` exits 4 for these,
    /// as globus-cli does. A task Globus paused (INACTIVE) waits for exactly that.
    pub fn needs_login(&self) -> bool {
        matches!(
            self.remedy(),
            Some(Remedy::Login { .. } | Remedy::LoginAgain)
        ) || self.is::<NeedsAttention>()
    }
}
