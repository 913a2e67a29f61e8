//! Test helpers: origins, proxies and clients, all on loopback and made here.
#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mitm::{async_trait, Bytes, CertificateAuthority, Connection, Middleware, MitmBuilder};
use mitm::{Mitm, MitmHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long any wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One request as an origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
/// - `/bytes/N`: N bytes of a fixed pattern ([`pattern`]);
/// - `/echo`: the request body;
/// - anything else: `hello from origin: METHOD TARGET`.
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
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

async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), connections.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let seen = s.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_http(stream, seen).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_http(stream, seen).await;
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
        task,
    }
}

/// Serves keep-alive HTTP/1.1 requests on one connection until it closes.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, seen: Arc<Mutex<Vec<Seen>>>) {
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
        let body = if let Some(n) = path.strip_prefix("/bytes/") {
            pattern(n.parse().unwrap_or(0))
        } else if path == "/echo" {
            req.body.clone()
        } else {
            format!("hello from origin: {} {}", req.method, req.target).into_bytes()
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        seen.lock().unwrap().push(req);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
            return;
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
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
    let mut headers = [httparse::EMPTY_HEADER; 64];
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
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if read_more(s, buf).await == 0 {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        buf.drain(..i + 2);
                        if i == 0 {
                            break;
                        }
                        continue;
                    }
                    if read_more(s, buf).await == 0 {
                        return None;
                    }
                }
                break;
            }
            while buf.len() < size + 2 {
                if read_more(s, buf).await == 0 {
                    return None;
                }
            }
            seen.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
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
    pub addr: SocketAddr,
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
    TestProxy {
        handle: proxy.spawn(),
        addr,
        ca,
    }
}

/// A reqwest client that uses `proxy` for every scheme and trusts only its CA.
pub fn client_via(proxy: &TestProxy) -> reqwest::Client {
    client_for(&proxy.url(), &proxy.ca)
}

/// A reqwest client that uses the proxy at `proxy_url` and trusts only `ca`.
pub fn client_for(proxy_url: &str, ca: &CertificateAuthority) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy_url).unwrap())
        .use_preconfigured_tls(tls)
        .timeout(PATIENCE)
        .build()
        .unwrap()
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

/// Whether `tool` can be run; tests that need it print why they skip otherwise.
pub fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
