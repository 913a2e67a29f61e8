//! Where a request goes: authorities (`host:port`), absolute URIs, and the routing rule
//! that turns a request target plus its `Host` (or HTTP/2 `:authority`) into a
//! [`Target`] (and, in front of one origin, the `Host` it carries there), whatever the
//! HTTP version.

use crate::core::Target;

/// Where requests that do not carry an absolute URI go.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// A client talking to the proxy as a proxy: absolute URIs, else `Host` headers
    /// (plain HTTP, port 80 by default).
    Proxy,
    /// Inside an intercepted tunnel: the `Host` header (or `:authority`) names the host,
    /// with the tunnel's scheme and port by default; without one, the tunnel's origin.
    Tunnel(Target),
    /// A reverse proxy in front of one origin: every request goes to `target`, whatever
    /// its request target or `Host` names. The `Host` field (or `:authority`) sent
    /// upstream is the target's authority, or the client's when `keep_host`.
    Reverse {
        /// The origin behind the proxy (`tls`: it is spoken to over TLS).
        target: Target,
        /// Whether the client's `Host` goes upstream as it was sent.
        keep_host: bool,
    },
    /// A connection with a destination of its own: redirected by a firewall
    /// (transparent mode), or plain HTTP inside a tunnel. Every request goes there,
    /// whatever its `Host` or URI names (they are passed on as the client sent them).
    Destination(Target),
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Where it goes.
    pub target: Target,
    /// Its origin-form path (or `*`).
    pub path: String,
    /// The `Host` field it carries upstream in place of whatever the client sent, when
    /// the scope says so (a reverse proxy); `None` leaves the request's fields as they
    /// are.
    pub host: Option<String>,
}

/// Routes a request: `target` is the request target as sent (origin-form, absolute-form
/// or `*`), `host` the `Host` field or `:authority`. Returns where it goes, its
/// origin-form path and the `Host` it carries upstream, or why it cannot be routed (for
/// a `400` page).
pub(crate) fn route(target: &str, host: Option<&str>, scope: &Scope) -> Result<Routed, String> {
    let absolute = split_absolute(target);
    if let Scope::Reverse {
        target: origin,
        keep_host,
    } = scope
    {
        return reverse(target, absolute, host, origin, *keep_host);
    }
    if let Some(absolute) = absolute {
        let (named, path) = absolute.ok_or("invalid host in the request URI")?;
        let target = match scope {
            Scope::Destination(origin) => origin.clone(),
            _ => named,
        };
        return Ok(Routed {
            target,
            path,
            host: None,
        });
    }
    if !(target.starts_with('/') || target == "*") {
        return Err(format!("unsupported request target {target:?}"));
    }
    let (tls, default_port) = match scope {
        Scope::Tunnel(origin) => (true, origin.port),
        // The `Host` names the origin, but the firewall already said where it is.
        Scope::Destination(origin) => {
            return Ok(Routed {
                target: origin.clone(),
                path: target.to_string(),
                host: None,
            })
        }
        _ => (false, 80),
    };
    let host = host.map(str::trim).filter(|h| !h.is_empty());
    let routed = match (host, scope) {
        (Some(h), _) => {
            let (host, port) = parse_authority(h, default_port).ok_or("invalid Host header")?;
            Target::new(host, port, tls)
        }
        (None, Scope::Tunnel(origin)) => origin.clone(),
        (None, _) => return Err("no Host header and no absolute URI".into()),
    };
    let path = if target.is_empty() { "/" } else { target };
    Ok(Routed {
        target: routed,
        path: path.to_string(),
        host: None,
    })
}

/// Routes a request to a reverse proxy's `origin`. A client of a reverse proxy takes it
/// for the origin, so an absolute URI names no other server: its path is used, and its
/// authority is the `Host` the client meant (RFC 9112 section 3.2.2).
fn reverse(
    target: &str,
    absolute: Option<Option<(Target, String)>>,
    host: Option<&str>,
    origin: &Target,
    keep_host: bool,
) -> Result<Routed, String> {
    let (path, sent) = match absolute {
        Some(Some((named, path))) => (path, Some(host_value(&named))),
        Some(None) => return Err("invalid host in the request URI".into()),
        None if target.starts_with('/') || target == "*" => {
            let sent = host.map(str::trim).filter(|h| !h.is_empty());
            (target.to_string(), sent.map(str::to_string))
        }
        None => return Err(format!("unsupported request target {target:?}")),
    };
    let host = if keep_host {
        sent
    } else {
        Some(host_value(origin))
    };
    Ok(Routed {
        target: origin.clone(),
        path,
        host,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits an absolute `http://` or `https://` URI into its target and its origin-form
/// path. `None` when `uri` is not absolute; `Some(None)` when its authority is invalid.
pub(crate) fn split_absolute(uri: &str) -> Option<Option<(Target, String)>> {
    for (scheme, tls, port) in [("http://", false, 80), ("https://", true, 443)] {
        let Some(rest) = strip_prefix_ignore_case(uri, scheme) else {
            continue;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        // Credentials in the URI are the origin's business, not part of the address.
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let path = match &rest[end..] {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        let target = parse_authority(authority, port).map(|(h, p)| Target::new(h, p, tls));
        return Some(target.map(|t| (t, path)));
    }
    None
}

/// Splits `host[:port]` or `[v6][:port]` into a host (lowercase, without brackets) and a
/// port. `None` for an empty or invalid host or port.
pub(crate) fn parse_authority(s: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        // Only an IPv6 address has a `:` (`1:7.0.0.1:80` is no host and port).
        && (!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok());
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// `http://host[:port]` or `https://…`: the origin `t` as a URL, for messages.
pub(crate) fn origin_url(t: &Target) -> String {
    let scheme = if t.tls { "https" } else { "http" };
    format!("{scheme}://{}", host_value(t))
}

/// `host[:port]` for a `Host` field or `:authority`, the port only when it is not the
/// scheme's default.
pub(crate) fn host_value(t: &Target) -> String {
    let default = if t.tls { 443 } else { 80 };
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    if t.port == default {
        host
    } else {
        format!("{host}:{}", t.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_validated() {
        assert_eq!(
            parse_authority("Example.COM", 80),
            Some(("example.com".into(), 80))
        );
        assert_eq!(parse_authority("[::1]", 443), Some(("::1".into(), 443)));
        assert_eq!(parse_authority("h:0", 80), None);
        assert_eq!(parse_authority("h:99999", 80), None);
        assert_eq!(parse_authority("a b:80", 80), None);
        assert_eq!(parse_authority("[zz]:80", 80), None);
        assert_eq!(parse_authority(":80", 80), None);
        // A `:` in a host without brackets: an IPv6 address, or no host at all (found
        // by fuzzing the HAR reader and mode specs).
        assert_eq!(parse_authority("1:7.0.0.1:18431", 80), None);
        assert_eq!(parse_authority("a:b:80", 80), None);
        assert_eq!(parse_authority("::1:8080", 80), Some(("::1".into(), 8080)));
    }

    /// Routes and keeps only where the request goes and its path.
    fn to(target: &str, host: Option<&str>, scope: &Scope) -> (Target, String) {
        let routed = route(target, host, scope).unwrap();
        assert_eq!(routed.host, None, "only a reverse proxy sets the Host");
        (routed.target, routed.path)
    }

    #[test]
    fn routing_keeps_the_host_port_and_the_tunnel_scheme() {
        let (t, path) = to("/x", Some("a.localhost:8080"), &Scope::Proxy);
        assert_eq!(
            (t, path.as_str()),
            (Target::new("a.localhost", 8080, false), "/x")
        );
        let tunnel = Scope::Tunnel(Target::new("b.localhost", 8443, true));
        let (t, _) = to("/", Some("c.localhost"), &tunnel);
        assert_eq!(t, Target::new("c.localhost", 8443, true));
        let (t, _) = to("/", None, &tunnel);
        assert_eq!(t, Target::new("b.localhost", 8443, true));
        let (t, path) = to("http://user@d.localhost:81?q", Some("e"), &Scope::Proxy);
        assert_eq!(
            (t, path.as_str()),
            (Target::new("d.localhost", 81, false), "/?q")
        );
        assert!(route("/", None, &Scope::Proxy).is_err());
        assert!(route("example.com:443", Some("a"), &Scope::Proxy).is_err());
    }

    #[test]
    fn redirected_requests_go_to_the_original_destination_whatever_they_name() {
        let origin = Target::new("10.0.0.2", 8080, false);
        let scope = Scope::Destination(origin.clone());
        let r = route("/x?q", Some("example.com"), &scope).unwrap();
        assert_eq!(
            (&r.target, r.path.as_str(), &r.host),
            (&origin, "/x?q", &None)
        );
        let r = route("/", None, &scope).unwrap();
        assert_eq!(r.target, origin);
        let r = route("http://elsewhere.example:81/y", Some("a"), &scope).unwrap();
        assert_eq!((&r.target, r.path.as_str()), (&origin, "/y"));
        assert!(route("http://a b/", None, &scope).is_err());
        assert!(route("example.com:443", None, &scope).is_err());
    }

    #[test]
    fn a_reverse_proxy_sends_everything_to_its_origin_with_its_host() {
        let origin = Target::new("origin.localhost", 8443, true);
        let rewrite = Scope::Reverse {
            target: origin.clone(),
            keep_host: false,
        };
        let keep = Scope::Reverse {
            target: origin.clone(),
            keep_host: true,
        };
        let want = |path: &str, host: Option<&str>| Routed {
            target: origin.clone(),
            path: path.into(),
            host: host.map(Into::into),
        };
        let host = Some("origin.localhost:8443");
        assert_eq!(route("/a", Some("x:1"), &rewrite), Ok(want("/a", host)));
        assert_eq!(route("/a", None, &rewrite), Ok(want("/a", host)));
        assert_eq!(route("/a", Some("X:1"), &keep), Ok(want("/a", Some("X:1"))));
        assert_eq!(route("/a", None, &keep), Ok(want("/a", None)));
        // An absolute URI names no other server; with keep_host, its authority is the
        // Host the client meant.
        let absolute = "http://other.localhost:81/b?q";
        assert_eq!(route(absolute, Some("x"), &rewrite), Ok(want("/b?q", host)));
        let other = Some("other.localhost:81");
        assert_eq!(route(absolute, Some("x"), &keep), Ok(want("/b?q", other)));
        assert!(route("http://bad host/", None, &rewrite).is_err());
        assert!(route("origin.localhost:8443", None, &rewrite).is_err());
        assert_eq!(route("*", host, &rewrite), Ok(want("*", host)));
    }

    #[test]
    fn host_values_omit_default_ports_and_bracket_ipv6() {
        assert_eq!(host_value(&Target::new("a", 443, true)), "a");
        assert_eq!(host_value(&Target::new("a", 443, false)), "a:443");
        assert_eq!(host_value(&Target::new("::1", 80, false)), "[::1]");
        assert_eq!(
            origin_url(&Target::new("::1", 8443, true)),
            "https://[::1]:8443"
        );
    }
}
