//! [`IgnoreHosts`]: which hosts' TLS is intercepted, by patterns: mitmproxy's
//! `ignore_hosts` (pass these through) and `allow_hosts` (intercept only these), one
//! router for both.

use async_trait::async_trait;

use super::{Interception, Router};
use crate::core::Connection;

/// A host pattern that is not a valid regular expression.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What the regular expression engine said.
    pub reason: String,
}

/// Compiles host patterns as mitmproxy does: regular expressions searched anywhere in
/// the text (anchor them with `^` and `$`), ignoring case.
pub(super) fn compile<I, S>(patterns: I) -> Result<Vec<regex_lite::Regex>, PatternError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    patterns
        .into_iter()
        .map(|p| {
            let p = p.as_ref();
            regex_lite::RegexBuilder::new(p)
                .case_insensitive(true)
                .build()
                .map_err(|e| PatternError {
                    pattern: p.to_string(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// Decides which TLS connections are intercepted by the host they go to; the others
/// pass through untouched (the client talks to the origin end to end and sees its real
/// certificate). Two lists, as mitmproxy's `ignore_hosts` and `allow_hosts`:
///
/// - **ignore** ([`new`](Self::new)): hosts matching a pattern pass through;
/// - **allow** ([`allow_only`](Self::allow_only)): only hosts matching a pattern are
///   intercepted, every other passes through.
///
/// Both may be given (as mitmproxy 11 accepts both): a host is then intercepted when it
/// matches an allow pattern and no ignore pattern. Each pattern is a regular expression
/// searched (unanchored, case-insensitive) in `host:port` of the tunnel's target and in
/// `sni:port` (the ClientHello's server name with the target's port); a match of
/// either counts. Plain HTTP inside a tunnel (a `CONNECT`, a transparent connection)
/// to a host passed through is relayed unparsed too; plain proxy requests are always
/// parsed, and the proxy's own magic host is always intercepted.
///
/// ```
/// use mitm::middleware::IgnoreHosts;
/// let ignore = IgnoreHosts::new([r"(^|\.)bank\.example:443$"]).unwrap();
/// assert!(!ignore.intercepts(&["www.bank.example:443"]));
/// assert!(ignore.intercepts(&["bank.example.evil:443"]));
///
/// let allow = IgnoreHosts::allow_only([r"^api\.example\.com:"]).unwrap();
/// assert!(allow.intercepts(&["API.example.com:443"]));
/// assert!(!allow.intercepts(&["www.example.com:443"]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct IgnoreHosts {
    ignore: Vec<regex_lite::Regex>,
    /// `None`: every host is allowed.
    allow: Option<Vec<regex_lite::Regex>>,
}

impl IgnoreHosts {
    /// Passes through the hosts matching one of `patterns` (`--ignore-hosts`); the
    /// error names the first pattern that does not compile.
    pub fn new<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(IgnoreHosts {
            ignore: compile(patterns)?,
            allow: None,
        })
    }

    /// Intercepts only the hosts matching one of `patterns` (`--allow-hosts`); every
    /// other passes through.
    pub fn allow_only<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        IgnoreHosts::default().and_allow_only(patterns)
    }

    /// Adds allow patterns to these ignore patterns: a host is intercepted when it
    /// matches one of `patterns` and none of those to ignore.
    pub fn and_allow_only<I, S>(mut self, patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.allow
            .get_or_insert_with(Vec::new)
            .extend(compile(patterns)?);
        Ok(self)
    }

    /// Whether `text` (a `host:port`) matches a pattern to ignore.
    pub fn matches(&self, text: &str) -> bool {
        self.ignore.iter().any(|p| p.is_match(text))
    }

    /// Whether a connection known by `names` (its `host:port` forms: the target, the
    /// SNI name with the target's port) is intercepted: allowed (or no allow list) and
    /// not ignored.
    pub fn intercepts(&self, names: &[&str]) -> bool {
        let hit = |patterns: &[regex_lite::Regex]| {
            names
                .iter()
                .any(|name| patterns.iter().any(|p| p.is_match(name)))
        };
        let allowed = self.allow.as_deref().is_none_or(hit);
        allowed && !hit(&self.ignore)
    }
}

#[async_trait]
impl Router for IgnoreHosts {
    async fn should_intercept(&self, conn: &Connection, server_name: Option<&str>) -> Interception {
        let Some(target) = &conn.target else {
            return Interception::Intercept;
        };
        let target_name = target.to_string();
        let sni = server_name.map(|name| format!("{name}:{}", target.port));
        let mut names = vec![target_name.as_str()];
        names.extend(sni.as_deref());
        if self.intercepts(&names) {
            Interception::Intercept
        } else {
            Interception::PassThrough
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_passes_matching_hosts_through() {
        let hosts = IgnoreHosts::new([r"\.example\.com:443$"]).unwrap();
        assert!(!hosts.intercepts(&["www.example.com:443"]));
        assert!(!hosts.intercepts(&["10.0.0.1:443", "WWW.EXAMPLE.COM:443"]));
        assert!(hosts.intercepts(&["www.example.com:8443"]));
        assert!(hosts.intercepts(&["example.org:443"]));
    }

    #[test]
    fn allow_intercepts_only_matching_hosts() {
        let hosts = IgnoreHosts::allow_only(["example"]).unwrap();
        assert!(hosts.intercepts(&["example.com:443"]));
        assert!(hosts.intercepts(&["1.2.3.4:443", "www.example.net:443"]));
        assert!(!hosts.intercepts(&["other.org:443"]));
    }

    #[test]
    fn with_both_a_host_must_be_allowed_and_not_ignored() {
        let hosts = IgnoreHosts::new([r"^secret\."])
            .unwrap()
            .and_allow_only([r"example\.com"])
            .unwrap();
        assert!(hosts.intercepts(&["api.example.com:443"]));
        assert!(!hosts.intercepts(&["secret.example.com:443"]));
        assert!(!hosts.intercepts(&["other.org:443"]));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = IgnoreHosts::allow_only(["ok", "(unclosed"]).unwrap_err();
        assert_eq!(e.pattern, "(unclosed");
        assert!(e.to_string().contains("(unclosed"), "{e}");
    }
}
