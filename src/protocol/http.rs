//! The built-in [`Http`] protocol: plain HTTP/1.x proxying and `CONNECT` with TLS
//! interception.
//!
//! - A plain request (`GET http://host:port/path` or `GET /path` with `Host: host:port`)
//!   goes to that host *and port* (80 when none is given).
//! - `CONNECT host:port` is answered `200 Connection established`. If the client then
//!   starts TLS, the proxy reads its ClientHello, connects the upstream with the same
//!   SNI and ALPN offer, and finishes the client's handshake with a leaf for the SNI name
//!   (or the `CONNECT` host) and the protocol the upstream chose. Anything else than TLS
//!   is relayed as it is, so a tunnel of any TCP protocol works.
//! - When the upstream cannot be reached, the client gets an HTTP error page saying why
//!   and what to try (inside TLS after `CONNECT`, where it can read it).

use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::LazyConfigAcceptor;

use super::{Connected, Context, Protocol, Resolution, Tunnel, DEFAULT_BUFFER_SIZE};
use super::{DEFAULT_BYTES_NEEDED, DEFAULT_TIMEOUT};
use crate::core::{Connection, Target};
use crate::error::{Error, Result};
use crate::io::{rewound, BoxIo};

/// The most header lines a request head may have to be recognised.
const MAX_HEADERS: usize = 128;
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// HTTP/1.0 and 1.1 proxying, with `CONNECT` and TLS interception.
///
/// ```
/// use std::time::Duration;
/// let http = mitm::Http::new().timeout(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
pub struct Http {
    bytes_needed: usize,
    buffer_size: usize,
    timeout: Duration,
    keep_alive: bool,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bytes_needed: DEFAULT_BYTES_NEEDED,
            buffer_size: DEFAULT_BUFFER_SIZE,
            timeout: DEFAULT_TIMEOUT,
            keep_alive: true,
        }
    }
}

impl Http {
    /// The protocol with its defaults (those of [`Protocol`]'s settings).
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest request head recognised. Default: 8192 bytes.
    pub fn bytes_needed(mut self, bytes: usize) -> Self {
        self.bytes_needed = bytes;
        self
    }

    /// Bytes read per chunk when relaying. Default: 8192.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Time allowed for the request head, the upstream connection and TLS handshakes,
    /// and the idle limit when keep-alive is off. Default: 15 seconds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether idle relayed connections are kept open. Default: `true`.
    pub fn keep_alive(mut self, keep_alive: bool) -> Self {
        self.keep_alive = keep_alive;
        self
    }
}

#[async_trait]
impl Protocol for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn bytes_needed(&self) -> usize {
        self.bytes_needed
    }

    fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    async fn resolve(&self, _conn: &Connection, data: &[u8]) -> Resolution {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(data) {
            Ok(httparse::Status::Complete(_)) => match target_of(&req) {
                Some(target) => Resolution::Accept(target),
                None => Resolution::NotMine,
            },
            Ok(httparse::Status::Partial) => Resolution::NeedMore,
            Err(_) => Resolution::NotMine,
        }
    }

    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> Result<Connected> {
        if target.tls {
            self.connect_tunnel(cx, conn, client, target, data).await
        } else {
            self.connect_plain(cx, conn, client, target, data).await
        }
    }
}

impl Http {
    /// A plain request: connect, send the first bytes on, relay the rest.
    async fn connect_plain(
        &self,
        cx: &Context,
        conn: &mut Connection,
        mut client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> Result<Connected> {
        let mut server = match cx.connect(conn, &target, self.timeout).await {
            Ok(tcp) => tcp,
            Err(e) => return fail(&mut client, e).await,
        };
        server.write_all(&data).await.map_err(Error::server_io)?;
        Ok(Connected::Tunnel(Tunnel::new(client, Box::new(server))))
    }

    /// `CONNECT`: answer 200, then look at what the client sends first.
    async fn connect_tunnel(
        &self,
        cx: &Context,
        conn: &mut Connection,
        mut client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> Result<Connected> {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .map_err(Error::client_io)?;
        // Bytes the client sent after the CONNECT head (an eager ClientHello) are
        // still to be read.
        let rest = data.slice(head_len(&data).unwrap_or(data.len())..);
        let mut client = rewound(client, rest);

        let mut first = BytesMut::with_capacity(DEFAULT_BUFFER_SIZE);
        let read = tokio::time::timeout(self.timeout, client.read_buf(&mut first)).await;
        match read {
            Ok(Ok(0)) => return Ok(Connected::Handled),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::client_io(e)),
            Err(_) => return Err(Error::ClientTimeout),
        }
        let is_tls = first[0] == TLS_HANDSHAKE;
        // The peeked bytes go back in front, so the TLS acceptor or the relay (and its
        // data hooks) read them as if nothing had happened.
        let client = rewound(client, first.freeze());
        if is_tls {
            self.intercept_tls(cx, conn, client, target).await
        } else {
            let server = match cx.connect(conn, &target, self.timeout).await {
                Ok(tcp) => tcp,
                Err(e) => return Err(e),
            };
            Ok(Connected::Tunnel(Tunnel::new(client, Box::new(server))))
        }
    }

    /// TLS after `CONNECT`: ClientHello first, then the upstream with the same SNI and
    /// ALPN offer, then the client's handshake with a leaf and the upstream's ALPN pick.
    async fn intercept_tls(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
    ) -> Result<Connected> {
        let hello = LazyConfigAcceptor::new(Acceptor::default(), client);
        let start = match tokio::time::timeout(self.timeout, hello).await {
            Ok(Ok(start)) => start,
            Ok(Err(source)) => {
                return Err(Error::ClientTls {
                    host: target.host,
                    source,
                })
            }
            Err(_) => return Err(Error::ClientTimeout),
        };
        let sni = start.client_hello().server_name().map(str::to_owned);
        let alpn: Vec<Vec<u8>> = start
            .client_hello()
            .alpn()
            .map(|list| list.map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        let name = sni.unwrap_or_else(|| target.host.clone());
        conn.tls = true;

        let upstream = cx
            .connect_tls(conn, &target, &name, &alpn, self.timeout)
            .await;
        let chosen = match &upstream {
            Ok(tls) => tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
            Err(_) => None,
        };
        let config = leaf_config(cx, &name, chosen.as_deref())?;
        let handshake = start.into_stream(config);
        let mut client = match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(source)) => return Err(Error::ClientTls { host: name, source }),
            Err(_) => return Err(Error::ClientTimeout),
        };
        match upstream {
            Ok(server) => Ok(Connected::Tunnel(Tunnel::new(
                Box::new(client),
                Box::new(server),
            ))),
            Err(e) => fail(&mut client, e).await,
        }
    }
}

/// The TLS server config for a leaf of `host`, announcing `alpn` (the upstream's pick).
/// The common case, HTTP/1.1 or no ALPN, is the CA's cached config.
fn leaf_config(
    cx: &Context,
    host: &str,
    alpn: Option<&[u8]>,
) -> Result<std::sync::Arc<rustls::ServerConfig>> {
    match alpn {
        None | Some(b"http/1.1") => cx.ca.server_config(host),
        Some(proto) => {
            // Same leaf, other ALPN: a shallow clone of the cached config.
            let mut config = (*cx.ca.server_config(host)?).clone();
            config.alpn_protocols = vec![proto.to_vec()];
            Ok(std::sync::Arc::new(config))
        }
    }
}

/// Answers the client with the error page for `e`, then hands `e` back to be logged.
async fn fail<W: AsyncWrite + Unpin>(client: &mut W, e: Error) -> Result<Connected> {
    let page = error_page(&e);
    // The client may be gone already; the original error is what matters.
    let _ = client.write_all(page.as_bytes()).await;
    let _ = client.shutdown().await;
    Err(e)
}

/// An HTTP/1.1 response naming what went wrong and what the user can do about it.
pub(crate) fn error_page(e: &Error) -> String {
    let (status, body) = match e {
        Error::Resolve { host, source } => (
            "502 Bad Gateway",
            format!(
                "mitm could not resolve the upstream host {host}: {source}.\n\
                 Check the host name, and that the proxy's machine can resolve it.\n"
            ),
        ),
        Error::Connect { target, source } => (
            "502 Bad Gateway",
            format!(
                "mitm could not connect to the upstream server {target}: {source}.\n\
                 Check that the server is running and reachable from the proxy.\n"
            ),
        ),
        Error::ConnectTimeout { target } => (
            "504 Gateway Timeout",
            format!(
                "mitm timed out connecting to the upstream server {target}.\n\
                 The server did not answer in time; try again, or raise the timeout.\n"
            ),
        ),
        Error::UpstreamTls { target, source } => (
            "502 Bad Gateway",
            format!(
                "mitm could not set up TLS with the upstream server {target}: {}.\n\
                 If the server's certificate comes from a private CA, give that CA to the \
                 proxy with --upstream-ca FILE; to skip verification (unsafe), use --insecure.\n",
                tls_cause(source)
            ),
        ),
        other => (
            "502 Bad Gateway",
            format!("mitm could not reach the upstream server: {other}.\n"),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The rustls error inside an I/O error when there is one (e.g. "invalid peer
/// certificate: UnknownIssuer"), otherwise the I/O error itself.
fn tls_cause(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// The length of the head at the start of `data` (through the blank line), if complete.
fn head_len(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Where a parsed request goes: the `CONNECT` authority, the absolute-form URI's
/// authority, or the `Host` header, each with its port.
fn target_of(req: &httparse::Request<'_, '_>) -> Option<Target> {
    let method = req.method?;
    let path = req.path?;
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = parse_authority(path, 443)?;
        return Some(Target::new(host, port, true));
    }
    if let Some(rest) = strip_prefix_ignore_case(path, "http://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        // Credentials in the URI are the origin's business, not part of the address.
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = parse_authority(authority, 80)?;
        return Some(Target::new(host, port, false));
    }
    if !(path.starts_with('/') || path == "*") {
        return None;
    }
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))?;
    let host = std::str::from_utf8(host.value).ok()?.trim();
    let (host, port) = parse_authority(host, 80)?;
    Some(Target::new(host, port, false))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `host[:port]` or `[v6][:port]` into a host (without brackets) and a port.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(data: &[u8]) -> Resolution {
        let conn = Connection::new(1, crate::Host::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(Http::new().resolve(&conn, data))
    }

    #[test]
    fn host_header_keeps_its_port() {
        let r = resolve(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
        assert_eq!(r, Resolution::Accept(Target::new("127.0.0.1", 8080, false)));
    }

    #[test]
    fn absolute_form_wins_over_host_header() {
        let r = resolve(b"GET http://user@a.localhost:81/x HTTP/1.1\r\nHost: b:9\r\n\r\n");
        assert_eq!(r, Resolution::Accept(Target::new("a.localhost", 81, false)));
    }

    #[test]
    fn connect_targets_are_tls() {
        let r = resolve(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n");
        assert_eq!(r, Resolution::Accept(Target::new("::1", 8443, true)));
    }

    #[test]
    fn partial_heads_need_more_and_garbage_is_not_mine() {
        assert_eq!(resolve(b"GET / HTTP/1.1\r\nHo"), Resolution::NeedMore);
        assert_eq!(resolve(b"\x16\x03\x01\x02\x00"), Resolution::NotMine);
        assert_eq!(resolve(b"GET / HTTP/1.1\r\n\r\n"), Resolution::NotMine);
    }

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
}
