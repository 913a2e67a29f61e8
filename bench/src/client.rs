//! The load client: how to reach the origin (directly or through the proxy, plain or
//! TLS), one HTTP/1.1 exchange at a time on a connection, and a latency histogram.

use std::net::SocketAddr;
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Where a client connects and how it phrases requests.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The TCP address dialled: the origin's or the proxy's.
    addr: SocketAddr,
    /// `CONNECT` authority sent first (HTTPS through the proxy).
    tunnel: Option<String>,
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
            host: origin.to_string(),
        }
    }

    /// Plain HTTP through the proxy, absolute-form.
    pub fn plain_proxy(proxy: SocketAddr, origin: SocketAddr) -> Self {
        Endpoint {
            addr: proxy,
            tunnel: None,
            tls: None,
            prefix: format!("http://{origin}"),
            host: origin.to_string(),
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
            tunnel: Some(authority.clone()),
            tls: Some((config, server_name(name)?)),
            prefix: String::new(),
            host: authority,
        })
    }

    /// A keep-alive `GET` of `path`, as bytes.
    pub fn request(&self, path: &str) -> Vec<u8> {
        format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mitm-bench\r\n\r\n",
            self.prefix, self.host
        )
        .into_bytes()
    }

    /// Connects: TCP, then `CONNECT` and TLS as configured.
    pub async fn open(&self) -> Result<Conn> {
        let tcp = timed("connect", TcpStream::connect(self.addr)).await?;
        tcp.set_nodelay(true)?;
        let mut conn = Conn::new(Box::new(tcp));
        if let Some(authority) = &self.tunnel {
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
