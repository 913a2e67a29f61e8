//! [`Route`]: how a connection reaches its origin, straight or through an upstream
//! proxy ([`UpstreamProxy`]: HTTP, HTTPS or SOCKS5).
//!
//! A server has a default route (a listener's `upstream:` mode sets it) and a
//! middleware may choose another per request or tunnel with
//! [`Router::route`](crate::Router::route). The upstream layer keeps its pooled
//! connections per route and origin, so two routes never share a connection.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::core::Target;
use crate::error::{Error, Result};

/// How a connection reaches its origin.
///
/// ```
/// use mitm::Route;
/// let direct = Route::Direct;
/// let corporate: Route = "http://user:secret@proxy.example:3128".parse().unwrap();
/// let socks: Route = "socks5://127.0.0.1:1080".parse().unwrap();
/// assert_ne!(direct, socks);
/// // Credentials are not shown.
/// assert_eq!(corporate.to_string(), "http://user:***@proxy.example:3128");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// Straight to the origin.
    #[default]
    Direct,
    /// Through an upstream proxy.
    Proxy(Arc<UpstreamProxy>),
}

impl Route {
    /// A route through `proxy`.
    pub fn proxy(proxy: UpstreamProxy) -> Self {
        Route::Proxy(Arc::new(proxy))
    }

    /// The upstream proxy of this route, if any.
    pub fn upstream_proxy(&self) -> Option<&UpstreamProxy> {
        match self {
            Route::Direct => None,
            Route::Proxy(proxy) => Some(proxy),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("direct"),
            Route::Proxy(proxy) => proxy.fmt(f),
        }
    }
}

impl FromStr for Route {
    type Err = Error;

    /// `direct`, or a proxy URL as [`UpstreamProxy`] parses it.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("direct") {
            return Ok(Route::Direct);
        }
        s.parse().map(Route::proxy)
    }
}

/// What an upstream proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyScheme {
    /// An HTTP proxy: plain requests go to it in absolute form, the rest through
    /// `CONNECT` tunnels.
    Http,
    /// An HTTP proxy reached over TLS (its certificate verified like any upstream's).
    Https,
    /// A SOCKS5 proxy (RFC 1928), with username/password authentication (RFC 1929)
    /// when credentials are given.
    Socks5,
}

impl ProxyScheme {
    /// The URL scheme: `http`, `https` or `socks5`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
            ProxyScheme::Socks5 => "socks5",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            ProxyScheme::Http => 8080,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 => 1080,
        }
    }
}

/// An upstream proxy: `SCHEME://[USER:PASS@]HOST[:PORT]`, the scheme one of `http`,
/// `https` and `socks5` (`socks5h` is taken as `socks5`: names are always resolved by
/// the proxy).
///
/// ```
/// use mitm::upstream::route::{ProxyScheme, UpstreamProxy};
/// let p: UpstreamProxy = "socks5://alice:pw@[::1]:1080".parse().unwrap();
/// assert_eq!(p.scheme(), ProxyScheme::Socks5);
/// assert_eq!(p.address().host, "::1");
/// assert_eq!(p.credentials(), Some(("alice", "pw")));
/// assert!("ftp://proxy:21".parse::<UpstreamProxy>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamProxy {
    scheme: ProxyScheme,
    address: Target,
    credentials: Option<(String, String)>,
}

impl UpstreamProxy {
    /// A proxy at `host:port` speaking `scheme`, without credentials.
    pub fn new(scheme: ProxyScheme, host: impl Into<String>, port: u16) -> Self {
        UpstreamProxy {
            scheme,
            address: Target::new(host, port, scheme == ProxyScheme::Https),
            credentials: None,
        }
    }

    /// The same proxy, logging in with `user` and `password`.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// What the proxy speaks.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// Where the proxy listens (with `tls` set for an HTTPS proxy).
    pub fn address(&self) -> &Target {
        &self.address
    }

    /// The user name and password, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The `Proxy-Authorization` value for an HTTP proxy with credentials.
    pub(crate) fn basic_authorization(&self) -> Option<String> {
        use base64::Engine as _;
        let (user, password) = self.credentials()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {token}"))
    }
}

impl fmt::Display for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        let plain = Target::new(self.address.host.clone(), self.address.port, false);
        write!(f, "{plain}")
    }
}

impl FromStr for UpstreamProxy {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidProxy {
            url: redact(url),
            reason: reason.into(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected SCHEME://HOST:PORT"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" | "socks5h" => ProxyScheme::Socks5,
            _ => return Err(invalid("the scheme must be http, https or socks5")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(invalid("a proxy URL has no path"));
        }
        let (credentials, authority) = match rest.rsplit_once('@') {
            Some((userinfo, authority)) => {
                let (user, password) = userinfo
                    .split_once(':')
                    .ok_or_else(|| invalid("credentials must be USER:PASSWORD"))?;
                let user = percent_decode(user).ok_or_else(|| invalid("bad %-escape"))?;
                let password = percent_decode(password).ok_or_else(|| invalid("bad %-escape"))?;
                (Some((user, password)), authority)
            }
            None => (None, rest),
        };
        let (host, port) = crate::http::target::parse_authority(authority, scheme.default_port())
            .ok_or_else(|| invalid("invalid host or port"))?;
        // An IPv6 literal goes in brackets; any other `:` is a mistake.
        if host.is_empty() || port == 0 || (host.contains(':') && !authority.starts_with('[')) {
            return Err(invalid("invalid host or port"));
        }
        let mut proxy = UpstreamProxy::new(scheme, host, port);
        proxy.credentials = credentials;
        Ok(proxy)
    }
}

/// `url` (or anything holding one, such as a `--mode` spec) with any password
/// replaced, for error messages. Everything between `://` and the last `@` counts as
/// credentials: a password may hold an `@` of its own.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// Decodes `%XX` escapes (credentials may hold `:` or `@` that way).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme_with_default_ports() {
        let p: UpstreamProxy = "http://proxy.localhost".parse().unwrap();
        assert_eq!((p.scheme(), p.address().port), (ProxyScheme::Http, 8080));
        let p: UpstreamProxy = "HTTPS://proxy.localhost:8443/".parse().unwrap();
        assert_eq!((p.scheme(), p.address().port), (ProxyScheme::Https, 8443));
        assert!(p.address().tls);
        let p: UpstreamProxy = "socks5h://127.0.0.1:9050".parse().unwrap();
        assert_eq!(p.scheme(), ProxyScheme::Socks5);
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let p: UpstreamProxy = "http://a%40b:p%3Ass@h:1".parse().unwrap();
        assert_eq!(p.credentials(), Some(("a@b", "p:ss")));
        assert_eq!(p.to_string(), "http://a@b:***@h:1");
        let e = "gopher://u:secret@h:1"
            .parse::<UpstreamProxy>()
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn rejects_what_is_not_a_proxy_url() {
        for bad in [
            "proxy:3128",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h:1/path",
            "http://user@h:1",
            "http://u:%zz@h:1",
            "http://h:1:2",
        ] {
            assert!(bad.parse::<UpstreamProxy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_parse_direct_and_compare_by_value() {
        assert_eq!("direct".parse::<Route>().unwrap(), Route::Direct);
        let a: Route = "socks5://127.0.0.1:1080".parse().unwrap();
        let b: Route = "socks5://127.0.0.1:1080".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.upstream_proxy().unwrap().address().port, 1080);
    }
}
