//! Proxy modes in mitmproxy's syntax, `MODE[:DATA][@[HOST:]PORT]`, made into
//! [`Listener`]s: what `mitm --mode` takes, for programs that take the same.
//!
//! | spec | the listener |
//! |---|---|
//! | `regular` | an explicit HTTP proxy (`CONNECT` included) |
//! | `socks5` | a SOCKS5 proxy |
//! | `reverse:SCHEME://HOST[:PORT]` | poses as that origin (http or https) |
//! | `upstream:SCHEME://[USER:PASS@]HOST:PORT` | an explicit HTTP proxy whose traffic leaves through that proxy (http, https or socks5) |
//! | `transparent` | takes connections a firewall redirected to it (Linux) |
//!
//! A suffix `@PORT` or `@HOST:PORT` gives the listener an address of its own; without
//! one it listens on the server's host and port.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::protocol::{Http, Protocol, Reverse, Socks5, Transparent};
use crate::server::listener::Listener;
use crate::upstream::route::{redact, Route, UpstreamProxy};

/// What a listener does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// An explicit HTTP proxy.
    Regular,
    /// A SOCKS5 proxy.
    Socks5,
    /// A reverse proxy in front of this origin (`http://` or `https://` URL).
    Reverse(String),
    /// An explicit HTTP proxy whose connections go through an upstream proxy.
    Upstream(UpstreamProxy),
    /// A transparent proxy for redirected connections.
    Transparent,
}

/// A listen address from a spec: a host (`None` for `@PORT`: the server's) and a port.
pub type ListenAt = (Option<String>, u16);

/// A mode, and the address its listener takes if it has its own.
///
/// ```
/// use mitm::server::mode::{Mode, ModeSpec};
/// let spec: ModeSpec = "socks5@1080".parse().unwrap();
/// assert_eq!(spec.mode, Mode::Socks5);
/// assert_eq!(spec.listen, Some((None, 1080)));
/// let spec: ModeSpec = "upstream:http://user:pw@proxy.localhost:3128@127.0.0.1:8081".parse().unwrap();
/// assert!(matches!(spec.mode, Mode::Upstream(_)));
/// assert_eq!(spec.listen, Some((Some("127.0.0.1".into()), 8081)));
/// assert!("upsteam:http://proxy:3128".parse::<ModeSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModeSpec {
    /// What the listener does.
    pub mode: Mode,
    /// Its own address (`HOST` is `None` for `@PORT`: the server's host), if any.
    pub listen: Option<ListenAt>,
}

impl ModeSpec {
    /// The listener for this spec, its protocols using `http`'s settings (timeouts,
    /// limits) for the HTTP they carry. A reverse proxy rewrites `Host` to its target's
    /// unless `keep_host`.
    pub fn listener(&self, http: &Http, keep_host: bool) -> Result<Listener> {
        let (protocols, route): (Vec<Arc<dyn Protocol>>, Route) = match &self.mode {
            Mode::Regular => (vec![Arc::new(http.clone())], Route::Direct),
            Mode::Upstream(proxy) => (vec![Arc::new(http.clone())], Route::proxy(proxy.clone())),
            Mode::Reverse(url) => {
                let reverse = Reverse::parse(url)?
                    .keep_host(keep_host)
                    .with_http(http.clone());
                (vec![Arc::new(reverse)], Route::Direct)
            }
            Mode::Transparent => (
                vec![Arc::new(Transparent::with_http(http.clone()))],
                Route::Direct,
            ),
            Mode::Socks5 => (
                vec![Arc::new(Socks5::with_http(http.clone()))],
                Route::Direct,
            ),
        };
        let mut listener = Listener::new(self.mode.to_string(), protocols).route(route);
        match &self.listen {
            Some((Some(host), port)) => listener = listener.at(host.clone(), *port),
            Some((None, port)) => listener = listener.port(*port),
            None => {}
        }
        Ok(listener)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Regular => f.write_str("regular"),
            Mode::Socks5 => f.write_str("socks5"),
            Mode::Reverse(url) => write!(f, "reverse:{url}"),
            Mode::Upstream(proxy) => write!(f, "upstream:{proxy}"),
            Mode::Transparent => f.write_str("transparent"),
        }
    }
}

impl fmt::Display for ModeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.mode.fmt(f)?;
        match &self.listen {
            None => Ok(()),
            Some((None, port)) => write!(f, "@{port}"),
            Some((Some(host), port)) if host.contains(':') => write!(f, "@[{host}]:{port}"),
            Some((Some(host), port)) => write!(f, "@{host}:{port}"),
        }
    }
}

impl FromStr for ModeSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidMode {
            spec: redact(spec),
            reason: reason.into(),
        };
        let (head, listen) = split_listen(spec).map_err(invalid)?;
        let (name, data) = match head.split_once(':') {
            Some((name, data)) => (name, Some(data)),
            None => (head, None),
        };
        let mode =
            match (name.to_ascii_lowercase().as_str(), data) {
                ("regular", None) => Mode::Regular,
                ("socks5", None) => Mode::Socks5,
                ("transparent", None) => Mode::Transparent,
                ("reverse", Some(url)) => {
                    Reverse::parse(url).map_err(|e| match e {
                        Error::InvalidReverseTarget { reason, .. } => invalid(&reason),
                        other => other,
                    })?;
                    Mode::Reverse(url.to_string())
                }
                ("upstream", Some(url)) => {
                    let proxy: UpstreamProxy = url.parse().map_err(|e| match e {
                        Error::InvalidProxy { reason, .. } => invalid(&reason),
                        other => other,
                    })?;
                    Mode::Upstream(proxy)
                }
                ("regular" | "socks5" | "transparent", Some(_)) => {
                    return Err(invalid("this mode takes no data after ':'"))
                }
                ("reverse" | "upstream", None) => {
                    return Err(invalid("this mode needs a URL: MODE:SCHEME://HOST:PORT"))
                }
                _ => return Err(invalid(
                    "unknown mode; use regular, socks5, reverse:URL, upstream:URL or transparent",
                )),
            };
        Ok(ModeSpec { mode, listen })
    }
}

/// Splits `spec` into the mode and its listen address (`@PORT`, `@HOST:PORT`).
///
/// A URL's credentials hold an `@` too: in `upstream:http://u:p@proxy:3128` the `@`
/// belongs to the URL. So for a spec with a URL, the last `@` starts a listen address
/// when the URL keeps an `@` of its own before it, when only a port follows it, or when
/// a `HOST:PORT` precedes it (a password of digits alone is then ambiguous: give the
/// listen address too, `upstream:http://u:1234@proxy:3128@8081`).
fn split_listen(spec: &str) -> std::result::Result<(&str, Option<ListenAt>), &'static str> {
    let Some((head, tail)) = spec.rsplit_once('@') else {
        return Ok((spec, None));
    };
    let has_url = spec.contains("://");
    let bare_port = !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit());
    let url_keeps_at = head
        .split_once("://")
        .is_some_and(|(_, authority)| authority.contains('@'));
    if has_url && !head.contains("://") {
        // `@` inside the scheme part: not a listen address.
        return Ok((spec, None));
    }
    // With one `@` in the URL part, what comes before it decides: `HOST:PORT` (the
    // proxy's address) makes the rest a listen address, anything else
    // (`upstream:http://user:pass@proxy:3128`) is the URL's credentials.
    let before_is_address = head.split_once("://").is_some_and(|(_, authority)| {
        authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
    });
    if has_url && !url_keeps_at && !bare_port && !before_is_address {
        return Ok((spec, None));
    }
    let listen = if bare_port {
        (
            None,
            tail.parse::<u16>()
                .map_err(|_| "the listen port must be 0 to 65535")?,
        )
    } else {
        let (host, port) = crate::http::target::parse_authority(tail, 0)
            .ok_or("the listen address must be PORT or HOST:PORT")?;
        if !tail.ends_with(&format!(":{port}")) {
            return Err("the listen address must be PORT or HOST:PORT");
        }
        (Some(host), port)
    };
    Ok((head, Some(listen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ModeSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn modes_and_listen_addresses() {
        assert_eq!(parse("regular").mode, Mode::Regular);
        assert_eq!(parse("regular").listen, None);
        assert_eq!(parse("socks5@1080").listen, Some((None, 1080)));
        assert_eq!(
            parse("transparent@0.0.0.0:8080").listen,
            Some((Some("0.0.0.0".into()), 8080))
        );
        assert_eq!(
            parse("socks5@[::1]:1080").listen,
            Some((Some("::1".into()), 1080))
        );
        assert_eq!(
            parse("reverse:https://example.localhost:8443@8080").mode,
            Mode::Reverse("https://example.localhost:8443".into())
        );
    }

    #[test]
    fn a_urls_credentials_are_not_a_listen_address() {
        let spec = parse("upstream:http://user:pass@proxy.localhost:3128");
        assert_eq!(spec.listen, None);
        let Mode::Upstream(proxy) = &spec.mode else {
            panic!("{spec:?}")
        };
        assert_eq!(proxy.credentials(), Some(("user", "pass")));
        assert_eq!(proxy.address().port, 3128);
        let spec = parse("upstream:socks5://u:p@127.0.0.1:1080@9000");
        assert_eq!(spec.listen, Some((None, 9000)));
        let spec = parse("upstream:http://proxy.localhost:3128@127.0.0.1:9000");
        assert_eq!(spec.listen, Some((Some("127.0.0.1".into()), 9000)));
        assert_eq!(
            spec.to_string(),
            "upstream:http://proxy.localhost:3128@127.0.0.1:9000"
        );
    }

    #[test]
    fn a_listen_host_with_a_colon_must_be_an_ipv6_address() {
        // Found by fuzzing (fuzz/regressions/mode_spec/): the host was taken as
        // `localhhost:8ost`, and the spec shown, with it in brackets, did not parse.
        for bad in [
            "reverse:http://127.0.0.1:3000@localhhost:8ost:8081",
            "socks5@a:b:1080",
        ] {
            assert!(bad.parse::<ModeSpec>().is_err(), "{bad}");
        }
        let spec = parse("socks5@::1:1080");
        assert_eq!(spec.listen, Some((Some("::1".into()), 1080)));
        assert_eq!(spec.to_string(), "socks5@[::1]:1080");
        assert_eq!(parse(&spec.to_string()), spec);
    }

    #[test]
    fn bad_specs_say_why_without_passwords() {
        for bad in [
            "",
            "proxy",
            "regular:x",
            "reverse",
            "reverse:ftp://h",
            "upstream:gopher://h:1",
            "socks5@",
            "socks5@99999",
            "socks5@host",
        ] {
            assert!(bad.parse::<ModeSpec>().is_err(), "{bad}");
        }
        let e = "upstream:ftp://u:secret@h:1"
            .parse::<ModeSpec>()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
