//! TLS: the proxy's certificate authority ([`ca`]), helping users trust it
//! ([`trust`]), TLS fail-open for clients that pin their servers (`fail_open`), and the
//! key log that lets Wireshark decrypt both hops ([`keylog`]).
//!
//! Every TLS config the crate builds takes its crypto provider from here.

pub mod ca;
pub(crate) mod fail_open;
pub mod keylog;
pub mod trust;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider of every TLS config the crate builds: rustls' `ring` provider
/// with X25519 as the first key exchange group, made once. Build your own configs with it (`ClientConfig::builder_with_provider`)
/// and they agree with the proxy's, whatever process-wide default is installed.
///
/// ```
/// let config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
///     .with_safe_default_protocol_versions()
///     .unwrap();
/// ```
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(provider())).clone()
}

/// ring's provider (the default build), its key exchange groups X25519 first.
#[cfg(not(feature = "aws-lc-rs"))]
fn provider() -> CryptoProvider {
    // rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key
    // exchange. It stays the default for now (it builds in seconds where aws-lc-rs's C
    // build takes minutes; the `aws-lc-rs` feature switches); this is the one place
    // that names it, so a change of provider is a change here.
    use rustls::crypto::ring::kx_group;
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // rustls 0.23.48 also moved P-384 to the front of ring's key exchange groups, so
    // every handshake paid for a P-384 key share: about 1 ms of CPU more per handshake
    // on each side, which cut new TLS connections through the proxy by a third
    // (mitm-bench hosts-cold: 290 -> 186 conn/s). X25519 first is what browsers, curl
    // and OpenSSL offer; the others stay for peers that need them.
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    provider
}

/// aws-lc-rs's provider (feature `aws-lc-rs`), with the same key exchange groups as
/// ring's, X25519 first, so that the two compare like for like.
#[cfg(feature = "aws-lc-rs")]
fn provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    let mut provider = default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    provider
}

#[cfg(test)]
mod tests {
    use rustls::NamedGroup;

    #[test]
    fn x25519_is_the_first_key_exchange_group() {
        // A P-384 key share costs about 1 ms of CPU per handshake on each side; the
        // provider's own default order changed once under us (rustls 0.23.48).
        let groups: Vec<NamedGroup> = super::crypto_provider()
            .kx_groups
            .iter()
            .map(|group| group.name())
            .collect();
        assert_eq!(
            groups,
            [
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
    }
}
