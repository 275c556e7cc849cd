//! The one public error type, by category.
//!
//! An [`Error`] is one of a few categories, shaped like [`ErrorKind`] (as
//! `object_store`'s errors and `std::io::Error` are): code that decides by sort matches
//! the variant or [`Error::kind`]. Every variant carries the same [`Context`]: a message
//! naming what the user needs to act (the store, the key, the path), the failure
//! underneath as the [`source`](std::error::Error::source) (an `io::Error`, a database,
//! HTTP or serde error, never flattened into text and never holding a secret), and where
//! one is known a typed [`Remedy`] that the command line and the Python package word for
//! their users.
//!
//! Detail a caller may act on beyond the category is a typed error of its own, reached
//! with [`Error::downcast_ref`]: Globus's answer ([`GlobusApiError`], its code a
//! [`GlobusCode`]), a Redis server's ([`ServerError`]), a multi connector's refusal
//! ([`NoRoute`]), a failed or paused transfer, a settled or abandoned future, an
//! untrusted name.

mod advice;
mod detail;
mod globus;

pub use advice::{ErrorKind, Remedy};
pub use detail::{
    AlreadySet, ConsentRequired, IntegrityMismatch, LeaseEnded, NeedsAttention, NoRoute,
    ProducerGone, ServerError, TransferFailure, Untrusted,
};
pub use globus::{GlobusApiError, GlobusCode};

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Any underlying failure kept as an error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `match $error { Error::A($context) | Error::B($context) | … => $body }`, over every
/// variant: they all hold the same context.
macro_rules! every_variant {
    ($error:expr, $context:ident => $body:expr) => {
        match $error {
            Error::InvalidInput($context)
            | Error::Unsupported($context)
            | Error::NotFound($context)
            | Error::Conflict($context)
            | Error::PermissionDenied($context)
            | Error::Integrity($context)
            | Error::TransferFailed($context)
            | Error::Timeout($context)
            | Error::Unreachable($context)
            | Error::Service($context)
            | Error::Storage($context)
            | Error::Codec($context)
            | Error::Internal($context) => $body,
        }
    };
}

/// Everything that can go wrong in ps-globus, by category.
///
/// Each variant holds a boxed [`Context`] (so a `Result` stays two words wide); its
/// message is the error's `Display`. [`Error::is_transient`] says whether the same call
/// may succeed if repeated, [`Error::remedy`] what a person can do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Input that is not well-formed or not meant for this place: a key, a proxy, a
    /// configuration, a name, a put no connector accepts.
    InvalidInput(Box<Context>),
    /// Written by a newer release, or an operation this connector does not offer.
    Unsupported(Box<Context>),
    /// The object (or the thing named) is not here, and will not come: not stored, not
    /// staged here, evicted with its lease, or its producer is gone.
    NotFound(Box<Context>),
    /// Something already exists or is already settled: a store name, a future's value.
    Conflict(Box<Context>),
    /// Credentials are missing, refused or lack a consent, or data names something this
    /// process does not trust.
    PermissionDenied(Box<Context>),
    /// Bytes do not match what their key promises.
    Integrity(Box<Context>),
    /// A transfer failed at Globus, or waits for someone to act.
    TransferFailed(Box<Context>),
    /// A time limit passed.
    Timeout(Box<Context>),
    /// A service could not be reached.
    Unreachable(Box<Context>),
    /// A service answered with an error of its own.
    Service(Box<Context>),
    /// The local file system, the state database or the token file failed.
    Storage(Box<Context>),
    /// Encoding or decoding a value failed.
    Codec(Box<Context>),
    /// Something inside ps-globus went wrong (a background task, a panicking factory).
    Internal(Box<Context>),
}

/// What every [`Error`] carries: its message, the failure underneath, and what to do.
#[derive(Debug)]
pub struct Context {
    /// The message; empty when the source (a typed detail) says it all.
    message: String,
    source: Option<BoxError>,
    remedy: Option<Remedy>,
}

impl Error {
    /// An error of `kind` saying `message`, with no failure underneath.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::build(kind, message.into(), None, None)
    }

    /// An error of `kind` saying `message`, caused by `source`. The message says what was
    /// being done; it shows the source's text itself where that helps.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::build(kind, message.into(), Some(source.into()), None)
    }

    /// The same error, with `remedy` as what to do about it.
    pub fn with_remedy(mut self, remedy: Remedy) -> Self {
        self.context_mut().remedy = Some(remedy);
        self
    }

    /// An error of `kind` whose message is `detail`'s, keeping `detail` as the source
    /// for [`Error::downcast_ref`].
    pub(crate) fn from_detail(
        kind: ErrorKind,
        detail: impl std::error::Error + Send + Sync + 'static,
        remedy: Option<Remedy>,
    ) -> Self {
        Error::build(kind, String::new(), Some(Box::new(detail)), remedy)
    }

    fn build(
        kind: ErrorKind,
        message: String,
        source: Option<BoxError>,
        remedy: Option<Remedy>,
    ) -> Self {
        let context = Box::new(Context {
            message,
            source,
            remedy,
        });
        match kind {
            ErrorKind::InvalidInput => Error::InvalidInput(context),
            ErrorKind::Unsupported => Error::Unsupported(context),
            ErrorKind::NotFound => Error::NotFound(context),
            ErrorKind::Conflict => Error::Conflict(context),
            ErrorKind::PermissionDenied => Error::PermissionDenied(context),
            ErrorKind::Integrity => Error::Integrity(context),
            ErrorKind::TransferFailed => Error::TransferFailed(context),
            ErrorKind::Timeout => Error::Timeout(context),
            ErrorKind::Unreachable => Error::Unreachable(context),
            ErrorKind::Service => Error::Service(context),
            ErrorKind::Storage => Error::Storage(context),
            ErrorKind::Codec => Error::Codec(context),
            ErrorKind::Internal => Error::Internal(context),
        }
    }

    fn context(&self) -> &Context {
        every_variant!(self, context => context)
    }

    fn context_mut(&mut self) -> &mut Context {
        every_variant!(self, context => context)
    }

    /// The first error of type `T` among this error's sources (its typed detail, or a
    /// failure underneath such as an `io::Error`).
    ///
    /// ```
    /// use ps_globus::error::{AlreadySet, Error};
    /// let e = Error::from(AlreadySet::new("future k of store s"));
    /// assert_eq!(e.downcast_ref::<AlreadySet>().unwrap().what, "future k of store s");
    /// ```
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<T>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }

    /// Whether this error's detail (or a failure underneath) is a `T`.
    pub fn is<T: std::error::Error + 'static>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }

    /// What to do about it, where a person must act: the command line and the Python
    /// package say it in their own words. Advice that needs nothing outside the library
    /// is part of the message itself.
    ///
    /// ```
    /// use ps_globus::error::{Error, Remedy};
    /// let e = Error::login_required("no stored login");
    /// assert_eq!(e.remedy(), Some(&Remedy::Login { collections: vec![] }));
    /// ```
    pub fn remedy(&self) -> Option<&Remedy> {
        self.context().remedy.as_ref()
    }
}

/// Constructors for the errors raised in many places.
impl Error {
    /// A file-system operation `op` ("write", "read", "rename") failed on `path`.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        let message = format!(
            "{op} {}: {source}{}",
            path.as_ref().display(),
            io_hint(&source)
        );
        Error::with_source(ErrorKind::Storage, message, source)
    }

    /// A file of stored state (the state database, the token file) at `path` failed:
    /// `message` says what was being done, or what is wrong, and what to do.
    pub(crate) fn state(
        path: impl AsRef<Path>,
        message: impl fmt::Display,
        source: impl Into<BoxError>,
    ) -> Self {
        let source = source.into();
        let message = format!("{}: {message}: {source}", path.as_ref().display());
        Error::with_source(ErrorKind::Storage, message, source)
    }

    /// Like [`Error::state`], with no failure underneath.
    pub(crate) fn state_message(path: impl AsRef<Path>, message: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::Storage,
            format!("{}: {message}", path.as_ref().display()),
        )
    }

    /// Background work (`what`) ended abnormally, for `source` if known.
    pub(crate) fn background(what: impl fmt::Display, source: Option<BoxError>) -> Self {
        match source {
            Some(s) => Error::with_source(ErrorKind::Internal, format!("{what} failed: {s}"), s),
            None => Error::new(ErrorKind::Internal, format!("{what} failed")),
        }
    }

    /// A value could not be encoded with `codec` (a store's codec, JSON, TOML).
    pub fn encode(codec: &'static str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        let message = format!("could not encode a value with codec {codec}: {source}");
        Error::with_source(ErrorKind::Codec, message, source)
    }

    /// The bytes of `key` in `store` could not be decoded with `codec`.
    pub(crate) fn decode(
        store: &str,
        key: &impl fmt::Display,
        codec: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        let source = source.into();
        let message = format!(
            "could not decode key {key} of store '{store}' with codec {codec}: {source} \
             (was it stored as a different type, or by a store with another codec?)"
        );
        Error::with_source(ErrorKind::Codec, message, source)
    }

    /// A key (or a proxy's key) is not well-formed, for `reason`.
    pub(crate) fn malformed(reason: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidInput, format!("malformed key: {reason}"))
    }

    /// A serialized proxy is not well-formed, for `reason`.
    pub(crate) fn malformed_proxy(reason: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::InvalidInput,
            format!("malformed proxy: {reason}"),
        )
    }

    /// A configuration of `what` (a connector kind, "store") is invalid: `message` says
    /// how. For what a user typed ("address", "batch file", "deadline"), the message
    /// alone.
    pub fn invalid_config(what: &str, message: impl fmt::Display) -> Self {
        let text = if matches!(what, "address" | "batch file" | "deadline") {
            message.to_string()
        } else {
            format!("invalid {what} configuration: {message}")
        };
        Error::new(ErrorKind::InvalidInput, text)
    }

    /// Like [`Error::invalid_config`], keeping the parser's error as the source.
    pub fn invalid_config_from(what: &str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        let message = Error::invalid_config(what, &source).to_string();
        Error::with_source(ErrorKind::InvalidInput, message, source)
    }

    /// Waiting for `what` took longer than `after`.
    pub(crate) fn timeout(what: impl fmt::Display, after: Duration) -> Self {
        Error::new(
            ErrorKind::Timeout,
            format!("timed out after {after:?} waiting for {what}"),
        )
        .with_remedy(Remedy::RaiseLimitOrCheckTransfers)
    }

    /// `key` (as text) is not in `store`; `hint` is the connector's advice, if any.
    pub(crate) fn not_found(store: &str, key: &impl fmt::Display, hint: &str) -> Self {
        let hint = if hint.is_empty() {
            String::new()
        } else {
            format!("; {hint}")
        };
        Error::new(
            ErrorKind::NotFound,
            format!(
                "object {key} is not in store '{store}': it was evicted (a proxy made with \
                 evict=true resolves only once), or it was stored by a connector this \
                 process cannot reach{hint}"
            ),
        )
    }

    /// There is no usable login: none stored, or Globus no longer accepts it.
    pub fn login_required(reason: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::PermissionDenied,
            format!("not logged in to Globus ({reason})"),
        )
        .with_remedy(Remedy::Login {
            collections: vec![],
        })
    }

    /// Globus refused the credentials, saying `message`.
    pub fn unauthorized(message: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::PermissionDenied,
            format!("Globus refused the credentials ({message})"),
        )
        .with_remedy(Remedy::LoginAgain)
    }

    /// The service at `url` could not be reached, after `retries` retries.
    pub(crate) fn unreachable(url: &str, source: impl Into<BoxError>, retries: u32) -> Self {
        let source = source.into();
        let message = format!(
            "could not reach {url}: {source} ({}); check the network and the service URL",
            globus::after_retries(retries)
        );
        Error::with_source(ErrorKind::Unreachable, message, source)
    }

    /// `operation` is not offered by a `connector` connector; `advice` says what instead.
    pub fn unsupported(operation: &str, connector: &str, advice: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::Unsupported,
            format!("{operation} is not available on a '{connector}' connector: {advice}"),
        )
    }

    /// `what` ("key", "proxy", "store config") was written in format version `found`;
    /// this build reads up to `supported`.
    pub(crate) fn unsupported_version(what: &str, found: u16, supported: u16) -> Self {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "unsupported {what} format version {found} (this build reads version \
                 {supported}): upgrade ps-globus on this machine to read it"
            ),
        )
    }

    /// Store `name` is already registered in this process with another configuration.
    pub(crate) fn store_conflict(name: &str) -> Self {
        Error::new(
            ErrorKind::Conflict,
            format!(
                "store '{name}' is already registered in this process with a different \
                 configuration: give the new store another name, or close the old one first"
            ),
        )
    }

    /// `key` was made by a `found` connector and handed to an `expected` one.
    pub(crate) fn foreign_key(expected: &str, found: &str, key: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "key {key} was made by a '{found}' connector and cannot be used with a \
                 '{expected}' connector: use it with a store on the connector that made it"
            ),
        )
    }

    /// A config names connector `kind`, which this process does not know (`known`).
    pub(crate) fn unknown_connector(kind: &str, known: &[String]) -> Self {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "unknown connector kind '{kind}' (known: {}): register it with \
                 connector::register_kind before resolving",
                known.join(", ")
            ),
        )
    }

    /// Object `key` was not sent to this `site`, only to `destinations`.
    pub(crate) fn not_staged(
        key: impl fmt::Display,
        site: impl fmt::Display,
        destinations: &[String],
    ) -> Self {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "object {key} is not staged at site {site} (it was sent to: {}); put it with \
                 this site among its destinations, or enable pull_on_demand on the store",
                destinations.join(", ")
            ),
        )
    }

    /// A proxy built from a closure was serialized; only store-backed proxies travel.
    pub(crate) fn not_serializable() -> Self {
        Error::new(
            ErrorKind::InvalidInput,
            "a proxy built from a closure cannot be serialized: make it with Store::proxy so \
             it travels as a store reference",
        )
    }

    /// A closure proxy's factory already ran and panicked; it cannot run again.
    pub(crate) fn factory_consumed() -> Self {
        Error::new(
            ErrorKind::Internal,
            "the proxy's factory panicked during an earlier resolve and cannot run again",
        )
    }

    /// No configured site matches, or a name is not a site; `known` lists the sites.
    pub(crate) fn unknown_site(message: impl fmt::Display, known: &[String]) -> Self {
        let error = Error::new(
            ErrorKind::InvalidInput,
            format!("{message}; configured sites: {}", known.join(", ")),
        );
        if known.is_empty() {
            error.with_remedy(Remedy::ConfigureSites)
        } else {
            error
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = self.context();
        match (&context.source, context.message.is_empty()) {
            (Some(detail), true) => detail.fmt(f),
            _ => f.write_str(&context.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source = self.context().source.as_ref()?;
        Some(&**source as &(dyn std::error::Error + 'static))
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

#[cfg(test)]
mod tests;
