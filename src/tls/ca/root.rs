//! The root: a new one made here, or a user's read from PEM, checked against its key,
//! and what the CA tells of it (PEM, subject, fingerprints). Certificates are read with
//! x509-parser, hashed with ring and written as PEM with base64.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::Duration;
use x509_parser::asn1_rs::{
    self, Any, Class, FromDer, Null, OctetString, Oid, Sequence, Tag, ToDer,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::nom;
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};

use super::store::PemPair;
use super::{cert_error, invalid, set_validity};
use crate::error::Result;

/// Root lifetime: long, since replacing a trusted root means every client re-trusts.
const ROOT_LIFETIME: Duration = Duration::days(3650);

/// Where a root came from, for errors: its certificate's and its key's paths, both
/// empty for a root made or given in memory.
pub(super) type Paths<'a> = (&'a Path, &'a Path);

/// The paths of a root that has no files.
pub(super) fn in_memory() -> Paths<'static> {
    (Path::new(""), Path::new(""))
}

/// The root certificate and its key, as leaves are signed with them.
pub(super) struct Root {
    /// Exactly as generated or loaded: what clients trust.
    pub(super) der: CertificateDer<'static>,
    pub(super) pem: String,
    /// The subject as text, for `Debug` only.
    pub(super) subject: String,
    /// SHA-256 of `der`, as `openssl x509 -fingerprint -sha256` prints it.
    pub(super) fingerprint: String,
    /// SHA-256 of the SubjectPublicKeyInfo, base64: the pin Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub(super) spki_sha256: String,
    /// The root's name, key identifier and key, as rcgen signs leaves with them.
    pub(super) issuer: Issuer<'static, KeyPair>,
}

impl Root {
    /// A new self-signed root, ECDSA P-256 (`ring` cannot generate RSA keys).
    pub(super) fn generate() -> Result<Self> {
        let (der, key) = new_root()?;
        Self::new(der, key, in_memory())
    }

    /// A root from a PEM certificate and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(super) fn from_pem(cert_pem: &[u8], key_pem: &[u8], paths: Paths<'_>) -> Result<Self> {
        let cert_invalid = |reason: String| invalid(paths.0, "certificate", reason);
        let key_invalid = |reason: String| invalid(paths.1, "private key", reason);
        let cert = CertificateDer::from_pem_slice(cert_pem)
            .map_err(|e| cert_invalid(format!("no PEM certificate ({e})")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| key_invalid(format!("no PEM private key ({e})")))?;
        let key = to_pkcs8(&key)
            .and_then(|pkcs8| KeyPair::try_from(pkcs8.secret_pkcs8_der()).ok())
            .ok_or_else(|| key_invalid("unsupported or malformed key".into()))?;
        Self::new(cert, key, paths)
    }

    /// Checks that `key` is the certificate's and that rcgen can issue with them.
    fn new(der: CertificateDer<'static>, key: KeyPair, paths: Paths<'_>) -> Result<Self> {
        let cert_invalid = |reason: String| invalid(paths.0, "certificate", reason);
        let cert = parse(&der).map_err(|e| cert_invalid(format!("malformed DER ({e})")))?;
        let spki = cert.public_key();
        if spki.subject_public_key.data != key.der_bytes() {
            let reason = "does not match the certificate's public key".into();
            return Err(invalid(paths.1, "private key", reason));
        }
        let subject = cert.subject().to_string();
        let spki_sha256 = BASE64.encode(sha256(spki.raw));
        // rcgen takes the root's name and subject key identifier from the certificate:
        // the leaves' issuer and authority key identifier.
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| cert_invalid(format!("unusable as an issuer: {e}")))?;
        Ok(Self {
            pem: cert_pem(&der),
            fingerprint: colon_hex(&sha256(&der)),
            spki_sha256,
            der,
            subject,
            issuer,
        })
    }

    /// The certificate and its key (PKCS#8) as the PEM of their files.
    pub(super) fn pem_pair(&self) -> PemPair {
        PemPair {
            cert: self.pem.clone(),
            key: self.issuer.key().serialize_pem(),
        }
    }
}

/// A certificate's issuer and subject names, as their DER: a leaf chains to its root
/// only if its issuer is the root's subject byte for byte.
pub(super) fn names(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let tbs = parse(cert).ok()?.tbs_certificate;
    Some((tbs.issuer.as_raw(), tbs.subject.as_raw()))
}

/// Parses a DER certificate, with what follows it ignored (as rcgen does).
fn parse(der: &[u8]) -> Result<X509Certificate<'_>, nom::Err<X509Error>> {
    x509_parser::parse_x509_certificate(der).map(|(_, cert)| cert)
}

fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

/// Uppercase hex pairs joined by colons, as openssl prints fingerprints.
fn colon_hex(digest: &ring::digest::Digest) -> String {
    let pairs: Vec<_> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    pairs.join(":")
}

/// A DER certificate as PEM: base64 in the customary lines of 64 characters (48 bytes).
fn cert_pem(der: &[u8]) -> String {
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in der.chunks(48) {
        BASE64.encode_string(line, &mut pem);
        pem.push('\n');
    }
    pem + "-----END CERTIFICATE-----\n"
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

/// Rewraps PKCS#1 and SEC1 keys as PKCS#8 (a version 0 PrivateKeyInfo, RFC 5208), the
/// only form rcgen's `ring` backend reads; asn1-rs writes the DER.
fn to_pkcs8(key: &PrivateKeyDer<'_>) -> Option<PrivatePkcs8KeyDer<'static>> {
    let (algorithm, parameters, inner) = match key {
        PrivateKeyDer::Pkcs8(pkcs8) => return Some(pkcs8.clone_key()),
        // rsaEncryption takes NULL parameters (RFC 8017, A.1).
        PrivateKeyDer::Pkcs1(rsa) => {
            let null = Null::new().to_der_vec().ok()?;
            (OID_PKCS1_RSAENCRYPTION, null, rsa.secret_pkcs1_der())
        }
        PrivateKeyDer::Sec1(ec) => {
            let curve = sec1_curve(ec.secret_sec1_der())?;
            (OID_KEY_TYPE_EC_PUBLIC_KEY, curve, ec.secret_sec1_der())
        }
        _ => return None,
    };
    let algorithm = [algorithm.to_der_vec().ok()?, parameters].concat();
    let fields = [
        0u8.to_der_vec().ok()?,
        Sequence::new(algorithm.into()).to_der_vec().ok()?,
        OctetString::new(inner).to_der_vec().ok()?,
    ];
    let pkcs8 = Sequence::new(fields.concat().into()).to_der_vec().ok()?;
    Some(pkcs8.into())
}

/// The named curve of a SEC1 private key (RFC 5915), as DER: its optional `[0]` field,
/// without which the key's curve cannot be told.
fn sec1_curve(sec1: &[u8]) -> Option<Vec<u8>> {
    let (_, key) = Sequence::from_der(sec1).ok()?;
    let mut fields = key.der_iter::<Any, asn1_rs::Error>();
    let is_curve = |field: &Any| field.class() == Class::ContextSpecific && field.tag() == Tag(0);
    let curve = fields.find_map(|field| field.ok().filter(is_curve))?;
    let (_, curve) = Oid::from_der(curve.data).ok()?;
    curve.to_der_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::CertificateAuthority;

    #[test]
    fn keys_that_cannot_be_rewrapped_are_refused() {
        // A SEC1 key without its curve, and no DER at all.
        let sec1_without_curve = [0x30, 0x03, 0x02, 0x01, 0x01];
        assert!(sec1_curve(&sec1_without_curve).is_none());
        let key = PrivateKeyDer::Sec1(sec1_without_curve.to_vec().into());
        assert!(to_pkcs8(&key).is_none());
        assert!(sec1_curve(b"not DER").is_none());
        let pkcs8 = KeyPair::generate().unwrap().serialize_der();
        let key = PrivateKeyDer::Pkcs8(pkcs8.clone().into());
        assert_eq!(to_pkcs8(&key).unwrap().secret_pkcs8_der(), pkcs8);
    }

    #[test]
    fn pem_matches_known_base64() {
        let pem = cert_pem(b"foobar!");
        assert_eq!(pem.lines().nth(1), Some("Zm9vYmFyIQ=="));
        let long = cert_pem(&[0xff; 48]);
        assert_eq!(long.lines().nth(1), Some("/".repeat(64).as_str()));
        assert_eq!(long.lines().count(), 3);
        let two = cert_pem(&[0; 49]);
        assert_eq!(two.lines().nth(2), Some("AA=="));
        assert_eq!(cert_pem(&[]).lines().count(), 2);
    }

    #[test]
    fn pem_roundtrips_through_pki_types() {
        let ca = CertificateAuthority::generate().unwrap();
        let parsed = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(&parsed, ca.cert_der());
    }
}
