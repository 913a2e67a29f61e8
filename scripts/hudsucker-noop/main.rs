//! A no-op intercepting proxy built on hudsucker, for `scripts/hudsucker-bench.sh`:
//! mitm-bench measures it beside the `mitm` binary on the same loads.
//!
//! ```text
//! hudsucker-noop CA_CERT CA_KEY UPSTREAM_CA
//! ```
//!
//! It intercepts with the CA in CA_CERT/CA_KEY (PEM; leaves from hudsucker's rcgen
//! authority), trusts UPSTREAM_CA (PEM) alone towards origins, resolves `localhost` and
//! `*.localhost` to 127.0.0.1 itself (as `mitm` does: the bench names its origin
//! `name.localhost`), listens on 127.0.0.1 on a free port (TCP_NODELAY on accepted
//! sockets, as mitm) and prints
//! `mitm listening on http://ADDR` once it accepts. Its handlers do nothing: every
//! request and response passes as it came. Crypto: aws-lc-rs, hudsucker's default.
//!
//! Not part of the mitm crate: the script builds it in a crate of its own outside the
//! repository, against hudsucker from crates.io.

use std::future::{ready, Ready};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::task::{Context, Poll};

use hudsucker::certificate_authority::RcgenAuthority;
use hudsucker::hyper_util::client::legacy::connect::dns::Name;
use hudsucker::hyper_util::client::legacy::connect::HttpConnector;
use hudsucker::rcgen::{Issuer, KeyPair};
use hudsucker::rustls::crypto::aws_lc_rs;
use hudsucker::rustls::pki_types::pem::PemObject;
use hudsucker::rustls::pki_types::CertificateDer;
use hudsucker::rustls::{ClientConfig, RootCertStore};
use hudsucker::Proxy;

/// Names resolved as mitm resolves them: `*.localhost` to loopback, the rest by the
/// system (blocking, as hyper's own resolver does on a blocking thread; the bench
/// names loopback only).
#[derive(Clone)]
struct Resolver;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            return ready(Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter()));
        }
        ready(
            (host.as_str(), 0)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>().into_iter()),
        )
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("hudsucker-noop: {what}: {e}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cert, key, upstream] = args.as_slice() else {
        fail("usage", "hudsucker-noop CA_CERT CA_KEY UPSTREAM_CA");
    };
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| fail(p, e));
    let key = KeyPair::from_pem(&read(key)).unwrap_or_else(|e| fail("CA key", e));
    let issuer =
        Issuer::from_ca_cert_pem(&read(cert), key).unwrap_or_else(|e| fail("CA certificate", e));
    let ca = RcgenAuthority::new(issuer, 1_000, aws_lc_rs::default_provider());

    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(upstream).unwrap_or_else(|e| fail(upstream, e)) {
        let der = der.unwrap_or_else(|e| fail(upstream, e));
        roots.add(der).unwrap_or_else(|e| fail(upstream, e));
    }
    let tls = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail("TLS versions", e))
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(Resolver);
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);

    // Accepted sockets inherit TCP_NODELAY from the listener (Linux), as mitm sets it
    // on each: hudsucker sets nothing, and Nagle's algorithm with delayed ACKs would
    // cost it 40 ms on every new connection's handshake.
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| fail("socket", e));
    socket.set_nodelay(true).unwrap_or_else(|e| fail("TCP_NODELAY", e));
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .unwrap_or_else(|e| fail("bind", e));
    let listener = socket.listen(1024).unwrap_or_else(|e| fail("listen", e));
    let addr = listener.local_addr().unwrap_or_else(|e| fail("bind", e));
    let proxy = Proxy::builder()
        .with_listener(listener)
        .with_ca(ca)
        .with_http_connector(connector)
        .build()
        .unwrap_or_else(|e| fail("proxy", e));
    println!("mitm listening on http://{addr}");
    if let Err(e) = proxy.start().await {
        fail("proxy", e);
    }
}
