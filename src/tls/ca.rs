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
//!   Leaves take their issuer name and authority key identifier from it, and loading
//!   fails early if rcgen cannot reproduce that name exactly.
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

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use lru::LruCache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

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
/// Root lifetime: long, since replacing a trusted root means every client re-trusts.
const ROOT_LIFETIME: Duration = Duration::days(3650);
/// Leaf lifetime from now; with the backdating the whole span is 198 days, under the
/// 199-day maximum that browsers are moving to.
const LEAF_LIFETIME: Duration = Duration::days(196);
/// A cached leaf older than this is reissued, long before it expires.
const LEAF_REFRESH: StdDuration = StdDuration::from_secs(90 * 24 * 3600);
/// X.520 upper bound for a common name; longer hosts go in the SAN only.
const MAX_CN_LEN: usize = 64;
/// Longest DNS name, without the trailing dot.
const MAX_DNS_LEN: usize = 253;
/// A temporary file or staging directory of ours in a CA directory older than this was
/// left by a start that crashed (making a CA takes milliseconds), and is removed.
const STALE_TEMP: StdDuration = StdDuration::from_secs(10 * 60);
/// How many times [`CertificateAuthority::init`] looks at the directory. Racing others,
/// a start looks at most three times: it finds nothing and creates, finds the winner's
/// key alone and finishes it, finds the pair and loads it. More means someone is moving
/// the files about.
const INIT_ATTEMPTS: usize = 8;

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
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// The root's subject as text, for `Debug` only.
    subject: String,
    fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
    /// The key pair every leaf certifies, as rcgen needs it (for its public half) ...
    leaf_key: KeyPair,
    /// ... and as rustls needs it (to sign handshakes).
    leaf_signer: Arc<dyn SigningKey>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<LruCache<String, Arc<Slot>>>,
}

/// One host's cached leaf and config, each built at most once.
struct Slot {
    created: Instant,
    key: Mutex<Option<Arc<CertifiedKey>>>,
    config: Mutex<Option<Arc<ServerConfig>>>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material is deliberately left out: debug output ends up in logs.
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .field("fingerprint_sha256", &self.fingerprint)
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
        let (cert, key) = new_root()?;
        let memory = Path::new("");
        Self::from_parts(cert, key, (memory, memory))
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
        let memory = Path::new("");
        Self::parse(cert_pem.as_bytes(), key_pem.as_bytes(), (memory, memory))
    }

    /// Reads a root certificate and its private key from two PEM files, as
    /// [`from_pem`](Self::from_pem) does.
    pub fn load(cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Result<Self> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let read = |path: &Path| {
            fs::read(path).map_err(|source| Error::CaRead {
                path: path.to_owned(),
                source,
            })
        };
        Self::parse(&read(cert_path)?, &read(key_path)?, (cert_path, key_path))
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
        let dir = dir.as_ref();
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        for _ in 0..INIT_ATTEMPTS {
            // The certificate is looked at first: it is published after the key, and
            // neither is ever removed, so a certificate seen without its key is never
            // a start at work.
            let cert_exists = exists(&cert).map_err(read_err(&cert))?;
            let key_exists = exists(&key).map_err(read_err(&key))?;
            match (cert_exists, key_exists) {
                (true, true) => {
                    let ca = Self::load(&cert, &key)?;
                    remove_stale_temps(dir);
                    return Ok(ca);
                }
                (true, false) => return Err(incomplete(cert, key)),
                (false, true) => {
                    finish_publishing(dir)?;
                    // Published now, by us or by the start at work; or a user's key.
                    if !exists(&cert).map_err(read_err(&cert))? {
                        return Err(incomplete(key, cert));
                    }
                }
                (false, false) => {
                    create_private_dir(dir).map_err(read_err(dir))?;
                    publish_new(dir)?;
                }
            }
        }
        // Only someone moving the files about as fast as we look gets here.
        let source = io::Error::other("the CA files kept changing while being loaded");
        Err(read_err(dir)(source))
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
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        for path in [cert_path, key_path] {
            let present = exists(path).map_err(|source| Error::CaWrite {
                path: path.to_owned(),
                source,
            })?;
            if present {
                return Err(Error::CaExists {
                    path: path.to_owned(),
                });
            }
        }
        let key_pem = self.issuer.key().serialize_pem();
        write_new(key_path, key_pem.as_bytes(), 0o600)?;
        if let Err(e) = write_new(cert_path, self.cert_pem.as_bytes(), 0o644) {
            // A lone key would make the next `init` fail as incomplete; the key is ours.
            let _ = fs::remove_file(key_path);
            return Err(e);
        }
        Ok(())
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
        let cache = self.cache.get_mut();
        cache
            .unwrap_or_else(PoisonError::into_inner)
            .resize(cache_size(entries));
        self
    }

    /// The root certificate as PEM: what clients must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root certificate as DER, exactly as generated or loaded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
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
        self.fingerprint.clone()
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
    pub fn issue_leaf(&self, host: &str) -> Result<CertificateDer<'static>> {
        self.sign_leaf(&Host::parse(host)?)
    }

    /// The certificate chain (leaf, root) and key to present for `host`, cached.
    pub fn certified_key(&self, host: &str) -> Result<Arc<CertifiedKey>> {
        let host = Host::parse(host)?;
        self.key_in(&self.slot(&host.name), &host)
    }

    /// A rustls server configuration presenting the certificate for `host`, cached.
    /// It offers ALPN `http/1.1` only.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>> {
        let host = Host::parse(host)?;
        let slot = self.slot(&host.name);
        get_or_build(&slot.config, || {
            let key = self.key_in(&slot, &host)?;
            self.build_config(key)
        })
    }

    /// How many hosts currently have a cached certificate.
    pub fn cached_hosts(&self) -> usize {
        self.lock_cache().len()
    }

    /// Validates a PEM certificate and key; `paths` name them in errors.
    fn parse(cert_pem: &[u8], key_pem: &[u8], paths: (&Path, &Path)) -> Result<Self> {
        let cert_invalid = |reason: String| invalid(paths.0, "certificate", reason);
        let key_invalid = |reason: String| invalid(paths.1, "private key", reason);
        let cert = CertificateDer::from_pem_slice(cert_pem)
            .map_err(|e| cert_invalid(format!("no PEM certificate ({e})")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| key_invalid(format!("no PEM private key ({e})")))?;
        let key = to_pkcs8(&key)
            .and_then(|pkcs8| KeyPair::try_from(pkcs8.secret_pkcs8_der()).ok())
            .ok_or_else(|| key_invalid("unsupported or malformed key".into()))?;
        Self::from_parts(cert, key, paths)
    }

    /// Finishes construction from a root certificate and its key.
    fn from_parts(
        cert_der: CertificateDer<'static>,
        key: KeyPair,
        paths: (&Path, &Path),
    ) -> Result<Self> {
        let cert_invalid = |reason: &str| invalid(paths.0, "certificate", reason.into());
        let Some(tbs) = Tbs::parse(&cert_der) else {
            return Err(cert_invalid("malformed DER"));
        };
        if tbs.public_key != key.der_bytes() {
            let reason = "does not match the certificate's public key".into();
            return Err(invalid(paths.1, "private key", reason));
        }
        let subject = describe_name(tbs.subject);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| cert_invalid(&format!("unusable as an issuer: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let leaf_key = KeyPair::generate().map_err(cert_error("leaf key"))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
        let leaf_signer = provider
            .key_provider
            .load_private_key(pkcs8.into())
            .map_err(tls_error("loading the leaf key"))?;
        let ca = Self {
            cert_pem: pem_encode(&cert_der),
            fingerprint: fingerprint(&cert_der)?,
            cert_der,
            subject,
            issuer,
            leaf_key,
            leaf_signer,
            provider,
            cache: Mutex::new(LruCache::new(cache_size(DEFAULT_CACHE_SIZE))),
        };
        ca.check_issuer_name(paths.0)?;
        Ok(ca)
    }

    /// rcgen rebuilds the issuer name from its own model of names, which collapses
    /// repeated attributes; a leaf whose issuer differs from the root's subject by a
    /// byte would not chain, so such a root is refused now rather than per connection.
    fn check_issuer_name(&self, cert_path: &Path) -> Result<()> {
        let probe = self.sign_leaf(&Host::parse("probe.invalid")?)?;
        let root = Tbs::parse(&self.cert_der).map(|tbs| tbs.subject);
        let leaf = Tbs::parse(&probe).map(|tbs| tbs.issuer);
        if root.is_some() && root == leaf {
            return Ok(());
        }
        let reason = "its subject name cannot be reproduced exactly in issued certificates";
        Err(invalid(cert_path, "certificate", reason.into()))
    }

    fn sign_leaf(&self, host: &Host) -> Result<CertificateDer<'static>> {
        let cert = leaf_params(host)?
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(cert_error(&host.name))?;
        Ok(cert.into())
    }

    fn key_in(&self, slot: &Slot, host: &Host) -> Result<Arc<CertifiedKey>> {
        get_or_build(&slot.key, || {
            let chain = vec![self.sign_leaf(host)?, self.cert_der.clone()];
            Ok(Arc::new(CertifiedKey::new(chain, self.leaf_signer.clone())))
        })
    }

    fn build_config(&self, key: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error("protocol versions"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The host's cache entry, made fresh when missing or due for reissue.
    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut cache = self.lock_cache();
        let cached = cache
            .get(name)
            .filter(|s| s.created.elapsed() < LEAF_REFRESH);
        if let Some(slot) = cached.cloned() {
            return slot;
        }
        let slot = Arc::new(Slot {
            created: Instant::now(),
            key: Mutex::new(None),
            config: Mutex::new(None),
        });
        cache.put(name.to_owned(), slot.clone());
        slot
    }

    fn lock_cache(&self) -> MutexGuard<'_, LruCache<String, Arc<Slot>>> {
        // A panic elsewhere cannot leave the map half-updated in a way that matters.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the cell's value, building it first if empty. The cell stays locked while
/// building, so concurrent callers wait for the one build; a failed build leaves the
/// cell empty for the next caller to retry.
fn get_or_build<T: Clone>(cell: &Mutex<Option<T>>, build: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut value = cell.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(value) = value.as_ref() {
        return Ok(value.clone());
    }
    let built = build()?;
    *value = Some(built.clone());
    Ok(built)
}

/// A host as it goes in a certificate: a canonical IP address or a lowercase DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    /// Normalized form: the cache key and the common name.
    name: String,
    ip: Option<IpAddr>,
}

impl Host {
    fn parse(raw: &str) -> Result<Self> {
        let invalid = || Error::InvalidHost {
            host: raw.to_owned(),
        };
        if let Some(inner) = raw.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let ip: Ipv6Addr = inner.parse().map_err(|_| invalid())?;
            return Ok(Self::ip(IpAddr::V6(ip)));
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Ok(Self::ip(ip));
        }
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if !is_dns_name(&name) {
            return Err(invalid());
        }
        Ok(Self { name, ip: None })
    }

    fn ip(ip: IpAddr) -> Self {
        Self {
            name: ip.to_string(),
            ip: Some(ip),
        }
    }

    fn san(&self) -> Result<SanType> {
        let Some(ip) = self.ip else {
            let name = self.name.clone().try_into();
            return name.map(SanType::DnsName).map_err(cert_error(&self.name));
        };
        Ok(SanType::IpAddress(ip))
    }
}

/// Letters, digits, hyphens and underscores (seen in real host names) in labels of
/// 1 to 63 bytes. A name whose last label is a number is refused: clients read such
/// names (`127.1`, `0x7f.1`) as IPv4 addresses, and an address must not be a DNS SAN.
fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        let chars_ok = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        chars_ok && (1..=63).contains(&label.len())
    };
    let numeric = |label: &str| match label.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => label.bytes().all(|b| b.is_ascii_digit()),
    };
    let last = name.rsplit('.').next().unwrap_or_default();
    name.len() <= MAX_DNS_LEN && name.split('.').all(label_ok) && !numeric(last)
}

fn root_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    // RFC 5280 requires PrintableString for the country, UTF8String elsewhere.
    name.push(
        DnType::CountryName,
        DnValue::PrintableString("US".try_into()?),
    );
    name.push(DnType::StateOrProvinceName, "New York");
    name.push(DnType::LocalityName, "New York");
    name.push(DnType::OrganizationName, "mitm");
    name.push(DnType::OrganizationalUnitName, "mitm");
    name.push(DnType::CommonName, "mitm");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, ROOT_LIFETIME);
    Ok(params)
}

fn leaf_params(host: &Host) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if host.name.len() <= MAX_CN_LEN {
        params
            .distinguished_name
            .push(DnType::CommonName, &host.name);
    }
    params.subject_alt_names = vec![host.san()?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_LIFETIME);
    Ok(params)
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

/// Rewraps PKCS#1 and SEC1 keys as PKCS#8, the only form rcgen's `ring` backend reads.
fn to_pkcs8(key: &PrivateKeyDer<'_>) -> Option<PrivatePkcs8KeyDer<'static>> {
    // rsaEncryption with NULL parameters; id-ecPublicKey.
    const RSA_ALG: &[u8] = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00";
    const EC_OID: &[u8] = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01";
    let (algorithm, inner) = match key {
        PrivateKeyDer::Pkcs8(pkcs8) => return Some(pkcs8.clone_key()),
        PrivateKeyDer::Pkcs1(rsa) => (RSA_ALG.to_vec(), rsa.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(ec) => {
            // The curve is in the key's optional [0] field; without it we cannot tell.
            let fields = Der::elements(Der::single(ec.secret_sec1_der())?.body);
            let curve = fields.into_iter().find(|f| f.tag == 0xa0)?;
            ([EC_OID, curve.body].concat(), ec.secret_sec1_der())
        }
        _ => return None,
    };
    let body = [
        b"\x02\x01\x00".as_slice(),
        &der_encode(0x30, &algorithm),
        &der_encode(0x04, inner),
    ]
    .concat();
    Some(der_encode(0x30, &body).into())
}

fn der_encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len().to_be_bytes();
    let significant = &len[len.iter().take_while(|&&b| b == 0).count()..];
    let mut out = vec![tag];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else {
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(body);
    out
}

/// One DER element: its tag, the whole encoding and the contents.
#[derive(Clone, Copy)]
struct Der<'a> {
    tag: u8,
    raw: &'a [u8],
    body: &'a [u8],
}

impl<'a> Der<'a> {
    /// Splits the first element (single-byte tags only) off `input`.
    fn split(input: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let [tag, first, rest @ ..] = input else {
            return None;
        };
        let (len, rest) = match usize::from(*first) {
            len @ 0..=0x7f => (len, rest),
            n @ 0x81..=0x84 => {
                let (len, rest) = rest.split_at_checked(n & 0x7f)?;
                let len = len.iter().fold(0, |acc, b| acc << 8 | usize::from(*b));
                (len, rest)
            }
            _ => return None,
        };
        let (body, rest) = rest.split_at_checked(len)?;
        let raw = &input[..input.len() - rest.len()];
        let element = Self {
            tag: *tag,
            raw,
            body,
        };
        Some((element, rest))
    }

    fn single(input: &'a [u8]) -> Option<Self> {
        Self::split(input).map(|(element, _)| element)
    }

    /// All elements in `input`, stopping at the first malformed one.
    fn elements(mut input: &'a [u8]) -> Vec<Self> {
        let mut out = Vec::new();
        while let Some((element, rest)) = Self::split(input) {
            out.push(element);
            input = rest;
        }
        out
    }
}

/// The parts of a certificate's to-be-signed body this module compares.
struct Tbs<'a> {
    issuer: &'a [u8],
    subject: &'a [u8],
    /// The subjectPublicKey bits, without the unused-bits byte.
    public_key: &'a [u8],
}

impl<'a> Tbs<'a> {
    fn parse(cert: &'a [u8]) -> Option<Self> {
        let tbs = Der::single(Der::single(cert)?.body)?;
        let mut fields = Der::elements(tbs.body);
        if fields.first()?.tag == 0xa0 {
            fields.remove(0); // the optional version
        }
        // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
        let [_, _, issuer, _, subject, spki, ..] = fields.as_slice() else {
            return None;
        };
        let bits = *Der::elements(spki.body).get(1)?;
        Some(Self {
            issuer: issuer.raw,
            subject: subject.raw,
            public_key: bits.body.get(1..)?,
        })
    }
}

/// Renders a DER name as `C=US, O=mitm, CN=mitm` for debug output.
fn describe_name(name: &[u8]) -> String {
    let Some(name) = Der::single(name) else {
        return String::new();
    };
    let attributes = Der::elements(name.body)
        .into_iter()
        .flat_map(|rdn| Der::elements(rdn.body))
        .filter_map(|attribute| match Der::elements(attribute.body)[..] {
            [oid, value] => Some((oid.body, value.body)),
            _ => None,
        });
    let text = attributes.map(|(oid, value)| {
        let label = match oid {
            [0x55, 0x04, 3] => "CN",
            [0x55, 0x04, 6] => "C",
            [0x55, 0x04, 7] => "L",
            [0x55, 0x04, 8] => "ST",
            [0x55, 0x04, 10] => "O",
            [0x55, 0x04, 11] => "OU",
            _ => "?",
        };
        format!("{label}={}", String::from_utf8_lossy(value))
    });
    text.collect::<Vec<_>>().join(", ")
}

fn fingerprint(der: &[u8]) -> Result<String> {
    // rustls exposes its SHA-256 only through a cipher suite; every TLS 1.3 suite of the
    // ring provider has one, so the error is unreachable in practice.
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13();
    let Some(suite) = suite else {
        let source = rustls::Error::General("SHA-256 unavailable".into());
        return Err(tls_error("fingerprint")(source));
    };
    let digest = suite.common.hash_provider.hash(der);
    let hex = digest.as_ref().iter().map(|b| format!("{b:02X}"));
    Ok(hex.collect::<Vec<_>>().join(":"))
}

fn pem_encode(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for (i, chunk) in der.chunks(3).enumerate() {
        let bits = (chunk.iter().enumerate())
            .fold(0u32, |acc, (j, b)| acc | u32::from(*b) << (16 - 8 * j));
        for sextet in 0..4 {
            let index = (bits >> (18 - 6 * sextet)) as usize & 63;
            let c = if sextet <= chunk.len() {
                ALPHABET[index]
            } else {
                b'='
            };
            out.push(char::from(c));
        }
        // 16 groups of 4 characters make the customary 64-character line.
        if i % 16 == 15 || (i + 1) * 3 >= der.len() {
            out.push('\n');
        }
    }
    out + "-----END CERTIFICATE-----\n"
}

fn cache_size(entries: usize) -> NonZeroUsize {
    NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN)
}

fn exists(path: &Path) -> io::Result<bool> {
    // symlink_metadata, so that a dangling link also counts as something not to replace.
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    private_dir_builder().recursive(true).create(dir)
}

fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// A new self-signed root and its key.
fn new_root() -> Result<(CertificateDer<'static>, KeyPair)> {
    let make = || {
        let key = KeyPair::generate()?;
        root_params()?
            .self_signed(&key)
            .map(|cert| (cert.into(), key))
    };
    make().map_err(cert_error("root"))
}

/// Generates a CA and publishes it in `dir`, unless another start publishes one first.
/// `Ok` says only that `dir` changed: the caller looks again and loads what is there.
///
/// The pair is staged in a private directory of our own, then the key is linked into
/// place (the link fails if a key is there: the one winner is decided here), then the
/// certificate. From the key's link on nothing is undone: a start that finds the key
/// alone finishes the publication from the staging directory ([`finish_publishing`]).
fn publish_new(dir: &Path) -> Result<()> {
    let (cert_der, key) = new_root()?;
    let (cert_pem, key_pem) = (pem_encode(&cert_der), key.serialize_pem());
    let staging = dir.join(format!(".mitm.{}.tmp", unique()));
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if let Err(e) = stage(&staging, cert_pem.as_bytes(), key_pem.as_bytes()) {
        let _ = fs::remove_dir_all(&staging);
        return Err(write_err(&staging)(e));
    }
    match link_staged(&staging.join(CA_KEY_FILE), &key_path) {
        Ok(Link::Made) => {}
        // Another start won: the caller loads its CA.
        Ok(Link::Beaten) => {
            let _ = fs::remove_dir_all(&staging);
            return Ok(());
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(write_err(&key_path)(e));
        }
    }
    // Beaten here means another start finished for us. On an error the staging
    // directory stays, for the next start to finish from.
    link_staged(&staging.join(CA_CERT_FILE), &cert_path).map_err(write_err(&cert_path))?;
    sync_dir(dir).map_err(write_err(dir))?;
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// What linking a staged file into place came to.
enum Link {
    Made,
    /// Another start got there first: the target was there already, or the staging
    /// directory is gone (removed by a start that finished from it, or, long after, as
    /// a crash's leftover once a CA is there).
    Beaten,
}

/// Hard-links the staged file `from` to `to`; a link never replaces `to`.
fn link_staged(from: &Path, to: &Path) -> io::Result<Link> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(Link::Made),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
            ) =>
        {
            Ok(Link::Beaten)
        }
        Err(e) => Err(e),
    }
}

/// Writes the pair into the new private directory `staging`, files and entries synced,
/// so that once the key is linked out of it the certificate is surely there too.
fn stage(staging: &Path, cert_pem: &[u8], key_pem: &[u8]) -> io::Result<()> {
    private_dir_builder().create(staging)?;
    write_temp(&staging.join(CA_KEY_FILE), key_pem, 0o600)?;
    write_temp(&staging.join(CA_CERT_FILE), cert_pem, 0o644)?;
    sync_dir(staging)
}

/// `dir` holds a key without its certificate: a start is between its two links, or
/// crashed there, or the key is a user's. A start's staging directory holds the very
/// same key beside its certificate; that certificate is linked into place (never
/// replacing one) and the staging directory removed. A key with no such twin is left
/// alone for the caller to report.
fn finish_publishing(dir: &Path) -> Result<()> {
    let cert_path = dir.join(CA_CERT_FILE);
    // Unreadable here means no twin can be proven: the caller reports the key as alone.
    let Ok(published) = fs::read(dir.join(CA_KEY_FILE)) else {
        return Ok(());
    };
    let twin = temp_entries(dir)
        .into_iter()
        .find(|staging| fs::read(staging.join(CA_KEY_FILE)).is_ok_and(|key| key == published));
    let Some(staging) = twin else {
        return Ok(());
    };
    // Beaten means its own start or another finished first.
    link_staged(&staging.join(CA_CERT_FILE), &cert_path).map_err(write_err(&cert_path))?;
    sync_dir(dir).map_err(write_err(dir))?;
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// Our temporary files and staging directories in `dir`, named `.mitm.*.tmp` (those of
/// [`write_new`] for the CA files, and of [`publish_new`]). An unreadable `dir` has none.
fn temp_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let ours = |name: &str| name.starts_with(".mitm.") && name.ends_with(".tmp");
    let entries = entries.filter_map(|entry| entry.ok());
    let entries = entries.filter(|entry| entry.file_name().to_str().is_some_and(ours));
    entries.map(|entry| entry.path()).collect()
}

/// Removes what crashed starts left in `dir`. Called only when `dir` holds a complete
/// CA, so nothing removed can be the only copy of a published key's certificate; and
/// only older than [`STALE_TEMP`], so a start at work keeps its own (should it lose it
/// anyway, its link fails and it loads the CA that is there). Failures are ignored: a
/// leftover is clutter, not an error.
fn remove_stale_temps(dir: &Path) {
    for path in temp_entries(dir) {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
        if age.is_none_or(|age| age < STALE_TEMP) {
            continue;
        }
        let _ = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

/// Makes the entries just created in `dir` durable. Only Unix opens a directory to
/// sync it; elsewhere this does nothing.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> io::Result<()> {
    Ok(())
}

/// Creates `path` with `contents` without ever replacing an existing file: written to
/// a temporary file, then hard-linked into place (which fails if `path` exists).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let write_err = |source| Error::CaWrite {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path).map_err(write_err)?;
    if let Err(e) = write_temp(&tmp, contents, mode) {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::CaExists {
            path: path.to_owned(),
        }),
        Err(e) => Err(write_err(e)),
    }
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ));
    };
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", unique()));
    Ok(path.with_file_name(tmp))
}

/// A name part no other thread or process picks: our process id and 64 random bits.
fn unique() -> String {
    format!("{}.{:016x}", std::process::id(), rand::random::<u64>())
}

fn write_temp(tmp: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()
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

fn incomplete(present: PathBuf, missing: PathBuf) -> Error {
    Error::CaIncomplete { present, missing }
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

    fn name(raw: &str) -> String {
        Host::parse(raw).unwrap().name
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(name("Example.COM."), "example.com");
        assert_eq!(name("[::1]"), "::1");
        assert_eq!(name("0:0::1"), "::1");
        assert_eq!(name("127.0.0.1"), "127.0.0.1");
        assert_eq!(name("_dmarc.my-host.test"), "_dmarc.my-host.test");
        assert!(Host::parse("[::1]").unwrap().ip.is_some());
        assert!(Host::parse("example.com").unwrap().ip.is_none());
    }

    #[test]
    fn bad_hosts_are_refused() {
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghi"; 26].join(".");
        assert_eq!(long_name.len(), 259);
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "tab\t",
            "nul\0",
            "x\n",
            "[127.0.0.1]",
            "[::1",
            "ünï.test",
            "*.test",
            "127.1",
            "127.000.0.1",
            "0x7f.1",
            &long_label,
            &long_name,
        ] {
            let err = Host::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidHost { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der_encode(4, &[1, 2]), [4, 2, 1, 2]);
        assert_eq!(der_encode(4, &[0; 200])[..3], [4, 0x81, 200]);
        assert_eq!(der_encode(4, &[0; 300])[..4], [4, 0x82, 1, 44]);
        assert_eq!(der_encode(4, &[]), [4, 0]);
        let encoded = der_encode(0x30, &[0; 300]);
        let element = Der::single(&encoded).unwrap();
        assert_eq!((element.tag, element.body.len()), (0x30, 300));
    }

    #[test]
    fn pem_matches_known_base64() {
        let pem = pem_encode(b"foobar!");
        assert_eq!(pem.lines().nth(1), Some("Zm9vYmFyIQ=="));
        let long = pem_encode(&[0xff; 48]);
        assert_eq!(long.lines().nth(1), Some("/".repeat(64).as_str()));
        assert_eq!(long.lines().count(), 3);
        let two = pem_encode(&[0; 49]);
        assert_eq!(two.lines().nth(2), Some("AA=="));
    }

    #[test]
    fn pem_roundtrips_through_pki_types() {
        let ca = CertificateAuthority::generate().unwrap();
        let parsed = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(&parsed, ca.cert_der());
    }

    #[test]
    fn debug_shows_subject_not_key() {
        let ca = CertificateAuthority::generate().unwrap();
        let debug = format!("{ca:?}");
        assert!(debug.contains("C=US, ST=New York, L=New York, O=mitm, OU=mitm, CN=mitm"));
        assert!(debug.contains(&ca.fingerprint_sha256()));
        assert!(!debug.contains("PRIVATE"));
    }

    #[test]
    fn long_hosts_get_no_common_name() {
        let host = Host::parse(&format!("{}.test", "a".repeat(61))).unwrap();
        assert!(leaf_params(&host)
            .unwrap()
            .distinguished_name
            .iter()
            .next()
            .is_none());
        let host = Host::parse(&format!("{}.test", "a".repeat(59))).unwrap();
        assert_eq!(host.name.len(), 64);
        assert!(leaf_params(&host)
            .unwrap()
            .distinguished_name
            .get(&DnType::CommonName)
            .is_some());
    }

    #[test]
    fn ca_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CertificateAuthority>();
    }
}
