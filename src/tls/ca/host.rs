//! A host as it goes in a leaf certificate: a canonical IP address or a lowercase DNS
//! name, refused when it is neither.

use std::net::{IpAddr, Ipv6Addr};

use rcgen::SanType;

use super::cert_error;
use crate::error::{Error, Result};

/// Longest DNS name, without the trailing dot.
const MAX_DNS_LEN: usize = 253;

/// A host as it goes in a certificate: a canonical IP address or a lowercase DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Host {
    /// Normalized form: the cache key and the common name.
    pub(super) name: String,
    pub(super) ip: Option<IpAddr>,
}

impl Host {
    /// `raw` is a DNS name (case and a trailing dot do not matter) or an IP address
    /// (IPv6 with or without brackets); anything else is [`Error::InvalidHost`].
    pub(super) fn parse(raw: &str) -> Result<Self> {
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

    /// The subject alternative name naming this host: an address, or a DNS name.
    pub(super) fn san(&self) -> Result<SanType> {
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
}
