//! The origin server: a minimal HTTP/1.1 keep-alive server, plain on one port and TLS on
//! another, serving `/1k` (1 KiB) and `/big` (a large body streamed from one static
//! buffer, never allocated per request).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::{Buf, BytesMut};
use mitm::CertificateAuthority;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// What `/big` is written from, over and over.
static CHUNK: [u8; 256 * 1024] = [b'x'; 256 * 1024];
/// Size of the `/1k` body.
const SMALL: usize = 1024;
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A running origin; its listeners stop when it is dropped.
#[derive(Debug)]
pub struct Origin {
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    /// TLS as `tls`, resuming sessions (TLS 1.3 tickets, TLS 1.2 session IDs) as most
    /// servers do: `https-resume`'s origin.
    pub tls_resuming: SocketAddr,
    accept_loops: Vec<JoinHandle<()>>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        for task in &self.accept_loops {
            task.abort();
        }
    }
}

/// Starts the origin on loopback. Its TLS side presents, for whatever name the client
/// asks for, a leaf that `ca` signs (cached by `ca`; issue ahead with
/// [`CertificateAuthority::certified_key`] to keep signing out of a measurement).
/// `/big` is `big` bytes long. The plain side listens on `plain` (port 0: any free port).
pub async fn start(ca: Arc<CertificateAuthority>, big: u64, plain: SocketAddr) -> Result<Origin> {
    let plain = TcpListener::bind(plain)
        .await
        .with_context(|| format!("the origin cannot listen on {plain}"))?;
    let tls = TcpListener::bind("127.0.0.1:0").await?;
    let provider = mitm::tls::crypto_provider();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(LeafPerName(ca)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let resuming = TlsAcceptor::from(Arc::new(config.clone()));
    let tls_resuming = TcpListener::bind("127.0.0.1:0").await?;
    // No session resumption: every handshake with the origin is a full one, direct or
    // from the proxy, as the bench client's are. Otherwise the proxy would resume its
    // upstream sessions to a name it has seen, and `hosts-cold` would measure that
    // (about 0.3 ms on a 2-core VM) rather than the proxy's own per-host work.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let origin = Origin {
        plain: plain.local_addr()?,
        tls: tls.local_addr()?,
        tls_resuming: tls_resuming.local_addr()?,
        accept_loops: vec![
            tokio::spawn(accept_loop(plain, None, big)),
            tokio::spawn(accept_loop(tls, Some(acceptor), big)),
            tokio::spawn(accept_loop(tls_resuming, Some(resuming), big)),
        ],
    };
    Ok(origin)
}

/// Picks the CA's leaf for the SNI name of each handshake.
#[derive(Debug)]
struct LeafPerName(Arc<CertificateAuthority>);

impl ResolvesServerCert for LeafPerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key(hello.server_name()?).ok()
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, big: u64) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            // Errors are the client's business (the bench counts them on its side).
            let _ = serve_connection(stream, tls, big).await;
        });
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, big: u64) -> Result<()> {
    stream.set_nodelay(true)?;
    match tls {
        None => serve(stream, big).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(crate::client::IO_TIMEOUT, acceptor.accept(stream));
            serve(handshake.await??, big).await
        }
    }
}

/// Answers requests on one connection until the client closes it. Requests are `GET`s
/// without bodies, so everything after a head is the next head.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, big: u64) -> Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let end = loop {
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD || io.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let path = request_path(&buf[..end]);
        match path.as_deref() {
            Some("/1k") => io.write_all(small_response()).await?,
            // The same body, and the connection ends: no one can keep it for later.
            Some(CLOSING_PATH) => {
                io.write_all(closing_response()).await?;
                io.flush().await?;
                return Ok(());
            }
            Some("/big") => write_big(&mut io, big).await?,
            _ => {
                io.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await?
            }
        }
        io.flush().await?;
        buf.advance(end);
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The request's path; an absolute-form target (`http://host/1k`, as a proxy that
/// forwards requests verbatim sends it) gives its path too.
fn request_path(head: &[u8]) -> Option<String> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut fields);
    request.parse(head).ok()?;
    let target = request.path?;
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    Some(path.to_owned())
}

/// A path answered like `/1k`, then the connection is closed (`hosts-cold`: the proxy
/// then keeps no upstream connection, and every request pays for a new one).
pub const CLOSING_PATH: &str = "/1k-close";

/// The whole `/1k-close` response, made once.
fn closing_response() -> &'static [u8] {
    static RESPONSE: OnceLock<Vec<u8>> = OnceLock::new();
    RESPONSE.get_or_init(|| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {SMALL}\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes();
        r.extend_from_slice(&CHUNK[..SMALL]);
        r
    })
}

/// The whole `/1k` response, made once.
fn small_response() -> &'static [u8] {
    static RESPONSE: OnceLock<Vec<u8>> = OnceLock::new();
    RESPONSE.get_or_init(|| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {SMALL}\r\n\r\n"
        )
        .into_bytes();
        r.extend_from_slice(&CHUNK[..SMALL]);
        r
    })
}

async fn write_big<S: AsyncWrite + Unpin>(io: &mut S, len: u64) -> Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    );
    io.write_all(head.as_bytes()).await?;
    let mut remaining = len;
    while remaining > 0 {
        let n = CHUNK
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        io.write_all(&CHUNK[..n]).await?;
        remaining -= n as u64;
    }
    Ok(())
}
