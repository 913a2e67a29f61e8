//! Host lists that decide what the proxy does with a tunnel: `allow_hosts` (intercept
//! only these, pass the rest through: `IgnoreHosts::allow_only`) and `tcp_hosts` (relay
//! raw, no HTTP parsing: `TcpHosts`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use crate::tls::connect_with_sni;
use mitm::middleware::{IgnoreHosts, TcpHosts};
use mitm::{async_trait, Connection, HttpFlow, HttpHandler, Verdict};
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;

/// Counts the requests the HTTP engine parsed, but for `CONNECT`s.
#[derive(Default)]
struct Parsed(AtomicUsize);

#[async_trait]
impl HttpHandler for Parsed {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.method != "CONNECT" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Verdict::Continue
    }
}

impl Parsed {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The leaf a test origin serves for `name` (its CA's cached one).
fn origin_leaf(name: &str) -> CertificateDer<'static> {
    origin_ca().certified_key(name).unwrap().cert[0].clone()
}

/// The issuer of `der`, as text.
fn issuer(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer().to_string()
}

/// The subject of a CA's root.
fn subject(ca: &mitm::CertificateAuthority) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    cert.subject().to_string()
}

#[tokio::test]
async fn allow_hosts_intercepts_only_matching_hosts() {
    let origin = start_tls_origin().await;
    let allow = IgnoreHosts::allow_only([r"^allowed\.test:"]).unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(allow))).await;
    let connect = format!("localhost:{}", origin.port());

    // Not allowed: the client reaches the origin end to end and sees its certificate.
    let (mut tls, cert) = connect_with_sni(&proxy, &connect, "localhost", &[origin_ca()]).await;
    assert_eq!(cert, origin_leaf("localhost"));
    tls.write_all(b"GET /through HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        Wire::new(tls).response().await.text(),
        "hello from origin: GET /through"
    );

    // Allowed by its SNI name (with the CONNECT's port): intercepted with a leaf.
    // (Trusting only the proxy's CA: a leaf of another key would fail the handshake.)
    let (_, cert) = connect_with_sni(&proxy, &connect, "ALLOWED.test", &[&proxy.ca]).await;
    assert_eq!(issuer(&cert), subject(&proxy.ca));
}

#[tokio::test]
async fn allow_and_ignore_together_need_allowed_and_not_ignored() {
    let origin = start_tls_origin().await;
    let hosts = IgnoreHosts::new([r"^secret\."])
        .unwrap()
        .and_allow_only([r"\.test:"])
        .unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(hosts))).await;
    let connect = format!("localhost:{}", origin.port());
    let (_, cert) = connect_with_sni(&proxy, &connect, "open.test", &[&proxy.ca]).await;
    assert_eq!(issuer(&cert), subject(&proxy.ca));
    // Neither the CONNECT's name nor the SNI is allowed: passed through.
    let (_, cert) = connect_with_sni(&proxy, &connect, "localhost", &[origin_ca()]).await;
    assert_eq!(cert, origin_leaf("localhost"));
}

#[tokio::test]
async fn tcp_hosts_relays_plain_http_raw_and_others_are_parsed() {
    let origin = start_origin().await;
    let parsed = Arc::new(Parsed::default());
    let raw = TcpHosts::new([r"^raw\.localhost$"]).unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(raw)).http_handler(parsed.clone())).await;

    for (host, parsed_after) in [("raw.localhost", 0), ("127.0.0.1", 1)] {
        let mut wire = Wire::connect(proxy.addr).await;
        let port = origin.port();
        wire.send(format!(
            "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
        ))
        .await;
        assert_eq!(wire.response_to("CONNECT").await.status, 200);
        wire.send(format!(
            "GET /inside HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
        .await;
        assert_eq!(
            wire.response().await.text(),
            "hello from origin: GET /inside"
        );
        assert_eq!(parsed.get(), parsed_after, "{host}");
    }
}

#[tokio::test]
async fn tcp_hosts_still_intercepts_tls_but_does_not_parse_http_inside() {
    let origin = start_tls_origin().await;
    let parsed = Arc::new(Parsed::default());
    let raw = TcpHosts::new([r"^localhost$"]).unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(raw)).http_handler(parsed.clone())).await;
    let connect = format!("localhost:{}", origin.port());
    let (mut tls, cert) = connect_with_sni(&proxy, &connect, "localhost", &[&proxy.ca]).await;
    assert_eq!(issuer(&cert), subject(&proxy.ca), "TLS is intercepted");
    tls.write_all(b"GET /raw HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        Wire::new(tls).response().await.text(),
        "hello from origin: GET /raw"
    );
    assert_eq!(parsed.get(), 0, "no HTTP was parsed");
}
