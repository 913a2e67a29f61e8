//! The TLS client side of the proxy: [`UpstreamTls`], how it verifies upstream servers.
//!
//! Upstream certificates are verified by default, against the bundled web PKI roots,
//! the operating system's store where it has one, and any extra CA files the user
//! names. Turning verification off is possible and named as the danger it is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::client::TlsStream;

use crate::core::Target;
use crate::error::{Error, Result};

/// The TLS client side of the proxy: how it verifies upstream servers.
///
/// Client configurations differ only by the ALPN list offered (the proxy offers what
/// its client offered), so one is kept per list seen. They share one session store
/// (rustls' in-memory cache of 256 sessions, by server name), so a new connection to an
/// origin resumes the session of an earlier one, over TLS 1.3 and 1.2 alike
/// (`tests/it/resumption.rs`).
#[derive(Debug)]
pub struct UpstreamTls {
    base: Arc<ClientConfig>,
    by_alpn: Mutex<HashMap<Vec<Vec<u8>>, Arc<ClientConfig>>>,
}

/// At most this many ALPN variants are kept; past it, configs are built per connection.
const MAX_ALPN_VARIANTS: usize = 32;

impl UpstreamTls {
    /// Verifies upstream certificates against the bundled web PKI roots, the system's
    /// store (where it can be read) and the PEM files in `extra_ca_files`.
    pub fn verified(extra_ca_files: &[PathBuf]) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The system store is a bonus: a machine without one still has the bundle.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for path in extra_ca_files {
            add_ca_file(&mut roots, path)?;
        }
        let config = ClientConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::TlsConfig {
                context: "upstream client".into(),
                source,
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_config(config))
    }

    /// Accepts any upstream certificate without checking it. Anyone between the proxy
    /// and the server can then read and change the traffic: use it only for tests and
    /// servers you control.
    pub fn dangerous_unverified() -> Result<Self> {
        let provider = crate::tls::crypto_provider();
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::TlsConfig {
                context: "upstream client".into(),
                source,
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
            .with_no_client_auth();
        Ok(Self::from_config(config))
    }

    /// Uses `config` as it is (its ALPN list is replaced per connection).
    pub fn from_config(config: ClientConfig) -> Self {
        UpstreamTls {
            base: Arc::new(config),
            by_alpn: Mutex::new(HashMap::new()),
        }
    }

    /// Presents the certificate chain and private key in the PEM file `pem` to
    /// upstream servers that ask for one (mutual TLS).
    pub fn with_client_cert(mut self, pem: &Path) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let bad = |reason: String| Error::UpstreamClientCert {
            path: pem.to_path_buf(),
            reason,
        };
        let data = std::fs::read(pem).map_err(|e| bad(e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(&data)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("bad PEM: {e}")))?;
        if chain.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&data)
            .map_err(|e| bad(format!("no usable private key in the file: {e}")))?;
        let signer = crate::tls::crypto_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad(format!("unsupported private key: {e}")))?;
        let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
        let mut config = (*self.base).clone();
        config.client_auth_cert_resolver =
            Arc::new(rustls::sign::SingleCertAndKey::from(certified));
        self.base = Arc::new(config);
        self.by_alpn = Mutex::new(HashMap::new());
        Ok(self)
    }

    /// Writes the secrets of every upstream TLS session to `log` (for instance a
    /// [`KeyLogWriter`](crate::tls::keylog::KeyLogWriter)), so that a capture of the
    /// proxy's upstream traffic can be decrypted. Default: not logged.
    pub fn with_key_log(mut self, log: Arc<dyn rustls::KeyLog>) -> Self {
        let mut config = (*self.base).clone();
        config.key_log = log;
        self.base = Arc::new(config);
        self.by_alpn = Mutex::new(HashMap::new());
        self
    }

    fn config_for(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        let mut map = self.by_alpn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(alpn) {
            return c.clone();
        }
        let mut config = (*self.base).clone();
        config.alpn_protocols = alpn.to_vec();
        let config = Arc::new(config);
        if map.len() < MAX_ALPN_VARIANTS {
            map.insert(alpn.to_vec(), config.clone());
        }
        config
    }

    /// Runs the TLS handshake with the upstream over `tcp`, naming `server_name` by SNI
    /// and offering `alpn`.
    pub(crate) async fn connect<S>(
        &self,
        tcp: S,
        target: &Target,
        server_name: &str,
        alpn: &[Vec<u8>],
    ) -> Result<TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = server_name_of(server_name)?;
        let connector = tokio_rustls::TlsConnector::from(self.config_for(alpn));
        connector
            .connect(name, tcp)
            .await
            .map_err(|source| Error::UpstreamTls {
                target: target.to_string(),
                source,
            })
    }
}

/// A TLS server name for `host`: an IP address or a DNS name.
fn server_name_of(host: &str) -> Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string()).map_err(|_| Error::InvalidHost { host: host.into() })
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| Error::UpstreamCa {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(())
}

/// The verifier behind [`UpstreamTls::dangerous_unverified`]: every certificate passes,
/// but handshake signatures are still checked so the session keys are sound.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_accept_bracketed_ipv6() {
        assert!(matches!(
            server_name_of("[::1]"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name_of("bad name").is_err());
    }
}
