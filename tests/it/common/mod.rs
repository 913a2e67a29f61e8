//! Test helpers: origins, proxies and clients, all on loopback and made here.
#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mitm::DataHooks;
use mitm::{async_trait, Bytes, CertificateAuthority, Connection, Middleware, MitmBuilder};
use mitm::{Mitm, MitmHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

mod child;
#[allow(unused_imports)] // used by the tests that run the binary
pub use child::{banner_listener, ChildProxy};

/// How long any wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One request as an origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body, in order.
    pub trailers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A test origin server. It answers:
/// - `/bytes/N`: N bytes of a fixed pattern ([`pattern`]), streamed (never held whole);
/// - `/echo`: the request body;
/// - `/status/N`: status N with no body (`content-length: 0`, none at all for 204 and
///   304);
/// - `/chunked`: [`CHUNKED_PARTS`] as chunks, then the trailer [`CHUNKED_TRAILER`];
/// - `/gzip`: [`GZIP_TEXT`] gzip-encoded, with `Content-Encoding: gzip`;
/// - `/br`: [`GZIP_TEXT`] brotli-encoded, with `Content-Encoding: br`;
/// - `/utf8-header`: a response with a header field holding UTF-8 (`X-Note: café ✓`);
/// - `/early-hints`: a `103 Early Hints` interim response, then the greeting;
/// - `/close`: `closing`, with `Connection: close`, then closes the connection;
/// - `/set-cookie?A&B…`: `ok`, with a `Set-Cookie` field for each `&`-separated part
///   of the query, percent-decoded ([`percent_encode`] makes one);
/// - `/hangup`: `hanging up`, then closes the connection without saying so first (as a
///   server closing an idle keep-alive connection does);
/// - a WebSocket upgrade (any path): `101`, then echoes text and binary messages
///   (pings get their pongs, a close is answered);
/// - anything else: `hello from origin: METHOD TARGET`.
///
/// `HEAD` gets the head `GET` would get (with its `content-length`), and no body.
/// Request trailers are recorded in [`Seen::trailers`].
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// Connections the origin closed itself, after answering `/close` or `/hangup`.
    pub hangups: Arc<Counter>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A count a test can wait on.
#[derive(Default)]
pub struct Counter {
    n: AtomicUsize,
    changed: Notify,
}

impl Counter {
    pub fn add(&self) {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn get(&self) -> usize {
        self.n.load(Ordering::SeqCst)
    }

    /// Waits until the count is at least `n`.
    pub async fn wait_for(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.get() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("the count never reached {n}"));
    }
}

/// Asserts two bodies are equal without printing megabytes when they are not.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        let head = String::from_utf8_lossy(&got[..got.len().min(200)]);
        panic!(
            "bodies differ: got {} bytes, want {}; first difference at {at:?}; got starts {head:?}",
            got.len(),
            want.len()
        );
    }
}

/// N bytes of the pattern `/bytes/N` serves.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A whole number of periods of [`pattern`] (about 64 KiB): written over and over, it
/// is the pattern of any length.
fn pattern_block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| pattern(251 * 256))
}

/// A streaming SHA-256 (ring's, whose assembly is fast even in a debug build).
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finish().as_ref().try_into().unwrap()
    }
}

/// The SHA-256 of `pattern(n)`, computed a block at a time (never held whole).
pub fn pattern_sha256(n: u64) -> [u8; 32] {
    let block = pattern_block();
    let mut hasher = Sha256::default();
    let mut left = n;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        hasher.update(&block[..take]);
        left -= take as u64;
    }
    hasher.finish()
}

/// The SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::default();
    hasher.update(data);
    hasher.finish()
}

/// A plain HTTP/1.1 origin on 127.0.0.1.
pub async fn start_origin() -> Origin {
    start(None).await
}

/// An HTTPS origin on 127.0.0.1 with a certificate for `localhost` from [`origin_ca`],
/// which the proxies of [`start_proxy`] trust and nothing else does.
pub async fn start_tls_origin() -> Origin {
    start_tls_origin_for("localhost").await
}

/// As [`start_tls_origin`], with a certificate for `name`.
pub async fn start_tls_origin_for(name: &str) -> Origin {
    let config = origin_ca().server_config(name).unwrap();
    start(Some(tokio_rustls::TlsAcceptor::from(config))).await
}

/// As [`start_origin`] (`tls_name: None`) or [`start_tls_origin_for`], listening on
/// `addr` (e.g. `[::]:80` inside a network namespace of a test's own).
pub async fn start_origin_at(addr: SocketAddr, tls_name: Option<&str>) -> Origin {
    let tls = tls_name.map(|name| {
        let config = origin_ca().server_config(name).unwrap();
        tokio_rustls::TlsAcceptor::from(config)
    });
    start_at(addr, tls).await
}

async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
    start_at(SocketAddr::from(([127, 0, 0, 1], 0)), tls).await
}

async fn start_at(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let hangups = Arc::new(Counter::default());
    let (s, c, h) = (seen.clone(), connections.clone(), hangups.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let seen = s.clone();
            let hangups = h.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_http(stream, seen, hangups).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_http(stream, seen, hangups).await;
                        }
                    }
                }
            });
        }
    });
    Origin {
        addr,
        seen,
        connections,
        hangups,
        task,
    }
}

/// The parts of the body `/chunked` sends, one chunk each.
pub const CHUNKED_PARTS: [&str; 3] = ["hello ", "chunked ", "world"];
/// The trailer field `/chunked` sends after its last chunk.
pub const CHUNKED_TRAILER: (&str, &str) = ("X-Checksum", "c0ffee");
/// The text `/gzip` serves, gzip-encoded.
pub const GZIP_TEXT: &str = "this text travelled gzip-encoded, and came back whole. ";

/// What the origin answers to one request.
enum Answer {
    Body(Vec<u8>, &'static str),
    Pattern(u64),
    Status(u16),
    Chunked,
    /// `200` with these `Set-Cookie` fields and the body `ok`.
    SetCookie(Vec<String>),
}

/// Serves keep-alive HTTP/1.1 requests on one connection until it closes.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    seen: Arc<Mutex<Vec<Seen>>>,
    hangups: Arc<Counter>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut s, &mut buf).await else {
            return;
        };
        // Proxies may pass the absolute form on; route on the path either way.
        let path = match req.target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => req.target.as_str(),
        };
        if req
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        {
            let key = req.header("sec-websocket-key").unwrap_or("").to_string();
            seen.lock().unwrap().push(req);
            websocket_echo(s, buf, &key).await;
            return;
        }
        let answer = if let Some(n) = path.strip_prefix("/bytes/") {
            Answer::Pattern(n.parse().unwrap_or(0))
        } else if let Some(n) = path.strip_prefix("/status/") {
            Answer::Status(n.parse().unwrap_or(500))
        } else if let Some(query) = path.strip_prefix("/set-cookie?") {
            // Each `&`-separated part of the query, percent-decoded, is a field.
            Answer::SetCookie(query.split('&').map(percent_decode).collect())
        } else if path == "/echo" {
            Answer::Body(req.body.clone(), "")
        } else if path == "/chunked" {
            Answer::Chunked
        } else if path == "/gzip" {
            Answer::Body(gzip(GZIP_TEXT.as_bytes()), "content-encoding: gzip\r\n")
        } else if path == "/br" {
            let body = mitm::decode::encode("br", GZIP_TEXT.as_bytes()).unwrap();
            Answer::Body(body, "content-encoding: br\r\ncontent-type: text/plain\r\n")
        } else if path == "/utf8-header" {
            Answer::Body(b"see the header".to_vec(), "x-note: caf\u{e9} \u{2713}\r\n")
        } else if path == "/close" {
            Answer::Body(b"closing".to_vec(), "connection: close\r\n")
        } else if path.starts_with("/page") {
            // A page a browser shows (rather than downloads).
            let text = format!("hello from origin: {} {}", req.method, req.target);
            Answer::Body(
                text.into_bytes(),
                "content-type: text/plain; charset=utf-8\r\n",
            )
        } else if path == "/dated" {
            // Dates long past, for refreshing (server replay).
            let date = "Sun, 06 Nov 1994 08:49:37 GMT";
            let head = format!(
                "date: {date}\r\nexpires: {date}\r\nlast-modified: {date}\r\nset-cookie: a=1; Expires={date}; Path=/\r\n"
            );
            Answer::Body(b"dated".to_vec(), head.leak())
        } else if path == "/hangup" {
            Answer::Body(b"hanging up".to_vec(), "")
        } else {
            let text = format!("hello from origin: {} {}", req.method, req.target);
            Answer::Body(text.into_bytes(), "")
        };
        let head_only = req.method.eq_ignore_ascii_case("HEAD");
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let hang_up = path == "/close" || path == "/hangup";
        if path == "/early-hints" {
            let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
            if s.write_all(hints).await.is_err() {
                return;
            }
        }
        seen.lock().unwrap().push(req);
        if answer_with(&mut s, answer, head_only).await.is_err() {
            return;
        }
        if close || hang_up {
            let _ = s.shutdown().await;
            drop(s);
            if hang_up {
                hangups.add();
            }
            return;
        }
    }
}

/// Writes one answer; with `head_only` (a HEAD request), its head alone.
async fn answer_with<S: AsyncWrite + Unpin>(
    s: &mut S,
    answer: Answer,
    head_only: bool,
) -> std::io::Result<()> {
    match answer {
        Answer::Body(body, extra) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\n{}{extra}content-length: {}\r\n\r\n",
                if extra.contains("content-type") {
                    ""
                } else {
                    "content-type: application/octet-stream\r\n"
                },
                body.len()
            );
            s.write_all(head.as_bytes()).await?;
            if !head_only {
                s.write_all(&body).await?;
            }
        }
        Answer::Pattern(n) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await?;
            if !head_only {
                let block = pattern_block();
                let mut left = n;
                while left > 0 {
                    let take = left.min(block.len() as u64) as usize;
                    s.write_all(&block[..take]).await?;
                    left -= take as u64;
                }
            }
        }
        Answer::Status(status) => {
            let length = if status == 204 || status == 304 {
                ""
            } else {
                "content-length: 0\r\n"
            };
            let head = format!("HTTP/1.1 {status} Status {status}\r\n{length}\r\n");
            s.write_all(head.as_bytes()).await?;
        }
        Answer::SetCookie(cookies) => {
            let mut head = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_string();
            for cookie in cookies {
                head.push_str(&format!("set-cookie: {cookie}\r\n"));
            }
            head.push_str("\r\n");
            s.write_all(head.as_bytes()).await?;
            if !head_only {
                s.write_all(b"ok").await?;
            }
        }
        Answer::Chunked => {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\ntrailer: {}\r\n\r\n",
                CHUNKED_TRAILER.0
            );
            if !head_only {
                for part in CHUNKED_PARTS {
                    out.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
                }
                let (name, value) = CHUNKED_TRAILER;
                out.push_str(&format!("0\r\n{name}: {value}\r\n\r\n"));
            }
            s.write_all(out.as_bytes()).await?;
        }
    }
    s.flush().await
}

/// `text` with its `%XX` escapes decoded (the origin's `/set-cookie?` route).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with every byte but letters, digits and `-._~` `%XX`-escaped.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `data`, gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `data`, gzip-decompressed.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Answers a WebSocket upgrade (`buf` holds bytes already read after its head), then
/// echoes every text and binary message until the client closes.
async fn websocket_echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, buf: Vec<u8>, key: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut ws =
        tokio_tungstenite::WebSocketStream::from_partially_read(s, buf, Role::Server, None).await;
    // Pings are answered and closes completed by the WebSocket stream itself, as it
    // reads.
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(_) | Message::Binary(_) = message {
            if ws.send(message).await.is_err() {
                return;
            }
        }
    }
    // The close handshake is done: end the stream cleanly (TLS close_notify).
    let _ = ws.get_mut().shutdown().await;
}

/// Reads one request (head and Content-Length or chunked body). `None` at the end of
/// the stream. Answers `Expect: 100-continue`.
async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if read_more(s, buf).await == 0 {
            return None;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 512];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&buf[..head_end]).ok()?;
    let mut seen = Seen {
        method: req.method?.to_string(),
        target: req.path?.to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        trailers: Vec::new(),
    };
    buf.drain(..head_end);
    if seen
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.ok()?;
    }
    let chunked = seen
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let (body, trailers) = read_chunked(s, buf).await?;
        seen.body = body;
        seen.trailers = trailers;
    } else {
        let len: usize = seen
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            if read_more(s, buf).await == 0 {
                return None;
            }
        }
        seen.body = buf.drain(..len).collect();
    }
    Some(seen)
}

/// Reads a chunked body (after its head) from `s`, `buf` holding bytes already read:
/// the decoded body and the trailer fields. `None` if the stream ends first or the
/// framing is invalid.
async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Option<(Vec<u8>, Vec<(String, String)>)> {
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    loop {
        let line = read_line(s, buf).await?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let line = read_line(s, buf).await?;
                if line.is_empty() {
                    return Some((body, trailers));
                }
                let (name, value) = line.split_once(':')?;
                trailers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        while buf.len() < size + 2 {
            if read_more(s, buf).await == 0 {
                return None;
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// One CRLF-terminated line, without its CRLF.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(line);
        }
        if read_more(s, buf).await == 0 {
            return None;
        }
    }
}

async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

/// An origin that accepts connections, reads whatever comes and never answers.
pub async fn start_silent_origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut stream, &mut sink).await;
            });
        }
    });
    Origin {
        addr,
        seen: Arc::new(Mutex::new(Vec::new())),
        connections,
        hangups: Arc::default(),
        task,
    }
}

/// A loopback port nothing listens on (a listener was bound there, then dropped).
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The CA that signs test origins' certificates: trusted by test proxies (through a PEM
/// file, as `--upstream-ca` would), never by clients directly.
pub fn origin_ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate().unwrap())
}

/// A PEM file holding [`origin_ca`]'s certificate.
pub fn origin_ca_file() -> PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("origin-ca.pem");
        std::fs::write(&path, origin_ca().cert_pem()).unwrap();
        (dir, path)
    })
    .1
    .clone()
}

/// A running proxy and its CA.
pub struct TestProxy {
    pub handle: MitmHandle,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in order.
    pub addrs: Vec<SocketAddr>,
    pub ca: Arc<CertificateAuthority>,
}

impl TestProxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A proxy on 127.0.0.1:0 with a fresh CA, no middlewares, trusting [`origin_ca`]
/// upstream; `configure` may change anything.
pub async fn start_proxy(configure: impl FnOnce(MitmBuilder) -> MitmBuilder) -> TestProxy {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let builder = Mitm::builder()
        .port(0)
        .certificate_authority(ca.clone())
        .middlewares(vec![])
        .upstream_ca_file(origin_ca_file());
    let proxy = configure(builder).bind().await.unwrap();
    let addr = proxy.local_addr();
    let addrs = proxy.listeners().iter().map(|l| l.addr).collect();
    TestProxy {
        handle: proxy.spawn(),
        addr,
        addrs,
        ca,
    }
}

/// A reqwest client that uses `proxy` for every scheme and trusts only its CA.
pub fn client_via(proxy: &TestProxy) -> reqwest::Client {
    client_for(&proxy.url(), &proxy.ca)
}

/// A reqwest client that uses the proxy at `proxy_url` and trusts only `ca`.
pub fn client_for(proxy_url: &str, ca: &CertificateAuthority) -> reqwest::Client {
    let tls = tls_client_config(ca);
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy_url).unwrap())
        .use_preconfigured_tls(tls)
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// A TLS client config that trusts only `ca`, offering no ALPN.
pub fn tls_client_config(ca: &CertificateAuthority) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A TLS stream to `host:port` through `proxy`: raw TCP, `CONNECT host:port`, the
/// proxy's `200`, then a TLS handshake for the name `host` trusting only the proxy's
/// CA.
pub async fn tls_through(
    proxy: &TestProxy,
    host: &str,
    port: u16,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_through_offering(proxy, host, port, &[]).await
}

/// As [`tls_through`], offering the ALPN protocols `alpn` (e.g. `[b"h2"]`).
pub async fn tls_through_offering(
    proxy: &TestProxy,
    host: &str,
    port: u16,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 200, "CONNECT refused: {reply:?}");
    let (tcp, rest) = wire.into_parts();
    assert!(rest.is_empty(), "bytes after the CONNECT reply: {rest:?}");
    let mut config = tls_client_config(&proxy.ca);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("TLS handshake with the proxy timed out")
        .expect("TLS handshake with the proxy failed")
}

/// One HTTP/1.1 response as a client read it.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The body, decoded from chunks when it was chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]);
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body_start", &body)
            .field("chunked", &self.chunked)
            .field("trailers", &self.trailers)
            .finish()
    }
}

impl Reply {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client's end of one connection: writes requests and reads responses one at a
/// time, so that pipelined responses stay apart. Every read is bounded by
/// [`PATIENCE`].
pub struct Wire<S> {
    pub io: S,
    buf: Vec<u8>,
}

impl Wire<TcpStream> {
    /// A new TCP connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        Wire::new(TcpStream::connect(addr).await.unwrap())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(io: S) -> Self {
        Wire {
            io,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` (in one write) and flushes.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        tokio::time::timeout(PATIENCE, async {
            self.io.write_all(bytes.as_ref()).await?;
            self.io.flush().await
        })
        .await
        .expect("writing to the proxy timed out")
        .expect("writing to the proxy failed");
    }

    /// Reads one response to a `GET`-like request.
    pub async fn response(&mut self) -> Reply {
        self.response_to("GET").await
    }

    /// Reads exactly one response to a request with `method` (the response to `HEAD`
    /// or `CONNECT`, and a 1xx, 204 or 304, have no body): its head, then its
    /// Content-Length or chunked body, or the body until the end of the stream when it
    /// has neither.
    pub async fn response_to(&mut self, method: &str) -> Reply {
        let mut reply = self.response_head().await;
        let bodiless = method.eq_ignore_ascii_case("HEAD")
            || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&reply.status))
            || (100..200).contains(&reply.status)
            || reply.status == 204
            || reply.status == 304;
        if bodiless {
            return reply;
        }
        if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            let read = read_chunked(&mut self.io, &mut self.buf);
            let (body, trailers) = tokio::time::timeout(PATIENCE, read)
                .await
                .expect("no complete chunked body in time")
                .expect("the chunked body ended early or was invalid");
            reply.chunked = true;
            reply.body = body;
            reply.trailers = trailers;
        } else if let Some(len) = reply.header("content-length") {
            let len: u64 = len.trim().parse().expect("invalid content-length");
            let mut body = Vec::with_capacity(len as usize);
            self.body(len, |piece| body.extend_from_slice(piece)).await;
            reply.body = body;
        } else {
            reply.body = self.read_to_end().await;
        }
        reply
    }

    /// Reads one response head; its body, if any, is left to read.
    pub async fn response_head(&mut self) -> Reply {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.fill().await;
            assert!(
                n > 0,
                "the connection ended before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut fields);
        if let Err(e) = res.parse(&self.buf[..end]) {
            panic!(
                "invalid response head ({e}): {:?}",
                String::from_utf8_lossy(&self.buf[..end])
            );
        }
        let reply = Reply {
            status: res.code.unwrap(),
            reason: res.reason.unwrap_or("").to_string(),
            headers: res
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
        };
        self.buf.drain(..end);
        reply
    }

    /// Reads `len` body bytes, handing each piece to `each` as it arrives (nothing is
    /// held beyond one read).
    pub async fn body(&mut self, len: u64, mut each: impl FnMut(&[u8])) {
        let mut left = len;
        let take = left.min(self.buf.len() as u64) as usize;
        each(&self.buf[..take]);
        self.buf.drain(..take);
        left -= take as u64;
        let mut chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(chunk.len() as u64) as usize;
            let n = tokio::time::timeout(PATIENCE, self.io.read(&mut chunk[..want]))
                .await
                .expect("no body bytes in time")
                .expect("reading the body failed");
            assert!(n > 0, "the body ended {left} bytes early");
            each(&chunk[..n]);
            left -= n as u64;
        }
    }

    /// Reads one request, as an origin: its request line and its `Content-Length` body.
    /// `None` when the stream ends first.
    pub async fn request(&mut self) -> Option<(String, Vec<u8>)> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill().await == 0 {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let line = head.lines().next().unwrap_or("").to_string();
        let len: u64 = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = Vec::new();
        self.body(len, |piece| body.extend_from_slice(piece)).await;
        Some((line, body))
    }

    /// Everything up to the end of the stream (a reset counts as an end).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// The stream, and bytes read from it but not consumed.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.io, self.buf)
    }

    /// Reads more into the buffer: how many bytes (0 at the end or on a reset).
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(PATIENCE, self.io.read(&mut chunk))
            .await
            .expect("no bytes (and no end of stream) in time")
        {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("reading from the proxy failed: {e}"),
        }
    }
}

/// Sends `request` to `addr` over a new TCP connection and reads until the peer closes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("peer did not close in time")
        .unwrap();
    out
}

/// Records every hook call as `(connection id, event)`, and lets a test wait for one.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<(u64, String)>>,
    changed: Notify,
}

impl Recorder {
    fn push(&self, id: u64, event: &str) {
        self.events.lock().unwrap().push((id, event.to_string()));
        self.changed.notify_waiters();
    }

    /// The events of connection `id`, with runs of the same event folded into one.
    pub fn of(&self, id: u64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (i, e) in self.events.lock().unwrap().iter() {
            if *i == id && out.last() != Some(e) {
                out.push(e.clone());
            }
        }
        out
    }

    /// Waits until connection `id` has recorded `event`.
    pub async fn wait_for(&self, id: u64, event: &str) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.of(id).iter().any(|e| e == event) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("connection {id} never recorded {event}"));
    }
}

#[async_trait]
impl Middleware for Recorder {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::On
    }

    async fn client_connected(&self, conn: &Connection) {
        self.push(conn.id, "client_connected");
    }

    async fn server_connected(&self, conn: &Connection) {
        self.push(conn.id, "server_connected");
    }

    async fn client_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        self.push(conn.id, "client_data");
        data
    }

    async fn server_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        self.push(conn.id, "server_data");
        data
    }

    async fn client_disconnected(&self, conn: &Connection) {
        self.push(conn.id, "client_disconnected");
    }

    async fn server_disconnected(&self, conn: &Connection) {
        self.push(conn.id, "server_disconnected");
    }
}

/// Whether `tool` answers `--version`. Tests check with [`require_tool`].
pub fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The environment variable that turns a missing tool from a skip into a failure (CI
/// sets it, so that no test it runs can pass by skipping).
pub const REQUIRE_TOOLS: &str = "MITM_REQUIRE_TOOLS";

/// Whether a test that drives an outside program may go on: `present` is whether the
/// program is there (e.g. [`have`]`("curl")`), `what` names it and `install` says how
/// to get it. When it is missing the test should return at once: this prints
/// `skipped: WHAT is not installed (INSTALL)` and returns false, or, when
/// [`REQUIRE_TOOLS`] is set (to anything but `0`), fails the test with that message.
#[track_caller]
pub fn require_tool(present: bool, what: &str, install: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var(REQUIRE_TOOLS).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!(
            "{what} is not installed and {REQUIRE_TOOLS} is set, so this test may not skip: \
             install it ({install}), or unset {REQUIRE_TOOLS} to skip"
        );
    }
    eprintln!("skipped: {what} is not installed ({install})");
    false
}

/// A program of the test virtual environment (`scripts/test-venv.sh`, which `.ci/run`
/// runs): `$MITM_TEST_VENV/bin/NAME`, else `target/ci-venv/bin/NAME`. `None` when it is
/// not there; pass that to [`require_tool`], which says how to make it.
#[allow(dead_code)] // used by the capture tests
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    venv_path(&Path::new("bin").join(name))
}

/// A program of the mitmproxy 10 virtual environment `scripts/test-venv.sh` makes
/// inside the first (`mitmproxy10/bin/NAME`), if it is there.
#[allow(dead_code)]
pub fn venv10_tool(name: &str) -> Option<PathBuf> {
    venv_path(&Path::new("mitmproxy10/bin").join(name))
}

#[allow(dead_code)]
fn venv_path(inside: &Path) -> Option<PathBuf> {
    let venv = std::env::var_os("MITM_TEST_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
            Some(target.join("ci-venv"))
        })?;
    let tool = venv.join(inside);
    tool.exists().then_some(tool)
}

/// How to make the test virtual environment, for [`require_tool`]'s message.
#[allow(dead_code)]
pub const VENV_INSTALL: &str = "run scripts/test-venv.sh, or set MITM_TEST_VENV";

/// The Chromium on this machine, by the names Debian and others give it.
#[allow(dead_code)]
pub fn find_chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// A test proxy whose middleware is the capture `builder` makes, and the capture.
#[allow(dead_code)]
pub async fn start_capturing(
    builder: mitm::capture::CaptureBuilder,
) -> (TestProxy, Arc<mitm::capture::Capture>) {
    let capture = Arc::new(builder.start());
    let handler = capture.clone();
    (start_proxy(|b| b.http_handler(handler)).await, capture)
}

/// A WebSocket to the echo origin at `origin_port` (`/chat`) through the proxy at
/// `proxy`, after a text `hello` and a binary `[0, 255]` went there and back.
#[allow(dead_code)]
pub async fn websocket_echoed(
    proxy: SocketAddr,
    origin_port: u16,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let url = format!("ws://127.0.0.1:{origin_port}/chat");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .expect("the WebSocket handshake through the proxy failed");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 255])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 255])
    );
    ws
}

/// Asserts that `messages` (of `what`) are those of [`websocket_echoed`]: each sent and
/// echoed.
#[allow(dead_code)]
pub fn assert_echoed(messages: &[mitm::capture::RecordedMessage], what: &str) {
    let seen: Vec<(bool, bool, &[u8])> = messages
        .iter()
        .map(|m| (m.from_client, m.text, &m.data[..]))
        .collect();
    assert_eq!(
        seen,
        [
            (true, true, &b"hello"[..]),
            (false, true, &b"hello"[..]),
            (true, false, &[0u8, 255][..]),
            (false, false, &[0u8, 255][..]),
        ],
        "{what}"
    );
}

/// Closes `ws` and reads it to its end.
#[allow(dead_code)]
pub async fn close_websocket(mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    use futures_util::StreamExt;
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

/// What a log subscriber writes, kept for a test to read.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A log subscriber for this thread only, with `filter` (an `EnvFilter` directive such
/// as `info` or `mitm::splice=trace`), writing to the returned [`Captured`] until the
/// guard is dropped. On a current-thread runtime the proxy's tasks run on this thread,
/// so they log to it, and tests running beside this one log elsewhere.
pub fn thread_log(filter: &str) -> (Captured, tracing::subscriber::DefaultGuard) {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter(filter)
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

/// Waits until the capture file at `path` reads back `n` flows, failing the test after
/// [`PATIENCE`]. (The writer saves each flow as its queue empties.)
#[allow(dead_code)]
pub async fn wait_for_flows(path: &std::path::Path, n: usize) -> Vec<mitm::capture::Record> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(records) = mitm::capture::read(path) {
            if records.len() >= n {
                return records;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never held {n} flows",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the Python `script` (saved as `dir/name`) with the venv's `python` on `file`,
/// and parses each line it prints as JSON: how tests read files through mitmproxy's
/// own `FlowReader`. Fails the test, with Python's stderr, if the script fails.
#[allow(dead_code)]
pub fn python_json_lines(
    python: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    script: &str,
    file: &std::path::Path,
) -> Vec<serde_json::Value> {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new(python)
        .arg(&path)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed on {}:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sends `child` SIGINT (as Ctrl-C) and waits for it to exit: its status, or `None`
/// when it has not exited within [`PATIENCE`].
pub async fn interrupt(child: &mut tokio::process::Child) -> Option<std::process::ExitStatus> {
    let pid = child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.ok()?;
    Some(status.unwrap())
}

/// Runs `curl` (a `curl` command with its arguments) within [`PATIENCE`]: its output,
/// whatever its exit.
pub async fn curl_output(curl: &mut tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(PATIENCE, curl.output())
        .await
        .expect("curl took too long")
        .expect("curl runs")
}

/// [`curl_output`], failing the test with curl's message unless it exits 0 (`call`
/// names the call in that message).
pub async fn curl_success(
    curl: &mut tokio::process::Command,
    call: impl std::fmt::Debug,
) -> std::process::Output {
    let out = curl_output(curl).await;
    assert!(
        out.status.success(),
        "curl {call:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A quiet `curl` through the HTTP proxy at `proxy` trusting the CA file `ca`,
/// speaking HTTP/1.1 unless `args` has `--http2` (the caller adds `args`).
pub fn curl_via(proxy: SocketAddr, ca: &Path, args: &[&str]) -> tokio::process::Command {
    let mut curl = tokio::process::Command::new("curl");
    curl.args(["--silent", "--proxy", &format!("http://{proxy}")])
        .arg("--cacert")
        .arg(ca);
    if !args.contains(&"--http2") {
        curl.arg("--http1.1");
    }
    curl
}
