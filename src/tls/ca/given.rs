//! Certificates given by the user (`--certs [domain=]path`, mitmproxy's `certs`),
//! served instead of minted leaves for the names they are registered under.
//!
//! As mitmproxy's certstore: a file (chain and key in one PEM) is registered under the
//! name it was given for (`*` when none: every host), and under its own common name and
//! subject alternative names. A host looks for, in order, its own name, then each
//! `*.parent` form from the closest parent up (`a.b.example.com` tries
//! `*.b.example.com`, `*.example.com`, `*.com`: so `*.example.com` also covers
//! `a.b.example.com`, unlike a TLS wildcard), then `*`. The last file registered under
//! a name wins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use x509_parser::extensions::GeneralName;

use super::host::Host;
use super::tls_error;
use crate::error::{Error, Result};

/// One given certificate: its chain and key, and the config presenting them.
pub(super) struct Given {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) config: Arc<ServerConfig>,
}

/// The given certificates by the names they are registered under.
#[derive(Default)]
pub(super) struct GivenCerts {
    /// Whether any certificate was given: until one is, a lookup costs one load.
    any: AtomicBool,
    by_name: RwLock<HashMap<String, Arc<Given>>>,
}

impl GivenCerts {
    /// Reads `path` (a PEM with the leaf first, its chain, and the private key) and
    /// registers it under `spec` (a domain, `*.domain`, or `*`) and its own names.
    pub(super) fn add_file(&self, spec: &str, path: &Path) -> Result<()> {
        let given = Arc::new(load(path)?);
        let mut names = vec![spec.to_ascii_lowercase()];
        names.extend(own_names(&given.key.cert[0]));
        let mut by_name = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        for name in names {
            by_name.insert(name, given.clone());
        }
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    /// The given certificate for `host`, if one is registered under its name, one of
    /// its `*.` forms, or `*`.
    pub(super) fn find(&self, host: &Host) -> Option<Arc<Given>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let by_name = self.by_name.read().unwrap_or_else(PoisonError::into_inner);
        let exact = std::iter::once(host.name.clone());
        let parents = host
            .ip
            .is_none()
            .then(|| wildcard_forms(&host.name))
            .into_iter()
            .flatten();
        exact
            .chain(parents)
            .chain(std::iter::once("*".to_string()))
            .find_map(|name| by_name.get(&name).cloned())
    }
}

/// `*.b.c`, `*.c` for `a.b.c`: the wildcard forms from the closest parent up.
fn wildcard_forms(name: &str) -> impl Iterator<Item = String> + '_ {
    name.match_indices('.')
        .map(move |(at, _)| format!("*{}", &name[at..]))
}

/// The names a certificate is for: its common name and its DNS and IP alternative
/// names, lowercase.
fn own_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => names.extend(ip_of(bytes)),
                _ => {}
            }
        }
    }
    names
}

/// An IP address alternative name as text.
fn ip_of(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// Reads and checks one PEM file: at least one certificate, a private key that
/// belongs to the first one.
fn load(path: &Path) -> Result<Given> {
    let bad = |reason: String| Error::CertFile {
        path: PathBuf::from(path),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&data)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    if let Err(e) = x509_parser::parse_x509_certificate(&chain[0]) {
        return Err(bad(format!("the first certificate does not parse: {e}")));
    }
    let key = PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| bad(format!("no usable private key in the file: {e}")))?;
    let provider = crate::tls::crypto_provider();
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(format!("unsupported private key: {e}")))?;
    let key = Arc::new(CertifiedKey::new(chain, signer));
    key.keys_match().map_err(|e| {
        bad(format!(
            "the private key does not belong to the first certificate: {e}"
        ))
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error("protocol versions"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone())));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Given {
        key,
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_forms_go_from_the_closest_parent_up() {
        let forms: Vec<String> = wildcard_forms("a.b.example.com").collect();
        assert_eq!(forms, ["*.b.example.com", "*.example.com", "*.com"]);
        assert_eq!(wildcard_forms("localhost").count(), 0);
    }
}
