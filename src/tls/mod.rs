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
/// made once.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
