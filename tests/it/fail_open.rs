//! TLS fail-open (`MitmBuilder::tls_fail_open`): a host whose client refused the proxy's
//! certificate is passed through afterwards, so the client sees the origin's own; a host
//! whose origin failed verification never is, and neither does a client that leaves
//! before its handshake teach anything.
//!
//! Each test waits for the proxy to finish a connection (`client_disconnected`, which
//! fires after the tunnel has learned or not) before the next one: no sleeping.

use crate::common;

use std::process::Output;
use std::sync::Arc;

use common::*;
use mitm::{UpstreamTls, DEFAULT_TLS_FAIL_OPEN};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// curl's exit code when the server's certificate does not verify.
const CURL_BAD_CERTIFICATE: i32 = 60;

/// A proxy with a [`Recorder`] (to wait on connections), fail-open on or off, trusting
/// the test origins' CA upstream unless `trust_origin` is false.
async fn proxy(recorder: &Arc<Recorder>, fail_open: bool, trust_origin: bool) -> TestProxy {
    let recorder = recorder.clone();
    start_proxy(move |b| {
        let b = b
            .middleware(recorder)
            .tls_fail_open(fail_open.then_some(DEFAULT_TLS_FAIL_OPEN));
        if trust_origin {
            b
        } else {
            // The web PKI and the system's roots only: the test origin's CA is neither.
            b.upstream_tls(UpstreamTls::verified(&[]).unwrap())
        }
    })
    .await
}

/// curl through `proxy` for `url`, trusting only the CA in `cacert`; the output,
/// whatever the exit status.
async fn curl(proxy: &TestProxy, cacert: &std::path::Path, url: &str) -> Output {
    tokio::time::timeout(
        PATIENCE,
        Command::new("curl")
            .args(["--silent", "--show-error", "--proxy", &proxy.url()])
            .arg("--cacert")
            .arg(cacert)
            .arg(url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output(),
    )
    .await
    .expect("curl took too long")
    .expect("curl runs")
}

#[track_caller]
fn assert_refused_certificate(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(CURL_BAD_CERTIFICATE),
        "curl should have refused the certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw tunnel to `localhost:port` through `proxy`: `CONNECT`, its `200`, the socket.
async fn tunnel(proxy: &TestProxy, port: u16) -> TcpStream {
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (tcp, rest) = wire.into_parts();
    assert!(rest.is_empty(), "bytes after the CONNECT reply: {rest:?}");
    tcp
}

fn client_config(roots: &mitm::CertificateAuthority) -> Arc<rustls::ClientConfig> {
    Arc::new(tls_client_config(roots))
}

/// A TLS handshake for `localhost` through a tunnel to `localhost:port`, trusting only
/// `roots`; the stream and the issuer of the certificate the client was shown.
async fn handshake(
    proxy: &TestProxy,
    port: u16,
    roots: &mitm::CertificateAuthority,
) -> (tokio_rustls::client::TlsStream<TcpStream>, String) {
    let tcp = tunnel(proxy, port).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(roots));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("the TLS handshake took too long")
        .expect("TLS handshake");
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, issuer(&cert))
}

fn issuer(cert: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).unwrap();
    cert.issuer().to_string()
}

fn subject(ca: &mitm::CertificateAuthority) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    cert.subject().to_string()
}

/// GET `path` on an established TLS stream; the response.
async fn get(tls: tokio_rustls::client::TlsStream<TcpStream>, path: &str) -> Reply {
    let mut wire = Wire::new(tls);
    wire.send(format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ))
    .await;
    wire.response().await
}

/// A PEM file holding `ca`'s certificate, in `dir`.
fn ca_file(dir: &tempfile::TempDir, ca: &mitm::CertificateAuthority) -> std::path::PathBuf {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca.cert_pem()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_client_refused_our_certificate_then_passes_through() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_tls_origin().await;
    let recorder = Arc::new(Recorder::default());
    let proxy = proxy(&recorder, true, true).await;
    let dir = tempfile::tempdir().unwrap();
    let origin_ca_pem = ca_file(&dir, origin_ca());
    let url = format!("https://localhost:{}/pinned", origin.port());

    // curl trusts the origin's CA only: our leaf is refused (an alert)...
    assert_refused_certificate(&curl(&proxy, &origin_ca_pem, &url).await);
    recorder.wait_for(1, "client_disconnected").await;
    // ...and from then on the host is not intercepted: the origin's own certificate
    // verifies.
    let out = curl(&proxy, &origin_ca_pem, &url).await;
    assert!(
        out.status.success(),
        "curl failed after the host was learned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello from origin: GET /pinned");

    // A client of our own sees who issued the certificate: the origin's CA.
    let (tls, issued_by) = handshake(&proxy, origin.port(), origin_ca()).await;
    assert_eq!(issued_by, subject(origin_ca()));
    assert_eq!(get(tls, "/own").await.text(), "hello from origin: GET /own");
}

#[tokio::test]
async fn a_client_hanging_up_after_our_certificate_teaches_the_host_too() {
    let origin = start_tls_origin().await;
    let recorder = Arc::new(Recorder::default());
    let proxy = proxy(&recorder, true, true).await;

    // A client that reads our flight, finds the certificate wrong and closes without
    // a word (no alert), as some pinning clients do.
    let mut tcp = tunnel(&proxy, origin.port()).await;
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_config(origin_ca()), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let refused = loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("the proxy's flight took too long")
            .unwrap();
        assert!(n > 0, "the proxy closed before its certificate came");
        client.read_tls(&mut &buf[..n]).unwrap();
        if let Err(e) = client.process_new_packets() {
            break e;
        }
    };
    assert!(
        matches!(refused, rustls::Error::InvalidCertificate(_)),
        "{refused:?}"
    );
    drop(tcp);
    recorder.wait_for(1, "client_disconnected").await;

    let (tls, issued_by) = handshake(&proxy, origin.port(), origin_ca()).await;
    assert_eq!(issued_by, subject(origin_ca()));
    assert_eq!(get(tls, "/own").await.text(), "hello from origin: GET /own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_origin_fails_verification_is_never_passed_through() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_tls_origin().await;
    let recorder = Arc::new(Recorder::default());
    // The proxy does not trust the origin's CA.
    let proxy = proxy(&recorder, true, false).await;
    let dir = tempfile::tempdir().unwrap();
    let origin_ca_pem = ca_file(&dir, origin_ca());
    let url = format!("https://localhost:{}/pinned", origin.port());

    for id in 1..=2 {
        assert_refused_certificate(&curl(&proxy, &origin_ca_pem, &url).await);
        recorder.wait_for(id, "client_disconnected").await;
    }
    // Still intercepted: a client trusting the proxy gets our leaf and the error page
    // that says why the origin was refused.
    let (tls, issued_by) = handshake(&proxy, origin.port(), &proxy.ca).await;
    assert_eq!(issued_by, subject(&proxy.ca));
    assert_eq!(get(tls, "/").await.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fail_open_a_refusing_client_teaches_nothing() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_tls_origin().await;
    let recorder = Arc::new(Recorder::default());
    let proxy = proxy(&recorder, false, true).await;
    let dir = tempfile::tempdir().unwrap();
    let origin_ca_pem = ca_file(&dir, origin_ca());
    let url = format!("https://localhost:{}/pinned", origin.port());

    for id in 1..=2 {
        assert_refused_certificate(&curl(&proxy, &origin_ca_pem, &url).await);
        recorder.wait_for(id, "client_disconnected").await;
    }
    let (tls, issued_by) = handshake(&proxy, origin.port(), &proxy.ca).await;
    assert_eq!(issued_by, subject(&proxy.ca));
    assert_eq!(
        get(tls, "/mitm").await.text(),
        "hello from origin: GET /mitm"
    );
}

#[tokio::test]
async fn clients_leaving_before_their_handshake_teach_nothing() {
    let origin = start_tls_origin().await;
    let recorder = Arc::new(Recorder::default());
    let proxy = proxy(&recorder, true, true).await;

    // 1: closes before any byte of a ClientHello.
    drop(tunnel(&proxy, origin.port()).await);
    // 2: closes in the middle of its ClientHello.
    let mut tcp = tunnel(&proxy, origin.port()).await;
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(client_config(origin_ca()), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
    drop(tcp);
    // 3: speaks no TLS (relayed to the origin, which gives up on it).
    let mut tcp = tunnel(&proxy, origin.port()).await;
    tcp.write_all(b"not TLS at all\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest))
        .await
        .expect("the relay never ended");
    drop(tcp);
    for id in 1..=3 {
        recorder.wait_for(id, "client_disconnected").await;
    }

    // Still intercepted.
    let (tls, issued_by) = handshake(&proxy, origin.port(), &proxy.ca).await;
    assert_eq!(issued_by, subject(&proxy.ca));
    assert_eq!(
        get(tls, "/mitm").await.text(),
        "hello from origin: GET /mitm"
    );
}
