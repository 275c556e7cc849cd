//! The one way this crate builds HTTP clients.

use std::time::Duration;

use crate::error::{Error, Result};

/// A reqwest client for the service rooted at `base_url`, and that root with a trailing
/// slash. TLS uses rustls with the ring provider (installed once per process); system
/// proxies are honoured except for loopback, which reqwest would otherwise send to them.
pub(crate) fn client(
    what: &str,
    base_url: &str,
    builder: reqwest::ClientBuilder,
) -> Result<(reqwest::Client, String)> {
    let invalid = |message: String| Error::invalid_config(what, message);
    let url = reqwest::Url::parse(base_url).map_err(|e| invalid(format!("{base_url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("{base_url:?} is not an http(s) URL")));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = builder
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    ) {
        builder = builder.no_proxy();
    }
    let client = builder
        .build()
        .map_err(|e| invalid(format!("HTTP client: {e}")))?;
    let base = if base_url.ends_with('/') {
        base_url.to_owned()
    } else {
        format!("{base_url}/")
    };
    Ok((client, base))
}
