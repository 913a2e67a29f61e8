//! Helping users trust the CA: fingerprints and per-platform instructions, shared by
//! `mitm ca` and the page the proxy serves on its magic host.

use std::fmt::Write as _;

use crate::tls::ca::CertificateAuthority;

/// The host a device behind the proxy opens to download the CA certificate (as
/// mitmproxy's), answered by the proxy itself: the default of
/// [`Http::magic_host`](crate::Http::magic_host).
pub const DEFAULT_MAGIC_HOST: &str = "mitm.it";

/// The SHA-256 hash of the certificate's SubjectPublicKeyInfo, base64: what Chromium's
/// `--ignore-certificate-errors-spki-list` and HPKP-style pins take. Always `Some`: the
/// CA hashes its root's key when it reads the root.
///
/// ```
/// let ca = mitm::CertificateAuthority::generate().unwrap();
/// let spki = mitm::tls::trust::spki_sha256(&ca).unwrap();
/// assert_eq!(spki.len(), 44); // 32 bytes, base64
/// ```
pub fn spki_sha256(ca: &CertificateAuthority) -> Option<String> {
    Some(ca.spki_sha256().to_owned())
}

/// How to make common clients trust the CA certificate at `cert_path`, for a proxy at
/// `proxy` (e.g. `127.0.0.1:8888`).
pub fn instructions(cert_path: &str, proxy: &str) -> String {
    let mut s = String::new();
    let mut line = |t: String| {
        let _ = writeln!(s, "{t}");
    };
    line(format!(
        "curl:     curl --proxy http://{proxy} --cacert {cert_path} https://example.com/"
    ));
    line(format!(
        "Python:   requests.get(url, proxies={{\"https\": \"http://{proxy}\"}}, verify=\"{cert_path}\")"
    ));
    line(format!(
        "          or: export REQUESTS_CA_BUNDLE={cert_path} SSL_CERT_FILE={cert_path}"
    ));
    line(format!(
        "Node.js:  NODE_EXTRA_CA_CERTS={cert_path} node app.js"
    ));
    line(format!(
        "Linux:    sudo cp {cert_path} /usr/local/share/ca-certificates/mitm.crt && sudo update-ca-certificates"
    ));
    line(format!(
        "          (Fedora/RHEL: sudo cp {cert_path} /etc/pki/ca-trust/source/anchors/ && sudo update-ca-trust)"
    ));
    line(format!(
        "macOS:    sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {cert_path}"
    ));
    line(format!("Windows:  certutil -addstore root {cert_path}"));
    line("Firefox:  Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import".into());
    line("Android:  copy the file to the device, then Settings > Security > Encryption & credentials > Install a certificate > CA certificate".into());
    line("          (apps trust user CAs only if their network security config allows it)".into());
    line(format!(
        "Chromium: --proxy-server=http://{proxy} --ignore-certificate-errors-spki-list=<SPKI hash above>"
    ));
    line(format!(
        "Devices behind the proxy: open http://{} to download the certificate.",
        DEFAULT_MAGIC_HOST
    ));
    s
}
