//! The magic host (`mitm.it` by default): answered by the proxy itself, it lets a device
//! set to use the proxy download the CA certificate to trust.

use bytes::Bytes;

use crate::http::message::{Request, Response};
use crate::tls::ca::CertificateAuthority;

/// The answer to a request for the magic host.
pub(crate) fn answer(request: &Request, ca: &CertificateAuthority) -> Response {
    let path = request.path.split('?').next().unwrap_or("/");
    match path {
        "/" | "/index.html" => page(ca),
        "/cert/pem" => download(
            ca.cert_pem().as_bytes().to_vec(),
            "application/x-pem-file",
            "mitm-ca.pem",
        ),
        "/cert/cer" => download(
            ca.cert_der().to_vec(),
            "application/x-x509-ca-cert",
            "mitm-ca.cer",
        ),
        _ => super::page::text(404, "Nothing here: try / for the CA certificate.\n".into()),
    }
}

fn download(body: Vec<u8>, content_type: &str, file: &str) -> Response {
    let mut r = Response::new(200).with_body(content_type, body);
    r.headers.insert(
        "Content-Disposition",
        Bytes::from(format!("attachment; filename=\"{file}\"")),
    );
    r
}

fn page(ca: &CertificateAuthority) -> Response {
    let spki = crate::tls::trust::spki_sha256(ca).unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>mitm CA certificate</title></head>\n\
         <body>\n<h1>mitm CA certificate</h1>\n\
         <p>This proxy intercepts HTTPS. To let this device accept it, install and trust its CA certificate:</p>\n\
         <ul>\n<li><a href=\"/cert/pem\">mitm-ca.pem</a> (PEM: Linux, macOS, Firefox, Python, Node, curl)</li>\n\
         <li><a href=\"/cert/cer\">mitm-ca.cer</a> (DER: Windows, Android, iOS)</li>\n</ul>\n\
         <p>SHA-256 fingerprint: <code>{}</code><br>SPKI SHA-256 (base64): <code>{spki}</code></p>\n\
         <p>Anyone holding the proxy's key can impersonate any site to devices that trust this certificate: \
         remove the trust when you are done.</p>\n</body></html>\n",
        ca.fingerprint_sha256()
    );
    Response::new(200).with_body("text/html; charset=utf-8", html)
}
