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
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::nom;

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

/// One DER element: its tag and contents.
#[derive(Clone, Copy)]
struct Der<'a> {
    tag: u8,
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
        Some((Self { tag: *tag, body }, rest))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::CertificateAuthority;

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
