//! The certificate authority that signs a leaf certificate for every intercepted host.
//!
//! A [`CertificateAuthority`] holds a root certificate that clients are told to trust,
//! plus its private key. For each host a client connects to it issues a short-lived leaf
//! certificate naming that host, signed by the root, and hands rustls a
//! [`rustls::ServerConfig`] presenting it.
//!
//! Design choices, and why:
//! - All leaves share one ECDSA P-256 key pair, made once per authority (as mitmproxy
//!   does): issuing a leaf is then one signature, well under a millisecond with an
//!   ECDSA root.
//! - Leaves and configs are cached per host in a bounded LRU. A host's entry is found or
//!   inserted under the cache lock, but built under the entry's own lock, so concurrent
//!   first requests for one host make exactly one leaf without blocking other hosts.
//! - A loaded root is used byte for byte as it was read: its DER is what clients trust.
//!   Leaves take their issuer name from it and their authority key identifier from its
//!   subject key identifier (so a root a user brings, with an SKI made its own way, is
//!   named right); loading fails early if rcgen cannot reproduce that name exactly.
//! - Leaves are valid for less than 200 days, under what browsers accept for server
//!   certificates, and are reissued well before they expire in a long-running proxy.
//! - Files are never overwritten: a root users have trusted must not silently change.
//! - Several starts may initialise one CA directory at once (threads of one embedder,
//!   proxies launched together), and all must end with the same CA. Each stages a new
//!   pair, synced, in a private directory of its own inside the CA directory
//!   (`.mitm.<pid>.<random>.tmp`), then hard-links the key into place, then the
//!   certificate. A link never replaces a file, so the key's link picks the one winner;
//!   every start then loads what the directory holds. A start that finds the key alone
//!   looks for the staging directory holding that same key and links its certificate
//!   itself: the moment between the two links is never an error, and a crash in it is
//!   finished by the next start. A lone file with no such twin is a user's, and is
//!   reported as [`Error::CaIncomplete`], never completed. No lock is taken, so none can
//!   be left held or stale by a crash (and `File::lock` needs Rust 1.89, above this
//!   crate's 1.88); leftovers older than ten minutes are removed once a CA is found.

// A host as a certificate names it.
mod host;
// Issuing leaves, and caching them with their TLS configs.
mod leaves;
// Certificates given by the user, served instead of leaves.
mod given;
// mitmproxy's CA, read from its confdir and never written there.
mod mitmproxy;
// The root, made here or read from PEM, and its key.
mod root;
// The pair on disk: loading, the atomic publish, saving.
mod store;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, SerialNumber};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use self::given::GivenCerts;
use self::host::Host;
use self::leaves::Leaves;
pub use self::mitmproxy::{default_mitmproxy_confdir, MITMPROXY_CA_CERT_FILE, MITMPROXY_CA_FILE};
use self::root::{in_memory, Paths, Root};
use crate::error::{Error, Result};

/// File name of the root certificate inside a CA directory (see [`CertificateAuthority::init`]).
pub const CA_CERT_FILE: &str = "mitm.pem";
/// File name of the root private key inside a CA directory (see [`CertificateAuthority::init`]).
pub const CA_KEY_FILE: &str = "mitm.key";
/// How many hosts' leaf certificates are cached unless
/// [`CertificateAuthority::with_cache_size`] says otherwise.
pub const DEFAULT_CACHE_SIZE: usize = 1024;

/// Certificates are backdated so that clients with a slow clock accept them.
const BACKDATE: Duration = Duration::days(2);

/// Where a [`CertificateAuthority`] came from (see [`CertificateAuthority::source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaSource {
    /// Made or given in memory ([`generate`](CertificateAuthority::generate),
    /// [`from_pem`](CertificateAuthority::from_pem)).
    Memory,
    /// Read from a certificate file and a key file
    /// ([`load`](CertificateAuthority::load)).
    Files {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// A CA directory of ours, loaded or created there
    /// ([`init`](CertificateAuthority::init)).
    Dir(PathBuf),
    /// mitmproxy's confdir, read only
    /// ([`load_mitmproxy`](CertificateAuthority::load_mitmproxy)).
    Mitmproxy(PathBuf),
}

impl fmt::Display for CaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("made in memory"),
            Self::Files { cert, key } => {
                write!(f, "the files {} and {}", cert.display(), key.display())
            }
            Self::Dir(dir) => write!(f, "mitm's CA directory {}", dir.display()),
            Self::Mitmproxy(dir) => write!(
                f,
                "mitmproxy's confdir {} ({}, read only)",
                dir.display(),
                MITMPROXY_CA_FILE
            ),
        }
    }
}

/// Issues and caches TLS certificates for intercepted hosts, signed by one root.
///
/// Cheap to share: put it in an [`Arc`] and call it from any thread or task. It is
/// `Send + Sync`, and its per-host cache is safe for concurrent use.
///
/// ```
/// use mitm::CertificateAuthority;
///
/// let ca = CertificateAuthority::generate()?;
/// let config = ca.server_config("example.com")?;
/// assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
/// assert_eq!(ca.cached_hosts(), 1);
/// # Ok::<(), mitm::Error>(())
/// ```
pub struct CertificateAuthority {
    root: Root,
    leaves: Leaves,
    /// The certificate file it was loaded from (by [`load`](Self::load) or
    /// [`init`](Self::init)).
    cert_path: Option<std::path::PathBuf>,
    /// Where it came from.
    source: CaSource,
    /// Certificates served instead of leaves ([`add_cert_file`](Self::add_cert_file)).
    given: GivenCerts,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material is deliberately left out: debug output ends up in logs.
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.root.subject)
            .field("fingerprint_sha256", &self.root.fingerprint)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new root certificate and key, held in memory only (see [`save`](Self::save)
    /// and [`init`](Self::init) to keep them).
    ///
    /// The key is ECDSA P-256: the `ring` backend cannot generate RSA keys. An RSA root
    /// made elsewhere can still be [loaded](Self::load).
    ///
    /// ```
    /// let ca = mitm::CertificateAuthority::generate()?;
    /// assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn generate() -> Result<Self> {
        Self::new(Root::generate()?, in_memory())
    }

    /// Uses an existing root: a PEM certificate and its PEM private key.
    ///
    /// The key may be PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or
    /// SEC1 (`BEGIN EC PRIVATE KEY`); RSA (2048 bits or more), ECDSA P-256/P-384 and
    /// Ed25519 keys work. A key that does not belong to the certificate is
    /// [`Error::CaInvalid`].
    ///
    /// ```
    /// use mitm::CertificateAuthority;
    ///
    /// let original = CertificateAuthority::generate()?;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    /// original.save(&cert, &key)?;
    /// let (cert_pem, key_pem) = (std::fs::read_to_string(cert).unwrap(), std::fs::read_to_string(key).unwrap());
    /// let copy = CertificateAuthority::from_pem(&cert_pem, &key_pem)?;
    /// assert_eq!(copy.fingerprint_sha256(), original.fingerprint_sha256());
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let root = Root::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), in_memory())?;
        Self::new(root, in_memory())
    }

    /// Reads a root certificate and its private key from two PEM files, as
    /// [`from_pem`](Self::from_pem) does.
    pub fn load(cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Result<Self> {
        let paths = (cert_path.as_ref(), key_path.as_ref());
        let read = |path: &Path| fs::read(path).map_err(read_err(path));
        let root = Root::from_pem(&read(paths.0)?, &read(paths.1)?, paths)?;
        let mut ca = Self::new(root, paths)?;
        let cert = paths.0;
        ca.cert_path = Some(std::path::absolute(cert).unwrap_or_else(|_| cert.to_path_buf()));
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        ca.source = CaSource::Files {
            cert: absolute(paths.0),
            key: absolute(paths.1),
        };
        Ok(ca)
    }

    /// Loads the CA kept in `dir` ([`CA_CERT_FILE`] and [`CA_KEY_FILE`]), or, when
    /// neither file is there, creates `dir` (mode 0700), generates a CA and saves it
    /// (key 0600, certificate 0644).
    ///
    /// Starts racing on one directory, in threads or processes, all end with the same
    /// CA: the pair is published so that it can always be completed (see the
    /// [module documentation](self)), and every start loads what was published. If only
    /// one of the two files exists, and no start is publishing or crashed while
    /// publishing that very file, this is [`Error::CaIncomplete`]: nothing is ever
    /// overwritten or made up.
    ///
    /// ```
    /// use mitm::CertificateAuthority;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let first = CertificateAuthority::init(dir.path())?;
    /// let again = CertificateAuthority::init(dir.path())?;
    /// assert_eq!(first.cert_pem(), again.cert_pem());
    /// assert!(dir.path().join(mitm::tls::ca::CA_KEY_FILE).exists());
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn init(dir: impl AsRef<Path>) -> Result<Self> {
        let load = |cert: &Path, key: &Path| Self::load(cert, key);
        let create = || Root::generate().map(|root| root.pem_pair());
        let dir = dir.as_ref();
        let mut ca = store::load_or_publish(dir, load, create)?;
        ca.source = CaSource::Dir(std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
        Ok(ca)
    }

    /// Writes the root certificate and its private key (PKCS#8) as PEM files.
    ///
    /// Refuses with [`Error::CaExists`] if either file already exists. Each file is
    /// written to a temporary file in the same directory and then linked into place, so
    /// it appears complete or not at all, and is never replaced; the key is mode 0600
    /// from the start, the certificate 0644. The pair is not published at once: the key
    /// comes first and is removed again if the certificate cannot be written. For a
    /// directory that several starts may create at once, use [`init`](Self::init).
    pub fn save(&self, cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Result<()> {
        let pair = self.root.pem_pair();
        store::save(&pair, cert_path.as_ref(), key_path.as_ref())
    }

    /// The file its root certificate is in, the one clients must trust: where it was
    /// loaded from ([`load`](Self::load), [`init`](Self::init)), as an absolute path
    /// when the current directory is known. `None` for a CA made in memory
    /// ([`generate`](Self::generate), [`from_pem`](Self::from_pem)).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let ca = mitm::CertificateAuthority::init(dir.path())?;
    /// let file = dir.path().join(mitm::tls::ca::CA_CERT_FILE);
    /// assert_eq!(ca.cert_path(), Some(file.as_path()));
    /// assert_eq!(mitm::CertificateAuthority::generate()?.cert_path(), None);
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }

    /// Where it came from: memory, two files, a CA directory of ours, or mitmproxy's
    /// confdir.
    ///
    /// ```
    /// use mitm::tls::ca::CaSource;
    ///
    /// let ca = mitm::CertificateAuthority::generate()?;
    /// assert_eq!(ca.source(), &CaSource::Memory);
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn source(&self) -> &CaSource {
        &self.source
    }

    /// The root certificate's subject, as text (`CN=mitmproxy, O=mitmproxy`).
    pub fn subject(&self) -> &str {
        &self.root.subject
    }

    /// Sets how many hosts' certificates are cached (least recently used go first);
    /// at least 1. The default is [`DEFAULT_CACHE_SIZE`].
    ///
    /// ```
    /// let ca = mitm::CertificateAuthority::generate()?.with_cache_size(2);
    /// for host in ["a.test", "b.test", "c.test"] {
    ///     ca.certified_key(host)?;
    /// }
    /// assert_eq!(ca.cached_hosts(), 2);
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn with_cache_size(mut self, entries: usize) -> Self {
        self.leaves.resize(entries);
        self
    }

    /// The root certificate as PEM: what clients must trust.
    pub fn cert_pem(&self) -> &str {
        &self.root.pem
    }

    /// The root certificate as DER, exactly as generated or loaded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.root.der
    }

    /// The SHA-256 fingerprint of the root certificate, as uppercase hex pairs joined by
    /// colons, the way `openssl x509 -fingerprint -sha256` prints it.
    ///
    /// ```
    /// let fingerprint = mitm::CertificateAuthority::generate()?.fingerprint_sha256();
    /// assert_eq!(fingerprint.len(), 32 * 3 - 1);
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn fingerprint_sha256(&self) -> String {
        self.root.fingerprint.clone()
    }

    /// The SHA-256 hash of the root's SubjectPublicKeyInfo, base64 (see
    /// [`trust::spki_sha256`](crate::tls::trust::spki_sha256)).
    pub(crate) fn spki_sha256(&self) -> &str {
        &self.root.spki_sha256
    }

    /// Issues a fresh leaf certificate for `host`, bypassing the cache.
    ///
    /// `host` is a DNS name (case and a trailing dot do not matter) or an IP address
    /// (IPv6 with or without brackets). Anything else is [`Error::InvalidHost`].
    ///
    /// ```
    /// let ca = mitm::CertificateAuthority::generate()?;
    /// let leaf = ca.issue_leaf("[::1]")?;
    /// assert!(!leaf.is_empty());
    /// assert!(ca.issue_leaf("not a host").is_err());
    /// # Ok::<(), mitm::Error>(())
    /// ```
    #[doc(alias = "new_X509")]
    pub fn issue_leaf(&self, host: &str) -> Result<CertificateDer<'static>> {
        self.leaves.issue(&self.root, &Host::parse(host)?)
    }

    /// The certificate chain (leaf, root) and key to present for `host`, cached; a
    /// certificate given with [`add_cert_file`](Self::add_cert_file) for it instead.
    pub fn certified_key(&self, host: &str) -> Result<Arc<CertifiedKey>> {
        let host = Host::parse(host)?;
        if let Some(given) = self.given.find(&host) {
            return Ok(given.key.clone());
        }
        self.leaves.certified_key(&self.root, &host)
    }

    /// A rustls server configuration presenting the certificate for `host`, cached (a
    /// certificate given with [`add_cert_file`](Self::add_cert_file) for it instead).
    /// It offers ALPN `http/1.1` only.
    #[doc(alias = "new_context")]
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>> {
        let host = Host::parse(host)?;
        if let Some(given) = self.given.find(&host) {
            return Ok(given.config.clone());
        }
        self.leaves.server_config(&self.root, &host)
    }

    /// Serves the certificate in the PEM file at `path` (the leaf first, then its
    /// chain, and its private key, in one file, as mitmproxy's `--certs` takes it)
    /// instead of a leaf of this CA, for `domain` and for the names the certificate
    /// itself carries (its common name and alternative names). `domain` is a host name,
    /// a `*.parent` pattern, or `*` for every host. A host is matched by its own name
    /// first, then by its `*.` forms from the closest parent up (so `*.example.com`
    /// also covers `a.b.example.com`, as in mitmproxy), then by `*`. A later file
    /// registered under the same name replaces the earlier one.
    ///
    /// A file that cannot be read, holds no certificate or no key, or whose key does
    /// not belong to its first certificate is [`Error::CertFile`]. The certificate is
    /// served as it is: the client must trust it (this CA does not sign it).
    #[doc(alias = "certs")]
    pub fn add_cert_file(&self, domain: &str, path: impl AsRef<Path>) -> Result<()> {
        self.given.add_file(domain, path.as_ref())
    }

    /// The root's private key as PKCS#8 PEM: what [`save`](Self::save) writes to the
    /// key file. For handing the CA to another program (the Python package's
    /// `CertificateAuthority.key`); keep it as secret as the key file.
    pub fn key_pem(&self) -> String {
        self.root.pem_pair().key
    }

    /// The private key of every leaf this CA issues ([`issue_leaf`](Self::issue_leaf)),
    /// as PKCS#8 PEM: one key per CA, made when it was, so that a new host costs a
    /// signature and not a key generation. With a leaf, it is what a TLS server for
    /// that host needs (the original's `new_X509(host)` returns the pair).
    ///
    /// ```
    /// let ca = mitm::CertificateAuthority::generate()?;
    /// assert!(ca.leaf_key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn leaf_key_pem(&self) -> String {
        self.leaves.key_pem()
    }

    /// How many hosts currently have a cached certificate.
    pub fn cached_hosts(&self) -> usize {
        self.leaves.cached()
    }

    /// The authority of `root`, checked to issue leaves that chain to it; `paths` name
    /// its files in errors.
    fn new(root: Root, paths: Paths<'_>) -> Result<Self> {
        let ca = Self {
            root,
            leaves: Leaves::new(DEFAULT_CACHE_SIZE)?,
            cert_path: None,
            source: CaSource::Memory,
            given: GivenCerts::default(),
        };
        ca.check_issuer_name(paths.0)?;
        Ok(ca)
    }

    /// rcgen rebuilds the issuer name from its own model of names, which collapses
    /// repeated attributes; a leaf whose issuer differs from the root's subject by a
    /// byte would not chain, so such a root is refused now rather than per connection.
    fn check_issuer_name(&self, cert_path: &Path) -> Result<()> {
        let probe = self.issue_leaf("probe.invalid")?;
        let subject = root::names(&self.root.der).map(|(_, subject)| subject);
        let issuer = root::names(&probe).map(|(issuer, _)| issuer);
        if subject.is_some() && subject == issuer {
            return Ok(());
        }
        let reason = "its subject name cannot be reproduced exactly in issued certificates";
        Err(invalid(cert_path, "certificate", reason.into()))
    }
}

/// Backdated start, a random positive serial of 127 bits.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    let mut serial: [u8; 16] = rand::random();
    // Top bit clear keeps it positive; the next bit set keeps all 16 bytes significant.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::CaRead { path, source }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::CaWrite { path, source }
}

fn invalid(path: &Path, what: &'static str, reason: String) -> Error {
    Error::CaInvalid {
        path: path.to_owned(),
        what,
        reason,
    }
}

fn cert_error(host: &str) -> impl FnOnce(rcgen::Error) -> Error {
    let host = host.to_owned();
    move |source| Error::Certificate { host, source }
}

fn tls_error(context: &str) -> impl FnOnce(rustls::Error) -> Error {
    let context = context.to_owned();
    move |source| Error::TlsConfig { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_subject_not_key() {
        let ca = CertificateAuthority::generate().unwrap();
        let debug = format!("{ca:?}");
        assert!(debug.contains("C=US, ST=New York, L=New York, O=mitm, OU=mitm, CN=mitm"));
        assert!(debug.contains(&ca.fingerprint_sha256()));
        assert!(!debug.contains("PRIVATE"));
    }

    #[test]
    fn ca_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CertificateAuthority>();
    }
}
