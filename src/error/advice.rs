//! What sort of failure an [`Error`] is ([`ErrorKind`]), whether repeating the call may
//! help, and what to do about it (the hints `ps-globus` prints under an error).

use super::Error;

/// What sort of failure an [`Error`] is, for code that decides by sort, not by variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Input that is not well-formed or not meant for this place: a key, a proxy, a
    /// configuration, a name.
    InvalidInput,
    /// Written by a newer release than this one.
    Unsupported,
    /// The object (or the thing named) does not exist here.
    NotFound,
    /// A store name is taken by a different configuration.
    Conflict,
    /// Credentials are missing, refused, or lack a consent.
    PermissionDenied,
    /// Bytes do not match what their key promises.
    Integrity,
    /// A transfer failed at Globus, or waits for someone to act.
    TransferFailed,
    /// A time limit passed.
    Timeout,
    /// A service could not be reached, or answered with an error.
    Service,
    /// The local file system or the state database failed.
    Storage,
    /// Encoding or decoding a value failed.
    Codec,
    /// Something inside ps-globus went wrong (a background task, a panicking factory).
    Internal,
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
            Error::Timeout { .. } | Error::Network { .. } => true,
            Error::Server { code, .. } => {
                matches!(
                    code.as_str(),
                    "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN"
                )
            }
            Error::Api { status, code, .. } => {
                matches!(status, 429 | 500 | 502 | 503 | 504)
                    && !code.contains("ExternalError")
                    && !code.contains("EndpointError")
            }
            Error::Io { source, .. } => matches!(
                source.kind(),
                Interrupted | WouldBlock | TimedOut | ResourceBusy
            ),
            _ => false,
        }
    }

    /// Whether a (new) login or consent would fix this: `ps-globus` exits 4 for these,
    /// as globus-cli does. A task Globus paused (INACTIVE) waits for exactly that.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            Error::LoginRequired { .. }
                | Error::ConsentRequired { .. }
                | Error::Unauthorized { .. }
                | Error::NeedsAttention { .. }
        )
    }

    /// What sort of failure this is.
    ///
    /// ```
    /// use ps_globus::{Error, ErrorKind};
    /// assert_eq!(Error::NotSerializable.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::MalformedKey { .. }
            | Error::MalformedProxy { .. }
            | Error::ForeignKey { .. }
            | Error::UnknownConnector { .. }
            | Error::InvalidConfig { .. }
            | Error::NotSerializable
            | Error::UnknownSite { .. }
            | Error::NoRoute { .. } => ErrorKind::InvalidInput,
            Error::UnsupportedVersion { .. } | Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::NotFound { .. }
            | Error::NotStaged { .. }
            | Error::LeaseEnded { .. }
            | Error::ProducerGone { .. } => ErrorKind::NotFound,
            Error::StoreConflict { .. } | Error::AlreadySet { .. } => ErrorKind::Conflict,
            Error::ConsentRequired { .. }
            | Error::Unauthorized { .. }
            | Error::LoginRequired { .. }
            | Error::Untrusted { .. } => ErrorKind::PermissionDenied,
            Error::Server { code, .. } if is_auth_code(code) => ErrorKind::PermissionDenied,
            Error::Server { .. } => ErrorKind::Service,
            Error::Integrity { .. } => ErrorKind::Integrity,
            Error::TransferFailed { .. } | Error::NeedsAttention { .. } => {
                ErrorKind::TransferFailed
            }
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Api { .. } | Error::Network { .. } => ErrorKind::Service,
            Error::Io { .. } | Error::State { .. } => ErrorKind::Storage,
            Error::Encode { .. } | Error::Decode { .. } => ErrorKind::Codec,
            Error::FactoryConsumed | Error::Background { .. } => ErrorKind::Internal,
        }
    }

    /// What to do about it, where that is a command to run or a setting to change (the
    /// command line prints it under the error). Advice that needs no command is part of
    /// the message itself.
    ///
    /// ```
    /// use ps_globus::Error;
    /// let e = Error::LoginRequired { reason: "no stored login".into() };
    /// assert!(e.hint().unwrap().contains("ps-globus login"));
    /// assert!(!e.to_string().contains("ps-globus login"));
    /// ```
    pub fn hint(&self) -> Option<String> {
        const SERVICE_IDENTITY: &str =
            "use a service identity (PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET)";
        match self {
            Error::ConsentRequired { collections, .. } => {
                Some(format!("run `{}`", consent_command(collections)))
            }
            // A token from the environment is used as is: a login would not replace it.
            Error::Unauthorized { .. } if crate::Settings::global().access_token.is_some() => Some(
                "Globus refuses the token in PS_GLOBUS_ACCESS_TOKEN: set a valid one, or \
                     unset it to use your stored login (`ps-globus login`)"
                    .into(),
            ),
            Error::Unauthorized { .. } => Some(format!(
                "run `ps-globus login`, or on a compute node {SERVICE_IDENTITY}"
            )),
            Error::LoginRequired { .. } => Some(format!(
                "run `ps-globus login`. On a compute node without a keyring, log in with \
                 PS_GLOBUS_TOKEN_STORE=file where the state directory is shared, or \
                 {SERVICE_IDENTITY}"
            )),
            Error::NeedsAttention { fix, .. } => Some(fix.clone()),
            Error::UnknownSite { known, .. } if known.is_empty() => Some(
                "no site is configured: run `ps-globus config init`, then `ps-globus site add \
                 NAME COLLECTION_ID --collection-path PATH --local-path DIR` for each site"
                    .into(),
            ),
            Error::Server { code, message, .. } => server_hint(code, message).map(Into::into),
            Error::NoRoute { .. } => Some(
                "give the multi connector a child whose policy accepts it (a last child with \
                 no policy takes every put), or change the put's tags"
                    .into(),
            ),
            Error::Timeout { .. } => Some(
                "raise the time limit (a store's resolve_timeout, a wait's timeout), or check \
                 that the awaited transfer is on its way (`ps-globus status`)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// The login command that grants `data_access` consents for `collections`.
fn consent_command(collections: &[String]) -> String {
    let mut command = String::from("ps-globus login");
    for c in collections {
        command.push_str(" --collection ");
        command.push_str(c);
    }
    command
}

/// Whether a server's error code says the credentials are missing or refused.
fn is_auth_code(code: &str) -> bool {
    matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
}

/// What to do about a server's error, where that is known.
fn server_hint(code: &str, message: &str) -> Option<&'static str> {
    if message.contains("invalid bulk length") {
        return Some(
            "the object is larger than the server's proto-max-bulk-len (512 MiB by default): \
             raise it, or send objects this large elsewhere with a MultiConnector size policy",
        );
    }
    Some(match code {
        "NOAUTH" | "WRONGPASS" => {
            "put the server's password in the environment variable the connector's \
             password_env names (and its user in username), in every process that uses it"
        }
        "NOPERM" => "grant this Redis user GET, SET, EXISTS, UNLINK and SCAN on its key prefix",
        "OOM" => {
            "the Redis server is full: raise its maxmemory, give objects a ttl, or send large \
             objects elsewhere with a MultiConnector size policy"
        }
        "READONLY" => "this server is a read-only replica: connect to the primary",
        _ => return None,
    })
}
