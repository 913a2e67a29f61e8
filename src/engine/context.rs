//! [`Context`]: the services of a server that protocols (the built-in ones and yours)
//! use: the CA, the upstream layer, the middlewares, the relay.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::client::TlsStream;

use crate::core::{Connection, Host, Target};
use crate::engine::relay::{relay, RelayOptions, Tunnel};
use crate::error::Result;
use crate::http::message::Headers;
use crate::middleware::Chain;
use crate::net::io::BoxIo;
use crate::tls::ca::CertificateAuthority;
use crate::tls::fail_open::FailOpen;
use crate::upstream::{Resolve, Route, Upstreams};

/// The services of a server that protocols use: the CA, the upstream connector, the
/// middlewares. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub(crate) chain: Chain,
    pub(crate) ca: Arc<CertificateAuthority>,
    pub(crate) upstreams: Arc<Upstreams>,
    /// How connections leave the proxy unless a middleware's `route` says otherwise
    /// (the listener's: direct, or its `upstream:` mode's proxy).
    pub(crate) route: Route,
    /// The `Proxy-Authorization` value clients must send, if any.
    pub(crate) proxy_auth: Option<Arc<[u8]>>,
    /// The same credentials as a user name and password, for protocols that take them
    /// as such (SOCKS5).
    pub(crate) proxy_credentials: Option<Arc<(String, String)>>,
    /// Where the server listens (every listener): requests addressed there would loop.
    pub(crate) local_addrs: Arc<[std::net::SocketAddr]>,
    /// Turns true when the server stops: connections idle between requests close at
    /// once, exchanges in flight finish.
    pub(crate) stopping: watch::Receiver<bool>,
    /// The hosts whose clients refused the proxy's certificate, passed through for a
    /// while; `None` when TLS fail-open is off.
    pub(crate) fail_open: Option<Arc<FailOpen>>,
    /// The last connection id given out: one counter for every listener and sender of
    /// a server, so that ids are unique among its connections.
    pub(crate) ids: Arc<std::sync::atomic::AtomicU64>,
    /// Where the client-side TLS secrets go (the upstream side's are in its client
    /// config); `None` when key logging is off.
    pub(crate) key_log: Option<Arc<dyn rustls::KeyLog>>,
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
    /// A new connection id, unique among the server's connections (from 1).
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// `config` (a leaf's server config) logging its secrets to the key log when one is
    /// set: a shallow copy then, the CA's cached config itself when not.
    pub(crate) fn with_key_log(
        &self,
        config: Arc<rustls::ServerConfig>,
    ) -> Arc<rustls::ServerConfig> {
        match &self.key_log {
            None => config,
            Some(log) => {
                let mut config = (*config).clone();
                config.key_log = log.clone();
                Arc::new(config)
            }
        }
    }

    /// The certificate authority that signs leaves for intercepted hosts.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The resolver used for upstream names.
    pub fn resolver(&self) -> &Arc<dyn Resolve> {
        self.upstreams.resolver()
    }

    /// How a connection to `target` leaves the proxy: what the middlewares'
    /// [`route`](crate::Router::route) hooks choose, or the listener's route.
    pub async fn route_for(&self, conn: &Connection, target: &Target) -> Route {
        match self.chain.route(conn, target).await {
            Some(route) => route,
            None => self.route.clone(),
        }
    }

    /// Connects to `target` within `timeout`, by the route
    /// [`route_for`](Self::route_for) chooses (TCP straight to it, or a tunnel through
    /// an upstream proxy), and records the peer reached in `conn.server`. The
    /// connection counts against the server's connection limit until the client
    /// connection ends.
    ///
    /// The server fires `server_connected` for the [`Tunnel`] a protocol's `connect`
    /// returns; a protocol that serves the client itself (returning
    /// [`Connected::Handled`](crate::Connected::Handled)) calls
    /// [`announce_server`](Self::announce_server) once it is connected.
    pub async fn connect(
        &self,
        conn: &mut Connection,
        target: &Target,
        timeout: Duration,
    ) -> Result<BoxIo> {
        let route = self.route_for(conn, target).await;
        let tcp = self.upstreams.tcp(&route, target, timeout).await?;
        conn.server = Host::new(tcp.addr);
        conn.server_facts = Some(crate::upstream::facts_of(tcp.socket, None));
        conn.permits.push(tcp.permit);
        Ok(tcp.stream)
    }

    /// Connects to `target` and runs a TLS handshake with it, verified as the server is
    /// configured, naming `server_name` by SNI and offering `alpn`. The handshake has
    /// `timeout` too. Records the peer in `conn.server`, as [`connect`](Self::connect).
    pub async fn connect_tls(
        &self,
        conn: &mut Connection,
        target: &Target,
        server_name: &str,
        alpn: &[Vec<u8>],
        timeout: Duration,
    ) -> Result<TlsStream<BoxIo>> {
        let tcp = self.connect(conn, target, timeout).await?;
        // Read ahead under TLS: large reads when a body streams in.
        let tcp: BoxIo = Box::new(crate::net::io::ReadAhead::new(tcp));
        let tls = self
            .upstreams
            .handshake(tcp, target, server_name, alpn, timeout)
            .await?;
        let socket = conn.server_facts.as_ref().map(|f| f.socket);
        conn.server_facts = Some(crate::upstream::facts_of(
            socket.unwrap_or_default(),
            Some((tls.get_ref().1, server_name, alpn)),
        ));
        Ok(tls)
    }

    /// Whether a request with these headers may use the proxy (always, when no
    /// credentials were configured).
    pub(crate) fn authorized(&self, headers: &Headers) -> bool {
        let Some(expected) = &self.proxy_auth else {
            return true;
        };
        headers
            .get_all("proxy-authorization")
            .any(|v| v.trim_ascii() == &expected[..])
    }

    /// Whether `target` is the proxy itself (a request there would come back around).
    pub(crate) fn is_self(&self, target: &Target) -> bool {
        self.local_addrs
            .iter()
            .any(|local| Self::is_at(target, local))
    }

    /// Whether `target` names `local`, a listening address.
    fn is_at(target: &Target, local: &std::net::SocketAddr) -> bool {
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
    /// `server_connected`; the server fires the matching `server_disconnected` at the
    /// end. The server already does this for the [`Tunnel`] a protocol's `connect`
    /// returns: call it only from a protocol that connects upstream and then serves
    /// the client itself (returning [`Connected::Handled`](crate::Connected::Handled)),
    /// or the hook fires twice.
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
        conn.server_facts = None;
    }

    /// A future that completes when the server starts stopping (never, if the server is
    /// dropped without stopping: its tasks are dropped then). It owns what it needs, so
    /// a connection makes it once and polls it as long as it lives: waiting on it costs
    /// nothing per request.
    pub(crate) fn stopped(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut stopping = self.stopping.clone();
        Box::pin(async move {
            if stopping.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }

    /// Whether the server is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Relays `tunnel` both ways through the data hooks until it ends, `buffer_size`
    /// bytes at a time. `idle_timeout`, when set, closes it after that long without a
    /// byte moving.
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
