//! The engine's [`CertificateAuthority`] for Python: the native half of
//! `mitm.crypto.CertificateAuthority`.

use std::path::PathBuf;
use std::sync::Arc;

use mitm::CertificateAuthority;
use pyo3::exceptions::{PyFileExistsError, PyOSError, PyValueError};
use pyo3::prelude::*;

/// A root CA that signs a leaf for every intercepted host.
#[pyclass(module = "mitm._native", name = "Authority", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct Authority(pub(crate) Arc<CertificateAuthority>);

/// An engine error as the Python exception that fits it.
pub(crate) fn to_py(e: mitm::Error) -> PyErr {
    let text = chain(&e);
    match e {
        mitm::Error::CaExists { .. } => PyFileExistsError::new_err(text),
        mitm::Error::CaRead { .. } | mitm::Error::CaWrite { .. } => PyOSError::new_err(text),
        _ => PyValueError::new_err(text),
    }
}

#[pymethods]
impl Authority {
    /// A new root, in memory.
    #[staticmethod]
    fn generate(py: Python<'_>) -> PyResult<Self> {
        py.detach(CertificateAuthority::generate)
            .map(|ca| Authority(Arc::new(ca)))
            .map_err(to_py)
    }

    /// The root kept in `path` (`mitm.crt`/`mitm.key` in it, or the given names),
    /// made and saved there first if neither file exists.
    #[staticmethod]
    fn init(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        py.detach(|| CertificateAuthority::init(&path))
            .map(|ca| Authority(Arc::new(ca)))
            .map_err(to_py)
    }

    /// A root from its PEM certificate and PEM key files.
    #[staticmethod]
    fn load(py: Python<'_>, cert_path: PathBuf, key_path: PathBuf) -> PyResult<Self> {
        py.detach(|| CertificateAuthority::load(&cert_path, &key_path))
            .map(|ca| Authority(Arc::new(ca)))
            .map_err(to_py)
    }

    /// A root from its PEM certificate and PEM key.
    #[staticmethod]
    fn from_pem(cert_pem: &str, key_pem: &str) -> PyResult<Self> {
        CertificateAuthority::from_pem(cert_pem, key_pem)
            .map(|ca| Authority(Arc::new(ca)))
            .map_err(to_py)
    }

    /// Writes the certificate and key as PEM; refuses to replace a file.
    fn save(&self, py: Python<'_>, cert_path: PathBuf, key_path: PathBuf) -> PyResult<()> {
        py.detach(|| self.0.save(&cert_path, &key_path))
            .map_err(to_py)
    }

    /// The root certificate, PEM.
    #[getter]
    fn cert_pem(&self) -> String {
        self.0.cert_pem().to_string()
    }

    /// The root's key, PKCS#8 PEM.
    #[getter]
    fn key_pem(&self) -> String {
        self.0.key_pem()
    }

    /// The key of every leaf, PKCS#8 PEM.
    #[getter]
    fn leaf_key_pem(&self) -> String {
        self.0.leaf_key_pem()
    }

    /// The file the root certificate was loaded from, if any.
    #[getter]
    fn cert_path(&self) -> Option<PathBuf> {
        self.0.cert_path().map(PathBuf::from)
    }

    /// SHA-256 of the root certificate, hex.
    #[getter]
    fn fingerprint(&self) -> String {
        self.0.fingerprint_sha256()
    }

    /// The root's subject, as text.
    #[getter]
    fn subject(&self) -> String {
        self.0.subject().to_string()
    }

    /// A leaf for `host` (a name or an IP address), signed by the root, as PEM.
    fn leaf_pem(&self, py: Python<'_>, host: &str) -> PyResult<String> {
        let der = py.detach(|| self.0.issue_leaf(host)).map_err(to_py)?;
        Ok(pem("CERTIFICATE", &der))
    }
}

/// DER as PEM.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An error and its causes, as one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
