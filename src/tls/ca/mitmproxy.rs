//! mitmproxy's CA, used as it is: read from a mitmproxy confdir, never written there, so
//! that devices which already trust mitmproxy's root trust our leaves with no change.
//!
//! mitmproxy keeps its root's private key and certificate together in one PEM file,
//! [`MITMPROXY_CA_FILE`] (the key first, PKCS#1 RSA as mitmproxy 11 writes it), and the
//! certificate alone in [`MITMPROXY_CA_CERT_FILE`] for devices; its confdir is
//! `~/.mitmproxy` unless its `confdir` option says otherwise.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::root::Root;
use super::{read_err, CaSource, CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE};
use crate::error::Result;

/// mitmproxy's root private key and certificate, in one PEM file of its confdir.
pub const MITMPROXY_CA_FILE: &str = "mitmproxy-ca.pem";
/// mitmproxy's root certificate alone, as PEM, in its confdir: what devices trust.
pub const MITMPROXY_CA_CERT_FILE: &str = "mitmproxy-ca-cert.pem";

/// mitmproxy's default confdir, `~/.mitmproxy` (the home directory from `HOME`, or
/// `USERPROFILE` on Windows). `None` when that variable is unset or not absolute.
///
/// ```
/// if let Some(dir) = mitm::tls::ca::default_mitmproxy_confdir() {
///     assert!(dir.ends_with(".mitmproxy"));
/// }
/// ```
pub fn default_mitmproxy_confdir() -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|home| home.is_absolute())
        .map(|home| home.join(".mitmproxy"))
}

impl CertificateAuthority {
    /// Uses mitmproxy's CA kept in the confdir `confdir`: the key and certificate in
    /// [`MITMPROXY_CA_FILE`] (the key PKCS#1, SEC1 or PKCS#8, as for
    /// [`from_pem`](Self::from_pem)). Nothing is ever written into `confdir`.
    ///
    /// Its [`cert_path`](Self::cert_path) is [`MITMPROXY_CA_CERT_FILE`] when that file
    /// holds the same certificate, else [`MITMPROXY_CA_FILE`] itself. A missing or
    /// unreadable file is [`Error::CaRead`](crate::Error::CaRead), one that holds no
    /// usable certificate or key [`Error::CaInvalid`](crate::Error::CaInvalid), both
    /// naming the file.
    pub fn load_mitmproxy(confdir: impl AsRef<Path>) -> Result<Self> {
        let confdir = absolute(confdir.as_ref());
        let path = confdir.join(MITMPROXY_CA_FILE);
        let pem = fs::read(&path).map_err(read_err(&path))?;
        let root = Root::from_pem(&pem, &pem, (&path, &path))?;
        let mut ca = Self::new(root, (&path, &path))?;
        let cert_file = confdir.join(MITMPROXY_CA_CERT_FILE);
        let same_cert = fs::read(&cert_file)
            .ok()
            .and_then(|pem| CertificateDer::from_pem_slice(&pem).ok())
            .is_some_and(|der| der == *ca.cert_der());
        ca.cert_path = Some(if same_cert { cert_file } else { path });
        ca.source = CaSource::Mitmproxy(confdir);
        Ok(ca)
    }

    /// The CA of `dir` as [`init`](Self::init) loads or creates it, unless `dir` holds
    /// no CA file yet and the mitmproxy confdir `confdir` holds [`MITMPROXY_CA_FILE`]:
    /// then mitmproxy's CA, [read only](Self::load_mitmproxy), and `dir` is left as it
    /// is. A CA of our own, once there, always wins. [`source`](Self::source) tells
    /// which was taken.
    ///
    /// ```
    /// use mitm::tls::ca::CaSource;
    /// use mitm::CertificateAuthority;
    ///
    /// let (ours, confdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    /// // No mitmproxy CA there: ours is created.
    /// let ca = CertificateAuthority::init_or_mitmproxy(ours.path(), Some(confdir.path()))?;
    /// assert!(matches!(ca.source(), CaSource::Dir(_)));
    /// # Ok::<(), mitm::Error>(())
    /// ```
    pub fn init_or_mitmproxy(dir: impl AsRef<Path>, confdir: Option<&Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let ours = [CA_CERT_FILE, CA_KEY_FILE]
            .iter()
            .map(|name| dir.join(name))
            .map(|path| present(&path).map_err(read_err(&path)))
            .collect::<Result<Vec<_>>>()?;
        if !ours.contains(&true) {
            if let Some(confdir) = confdir {
                let theirs = confdir.join(MITMPROXY_CA_FILE);
                if present(&theirs).map_err(read_err(&theirs))? {
                    return Self::load_mitmproxy(confdir);
                }
            }
        }
        Self::init(dir)
    }
}

/// Whether something (even a dangling link) is at `path`.
fn present(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A confdir laid out as mitmproxy lays it out: key (PKCS#8 here) and certificate
    /// in one file, the certificate alone in another.
    fn confdir_of(ca: &CertificateAuthority) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let pair = ca.root.pem_pair();
        let both = format!("{}{}", pair.key, pair.cert);
        fs::write(dir.path().join(MITMPROXY_CA_FILE), both).unwrap();
        fs::write(dir.path().join(MITMPROXY_CA_CERT_FILE), pair.cert).unwrap();
        dir
    }

    #[test]
    fn loads_key_and_certificate_from_one_file() {
        let original = CertificateAuthority::generate().unwrap();
        let confdir = confdir_of(&original);
        let ca = CertificateAuthority::load_mitmproxy(confdir.path()).unwrap();
        assert_eq!(ca.fingerprint_sha256(), original.fingerprint_sha256());
        let cert_file = confdir.path().join(MITMPROXY_CA_CERT_FILE);
        assert_eq!(ca.cert_path(), Some(cert_file.as_path()));
        assert_eq!(ca.source(), &CaSource::Mitmproxy(confdir.path().into()));
        ca.issue_leaf("example.com").unwrap();
    }

    #[test]
    fn a_different_cert_file_is_not_named_as_the_one_to_trust() {
        let original = CertificateAuthority::generate().unwrap();
        let confdir = confdir_of(&original);
        let other = CertificateAuthority::generate().unwrap();
        fs::write(
            confdir.path().join(MITMPROXY_CA_CERT_FILE),
            other.cert_pem(),
        )
        .unwrap();
        let ca = CertificateAuthority::load_mitmproxy(confdir.path()).unwrap();
        let both = confdir.path().join(MITMPROXY_CA_FILE);
        assert_eq!(ca.cert_path(), Some(both.as_path()));
    }

    #[test]
    fn damaged_or_missing_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MITMPROXY_CA_FILE);
        let missing = CertificateAuthority::load_mitmproxy(dir.path()).unwrap_err();
        assert!(missing.to_string().contains(&path.display().to_string()));
        let original = CertificateAuthority::generate().unwrap();
        for damaged in [
            String::from("not a PEM file"),
            original.cert_pem().to_owned(),
            original.root.pem_pair().key,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()
                + &original.root.pem_pair().key,
        ] {
            fs::write(&path, damaged).unwrap();
            let e = CertificateAuthority::load_mitmproxy(dir.path()).unwrap_err();
            assert!(
                matches!(e, crate::Error::CaInvalid { .. }),
                "{e}: not CaInvalid"
            );
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn ours_wins_once_there_and_theirs_is_taken_only_when_ours_is_empty() {
        let theirs = CertificateAuthority::generate().unwrap();
        let confdir = confdir_of(&theirs);
        let ours = tempfile::tempdir().unwrap();
        let dir = ours.path().join("mitm");
        let ca = CertificateAuthority::init_or_mitmproxy(&dir, Some(confdir.path())).unwrap();
        assert_eq!(ca.fingerprint_sha256(), theirs.fingerprint_sha256());
        assert!(
            !dir.exists(),
            "nothing of ours is made while theirs is used"
        );
        let own = CertificateAuthority::init(&dir).unwrap();
        let ca = CertificateAuthority::init_or_mitmproxy(&dir, Some(confdir.path())).unwrap();
        assert_eq!(ca.fingerprint_sha256(), own.fingerprint_sha256());
        assert_eq!(ca.source(), &CaSource::Dir(dir.clone()));
    }
}
