//! How endpoints reach the relay: `tcp://HOST:PORT`, or `tls://HOST:PORT` with the relay's
//! certificate checked against the system's roots or a CA file the endpoint's own
//! configuration names.
//!
//! A registration carries a Globus Auth token, so an endpoint refuses to send one over
//! `tcp://` to anything but loopback: a token must never cross a network in clear text.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A byte stream to the relay or through it (plain TCP, or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed [`Io`].
pub type Stream = Box<dyn Io>;

/// A relay's address, as an endpoint's configuration gives it.
#[derive(Clone)]
pub struct RelayAddress {
    /// `host:port`.
    pub host_port: String,
    /// The host alone (the TLS server name).
    pub host: String,
    /// TLS to the relay, with this configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for RelayAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}",
            if self.tls.is_some() { "tls" } else { "tcp" },
            self.host_port
        )
    }
}

impl std::fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl RelayAddress {
    /// Parses `tcp://HOST:PORT` or `tls://HOST:PORT` (the latter checked against
    /// `ca_file`, else the system's roots). `sends_token`: refuse `tcp://` off loopback.
    pub fn parse(address: &str, ca_file: Option<&Path>, sends_token: bool) -> Result<Self, String> {
        let (scheme, rest) = address.split_once("://").ok_or_else(|| {
            format!("relay address {address:?} is not tcp://HOST:PORT or tls://HOST:PORT")
        })?;
        let host_port = rest.trim_end_matches('/').to_owned();
        let host = match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            _ => return Err(format!("relay address {address:?} has no HOST:PORT")),
        };
        let tls = match scheme {
            "tcp" => {
                if sends_token && !crate::is_loopback_host(&host) {
                    return Err(format!(
                        "relay address {address:?} would carry a Globus token in clear text: use \
                         tls://{host_port} (or relay_auth = \"none\" on a network you trust)"
                    ));
                }
                None
            }
            "tls" => Some(Arc::new(client_config(ca_file)?)),
            other => {
                return Err(format!(
                    "relay address scheme {other:?} is not tcp or tls (ProxyStore's ws:// relays \
                     speak another protocol)"
                ));
            }
        };
        Ok(RelayAddress {
            host_port,
            host,
            tls,
        })
    }

    /// A connection to the relay.
    pub async fn connect(&self) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(&self.host_port).await?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                Ok(Box::new(tls))
            }
        }
    }
}

fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                roots
                    .add(cert.map_err(|e| format!("{}: {e}", path.display()))?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth())
        }
        None => {
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier()
                .map_err(|e| format!("the system's TLS roots: {e}"))
        }
    }
}

/// The relay's TLS acceptor from a certificate chain and key (PEM files).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the relay's certificate: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_goes_to_a_relay_in_clear_text_off_loopback() {
        let refused = RelayAddress::parse("tcp://relay.example.org:8700", None, true).unwrap_err();
        assert!(refused.contains("clear text"), "{refused}");
        // Loopback, or a relay without auth: plain TCP is allowed.
        assert!(RelayAddress::parse("tcp://127.0.0.1:8700", None, true).is_ok());
        assert!(RelayAddress::parse("tcp://relay.example.org:8700", None, false).is_ok());
        // TLS anywhere; ProxyStore's websocket relays are named as such.
        let tls = RelayAddress::parse("tls://relay.example.org:8700", None, true).unwrap();
        assert_eq!(tls.to_string(), "tls://relay.example.org:8700");
        let ws = RelayAddress::parse("wss://relay.proxystore.dev", None, true).unwrap_err();
        assert!(
            ws.contains("HOST:PORT") || ws.contains("another protocol"),
            "{ws}"
        );
    }
}
