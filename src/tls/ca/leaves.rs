//! Leaf certificates: one per host, signed by the root, and the cache that keeps each
//! host's leaf and TLS config.
//!
//! All leaves certify one ECDSA P-256 key pair, made once per authority (as mitmproxy
//! does): issuing a leaf is then one signature. A host's cache entry is found or
//! inserted under the cache lock, but built under the entry's own lock, so concurrent
//! first requests for one host make exactly one leaf without blocking other hosts.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use lru::LruCache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::Duration;

use super::host::Host;
use super::root::Root;
use super::{cert_error, set_validity, tls_error};
use crate::error::Result;

/// Leaf lifetime from now; with the backdating the whole span is 198 days, under the
/// 199-day maximum that browsers are moving to.
const LEAF_LIFETIME: Duration = Duration::days(196);
/// A cached leaf older than this is reissued, long before it expires.
const LEAF_REFRESH: StdDuration = StdDuration::from_secs(90 * 24 * 3600);
/// X.520 upper bound for a common name; longer hosts go in the SAN only.
const MAX_CN_LEN: usize = 64;

/// Issues leaves and keeps them, with their TLS configs, per host in a bounded LRU.
pub(super) struct Leaves {
    /// The key pair every leaf certifies, as rcgen needs it (for its public half) ...
    key: KeyPair,
    /// ... and as rustls needs it (to sign handshakes).
    signer: Arc<dyn SigningKey>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<LruCache<String, Arc<Slot>>>,
}

/// One host's cached leaf and config, each built at most once.
struct Slot {
    created: Instant,
    key: Mutex<Option<Arc<CertifiedKey>>>,
    config: Mutex<Option<Arc<ServerConfig>>>,
}

impl Leaves {
    /// A new leaf key pair and an empty cache of `entries` hosts (at least 1).
    pub(super) fn new(entries: usize) -> Result<Self> {
        let provider = crate::tls::crypto_provider();
        let key = KeyPair::generate().map_err(cert_error("leaf key"))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(key.serialize_der());
        let signer = provider
            .key_provider
            .load_private_key(pkcs8.into())
            .map_err(tls_error("loading the leaf key"))?;
        Ok(Self {
            key,
            signer,
            provider,
            cache: Mutex::new(LruCache::new(cache_size(entries))),
        })
    }

    /// Keeps at most `entries` hosts (at least 1), least recently used going first.
    /// The leaf key, as PKCS#8 PEM.
    pub(super) fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub(super) fn resize(&mut self, entries: usize) {
        let cache = self.cache.get_mut();
        cache
            .unwrap_or_else(PoisonError::into_inner)
            .resize(cache_size(entries));
    }

    /// A fresh leaf for `host`, signed by `root`; not cached.
    pub(super) fn issue(&self, root: &Root, host: &Host) -> Result<CertificateDer<'static>> {
        let cert = leaf_params(host)?
            .signed_by(&self.key, &root.issuer)
            .map_err(cert_error(&host.name))?;
        Ok(cert.into())
    }

    /// The chain (leaf, root) and key to present for `host`, cached.
    pub(super) fn certified_key(&self, root: &Root, host: &Host) -> Result<Arc<CertifiedKey>> {
        self.key_in(root, &self.slot(&host.name), host)
    }

    /// A TLS server config presenting the leaf for `host`, offering ALPN `http/1.1`
    /// only; cached.
    pub(super) fn server_config(&self, root: &Root, host: &Host) -> Result<Arc<ServerConfig>> {
        let slot = self.slot(&host.name);
        get_or_build(&slot.config, || {
            let key = self.key_in(root, &slot, host)?;
            self.build_config(key)
        })
    }

    /// How many hosts have a cache entry.
    pub(super) fn cached(&self) -> usize {
        self.lock_cache().len()
    }

    fn key_in(&self, root: &Root, slot: &Slot, host: &Host) -> Result<Arc<CertifiedKey>> {
        get_or_build(&slot.key, || {
            let chain = vec![self.issue(root, host)?, root.der.clone()];
            Ok(Arc::new(CertifiedKey::new(chain, self.signer.clone())))
        })
    }

    fn build_config(&self, key: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error("protocol versions"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The host's cache entry, made fresh when missing or due for reissue.
    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut cache = self.lock_cache();
        let cached = cache
            .get(name)
            .filter(|s| s.created.elapsed() < LEAF_REFRESH);
        if let Some(slot) = cached.cloned() {
            return slot;
        }
        let slot = Arc::new(Slot {
            created: Instant::now(),
            key: Mutex::new(None),
            config: Mutex::new(None),
        });
        cache.put(name.to_owned(), slot.clone());
        slot
    }

    fn lock_cache(&self) -> MutexGuard<'_, LruCache<String, Arc<Slot>>> {
        // A panic elsewhere cannot leave the map half-updated in a way that matters.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the cell's value, building it first if empty. The cell stays locked while
/// building, so concurrent callers wait for the one build; a failed build leaves the
/// cell empty for the next caller to retry.
fn get_or_build<T: Clone>(cell: &Mutex<Option<T>>, build: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut value = cell.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(value) = value.as_ref() {
        return Ok(value.clone());
    }
    let built = build()?;
    *value = Some(built.clone());
    Ok(built)
}

/// A server certificate for `host`: the host as common name (when short enough) and
/// SAN, not a CA, and an authority key identifier, which rcgen takes from the root's
/// subject key identifier when it has one.
fn leaf_params(host: &Host) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if host.name.len() <= MAX_CN_LEN {
        params
            .distinguished_name
            .push(DnType::CommonName, &host.name);
    }
    params.subject_alt_names = vec![host.san()?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_LIFETIME);
    Ok(params)
}

fn cache_size(entries: usize) -> NonZeroUsize {
    NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_hosts_get_no_common_name() {
        let host = Host::parse(&format!("{}.test", "a".repeat(61))).unwrap();
        assert!(leaf_params(&host)
            .unwrap()
            .distinguished_name
            .iter()
            .next()
            .is_none());
        let host = Host::parse(&format!("{}.test", "a".repeat(59))).unwrap();
        assert_eq!(host.name.len(), 64);
        assert!(leaf_params(&host)
            .unwrap()
            .distinguished_name
            .get(&DnType::CommonName)
            .is_some());
    }
}
