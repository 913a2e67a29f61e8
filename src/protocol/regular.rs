//! The built-in [`Http`] protocol: an HTTP proxy (HTTP/1.x from clients, with
//! `CONNECT`), TLS interception inside tunnels (HTTP/2 or HTTP/1.1 with clients and
//! origins alike), and pass-through for what is not to be decrypted.
//!
//! This file is the protocol's face: its settings, and how it recognises a client
//! (`resolve`). The work is done below it: `crate::engine::exchange` serves the requests,
//! `crate::engine::tunnel` what follows a `CONNECT`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Connected, Context, Protocol, Resolution};
use crate::core::{Connection, Target};
use crate::engine::exchange::serve_h1::{self, Served, Start};
use crate::error::Result;
use crate::http::settings::Settings;
use crate::http::target::{parse_authority, split_absolute, Scope};
use crate::net::io::BoxIo;
use crate::wire::h1::parse::{self, head_end, RequestLine};

pub use crate::http::settings::{
    DEFAULT_HEAD_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAGIC_HOST, DEFAULT_MAX_HEAD,
    DEFAULT_MAX_HEADERS, DEFAULT_MAX_STREAMS, DEFAULT_MAX_UPSTREAMS, DEFAULT_RESPONSE_TIMEOUT,
};

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
    settings: Settings,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bytes_needed: super::DEFAULT_BYTES_NEEDED,
            settings: Settings::default(),
        }
    }
}

impl Http {
    /// The protocol with its defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits and timeouts its connections obey (for the protocols that serve HTTP
    /// with the same settings: [`Reverse`](super::Reverse), [`Socks5`](super::Socks5)
    /// tunnels, [`Transparent`](super::Transparent)).
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How many first bytes may be read before the protocol decides whether a client
    /// speaks HTTP; a head still incomplete by then is taken as HTTP and judged against
    /// [`max_head`](Self::max_head). Default: 8192.
    pub fn bytes_needed(mut self, bytes: usize) -> Self {
        self.bytes_needed = bytes;
        self
    }

    /// Bytes read per chunk when relaying tunnels (those let through untouched, and
    /// protocols switched to after a `101`) through the data hooks. Default: 8192.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.settings.buffer_size = bytes.max(1);
        self
    }

    /// Time allowed for a request head once it has begun (slow clients are cut off),
    /// and also, unless set on their own afterwards, the
    /// [`connect_timeout`](Self::connect_timeout) and the
    /// [`handshake_timeout`](Self::handshake_timeout). Default: [`DEFAULT_HEAD_TIMEOUT`]
    /// (15 seconds).
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
    /// before the client gets a `504`. Default: [`DEFAULT_RESPONSE_TIMEOUT`] (120 seconds).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.settings.response_timeout = timeout;
        self
    }

    /// Time a keep-alive client connection may stay idle between requests.
    /// Default: [`DEFAULT_IDLE_TIMEOUT`] (120 seconds).
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

    /// The largest request head accepted; larger ones get `431`. For HTTP/2 clients,
    /// the largest header list (announced in the connection's settings). Default:
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

    /// The largest request or response body let through, as mitmproxy's
    /// `body_size_limit`: a request whose body is larger is answered `413 Payload Too
    /// Large` and never reaches its origin; a response whose body is larger becomes a
    /// `502` and the origin connection is dropped. A body that says its length
    /// (`Content-Length`) is judged on its head; one that does not (chunked, HTTP/2
    /// without the field) is held until it ends or passes the limit, so keep the limit
    /// to what may sit in memory. Default: `None`, bodies of any size stream through.
    ///
    /// ```
    /// let http = mitm::Http::new().max_body(Some(10 * 1024 * 1024));
    /// ```
    pub fn max_body(mut self, bytes: Option<u64>) -> Self {
        self.settings.max_body = bytes;
        self
    }

    /// The most streams an HTTP/2 client may have open at once (announced in the
    /// connection's settings; streams past it are refused). Default:
    /// [`DEFAULT_MAX_STREAMS`] (100).
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.settings.max_streams = streams.max(1);
        self
    }

    /// The most upstream connections one client connection holds at once: an HTTP/2
    /// client's streams to an origin that speaks only HTTP/1.1 wait for one of these
    /// (each counts against [`MitmBuilder::max_connections`](crate::MitmBuilder::max_connections)
    /// too). Default: [`DEFAULT_MAX_UPSTREAMS`] (8).
    pub fn max_upstream_connections(mut self, connections: usize) -> Self {
        self.settings.max_upstreams = connections.max(1);
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
        self.settings.buffer_size
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn keep_alive(&self) -> bool {
        self.settings.keep_alive
    }

    /// Takes a connection as soon as its first line is a plausible HTTP/1 request line:
    /// the engine routes every request on its own, and answers a broken or oversized
    /// head itself (`400`, `431`). The target is the head's when it is whole (or the
    /// line's, for `CONNECT` and absolute URIs), for the logs until the first request
    /// is routed.
    async fn resolve(&self, _conn: &Connection, data: &[u8]) -> Resolution {
        if head_end(data).is_some() {
            let mut headers = [httparse::EMPTY_HEADER; DEFAULT_MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(_)) = req.parse(data) {
                return Resolution::Accept(target_of(&req).unwrap_or_else(unknown_target));
            }
        }
        match request_line(data) {
            Line::Valid(target) => Resolution::Accept(target.unwrap_or_else(unknown_target)),
            Line::Incomplete if data.len() < self.bytes_needed => Resolution::NeedMore,
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
        let settings = &self.settings;
        let served = serve_h1::serve(
            cx,
            settings,
            conn,
            client,
            data,
            Scope::Proxy,
            Start::Nothing,
        )
        .await?;
        if let Served::Connect(opened) = served {
            crate::engine::tunnel::run(cx, settings, conn, *opened).await?;
        }
        Ok(Connected::Handled)
    }
}

/// Where a parsed request goes: the `CONNECT` authority, the absolute-form URI's
/// authority, or the `Host` header, each with its port.
fn target_of(req: &httparse::Request<'_, '_>) -> Option<Target> {
    let method = req.method?;
    let path = req.path?;
    if let Some(target) = line_target(method, path) {
        return target;
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

/// The target a request line names by itself (`CONNECT` authority, absolute URI):
/// `None` when the line does not name one, `Some(None)` when it names an invalid one.
fn line_target(method: &str, path: &str) -> Option<Option<Target>> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Some(parse_authority(path, 443).map(|(h, p)| Target::new(h, p, true)));
    }
    split_absolute(path).map(|t| t.map(|(target, _)| target))
}

/// The placeholder target of a request whose head is not complete yet.
fn unknown_target() -> Target {
    Target::new("", 0, false)
}

/// What the first line of a client's bytes is.
enum Line {
    /// A plausible HTTP/1 request line, with the target it names by itself, if any.
    Valid(Option<Target>),
    /// Not complete yet, and plausible so far.
    Incomplete,
    /// Not HTTP/1.
    Invalid,
}

/// Reads the request line at the start of `data`.
fn request_line(data: &[u8]) -> Line {
    let (method, target) = match parse::request_line(data) {
        RequestLine::Valid { method, target } => (method, target),
        RequestLine::Incomplete => return Line::Incomplete,
        RequestLine::Invalid => return Line::Invalid,
    };
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
    else {
        return Line::Valid(None);
    };
    Line::Valid(line_target(method, target).flatten())
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
        assert_eq!(resolve(b"GET / HTT"), Resolution::NeedMore);
        // A whole request line is enough: the engine reads the rest of the head.
        assert!(matches!(
            resolve(b"GET / HTTP/1.1\r\nHo"),
            Resolution::Accept(_)
        ));
        assert_eq!(resolve(b"\x16\x03\x01\x02\x00"), Resolution::NotMine);
        assert_eq!(resolve(b"HELLO\r\n"), Resolution::NotMine);
        // HTTP, but without a Host: the engine answers 400 rather than the proxy
        // closing the connection.
        assert!(matches!(
            resolve(b"GET / HTTP/1.1\r\n\r\n"),
            Resolution::Accept(_)
        ));
    }
}
