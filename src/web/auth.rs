//! Who may use the web UI. Three checks, in this order, on every request:
//!
//! 1. **Host**: the `Host` header must name the UI's own address or a loopback name
//!    (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`). A page on `evil.example`
//!    whose name an attacker re-points at 127.0.0.1 (DNS rebinding) sends
//!    `Host: evil.example`, and is refused.
//! 2. **Origin**: requests that change state (any method but `GET`/`HEAD`) and
//!    WebSocket upgrades must come from the UI's own origin when they carry an
//!    `Origin` (browsers always send one on these); a cross-site one is refused.
//!    Scripts that send none are judged by the token alone.
//! 3. **Token**: the random token printed in the UI's URL, as `?token=` (then kept in
//!    an `HttpOnly; SameSite=Strict` cookie), the cookie, or `Authorization: Bearer`.

use std::net::{IpAddr, SocketAddr};

/// The random secret of one web UI, and the checks that use it.
#[derive(Clone)]
pub(crate) struct Guard {
    token: String,
    addr: SocketAddr,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: this may end up in a log.
        f.debug_struct("Guard")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A request as the checks see it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Asking<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// A WebSocket upgrade.
    pub upgrade: bool,
    /// The `Cookie` header(s), joined by `; `.
    pub cookie: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
}

/// What the checks decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Let it through.
    Allow,
    /// Let it through, and set this `Set-Cookie` (the token came in the query).
    AllowAndRemember(String),
    /// Refuse it, saying why.
    Refuse(&'static str),
}

/// A fresh random token: 128 bits, as 32 hex digits.
pub(crate) fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Guard {
    pub(crate) fn new(token: String, addr: SocketAddr) -> Self {
        Guard { token, addr }
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The cookie's name: one per port, since cookies do not tell ports apart and
    /// two UIs on one machine must not overwrite each other's.
    pub(crate) fn cookie_name(&self) -> String {
        format!("mitm_web_{}", self.addr.port())
    }

    /// Runs the three checks on `req`.
    pub(crate) fn check(&self, req: &Asking<'_>) -> Decision {
        let Some(host) = req.host.filter(|h| self.host_allowed(h)) else {
            return Decision::Refuse("this address is not the web UI's own (Host refused)");
        };
        let changes = !matches!(req.method, "GET" | "HEAD") || req.upgrade;
        if changes {
            if let Some(origin) = req.origin {
                if !same_origin(origin, host) {
                    return Decision::Refuse("cross-origin request refused");
                }
            }
        }
        let cookie = self.cookie_name();
        let from_cookie = req.cookie.into_iter().flat_map(|c| c.split(';')).any(|c| {
            c.trim()
                .split_once('=')
                .is_some_and(|(n, v)| n == cookie && self.is_token(v))
        });
        let from_header = req
            .authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| self.is_token(t.trim()));
        if from_cookie || from_header {
            return Decision::Allow;
        }
        let from_query = req
            .query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .any(|p| p.strip_prefix("token=").is_some_and(|t| self.is_token(t)));
        if from_query {
            return Decision::AllowAndRemember(format!(
                "{cookie}={}; HttpOnly; SameSite=Strict; Path=/",
                self.token
            ));
        }
        Decision::Refuse("the web UI needs its token: open the URL mitm printed")
    }

    /// Compares in constant time, so the token cannot be guessed byte by byte.
    fn is_token(&self, given: &str) -> bool {
        let (a, b) = (given.as_bytes(), self.token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Whether a `Host` header value names this UI: a loopback name or address, or the
    /// address it listens on (any IP address when it listens on all of them).
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
        {
            return true;
        }
        let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return false;
        };
        ip.is_loopback() || ip == self.addr.ip() || self.addr.ip().is_unspecified()
    }
}

/// The host part of a `Host` value: without its port, brackets kept for IPv6.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether `origin` is `http://HOST` for the request's own `host` (name and port).
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "00112233445566778899aabbccddeeff";

    fn guard() -> Guard {
        Guard::new(TOKEN.into(), "127.0.0.1:8081".parse().unwrap())
    }

    fn get(host: &str) -> Asking<'_> {
        Asking {
            method: "GET",
            host: Some(host),
            ..Asking::default()
        }
    }

    #[test]
    fn tokens_are_random_128_bit_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn no_token_is_refused_and_any_of_the_three_ways_lets_in() {
        let g = guard();
        assert!(matches!(
            g.check(&get("127.0.0.1:8081")),
            Decision::Refuse(_)
        ));
        let query = format!("a=1&token={TOKEN}");
        let asked = Asking {
            query: Some(&query),
            ..get("127.0.0.1:8081")
        };
        assert_eq!(
            g.check(&asked),
            Decision::AllowAndRemember(format!(
                "mitm_web_8081={TOKEN}; HttpOnly; SameSite=Strict; Path=/"
            ))
        );
        let cookie = format!("other=1; mitm_web_8081={TOKEN}");
        let asked = Asking {
            cookie: Some(&cookie),
            ..get("localhost:8081")
        };
        assert_eq!(g.check(&asked), Decision::Allow);
        let bearer = format!("Bearer {TOKEN}");
        let asked = Asking {
            authorization: Some(&bearer),
            ..get("[::1]:8081")
        };
        assert_eq!(g.check(&asked), Decision::Allow);
        // A wrong token, or the right one in another port's cookie, is refused.
        let wrong = Asking {
            query: Some("token=00112233445566778899aabbccddeefe"),
            cookie: Some("mitm_web_8082=00112233445566778899aabbccddeeff"),
            ..get("127.0.0.1:8081")
        };
        assert!(matches!(g.check(&wrong), Decision::Refuse(_)));
    }

    #[test]
    fn hosts_other_than_loopback_or_the_own_address_are_refused() {
        let g = guard();
        let bearer = format!("Bearer {TOKEN}");
        let ask = |host| Asking {
            host: Some(host),
            authorization: Some(&bearer),
            method: "GET",
            ..Asking::default()
        };
        for good in [
            "127.0.0.1:8081",
            "localhost",
            "ui.localhost:8081",
            "[::1]:8081",
            "127.1.2.3",
        ] {
            assert_eq!(g.check(&ask(good)), Decision::Allow, "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:8081",
            "10.0.0.1:8081",
            "localhost.evil",
            "",
        ] {
            assert!(matches!(g.check(&ask(bad)), Decision::Refuse(_)), "{bad}");
        }
        let no_host = Asking {
            host: None,
            ..ask("")
        };
        assert!(matches!(g.check(&no_host), Decision::Refuse(_)));
        // Listening on all addresses, any IP address is the UI's own; names are not.
        let all = Guard::new(TOKEN.into(), "0.0.0.0:8081".parse().unwrap());
        assert_eq!(all.check(&ask("192.0.2.7:8081")), Decision::Allow);
        assert!(matches!(
            all.check(&ask("evil.example:8081")),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn cross_origin_changes_and_sockets_are_refused() {
        let g = guard();
        let bearer = format!("Bearer {TOKEN}");
        let ask = |method, origin, upgrade| Asking {
            method,
            host: Some("127.0.0.1:8081"),
            origin,
            upgrade,
            authorization: Some(&bearer),
            ..Asking::default()
        };
        let own = Some("http://127.0.0.1:8081");
        let evil = Some("http://evil.example");
        assert_eq!(g.check(&ask("POST", own, false)), Decision::Allow);
        assert_eq!(g.check(&ask("POST", None, false)), Decision::Allow);
        assert_eq!(g.check(&ask("GET", own, true)), Decision::Allow);
        // A plain GET may carry any Origin: it changes nothing.
        assert_eq!(g.check(&ask("GET", evil, false)), Decision::Allow);
        for (method, origin, upgrade) in [
            ("POST", evil, false),
            ("DELETE", Some("null"), false),
            ("POST", Some("http://127.0.0.1:9999"), false),
            ("POST", Some("https://127.0.0.1:8081"), false),
            ("GET", evil, true),
        ] {
            assert!(
                matches!(g.check(&ask(method, origin, upgrade)), Decision::Refuse(_)),
                "{method} {origin:?} {upgrade}"
            );
        }
    }
}
