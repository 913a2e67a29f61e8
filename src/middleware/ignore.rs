//! [`IgnoreHosts`]: TLS pass-through for hosts matching patterns (`--ignore-hosts`).

use async_trait::async_trait;

use super::{Interception, Router};
use crate::core::Connection;

/// Lets TLS connections to matching hosts through without decrypting them: the client
/// talks to the origin end to end and sees its real certificate. Each pattern is a
/// regular expression matched against `host:port` of the `CONNECT` target and against
/// the SNI name; any match lets the connection through.
///
/// ```
/// use mitm::middleware::IgnoreHosts;
/// let ignore = IgnoreHosts::new([r"(^|\.)bank\.example(:443)?$"]).unwrap();
/// assert!(ignore.matches("www.bank.example:443"));
/// assert!(!ignore.matches("bank.example.evil:443"));
/// ```
#[derive(Debug, Clone)]
pub struct IgnoreHosts {
    patterns: Vec<regex_lite::Regex>,
}

impl IgnoreHosts {
    /// Compiles `patterns`; the error names the pattern that does not compile.
    pub fn new<I, S>(patterns: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| {
                let p = p.as_ref();
                regex_lite::Regex::new(p).map_err(|e| format!("invalid pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(IgnoreHosts { patterns })
    }

    /// Whether `text` (a `host:port` or a host name) matches a pattern.
    pub fn matches(&self, text: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(text))
    }
}

#[async_trait]
impl Router for IgnoreHosts {
    async fn should_intercept(&self, conn: &Connection, server_name: Option<&str>) -> Interception {
        let target = conn.target.as_ref().map(ToString::to_string);
        let hit = target
            .iter()
            .map(String::as_str)
            .chain(server_name)
            .any(|t| self.matches(t));
        if hit {
            Interception::PassThrough
        } else {
            Interception::Intercept
        }
    }
}
