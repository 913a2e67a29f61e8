//! The [`Protocol`] trait: how the server learns what a client speaks and where its
//! connection goes.
//!
//! For each client the server reads the first bytes and offers them to every protocol,
//! in the order they were configured, through [`Protocol::resolve`]. A protocol answers
//! with a [`Resolution`]: it takes the connection (and names the [`Target`]), it is not
//! this protocol, or it needs more bytes to tell. The server keeps reading until one
//! takes it, all have declined, `bytes_needed` is reached or the timeout passes, so a
//! request head split over several TCP segments is still recognised.
//!
//! The winner then [`connect`](Protocol::connect)s: it answers the client as its
//! protocol requires (e.g. `200 Connection established`), reaches the upstream through
//! the [`Context`], and returns a [`Tunnel`] of two streams, which
//! [`handle`](Protocol::handle) relays (by default through the middlewares' data hooks).
//!
//! To add a protocol, implement the trait in a file of its own under `src/protocol/`
//! (or in your crate) and list it with [`MitmBuilder::protocol`](crate::MitmBuilder::protocol).

pub mod http;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::ca::CertificateAuthority;
use crate::core::{Connection, Host, Target};
use crate::error::Result;
use crate::io::BoxIo;
use crate::middleware::Chain;
use crate::relay::{relay, RelayOptions};
use crate::upstream::{connect_tcp, Resolve, UpstreamTls};

pub use self::http::Http;

/// The default of [`Protocol::bytes_needed`]: the original's, 8 KiB.
pub const DEFAULT_BYTES_NEEDED: usize = 8192;
/// The default of [`Protocol::buffer_size`]: 8 KiB.
pub const DEFAULT_BUFFER_SIZE: usize = 8192;
/// The default of [`Protocol::timeout`]: 15 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a protocol makes of a client's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// This protocol takes the connection, to this target.
    Accept(Target),
    /// Not this protocol: the server offers the bytes to the next one.
    NotMine,
    /// The bytes so far are a valid beginning; ask again when more have arrived.
    NeedMore,
}

/// The two streams of a connection, ready to relay.
#[non_exhaustive]
pub struct Tunnel {
    /// The client side (plaintext: TLS already terminated if intercepted).
    pub client: BoxIo,
    /// The upstream side (plaintext: TLS already set up if the upstream speaks it).
    pub server: BoxIo,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}

impl Tunnel {
    /// A tunnel between `client` and `server`.
    pub fn new(client: BoxIo, server: BoxIo) -> Self {
        Tunnel { client, server }
    }
}

/// What [`Protocol::connect`] achieved.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connected {
    /// An upstream is connected (and `conn.server` set): relay the tunnel.
    Tunnel(Tunnel),
    /// The protocol answered the client itself (an error page, a local reply); there is
    /// nothing to relay.
    Handled,
}

/// A way of speaking to clients, recognised from their first bytes.
///
/// The settings mirror the original's class attributes; each has a default.
#[async_trait]
pub trait Protocol: Send + Sync + 'static {
    /// A short name for logs and [`Connection::protocol`], e.g. `"http"`.
    fn name(&self) -> &'static str;

    /// At most this many first bytes are read before the protocol must decide; if it
    /// still says [`Resolution::NeedMore`] then, it is taken as
    /// [`Resolution::NotMine`]. Default: [`DEFAULT_BYTES_NEEDED`].
    fn bytes_needed(&self) -> usize {
        DEFAULT_BYTES_NEEDED
    }

    /// Bytes read per chunk when relaying. Default: [`DEFAULT_BUFFER_SIZE`].
    fn buffer_size(&self) -> usize {
        DEFAULT_BUFFER_SIZE
    }

    /// How long to wait for the first bytes, for the upstream to connect, and (when
    /// [`keep_alive`](Self::keep_alive) is false) for a relayed connection to move a
    /// byte before it is closed. Default: [`DEFAULT_TIMEOUT`].
    fn timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }

    /// Whether relayed connections stay open while idle, for as long as both peers keep
    /// them. When false, a connection with no byte moving either way for
    /// [`timeout`](Self::timeout) is closed. Default: `true`.
    fn keep_alive(&self) -> bool {
        true
    }

    /// Decides from `data`, the client's first bytes, whether this protocol speaks the
    /// connection and where it goes. Called again with more bytes after
    /// [`Resolution::NeedMore`].
    async fn resolve(&self, conn: &Connection, data: &[u8]) -> Resolution;

    /// Reaches `target` and does whatever the protocol requires of the client first.
    ///
    /// `data` is the first bytes after the middlewares' `client_data` hooks; they have
    /// been read from `client` already. On success, set `conn.server` (the
    /// [`Context::connect`] helpers do) and return the tunnel to relay. On failure,
    /// answer the client if the protocol can (e.g. a `502` page), then return the error,
    /// which the server logs.
    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> Result<Connected>;

    /// Relays the tunnel until the connection ends. Default: copies both ways through
    /// the middlewares' data hooks, honouring [`buffer_size`](Self::buffer_size),
    /// [`timeout`](Self::timeout) and [`keep_alive`](Self::keep_alive).
    async fn handle(&self, cx: &Context, conn: &Connection, tunnel: Tunnel) -> Result<()> {
        let idle_timeout = (!self.keep_alive()).then(|| self.timeout());
        cx.relay(conn, tunnel, self.buffer_size(), idle_timeout)
            .await
    }
}

/// The services of a server that protocols use: the CA, the upstream connector, the
/// middlewares.
#[derive(Clone)]
pub struct Context {
    pub(crate) chain: Chain,
    pub(crate) ca: Arc<CertificateAuthority>,
    pub(crate) upstream_tls: Arc<UpstreamTls>,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) pool: Arc<crate::h1::pool::Pool>,
    /// The `Proxy-Authorization` value clients must send, if any.
    pub(crate) proxy_auth: Option<Arc<[u8]>>,
    /// Where the server listens: requests addressed there would loop.
    pub(crate) local_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("chain", &self.chain)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The certificate authority that signs leaves for intercepted hosts.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The resolver used for upstream names.
    pub fn resolver(&self) -> &Arc<dyn Resolve> {
        &self.resolver
    }

    /// Connects to `target` over TCP within `timeout` and records the peer in
    /// `conn.server`.
    pub async fn connect(
        &self,
        conn: &mut Connection,
        target: &Target,
        timeout: Duration,
    ) -> Result<TcpStream> {
        let (tcp, addr) = connect_tcp(self.resolver.as_ref(), target, timeout).await?;
        conn.server = Host::new(addr);
        Ok(tcp)
    }

    /// Connects to `target` and runs a TLS handshake with it, verified as the server is
    /// configured, naming `server_name` by SNI and offering `alpn`. The handshake has
    /// `timeout` too. Records the peer in `conn.server`.
    pub async fn connect_tls(
        &self,
        conn: &mut Connection,
        target: &Target,
        server_name: &str,
        alpn: &[Vec<u8>],
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>> {
        let tcp = self.connect(conn, target, timeout).await?;
        let handshake = self.upstream_tls.connect(tcp, target, server_name, alpn);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(crate::Error::ConnectTimeout {
                target: target.to_string(),
            }),
        }
    }

    /// Whether a request with these headers may use the proxy (always, when no
    /// credentials were configured).
    pub(crate) fn authorized(&self, headers: &crate::message::Headers) -> bool {
        let Some(expected) = &self.proxy_auth else {
            return true;
        };
        headers
            .get_all("proxy-authorization")
            .any(|v| v.trim_ascii() == &expected[..])
    }

    /// Whether `target` is the proxy itself (a request there would come back around).
    pub(crate) fn is_self(&self, target: &Target) -> bool {
        let Some(local) = self.local_addr else {
            return false;
        };
        if target.port != local.port() {
            return false;
        }
        let host = target.host.trim_end_matches('.');
        let loopback_name = host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost");
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                ip == local.ip()
                    || (local.ip().is_unspecified() || local.ip().is_loopback()) && ip.is_loopback()
            }
            Err(_) => loopback_name && (local.ip().is_loopback() || local.ip().is_unspecified()),
        }
    }

    /// Records that `conn` is now connected to its server (`conn.server`) and fires
    /// `server_connected`. Protocols that connect upstream call it; the server fires
    /// the matching `server_disconnected` at the end.
    pub async fn announce_server(&self, conn: &mut Connection) {
        conn.server_announced = true;
        self.chain.server_connected(conn).await;
    }

    /// Fires `server_disconnected` if a server was announced, and forgets it: for a
    /// protocol that moves a connection from one upstream to another.
    pub async fn retire_server(&self, conn: &mut Connection) {
        if std::mem::take(&mut conn.server_announced) {
            self.chain.server_disconnected(conn).await;
        }
        conn.server = Host::default();
    }

    /// Relays `tunnel` both ways through the data hooks until it ends. `idle_timeout`,
    /// when set, closes it after that long without a byte moving.
    pub async fn relay(
        &self,
        conn: &Connection,
        tunnel: Tunnel,
        buffer_size: usize,
        idle_timeout: Option<Duration>,
    ) -> Result<()> {
        let opts = RelayOptions {
            buffer_size,
            idle_timeout,
            zero_copy: true,
        };
        self.relay_with(conn, tunnel, opts).await
    }

    /// [`relay`](Self::relay) with every option.
    pub(crate) async fn relay_with(
        &self,
        conn: &Connection,
        tunnel: Tunnel,
        opts: RelayOptions,
    ) -> Result<()> {
        relay(&self.chain, conn, tunnel.client, tunnel.server, opts).await
    }
}
