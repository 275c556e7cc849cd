//! TLS between endpoints: each endpoint makes a fresh self-signed certificate when it
//! starts and tells the relay its SHA-256 fingerprint when it registers. A connection
//! to a peer (direct, or tunnelled through the relay) is TLS 1.3 with certificates on
//! both sides, each pinned to the fingerprint the relay gave for that peer:
//!
//! - the dialling side accepts only the server certificate whose fingerprint the relay
//!   announced for the peer it meant to reach;
//! - the answering side takes any client certificate during the handshake (it does not
//!   know yet who is calling), then reads the caller's `hello`, asks the relay for that
//!   endpoint's fingerprint, and closes unless the certificate presented is that one.
//!
//! The relay can only vouch for endpoints registered by the same Globus identity (it
//! checks `sub`), so an endpoint talks only to its owner's other endpoints. A relay
//! that tunnels the bytes sees only ciphertext. Handshake signatures are still checked
//! against the presented key (rustls' own verification with the ring provider).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DistinguishedName, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

/// The name in every endpoint certificate (checked by nobody: the pin is the check).
pub const SERVER_NAME: &str = "ps-globus-endpoint";

/// This endpoint's certificate and key.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a certificate's DER, hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// A fresh key and self-signed certificate.
    pub fn generate() -> Result<Self, rcgen::Error> {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
        let cert = made.cert.der().clone();
        let fingerprint = fingerprint(&cert);
        Ok(Identity {
            cert,
            key: PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()),
            fingerprint,
        })
    }

    /// The certificate's fingerprint, as the relay announces it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The config to dial the peer whose certificate has `peer_fingerprint`.
    pub fn client_config(&self, peer_fingerprint: &str) -> Result<ClientConfig, rustls::Error> {
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: peer_fingerprint.to_owned(),
                provider: provider(),
            }))
            .with_client_auth_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
    }

    /// The config to answer peers (any client certificate; see the module docs).
    pub fn server_config(&self) -> Result<ServerConfig, rustls::Error> {
        ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                provider: provider(),
            }))
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
    }
}

/// The server name to dial with.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// The handshake-signature methods both verifiers share: rustls' own checks with the
/// ring provider's algorithms (the certificate itself is judged by the pin).
macro_rules! handshake_signatures_by_the_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Accepts exactly the server certificate with this fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the peer's certificate is not the one its relay announced".into(),
            ))
        }
    }

    handshake_signatures_by_the_provider!();
}

/// Requires a client certificate and a valid handshake signature with its key; who it
/// belongs to is checked after the handshake (see the module docs).
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures_by_the_provider!();
}
