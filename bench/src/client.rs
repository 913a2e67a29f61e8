//! The load client: how to reach the origin (directly, through the proxy as an HTTP
//! proxy or a SOCKS5 one, plain or TLS), one HTTP/1.1 exchange at a time on a
//! connection, and a latency histogram.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::{Buf, BytesMut};
use mitm::BoxIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest wait for any one network step (connect, handshake, read) before it counts as
/// a failure: nothing the bench does can hang for longer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Read size while draining large bodies.
const READ_CHUNK: usize = 256 * 1024;

/// Runs `step` with [`IO_TIMEOUT`], naming it in the error.
pub async fn timed<T>(
    what: &str,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(IO_TIMEOUT, step).await {
        Ok(r) => r.with_context(|| what.to_owned()),
        Err(_) => bail!("{what}: no progress in {IO_TIMEOUT:?}"),
    }
}

/// A TLS client config trusting only `root`, offering HTTP/1.1, and never resuming a
/// session: every handshake is a full one, so direct and proxied handshakes compare like
/// for like.
pub fn tls_config(root: &rustls::pki_types::CertificateDer<'static>) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    let provider = mitm::tls::crypto_provider();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// `config` with a session store of its own, so that its handshakes resume sessions
/// (as browsers' do): `https-resume`'s client.
pub fn resuming(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.resumption = rustls::client::Resumption::default();
    Arc::new(config)
}

/// How a connection through the proxy reaches its origin before the first request.
#[derive(Clone, Debug)]
enum Tunnel {
    /// `CONNECT authority` (HTTPS through an HTTP proxy).
    Connect(String),
    /// A SOCKS5 `CONNECT` to this address, without authentication (RFC 1928).
    Socks5(SocketAddr),
}

/// Where a client connects and how it phrases requests.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The TCP address dialled: the origin's or the proxy's.
    addr: SocketAddr,
    /// What is said to the proxy first, if anything.
    tunnel: Option<Tunnel>,
    /// TLS after connecting (or after `CONNECT`): config and the name to verify.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Put before the path: `http://host:port` for absolute-form requests to a proxy.
    prefix: String,
    /// The `Host` field.
    host: String,
}

impl Endpoint {
    /// Plain HTTP straight to the origin.
    pub fn plain_direct(origin: SocketAddr) -> Self {
        Endpoint {
            addr: origin,
            tunnel: None,
            tls: None,
            prefix: String::new(),
            host: authority(origin),
        }
    }

    /// Plain HTTP through the proxy, absolute-form.
    pub fn plain_proxy(proxy: SocketAddr, origin: SocketAddr) -> Self {
        Endpoint {
            addr: proxy,
            tunnel: None,
            tls: None,
            prefix: format!("http://{}", authority(origin)),
            host: authority(origin),
        }
    }

    /// TLS straight to the origin, verifying it as `name`.
    pub fn tls_direct(origin: SocketAddr, name: &str, config: Arc<ClientConfig>) -> Result<Self> {
        Ok(Endpoint {
            addr: origin,
            tunnel: None,
            tls: Some((config, server_name(name)?)),
            prefix: String::new(),
            host: format!("{name}:{}", origin.port()),
        })
    }

    /// `CONNECT name:port` through the proxy, then TLS verifying the proxy's leaf for
    /// `name`. The proxy resolves `*.localhost` to loopback itself.
    pub fn tls_proxy(
        proxy: SocketAddr,
        name: &str,
        port: u16,
        config: Arc<ClientConfig>,
    ) -> Result<Self> {
        let authority = format!("{name}:{port}");
        Ok(Endpoint {
            addr: proxy,
            tunnel: Some(Tunnel::Connect(authority.clone())),
            tls: Some((config, server_name(name)?)),
            prefix: String::new(),
            host: authority,
        })
    }

    /// Plain HTTP through the proxy as a SOCKS5 proxy: a SOCKS5 `CONNECT` to the origin's
    /// address, then origin-form requests as if direct.
    pub fn socks5_proxy(proxy: SocketAddr, origin: SocketAddr) -> Self {
        Endpoint {
            addr: proxy,
            tunnel: Some(Tunnel::Socks5(origin)),
            tls: None,
            prefix: String::new(),
            host: authority(origin),
        }
    }

    /// A keep-alive `GET` of `path`, as bytes.
    pub fn request(&self, path: &str) -> Vec<u8> {
        format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mitm-bench\r\n\r\n",
            self.prefix, self.host
        )
        .into_bytes()
    }

    /// Connects: TCP, then `CONNECT` or SOCKS5, and TLS, as configured.
    pub async fn open(&self) -> Result<Conn> {
        let mut tcp = timed("connect", TcpStream::connect(self.addr)).await?;
        tcp.set_nodelay(true)?;
        if let Some(Tunnel::Socks5(target)) = &self.tunnel {
            socks5_connect(&mut tcp, *target).await?;
        }
        let mut conn = Conn::new(Box::new(tcp));
        if let Some(Tunnel::Connect(authority)) = &self.tunnel {
            let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            conn.send(connect.as_bytes()).await?;
            let head = conn.read_head().await.context("CONNECT")?;
            if head.status != 200 {
                bail!("CONNECT {authority}: status {}", head.status);
            }
        }
        if let Some((config, name)) = &self.tls {
            if !conn.buf.is_empty() {
                bail!("unexpected bytes after the CONNECT response");
            }
            let connector = TlsConnector::from(config.clone());
            let tls = timed("TLS handshake", connector.connect(name.clone(), conn.io)).await?;
            conn = Conn::new(Box::new(tls));
        }
        Ok(conn)
    }
}

/// `addr` as a plain HTTP URL's authority: without the port when it is 80, as clients
/// write it (a proxy that ignores the `Host` field's port, as the original Python mitm
/// does, then still finds an origin on port 80).
fn authority(addr: SocketAddr) -> String {
    match (addr.port(), addr) {
        (80, SocketAddr::V4(v4)) => v4.ip().to_string(),
        (80, SocketAddr::V6(v6)) => format!("[{}]", v6.ip()),
        _ => addr.to_string(),
    }
}

/// SOCKS5 without authentication (RFC 1928): asks the proxy on `io` to connect to
/// `target`. Reads exactly the replies' bytes, so that all that follows on `io` comes
/// from the target.
async fn socks5_connect(io: &mut TcpStream, target: SocketAddr) -> Result<()> {
    // Version 5, one method offered: 0, no authentication.
    timed("SOCKS5 greeting", io.write_all(&[5, 1, 0])).await?;
    let mut choice = [0; 2];
    timed("SOCKS5 method reply", io.read_exact(&mut choice)).await?;
    match choice {
        [5, 0] => {}
        [5, 0xff] => bail!("SOCKS5: the proxy wants authentication"),
        other => bail!("SOCKS5: unexpected method reply {other:02x?}"),
    }
    let request = socks5_request(target);
    timed("SOCKS5 request", io.write_all(&request)).await?;
    // VER REP RSV ATYP, then the address the proxy bound and its port.
    let mut head = [0; 4];
    timed("SOCKS5 reply", io.read_exact(&mut head)).await?;
    let [version, reply, _, kind] = head;
    if version != 5 {
        bail!("SOCKS5 CONNECT {target}: reply of version {version}");
    }
    if reply != 0 {
        bail!("SOCKS5 CONNECT {target}: {}", socks5_failure(reply));
    }
    let address_len = match kind {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0; 1];
            timed("SOCKS5 reply", io.read_exact(&mut len)).await?;
            usize::from(len[0])
        }
        other => bail!("SOCKS5 CONNECT {target}: reply with address type {other}"),
    };
    let mut bound = [0; 255 + 2];
    timed("SOCKS5 reply", io.read_exact(&mut bound[..address_len + 2])).await?;
    Ok(())
}

/// A SOCKS5 `CONNECT` request for `target`: VER CMD RSV ATYP ADDR PORT.
fn socks5_request(target: SocketAddr) -> Vec<u8> {
    let mut request = vec![5, 1, 0];
    match target.ip() {
        IpAddr::V4(ip) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    request
}

/// What a SOCKS5 reply code means (RFC 1928, section 6).
fn socks5_failure(code: u8) -> String {
    let text = match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown failure",
    };
    format!("{text} (reply {code})")
}

fn server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|e| anyhow!("bad TLS name {name:?}: {e}"))
}

/// A response head, as far as the bench needs it.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
}

/// One client connection: the stream and what was read ahead of the current position.
pub struct Conn {
    io: BoxIo,
    buf: BytesMut,
    scratch: Vec<u8>,
}

impl Conn {
    fn new(io: BoxIo) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            scratch: Vec::new(),
        }
    }

    /// Writes `bytes` and flushes them (TLS streams buffer writes).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        timed("write", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
    }

    /// One whole exchange: sends `request`, reads the response and its body, which must
    /// be a `200` with a `Content-Length`. Returns the body's size.
    pub async fn get(&mut self, request: &[u8]) -> Result<u64> {
        self.send(request).await?;
        let len = self.read_ok_head().await?;
        self.read_body(len, |_| true).await?;
        Ok(len)
    }

    /// Reads a response head that must be `200` with a `Content-Length`; returns it.
    pub async fn read_ok_head(&mut self) -> Result<u64> {
        let head = self.read_head().await?;
        if head.status != 200 {
            bail!("status {}", head.status);
        }
        head.content_length
            .ok_or_else(|| anyhow!("response without Content-Length"))
    }

    /// Reads and consumes a response head; body bytes read with it stay buffered.
    pub async fn read_head(&mut self) -> Result<Head> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(end) = response.parse(&self.buf)? {
                let head = head_of(&response)?;
                self.buf.advance(end);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                bail!("response head larger than {MAX_HEAD} bytes");
            }
            if timed("read", self.io.read_buf(&mut self.buf)).await? == 0 {
                bail!("connection closed before the response head");
            }
        }
    }

    /// Reads `len` body bytes, calling `progress` with each piece's size; stops early
    /// (returning false) when `progress` returns false.
    pub async fn read_body(
        &mut self,
        len: u64,
        mut progress: impl FnMut(usize) -> bool,
    ) -> Result<bool> {
        let buffered = self
            .buf
            .len()
            .min(usize::try_from(len).unwrap_or(usize::MAX));
        self.buf.advance(buffered);
        let mut remaining = len - buffered as u64;
        if buffered > 0 && !progress(buffered) {
            return Ok(false);
        }
        if remaining > 0 && self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
        }
        while remaining > 0 {
            let want = self
                .scratch
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let n = timed("read body", self.io.read(&mut self.scratch[..want]))
                .await
                .with_context(|| format!("{remaining} of {len} body bytes still to come"))?;
            if n == 0 {
                bail!("connection closed with {remaining} body bytes to go");
            }
            remaining -= n as u64;
            if !progress(n) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn head_of(response: &httparse::Response<'_, '_>) -> Result<Head> {
    let status = response.code.ok_or_else(|| anyhow!("no status"))?;
    let mut content_length = None;
    for field in response.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(field.value)?;
            content_length = Some(text.trim().parse::<u64>()?);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("the bench expects Content-Length framing, got Transfer-Encoding");
        }
    }
    Ok(Head {
        status,
        content_length,
    })
}

/// Latencies in log-spaced buckets: 16 per power of two (about 6 % wide), from 1 ns up.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
}

/// Buckets below this index hold one nanosecond value each.
const LINEAR: usize = 16;
const BUCKETS: usize = LINEAR + 60 * 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_ns: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns)] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
    }

    /// The `q` quantile (0..=1), as its bucket's midpoint; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_range(i);
                return Some(Duration::from_nanos(low.saturating_add(width / 2)));
            }
        }
        None
    }

    pub fn mean(&self) -> Option<Duration> {
        let mean = self.sum_ns.checked_div(u128::from(self.total))?;
        Some(Duration::from_nanos(
            u64::try_from(mean).unwrap_or(u64::MAX),
        ))
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < LINEAR as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros() as usize; // >= 4
    let sub = ((ns >> (exp - 4)) - 16) as usize;
    LINEAR + (exp - 4) * 16 + sub
}

/// The lowest value and the width of bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < LINEAR {
        return (i as u64, 1);
    }
    let exp = (i - LINEAR) / 16 + 4;
    let sub = ((i - LINEAR) % 16) as u64;
    ((16 + sub) << (exp - 4), 1 << (exp - 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection SOCKS5 server that checks the greeting and a request for
    /// `origin`, answers `reply` (the bytes after VER REP RSV), then, when REP is 0,
    /// `response` in the same write and reads the request that comes through.
    async fn fake_socks5(
        origin: SocketAddr,
        rep: u8,
        reply: &'static [u8],
        response: &'static [u8],
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut io, _) = listener.accept().await.unwrap();
            let mut greeting = [0; 3];
            io.read_exact(&mut greeting).await.unwrap();
            assert_eq!(greeting, [5, 1, 0]);
            io.write_all(&[5, 0]).await.unwrap();
            let mut request = vec![0; socks5_request(origin).len()];
            io.read_exact(&mut request).await.unwrap();
            assert_eq!(request, socks5_request(origin));
            let mut out = vec![5, rep, 0];
            out.extend_from_slice(reply);
            if rep == 0 {
                out.extend_from_slice(response);
            }
            io.write_all(&out).await.unwrap();
            let mut seen = Vec::new();
            let _ = io.read_to_end(&mut seen).await;
            seen
        });
        (addr, task)
    }

    #[test]
    fn socks5_requests_name_the_address() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(socks5_request(v4), [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]);
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        let mut want = vec![5, 1, 0, 4];
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[1, 1, 0xbb]);
        assert_eq!(socks5_request(v6), want);
    }

    #[tokio::test]
    async fn socks5_reply_is_read_exactly_and_requests_follow_in_origin_form() {
        let origin: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // An IPv6 bound address, and the response right behind the reply: the client
        // must take the reply's 22 bytes and no more.
        let reply: &[u8] = &[
            4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x30, 0x39,
        ];
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (proxy, server) = fake_socks5(origin, 0, reply, response).await;
        let endpoint = Endpoint::socks5_proxy(proxy, origin);
        let mut conn = endpoint.open().await.unwrap();
        assert_eq!(conn.get(&endpoint.request("/1k")).await.unwrap(), 2);
        drop(conn);
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            seen.starts_with("GET /1k HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"),
            "{seen}"
        );
    }

    #[tokio::test]
    async fn socks5_failures_are_named() {
        let origin: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let reply: &[u8] = &[1, 0, 0, 0, 0, 0, 0];
        let (proxy, _server) = fake_socks5(origin, 5, reply, b"").await;
        let endpoint = Endpoint::socks5_proxy(proxy, origin);
        let e = endpoint.open().await.err().unwrap();
        assert!(
            format!("{e:#}").contains("connection refused (reply 5)"),
            "{e:#}"
        );
    }

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        for ns in [
            0,
            1,
            15,
            16,
            17,
            31,
            32,
            1000,
            123_456,
            10_000_000_000,
            u64::MAX,
        ] {
            let (low, width) = bucket_range(bucket_of(ns));
            assert!(low <= ns && ns - low < width, "{ns}");
            assert!(width <= 1.max(ns / 16 + 1), "{ns}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for us in 1..=100 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros();
        let p99 = h.quantile(0.99).unwrap().as_micros();
        assert!((47..=53).contains(&p50), "{p50}");
        assert!((94..=104).contains(&p99), "{p99}");
        assert_eq!(h.mean().unwrap().as_nanos(), 50_500);
    }
}
