//! [`TcpHosts`]: tunnels to matching hosts relayed as raw bytes (`--tcp-hosts`), a
//! router.

use async_trait::async_trait;

use super::ignore::{compile, PatternError};
use super::{Payload, Router};
use crate::core::Connection;

/// mitmproxy's `tcp_hosts`, "generic TCP proxy mode" for matching hosts: the bytes
/// inside their tunnels are relayed as they are, without HTTP parsing (no flows; the
/// data hooks still see them). TLS is still intercepted when it would be (so the data
/// hooks see plaintext): pass a host through with [`IgnoreHosts`](super::IgnoreHosts)
/// to leave its TLS alone too.
///
/// Each pattern is a regular expression searched (unanchored, case-insensitive) in the
/// tunnel target's host (no port) and in the SNI name, as mitmproxy matches them.
///
/// ```
/// use mitm::middleware::TcpHosts;
/// let raw = TcpHosts::new([r"^db\.internal$"]).unwrap();
/// assert!(raw.matches("DB.internal"));
/// assert!(!raw.matches("www.internal"));
/// ```
#[derive(Debug, Clone)]
pub struct TcpHosts {
    patterns: Vec<regex_lite::Regex>,
}

impl TcpHosts {
    /// Relays raw the tunnels to hosts matching one of `patterns`; the error names the
    /// first pattern that does not compile.
    pub fn new<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(TcpHosts {
            patterns: compile(patterns)?,
        })
    }

    /// Whether `host` (a host name or address, or an SNI name) matches a pattern.
    pub fn matches(&self, host: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(host))
    }
}

#[async_trait]
impl Router for TcpHosts {
    async fn payload(&self, conn: &Connection, server_name: Option<&str>) -> Payload {
        let target = conn.target.as_ref().map(|t| t.host.as_str());
        if target
            .into_iter()
            .chain(server_name)
            .any(|h| self.matches(h))
        {
            Payload::Raw
        } else {
            Payload::Detect
        }
    }
}
