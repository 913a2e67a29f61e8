//! TLS: the proxy's certificate authority ([`ca`]), helping users trust it
//! ([`trust`]), and TLS fail-open for clients that pin their servers (`fail_open`).
//!
//! Every TLS config the crate builds takes its crypto provider from here.

pub mod ca;
pub(crate) mod fail_open;
pub mod trust;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider of every TLS config the crate builds: rustls' `ring` provider,
/// made once. Build your own configs with it (`ClientConfig::builder_with_provider`)
/// and they agree with the proxy's, whatever process-wide default is installed.
///
/// ```
/// let config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
///     .with_safe_default_protocol_versions()
///     .unwrap();
/// ```
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key
            // exchange. It stays the choice for now (it builds in seconds where
            // aws-lc-rs's C build takes minutes); this is the one place that names it,
            // so a change of provider is a change here.
            #[allow(deprecated)]
            let provider = rustls::crypto::ring::default_provider();
            Arc::new(provider)
        })
        .clone()
}
