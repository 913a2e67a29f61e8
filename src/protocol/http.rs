//! The built-in [`Http`] protocol: an HTTP/1.x proxy with `CONNECT` and TLS
//! interception.
//!
//! - Every request on a client connection is routed on its own, by its absolute URI or
//!   its `Host` header *with the port* (the engine is in `src/h1/`).
//! - `CONNECT host:port` is answered `200 Connection established`. If the client then
//!   starts TLS, the proxy reads its ClientHello, connects the upstream with the same
//!   SNI, finishes the client's handshake with a leaf for the SNI name (or the
//!   `CONNECT` host) and serves HTTP/1 inside. A client that offers only other ALPN
//!   protocols (e.g. only `h2`), or does not speak TLS at all, gets its bytes relayed
//!   as they are, so a tunnel of any TCP protocol works.
//! - When the upstream cannot be reached, the client gets an HTTP error page saying why
//!   and what to try (inside TLS after `CONNECT`, where it can read it).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::LazyConfigAcceptor;

use super::{Connected, Context, Protocol, Resolution, Tunnel, DEFAULT_BUFFER_SIZE};
use super::{DEFAULT_BYTES_NEEDED, DEFAULT_TIMEOUT};
use crate::client_hello;
use crate::core::{Connection, Target};
use crate::error::{Error, Result};
use crate::h1::{self, Scope, Settings};
use crate::io::{rewound, BoxIo};
use crate::message::Response;
use crate::middleware::Interception;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// The default of [`Http::magic_host`]: the host, served by the proxy itself, from which
/// a device behind the proxy downloads the CA certificate (as mitmproxy's).
pub const DEFAULT_MAGIC_HOST: &str = "mitm.it";
/// The default of [`Http::max_head`]: 64 KiB.
pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;
pub use crate::h1::parse::DEFAULT_MAX_HEADERS;

/// HTTP/1.0 and 1.1 proxying, with `CONNECT` and TLS interception.
///
/// ```
/// use std::time::Duration;
/// let http = mitm::Http::new()
///     .timeout(Duration::from_secs(30))
///     .max_head(32 * 1024);
/// ```
#[derive(Debug, Clone)]
pub struct Http {
    bytes_needed: usize,
    buffer_size: usize,
    settings: Settings,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bytes_needed: DEFAULT_BYTES_NEEDED,
            buffer_size: DEFAULT_BUFFER_SIZE,
            settings: Settings {
                timeout: DEFAULT_TIMEOUT,
                connect_timeout: DEFAULT_TIMEOUT,
                handshake_timeout: DEFAULT_TIMEOUT,
                response_timeout: Duration::from_secs(120),
                idle_timeout: Duration::from_secs(120),
                keep_alive: true,
                max_head: DEFAULT_MAX_HEAD,
                max_headers: DEFAULT_MAX_HEADERS,
                zero_copy: true,
                magic_host: Some(DEFAULT_MAGIC_HOST.to_string()),
            },
        }
    }
}

impl Http {
    /// The protocol with its defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many first bytes may be read before the protocol decides whether a client
    /// speaks HTTP; a head still incomplete by then is taken as HTTP and judged against
    /// [`max_head`](Self::max_head). Default: 8192.
    pub fn bytes_needed(mut self, bytes: usize) -> Self {
        self.bytes_needed = bytes;
        self
    }

    /// Bytes read per chunk when relaying tunnels. Default: 8192.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Time allowed for a request head once it has begun (slow clients are cut off),
    /// and also, unless set on their own afterwards, the
    /// [`connect_timeout`](Self::connect_timeout) and the
    /// [`handshake_timeout`](Self::handshake_timeout). Default: 15 seconds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self.settings.connect_timeout = timeout;
        self.settings.handshake_timeout = timeout;
        self
    }

    /// Time allowed for connecting to an upstream server, its TLS handshake included
    /// (`504` after). Default: 15 seconds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Time a client has for its TLS handshake with the proxy (its ClientHello
    /// included) once a tunnel is open. Default: 15 seconds.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handshake_timeout = timeout;
        self
    }

    /// Time an origin has to start its response, and to send each part of its body,
    /// before the client gets a `504`. Default: 120 seconds.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.settings.response_timeout = timeout;
        self
    }

    /// Time a keep-alive client connection may stay idle between requests.
    /// Default: 120 seconds.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// Whether client connections are kept open between requests. When false, each
    /// response carries `Connection: close`. Default: `true`.
    pub fn keep_alive(mut self, keep_alive: bool) -> Self {
        self.settings.keep_alive = keep_alive;
        self
    }

    /// The host the proxy answers itself, with a page to download its CA certificate
    /// (`http://mitm.it/` from a device set to use the proxy); `None` turns it off.
    /// Default: [`DEFAULT_MAGIC_HOST`].
    pub fn magic_host(mut self, host: Option<String>) -> Self {
        self.settings.magic_host = host.map(|h| h.to_ascii_lowercase());
        self
    }

    /// Whether large plain-HTTP bodies and tunnels let through untouched, when no
    /// middleware reads their bytes, are moved from socket to socket with `splice(2)`
    /// (Linux only; elsewhere this does nothing). Turning
    /// it off copies them through the proxy's buffers instead, for comparison or
    /// debugging. Default: `true`.
    pub fn zero_copy(mut self, on: bool) -> Self {
        self.settings.zero_copy = on;
        self
    }

    /// The largest request head accepted; larger ones get `431`. Default:
    /// [`DEFAULT_MAX_HEAD`] (64 KiB).
    pub fn max_head(mut self, bytes: usize) -> Self {
        self.settings.max_head = bytes;
        self
    }

    /// The most header fields a request head may have; more get `431`. Responses
    /// may always have at least [`DEFAULT_MAX_HEADERS`]. Default: [`DEFAULT_MAX_HEADERS`]
    /// (128).
    ///
    /// ```
    /// let http = mitm::Http::new().max_headers(256);
    /// ```
    pub fn max_headers(mut self, fields: usize) -> Self {
        self.settings.max_headers = fields.max(1);
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
        self.settings.timeout
    }

    fn keep_alive(&self) -> bool {
        self.settings.keep_alive
    }

    async fn resolve(&self, _conn: &Connection, data: &[u8]) -> Resolution {
        let mut headers = [httparse::EMPTY_HEADER; h1::parse::DEFAULT_MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(data);
        if let Ok(httparse::Status::Complete(_)) = parsed {
            return Resolution::Accept(target_of(&req).unwrap_or_else(unknown_target));
        }
        // A valid request line makes it HTTP even if the rest is broken or too long:
        // the engine then answers 400 or 431 instead of the connection just closing.
        let http = request_line_ok(data);
        match parsed {
            Ok(httparse::Status::Partial) if data.len() < self.bytes_needed => Resolution::NeedMore,
            _ if http => Resolution::Accept(unknown_target()),
            _ => Resolution::NotMine,
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
        h1::serve(cx, conn, &self.settings, client, data, Scope::Proxy, None).await?;
        Ok(Connected::Handled)
    }
}

/// The placeholder target of a request whose head is not complete yet.
fn unknown_target() -> Target {
    Target::new("", 0, false)
}

/// Whether `data` starts with a complete, plausible HTTP/1 request line.
fn request_line_ok(data: &[u8]) -> bool {
    let Some(end) = data.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|b| b.is_ascii_alphabetic() || *b == b'-')
        && !target.is_empty()
        && version.starts_with(b"HTTP/1.")
}

/// After `CONNECT`: answer 200, then look at what the client sends. A TLS ClientHello
/// is intercepted unless a middleware lets it pass; anything else is relayed as is.
pub(crate) async fn tunnel(
    cx: &Context,
    conn: &mut Connection,
    settings: &Settings,
    mut client: BoxIo,
    rest: Bytes,
    target: Target,
) -> Result<()> {
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .map_err(Error::client_io)?;
    // Bytes the client sent after the CONNECT head (an eager ClientHello) are still to
    // be read.
    let mut client = rewound(client, rest);
    let (first, hello) = read_hello(&mut client, settings.handshake_timeout).await?;
    if first.is_empty() {
        return Ok(());
    }
    // The bytes read go back in front, so the TLS acceptor or the relay (and its data
    // hooks) read them as if nothing had happened: a connection let through reaches
    // the origin byte for byte.
    let client = rewound(client, first);
    let hello = match hello {
        Some(hello) => hello,
        None => return pass_through(cx, conn, settings, client, &target).await,
    };
    let is_magic = settings.magic_host.as_deref() == Some(target.host.as_str());
    let server_name = hello.server_name.as_deref();
    if !is_magic && cx.chain.should_intercept(conn, server_name).await == Interception::PassThrough
    {
        tracing::debug!(target = %target, sni = ?server_name, "passing TLS through untouched");
        return pass_through(cx, conn, settings, client, &target).await;
    }
    intercept_tls(cx, conn, settings, client, target, hello, is_magic).await
}

/// Relays a tunnel without looking inside: to the `CONNECT` target, bytes as they are.
async fn pass_through(
    cx: &Context,
    conn: &mut Connection,
    settings: &Settings,
    client: BoxIo,
    target: &Target,
) -> Result<()> {
    let server = cx.connect(conn, target, settings.connect_timeout).await?;
    cx.announce_server(conn).await;
    let tunnel = Tunnel::new(client, Box::new(server));
    let opts = crate::relay::RelayOptions {
        buffer_size: DEFAULT_BUFFER_SIZE,
        idle_timeout: None,
        zero_copy: settings.zero_copy,
    };
    cx.relay_with(conn, tunnel, opts).await
}

/// Reads the first bytes of a tunnel: the whole ClientHello when they start one
/// (`Some`), or just what the first read gave (`None`: not TLS). Empty bytes mean the
/// client left (before or in the middle of its ClientHello).
async fn read_hello(
    client: &mut BoxIo,
    timeout: Duration,
) -> Result<(Bytes, Option<client_hello::ClientHello>)> {
    let mut buf = BytesMut::with_capacity(DEFAULT_BUFFER_SIZE);
    if read_more(client, &mut buf, timeout).await? == 0 || buf[0] != TLS_HANDSHAKE {
        return Ok((buf.freeze(), None));
    }
    loop {
        match client_hello::peek(&buf) {
            client_hello::Peek::Hello(hello) => return Ok((buf.freeze(), Some(hello))),
            client_hello::Peek::Invalid => return Ok((buf.freeze(), None)),
            client_hello::Peek::NeedMore => {}
        }
        if read_more(client, &mut buf, timeout).await? == 0 {
            // Half a ClientHello and then the end: nothing to intercept or pass on.
            return Ok((Bytes::new(), None));
        }
    }
}

/// One read from the client, within `timeout`.
async fn read_more(client: &mut BoxIo, buf: &mut BytesMut, timeout: Duration) -> Result<usize> {
    match tokio::time::timeout(timeout, client.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(Error::client_io(e)),
        Err(_) => Err(Error::ClientTimeout),
    }
}

/// TLS after `CONNECT`: the upstream with the same SNI first, then the client's
/// handshake with a leaf for that name and the protocol the upstream chose, then
/// HTTP/1 inside (or raw bytes for other ALPN protocols). The magic host has no
/// upstream: the engine answers it.
async fn intercept_tls(
    cx: &Context,
    conn: &mut Connection,
    settings: &Settings,
    client: BoxIo,
    target: Target,
    hello: client_hello::ClientHello,
    is_magic: bool,
) -> Result<()> {
    let accept = LazyConfigAcceptor::new(Acceptor::default(), client);
    let start = match tokio::time::timeout(settings.handshake_timeout, accept).await {
        Ok(Ok(start)) => start,
        Ok(Err(source)) => {
            return Err(Error::ClientTls {
                host: target.host,
                source,
            })
        }
        Err(_) => return Err(Error::ClientTimeout),
    };
    let name = hello.server_name.unwrap_or_else(|| target.host.clone());
    conn.tls = true;
    // The client speaks HTTP/2 with the proxy when it offers it, HTTP/1.1 otherwise;
    // the origin is offered both and picks, each side speaking what it can. A client
    // offering neither gets its bytes relayed with the ALPN the origin picks from the
    // client's own list.
    let offered = hello.alpn;
    let client_h2 = offered.iter().any(|p| p == b"h2");
    let speaks_h1 = offered.is_empty() || offered.iter().any(|p| p == b"http/1.1");
    let alpn = if client_h2 || speaks_h1 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        offered
    };
    let origin = Target::new(name.clone(), target.port, true);
    conn.target = Some(origin.clone());

    let http = client_h2 || speaks_h1;
    let upstream = if is_magic {
        Ok(None)
    } else if let Some(pooled) = http.then(|| reuse(cx, conn, &origin)).flatten() {
        // A connection to this origin is already up: no second handshake per client.
        Ok(Some(pooled))
    } else {
        match cx
            .connect_tls(conn, &target, &name, &alpn, settings.connect_timeout)
            .await
        {
            Ok(tls) => {
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let addr = conn
                    .server
                    .addr
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                let io: BoxIo = Box::new(tls);
                Ok(Some((
                    Some(h1::pool::Upstream {
                        io,
                        addr,
                        target: origin.clone(),
                    }),
                    alpn,
                )))
            }
            Err(e) => Err(e),
        }
    };
    let upstream_alpn = match &upstream {
        Ok(Some((_, alpn))) => alpn.clone(),
        _ => None,
    };
    let for_client = if client_h2 {
        Some(b"h2".to_vec())
    } else if speaks_h1 {
        Some(b"http/1.1".to_vec())
    } else {
        upstream_alpn.clone()
    };
    let config = leaf_config(cx, &name, for_client.as_deref())?;
    let handshake = start.into_stream(config);
    let mut client = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(source)) => return Err(Error::ClientTls { host: name, source }),
        Err(_) => return Err(Error::ClientTimeout),
    };
    let upstream = match upstream {
        Ok(None) => None,
        Ok(Some((up, _))) => {
            cx.announce_server(conn).await;
            up
        }
        // An HTTP/2 client gets its error page per stream, from the engine.
        Err(e) if client_h2 => {
            tracing::debug!(error = %crate::error::Report(&e), "upstream failed; HTTP/2 streams will say so");
            None
        }
        Err(e) => return fail(&mut client, e).await,
    };
    if !http {
        let Some(server) = upstream else {
            return Ok(());
        };
        let tunnel = Tunnel::new(Box::new(client), server.io);
        return cx.relay(conn, tunnel, DEFAULT_BUFFER_SIZE, None).await;
    }
    let upstream_h2 = crate::http2::is_h2(upstream_alpn.as_deref());
    if client_h2 {
        let preconnected = upstream.map(|upstream| crate::http2::Preconnected {
            upstream,
            h2: crate::http2::is_h2(upstream_alpn.as_deref()),
        });
        return crate::http2::serve(cx, conn, settings, Box::new(client), origin, preconnected)
            .await;
    }
    // An HTTP/1 client whose origin chose HTTP/2: the engine sends over that HTTP/2
    // connection, shared through the pool.
    let upstream = match upstream {
        Some(up) if upstream_h2 => {
            let send = crate::http2::start_h2(up.io).await?;
            cx.pool.put_h2(&origin, send);
            None
        }
        other => other,
    };
    let serve = h1::serve(
        cx,
        conn,
        settings,
        Box::new(client),
        Bytes::new(),
        Scope::Tunnel(origin),
        upstream,
    );
    // The engine and this function call each other (CONNECT inside it is refused, but
    // the types still recurse): box the future.
    Box::pin(serve).await
}

/// An upstream connection to `origin` already up, if there is one: the HTTP/2
/// connection shared through the pool (`None` for the connection itself, which the
/// engines find there), or an idle HTTP/1.1 one. With the protocol it speaks.
fn reuse(
    cx: &Context,
    conn: &mut Connection,
    origin: &Target,
) -> Option<(Option<h1::pool::Upstream>, Option<Vec<u8>>)> {
    if cx.pool.h2(origin).is_some() {
        return Some((None, Some(b"h2".to_vec())));
    }
    let up = cx.pool.take(origin)?;
    conn.server = crate::core::Host::new(up.addr);
    Some((Some(up), Some(b"http/1.1".to_vec())))
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
async fn fail<W: AsyncWrite + Unpin>(client: &mut W, e: Error) -> Result<()> {
    let page = h1::response_bytes(&error_response(&e), "", Some("close"));
    // The client may be gone already; the original error is what matters.
    let _ = client.write_all(&page).await;
    let _ = client.shutdown().await;
    Err(e)
}

/// The response that tells a client what went wrong upstream and what to try.
pub(crate) fn error_response(e: &Error) -> Response {
    let (status, body) = match e {
        Error::Resolve { host, source } => (
            502,
            format!(
                "mitm could not resolve the upstream host {host}: {source}.\n\
                 Check the host name, and that the proxy's machine can resolve it.\n"
            ),
        ),
        Error::Connect { target, source } => (
            502,
            format!(
                "mitm could not connect to the upstream server {target}: {source}.\n\
                 Check that the server is running and reachable from the proxy.\n"
            ),
        ),
        Error::ConnectTimeout { target } => (
            504,
            format!(
                "mitm timed out connecting to the upstream server {target}.\n\
                 The server did not answer in time; try again, or raise the timeout.\n"
            ),
        ),
        Error::ResponseTimeout { target, after } => (
            504,
            format!(
                "mitm timed out waiting for the upstream server {target}: no response \
                 within {after:?}.\nThe server may be overloaded; try again, or raise the \
                 response timeout.\n"
            ),
        ),
        Error::UpstreamTls { target, source } => (
            502,
            format!(
                "mitm could not set up TLS with the upstream server {target}: {}.\n\
                 If the server's certificate comes from a private CA, give that CA to the \
                 proxy with --upstream-ca FILE; to skip verification (unsafe), use --insecure.\n",
                tls_cause(source)
            ),
        ),
        Error::BadRequest { reason } => (
            400,
            format!("mitm could not understand the request: {reason}.\n"),
        ),
        other => (
            502,
            format!(
                "mitm could not get a response from the upstream server: {}.\n",
                crate::error::Report(other)
            ),
        ),
    };
    h1::text_response(status, body)
}

/// The rustls error inside an I/O error when there is one (e.g. "invalid peer
/// certificate: UnknownIssuer"), otherwise the I/O error itself.
fn tls_cause(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
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
    if let Some(absolute) = split_absolute(path) {
        return absolute.map(|(target, _)| target);
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
        assert_eq!(resolve(b"HELLO\r\n"), Resolution::NotMine);
        // HTTP, but without a Host: the engine answers 400 rather than the proxy
        // closing the connection.
        assert!(matches!(
            resolve(b"GET / HTTP/1.1\r\n\r\n"),
            Resolution::Accept(_)
        ));
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
