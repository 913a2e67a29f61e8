//! The root: a new one made here, or a user's read from PEM, checked against its key,
//! and what the CA tells of it (PEM, subject, fingerprint).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::Duration;

use super::store::PemPair;
use super::{cert_error, invalid, set_validity, tls_error};
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
        let cert_invalid = |reason: &str| invalid(paths.0, "certificate", reason.into());
        let Some(tbs) = Tbs::parse(&der) else {
            return Err(cert_invalid("malformed DER"));
        };
        if tbs.public_key != key.der_bytes() {
            let reason = "does not match the certificate's public key".into();
            return Err(invalid(paths.1, "private key", reason));
        }
        let subject = describe_name(tbs.subject);
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| cert_invalid(&format!("unusable as an issuer: {e}")))?;
        Ok(Self {
            pem: pem_encode(&der),
            fingerprint: fingerprint(&der)?,
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
    Tbs::parse(cert).map(|tbs| (tbs.issuer, tbs.subject))
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
}
