//! The built-in [`Reverse`] protocol: a reverse proxy in front of one origin, as
//! mitmproxy's `--mode reverse:URL`. Clients take the listener for the origin itself:
//! they connect to it as to a web server, over TLS or not, and every request goes to
//! the reverse target, whatever its `Host` names.
//!
//! This file is the protocol's face, as `http.rs` is `Http`'s: its settings, how it
//! tells TLS from plain clients, and the TLS handshake with a leaf for the name the
//! client asked for. Routing (the target, the `Host` rewrite) is the scope's
//! (`crate::http::target::Scope::Reverse`), so HTTP/1 and HTTP/2 clients get the same;
//! the exchange serves the requests, reaching the target through the upstream layer
//! like any other.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Connected, Context, Http, Protocol, Resolution};
use crate::core::{Connection, Host, Target};
use crate::engine::exchange::serve_h1::{self, Served, Start};
use crate::engine::exchange::serve_h2;
use crate::error::{Error, Report, Result};
use crate::http::settings::Settings;
use crate::http::target::{origin_url, parse_authority, Scope};
use crate::net::io::{rewound, BoxIo};
use crate::tls::ca::CertificateAuthority;
use crate::upstream::{Link, Want, H2, HTTP11};
use crate::wire::client_hello::{self, Peek};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A reverse proxy in front of one origin: the listener poses as the origin.
///
/// Clients speak to it as to a web server: plain HTTP/1 (or HTTP/2 with prior
/// knowledge), or TLS, where the proxy presents a leaf from its CA for the name the
/// client asked for (its SNI, else the target's host) and offers `h2` and `http/1.1`.
/// Every request goes to the target, over TLS when its scheme is `https` (whatever the
/// client spoke), through the middlewares' hooks as for any proxied request. The `Host`
/// field (`:authority` for HTTP/2) is rewritten to the target's unless
/// [`keep_host`](Self::keep_host). Proxy credentials are not asked for (the client
/// does not know it talks to a proxy), and `CONNECT` is refused with `405`.
///
/// ```
/// use std::sync::Arc;
/// use mitm::{Http, Mitm, Reverse};
///
/// let reverse: Reverse = "https://example.com:8443".parse().unwrap();
/// assert_eq!(reverse.target().port, 8443);
/// let reverse = reverse.keep_host(true).with_http(Http::new().max_head(32 * 1024));
/// let builder = Mitm::builder().protocols(vec![Arc::new(reverse)]);
/// # drop(builder);
/// ```
#[derive(Debug, Clone)]
pub struct Reverse {
    target: Target,
    keep_host: bool,
    http: Http,
}

impl Reverse {
    /// A reverse proxy for `target`, spoken to over TLS when `target.tls`, with
    /// [`Http`]'s default settings.
    ///
    /// ```
    /// let reverse = mitm::Reverse::new(mitm::Target::new("127.0.0.1", 8080, false));
    /// assert_eq!(reverse.url(), "http://127.0.0.1:8080");
    /// ```
    pub fn new(target: Target) -> Self {
        Reverse {
            target,
            keep_host: false,
            http: Http::new(),
        }
    }

    /// A reverse proxy for the origin URL `url`: `http://HOST[:PORT]` or
    /// `https://HOST[:PORT]` (ports 80 and 443 by default), with no path, query or
    /// credentials. The same as `url.parse()`.
    ///
    /// ```
    /// let reverse = mitm::Reverse::parse("https://[::1]").unwrap();
    /// assert_eq!(reverse.target(), &mitm::Target::new("::1", 443, true));
    /// assert!(mitm::Reverse::parse("ftp://example.com").is_err());
    /// assert!(mitm::Reverse::parse("https://example.com/app").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReverseTarget {
            url: crate::upstream::route::redact(url),
            reason: reason.into(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected http://HOST[:PORT] or https://HOST[:PORT]"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(invalid("a reverse target has no path, query or fragment"));
        }
        if rest.contains('@') {
            return Err(invalid("a reverse target has no credentials"));
        }
        let (host, port) = parse_authority(rest, if tls { 443 } else { 80 })
            .ok_or_else(|| invalid("invalid host or port"))?;
        Ok(Reverse::new(Target::new(host, port, tls)))
    }

    /// Whether the client's `Host` field (or `:authority`) goes to the target as the
    /// client sent it, rather than the target's own authority. Default: `false`
    /// (mitmproxy's `keep_host_header`).
    ///
    /// ```
    /// let reverse = mitm::Reverse::parse("http://127.0.0.1:8080").unwrap().keep_host(true);
    /// ```
    pub fn keep_host(mut self, keep: bool) -> Self {
        self.keep_host = keep;
        self
    }

    /// The HTTP settings client connections obey (limits, timeouts, keep-alive, …):
    /// those of `http`. Default: [`Http::new`]'s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let http = mitm::Http::new().idle_timeout(Duration::from_secs(30));
    /// let reverse = mitm::Reverse::parse("http://127.0.0.1:8080").unwrap().with_http(http);
    /// ```
    pub fn with_http(mut self, http: Http) -> Self {
        self.http = http;
        self
    }

    /// The origin every request goes to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The origin as a URL, e.g. `https://example.com:8443` (the port only when it is
    /// not the scheme's default).
    pub fn url(&self) -> String {
        origin_url(&self.target)
    }

    fn settings(&self) -> &Settings {
        self.http.settings()
    }

    fn scope(&self) -> Scope {
        Scope::Reverse {
            target: self.target.clone(),
            keep_host: self.keep_host,
        }
    }

    /// Serves a TLS client: the handshake with a leaf for its SNI name (the target's
    /// host without one), announcing `h2` or `http/1.1` as it offers them, then its
    /// requests.
    async fn serve_tls(&self, cx: &Context, conn: &mut Connection, client: BoxIo) -> Result<()> {
        let settings = self.settings();
        let start = crate::engine::tunnel::accept_hello(
            client,
            &self.target.host,
            settings.handshake_timeout,
        )
        .await?;
        let hello = start.client_hello();
        let name = hello
            .server_name()
            .map_or_else(|| self.target.host.clone(), str::to_string);
        let offered: Vec<&[u8]> = hello.alpn().map(Iterator::collect).unwrap_or_default();
        let config = cx.with_key_log(leaf_config(&cx.ca, &name, &offered)?);
        let offers: Vec<String> = offered
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let handshake = start.into_stream(config);
        let client = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(source)) => return Err(Error::ClientTls { host: name, source }),
            Err(_) => return Err(Error::ClientTimeout),
        };
        conn.tls = true;
        conn.client_socket.tls_setup = Some(std::time::SystemTime::now());
        conn.tls_facts = crate::core::TlsFacts::of_server(client.get_ref().1, offers);
        let h2 = client.get_ref().1.alpn_protocol() == Some(H2);
        let client: BoxIo = Box::new(client);
        if h2 {
            self.serve_h2(cx, conn, client).await
        } else {
            self.serve_h1(cx, conn, client, Bytes::new()).await
        }
    }

    /// Serves an HTTP/1 client, `first` holding bytes read from it already.
    async fn serve_h1(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        first: Bytes,
    ) -> Result<()> {
        let scope = self.scope();
        let served = serve_h1::serve(
            cx,
            self.settings(),
            conn,
            client,
            first,
            scope,
            Start::Nothing,
        )
        .await?;
        // In front of an origin the engine refuses `CONNECT` itself.
        debug_assert!(matches!(served, Served::Closed));
        Ok(())
    }

    /// Serves an HTTP/2 client. The target is reached first (as a tunnel's origin is),
    /// so that the server hooks see it; if it cannot be, each stream gets the error
    /// page from its exchange.
    async fn serve_h2(&self, cx: &Context, conn: &mut Connection, client: BoxIo) -> Result<()> {
        let settings = self.settings();
        let spare = self.reach(cx, conn).await;
        let scope = self.scope();
        serve_h2::serve(cx, settings, conn, client, scope, spare).await
    }

    /// A link to the target for the first stream of an HTTP/2 client, announced to
    /// the hooks; `None` when the target is the proxy itself (the streams are refused)
    /// or cannot be reached (the streams say why).
    async fn reach(&self, cx: &Context, conn: &mut Connection) -> Option<Link> {
        if cx.is_self(&self.target) {
            return None;
        }
        let route = cx.route_for(conn, &self.target).await;
        let want = Want {
            h2: true,
            fresh: false,
        };
        let timeout = self.settings().connect_timeout;
        match cx.upstreams.link(&route, &self.target, want, timeout).await {
            Ok(link) => {
                conn.server = Host::new(link.addr());
                conn.server_facts = Some(link.facts().clone());
                cx.announce_server(conn).await;
                Some(link)
            }
            Err(e) => {
                tracing::debug!(error = %Report(&e), "reverse target failed; HTTP/2 streams will say so");
                None
            }
        }
    }
}

impl FromStr for Reverse {
    type Err = Error;

    /// As [`Reverse::parse`].
    fn from_str(url: &str) -> Result<Self> {
        Reverse::parse(url)
    }
}

impl fmt::Display for Reverse {
    /// `reverse:URL`, as mitmproxy names the mode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reverse:{}", self.url())
    }
}

#[async_trait]
impl Protocol for Reverse {
    fn name(&self) -> &'static str {
        "reverse"
    }

    fn bytes_needed(&self) -> usize {
        Protocol::bytes_needed(&self.http)
    }

    fn buffer_size(&self) -> usize {
        Protocol::buffer_size(&self.http)
    }

    fn timeout(&self) -> Duration {
        Protocol::timeout(&self.http)
    }

    fn keep_alive(&self) -> bool {
        Protocol::keep_alive(&self.http)
    }

    /// Takes every client, to the target: TLS when its first bytes are a ClientHello
    /// (more is asked for until it is whole), HTTP/2 when they are the prior-knowledge
    /// preface, HTTP/1 otherwise (the engine answers what is not HTTP with `400`).
    async fn resolve(&self, _conn: &Connection, data: &[u8]) -> Resolution {
        let waiting = match data.first() {
            None => true,
            Some(&TLS_HANDSHAKE) => matches!(client_hello::peek(data), Peek::NeedMore),
            Some(_) => data.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(data),
        };
        if waiting {
            Resolution::NeedMore
        } else {
            Resolution::Accept(self.target.clone())
        }
    }

    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        _target: Target,
        data: Bytes,
    ) -> Result<Connected> {
        if data.first() == Some(&TLS_HANDSHAKE)
            && matches!(client_hello::peek(&data), Peek::Hello(_))
        {
            // The ClientHello goes back in front, for the TLS acceptor to read.
            self.serve_tls(cx, conn, rewound(client, data)).await?;
        } else if data.starts_with(H2_PREFACE) {
            self.serve_h2(cx, conn, rewound(client, data)).await?;
        } else {
            self.serve_h1(cx, conn, client, data).await?;
        }
        Ok(Connected::Handled)
    }
}

/// The TLS server config for a leaf of `host`, announcing what the client `offered`
/// that the proxy serves: `h2` first, else `http/1.1`. A client offering neither gets
/// no ALPN (and HTTP/1.1) rather than a failed handshake. The common case is the CA's
/// cached config.
fn leaf_config(
    ca: &CertificateAuthority,
    host: &str,
    offered: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>> {
    let cached = ca.server_config(host)?;
    let alpn: &[u8] = if offered.contains(&H2) {
        H2
    } else if offered.is_empty() || offered.contains(&HTTP11) {
        return Ok(cached);
    } else {
        b""
    };
    // Same leaf, other ALPN: a shallow clone of the cached config.
    let mut config = (*cached).clone();
    config.alpn_protocols = if alpn.is_empty() {
        Vec::new()
    } else {
        vec![alpn.to_vec()]
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(data: &[u8]) -> Resolution {
        let conn = Connection::new(1, crate::Host::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let reverse = Reverse::parse("https://origin.localhost:8443").unwrap();
        rt.block_on(reverse.resolve(&conn, data))
    }

    #[test]
    fn parses_origin_urls_with_default_ports() {
        let r = Reverse::parse("HTTP://Origin.localhost").unwrap();
        assert_eq!(r.target(), &Target::new("origin.localhost", 80, false));
        assert_eq!(r.url(), "http://origin.localhost");
        let r: Reverse = "https://127.0.0.1:8443/".parse().unwrap();
        assert_eq!(r.target(), &Target::new("127.0.0.1", 8443, true));
        assert_eq!(r.to_string(), "reverse:https://127.0.0.1:8443");
    }

    #[test]
    fn rejects_what_is_not_an_origin_url() {
        for bad in [
            "example.com:443",
            "ftp://example.com",
            "socks5://example.com:1080",
            "https://",
            "https://example.com:0",
            "https://example.com:99999",
            "https://example.com/app",
            "https://example.com?q",
            "https://example.com#f",
            "https://a b",
        ] {
            let e = Reverse::parse(bad).unwrap_err();
            assert!(
                matches!(e, Error::InvalidReverseTarget { .. }),
                "{bad}: {e}"
            );
        }
        let e = Reverse::parse("https://user:secret@example.com").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn takes_tls_h2_and_http1_clients_to_the_target() {
        let target = Resolution::Accept(Target::new("origin.localhost", 8443, true));
        assert_eq!(resolve(b"GET / HTTP/1.1\r\n"), target);
        assert_eq!(resolve(b"G"), target);
        assert_eq!(resolve(b"PRI * HTTP/2.0\r\n"), Resolution::NeedMore);
        assert_eq!(resolve(H2_PREFACE), target);
        // The start of a TLS record: more is needed to know it is a ClientHello.
        assert_eq!(resolve(b"\x16\x03\x01\x02\x00\x01"), Resolution::NeedMore);
        // Not a ClientHello after all: served as HTTP/1 (which answers 400).
        assert_eq!(resolve(b"\x16\x09\x09\x09\x09\x09"), target);
    }

    #[test]
    fn alpn_prefers_h2_and_never_fails_a_client_for_its_list() {
        let ca = crate::CertificateAuthority::generate().unwrap();
        let alpn = |offered: &[&[u8]]| {
            let config = leaf_config(&ca, "origin.localhost", offered).unwrap();
            config.alpn_protocols.clone()
        };
        assert_eq!(alpn(&[b"http/1.1", b"h2"]), vec![b"h2".to_vec()]);
        assert_eq!(alpn(&[b"http/1.1"]), vec![b"http/1.1".to_vec()]);
        assert_eq!(alpn(&[]), vec![b"http/1.1".to_vec()]);
        assert_eq!(alpn(&[b"spdy/3"]), Vec::<Vec<u8>>::new());
    }
}
