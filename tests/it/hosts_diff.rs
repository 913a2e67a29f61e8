//! `--allow-hosts`, `--ignore-hosts`, `--tcp-hosts` and `--certs` against real
//! mitmdump 11: the same option strings to `mitm` and to `mitmdump`, the same clients
//! through each. TLS clients judge each proxy by the certificate they were shown: the
//! origin's own (passed through), the file's (given), or one its CA minted
//! (intercepted); plain HTTP to an echo origin comes back as sent only when relayed
//! unparsed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::certs::OwnRoot;
use crate::common::*;
use crate::flows::Mitmdump;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts any certificate and keeps the leaf: the test only asks which it was.
#[derive(Debug, Default)]
struct Keep(Mutex<Option<CertificateDer<'static>>>);

impl ServerCertVerifier for Keep {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = mitm::tls::crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = mitm::tls::crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        mitm::tls::crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The leaf a client naming `sni` is shown after `CONNECT 127.0.0.1:port` through the
/// proxy at `proxy`.
async fn shown(proxy: SocketAddr, port: u16, sni: &str) -> CertificateDer<'static> {
    let mut wire = Wire::connect(proxy).await;
    let target = format!("127.0.0.1:{port}");
    wire.send(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (tcp, _) = wire.into_parts();
    let keep = Arc::new(Keep::default());
    let config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(keep.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out");
    drop(tls);
    let leaf = keep.0.lock().unwrap().take();
    leaf.unwrap_or_else(|| panic!("no certificate shown for {sni} on {target}"))
}

/// What a proxy did with a TLS connection, from the certificate it showed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    /// The origin's own: passed through.
    Origin,
    /// One of the proxy's CA: intercepted.
    Minted,
    /// The file given with `--certs` (by name).
    Given(&'static str),
}

/// The issuer of a certificate, as text.
fn issuer(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer().to_string()
}

/// The subject of a PEM certificate file's first certificate.
fn subject_of_pem(path: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(path).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.subject().to_string()
}

/// Both proxies, started with the same `args`.
struct Both {
    _dir: tempfile::TempDir,
    ours: ChildProxy,
    theirs: Mitmdump,
    our_ca: String,
    their_ca: String,
}

async fn both(args: &[&str]) -> Option<Both> {
    let Some(mitmdump) = venv_tool("mitmdump") else {
        require_tool(false, "mitmdump", VENV_INSTALL);
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let theirs =
        Mitmdump::start_with(&mitmdump, dir.path(), &dir.path().join("t.flows"), args).await;
    let ours = ChildProxy::start_with(args);
    let our_ca = subject_of_pem(&ours.ca_pem);
    let their_ca = subject_of_pem(&Mitmdump::ca_cert(dir.path()));
    Some(Both {
        _dir: dir,
        ours,
        theirs,
        our_ca,
        their_ca,
    })
}

impl Both {
    /// What each proxy (ours, theirs) showed a client naming `sni` on `port`.
    async fn judge(
        &self,
        port: u16,
        sni: &str,
        given: &[(&'static str, &CertificateDer<'_>)],
    ) -> (Shown, Shown) {
        let classify = |der: CertificateDer<'static>, ca: &str| {
            if let Some((name, _)) = given.iter().find(|(_, g)| **g == der) {
                return Shown::Given(name);
            }
            // The test origins serve their CA's cached leaf for the name asked for.
            if der == origin_ca().certified_key(sni).unwrap().cert[0] {
                return Shown::Origin;
            }
            let by = issuer(&der);
            assert_eq!(
                by, *ca,
                "a certificate issued by neither the proxy nor the origin"
            );
            Shown::Minted
        };
        let ours = classify(shown(self.ours.addr, port, sni).await, &self.our_ca);
        let theirs = classify(shown(self.theirs.addr(), port, sni).await, &self.their_ca);
        (ours, theirs)
    }
}

#[tokio::test]
async fn allow_and_ignore_hosts_pick_the_same_hosts_as_mitmdump() {
    let allowed = start_tls_origin().await;
    let other = start_tls_origin().await;
    let pattern = format!(r"^127\.0\.0\.1:{}$", allowed.port());
    let cases = [
        // (flag, port, what both must do)
        ("--allow-hosts", allowed.port(), Shown::Minted),
        ("--allow-hosts", other.port(), Shown::Origin),
        ("--ignore-hosts", allowed.port(), Shown::Origin),
        ("--ignore-hosts", other.port(), Shown::Minted),
    ];
    for flag in ["--allow-hosts", "--ignore-hosts"] {
        let Some(both) = both(&[flag, &pattern]).await else {
            return;
        };
        for (_, port, want) in cases.iter().filter(|c| c.0 == flag) {
            let (ours, theirs) = both.judge(*port, "localhost", &[]).await;
            assert_eq!(theirs, *want, "mitmdump {flag} {pattern}, port {port}");
            assert_eq!(ours, theirs, "mitm {flag} {pattern}, port {port}");
        }
    }
    // By the SNI name too, ignoring case.
    let Some(both) = both(&["--allow-hosts", r"^LOCALHOST:"]).await else {
        return;
    };
    let (ours, theirs) = both.judge(other.port(), "localhost", &[]).await;
    assert_eq!((&ours, &theirs), (&Shown::Minted, &Shown::Minted));
}

#[tokio::test]
async fn certs_serve_the_same_certificates_as_mitmdump() {
    let dir = tempfile::tempdir().unwrap();
    let root = OwnRoot::new();
    let (exact, exact_der) = root.leaf(dir.path(), "exact.pem", &["given.test"]);
    let (wild, wild_der) = root.leaf(dir.path(), "wild.pem", &["wild.test"]);
    let given = [("exact", &exact_der), ("wild", &wild_der)];
    let exact_spec = format!("given.test={}", exact.display());
    let wild_spec = format!("*.wild.test={}", wild.display());
    let Some(both) = both(&["--certs", &exact_spec, "--certs", &wild_spec]).await else {
        return;
    };
    // Each origin's certificate names what the client asks for, so that neither proxy
    // fails upstream.
    for (sni, want) in [
        ("given.test", Shown::Given("exact")),
        ("a.b.wild.test", Shown::Given("wild")),
        ("wild.test", Shown::Given("wild")),
        ("other.test", Shown::Minted),
    ] {
        let origin = start_tls_origin_for(sni).await;
        let (ours, theirs) = both.judge(origin.port(), sni, &given).await;
        assert_eq!(theirs, want, "mitmdump, {sni}");
        assert_eq!(ours, theirs, "mitm, {sni}");
    }
}

/// An origin that is not HTTP: it sends every byte back.
async fn start_echo() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut from, mut to) = stream.split();
                let _ = tokio::io::copy(&mut from, &mut to).await;
            });
        }
    });
    (port, task)
}

/// Sends an HTTP request inside a `CONNECT` to the echo origin on `port`: whether it
/// came back as it was sent (relayed raw), else what the proxy answered (the echoed
/// request line is no response, so an HTTP proxy answers with an error).
async fn echoed(proxy: SocketAddr, port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut wire = Wire::connect(proxy).await;
    let target = format!("127.0.0.1:{port}");
    wire.send(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
    let (mut tcp, _) = wire.into_parts();
    let request = b"GET /echo HTTP/1.1\r\nHost: echo.test\r\n\r\n";
    tcp.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while got.len() < request.len() {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(PATIENCE, read).await;
    if got == request {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&got);
    Err(text.lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn tcp_allow_and_ignore_hosts_relay_plain_http_raw_where_mitmdump_does() {
    let (port, _echo) = start_echo().await;
    let this = format!(r"^127\.0\.0\.1:{port}$");
    let cases: [(&[&str], bool); 6] = [
        (&[], false),
        (&["--tcp-hosts", r"^127\.0\.0\.1$"], true),
        (&["--ignore-hosts", &this], true),
        (&["--ignore-hosts", r"^example\.com:"], false),
        (&["--allow-hosts", &this], false),
        (&["--allow-hosts", r"^example\.com:"], true),
    ];
    for (args, raw) in cases {
        let Some(both) = both(args).await else { return };
        let theirs = echoed(both.theirs.addr(), port).await;
        let ours = echoed(both.ours.addr, port).await;
        assert_eq!(theirs.is_ok(), raw, "mitmdump {args:?}: {theirs:?}");
        assert_eq!(ours.is_ok(), raw, "mitm {args:?}: {ours:?}");
    }
}
