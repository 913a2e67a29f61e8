//! TLS in depth: leaves by SNI, pass-through, upstream mutual TLS, the magic host,
//! `mitm ca`, and what openssl and Python make of the leaves.

use crate::common;

use std::sync::Arc;

use common::*;
use mitm::middleware::IgnoreHosts;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// CONNECTs to `connect` through the proxy, then runs TLS naming `sni` (trusting
/// `roots`); returns the stream and the certificate the server presented.
pub(crate) async fn connect_with_sni(
    proxy: &TestProxy,
    connect: &str,
    sni: &str,
    roots: &[&mitm::CertificateAuthority],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "CONNECT {connect} HTTP/1.1\r\nHost: {connect}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (tcp, _) = wire.into_parts();
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        store.add(ca.cert_der().clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .unwrap()
        .expect("TLS handshake");
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, cert)
}

/// The DNS names in a certificate's subjectAltName.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_client_hello_naming_another_host_gets_a_leaf_for_that_name() {
    let origin = start_tls_origin_for("alt.localhost").await;
    let proxy = start_proxy(|b| b).await;
    // CONNECT names an address; the ClientHello names the host.
    let connect = format!("127.0.0.1:{}", origin.port());
    let (mut tls, cert) = connect_with_sni(&proxy, &connect, "alt.localhost", &[&proxy.ca]).await;
    assert_eq!(dns_names(&cert), ["alt.localhost"]);
    tls.write_all(b"GET /sni HTTP/1.1\r\nHost: alt.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut wire = Wire::new(tls);
    assert_eq!(wire.response().await.text(), "hello from origin: GET /sni");
}

#[tokio::test]
async fn an_ignored_host_is_tunneled_and_the_client_sees_the_origin_certificate() {
    let origin = start_tls_origin().await;
    let ignore = IgnoreHosts::new([r"^localhost(:\d+)?$"]).unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(ignore))).await;
    let connect = format!("localhost:{}", origin.port());
    // Trusting only the origin's CA: the handshake succeeds only if nothing in the
    // middle replaced the certificate.
    let (mut tls, cert) = connect_with_sni(&proxy, &connect, "localhost", &[origin_ca()]).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let (_, origin_root) = x509_parser::parse_x509_certificate(origin_ca().cert_der()).unwrap();
    assert_eq!(parsed.issuer(), origin_root.subject());
    tls.write_all(b"GET /through HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut wire = Wire::new(tls);
    assert_eq!(
        wire.response().await.text(),
        "hello from origin: GET /through"
    );
}

/// Passes through the TLS of clients whose ClientHello names `sni`, and records what
/// each hello offered.
struct PassBySni {
    sni: &'static str,
    seen: std::sync::Mutex<Vec<Offered>>,
}

/// What one ClientHello offered: its server name and ALPN protocols.
type Offered = (Option<String>, Vec<Vec<u8>>);

#[mitm::async_trait]
impl mitm::middleware::Router for PassBySni {
    async fn tls_clienthello(
        &self,
        _conn: &mitm::Connection,
        hello: &mitm::middleware::ClientHello,
    ) -> mitm::middleware::Interception {
        self.seen
            .lock()
            .unwrap()
            .push((hello.server_name.clone(), hello.alpn.clone()));
        if hello.server_name.as_deref() == Some(self.sni) {
            mitm::middleware::Interception::PassThrough
        } else {
            mitm::middleware::Interception::Intercept
        }
    }
}

#[tokio::test]
async fn a_router_sees_each_client_hello_and_may_pass_the_connection_through() {
    let origin = start_tls_origin().await;
    let router = Arc::new(PassBySni {
        sni: "localhost",
        seen: Default::default(),
    });
    let proxy = start_proxy(|b| b.router(router.clone())).await;
    let connect = format!("127.0.0.1:{}", origin.port());
    // Named "localhost": passed through, the origin's own certificate.
    let (_, cert) = connect_with_sni(&proxy, &connect, "localhost", &[origin_ca()]).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let (_, origin_root) = x509_parser::parse_x509_certificate(origin_ca().cert_der()).unwrap();
    assert_eq!(parsed.issuer(), origin_root.subject());
    // Another name: intercepted, a leaf of the proxy's CA.
    let (_, cert) = connect_with_sni(&proxy, &connect, "alt.localhost", &[&proxy.ca]).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let (_, proxy_root) = x509_parser::parse_x509_certificate(proxy.ca.cert_der()).unwrap();
    assert_eq!(parsed.issuer(), proxy_root.subject());
    let seen = router.seen.lock().unwrap().clone();
    let names: Vec<_> = seen.iter().map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names, [Some("localhost"), Some("alt.localhost")]);
}

#[tokio::test]
async fn hosts_not_ignored_are_still_intercepted() {
    let origin = start_tls_origin().await;
    let ignore = IgnoreHosts::new([r"bank\.example"]).unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(ignore))).await;
    let connect = format!("localhost:{}", origin.port());
    let (_, cert) = connect_with_sni(&proxy, &connect, "localhost", &[&proxy.ca]).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let (_, proxy_root) = x509_parser::parse_x509_certificate(proxy.ca.cert_der()).unwrap();
    assert_eq!(parsed.issuer(), proxy_root.subject());
}

#[tokio::test]
async fn the_magic_host_serves_the_ca_certificate() {
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send("GET http://mitm.it/ HTTP/1.1\r\nHost: mitm.it\r\n\r\n")
        .await;
    let page = wire.response().await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/cert/pem"), "{}", page.text());
    assert!(page.text().contains(&proxy.ca.fingerprint_sha256()));
    wire.send("GET http://mitm.it/cert/pem HTTP/1.1\r\nHost: mitm.it\r\n\r\n")
        .await;
    let pem = wire.response().await;
    assert_eq!(pem.text(), proxy.ca.cert_pem());
    wire.send("GET http://mitm.it/cert/cer HTTP/1.1\r\nHost: mitm.it\r\n\r\n")
        .await;
    let der = wire.response().await;
    assert_eq!(der.body, proxy.ca.cert_der().as_ref());
}

#[tokio::test]
async fn upstream_mutual_tls_presents_the_client_certificate() {
    // An origin that requires a client certificate signed by its own client CA.
    let client_ca = mitm::CertificateAuthority::generate().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.cert_der().clone()).unwrap();
    let provider = mitm::tls::crypto_provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = origin_ca().certified_key("localhost").unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Read the request head, then answer.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut tls, &mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nmutual!",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });

    // The client certificate file: a leaf of the client CA and the leaf key, in PEM.
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("client.pem");
    let (cert_pem, key_pem) = client_cert_pem(&client_ca);
    std::fs::write(&pem_path, format!("{cert_pem}{key_pem}")).unwrap();

    let without = start_proxy(|b| b).await;
    let with = start_proxy(|b| b.upstream_client_cert(&pem_path)).await;
    for (proxy, expect_ok) in [(&without, false), (&with, true)] {
        let mut tls = tls_through(proxy, "localhost", port).await;
        tls.write_all(b"GET /m HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let reply = Wire::new(tls).response().await;
        if expect_ok {
            assert_eq!(reply.text(), "mutual!");
        } else {
            assert_eq!(reply.status, 502, "{reply:?}");
        }
    }
}

/// A client certificate (PEM) signed by `ca` and its private key (PEM), made with
/// rcgen directly.
fn client_cert_pem(ca: &mitm::CertificateAuthority) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["proxy-client.localhost".into()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let issuer_key = rcgen::KeyPair::from_pem(&ca_key_pem(ca)).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca.cert_pem(), issuer_key).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The CA's private key in PEM, read back from a save.
fn ca_key_pem(ca: &mitm::CertificateAuthority) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    ca.save(&c, &k).unwrap();
    std::fs::read_to_string(k).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_verifies_a_leaf_with_the_ca_as_only_anchor() {
    if !require_tool(have_openssl(), "openssl", "apt-get install openssl") {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, proxy.ca.cert_pem()).unwrap();
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(format!("localhost:{}", origin.port()))
            .args(["-proxy"])
            .arg(proxy.addr.to_string())
            .args([
                "-servername",
                "localhost",
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&ca_file)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have_openssl() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ssl_accepts_the_leaf_through_the_proxy() {
    if !require_tool(have("python3"), "python3", "apt-get install python3") {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, proxy.ca.cert_pem()).unwrap();
    // Python's own CONNECT support (http.client.set_tunnel), strict verification.
    let script = format!(
        r#"
import http.client, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
c = http.client.HTTPSConnection("127.0.0.1", {proxy_port}, context=ctx, timeout=15)
c.set_tunnel("localhost", {port})
c.request("GET", "/py")
print(c.getresponse().read().decode())
"#,
        ca = ca_file.display().to_string(),
        proxy_port = proxy.addr.port(),
        port = origin.port()
    );
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new("python3")
            .args(["-c", &script])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from origin: GET /py"
    );
}

#[tokio::test]
async fn mitm_ca_prints_path_pem_fingerprints_and_instructions() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(["ca", "--ca-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let ca = mitm::CertificateAuthority::init(dir.path()).unwrap();
    assert!(text.contains(&format!(
        "CA certificate: {}",
        dir.path().join("mitm.pem").display()
    )));
    assert!(text.contains(ca.cert_pem()));
    assert!(text.contains(&ca.fingerprint_sha256()));
    assert!(text.contains(&mitm::tls::trust::spki_sha256(&ca).unwrap()));
    for platform in [
        "curl", "Python", "Node.js", "Linux", "macOS", "Windows", "Firefox", "Android",
    ] {
        assert!(text.contains(platform), "{platform} missing:\n{text}");
    }
}
