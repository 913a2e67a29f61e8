//! TLS session resumption on both hops: a client that comes back resumes its session
//! with the proxy, and the proxy resumes its session with an origin when it opens a new
//! connection to it, for TLS 1.3 and TLS 1.2.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use rustls::pki_types::ServerName;
use rustls::{HandshakeKind, ProtocolVersion, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// CONNECTs through `proxy` to `target`, then runs TLS with `config`; reads one HTTP
/// response to a `GET /` (so that TLS 1.3 tickets sent after the handshake are taken
/// in) and returns how the handshake went and the version spoken.
async fn one_exchange(
    proxy: &TestProxy,
    target: &str,
    config: &Arc<rustls::ClientConfig>,
) -> (HandshakeKind, ProtocolVersion) {
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
    let (tcp, _) = wire.into_parts();
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("TLS handshake with the proxy timed out")
        .expect("TLS handshake with the proxy");
    let (kind, version) = {
        let conn = tls.get_ref().1;
        (
            conn.handshake_kind().expect("handshake done"),
            conn.protocol_version().expect("handshake done"),
        )
    };
    let mut wire = Wire::new(tls);
    wire.send("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    (kind, version)
}

fn client_config(
    proxy: &TestProxy,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(proxy.ca.cert_der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn client_resumes_with_the_proxy(version: &'static SupportedProtocolVersion) {
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let target = format!("localhost:{}", origin.port());
    let config = client_config(&proxy, &[version]);
    let first = one_exchange(&proxy, &target, &config).await;
    assert_eq!(first, (HandshakeKind::Full, version.version));
    let second = one_exchange(&proxy, &target, &config).await;
    assert_eq!(
        second,
        (HandshakeKind::Resumed, version.version),
        "the client's second connection to the proxy did not resume its session"
    );
}

#[tokio::test]
async fn a_client_resumes_its_tls13_session_with_the_proxy() {
    client_resumes_with_the_proxy(&rustls::version::TLS13).await;
}

#[tokio::test]
async fn a_client_resumes_its_tls12_session_with_the_proxy() {
    client_resumes_with_the_proxy(&rustls::version::TLS12).await;
}

/// An HTTPS origin for `localhost` (a leaf of [`origin_ca`]) speaking only `version`
/// that answers one request per connection, closing it after, and records how each
/// handshake went.
async fn recording_origin(
    version: &'static SupportedProtocolVersion,
) -> (u16, Arc<Mutex<Vec<HandshakeKind>>>) {
    let leaf = origin_ca().server_config("localhost").unwrap();
    let config = rustls::ServerConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(leaf.cert_resolver.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let seen = kinds.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(kind) = tls.get_ref().1.handshake_kind() {
                    seen.lock().unwrap().push(kind);
                }
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, kinds)
}

async fn proxy_resumes_with_the_origin(version: &'static SupportedProtocolVersion) {
    let (port, kinds) = recording_origin(version).await;
    let proxy = start_proxy(|b| b).await;
    let target = format!("localhost:{port}");
    // The client offers both versions; only the hop to the origin is pinned.
    let config = client_config(&proxy, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    for _ in 0..2 {
        one_exchange(&proxy, &target, &config).await;
    }
    let kinds = kinds.lock().unwrap().clone();
    assert_eq!(
        kinds,
        [HandshakeKind::Full, HandshakeKind::Resumed],
        "the proxy's second connection to the origin did not resume its session"
    );
}

#[tokio::test]
async fn the_proxy_resumes_its_tls13_session_with_an_origin() {
    proxy_resumes_with_the_origin(&rustls::version::TLS13).await;
}

#[tokio::test]
async fn the_proxy_resumes_its_tls12_session_with_an_origin() {
    proxy_resumes_with_the_origin(&rustls::version::TLS12).await;
}
