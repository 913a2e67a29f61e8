//! Where a request goes: authorities (`host:port`), absolute URIs, and the routing rule
//! that turns a request target plus its `Host` (or HTTP/2 `:authority`) into a
//! [`Target`], whatever the HTTP version.

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
    /// A client whose connection a firewall redirected to the proxy (transparent mode):
    /// every request goes to the connection's original destination, whatever its
    /// `Host` or URI names (they are passed on as the client sent them).
    Destination(Target),
}

/// Routes a request: `target` is the request target as sent (origin-form, absolute-form
/// or `*`), `host` the `Host` field or `:authority`. Returns where it goes and its
/// origin-form path, or why it cannot be routed (for a `400` page).
pub(crate) fn route(
    target: &str,
    host: Option<&str>,
    scope: &Scope,
) -> Result<(Target, String), String> {
    if let Some(absolute) = split_absolute(target) {
        let absolute = absolute.ok_or_else(|| "invalid host in the request URI".to_string());
        return match scope {
            Scope::Destination(origin) => absolute.map(|(_, path)| (origin.clone(), path)),
            _ => absolute,
        };
    }
    if !(target.starts_with('/') || target == "*") {
        return Err(format!("unsupported request target {target:?}"));
    }
    let (tls, default_port) = match scope {
        Scope::Proxy => (false, 80),
        Scope::Tunnel(origin) => (true, origin.port),
        // The `Host` names the origin, but the firewall already said where it is.
        Scope::Destination(origin) => return Ok((origin.clone(), target.to_string())),
    };
    let host = host.map(str::trim).filter(|h| !h.is_empty());
    let routed = match (host, scope) {
        (Some(h), _) => {
            let (host, port) = parse_authority(h, default_port).ok_or("invalid Host header")?;
            Target::new(host, port, tls)
        }
        (None, Scope::Tunnel(origin) | Scope::Destination(origin)) => origin.clone(),
        (None, Scope::Proxy) => return Err("no Host header and no absolute URI".into()),
    };
    let path = if target.is_empty() { "/" } else { target };
    Ok((routed, path.to_string()))
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
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    valid.then(|| (host.to_ascii_lowercase(), port))
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
    }

    #[test]
    fn routing_keeps_the_host_port_and_the_tunnel_scheme() {
        let (t, path) = route("/x", Some("a.localhost:8080"), &Scope::Proxy).unwrap();
        assert_eq!(
            (t, path.as_str()),
            (Target::new("a.localhost", 8080, false), "/x")
        );
        let tunnel = Scope::Tunnel(Target::new("b.localhost", 8443, true));
        let (t, _) = route("/", Some("c.localhost"), &tunnel).unwrap();
        assert_eq!(t, Target::new("c.localhost", 8443, true));
        let (t, _) = route("/", None, &tunnel).unwrap();
        assert_eq!(t, Target::new("b.localhost", 8443, true));
        let (t, path) = route("http://user@d.localhost:81?q", Some("e"), &Scope::Proxy).unwrap();
        assert_eq!(
            (t, path.as_str()),
            (Target::new("d.localhost", 81, false), "/?q")
        );
        assert!(route("/", None, &Scope::Proxy).is_err());
        assert!(route("example.com:443", Some("a"), &Scope::Proxy).is_err());
    }

    #[test]
    fn redirected_requests_go_to_the_original_destination_whatever_they_name() {
        let scope = Scope::Destination(Target::new("10.0.0.2", 8080, false));
        let (t, path) = route("/x?q", Some("example.com"), &scope).unwrap();
        assert_eq!(
            (t, path.as_str()),
            (Target::new("10.0.0.2", 8080, false), "/x?q")
        );
        let (t, _) = route("/", None, &scope).unwrap();
        assert_eq!(t, Target::new("10.0.0.2", 8080, false));
        let (t, path) = route("http://elsewhere.example:81/y", Some("a"), &scope).unwrap();
        assert_eq!(
            (t, path.as_str()),
            (Target::new("10.0.0.2", 8080, false), "/y")
        );
        assert!(route("http://a b/", None, &scope).is_err());
        assert!(route("example.com:443", None, &scope).is_err());
    }

    #[test]
    fn host_values_omit_default_ports_and_bracket_ipv6() {
        assert_eq!(host_value(&Target::new("a", 443, true)), "a");
        assert_eq!(host_value(&Target::new("a", 443, false)), "a:443");
        assert_eq!(host_value(&Target::new("::1", 80, false)), "[::1]");
    }
}
