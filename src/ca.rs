//! TEMPORARY STUB: replaced by the real CA module.
#![allow(missing_docs, clippy::missing_errors_doc, unused)]
use std::path::Path;
use std::sync::Arc;
use crate::error::Result;
pub const CA_CERT_FILE: &str = "mitm.pem";
pub const CA_KEY_FILE: &str = "mitm.key";
pub const DEFAULT_CACHE_SIZE: usize = 1024;
#[derive(Debug)]
pub struct CertificateAuthority;
impl CertificateAuthority {
    pub fn generate() -> Result<Self> { todo!() }
    pub fn init(dir: impl AsRef<Path>) -> Result<Self> { todo!() }
    pub fn cert_pem(&self) -> &str { todo!() }
    pub fn cert_der(&self) -> &rustls::pki_types::CertificateDer<'static> { todo!() }
    pub fn certified_key(&self, host: &str) -> Result<Arc<rustls::sign::CertifiedKey>> { todo!() }
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>> { todo!() }
}
