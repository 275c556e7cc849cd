//! How the Transfer client reads an answer: a request sent and its status, body and
//! `Retry-After` read; a refusal classified (Globus's error document, a consent the
//! authorizer may add, what the retry loop may try again); a failed attempt as the
//! retry loop sees it.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::RETRY_AFTER;

use super::types::ErrorDoc;
use crate::error::{BoxError, Error, GlobusApiError, GlobusCode};

/// A failed attempt, as the retry loop sees it.
pub(super) struct Failure {
    pub(super) failed: Failed,
    pub(super) retryable: bool,
    pub(super) retry_after: Option<Duration>,
}

/// What failed, kept apart until the number of retries is known.
pub(super) enum Failed {
    /// Globus answered with an error.
    Answer(GlobusApiError),
    /// The service could not be reached at `url`.
    Unreachable { url: String, source: BoxError },
    /// Anything else, final as it is.
    Other(Error),
}

impl Failure {
    pub(super) fn fatal(error: Error) -> Self {
        Failure {
            failed: Failed::Other(error),
            retryable: false,
            retry_after: None,
        }
    }

    /// The error, saying how many retries were made.
    pub(super) fn into_error(self, retries: u32) -> Error {
        match self.failed {
            Failed::Answer(mut answer) => {
                answer.retries = retries;
                answer.into()
            }
            Failed::Unreachable { url, source } => Error::unreachable(&url, source, retries),
            Failed::Other(error) => error,
        }
    }
}

/// Sends `request` to `url`: the answer's status, its `Retry-After`, and its body; a
/// failure to connect or to read is a retryable network failure.
pub(super) async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<(reqwest::StatusCode, Option<Duration>, bytes::Bytes), Failure> {
    let network = |e: reqwest::Error| Failure {
        failed: Failed::Unreachable {
            url: url.to_owned(),
            source: without_url(&e).into(),
        },
        retryable: true,
        retry_after: None,
    };
    let response = request.send().await.map_err(network)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.bytes().await.map_err(network)?;
    Ok((status, retry_after, text))
}

/// What a refused request's answer means.
pub(super) enum Refusal {
    /// `ConsentRequired`, with the scopes the service asked for.
    Consent(Vec<String>),
    /// Anything else: the error, and whether (and when) to try again.
    Failed(Failure),
}

/// Classifies a refusal (`status` not 2xx, `text` its body) of `method` on `path`:
/// Globus's error document when there is one, else the status and the body's start.
pub(super) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    text: &[u8],
    (method, path): (&Method, &str),
) -> Refusal {
    let doc: Option<ErrorDoc> = serde_json::from_slice(text).ok();
    let (code, message, request_id) = match &doc {
        Some(d) => (
            d.code.clone(),
            d.message.clone(),
            d.request_id.clone().unwrap_or_default(),
        ),
        None => (
            format!("HTTP{status}"),
            String::from_utf8_lossy(text).chars().take(200).collect(),
            String::new(),
        ),
    };
    if status == 401 {
        return Refusal::Failed(Failure::fatal(Error::unauthorized(message)));
    }
    if code == "ConsentRequired" {
        return Refusal::Consent(doc.and_then(|d| d.required_scopes).unwrap_or_default());
    }
    let answer = GlobusApiError::new(
        status,
        GlobusCode::parse(&code),
        message,
        request_id,
        (method.to_string(), format!("/{path}")),
    );
    let retryable = answer.is_transient();
    Refusal::Failed(Failure {
        failed: Failed::Answer(answer),
        retryable,
        retry_after: matches!(status, 429 | 503).then_some(retry_after).flatten(),
    })
}

/// A reqwest error's text without its URL (the URL is reported separately).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Collection ids in `https://auth.globus.org/scopes/<C>/data_access` dependencies.
pub(super) fn data_access_collections(scopes: &[String]) -> Vec<String> {
    let mut found: Vec<String> = scopes
        .iter()
        .flat_map(|s| s.split(['[', ']', ' ', '*']))
        .filter_map(|part| {
            part.strip_prefix("https://auth.globus.org/scopes/")?
                .strip_suffix("/data_access")
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}
