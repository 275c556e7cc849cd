//! Globus's own refusals: the error document of a Transfer answer, with its code typed.

use std::borrow::Cow;
use std::fmt;

use super::{Error, ErrorKind};

/// A Globus Transfer error code, typed where this build acts on it; any other word is
/// kept as Globus sent it ([`GlobusCode::Other`]), and [`GlobusCode::as_str`] gives the
/// exact text back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GlobusCode {
    /// `ClientError.NotFound`: no such task, collection or path.
    NotFound,
    /// `Conflict`: identical paths are still in flight in another task.
    Conflict,
    /// `ClientError.Conflict`: the request conflicts with the resource's state.
    ClientConflict,
    /// `ClientError.Conflict.PendingTaskLimit` (or another `…PendingTaskLimit`): too
    /// many tasks wait; the text is kept.
    PendingTaskLimit(String),
    /// `ClientError.AuthenticationFailed`.
    AuthenticationFailed,
    /// `ClientError.RequestTooLarge`: the document is over the service's limit.
    RequestTooLarge,
    /// `ClientError.BadRequest` or a refinement of it (`…NoTransferItems`); the text is kept.
    BadRequest(String),
    /// `ExternalError…`: the collection's own storage failed; the text is kept.
    External(String),
    /// `EndpointError…`: the collection's server failed; the text is kept.
    Endpoint(String),
    /// `ServiceUnavailable`: Globus is down for maintenance.
    ServiceUnavailable,
    /// `ClientError.BadResponse`: the answer was not the document asked for (said by this
    /// client, not by Globus).
    BadResponse,
    /// No error document came with the answer: only its HTTP status.
    Http(u16),
    /// A code this build does not know, as Globus sent it.
    Other(String),
}

impl GlobusCode {
    /// The code Globus sent as `text` (`HTTP<status>` when it sent no document).
    pub fn parse(text: &str) -> Self {
        match text {
            "ClientError.NotFound" => GlobusCode::NotFound,
            "Conflict" => GlobusCode::Conflict,
            "ClientError.Conflict" => GlobusCode::ClientConflict,
            "ClientError.AuthenticationFailed" => GlobusCode::AuthenticationFailed,
            "ClientError.RequestTooLarge" => GlobusCode::RequestTooLarge,
            "ServiceUnavailable" => GlobusCode::ServiceUnavailable,
            "ClientError.BadResponse" => GlobusCode::BadResponse,
            t if t.ends_with("PendingTaskLimit") => GlobusCode::PendingTaskLimit(t.into()),
            t if family(t, "ClientError.BadRequest") => GlobusCode::BadRequest(t.into()),
            t if family(t, "ExternalError") => GlobusCode::External(t.into()),
            t if family(t, "EndpointError") => GlobusCode::Endpoint(t.into()),
            t => match t.strip_prefix("HTTP").and_then(|s| s.parse().ok()) {
                Some(status) => GlobusCode::Http(status),
                None => GlobusCode::Other(t.into()),
            },
        }
    }

    /// The code's text, exactly as Globus sent it.
    pub fn as_str(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            GlobusCode::NotFound => "ClientError.NotFound",
            GlobusCode::Conflict => "Conflict",
            GlobusCode::ClientConflict => "ClientError.Conflict",
            GlobusCode::AuthenticationFailed => "ClientError.AuthenticationFailed",
            GlobusCode::RequestTooLarge => "ClientError.RequestTooLarge",
            GlobusCode::ServiceUnavailable => "ServiceUnavailable",
            GlobusCode::BadResponse => "ClientError.BadResponse",
            GlobusCode::PendingTaskLimit(t)
            | GlobusCode::BadRequest(t)
            | GlobusCode::External(t)
            | GlobusCode::Endpoint(t)
            | GlobusCode::Other(t) => t,
            GlobusCode::Http(status) => return Cow::Owned(format!("HTTP{status}")),
        })
    }

    /// Whether the failure is the collection's (its storage or server), which trying
    /// again does not mend.
    fn is_collections(&self) -> bool {
        matches!(self, GlobusCode::External(_) | GlobusCode::Endpoint(_))
    }
}

/// Whether `code` is `root` or a refinement of it (`root.…`).
fn family(code: &str, root: &str) -> bool {
    code.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl fmt::Display for GlobusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// Globus answered a request with an error document (or an error status without one).
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "Globus answered {status} {code} to {method} {path}: {message} (request id {request_id}; \
     {})", after_retries(*retries)
)]
#[non_exhaustive]
pub struct GlobusApiError {
    /// HTTP status.
    pub status: u16,
    /// The Globus error code.
    pub code: GlobusCode,
    /// The service's message.
    pub message: String,
    /// The service's request id, for a support ticket.
    pub request_id: String,
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// How many times the request was retried.
    pub retries: u32,
}

impl GlobusApiError {
    /// Globus's answer `status` with `code` and `message` to `method` on `path`, not
    /// (yet) retried.
    pub fn new(
        status: u16,
        code: GlobusCode,
        message: impl Into<String>,
        request_id: impl Into<String>,
        (method, path): (impl Into<String>, impl Into<String>),
    ) -> Self {
        GlobusApiError {
            status,
            code,
            message: message.into(),
            request_id: request_id.into(),
            method: method.into(),
            path: path.into(),
            retries: 0,
        }
    }

    /// Whether the same request may succeed later: a busy or failing service, not a
    /// collection's own failure.
    pub fn is_transient(&self) -> bool {
        matches!(self.status, 429 | 500 | 502 | 503 | 504) && !self.code.is_collections()
    }
}

impl From<GlobusApiError> for Error {
    fn from(d: GlobusApiError) -> Self {
        Error::from_detail(ErrorKind::Service, d, None)
    }
}

/// `after 1 retry`, `after 5 retries`, `not retried`.
pub(super) fn after_retries(retries: u32) -> String {
    match retries {
        0 => "not retried".into(),
        1 => "after 1 retry".into(),
        n => format!("after {n} retries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_exact_text_known_or_not() {
        for text in [
            "ClientError.NotFound",
            "Conflict",
            "ClientError.Conflict",
            "ClientError.Conflict.PendingTaskLimit",
            "ClientError.AuthenticationFailed",
            "ClientError.RequestTooLarge",
            "ClientError.BadRequest",
            "ClientError.BadRequest.NoTransferItems",
            "ExternalError.MkdirFailed.Exists",
            "EndpointError",
            "ServiceUnavailable",
            "ClientError.BadResponse",
            "HTTP502",
            "SomethingNew.Entirely",
            "ExternalErrorish",
        ] {
            assert_eq!(GlobusCode::parse(text).as_str(), text);
        }
        assert_eq!(
            GlobusCode::parse("ExternalError.MkdirFailed.Exists"),
            GlobusCode::External("ExternalError.MkdirFailed.Exists".into())
        );
        assert_eq!(GlobusCode::parse("HTTP502"), GlobusCode::Http(502));
        assert_eq!(
            GlobusCode::parse("ExternalErrorish"),
            GlobusCode::Other("ExternalErrorish".into())
        );
    }

    #[test]
    fn a_collections_own_failure_is_not_retried_even_as_a_5xx() {
        let answer = |status, code| {
            GlobusApiError::new(status, GlobusCode::parse(code), "m", "r", ("GET", "/x"))
        };
        assert!(answer(503, "ServiceUnavailable").is_transient());
        assert!(answer(502, "HTTP502").is_transient());
        assert!(!answer(502, "ExternalError.DirListingFailed").is_transient());
        assert!(!answer(503, "EndpointError").is_transient());
        assert!(!answer(404, "ClientError.NotFound").is_transient());
    }
}
