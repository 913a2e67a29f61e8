//! Certificates given to serve (`MitmBuilder::cert`, `--certs [domain=]path`): a client
//! asking for a registered name gets exactly that certificate, others get leaves of the
//! proxy's CA; a file that cannot be used stops the start with a clear error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::*;
use crate::tls::connect_with_sni;
use mitm::rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use mitm::{CertificateAuthority, Error, Mitm};
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;

/// A root of its own, to sign the given certificates; as a `CertificateAuthority` too,
/// so that a test client can trust it.
pub(crate) struct OwnRoot {
    params: CertificateParams,
    key: KeyPair,
    ca: CertificateAuthority,
    pem: String,
}

impl OwnRoot {
    pub(crate) fn new() -> OwnRoot {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "given certificates root");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        let ca = CertificateAuthority::from_pem(&pem, &key.serialize_pem()).unwrap();
        OwnRoot {
            params,
            key,
            ca,
            pem,
        }
    }

    /// A leaf for `names`, written to `dir/file` as mitmproxy takes it (leaf, chain,
    /// key in one PEM); returns the file and the leaf's DER.
    pub(crate) fn leaf(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
    ) -> (PathBuf, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let path = dir.join(file);
        let pem = format!("{}{}{}", cert.pem(), self.pem, key.serialize_pem());
        std::fs::write(&path, pem).unwrap();
        (path, cert.der().clone())
    }
}

/// The issuer of `der`, as text.
fn issuer(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.issuer().to_string()
}

#[tokio::test]
async fn a_host_with_a_given_certificate_gets_exactly_it_and_others_get_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let root = OwnRoot::new();
    let (exact, exact_der) = root.leaf(dir.path(), "exact.pem", &["given.test"]);
    let (wild, wild_der) = root.leaf(dir.path(), "wild.pem", &["*.wild.test"]);
    let (default, default_der) = root.leaf(dir.path(), "default.pem", &["fallback.test"]);
    let origin = start_tls_origin_for("given.test").await;
    let proxy = start_proxy(|b| b.cert("given.test", &exact).cert("*.wild.test", &wild)).await;
    let connect = format!("localhost:{}", origin.port());

    let (mut tls, cert) = connect_with_sni(&proxy, &connect, "given.test", &[&root.ca]).await;
    assert_eq!(cert, exact_der, "the given certificate, byte for byte");
    // The chain in the file goes out with it.
    let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], *root.ca.cert_der());
    tls.write_all(b"GET /given HTTP/1.1\r\nHost: given.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        Wire::new(tls).response().await.text(),
        "hello from origin: GET /given"
    );

    let (_, cert) = connect_with_sni(&proxy, &connect, "a.wild.test", &[&root.ca]).await;
    assert_eq!(cert, wild_der, "*.wild.test covers a.wild.test");

    let (_, cert) = connect_with_sni(&proxy, &connect, "other.test", &[&proxy.ca]).await;
    assert_eq!(
        issuer(&cert),
        issuer_of_ca(&proxy.ca),
        "others get minted leaves"
    );
    assert_ne!(cert, exact_der);

    // Without a domain (`*`), the file serves every host that has no better match.
    let proxy = start_proxy(|b| b.cert("*", &default).cert("given.test", &exact)).await;
    // (Asked of the CA the proxy signs with: no client would accept fallback.test's
    // certificate for another name.)
    assert_eq!(
        proxy.ca.certified_key("anything.test").unwrap().cert[0],
        default_der
    );
    let (_, cert) = connect_with_sni(&proxy, &connect, "given.test", &[&root.ca]).await;
    assert_eq!(cert, exact_der, "an exact name wins over *");
}

/// The subject of a CA's root: the issuer of its leaves.
fn issuer_of_ca(ca: &CertificateAuthority) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    cert.subject().to_string()
}

#[test]
fn wildcards_reach_deeper_names_as_in_mitmproxy() {
    let dir = tempfile::tempdir().unwrap();
    let root = OwnRoot::new();
    let (path, der) = root.leaf(dir.path(), "wild.pem", &["wild.test"]);
    let ca = CertificateAuthority::generate().unwrap();
    ca.add_cert_file("*.example.com", &path).unwrap();
    let served = |host: &str| ca.certified_key(host).unwrap().cert[0].clone();
    assert_eq!(served("a.b.example.com"), der);
    assert_eq!(served("www.example.com"), der);
    // The certificate's own name counts too.
    assert_eq!(served("wild.test"), der);
    assert_ne!(served("example.com"), der);
    assert_ne!(served("example.org"), der);
}

#[tokio::test]
async fn a_certificate_file_that_cannot_be_used_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = OwnRoot::new();
    let (good, _) = root.leaf(dir.path(), "good.pem", &["good.test"]);
    let text = std::fs::read_to_string(&good).unwrap();
    let no_key = dir.path().join("no-key.pem");
    let cert_only: String = text
        .split("-----BEGIN PRIVATE KEY-----")
        .next()
        .unwrap()
        .into();
    std::fs::write(&no_key, &cert_only).unwrap();
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(
        &other_key,
        cert_only + &KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();

    for (path, says) in [
        (dir.path().join("missing.pem"), "No such file"),
        (no_key, "no usable private key"),
        (other_key, "does not belong"),
        (empty, "no certificate"),
    ] {
        let ca = Arc::new(CertificateAuthority::generate().unwrap());
        let bound = Mitm::builder()
            .port(0)
            .certificate_authority(ca)
            .cert("*", &path)
            .bind()
            .await;
        let e = bound.expect_err("a bad certificate file is refused");
        assert!(matches!(e, Error::CertFile { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&*path.to_string_lossy()) && text.contains(says),
            "{text}"
        );
    }
}
